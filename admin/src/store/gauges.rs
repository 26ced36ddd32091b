//! Counts the metrics collector publishes as gauges: active sessions, instances by state and
//! droplet, and warm-pool containers by droplet. Grouped by droplet *name*: the catalogue is
//! small and admin-made, so the label stays bounded, unlike instance or user ids.

use sqlx::Row;

use super::{Result, Store};

/// One snapshot of the gauges' counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GaugeCounts {
    pub active_sessions: i64,
    /// (state, droplet name, count), states other than `gone`.
    pub instances: Vec<(String, String, i64)>,
    /// (droplet name, containers ready to hand out), for every droplet.
    pub pool_ready: Vec<(String, i64)>,
}

impl Store {
    /// The gauge counts at time `now` (milliseconds).
    pub async fn gauge_counts(&self, now: i64) -> Result<GaugeCounts> {
        let active_sessions: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL \
             AND idle_expires_at > $1 AND absolute_expires_at > $2",
        )
        .bind(now)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let instances = sqlx::query(
            "SELECT i.status AS status, d.name AS droplet, COUNT(*) AS n \
             FROM instances i JOIN droplets d ON d.id = i.droplet_id \
             WHERE i.status <> 'gone' GROUP BY i.status, d.name",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("status")?,
                row.try_get("droplet")?,
                row.try_get("n")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
        // Every droplet, with zero when its pool is empty or it has none: a panel shows 0, not
        // "no data".
        let pool_ready = sqlx::query(
            "SELECT d.name AS droplet, COUNT(p.id) AS n \
             FROM droplets d LEFT JOIN pool_containers p \
             ON p.droplet_id = d.id AND p.status = 'ready' GROUP BY d.name",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("droplet")?, row.try_get("n")?)))
        .collect::<Result<Vec<_>>>()?;
        Ok(GaugeCounts {
            active_sessions,
            instances,
            pool_ready,
        })
    }

    /// Connections the pool holds open, and how many of them are idle.
    pub fn pool_connections(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }
}
