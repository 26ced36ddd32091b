//! The desktop tunnel against guacamole-lite, both relaying the same guacd double in the same
//! run (`bench/tunnel.sh` builds the release gateway and this, installs the pinned
//! guacamole-lite, and runs this):
//!
//! - throughput: over one open tunnel the double draws a counted series of display
//!   instructions (`img` + 4 KiB `blob` + `end`, ending with a marked `sync`); the client counts
//!   instructions and bytes until the mark → instructions/s and MB/s (median of the runs);
//! - added latency: the client sends `sync,<n>` and waits for the double's echo of it, through
//!   the relay and directly over TCP to the double (the baseline); p50/p99 of each minus the
//!   baseline's;
//! - memory per idle tunnel: VmRSS of the relay process before and after opening N idle tunnels
//!   (each past its first picture), divided by N.
//!
//! Loopback only; every wait is bounded; numbers are printed, never asserted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowcase_e2e::guacd::{self, DISPLAY_DONE, GuacdDouble};
use flowcase_e2e::instances::{add_user, desktop_instance, login};
use flowcase_e2e::{Gateway, GatewayDir};
use flowcase_guac::{Instruction, Scan, scan};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PASSWORD: &str = "bench horse battery staple";
/// Any single wait: a frame, a handshake, a whole throughput run.
const WAIT: Duration = Duration::from_secs(60);
const MAX_INSTRUCTIONS: usize = 2_000_000;
const MAX_ROUNDS: usize = 100_000;
const MAX_TUNNELS: usize = 5_000;
/// Round trips before the measured ones, per path.
const WARMUP: usize = 200;
const THROUGHPUT_RUNS: usize = 3;

struct Args {
    instructions: usize,
    rounds: usize,
    tunnels: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        instructions: 60_000,
        rounds: 2_000,
        tunnels: 1_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |max: usize| -> anyhow::Result<usize> {
            let v: usize = it.next().context("a value")?.parse()?;
            if v == 0 || v > max {
                bail!("{arg} must be within 1..={max}");
            }
            Ok(v)
        };
        match arg.as_str() {
            "--instructions" => args.instructions = value(MAX_INSTRUCTIONS)?,
            "--rounds" => args.rounds = value(MAX_ROUNDS)?,
            "--tunnels" => args.tunnels = value(MAX_TUNNELS)?,
            _ => {
                bail!("usage: tunnel [--instructions N] [--rounds N] [--tunnels N] (unknown {arg})")
            }
        }
    }
    Ok(args)
}

/// Anything a WebSocket can run over: TLS to the gateway, plain TCP to guacamole-lite.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

/// One tunnel, read as a stream of instructions whatever the framing.
struct Tunnel {
    ws: Ws,
    buf: Vec<u8>,
    /// Text bytes received.
    bytes: usize,
}

impl Tunnel {
    /// Reads until a complete instruction equal to `wanted` (its encoding) has arrived;
    /// returns the instructions seen on the way, `wanted` included.
    async fn until(&mut self, wanted: &str) -> anyhow::Result<usize> {
        let mut count = 0;
        loop {
            let mut at = 0;
            let mut found = false;
            while let Ok(Scan::Complete(n)) = scan(&self.buf[at..]) {
                count += 1;
                if &self.buf[at..at + n] == wanted.as_bytes() {
                    found = true;
                    at += n;
                    break;
                }
                at += n;
            }
            self.buf.drain(..at);
            if found {
                return Ok(count);
            }
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .context("a frame in time")?
                .context("the tunnel closed")??;
            match message {
                Message::Text(text) => {
                    self.bytes += text.len();
                    self.buf.extend_from_slice(text.as_bytes());
                }
                Message::Close(frame) => bail!("tunnel closed: {frame:?}"),
                _ => {}
            }
        }
    }

    async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Past the connection id and the double's first picture.
    async fn opened(ws: Ws) -> anyhow::Result<Tunnel> {
        let mut tunnel = Tunnel {
            ws,
            buf: Vec::new(),
            bytes: 0,
        };
        tunnel
            .until(&Instruction::new("sync", ["1"]).encode())
            .await?;
        Ok(tunnel)
    }
}

/// A relay under test.
enum Relay {
    Gateway {
        dir: GatewayDir,
        gw: Gateway,
        client: reqwest::Client,
        csrf: String,
        slug: String,
        tls: Arc<rustls::ClientConfig>,
    },
    Lite {
        child: Child,
        port: u16,
        token: String,
    },
}

