//! Warm pools: a droplet with `pool_size` N keeps N containers made ahead, so a launch skips
//! the create (and, with `pool_started`, the start and the readiness wait too).
//!
//! A pool container is a row of `pool_containers` plus a container named and labelled with the
//! slug its instance will have. A launch turns the oldest ready one into an instance in the
//! transaction that admits the instance (same quotas and capacity check as any launch), then
//! only checks that it answers; the filler makes a new one in the background.
//!
//! Rules, and why:
//! - no pool for droplets with a profile mount ([`spec::pool_refusal`]): a container made before
//!   its user is known cannot have that user's volume mounted, and recreating it at hand-out
//!   would cost the time the pool is there to save. The command line refuses the combination;
//!   the filler skips such droplets;
//! - Docker cannot relabel a container: a handed-out pool container keeps `flowcase.pool` and
//!   has no `flowcase.user` label; the database row names its owner;
//! - started pool containers hold their CPU and memory and count against the host capacity
//!   (created-only ones do not); pool containers never count against instance quotas;
//! - a droplet that changes (its `updated_at` moves) or is deactivated drains its pool; pool
//!   places are reserved in the database under the admission lock, so several gateway processes
//!   filling one pool never overfill it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::lifecycle::{engine_err, need_of, random_password, random_string, refusal_error};
use super::spec::{self, SpecInput};
use super::{Actor, Orchestrator, Upstream};
use crate::error::{AdminError, Result};
use crate::store::instances::{
    NewPoolContainer, PoolAdmission, PoolContainer, PoolReservation, PoolStatus,
};
use crate::store::{Droplet, Instance, InstanceStatus, NewInstance, User};
use flowcase_config::UpstreamMode;

/// What a filler pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolReport {
    /// Pool containers made (slugs).
    pub created: Vec<String>,
    /// Pool containers removed: droplet changed, deactivated, pool shrunk (slugs).
    pub removed: Vec<String>,
    /// Droplets whose pool could not be filled, with why.
    pub failed: Vec<(String, String)>,
}

impl PoolReport {
    /// Whether the pass changed or tried anything.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.removed.is_empty() && self.failed.is_empty()
    }
}

/// Whether a droplet keeps a pool at all.
fn wants_pool(droplet: &Droplet) -> bool {
    droplet.active && droplet.pool_size > 0 && spec::pool_refusal(droplet).is_none()
}

impl Orchestrator {
    /// A launch served by a ready pool container, or `None` when the droplet has no pool or it
    /// is empty (the caller then launches the ordinary way).
    pub(super) async fn launch_from_pool(
        &self,
        user: &User,
        droplet: &Droplet,
        actor: &Actor,
    ) -> Result<Option<(Instance, Upstream)>> {
        if !wants_pool(droplet) {
            return Ok(None);
        }
        let limits = self.limits().await?;
        let admission = self
            .store
            .admit_from_pool(
                &NewInstance {
                    slug: String::new(),
                    droplet_id: droplet.id,
                    user_id: user.id,
                    status: InstanceStatus::Starting,
                },
                droplet.updated_at,
                &limits,
                need_of(droplet),
                self.now(),
            )
            .await?;
        let (instance, pooled) = match admission {
            PoolAdmission::Taken(taken) => *taken,
            PoolAdmission::Empty => {
                self.pool_wanted.notify_one();
                return Ok(None);
            }
            PoolAdmission::Refused(refusal) => return Err(refusal_error(refusal)),
        };
        self.pool_wanted.notify_one();
        let from_pool = Some("handed a warm pool container");
        self.audit(actor, &instance, None, InstanceStatus::Requested, from_pool)
            .await?;
        self.audit(
            actor,
            &instance,
            Some(InstanceStatus::Requested),
            InstanceStatus::Starting,
            None,
        )
        .await?;
        let name = spec::container_name(&instance.slug);
        match self.hand_out(actor, &instance, &pooled, droplet).await {
            Ok(upstream) => {
                let instance = self.reload(instance.id).await?;
                Ok(Some((instance, upstream)))
            }
            Err(e) => {
                self.fail_launch(actor, instance.id, &name, &e).await;
                Err(e)
            }
        }
    }

