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
         upstream, created_at, started_at, stopped_at, last_activity_at, credentials, guacd"
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
    /// The desktop password of the instance, sealed (purpose `instance-credentials`); never
    /// serialized.
    #[serde(skip)]
    pub credentials: Option<String>,
    /// Where the instance's guacd sidecar listens (`host:port`), while it runs; `None` = the
    /// shared guacd.
    #[serde(skip)]
    pub guacd: Option<String>,
}

impl Instance {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self> {
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
            credentials: row.try_get("credentials")?,
            guacd: row.try_get("guacd")?,
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

    /// Records where the instance's guacd sidecar listens (`None`: it has none, or it was
    /// removed).
    pub async fn set_instance_guacd(&self, id: i64, guacd: Option<&str>) -> Result<()> {
        let result = sqlx::query("UPDATE instances SET guacd = $2 WHERE id = $1")
            .bind(id)
            .bind(guacd)
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

    /// Notes the activity the gateway saw since the last batch: one `(instance id, unix ms)` per
    /// instance, in one transaction. Times only move forward (two gateway processes may report
    /// out of order); ids without a row are skipped. Returns how many rows moved.
    pub async fn touch_instances(&self, seen: &[(i64, i64)]) -> Result<u64> {
        if seen.is_empty() {
            return Ok(0);
        }
        // Immediate on SQLite: it writes anyway, and waiting for the lock up front is what
        // the busy timeout covers.
        let mut tx = self.begin_write().await?;
        let mut moved = 0;
        for &(id, at) in seen {
            let result = sqlx::query(
                "UPDATE instances SET last_activity_at = $2 \
                 WHERE id = $1 AND (last_activity_at IS NULL OR last_activity_at < $2)",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            moved += result.rows_affected();
        }
        tx.commit().await?;
        Ok(moved)
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

// ---------------------------------------------------------------------------------------------
// Orchestrator support: admission under quotas, compare-and-set transitions, start claims.
// ---------------------------------------------------------------------------------------------

/// Statuses that count against the per-user and total instance quotas: everything that holds
/// (or is about to hold) a container. `error` rows have had their container removed or stopped.
const QUOTA_STATUSES: &str = "('requested', 'creating', 'starting', 'running', 'stopping', \
                              'stopped', 'destroying')";

/// Key of the PostgreSQL advisory lock that serialises admissions and start claims across
/// gateway processes. SQLite needs none: `BEGIN IMMEDIATE` already serialises writers.
const ADMISSION_LOCK_KEY: i64 = 0x666c_6f77_6361_7365; // "flowcase"

/// Limits checked by [`Store::admit_instance`] and [`Store::claim_instance_start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Instances one user may hold (any status but `gone`/`error`).
    pub max_per_user: i64,
    /// Instances all users together may hold.
    pub max_total: i64,
    /// CPU the engine offers, in millicores.
    pub cpu_capacity_millicores: i64,
    /// Memory the engine offers, in MiB.
    pub memory_capacity_mb: i64,
    /// CPU charged for a droplet without a CPU limit.
    pub default_cpu_millicores: i64,
    /// Memory charged for a droplet without a memory limit.
    pub default_memory_mb: i64,
}

/// Resources held by instances that run or are about to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allocation {
    /// CPU limits summed, in millicores.
    pub cpu_millicores: i64,
    /// Memory limits summed, in MiB.
    pub memory_mb: i64,
}

/// Why an admission or a start claim was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The user already holds `limit` instances.
    UserQuota {
        /// The per-user limit.
        limit: i64,
    },
    /// All users together hold `limit` instances.
    TotalQuota {
        /// The total limit.
        limit: i64,
    },
    /// The members of one of the user's groups together hold that group's `limit`.
    GroupQuota {
        /// The group's name.
        group: String,
        /// The group's limit (`groups.max_instances`).
        limit: i64,
    },
    /// Running this instance would allocate more CPU or memory than the engine has.
    Capacity {
        /// `"cpu"` (millicores) or `"memory"` (MiB).
        resource: &'static str,
        /// What the instance needs.
        requested: i64,
        /// What running instances already hold.
        allocated: i64,
        /// What the engine has.
        capacity: i64,
    },
}

/// Outcome of [`Store::claim_instance_start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartClaim {
    /// The caller moved the instance to `starting` and must start it.
    Claimed(Instance),
    /// Already running.
    Running(Instance),
    /// Someone else is moving it (creating, starting, stopping, destroying); wait and look again.
    Busy(InstanceStatus),
    /// It cannot be started any more (`gone`, or it has no container).
    Ended(InstanceStatus),
    /// Starting it would break a limit.
    Refused(Refusal),
}

impl Store {
    /// Inserts a new instance if the user's and the total quota and the engine's capacity allow
    /// it, all in one write transaction (serialised across processes), so that two launches
    /// racing for the last slot cannot both get it. `cpu_millicores`/`memory_mb` are what the
    /// new instance will hold.
    pub async fn admit_instance(
        &self,
        new: &NewInstance,
        limits: &AdmissionLimits,
        need: Allocation,
        now: i64,
    ) -> Result<std::result::Result<Instance, Refusal>> {
        let mut tx = self.begin_write().await?;
        self.lock_admissions(&mut tx).await?;
        if let Some(refusal) = quota_refusal(&mut tx, new.user_id, limits).await? {
            return Ok(Err(refusal));
        }
        let held = allocated(&mut tx, limits, None, None).await?;
        if let Some(refusal) = capacity_refusal(limits, held, need) {
            return Ok(Err(refusal));
        }
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
        .fetch_one(&mut *tx)
        .await?;
        let instance = Instance::from_row(&row)?;
        tx.commit().await?;
        Ok(Ok(instance))
    }

