//! The test kit: starts the real `flowcase` binary on free loopback ports in a private working
//! directory, and gives tests clients that trust the certificate it generated. Every end-to-end
//! test goes through this kit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod api;
pub mod browser;
pub mod browser_network;
pub mod desktops;
pub mod echo;
pub mod guacd;
pub mod icon_server;
pub mod instances;
pub mod load;
pub mod loopback;
pub mod oidc_provider;
pub mod openapi_validator;
pub mod orchestrator;
pub mod pebble;
pub mod postgres;
pub mod swarm;
pub mod viewer;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `flowcase` binary under test: `$FLOWCASE_BIN` (scripts/test builds once and sets it), or
/// else the workspace's debug build, brought up to date first so that a `cargo nextest run -p
/// flowcase-e2e` never tests a stale binary.
pub fn flowcase_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("FLOWCASE_BIN") {
            return PathBuf::from(bin);
        }
        let target = std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .to_owned();
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "flowcase-gateway",
                "--bin",
                "flowcase",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "building the flowcase binary failed");
        target.join("flowcase")
    })
    .clone()
}

/// The Docker network the gateways of the tests share, created once: Docker 20.10 lets two
/// concurrent creates of one name both succeed, which makes the name ambiguous, so parallel test
/// processes serialise on a lock directory.
pub const E2E_NETWORK: &str = "flowcase-e2e";

fn ensure_e2e_network() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let lock = std::env::temp_dir().join("flowcase-e2e-network.lock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::create_dir(&lock).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let exists = Command::new("docker")
            .args(["network", "inspect", E2E_NETWORK])
            .output()
            .is_ok_and(|o| o.status.success());
        if !exists {
            let _ = Command::new("docker")
                .args([
                    "network",
                    "create",
                    "--label",
                    "flowcase.test=e2e",
                    "-o",
                    "com.docker.network.bridge.enable_icc=false",
                    E2E_NETWORK,
                ])
                .output();
        }
        let _ = std::fs::remove_dir(&lock);
    });
}

/// A loopback port nothing listens on right now, unique across the parallel test processes:
/// ports come in turn from one counter file (under a lock directory), in a range below the
/// kernel's ephemeral ports, so two tests never pick the same one and no outgoing connection
/// takes it meanwhile.
pub fn free_port() -> u16 {
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000;
    let dir = std::env::temp_dir();
    let lock = dir.join("flowcase-e2e-ports.lock");
    let counter = dir.join("flowcase-e2e-ports");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::create_dir(&lock).is_err() {
        if Instant::now() > deadline {
            // A crashed holder left the lock behind: take it over.
            let _ = std::fs::remove_dir(&lock);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut next: u16 = std::fs::read_to_string(&counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| rand::random::<u16>() % COUNT);
    let mut port = 0;
    for _ in 0..COUNT {
        let candidate = FIRST + next % COUNT;
        next = (next + 1) % COUNT;
        if TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            port = candidate;
            break;
        }
    }
    let _ = std::fs::write(&counter, next.to_string());
    let _ = std::fs::remove_dir(&lock);
    assert!(
        port != 0,
        "no free loopback port in {FIRST}..{}",
        FIRST + COUNT
    );
    port
}

/// A working directory with a config for one gateway; start it with [`Gateway::start`].
pub struct GatewayDir {
    pub dir: tempfile::TempDir,
    pub env: BTreeMap<String, String>,
    pub https_port: u16,
    pub http_port: u16,
    pub metrics_port: u16,
}

impl Default for GatewayDir {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayDir {
    pub fn new() -> Self {
        let (https_port, http_port, metrics_port) = (free_port(), free_port(), free_port());
        let mut env = BTreeMap::new();
        env.insert(
            "FLOWCASE_SERVER__HTTPS_LISTEN".into(),
            format!("127.0.0.1:{https_port}"),
        );
        env.insert(
            "FLOWCASE_SERVER__HTTP_LISTEN".into(),
            format!("127.0.0.1:{http_port}"),
        );
        env.insert(
            "FLOWCASE_SERVER__METRICS_LISTEN".into(),
            format!("127.0.0.1:{metrics_port}"),
        );
        env.insert("FLOWCASE_LOG__LEVEL".into(), "info".into());
        // Gateways of parallel tests share one dockerd: each reconciles only its own
        // deployment's containers, on a network they share (instances cannot reach each other
        // on it anyway).
        let deployment = format!("e2e-{:012x}", rand::random::<u64>() >> 16);
        env.insert("FLOWCASE_DOCKER__DEPLOYMENT".into(), deployment);
        ensure_e2e_network();
        env.insert("FLOWCASE_DOCKER__NETWORK".into(), E2E_NETWORK.into());
        Self {
            dir: tempfile::tempdir().unwrap(),
            env,
            https_port,
            http_port,
            metrics_port,
        }
    }

    /// The `flowcase.deployment` label of this gateway's containers.
    pub fn deployment(&self) -> &str {
        self.env
            .get("FLOWCASE_DOCKER__DEPLOYMENT")
            .map_or("flowcase", String::as_str)
    }

    pub fn set(&mut self, var: &str, value: &str) -> &mut Self {
        self.env.insert(var.into(), value.into());
        self
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `flowcase <args>` in this directory with this environment.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, "")
    }

    pub fn cli_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(flowcase_bin());
        cmd.current_dir(self.dir.path());
        // The test process's own FLOWCASE_* variables must not leak into the gateway.
        for (var, _) in std::env::vars() {
            if var.starts_with("FLOWCASE_") {
                cmd.env_remove(var);
            }
        }
        cmd.envs(&self.env);
        cmd
    }
}

