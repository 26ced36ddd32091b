//! Truth lives in Docker: the engine's event stream, and the engine's health.
//!
//! The watcher subscribes to the container events of our deployment (on a swarm, the events
//! of task containers, named by their service, and service removals: see
//! [`super::swarm`]). A container of ours that dies or is removed is reconciled at once
//! ([`Orchestrator::reconcile_container`]): a row
//! whose container was stopped or removed behind our back moves within moments instead of at
//! the next periodic pass, which stays as the safety net for anything an event could miss.
//!
//! The same task owns [`EngineHealth`], which `/readyz` reads: down from the moment the stream
//! breaks or a ping fails, up again once the engine answers. While it is down the watcher
//! retries with exponential backoff (capped by [`super::Intervals::engine_backoff_max`]);
//! every reconnection starts with a full reconciliation, since events sent while we were away
//! are lost (containers killed with a restarted dockerd, for instance). Operations attempted
//! meanwhile fail on their own with an `engine` error naming the cause; nothing waits for the
//! engine to return.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

use super::Orchestrator;
use super::engine::LABEL_INSTANCE;

/// Engine actions that mean "this container is no longer running" or "no longer exists".
const GONE_ACTIONS: [&str; 2] = ["die", "destroy"];
/// First pause after a failure; doubled on each failure up to the configured maximum.
const BACKOFF_START: Duration = Duration::from_millis(250);
/// Bound of one health ping.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The engine as the orchestrator last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineHealth {
    /// Whether the engine answered last time.
    pub up: bool,
    /// What went wrong, or what was seen (for `/readyz`).
    pub message: String,
    /// Since when (unix milliseconds) the engine has been in this state.
    pub since: i64,
}

impl EngineHealth {
    /// Before anyone asked the engine.
    pub fn unknown(now: i64) -> Self {
        Self {
            up: false,
            message: "the container engine has not been contacted yet".into(),
            since: now,
        }
    }
}

/// The health message of an engine that answered.
pub(super) fn answers(info: &super::engine::EngineInfo) -> String {
    format!("{} answers", info.description)
}

impl Orchestrator {
    /// The engine's health, for `/readyz`. Kept current by the event watcher started with
    /// [`Self::spawn_background`] (and by [`Self::prepare`]).
    pub fn engine_health(&self) -> EngineHealth {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records what the engine did; logs changes of state only.
    pub(super) fn set_engine_health(&self, up: bool, message: impl Into<String>) {
        let message = message.into();
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if health.up != up {
            if up {
                tracing::info!(%message, "the container engine is reachable");
            } else {
                tracing::warn!(%message, "the container engine is unreachable");
            }
            health.since = self.now();
        }
        health.up = up;
        health.message = message;
    }

    /// Asks the engine for its info; on success the health message names the engine.
    async fn ping_engine(&self) -> Result<String, String> {
        match tokio::time::timeout(PING_TIMEOUT, self.engine.info()).await {
            Ok(Ok(info)) => Ok(answers(&info)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {PING_TIMEOUT:?}")),
        }
    }

    /// Watches the engine until aborted: events, health, reconnection with backoff.
    pub fn spawn_event_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let max = this.options.intervals.engine_backoff_max.max(BACKOFF_START);
            let mut backoff = BACKOFF_START;
            loop {
                match this.ping_engine().await {
                    Ok(message) => this.set_engine_health(true, message),
                    Err(reason) => {
                        this.set_engine_health(false, reason);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(max);
                        continue;
                    }
                }
                let reason = this.watch_events().await;
                this.set_engine_health(false, reason);
                backoff = BACKOFF_START;
                tokio::time::sleep(backoff).await;
            }
        })
    }

    /// Follows the event stream until it breaks or a ping fails; returns why it stopped.
    async fn watch_events(&self) -> String {
        let mut events = self.engine.events(&self.options.deployment);
        // Subscribe first, then reconcile: whatever happened while we were not listening is
        // caught by the pass, whatever happens from now on arrives as an event.
        match self.reconcile().await {
            Ok(report) if report != super::ReconcileReport::default() => {
                tracing::info!(?report, "reconciled instances with the engine");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reconciliation after (re)connecting failed"),
        }
        let mut ping = tokio::time::interval(self.options.intervals.engine_ping);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                event = events.next() => match event {
                    None => return "the engine closed its event stream".into(),
                    Some(Err(e)) => return format!("the engine's event stream broke: {e}"),
                    Some(Ok(event)) => {
                        if !GONE_ACTIONS.contains(&event.action.as_str()) {
                            continue;
                        }
                        let Some(slug) = event.labels.get(LABEL_INSTANCE) else {
                            continue;
                        };
                        match self.reconcile_container(slug).await {
                            Ok(Some(status)) => tracing::info!(
                                instance = %slug, action = %event.action, %status,
                                "an instance's container changed outside Flowcase"
                            ),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(
                                instance = %slug, error = %e,
                                "cannot reconcile an instance after an engine event"
                            ),
                        }
                    }
                },
                _ = ping.tick() => match self.ping_engine().await {
                    Ok(message) => self.set_engine_health(true, message),
                    Err(reason) => return reason,
                }
            }
        }
    }
}
