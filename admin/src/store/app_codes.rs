//! One-time instance-host codes already redeemed (see `auth::app_host`).
//!
//! Owns the `used_app_codes` table. A code is claimed by inserting its unique id: the primary
//! key makes the first claim win even between gateway processes sharing the database, so a code
//! replayed on another process is refused too. Rows of expired codes are pruned on the way.

use super::Store;
use crate::error::Result;

impl Store {
    /// Claims the code `jti` (valid until `expires_at`); false when it was claimed before.
    pub async fn claim_app_code(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        sqlx::query("DELETE FROM used_app_codes WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let result = sqlx::query(
            "INSERT INTO used_app_codes (jti, expires_at) VALUES ($1, $2) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}
