//! [`Engine`] on a single Docker engine, through bollard.
//!
//! Owns every bollard type the orchestrator touches: the translation of a [`ContainerSpec`] into
//! a create request (with the hardening that no spec can switch off), of inspect and list
//! answers into [`ContainerInfo`], and of bollard errors into [`EngineError`]. The API version is
//! negotiated on first use, because bollard speaks a newer API than the Debian engines we
//! support (Docker 20.10 answers 1.41) and an engine refuses a client that is too new.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    ContainerSummaryStateEnum, EndpointSettings, HostConfig, Mount, MountType,
    NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest, NetworkingConfig,
    PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, InspectContainerOptions,
    InspectNetworkOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    StartContainerOptions, StatsOptions, StopContainerOptions,
};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use super::engine::{
    ContainerInfo, ContainerSpec, ContainerState, ContainerStats, Engine, EngineError, EngineEvent,
    EngineInfo, EngineResult, Exposure, LABEL_DEPLOYMENT, LABEL_INSTANCE, OUTPUT_TAIL_MAX,
    PullProgress, RegistryAuth, with_default_tag,
};

/// The option that turns inter-container traffic off on a bridge network.
pub const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// A Docker engine. Cloning is cheap and shares the negotiated client.
#[derive(Clone)]
pub struct DockerEngine {
    base: Docker,
    negotiated: Arc<OnceCell<Docker>>,
}

impl std::fmt::Debug for DockerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerEngine").finish_non_exhaustive()
    }
}

impl DockerEngine {
    /// A client for `host` (`unix:///path` or `tcp://host:port`; the config has checked the
    /// scheme). Nothing is sent until the first call, so a gateway starts while Docker is down
    /// and reports it until it comes back.
    pub fn connect(host: &str) -> Result<Self, String> {
        const TIMEOUT_SECS: u64 = 30;
        let client = if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_http(host, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        };
        let base =
            client.map_err(|e| format!("cannot set up the Docker client for {host}: {e}"))?;
        Ok(Self {
            base,
            negotiated: Arc::new(OnceCell::new()),
        })
    }

    /// The client, its API version negotiated with the engine on first use.
    pub(super) async fn client(&self) -> EngineResult<&Docker> {
        self.negotiated
            .get_or_try_init(|| async {
                self.base
                    .clone()
                    .negotiate_version()
                    .await
                    .map_err(engine_error)
            })
            .await
    }
}

/// Classifies a bollard error. Status codes are the Docker API's documented ones.
pub(super) fn engine_error(err: BollardError) -> EngineError {
    match err {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } => EngineError::NotFound(message),
        BollardError::DockerResponseServerError {
            status_code: 409,
            message,
        } => EngineError::Conflict(message),
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => EngineError::Other(format!("status {status_code}: {message}")),
        other @ (BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::RequestTimeoutError
        | BollardError::HyperLegacyError { .. }) => EngineError::Unavailable(other.to_string()),
        other => EngineError::Other(other.to_string()),
    }
}

/// Classifies a failed pull. Docker reports registry trouble as a status before the stream
/// starts or as an error message inside it, so the message decides; these are dockerd's own
/// words (distribution errors), stable across versions.
fn pull_error(image: &str, err: BollardError) -> EngineError {
    let message = match &err {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        BollardError::DockerStreamError { error } => error.clone(),
        _ => return engine_error(err),
    };
    let lower = message.to_ascii_lowercase();
    let refused = [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "incorrect username or password",
        "denied: ",
    ];
    let missing = [
        "manifest unknown",
        "not found",
        "name unknown",
        "repository does not exist",
    ];
    let unreachable = [
        "connection refused",
        "no such host",
        "i/o timeout",
        "dial tcp",
        "connection reset",
        "http response to https client",
        "tls: ",
        "timeout exceeded",
    ];
    if missing.iter().any(|m| lower.contains(m)) && !lower.contains("unauthorized") {
        EngineError::ImageMissing(image.to_owned())
    } else if refused.iter().any(|m| lower.contains(m)) {
        EngineError::RegistryRefused(image.to_owned())
    } else if unreachable.iter().any(|m| lower.contains(m)) {
        EngineError::RegistryUnreachable(format!("{image}: {message}"))
    } else if let BollardError::DockerResponseServerError {
        status_code: 404, ..
    } = err
    {
        EngineError::ImageMissing(image.to_owned())
    } else {
        EngineError::Other(format!("pull of {image} failed: {message}"))
    }
}

