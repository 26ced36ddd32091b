//! Single-use secrets already redeemed: instance-host codes (`auth::app_host`, table
//! `used_app_codes`) and desktop tunnel tokens (`auth::tunnel_token`, table
//! `tunnel_tokens_used`).
//!
//! Claiming is one `INSERT … ON CONFLICT DO NOTHING` on the id's primary key, so the first claim
//! wins even between gateway processes sharing the database, and a secret replayed on another
//! process is refused too. Rows of expired secrets (refused by their expiry anyway) are pruned
//! on the way.

use super::Store;
use crate::error::Result;

/// What kind of secret is claimed: each has its own table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AppCode,
    TunnelToken,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Kind::AppCode => "used_app_codes",
            Kind::TunnelToken => "tunnel_tokens_used",
        }
    }
}

impl Store {
    /// Claims the instance-host code `jti` (valid until `expires_at`); false when it was claimed
    /// before.
    pub async fn claim_app_code(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        self.claim_once(Kind::AppCode, jti, expires_at, now).await
    }

    /// Claims the tunnel token `jti` (valid until `expires_at`); false when it was used before.
    pub async fn claim_tunnel_token(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        self.claim_once(Kind::TunnelToken, jti, expires_at, now)
            .await
    }

    async fn claim_once(&self, kind: Kind, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        let table = kind.table();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE expires_at <= $1"
        )))
        .bind(now)
        .execute(&self.pool)
        .await?;
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING"
        )))
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }
}
