//! The control plane inside the gateway process: the admin crate's web app served on a private
//! Unix socket that the front door proxies to, and the prober that keeps the health snapshot
//! fresh. It runs as a pingora background service so its database pool and Docker client live
//! on a pingora runtime.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowcase_admin::Store;
use flowcase_config::{Backend, Config};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use flowcase_admin::orchestrator::activity::ActivityReporter;
use flowcase_admin::orchestrator::docker::DockerEngine;
use flowcase_admin::orchestrator::metered::Metered;
use flowcase_admin::orchestrator::swarm::SwarmEngine;
use flowcase_admin::orchestrator::{Engine, Options, Orchestrator, SystemClock};
use flowcase_admin::secrets::Keyring;

use crate::health::{Check, HealthState};
use crate::snapshot::Snapshot;
use crate::wake::WakeRequests;

const PROBE_INTERVAL: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the app keeps answering after a stop or upgrade signal; below pingora's graceful
/// shutdown timeout (`serve::server_conf`).
const DRAIN: Duration = Duration::from_secs(3);

/// A directory only this process can enter, holding the control-plane socket; removed on exit.
/// It lives under the system temp dir because socket paths are limited to 108 bytes.
#[derive(Debug)]
pub struct RuntimeDir(PathBuf);

impl RuntimeDir {
    pub fn create() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("flowcase-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Self(dir))
    }

    pub fn control_socket(&self) -> PathBuf {
        self.0.join("control.sock")
    }

