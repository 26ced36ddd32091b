//! User activity, as the gateway sees it, on its way to the database.
//!
//! The proxy reports every request and every piece of real tunnel input; writing each one
//! would put a database round trip on the hot path and a write per keystroke on the database.
//! So [`ActivityReporter::record`] only notes "instance N was used at T" in a map under a
//! short, uncontended lock (no I/O, no await, callable from any thread or runtime), and a
//! background task writes the whole map in one transaction every few seconds. The idle reaper
//! flushes first, so nothing seen by this process is missed; activity seen by another gateway
//! process arrives within its flush period, which is far below any sensible idle timeout.
//!
//! The sign-in session each use derives from (an app cookie's, a desktop tunnel's) is noted too
//! and kept alive as a page of the control plane would keep it: someone working in an app or a
//! desktop for hours is not signed out for "idleness". The same flush then ends the sessions
//! whose idle time did run out, which is how the app cookies and tunnels derived from them (they
//! only learn of revocations) end as well.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Clock, Orchestrator};
use crate::error::Result;

/// Distinct instances remembered between two flushes. The proxy records only instances it
/// admitted, so this is never reached in practice; it bounds memory if the flush keeps failing.
const MAX_PENDING: usize = 100_000;

/// Cheap, synchronous, non-blocking activity notes. Clones share one map.
#[derive(Clone)]
pub struct ActivityReporter {
    pending: Arc<Mutex<Pending>>,
    clock: Arc<dyn Clock>,
}

/// Something used (an instance id, a session id) and when last, unix ms.
type Used<T> = (T, i64);

/// What was used since the last flush, and when last.
#[derive(Debug, Default)]
struct Pending {
    instances: HashMap<i64, i64>,
    /// Stored session id (hash) → when last used.
    sessions: HashMap<String, i64>,
}

impl std::fmt::Debug for ActivityReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityReporter")
            .field("pending", &self.pending())
            .finish()
    }
}

impl ActivityReporter {
    /// A reporter stamping activity with `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            pending: Arc::new(Mutex::new(Pending::default())),
            clock,
        }
    }

    /// Notes that an instance was used now through sign-in session `session` (its stored
    /// id). Never blocks on I/O.
    pub fn record(&self, instance_id: i64, session: &str) {
        let now = self.clock.now_millis();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.instances.len() < MAX_PENDING || pending.instances.contains_key(&instance_id) {
            let seen = pending.instances.entry(instance_id).or_insert(now);
            *seen = (*seen).max(now);
        }
        let room = pending.sessions.len() < MAX_PENDING;
        match pending.sessions.get_mut(session) {
            Some(seen) => *seen = (*seen).max(now),
            None if room => {
                pending.sessions.insert(session.to_owned(), now);
            }
            None => {}
        }
    }

    /// Instances noted since the last flush.
    pub fn pending(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .instances
            .len()
    }

    /// The instances and the sessions noted since the last flush, each in a stable order (which
    /// keeps two processes' batches from taking row locks in opposite orders).
    fn take(&self) -> (Vec<Used<i64>>, Vec<Used<String>>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let mut instances: Vec<(i64, i64)> = pending.instances.drain().collect();
        instances.sort_unstable();
        let mut sessions: Vec<(String, i64)> = pending.sessions.drain().collect();
        sessions.sort_unstable();
        (instances, sessions)
    }

    /// Puts a batch of instances that could not be written back, keeping newer notes.
    fn restore(&self, batch: Vec<(i64, i64)>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, at) in batch {
            if pending.instances.len() >= MAX_PENDING && !pending.instances.contains_key(&id) {
                break;
            }
            let seen = pending.instances.entry(id).or_insert(at);
            *seen = (*seen).max(at);
        }
    }
}

impl Orchestrator {
    /// The reporter the proxy calls for every request and real tunnel input. Clone it freely.
    pub fn activity(&self) -> &ActivityReporter {
        &self.activity
    }

    /// Writes the activity noted so far; returns how many instances moved. On failure the notes
    /// are kept for the next attempt. Call it once more at shutdown.
    ///
    /// The sessions used are kept alive for their idle timeout more, and then the sessions whose
    /// idle time ran out are ended (a session's use noted in a failed flush is simply noted
    /// again at its next use).
    pub async fn flush_activity(&self) -> Result<u64> {
        let (batch, sessions) = self.activity.take();
        let moved = match self.store.touch_instances(&batch).await {
            Ok(moved) => moved,
            Err(e) => {
                self.activity.restore(batch);
                return Err(e);
            }
        };
        self.store
            .keep_sessions_alive(&sessions, self.options.session_idle_ms)
            .await?;
        self.store
            .end_idle_sessions(self.clock.now_millis())
            .await?;
        Ok(moved)
    }

    /// Runs [`Self::flush_activity`] every `every`, logging failures, until aborted.
    pub fn spawn_activity_flusher(
        self: &Arc<Self>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(e) = this.flush_activity().await {
                    tracing::warn!(error = %e, "cannot record instance activity; retrying");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    struct Fixed(AtomicI64);
    impl Clock for Fixed {
        fn now_millis(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn keeps_the_latest_time_per_instance_and_restores_failed_batches() {
        let clock = Arc::new(Fixed(AtomicI64::new(100)));
        let reporter = ActivityReporter::new(clock.clone());
        reporter.record(1, "s1");
        clock.0.store(200, Ordering::SeqCst);
        reporter.record(1, "s1");
        reporter.record(2, "s2");
        assert_eq!(reporter.pending(), 2);
        let (batch, sessions) = reporter.take();
        assert_eq!(batch, vec![(1, 200), (2, 200)]);
        assert_eq!(
            sessions,
            vec![("s1".to_owned(), 200), ("s2".to_owned(), 200)]
        );
        assert_eq!(reporter.pending(), 0);
        clock.0.store(300, Ordering::SeqCst);
        reporter.record(2, "s2");
        reporter.restore(batch);
        assert_eq!(reporter.take().0, vec![(1, 200), (2, 300)]);
    }

    #[test]
    fn record_is_callable_from_plain_threads() {
        let reporter = ActivityReporter::new(Arc::new(Fixed(AtomicI64::new(5))));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let r = reporter.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        r.record(i % 50 + t * 50, "s");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(reporter.pending(), 200);
    }
}
