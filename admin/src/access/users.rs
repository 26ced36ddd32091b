//! Users: list, read, create, change, disable, reset a password, delete, set group memberships.

use serde::{Deserialize, Deserializer, Serialize};

use super::{Access, Page, PageRequest, Right, validate};
use crate::accounts;
use crate::auth::policy;
use crate::error::{AdminError, Result};
use crate::store::users::UserFields;
use crate::store::{ApiKey, Group, NewUser, Permissions, User};

/// Groups one request may assign; more is certainly a mistake or an attempt to make the
/// validation loop expensive.
const MAX_GROUPS_PER_USER: usize = 100;

/// `POST /api/v1/users`. No `Debug`: it may carry a password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    pub username: String,
    #[serde(default)]
    pub email: Option<String>,
    /// Empty or missing: the username.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Checked against the password policy; missing: one is generated and returned once.
    #[serde(default)]
    pub password: Option<String>,
    /// Missing: the creator's own tenant.
    #[serde(default)]
    pub tenant_id: Option<i64>,
    #[serde(default)]
    pub group_ids: Vec<i64>,
    #[serde(default)]
    pub disabled: bool,
}

/// `PATCH /api/v1/users/{id}`: a missing field keeps its value; `"email": null` removes the
/// address.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChanges {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub email: Option<Option<String>>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// Tells "field absent" (`None`, through `default`) from "field is null" (`Some(None)`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> std::result::Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A group as listed on a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupRef {
    pub id: i64,
    pub name: String,
}

/// A user with their groups and the union of their rights. The password hash is never part of
/// it (`User` does not serialize it).
#[derive(Debug, Clone, Serialize)]
pub struct UserDetail {
    #[serde(flatten)]
    pub user: User,
    pub groups: Vec<GroupRef>,
    pub permissions: Permissions,
}

/// A created user, with the generated password if none was given: shown this once, never stored
/// in clear. No `Debug`, so it cannot reach a log by accident.
#[derive(Serialize)]
pub struct CreatedUser {
    #[serde(flatten)]
    pub user: UserDetail,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_password: Option<String>,
}

fn union_of(groups: &[Group]) -> Permissions {
    groups
        .iter()
        .fold(Permissions::default(), |acc, g| acc.union(&g.permissions))
}

/// Turns the database's unique-violation text (which names tables and indexes) into words for
/// the administrator. Both backends name the column in it.
fn user_conflict(e: AdminError) -> AdminError {
    match e {
        AdminError::Conflict(message) if message.contains("email") => {
            AdminError::Conflict("this e-mail address is already used by another account".into())
        }
        AdminError::Conflict(_) => AdminError::Conflict("this username is already taken".into()),
        other => other,
    }
}

/// Argon2 takes tens of milliseconds of CPU: off the async workers.
async fn hash_blocking(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || accounts::hash_password(&password))
        .await
        .map_err(|e| AdminError::PasswordHash(e.to_string()))?
}

