//! [`Engine`] on a Docker Swarm: each instance is a service of one replica.
//!
//! Owns the translation of a [`ContainerSpec`] into a service spec and of services and their
//! tasks back into [`ContainerInfo`]. What the life cycle calls a container is a service here:
//! the id it stores is the service id, the name is the service name (`flowcase-<slug>`, as a
//! container would be named), the labels are the service's (also put on every task container,
//! so container events carry them).
//!
//! - **Create** makes the service with zero replicas (nothing runs, nothing is reserved: a warm
//!   pool's "created" service costs nothing). Resources: the droplet's CPU and memory are both
//!   the limit and the reservation, so the scheduler only places a task where it fits. Restart
//!   policy `none`: our reconciler owns the life cycle, a task that dies stays dead and the row
//!   follows it. Placement constraints come from the droplet's `flowcase.placement*` labels
//!   ([`super::placement`]).
//! - **Start** scales to one replica (or, when the replica's task has ended, forces a new task)
//!   and waits, bounded, until the new task runs or ends. **Stop** scales to zero and waits
//!   until the task has stopped. The service stays, with its definition (image, environment,
//!   the instance's password, labels); the task's container does not carry over to the next
//!   start: what a stopped instance keeps is its profile volume, exactly as the product
//!   promises ("stop keeps the profile"); files outside the profile are reset on wake, which a
//!   plain Docker engine happens to keep. **Remove** scales to zero, waits until Swarm has
//!   reaped every task (deleting a service whose tasks are being reaped crashes Docker 20.10's
//!   manager), deletes the service and waits until its task containers are gone, so the
//!   instance network can be removed after it.
//! - **Networks**: each instance gets its own attachable overlay network (overlay networks
//!   cannot turn inter-container traffic off, so a shared one would let instances reach each
//!   other). The gateway's container joins it (mode `container-network`, as with plain
//!   Docker) and dials the instance there: at the task's own address when the task runs on the
//!   manager the gateway talks to, else at the service's virtual IP, which reaches the task on
//!   whichever node it runs (through IPVS, which the nodes' kernels must have; the upstream is
//!   read again at every start). Nothing is ever published: the routing mesh
//!   and host-mode ports bind every interface. A gateway on the host of a single-node swarm
//!   cannot dial an overlay network; for it, the task's address on the node's
//!   `docker_gwbridge` is reported too ([`NODE_BRIDGE`]).
//! - **Images**: by default the service names its image by the id it has on this manager, so no
//!   node ever asks a registry (Swarm skips the pull of an image named by id); configured with
//!   `image_reference = "name"`, each node pulls the image by name when a task lands there.
//!   [`Engine::pull`] and [`Engine::image_present`] act on this node.
//! - **Events**: container events of our deployment (task containers carry our labels,
//!   reported under their service's id) merged with service removals (a service event carries
//!   only the name, from which the instance is known).
//!
//! A service that does not exist is looked up as a plain container, so containers made before a
//! switch from the plain backend (and the gateway's own container) keep working until removed.
//!
//! Hardening: capabilities are all dropped (the spec's allow list is added back), the root
//! filesystem is read-only when asked, limits always set, never privileged (a service cannot
//! be). `no-new-privileges` cannot be set per service through the Swarm API that Docker 20.10
//! speaks: set `"no-new-privileges": true` in every node's `daemon.json`; [`Engine::info`]
//! says so in the engine's description when the daemon does not enforce it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, Limit, Mount, MountTmpfsOptions, MountType,
    MountVolumeOptions, NetworkAttachmentConfig, NetworkCreateRequest, NodeState, ResourceObject,
    Service, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskSpec,
    TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    EventsOptions, InspectServiceOptions, ListContainersOptions, ListNodesOptions,
    ListServicesOptions, ListTasksOptions, UpdateServiceOptions,
};
use flowcase_config::SwarmImageReference;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};

use super::docker::{
    DockerEngine, create_network, engine_error, find_network, hash_map, is_status, ours_filter,
};
use super::engine::{
    ContainerInfo, ContainerSpec, ContainerState, ContainerStats, Engine, EngineError, EngineEvent,
    EngineInfo, EngineResult, Exposure, LABEL_INSTANCE, PullProgress, RegistryAuth,
};
use super::placement;

/// Key in [`ContainerInfo::addresses`] of a task's address on its node's `docker_gwbridge`:
/// reachable from that node's host only (a gateway on the host of a single-node swarm).
pub const NODE_BRIDGE: &str = "docker_gwbridge";
/// Label Swarm puts on task containers: the service they belong to.
const SERVICE_ID_LABEL: &str = "com.docker.swarm.service.id";
/// How long a start may take until the new task runs (or ends): scheduling, not readiness.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Added to the stop grace: how long the task may take to be reported stopped.
const STOP_MARGIN: Duration = Duration::from_secs(30);
/// How long a removed service's task containers may take to disappear.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between looks at a task in motion.
const POLL: Duration = Duration::from_millis(100);
/// Tries of a service update that lost a race with another update (version out of sequence).
const UPDATE_TRIES: usize = 5;
/// Size of each private tmpfs (as the plain engine gives).
const TMPFS_BYTES: i64 = 64 << 20;