    async fn hand_out(
        &self,
        actor: &Actor,
        instance: &Instance,
        pooled: &PoolContainer,
        droplet: &Droplet,
    ) -> Result<Upstream> {
        let container_id = pooled
            .container_id
            .as_deref()
            .ok_or_else(|| AdminError::InvalidData("a ready pool container has no id".into()))?;
        let ready_upstream = pooled
            .started
            .then(|| pooled.upstream.as_deref()?.parse().ok())
            .flatten()
            .map(|addr| Upstream { addr });
        let Some(upstream) = ready_upstream else {
            // Created only: start it now, like a wake.
            return self.boot(actor, instance.id, container_id, droplet).await;
        };
        // Started ahead and found ready then; one probe proves it still is (a dead one fails
        // here and the launch ends in error rather than handing out a corpse).
        self.wait_ready(container_id, upstream.addr, droplet)
            .await?;
        if !self
            .transition(
                actor,
                instance,
                &[InstanceStatus::Starting],
                InstanceStatus::Running,
                None,
            )
            .await?
        {
            return Err(AdminError::Conflict(
                "the instance changed while becoming running".into(),
            ));
        }
        Ok(upstream)
    }

    /// Forgets a pool container and removes its container; false when a launch took it first
    /// (then the container is the instance's and stays).
    pub(super) async fn drop_pool_container(&self, pooled: &PoolContainer) -> Result<bool> {
        if !self.store.delete_pool_container(pooled.id).await? {
            return Ok(false);
        }
        let name = spec::container_name(&pooled.slug);
        self.engine.remove(&name).await.map_err(engine_err)?;
        if let Some(id) = pooled.container_id.as_deref() {
            self.engine.remove(id).await.map_err(engine_err)?;
        }
        if self.options.upstream_mode == UpstreamMode::ContainerNetwork {
            self.remove_instance_network(&name).await?;
        }
        self.pool_wanted.notify_one();
        Ok(true)
    }

    /// One filler pass: drains pool containers of droplets that changed, were deactivated or
    /// shrank their pool, then tops every pool up to its size. One pass at a time per process.
    pub async fn fill_pools(&self) -> Result<PoolReport> {
        let _one_pass = self.pool_filling.lock().await;
        let mut report = PoolReport::default();
        let droplets: BTreeMap<i64, Droplet> = self
            .store
            .list_droplets()
            .await?
            .into_iter()
            .map(|d| (d.id, d))
            .collect();
        let pooled = self.store.list_pool_containers().await?;
        let now = self.now();
        // A reservation older than this whose container never became ready belongs to a
        // process that died while making it.
        let abandoned_after = i64::try_from((self.options.ready_timeout * 2).as_millis())
            .unwrap_or(i64::MAX)
            .saturating_add(60_000);
        // Oldest first: the oldest places of the current droplet version are the ones kept.
        let mut kept: BTreeMap<i64, i64> = BTreeMap::new();
        for p in &pooled {
            let abandoned = p.status == PoolStatus::Creating
                && now.saturating_sub(p.created_at) > abandoned_after;
            let keep = droplets.get(&p.droplet_id).is_some_and(|d| {
                let fits = wants_pool(d) && d.updated_at == p.droplet_version && !abandoned;
                let n = kept.entry(d.id).or_default();
                let keep = fits && *n < d.pool_size;
                if keep {
                    *n += 1;
                }
                keep
            });
            if keep {
                continue;
            }
            if p.status == PoolStatus::Creating && !abandoned {
                // Being made right now (maybe by another process): left to its maker.
                continue;
            }
            match self.drop_pool_container(p).await {
                Ok(true) => report.removed.push(p.slug.clone()),
                Ok(false) => {}
                Err(e) => report.failed.push((p.slug.clone(), e.to_string())),
            }
        }
        for droplet in droplets.values().filter(|d| wants_pool(d)) {
            if let Err(e) = self.fill_pool(droplet, &mut report).await {
                report.failed.push((droplet.name.clone(), e.to_string()));
            }
        }
        Ok(report)
    }

