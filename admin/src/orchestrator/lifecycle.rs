//! The life of an instance: launch, start (wake), stop, destroy, reconciliation.
//!
//! Every transition goes through [`Store::transition_instance`], a compare-and-set on the
//! status, and is audited as `instance.<new status>`. A transition that finds the row moved
//! by someone else (a destroy while a launch is under way, another gateway process waking the
//! same instance) backs off instead of overwriting it. Concurrency:
//!
//! - admission (quotas, capacity) is one write transaction, serialised by `BEGIN IMMEDIATE` on
//!   SQLite and by a transaction-scoped advisory lock on PostgreSQL, so racing launches cannot
//!   exceed a limit, in one process or several;
//! - waking a stopped instance is claimed by moving it `stopped → starting` in such a
//!   transaction: of any number of concurrent [`Orchestrator::ensure_running`] calls, in any
//!   number of processes, exactly one starts the container; the others wait (in-process on a
//!   per-instance async mutex, across processes by watching the row) and get the same upstream.
//!
//! Failures leave the row in `error` with the reason, and no running container behind it: a
//! failed launch removes its container, a failed wake stops it.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::json;

use super::engine::{
    ContainerState, EngineError, Exposure, LABEL_DEPLOYMENT, LABEL_INSTANCE, LABEL_MANAGED,
    is_sidecar,
};
use super::launch::{LaunchOptions, PendingLaunch, Prepared};
use super::ready::{Probe, probe_once};
use super::sidecar::uses_sidecar;
use super::spec::{self, SpecInput};
use super::{
    Actor, CREDENTIALS_PURPOSE, InstanceCredentials, Orchestrator, Upstream, desktop_target,
};
use crate::error::{AdminError, Result};
use crate::secrets::{Keyring, seal};
use crate::store::{
    AdmissionLimits, Allocation, Droplet, Instance, InstanceStatus, NewAuditEntry, NewInstance,
    Refusal, StartClaim, TargetKind, User,
};
use flowcase_config::UpstreamMode;

use InstanceStatus as S;

/// Length of an instance slug: 20 characters of `[a-z0-9]`, about 103 bits.
pub(super) const SLUG_LEN: usize = 20;
/// Longest pause between readiness probes, and the pause between looks at a row another
/// process is moving.
const POLL: Duration = Duration::from_millis(100);
/// First pause between readiness probes (doubled up to [`POLL`]).
const FIRST_POLL: Duration = Duration::from_millis(10);

/// What reconciliation found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Instances whose container vanished, now `gone`.
    pub gone: Vec<String>,
    /// Running instances whose container was stopped outside Flowcase, now `stopped`.
    pub stopped: Vec<String>,
    /// Containers labelled by us that no live instance claims, removed (names).
    pub orphans_removed: Vec<String>,
    /// Warm pool containers that vanished or stopped, dropped from their pool (slugs).
    pub pool_removed: Vec<String>,
}

pub(super) fn engine_err(e: EngineError) -> AdminError {
    match e {
        EngineError::ImageMissing(image) => AdminError::ImageMissing(image),
        EngineError::RegistryRefused(image) => AdminError::RegistryRefused(image),
        EngineError::RegistryUnreachable(reason) => AdminError::RegistryUnreachable(reason),
        other => AdminError::Engine(other.to_string()),
    }
}

pub(super) fn refusal_error(refusal: Refusal) -> AdminError {
    match refusal {
        Refusal::UserQuota { limit } => AdminError::QuotaExceeded(format!(
            "you already have {limit} instances; stop or delete one first"
        )),
        Refusal::TotalQuota { limit } => {
            AdminError::QuotaExceeded(format!("the server already runs {limit} instances"))
        }
        Refusal::GroupQuota { group, limit } => AdminError::QuotaExceeded(format!(
            "the members of group {group} already hold {limit} instances together"
        )),
        Refusal::Capacity {
            resource,
            requested,
            allocated,
            capacity,
        } => {
            let unit = if resource == "cpu" {
                "millicores"
            } else {
                "MiB"
            };
            AdminError::CapacityExhausted(format!(
                "{resource}: {requested} {unit} needed, {allocated} of {capacity} already allocated"
            ))
        }
    }
}

pub(super) fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

pub(super) fn random_password(len: usize) -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub(super) fn need_of(droplet: &Droplet) -> Allocation {
    Allocation {
        cpu_millicores: droplet
            .cpu_millicores
            .unwrap_or(spec::DEFAULT_CPU_MILLICORES),
        memory_mb: droplet.memory_mb.unwrap_or(spec::DEFAULT_MEMORY_MB),
    }
}

impl Orchestrator {
    // -----------------------------------------------------------------------------------------
    // Public operations
    // -----------------------------------------------------------------------------------------

    /// Launches a new instance of `droplet` for `user` and returns it once `running` (or the
    /// error that ended it; the row is then `error` with the reason). A ready container of the
    /// droplet's warm pool is handed out when there is one ([`super::pool`]). The caller has
    /// checked that the user may launch the droplet. See [`Self::launch_with`] for a launch
    /// tailored by the user's request, and [`Self::launch_in_background`] for one that does not
    /// wait for the container.
    pub async fn launch(&self, user: &User, droplet: &Droplet) -> Result<(Instance, Upstream)> {
        self.launch_with(user, droplet, &LaunchOptions::default())
            .await
    }

