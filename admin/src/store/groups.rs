//! Groups, their permission flags, and memberships.
//!
//! Owns the `groups` and `memberships` tables. Rights come only from flags on groups (never from
//! a group's name, which is what made the old product's "Admin" check forgeable); a user's rights
//! are the union of the flags of every group they belong to. Group names are unique per tenant.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use super::codec::{flag, get_flag};
use super::{Store, expect_one};
use crate::error::{AdminError, Result};

/// Declares [`Permissions`] from the list of flag columns, so that the struct, the INSERT, the
/// SELECT and the union query can never disagree about which flags exist. Adding a flag means
/// one line here plus a column in both migrations.
macro_rules! permissions {
    ($( $(#[$doc:meta])* $flag:ident, )+) => {
        /// What a group grants. Each field is a column of `groups`.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub struct Permissions {
            $( $(#[$doc])* pub $flag: bool, )+
        }

        impl Permissions {
            /// The flag column names, in declaration order.
            pub const COLUMNS: &'static [&'static str] = &[$(stringify!($flag)),+];

            /// Every right (the bootstrap "Admin" group).
            pub fn all() -> Self {
                Self { $($flag: true,)+ }
            }

            /// The values in [`Self::COLUMNS`] order.
            fn values(&self) -> [bool; Self::COLUMNS.len()] {
                [$(self.$flag),+]
            }

            fn from_row(row: &AnyRow) -> Result<Self> {
                Ok(Self { $($flag: get_flag(row, stringify!($flag))?,)+ })
            }

            /// The rights granted by either set: what a member of both groups holds.
            pub fn union(&self, other: &Self) -> Self {
                Self { $($flag: self.$flag || other.$flag,)+ }
            }

            /// Sets the flag whose column is `name`; false when no flag has that name.
            pub fn set(&mut self, name: &str, value: bool) -> bool {
                match name {
                    $(stringify!($flag) => {
                        self.$flag = value;
                        true
                    })+
                    _ => false,
                }
            }
        }
    };
}

permissions! {
    /// May open the administration panel at all.
    admin_panel,
    /// May list users.
    view_users,
    /// May create, modify and delete users.
    edit_users,
    /// May list groups.
    view_groups,
    /// May create, modify and delete groups.
    edit_groups,
    /// May list all droplets, including inactive ones.
    view_droplets,
    /// May create, modify and delete droplets.
    edit_droplets,
    /// May list every user's instances.
    view_instances,
    /// May stop and delete every user's instances.
    edit_instances,
    /// May list workshops.
    view_workshops,
    /// May create, modify and delete workshops.
    edit_workshops,
    /// May browse the droplet registry catalogue.
    view_registry,
    /// May import droplets from the registry and manage registry sources.
    edit_registry,
    /// May list tenants.
    view_tenants,
    /// May create, modify and delete tenants.
    edit_tenants,
}

impl Permissions {
    /// Whether at least one right is granted.
    pub fn any(&self) -> bool {
        self.values().iter().any(|&v| v)
    }

    /// Whether every right `other` grants is granted here too.
    pub fn includes(&self, other: &Self) -> bool {
        self.values()
            .iter()
            .zip(other.values())
            .all(|(&mine, theirs)| mine || !theirs)
    }

    /// The column names of the granted flags, in declaration order.
    pub fn granted(&self) -> Vec<&'static str> {
        Self::COLUMNS
            .iter()
            .zip(self.values())
            .filter_map(|(&name, on)| on.then_some(name))
            .collect()
    }
}

const BASE_COLUMNS: &[&str] = &[
    "id",
    "tenant_id",
    "name",
    "description",
    "created_at",
    "max_instances",
];

/// All columns of `groups`, optionally qualified with a table alias.
fn group_columns(alias: &str) -> String {
    BASE_COLUMNS
        .iter()
        .chain(Permissions::COLUMNS)
        .map(|c| format!("{alias}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// The statements below are assembled once from the flag list; they contain only constant
// identifiers, never caller input.

static INSERT_GROUP: LazyLock<String> = LazyLock::new(|| {
    let placeholders: Vec<String> = (5..5 + Permissions::COLUMNS.len())
        .map(|n| format!("${n}"))
        .collect();
    format!(
        "INSERT INTO groups (tenant_id, name, description, created_at, {}) \
         VALUES ($1, $2, $3, $4, {}) RETURNING {}",
        Permissions::COLUMNS.join(", "),
        placeholders.join(", "),
        group_columns("")
    )
});

static SELECT_GROUP_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM groups WHERE id = $1", group_columns("")));

static SELECT_GROUP_BY_NAME: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM groups WHERE tenant_id = $1 AND name = $2",
        group_columns("")
    )
});

static UPDATE_PERMISSIONS: LazyLock<String> = LazyLock::new(|| {
    let assignments: Vec<String> = Permissions::COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 2))
        .collect();
    format!("UPDATE groups SET {} WHERE id = $1", assignments.join(", "))
});

