//! Cross-site request forgery defences for requests authenticated by cookie.
//!
//! Two independent checks: the request must come from a page of ours (`Origin`, or `Referer`
//! when a browser leaves `Origin` out), and it must carry the session's CSRF token (form field
//! `csrf_token` or header `X-CSRF-Token`). The token is an HMAC of the session id under the
//! gateway's secret key, so it needs no storage and works unchanged across gateway processes
//! that share the key file.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::secrets::Keyring;

pub const FORM_FIELD: &str = "csrf_token";
pub const HEADER: &str = "x-csrf-token";

fn mac(keyring: &Keyring, session_id_hash: &str) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&keyring.current().bytes).ok()?;
    mac.update(b"flowcase csrf v1\0");
    mac.update(session_id_hash.as_bytes());
    Some(mac)
}

/// The CSRF token of a session (identified by the stored hash of its cookie).
pub fn token(keyring: &Keyring, session_id_hash: &str) -> String {
    mac(keyring, session_id_hash)
        .map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Constant-time check of a presented token.
pub fn verify(keyring: &Keyring, session_id_hash: &str, presented: &str) -> bool {
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(presented.trim()) else {
        return false;
    };
    mac(keyring, session_id_hash).is_some_and(|m| m.verify_slice(&bytes).is_ok())
}

/// Whether the request's `Origin` (or, without one, its `Referer`) is our public origin. A
/// request with neither is refused: every browser that matters sends one of them on a POST.
pub fn same_origin(public_origin: &str, origin: Option<&str>, referer: Option<&str>) -> bool {
    match (origin, referer) {
        (Some(origin), _) => origin == public_origin,
        (None, Some(referer)) => referer
            .strip_prefix(public_origin)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        (None, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_checks_are_exact() {
        let ours = "https://gw.example:8443";
        assert!(same_origin(ours, Some("https://gw.example:8443"), None));
        assert!(!same_origin(ours, Some("https://gw.example"), None));
        assert!(!same_origin(
            ours,
            Some("null"),
            Some("https://gw.example:8443/")
        ));
        assert!(same_origin(
            ours,
            None,
            Some("https://gw.example:8443/dashboard")
        ));
        assert!(!same_origin(
            ours,
            None,
            Some("https://gw.example:8443.evil.example/")
        ));
        assert!(!same_origin(ours, None, None));
    }
}
