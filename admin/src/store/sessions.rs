//! Login sessions.
//!
//! Owns the `sessions` table. The key is a hash of the cookie token, computed by the caller, so a
//! copy of the database cannot be replayed as cookies. Sessions expire on two clocks: an idle
//! deadline pushed forward by activity, and an absolute deadline that nothing extends. Revoked
//! rows are kept (with the revocation time) until pruned, so a replayed cookie is recognisable.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::codec::{flag, get_flag};
use super::{Store, expect_one};
use crate::error::Result;

macro_rules! columns {
    () => {
        "id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, remember, \
         client_addr, user_agent, revoked_at, oidc_provider, oidc_tokens, oidc_refresh_at"
    };
}

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    /// Hash of the session token (never the token itself).
    #[serde(skip)]
    pub id: String,
    /// The logged-in user.
    pub user_id: i64,
    /// Login time, unix milliseconds.
    pub created_at: i64,
    /// Last request seen.
    pub last_seen_at: i64,
    /// Expires at this time unless activity pushes it forward.
    pub idle_expires_at: i64,
    /// Expires at this time regardless of activity.
    pub absolute_expires_at: i64,
    /// "Remember me" was ticked (longer deadlines, persistent cookie).
    pub remember: bool,
    /// Client address at login.
    pub client_addr: Option<String>,
    /// Browser user agent at login.
    pub user_agent: Option<String>,
    /// When it was revoked (logout, password change, admin action).
    pub revoked_at: Option<i64>,
    /// The OpenID Connect provider the session was opened through.
    pub oidc_provider: Option<String>,
    /// The provider's refresh and ID tokens, sealed by the caller.
    #[serde(skip)]
    pub oidc_tokens: Option<String>,
    /// When the provider must be asked again whether the session may go on.
    pub oidc_refresh_at: Option<i64>,
}

impl Session {
    /// Whether the session still authenticates requests at time `now`.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.idle_expires_at && now < self.absolute_expires_at
    }

    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            created_at: row.try_get("created_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            idle_expires_at: row.try_get("idle_expires_at")?,
            absolute_expires_at: row.try_get("absolute_expires_at")?,
            remember: get_flag(row, "remember")?,
            client_addr: row.try_get("client_addr")?,
            user_agent: row.try_get("user_agent")?,
            revoked_at: row.try_get("revoked_at")?,
            oidc_provider: row.try_get("oidc_provider")?,
            oidc_tokens: row.try_get("oidc_tokens")?,
            oidc_refresh_at: row.try_get("oidc_refresh_at")?,
        })
    }
}

/// Input for [`Store::create_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// Hash of the session token.
    pub id: String,
    /// The logged-in user.
    pub user_id: i64,
    /// Initial idle deadline.
    pub idle_expires_at: i64,
    /// Absolute deadline.
    pub absolute_expires_at: i64,
    /// "Remember me".
    pub remember: bool,
    /// Client address.
    pub client_addr: Option<String>,
    /// Browser user agent.
    pub user_agent: Option<String>,
}

impl Store {
    /// Records a new session started at `now`. A duplicate id hash is a `Conflict`.
    pub async fn create_session(&self, new: &NewSession, now: i64) -> Result<Session> {
        let row = sqlx::query(concat!(
            "INSERT INTO sessions (id, user_id, created_at, last_seen_at, idle_expires_at, \
             absolute_expires_at, remember, client_addr, user_agent) \
             VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8) RETURNING ",
            columns!()
        ))
        .bind(new.id.as_str())
        .bind(new.user_id)
        .bind(now)
        .bind(new.idle_expires_at)
        .bind(new.absolute_expires_at)
        .bind(flag(new.remember))
        .bind(new.client_addr.as_deref())
        .bind(new.user_agent.as_deref())
        .fetch_one(&self.pool)
        .await?;
        Session::from_row(&row)
    }

