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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowcase_certs::CertResolver;
use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{ALPN, Ssl, Stream};
use pingora::proxy::{HttpProxy, ProxyHttp};
use pingora::server::ShutdownWatch;
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
) -> anyhow::Result<Service<TlsFront<HttpProxy<SV>>>>
where
    SV: ProxyHttp,
    HttpProxy<SV>: ServerApp + Send + Sync + 'static,
{
    let app = pingora::proxy::http_proxy(conf, proxy);
    Ok(Service::new(
        name.to_owned(),
        TlsFront::new(certs, app, offer_acme_tls)?,
    ))
}

pub struct TlsFront<A> {
    acceptor: Acceptor,
    app: Arc<A>,
}

impl<A> TlsFront<A> {
    pub fn new(certs: Arc<CertResolver>, app: A, offer_acme_tls: bool) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(certs);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if offer_acme_tls {
            config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
        Ok(Self {
            acceptor: Acceptor::from_server_config(Arc::new(config)),
            app: Arc::new(app),
        })
    }
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
        if let Some(ALPN::Custom(proto)) = tls.selected_alpn_proto()
            && proto.protocol() == ACME_TLS_ALPN
        {
            tracing::debug!("answered a tls-alpn-01 validation");
            return None;
        }
        self.app.process_new(Box::new(tls), shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}
