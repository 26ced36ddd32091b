//! Desktop tunnel tokens: what the browser presents to open `/tunnel` (a WebSocket cannot carry
//! our CSRF header, and the session cookie alone would let any page that can open a WebSocket to
//! us start a desktop connection).
//!
//! The control plane mints one per viewer connection (`POST /api/v1/instances/{id}/tunnel-token`),
//! sealed with AES-256-GCM under the key file (purpose `tunnel-token` as associated data, key id
//! in front, so rotation works) and valid [`TTL_MS`]. It names the instance, the user, the session
//! and a random id; the tunnel opens it once (it remembers used ids until they expire) and checks
//! the session and the user's rights again before it contacts guacd. It carries no credential:
//! the desktop password stays on the server.

use serde::{Deserialize, Serialize};

use crate::secrets::{Keyring, seal};

const PURPOSE: &str = "tunnel-token";
/// How long a minted token may wait before it is used.
pub const TTL_MS: i64 = 60_000;

/// What a tunnel token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelGrant {
    pub instance_id: i64,
    pub user_id: i64,
    /// The stored id (hash) of the session that minted it.
    pub session: String,
    /// Random: the tunnel remembers it as used until [`Self::expires_at`].
    pub jti: String,
    /// Unix ms after which the token is refused.
    pub expires_at: i64,
    /// A read-only watch of the instance's running connection rather than a connection of one's
    /// own (sharing).
    #[serde(default)]
    pub watch: bool,
}

impl TunnelGrant {
    /// A grant for `user_id` in `session` on `instance_id`, valid [`TTL_MS`] from `now`.
    pub fn new(instance_id: i64, user_id: i64, session: &str, watch: bool, now: i64) -> Self {
        Self {
            instance_id,
            user_id,
            session: session.to_owned(),
            jti: super::tokens::new_secret(),
            expires_at: now + TTL_MS,
            watch,
        }
    }

    /// The opaque, URL-safe token.
    pub fn seal(&self, keyring: &Keyring) -> Option<String> {
        seal::seal(keyring, PURPOSE, self, self.expires_at)
    }

    /// Opens a token; None when malformed, forged, tampered with, sealed for another purpose or
    /// under an unknown key, or expired at `now`. Replays are the caller's to refuse (by `jti`).
    pub fn open(keyring: &Keyring, token: &str, now: i64) -> Option<Self> {
        let grant: Self = seal::open(keyring, PURPOSE, token, now)?;
        (now < grant.expires_at).then_some(grant)
    }
}

/// Token ids seen, until they expire: a second use of one is a replay. Bounded, so that a flood
/// of valid tokens cannot grow memory; when full of live ids it refuses (the viewer just mints a
/// new token).
#[derive(Debug, Default)]
pub struct UsedTokens {
    used: std::collections::HashMap<String, i64>,
}

impl UsedTokens {
    pub const MAX: usize = 100_000;

    /// Records `grant` as used at `now`; false when it already was.
    pub fn first_use(&mut self, grant: &TunnelGrant, now: i64) -> bool {
        if self.used.len() >= Self::MAX {
            self.used.retain(|_, expires| *expires > now);
            if self.used.len() >= Self::MAX {
                return false;
            }
        }
        self.used
            .insert(grant.jti.clone(), grant.expires_at)
            .is_none()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::secrets::Key;

    fn ring(id: &str, byte: u8) -> Keyring {
        Keyring::from_keys(vec![Key {
            id: id.into(),
            bytes: [byte; 32],
        }])
        .unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn opens_until_it_expires() {
        let k = ring("k1", 1);
        let grant = TunnelGrant::new(3, 7, "sess", false, 1_000);
        let token = grant.seal(&k).unwrap_or_default();
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "URL-safe: {token}"
        );
        assert_eq!(TunnelGrant::open(&k, &token, 1_000), Some(grant.clone()));
        assert_eq!(
            TunnelGrant::open(&k, &token, 1_000 + TTL_MS - 1),
            Some(grant)
        );
        assert_eq!(TunnelGrant::open(&k, &token, 1_000 + TTL_MS), None);
    }

    #[test]
    fn tampered_foreign_and_other_purpose_tokens_are_refused() {
        let k = ring("k1", 1);
        let token = TunnelGrant::new(3, 7, "s", false, 0)
            .seal(&k)
            .unwrap_or_default();
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap_or_default();
        let middle = raw.len() / 2;
        raw[middle] ^= 0x40;
        assert_eq!(
            TunnelGrant::open(&k, &URL_SAFE_NO_PAD.encode(&raw), 1),
            None
        );
        assert_eq!(TunnelGrant::open(&ring("k1", 2), &token, 1), None);
        assert_eq!(TunnelGrant::open(&k, "", 1), None);
        // An app-host code or any other sealed value is not a tunnel token, even with the
        // same fields.
        let other = seal::seal(
            &k,
            "app-host-code",
            &TunnelGrant::new(3, 7, "s", false, 0),
            TTL_MS,
        )
        .unwrap_or_default();
        assert_eq!(TunnelGrant::open(&k, &other, 1), None);
    }

    #[test]
    fn rotation_keeps_tokens_of_the_previous_key() {
        let old = ring("k1", 1);
        let token = TunnelGrant::new(3, 7, "s", true, 0)
            .seal(&old)
            .unwrap_or_default();
        let rotated = Keyring::from_keys(vec![
            Key {
                id: "k2".into(),
                bytes: [2; 32],
            },
            Key {
                id: "k1".into(),
                bytes: [1; 32],
            },
        ])
        .unwrap_or_else(|| unreachable!());
        let opened = TunnelGrant::open(&rotated, &token, 1);
        assert!(opened.is_some_and(|g| g.watch && g.instance_id == 3));
    }

    #[test]
    fn a_token_is_used_once() {
        let mut used = UsedTokens::default();
        let a = TunnelGrant::new(3, 7, "s", false, 0);
        let b = TunnelGrant::new(3, 7, "s", false, 0);
        assert!(used.first_use(&a, 1));
        assert!(!used.first_use(&a, 2), "replayed");
        assert!(used.first_use(&b, 2));
        // Expired ids are forgotten only when room is needed; they are refused by expiry anyway.
        for i in 0..UsedTokens::MAX {
            let mut g = TunnelGrant::new(3, 7, "s", false, 0);
            g.jti = i.to_string();
            used.first_use(&g, 3);
        }
        let late = TunnelGrant::new(3, 7, "s", false, TTL_MS);
        assert!(used.first_use(&late, TTL_MS + 1), "expired ids made room");
    }

    #[test]
    fn each_token_is_unique_so_replays_can_be_told_apart() {
        let k = ring("k1", 1);
        let a = TunnelGrant::new(3, 7, "s", false, 0);
        let b = TunnelGrant::new(3, 7, "s", false, 0);
        assert_ne!(a.jti, b.jti);
        assert_ne!(a.seal(&k), b.seal(&k));
    }
}
