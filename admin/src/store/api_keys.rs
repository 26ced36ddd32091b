//! API keys for scripts and integrations.
//!
//! Owns the `api_keys` table. Only a hash of the secret is stored (computed by the caller); the
//! short prefix is kept in clear so users can tell their keys apart in listings.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, expect_one};
use crate::error::Result;

macro_rules! columns {
    () => {
        "id, user_id, name, secret_hash, prefix, created_at, last_used_at, expires_at, revoked_at"
    };
}

/// An API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// Primary key.
    pub id: i64,
    /// The user the key acts as.
    pub user_id: i64,
    /// Label chosen by the user.
    pub name: String,
    /// Hash of the secret; never serialized.
    #[serde(skip)]
    pub secret_hash: String,
    /// First characters of the key, shown in listings.
    pub prefix: String,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// Last successful use.
    pub last_used_at: Option<i64>,
    /// Expiry, if any.
    pub expires_at: Option<i64>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
}

impl ApiKey {
    /// Whether the key still authenticates requests at time `now`.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }

    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            name: row.try_get("name")?,
            secret_hash: row.try_get("secret_hash")?,
            prefix: row.try_get("prefix")?,
            created_at: row.try_get("created_at")?,
            last_used_at: row.try_get("last_used_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    }
}

/// Input for [`Store::create_api_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The user the key acts as.
    pub user_id: i64,
    /// Label.
    pub name: String,
    /// Hash of the secret.
    pub secret_hash: String,
    /// Display prefix.
    pub prefix: String,
    /// Expiry, if any.
    pub expires_at: Option<i64>,
}

impl Store {
    /// Records a new key. A duplicate secret hash is a `Conflict`.
    pub async fn create_api_key(&self, new: &NewApiKey, now: i64) -> Result<ApiKey> {
        let row = sqlx::query(concat!(
            "INSERT INTO api_keys (user_id, name, secret_hash, prefix, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
            columns!()
        ))
        .bind(new.user_id)
        .bind(new.name.as_str())
        .bind(new.secret_hash.as_str())
        .bind(new.prefix.as_str())
        .bind(now)
        .bind(new.expires_at)
        .fetch_one(&self.pool)
        .await?;
        ApiKey::from_row(&row)
    }

    /// The key whose secret hashes to `secret_hash`, revoked or expired ones included (check
    /// [`ApiKey::is_active`]).
    pub async fn find_api_key_by_hash(&self, secret_hash: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM api_keys WHERE secret_hash = $1"
        ))
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(ApiKey::from_row).transpose()
    }

    /// A user's keys, newest first.
    pub async fn list_api_keys_for_user(&self, user_id: i64) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC, id DESC"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ApiKey::from_row).collect()
    }

    /// Notes a successful use.
    pub async fn touch_api_key(&self, id: i64, now: i64) -> Result<()> {
        let result = sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        expect_one(result, "api key")
    }

    /// Revokes every live key of a user; returns how many.
    pub async fn revoke_user_api_keys(&self, user_id: i64, now: i64) -> Result<u64> {
        let result = sqlx::query(
            "UPDATE api_keys SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Ends everything that lets a user in without their password: their sessions and their API
    /// keys. What a password reset by somebody else does (the answer to a compromised account:
    /// a key minted by an intruder must not outlive it). Returns (sessions, keys) ended.
    pub async fn end_user_access(&self, user_id: i64, now: i64) -> Result<(u64, u64)> {
        let sessions = self.revoke_user_sessions(user_id, now).await?;
        let keys = self.revoke_user_api_keys(user_id, now).await?;
        Ok((sessions, keys))
    }

    /// Revokes a key. Revoking twice keeps the first revocation time.
    pub async fn revoke_api_key(&self, id: i64, now: i64) -> Result<()> {
        let result =
            sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?;
        expect_one(result, "api key")
    }
}
