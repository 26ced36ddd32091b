//! Tenants: the organisations that own users, groups, droplets and workshops.
//!
//! Owns the `tenants` table. Exactly one tenant may be flagged as the default (a partial unique
//! index enforces it); single-organisation installs only ever have that one.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use super::Store;
use super::codec::{flag, get_flag};
use crate::error::Result;

macro_rules! columns {
    () => {
        "id, name, is_default, created_at"
    };
}

/// An organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// Primary key.
    pub id: i64,
    /// Unique display name.
    pub name: String,
    /// Whether this is the tenant new users land in when nothing else says otherwise.
    pub is_default: bool,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
}

impl Tenant {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            is_default: get_flag(row, "is_default")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl Store {
    /// Creates a tenant. A second default tenant, or a duplicate name, is a `Conflict`.
    pub async fn create_tenant(&self, name: &str, is_default: bool, now: i64) -> Result<Tenant> {
        insert_tenant(&self.pool, name, is_default, now).await
    }

    /// Every tenant, by name.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM tenants ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Tenant::from_row).collect()
    }

    /// The tenant with this id.
    pub async fn get_tenant(&self, id: i64) -> Result<Option<Tenant>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM tenants WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Tenant::from_row).transpose()
    }

    /// One page of tenants by name, with the number of tenants.
    pub async fn page_tenants(&self, limit: i64, offset: i64) -> Result<(Vec<Tenant>, i64)> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM tenants ORDER BY name LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants")
            .fetch_one(&self.pool)
            .await?;
        let tenants = rows.iter().map(Tenant::from_row).collect::<Result<_>>()?;
        Ok((tenants, total))
    }

    /// The default tenant, if one has been created.
    pub async fn default_tenant(&self) -> Result<Option<Tenant>> {
        find_default_tenant(&self.pool).await
    }
}

// Executor-generic so that bootstrap can run them inside its transaction.

pub(crate) async fn insert_tenant<'e, E: Executor<'e, Database = Any>>(
    exec: E,
    name: &str,
    is_default: bool,
    now: i64,
) -> Result<Tenant> {
    let row = sqlx::query(concat!(
        "INSERT INTO tenants (name, is_default, created_at) VALUES ($1, $2, $3) RETURNING ",
        columns!()
    ))
    .bind(name)
    .bind(flag(is_default))
    .bind(now)
    .fetch_one(exec)
    .await?;
    Tenant::from_row(&row)
}

pub(crate) async fn find_default_tenant<'e, E: Executor<'e, Database = Any>>(
    exec: E,
) -> Result<Option<Tenant>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM tenants WHERE is_default = 1"
    ))
    .fetch_optional(exec)
    .await?;
    row.as_ref().map(Tenant::from_row).transpose()
}
