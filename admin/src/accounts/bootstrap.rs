//! First-start provisioning of the administrator account.
//!
//! Owns what an empty database is turned into: the default tenant, an "Admin" group holding every
//! right, a "User" group holding none, and a protected `admin` user in the Admin group with a
//! freshly generated password. The password is returned once for the caller to print and written
//! to `<data_dir>/IDENTIFIANTS.txt`, readable by the owner only.

use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sqlx::AnyConnection;

use super::password::{generate_password, hash_password};
use crate::error::{AdminError, Result};
use crate::store::groups::{find_group_by_name, insert_group, insert_member, update_permissions};
use crate::store::tenants::{find_default_tenant, insert_tenant};
use crate::store::users::{count_users, insert_user};
use crate::store::{NewGroup, NewUser, Permissions, Store};

/// Name of the credentials file written in the data directory.
pub const CREDENTIALS_FILE: &str = "IDENTIFIANTS.txt";
/// Username of the bootstrap administrator.
pub const ADMIN_USERNAME: &str = "admin";
/// Name of the tenant created on first start.
pub const DEFAULT_TENANT_NAME: &str = "Default";
/// Name of the group holding every right.
pub const ADMIN_GROUP_NAME: &str = "Admin";
/// Name of the group new users join, holding no administrative right.
pub const USER_GROUP_NAME: &str = "User";

/// What [`bootstrap_admin`] created.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapOutcome {
    /// Id of the administrator.
    pub user_id: i64,
    /// Their username.
    pub username: String,
    /// Their generated password, to show once; also written to `credentials_file`.
    pub password: String,
    /// Where the credentials were written.
    pub credentials_file: PathBuf,
}

// The password must not reach logs through `{:?}`.
impl fmt::Debug for BootstrapOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapOutcome")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("credentials_file", &self.credentials_file)
            .finish()
    }
}

/// Creates the administrator when the database has no user at all; otherwise does nothing,
/// returns `None` and leaves the credentials file alone.
///
/// Safe when several processes start together on one database: the work runs in one write
/// transaction whose first insert is on a unique key (the default tenant, or else the `admin`
/// username), so a concurrent starter blocks on it and then fails with a conflict, which is
/// taken to mean "someone else bootstrapped" and yields `None`. Only the winner writes the file,
/// and it writes it before committing, so a committed administrator always has its credentials
/// on disk (a failed commit removes the file again).
pub async fn bootstrap_admin(
    store: &Store,
    data_dir: &Path,
    now: i64,
) -> Result<Option<BootstrapOutcome>> {
    // The common case (users exist) stays read-only and never takes the write lock.
    if store.count_users().await? > 0 {
        return Ok(None);
    }
    let password = generate_password();
    // Hashing costs tens of milliseconds: do it before holding any lock.
    let hash = hash_password(&password)?;

    let mut tx = store.begin_write().await?;
    let user_id = match provision(&mut tx, hash, now).await {
        Ok(Some(id)) => id,
        Ok(None) | Err(AdminError::Conflict(_)) => return Ok(None),
        Err(e) => return Err(e),
    };

    let credentials_file = data_dir.join(CREDENTIALS_FILE);
    write_credentials(data_dir, &credentials_file, ADMIN_USERNAME, &password)?;
    if let Err(e) = tx.commit().await {
        let _ = std::fs::remove_file(&credentials_file);
        return Err(e.into());
    }
    tracing::info!(
        username = ADMIN_USERNAME,
        file = %credentials_file.display(),
        "created the administrator account"
    );
    Ok(Some(BootstrapOutcome {
        user_id,
        username: ADMIN_USERNAME.to_owned(),
        password,
        credentials_file,
    }))
}

/// The database half of the bootstrap; returns the new administrator's id, or `None` if users
/// appeared since the caller looked.
async fn provision(conn: &mut AnyConnection, hash: String, now: i64) -> Result<Option<i64>> {
    if count_users(&mut *conn).await? > 0 {
        return Ok(None);
    }
    let tenant = match find_default_tenant(&mut *conn).await? {
        Some(tenant) => tenant,
        None => insert_tenant(&mut *conn, DEFAULT_TENANT_NAME, true, now).await?,
    };
    let user = insert_user(
        &mut *conn,
        &NewUser {
            tenant_id: tenant.id,
            username: ADMIN_USERNAME.to_owned(),
            password_hash: Some(hash),
            display_name: "Administrator".to_owned(),
            protected: true,
            ..NewUser::default()
        },
        now,
    )
    .await?;

    // The groups may survive from an earlier life of this database (every user deleted to reset
    // the administrator): reuse them, but make sure "Admin" really grants everything.
    let admin_group = match find_group_by_name(&mut *conn, tenant.id, ADMIN_GROUP_NAME).await? {
        Some(group) => {
            update_permissions(&mut *conn, group.id, &Permissions::all()).await?;
            group
        }
        None => {
            let new = NewGroup {
                tenant_id: tenant.id,
                name: ADMIN_GROUP_NAME.to_owned(),
                description: "Full administrative rights.".to_owned(),
                permissions: Permissions::all(),
            };
            insert_group(&mut *conn, &new, now).await?
        }
    };
    if find_group_by_name(&mut *conn, tenant.id, USER_GROUP_NAME)
        .await?
        .is_none()
    {
        let new = NewGroup {
            tenant_id: tenant.id,
            name: USER_GROUP_NAME.to_owned(),
            description: "Regular users.".to_owned(),
            permissions: Permissions::default(),
        };
        insert_group(&mut *conn, &new, now).await?;
    }
    insert_member(&mut *conn, user.id, admin_group.id).await?;
    Ok(Some(user.id))
}

/// Writes the credentials file, created with mode 0600 from the start so it is never readable by
/// others, not even between creation and a later chmod.
fn write_credentials(data_dir: &Path, path: &Path, username: &str, password: &str) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| AdminError::io(data_dir, e))?;
    // A leftover file from an earlier database may carry looser permissions that opening it for
    // writing would keep; replace it instead. `create_new` also refuses to follow a symlink.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(AdminError::io(path, e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| AdminError::io(path, e))?;
    let contents =
        format!("Flowcase Gateway administrator\nusername: {username}\npassword: {password}\n");
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| AdminError::io(path, e))
}
