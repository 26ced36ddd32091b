//! Tunnel tokens already used (see [`crate::auth::tunnel_token`]).
//!
//! Owns the `tunnel_tokens_used` table. Claiming is one `INSERT … ON CONFLICT DO NOTHING`, so two
//! gateway processes racing with the same token cannot both win.

use super::Store;
use crate::error::Result;

impl Store {
    /// Records token `jti` (valid until `expires_at`) as used; false when it already was.
    /// Expired entries are swept on the way.
    pub async fn claim_tunnel_token(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        sqlx::query("DELETE FROM tunnel_tokens_used WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO tunnel_tokens_used (jti, expires_at) VALUES ($1, $2) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }
}