impl Access<'_> {
    /// `view_users`. Users of the principal's tenant, or of `tenant_id` / every tenant for a
    /// principal who sees across tenants.
    pub async fn list_users(
        &self,
        tenant_id: Option<i64>,
        page: PageRequest,
    ) -> Result<Page<User>> {
        self.require(Right::ViewUsers)?;
        let filter = self.read_scope().list_filter(tenant_id)?;
        let found = self
            .store()
            .page_users(filter, page.limit, page.offset)
            .await?;
        Ok(Page::new(found, page))
    }

    /// `view_users`. [`Access::list_users`] narrowed to users whose username, e-mail address or
    /// display name contains `query`; an empty query lists everyone.
    pub async fn search_users(
        &self,
        tenant_id: Option<i64>,
        query: &str,
        page: PageRequest,
    ) -> Result<Page<User>> {
        if query.trim().is_empty() {
            return self.list_users(tenant_id, page).await;
        }
        self.require(Right::ViewUsers)?;
        let filter = self.read_scope().list_filter(tenant_id)?;
        let found = self
            .store()
            .search_users(filter, query, page.limit, page.offset)
            .await?;
        Ok(Page::new(found, page))
    }

    /// `view_users`. One user with groups and rights.
    pub async fn get_user(&self, id: i64) -> Result<UserDetail> {
        self.require(Right::ViewUsers)?;
        let user = self.visible_user(id).await?;
        self.user_detail(user).await
    }

    /// `edit_users` (and `edit_tenants` for another tenant). Creates a local account, optionally
    /// in groups of its tenant granting no more than the creator holds.
    pub async fn create_user(&self, req: NewUserRequest, now: i64) -> Result<CreatedUser> {
        self.require(Right::EditUsers)?;
        let tenant_id = self.target_tenant(req.tenant_id).await?;
        let username = accounts::validate::username(&req.username)?;
        let email = match req.email.as_deref() {
            Some(text) => accounts::validate::email(Some(text))?,
            None => None,
        };
        let display_name =
            validate::display_name(req.display_name.as_deref().unwrap_or(""), &username)?;
        let groups = self.groups_in_tenant(tenant_id, &req.group_ids).await?;
        self.check_grantable(&union_of(&groups))?;
        let (password, generated) = match req.password {
            Some(password) => {
                if let Some(reason) = policy::check(&password, &username) {
                    return Err(AdminError::InvalidInput {
                        field: "password",
                        reason: reason.into(),
                    });
                }
                (password, false)
            }
            None => (accounts::generate_password(), true),
        };
        let hash = hash_blocking(password.clone()).await?;
        let new = NewUser {
            tenant_id,
            username,
            email,
            password_hash: Some(hash),
            display_name,
            external: false,
            disabled: req.disabled,
            protected: false,
        };
        let user = self
            .store()
            .create_user(&new, now)
            .await
            .map_err(user_conflict)?;
        let group_ids: Vec<i64> = groups.iter().map(|g| g.id).collect();
        if !group_ids.is_empty() {
            self.store().set_user_groups(user.id, &group_ids).await?;
        }
        self.audit(
            "user.create",
            "user",
            user.id,
            serde_json::json!({
                "username": user.username,
                "tenant_id": user.tenant_id,
                "group_ids": group_ids,
                "disabled": user.disabled,
                "password_generated": generated,
            }),
            now,
        )
        .await;
        Ok(CreatedUser {
            user: self.user_detail(user).await?,
            generated_password: generated.then_some(password),
        })
    }

    /// `edit_users`. Changes username, e-mail, display name and/or the disabled flag. Every
    /// check runs before anything is written, so a refused request changes nothing.
    pub async fn update_user(&self, id: i64, changes: UserChanges, now: i64) -> Result<UserDetail> {
        self.require(Right::EditUsers)?;
        let (user, _) = self.writable_user(id).await?;
        let disable = changes.disabled.filter(|&d| d != user.disabled);
        if disable == Some(true) {
            self.check_may_disable(&user)?;
        }
        let username = match &changes.username {
            Some(text) => accounts::validate::username(text)?,
            None => user.username.clone(),
        };
        let email = match &changes.email {
            Some(Some(text)) => accounts::validate::email(Some(text))?,
            Some(None) => None,
            None => user.email.clone(),
        };
        let display_name = match &changes.display_name {
            Some(text) => validate::display_name(text, &username)?,
            None => user.display_name.clone(),
        };

        let mut diff = serde_json::Map::new();
        // Usernames and e-mails are stored case-folded: compare in that form.
        let folded = |s: &str| crate::store::users::fold_case(s);
        if folded(&username) != user.username {
            diff.insert(
                "username".into(),
                serde_json::json!([user.username, folded(&username)]),
            );
        }
        if email.as_deref().map(folded) != user.email {
            diff.insert(
                "email".into(),
                serde_json::json!([user.email, email.as_deref().map(folded)]),
            );
        }
        if display_name != user.display_name {
            diff.insert(
                "display_name".into(),
                serde_json::json!([user.display_name, display_name]),
            );
        }
        let mut user = user;
        if !diff.is_empty() {
            let fields = UserFields {
                username,
                email,
                display_name,
            };
            user = self
                .store()
                .update_user(id, &fields, now)
                .await
                .map_err(user_conflict)?;
            self.audit(
                "user.update",
                "user",
                id,
                serde_json::json!({ "changes": diff }),
                now,
            )
            .await;
        }
        if let Some(disabled) = disable {
            user = self.apply_disabled(user, disabled, now).await?;
        }
        self.user_detail(user).await
    }

    /// `edit_users`. Disabling ends every session of the user at once.
    pub async fn set_user_disabled(&self, id: i64, disabled: bool, now: i64) -> Result<UserDetail> {
        self.require(Right::EditUsers)?;
        let (user, _) = self.writable_user(id).await?;
        if disabled == user.disabled {
            return self.user_detail(user).await;
        }
        if disabled {
            self.check_may_disable(&user)?;
        }
        let user = self.apply_disabled(user, disabled, now).await?;
        self.user_detail(user).await
    }

    /// `edit_users`. Sets `new_password` (policy checked) or a generated one, which is returned
    /// (the only time it is shown). Ends every session of the user.
    pub async fn reset_user_password(
        &self,
        id: i64,
        new_password: Option<String>,
        now: i64,
    ) -> Result<Option<String>> {
        self.require(Right::EditUsers)?;
        let (user, _) = self.writable_user(id).await?;
        if user.id == self.principal.user.id {
            return Err(AdminError::Protected(
                "change your own password through /api/v1/account/password, which asks for the \
                 current one"
                    .into(),
            ));
        }
        if user.external {
            return Err(AdminError::Protected(
                "this account signs in through an identity provider and has no password here"
                    .into(),
            ));
        }
        let (password, generated) = match new_password {
            Some(password) => (password, false),
            None => (accounts::generate_password(), true),
        };
        self.auth.set_password(&user, &password, None, now).await?;
        self.audit(
            "user.password_reset",
            "user",
            user.id,
            serde_json::json!({"username": user.username, "generated": generated}),
            now,
        )
        .await;
        Ok(generated.then_some(password))
    }

    /// `edit_users`. Neither the protected administrator nor the principal themselves; a user
    /// who still has instances is refused (`Reference`) until those are destroyed.
    pub async fn delete_user(&self, id: i64, now: i64) -> Result<()> {
        self.require(Right::EditUsers)?;
        let (user, _) = self.writable_user(id).await?;
        if user.id == self.principal.user.id {
            return Err(AdminError::Protected(
                "you cannot delete your own account".into(),
            ));
        }
        if user.protected {
            return Err(AdminError::Protected(
                "the built-in administrator cannot be deleted".into(),
            ));
        }
        self.store().delete_user(id).await.map_err(|e| match e {
            AdminError::Reference(_) => {
                AdminError::Reference("this user still has instances; delete them first".into())
            }
            other => other,
        })?;
        self.audit(
            "user.delete",
            "user",
            id,
            serde_json::json!({"username": user.username, "tenant_id": user.tenant_id}),
            now,
        )
        .await;
        Ok(())
    }

    /// `view_users`. The user's API keys, revoked and expired ones included (never their
    /// secrets), so an administrator can see what acts in the user's name.
    pub async fn list_user_api_keys(&self, id: i64) -> Result<Vec<ApiKey>> {
        self.require(Right::ViewUsers)?;
        let user = self.visible_user(id).await?;
        self.store().list_api_keys_for_user(user.id).await
    }

    /// `edit_users`. Revokes one of the user's API keys at once. There is deliberately no
    /// way for an administrator to create a key for someone else: a key acts as its user, so
    /// minting one would be impersonation without the user's knowledge.
    pub async fn revoke_user_api_key(&self, id: i64, key_id: i64, now: i64) -> Result<()> {
        self.require(Right::EditUsers)?;
        let (user, _) = self.writable_user(id).await?;
        let key = self
            .store()
            .list_api_keys_for_user(user.id)
            .await?
            .into_iter()
            .find(|k| k.id == key_id)
            .ok_or(AdminError::NotFound("api key"))?;
        self.store().revoke_api_key(key.id, now).await?;
        self.audit(
            "api_key.revoke",
            "user",
            user.id,
            serde_json::json!({"username": user.username, "key_id": key.id, "key_name": key.name}),
            now,
        )
        .await;
        Ok(())
    }

    /// `edit_users`. Makes `group_ids` exactly the user's groups. The groups must belong to the
    /// user's tenant and grant no more than the principal holds; the protected administrator and
    /// the principal themselves cannot lose rights this way.
    pub async fn set_user_groups(
        &self,
        id: i64,
        group_ids: &[i64],
        now: i64,
    ) -> Result<UserDetail> {
        self.require(Right::EditUsers)?;
        let (user, before) = self.writable_user(id).await?;
        let groups = self.groups_in_tenant(user.tenant_id, group_ids).await?;
        let after = union_of(&groups);
        self.check_grantable(&after)?;
        if user.protected && !after.includes(&before) {
            return Err(AdminError::Protected(
                "the built-in administrator cannot be demoted".into(),
            ));
        }
        if user.id == self.principal.user.id {
            self.check_no_self_demotion(&after)?;
        }
        let old: Vec<i64> = self
            .store()
            .groups_of_user(id)
            .await?
            .iter()
            .map(|g| g.id)
            .collect();
        let new: Vec<i64> = groups.iter().map(|g| g.id).collect();
        self.store().set_user_groups(id, &new).await?;
        let added: Vec<i64> = new.iter().copied().filter(|g| !old.contains(g)).collect();
        let removed: Vec<i64> = old.iter().copied().filter(|g| !new.contains(g)).collect();
        self.audit(
            "user.groups",
            "user",
            id,
            serde_json::json!({
                "username": user.username,
                "added": added,
                "removed": removed,
                "permissions_before": before.granted(),
                "permissions_after": after.granted(),
            }),
            now,
        )
        .await;
        self.user_detail(user).await
    }

    async fn visible_user(&self, id: i64) -> Result<User> {
        let user = self
            .store()
            .get_user(id)
            .await?
            .ok_or(AdminError::NotFound("user"))?;
        self.check_visible(user.tenant_id, "user")?;
        Ok(user)
    }

    /// A user the principal may change, with the rights the user holds now.
    async fn writable_user(&self, id: i64) -> Result<(User, Permissions)> {
        let user = self.visible_user(id).await?;
        self.check_writable(user.tenant_id, "user")?;
        let held = self.store().user_permissions(user.id).await?;
        self.check_outranks(&held, "this user holds rights you do not hold")?;
        Ok((user, held))
    }

    fn check_may_disable(&self, user: &User) -> Result<()> {
        if user.id == self.principal.user.id {
            return Err(AdminError::Protected(
                "you cannot disable your own account".into(),
            ));
        }
        if user.protected {
            return Err(AdminError::Protected(
                "the built-in administrator cannot be disabled".into(),
            ));
        }
        Ok(())
    }

    async fn apply_disabled(&self, user: User, disabled: bool, now: i64) -> Result<User> {
        self.store()
            .set_user_disabled(user.id, disabled, now)
            .await?;
        // Sessions of a disabled user are refused anyway; ending them makes it visible in the
        // session list and keeps it so if the account is enabled again.
        let ended = if disabled {
            self.store().revoke_user_sessions(user.id, now).await?
        } else {
            0
        };
        self.audit(
            if disabled {
                "user.disable"
            } else {
                "user.enable"
            },
            "user",
            user.id,
            serde_json::json!({"username": user.username, "sessions_ended": ended}),
            now,
        )
        .await;
        Ok(User {
            disabled,
            updated_at: now,
            ..user
        })
    }

    async fn user_detail(&self, user: User) -> Result<UserDetail> {
        let groups = self.store().groups_of_user(user.id).await?;
        let permissions = union_of(&groups);
        Ok(UserDetail {
            user,
            groups: groups
                .into_iter()
                .map(|g| GroupRef {
                    id: g.id,
                    name: g.name,
                })
                .collect(),
            permissions,
        })
    }

    /// The groups named by id, each of which must belong to `tenant_id`. A group of another
    /// tenant gets the same answer as a missing one.
    async fn groups_in_tenant(&self, tenant_id: i64, ids: &[i64]) -> Result<Vec<Group>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > MAX_GROUPS_PER_USER {
            return Err(AdminError::InvalidInput {
                field: "group_ids",
                reason: format!("at most {MAX_GROUPS_PER_USER} groups"),
            });
        }
        let mut groups = Vec::with_capacity(ids.len());
        for id in ids {
            match self.store().get_group(id).await? {
                Some(group) if group.tenant_id == tenant_id => groups.push(group),
                _ => {
                    return Err(AdminError::InvalidInput {
                        field: "group_ids",
                        reason: format!("there is no group {id} in the user's tenant"),
                    });
                }
            }
        }
        Ok(groups)
    }
}