static SELECT_GROUPS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM groups ORDER BY tenant_id, name",
        group_columns("")
    )
});

static UPDATE_GROUP: LazyLock<String> = LazyLock::new(|| {
    let assignments: Vec<String> = Permissions::COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 4))
        .collect();
    format!(
        "UPDATE groups SET name = $2, description = $3, {} WHERE id = $1 RETURNING {}",
        assignments.join(", "),
        group_columns("")
    )
});

static SELECT_GROUPS_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM groups ORDER BY tenant_id, name LIMIT $1 OFFSET $2",
        group_columns("")
    )
});

static SELECT_TENANT_GROUPS_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM groups WHERE tenant_id = $1 ORDER BY name LIMIT $2 OFFSET $3",
        group_columns("")
    )
});

static SELECT_GROUPS_OF_USER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM groups g JOIN memberships m ON m.group_id = g.id \
         WHERE m.user_id = $1 ORDER BY g.name",
        group_columns("g.")
    )
});

// MAX over 0/1 is a logical OR; COALESCE covers users without any group.
static SELECT_USER_PERMISSIONS: LazyLock<String> = LazyLock::new(|| {
    let unions: Vec<String> = Permissions::COLUMNS
        .iter()
        .map(|c| format!("COALESCE(MAX(g.{c}), 0) AS {c}"))
        .collect();
    format!(
        "SELECT {} FROM memberships m JOIN groups g ON g.id = m.group_id WHERE m.user_id = $1",
        unions.join(", ")
    )
});

/// A group of users sharing a set of rights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Primary key.
    pub id: i64,
    /// Owning tenant.
    pub tenant_id: i64,
    /// Name, unique within the tenant.
    pub name: String,
    /// Free-form description.
    pub description: String,
    /// Rights granted to members.
    pub permissions: Permissions,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// Instances the members may hold together (`None` = no group limit); set with
    /// [`Store::set_group_instance_limit`].
    pub instance_limit: Option<i64>,
}

impl Group {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            permissions: Permissions::from_row(row)?,
            created_at: row.try_get("created_at")?,
            instance_limit: row.try_get("max_instances")?,
        })
    }
}

/// Input for [`Store::create_group`].
#[derive(Debug, Clone, Default)]
pub struct NewGroup {
    /// Owning tenant.
    pub tenant_id: i64,
    /// Name, unique within the tenant.
    pub name: String,
    /// Free-form description.
    pub description: String,
    /// Rights granted to members.
    pub permissions: Permissions,
}

impl Store {
    /// Creates a group. A name already used in the tenant is a `Conflict`.
    pub async fn create_group(&self, new: &NewGroup, now: i64) -> Result<Group> {
        insert_group(&self.pool, new, now).await
    }

    /// The group with this id.
    pub async fn get_group(&self, id: i64) -> Result<Option<Group>> {
        let row = sqlx::query(SELECT_GROUP_BY_ID.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Group::from_row).transpose()
    }

    /// The group with this name in a tenant.
    pub async fn find_group_by_name(&self, tenant_id: i64, name: &str) -> Result<Option<Group>> {
        find_group_by_name(&self.pool, tenant_id, name).await
    }

    /// Replaces a group's rights.
    pub async fn set_group_permissions(&self, id: i64, permissions: &Permissions) -> Result<()> {
        update_permissions(&self.pool, id, permissions).await
    }

    /// Every group, by tenant then name.
    pub async fn list_groups(&self) -> Result<Vec<Group>> {
        let rows = sqlx::query(SELECT_GROUPS.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Group::from_row).collect()
    }

