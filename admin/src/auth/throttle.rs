//! Login rate limiting with exponential backoff, per client address and per account.
//!
//! After a few free failures each further failure doubles the wait before the next attempt is
//! even checked (up to a cap); a success clears the account's and the address's counters. State
//! is in memory and bounded: the oldest entries go first when it is full. Several gateway
//! processes each keep their own counters, which only loosens the limit by that factor.

use std::collections::HashMap;
use std::sync::Mutex;

/// Failures allowed before waiting starts.
const FREE_FAILURES_ACCOUNT: u32 = 5;
const FREE_FAILURES_ADDRESS: u32 = 20;
const FIRST_DELAY_MS: i64 = 1_000;
const MAX_DELAY_MS: i64 = 15 * 60 * 1_000;
/// Counters untouched this long are forgotten.
const FORGET_AFTER_MS: i64 = 60 * 60 * 1_000;
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    blocked_until: i64,
    last_failure: i64,
}

#[derive(Debug, Default)]
pub struct LoginThrottle {
    entries: Mutex<HashMap<String, Entry>>,
}

/// The key of a client address or an account in the throttle.
pub fn address_key(addr: &str) -> String {
    format!("addr:{addr}")
}

pub fn account_key(login: &str) -> String {
    format!("acct:{}", crate::store::users::fold_case(login))
}

impl LoginThrottle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Milliseconds left before any of `keys` may try again, or None when all may try now.
    pub fn wait_ms(&self, keys: &[String], now: i64) -> Option<i64> {
        let entries = self.entries.lock().ok()?;
        keys.iter()
            .filter_map(|k| entries.get(k))
            .map(|e| e.blocked_until - now)
            .filter(|&ms| ms > 0)
            .max()
    }

    pub fn record_failure(&self, keys: &[String], now: i64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now - e.last_failure < FORGET_AFTER_MS);
            if entries.len() >= MAX_ENTRIES {
                // Still full of recent failures (an attack from many addresses): make room by
                // dropping the oldest half rather than growing without bound.
                let mut ages: Vec<i64> = entries.values().map(|e| e.last_failure).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                entries.retain(|_, e| e.last_failure > cutoff);
            }
        }
        for key in keys {
            let free = if key.starts_with("addr:") {
                FREE_FAILURES_ADDRESS
            } else {
                FREE_FAILURES_ACCOUNT
            };
            let entry = entries.entry(key.clone()).or_insert(Entry {
                failures: 0,
                blocked_until: 0,
                last_failure: now,
            });
            if now - entry.last_failure > FORGET_AFTER_MS {
                entry.failures = 0;
            }
            entry.failures += 1;
            entry.last_failure = now;
            if entry.failures >= free {
                let doublings = (entry.failures - free).min(20);
                let delay = (FIRST_DELAY_MS << doublings).min(MAX_DELAY_MS);
                entry.blocked_until = now + delay;
            }
        }
    }

    pub fn clear(&self, keys: &[String]) {
        if let Ok(mut entries) = self.entries.lock() {
            for key in keys {
                entries.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_after_free_failures_and_doubles() {
        let t = LoginThrottle::new();
        let keys = [account_key("Alice")];
        let mut now = 1_000_000;
        for _ in 0..FREE_FAILURES_ACCOUNT - 1 {
            t.record_failure(&keys, now);
            assert_eq!(t.wait_ms(&keys, now), None);
        }
        t.record_failure(&keys, now);
        assert_eq!(t.wait_ms(&keys, now), Some(FIRST_DELAY_MS));
        now += FIRST_DELAY_MS;
        assert_eq!(t.wait_ms(&keys, now), None);
        t.record_failure(&keys, now);
        assert_eq!(t.wait_ms(&keys, now), Some(2 * FIRST_DELAY_MS));
        assert_eq!(
            t.wait_ms(&[account_key("alice")], now),
            Some(2 * FIRST_DELAY_MS)
        );
        t.clear(&keys);
        assert_eq!(t.wait_ms(&keys, now), None);
    }

    #[test]
    fn delay_is_capped() {
        let t = LoginThrottle::new();
        let keys = [account_key("bob")];
        for i in 0..60 {
            t.record_failure(&keys, i);
        }
        assert!(t.wait_ms(&keys, 60).unwrap_or(0) <= MAX_DELAY_MS);
    }
}