impl Drop for GatewayDir {
    /// Removes the containers this gateway started, whatever the test's outcome.
    fn drop(&mut self) {
        let filter = format!("label=flowcase.deployment={}", self.deployment());
        let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
        // Private instance networks (guacd sidecars, mode `container-network`) carry the label
        // too; the containers above were their last members.
        let networks = Command::new("docker")
            .args(["network", "ls", "-q", "--filter", &filter])
            .output();
        if let Ok(out) = networks {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["network", "rm"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

/// A running gateway; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Gateway {
    child: Option<Child>,
    pub ports: (u16, u16, u16),
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Gateway {
    /// Starts `flowcase serve` and waits until `/readyz` answers 200.
    pub async fn start(dir: &GatewayDir) -> Gateway {
        let gw = Self::spawn(dir);
        gw.wait_ready().await;
        gw
    }

    /// Starts `flowcase serve` without waiting for readiness.
    pub fn spawn(dir: &GatewayDir) -> Gateway {
        Self::spawn_args(dir, &["serve"])
    }

    /// Starts `flowcase <args>` (e.g. `serve --upgrade`) without waiting for readiness.
    pub fn spawn_args(dir: &GatewayDir, args: &[&str]) -> Gateway {
        let n = rand::random::<u32>();
        let stdout_path = dir.dir.path().join(format!("stdout-{n}.log"));
        let stderr_path = dir.dir.path().join(format!("stderr-{n}.log"));
        let child = dir
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        Gateway {
            child: Some(child),
            ports: (dir.https_port, dir.http_port, dir.metrics_port),
            stdout_path,
            stderr_path,
        }
    }

    /// The process id, for sending signals (SIGHUP reloads certificate files).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway already stopped").id()
    }

    /// Sends a signal (`QUIT`, `TERM`, `HUP`, …) to the gateway process.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{name}"), &child.id().to_string()])
                .status();
        }
    }

    /// The exit status, once the process has ended by itself (waits at most `within`).
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Polls the gateway's log (stderr) until `found` picks something out of it, for at most
    /// `within` (access lines are written in batches, `log.access_flush` apart); panics with
    /// `what` and the log when nothing turned up.
    pub async fn wait_for_log<T>(
        &self,
        what: &str,
        within: Duration,
        found: impl Fn(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            let logs = self.stderr();
            if let Some(hit) = found(&logs) {
                return hit;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not in the log after {within:?}:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.2)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.1)
    }

    /// `https://<host>:<port><path>`; clients from [`Gateway::client`] resolve the host to
    /// loopback.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.ports.0)
    }

