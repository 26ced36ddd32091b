//! Usage figures for the API and metrics: CPU and memory per instance, and host totals.
//!
//! The metrics exporter calls one function, [`Orchestrator::usage`]: host totals and every
//! running instance's figures from a single sample per container.
//!
//! One engine sample per container (Docker takes about a second to give a CPU figure, since it
//! compares two readings); host totals sample every running container of the deployment at
//! once, each bounded, and add up what answered. Capacity and allocation come from the engine's
//! size and the database, like the admission check, so the figures agree with what launches
//! are told.

use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;

use super::Orchestrator;
use super::engine::{ContainerState, EngineError, LABEL_INSTANCE};
use super::lifecycle::engine_err;
use crate::error::{AdminError, Result};
use crate::store::InstanceStatus;

/// Bound of one container's sample.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

/// One instance's usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceStats {
    /// The instance.
    pub instance_id: i64,
    /// CPU in percent of one CPU (200 = two CPUs busy).
    pub cpu_percent: f64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes.
    pub memory_limit_bytes: u64,
}

/// The engine's size and what instances hold of it: cheap (no per-container sample), for the
/// metrics collector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    /// Logical CPUs of the engine.
    pub cpus: i64,
    /// Memory of the engine, bytes.
    pub memory_bytes: i64,
    /// CPU limits of running (and starting) instances and started pool containers, millicores.
    pub allocated_cpu_millicores: i64,
    /// Memory limits of the same, MiB.
    pub allocated_memory_mb: i64,
}

/// One running instance's usage, with what a metric is labelled by.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceUsage {
    /// The instance.
    pub instance_id: i64,
    /// Its slug (its host name's first label).
    pub slug: String,
    /// Its droplet.
    pub droplet_id: i64,
    /// Its owner.
    pub user_id: i64,
    /// CPU in percent of one CPU (200 = two CPUs busy).
    pub cpu_percent: f64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes.
    pub memory_limit_bytes: u64,
}

/// Everything the metrics exporter needs, from one pass over the engine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    /// Host totals.
    pub host: HostStats,
    /// Running instances whose sample arrived in time, by instance id.
    pub instances: Vec<InstanceUsage>,
}

/// The host as the orchestrator sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostStats {
    /// Logical CPUs of the engine.
    pub cpus: i64,
    /// Memory of the engine, bytes.
    pub memory_bytes: i64,
    /// CPU limits of running (and starting) instances and started pool containers, millicores.
    pub allocated_cpu_millicores: i64,
    /// Memory limits of the same, MiB.
    pub allocated_memory_mb: i64,
    /// Running containers of this deployment (instances and started pool containers).
    pub running_containers: usize,
    /// Of those, pool containers.
    pub pooled_containers: usize,
    /// CPU in use by those containers, percent of one CPU.
    pub used_cpu_percent: f64,
    /// Memory in use by those containers, bytes.
    pub used_memory_bytes: u64,
    /// Containers whose sample did not arrive in time (not counted in the use figures).
    pub unsampled: usize,
}

impl Orchestrator {
    /// CPU and memory of a running instance; `None` when it is not running (or its container
    /// vanished between the look at the row and the sample).
    pub async fn instance_stats(&self, instance_id: i64) -> Result<Option<InstanceStats>> {
        let instance = self.reload(instance_id).await?;
        let Some(container_id) = instance.container_id.as_deref() else {
            return Ok(None);
        };
        if instance.status != InstanceStatus::Running {
            return Ok(None);
        }
        let sample = tokio::time::timeout(SAMPLE_TIMEOUT, self.engine.stats(container_id))
            .await
            .map_err(|_| AdminError::Engine("no usage sample in time".into()))?;
        match sample {
            Ok(s) => Ok(Some(InstanceStats {
                instance_id,
                cpu_percent: s.cpu_percent,
                memory_bytes: s.memory_bytes,
                memory_limit_bytes: s.memory_limit_bytes,
            })),
            Err(EngineError::NotFound(_)) => Ok(None),
            Err(e) => Err(engine_err(e)),
        }
    }

