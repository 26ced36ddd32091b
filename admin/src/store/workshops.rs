//! Workshops: training labs that start a set of droplets for a group of participants.
//!
//! Owns the `workshops`, `workshop_participants`, `workshop_droplets` and `workshop_instances`
//! tables. A participant's seat survives the loss of their instances (the links are nulled), so
//! a workshop can re-provision. `workshop_instances` holds one row per (participant, droplet of
//! the template): the instance "start all" launched for them, whether a launch is under way
//! (the claim that keeps two launchers apart), and why the last launch failed before an
//! instance existed.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::codec::{get_enum, get_flag, text_enum};
use super::{Store, expect_one};
use crate::error::Result;

text_enum! {
    /// Lifecycle of a workshop.
    pub enum WorkshopStatus {
        /// Planned; instances not started.
        Scheduled = "scheduled",
        /// In progress; participants' instances are up.
        Running = "running",
        /// Finished normally.
        Ended = "ended",
        /// Called off.
        Cancelled = "cancelled",
    }
}

macro_rules! columns {
    () => {
        "id, tenant_id, group_id, name, description, starts_at, ends_at, status, created_at"
    };
}

/// A training lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workshop {
    /// Primary key.
    pub id: i64,
    /// Owning tenant.
    pub tenant_id: i64,
    /// Group whose members take part, if the workshop is tied to one.
    pub group_id: Option<i64>,
    /// Name, unique within the tenant.
    pub name: String,
    /// Free-form description.
    pub description: String,
    /// Start, unix milliseconds.
    pub starts_at: i64,
    /// End, unix milliseconds.
    pub ends_at: i64,
    /// Current state.
    pub status: WorkshopStatus,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
}

impl Workshop {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            group_id: row.try_get("group_id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            starts_at: row.try_get("starts_at")?,
            ends_at: row.try_get("ends_at")?,
            status: get_enum(row, "status")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Input for [`Store::create_workshop`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorkshop {
    /// Owning tenant.
    pub tenant_id: i64,
    /// Participating group.
    pub group_id: Option<i64>,
    /// Name, unique within the tenant.
    pub name: String,
    /// Free-form description.
    pub description: String,
    /// Start, unix milliseconds.
    pub starts_at: i64,
    /// End, unix milliseconds.
    pub ends_at: i64,
    /// Initial state, normally [`WorkshopStatus::Scheduled`].
    pub status: WorkshopStatus,
}

/// A user's seat in a workshop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Participant {
    /// The workshop.
    pub workshop_id: i64,
    /// The participant.
    pub user_id: i64,
    /// Their instance, once provisioned.
    pub instance_id: Option<i64>,
    /// When they were added, unix milliseconds.
    pub joined_at: i64,
}

impl Participant {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            workshop_id: row.try_get("workshop_id")?,
            user_id: row.try_get("user_id")?,
            instance_id: row.try_get("instance_id")?,
            joined_at: row.try_get("joined_at")?,
        })
    }
}

impl Store {
    /// Creates a workshop. A name already used in the tenant is a `Conflict`.
    pub async fn create_workshop(&self, new: &NewWorkshop, now: i64) -> Result<Workshop> {
        let row = sqlx::query(concat!(
            "INSERT INTO workshops (tenant_id, group_id, name, description, starts_at, ends_at, \
             status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
            columns!()
        ))
        .bind(new.tenant_id)
        .bind(new.group_id)
        .bind(new.name.as_str())
        .bind(new.description.as_str())
        .bind(new.starts_at)
        .bind(new.ends_at)
        .bind(new.status.as_str())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Workshop::from_row(&row)
    }