    /// Claims the right to start a stopped (or failed) instance: moves it to `starting` when no
    /// one else is moving it and capacity allows, in one write transaction. Exactly one of any
    /// number of concurrent callers, in this process or another sharing the database, gets
    /// [`StartClaim::Claimed`].
    pub async fn claim_instance_start(
        &self,
        id: i64,
        limits: &AdmissionLimits,
        need: Allocation,
    ) -> Result<StartClaim> {
        let mut tx = self.begin_write().await?;
        self.lock_admissions(&mut tx).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM instances WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(instance) = row.as_ref().map(Instance::from_row).transpose()? else {
            return Err(crate::error::AdminError::NotFound("instance"));
        };
        match instance.status {
            InstanceStatus::Running => return Ok(StartClaim::Running(instance)),
            InstanceStatus::Requested
            | InstanceStatus::Creating
            | InstanceStatus::Starting
            | InstanceStatus::Stopping
            | InstanceStatus::Destroying => return Ok(StartClaim::Busy(instance.status)),
            InstanceStatus::Gone => return Ok(StartClaim::Ended(instance.status)),
            InstanceStatus::Stopped | InstanceStatus::Error => {}
        }
        if instance.container_id.is_none() {
            return Ok(StartClaim::Ended(instance.status));
        }
        let held = allocated(&mut tx, limits, Some(id), None).await?;
        if let Some(refusal) = capacity_refusal(limits, held, need) {
            return Ok(StartClaim::Refused(refusal));
        }
        sqlx::query("UPDATE instances SET status = 'starting', error_reason = NULL WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(StartClaim::Claimed(Instance {
            status: InstanceStatus::Starting,
            error_reason: None,
            ..instance
        }))
    }

    /// Moves an instance to `to` only if its status is one of `from` (compare-and-set); returns
    /// whether it moved. Timestamps follow [`Store::set_instance_status`].
    pub async fn transition_instance(
        &self,
        id: i64,
        from: &[InstanceStatus],
        to: InstanceStatus,
        reason: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let started = (to == InstanceStatus::Running).then_some(now);
        let stopped = to.is_terminal().then_some(now);
        // The allowed statuses travel as one comma-separated parameter so the statement text is
        // constant (and cacheable) whatever the list.
        let from_list: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let result = sqlx::query(
            "UPDATE instances SET status = $2, error_reason = $3, \
             started_at = COALESCE($4, started_at), \
             stopped_at = CASE WHEN $4 IS NOT NULL THEN NULL ELSE COALESCE($5, stopped_at) END \
             WHERE id = $1 AND (',' || $6 || ',') LIKE ('%,' || status || ',%')",
        )
        .bind(id)
        .bind(to.as_str())
        .bind(reason)
        .bind(started)
        .bind(stopped)
        .bind(from_list.join(","))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Stores the sealed desktop password of an instance.
    pub async fn set_instance_credentials(&self, id: i64, sealed: Option<&str>) -> Result<()> {
        let result = sqlx::query("UPDATE instances SET credentials = $2 WHERE id = $1")
            .bind(id)
            .bind(sealed)
            .execute(&self.pool)
            .await?;
        expect_one(result, "instance")
    }

    /// Every instance that is not `gone`, oldest first (for reconciliation with the engine).
    pub async fn list_live_instances(&self) -> Result<Vec<Instance>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM instances WHERE status <> 'gone' ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Instance::from_row).collect()
    }

    /// CPU and memory held by instances that run or are about to, with `limits`' defaults for
    /// droplets without limits.
    pub async fn allocated_resources(&self, limits: &AdmissionLimits) -> Result<Allocation> {
        let mut conn = self.pool.acquire().await?;
        allocated(&mut conn, limits, None, None).await
    }

    async fn lock_admissions(&self, tx: &mut sqlx::AnyConnection) -> Result<()> {
        if self.backend == super::Backend::Postgres {
            // Released at commit or rollback. Selecting from the function gives an int column,
            // which the Any driver can decode (a bare void result it cannot).
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                .bind(ADMISSION_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}

/// The per-user, total and per-group quotas, checked for one more instance of `user_id`.
async fn quota_refusal(
    conn: &mut sqlx::AnyConnection,
    user_id: i64,
    limits: &AdmissionLimits,
) -> Result<Option<Refusal>> {
    let user_count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM instances WHERE user_id = $1 AND status IN {QUOTA_STATUSES}"
    )))
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    if user_count >= limits.max_per_user {
        return Ok(Some(Refusal::UserQuota {
            limit: limits.max_per_user,
        }));
    }
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM instances WHERE status IN {QUOTA_STATUSES}"
    )))
    .fetch_one(&mut *conn)
    .await?;
    if total >= limits.max_total {
        return Ok(Some(Refusal::TotalQuota {
            limit: limits.max_total,
        }));
    }
    // Each limited group of the user, with what all its members hold together.
    let groups = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT g.name, g.max_instances, \
           (SELECT COUNT(*) FROM instances i WHERE i.status IN {QUOTA_STATUSES} \
              AND i.user_id IN (SELECT m2.user_id FROM memberships m2 \
                                WHERE m2.group_id = g.id)) AS held \
         FROM groups g JOIN memberships m ON m.group_id = g.id \
         WHERE m.user_id = $1 AND g.max_instances IS NOT NULL ORDER BY g.id"
    )))
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    for row in &groups {
        let limit: i64 = row.try_get("max_instances")?;
        let held: i64 = row.try_get("held")?;
        if held >= limit {
            return Ok(Some(Refusal::GroupQuota {
                group: row.try_get("name")?,
                limit,
            }));
        }
    }
    Ok(None)
}

