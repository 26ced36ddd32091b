//! Flowcase Gateway certificate sources: where the certificates served by the front door come
//! from, and the SNI resolver that hands them to rustls.
//!
//! This crate owns the self-signed default (generated on first start and kept in the data
//! directory). Certificates from files and from ACME plug into the same [`CertResolver`].

mod resolver;
mod self_signed;

pub use resolver::{CertResolver, CertStatus};
pub use self_signed::{SelfSigned, ensure_self_signed};

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
}
