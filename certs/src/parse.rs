//! Turning PEM text into what rustls serves, and reading the names and expiry that the readiness
//! report shows. Every source goes through here, so a certificate whose key does not match is
//! refused the same way whether it came from a file or from an ACME server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

use crate::CertError;

/// A certificate chain with its key, ready to serve.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub key: CertifiedKey,
    /// The DNS names of the leaf (its subject alternative names).
    pub names: Vec<String>,
    pub not_after: SystemTime,
}

/// Parses a PEM certificate chain (leaf first) and a PEM private key. Both may be the same
/// text: rustls-acme keeps key and chain in one PEM.
pub(crate) fn parse_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    source_name: &str,
) -> Result<Parsed, CertError> {
    let unusable = |reason: String| CertError::Unusable {
        source_name: source_name.to_owned(),
        reason,
    };
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(format!("bad certificate PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(unusable("no certificate in the PEM".into()));
    };
    let (names, not_after) = leaf_info(leaf).map_err(unusable)?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| unusable(format!("bad key PEM: {e}")))?
        .ok_or_else(|| unusable("no private key in the PEM".into()))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| unusable(format!("unsupported private key: {e}")))?;
    let key = CertifiedKey::new(chain, signing_key);
    // A certificate replaced before its key (or the other way round) must not be served: every
    // handshake would fail. `Unknown` means the key type cannot tell, which ring keys always can.
    match key.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(unusable(format!(
                "the key does not belong to the certificate: {e}"
            )));
        }
    }
    Ok(Parsed {
        key,
        names,
        not_after,
    })
}

/// The DNS names and expiry of a DER certificate.
pub(crate) fn leaf_info(der: &[u8]) -> Result<(Vec<String>, SystemTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let not_after = u64::try_from(cert.validity().not_after.timestamp())
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH);
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("bad subject alternative names: {e}")),
    };
    Ok((names, not_after))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cert(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn reads_names_and_refuses_a_foreign_key() {
        let (cert_a, key_a) = cert(&["a.example", "*.apps.example"]);
        let (_, key_b) = cert(&["b.example"]);
        let parsed = parse_pem(cert_a.as_bytes(), key_a.as_bytes(), "test").unwrap();
        assert_eq!(parsed.names, ["a.example", "*.apps.example"]);
        assert!(parsed.not_after > SystemTime::now());
        let err = parse_pem(cert_a.as_bytes(), key_b.as_bytes(), "test").unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        let both = format!("{key_a}\n{cert_a}");
        assert!(parse_pem(both.as_bytes(), both.as_bytes(), "test").is_ok());
        assert!(parse_pem(b"garbage", key_a.as_bytes(), "test").is_err());
    }
}