    /// Replaces a group's name, description and rights; returns the updated row. A name already
    /// used in the tenant is a `Conflict`.
    pub async fn update_group(
        &self,
        id: i64,
        name: &str,
        description: &str,
        permissions: &Permissions,
    ) -> Result<Group> {
        let mut query = sqlx::query(UPDATE_GROUP.as_str())
            .bind(id)
            .bind(name)
            .bind(description);
        for value in permissions.values() {
            query = query.bind(flag(value));
        }
        let row = query.fetch_optional(&self.pool).await?;
        row.as_ref()
            .map(Group::from_row)
            .transpose()?
            .ok_or(AdminError::NotFound("group"))
    }

    /// One page of groups, of one tenant (by name) or (`None`) of all (by tenant, then name),
    /// with the number of groups the filter matches.
    pub async fn page_groups(
        &self,
        tenant_id: Option<i64>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Group>, i64)> {
        let (rows, total) = match tenant_id {
            Some(tenant_id) => {
                let rows = sqlx::query(SELECT_TENANT_GROUPS_PAGE.as_str())
                    .bind(tenant_id)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.pool)
                    .await?;
                let total: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM groups WHERE tenant_id = $1")
                        .bind(tenant_id)
                        .fetch_one(&self.pool)
                        .await?;
                (rows, total)
            }
            None => {
                let rows = sqlx::query(SELECT_GROUPS_PAGE.as_str())
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.pool)
                    .await?;
                let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM groups")
                    .fetch_one(&self.pool)
                    .await?;
                (rows, total)
            }
        };
        let groups = rows.iter().map(Group::from_row).collect::<Result<_>>()?;
        Ok((groups, total))
    }

    /// Makes `group_ids` exactly the groups of a user, in one transaction so that nobody ever
    /// observes the user between "old groups removed" and "new groups added". An unknown user or
    /// group is a `Reference` error and changes nothing.
    pub async fn set_user_groups(&self, user_id: i64, group_ids: &[i64]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM memberships WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for &group_id in group_ids {
            insert_member(&mut *tx, user_id, group_id).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a group; its memberships and droplet grants go with it.
    pub async fn delete_group(&self, id: i64) -> Result<()> {
        let result = sqlx::query("DELETE FROM groups WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        expect_one(result, "group")
    }

    /// Puts a user in a group; doing it twice is harmless.
    pub async fn add_member(&self, user_id: i64, group_id: i64) -> Result<()> {
        insert_member(&self.pool, user_id, group_id).await
    }

    /// Takes a user out of a group; returns whether they were in it.
    pub async fn remove_member(&self, user_id: i64, group_id: i64) -> Result<bool> {
        let result = sqlx::query("DELETE FROM memberships WHERE user_id = $1 AND group_id = $2")
            .bind(user_id)
            .bind(group_id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// The groups a user belongs to, by name.
    pub async fn groups_of_user(&self, user_id: i64) -> Result<Vec<Group>> {
        let rows = sqlx::query(SELECT_GROUPS_OF_USER.as_str())
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Group::from_row).collect()
    }

    /// The union of the rights of every group the user belongs to (none for no group).
    pub async fn user_permissions(&self, user_id: i64) -> Result<Permissions> {
        let row = sqlx::query(SELECT_USER_PERMISSIONS.as_str())
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?;
        Permissions::from_row(&row)
    }
}

/// What a group forbids its members in desktops. Restrictions, not rights: they are not part of
/// [`Permissions`] (whose union grants), and a member of any restricting group is restricted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clipboard {
    /// No copying from the desktop to the browser (guacd's `disable-copy`).
    pub disable_copy: bool,
    /// No pasting from the browser into the desktop (guacd's `disable-paste`).
    pub disable_paste: bool,
}

impl Store {
    /// The clipboard restrictions of one group; None when the group does not exist.
    pub async fn group_clipboard(&self, group_id: i64) -> Result<Option<Clipboard>> {
        let row = sqlx::query("SELECT disable_copy, disable_paste FROM groups WHERE id = $1")
            .bind(group_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Clipboard {
                disable_copy: get_flag(&row, "disable_copy")?,
                disable_paste: get_flag(&row, "disable_paste")?,
            })
        })
        .transpose()
    }

    /// Replaces a group's clipboard restrictions.
    pub async fn set_group_clipboard(&self, group_id: i64, clipboard: Clipboard) -> Result<()> {
        let result =
            sqlx::query("UPDATE groups SET disable_copy = $2, disable_paste = $3 WHERE id = $1")
                .bind(group_id)
                .bind(flag(clipboard.disable_copy))
                .bind(flag(clipboard.disable_paste))
                .execute(&self.pool)
                .await?;
        expect_one(result, "group")
    }

    /// A user's clipboard restrictions: those of any of their groups.
    pub async fn user_clipboard(&self, user_id: i64) -> Result<Clipboard> {
        // MAX over 0/1 is a logical OR; COALESCE covers users without any group.
        let row = sqlx::query(
            "SELECT COALESCE(MAX(g.disable_copy), 0) AS disable_copy, \
             COALESCE(MAX(g.disable_paste), 0) AS disable_paste \
             FROM memberships m JOIN groups g ON g.id = m.group_id WHERE m.user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Clipboard {
            disable_copy: get_flag(&row, "disable_copy")?,
            disable_paste: get_flag(&row, "disable_paste")?,
        })
    }
}