    /// The checks and the admission of a launch, up to the `creating` row: what must be
    /// refused at once (inactive droplet, missing image, quota, capacity). Pool hand-outs and
    /// external hosts are quick and finish here.
    pub(super) async fn prepare_launch(
        &self,
        user: &User,
        droplet: &Droplet,
        options: &LaunchOptions,
    ) -> Result<Prepared> {
        let actor = Actor::user(user);
        if !droplet.active {
            return Err(AdminError::InvalidInput {
                field: "droplet",
                reason: "this droplet is not active".into(),
            });
        }
        if droplet.target == TargetKind::External {
            let (instance, upstream) = self.launch_external(user, droplet, &actor).await?;
            return Ok(Prepared::Done(Box::new(instance), upstream));
        }
        if let Some((instance, upstream)) = self.launch_from_pool(user, droplet, &actor).await? {
            return Ok(Prepared::Done(Box::new(instance), upstream));
        }
        let slug = random_string(SLUG_LEN);
        let password = spec::password_env(droplet.droplet_type)
            .map(|_| random_password(spec::password_len(droplet.droplet_type)));
        let network = self.network_for(droplet, &slug);
        let mut container_spec = spec::container_spec(
            droplet,
            &SpecInput {
                slug: &slug,
                user_id: user.id,
                user_name: &user.username,
                network: &network,
                exposure: self.exposure(),
                password: password.as_deref(),
                deployment: &self.options.deployment,
                installation: self
                    .installation
                    .get_or_try_init(|| self.store.installation_id())
                    .await?,
            },
        )?;
        options.apply(&mut container_spec);
        if !self
            .engine
            .image_present(&container_spec.image)
            .await
            .map_err(engine_err)?
        {
            return Err(AdminError::ImageMissing(container_spec.image));
        }
        self.check_sidecar(droplet).await?;
        let limits = self.limits().await?;
        let instance = self
            .store
            .admit_instance(
                &NewInstance {
                    slug: slug.clone(),
                    droplet_id: droplet.id,
                    user_id: user.id,
                    status: S::Requested,
                },
                &limits,
                need_of(droplet),
                self.now(),
            )
            .await?
            .map_err(refusal_error)?;
        self.audit(&actor, &instance, None, S::Requested, None)
            .await?;
        if let Err(e) = self
            .expect_transition(&actor, &instance, &[S::Requested], S::Creating)
            .await
        {
            self.fail_launch(&actor, instance.id, &container_spec.name, &e)
                .await;
            return Err(e);
        }
        let instance = self.reload(instance.id).await?;
        Ok(Prepared::Admitted(Box::new(PendingLaunch {
            actor,
            instance,
            droplet: droplet.clone(),
            spec: container_spec,
            password,
        })))
    }

    /// The slow part of a launch admitted by [`Self::prepare_launch`]: network, profile volume,
    /// container, start, readiness. A failure removes the container and leaves the row in
    /// `error` with the reason.
    pub(super) async fn complete_launch(
        &self,
        pending: Box<PendingLaunch>,
    ) -> Result<(Instance, Upstream)> {
        let PendingLaunch {
            actor,
            instance,
            droplet,
            spec: container_spec,
            password,
        } = *pending;
        match self
            .create_and_start(&actor, &instance, &droplet, &container_spec, password)
            .await
        {
            Ok(upstream) => {
                let instance = self.reload(instance.id).await?;
                Ok((instance, upstream))
            }
            Err(e) => {
                self.fail_launch(&actor, instance.id, &container_spec.name, &e)
                    .await;
                Err(e)
            }
        }
    }

    /// Creates the shared instance network if needed (and checks that an existing one keeps
    /// containers apart). Call once at startup: creating it there, before any launch, avoids
    /// two processes racing to create it.
    pub async fn prepare(&self) -> Result<()> {
        let result = async {
            let info = self.engine.info().await?;
            if self.options.upstream_mode == UpstreamMode::PublishedLoopback {
                let labels = BTreeMap::from([(LABEL_MANAGED.to_owned(), "network".to_owned())]);
                let _one_at_a_time = self.networks.lock().await;
                self.engine
                    .ensure_isolated_network(&self.options.network, &labels)
                    .await?;
            }
            Ok(info)
        }
        .await;
        if result.is_ok() && self.options.upstream_mode == UpstreamMode::ContainerNetwork {
            // Found now, so a configured name that does not exist shows at startup.
            self.gateway_container().await?;
        }
        match &result {
            Ok(info) => self.set_engine_health(true, super::events::answers(info)),
            Err(EngineError::Unavailable(reason)) => self.set_engine_health(false, reason.clone()),
            Err(_) => {}
        }
        result.map(|_| ()).map_err(engine_err)
    }

    /// The gateway's entry point: the upstream of a running instance, starting it first when it
    /// is stopped (or failed with its container still there) and waiting until it is ready.
    /// Concurrent calls for one instance start it once, also across processes sharing the
    /// database.
    pub async fn ensure_running(&self, instance_id: i64) -> Result<Upstream> {
        self.start(instance_id, &Actor::system()).await
    }

    /// Starts a stopped instance on a user's (or an admin's) request; returns its upstream.
    /// Same as [`Self::ensure_running`], audited under `actor`.
    pub async fn start(&self, instance_id: i64, actor: &Actor) -> Result<Upstream> {
        let lock = self.start_lock(instance_id);
        let held = lock.lock().await;
        let result = self.ensure_running_locked(instance_id, actor).await;
        drop(held);
        self.release_start_lock(instance_id, lock);
        result
    }

    /// Stops an instance's container (it can be started again); already stopped is fine.
    pub async fn stop(&self, instance_id: i64, actor: &Actor) -> Result<()> {
        self.stop_because(instance_id, actor, None).await
    }

