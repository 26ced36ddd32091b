//! User activity, as the gateway sees it, on its way to the database.
//!
//! The proxy reports every request and every piece of real tunnel input; writing each one
//! would put a database round trip on the hot path and a write per keystroke on the database.
//! So [`ActivityReporter::record`] only notes "instance N was used at T" in a map under a
//! short, uncontended lock (no I/O, no await, callable from any thread or runtime), and a
//! background task writes the whole map in one transaction every few seconds. The idle reaper
//! flushes first, so nothing seen by this process is missed; activity seen by another gateway
//! process arrives within its flush period, which is far below any sensible idle timeout.

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
    pending: Arc<Mutex<HashMap<i64, i64>>>,
    clock: Arc<dyn Clock>,
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
            pending: Arc::new(Mutex::new(HashMap::new())),
            clock,
        }
    }

    /// Notes that an instance was used now. Never blocks on I/O.
    pub fn record(&self, instance_id: i64) {
        let now = self.clock.now_millis();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= MAX_PENDING && !pending.contains_key(&instance_id) {
            return;
        }
        let seen = pending.entry(instance_id).or_insert(now);
        if *seen < now {
            *seen = now;
        }
    }

    /// Instances noted since the last flush.
    pub fn pending(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn take(&self) -> Vec<(i64, i64)> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch: Vec<(i64, i64)> = pending.drain().collect();
        // A stable order keeps two processes' batches from taking row locks in opposite orders.
        batch.sort_unstable();
        batch
    }

    /// Puts a batch that could not be written back, keeping newer notes.
    fn restore(&self, batch: Vec<(i64, i64)>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for (id, at) in batch {
            if pending.len() >= MAX_PENDING && !pending.contains_key(&id) {
                break;
            }
            let seen = pending.entry(id).or_insert(at);
            if *seen < at {
                *seen = at;
            }
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
    pub async fn flush_activity(&self) -> Result<u64> {
        let batch = self.activity.take();
        if batch.is_empty() {
            return Ok(0);
        }
        match self.store.touch_instances(&batch).await {
            Ok(moved) => Ok(moved),
            Err(e) => {
                self.activity.restore(batch);
                Err(e)
            }
        }
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
        reporter.record(1);
        clock.0.store(200, Ordering::SeqCst);
        reporter.record(1);
        reporter.record(2);
        assert_eq!(reporter.pending(), 2);
        let batch = reporter.take();
        assert_eq!(batch, vec![(1, 200), (2, 200)]);
        assert_eq!(reporter.pending(), 0);
        clock.0.store(300, Ordering::SeqCst);
        reporter.record(2);
        reporter.restore(batch);
        assert_eq!(reporter.take(), vec![(1, 200), (2, 300)]);
    }

    #[test]
    fn record_is_callable_from_plain_threads() {
        let reporter = ActivityReporter::new(Arc::new(Fixed(AtomicI64::new(5))));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let r = reporter.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        r.record(i % 50 + t * 50);
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
