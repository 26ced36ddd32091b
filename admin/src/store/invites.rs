//! Invitation codes for registration in `invite` mode.
//!
//! Owns the `invites` table. Only the digest of a code is stored. Redeeming is one conditional
//! `UPDATE`, so two people racing for the last use of a code cannot both get it.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use super::Store;
use crate::error::Result;

macro_rules! columns {
    () => {
        "id, tenant_id, group_id, created_by, note, max_uses, uses, created_at, expires_at, \
         revoked_at"
    };
}

/// An invitation (without its code, which only its creator ever saw).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invite {
    pub id: i64,
    /// Tenant the new account joins.
    pub tenant_id: i64,
    /// Group the new account joins, if any.
    pub group_id: Option<i64>,
    pub created_by: Option<i64>,
    pub note: String,
    pub max_uses: i64,
    pub uses: i64,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl Invite {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            group_id: row.try_get("group_id")?,
            created_by: row.try_get("created_by")?,
            note: row.try_get("note")?,
            max_uses: row.try_get("max_uses")?,
            uses: row.try_get("uses")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    }
}

/// Input for [`Store::create_invite`].
#[derive(Debug, Clone, Default)]
pub struct NewInvite {
    pub code_hash: String,
    pub tenant_id: i64,
    pub group_id: Option<i64>,
    pub created_by: Option<i64>,
    pub note: String,
    pub max_uses: i64,
    pub expires_at: Option<i64>,
}

impl Store {
    pub async fn create_invite(&self, new: &NewInvite, now: i64) -> Result<Invite> {
        let row = sqlx::query(concat!(
            "INSERT INTO invites (code_hash, tenant_id, group_id, created_by, note, max_uses, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
            columns!()
        ))
        .bind(&new.code_hash)
        .bind(new.tenant_id)
        .bind(new.group_id)
        .bind(new.created_by)
        .bind(&new.note)
        .bind(new.max_uses)
        .bind(now)
        .bind(new.expires_at)
        .fetch_one(&self.pool)
        .await?;
        Invite::from_row(&row)
    }

    /// A tenant's invitations, newest first.
    pub async fn list_invites(&self, tenant_id: i64) -> Result<Vec<Invite>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM invites WHERE tenant_id = $1 ORDER BY id DESC"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Invite::from_row).collect()
    }

    pub async fn revoke_invite(&self, id: i64, now: i64) -> Result<()> {
        let result =
            sqlx::query("UPDATE invites SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?;
        super::expect_one(result, "invite")
    }
}

/// Takes one use of the invitation whose code hashes to `code_hash`, if it is still valid;
/// returns the invitation as it was before this use, or None.
pub(crate) async fn redeem_invite<'e, E: Executor<'e, Database = Any>>(
    exec: E,
    code_hash: &str,
    now: i64,
) -> Result<Option<Invite>> {
    let row = sqlx::query(concat!(
        "UPDATE invites SET uses = uses + 1 WHERE code_hash = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $2) AND uses < max_uses RETURNING ",
        columns!()
    ))
    .bind(code_hash)
    .bind(now)
    .fetch_optional(exec)
    .await?;
    row.as_ref().map(Invite::from_row).transpose()
}