/// CPU and memory held by instances that run or are about to (external hosts hold none), and
/// by warm pool containers
/// started ahead (they run too), leaving out one instance and one pool container (the row being
/// started or handed out, which is charged as the need instead).
async fn allocated(
    conn: &mut sqlx::AnyConnection,
    limits: &AdmissionLimits,
    except: Option<i64>,
    except_pool: Option<i64>,
) -> Result<Allocation> {
    let rows = sqlx::query(
        "SELECT d.cpu_millicores, d.memory_mb FROM instances i \
         JOIN droplets d ON d.id = i.droplet_id \
         WHERE i.status IN ('requested', 'creating', 'starting', 'running', 'stopping') \
         AND i.id <> $1 AND d.target = 'container' \
         UNION ALL \
         SELECT d.cpu_millicores, d.memory_mb FROM pool_containers p \
         JOIN droplets d ON d.id = p.droplet_id \
         WHERE p.started = 1 AND p.id <> $2",
    )
    .bind(except.unwrap_or(-1))
    .bind(except_pool.unwrap_or(-1))
    .fetch_all(&mut *conn)
    .await?;
    let mut sum = Allocation::default();
    for row in &rows {
        let cpu: Option<i64> = row.try_get("cpu_millicores")?;
        let memory: Option<i64> = row.try_get("memory_mb")?;
        sum.cpu_millicores += cpu.unwrap_or(limits.default_cpu_millicores);
        sum.memory_mb += memory.unwrap_or(limits.default_memory_mb);
    }
    Ok(sum)
}

