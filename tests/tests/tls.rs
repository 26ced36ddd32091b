//! Certificate sources end to end, through the real binary: files (served, reloaded on change and
//! on SIGHUP without dropping connections, a bad file ignored) and ACME against pebble with real
//! http-01 and tls-alpn-01 validation (public host, cached across restarts, instance hosts only
//! for instances that exist, renewal before expiry with short-lived certificates).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowcase_admin::Store;
use flowcase_admin::store::{DropletType, InstanceStatus, NewDroplet, NewInstance, TargetKind};
use flowcase_e2e::pebble::{Pebble, client_trusting, connect_unverified, served_certificate};
use flowcase_e2e::{Gateway, GatewayDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PUBLIC: &str = "gw.flowcase.test";
const APPS: &str = "apps.flowcase.test";

/// A private CA issuing leaf certificates, as a corporate CA or a DNS-01 tool would.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "flowcase files-mode test CA");
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf for `names`: (chain PEM, key PEM, leaf DER).
    fn leaf(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            format!("{}{}", cert.pem(), self.pem),
            key.serialize_pem(),
            cert.der().to_vec(),
        )
    }
}

/// Writes through a temporary file and a rename, as renewal tools do.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    rustls_pemfile::certs(&mut &pem[..])
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP/1.1 keep-alive connection on which requests can be sent one after the other.
struct RawConnection {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    leaf: Vec<u8>,
}

impl RawConnection {
    async fn open(addr: SocketAddr, host: &str) -> Self {
        let (tls, leaf) = connect_unverified(addr, host, &[b"http/1.1"]).await;
        Self { tls, leaf }
    }

