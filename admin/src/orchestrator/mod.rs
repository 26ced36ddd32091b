//! The orchestrator: droplets become instances, instances become containers on an engine.
//!
//! - [`engine`]: the narrow engine interface (create, start, stop, remove, inspect, list ours,
//!   events, stats, image present, pull) and its vocabulary; [`docker`]: its Docker implementation,
//!   the only place (with [`swarm`]) that knows bollard; [`swarm`]: the same on a Docker Swarm,
//!   an instance being a service of one replica; [`placement`]: placement constraints from
//!   droplet labels;
//! - [`spec`]: the container an instance gets (pure: limits, hardening, labels, profile volume);
//! - [`ready`]: when a started container counts as ready;
//! - [`launch`]: what a launch request may tailor (resolution) and launches that do not wait
//!   for the container;
//! - [`lifecycle`]: launch, start, stop, destroy, `ensure_running` for the gateway and
//!   reconciliation, every transition persisted and audited;
//! - [`activity`]: what the gateway saw users do, batched into the database; [`reaper`]: idle
//!   and expired instances stopped or destroyed;
//! - [`events`]: the engine's event stream and the engine's health (`/readyz`);
//! - [`pool`]: warm pools of containers made ahead;
//! - [`gateway_container`]: mode `container-network`, the gateway's own container attached to
//!   every instance network;
//! - [`sidecar`]: the per-instance guacd container of droplets that ask for one, started and
//!   removed with the instance on its private network;
//! - [`stats`]: CPU and memory per instance and for the host;
//! - [`catalogue`]: droplet definitions as operators write them (command line, JSON catalogue);
//!   [`remote_catalogue`]: catalogues fetched from a URL (ours, or the Python Flowcase registry's
//!   `droplets.json`), bounded in size and time;
//! - [`images`]: image pulls for administrators, with progress, and the sealed registry
//!   credentials of droplets;
//! - [`desktop_target`]: where guacd connects for a desktop instance (container or external
//!   host) and the sealed credentials of external hosts.
//!
//! External host droplets (VNC, RDP, SSH servers that are not ours) have instances too, without
//! a container: launching one writes a `running` row whose upstream is the host, stopping and
//! destroying only move the row, and the engine is never asked about them.
//!
//! [`Orchestrator::spawn_background`] starts every background task (reconciler, event watcher,
//! reaper, pool filler, activity flusher) in one call.
//!
//! Time comes from a [`Clock`] so that stored timestamps and idle decisions are testable; waits
//! use tokio's monotonic timers and are all bounded.

pub mod activity;
pub mod catalogue;
pub mod desktop_target;
pub mod docker;
pub mod engine;
pub mod events;
pub mod gateway_container;
pub mod icons;
pub mod images;
pub mod launch;
pub mod lifecycle;
pub mod metered;
pub mod placement;
pub mod pool;
pub mod ready;
pub mod reaper;
pub mod remote_catalogue;
pub mod sidecar;
pub mod spec;
pub mod stats;
pub mod swarm;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowcase_config::{Config, UpstreamMode};
use serde::{Deserialize, Serialize};

use crate::secrets::Keyring;
use crate::store::{Store, User};

pub use activity::ActivityReporter;
pub use desktop_target::{DesktopTarget, ExternalCredentials};
pub use engine::{Engine, EngineError};
pub use events::EngineHealth;
pub use images::{PullEvent, PullLog, RegistryCredentials};
pub use launch::{LaunchOptions, RESOLUTION_ENV, Resolution};
pub use lifecycle::ReconcileReport;
pub use pool::PoolReport;
pub use reaper::ReapReport;
pub use stats::{HostStats, InstanceStats, InstanceUsage, Usage};

/// Changes kept for slow receivers of [`Orchestrator::subscribe_changes`].
const CHANGES_BACKLOG: usize = 256;

/// Purpose the per-instance credentials are sealed for (AEAD associated data).
pub const CREDENTIALS_PURPOSE: &str = "instance-credentials";