fn capacity_refusal(
    limits: &AdmissionLimits,
    held: Allocation,
    need: Allocation,
) -> Option<Refusal> {
    if held.cpu_millicores + need.cpu_millicores > limits.cpu_capacity_millicores {
        return Some(Refusal::Capacity {
            resource: "cpu",
            requested: need.cpu_millicores,
            allocated: held.cpu_millicores,
            capacity: limits.cpu_capacity_millicores,
        });
    }
    if held.memory_mb + need.memory_mb > limits.memory_capacity_mb {
        return Some(Refusal::Capacity {
            resource: "memory",
            requested: need.memory_mb,
            allocated: held.memory_mb,
            capacity: limits.memory_capacity_mb,
        });
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Group limits.
// ---------------------------------------------------------------------------------------------

impl Store {
    /// Sets how many instances the members of a group may hold together (`None` = no limit).
    pub async fn set_group_instance_limit(&self, group_id: i64, limit: Option<i64>) -> Result<()> {
        let result = sqlx::query("UPDATE groups SET max_instances = $2 WHERE id = $1")
            .bind(group_id)
            .bind(limit)
            .execute(&self.pool)
            .await?;
        expect_one(result, "group")
    }

    /// The instance limit of a group (`None` = no limit).
    pub async fn group_instance_limit(&self, group_id: i64) -> Result<Option<i64>> {
        let limit: Option<Option<i64>> =
            sqlx::query_scalar("SELECT max_instances FROM groups WHERE id = $1")
                .bind(group_id)
                .fetch_optional(&self.pool)
                .await?;
        limit.ok_or(crate::error::AdminError::NotFound("group"))
    }
}

// ---------------------------------------------------------------------------------------------
// Warm pools: containers made ahead for a droplet, handed out by launches.
// ---------------------------------------------------------------------------------------------

text_enum! {
    /// Where a pool container is in its short life.
    pub enum PoolStatus {
        /// Reserved; its container is being created (and started).
        Creating = "creating",
        /// Can be handed out.
        Ready = "ready",
    }
}

macro_rules! pool_columns {
    () => {
        "id, droplet_id, slug, status, started, droplet_version, container_id, container_name, \
         upstream, credentials, created_at"
    };
}

/// A container of a droplet's warm pool, nobody's yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolContainer {
    /// Primary key.
    pub id: i64,
    /// The droplet it was made for.
    pub droplet_id: i64,
    /// The slug the instance will have (the container's name and label already carry it).
    pub slug: String,
    /// Creating or ready.
    pub status: PoolStatus,
    /// Started ahead (counts against host capacity).
    pub started: bool,
    /// The droplet's `updated_at` when it was made; another value means the droplet changed.
    pub droplet_version: i64,
    /// Engine id, once created.
    pub container_id: Option<String>,
    /// Container name, once created.
    pub container_name: Option<String>,
    /// Where the gateway will reach it, once started.
    pub upstream: Option<String>,
    /// The sealed desktop password the container was given; never serialized.
    #[serde(skip)]
    pub credentials: Option<String>,
    /// Reservation time, unix milliseconds.
    pub created_at: i64,
}

impl PoolContainer {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            droplet_id: row.try_get("droplet_id")?,
            slug: row.try_get("slug")?,
            status: get_enum(row, "status")?,
            started: super::codec::get_flag(row, "started")?,
            droplet_version: row.try_get("droplet_version")?,
            container_id: row.try_get("container_id")?,
            container_name: row.try_get("container_name")?,
            upstream: row.try_get("upstream")?,
            credentials: row.try_get("credentials")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// What to reserve with [`Store::reserve_pool_container`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPoolContainer {
    /// The droplet.
    pub droplet_id: i64,
    /// The future instance slug.
    pub slug: String,
    /// Whether it will be started ahead.
    pub started: bool,
    /// The droplet's `updated_at`.
    pub droplet_version: i64,
}

/// Outcome of [`Store::reserve_pool_container`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolReservation {
    /// Reserved: the caller creates the container.
    Reserved(PoolContainer),
    /// The pool already holds `pool_size` containers of the current droplet version.
    Full,
    /// A started container would not fit the host.
    Refused(Refusal),
}