    /// Running workshops whose end time has come by `now`.
    pub async fn running_workshops_ended_by(&self, now: i64) -> Result<Vec<Workshop>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM workshops WHERE status = $1 AND ends_at <= $2 ORDER BY id"
        ))
        .bind(WorkshopStatus::Running.as_str())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Workshop::from_row).collect()
    }

    /// The workshop with this id.
    pub async fn get_workshop(&self, id: i64) -> Result<Option<Workshop>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM workshops WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Workshop::from_row).transpose()
    }

    /// Changes a workshop's state.
    pub async fn set_workshop_status(&self, id: i64, status: WorkshopStatus) -> Result<()> {
        let result = sqlx::query("UPDATE workshops SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(status.as_str())
            .execute(&self.pool)
            .await?;
        expect_one(result, "workshop")
    }

    /// Seats a user in a workshop at `now`; seating them twice is harmless.
    pub async fn add_participant(&self, workshop_id: i64, user_id: i64, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO workshop_participants (workshop_id, user_id, joined_at) \
             VALUES ($1, $2, $3) ON CONFLICT (workshop_id, user_id) DO NOTHING",
        )
        .bind(workshop_id)
        .bind(user_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Links (or unlinks, with `None`) a participant's instance.
    pub async fn set_participant_instance(
        &self,
        workshop_id: i64,
        user_id: i64,
        instance_id: Option<i64>,
    ) -> Result<()> {
        let result = sqlx::query(
            "UPDATE workshop_participants SET instance_id = $3 \
             WHERE workshop_id = $1 AND user_id = $2",
        )
        .bind(workshop_id)
        .bind(user_id)
        .bind(instance_id)
        .execute(&self.pool)
        .await?;
        expect_one(result, "workshop participant")
    }

    /// A workshop's participants, in the order they joined.
    pub async fn list_participants(&self, workshop_id: i64) -> Result<Vec<Participant>> {
        let rows = sqlx::query(
            "SELECT workshop_id, user_id, instance_id, joined_at FROM workshop_participants \
             WHERE workshop_id = $1 ORDER BY joined_at, user_id",
        )
        .bind(workshop_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Participant::from_row).collect()
    }

    /// Adds a droplet to a workshop's template; adding it twice is harmless.
    pub async fn add_workshop_droplet(&self, workshop_id: i64, droplet_id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO workshop_droplets (workshop_id, droplet_id) VALUES ($1, $2) \
             ON CONFLICT (workshop_id, droplet_id) DO NOTHING",
        )
        .bind(workshop_id)
        .bind(droplet_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ids of the droplets in a workshop's template, ascending.
    pub async fn workshop_droplet_ids(&self, workshop_id: i64) -> Result<Vec<i64>> {
        let ids = sqlx::query_scalar(
            "SELECT droplet_id FROM workshop_droplets WHERE workshop_id = $1 ORDER BY droplet_id",
        )
        .bind(workshop_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }
}

/// Changeable fields of a workshop, for [`Store::update_workshop`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkshopFields {
    pub name: String,
    pub description: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub group_id: Option<i64>,
}

/// A participant with the account fields a workshop view shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seat {
    pub user_id: i64,
    pub username: String,
    pub display_name: String,
    pub disabled: bool,
    pub joined_at: i64,
}

/// One row of `workshop_instances`, with the instance's state when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkshopLink {
    pub user_id: i64,
    pub droplet_id: i64,
    pub instance_id: Option<i64>,
    /// Why the last launch failed before an instance existed.
    pub error: Option<String>,
    /// Whether a launch is under way.
    pub launching: bool,
    /// When the last launch was claimed, unix milliseconds.
    pub claimed_at: i64,
    /// The instance's public name.
    pub slug: Option<String>,
    pub status: Option<crate::store::InstanceStatus>,
    pub error_reason: Option<String>,
}

impl WorkshopLink {
    fn from_row(row: &AnyRow) -> Result<Self> {
        let status: Option<String> = row.try_get("status")?;
        Ok(Self {
            user_id: row.try_get("user_id")?,
            droplet_id: row.try_get("droplet_id")?,
            instance_id: row.try_get("instance_id")?,
            error: row.try_get("error")?,
            launching: get_flag(row, "launching")?,
            claimed_at: row.try_get("claimed_at")?,
            slug: row.try_get("slug")?,
            status: status.map(|s| s.parse()).transpose()?,
            error_reason: row.try_get("error_reason")?,
        })
    }
}

