//! The HTTPS listener: a plain TCP listener whose app runs the TLS handshake itself, then hands
//! the connection to the front door's HTTP proxy.
//!
//! pingora's built-in TLS listener offers one ALPN choice (h2+http/1.1, or a single custom
//! protocol), so it cannot answer ACME tls-alpn-01 validations (`acme-tls/1`) next to browsers.
//! Here the rustls `ServerConfig` offers `h2`, `http/1.1` and, when tls-alpn-01 is configured,
//! `acme-tls/1`; a validation connection ends right after its handshake (the handshake is the
//! answer), every other one goes to the proxy exactly as from pingora's own listener (the same
//! `TlsStream` type, so ALPN, digests and HTTP/2 detection behave the same). Being an ordinary
//! TCP listener of a pingora service, its socket is handed over by a graceful upgrade like any
//! other.
//!
//! The name the client asked for in the handshake (SNI) rides along in the connection's
//! `SslDigest` extension as a [`TlsServerName`], where the proxy checks it against each request's
//! host (see `proxy.rs`).
//!
//! Before the proxy, the start of each HTTP/1.1 connection is read to take desktop tunnels
//! straight to the tunnel server (see [`crate::tunnel::front`]); the proxy gets everything else
//! with those bytes given back.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowcase_certs::CertResolver;
use flowcase_config::ServerConfig;
use pingora::apps::ServerApp;
use pingora::listeners::TlsAccept;
use pingora::listeners::tls::{Acceptor, TlsSettings};
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{ALPN, Ssl, Stream};
use pingora::proxy::{HttpProxy, ProxyHttp};
use pingora::server::ShutdownWatch;

use crate::rewound::Rewound;
use crate::tunnel::front::TunnelDoor;
use crate::tunnel::server::Via;
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;

const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// As pingora's own TLS listener: a client that stalls mid-handshake is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The front door's proxy behind the TLS front, as a pingora service (add its listen address
/// with `add_tcp`).
pub fn front_door_service<SV>(
    conf: &Arc<ServerConf>,
    proxy: SV,
    name: &str,
    certs: Arc<CertResolver>,
    offer_acme_tls: bool,
    tunnels: (ServerConfig, TunnelDoor),
) -> anyhow::Result<Service<TlsFront<HttpProxy<SV>>>>
where
    SV: ProxyHttp,
    HttpProxy<SV>: ServerApp + Send + Sync + 'static,
{
    let app = pingora::proxy::http_proxy(conf, proxy);
    Ok(Service::new(
        name.to_owned(),
        TlsFront::new(certs, app, offer_acme_tls, tunnels)?,
    ))
}

pub struct TlsFront<A> {
    acceptor: Acceptor,
    app: Arc<A>,
    /// The host rules a direct tunnel must meet, and the tunnel server.
    tunnels: (ServerConfig, TunnelDoor),
}

impl<A> TlsFront<A> {
    pub fn new(
        certs: Arc<CertResolver>,
        app: A,
        offer_acme_tls: bool,
        tunnels: (ServerConfig, TunnelDoor),
    ) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if offer_acme_tls {
            config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
        // pingora only runs handshake callbacks (the one way to fill the digest's extension) on
        // an acceptor built from `TlsSettings`, whose ALPN list cannot hold three protocols; so
        // build that one, then swap in the rustls configuration above. The callbacks stay.
        let mut settings = TlsSettings::with_callbacks(Box::new(RecordServerName))?;
        settings.set_cert_resolver(certs);
        let mut acceptor = settings.build();
        acceptor.acceptor = pingora::tls::TlsAcceptor::from(Arc::new(config));
        Ok(Self {
            acceptor,
            app: Arc::new(app),
            tunnels,
        })
    }
}

/// The host name a client named in its TLS handshake (SNI), lower-cased as rustls hands it
/// over. Absent from the digest when the client sent none (connections to an IP address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerName(pub String);

struct RecordServerName;

#[async_trait]
impl TlsAccept for RecordServerName {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let name = tls.server_name()?;
        Some(Arc::new(TlsServerName(name.to_ascii_lowercase())))
    }
}

/// The SNI of the connection a request came on, if the client sent one.
pub fn server_name(digest: Option<&pingora::protocols::Digest>) -> Option<&str> {
    sni_of(digest?.ssl_digest.as_ref()?)
}

fn sni_of(ssl: &SslDigest) -> Option<&str> {
    ssl.extension.get::<TlsServerName>().map(|n| n.0.as_str())
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for TlsFront<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // The concrete TCP stream, so the TLS stream is the very type pingora's listener makes.
        let tcp = match stream.into_any().downcast::<TcpStream>() {
            Ok(tcp) => *tcp,
            Err(_) => {
                tracing::error!("the HTTPS listener got a stream that is not TCP; dropped");
                return None;
            }
        };
        let tls =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.tls_handshake(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    crate::metrics::tls_handshake(false);
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    crate::metrics::tls_handshake(false);
                    tracing::debug!("TLS handshake timed out");
                    return None;
                }
            };
        crate::metrics::tls_handshake(true);
        let mut tls = tls;
        match tls.selected_alpn_proto() {
            Some(ALPN::Custom(proto)) if proto.protocol() == ACME_TLS_ALPN => {
                tracing::debug!("answered a tls-alpn-01 validation");
                None
            }
            // Browsers open WebSockets over HTTP/1.1 only.
            Some(ALPN::H2) => self.app.process_new(Box::new(tls), shutdown).await,
            _ => {
                let head = crate::tunnel::front::read_head(&mut tls, HANDSHAKE_TIMEOUT).await?;
                let (server, door) = &self.tunnels;
                let ssl = tls.get_ssl_digest();
                let sni = ssl.as_deref().and_then(sni_of);
                let tunnel = door
                    .get()
                    .filter(|_| crate::tunnel::front::is_tunnel_request(&head, sni, server));
                let stream = Rewound::new(head, tls);
                match tunnel {
                    Some(tunnels) => {
                        let started = std::time::Instant::now();
                        tunnels.handle(stream, Via::Front).await;
                        // The proxy's access line, for tunnels that never reach the proxy.
                        tracing::info!(
                            target: "access",
                            host_class = "public",
                            method = "GET",
                            path = "/tunnel",
                            via = "tls-front",
                            latency_ms = started.elapsed().as_millis() as u64,
                        );
                        None
                    }
                    None => self.app.process_new(Box::new(stream), shutdown).await,
                }
            }
        }
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}
