//! The reaper: instances nobody used for their idle timeout are stopped (or destroyed, per
//! droplet), and instances past their maximum lifetime are destroyed.
//!
//! Limits come from the droplet (`idle_timeout_secs`, `max_lifetime_secs`; 0 = never) or else
//! from the configuration (`[instances] idle_timeout`, `max_lifetime`; zero = never). Idle time
//! counts from the latest of the last activity, the last start and the creation, so a woken
//! instance gets a full timeout before it is judged. Lifetime counts from creation: a stopped
//! instance ages too, and is destroyed when its time is up (its profile volume stays).
//!
//! Time is the orchestrator's [`super::Clock`], so tests move it instead of sleeping. Two
//! gateway processes may reap at once: stop and destroy are compare-and-set transitions, so an
//! instance is acted on once and the loser's call is a harmless conflict.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{Actor, Orchestrator};
use crate::error::Result;
use crate::store::droplets::IdleAction;
use crate::store::{Droplet, Instance, InstanceStatus};

/// What a sweep did (slugs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Idle instances stopped.
    pub stopped_idle: Vec<String>,
    /// Idle instances destroyed (droplets with `idle_action = destroy`).
    pub destroyed_idle: Vec<String>,
    /// Instances destroyed because their lifetime was over.
    pub destroyed_expired: Vec<String>,
    /// Workshops ended because their end time came (their instances stopped, as "stop all"
    /// does).
    pub workshops_ended: Vec<String>,
    /// Instances an action failed for, with the error.
    pub failed: Vec<(String, String)>,
}

impl ReapReport {
    /// Whether the sweep did or tried anything.
    pub fn is_empty(&self) -> bool {
        self.stopped_idle.is_empty()
            && self.destroyed_idle.is_empty()
            && self.destroyed_expired.is_empty()
            && self.workshops_ended.is_empty()
            && self.failed.is_empty()
    }
}

/// A droplet's limit in seconds over the configured one; `None` = no limit.
fn limit_millis(droplet_secs: Option<i64>, configured: Duration) -> Option<i64> {
    let millis = match droplet_secs {
        Some(secs) => secs.saturating_mul(1000),
        None => i64::try_from(configured.as_millis()).unwrap_or(i64::MAX),
    };
    (millis > 0).then_some(millis)
}

/// What the reaper would do with one instance at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Expired,
    Idle(IdleAction, i64),
}

fn verdict(
    instance: &Instance,
    droplet: &Droplet,
    idle_default: Duration,
    lifetime_default: Duration,
    now: i64,
) -> Option<Verdict> {
    use InstanceStatus as S;
    if !matches!(instance.status, S::Running | S::Stopped | S::Error) {
        // In motion: the operation moving it decides.
        return None;
    }
    if let Some(lifetime) = limit_millis(droplet.max_lifetime_secs, lifetime_default)
        && now.saturating_sub(instance.created_at) >= lifetime
    {
        return Some(Verdict::Expired);
    }
    if instance.status != S::Running {
        return None;
    }
    let idle_limit = limit_millis(droplet.idle_timeout_secs, idle_default)?;
    let last = instance
        .last_activity_at
        .unwrap_or(0)
        .max(instance.started_at.unwrap_or(0))
        .max(instance.created_at);
    let idle = now.saturating_sub(last);
    (idle >= idle_limit).then_some(Verdict::Idle(droplet.idle_action, idle))
}

impl Orchestrator {
    /// One sweep: flushes this process's activity notes, then stops or destroys idle instances
    /// and destroys expired ones. Failures of single instances are reported, not returned.
    pub async fn reap(&self) -> Result<ReapReport> {
        if let Err(e) = self.flush_activity().await {
            tracing::warn!(error = %e, "cannot record activity before the idle sweep");
        }
        let actor = Actor::system();
        let mut report = ReapReport::default();
        let rows = self.store.list_live_instances().await?;
        let mut droplets: HashMap<i64, Option<Droplet>> = HashMap::new();
        let now = self.now();
        for row in rows {
            let droplet = match droplets.get(&row.droplet_id) {
                Some(d) => d.clone(),
                None => {
                    let d = self.store.get_droplet(row.droplet_id).await?;
                    droplets.insert(row.droplet_id, d.clone());
                    d
                }
            };
            let Some(droplet) = droplet else { continue };
            let Some(verdict) = verdict(
                &row,
                &droplet,
                self.options.idle_timeout,
                self.options.max_lifetime,
                now,
            ) else {
                continue;
            };
            let result = match verdict {
                Verdict::Expired => {
                    let reason = "its maximum lifetime is over";
                    let r = self.destroy_because(row.id, &actor, Some(reason)).await;
                    if r.is_ok() {
                        report.destroyed_expired.push(row.slug.clone());
                    }
                    r
                }
                Verdict::Idle(action, idle) => {
                    let reason = format!("idle for {} s", idle / 1000);
                    match action {
                        IdleAction::Stop => {
                            let r = self.stop_because(row.id, &actor, Some(&reason)).await;
                            if r.is_ok() {
                                report.stopped_idle.push(row.slug.clone());
                            }
                            r
                        }
                        IdleAction::Destroy => {
                            let r = self.destroy_because(row.id, &actor, Some(&reason)).await;
                            if r.is_ok() {
                                report.destroyed_idle.push(row.slug.clone());
                            }
                            r
                        }
                    }
                }
            };
            if let Err(e) = result {
                report.failed.push((row.slug.clone(), e.to_string()));
            }
        }
        self.end_workshops(now, &actor, &mut report).await?;
        Ok(report)
    }