/// The engine filter that selects what is ours in `deployment` (containers, services,
/// events): labelled as an instance, of this deployment and no other.
pub(super) fn ours_filter(deployment: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![
            LABEL_INSTANCE.to_owned(),
            format!("{LABEL_DEPLOYMENT}={deployment}"),
        ],
    )])
}

/// The network named or numbered `name`, or `None` when there is none.
pub(super) async fn find_network(
    docker: &Docker,
    name: &str,
) -> EngineResult<Option<bollard::models::NetworkInspect>> {
    match docker
        .inspect_network(name, None::<InspectNetworkOptions>)
        .await
    {
        Ok(network) => Ok(Some(network)),
        Err(e) if is_status(&e, 404) => Ok(None),
        Err(e) => Err(engine_error(e)),
    }
}

/// Creates a network; `Ok(false)` when one of that name exists already (another process made it
/// in between: the caller decides whether theirs will do).
pub(super) async fn create_network(
    docker: &Docker,
    request: NetworkCreateRequest,
) -> EngineResult<bool> {
    match docker.create_network(request).await {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 409) => Ok(false),
        Err(e) => Err(engine_error(e)),
    }
}

pub(super) fn is_status(err: &BollardError, code: u16) -> bool {
    matches!(err, BollardError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

pub(super) fn hash_map(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

/// The create request for a spec. Hardening is applied here, unconditionally: never privileged,
/// every capability dropped (only the spec's allow list is added back), no-new-privileges, no
/// restart by the engine (the orchestrator decides what runs), swap limited to the memory limit.
pub fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let port_bindings = match spec.exposure {
        Exposure::LoopbackEphemeral => Some(
            spec.ports
                .iter()
                .map(|&p| {
                    (
                        port_key(p),
                        Some(vec![PortBinding {
                            host_ip: Some("127.0.0.1".into()),
                            // Empty = an ephemeral port the engine picks; read back by inspect.
                            host_port: Some(String::new()),
                        }]),
                    )
                })
                .collect(),
        ),
        Exposure::NetworkOnly => None,
    };
    let mounts: Vec<Mount> = spec
        .mounts
        .iter()
        .map(|m| Mount {
            target: Some(m.target.clone()),
            source: Some(m.volume.clone()),
            typ: Some(MountType::VOLUME),
            read_only: Some(false),
            ..Default::default()
        })
        .collect();
    let tmpfs: HashMap<String, String> = spec
        .tmpfs
        .iter()
        .map(|path| (path.clone(), "rw,nosuid,nodev,size=64m".to_owned()))
        .collect();
    let host_config = HostConfig {
        nano_cpus: Some(spec.nano_cpus),
        memory: Some(spec.memory_bytes),
        memory_swap: Some(spec.memory_bytes),
        pids_limit: Some(spec.pids_limit),
        privileged: Some(false),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(spec.cap_add.clone()),
        security_opt: Some(vec!["no-new-privileges".into()]),
        readonly_rootfs: Some(spec.read_only_root),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        port_bindings,
        mounts: Some(mounts),
        network_mode: Some(spec.network.clone()),
        init: Some(false),
        ..Default::default()
    };
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(env),
        labels: Some(hash_map(&spec.labels)),
        exposed_ports: Some(spec.ports.iter().map(|&p| port_key(p)).collect()),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                spec.network.clone(),
                EndpointSettings::default(),
            )])),
        }),
        ..Default::default()
    }
}

fn state_of_inspect(status: Option<ContainerStateStatusEnum>) -> ContainerState {
    match status {
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::STOPPING) => {
            ContainerState::Exited
        }
        Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
        Some(ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::EMPTY) | None => {
            ContainerState::Created
        }
    }
}

fn state_of_summary(status: Option<ContainerSummaryStateEnum>) -> ContainerState {
    match status {
        Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running,
        Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerSummaryStateEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::STOPPING) => {
            ContainerState::Exited
        }
        Some(ContainerSummaryStateEnum::DEAD) => ContainerState::Dead,
        Some(ContainerSummaryStateEnum::CREATED | ContainerSummaryStateEnum::EMPTY) | None => {
            ContainerState::Created
        }
    }
}

fn addresses(networks: Option<&HashMap<String, EndpointSettings>>) -> BTreeMap<String, IpAddr> {
    networks
        .into_iter()
        .flatten()
        .filter_map(|(name, endpoint)| {
            let ip = endpoint.ip_address.as_deref()?.parse().ok()?;
            Some((name.clone(), ip))
        })
        .collect()
}

