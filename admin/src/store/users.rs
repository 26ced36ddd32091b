//! User accounts.
//!
//! Owns the `users` table. Usernames and e-mail addresses are stored case-folded (by
//! [`fold_case`], in Rust rather than with SQL `LOWER`, whose Unicode handling differs between
//! SQLite and PostgreSQL), which makes both uniqueness and the login lookup case-insensitive with
//! identical results on either backend. What a user may do lives in groups (see
//! [`super::groups`]); deleting users and enforcing the protected flag is the callers' policy.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use super::codec::{flag, get_flag};
use super::{Store, expect_one};
use crate::error::{AdminError, Result};

macro_rules! columns {
    () => {
        "id, tenant_id, username, email, password_hash, display_name, external, disabled, \
         protected, created_at, updated_at"
    };
}

/// The canonical form of a username or e-mail address, as stored and as looked up.
pub fn fold_case(login: &str) -> String {
    login.to_lowercase()
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Primary key; never reused after deletion.
    pub id: i64,
    /// Owning tenant.
    pub tenant_id: i64,
    /// Unique login name, case-folded.
    pub username: String,
    /// Unique e-mail address, case-folded, if known.
    pub email: Option<String>,
    /// Argon2id PHC string; `None` for accounts that cannot log in with a password (SSO).
    #[serde(skip_serializing)]
    pub password_hash: Option<String>,
    /// Free-form name shown in the interface.
    pub display_name: String,
    /// Account managed by an external identity provider.
    pub external: bool,
    /// Login refused while set.
    pub disabled: bool,
    /// Cannot be deleted or demoted through the interface (the bootstrap administrator).
    pub protected: bool,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// Last modification time, unix milliseconds.
    pub updated_at: i64,
}

impl User {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            username: row.try_get("username")?,
            email: row.try_get("email")?,
            password_hash: row.try_get("password_hash")?,
            display_name: row.try_get("display_name")?,
            external: get_flag(row, "external")?,
            disabled: get_flag(row, "disabled")?,
            protected: get_flag(row, "protected")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// Input for [`Store::create_user`]. Username and e-mail are case-folded on insert.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// Owning tenant.
    pub tenant_id: i64,
    /// Login name.
    pub username: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Argon2id PHC string (see [`crate::accounts::hash_password`]).
    pub password_hash: Option<String>,
    /// Name shown in the interface.
    pub display_name: String,
    /// Managed by an external identity provider.
    pub external: bool,
    /// Created disabled.
    pub disabled: bool,
    /// Protected from deletion.
    pub protected: bool,
}

/// The editable fields of a user, for [`Store::update_user`]; username and e-mail are
/// case-folded like on insert.
#[derive(Debug, Clone, Default)]
pub struct UserFields {
    /// Login name.
    pub username: String,
    /// E-mail address (`None` removes it).
    pub email: Option<String>,
    /// Name shown in the interface.
    pub display_name: String,
}

impl Store {
    /// Creates a user. A taken username or e-mail (in any letter case) is a `Conflict`.
    pub async fn create_user(&self, new: &NewUser, now: i64) -> Result<User> {
        insert_user(&self.pool, new, now).await
    }

    /// The user with this id.
    pub async fn get_user(&self, id: i64) -> Result<Option<User>> {
        let row = sqlx::query(concat!("SELECT ", columns!(), " FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(User::from_row).transpose()
    }

    /// The user whose username or e-mail equals `login`, ignoring letter case. Should a username
    /// equal somebody else's e-mail, the username wins, so nobody can capture another person's
    /// login by registering it as an address.
    pub async fn find_user_by_login(&self, login: &str) -> Result<Option<User>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM users WHERE username = $1 OR email = $1 \
             ORDER BY CASE WHEN username = $1 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(fold_case(login))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(User::from_row).transpose()
    }

    /// Every user, by username.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM users ORDER BY username"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(User::from_row).collect()
    }

