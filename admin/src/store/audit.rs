//! The activity log shown to administrators.
//!
//! Owns the `audit_log` table. Entries are append-only apart from pruning by age. The actor's
//! name is copied into the entry because deleting a user only nulls `actor_user_id`; details are
//! JSON and must be rendered as text, never as markup.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::Store;
use super::codec::{get_json, to_json};
use crate::error::Result;

macro_rules! columns {
    () => {
        "id, at, actor_user_id, actor_name, action, target_kind, target_id, client_addr, \
         details_json"
    };
}

/// One logged action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Primary key, increasing with insertion.
    pub id: i64,
    /// When it happened, unix milliseconds.
    pub at: i64,
    /// Who did it (`None` for the system, or once the user is deleted).
    pub actor_user_id: Option<i64>,
    /// The actor's username at the time.
    pub actor_name: Option<String>,
    /// Machine-readable action, e.g. `user.create`.
    pub action: String,
    /// Kind of the object acted on, e.g. `user`.
    pub target_kind: Option<String>,
    /// Id or slug of the object acted on.
    pub target_id: Option<String>,
    /// Client address of the request.
    pub client_addr: Option<String>,
    /// Free-form structured details.
    pub details: serde_json::Value,
}

impl AuditEntry {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            at: row.try_get("at")?,
            actor_user_id: row.try_get("actor_user_id")?,
            actor_name: row.try_get("actor_name")?,
            action: row.try_get("action")?,
            target_kind: row.try_get("target_kind")?,
            target_id: row.try_get("target_id")?,
            client_addr: row.try_get("client_addr")?,
            details: get_json(row, "details_json")?,
        })
    }
}

/// Input for [`Store::append_audit`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewAuditEntry {
    /// Who did it.
    pub actor_user_id: Option<i64>,
    /// The actor's username.
    pub actor_name: Option<String>,
    /// Machine-readable action.
    pub action: String,
    /// Kind of the object acted on.
    pub target_kind: Option<String>,
    /// Id or slug of the object acted on.
    pub target_id: Option<String>,
    /// Client address.
    pub client_addr: Option<String>,
    /// Structured details (`Null` is stored as `{}`).
    pub details: serde_json::Value,
}

/// Which entries [`Store::page_audit`] returns; every field narrows the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// The actor's username at the time, exactly.
    pub actor: Option<String>,
    /// The action exactly, or every action starting with this prefix when `action_prefix`.
    pub action: Option<String>,
    pub action_prefix: bool,
    /// The kind of object acted on.
    pub target_kind: Option<String>,
    /// The id of the object acted on (with `target_kind`).
    pub target_id: Option<String>,
    /// At or after, unix milliseconds.
    pub since: Option<i64>,
    /// Strictly before, unix milliseconds.
    pub until: Option<i64>,
    /// Only entries made by users of this tenant (what a tenant administrator may read).
    pub actor_tenant: Option<i64>,
}

enum Bound {
    Int(i64),
    Text(String),
}

impl AuditFilter {
    /// The `WHERE` clause (possibly empty) and its parameters, numbered from `$1`. Only fixed
    /// text goes into the SQL; every value is a parameter.
    fn to_sql(&self) -> (String, Vec<Bound>) {
        let mut conditions: Vec<String> = Vec::new();
        let mut binds: Vec<Bound> = Vec::new();
        let mut param = |value: Bound| {
            binds.push(value);
            format!("${}", binds.len())
        };
        if let Some(actor) = &self.actor {
            conditions.push(format!(
                "actor_name = {}",
                param(Bound::Text(actor.clone()))
            ));
        }
        if let Some(action) = &self.action {
            if self.action_prefix {
                // substr rather than LIKE: a prefix holding `%` or `_` stays literal.
                let len = i64::try_from(action.chars().count()).unwrap_or(i64::MAX);
                let len = param(Bound::Int(len));
                let prefix = param(Bound::Text(action.clone()));
                conditions.push(format!(
                    "substr(action, 1, CAST({len} AS INTEGER)) = {prefix}"
                ));
            } else {
                conditions.push(format!("action = {}", param(Bound::Text(action.clone()))));
            }
        }
        if let Some(kind) = &self.target_kind {
            conditions.push(format!(
                "target_kind = {}",
                param(Bound::Text(kind.clone()))
            ));
        }
        if let Some(id) = &self.target_id {
            conditions.push(format!("target_id = {}", param(Bound::Text(id.clone()))));
        }
        if let Some(since) = self.since {
            conditions.push(format!("at >= {}", param(Bound::Int(since))));
        }
        if let Some(until) = self.until {
            conditions.push(format!("at < {}", param(Bound::Int(until))));
        }
        if let Some(tenant) = self.actor_tenant {
            conditions.push(format!(
                "actor_user_id IN (SELECT id FROM users WHERE tenant_id = {})",
                param(Bound::Int(tenant))
            ));
        }
        let clause = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        (clause, binds)
    }
}

impl Store {
    /// A page of the entries `filter` admits, newest first, with how many it admits in all.
    pub async fn page_audit(
        &self,
        filter: &AuditFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AuditEntry>, i64)> {
        let (clause, binds) = filter.to_sql();
        let n = binds.len();
        let list = format!(
            "SELECT {} FROM audit_log{clause} ORDER BY at DESC, id DESC LIMIT ${} OFFSET ${}",
            columns!(),
            n + 1,
            n + 2
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(list));
        for bound in &binds {
            query = match bound {
                Bound::Int(v) => query.bind(*v),
                Bound::Text(v) => query.bind(v.as_str()),
            };
        }
        let rows = query.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        let count = format!("SELECT COUNT(*) FROM audit_log{clause}");
        let mut total = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count));
        for bound in &binds {
            total = match bound {
                Bound::Int(v) => total.bind(*v),
                Bound::Text(v) => total.bind(v.as_str()),
            };
        }
        let total = total.fetch_one(&self.pool).await?;
        let entries = rows
            .iter()
            .map(AuditEntry::from_row)
            .collect::<Result<_>>()?;
        Ok((entries, total))
    }

    /// Appends an entry dated `at`; returns its id.
    pub async fn append_audit(&self, entry: &NewAuditEntry, at: i64) -> Result<i64> {
        let details = if entry.details.is_null() {
            serde_json::Value::Object(serde_json::Map::new())
        } else {
            entry.details.clone()
        };
        let id = sqlx::query_scalar(
            "INSERT INTO audit_log (at, actor_user_id, actor_name, action, target_kind, \
             target_id, client_addr, details_json) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(at)
        .bind(entry.actor_user_id)
        .bind(entry.actor_name.as_deref())
        .bind(entry.action.as_str())
        .bind(entry.target_kind.as_deref())
        .bind(entry.target_id.as_deref())
        .bind(entry.client_addr.as_deref())
        .bind(to_json(&details)?)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// A page of entries, newest first (ties broken by insertion order).
    pub async fn list_audit(&self, limit: i64, offset: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM audit_log ORDER BY at DESC, id DESC LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(AuditEntry::from_row).collect()
    }

    /// Number of entries, for paging.
    pub async fn count_audit(&self) -> Result<i64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&self.pool)
            .await?;
        Ok(count)
    }

    /// Deletes entries strictly older than `before`; returns how many.
    pub async fn prune_audit(&self, before: i64) -> Result<u64> {
        let result = sqlx::query("DELETE FROM audit_log WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }
}
