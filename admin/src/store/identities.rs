//! Links between local accounts and identities at OpenID Connect providers.
//!
//! Owns the `external_identities` table: (provider id, subject) → user. The subject is the
//! provider's stable identifier; e-mail addresses change and are never used to link.

use super::Store;
use crate::error::Result;

impl Store {
    /// The user linked to `subject` at `provider`.
    pub async fn find_identity(&self, provider: &str, subject: &str) -> Result<Option<i64>> {
        let user_id: Option<i64> = sqlx::query_scalar(
            "SELECT user_id FROM external_identities WHERE provider = $1 AND subject = $2",
        )
        .bind(provider)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        Ok(user_id)
    }

    /// Links `subject` at `provider` to `user_id`. Linking an identity twice is a `Conflict`.
    pub async fn link_identity(
        &self,
        provider: &str,
        subject: &str,
        user_id: i64,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO external_identities (provider, subject, user_id, created_at, last_login_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(provider)
        .bind(subject)
        .bind(user_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn touch_identity(&self, provider: &str, subject: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE external_identities SET last_login_at = $3 WHERE provider = $1 AND subject = $2")
            .bind(provider)
            .bind(subject)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
