//! The one interface between the life-cycle logic and a container engine.
//!
//! Owns the engine-neutral vocabulary: what to create ([`ContainerSpec`], built by
//! [`super::spec`]), what the engine reports back ([`ContainerInfo`], [`EngineEvent`],
//! [`ContainerStats`]) and how it fails ([`EngineError`]). The Docker implementation is
//! [`super::docker::DockerEngine`]; a Swarm or Kubernetes backend implements the same trait and
//! the life-cycle code does not change. Hardening that must never be switched off (no privileged
//! mode, all capabilities dropped, no-new-privileges) is not in the spec at all: every
//! implementation applies it unconditionally.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

/// Label naming the instance (its slug) on every container, volume and network we create.
pub const LABEL_INSTANCE: &str = "flowcase.instance";
/// Label naming the owner (user id).
pub const LABEL_USER: &str = "flowcase.user";
/// Label naming the droplet (droplet id).
pub const LABEL_DROPLET: &str = "flowcase.droplet";
/// Label on warm pool containers (the droplet id): made ahead, nobody's at creation. Docker
/// labels cannot change afterwards, so a pooled container handed to a user keeps this label and
/// has no [`LABEL_USER`]; its owner is in the database.
pub const LABEL_POOL: &str = "flowcase.pool";
/// Label on profile volumes and on the shared network: present = created by Flowcase.
pub const LABEL_MANAGED: &str = "flowcase.managed";
/// Label naming the Flowcase deployment a container belongs to, so that two deployments (or
/// test runs) sharing one engine never reconcile each other's containers.
pub const LABEL_DEPLOYMENT: &str = "flowcase.deployment";
/// Label of a profile volume: the installation (database) whose user owns it, so that another
/// installation on the same engine, or a new database whose user ids start over, never mounts
/// it (see `Store::installation_id`).
pub const LABEL_INSTALLATION: &str = "flowcase.installation";

/// Label on a container that serves an instance without being it: `guacd` for its guacd
/// sidecar ([`super::sidecar`]). Such a container carries the instance's [`LABEL_INSTANCE`] too,
/// so it is cleaned up with the instance, but is never taken for the instance's container.
pub const LABEL_ROLE: &str = "flowcase.role";
/// [`LABEL_ROLE`] of a guacd sidecar.
pub const ROLE_GUACD: &str = "guacd";

/// Whether a container with these labels is a guacd sidecar rather than an instance.
pub fn is_sidecar(labels: &BTreeMap<String, String>) -> bool {
    labels.get(LABEL_ROLE).is_some_and(|r| r == ROLE_GUACD)
}

/// How an engine call failed, in terms the life cycle can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The container (volume, network) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A name is taken, or the object is in a state that forbids the call.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The image is not present on the engine.
    #[error("image {0} is not present")]
    ImageMissing(String),
    /// The registry refused to serve the image (no credentials, or wrong ones); names the image.
    #[error("the registry refused access to image {0}: check the registry username and password")]
    RegistryRefused(String),
    /// The registry of the image cannot be reached; names the image and says why.
    #[error("the registry of image {0} cannot be reached")]
    RegistryUnreachable(String),
    /// The engine cannot be reached.
    #[error("engine unreachable: {0}")]
    Unavailable(String),
    /// Anything else the engine reported.
    #[error("{0}")]
    Other(String),
}

/// The engine's size, for the capacity check, and what it is, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// Logical CPUs.
    pub cpus: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Product and version, e.g. `Docker Engine 20.10.24`.
    pub description: String,
}

/// How the gateway will reach a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Published on 127.0.0.1 with a host port the engine picks (read back by inspect).
    LoopbackEphemeral,
    /// Not published; reached at the container's address on its network.
    NetworkOnly,
}

/// A named volume mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// Volume name.
    pub volume: String,
    /// Mount point in the container.
    pub target: String,
    /// The labels the volume is made with where it does not exist yet (the owner's, see
    /// [`super::spec::profile_labels`]).
    pub labels: BTreeMap<String, String>,
}

/// Everything needed to create one instance's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container name (unique on the engine).
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Environment.
    pub env: BTreeMap<String, String>,
    /// Labels (ours included).
    pub labels: BTreeMap<String, String>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: i64,
    /// Memory limit in bytes; swap is limited to the same value (no swap on top).
    pub memory_bytes: i64,
    /// Process limit.
    pub pids_limit: i64,
    /// Capabilities given back after all are dropped.
    pub cap_add: Vec<String>,
    /// Read-only root filesystem.
    pub read_only_root: bool,
    /// Private tmpfs mounts (for a read-only root: `/tmp`, `/run`).
    pub tmpfs: Vec<String>,
    /// Network to attach to.
    pub network: String,
    /// Container ports (TCP) the gateway reaches.
    pub ports: Vec<u16>,
    /// How those ports are exposed.
    pub exposure: Exposure,
    /// Named volumes.
    pub mounts: Vec<VolumeMount>,
}

/// What the engine reports about a container's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Restarting.
    Restarting,
    /// Exited (stopped).
    Exited,
    /// Dead (failed removal).
    Dead,
    /// Being removed.
    Removing,
}

/// A container as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Engine id.
    pub id: String,
    /// Name without the leading slash.
    pub name: String,
    /// State.
    pub state: ContainerState,
    /// Exit code, once exited.
    pub exit_code: Option<i64>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Address per attached network.
    pub addresses: BTreeMap<String, IpAddr>,
    /// Host port per published container port (TCP, loopback binding).
    pub published: BTreeMap<u16, u16>,
}

