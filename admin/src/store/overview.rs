//! Whole-installation figures for the system page and `flowcase demo`: how many of each object
//! there are, and which database server answers. Cheap counts, read on demand by administrators,
//! never on a request's hot path.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::{Backend, Result, Store};

/// How many of each object the installation holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub tenants: i64,
    pub users: i64,
    pub groups: i64,
    pub droplets: i64,
    pub workshops: i64,
    /// Instances by status (`gone` ones included: they are history).
    pub instances: BTreeMap<String, i64>,
}

impl Store {
    /// The counts of every object kind, of the whole installation or (`Some`) of one tenant.
    pub async fn counts(&self, tenant_id: Option<i64>) -> Result<Counts> {
        // `CAST($1 AS BIGINT) IS NULL` keeps one statement for both cases; the cast gives
        // PostgreSQL the type of a parameter that may be NULL.
        const ANY_TENANT: &str = "CAST($1 AS BIGINT) IS NULL OR tenant_id = $1";
        let count = |table: &'static str| async move {
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM {table} WHERE {ANY_TENANT}"
            )))
            .bind(tenant_id)
            .fetch_one(&self.pool)
            .await?;
            Ok::<i64, crate::error::AdminError>(n)
        };
        let instances = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT status, COUNT(*) AS n FROM instances WHERE user_id IN \
             (SELECT id FROM users WHERE {ANY_TENANT}) GROUP BY status"
        )))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("status")?, row.try_get("n")?)))
        .collect::<Result<BTreeMap<String, i64>>>()?;
        let tenants: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tenants WHERE CAST($1 AS BIGINT) IS NULL OR id = $1",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Counts {
            tenants,
            users: count("users").await?,
            groups: count("groups").await?,
            droplets: count("droplets").await?,
            workshops: count("workshops").await?,
            instances,
        })
    }

    /// The database server's version as it reports it (`3.45.1` for SQLite, `15.8 (Debian …)`
    /// for PostgreSQL).
    pub async fn server_version(&self) -> Result<String> {
        let query = match self.backend {
            Backend::Sqlite => "SELECT sqlite_version()",
            Backend::Postgres => "SHOW server_version",
        };
        let version: String = sqlx::query_scalar(query).fetch_one(&self.pool).await?;
        Ok(version)
    }
}