    /// Engine size and what is allocated of it, without sampling containers.
    pub async fn capacity(&self) -> Result<Capacity> {
        let limits = self.limits().await?;
        let allocated = self.store.allocated_resources(&limits).await?;
        let info = self.engine.info().await.map_err(engine_err)?;
        Ok(Capacity {
            cpus: info.cpus,
            memory_bytes: info.memory_bytes,
            allocated_cpu_millicores: allocated.cpu_millicores,
            allocated_memory_mb: allocated.memory_mb,
        })
    }

    /// Engine size, what is allocated, and what the deployment's running containers use now.
    pub async fn host_stats(&self) -> Result<HostStats> {
        Ok(self.sample().await?.0)
    }

    /// Host totals and every running instance's CPU and memory, each container sampled once
    /// (concurrently, each bounded): the one call behind the metrics. Pool containers count in
    /// the host totals only; external hosts have no container and no figures.
    pub async fn usage(&self) -> Result<Usage> {
        let (host, samples) = self.sample().await?;
        let mut instances = Vec::new();
        for row in self.store.list_live_instances().await? {
            if row.status != InstanceStatus::Running {
                continue;
            }
            let Some(s) = samples.get(&row.slug) else {
                continue;
            };
            instances.push(InstanceUsage {
                instance_id: row.id,
                slug: row.slug.clone(),
                droplet_id: row.droplet_id,
                user_id: row.user_id,
                cpu_percent: s.cpu_percent,
                memory_bytes: s.memory_bytes,
                memory_limit_bytes: s.memory_limit_bytes,
            });
        }
        instances.sort_by_key(|i| i.instance_id);
        Ok(Usage { host, instances })
    }

    /// Host totals and the samples that arrived, by instance slug.
    async fn sample(
        &self,
    ) -> Result<(
        HostStats,
        std::collections::HashMap<String, super::engine::ContainerStats>,
    )> {
        let limits = self.limits().await?;
        let allocated = self.store.allocated_resources(&limits).await?;
        let info = self.engine.info().await.map_err(engine_err)?;
        let running: Vec<_> = self
            .engine
            .list_ours(&self.options.deployment)
            .await
            .map_err(engine_err)?
            .into_iter()
            .filter(|c| c.state == ContainerState::Running)
            .collect();
        // Handed-out pool containers keep their pool label; the pool table says which are not.
        let pooled: std::collections::HashSet<String> = self
            .store
            .list_pool_containers()
            .await?
            .into_iter()
            .map(|p| p.slug)
            .collect();
        let samples = join_all(running.iter().map(|c| async move {
            tokio::time::timeout(SAMPLE_TIMEOUT, self.engine.stats(&c.id)).await
        }))
        .await;
        let mut by_slug = std::collections::HashMap::new();
        let mut stats = HostStats {
            cpus: info.cpus,
            memory_bytes: info.memory_bytes,
            allocated_cpu_millicores: allocated.cpu_millicores,
            allocated_memory_mb: allocated.memory_mb,
            running_containers: running.len(),
            pooled_containers: running
                .iter()
                .filter(|c| {
                    c.labels
                        .get(LABEL_INSTANCE)
                        .is_some_and(|slug| pooled.contains(slug))
                })
                .count(),
            used_cpu_percent: 0.0,
            used_memory_bytes: 0,
            unsampled: 0,
        };
        for (container, sample) in running.iter().zip(samples) {
            match sample {
                Ok(Ok(s)) => {
                    stats.used_cpu_percent += s.cpu_percent;
                    stats.used_memory_bytes += s.memory_bytes;
                    // A guacd sidecar counts for the host, not as its instance's sample.
                    if let Some(slug) = container.labels.get(LABEL_INSTANCE)
                        && !super::engine::is_sidecar(&container.labels)
                    {
                        by_slug.insert(slug.clone(), s);
                    }
                }
                _ => stats.unsampled += 1,
            }
        }
        Ok((stats, by_slug))
    }
}