    /// Makes pool containers for one droplet until its pool is full.
    async fn fill_pool(&self, droplet: &Droplet, report: &mut PoolReport) -> Result<()> {
        // Bounded: never more attempts than places, whatever the database says meanwhile.
        for _ in 0..droplet.pool_size.clamp(0, 1000) {
            let limits = self.limits().await?;
            let reservation = self
                .store
                .reserve_pool_container(
                    &NewPoolContainer {
                        droplet_id: droplet.id,
                        slug: random_string(super::lifecycle::SLUG_LEN),
                        started: droplet.pool_started,
                        droplet_version: droplet.updated_at,
                    },
                    droplet.pool_size,
                    &limits,
                    need_of(droplet),
                    self.now(),
                )
                .await?;
            let reserved = match reservation {
                PoolReservation::Reserved(reserved) => reserved,
                PoolReservation::Full => return Ok(()),
                PoolReservation::Refused(refusal) => {
                    return Err(refusal_error(refusal));
                }
            };
            match self.make_pool_container(droplet, &reserved).await {
                Ok(()) => report.created.push(reserved.slug.clone()),
                Err(e) => {
                    // Leave nothing behind; the next pass tries again.
                    let _ = self.store.delete_pool_container(reserved.id).await;
                    let name = spec::container_name(&reserved.slug);
                    let _ = self.engine.remove(&name).await;
                    if self.options.upstream_mode == UpstreamMode::ContainerNetwork {
                        let _ = self.remove_instance_network(&name).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn make_pool_container(&self, droplet: &Droplet, reserved: &PoolContainer) -> Result<()> {
        let slug = &reserved.slug;
        let password = spec::password_env(droplet.droplet_type)
            .map(|_| random_password(spec::password_len(droplet.droplet_type)));
        let network = self.network_for(droplet, slug);
        let container_spec = spec::pool_spec(
            droplet,
            &SpecInput {
                slug,
                user_id: 0,
                user_name: "",
                network: &network,
                exposure: self.exposure(),
                password: password.as_deref(),
                deployment: &self.options.deployment,
                // Pooled containers have no profile (their user is not known yet).
                installation: "",
            },
        )?;
        self.ensure_network(slug, None, droplet, &network).await?;
        let container_id = self
            .engine
            .create(&container_spec)
            .await
            .map_err(engine_err)?;
        let sealed = password.map(|p| self.seal_password(p)).transpose()?;
        self.store
            .set_pool_container(
                reserved.id,
                &container_id,
                &container_spec.name,
                sealed.as_deref(),
            )
            .await?;
        let upstream = if reserved.started {
            let upstream = self.start_and_locate(&container_id, droplet).await?;
            self.wait_ready(&container_id, upstream.addr, droplet)
                .await?;
            Some(upstream.to_string())
        } else {
            None
        };
        if self
            .store
            .set_pool_container_ready(reserved.id, upstream.as_deref())
            .await?
        {
            Ok(())
        } else {
            Err(AdminError::Conflict(
                "the pool place was removed while its container was made".into(),
            ))
        }
    }

    /// Runs [`Self::fill_pools`] every `every` and whenever a launch took a pool container or
    /// one was lost, until aborted.
    pub fn spawn_pool_filler(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = this.pool_wanted.notified() => {}
                }
                match this.fill_pools().await {
                    Ok(report) if !report.is_empty() => {
                        tracing::info!(?report, "warm pools");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "filling warm pools failed"),
                }
            }
        })
    }

    /// Pool containers per droplet id: (ready, being made).
    pub async fn pool_levels(&self) -> Result<BTreeMap<i64, (usize, usize)>> {
        let mut levels: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
        for p in self.store.list_pool_containers().await? {
            let level = levels.entry(p.droplet_id).or_default();
            match p.status {
                PoolStatus::Ready => level.0 += 1,
                PoolStatus::Creating => level.1 += 1,
            }
        }
        Ok(levels)
    }
}