    /// One page of users by username, of one tenant or (`None`) of all, with the number of users
    /// the filter matches. Filtering and paging happen in SQL so a page costs the same however
    /// many users there are.
    pub async fn page_users(
        &self,
        tenant_id: Option<i64>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<User>, i64)> {
        let (rows, total) = match tenant_id {
            Some(tenant_id) => {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM users WHERE tenant_id = $1 ORDER BY username LIMIT $2 OFFSET $3"
                ))
                .bind(tenant_id)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?;
                let total: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE tenant_id = $1")
                        .bind(tenant_id)
                        .fetch_one(&self.pool)
                        .await?;
                (rows, total)
            }
            None => {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM users ORDER BY username LIMIT $1 OFFSET $2"
                ))
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?;
                (rows, count_users(&self.pool).await?)
            }
        };
        let users = rows.iter().map(User::from_row).collect::<Result<_>>()?;
        Ok((users, total))
    }

    /// [`Store::page_users`] narrowed to users whose username, e-mail address or display name
    /// contains `query` (case-insensitively; `%` and `_` are matched literally).
    pub async fn search_users(
        &self,
        tenant_id: Option<i64>,
        query: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<User>, i64)> {
        macro_rules! matching {
            () => {
                "(username LIKE $1 ESCAPE '!' OR COALESCE(email, '') LIKE $1 ESCAPE '!' \
                 OR LOWER(display_name) LIKE $1 ESCAPE '!')"
            };
        }
        let escaped: String = fold_case(query.trim())
            .chars()
            .flat_map(|c| match c {
                '%' | '_' | '!' => vec!['!', c],
                c => vec![c],
            })
            .collect();
        let pattern = format!("%{escaped}%");
        let (rows, total) = match tenant_id {
            Some(tenant_id) => {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM users WHERE ",
                    matching!(),
                    " AND tenant_id = $2 ORDER BY username LIMIT $3 OFFSET $4"
                ))
                .bind(&pattern)
                .bind(tenant_id)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?;
                let total: i64 = sqlx::query_scalar(concat!(
                    "SELECT COUNT(*) FROM users WHERE ",
                    matching!(),
                    " AND tenant_id = $2"
                ))
                .bind(&pattern)
                .bind(tenant_id)
                .fetch_one(&self.pool)
                .await?;
                (rows, total)
            }
            None => {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM users WHERE ",
                    matching!(),
                    " ORDER BY username LIMIT $2 OFFSET $3"
                ))
                .bind(&pattern)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?;
                let total: i64 =
                    sqlx::query_scalar(concat!("SELECT COUNT(*) FROM users WHERE ", matching!()))
                        .bind(&pattern)
                        .fetch_one(&self.pool)
                        .await?;
                (rows, total)
            }
        };
        let users = rows.iter().map(User::from_row).collect::<Result<_>>()?;
        Ok((users, total))
    }

    /// The members of a group, by username.
    pub async fn users_in_group(&self, group_id: i64) -> Result<Vec<User>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM users WHERE id IN (SELECT user_id FROM memberships WHERE group_id = $1) \
             ORDER BY username"
        ))
        .bind(group_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(User::from_row).collect()
    }

    /// Replaces a user's username, e-mail and display name; returns the updated row. A taken
    /// username or e-mail is a `Conflict`.
    pub async fn update_user(&self, id: i64, fields: &UserFields, now: i64) -> Result<User> {
        let row = sqlx::query(concat!(
            "UPDATE users SET username = $2, email = $3, display_name = $4, updated_at = $5 \
             WHERE id = $1 RETURNING ",
            columns!()
        ))
        .bind(id)
        .bind(fold_case(&fields.username))
        .bind(fields.email.as_deref().map(fold_case))
        .bind(fields.display_name.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(User::from_row)
            .transpose()?
            .ok_or(AdminError::NotFound("user"))
    }

    /// Replaces the password hash (`None` removes password login).
    pub async fn set_password_hash(&self, id: i64, hash: Option<&str>, now: i64) -> Result<()> {
        let result =
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
                .bind(id)
                .bind(hash)
                .bind(now)
                .execute(&self.pool)
                .await?;
        expect_one(result, "user")
    }

    /// Enables or disables login.
    pub async fn set_user_disabled(&self, id: i64, disabled: bool, now: i64) -> Result<()> {
        let result = sqlx::query("UPDATE users SET disabled = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(flag(disabled))
            .bind(now)
            .execute(&self.pool)
            .await?;
        expect_one(result, "user")
    }

    /// Number of users.
    pub async fn count_users(&self) -> Result<i64> {
        count_users(&self.pool).await
    }

    /// Deletes a user with their sessions, API keys, memberships and workshop seats. Refused
    /// (`Reference`) while the user still has instances: those stand for containers that must be
    /// destroyed first.
    pub async fn delete_user(&self, id: i64) -> Result<()> {
        let result = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        expect_one(result, "user")
    }
}

// Executor-generic so that bootstrap can run them inside its transaction.

pub(crate) async fn insert_user<'e, E: Executor<'e, Database = Any>>(
    exec: E,
    new: &NewUser,
    now: i64,
) -> Result<User> {
    let row = sqlx::query(concat!(
        "INSERT INTO users (tenant_id, username, email, password_hash, display_name, external, \
         disabled, protected, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING ",
        columns!()
    ))
    .bind(new.tenant_id)
    .bind(fold_case(&new.username))
    .bind(new.email.as_deref().map(fold_case))
    .bind(new.password_hash.as_deref())
    .bind(new.display_name.as_str())
    .bind(flag(new.external))
    .bind(flag(new.disabled))
    .bind(flag(new.protected))
    .bind(now)
    .fetch_one(exec)
    .await?;
    User::from_row(&row)
}

pub(crate) async fn count_users<'e, E: Executor<'e, Database = Any>>(exec: E) -> Result<i64> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(exec)
        .await?;
    Ok(count)
}