fn info_of_inspect(resp: ContainerInspectResponse) -> ContainerInfo {
    let state = resp.state.as_ref();
    let settings = resp.network_settings.as_ref();
    let published = settings
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|(key, bindings)| {
            let port: u16 = key.strip_suffix("/tcp")?.parse().ok()?;
            let host_port = bindings
                .iter()
                .flatten()
                .filter(|b| b.host_ip.as_deref() == Some("127.0.0.1"))
                .find_map(|b| b.host_port.as_deref()?.parse().ok())?;
            Some((port, host_port))
        })
        .collect();
    ContainerInfo {
        id: resp.id.clone().unwrap_or_default(),
        name: resp
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        state: state_of_inspect(state.and_then(|s| s.status)),
        exit_code: state.and_then(|s| s.exit_code),
        labels: resp
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        addresses: addresses(settings.and_then(|s| s.networks.as_ref())),
        published,
    }
}

#[async_trait::async_trait]
impl Engine for DockerEngine {
    async fn info(&self) -> EngineResult<EngineInfo> {
        let info = self.client().await?.info().await.map_err(engine_error)?;
        Ok(EngineInfo {
            cpus: info.ncpu.unwrap_or(0),
            memory_bytes: info.mem_total.unwrap_or(0),
            description: format!(
                "Docker Engine {}",
                info.server_version
                    .as_deref()
                    .unwrap_or("(unknown version)")
            ),
        })
    }