    /// Ends the running workshops whose end time has come and stops their instances (they stay,
    /// with their profiles, as after "stop all": the administrator may start them again).
    async fn end_workshops(&self, now: i64, actor: &Actor, report: &mut ReapReport) -> Result<()> {
        for workshop in self.store.running_workshops_ended_by(now).await? {
            self.store
                .set_workshop_status(workshop.id, crate::store::WorkshopStatus::Ended)
                .await?;
            for link in self.store.workshop_links(workshop.id).await? {
                let Some(instance_id) = link.instance_id else {
                    continue;
                };
                let Some(instance) = self.store.get_instance(instance_id).await? else {
                    continue;
                };
                if !matches!(
                    instance.status,
                    crate::store::InstanceStatus::Running | crate::store::InstanceStatus::Starting
                ) {
                    continue;
                }
                let reason = format!("its workshop {} ended", workshop.name);
                if let Err(e) = self.stop_because(instance_id, actor, Some(&reason)).await {
                    report.failed.push((instance.slug, e.to_string()));
                }
            }
            report.workshops_ended.push(workshop.name);
        }
        Ok(())
    }

    /// Runs [`Self::reap`] every `every`, logging what it did, until aborted.
    pub fn spawn_reaper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let result = this.reap().await;
                if let Ok(report) = &result {
                    crate::metrics::reaped("stop", report.stopped_idle.len());
                    crate::metrics::reaped("destroy", report.destroyed_idle.len());
                    crate::metrics::reaped("expire", report.destroyed_expired.len());
                }
                match result {
                    Ok(report) if !report.is_empty() => {
                        tracing::info!(?report, "idle and lifetime sweep");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "idle and lifetime sweep failed"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::store::{DropletType, NewDroplet, TargetKind};

    fn droplet(idle: Option<i64>, lifetime: Option<i64>) -> Droplet {
        let n = NewDroplet::new(1, "d", DropletType::Http, TargetKind::Container);
        Droplet {
            id: 1,
            tenant_id: 1,
            name: n.name,
            description: n.description,
            droplet_type: n.droplet_type,
            target: n.target,
            image: Some("x".into()),
            registry: None,
            cpu_millicores: None,
            memory_mb: None,
            ports: vec![],
            env: Default::default(),
            labels: Default::default(),
            profile_path: None,
            network: None,
            idle_timeout_secs: idle,
            max_lifetime_secs: lifetime,
            pool_size: 0,
            icon: None,
            active: true,
            external_host: None,
            external_port: None,
            external_username: None,
            external_credentials: None,
            cap_add: vec![],
            read_only_root: false,
            pids_limit: None,
            health_path: None,
            profile_mount: None,
            idle_action: IdleAction::Destroy,
            pool_started: false,
            external_domain: None,
            external_params: Default::default(),
            guacd: crate::store::GuacdMode::Shared,
            guacd_image: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn instance(
        status: InstanceStatus,
        created: i64,
        started: i64,
        active: Option<i64>,
    ) -> Instance {
        Instance {
            id: 1,
            slug: "s".into(),
            droplet_id: 1,
            user_id: 1,
            status,
            error_reason: None,
            container_id: Some("c".into()),
            container_name: None,
            upstream: None,
            created_at: created,
            started_at: Some(started),
            stopped_at: None,
            last_activity_at: active,
            credentials: None,
            guacd: None,
        }
    }

    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn idle_counts_from_the_latest_activity_or_start() {
        let d = droplet(None, None);
        let i = instance(InstanceStatus::Running, 0, 1_000, Some(50_000));
        assert_eq!(verdict(&i, &d, MIN, HOUR, 109_999), None);
        assert_eq!(
            verdict(&i, &d, MIN, HOUR, 110_000),
            Some(Verdict::Idle(IdleAction::Destroy, 60_000))
        );
        // A fresh wake restarts the count even when the last activity is old.
        let woken = instance(InstanceStatus::Running, 0, 200_000, Some(50_000));
        assert_eq!(verdict(&woken, &d, MIN, HOUR, 230_000), None);
        // Stopped instances are not idle-reaped.
        let stopped = instance(InstanceStatus::Stopped, 0, 0, None);
        assert_eq!(verdict(&stopped, &d, MIN, HOUR, 3_000_000), None);
    }

    #[test]
    fn droplet_limits_override_and_zero_means_never() {
        let i = instance(InstanceStatus::Running, 0, 0, None);
        assert_eq!(
            verdict(&i, &droplet(Some(0), Some(0)), MIN, MIN, 1 << 40),
            None
        );
        assert_eq!(
            verdict(
                &i,
                &droplet(None, None),
                Duration::ZERO,
                Duration::ZERO,
                1 << 40
            ),
            None
        );
        assert!(matches!(
            verdict(
                &i,
                &droplet(Some(10), Some(0)),
                Duration::ZERO,
                Duration::ZERO,
                10_000
            ),
            Some(Verdict::Idle(..))
        ));
    }

    #[test]
    fn lifetime_counts_from_creation_for_stopped_instances_too() {
        let d = droplet(Some(0), Some(100));
        let stopped = instance(InstanceStatus::Stopped, 1_000, 1_000, None);
        assert_eq!(verdict(&stopped, &d, MIN, HOUR, 100_999), None);
        assert_eq!(
            verdict(&stopped, &d, MIN, HOUR, 101_000),
            Some(Verdict::Expired)
        );
        let moving = instance(InstanceStatus::Starting, 0, 0, None);
        assert_eq!(verdict(&moving, &d, MIN, HOUR, 1 << 40), None);
    }
}