/// Outcome of [`Store::admit_from_pool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolAdmission {
    /// The instance was admitted and owns the pool container's slug and container now.
    Taken(Box<(Instance, PoolContainer)>),
    /// No ready container of the current droplet version: launch the ordinary way.
    Empty,
    /// A quota or the host capacity refuses the instance.
    Refused(Refusal),
}

impl Store {
    /// Reserves a place in a droplet's warm pool when it holds fewer than `pool_size` containers
    /// of `droplet_version`, and (for a started one) the host has room, in one write transaction
    /// serialised like admissions, so two gateway processes filling one pool cannot overfill it.
    pub async fn reserve_pool_container(
        &self,
        new: &NewPoolContainer,
        pool_size: i64,
        limits: &AdmissionLimits,
        need: Allocation,
        now: i64,
    ) -> Result<PoolReservation> {
        let mut tx = self.begin_write().await?;
        self.lock_admissions(&mut tx).await?;
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pool_containers WHERE droplet_id = $1 AND droplet_version = $2",
        )
        .bind(new.droplet_id)
        .bind(new.droplet_version)
        .fetch_one(&mut *tx)
        .await?;
        if held >= pool_size {
            return Ok(PoolReservation::Full);
        }
        if new.started {
            let allocation = allocated(&mut tx, limits, None, None).await?;
            if let Some(refusal) = capacity_refusal(limits, allocation, need) {
                return Ok(PoolReservation::Refused(refusal));
            }
        }
        let row = sqlx::query(concat!(
            "INSERT INTO pool_containers (droplet_id, slug, status, started, droplet_version, \
             created_at) VALUES ($1, $2, 'creating', $3, $4, $5) RETURNING ",
            pool_columns!()
        ))
        .bind(new.droplet_id)
        .bind(new.slug.as_str())
        .bind(super::codec::flag(new.started))
        .bind(new.droplet_version)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let reserved = PoolContainer::from_row(&row)?;
        tx.commit().await?;
        Ok(PoolReservation::Reserved(reserved))
    }

    /// Records the container of a reserved pool place (before it is started, so a failure
    /// after this point can always find and remove it).
    pub async fn set_pool_container(
        &self,
        id: i64,
        container_id: &str,
        container_name: &str,
        credentials: Option<&str>,
    ) -> Result<()> {
        let result = sqlx::query(
            "UPDATE pool_containers SET container_id = $2, container_name = $3, \
             credentials = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(container_id)
        .bind(container_name)
        .bind(credentials)
        .execute(&self.pool)
        .await?;
        expect_one(result, "pool container")
    }

    /// Marks a pool container ready to be handed out; false when it was removed meanwhile.
    pub async fn set_pool_container_ready(&self, id: i64, upstream: Option<&str>) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE pool_containers SET status = 'ready', upstream = $2 \
             WHERE id = $1 AND status = 'creating'",
        )
        .bind(id)
        .bind(upstream)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Every pool container, of all droplets, oldest first.
    pub async fn list_pool_containers(&self) -> Result<Vec<PoolContainer>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            pool_columns!(),
            " FROM pool_containers ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PoolContainer::from_row).collect()
    }

    /// The pool container with this slug.
    pub async fn get_pool_container_by_slug(&self, slug: &str) -> Result<Option<PoolContainer>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            pool_columns!(),
            " FROM pool_containers WHERE slug = $1"
        ))
        .bind(slug)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(PoolContainer::from_row).transpose()
    }

    /// Forgets a pool container (its container must be removed by the caller); false when a
    /// launch took it or someone else removed it first.
    pub async fn delete_pool_container(&self, id: i64) -> Result<bool> {
        let result = sqlx::query("DELETE FROM pool_containers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Admits a new instance of `new.droplet_id` for `new.user_id` (same quotas as
    /// [`Store::admit_instance`]) by handing it the oldest ready pool container of
    /// `droplet_version`: in one write transaction the pool row goes and the instance row comes,
    /// with the pool's slug, container, upstream and credentials and status `starting`. So a
    /// container is never claimed by both tables nor by neither.
    pub async fn admit_from_pool(
        &self,
        new: &NewInstance,
        droplet_version: i64,
        limits: &AdmissionLimits,
        need: Allocation,
        now: i64,
    ) -> Result<PoolAdmission> {
        let mut tx = self.begin_write().await?;
        self.lock_admissions(&mut tx).await?;
        if let Some(refusal) = quota_refusal(&mut tx, new.user_id, limits).await? {
            return Ok(PoolAdmission::Refused(refusal));
        }
        let row = sqlx::query(concat!(
            "SELECT ",
            pool_columns!(),
            " FROM pool_containers WHERE droplet_id = $1 AND droplet_version = $2 \
             AND status = 'ready' AND container_id IS NOT NULL ORDER BY created_at, id LIMIT 1"
        ))
        .bind(new.droplet_id)
        .bind(droplet_version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(pooled) = row.as_ref().map(PoolContainer::from_row).transpose()? else {
            return Ok(PoolAdmission::Empty);
        };
        let held = allocated(&mut tx, limits, None, Some(pooled.id)).await?;
        if let Some(refusal) = capacity_refusal(limits, held, need) {
            return Ok(PoolAdmission::Refused(refusal));
        }
        sqlx::query("DELETE FROM pool_containers WHERE id = $1")
            .bind(pooled.id)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(concat!(
            "INSERT INTO instances (slug, droplet_id, user_id, status, container_id, \
             container_name, upstream, credentials, created_at) \
             VALUES ($1, $2, $3, 'starting', $4, $5, $6, $7, $8) RETURNING ",
            columns!()
        ))
        .bind(pooled.slug.as_str())
        .bind(new.droplet_id)
        .bind(new.user_id)
        .bind(pooled.container_id.as_deref())
        .bind(pooled.container_name.as_deref())
        .bind(pooled.upstream.as_deref())
        .bind(pooled.credentials.as_deref())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let instance = Instance::from_row(&row)?;
        tx.commit().await?;
        Ok(PoolAdmission::Taken(Box::new((instance, pooled))))
    }
}
