//! The SNI resolver the HTTPS listener asks for a certificate on every handshake. It reads an
//! in-memory snapshot only (no I/O on the handshake path); certificate sources swap new
//! snapshots in when they load or renew a certificate, without dropping live connections.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::CertError;

/// What the readiness report and the admin pages say about the certificate being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    /// "self-signed", "files" or "acme".
    pub source: &'static str,
    pub names: Vec<String>,
    pub not_after: SystemTime,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    status: CertStatus,
}

#[derive(Debug, Default)]
pub struct CertResolver {
    default: ArcSwapOption<Loaded>,
}

impl CertResolver {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Replaces the certificate served to every name.
    pub fn set_default_pem(
        &self,
        cert_pem: &str,
        key_pem: &str,
        status: CertStatus,
    ) -> Result<(), CertError> {
        let key = certified_key(cert_pem, key_pem, &status.source_label())?;
        self.default.store(Some(Arc::new(Loaded {
            key: Arc::new(key),
            status,
        })));
        Ok(())
    }

    pub fn status(&self) -> Option<CertStatus> {
        self.default.load().as_ref().map(|l| l.status.clone())
    }
}

impl CertStatus {
    fn source_label(&self) -> String {
        format!("the {} certificate", self.source)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.default.load().as_ref().map(|l| l.key.clone())
    }
}

fn certified_key(
    cert_pem: &str,
    key_pem: &str,
    source_name: &str,
) -> Result<CertifiedKey, CertError> {
    let unusable = |reason: String| CertError::Unusable {
        source_name: source_name.to_owned(),
        reason,
    };
    let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(format!("bad certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(unusable("no certificate in the PEM".into()));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| unusable(format!("bad key PEM: {e}")))?
        .ok_or_else(|| unusable("no private key in the PEM".into()))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| unusable(format!("unsupported private key: {e}")))?;
    Ok(CertifiedKey::new(chain, signing_key))
}