    /// [`Self::stop`], recording `reason` on the row and in the audit log.
    pub(super) async fn stop_because(
        &self,
        instance_id: i64,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<()> {
        let instance = self.reload(instance_id).await?;
        if instance.status == S::Stopped {
            return Ok(());
        }
        if !self
            .transition(actor, &instance, &[S::Running, S::Error], S::Stopping, None)
            .await?
        {
            return Err(AdminError::Conflict(format!(
                "instance is {}, it cannot be stopped now",
                instance.status
            )));
        }
        let result = match instance.container_id.as_deref() {
            Some(id) => self.engine.stop(id, self.options.stop_grace).await,
            None => Ok(()),
        };
        // A sidecar is made anew at each start: a stopped instance keeps none.
        let sidecar_removed = if self.has_sidecar(&instance).await? {
            self.remove_sidecar(instance.id, &instance.slug).await
        } else {
            Ok(())
        };
        match result {
            Ok(()) => {
                if let Err(e) = sidecar_removed {
                    let reason = format!("stop failed: {e}");
                    self.transition(actor, &instance, &[S::Stopping], S::Error, Some(&reason))
                        .await?;
                    return Err(e);
                }
                self.transition(actor, &instance, &[S::Stopping], S::Stopped, reason)
                    .await?;
                Ok(())
            }
            // Removed behind our back (or by the engine): nothing is left to stop, and the
            // instance is gone, as a reconciliation pass would find; not a failed stop.
            Err(EngineError::NotFound(_)) => {
                self.transition(
                    actor,
                    &instance,
                    &[S::Stopping],
                    S::Gone,
                    Some(CONTAINER_DISAPPEARED),
                )
                .await?;
                Ok(())
            }
            Err(e) => {
                let e = engine_err(e);
                let reason = format!("stop failed: {e}");
                self.transition(actor, &instance, &[S::Stopping], S::Error, Some(&reason))
                    .await?;
                Err(e)
            }
        }
    }

    /// Removes an instance's container (and its private network); the profile volume stays.
    /// The row stays too, as `gone`, for history. Destroying a `gone` instance is a no-op.
    pub async fn destroy(&self, instance_id: i64, actor: &Actor) -> Result<()> {
        self.destroy_because(instance_id, actor, None).await
    }

    /// [`Self::destroy`], recording `reason` on the row and in the audit log.
    pub(super) async fn destroy_because(
        &self,
        instance_id: i64,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<()> {
        let instance = self.reload(instance_id).await?;
        if instance.status == S::Gone {
            return Ok(());
        }
        let from = [
            S::Requested,
            S::Creating,
            S::Starting,
            S::Running,
            S::Stopping,
            S::Stopped,
            S::Error,
        ];
        if !self
            .transition(actor, &instance, &from, S::Destroying, None)
            .await?
        {
            return Err(AdminError::Conflict(
                "instance is already being destroyed".into(),
            ));
        }
        if self.is_external(&instance).await? {
            self.transition(actor, &instance, &[S::Destroying], S::Gone, reason)
                .await?;
            return Ok(());
        }
        // By name as well as by id: a launch may have created the container but not yet
        // recorded its id.
        let name = spec::container_name(&instance.slug);
        let mut result = self.engine.remove(&name).await.map_err(engine_err);
        if let (Ok(()), Some(id)) = (&result, instance.container_id.as_deref()) {
            result = self.engine.remove(id).await.map_err(engine_err);
        }
        let droplet = self.store.get_droplet(instance.droplet_id).await?;
        let sidecar = instance.guacd.is_some() || droplet.as_ref().is_some_and(uses_sidecar);
        if result.is_ok() && sidecar {
            result = self.remove_sidecar(instance.id, &instance.slug).await;
        }
        // Whatever the droplet says now (its guacd setting may have changed since the launch):
        // a private network of the instance goes with it, and a missing one is fine.
        if result.is_ok() {
            result = self.remove_instance_network(&name).await;
        }
        match result {
            Ok(()) => {
                self.transition(actor, &instance, &[S::Destroying], S::Gone, reason)
                    .await?;
                Ok(())
            }
            Err(e) => {
                let reason = format!("destroy failed: {e}");
                self.transition(actor, &instance, &[S::Destroying], S::Error, Some(&reason))
                    .await?;
                Err(e)
            }
        }
    }

    /// The desktop password of an instance, for the tunnel; `None` for droplets without one.
    pub fn credentials(&self, instance: &Instance) -> Result<Option<InstanceCredentials>> {
        open_instance_credentials(&self.keyring, instance, self.now())
    }

    /// Makes the database agree with the engine: a settled row whose container vanished becomes
    /// `gone`, a `running` row whose container was stopped outside becomes `stopped`, a warm pool
    /// container that vanished (or, started ahead, stopped) is dropped from the pool, and (when
    /// [`super::Options::remove_orphans`]) containers labelled by us that no live row claims are
    /// removed. Rows in motion (requested, creating, starting, stopping, destroying) are left to
    /// the operation moving them.
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        let actor = Actor::system();
        let mut report = ReconcileReport::default();
        // Containers listed before the rows are read can only be orphans if no row claims them
        // (a row is written before its container is created); rows are judged against a list
        // taken after they were read (a settled row's container existed before the read).
        let before = self
            .engine
            .list_ours(&self.options.deployment)
            .await
            .map_err(engine_err)?;
        // Pool rows before instance rows: a launch turns a pool row into an instance row in one
        // transaction, so in this order every container's claimant is seen in one of the two.
        let pooled = self.store.list_pool_containers().await?;
        let rows = self.store.list_live_instances().await?;
        let containers = self
            .engine
            .list_ours(&self.options.deployment)
            .await
            .map_err(engine_err)?;
        // An instance's own container; its guacd sidecar carries the same slug.
        let by_slug: BTreeMap<&str, &super::engine::ContainerInfo> = containers
            .iter()
            .filter(|c| !is_sidecar(&c.labels))
            .filter_map(|c| Some((c.labels.get(LABEL_INSTANCE)?.as_str(), c)))
            .collect();
        // External hosts have no container to agree with.
        let external: HashSet<i64> = self
            .store
            .list_droplets()
            .await?
            .into_iter()
            .filter(|d| d.target == TargetKind::External)
            .map(|d| d.id)
            .collect();
        for row in rows.iter().filter(|r| !external.contains(&r.droplet_id)) {
            let Some((to, reason)) = judge(row, by_slug.get(row.slug.as_str()).copied()) else {
                if self.stop_if_sidecar_lost(row).await? {
                    report.stopped.push(row.slug.clone());
                }
                continue;
            };
            if self
                .transition(&actor, row, &[row.status], to, Some(reason))
                .await?
            {
                self.remove_sidecar_of_ended(row).await;
                match to {
                    S::Gone => report.gone.push(row.slug.clone()),
                    _ => report.stopped.push(row.slug.clone()),
                }
            }
        }
        for pooled in &pooled {
            let found = by_slug.get(pooled.slug.as_str()).copied();
            if pool_container_lost(pooled, found) && self.drop_pool_container(pooled).await? {
                report.pool_removed.push(pooled.slug.clone());
            }
        }
        if self.options.remove_orphans {
            let live: HashSet<&str> = rows
                .iter()
                .map(|r| r.slug.as_str())
                .chain(pooled.iter().map(|p| p.slug.as_str()))
                .collect();
            // A guacd sidecar lives only while its instance starts, runs or stops: one found
            // next to a row in any other state was left by a crash and goes.
            let sidecar_wanted: HashSet<&str> = rows
                .iter()
                .filter(|r| {
                    matches!(
                        r.status,
                        S::Creating | S::Starting | S::Running | S::Stopping
                    )
                })
                .map(|r| r.slug.as_str())
                .collect();
            for container in &before {
                let wanted = if is_sidecar(&container.labels) {
                    &sidecar_wanted
                } else {
                    &live
                };
                let claimed = container
                    .labels
                    .get(LABEL_INSTANCE)
                    .is_some_and(|slug| wanted.contains(slug.as_str()));
                if !claimed {
                    self.engine
                        .remove(&container.id)
                        .await
                        .map_err(engine_err)?;
                    tracing::info!(container = %container.name, "removed an orphan container");
                    report.orphans_removed.push(container.name.clone());
                }
            }
        }
        Ok(report)
    }

    /// Reconciles the one instance (or pool container) whose container the engine just reported
    /// dead or removed, with the same rules as [`Self::reconcile`]. Returns the new status when
    /// an instance row moved.
    pub async fn reconcile_container(&self, slug: &str) -> Result<Option<InstanceStatus>> {
        // Pool first, as in `reconcile`, so a container handed out meanwhile is still found.
        if let Some(pooled) = self.store.get_pool_container_by_slug(slug).await? {
            let reference = pooled
                .container_id
                .clone()
                .unwrap_or_else(|| spec::container_name(slug));
            let found = self.engine.inspect(&reference).await.map_err(engine_err)?;
            if pool_container_lost(&pooled, found.as_ref()) {
                self.drop_pool_container(&pooled).await?;
            }
            return Ok(None);
        }
        let Some(row) = self.store.get_instance_by_slug(slug).await? else {
            return Ok(None);
        };
        if self.is_external(&row).await? {
            return Ok(None);
        }
        let reference = row
            .container_id
            .clone()
            .unwrap_or_else(|| spec::container_name(slug));
        let found = self.engine.inspect(&reference).await.map_err(engine_err)?;
        let Some((to, reason)) = judge(&row, found.as_ref()) else {
            let stopped = self.stop_if_sidecar_lost(&row).await?;
            return Ok(stopped.then_some(S::Stopped));
        };
        let moved = self
            .transition(&Actor::system(), &row, &[row.status], to, Some(reason))
            .await?;
        if moved {
            self.remove_sidecar_of_ended(&row).await;
        }
        Ok(moved.then_some(to))
    }

    /// Runs [`Self::reconcile`] now and then every `every`, logging failures, until the task is
    /// aborted.
    pub fn spawn_reconciler(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match this.reconcile().await {
                    Ok(report) if report != ReconcileReport::default() => {
                        tracing::info!(?report, "reconciled instances with the engine");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reconciliation failed"),
                }
            }
        })
    }

    // -----------------------------------------------------------------------------------------
    // External hosts: rows only, the engine is never asked
    // -----------------------------------------------------------------------------------------

    /// An instance of an external host: admitted under the same quotas as a container (no CPU
    /// or memory is charged), `running` at once, its upstream the host.
    async fn launch_external(
        &self,
        user: &User,
        droplet: &Droplet,
        actor: &Actor,
    ) -> Result<(Instance, Upstream)> {
        let (host, port) = external_host(droplet)?;
        let upstream = resolve_external(&host, port).await?;
        let limits = AdmissionLimits {
            cpu_capacity_millicores: i64::MAX,
            memory_capacity_mb: i64::MAX,
            ..self.quota_limits()
        };
        let instance = self
            .store
            .admit_instance(
                &NewInstance {
                    slug: random_string(SLUG_LEN),
                    droplet_id: droplet.id,
                    user_id: user.id,
                    status: S::Requested,
                },
                &limits,
                Allocation::default(),
                self.now(),
            )
            .await?
            .map_err(refusal_error)?;
        self.audit(actor, &instance, None, S::Requested, None)
            .await?;
        self.store
            .set_instance_container(
                instance.id,
                None,
                None,
                Some(&desktop_target::host_port(&host, port)),
            )
            .await?;
        self.expect_transition(actor, &instance, &[S::Requested], S::Running)
            .await?;
        Ok((self.reload(instance.id).await?, upstream))
    }

    /// Wakes a stopped (or failed) external host instance: nothing to start, the row moves.
    async fn start_external(
        &self,
        actor: &Actor,
        instance: &Instance,
        droplet: &Droplet,
    ) -> Result<Upstream> {
        let (host, port) = external_host(droplet)?;
        let upstream = resolve_external(&host, port).await?;
        if instance.status == S::Running
            || self
                .transition(actor, instance, &[S::Stopped, S::Error], S::Running, None)
                .await?
        {
            return Ok(upstream);
        }
        Err(AdminError::Conflict(format!(
            "the instance is {} and cannot be started",
            self.reload(instance.id).await?.status
        )))
    }

    /// Whether the instance belongs to an external host droplet.
    pub(super) async fn is_external(&self, instance: &Instance) -> Result<bool> {
        Ok(self
            .store
            .get_droplet(instance.droplet_id)
            .await?
            .is_some_and(|d| d.target == TargetKind::External))
    }

    // -----------------------------------------------------------------------------------------
    // Steps
    // -----------------------------------------------------------------------------------------

    async fn create_and_start(
        &self,
        actor: &Actor,
        instance: &Instance,
        droplet: &Droplet,
        container_spec: &super::engine::ContainerSpec,
        password: Option<String>,
    ) -> Result<Upstream> {
        self.ensure_network(
            &instance.slug,
            Some(instance.user_id),
            droplet,
            &container_spec.network,
        )
        .await?;
        for mount in &container_spec.mounts {
            let labels = self
                .engine
                .ensure_volume(&mount.volume, &mount.labels)
                .await
                .map_err(engine_err)?;
            // A volume someone else owns (or that we did not create, or another installation's)
            // is never mounted: this is what keeps two users from sharing a profile whatever the
            // template says.
            if let Some(reason) = spec::profile_refusal(&labels, &mount.labels) {
                return Err(AdminError::Conflict(format!(
                    "profile volume {} {reason}",
                    mount.volume
                )));
            }
        }
        let container_id = self
            .engine
            .create(container_spec)
            .await
            .map_err(engine_err)?;
        self.store
            .set_instance_container(
                instance.id,
                Some(&container_id),
                Some(&container_spec.name),
                None,
            )
            .await?;
        if let Some(password) = password {
            let sealed = self.seal_password(password)?;
            self.store
                .set_instance_credentials(instance.id, Some(&sealed))
                .await?;
        }
        self.expect_transition(actor, instance, &[S::Creating], S::Starting)
            .await?;
        self.boot(actor, instance.id, &container_id, droplet).await
    }

    /// Starts the container of a row in `starting`, waits until ready, moves it to `running`.
    pub(super) async fn boot(
        &self,
        actor: &Actor,
        instance_id: i64,
        container_id: &str,
        droplet: &Droplet,
    ) -> Result<Upstream> {
        let instance = self.reload(instance_id).await?;
        let result = self
            .boot_steps(actor, &instance, container_id, droplet)
            .await;
        if result.is_err() && uses_sidecar(droplet) {
            // Whatever failed, no sidecar outlives the start it belonged to.
            if let Err(e) = self.remove_sidecar(instance_id, &instance.slug).await {
                tracing::warn!(error = %e, instance = %instance.slug, "cannot remove a guacd sidecar");
            }
        }
        result
    }

    async fn boot_steps(
        &self,
        actor: &Actor,
        instance: &Instance,
        container_id: &str,
        droplet: &Droplet,
    ) -> Result<Upstream> {
        let upstream = self.start_and_locate(container_id, droplet).await?;
        let upstream_text = upstream.to_string();
        self.store
            .set_instance_container(
                instance.id,
                Some(container_id),
                instance.container_name.as_deref(),
                Some(&upstream_text),
            )
            .await?;
        self.wait_ready(container_id, upstream.addr, droplet)
            .await?;
        if uses_sidecar(droplet) {
            // The instance's network is made (and joined) here too: a container launched while
            // its droplet used the shared guacd sits on the shared network only.
            let network = self.network_for(droplet, &instance.slug);
            self.ensure_network(&instance.slug, Some(instance.user_id), droplet, &network)
                .await?;
            self.engine
                .connect_network(&network, container_id)
                .await
                .map_err(engine_err)?;
            self.start_sidecar(instance, droplet).await?;
        }
        self.expect_transition(actor, instance, &[S::Starting], S::Running)
            .await?;
        Ok(upstream)
    }

    /// Removes the guacd sidecar of an instance that reconciliation just found stopped or gone
    /// (a failure is logged: the next reconciliation removes what is left).
    async fn remove_sidecar_of_ended(&self, row: &Instance) {
        let removed = match self.has_sidecar(row).await {
            Ok(true) => self.remove_sidecar(row.id, &row.slug).await,
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            tracing::warn!(error = %e, instance = %row.slug, "cannot remove a guacd sidecar");
        }
    }

    /// Stops a running instance whose guacd sidecar vanished or stopped (its desktop cannot be
    /// opened any more; the next start makes a new sidecar). True when it was stopped.
    async fn stop_if_sidecar_lost(&self, row: &Instance) -> Result<bool> {
        // A running instance with a sidecar has its address recorded (written before `running`).
        if row.status != S::Running || row.guacd.is_none() {
            return Ok(false);
        }
        let name = super::sidecar::sidecar_name(&row.slug);
        // Looked at now, not in an earlier listing: the instance may have been restarted since.
        let found = self.engine.inspect(&name).await.map_err(engine_err)?;
        if found.is_some_and(|c| c.state == ContainerState::Running) {
            return Ok(false);
        }
        match self
            .stop_because(row.id, &Actor::system(), Some("its guacd sidecar stopped"))
            .await
        {
            Ok(()) => Ok(true),
            // Moved meanwhile (a stop or destroy of its own): nothing to do.
            Err(AdminError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether a guacd sidecar may exist for `instance`: it has a recorded one, or its droplet
    /// asks for one.
    async fn has_sidecar(&self, instance: &Instance) -> Result<bool> {
        if instance.guacd.is_some() {
            return Ok(true);
        }
        Ok(self
            .store
            .get_droplet(instance.droplet_id)
            .await?
            .is_some_and(|d| uses_sidecar(&d)))
    }

    /// Starts a container (running already is fine) and finds where the gateway reaches it.
    pub(super) async fn start_and_locate(
        &self,
        container_id: &str,
        droplet: &Droplet,
    ) -> Result<Upstream> {
        self.engine.start(container_id).await.map_err(engine_err)?;
        let info = self
            .engine
            .inspect(container_id)
            .await
            .map_err(engine_err)?
            .ok_or_else(|| AdminError::Engine("the container vanished after start".into()))?;
        // A container that dies at once has no ports any more: report the exit, not the port.
        exited_error(&info)?;
        let port = spec::upstream_port(droplet);
        let addr = match self.options.upstream_mode {
            UpstreamMode::PublishedLoopback => {
                let host_port = info.published.get(&port).ok_or_else(|| {
                    AdminError::Engine(format!("port {port} was not published on 127.0.0.1"))
                })?;
                SocketAddr::from(([127, 0, 0, 1], *host_port))
            }
            UpstreamMode::ContainerNetwork => {
                let network = self.network_for(droplet, &info.labels_slug());
                // A gateway on the host cannot dial a swarm overlay network; on a single-node
                // swarm it reaches the task through the node's gateway bridge instead.
                let on_host = self.gateway_container().await?.is_none();
                let bridge = on_host
                    .then(|| info.addresses.get(super::swarm::NODE_BRIDGE))
                    .flatten();
                let ip = bridge
                    .or_else(|| info.addresses.get(&network))
                    .ok_or_else(|| {
                        AdminError::Engine(format!("the container has no address on {network}"))
                    })?;
                SocketAddr::new(*ip, port)
            }
        };
        Ok(Upstream { addr })
    }

    /// Seals a desktop password for the row that keeps it.
    pub(super) fn seal_password(&self, password: String) -> Result<String> {
        seal::seal(
            &self.keyring,
            CREDENTIALS_PURPOSE,
            &InstanceCredentials { password },
            i64::MAX,
        )
        .ok_or_else(|| AdminError::InvalidData("cannot seal instance credentials".into()))
    }

    pub(super) async fn wait_ready(
        &self,
        container_id: &str,
        addr: SocketAddr,
        droplet: &Droplet,
    ) -> Result<()> {
        let probe = Probe::for_droplet(droplet.droplet_type, droplet.health_path.as_deref());
        let timeout = self.options.ready_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        // Most containers answer within milliseconds of their start: look again soon, then
        // less and less often.
        let mut pause = FIRST_POLL;
        loop {
            let last = match probe_once(addr, &probe).await {
                Ok(()) => return Ok(()),
                Err(seen) => seen,
            };
            // A container that died will never answer: say so now rather than at the deadline.
            match self
                .engine
                .inspect(container_id)
                .await
                .map_err(engine_err)?
            {
                Some(info) => exited_error(&info)?,
                None => {
                    return Err(AdminError::NotReady(
                        "the container disappeared while starting".into(),
                    ));
                }
            }
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(AdminError::NotReady(format!(
                    "not ready after {} s (last probe: {last})",
                    timeout.as_secs_f64()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL);
        }
    }

    async fn ensure_running_locked(&self, instance_id: i64, actor: &Actor) -> Result<Upstream> {
        // Long enough for another process to finish a start it claimed.
        let deadline = tokio::time::Instant::now() + self.options.ready_timeout * 2 + POLL * 20;
        loop {
            let instance = self.reload(instance_id).await?;
            let droplet = self
                .store
                .get_droplet(instance.droplet_id)
                .await?
                .ok_or(AdminError::NotFound("droplet"))?;
            if droplet.target == TargetKind::External {
                return self.start_external(actor, &instance, &droplet).await;
            }
            let limits = self.limits().await?;
            match self
                .store
                .claim_instance_start(instance_id, &limits, need_of(&droplet))
                .await?
            {
                StartClaim::Running(instance) => {
                    if let Some(upstream) = parse_upstream(&instance) {
                        return Ok(upstream);
                    }
                    return Err(AdminError::InvalidData(
                        "a running instance has no upstream".into(),
                    ));
                }
                StartClaim::Claimed(claimed) => {
                    self.audit(actor, &claimed, Some(instance.status), S::Starting, None)
                        .await?;
                    let Some(container_id) = claimed.container_id.clone() else {
                        return Err(AdminError::InvalidData("no container to start".into()));
                    };
                    let woke = std::time::Instant::now();
                    return match self.boot(actor, instance_id, &container_id, &droplet).await {
                        Ok(upstream) => {
                            crate::metrics::woke(woke.elapsed().as_secs_f64());
                            Ok(upstream)
                        }
                        Err(e) => {
                            crate::metrics::launch_failed(crate::web::error::classify(&e).1);
                            // Leave nothing running that the row does not account for.
                            let _ = self.engine.stop(&container_id, Duration::ZERO).await;
                            let reason = format!("start failed: {e}");
                            self.transition(
                                actor,
                                &claimed,
                                &[S::Starting],
                                S::Error,
                                Some(&reason),
                            )
                            .await?;
                            Err(e)
                        }
                    };
                }
                StartClaim::Busy(status) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(AdminError::NotReady(format!(
                            "the instance stayed {status} too long"
                        )));
                    }
                    tokio::time::sleep(POLL).await;
                }
                StartClaim::Ended(status) => {
                    return Err(AdminError::Conflict(format!(
                        "the instance is {status} and cannot be started"
                    )));
                }
                StartClaim::Refused(refusal) => return Err(refusal_error(refusal)),
            }
        }
    }

    pub(super) async fn fail_launch(
        &self,
        actor: &Actor,
        instance_id: i64,
        name: &str,
        error: &AdminError,
    ) {
        self.log_output_of_failed(instance_id, name, error).await;
        // Best effort: the row must end in `error` and no container may be left behind; with
        // no container recorded, the row can never be woken (only destroyed).
        if self.engine.remove(name).await.is_ok() {
            let _ = self
                .store
                .set_instance_container(instance_id, None, None, None)
                .await;
        }
        let row = self.reload(instance_id).await.ok();
        let droplet = match &row {
            Some(row) => self.store.get_droplet(row.droplet_id).await.ok().flatten(),
            None => None,
        };
        if let Some(row) = &row
            && (row.guacd.is_some() || droplet.as_ref().is_some_and(uses_sidecar))
        {
            let _ = self.remove_sidecar(instance_id, &row.slug).await;
        }
        // The private network, if any, is named after the container; missing is fine.
        let _ = self.remove_instance_network(name).await;
        if let Ok(instance) = self.reload(instance_id).await {
            let reason = error.to_string();
            let from = [S::Requested, S::Creating, S::Starting];
            if let Err(e) = self
                .transition(actor, &instance, &from, S::Error, Some(&reason))
                .await
            {
                tracing::warn!(error = %e, instance = %instance.slug, "cannot record a failed launch");
            }
        }
    }

    /// Logs the last lines a failed launch's container wrote: it is removed right after, and
    /// its output is often the only account of why it exited or never became ready. Escaped,
    /// so that the container cannot write lines of its own into the gateway's log.
    async fn log_output_of_failed(&self, instance_id: i64, name: &str, error: &AdminError) {
        const LINES: usize = 20;
        let tail =
            tokio::time::timeout(Duration::from_secs(5), self.engine.output_tail(name, LINES))
                .await;
        let output = match tail {
            Ok(Ok(output)) if !output.trim().is_empty() => output,
            _ => return,
        };
        let slug = match self.reload(instance_id).await {
            Ok(row) => row.slug,
            Err(_) => name.to_owned(),
        };
        tracing::warn!(
            instance = %slug,
            error = %error,
            output = %output.trim_end().escape_debug(),
            "a launch failed; the last output of its container follows"
        );
    }

    // -----------------------------------------------------------------------------------------
    // Helpers
    // -----------------------------------------------------------------------------------------

    pub(super) fn exposure(&self) -> Exposure {
        match self.options.upstream_mode {
            UpstreamMode::PublishedLoopback => Exposure::LoopbackEphemeral,
            UpstreamMode::ContainerNetwork => Exposure::NetworkOnly,
        }
    }

    /// The network an instance joins: the droplet's own or the shared one (both must have
    /// inter-container traffic off) when the gateway dials published ports; a private network
    /// per instance when the gateway dials container addresses (a gateway container on a
    /// shared network with traffic between containers off could not reach them either).
    /// A guacd sidecar droplet's instances get a private network in both modes
    /// ([`super::sidecar`]).
    pub(super) fn network_for(&self, droplet: &Droplet, slug: &str) -> String {
        if self.private_network(droplet) {
            return spec::container_name(slug);
        }
        droplet
            .network
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.options.network.clone())
    }

    /// Makes sure the network of a container exists. A private per-instance network (mode
    /// `container-network`) carries the instance's labels so reconciliation can tell it is ours;
    /// pool containers have no user yet.
    pub(super) async fn ensure_network(
        &self,
        slug: &str,
        user_id: Option<i64>,
        droplet: &Droplet,
        network: &str,
    ) -> Result<()> {
        let droplet_id = droplet.id;
        let private = self.private_network(droplet);
        let labels = if private {
            let mut labels = spec::instance_labels(slug, user_id.unwrap_or(0), droplet_id);
            if user_id.is_none() {
                labels.remove(super::engine::LABEL_USER);
            }
            labels.insert(LABEL_DEPLOYMENT.to_owned(), self.options.deployment.clone());
            labels
        } else {
            BTreeMap::from([(LABEL_MANAGED.to_owned(), "network".to_owned())])
        };
        let _one_at_a_time = self.networks.lock().await;
        // The gateway's container (mode `container-network`) and the guacd sidecar join a
        // private network and must reach the instance, so traffic between members stays on; the
        // instance is alone in it otherwise.
        let ensured = if private {
            self.engine.ensure_private_network(network, &labels).await
        } else {
            self.engine.ensure_isolated_network(network, &labels).await
        };
        ensured.map_err(|e| match e {
            EngineError::Conflict(reason) => AdminError::InvalidInput {
                field: "network",
                reason,
            },
            other => engine_err(other),
        })?;
        if self.options.upstream_mode == UpstreamMode::ContainerNetwork {
            self.attach_gateway(network).await?;
        }
        Ok(())
    }

    pub(super) async fn limits(&self) -> Result<AdmissionLimits> {
        let info = self.engine.info().await.map_err(engine_err)?;
        Ok(AdmissionLimits {
            cpu_capacity_millicores: info.cpus.saturating_mul(1000),
            memory_capacity_mb: info.memory_bytes / (1024 * 1024),
            ..self.quota_limits()
        })
    }

    /// The instance quotas, with no engine capacity (zero) filled in.
    fn quota_limits(&self) -> AdmissionLimits {
        AdmissionLimits {
            max_per_user: i64::from(self.options.max_per_user),
            max_total: i64::from(self.options.max_total),
            cpu_capacity_millicores: 0,
            memory_capacity_mb: 0,
            default_cpu_millicores: spec::DEFAULT_CPU_MILLICORES,
            default_memory_mb: spec::DEFAULT_MEMORY_MB,
        }
    }

    pub(super) async fn reload(&self, id: i64) -> Result<Instance> {
        self.store
            .get_instance(id)
            .await?
            .ok_or(AdminError::NotFound("instance"))
    }

    /// Compare-and-set transition plus its audit entry; false when the row was elsewhere.
    pub(super) async fn transition(
        &self,
        actor: &Actor,
        instance: &Instance,
        from: &[InstanceStatus],
        to: InstanceStatus,
        reason: Option<&str>,
    ) -> Result<bool> {
        let moved = self
            .store
            .transition_instance(instance.id, from, to, reason, self.now())
            .await?;
        if moved {
            self.audit(actor, instance, None, to, reason).await?;
        }
        Ok(moved)
    }

    /// A transition the current operation owns; losing it means someone destroyed the instance
    /// under us.
    async fn expect_transition(
        &self,
        actor: &Actor,
        instance: &Instance,
        from: &[InstanceStatus],
        to: InstanceStatus,
    ) -> Result<()> {
        if self.transition(actor, instance, from, to, None).await? {
            Ok(())
        } else {
            Err(AdminError::Conflict(format!(
                "the instance changed while becoming {to}"
            )))
        }
    }

    pub(super) async fn audit(
        &self,
        actor: &Actor,
        instance: &Instance,
        from: Option<InstanceStatus>,
        to: InstanceStatus,
        reason: Option<&str>,
    ) -> Result<()> {
        // Every recorded transition passes here, right after its row moved. Nobody listening
        // is fine.
        let _ = self.changes.send(instance.id);
        let entry = NewAuditEntry {
            actor_user_id: actor.user_id,
            actor_name: actor.name.clone(),
            action: format!("instance.{to}"),
            target_kind: Some("instance".into()),
            target_id: Some(instance.slug.clone()),
            client_addr: None,
            details: json!({
                "from": from.map(|s| s.as_str()),
                "droplet_id": instance.droplet_id,
                "user_id": instance.user_id,
                "reason": reason,
            }),
        };
        self.store.append_audit(&entry, self.now()).await?;
        Ok(())
    }

    fn start_lock(&self, id: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .starting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(map.entry(id).or_default())
    }

    fn release_start_lock(&self, id: i64, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut map = self
            .starting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The map's copy and ours: nobody else waits, the entry can go.
        if Arc::strong_count(&lock) == 2 {
            map.remove(&id);
        }
    }
}

/// The host and port of an external droplet.
fn external_host(droplet: &Droplet) -> Result<(String, u16)> {
    match (droplet.external_host.clone(), droplet.external_port) {
        (Some(host), Some(port)) if !host.is_empty() => Ok((host, port)),
        _ => Err(AdminError::InvalidInput {
            field: "host",
            reason: format!("external droplet {:?} has no host and port", droplet.name),
        }),
    }
}

/// How long resolving an external host's name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The address of an external host, resolved now: a name that does not resolve fails the launch
/// with a clear error instead of a tunnel that never connects. The row keeps the name, which is
/// what guacd is given.
async fn resolve_external(host: &str, port: u16) -> Result<Upstream> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(Upstream {
            addr: SocketAddr::new(ip, port),
        });
    }
    let unreachable =
        |reason: String| AdminError::NotReady(format!("cannot resolve {host}: {reason}"));
    let mut addrs = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((bare, port)))
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", RESOLVE_TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
    addrs
        .next()
        .map(|addr| Upstream { addr })
        .ok_or_else(|| unreachable("no address".into()))
}