    /// The session with this id hash, revoked or expired ones included (check
    /// [`Session::is_active`]).
    pub async fn get_session(&self, id_hash: &str) -> Result<Option<Session>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM sessions WHERE id = $1"
        ))
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Session::from_row).transpose()
    }

    /// Notes activity at `now` and moves the idle deadline. A revoked session is not touched
    /// (`NotFound`), so activity cannot resurrect it.
    pub async fn touch_session(&self, id_hash: &str, now: i64, idle_expires_at: i64) -> Result<()> {
        let result = sqlx::query(
            "UPDATE sessions SET last_seen_at = $2, idle_expires_at = $3 \
             WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id_hash)
        .bind(now)
        .bind(idle_expires_at)
        .execute(&self.pool)
        .await?;
        expect_one(result, "session")
    }

    /// Keeps sessions used through what they opened (app hosts, desktop tunnels) alive: each
    /// (id, when last used) gets `idle_ms` more from that use, within its absolute end, as a
    /// control-plane request would. Sessions already ended (revoked, idle too long) stay ended;
    /// remembered ones (no idle timeout) are left alone.
    pub async fn keep_sessions_alive(&self, used: &[(String, i64)], idle_ms: i64) -> Result<u64> {
        if used.is_empty() {
            return Ok(0);
        }
        // One transaction for the batch, as for instance activity: one commit, not one each.
        let mut tx = self.begin_write().await?;
        let mut kept = 0;
        for (id, at) in used {
            let result = sqlx::query(
                "UPDATE sessions SET last_seen_at = $2, idle_expires_at = CASE \
                   WHEN $3 < absolute_expires_at THEN $3 ELSE absolute_expires_at END \
                 WHERE id = $1 AND revoked_at IS NULL AND last_seen_at < $2 \
                   AND idle_expires_at > $2 AND idle_expires_at < absolute_expires_at",
            )
            .bind(id)
            .bind(*at)
            .bind(at.saturating_add(idle_ms))
            .execute(&mut *tx)
            .await?;
            kept += result.rows_affected();
        }
        tx.commit().await?;
        Ok(kept)
    }

    /// Ends the sessions whose idle time ran out, so that what derives from them (app cookies,
    /// desktop tunnels: they learn of revocations only) ends too. Returns how many.
    pub async fn end_idle_sessions(&self, now: i64) -> Result<u64> {
        let result = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE revoked_at IS NULL AND idle_expires_at <= $1 AND absolute_expires_at > $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Revokes one session. Revoking twice keeps the first revocation time.
    pub async fn revoke_session(&self, id_hash: &str, now: i64) -> Result<()> {
        let result =
            sqlx::query("UPDATE sessions SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
                .bind(id_hash)
                .bind(now)
                .execute(&self.pool)
                .await?;
        expect_one(result, "session")
    }

    /// Revokes every live session of a user (password change, disabling); returns how many.
    pub async fn revoke_user_sessions(&self, user_id: i64, now: i64) -> Result<u64> {
        let result = sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Revokes every live session of a user but one (the one changing its own password).
    pub async fn revoke_user_sessions_except(
        &self,
        user_id: i64,
        keep_id_hash: &str,
        now: i64,
    ) -> Result<u64> {
        let result = sqlx::query(
            "UPDATE sessions SET revoked_at = $2 \
             WHERE user_id = $1 AND revoked_at IS NULL AND id <> $3",
        )
        .bind(user_id)
        .bind(now)
        .bind(keep_id_hash)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    /// Records the OpenID Connect provider of a session, its tokens (sealed by the caller: the
    /// database never sees them in clear) and when to ask the provider again; called at login
    /// and after every refresh.
    pub async fn set_session_oidc(
        &self,
        id_hash: &str,
        provider: &str,
        sealed_tokens: &str,
        refresh_at: i64,
    ) -> Result<()> {
        let result = sqlx::query(
            "UPDATE sessions SET oidc_provider = $2, oidc_tokens = $3, oidc_refresh_at = $4 \
             WHERE id = $1",
        )
        .bind(id_hash)
        .bind(provider)
        .bind(sealed_tokens)
        .bind(refresh_at)
        .execute(&self.pool)
        .await?;
        expect_one(result, "session")
    }

    /// Takes the right to refresh a session's provider tokens: moves the refresh deadline from
    /// `expected` to `lease_until` only if nobody moved it first. One conditional UPDATE, so it
    /// holds across gateway processes sharing the database.
    pub async fn claim_session_refresh(
        &self,
        id_hash: &str,
        expected: i64,
        lease_until: i64,
    ) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE sessions SET oidc_refresh_at = $3 WHERE id = $1 AND oidc_refresh_at = $2",
        )
        .bind(id_hash)
        .bind(expected)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Sessions revoked at or after `since` that have not reached their absolute expiry, as
    /// `(id hash, absolute expiry)`: what the front door must stop honouring in app-host
    /// cookies, and until when (after it the cookies have expired anyway).
    pub async fn revoked_sessions_since(&self, since: i64, now: i64) -> Result<Vec<(String, i64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT id, absolute_expires_at FROM sessions \
             WHERE revoked_at IS NOT NULL AND revoked_at >= $1 AND absolute_expires_at > $2",
        )
        .bind(since)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
