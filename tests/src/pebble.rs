//! Pebble, Let's Encrypt's test ACME server (Debian package `pebble`), with
//! `pebble-challtestsrv` as its DNS server, on free loopback ports, validating challenges for
//! real: every name resolves to 127.0.0.1, and pebble connects to the gateway's HTTP port
//! (http-01) and HTTPS port (tls-alpn-01) as configured.
//!
//! Pebble ships no certificate for its own HTTPS listener: one is generated here with a private
//! CA (`ca_bundle`, what the gateway's `tls.acme.ca_bundle` must name). Certificates pebble
//! issues chain to another root, fetched with [`Pebble::issuing_root`]; it changes with every
//! pebble process.
//!
//! Also here: probes that show which certificate a TLS listener serves for a name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::free_port;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running pebble and its DNS server; both killed when dropped.
pub struct Pebble {
    pub dir: tempfile::TempDir,
    /// `https://127.0.0.1:<port>/dir`
    pub directory_url: String,
    /// The CA of pebble's own HTTPS listener (PEM file).
    pub ca_bundle: PathBuf,
    pub management_port: u16,
    pebble: Child,
    challtestsrv: Child,
    log_path: PathBuf,
}

impl Pebble {
    /// Starts pebble validating http-01 on `http_port` and tls-alpn-01 on `tls_port` of
    /// 127.0.0.1 (the gateway's plain-HTTP and HTTPS listeners).
    pub async fn start(http_port: u16, tls_port: u16) -> Pebble {
        Self::start_issuing(http_port, tls_port, None).await
    }

    /// Like [`Pebble::start`], issuing certificates valid for `validity` instead of pebble's
    /// five years (its `certificateValidityPeriod` setting, whole seconds), so renewals happen
    /// within a test.
    pub async fn start_short_lived(http_port: u16, tls_port: u16, validity: Duration) -> Pebble {
        Self::start_issuing(http_port, tls_port, Some(validity)).await
    }

    async fn start_issuing(http_port: u16, tls_port: u16, validity: Option<Duration>) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let (listen_port, management_port) = (free_port(), free_port());
        let (dns_port, dns_management_port) = (free_port(), free_port());

        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pebble listener test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let ca_bundle = dir.path().join("listener-ca.pem");
        std::fs::write(&ca_bundle, ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("listener.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("listener.key"), key.serialize_pem()).unwrap();

        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen_port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": dir.path().join("listener.pem"),
                "privateKey": dir.path().join("listener.key"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        if let Some(validity) = validity {
            config["pebble"]["certificateValidityPeriod"] = validity.as_secs().into();
        }
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();

        let challtestsrv_log = std::fs::File::create(dir.path().join("challtestsrv.log")).unwrap();
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-management",
                &format!("127.0.0.1:{dns_management_port}"),
                // Its own challenge servers stay off: the gateway answers the challenges.
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .stdin(Stdio::null())
            .stdout(challtestsrv_log.try_clone().unwrap())
            .stderr(challtestsrv_log)
            .spawn()
            .expect("pebble-challtestsrv (Debian package pebble) must be installed");

        let log_path = dir.path().join("pebble.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{dns_port}"))
            .current_dir(dir.path())
            // Without this pebble rejects 5% of nonces on purpose.
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Every order validates for real, never on an authorization reused from before.
            .env("PEBBLE_AUTHZREUSE", "0")
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble (Debian package pebble) must be installed");

        let pebble = Pebble {
            directory_url: format!("https://127.0.0.1:{listen_port}/dir"),
            ca_bundle,
            management_port,
            pebble,
            challtestsrv,
            log_path,
            dir,
        };
        pebble.wait_ready(dns_management_port).await;
        pebble
    }

    async fn wait_ready(&self, dns_management_port: u16) {
        let client = self.listener_client();
        let plain = reqwest::Client::new();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let directory = client.get(&self.directory_url).send().await;
            // challtestsrv's management API answers any path once it listens.
            let dns = plain
                .get(format!("http://127.0.0.1:{dns_management_port}/"))
                .send()
                .await;
            if directory.is_ok_and(|r| r.status() == 200) && dns.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pebble not ready after {START_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client for pebble's own API (directory, management).
    fn listener_client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca_bundle).unwrap();
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap()
    }

    /// The root that certificates issued by this pebble chain to (PEM).
    pub async fn issuing_root(&self) -> String {
        let resp = self
            .listener_client()
            .get(format!(
                "https://127.0.0.1:{}/roots/0",
                self.management_port
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    /// Everything pebble logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// How many orders pebble has received (new-order requests).
    pub fn orders(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("POST /order-plz"))
            .count()
    }

    /// How many challenge validations pebble has started for `name`.
    pub fn validations_for(&self, name: &str) -> usize {
        let identifier = format!("Value:\"{name}\"");
        self.log()
            .lines()
            .filter(|l| l.contains("Pulled a task") && l.contains(&identifier))
            .count()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.challtestsrv] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client that trusts only `root_pem` and resolves each of `hosts` to `addr`.
pub fn client_trusting(root_pem: &str, hosts: &[&str], addr: SocketAddr) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        // Every request on a new connection: each one shows the certificate served now.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    for host in hosts {
        builder = builder.resolve(host, addr);
    }
    builder.build().unwrap()
}

/// The leaf certificate (DER) and the negotiated ALPN protocol a TLS listener at `addr` serves
/// for `sni`, without judging it.
pub async fn served_certificate(addr: SocketAddr, sni: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    let (tls, leaf) = connect_unverified(addr, sni, &[b"h2", b"http/1.1"]).await;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    (leaf, alpn)
}

/// A TLS connection that accepts any certificate, offering `alpn`, and the leaf it was served.
pub async fn connect_unverified(
    addr: SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
) {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAny))
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake timed out")
    .unwrap();
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    (tls, leaf)
}

/// Accepts every certificate: the probes look at what is served, they do not judge it.
#[derive(Debug)]
struct AcceptAny;

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
