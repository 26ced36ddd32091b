//! An [`Engine`] wrapper that counts failed engine calls by operation for
//! `flowcase_docker_api_errors_total`, so every backend is measured the same way without each
//! implementation remembering to. Answers that are part of normal operation (a container that is
//! already gone, a name taken, an image not present, a registry refusing or lacking a pulled
//! image) are not API errors and are not counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::engine::{
    ContainerInfo, ContainerSpec, ContainerStats, Engine, EngineError, EngineEvent, EngineInfo,
    EngineResult, PullProgress, RegistryAuth,
};

/// The `operation` label values, one per engine method.
pub const OPERATIONS: &[&str] = &[
    "info",
    "image_present",
    "pull",
    "ensure_network",
    "remove_network",
    "connect_network",
    "disconnect_network",
    "ensure_volume",
    "create",
    "start",
    "stop",
    "remove",
    "inspect",
    "list",
    "events",
    "stats",
    "logs",
];

/// Counts the failures of the engine it wraps.
pub struct Metered(pub Arc<dyn Engine>);

fn counted<T>(operation: &'static str, result: EngineResult<T>) -> EngineResult<T> {
    if let Err(EngineError::Unavailable(_) | EngineError::Other(_)) = &result {
        crate::metrics::docker_error(operation);
    }
    result
}

#[async_trait::async_trait]
impl Engine for Metered {
    fn runs_sidecars(&self) -> bool {
        self.0.runs_sidecars()
    }

    async fn info(&self) -> EngineResult<EngineInfo> {
        counted("info", self.0.info().await)
    }

    async fn image_present(&self, image: &str) -> EngineResult<bool> {
        counted("image_present", self.0.image_present(image).await)
    }

    fn pull(
        &self,
        image: &str,
        auth: Option<RegistryAuth>,
    ) -> BoxStream<'static, EngineResult<PullProgress>> {
        self.0
            .pull(image, auth)
            .map(|progress| counted("pull", progress))
            .boxed()
    }

    async fn ensure_isolated_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        counted(
            "ensure_network",
            self.0.ensure_isolated_network(name, labels).await,
        )
    }

    async fn ensure_private_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        counted(
            "ensure_network",
            self.0.ensure_private_network(name, labels).await,
        )
    }

    async fn remove_network(&self, name: &str) -> EngineResult<()> {
        counted("remove_network", self.0.remove_network(name).await)
    }

    async fn connect_network(&self, network: &str, container: &str) -> EngineResult<()> {
        counted(
            "connect_network",
            self.0.connect_network(network, container).await,
        )
    }

    async fn disconnect_network(&self, network: &str, container: &str) -> EngineResult<()> {
        counted(
            "disconnect_network",
            self.0.disconnect_network(network, container).await,
        )
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<BTreeMap<String, String>> {
        counted("ensure_volume", self.0.ensure_volume(name, labels).await)
    }

    async fn create(&self, spec: &ContainerSpec) -> EngineResult<String> {
        counted("create", self.0.create(spec).await)
    }

    async fn start(&self, id: &str) -> EngineResult<()> {
        counted("start", self.0.start(id).await)
    }

    async fn stop(&self, id: &str, grace: Duration) -> EngineResult<()> {
        counted("stop", self.0.stop(id, grace).await)
    }

    async fn remove(&self, id: &str) -> EngineResult<()> {
        counted("remove", self.0.remove(id).await)
    }

    async fn inspect(&self, id: &str) -> EngineResult<Option<ContainerInfo>> {
        counted("inspect", self.0.inspect(id).await)
    }

    async fn list_ours(&self, deployment: &str) -> EngineResult<Vec<ContainerInfo>> {
        counted("list", self.0.list_ours(deployment).await)
    }

    fn events(&self, deployment: &str) -> BoxStream<'static, EngineResult<EngineEvent>> {
        self.0
            .events(deployment)
            .map(|event| counted("events", event))
            .boxed()
    }

    async fn stats(&self, id: &str) -> EngineResult<ContainerStats> {
        counted("stats", self.0.stats(id).await)
    }

    async fn output_tail(&self, id: &str, lines: usize) -> EngineResult<String> {
        counted("logs", self.0.output_tail(id, lines).await)
    }
}
