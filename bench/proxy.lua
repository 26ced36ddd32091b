-- wrk script of bench/proxy.sh: connects to BENCH_CONNECT (127.0.0.1) whatever host the URL
-- names, so that the URL's host is still what goes into SNI and Host (instance hosts do not
-- resolve on every machine), and prints one machine-readable result line.
local connect = os.getenv("BENCH_CONNECT")

function wrk.resolve(host, service)
   wrk.addrs = wrk.lookup(connect or host, service)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d bad_status=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.timeout, e.status))
end