/// Why a row became `gone` when its container (on a swarm: its service) vanished.
const CONTAINER_DISAPPEARED: &str = "the container disappeared";

/// What reconciliation makes of a row given its container (or its absence): a new status and
/// why, or `None` to leave it. Only settled rows are judged.
fn judge(
    row: &Instance,
    found: Option<&super::engine::ContainerInfo>,
) -> Option<(InstanceStatus, &'static str)> {
    if !matches!(row.status, S::Running | S::Stopped | S::Error) {
        return None;
    }
    match (row.status, found) {
        (S::Error, None) if row.container_id.is_none() => None,
        (_, None) => Some((S::Gone, CONTAINER_DISAPPEARED)),
        (S::Running, Some(c)) if c.state != ContainerState::Running => {
            Some((S::Stopped, "the container stopped outside Flowcase"))
        }
        _ => None,
    }
}

/// Whether a ready pool container can no longer be handed out: its container vanished, or
/// it was started ahead and is not running any more.
fn pool_container_lost(
    pooled: &crate::store::instances::PoolContainer,
    found: Option<&super::engine::ContainerInfo>,
) -> bool {
    use crate::store::instances::PoolStatus;
    if pooled.status != PoolStatus::Ready {
        return false;
    }
    match found {
        None => true,
        Some(c) => pooled.started && c.state != ContainerState::Running,
    }
}

