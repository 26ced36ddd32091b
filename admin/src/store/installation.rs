//! This installation's identity (table `installation`): a random id made on first use and kept
//! for good, shared by every gateway on the database and carried along by `flowcase db copy`.
//! What it marks must belong to this database and no other (profile volumes, see
//! `orchestrator::spec::profile_labels`).

use super::Store;
use crate::error::Result;

impl Store {
    /// The installation's id, made on the first call (the first of concurrent callers wins).
    pub async fn installation_id(&self) -> Result<String> {
        let select = "SELECT id FROM installation WHERE singleton = 1";
        if let Some(id) = sqlx::query_scalar::<_, String>(select)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(id);
        }
        sqlx::query(
            "INSERT INTO installation (singleton, id) VALUES (1, $1) \
             ON CONFLICT (singleton) DO NOTHING",
        )
        .bind(crate::auth::tokens::new_secret())
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar::<_, String>(select)
            .fetch_one(&self.pool)
            .await?)
    }
}
