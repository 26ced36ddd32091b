//! Sealed tokens: small JSON payloads encrypted and authenticated with AES-256-GCM under the
//! key file's current key, with an expiry and a purpose.
//!
//! The purpose is the AEAD's associated data, so a token sealed for one use (an OIDC login in
//! flight, an app-host code, a tunnel ticket) cannot be replayed as another. The key id travels
//! in clear in front, so tokens sealed before a key rotation still open while the old key is
//! kept in the file.
//!
//! Format (then base64url): `len(key id) | key id | 12-byte nonce | ciphertext+tag`; the
//! plaintext is `{"exp": <unix ms>, "v": <payload>}`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Keyring;

const NONCE_LEN: usize = 12;

#[derive(Serialize, serde::Deserialize)]
struct Envelope<T> {
    exp: i64,
    v: T,
}

/// Seals `payload` for `purpose`, valid until `expires_at` (unix ms). None only if the key is
/// unusable, which the key file's validation already rules out.
pub fn seal<T: Serialize>(
    keyring: &Keyring,
    purpose: &str,
    payload: &T,
    expires_at: i64,
) -> Option<String> {
    let key = keyring.current();
    let cipher = Aes256Gcm::new_from_slice(&key.bytes).ok()?;
    let plaintext = serde_json::to_vec(&Envelope {
        exp: expires_at,
        v: payload,
    })
    .ok()?;
    let nonce_bytes: [u8; NONCE_LEN] = rand::random();
    let nonce = Nonce::try_from(&nonce_bytes[..]).ok()?;
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &plaintext,
                aad: purpose.as_bytes(),
            },
        )
        .ok()?;
    let id = key.id.as_bytes();
    let mut out = Vec::with_capacity(1 + id.len() + NONCE_LEN + ciphertext.len());
    out.push(u8::try_from(id.len()).ok()?);
    out.extend_from_slice(id);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&ciphertext);
    Some(URL_SAFE_NO_PAD.encode(out))
}

/// Opens a token sealed for `purpose`; None when it is malformed, forged, sealed for another
/// purpose, under an unknown key, or expired at `now`.
pub fn open<T: DeserializeOwned>(
    keyring: &Keyring,
    purpose: &str,
    token: &str,
    now: i64,
) -> Option<T> {
    if token.len() > 16 * 1024 {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    let (&id_len, rest) = raw.split_first()?;
    let id_len = usize::from(id_len);
    if rest.len() < id_len + NONCE_LEN {
        return None;
    }
    let (id, rest) = rest.split_at(id_len);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let key = keyring.by_id(std::str::from_utf8(id).ok()?)?;
    let cipher = Aes256Gcm::new_from_slice(&key.bytes).ok()?;
    let plaintext = cipher
        .decrypt(
            &Nonce::try_from(nonce).ok()?,
            Payload {
                msg: ciphertext,
                aad: purpose.as_bytes(),
            },
        )
        .ok()?;
    let envelope: Envelope<T> = serde_json::from_slice(&plaintext).ok()?;
    (now < envelope.exp).then_some(envelope.v)
}

/// The id of the key a token was sealed under (travels in clear), so a caller whose
/// [`open`] failed can say whether the key is missing from the key file or did not fit.
pub fn sealed_key_id(token: &str) -> Option<String> {
    let raw = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    let (&id_len, rest) = raw.split_first()?;
    let id = rest.get(..usize::from(id_len))?;
    std::str::from_utf8(id).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Key;

    fn ring(keys: &[(&str, u8)]) -> Keyring {
        Keyring::from_keys(
            keys.iter()
                .map(|(id, b)| Key {
                    id: (*id).into(),
                    bytes: [*b; 32],
                })
                .collect(),
        )
        .unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn round_trip_expiry_purpose_and_tampering() {
        let k = ring(&[("k1", 7)]);
        let token = seal(&k, "test", &("hello", 42), 1_000).unwrap_or_default();
        assert_eq!(
            open::<(String, i32)>(&k, "test", &token, 999),
            Some(("hello".into(), 42))
        );
        assert_eq!(
            open::<(String, i32)>(&k, "test", &token, 1_000),
            None,
            "expired"
        );
        assert_eq!(
            open::<(String, i32)>(&k, "other", &token, 0),
            None,
            "wrong purpose"
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap_or_default();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            open::<(String, i32)>(&k, "test", &URL_SAFE_NO_PAD.encode(bytes), 0),
            None,
            "tampered"
        );
        assert_eq!(open::<(String, i32)>(&k, "test", "garbage!", 0), None);
        assert_eq!(open::<(String, i32)>(&k, "test", "", 0), None);
    }

    #[test]
    fn rotation_keeps_old_tokens_and_unknown_keys_fail() {
        let old = ring(&[("k1", 1)]);
        let token = seal(&old, "p", &1u8, i64::MAX).unwrap_or_default();
        let rotated = ring(&[("k2", 2), ("k1", 1)]);
        assert_eq!(open::<u8>(&rotated, "p", &token, 0), Some(1));
        let other = ring(&[("k1", 9)]);
        assert_eq!(
            open::<u8>(&other, "p", &token, 0),
            None,
            "same id, different key"
        );
        assert_eq!(open::<u8>(&ring(&[("k3", 1)]), "p", &token, 0), None);
        assert_eq!(sealed_key_id(&token).as_deref(), Some("k1"));
        assert_eq!(sealed_key_id("garbage!"), None);
    }
}
