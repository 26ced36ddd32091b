//! The signed identity assertion instance hosts receive in `X-Flowcase-Assertion`: a JWT
//! (ES256) naming the user, so that an app behind the gateway can trust who is calling without
//! trusting the network. Its public key is published as a JWKS at
//! `https://<public_host>/.well-known/flowcase/jwks.json`.
//!
//! The P-256 key is generated on first start into `<data_dir>/assertion-key.p8` (PKCS#8, mode
//! 0600) and kept, so apps that cached the JWKS keep verifying across restarts.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::Serialize;

use crate::error::{AdminError, Result};

pub const KEY_FILE: &str = "assertion-key.p8";
/// Assertions are short-lived: an app that logs one cannot replay it for long.
pub const LIFETIME_MS: i64 = 5 * 60 * 1000;

/// What an assertion says.
#[derive(Debug, Clone, Serialize)]
pub struct Claims<'a> {
    /// The gateway's public origin.
    pub iss: &'a str,
    /// The user id, as a string (JWT convention).
    pub sub: String,
    /// The instance origin the assertion is for.
    pub aud: &'a str,
    pub iat: i64,
    pub exp: i64,
    pub preferred_username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
    pub groups: &'a [String],
}

pub struct AssertionSigner {
    key: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AssertionSigner({})", self.kid)
    }
}

impl AssertionSigner {
    /// Loads the key kept in `data_dir`, generating it on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(KEY_FILE);
        let rng = SystemRandom::new();
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| AdminError::KeyFile {
                        path: path.clone(),
                        reason: "cannot generate a P-256 key".into(),
                    })?;
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                {
                    Ok(mut file) => {
                        file.write_all(doc.as_ref())
                            .and_then(|()| file.sync_all())
                            .map_err(|e| AdminError::io(&path, e))?;
                        doc.as_ref().to_vec()
                    }
                    // Another process won the race: use its key.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read(&path).map_err(|e| AdminError::io(&path, e))?
                    }
                    Err(e) => return Err(AdminError::io(&path, e)),
                }
            }
            Err(e) => return Err(AdminError::io(&path, e)),
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|e| AdminError::KeyFile {
                path: path.clone(),
                reason: format!("not a P-256 PKCS#8 key: {e}"),
            })?;
        let kid = super::tokens::digest(&URL_SAFE_NO_PAD.encode(key.public_key().as_ref()))[..16]
            .to_owned();
        Ok(Self { key, kid, rng })
    }

    /// A compact JWT for `claims`; None only if the signer fails, which ring never does for a
    /// valid key.
    pub fn sign(&self, claims: &Claims<'_>) -> Option<String> {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).ok()?)
        );
        let signature = self.key.sign(&self.rng, signing_input.as_bytes()).ok()?;
        Some(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// The JSON Web Key Set apps verify assertions with.
    pub fn jwks(&self) -> serde_json::Value {
        // The public key is the uncompressed point 0x04 || x || y.
        let point = self.key.public_key().as_ref();
        let (x, y) = point
            .get(1..)
            .map_or((&[][..], &[][..]), |xy| xy.split_at(xy.len() / 2));
        serde_json::json!({
            "keys": [{
                "kty": "EC",
                "crv": "P-256",
                "alg": "ES256",
                "use": "sig",
                "kid": self.kid,
                "x": URL_SAFE_NO_PAD.encode(x),
                "y": URL_SAFE_NO_PAD.encode(y),
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    #[test]
    fn signs_verifiable_tokens_and_keeps_its_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let signer = AssertionSigner::load_or_create(dir.path()).unwrap_or_else(|_| unreachable!());
        let again = AssertionSigner::load_or_create(dir.path()).unwrap_or_else(|_| unreachable!());
        assert_eq!(
            signer.jwks(),
            again.jwks(),
            "the key is kept across restarts"
        );
        let groups = vec!["User".to_owned()];
        let token = signer
            .sign(&Claims {
                iss: "https://gw",
                sub: "7".into(),
                aud: "https://a.apps.gw",
                iat: 1,
                exp: 2,
                preferred_username: "alice",
                email: None,
                groups: &groups,
            })
            .unwrap_or_default();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let jwks = signer.jwks();
        let coordinate = |name: &str| {
            URL_SAFE_NO_PAD
                .decode(jwks["keys"][0][name].as_str().unwrap_or_default())
                .unwrap_or_default()
        };
        let mut point = vec![4u8];
        point.extend(coordinate("x"));
        point.extend(coordinate("y"));
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap_or_default();
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
                .verify(input.as_bytes(), &signature)
                .is_ok()
        );
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(payload["preferred_username"], "alice");
        assert_eq!(payload["sub"], "7");
    }
}
