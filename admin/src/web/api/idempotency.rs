//! Launches that are safe to send again. A browser that lost the answer to
//! `POST /api/v1/instances` (a dropped connection, a network change, a gateway restart between
//! request and answer) cannot know whether the instance was made; pressing "Launch" again would
//! start a second one. A client that sends an `Idempotency-Key` header (the dashboard makes one
//! per launch dialog) gets, for the same key, the instance the first request made, even while
//! that first request is still running.
//!
//! Keys are remembered per user for [`KEEP`], in this process: behind a load balancer a retry
//! that reaches another gateway launches again (the usual per-user instance limits still
//! apply). Requests without the header behave as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use tokio::sync::OnceCell;

use crate::error::AdminError;

/// The header's name (the IETF draft "The Idempotency-Key HTTP Header Field").
pub const HEADER: &str = "idempotency-key";
/// How long a key names its launch: far longer than any retry of a lost answer.
pub const KEEP: Duration = Duration::from_secs(10 * 60);
/// Keys remembered at most; beyond it the oldest are forgotten (a client sending a new key per
/// request cannot grow our memory without bound).
const MAX_KEYS: usize = 10_000;
const MAX_KEY_LEN: usize = 128;

/// The instance a key's launch made, once it made one.
pub type Slot = Arc<OnceCell<i64>>;

#[derive(Default)]
pub struct LaunchKeys {
    slots: Mutex<HashMap<(i64, String), (Instant, Slot)>>,
}

impl LaunchKeys {
    /// The slot of `user`'s `key`: a new one, or the one an earlier request with that key
    /// holds (filled when its launch succeeded, being filled while it runs).
    pub fn slot(&self, user_id: i64, key: &str, now: Instant) -> Slot {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < KEEP;
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let id = (user_id, key.to_owned());
        if let Some((at, slot)) = slots.get(&id)
            && fresh(at)
        {
            return Arc::clone(slot);
        }
        if slots.len() >= MAX_KEYS {
            slots.retain(|_, (at, _)| fresh(at));
        }
        if slots.len() >= MAX_KEYS {
            let oldest = slots
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                slots.remove(&oldest);
            }
        }
        let slot = Slot::default();
        slots.insert(id, (now, Arc::clone(&slot)));
        slot
    }
}

/// The request's `Idempotency-Key`, if any: 1 to 128 visible ASCII characters.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, AdminError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let invalid = || AdminError::InvalidInput {
        field: "Idempotency-Key",
        reason: format!("1 to {MAX_KEY_LEN} visible ASCII characters"),
    };
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if text.is_empty() || text.len() > MAX_KEY_LEN || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(Some(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn keys_are_short_visible_ascii_quoted_or_not() {
        assert_eq!(key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(key(&headers("abc-1")).unwrap().as_deref(), Some("abc-1"));
        assert_eq!(
            key(&headers("\"abc-1\"")).unwrap().as_deref(),
            Some("abc-1")
        );
        for bad in ["", "\"\"", "a b", &"x".repeat(129)] {
            assert!(key(&headers(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_key_names_one_slot_per_user_until_it_expires() {
        let keys = LaunchKeys::default();
        let t0 = Instant::now();
        let a = keys.slot(1, "k", t0);
        assert!(a.set(42).is_ok());
        assert_eq!(
            keys.slot(1, "k", t0 + Duration::from_secs(5)).get(),
            Some(&42)
        );
        assert_eq!(
            keys.slot(2, "k", t0).get(),
            None,
            "another user's key is theirs"
        );
        assert_eq!(keys.slot(1, "k", t0 + KEEP).get(), None, "expired");
    }

    #[test]
    fn the_oldest_keys_make_room_beyond_the_bound() {
        let keys = LaunchKeys::default();
        let t0 = Instant::now();
        assert!(keys.slot(1, "first", t0).set(1).is_ok());
        for n in 1..=MAX_KEYS {
            keys.slot(1, &format!("k{n}"), t0 + Duration::from_millis(n as u64));
        }
        assert_eq!(keys.slots.lock().unwrap().len(), MAX_KEYS);
        assert_eq!(keys.slot(1, "first", t0).get(), None);
    }
}
