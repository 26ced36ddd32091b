//! The one authorization layer of the administration API: who may list, read and change which
//! users, groups, tenants, droplets and workshops, and who reads the audit log and the system
//! report.
//!
//! Every admin operation goes through a method of [`Access`], which checks, in this order:
//!
//! 1. the **permission flag** of the operation (`view_users` to read users, `edit_groups` to
//!    change groups, ...), failing with [`AdminError::Forbidden`]; rights come only from the
//!    union of the principal's groups' flags, never from a group's name;
//! 2. the **tenant scope** of the object: a principal sees objects of their own tenant only,
//!    unless they hold `view_tenants` (read across tenants) or `edit_tenants` (read and write
//!    across tenants, and manage tenants). An object outside the read scope is
//!    [`AdminError::NotFound`], exactly like a missing one, so ids of other tenants reveal
//!    nothing; an object the principal may read but not change is `Forbidden`;
//! 3. **no escalation**: nobody grants a right they do not hold (creating or editing a group,
//!    setting memberships), nor acts on a user or group holding rights they do not hold (so a
//!    tenant administrator cannot reset a global administrator's password and become one);
//! 4. **protected entities and lock-outs**: the bootstrap administrator cannot be deleted,
//!    disabled or demoted; the built-in groups cannot be deleted or renamed, and the built-in
//!    "Admin" group keeps every right; nobody disables, deletes or reduces the rights of their
//!    own account by accident. These refusals are [`AdminError::Protected`].
//!
//! Successful changes are recorded in the audit log here as well, so the log and the checks
//! cannot drift apart. Handlers only extract the request, call one method and map the error.
//!
//! The built-in groups are recognised as the groups named "Admin" and "User" in the default
//! tenant: that identifies them for *protection* only (the schema has no flag for it), and since
//! they can be neither renamed nor deleted, the identification stays stable. Rights never
//! depend on it.

mod audit;
pub mod desktop;
mod droplet_icons;
mod droplets;
mod groups;
mod instances;
mod system;
mod tenants;
mod users;
pub mod validate;
mod workshops;

use serde::Serialize;

use crate::auth::{Auth, ClientInfo, Principal};
use crate::error::{AdminError, Result};
use crate::store::{NewAuditEntry, Permissions, Store};

pub use audit::{AuditQuery, Pruned};
pub use droplets::{
    DropletAdminView, DropletQuery, DropletView, IconFetch, icon_src, refresh_icon,
};
pub use groups::{GroupChanges, GroupDetail, GroupView, NewGroupRequest, UserRef};
pub use instances::{InstanceQuery, Started, StatsScope};
pub use tenants::NewTenantRequest;
pub use users::{CreatedUser, GroupRef, NewUserRequest, UserChanges, UserDetail};
pub use workshops::{
    DropletRef, MyWorkshop, NewWorkshopRequest, ParticipantView, SeatInstance, WorkshopChanges,
    WorkshopParticipants, WorkshopView,
};

/// Page size when the request names none.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page served; bigger requests are cut down to it.
pub const MAX_LIMIT: i64 = 200;

/// Which slice of a list to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: i64,
    pub offset: i64,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

impl PageRequest {
    /// Reads `?limit=&offset=` as given in the query string: a missing value takes its default,
    /// a limit above [`MAX_LIMIT`] is cut down to it, and anything else malformed is refused.
    pub fn parse(limit: Option<&str>, offset: Option<&str>) -> Result<Self> {
        let number = |field: &'static str, text: &str| {
            text.trim()
                .parse::<i64>()
                .map_err(|_| AdminError::InvalidInput {
                    field,
                    reason: "must be a whole number".into(),
                })
        };
        let limit = match limit {
            Some(text) => number("limit", text)?,
            None => DEFAULT_LIMIT,
        };
        if limit < 1 {
            return Err(AdminError::InvalidInput {
                field: "limit",
                reason: "must be at least 1".into(),
            });
        }
        let offset = match offset {
            Some(text) => number("offset", text)?,
            None => 0,
        };
        if offset < 0 {
            return Err(AdminError::InvalidInput {
                field: "offset",
                reason: "must not be negative".into(),
            });
        }
        Ok(Self {
            limit: limit.min(MAX_LIMIT),
            offset,
        })
    }
}

/// One page of a list, with the size of the whole list.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

impl<T> Page<T> {
    fn new((items, total): (Vec<T>, i64), page: PageRequest) -> Self {
        Self {
            items,
            total,
            limit: page.limit,
            offset: page.offset,
        }
    }

    fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            total: self.total,
            limit: self.limit,
            offset: self.offset,
        }
    }
}

/// The tenants a principal reaches for one kind of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    Tenant(i64),
}