impl Relay {
    fn name(&self) -> &'static str {
        match self {
            Relay::Gateway { .. } => "gateway",
            Relay::Lite { .. } => "guacamole-lite",
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Relay::Gateway { gw, .. } => gw.pid(),
            Relay::Lite { child, .. } => child.id(),
        }
    }

    async fn open(&self) -> anyhow::Result<Tunnel> {
        let ws = match self {
            Relay::Gateway {
                dir,
                gw,
                client,
                csrf,
                slug,
                tls,
            } => {
                let resp = client
                    .post(gw.url(
                        "localhost",
                        &format!("/api/v1/instances/{slug}/tunnel-token"),
                    ))
                    .header("origin", gw.origin())
                    .header("x-csrf-token", csrf.as_str())
                    .send()
                    .await?;
                if resp.status() != 200 {
                    bail!("tunnel token: {}", resp.status());
                }
                let body: serde_json::Value = resp.json().await?;
                let token = body["token"].as_str().context("a token")?;
                let tcp = TcpStream::connect(gw.https_addr()).await?;
                tcp.set_nodelay(true)?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
                    .connect("localhost".try_into()?, tcp)
                    .await?;
                let url = format!(
                    "wss://localhost:{}/tunnel?{}",
                    dir.https_port,
                    query(token)?
                );
                handshake(&url, Box::new(stream)).await?
            }
            Relay::Lite { port, token, .. } => {
                let tcp = TcpStream::connect(("127.0.0.1", *port)).await?;
                tcp.set_nodelay(true)?;
                let url = format!("ws://127.0.0.1:{port}/?{}", query(token)?);
                handshake(&url, Box::new(tcp)).await?
            }
        };
        tokio::time::timeout(WAIT, Tunnel::opened(ws))
            .await
            .context("the first picture in time")?
    }
}

fn query(token: &str) -> anyhow::Result<String> {
    Ok(serde_urlencoded::to_string([
        ("token", token),
        ("GUAC_WIDTH", "1280"),
        ("GUAC_HEIGHT", "720"),
        ("GUAC_DPI", "96"),
        ("GUAC_AUDIO", "audio/L16"),
        ("GUAC_IMAGE", "image/png"),
    ])?)
}

async fn handshake(url: &str, stream: Box<dyn Io>) -> anyhow::Result<Ws> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "guacamole".parse()?);
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .context("the WebSocket handshake in time")??;
    Ok(ws)
}

