//! Flowcase Gateway certificate sources: where the certificates served by the front door come
//! from, and the SNI resolver that hands them to rustls.
//!
//! Three sources feed one [`CertResolver`]:
//! - the self-signed default ([`ensure_self_signed`]), generated on first start and kept in the
//!   data directory;
//! - certificate and key files ([`FileSource`]), reloaded when they change and on SIGHUP;
//! - ACME ([`AcmeManager`], through rustls-acme), for the public host and, on demand, for the
//!   names a [`NameAuthority`] admits.
//!
//! The resolver only ever reads in-memory snapshots; sources swap new ones in from the background
//! ([`CertificateService`]), so a handshake never waits on a file, the database or an ACME server,
//! and replacing a certificate never touches established connections.

mod acme;
mod files;
mod parse;
mod resolver;
mod self_signed;
mod service;

pub use acme::{AcmeChallengeKind, AcmeManager, AcmeSettings, NameAuthority};
pub use files::FileSource;
pub use resolver::{AcmeOrderCounts, CertResolver, CertStatus};
pub use self_signed::{SelfSigned, ensure_self_signed};
pub use service::CertificateService;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("unusable certificate or key in {source_name}: {reason}")]
    Unusable { source_name: String, reason: String },
    #[error("cannot set up the ACME client: {0}")]
    AcmeClient(String),
}