impl Scope {
    /// Tenants whose objects a holder of `rights` in tenant `own_tenant` may change: every
    /// tenant with `edit_tenants` (`view_tenants` only shows the others), else their own.
    pub fn write(rights: &Permissions, own_tenant: i64) -> Self {
        if rights.edit_tenants {
            Self::All
        } else {
            Self::Tenant(own_tenant)
        }
    }

    /// Whose instances (besides their own) a holder of `rights` may start, stop, delete and
    /// open (desktops, watch links): `edit_instances` over the write scope; `None` without it.
    pub fn others_instances(rights: &Permissions, own_tenant: i64) -> Option<Self> {
        rights
            .edit_instances
            .then(|| Self::write(rights, own_tenant))
    }

    pub fn admits(self, tenant_id: i64) -> bool {
        match self {
            Self::All => true,
            Self::Tenant(own) => own == tenant_id,
        }
    }

    /// The tenant filter to apply to a list, given the one the request asked for. A tenant
    /// outside the scope is reported as missing, whether it exists or not.
    fn list_filter(self, requested: Option<i64>) -> Result<Option<i64>> {
        match (self, requested) {
            (Self::All, requested) => Ok(requested),
            (Self::Tenant(own), None) => Ok(Some(own)),
            (Self::Tenant(own), Some(asked)) if asked == own => Ok(Some(own)),
            (Self::Tenant(_), Some(_)) => Err(AdminError::NotFound("tenant")),
        }
    }
}

/// Which permission flag an operation needs. Named, rather than passed as a `bool`, so that the
/// check and the message naming the missing right cannot disagree.
#[derive(Debug, Clone, Copy)]
enum Right {
    AdminPanel,
    ViewUsers,
    EditUsers,
    ViewGroups,
    EditGroups,
    ViewWorkshops,
    EditWorkshops,
    ViewTenants,
    EditTenants,
}

impl Right {
    fn granted_by(self, p: &Permissions) -> bool {
        match self {
            Self::AdminPanel => p.admin_panel,
            Self::ViewUsers => p.view_users,
            Self::EditUsers => p.edit_users,
            Self::ViewGroups => p.view_groups,
            Self::EditGroups => p.edit_groups,
            Self::ViewWorkshops => p.view_workshops,
            Self::EditWorkshops => p.edit_workshops,
            Self::ViewTenants => p.view_tenants,
            Self::EditTenants => p.edit_tenants,
        }
    }

    fn refusal(self) -> AdminError {
        AdminError::Forbidden(match self {
            Self::AdminPanel => "this needs the admin_panel right",
            Self::ViewUsers => "this needs the view_users right",
            Self::EditUsers => "this needs the edit_users right",
            Self::ViewGroups => "this needs the view_groups right",
            Self::EditGroups => "this needs the edit_groups right",
            Self::ViewWorkshops => "this needs the view_workshops right",
            Self::EditWorkshops => "this needs the edit_workshops right",
            Self::ViewTenants => "this needs the view_tenants right",
            Self::EditTenants => "this needs the edit_tenants right",
        })
    }
}

/// The authorization layer bound to one request's principal. Cheap to build per request.
pub struct Access<'a> {
    auth: &'a Auth,
    principal: &'a Principal,
    client: &'a ClientInfo,
}

impl<'a> Access<'a> {
    /// Binds the layer to the request's principal; `client` is recorded in audit entries.
    pub fn new(auth: &'a Auth, principal: &'a Principal, client: &'a ClientInfo) -> Self {
        Self {
            auth,
            principal,
            client,
        }
    }

    fn store(&self) -> &Store {
        self.auth.store()
    }

    fn rights(&self) -> &Permissions {
        &self.principal.permissions
    }

    fn own_tenant(&self) -> i64 {
        self.principal.user.tenant_id
    }

    fn require(&self, right: Right) -> Result<()> {
        if right.granted_by(self.rights()) {
            Ok(())
        } else {
            Err(right.refusal())
        }
    }

    /// Tenants whose objects the principal may see.
    fn read_scope(&self) -> Scope {
        let p = self.rights();
        if p.view_tenants || p.edit_tenants {
            Scope::All
        } else {
            Scope::Tenant(self.own_tenant())
        }
    }

    /// Tenants whose objects the principal may change.
    fn write_scope(&self) -> Scope {
        Scope::write(self.rights(), self.own_tenant())
    }

    /// Refuses an object of a tenant outside the read scope as `NotFound(kind)`.
    fn check_visible(&self, tenant_id: i64, kind: &'static str) -> Result<()> {
        if self.read_scope().admits(tenant_id) {
            Ok(())
        } else {
            Err(AdminError::NotFound(kind))
        }
    }