/// A Swarm manager's engine. Cloning is cheap.
#[derive(Clone)]
pub struct SwarmEngine {
    local: DockerEngine,
    image_reference: SwarmImageReference,
}

impl std::fmt::Debug for SwarmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmEngine")
            .field("image_reference", &self.image_reference)
            .finish_non_exhaustive()
    }
}

/// The service spec of a container spec, with `image` as the reference the tasks run. Fails on
/// what Swarm cannot do (publishing on loopback) and on malformed placement labels.
pub fn service_spec(spec: &ContainerSpec, image: &str) -> Result<ServiceSpec, String> {
    if spec.exposure == Exposure::LoopbackEphemeral {
        return Err(
            "a swarm service cannot publish a port on 127.0.0.1 only (the routing mesh and \
             host-mode ports bind every interface): use upstream_mode = \"container-network\""
                .into(),
        );
    }
    let constraints = placement::constraints(&spec.labels)?;
    let mut mounts: Vec<Mount> = spec
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: Some(m.volume.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(false),
            // Created like this on a node that does not hold the profile volume yet.
            volume_options: Some(MountVolumeOptions {
                labels: Some(hash_map(&m.labels)),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    mounts.extend(spec.tmpfs.iter().map(|path| Mount {
        target: Some(path.clone()),
        typ: Some(MountType::TMPFS),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes: Some(TMPFS_BYTES),
            ..Default::default()
        }),
        ..Default::default()
    }));
    let labels = hash_map(&spec.labels);
    let container = TaskSpecContainerSpec {
        image: Some(image.to_owned()),
        labels: Some(labels.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        read_only: Some(spec.read_only_root),
        mounts: Some(mounts),
        capability_drop: Some(vec!["ALL".into()]),
        capability_add: Some(spec.cap_add.clone()),
        init: Some(false),
        ..Default::default()
    };
    let resources = TaskSpecResources {
        limits: Some(Limit {
            nano_cpus: Some(spec.nano_cpus),
            memory_bytes: Some(spec.memory_bytes),
            pids: Some(spec.pids_limit),
        }),
        // Reserved as much as allowed: the scheduler places a task only where it fits.
        reservations: Some(ResourceObject {
            nano_cpus: Some(spec.nano_cpus),
            memory_bytes: Some(spec.memory_bytes),
            ..Default::default()
        }),
        // No swap on top of the memory limit (engines older than API 1.47 ignore it).
        swap_bytes: Some(0),
        ..Default::default()
    };
    Ok(ServiceSpec {
        name: Some(spec.name.clone()),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(resources),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                max_attempts: Some(0),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(constraints),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(spec.network.clone()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::VIP),
            ports: Some(Vec::new()),
        }),
        ..Default::default()
    })
}

fn replicas(service: &Service) -> i64 {
    service
        .spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(0)
}

fn task_state(task: &Task) -> TaskState {
    task.status
        .as_ref()
        .and_then(|s| s.state)
        .unwrap_or(TaskState::NEW)
}

fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::COMPLETE
            | TaskState::SHUTDOWN
            | TaskState::FAILED
            | TaskState::REJECTED
            | TaskState::REMOVE
            | TaskState::ORPHANED
    )
}

fn version(task: &Task) -> u64 {
    task.version.as_ref().and_then(|v| v.index).unwrap_or(0)
}

/// The task that stands for the service: the one meant to run, else the last one that changed.
fn current_task(tasks: &[Task]) -> Option<&Task> {
    tasks
        .iter()
        .filter(|t| t.desired_state == Some(TaskState::RUNNING))
        .max_by_key(|t| version(t))
        .or_else(|| tasks.iter().max_by_key(|t| version(t)))
}

fn container_state(task: Option<&Task>) -> ContainerState {
    match task.map(task_state) {
        None => ContainerState::Created,
        Some(TaskState::RUNNING) => ContainerState::Running,
        Some(TaskState::COMPLETE | TaskState::SHUTDOWN | TaskState::FAILED) => {
            ContainerState::Exited
        }
        Some(TaskState::REJECTED | TaskState::ORPHANED | TaskState::REMOVE) => ContainerState::Dead,
        Some(_) => ContainerState::Created,
    }
}

/// The state of a service whose task says `from_task`, given the state of the task's container
/// on this node (if it is here). The container's own state is fresher: its `die` event comes
/// before the node reports the task ended, so a task still "running" whose container is not
/// takes the container's state.
fn fresher_state(from_task: ContainerState, local: Option<ContainerState>) -> ContainerState {
    match local {
        Some(local) if from_task == ContainerState::Running => local,
        _ => from_task,
    }
}