/// `NotReady` naming the exit code when the container is no longer running.
fn exited_error(info: &super::engine::ContainerInfo) -> Result<()> {
    if matches!(info.state, ContainerState::Exited | ContainerState::Dead) {
        return Err(AdminError::NotReady(format!(
            "the container exited with code {} while starting",
            info.exit_code.unwrap_or(-1)
        )));
    }
    Ok(())
}

pub(super) fn parse_upstream(instance: &Instance) -> Option<Upstream> {
    instance
        .upstream
        .as_deref()?
        .parse()
        .ok()
        .map(|addr| Upstream { addr })
}

impl super::engine::ContainerInfo {
    fn labels_slug(&self) -> String {
        self.labels.get(LABEL_INSTANCE).cloned().unwrap_or_default()
    }
}

/// Opens an instance's sealed desktop password (none for web apps), saying why when it cannot.
pub(super) fn open_instance_credentials(
    keyring: &Keyring,
    instance: &Instance,
    now: i64,
) -> Result<Option<InstanceCredentials>> {
    instance
        .credentials
        .as_deref()
        .map(|sealed| {
            open_sealed(
                keyring,
                CREDENTIALS_PURPOSE,
                sealed,
                now,
                &format!("the desktop password of instance {}", instance.slug),
            )
        })
        .transpose()
}

/// Opens a stored sealed value (`what` names it for the error), or says why it does not open:
/// sealed under a key the key file no longer holds, under another key of the same id (a
/// replaced key file), or damaged.
pub(super) fn open_sealed<T: serde::de::DeserializeOwned>(
    keyring: &Keyring,
    purpose: &str,
    token: &str,
    now: i64,
    what: &str,
) -> Result<T> {
    seal::open(keyring, purpose, token, now).ok_or_else(|| {
        let why = match seal::sealed_key_id(token) {
            Some(id) if keyring.by_id(&id).is_none() => format!(
                "it was sealed under key {id:?}, which the secret key file does not hold (put the \
                 old key back on a line after the current one)"
            ),
            Some(id) => format!(
                "key {id:?} of the secret key file does not fit (was the key file replaced?)"
            ),
            None => "it is damaged".to_owned(),
        };
        AdminError::InvalidData(format!("{what} cannot be opened: {why}"))
    })
}