/// Wall-clock time for the timestamps written to the database.
pub trait Clock: Send + Sync + 'static {
    /// Unix milliseconds now.
    fn now_millis(&self) -> i64;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        crate::store::now_millis()
    }
}

/// Settings of the orchestrator, normally from the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Shared network instances join in `published-loopback` mode (inter-container traffic off).
    pub network: String,
    /// How the gateway reaches instances.
    pub upstream_mode: UpstreamMode,
    /// Instances one user may hold.
    pub max_per_user: u32,
    /// Instances all users together may hold.
    pub max_total: u32,
    /// How long a started container may take to become ready.
    pub ready_timeout: Duration,
    /// How long a stop waits before the engine kills the container.
    pub stop_grace: Duration,
    /// Whether reconciliation removes containers labelled by us that no instance row claims.
    pub remove_orphans: bool,
    /// Value of the `flowcase.deployment` label: reconciliation only ever touches containers
    /// of its own deployment.
    pub deployment: String,
    /// Instances without activity for this long are stopped (or destroyed, per droplet) unless
    /// their droplet says otherwise; zero = never.
    pub idle_timeout: Duration,
    /// Instances are destroyed this long after their creation unless their droplet says
    /// otherwise; zero = never.
    pub max_lifetime: Duration,
    /// How often the background tasks run.
    pub intervals: Intervals,
    /// Mode `container-network`: the gateway's own container (name or id); `None` = found from
    /// inside the container, or none for a gateway on the host.
    pub gateway_container: Option<String>,
    /// Image of the guacd sidecars of droplets that ask for one without naming their own.
    pub guacd_sidecar_image: String,
    /// A sign-in session's idle timeout (`[auth] session_idle_timeout`), which use of an
    /// instance through it renews (see [`activity`]).
    pub session_idle_ms: i64,
}

/// Periods of the background tasks started by [`Orchestrator::spawn_background`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// Full reconciliation with the engine (the safety net under the event stream).
    pub reconcile: Duration,
    /// Idle and lifetime sweep.
    pub reap: Duration,
    /// Warm pool top-up (launches also nudge it at once).
    pub pool: Duration,
    /// Activity batch written to the database.
    pub activity_flush: Duration,
    /// Health ping of the engine while its event stream is open.
    pub engine_ping: Duration,
    /// Longest pause between reconnection attempts while the engine is down.
    pub engine_backoff_max: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Self {
            reconcile: Duration::from_secs(60),
            reap: Duration::from_secs(15),
            pool: Duration::from_secs(10),
            activity_flush: Duration::from_secs(5),
            engine_ping: Duration::from_secs(10),
            engine_backoff_max: Duration::from_secs(15),
        }
    }
}

impl Options {
    /// The settings of a configuration (`[docker]`, `[instances]`).
    pub fn from_config(config: &Config) -> Self {
        Self {
            network: config.docker.network.clone(),
            upstream_mode: config.docker.upstream_mode,
            max_per_user: config.instances.max_per_user,
            max_total: config.instances.max_total,
            ready_timeout: config.instances.ready_timeout.get(),
            stop_grace: Duration::from_secs(10),
            remove_orphans: true,
            deployment: config.docker.deployment.clone(),
            idle_timeout: config.instances.idle_timeout.get(),
            max_lifetime: config.instances.max_lifetime.get(),
            intervals: Intervals::default(),
            gateway_container: Some(config.docker.gateway_container.clone())
                .filter(|c| !c.is_empty()),
            guacd_sidecar_image: config.guacd.sidecar_image.trim().to_owned(),
            session_idle_ms: crate::auth::session::Lifetimes::from_config(&config.auth).idle_ms,
        }
    }
}

/// Who asked for a change, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Actor {
    /// The user, if a user asked.
    pub user_id: Option<i64>,
    /// Their username at the time.
    pub name: Option<String>,
}

impl Actor {
    /// The gateway itself (wake-ups, reconciliation, the reaper).
    pub fn system() -> Self {
        Self::default()
    }