    /// Sends a HEAD request (no body to frame) and returns the status line.
    async fn head(&mut self, host: &str) -> String {
        self.tls
            .write_all(format!("HEAD / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), self.tls.read(&mut buf))
                .await
                .expect("no answer on the open connection")
                .unwrap();
            assert!(n > 0, "the connection was closed");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        assert!(
            !text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
        text.lines().next().unwrap_or_default().to_owned()
    }
}

fn logs(gw: &Gateway) -> String {
    format!("{}{}", gw.stdout(), gw.stderr())
}

struct FilesSetup {
    dir: GatewayDir,
    ca: TestCa,
    cert_path: PathBuf,
    key_path: PathBuf,
    first_leaf: Vec<u8>,
}

fn files_setup(reload_interval: &str) -> FilesSetup {
    let ca = TestCa::new();
    let mut dir = GatewayDir::new();
    let certs = dir.dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (cert_path, key_path) = (certs.join("fullchain.pem"), certs.join("privkey.pem"));
    let (chain, key, first_leaf) = ca.leaf(&["localhost", "*.apps.localhost"]);
    std::fs::write(&cert_path, chain).unwrap();
    std::fs::write(&key_path, key).unwrap();
    dir.set("FLOWCASE_TLS__MODE", "files")
        .set("FLOWCASE_TLS__CERT_FILE", cert_path.to_str().unwrap())
        .set("FLOWCASE_TLS__KEY_FILE", key_path.to_str().unwrap())
        .set("FLOWCASE_TLS__RELOAD_INTERVAL", reload_interval);
    FilesSetup {
        dir,
        ca,
        cert_path,
        key_path,
        first_leaf,
    }
}

#[tokio::test]
async fn files_are_served_and_reloaded_when_they_change_without_dropping_connections() {
    let setup = files_setup("1s");
    let gw = Gateway::start(&setup.dir).await;
    let addr = gw.https_addr();

    // Served for the public host and, being a wildcard, for instance hosts; h2 offered.
    let client = client_trusting(&setup.ca.pem, &["localhost", "app1.apps.localhost"], addr);
    for host in ["localhost", "app1.apps.localhost"] {
        let resp = client.get(gw.url(host, "/")).send().await.unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2, "{host}");
    }
    let (leaf, alpn) = served_certificate(addr, "localhost").await;
    assert_eq!(leaf, setup.first_leaf);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let ready: serde_json::Value = reqwest::get(gw.metrics_url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["certificates"]["source"], "files");
    assert_eq!(
        ready["checks"]["certificates"]["names"],
        serde_json::json!(["localhost", "*.apps.localhost"])
    );

    // A connection opened before the renewal.
    let mut before = RawConnection::open(addr, "localhost").await;
    assert_eq!(before.leaf, setup.first_leaf);
    let status = before.head("localhost").await;
    assert!(status.starts_with("HTTP/1.1 "), "{status}");

    let (chain, key, second_leaf) = setup.ca.leaf(&["localhost", "*.apps.localhost"]);
    replace(&setup.key_path, &key);
    replace(&setup.cert_path, &chain);
    let took = wait_until(
        "the renewed certificate is served",
        Duration::from_secs(10),
        || async { served_certificate(addr, "localhost").await.0 == second_leaf },
    )
    .await;
    eprintln!("renewed certificate served after {took:?}");
    let status = before.head("localhost").await;
    assert!(
        status.starts_with("HTTP/1.1 "),
        "the connection opened before the reload keeps working: {status}"
    );
    client
        .get(gw.url("localhost", "/"))
        .send()
        .await
        .expect("new connections verify the renewed certificate");

    // Garbage in either file keeps the renewed certificate.
    replace(&setup.cert_path, "garbage\n");
    wait_until(
        "the bad file is reported",
        Duration::from_secs(10),
        || async { logs(&gw).contains("cannot reload the TLS certificate") },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(served_certificate(addr, "localhost").await.0, second_leaf);
    let (_, other_key, _) = setup.ca.leaf(&["localhost"]);
    replace(&setup.cert_path, &chain);
    replace(&setup.key_path, &other_key);
    wait_until(
        "the mismatched key is reported",
        Duration::from_secs(10),
        || async { logs(&gw).contains("does not belong to the certificate") },
    )
    .await;
    assert_eq!(served_certificate(addr, "localhost").await.0, second_leaf);
    let status = before.head("localhost").await;
    assert!(status.starts_with("HTTP/1.1 "), "{status}");
}

#[tokio::test]
async fn sighup_reloads_the_files() {
    // Polling is effectively off: only the signal can explain the reload.
    let setup = files_setup("1h");
    let gw = Gateway::start(&setup.dir).await;
    let addr = gw.https_addr();
    // The handler exists once the certificate service runs; before that SIGHUP would end it.
    wait_until(
        "the certificate service is running",
        Duration::from_secs(10),
        || async { logs(&gw).contains("watching the certificate files") },
    )
    .await;
    assert_eq!(
        served_certificate(addr, "localhost").await.0,
        setup.first_leaf
    );

    let (chain, key, second_leaf) = setup.ca.leaf(&["localhost"]);
    replace(&setup.key_path, &key);
    replace(&setup.cert_path, &chain);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        served_certificate(addr, "localhost").await.0,
        setup.first_leaf,
        "not reloaded without a signal"
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let took = wait_until(
        "the certificate is reloaded on SIGHUP",
        // Generous: a bound on waiting for the reload, not a claim on its speed (a busy CI
        // machine once took longer than 5 s).
        Duration::from_secs(20),
        || async { served_certificate(addr, "localhost").await.0 == second_leaf },
    )
    .await;
    eprintln!("reloaded {took:?} after SIGHUP");
    let ready = reqwest::get(gw.metrics_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "the gateway is still up");
}

/// A gateway in ACME mode against a fresh pebble that validates on the gateway's ports.
async fn acme_setup(challenge: &str) -> (GatewayDir, Pebble) {
    acme_setup_issuing(challenge, None).await
}

/// [`acme_setup`] with pebble issuing certificates valid for `validity` (its default otherwise).
async fn acme_setup_issuing(challenge: &str, validity: Option<Duration>) -> (GatewayDir, Pebble) {
    let mut dir = GatewayDir::new();
    let pebble = match validity {
        Some(validity) => Pebble::start_short_lived(dir.http_port, dir.https_port, validity).await,
        None => Pebble::start(dir.http_port, dir.https_port).await,
    };
    dir.set("FLOWCASE_TLS__MODE", "acme")
        .set("FLOWCASE_TLS__ACME__DIRECTORY_URL", &pebble.directory_url)
        .set(
            "FLOWCASE_TLS__ACME__CA_BUNDLE",
            pebble.ca_bundle.to_str().unwrap(),
        )
        .set("FLOWCASE_TLS__ACME__CHALLENGE", challenge)
        .set("FLOWCASE_SERVER__PUBLIC_HOST", PUBLIC)
        .set("FLOWCASE_SERVER__APPS_DOMAIN", APPS);
    (dir, pebble)
}

/// Waits until a client trusting only pebble's root completes a request to `host`.
async fn wait_for_issued(gw: &Gateway, pebble: &Pebble, root: &str, host: &str) -> Duration {
    let client = client_trusting(root, &[host], gw.https_addr());
    let url = gw.url(host, "/");
    let start = Instant::now();
    loop {
        if client.get(&url).send().await.is_ok() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no certificate issued for {host}\npebble:\n{}\ngateway:\n{}",
            pebble.log(),
            logs(gw)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `<data_dir>/acme/<directory>/<name>.pem`
fn cached_certificate(dir: &GatewayDir, name: &str) -> Option<PathBuf> {
    let acme = dir.data_dir().join("acme");
    std::fs::read_dir(acme)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join(format!("{name}.pem")))
        .find(|p| p.is_file())
}

#[tokio::test]
async fn acme_http01_issues_for_the_public_host_and_a_restart_orders_nothing() {
    let (dir, pebble) = acme_setup("http-01").await;
    let mut gw = Gateway::start(&dir).await;
    let root = pebble.issuing_root().await;
    let took = wait_for_issued(&gw, &pebble, &root, PUBLIC).await;
    eprintln!("http-01: certificate for {PUBLIC} after {took:?}");
    assert_eq!(pebble.validations_for(PUBLIC), 1);
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    assert!(
        pebble.log().contains("validate w/ HTTP"),
        "validated over http-01:\n{}",
        pebble.log()
    );
    assert!(logs(&gw).contains("answering an ACME http-01 validation"));
    // Unknown tokens are not redirected to HTTPS, nor answered.
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(gw.http_url("/.well-known/acme-challenge/not-a-token"))
        .header("host", PUBLIC)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let ready: serde_json::Value = reqwest::get(gw.metrics_url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["certificates"]["source"], "acme");
    assert_eq!(
        ready["checks"]["certificates"]["names"],
        serde_json::json!([PUBLIC])
    );
    // The order and the served certificate's expiry are in the metrics.
    let metrics = reqwest::get(gw.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"flowcase_acme_orders_total{result="valid"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"flowcase_certificate_expiry_timestamp_seconds{{name="{PUBLIC}",source="acme"}}"#
        )),
        "{metrics}"
    );

    // Cached privately, and a restart serves the cached certificate without a new order.
    let cached = cached_certificate(&dir, PUBLIC).expect("the certificate is cached");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cached).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let (bytes, modified) = (
        std::fs::read(&cached).unwrap(),
        std::fs::metadata(&cached).unwrap().modified().unwrap(),
    );
    assert!(gw.stop().success());
    let gw = Gateway::start(&dir).await;
    let took = wait_for_issued(&gw, &pebble, &root, PUBLIC).await;
    eprintln!("after the restart, the cached certificate was served after {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pebble.orders(), 1, "a restart must not order again");
    assert_eq!(std::fs::read(&cached).unwrap(), bytes);
    assert_eq!(
        std::fs::metadata(&cached).unwrap().modified().unwrap(),
        modified
    );
}

/// The serial number, notBefore and notAfter (Unix seconds) of a DER certificate.
fn serial_and_validity(der: &[u8]) -> (Vec<u8>, i64, i64) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let validity = cert.validity();
    (
        cert.raw_serial().to_vec(),
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    )
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The value of the first sample of `metrics` whose name and labels are exactly `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn acme_renews_before_expiry_without_a_restart_or_dropping_connections() {
    // rustls-acme renews when a third of the lifetime is left: 30 s after issuance here, which
    // leaves 15 s for the order (a few seconds against pebble) before the first one expires.
    const LIFETIME: Duration = Duration::from_secs(45);
    let (dir, pebble) = acme_setup_issuing("http-01", Some(LIFETIME)).await;
    let mut gw = Gateway::start(&dir).await;
    let addr = gw.https_addr();
    let root = pebble.issuing_root().await;
    wait_for_issued(&gw, &pebble, &root, PUBLIC).await;
    let first = served_certificate(addr, PUBLIC).await.0;
    let (first_serial, first_not_before, first_not_after) = serial_and_validity(&first);
    assert!(
        first_not_after - first_not_before <= LIFETIME.as_secs() as i64,
        "pebble issued a certificate valid {} s",
        first_not_after - first_not_before
    );
    assert_eq!(pebble.orders(), 1);

    // A connection opened on the first certificate, used all along.
    let mut open = RawConnection::open(addr, PUBLIC).await;
    assert_eq!(open.leaf, first);
    let status = open.head(PUBLIC).await;

    let renewed = loop {
        let leaf = served_certificate(addr, PUBLIC).await.0;
        if leaf != first {
            break leaf;
        }
        assert!(
            unix_now() < first_not_after,
            "the certificate expired without being renewed\npebble:\n{}\ngateway:\n{}",
            pebble.log(),
            logs(&gw)
        );
        assert_eq!(open.head(PUBLIC).await, status);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let renewed_at = unix_now();
    eprintln!(
        "renewed {} s after issuance, {} s before expiry",
        renewed_at - first_not_before,
        first_not_after - renewed_at
    );
    assert!(renewed_at < first_not_after, "renewed only after expiry");
    let (serial, _, not_after) = serial_and_validity(&renewed);
    assert_ne!(
        serial, first_serial,
        "a new certificate, not the old one again"
    );
    assert!(
        not_after > first_not_after,
        "{not_after} <= {first_not_after}"
    );
    assert_eq!(pebble.orders(), 2, "{}", pebble.log());
    // New handshakes verify the renewed certificate against pebble's root...
    let client = client_trusting(&root, &[PUBLIC], addr);
    let resp = client.get(gw.url(PUBLIC, "/")).send().await.unwrap();
    assert!(resp.status().as_u16() < 500, "{}", resp.status());
    // ...while the connection opened before still answers, on the certificate it began with.
    assert_eq!(open.head(PUBLIC).await, status);
    assert_eq!(open.leaf, first);
    assert!(gw.wait_exit(Duration::ZERO).is_none(), "no restart");

    let metrics = reqwest::get(gw.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(&metrics, r#"flowcase_acme_orders_total{result="valid"}"#),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, r#"flowcase_acme_orders_total{result="failed"}"#),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "flowcase_acme_renewals_total"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            &format!(
                r#"flowcase_certificate_expiry_timestamp_seconds{{name="{PUBLIC}",source="acme"}}"#
            )
        ),
        Some(not_after as f64),
        "the metric shows the renewed certificate's expiry\n{metrics}"
    );
}

async fn add_instance(dir: &GatewayDir, slug: &str) {
    let url = format!("sqlite://{}", dir.data_dir().join("flowcase.db").display());
    let store = Store::connect(&url).await.unwrap();
    let now = flowcase_admin::now_millis();
    let tenant = store
        .default_tenant()
        .await
        .unwrap()
        .expect("a default tenant");
    let admin = store
        .find_user_by_login("admin")
        .await
        .unwrap()
        .expect("the first administrator");
    let droplet = store
        .create_droplet(
            &NewDroplet::new(
                tenant.id,
                format!("web-{slug}"),
                DropletType::Http,
                TargetKind::Container,
            ),
            now,
        )
        .await
        .unwrap();
    store
        .create_instance(
            &NewInstance {
                slug: slug.to_owned(),
                droplet_id: droplet.id,
                user_id: admin.id,
                status: InstanceStatus::Stopped,
            },
            now,
        )
        .await
        .unwrap();
    store.close().await;
}

#[tokio::test]
async fn acme_tls_alpn01_issues_for_the_public_host_and_for_existing_instances_only() {
    let (dir, pebble) = acme_setup("tls-alpn-01").await;
    let gw = Gateway::start(&dir).await;
    let addr = gw.https_addr();
    let root = pebble.issuing_root().await;
    let took = wait_for_issued(&gw, &pebble, &root, PUBLIC).await;
    eprintln!("tls-alpn-01: certificate for {PUBLIC} after {took:?}");
    assert!(
        logs(&gw).contains("answering an ACME tls-alpn-01 validation name=gw.flowcase.test"),
        "validated over tls-alpn-01:\n{}",
        logs(&gw)
    );
    assert_eq!(pebble.validations_for(PUBLIC), 1);
    assert_eq!(pebble.orders(), 1);
    // Browsers still negotiate HTTP/2 on the listener that also offers acme-tls/1.
    let (_, alpn) = served_certificate(addr, PUBLIC).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    // Names that are no instance get the default certificate, and no order is made.
    let default = pem_to_der(&std::fs::read(dir.data_dir().join("tls/self-signed.crt")).unwrap());
    let strangers = [
        "nosuch.apps.flowcase.test",
        "a.b.apps.flowcase.test",
        "evil.example",
    ];
    for host in strangers {
        assert_eq!(served_certificate(addr, host).await.0, default, "{host}");
    }

    // An instance that exists: its first handshake gets the default certificate at once and
    // starts an order; a later one gets its own certificate.
    add_instance(&dir, "app1").await;
    let app1 = "app1.apps.flowcase.test";
    let start = Instant::now();
    assert_eq!(served_certificate(addr, app1).await.0, default);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the handshake did not wait for the order"
    );
    let took = wait_for_issued(&gw, &pebble, &root, app1).await;
    eprintln!("on-demand certificate for {app1} after {took:?}");
    assert_eq!(pebble.orders(), 2);

    tokio::time::sleep(Duration::from_secs(2)).await;
    for host in strangers {
        assert_eq!(served_certificate(addr, host).await.0, default, "{host}");
        assert_eq!(pebble.validations_for(host), 0, "{host}");
    }
    assert_eq!(
        pebble.orders(),
        2,
        "no order for names that are no instance"
    );
    assert!(logs(&gw).contains("not ordering a certificate"));
}

#[tokio::test]
async fn sighup_does_not_stop_the_gateway_in_other_modes() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    // The certificate service starts with the listeners, long before the database is reported
    // ready; the pause only makes that certain.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("SIGHUP is logged", Duration::from_secs(5), || async {
        logs(&gw).contains("nothing to reload")
    })
    .await;
    let ready = reqwest::get(gw.metrics_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "the gateway is still up");
}