// Executor-generic so that bootstrap can run them inside its transaction.

pub(crate) async fn insert_group<'e, E: Executor<'e, Database = Any>>(
    exec: E,
    new: &NewGroup,
    now: i64,
) -> Result<Group> {
    let mut query = sqlx::query(INSERT_GROUP.as_str())
        .bind(new.tenant_id)
        .bind(new.name.as_str())
        .bind(new.description.as_str())
        .bind(now);
    for value in new.permissions.values() {
        query = query.bind(flag(value));
    }
    let row = query.fetch_one(exec).await?;
    Group::from_row(&row)
}

pub(crate) async fn find_group_by_name<'e, E: Executor<'e, Database = Any>>(
    exec: E,
    tenant_id: i64,
    name: &str,
) -> Result<Option<Group>> {
    let row = sqlx::query(SELECT_GROUP_BY_NAME.as_str())
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(exec)
        .await?;
    row.as_ref().map(Group::from_row).transpose()
}

pub(crate) async fn update_permissions<'e, E: Executor<'e, Database = Any>>(
    exec: E,
    id: i64,
    permissions: &Permissions,
) -> Result<()> {
    let mut query = sqlx::query(UPDATE_PERMISSIONS.as_str()).bind(id);
    for value in permissions.values() {
        query = query.bind(flag(value));
    }
    expect_one(query.execute(exec).await?, "group")
}

pub(crate) async fn insert_member<'e, E: Executor<'e, Database = Any>>(
    exec: E,
    user_id: i64,
    group_id: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO memberships (user_id, group_id) VALUES ($1, $2) \
         ON CONFLICT (user_id, group_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(group_id)
    .execute(exec)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_list_every_flag_once_with_matching_placeholders() {
        let n = Permissions::COLUMNS.len();
        assert_eq!(n, 15);
        let last = format!("${}", 4 + n);
        assert!(INSERT_GROUP.contains(&last));
        assert!(!INSERT_GROUP.contains(&format!("${}", 5 + n)));
        assert_eq!(SELECT_USER_PERMISSIONS.matches("COALESCE(MAX(").count(), n);
        assert!(UPDATE_PERMISSIONS.contains(&format!("${}", 1 + n)));
        assert!(!UPDATE_PERMISSIONS.contains(&format!("${}", 2 + n)));
        assert!(UPDATE_GROUP.contains(&format!("${}", 3 + n)));
        assert!(!UPDATE_GROUP.contains(&format!("${}", 4 + n)));
    }

    #[test]
    fn union_includes_set_and_granted_agree() {
        let viewer = Permissions {
            view_users: true,
            ..Permissions::default()
        };
        let mut editor = Permissions::default();
        assert!(editor.set("edit_users", true));
        assert!(!editor.set("is_admin", true));
        let both = viewer.union(&editor);
        assert_eq!(both.granted(), ["view_users", "edit_users"]);
        assert!(both.includes(&viewer) && both.includes(&editor));
        assert!(!viewer.includes(&both));
        assert!(viewer.includes(&Permissions::default()));
        assert!(Permissions::all().includes(&both));
        assert_eq!(Permissions::all().granted(), Permissions::COLUMNS);
    }

    #[test]
    fn all_and_default_are_opposites() {
        assert!(Permissions::all().values().iter().all(|&v| v));
        assert!(!Permissions::default().any());
        assert!(Permissions::all().any());
    }
}
