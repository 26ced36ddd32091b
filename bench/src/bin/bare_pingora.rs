//! The proxy benchmark's second peer: pingora 0.9.1 with nothing of ours — a `ProxyHttp` that
//! sends every request to one upstream, adding what the benchmark's nginx adds
//! (`X-Forwarded-For`, `X-Forwarded-Proto`) — on pingora's own rustls listener, with the
//! gateway's tuning (mimalloc, one event loop per CPU the process may use, no work stealing,
//! the workspace's release profile). Measured next to the gateway and nginx in the same run, it
//! tells what the gateway's own work costs (gateway ÷ bare pingora) apart from what the
//! framework costs (bare pingora ÷ nginx).
//!
//! `bare_pingora LISTEN CERT_PEM KEY_PEM UPSTREAM` (loopback addresses).

use std::net::SocketAddr;

use anyhow::Context;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::{HttpPeer, Session};
use pingora::proxy::ProxyHttp;
use pingora::server::Server;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        _ctx: &mut (),
    ) -> pingora::Result<()> {
        if let Some(peer) = session.client_addr().and_then(|a| a.as_inet()) {
            upstream.insert_header("x-forwarded-for", peer.ip().to_string())?;
        }
        upstream.insert_header("x-forwarded-proto", "https")?;
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_pingora LISTEN CERT_PEM KEY_PEM UPSTREAM";
    let listen = args.next().context(usage)?;
    let cert = args.next().context(usage)?;
    let key = args.next().context(usage)?;
    let upstream: SocketAddr = args.next().context(usage)?.parse().context(usage)?;

    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let conf = ServerConf {
        threads,
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream });
    proxy
        .add_tls(&listen, &cert, &key)
        .map_err(|e| anyhow::anyhow!("cannot listen with TLS on {listen}: {e}"))?;
    server.add_service(proxy);
    server.run_forever();
}