fn exit_code(task: Option<&Task>) -> Option<i64> {
    task.and_then(|t| t.status.as_ref())
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.exit_code)
}

fn container_id(task: &Task) -> Option<String> {
    task.status
        .as_ref()
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.container_id.clone())
        .filter(|id| !id.is_empty())
}

fn service_labels(service: &Service) -> BTreeMap<String, String> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn service_name(service: &Service) -> String {
    service
        .spec
        .as_ref()
        .and_then(|s| s.name.clone())
        .unwrap_or_default()
}

fn strip_prefix_len(addr: &str) -> Option<IpAddr> {
    addr.split('/').next()?.parse().ok()
}

fn out_of_sequence(err: &BollardError) -> bool {
    matches!(err, BollardError::DockerResponseServerError { message, .. }
        if message.contains("out of sequence"))
}

impl SwarmEngine {
    /// A client for the manager at `host` (see [`DockerEngine::connect`]).
    pub fn connect(host: &str, image_reference: SwarmImageReference) -> Result<Self, String> {
        Ok(Self {
            local: DockerEngine::connect(host)?,
            image_reference,
        })
    }

    async fn client(&self) -> EngineResult<&Docker> {
        self.local.client().await
    }

    /// The service named or numbered `id`, or `None`.
    ///
    /// The manager also answers for a mere prefix of a service id. Nothing of ours names a
    /// service that way, and a short word that happens to begin some unrelated service's id (the
    /// host name tried as the gateway's container, a container's name) must not stand for it.
    async fn service(&self, id: &str) -> EngineResult<Option<Service>> {
        match self
            .client()
            .await?
            .inspect_service(id, None::<InspectServiceOptions>)
            .await
        {
            Ok(service) if service.id.as_deref() == Some(id) || service_name(&service) == id => {
                Ok(Some(service))
            }
            Ok(_) => Ok(None),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(engine_error(e)),
        }
    }

