//! An orchestrator of the test's own over a running gateway's database and deployment, for
//! tests that launch, stop or reconcile instances without going through the API: it drives
//! the local dockerd (plain or Swarm) with the gateway's keyring, so the gateway treats what it
//! makes as its own.

use std::sync::Arc;

use flowcase_admin::orchestrator::docker::DockerEngine;
use flowcase_admin::orchestrator::swarm::SwarmEngine;
use flowcase_admin::orchestrator::{Engine, Options, Orchestrator, SystemClock};
use flowcase_admin::secrets::ensure_key_file;
use flowcase_admin::store::Store;
use flowcase_config::SwarmImageReference;

use crate::GatewayDir;

const DOCKER_SOCKET: &str = "unix:///var/run/docker.sock";

/// The default options, in the deployment of the gateway of `dir`.
pub fn orchestrator_options(dir: &GatewayDir) -> Options {
    Options {
        deployment: dir.deployment().to_owned(),
        ..Options::from_config(&flowcase_config::Config::default())
    }
}

/// An orchestrator over `store` on the local dockerd, sealing with the keyring of the gateway
/// of `dir`.
pub fn docker_orchestrator(dir: &GatewayDir, store: &Store, options: Options) -> Orchestrator {
    with_engine(
        dir,
        store,
        Arc::new(DockerEngine::connect(DOCKER_SOCKET).unwrap()),
        options,
    )
}

/// [`docker_orchestrator`], on the local dockerd's Swarm (images by local id).
pub fn swarm_orchestrator(dir: &GatewayDir, store: &Store, options: Options) -> Orchestrator {
    with_engine(
        dir,
        store,
        Arc::new(SwarmEngine::connect(DOCKER_SOCKET, SwarmImageReference::LocalId).unwrap()),
        options,
    )
}

fn with_engine(
    dir: &GatewayDir,
    store: &Store,
    engine: Arc<dyn Engine>,
    options: Options,
) -> Orchestrator {
    Orchestrator::new(
        store.clone(),
        engine,
        ensure_key_file(&dir.data_dir().join("secret.key")).unwrap(),
        Arc::new(SystemClock),
        options,
    )
}
