//! Instances: one user's running (or starting, or stopped) copy of a droplet.
//!
//! Owns the `instances` table. The slug is the unguessable public name used in URLs; the numeric
//! id stays internal. Status transitions are recorded here but decided by the orchestrator.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::codec::{get_enum, text_enum};
use super::{Store, expect_one};
use crate::error::Result;

text_enum! {
    /// Lifecycle of an instance.
    pub enum InstanceStatus {
        /// Asked for; nothing created yet.
        Requested = "requested",
        /// The container is being created.
        Creating = "creating",
        /// The container exists and is booting.
        Starting = "starting",
        /// Reachable.
        Running = "running",
        /// Being stopped.
        Stopping = "stopping",
        /// Stopped; can be started again.
        Stopped = "stopped",
        /// Being removed.
        Destroying = "destroying",
        /// Removed (or found missing by reconciliation); kept for history.
        Gone = "gone",
        /// Failed; `error_reason` says why.
        Error = "error",
    }
}

impl InstanceStatus {
    /// Whether the instance has ended (it is no longer running and is not on its way).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Gone | Self::Error)
    }
}

macro_rules! columns {
    () => {
        "id, slug, droplet_id, user_id, status, error_reason, container_id, container_name, \
         upstream, created_at, started_at, stopped_at, last_activity_at"
    };
}

/// One user's copy of a droplet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// Internal primary key.
    pub id: i64,
    /// Unique, unguessable public identifier.
    pub slug: String,
    /// The droplet it runs.
    pub droplet_id: i64,
    /// Its owner, the only user allowed to reach it.
    pub user_id: i64,
    /// Current lifecycle state.
    pub status: InstanceStatus,
    /// Why the last transition happened, for errors and forced stops.
    pub error_reason: Option<String>,
    /// Docker container id.
    pub container_id: Option<String>,
    /// Docker container name.
    pub container_name: Option<String>,
    /// Where the gateway forwards traffic (host:port on the instance network).
    pub upstream: Option<String>,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// When it last became `running`.
    pub started_at: Option<i64>,
    /// When it last ended (`stopped`, `gone` or `error`).
    pub stopped_at: Option<i64>,
    /// Last user activity seen by the gateway, for idle shutdown.
    pub last_activity_at: Option<i64>,
}

impl Instance {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            slug: row.try_get("slug")?,
            droplet_id: row.try_get("droplet_id")?,
            user_id: row.try_get("user_id")?,
            status: get_enum(row, "status")?,
            error_reason: row.try_get("error_reason")?,
            container_id: row.try_get("container_id")?,
            container_name: row.try_get("container_name")?,
            upstream: row.try_get("upstream")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            stopped_at: row.try_get("stopped_at")?,
            last_activity_at: row.try_get("last_activity_at")?,
        })
    }
}

/// Input for [`Store::create_instance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstance {
    /// Unique, unguessable public identifier.
    pub slug: String,
    /// The droplet to run.
    pub droplet_id: i64,
    /// The owner.
    pub user_id: i64,
    /// Initial state, normally [`InstanceStatus::Requested`].
    pub status: InstanceStatus,
}

impl Store {
    /// Records a new instance. A taken slug is a `Conflict`.
    pub async fn create_instance(&self, new: &NewInstance, now: i64) -> Result<Instance> {
        let row = sqlx::query(concat!(
            "INSERT INTO instances (slug, droplet_id, user_id, status, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING ",
            columns!()
        ))
        .bind(new.slug.as_str())
        .bind(new.droplet_id)
        .bind(new.user_id)
        .bind(new.status.as_str())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Instance::from_row(&row)
    }

    /// The instance with this internal id.
    pub async fn get_instance(&self, id: i64) -> Result<Option<Instance>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM instances WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Instance::from_row).transpose()
    }

    /// The instance with this public slug.
    pub async fn get_instance_by_slug(&self, slug: &str) -> Result<Option<Instance>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM instances WHERE slug = $1"
        ))
        .bind(slug)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Instance::from_row).transpose()
    }

    /// A user's instances, newest first.
    pub async fn list_instances_for_user(&self, user_id: i64) -> Result<Vec<Instance>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM instances WHERE user_id = $1 ORDER BY created_at DESC, id DESC"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Instance::from_row).collect()
    }

    /// Every instance in a given state, oldest first (for reconciliation and idle sweeps).
    pub async fn list_instances_by_status(&self, status: InstanceStatus) -> Result<Vec<Instance>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM instances WHERE status = $1 ORDER BY created_at, id"
        ))
        .bind(status.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Instance::from_row).collect()
    }

    /// Moves an instance to `status` at time `now`, replacing `error_reason` with `reason`.
    /// Becoming `running` sets `started_at` and clears `stopped_at`; ending (`stopped`, `gone`,
    /// `error`) sets `stopped_at`; other states leave both alone.
    pub async fn set_instance_status(
        &self,
        id: i64,
        status: InstanceStatus,
        reason: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let started = (status == InstanceStatus::Running).then_some(now);
        let stopped = status.is_terminal().then_some(now);
        let result = sqlx::query(
            "UPDATE instances SET status = $2, error_reason = $3, \
             started_at = COALESCE($4, started_at), \
             stopped_at = CASE WHEN $4 IS NOT NULL THEN NULL ELSE COALESCE($5, stopped_at) END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(reason)
        .bind(started)
        .bind(stopped)
        .execute(&self.pool)
        .await?;
        expect_one(result, "instance")
    }

    /// Records where the instance's container lives once the orchestrator created it.
    pub async fn set_instance_container(
        &self,
        id: i64,
        container_id: Option<&str>,
        container_name: Option<&str>,
        upstream: Option<&str>,
    ) -> Result<()> {
        let result = sqlx::query(
            "UPDATE instances SET container_id = $2, container_name = $3, upstream = $4 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(container_id)
        .bind(container_name)
        .bind(upstream)
        .execute(&self.pool)
        .await?;
        expect_one(result, "instance")
    }

    /// Notes user activity, which postpones idle shutdown.
    pub async fn touch_instance(&self, id: i64, now: i64) -> Result<()> {
        let result = sqlx::query("UPDATE instances SET last_activity_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        expect_one(result, "instance")
    }

    /// Deletes an instance row (its container must already be gone).
    pub async fn delete_instance(&self, id: i64) -> Result<()> {
        let result = sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        expect_one(result, "instance")
    }
}