    /// Every task of the services `ids`; a service that vanished meanwhile has none.
    ///
    /// The manager answers 404 for the whole list when one of the services named in the filter
    /// no longer exists (removed by an operator, by another run, by our own removal racing a
    /// listing): one vanished service must not fail the listing of all the others, so the
    /// services are then asked one by one and the vanished ones left out.
    async fn tasks(&self, ids: &[String]) -> EngineResult<Vec<Task>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let docker = self.client().await?;
        let list = |ids: Vec<String>| {
            docker.list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([("service".to_owned(), ids)])),
            }))
        };
        match list(ids.to_vec()).await {
            Ok(tasks) => return Ok(tasks),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(engine_error(e)),
        }
        let mut tasks = Vec::new();
        for id in ids {
            match list(vec![id.clone()]).await {
                Ok(found) => tasks.extend(found),
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(engine_error(e)),
            }
        }
        Ok(tasks)
    }

    /// Applies `change` to the service's spec, retrying when another update got in between.
    async fn update(&self, id: &str, change: impl Fn(&mut ServiceSpec)) -> EngineResult<()> {
        let docker = self.client().await?;
        let mut last = None;
        for _ in 0..UPDATE_TRIES {
            let service = self
                .service(id)
                .await?
                .ok_or_else(|| EngineError::NotFound(format!("service {id}")))?;
            let version = service.version.as_ref().and_then(|v| v.index).unwrap_or(0);
            let mut spec = service.spec.unwrap_or_default();
            change(&mut spec);
            let options = UpdateServiceOptions {
                version: i32::try_from(version).unwrap_or(i32::MAX),
                ..Default::default()
            };
            match docker.update_service(id, spec, options, None).await {
                Ok(_) => return Ok(()),
                Err(e) if out_of_sequence(&e) => last = Some(e),
                Err(e) => return Err(engine_error(e)),
            }
        }
        Err(last.map_or_else(
            || EngineError::Other(format!("service {id} could not be updated")),
            engine_error,
        ))
    }

    /// Waits until a task not in `before` runs or has ended.
    async fn wait_for_new_task(&self, id: &str, before: &HashSet<String>) -> EngineResult<()> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let tasks = self.tasks(&[id.to_owned()]).await?;
            let fresh = tasks
                .iter()
                .filter(|t| t.id.as_ref().is_some_and(|tid| !before.contains(tid)))
                .max_by_key(|t| version(t));
            if let Some(task) = fresh {
                let state = task_state(task);
                if state == TaskState::RUNNING || is_terminal(state) {
                    return Ok(());
                }
                // No node satisfies the placement constraints: say so now rather than after the
                // timeout (the scheduler only retries when nodes change). A lack of unreserved
                // resources is waited out instead: other tasks stopping frees them.
                let unschedulable =
                    task.status
                        .as_ref()
                        .and_then(|s| s.err.as_deref())
                        .filter(|e| {
                            e.contains("no suitable node") && !e.contains("insufficient resources")
                        });
                if state == TaskState::PENDING
                    && let Some(why) = unschedulable
                {
                    return Err(EngineError::Conflict(format!(
                        "no node of the swarm can run service {id}: {why}"
                    )));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let why = fresh
                    .and_then(|t| t.status.as_ref())
                    .map(|s| {
                        format!(
                            "{}{}",
                            s.state.map(|st| st.to_string()).unwrap_or_default(),
                            s.err
                                .as_deref()
                                .or(s.message.as_deref())
                                .map(|m| format!(": {m}"))
                                .unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| "no task was created".into());
                return Err(EngineError::Other(format!(
                    "service {id} did not start within {} s ({why})",
                    START_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until no task of the service is running or on its way.
    async fn wait_stopped(&self, id: &str, timeout: Duration) -> EngineResult<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let tasks = self.tasks(&[id.to_owned()]).await?;
            if tasks.iter().all(|t| is_terminal(task_state(t))) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Other(format!(
                    "service {id} still has a running task after {} s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the service (scaled to zero) has no task left at all.
    async fn wait_no_tasks(&self, id: &str) -> EngineResult<()> {
        let deadline = tokio::time::Instant::now() + REMOVE_TIMEOUT;
        loop {
            if self.tasks(&[id.to_owned()]).await?.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Other(format!(
                    "service {id} still has tasks {} s after it was scaled to zero",
                    REMOVE_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until no container of the (removed) service is left on this node.
    async fn wait_containers_gone(&self, service_id: &str) -> EngineResult<()> {
        let docker = self.client().await?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("{SERVICE_ID_LABEL}={service_id}")],
            )])),
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + REMOVE_TIMEOUT;
        loop {
            let left = docker
                .list_containers(Some(options.clone()))
                .await
                .map_err(engine_error)?;
            if left.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Other(format!(
                    "the containers of removed service {service_id} are still there after {} s",
                    REMOVE_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The instance's address per network name: the task's own when its container runs on this
    /// node (reached directly), else the service's virtual IP (reached from any node through
    /// the kernel's IPVS, which Swarm's service load balancing needs); and the task's address
    /// on this node's gateway bridge (when it runs here).
    async fn addresses(
        &self,
        service: &Service,
        task: Option<&Task>,
    ) -> EngineResult<BTreeMap<String, IpAddr>> {
        let docker = self.client().await?;
        let mut addresses = BTreeMap::new();
        let vips = service
            .endpoint
            .as_ref()
            .and_then(|e| e.virtual_ips.clone())
            .unwrap_or_default();
        for vip in vips {
            let (Some(network_id), Some(ip)) = (
                vip.network_id,
                vip.addr.as_deref().and_then(strip_prefix_len),
            ) else {
                continue;
            };
            if let Some(name) = find_network(docker, &network_id)
                .await?
                .and_then(|n| n.name)
            {
                addresses.insert(name, ip);
            }
        }
        let running = task.filter(|t| task_state(t) == TaskState::RUNNING);
        let Some(container) = running.and_then(container_id) else {
            return Ok(addresses);
        };
        if let Some(local) = self.local.inspect(&container).await? {
            addresses.extend(local.addresses);
        }
        let on_bridge = find_network(docker, NODE_BRIDGE)
            .await?
            .and_then(|bridge| bridge.containers)
            .and_then(|c| c.get(&container).cloned())
            .and_then(|e| e.ipv4_address)
            .and_then(|a| strip_prefix_len(&a));
        if let Some(ip) = on_bridge {
            addresses.insert(NODE_BRIDGE.to_owned(), ip);
        }
        Ok(addresses)
    }

    /// The container of the service's current task, if it has one on this node.
    async fn task_container(&self, service: &Service) -> EngineResult<Option<String>> {
        let id = service.id.clone().unwrap_or_default();
        let tasks = self.tasks(&[id]).await?;
        Ok(current_task(&tasks)
            .filter(|t| task_state(t) == TaskState::RUNNING)
            .and_then(container_id))
    }

    fn service_events(&self) -> BoxStream<'static, EngineResult<EngineEvent>> {
        let this = self.clone();
        futures_util::stream::once(async move { this.client().await.cloned() })
            .map(|client| match client {
                Ok(docker) => {
                    let options = EventsOptions {
                        filters: Some(HashMap::from([(
                            "type".to_owned(),
                            vec!["service".to_owned()],
                        )])),
                        ..Default::default()
                    };
                    docker
                        .events(Some(options))
                        .map_err(engine_error)
                        .try_filter_map(|event| async move {
                            let actor = event.actor.unwrap_or_default();
                            let name = actor
                                .attributes
                                .unwrap_or_default()
                                .remove("name")
                                .unwrap_or_default();
                            // A removal says only the name; ours are named after the instance.
                            let slug = name.strip_prefix(super::spec::NAME_PREFIX);
                            Ok(match (event.action.as_deref(), slug) {
                                (Some("remove"), Some(slug)) if !slug.is_empty() => {
                                    Some(EngineEvent {
                                        id: actor.id.unwrap_or_default(),
                                        action: "destroy".into(),
                                        labels: BTreeMap::from([(
                                            LABEL_INSTANCE.to_owned(),
                                            slug.to_owned(),
                                        )]),
                                    })
                                }
                                _ => None,
                            })
                        })
                        .boxed()
                }
                Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
            .boxed()
    }
}

#[async_trait::async_trait]
impl Engine for SwarmEngine {
    /// Not yet: a sidecar would be a second service on the instance's overlay network, which
    /// this backend does not make; sidecar droplets are refused at launch.
    fn runs_sidecars(&self) -> bool {
        false
    }

    /// The swarm's ready, active nodes together; fails when this engine is not a manager.
    async fn info(&self) -> EngineResult<EngineInfo> {
        let docker = self.client().await?;
        let info = docker.info().await.map_err(engine_error)?;
        if info.swarm.as_ref().and_then(|s| s.control_available) != Some(true) {
            return Err(EngineError::Unavailable(
                "this Docker engine is not a swarm manager (docker.backend = \"swarm\" needs one: \
                 docker swarm init, or point docker.host at a manager)"
                    .into(),
            ));
        }
        let nodes = docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(engine_error)?;
        let ready: Vec<_> = nodes
            .iter()
            .filter(|n| n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY))
            .filter(|n| {
                n.spec.as_ref().and_then(|s| s.availability)
                    == Some(bollard::models::NodeSpecAvailabilityEnum::ACTIVE)
            })
            .collect();
        let resources = |n: &&bollard::models::Node| {
            n.description
                .as_ref()
                .and_then(|d| d.resources.clone())
                .unwrap_or_default()
        };
        let nano_cpus: i64 = ready
            .iter()
            .map(|n| resources(n).nano_cpus.unwrap_or(0))
            .sum();
        let memory_bytes: i64 = ready
            .iter()
            .map(|n| resources(n).memory_bytes.unwrap_or(0))
            .sum();
        let enforced = info
            .security_options
            .unwrap_or_default()
            .iter()
            .any(|o| o.contains("no-new-privileges"));
        Ok(EngineInfo {
            cpus: nano_cpus / 1_000_000_000,
            memory_bytes,
            description: format!(
                "Docker Swarm of {} ready node(s), manager Docker Engine {}{}",
                ready.len(),
                info.server_version
                    .as_deref()
                    .unwrap_or("(unknown version)"),
                if enforced {
                    ""
                } else {
                    " (warning: the daemon does not enforce no-new-privileges; see docs/swarm.md)"
                }
            ),
        })
    }

    async fn image_present(&self, image: &str) -> EngineResult<bool> {
        self.local.image_present(image).await
    }

    fn pull(
        &self,
        image: &str,
        auth: Option<RegistryAuth>,
    ) -> BoxStream<'static, EngineResult<PullProgress>> {
        self.local.pull(image, auth)
    }

    async fn ensure_isolated_network(
        &self,
        name: &str,
        _labels: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        Err(EngineError::Conflict(format!(
            "network {name}: a swarm network cannot keep its members apart; the swarm backend \
             gives each instance its own network (upstream_mode = \"container-network\")"
        )))
    }

    /// An attachable overlay network (the gateway's container joins it); an existing network
    /// of another kind is refused.
    async fn ensure_private_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        let docker = self.client().await?;
        if let Some(network) = find_network(docker, name).await? {
            return if network.driver.as_deref() == Some("overlay")
                && network.attachable == Some(true)
            {
                Ok(())
            } else {
                Err(EngineError::Conflict(format!(
                    "network {name} exists but is not an attachable overlay network"
                )))
            };
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            labels: Some(hash_map(labels)),
            ..Default::default()
        };
        create_network(docker, request).await.map(drop)
    }

    /// Removes the network and waits until it is gone: a swarm network lingers for a moment
    /// after its removal was accepted.
    async fn remove_network(&self, name: &str) -> EngineResult<()> {
        self.local.remove_network(name).await?;
        let docker = self.client().await?;
        let deadline = tokio::time::Instant::now() + REMOVE_TIMEOUT;
        while find_network(docker, name).await?.is_some() {
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Other(format!(
                    "network {name} is still there {} s after its removal",
                    REMOVE_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    async fn connect_network(&self, network: &str, container: &str) -> EngineResult<()> {
        self.local.connect_network(network, container).await
    }

    async fn disconnect_network(&self, network: &str, container: &str) -> EngineResult<()> {
        self.local.disconnect_network(network, container).await
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<BTreeMap<String, String>> {
        self.local.ensure_volume(name, labels).await
    }

    async fn create(&self, spec: &ContainerSpec) -> EngineResult<String> {
        let docker = self.client().await?;
        let image = match self.image_reference {
            SwarmImageReference::LocalId => match docker.inspect_image(&spec.image).await {
                Ok(image) => image
                    .id
                    .ok_or_else(|| EngineError::ImageMissing(spec.image.clone()))?,
                Err(e) if is_status(&e, 404) => {
                    return Err(EngineError::ImageMissing(spec.image.clone()));
                }
                Err(e) => return Err(engine_error(e)),
            },
            SwarmImageReference::Name => spec.image.clone(),
        };
        let service = service_spec(spec, &image).map_err(EngineError::Other)?;
        match docker.create_service(service, None).await {
            Ok(created) => created
                .id
                .ok_or_else(|| EngineError::Other("the manager returned no service id".into())),
            Err(e) => Err(engine_error(e)),
        }
    }

    async fn start(&self, id: &str) -> EngineResult<()> {
        let Some(service) = self.service(id).await? else {
            return self.local.start(id).await;
        };
        let service_id = service.id.clone().unwrap_or_else(|| id.to_owned());
        let tasks = self.tasks(std::slice::from_ref(&service_id)).await?;
        let before: HashSet<String> = tasks.iter().filter_map(|t| t.id.clone()).collect();
        if replicas(&service) == 0 {
            self.update(&service_id, |spec| {
                spec.mode = Some(ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                    ..Default::default()
                });
            })
            .await?;
        } else {
            let current = current_task(&tasks);
            let container_ended = match current.and_then(container_id) {
                Some(container) => self.local.inspect(&container).await?.is_some_and(|c| {
                    matches!(c.state, ContainerState::Exited | ContainerState::Dead)
                }),
                None => false,
            };
            match current.map(task_state) {
                // Running, or on its way, unless its container here already ended (the manager
                // has not caught up yet: that task will not run again).
                Some(state) if !is_terminal(state) && !container_ended => return Ok(()),
                // Its task ended (restart policy none): a forced update makes a new one.
                _ => {
                    self.update(&service_id, |spec| {
                        if let Some(template) = spec.task_template.as_mut() {
                            template.force_update =
                                Some(template.force_update.unwrap_or(0).wrapping_add(1));
                        }
                    })
                    .await?
                }
            }
        }
        self.wait_for_new_task(&service_id, &before).await
    }

    async fn stop(&self, id: &str, grace: Duration) -> EngineResult<()> {
        let Some(service) = self.service(id).await? else {
            return self.local.stop(id, grace).await;
        };
        let service_id = service.id.clone().unwrap_or_else(|| id.to_owned());
        if replicas(&service) != 0 {
            let grace_ns = i64::try_from(grace.as_nanos()).unwrap_or(i64::MAX);
            self.update(&service_id, |spec| {
                spec.mode = Some(ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
                    ..Default::default()
                });
                if let Some(container) = spec
                    .task_template
                    .as_mut()
                    .and_then(|t| t.container_spec.as_mut())
                {
                    container.stop_grace_period = Some(grace_ns);
                }
            })
            .await?;
        }
        self.wait_stopped(&service_id, grace + STOP_MARGIN).await
    }

    /// Scales to zero at once (no grace: a removal kills, as the plain engine's forced removal
    /// does), waits until the service has no task left, then deletes it.
    async fn remove(&self, id: &str) -> EngineResult<()> {
        let Some(service) = self.service(id).await? else {
            return self.local.remove(id).await;
        };
        let service_id = service.id.clone().unwrap_or_else(|| id.to_owned());
        if replicas(&service) != 0 {
            self.update(&service_id, |spec| {
                spec.mode = Some(ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
                    ..Default::default()
                });
                if let Some(container) = spec
                    .task_template
                    .as_mut()
                    .and_then(|t| t.container_spec.as_mut())
                {
                    container.stop_grace_period = Some(0);
                }
            })
            .await?;
        }
        // Docker 20.10's manager dereferences a task the reaper deleted meanwhile when a service
        // is deleted with tasks still listed (swarmkit's SetServiceTasksRemove) and crashes the
        // daemon: delete only once the reaper has taken every task.
        self.wait_no_tasks(&service_id).await?;
        match self.client().await?.delete_service(&service_id).await {
            Ok(()) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(engine_error(e)),
        }
        self.wait_containers_gone(&service_id).await
    }

    async fn inspect(&self, id: &str) -> EngineResult<Option<ContainerInfo>> {
        let Some(service) = self.service(id).await? else {
            return self.local.inspect(id).await;
        };
        let service_id = service.id.clone().unwrap_or_else(|| id.to_owned());
        let tasks = self.tasks(std::slice::from_ref(&service_id)).await?;
        let task = current_task(&tasks);
        let mut state = container_state(task);
        let mut exit = exit_code(task);
        if state == ContainerState::Running
            && let Some(container) = task.and_then(container_id)
            && let Some(local) = self.local.inspect(&container).await?
            && local.state != ContainerState::Running
        {
            state = fresher_state(state, Some(local.state));
            exit = local.exit_code;
        }
        Ok(Some(ContainerInfo {
            id: service_id,
            name: service_name(&service),
            state,
            exit_code: exit,
            labels: service_labels(&service),
            addresses: self.addresses(&service, task).await?,
            published: BTreeMap::new(),
        }))
    }

    /// Our services, and plain containers of ours that are not tasks (made before a switch from
    /// the plain backend).
    async fn list_ours(&self, deployment: &str) -> EngineResult<Vec<ContainerInfo>> {
        let options = ListServicesOptions {
            filters: Some(ours_filter(deployment)),
            ..Default::default()
        };
        let services = self
            .client()
            .await?
            .list_services(Some(options))
            .await
            .map_err(engine_error)?;
        let ids: Vec<String> = services.iter().filter_map(|s| s.id.clone()).collect();
        let tasks = self.tasks(&ids).await?;
        let mut by_service: HashMap<String, Vec<Task>> = HashMap::new();
        for task in tasks {
            if let Some(service_id) = task.service_id.clone() {
                by_service.entry(service_id).or_default().push(task);
            }
        }
        let plain = self.local.list_ours(deployment).await?;
        // As in `inspect`: a task container on this node knows it stopped before the manager's
        // task does, and a reconciliation must not wait for the manager to catch up.
        let task_containers: HashMap<&str, ContainerState> = plain
            .iter()
            .filter(|c| c.labels.contains_key(SERVICE_ID_LABEL))
            .map(|c| (c.id.as_str(), c.state))
            .collect();
        let mut ours: Vec<ContainerInfo> = services
            .iter()
            .map(|service| {
                let id = service.id.clone().unwrap_or_default();
                let tasks = by_service.get(&id).map(Vec::as_slice).unwrap_or_default();
                let task = current_task(tasks);
                let local = task
                    .and_then(container_id)
                    .and_then(|c| task_containers.get(c.as_str()).copied());
                ContainerInfo {
                    id,
                    name: service_name(service),
                    state: fresher_state(container_state(task), local),
                    exit_code: exit_code(task),
                    labels: service_labels(service),
                    addresses: BTreeMap::new(),
                    published: BTreeMap::new(),
                }
            })
            .collect();
        ours.extend(
            plain
                .into_iter()
                .filter(|c| !c.labels.contains_key(SERVICE_ID_LABEL)),
        );
        Ok(ours)
    }

    /// Container events of our deployment (a task container's under its service's id), and
    /// service removals.
    fn events(&self, deployment: &str) -> BoxStream<'static, EngineResult<EngineEvent>> {
        let containers = self.local.events(deployment).map_ok(|mut event| {
            if let Some(service) = event.labels.get(SERVICE_ID_LABEL) {
                event.id = service.clone();
            }
            event
        });
        futures_util::stream::select(containers, self.service_events()).boxed()
    }

    async fn stats(&self, id: &str) -> EngineResult<ContainerStats> {
        let Some(service) = self.service(id).await? else {
            return self.local.stats(id).await;
        };
        match self.task_container(&service).await? {
            Some(container) => self.local.stats(&container).await,
            None => Err(EngineError::Conflict(format!(
                "service {id} has no running task on this node"
            ))),
        }
    }

    /// The output of the current task's container when it ran on this node (a task elsewhere
    /// tells nothing here).
    async fn output_tail(&self, id: &str, lines: usize) -> EngineResult<String> {
        let Some(service) = self.service(id).await? else {
            return self.local.output_tail(id, lines).await;
        };
        let tasks = self
            .tasks(&[service.id.clone().unwrap_or_default()])
            .await?;
        // Ended or not: an exited task's output is the one wanted.
        match current_task(&tasks).and_then(container_id) {
            Some(container) => self.local.output_tail(&container, lines).await,
            None => Ok(String::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::orchestrator::engine::VolumeMount;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "flowcase-x".into(),
            image: "img:1".into(),
            env: BTreeMap::from([("A".into(), "1".into())]),
            labels: BTreeMap::from([
                (LABEL_INSTANCE.into(), "x".into()),
                ("flowcase.user".into(), "42".into()),
                ("flowcase.droplet".into(), "7".into()),
                (
                    "flowcase.placement.gpu".into(),
                    "node.labels.gpu == true".into(),
                ),
            ]),
            nano_cpus: 500_000_000,
            memory_bytes: 64 << 20,
            pids_limit: 100,
            cap_add: vec!["CHOWN".into()],
            read_only_root: true,
            tmpfs: vec!["/tmp".into()],
            network: "net".into(),
            ports: vec![8080],
            exposure: Exposure::NetworkOnly,
            mounts: vec![VolumeMount {
                volume: "vol".into(),
                target: "/home".into(),
                labels: crate::orchestrator::spec::profile_labels(42, 7, "inst"),
            }],
        }
    }

    #[test]
    fn a_service_reserves_and_limits_places_and_never_restarts_or_publishes() {
        let s = service_spec(&spec(), "sha256:abc").unwrap();
        assert_eq!(s.name.as_deref(), Some("flowcase-x"));
        let replicated = s.mode.unwrap().replicated.unwrap();
        assert_eq!(replicated.replicas, Some(0), "created, not started");
        let endpoint = s.endpoint_spec.unwrap();
        assert_eq!(endpoint.ports, Some(Vec::new()), "nothing published");
        let t = s.task_template.unwrap();
        let r = t.resources.unwrap();
        let limits = r.limits.unwrap();
        assert_eq!(
            (limits.nano_cpus, limits.memory_bytes, limits.pids),
            (Some(500_000_000), Some(64 << 20), Some(100))
        );
        let reserved = r.reservations.unwrap();
        assert_eq!(
            (reserved.nano_cpus, reserved.memory_bytes),
            (Some(500_000_000), Some(64 << 20))
        );
        assert_eq!(
            t.restart_policy.unwrap().condition,
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        assert_eq!(
            t.placement.unwrap().constraints,
            Some(vec!["node.labels.gpu==true".to_owned()])
        );
        assert_eq!(
            t.networks.unwrap()[0].target.as_deref(),
            Some("net"),
            "its own network"
        );
        let c = t.container_spec.unwrap();
        assert_eq!(c.image.as_deref(), Some("sha256:abc"));
        assert_eq!(c.capability_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(c.capability_add, Some(vec!["CHOWN".to_owned()]));
        assert_eq!(c.read_only, Some(true));
        assert_eq!(c.labels.unwrap()[LABEL_INSTANCE], "x");
        let mounts = c.mounts.unwrap();
        assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
        let volume_labels = mounts[0]
            .volume_options
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert_eq!(volume_labels["flowcase.user"], "42");
        assert_eq!(volume_labels["flowcase.installation"], "inst");
        assert_eq!(mounts[1].typ, Some(MountType::TMPFS));
    }

    #[test]
    fn loopback_publishing_and_bad_constraints_are_refused() {
        let mut loopback = spec();
        loopback.exposure = Exposure::LoopbackEphemeral;
        assert!(
            service_spec(&loopback, "i")
                .unwrap_err()
                .contains("container-network")
        );
        let mut bad = spec();
        bad.labels
            .insert("flowcase.placement".into(), "gpu=yes".into());
        assert!(
            service_spec(&bad, "i")
                .unwrap_err()
                .contains("flowcase.placement")
        );
    }

    fn task(id: &str, index: u64, desired: TaskState, state: TaskState) -> Task {
        Task {
            id: Some(id.into()),
            version: Some(bollard::models::ObjectVersion { index: Some(index) }),
            desired_state: Some(desired),
            status: Some(bollard::models::TaskStatus {
                state: Some(state),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_task_containers_own_stop_is_believed_before_the_manager_catches_up() {
        use ContainerState::*;
        assert_eq!(fresher_state(Running, Some(Exited)), Exited);
        assert_eq!(fresher_state(Running, Some(Running)), Running);
        assert_eq!(
            fresher_state(Running, None),
            Running,
            "the task runs elsewhere"
        );
        // Only a running task is overruled: a new task's container may still be starting.
        assert_eq!(fresher_state(Exited, Some(Running)), Exited);
        assert_eq!(fresher_state(Created, Some(Exited)), Created);
    }

    #[test]
    fn the_task_meant_to_run_stands_for_the_service() {
        use TaskState as T;
        assert_eq!(container_state(None), ContainerState::Created);
        let tasks = vec![
            task("old", 30, T::SHUTDOWN, T::FAILED),
            task("new", 20, T::RUNNING, T::STARTING),
        ];
        assert_eq!(current_task(&tasks).unwrap().id.as_deref(), Some("new"));
        assert_eq!(
            container_state(current_task(&tasks)),
            ContainerState::Created
        );
        let stopped = vec![
            task("a", 10, T::SHUTDOWN, T::SHUTDOWN),
            task("b", 40, T::SHUTDOWN, T::FAILED),
        ];
        assert_eq!(current_task(&stopped).unwrap().id.as_deref(), Some("b"));
        assert_eq!(
            container_state(current_task(&stopped)),
            ContainerState::Exited
        );
        let rejected = [task("r", 1, T::SHUTDOWN, T::REJECTED)];
        assert_eq!(container_state(rejected.first()), ContainerState::Dead);
    }
}