    /// Refuses changes to an object of another tenant: `NotFound` when the principal cannot
    /// even see it, `Forbidden` when they can see it but only change their own tenant.
    fn check_writable(&self, tenant_id: i64, kind: &'static str) -> Result<()> {
        self.check_visible(tenant_id, kind)?;
        if self.write_scope().admits(tenant_id) {
            Ok(())
        } else {
            Err(AdminError::Forbidden(
                "changing another tenant's objects needs the edit_tenants right",
            ))
        }
    }

    /// The tenant a new object goes to: the principal's own unless the request names another,
    /// which needs `edit_tenants` and must exist.
    async fn target_tenant(&self, requested: Option<i64>) -> Result<i64> {
        let Some(tenant_id) = requested.filter(|&t| t != self.own_tenant()) else {
            return Ok(self.own_tenant());
        };
        if !self.write_scope().admits(tenant_id) {
            return Err(AdminError::Forbidden(
                "creating objects in another tenant needs the edit_tenants right",
            ));
        }
        match self.store().get_tenant(tenant_id).await? {
            Some(tenant) => Ok(tenant.id),
            None => Err(AdminError::InvalidInput {
                field: "tenant_id",
                reason: "no such tenant".into(),
            }),
        }
    }

    /// Refuses to hand out rights the principal does not hold.
    fn check_grantable(&self, granted: &Permissions) -> Result<()> {
        if self.rights().includes(granted) {
            Ok(())
        } else {
            Err(AdminError::Forbidden(
                "you cannot grant rights you do not hold",
            ))
        }
    }

    /// Refuses to act on a user or group that holds rights the principal does not.
    fn check_outranks(&self, held: &Permissions, what: &'static str) -> Result<()> {
        if self.rights().includes(held) {
            Ok(())
        } else {
            Err(AdminError::Forbidden(what))
        }
    }

    /// What a user would hold if group `group_id` granted `flags` instead of its current ones
    /// (`None`: if the group were deleted). Lets group changes be refused before they demote
    /// the principal or the protected administrator.
    async fn rights_after_group_change(
        &self,
        user_id: i64,
        group_id: i64,
        flags: Option<&Permissions>,
    ) -> Result<Permissions> {
        let groups = self.store().groups_of_user(user_id).await?;
        Ok(groups
            .iter()
            .filter_map(|g| {
                if g.id == group_id {
                    flags.copied()
                } else {
                    Some(g.permissions)
                }
            })
            .fold(Permissions::default(), |acc, p| acc.union(&p)))
    }

    /// Refuses a change after which the principal would hold fewer rights than now.
    fn check_no_self_demotion(&self, after: &Permissions) -> Result<()> {
        if after.includes(self.rights()) {
            Ok(())
        } else {
            Err(AdminError::Protected(
                "this would remove rights from your own account; ask another administrator".into(),
            ))
        }
    }

    /// Appends an entry naming what was acted on. Like [`Auth::audit`], a failure to record is
    /// logged and does not undo the change, which has already happened.
    async fn audit(
        &self,
        action: &str,
        target_kind: &str,
        target_id: i64,
        details: serde_json::Value,
        now: i64,
    ) {
        let entry = NewAuditEntry {
            actor_user_id: Some(self.principal.user.id),
            actor_name: Some(self.principal.user.username.clone()),
            action: action.to_owned(),
            target_kind: Some(target_kind.to_owned()),
            target_id: Some(target_id.to_string()),
            client_addr: self.client.addr.clone(),
            details,
        };
        if let Err(e) = self.store().append_audit(&entry, now).await {
            tracing::error!(error = %e, action, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_requests_default_clamp_and_refuse() {
        assert_eq!(
            PageRequest::parse(None, None).ok(),
            Some(PageRequest::default())
        );
        assert_eq!(
            PageRequest::parse(Some("500"), Some("20")).ok(),
            Some(PageRequest {
                limit: MAX_LIMIT,
                offset: 20
            })
        );
        for (limit, offset, field) in [
            (Some("0"), None, "limit"),
            (Some("-3"), None, "limit"),
            (Some("ten"), None, "limit"),
            (None, Some("-1"), "offset"),
            (None, Some("1e3"), "offset"),
        ] {
            match PageRequest::parse(limit, offset) {
                Err(AdminError::InvalidInput { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{limit:?}/{offset:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn scopes_hide_other_tenants() {
        assert!(Scope::All.admits(7));
        assert!(Scope::Tenant(1).admits(1));
        assert!(!Scope::Tenant(1).admits(2));
        assert_eq!(Scope::Tenant(1).list_filter(None).ok(), Some(Some(1)));
        assert_eq!(Scope::Tenant(1).list_filter(Some(1)).ok(), Some(Some(1)));
        assert!(matches!(
            Scope::Tenant(1).list_filter(Some(2)),
            Err(AdminError::NotFound("tenant"))
        ));
        assert_eq!(Scope::All.list_filter(None).ok(), Some(None));
        assert_eq!(Scope::All.list_filter(Some(2)).ok(), Some(Some(2)));
    }
}