    /// Where the desktop tunnels listen (see [`crate::tunnel::server`]).
    pub fn tunnel_socket(&self) -> PathBuf {
        self.0.join("tunnel.sock")
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct ControlPlane {
    config: Arc<Config>,
    runtime_dir: RuntimeDir,
    health: Arc<HealthState>,
    snapshot: Arc<Snapshot>,
    keyring: Keyring,
    wake_requests: std::sync::Mutex<Option<WakeRequests>>,
    activity: Activity,
    /// The desktop tunnels wake sleeping instances too.
    waker: crate::wake::Waker,
    /// Where the front door claims redeemed instance-host codes; connected to the store
    /// once the control plane has one.
    code_claims: crate::app_host::CodeClaims,
    tunnel_door: crate::tunnel::front::TunnelDoor,
}

/// Where the front door reports instance activity; filled once the orchestrator exists (it is
/// built on the control plane's runtime, after the front door).
pub type Activity = Arc<std::sync::OnceLock<ActivityReporter>>;

impl ControlPlane {
    pub fn new(
        config: Arc<Config>,
        runtime_dir: RuntimeDir,
        health: Arc<HealthState>,
        snapshot: Arc<Snapshot>,
        keyring: Keyring,
        (waker, wake_requests): (crate::wake::Waker, WakeRequests),
        activity: Activity,
    ) -> Self {
        Self {
            config,
            runtime_dir,
            health,
            snapshot,
            keyring,
            wake_requests: std::sync::Mutex::new(Some(wake_requests)),
            activity,
            waker,
            code_claims: crate::app_host::CodeClaims::default(),
            tunnel_door: crate::tunnel::front::TunnelDoor::default(),
        }
    }

    /// Where the TLS front finds the tunnel server, filled once it exists.
    pub fn with_tunnel_door(mut self, door: crate::tunnel::front::TunnelDoor) -> Self {
        self.tunnel_door = door;
        self
    }

    /// Where the front door claims redeemed instance-host codes; connected to the store once
    /// the control plane has one.
    pub fn with_code_claims(mut self, code_claims: crate::app_host::CodeClaims) -> Self {
        self.code_claims = code_claims;
        self
    }

    /// The orchestrator over the configured Docker engine, or why its client cannot be set up.
    /// Docker being down is not fatal: instances cannot start until it comes back, everything
    /// else works.
    fn orchestrator(&self, store: &Store) -> Result<Arc<Orchestrator>, String> {
        let docker = &self.config.docker;
        let engine: Arc<dyn Engine> = match docker.backend {
            Backend::Engine => Arc::new(DockerEngine::connect(&docker.host)?),
            Backend::Swarm => Arc::new(SwarmEngine::connect(
                &docker.host,
                docker.swarm.image_reference,
            )?),
        };
        Ok(Arc::new(Orchestrator::new(
            store.clone(),
            Arc::new(Metered(engine)),
            self.keyring.clone(),
            Arc::new(SystemClock),
            Options::from_config(&self.config),
        )))
    }

    async fn connect_store(&self, shutdown: &mut ShutdownWatch) -> Option<Store> {
        loop {
            match Store::open(&self.config).await {
                Ok(store) => return Some(store),
                Err(e) => {
                    self.health
                        .database
                        .store(Arc::new(Check::failed(e.to_string())));
                    tracing::error!(error = %e, "cannot open the database; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for ControlPlane {
    /// Ready once the app listens on its socket: the front door depends on it, so during a
    /// zero-downtime upgrade the new process accepts no request it could not yet answer.
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready: pingora::services::ServiceReadyNotifier,
    ) {
        self.run(shutdown, Some(ready)).await;
    }
}

impl ControlPlane {
    async fn run(
        &self,
        mut shutdown: ShutdownWatch,
        mut ready: Option<pingora::services::ServiceReadyNotifier>,
    ) {
        let Some(store) = self.connect_store(&mut shutdown).await else {
            return;
        };
        let orchestrator = self.orchestrator(&store);
        if let Err(e) = &orchestrator {
            tracing::error!(error = %e, "cannot set up the Docker engine client");
        }
        tokio::spawn(probe(
            store.clone(),
            orchestrator.clone(),
            self.health.clone(),
        ));
        self.code_claims.connect(store.clone());
        tokio::spawn(crate::snapshot::refresh_forever(
            store.clone(),
            self.snapshot.clone(),
        ));
        flowcase_admin::metrics::spawn_collector(
            store.clone(),
            self.config.database.max_connections,
            orchestrator.clone().ok(),
        );
        // The engine may be slow or down: pages and logins must not wait for it.
        let requests = self.wake_requests.lock().ok().and_then(|mut w| w.take());
        if let Ok(orchestrator) = orchestrator.clone() {
            let activity = self.activity.clone();
            tokio::spawn(async move {
                if let Err(e) = orchestrator.prepare().await {
                    tracing::warn!(error = %e, "the Docker engine is not ready; instances start once it is");
                }
                // Reconciler, Docker event watcher (which keeps the engine health `/readyz`
                // reports), idle reaper, pool filler, activity flusher.
                orchestrator.spawn_background();
                let _ = activity.set(orchestrator.activity().clone());
                if let Some(requests) = requests {
                    crate::wake::serve(orchestrator, requests).await;
                }
            });
        }

        // Desktop tunnels: on this runtime, next to the store they check tokens against. The
        // TLS front hands most of them over directly; the socket serves the proxy's route.
        let tunnels = Arc::new(crate::tunnel::server::Tunnels {
            config: self.config.clone(),
            store: store.clone(),
            keyring: self.keyring.clone(),
            snapshot: self.snapshot.clone(),
            activity: self.activity.clone(),
            waker: self.waker.clone(),
            used: Default::default(),
            connections: Default::default(),
        });
        let _ = self.tunnel_door.set(tunnels.clone());
        let tunnel_socket = self.runtime_dir.tunnel_socket();
        match crate::tunnel::server::bind(&tunnel_socket) {
            Ok(listener) => {
                tokio::spawn(crate::tunnel::server::serve(listener, tunnels));
            }
            Err(e) => {
                tracing::error!(error = %e, path = %tunnel_socket.display(), "cannot listen on the tunnel socket; desktops are reachable only directly");
            }
        }

        let socket = self.runtime_dir.control_socket();
        let listener = match bind(&socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, path = %socket.display(), "cannot listen on the control-plane socket");
                return;
            }
        };
        let state = match flowcase_admin::web::AppState::new(
            self.config.clone(),
            store.clone(),
            orchestrator,
        ) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the control plane");
                return;
            }
        };
        let app = flowcase_admin::web::router(state);
        if let Some(ready) = ready.take() {
            ready.notify_ready();
        }
        // The front door stops accepting at the same signal but still finishes the requests it
        // holds (an upgrade hands the listeners over first): keep answering them a while.
        let stop = async move {
            let _ = shutdown.changed().await;
            tokio::time::sleep(DRAIN).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "control plane stopped");
        }
        store.close().await;
    }
}

fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    tokio::net::UnixListener::bind(path)
}

/// Keeps the health snapshot fresh so `/readyz` never waits on the database or Docker. The
/// Docker check is the orchestrator's own view of its engine (kept by its event watcher), so
/// `/readyz` reports the engine instances actually run on, not a second client's opinion.
async fn probe(
    store: Store,
    orchestrator: Result<Arc<Orchestrator>, String>,
    health: Arc<HealthState>,
) {
    let backend = store.backend().as_str().to_owned();
    loop {
        let db = match tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => Check::ok(backend.clone()),
            Ok(Err(e)) => Check::failed(e.to_string()),
            Err(_) => Check::failed("no answer within 2 s".into()),
        };
        health.database.store(Arc::new(db));
        let docker_check = match &orchestrator {
            Err(e) => Check::failed(e.clone()),
            Ok(orchestrator) => {
                let engine = orchestrator.engine_health();
                if engine.up {
                    Check::ok(engine.message)
                } else {
                    Check::failed(engine.message)
                }
            }
        };
        flowcase_admin::metrics::docker_up(docker_check.ok == Some(true));
        health.docker.store(Arc::new(docker_check));
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}