    /// The public origin browsers send in `Origin` (`https://localhost:<port>`).
    pub fn origin(&self) -> String {
        format!("https://localhost:{}", self.ports.0)
    }

    pub fn https_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.0))
    }

    /// A raw TLS connection to the HTTPS listener for `host` (the SNI), offering `alpn` and
    /// trusting only the certificate the gateway generated in `data_dir`: for what an HTTP
    /// client hides (the served certificate, ALPN, WebSocket upgrades on a chosen protocol).
    pub async fn tls_connect(
        &self,
        data_dir: &Path,
        host: &str,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let pem = std::fs::read(data_dir.join("tls/self-signed.crt")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = tokio::net::TcpStream::connect(self.https_addr())
            .await
            .unwrap();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
            .connect(host.to_owned().try_into().unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake for {host} failed: {e}"))
    }

    /// Opens the desktop tunnel `/tunnel?<query>` on `stream` (from [`Gateway::tls_connect`]) as
    /// the viewer does, asking for subprotocol `guacamole`; returns the socket and the
    /// subprotocol the gateway chose.
    pub async fn open_tunnel(
        &self,
        stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        query: &[(&str, &str)],
    ) -> (TunnelSocket, Option<String>) {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let query = serde_urlencoded::to_string(query).unwrap();
        let mut request = format!("wss://localhost:{}/tunnel?{query}", self.ports.0)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "guacamole".parse().unwrap());
        let (ws, response) = tokio_tungstenite::client_async(request, stream)
            .await
            .unwrap();
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        (ws, protocol)
    }

    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = client.get(self.metrics_url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "gateway not ready after {START_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client that trusts only the gateway's self-signed certificate in `data_dir` and
    /// resolves the given host names to the gateway's HTTPS port on loopback.
    pub fn client(&self, data_dir: &Path, hosts: &[&str]) -> reqwest::Client {
        self.client_builder(data_dir, hosts).build().unwrap()
    }

    /// [`Gateway::client`] before `build()`, for tests that need other settings.
    pub fn client_builder(&self, data_dir: &Path, hosts: &[&str]) -> reqwest::ClientBuilder {
        let pem = std::fs::read(data_dir.join("tls/self-signed.crt")).unwrap();
        let mut builder = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true);
        for host in hosts {
            builder = builder.resolve(host, self.https_addr());
        }
        builder
    }

    /// Waits at most `within`, off the async runtime, for the process to end by itself (after a
    /// signal asked it to) and asserts that it ended cleanly, its stderr in the message
    /// otherwise. Returns the gateway, for its output.
    pub async fn exits_cleanly(mut self, within: Duration) -> Gateway {
        let (status, gw) = tokio::task::spawn_blocking(move || {
            let status = self.wait_exit(within);
            (status, self)
        })
        .await
        .unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "the process ends cleanly: {status:?}\n{}",
            gw.stderr()
        );
        gw
    }

    /// Graceful stop (SIGTERM) and wait for the process to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("gateway already stopped");
        terminate(&child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The standard library only sends SIGKILL; a graceful stop needs SIGTERM, and the workspace
/// forbids unsafe code, so `kill(1)` sends it.
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Images a test pulled into the shared dockerd, removed when it ends, pass or fail.
pub struct Untag(pub Vec<String>);

impl Drop for Untag {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker").args(["rmi", image]).output();
        }
    }
}

/// A desktop tunnel opened by [`Gateway::open_tunnel`]: a WebSocket over TLS to the front door.
pub type TunnelSocket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// The username and password written to `IDENTIFIANTS.txt`.
pub fn read_credentials(data_dir: &Path) -> (String, String) {
    let text = std::fs::read_to_string(data_dir.join("IDENTIFIANTS.txt")).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in IDENTIFIANTS.txt:\n{text}"))
    };
    (field("username"), field("password"))
}