impl Store {
    /// One page of workshops by name, of one tenant or (`None`) of all, with the number the
    /// filter matches.
    pub async fn page_workshops(
        &self,
        tenant_id: Option<i64>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Workshop>, i64)> {
        // `$1 IS NULL` keeps one statement for both cases; the cast tells PostgreSQL the type of
        // a parameter that may be bound as NULL.
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM workshops WHERE (CAST($1 AS BIGINT) IS NULL OR tenant_id = $1) \
             ORDER BY name, id LIMIT $2 OFFSET $3"
        ))
        .bind(tenant_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM workshops WHERE (CAST($1 AS BIGINT) IS NULL OR tenant_id = $1)",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        let items = rows.iter().map(Workshop::from_row).collect::<Result<_>>()?;
        Ok((items, total))
    }

    /// The workshops `user_id` takes part in, by name.
    pub async fn workshops_of_participant(&self, user_id: i64) -> Result<Vec<Workshop>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM workshops WHERE id IN (SELECT workshop_id FROM workshop_participants \
             WHERE user_id = $1) ORDER BY name, id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Workshop::from_row).collect()
    }

    /// Replaces a workshop's changeable fields. A name taken in the tenant is a `Conflict`.
    pub async fn update_workshop(&self, id: i64, fields: &WorkshopFields) -> Result<Workshop> {
        let row = sqlx::query(concat!(
            "UPDATE workshops SET name = $2, description = $3, starts_at = $4, ends_at = $5, \
             group_id = $6 WHERE id = $1 RETURNING ",
            columns!()
        ))
        .bind(id)
        .bind(fields.name.as_str())
        .bind(fields.description.as_str())
        .bind(fields.starts_at)
        .bind(fields.ends_at)
        .bind(fields.group_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(Workshop::from_row)
            .transpose()?
            .ok_or(crate::error::AdminError::NotFound("workshop"))
    }

    /// Deletes a workshop with its seats, template and links; the instances stay their owners'.
    pub async fn delete_workshop(&self, id: i64) -> Result<()> {
        let result = sqlx::query("DELETE FROM workshops WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        expect_one(result, "workshop")
    }

    /// Makes `user_ids` exactly the workshop's participants (keeping the join time of those
    /// who stay) and forgets the instance links of those who leave.
    pub async fn set_participants(
        &self,
        workshop_id: i64,
        user_ids: &[i64],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let current: Vec<i64> =
            sqlx::query_scalar("SELECT user_id FROM workshop_participants WHERE workshop_id = $1")
                .bind(workshop_id)
                .fetch_all(&mut *tx)
                .await?;
        for gone in current.iter().filter(|id| !user_ids.contains(id)) {
            for table in ["workshop_participants", "workshop_instances"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE workshop_id = $1 AND user_id = $2"
                )))
                .bind(workshop_id)
                .bind(gone)
                .execute(&mut *tx)
                .await?;
            }
        }
        for new in user_ids.iter().filter(|id| !current.contains(id)) {
            sqlx::query(
                "INSERT INTO workshop_participants (workshop_id, user_id, joined_at) \
                 VALUES ($1, $2, $3)",
            )
            .bind(workshop_id)
            .bind(new)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Makes `droplet_ids` exactly the workshop's template and forgets the instance links of
    /// droplets taken out of it.
    pub async fn set_workshop_droplets(&self, workshop_id: i64, droplet_ids: &[i64]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let current: Vec<i64> =
            sqlx::query_scalar("SELECT droplet_id FROM workshop_droplets WHERE workshop_id = $1")
                .bind(workshop_id)
                .fetch_all(&mut *tx)
                .await?;
        for gone in current.iter().filter(|id| !droplet_ids.contains(id)) {
            for table in ["workshop_droplets", "workshop_instances"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE workshop_id = $1 AND droplet_id = $2"
                )))
                .bind(workshop_id)
                .bind(gone)
                .execute(&mut *tx)
                .await?;
            }
        }
        for new in droplet_ids.iter().filter(|id| !current.contains(id)) {
            sqlx::query("INSERT INTO workshop_droplets (workshop_id, droplet_id) VALUES ($1, $2)")
                .bind(workshop_id)
                .bind(new)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A workshop's participants with their account fields, in the order they joined.
    pub async fn workshop_seats(&self, workshop_id: i64) -> Result<Vec<Seat>> {
        let rows = sqlx::query(
            "SELECT p.user_id, p.joined_at, u.username, u.display_name, u.disabled \
             FROM workshop_participants p JOIN users u ON u.id = p.user_id \
             WHERE p.workshop_id = $1 ORDER BY p.joined_at, p.user_id",
        )
        .bind(workshop_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Seat {
                    user_id: row.try_get("user_id")?,
                    username: row.try_get("username")?,
                    display_name: row.try_get("display_name")?,
                    disabled: get_flag(row, "disabled")?,
                    joined_at: row.try_get("joined_at")?,
                })
            })
            .collect()
    }

    /// The instance links of a workshop, with each instance's state.
    pub async fn workshop_links(&self, workshop_id: i64) -> Result<Vec<WorkshopLink>> {
        let rows = sqlx::query(
            "SELECT w.user_id, w.droplet_id, w.instance_id, w.error, w.launching, w.claimed_at, \
             i.slug, \
             i.status, i.error_reason FROM workshop_instances w \
             LEFT JOIN instances i ON i.id = w.instance_id \
             WHERE w.workshop_id = $1 ORDER BY w.user_id, w.droplet_id",
        )
        .bind(workshop_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(WorkshopLink::from_row).collect()
    }

    /// Claims the launch of `droplet_id` for `user_id` in a workshop at `now`: true when this
    /// caller should launch. A new pair is claimed; so is one with no launch under way whose
    /// instance is missing or is `previous` (the caller saw it gone), and one whose launch was
    /// claimed before `stale_before` (its launcher died). A launch under way is not claimed twice.
    pub async fn claim_workshop_launch(
        &self,
        workshop_id: i64,
        user_id: i64,
        droplet_id: i64,
        previous: Option<i64>,
        now: i64,
        stale_before: i64,
    ) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO workshop_instances \
             (workshop_id, user_id, droplet_id, launching, claimed_at) \
             VALUES ($1, $2, $3, 1, $4) \
             ON CONFLICT (workshop_id, user_id, droplet_id) DO NOTHING",
        )
        .bind(workshop_id)
        .bind(user_id)
        .bind(droplet_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(true);
        }
        let reclaimed = sqlx::query(
            "UPDATE workshop_instances \
             SET instance_id = NULL, error = NULL, launching = 1, claimed_at = $4 \
             WHERE workshop_id = $1 AND user_id = $2 AND droplet_id = $3 AND ( \
               (launching = 0 AND (instance_id IS NULL OR instance_id = $6)) \
               OR (launching = 1 AND claimed_at < $5))",
        )
        .bind(workshop_id)
        .bind(user_id)
        .bind(droplet_id)
        .bind(now)
        .bind(stale_before)
        .bind(previous.unwrap_or(-1))
        .execute(&self.pool)
        .await?;
        Ok(reclaimed.rows_affected() == 1)
    }

    /// Records how a claimed launch ended: the instance it made, or why it failed.
    pub async fn finish_workshop_launch(
        &self,
        workshop_id: i64,
        user_id: i64,
        droplet_id: i64,
        outcome: std::result::Result<i64, String>,
    ) -> Result<()> {
        let (instance_id, error) = match outcome {
            Ok(id) => (Some(id), None),
            Err(reason) => (None, Some(reason)),
        };
        // The seat may have been removed meanwhile: then there is nothing to record.
        sqlx::query(
            "UPDATE workshop_instances SET instance_id = $4, error = $5, launching = 0 \
             WHERE workshop_id = $1 AND user_id = $2 AND droplet_id = $3",
        )
        .bind(workshop_id)
        .bind(user_id)
        .bind(droplet_id)
        .bind(instance_id)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