    /// A user.
    pub fn user(user: &User) -> Self {
        Self {
            user_id: Some(user.id),
            name: Some(user.username.clone()),
        }
    }
}

/// Where the gateway sends an instance's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream {
    /// `127.0.0.1:<published port>` or `<container address>:<port>`.
    pub addr: SocketAddr,
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

/// The secret an instance's desktop expects; only the tunnel ever sees it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCredentials {
    /// The password given to the container at creation.
    pub password: String,
}

impl fmt::Debug for InstanceCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InstanceCredentials(..)")
    }
}

/// The orchestrator. Share it behind an `Arc`.
pub struct Orchestrator {
    store: Store,
    engine: Arc<dyn Engine>,
    keyring: Keyring,
    clock: Arc<dyn Clock>,
    options: Options,
    /// One async mutex per instance being started in this process, so concurrent wake-ups
    /// wait for the one that works instead of polling the database.
    starting: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises network creation: Docker 20.10 lets two concurrent creates of one name both
    /// succeed, and containers then fail on an ambiguous network name.
    networks: tokio::sync::Mutex<()>,
    /// Activity seen by the gateway, not yet written.
    activity: ActivityReporter,
    /// The engine as the event watcher last saw it.
    health: Mutex<EngineHealth>,
    /// Wakes the pool filler early (a launch took a container, one died).
    pool_wanted: tokio::sync::Notify,
    /// One pool top-up at a time in this process.
    pool_filling: tokio::sync::Mutex<()>,
    /// The gateway's own container, once found (mode `container-network`).
    gateway: tokio::sync::OnceCell<Option<String>>,
    /// The installation's id (it never changes once made), read once.
    installation: tokio::sync::OnceCell<String>,
    /// The id of every instance whose row this process just moved, for live views (the API's
    /// event stream); see [`Self::subscribe_changes`].
    changes: tokio::sync::broadcast::Sender<i64>,
}

impl fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Orchestrator")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// An orchestrator over `store` and `engine`, sealing credentials with `keyring`.
    pub fn new(
        store: Store,
        engine: Arc<dyn Engine>,
        keyring: Keyring,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Self {
        let activity = ActivityReporter::new(Arc::clone(&clock));
        let health = Mutex::new(EngineHealth::unknown(clock.now_millis()));
        Self {
            store,
            engine,
            keyring,
            clock,
            options,
            starting: Mutex::new(HashMap::new()),
            networks: tokio::sync::Mutex::new(()),
            activity,
            health,
            pool_wanted: tokio::sync::Notify::new(),
            pool_filling: tokio::sync::Mutex::new(()),
            gateway: tokio::sync::OnceCell::new(),
            installation: tokio::sync::OnceCell::new(),
            changes: tokio::sync::broadcast::channel(CHANGES_BACKLOG).0,
        }
    }

    /// Ids of instances whose status this process changes from now on (launch steps, stops,
    /// destroys, wakes, the reaper, reconciliation), each sent right after the row moved.
    /// A receiver that falls more than a few hundred changes behind loses the oldest ones
    /// (`Lagged`) and should re-read what it shows. Changes made by other gateway processes on
    /// the same database are not seen here: live views re-read the rows as well.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.changes.subscribe()
    }

    /// Starts every background task: the periodic reconciler, the engine event watcher (which
    /// also keeps [`Self::engine_health`] current and reconnects with backoff), the idle and
    /// lifetime reaper, the warm pool filler and the activity flusher. The control plane calls
    /// this once after [`Self::prepare`]; the tasks run until aborted (dropping the handles
    /// leaves them running).
    pub fn spawn_background(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let every = self.options.intervals;
        vec![
            self.spawn_reconciler(every.reconcile),
            self.spawn_event_watcher(),
            self.spawn_reaper(every.reap),
            self.spawn_pool_filler(every.pool),
            self.spawn_activity_flusher(every.activity_flush),
        ]
    }

    /// Its settings.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Its engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    fn now(&self) -> i64 {
        self.clock.now_millis()
    }
}
