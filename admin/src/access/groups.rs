//! Groups: list, read, create, change (name, description, permission flags, instance limit),
//! delete.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Access, Page, PageRequest, Right, validate};
use crate::accounts::bootstrap::{ADMIN_GROUP_NAME, USER_GROUP_NAME};
use crate::error::{AdminError, Result};
use crate::store::{Clipboard, Group, NewGroup, Permissions};

/// `POST /api/v1/groups`. `permissions` names the flags to grant (`{"view_users": true}`);
/// unnamed flags are off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroupRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub permissions: BTreeMap<String, bool>,
    /// Missing: the creator's own tenant.
    #[serde(default)]
    pub tenant_id: Option<i64>,
}

/// `PATCH /api/v1/groups/{id}`: a missing field keeps its value; `permissions` changes only the
/// flags it names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupChanges {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub permissions: Option<BTreeMap<String, bool>>,
    /// Instances the members may hold together: a number sets the limit, `null` removes it,
    /// absent keeps it. A launch beyond it fails with `quota_exceeded`.
    #[serde(default, deserialize_with = "present")]
    pub instance_limit: Option<Option<i64>>,
}

/// Marks a field that is present (even as `null`) as `Some`, so "absent" and "null" differ.
fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Largest group instance limit accepted (far above any real deployment; catches typos).
pub const MAX_INSTANCE_LIMIT: i64 = 100_000;

/// A group, and whether it is one of the built-in groups (which cannot be deleted or renamed).
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    #[serde(flatten)]
    pub group: Group,
    pub builtin: bool,
}

/// A member as listed on a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRef {
    pub id: i64,
    pub username: String,
    pub display_name: String,
}

/// A group with its members.
#[derive(Debug, Clone, Serialize)]
pub struct GroupDetail {
    #[serde(flatten)]
    pub group: GroupView,
    pub members: Vec<UserRef>,
}

/// Which built-in group, if any. Decided by name within the default tenant, for protection
/// only; see the module documentation of [`super`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    No,
    Admin,
    User,
}

impl Builtin {
    fn of(group: &Group, default_tenant: Option<i64>) -> Self {
        if Some(group.tenant_id) != default_tenant {
            return Self::No;
        }
        match group.name.as_str() {
            ADMIN_GROUP_NAME => Self::Admin,
            USER_GROUP_NAME => Self::User,
            _ => Self::No,
        }
    }
}

fn group_conflict(e: AdminError) -> AdminError {
    match e {
        AdminError::Conflict(_) => {
            AdminError::Conflict("this tenant already has a group with this name".into())
        }
        other => other,
    }
}

/// The flags `after` turns on and off compared with `before`, for the audit log.
fn flag_changes(before: &Permissions, after: &Permissions) -> serde_json::Value {
    let on = after.granted();
    let off = before.granted();
    serde_json::json!({
        "granted": on.iter().filter(|f| !off.contains(f)).collect::<Vec<_>>(),
        "revoked": off.iter().filter(|f| !on.contains(f)).collect::<Vec<_>>(),
    })
}