fn tls_config(data_dir: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read(data_dir.join("tls/self-signed.crt"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert?)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// The gateway with a desktop row whose guacd is the double; Docker is a dead socket, so
/// reconciliation cannot mark the row's (nonexistent) container gone.
async fn start_gateway(guacd: &GuacdDouble) -> anyhow::Result<Relay> {
    let mut dir = GatewayDir::new();
    let socket = dir.dir.path().join("no-docker.sock");
    std::fs::write(&socket, "")?;
    dir.set(
        "FLOWCASE_DOCKER__HOST",
        &format!("unix://{}", socket.display()),
    );
    dir.set("FLOWCASE_GUACD__ADDRESS", &guacd.addr.to_string());
    // guacamole-lite logs errors only; the gateway likewise.
    dir.set("FLOWCASE_LOG__LEVEL", "warn");
    let gw = Gateway::start(&dir).await;
    add_user(&dir, "bench", PASSWORD);
    let desktop = desktop_instance(&dir, "bench", "benchdesk").await;
    let client = gw.client(&dir.data_dir(), &["localhost"]);
    let csrf = login(&gw, &client, "bench", PASSWORD).await;
    let tls = tls_config(&dir.data_dir())?;
    Ok(Relay::Gateway {
        dir,
        gw,
        client,
        csrf,
        slug: desktop.slug,
        tls,
    })
}

/// `node bench/peers/guacamole-lite/server.js <guacd port>`, which prints its port and token.
fn start_lite(peer: &Path, guacd: &GuacdDouble) -> anyhow::Result<Relay> {
    let mut child = Command::new("node")
        .arg(peer.join("server.js"))
        .arg(guacd.addr.port().to_string())
        .current_dir(peer)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("node (bench/tunnel.sh installs guacamole-lite)")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    // What it logs later (guacamole-lite logs each connection's end) must find a reader.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let mut words = line.split_whitespace();
    let (Some("LISTENING"), Some(port), Some(token)) = (words.next(), words.next(), words.next())
    else {
        let _ = child.kill();
        bail!("guacamole-lite did not start: {line:?}");
    };
    Ok(Relay::Lite {
        port: port.parse()?,
        token: token.to_owned(),
        child,
    })
}

fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// A path to the echoing double: one round trip of an instruction.
trait Echo {
    async fn trip(&mut self, sync: &str) -> anyhow::Result<()>;
}

impl Echo for Tunnel {
    async fn trip(&mut self, sync: &str) -> anyhow::Result<()> {
        self.send(sync).await?;
        self.until(sync).await?;
        Ok(())
    }
}

impl Echo for Direct {
    async fn trip(&mut self, sync: &str) -> anyhow::Result<()> {
        self.write(sync).await?;
        self.until_exact(sync).await
    }
}

/// Round trips of `sync,<n>` echoed by the double, in µs, sorted.
async fn round_trips(rounds: usize, path: &mut impl Echo) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(rounds);
    for n in 0..WARMUP + rounds {
        let sync = Instruction::new("sync", [format!("{}", 1_000_000 + n)]).encode();
        let start = Instant::now();
        path.trip(&sync).await?;
        if n >= WARMUP {
            samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The double's side of a direct connection: guacd's handshake as a client does it.
struct Direct {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Direct {
    async fn connect(guacd: &GuacdDouble) -> anyhow::Result<Direct> {
        let stream = TcpStream::connect(guacd.addr).await?;
        stream.set_nodelay(true)?;
        let mut direct = Direct {
            stream,
            buf: Vec::new(),
        };
        direct
            .write(&Instruction::new("select", ["vnc"]).encode())
            .await?;
        direct.until("args").await?;
        let mut reply = String::new();
        for i in [
            Instruction::new("size", ["1280", "720", "96"]),
            Instruction::new("audio", ["audio/L16"]),
            Instruction::new("video", Vec::<String>::new()),
            Instruction::new("image", ["image/png"]),
        ] {
            i.encode_into(&mut reply);
        }
        let mut connect = vec!["VERSION_1_5_0".to_owned()];
        connect.extend(guacd::VNC_ARGS.iter().map(|_| String::new()));
        Instruction::new("connect", connect).encode_into(&mut reply);
        direct.write(&reply).await?;
        direct
            .until_exact(&Instruction::new("sync", ["1"]).encode())
            .await?;
        Ok(direct)
    }

    async fn write(&mut self, text: &str) -> anyhow::Result<()> {
        self.stream.write_all(text.as_bytes()).await?;
        Ok(())
    }

    async fn next(&mut self) -> anyhow::Result<Instruction> {
        loop {
            if let Some((i, n)) = flowcase_guac::parse(&self.buf)? {
                self.buf.drain(..n);
                return Ok(i);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .context("guacd in time")??;
            if n == 0 {
                bail!("guacd closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn until(&mut self, opcode: &str) -> anyhow::Result<Instruction> {
        loop {
            let i = self.next().await?;
            if i.opcode == opcode {
                return Ok(i);
            }
        }
    }

    async fn until_exact(&mut self, encoded: &str) -> anyhow::Result<()> {
        loop {
            if self.next().await?.encode() == encoded {
                return Ok(());
            }
        }
    }
}

struct Results {
    instr_per_s: f64,
    mb_per_s: f64,
    /// Round trip p50 and p99, µs.
    rtt: (f64, f64),
    /// KiB per idle tunnel, and the RSS before/after (KiB).
    idle: (f64, u64, u64),
}

async fn measure(relay: &Relay, guacd: &GuacdDouble, args: &Args) -> anyhow::Result<Results> {
    let name = relay.name();
    // Latency: one tunnel, echoing.
    eprintln!("{name}: latency, {} round trips", args.rounds);
    let mut tunnel = relay.open().await?;
    guacd.command(guacd::Command::Echo);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rtt = round_trips(args.rounds, &mut tunnel).await?;
    drop(tunnel);

    // Memory: N idle tunnels, each past its first picture.
    eprintln!("{name}: memory, {} idle tunnels", args.tunnels);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = vm_rss_kib(relay.pid())?;
    let mut idle = Vec::with_capacity(args.tunnels);
    for _ in 0..args.tunnels {
        idle.push(relay.open().await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = vm_rss_kib(relay.pid())?;
    for mut tunnel in idle {
        let _ = tunnel.ws.close(None).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Throughput: the double draws, the client counts.
    let mut rates = Vec::new();
    let done = Instruction::new("sync", [DISPLAY_DONE]).encode();
    for run in 0..THROUGHPUT_RUNS {
        eprintln!(
            "{name}: throughput run {}/{THROUGHPUT_RUNS}, {} instructions",
            run + 1,
            args.instructions
        );
        let mut tunnel = relay.open().await?;
        let bytes_before = tunnel.bytes;
        guacd.command(guacd::Command::Display {
            count: args.instructions,
        });
        let start = Instant::now();
        let count = tunnel.until(&done).await?;
        let took = start.elapsed().as_secs_f64();
        if count != args.instructions {
            bail!(
                "{name}: {count} instructions arrived, {} were sent",
                args.instructions
            );
        }
        rates.push((
            count as f64 / took,
            (tunnel.bytes - bytes_before) as f64 / took / 1e6,
        ));
        let _ = tunnel.ws.close(None).await;
    }
    rates.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (instr_per_s, mb_per_s) = rates[rates.len() / 2];
    Ok(Results {
        instr_per_s,
        mb_per_s,
        rtt: (percentile(&rtt, 0.5), percentile(&rtt, 0.99)),
        idle: (
            (after.saturating_sub(before)) as f64 / args.tunnels as f64,
            before,
            after,
        ),
    })
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let peer = root.join("peers/guacamole-lite");
    let guacd = GuacdDouble::start().await;

    // The baseline: the same echo, straight to the double.
    eprintln!("direct: latency, {} round trips", args.rounds);
    let mut direct = Direct::connect(&guacd).await?;
    guacd.command(guacd::Command::Echo);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let base = round_trips(args.rounds, &mut direct).await?;
    drop(direct);
    let base = (percentile(&base, 0.5), percentile(&base, 0.99));

    let gateway = start_gateway(&guacd).await?;
    let gw = measure(&gateway, &guacd, &args).await?;
    drop(gateway);
    let mut lite = start_lite(&peer, &guacd)?;
    let lt = measure(&lite, &guacd, &args).await;
    if let Relay::Lite { child, .. } = &mut lite {
        let _ = child.kill();
        let _ = child.wait();
    }
    let lt = lt?;

    println!(
        "desktop tunnel vs guacamole-lite, same guacd double, loopback: {} display instructions \
         (img + {} B blob + end) x {THROUGHPUT_RUNS} runs (median), {} echo round trips, {} idle tunnels",
        args.instructions,
        guacd::DISPLAY_BLOB_CHARS,
        args.rounds,
        args.tunnels
    );
    println!(
        "direct to the double (baseline): round trip p50 {:.1} µs, p99 {:.1} µs",
        base.0, base.1
    );
    println!(
        "{:<34} {:>12} {:>15} {:>8}   {:<14} met?",
        "metric", "gateway", "guacamole-lite", "ratio", "target"
    );
    let row = |metric: &str, g: f64, l: f64, target: &str, ok: Option<bool>| {
        println!(
            "{metric:<34} {g:>12.1} {l:>15.1} {:>7.2}x   {target:<14} {}",
            g / l,
            ok.map_or("", met)
        );
    };
    row(
        "throughput (instructions/s)",
        gw.instr_per_s,
        lt.instr_per_s,
        ">= 3x peer",
        Some(gw.instr_per_s >= 3.0 * lt.instr_per_s),
    );
    row("throughput (MB/s)", gw.mb_per_s, lt.mb_per_s, "", None);
    let added50 = (gw.rtt.0 - base.0, lt.rtt.0 - base.0);
    let added99 = (gw.rtt.1 - base.1, lt.rtt.1 - base.1);
    row(
        "added latency p50 (µs)",
        added50.0,
        added50.1,
        "<= 100 µs",
        Some(added50.0 <= 100.0),
    );
    row("added latency p99 (µs)", added99.0, added99.1, "", None);
    row("round trip p50 (µs)", gw.rtt.0, lt.rtt.0, "", None);
    row(
        "memory per idle tunnel (KiB)",
        gw.idle.0,
        lt.idle.0,
        "<= 100 KB",
        Some(gw.idle.0 * 1.024 <= 100.0),
    );
    println!(
        "relay RSS before -> after the idle tunnels: gateway {} -> {} KiB, guacamole-lite {} -> {} KiB",
        gw.idle.1, gw.idle.2, lt.idle.1, lt.idle.2
    );
    Ok(())
}
