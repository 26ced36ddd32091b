//! Workshops: training labs that start a set of droplets for a group of participants.
//!
//! Owns the `workshops`, `workshop_participants` and `workshop_droplets` tables. A participant's
//! seat survives the loss of their instance (the link is nulled), so a workshop can re-provision.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::codec::{get_enum, text_enum};
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