impl Access<'_> {
    /// `view_groups`. Groups of the principal's tenant, or of `tenant_id` / every tenant for a
    /// principal who sees across tenants.
    pub async fn list_groups(
        &self,
        tenant_id: Option<i64>,
        page: PageRequest,
    ) -> Result<Page<GroupView>> {
        self.require(Right::ViewGroups)?;
        let filter = self.read_scope().list_filter(tenant_id)?;
        let found = self
            .store()
            .page_groups(filter, page.limit, page.offset)
            .await?;
        let default_tenant = self.default_tenant_id().await?;
        Ok(Page::new(found, page).map(|group| GroupView {
            builtin: Builtin::of(&group, default_tenant) != Builtin::No,
            group,
        }))
    }

    /// `view_groups`. One group with its members.
    pub async fn get_group(&self, id: i64) -> Result<GroupDetail> {
        self.require(Right::ViewGroups)?;
        let group = self.visible_group(id).await?;
        let members = self
            .store()
            .users_in_group(id)
            .await?
            .into_iter()
            .map(|u| UserRef {
                id: u.id,
                username: u.username,
                display_name: u.display_name,
            })
            .collect();
        Ok(GroupDetail {
            group: self.group_view(group).await?,
            members,
        })
    }

    /// `edit_groups` (and `edit_tenants` for another tenant). The group may grant only rights
    /// the principal holds.
    pub async fn create_group(&self, req: NewGroupRequest, now: i64) -> Result<GroupView> {
        self.require(Right::EditGroups)?;
        let tenant_id = self.target_tenant(req.tenant_id).await?;
        let new = NewGroup {
            tenant_id,
            name: validate::group_name(&req.name)?,
            description: validate::description(&req.description)?,
            permissions: validate::permissions(Permissions::default(), &req.permissions)?,
        };
        self.check_grantable(&new.permissions)?;
        let group = self
            .store()
            .create_group(&new, now)
            .await
            .map_err(group_conflict)?;
        self.audit(
            "group.create",
            "group",
            group.id,
            serde_json::json!({
                "name": group.name,
                "tenant_id": group.tenant_id,
                "permissions": group.permissions.granted(),
            }),
            now,
        )
        .await;
        self.group_view(group).await
    }

    /// `edit_groups` over the group's tenant (its administrators; the instance limit as well).
    /// Built-in groups keep their names and the built-in Admin group keeps every
    /// right; no change may leave the principal or the protected administrator with fewer
    /// rights.
    pub async fn update_group(
        &self,
        id: i64,
        changes: GroupChanges,
        now: i64,
    ) -> Result<GroupView> {
        self.require(Right::EditGroups)?;
        let group = self.writable_group(id).await?;
        let builtin = Builtin::of(&group, self.default_tenant_id().await?);
        let name = match &changes.name {
            Some(text) => validate::group_name(text)?,
            None => group.name.clone(),
        };
        let description = match &changes.description {
            Some(text) => validate::description(text)?,
            None => group.description.clone(),
        };
        let permissions = match &changes.permissions {
            Some(flags) => validate::permissions(group.permissions, flags)?,
            None => group.permissions,
        };
        if builtin != Builtin::No && name != group.name {
            return Err(AdminError::Protected(
                "the built-in groups cannot be renamed".into(),
            ));
        }
        if builtin == Builtin::Admin && permissions != Permissions::all() {
            return Err(AdminError::Protected(
                "the built-in Admin group keeps every right".into(),
            ));
        }
        let instance_limit = match changes.instance_limit {
            Some(Some(limit)) if !(0..=MAX_INSTANCE_LIMIT).contains(&limit) => {
                return Err(AdminError::InvalidInput {
                    field: "instance_limit",
                    reason: format!(
                        "must be a whole number from 0 to {MAX_INSTANCE_LIMIT}, or null for no limit"
                    ),
                });
            }
            Some(limit) => limit,
            None => group.instance_limit,
        };
        self.check_grantable(&permissions)?;
        if permissions != group.permissions {
            self.check_members_keep_rights(id, Some(&permissions))
                .await?;
        }

        let mut diff = serde_json::Map::new();
        if name != group.name {
            diff.insert("name".into(), serde_json::json!([group.name, name]));
        }
        if description != group.description {
            diff.insert("description".into(), serde_json::json!(true));
        }
        if permissions != group.permissions {
            diff.insert(
                "permissions".into(),
                flag_changes(&group.permissions, &permissions),
            );
        }
        if instance_limit != group.instance_limit {
            diff.insert(
                "instance_limit".into(),
                serde_json::json!([group.instance_limit, instance_limit]),
            );
        }
        if diff.is_empty() {
            return self.group_view(group).await;
        }
        if instance_limit != group.instance_limit {
            self.store()
                .set_group_instance_limit(id, instance_limit)
                .await?;
        }
        let updated = self
            .store()
            .update_group(id, &name, &description, &permissions)
            .await
            .map_err(group_conflict)?;
        self.audit(
            "group.update",
            "group",
            id,
            serde_json::json!({"name": updated.name, "changes": diff}),
            now,
        )
        .await;
        self.group_view(updated).await
    }

    /// `edit_groups`. Not the built-in groups; not a group whose loss would take rights from the
    /// principal or the protected administrator.
    pub async fn delete_group(&self, id: i64, now: i64) -> Result<()> {
        self.require(Right::EditGroups)?;
        let group = self.writable_group(id).await?;
        if Builtin::of(&group, self.default_tenant_id().await?) != Builtin::No {
            return Err(AdminError::Protected(
                "the built-in groups cannot be deleted".into(),
            ));
        }
        self.check_members_keep_rights(id, None).await?;
        self.store().delete_group(id).await?;
        self.audit(
            "group.delete",
            "group",
            id,
            serde_json::json!({
                "name": group.name,
                "tenant_id": group.tenant_id,
                "permissions": group.permissions.granted(),
            }),
            now,
        )
        .await;
        Ok(())
    }

    async fn default_tenant_id(&self) -> Result<Option<i64>> {
        Ok(self.store().default_tenant().await?.map(|t| t.id))
    }

    async fn group_view(&self, group: Group) -> Result<GroupView> {
        let builtin = Builtin::of(&group, self.default_tenant_id().await?) != Builtin::No;
        Ok(GroupView { group, builtin })
    }

    async fn visible_group(&self, id: i64) -> Result<Group> {
        let group = self
            .store()
            .get_group(id)
            .await?
            .ok_or(AdminError::NotFound("group"))?;
        self.check_visible(group.tenant_id, "group")?;
        Ok(group)
    }

    /// A group the principal may change: in their write scope, granting nothing they lack.
    /// A group's clipboard restrictions in desktops; reading them needs `view_groups`.
    pub async fn group_clipboard(&self, id: i64) -> Result<Clipboard> {
        self.require(Right::ViewGroups)?;
        let group = self.visible_group(id).await?;
        self.store()
            .group_clipboard(group.id)
            .await?
            .ok_or(AdminError::NotFound("group"))
    }

    /// Replaces a group's clipboard restrictions; needs `edit_groups` over its tenant (and,
    /// as for every change to a group, every right it grants).
    pub async fn set_group_clipboard(
        &self,
        id: i64,
        clipboard: Clipboard,
        now: i64,
    ) -> Result<Clipboard> {
        self.require(Right::EditGroups)?;
        let group = self.writable_group(id).await?;
        let before = self
            .store()
            .group_clipboard(group.id)
            .await?
            .ok_or(AdminError::NotFound("group"))?;
        if before != clipboard {
            self.store()
                .set_group_clipboard(group.id, clipboard)
                .await?;
            self.audit(
                "group.clipboard",
                "group",
                group.id,
                serde_json::json!({"before": before, "after": clipboard}),
                now,
            )
            .await;
        }
        Ok(clipboard)
    }

    async fn writable_group(&self, id: i64) -> Result<Group> {
        let group = self.visible_group(id).await?;
        self.check_writable(group.tenant_id, "group")?;
        self.check_outranks(
            &group.permissions,
            "this group grants rights you do not hold",
        )?;
        Ok(group)
    }

    /// Refuses to give group `id` the rights `flags` (`None`: to delete it) when that would
    /// take rights from the principal or from the protected administrator.
    async fn check_members_keep_rights(&self, id: i64, flags: Option<&Permissions>) -> Result<()> {
        for member in self.store().users_in_group(id).await? {
            let is_self = member.id == self.principal.user.id;
            if !is_self && !member.protected {
                continue;
            }
            let after = self.rights_after_group_change(member.id, id, flags).await?;
            if is_self {
                self.check_no_self_demotion(&after)?;
            } else if !after.includes(&self.store().user_permissions(member.id).await?) {
                return Err(AdminError::Protected(
                    "this would remove rights from the built-in administrator".into(),
                ));
            }
        }
        Ok(())
    }
}