/// A change the engine announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    /// Container id.
    pub id: String,
    /// What happened: `start`, `die`, `stop`, `destroy`, `oom`, ...
    pub action: String,
    /// The container's labels at the time.
    pub labels: BTreeMap<String, String>,
}

/// One usage sample.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ContainerStats {
    /// CPU use, in percent of one CPU (200 = two CPUs busy).
    pub cpu_percent: f64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// Memory limit, in bytes.
    pub memory_limit_bytes: u64,
}

/// Credentials for the registry an image is pulled from. `Debug` hides the password; it is
/// never logged nor put in an error.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// Account on the registry.
    pub username: String,
    /// Its password (or token).
    pub password: String,
    /// The registry's address (`host[:port]`), as the engine keys credentials.
    pub server: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// One progress report of an image pull, as the engine sends it: per layer (`layer` set) or for
/// the whole image (`Pulling from ...`, `Digest: ...`, `Status: Downloaded newer image ...`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PullProgress {
    /// Layer (short digest) the report is about, if any.
    pub layer: Option<String>,
    /// What happens: `Pulling fs layer`, `Downloading`, `Extracting`, `Pull complete`, ...
    pub status: String,
    /// Bytes done, while downloading or extracting.
    pub current: Option<i64>,
    /// Bytes in all, when known.
    pub total: Option<i64>,
}

/// `image` with `:latest` added when it names neither a tag nor a digest: an engine asked for a
/// bare repository would pull every tag.
pub fn with_default_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// Result alias of engine calls.
pub type EngineResult<T> = Result<T, EngineError>;

/// A container engine, narrowed to what the orchestrator needs.
#[async_trait::async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Whether this engine can run an instance's guacd sidecar next to it (a container on the
    /// instance's network that reaches the instance by name). Engines that cannot make the
    /// launch of a sidecar droplet fail with a clear error instead.
    fn runs_sidecars(&self) -> bool {
        true
    }
    /// The engine's CPU and memory.
    async fn info(&self) -> EngineResult<EngineInfo>;
    /// Whether `image` is present locally.
    async fn image_present(&self, image: &str) -> EngineResult<bool>;
    /// Pulls `image` (with `:latest` when it names no tag), logging in with `auth` if given.
    /// Yields progress until the image is present, then ends; a failure is the last item:
    /// [`EngineError::ImageMissing`] (no such repository or tag),
    /// [`EngineError::RegistryRefused`] (credentials missing or refused),
    /// [`EngineError::RegistryUnreachable`] or another error. The default refuses: an engine
    /// that cannot pull (a test double) says so.
    fn pull(
        &self,
        image: &str,
        auth: Option<RegistryAuth>,
    ) -> BoxStream<'static, EngineResult<PullProgress>> {
        let _ = auth;
        let error = EngineError::Other(format!("this engine cannot pull images ({image})"));
        futures_util::stream::once(async move { Err(error) }).boxed()
    }
    /// Makes sure a network exists with inter-container traffic off; creates it (labelled) if
    /// missing. An existing network that lets containers talk to each other is refused
    /// ([`EngineError::Conflict`]).
    async fn ensure_isolated_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()>;
    /// Makes sure a network private to one instance exists (created labelled if missing). Its
    /// members may talk to each other: they are the instance and, in mode `container-network`,
    /// the gateway's container, which must reach it; instances are kept apart by each having
    /// its own.
    async fn ensure_private_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()>;
    /// Removes a network (missing is fine).
    async fn remove_network(&self, name: &str) -> EngineResult<()>;
    /// Attaches a container to a network (already attached is fine).
    async fn connect_network(&self, network: &str, container: &str) -> EngineResult<()>;
    /// Detaches a container from a network (not attached, or either missing, is fine).
    async fn disconnect_network(&self, network: &str, container: &str) -> EngineResult<()>;
    /// Makes sure a named volume exists; creates it with `labels` if missing. Returns the labels
    /// of the volume as it is (the caller checks ownership).
    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<BTreeMap<String, String>>;
    /// Creates a container; returns its id.
    async fn create(&self, spec: &ContainerSpec) -> EngineResult<String>;
    /// Starts a container (already running is fine).
    async fn start(&self, id: &str) -> EngineResult<()>;
    /// Stops a container, killing it after `grace` (already stopped is fine).
    async fn stop(&self, id: &str, grace: Duration) -> EngineResult<()>;
    /// Removes a container, running or not, keeping its named volumes (missing is fine).
    async fn remove(&self, id: &str) -> EngineResult<()>;
    /// The container, or `None` when it does not exist.
    async fn inspect(&self, id: &str) -> EngineResult<Option<ContainerInfo>>;
    /// Every container of `deployment` (by [`LABEL_DEPLOYMENT`]), running or not.
    async fn list_ours(&self, deployment: &str) -> EngineResult<Vec<ContainerInfo>>;
    /// Container events of `deployment`'s containers, from now on.
    fn events(&self, deployment: &str) -> BoxStream<'static, EngineResult<EngineEvent>>;
    /// One usage sample of a running container.
    async fn stats(&self, id: &str) -> EngineResult<ContainerStats>;
    /// The last `lines` lines the container wrote (stdout and stderr together, at most
    /// [`OUTPUT_TAIL_MAX`] bytes), read before a failed launch removes it, when its output is
    /// the only account of why. Nothing when the container is gone or the engine cannot tell.
    async fn output_tail(&self, id: &str, lines: usize) -> EngineResult<String> {
        let _ = (id, lines);
        Ok(String::new())
    }
}

/// The most of a container's output [`Engine::output_tail`] returns.
pub const OUTPUT_TAIL_MAX: usize = 4096;