    async fn image_present(&self, image: &str) -> EngineResult<bool> {
        match self.client().await?.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(engine_error(e)),
        }
    }

    fn pull(
        &self,
        image: &str,
        auth: Option<RegistryAuth>,
    ) -> BoxStream<'static, EngineResult<PullProgress>> {
        let this = self.clone();
        let image = with_default_tag(image);
        let credentials = auth.map(|a| DockerCredentials {
            username: Some(a.username),
            password: Some(a.password),
            serveraddress: Some(a.server),
            ..Default::default()
        });
        futures_util::stream::once(async move { this.client().await.cloned() })
            .map(move |client| match client {
                Ok(docker) => {
                    let options = CreateImageOptions {
                        from_image: Some(image.clone()),
                        ..Default::default()
                    };
                    let image = image.clone();
                    docker
                        .create_image(Some(options), None, credentials.clone())
                        .map(move |item| match item {
                            Ok(info) => {
                                let detail = info.progress_detail.unwrap_or_default();
                                Ok(PullProgress {
                                    layer: info.id.filter(|id| !id.is_empty()),
                                    status: info.status.unwrap_or_default(),
                                    current: detail.current,
                                    total: detail.total,
                                })
                            }
                            Err(e) => Err(pull_error(&image, e)),
                        })
                        .boxed()
                }
                Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
            // The first failure ends the pull: nothing after it is meaningful.
            .scan(false, |failed, item| {
                let next = (!*failed).then(|| {
                    *failed = item.is_err();
                    item
                });
                futures_util::future::ready(next)
            })
            .boxed()
    }

    async fn ensure_isolated_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        let docker = self.client().await?;
        let Some(network) = find_network(docker, name).await? else {
            let request = NetworkCreateRequest {
                name: name.to_owned(),
                driver: Some("bridge".into()),
                options: Some(HashMap::from([(ICC_OPTION.to_owned(), "false".to_owned())])),
                labels: Some(hash_map(labels)),
                ..Default::default()
            };
            return if create_network(docker, request).await? {
                Ok(())
            } else {
                // Another process created it in between: check theirs.
                Box::pin(self.ensure_isolated_network(name, labels)).await
            };
        };
        let icc = network
            .options
            .as_ref()
            .and_then(|o| o.get(ICC_OPTION))
            .map(String::as_str);
        if icc == Some("false") {
            Ok(())
        } else {
            Err(EngineError::Conflict(format!(
                "network {name} lets containers reach each other; create it with -o {ICC_OPTION}=false"
            )))
        }
    }

    async fn ensure_private_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        let docker = self.client().await?;
        if find_network(docker, name).await?.is_some() {
            return Ok(());
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([(ICC_OPTION.to_owned(), "true".to_owned())])),
            labels: Some(hash_map(labels)),
            ..Default::default()
        };
        // Made by another process in between: as good as ours.
        create_network(docker, request).await.map(drop)
    }

    async fn connect_network(&self, network: &str, container: &str) -> EngineResult<()> {
        let request = NetworkConnectRequest {
            container: container.to_owned(),
            endpoint_config: None,
        };
        match self.client().await?.connect_network(network, request).await {
            Ok(()) => Ok(()),
            // Docker answers 403 "endpoint ... already exists" for a second attach.
            Err(BollardError::DockerResponseServerError {
                status_code: 403,
                message,
            }) if message.contains("already exists") => Ok(()),
            Err(e) => Err(engine_error(e)),
        }
    }

    async fn disconnect_network(&self, network: &str, container: &str) -> EngineResult<()> {
        let request = NetworkDisconnectRequest {
            container: container.to_owned(),
            force: Some(true),
        };
        match self
            .client()
            .await?
            .disconnect_network(network, request)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            // Not attached (any more): what we wanted.
            Err(BollardError::DockerResponseServerError {
                status_code: 403 | 500,
                message,
            }) if message.contains("is not connected") => Ok(()),
            Err(e) => Err(engine_error(e)),
        }
    }

    async fn remove_network(&self, name: &str) -> EngineResult<()> {
        match self.client().await?.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(engine_error(e)),
        }
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<BTreeMap<String, String>> {
        let docker = self.client().await?;
        let volume = match docker.inspect_volume(name).await {
            Ok(volume) => volume,
            Err(e) if is_status(&e, 404) => docker
                .create_volume(VolumeCreateRequest {
                    name: Some(name.to_owned()),
                    labels: Some(hash_map(labels)),
                    ..Default::default()
                })
                .await
                .map_err(engine_error)?,
            Err(e) => return Err(engine_error(e)),
        };
        Ok(volume.labels.into_iter().collect())
    }

    async fn create(&self, spec: &ContainerSpec) -> EngineResult<String> {
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        match self
            .client()
            .await?
            .create_container(Some(options), create_body(spec))
            .await
        {
            Ok(created) => Ok(created.id),
            Err(e) if is_status(&e, 404) => Err(EngineError::ImageMissing(spec.image.clone())),
            Err(e) => Err(engine_error(e)),
        }
    }

    async fn start(&self, id: &str) -> EngineResult<()> {
        match self
            .client()
            .await?
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            // 304: already running.
            Err(e) if is_status(&e, 304) => Ok(()),
            other => other.map_err(engine_error),
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> EngineResult<()> {
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        match self.client().await?.stop_container(id, Some(options)).await {
            // 304: already stopped.
            Err(e) if is_status(&e, 304) => Ok(()),
            other => other.map_err(engine_error),
        }
    }

    async fn remove(&self, id: &str) -> EngineResult<()> {
        let options = RemoveContainerOptions {
            force: true,
            // Named volumes are never removed with the container: they are user profiles.
            v: false,
            ..Default::default()
        };
        match self
            .client()
            .await?
            .remove_container(id, Some(options))
            .await
        {
            Err(e) if is_status(&e, 404) => Ok(()),
            other => other.map_err(engine_error),
        }
    }

    async fn inspect(&self, id: &str) -> EngineResult<Option<ContainerInfo>> {
        match self
            .client()
            .await?
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(resp) => Ok(Some(info_of_inspect(resp))),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(engine_error(e)),
        }
    }

    async fn list_ours(&self, deployment: &str) -> EngineResult<Vec<ContainerInfo>> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(ours_filter(deployment)),
            ..Default::default()
        };
        let list = self
            .client()
            .await?
            .list_containers(Some(options))
            .await
            .map_err(engine_error)?;
        Ok(list
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_owned(),
                state: state_of_summary(c.state),
                exit_code: None,
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                addresses: addresses(c.network_settings.and_then(|s| s.networks).as_ref()),
                published: c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| p.ip.as_deref() == Some("127.0.0.1"))
                    .filter_map(|p| Some((p.private_port, p.public_port?)))
                    .collect(),
            })
            .collect())
    }

    fn events(&self, deployment: &str) -> BoxStream<'static, EngineResult<EngineEvent>> {
        let this = self.clone();
        let mut filters = ours_filter(deployment);
        filters.insert("type".to_owned(), vec!["container".to_owned()]);
        futures_util::stream::once(async move { this.client().await.cloned() })
            .map(move |client| match client {
                Ok(docker) => {
                    let options = EventsOptions {
                        filters: Some(filters.clone()),
                        ..Default::default()
                    };
                    docker
                        .events(Some(options))
                        .map_err(engine_error)
                        .map_ok(|event| {
                            let actor = event.actor.unwrap_or_default();
                            EngineEvent {
                                id: actor.id.unwrap_or_default(),
                                action: event.action.unwrap_or_default(),
                                labels: actor.attributes.unwrap_or_default().into_iter().collect(),
                            }
                        })
                        .boxed()
                }
                Err(e) => futures_util::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
            .boxed()
    }

    async fn stats(&self, id: &str) -> EngineResult<ContainerStats> {
        let options = StatsOptions {
            stream: false,
            one_shot: false,
        };
        let mut samples = self.client().await?.stats(id, Some(options));
        let sample = samples
            .next()
            .await
            .ok_or_else(|| EngineError::Other("no stats sample".into()))?
            .map_err(engine_error)?;
        let cpu = sample.cpu_stats.as_ref();
        let pre = sample.precpu_stats.as_ref();
        let total = |s: Option<&bollard::models::ContainerCpuStats>| {
            s.and_then(|s| s.cpu_usage.as_ref())
                .and_then(|u| u.total_usage)
                .unwrap_or(0)
        };
        let system = |s: Option<&bollard::models::ContainerCpuStats>| {
            s.and_then(|s| s.system_cpu_usage).unwrap_or(0)
        };
        let cpu_delta = total(cpu).saturating_sub(total(pre)) as f64;
        let system_delta = system(cpu).saturating_sub(system(pre)) as f64;
        let cpus = f64::from(cpu.and_then(|c| c.online_cpus).unwrap_or(1));
        let cpu_percent = if system_delta > 0.0 {
            cpu_delta / system_delta * cpus * 100.0
        } else {
            0.0
        };
        let memory = sample.memory_stats.as_ref();
        Ok(ContainerStats {
            cpu_percent,
            memory_bytes: memory.and_then(|m| m.usage).unwrap_or(0),
            memory_limit_bytes: memory.and_then(|m| m.limit).unwrap_or(0),
        })
    }

    async fn output_tail(&self, id: &str, lines: usize) -> EngineResult<String> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        };
        let mut chunks = self.client().await?.logs(id, Some(options));
        let mut output = Vec::new();
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(chunk) => output.extend_from_slice(&chunk.into_bytes()),
                Err(e) if is_status(&e, 404) => return Ok(String::new()),
                Err(e) => return Err(engine_error(e)),
            }
            if output.len() > OUTPUT_TAIL_MAX {
                // The end is what explains the exit.
                output.drain(..output.len() - OUTPUT_TAIL_MAX);
            }
        }
        Ok(String::from_utf8_lossy(&output).into_owned())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::orchestrator::engine::VolumeMount;

    fn spec(exposure: Exposure) -> ContainerSpec {
        ContainerSpec {
            name: "flowcase-x".into(),
            image: "img:1".into(),
            env: BTreeMap::from([("A".into(), "1".into())]),
            labels: BTreeMap::from([(LABEL_INSTANCE.into(), "x".into())]),
            nano_cpus: 500_000_000,
            memory_bytes: 64 << 20,
            pids_limit: 100,
            cap_add: vec!["CHOWN".into()],
            read_only_root: true,
            tmpfs: vec!["/tmp".into()],
            network: "net".into(),
            ports: vec![8080],
            exposure,
            mounts: vec![VolumeMount {
                volume: "vol".into(),
                target: "/home".into(),
                labels: crate::orchestrator::spec::profile_labels(1, 2, "inst"),
            }],
        }
    }

    #[test]
    fn hardening_is_always_applied() {
        let body = create_body(&spec(Exposure::LoopbackEphemeral));
        let hc = body.host_config.unwrap();
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(hc.cap_add, Some(vec!["CHOWN".to_owned()]));
        assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_owned()]));
        assert_eq!(hc.memory_swap, hc.memory);
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.pids_limit, Some(100));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert!(
            hc.restart_policy.is_none(),
            "the engine never restarts instances"
        );
        let bindings = hc.port_bindings.unwrap();
        let binding = &bindings["8080/tcp"].as_ref().unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some(""));
        assert_eq!(body.env, Some(vec!["A=1".to_owned()]));
    }

    #[test]
    fn network_only_publishes_nothing() {
        let body = create_body(&spec(Exposure::NetworkOnly));
        assert!(body.host_config.unwrap().port_bindings.is_none());
        assert_eq!(body.exposed_ports, Some(vec!["8080/tcp".to_owned()]));
    }
}
