//! Droplet icons fetched from other sites and served by the gateway (`/droplets/{id}/icon`).
//!
//! Owns the `droplet_icons` table (migration 0012): one icon per droplet, its bytes, checked
//! content type, ETag and the URL it came from. Fetching and checking the bytes is
//! [`crate::orchestrator::icons`]'s job; this module only stores what it is given.

use std::collections::HashMap;

use sqlx::Row;

use super::Store;
use crate::error::Result;

/// A stored icon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropletIcon {
    pub droplet_id: i64,
    pub source_url: String,
    pub content_type: String,
    pub body: Vec<u8>,
    pub etag: String,
    pub fetched_at: i64,
}

impl Store {
    /// Stores (or replaces) the icon of a droplet.
    pub async fn put_droplet_icon(&self, icon: &DropletIcon) -> Result<()> {
        sqlx::query(
            "INSERT INTO droplet_icons \
             (droplet_id, source_url, content_type, body, etag, fetched_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (droplet_id) DO UPDATE SET source_url = $2, content_type = $3, \
             body = $4, etag = $5, fetched_at = $6",
        )
        .bind(icon.droplet_id)
        .bind(&icon.source_url)
        .bind(&icon.content_type)
        .bind(icon.body.clone())
        .bind(&icon.etag)
        .bind(icon.fetched_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the icon of a droplet (its URL changed or was cleared).
    pub async fn delete_droplet_icon(&self, droplet_id: i64) -> Result<()> {
        sqlx::query("DELETE FROM droplet_icons WHERE droplet_id = $1")
            .bind(droplet_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The icon of a droplet, bytes included.
    pub async fn droplet_icon(&self, droplet_id: i64) -> Result<Option<DropletIcon>> {
        let row = sqlx::query(
            "SELECT droplet_id, source_url, content_type, body, etag, fetched_at \
             FROM droplet_icons WHERE droplet_id = $1",
        )
        .bind(droplet_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(DropletIcon {
                droplet_id: r.try_get("droplet_id")?,
                source_url: r.try_get("source_url")?,
                content_type: r.try_get("content_type")?,
                body: r.try_get("body")?,
                etag: r.try_get("etag")?,
                fetched_at: r.try_get("fetched_at")?,
            })
        })
        .transpose()
    }

    /// Droplet id → (the URL its icon came from, its ETag), for every stored icon: what pages
    /// need to point at `/droplets/{id}/icon`, without the bytes.
    pub async fn droplet_icon_tags(&self) -> Result<HashMap<i64, (String, String)>> {
        let rows = sqlx::query("SELECT droplet_id, source_url, etag FROM droplet_icons")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("droplet_id")?,
                    (r.try_get("source_url")?, r.try_get("etag")?),
                ))
            })
            .collect()
    }
}
