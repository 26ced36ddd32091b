//! The admin area (`/admin/…`: users, groups, tenants) and the user's own `/account` page,
//! rendered on the server from the same [`Access`] layer the JSON API uses. The forms on them
//! call that API with `fetch()` (`assets/js/admin/*.js`, `assets/js/account.js`); these handlers
//! only read.
//!
//! The whole area needs `admin_panel`; without it, and without the view right of a section, the
//! answer is the ordinary 404 page, so that the area's existence is no hint.

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::AppState;
use super::extract::PageUser;
use super::layout::{Layout, Section, visible_tabs};
use super::pages::{error_page, not_found, render};
use crate::access::{Access, GroupDetail, PageRequest, UserDetail};
use crate::auth::Principal;
use crate::error::AdminError;
use crate::store::{ApiKey, Clipboard, Permissions, Tenant, User, now_millis};

/// Users per page of the list.
const USERS_PER_PAGE: i64 = 25;
/// Groups and tenants are few; one page of the API's largest size shows them all.
const ALL: PageRequest = PageRequest {
    limit: crate::access::MAX_LIMIT,
    offset: 0,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(admin_home))
        .route("/admin/users", get(users))
        .route("/admin/users/{id}", get(user))
        .route("/admin/groups", get(groups))
        .route("/admin/groups/{id}", get(group))
        .route("/admin/tenants", get(tenants))
        .route("/account", get(account))
}

/// What each permission flag means, in words, for the checkboxes of the group forms.
pub const FLAG_LABELS: &[(&str, &str, &str)] = &[
    ("admin_panel", "Administration", "May open the admin area"),
    ("view_users", "View users", "List users and their groups"),
    (
        "edit_users",
        "Edit users",
        "Create, change, disable and delete users",
    ),
    (
        "view_groups",
        "View groups",
        "List groups and their members",
    ),
    (
        "edit_groups",
        "Edit groups",
        "Create, change and delete groups",
    ),
    (
        "view_droplets",
        "View droplets",
        "See every droplet, inactive ones too",
    ),
    (
        "edit_droplets",
        "Edit droplets",
        "Create, change, delete and pull droplets",
    ),
    (
        "view_instances",
        "View instances",
        "See every user's instances",
    ),
    (
        "edit_instances",
        "Edit instances",
        "Stop and delete every user's instances",
    ),
    ("view_workshops", "View workshops", "List workshops"),
    (
        "edit_workshops",
        "Edit workshops",
        "Create, run and delete workshops",
    ),
    (
        "view_registry",
        "View registry",
        "Browse the droplet registry catalogue",
    ),
    (
        "edit_registry",
        "Edit registry",
        "Import droplets from registries",
    ),
    ("view_tenants", "View tenants", "See every tenant's objects"),
    (
        "edit_tenants",
        "Edit tenants",
        "Create tenants and change any tenant's objects",
    ),
];

/// A flag as a checkbox.
struct Flag {
    name: &'static str,
    label: &'static str,
    hint: &'static str,
    on: bool,
    /// The viewer lacks it, so cannot grant it (the API would refuse).
    locked: bool,
}

fn flags(of: &Permissions, viewer: &Permissions) -> Vec<Flag> {
    let granted = of.granted();
    let held = viewer.granted();
    FLAG_LABELS
        .iter()
        .filter(|(name, _, _)| Permissions::COLUMNS.contains(name))
        .map(|&(name, label, hint)| Flag {
            name,
            label,
            hint,
            on: granted.contains(&name),
            locked: !held.contains(&name),
        })
        .collect()
}

/// `YYYY-MM-DD` (UTC) of unix milliseconds.
pub fn date(millis: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let days = millis.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The answer for an error while reading: a missing (or invisible) object is the 404 page.
fn failed(e: AdminError) -> Response {
    match e {
        AdminError::NotFound(_) | AdminError::Forbidden(_) => not_found(),
        e => error_page(
            super::error::classify(&e).0,
            &super::error::public_message(&e),
        ),
    }
}

/// The admin area is for `admin_panel` holders, each section for its view right.
fn admitted(principal: &Principal, right: bool) -> bool {
    principal.permissions.admin_panel && right
}

async fn admin_home(PageUser(principal, _): PageUser) -> Response {
    if !principal.permissions.admin_panel {
        return not_found();
    }
    match visible_tabs(&principal.permissions).next() {
        Some(tab) => Redirect::to(tab.path).into_response(),
        None => error_page(
            StatusCode::NOT_FOUND,
            "Your groups grant no section of the administration.",
        ),
    }
}

// --- users -------------------------------------------------------------------------------

struct UserRow {
    id: i64,
    username: String,
    display_name: String,
    email: String,
    tenant: String,
    disabled: bool,
    external: bool,
    protected: bool,
    created: String,
}

struct Choice {
    id: i64,
    name: String,
    checked: bool,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    layout: Layout,
    query: String,
    rows: Vec<UserRow>,
    total: i64,
    first: i64,
    last: i64,
    prev_href: Option<String>,
    next_href: Option<String>,
    can_edit: bool,
    show_tenant: bool,
    groups: Vec<Choice>,
    tenants: Vec<Choice>,
}

#[derive(Debug, Deserialize, Default)]
pub struct UsersQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    offset: Option<i64>,
}

fn users_href(q: &str, offset: i64) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if !q.is_empty() {
        pairs.push(("q", q.to_owned()));
    }
    if offset > 0 {
        pairs.push(("offset", offset.to_string()));
    }
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    if query.is_empty() {
        "/admin/users".into()
    } else {
        format!("/admin/users?{query}")
    }
}

fn tenant_names(tenants: &[Tenant]) -> BTreeMap<i64, String> {
    tenants.iter().map(|t| (t.id, t.name.clone())).collect()
}

/// Every tenant, when the principal sees across tenants (else none: they only see their own).
async fn visible_tenants(access: &Access<'_>, p: &Permissions) -> Result<Vec<Tenant>, AdminError> {
    if p.view_tenants || p.edit_tenants {
        Ok(access.list_tenants(ALL).await?.items)
    } else {
        Ok(Vec::new())
    }
}

async fn users(
    State(state): State<AppState>,
    PageUser(principal, client): PageUser,
    Query(q): Query<UsersQuery>,
) -> Response {
    let p = principal.permissions;
    if !admitted(&principal, p.view_users) {
        return not_found();
    }
    let access = Access::new(&state.auth, &principal, &client);
    let query = q.q.trim().to_owned();
    let offset = q.offset.unwrap_or(0).max(0);
    let page = PageRequest {
        limit: USERS_PER_PAGE,
        offset,
    };
    let loaded = async {
        let found = access.search_users(None, &query, page).await?;
        let tenants = visible_tenants(&access, &p).await?;
        let groups = if p.view_groups && p.edit_users {
            access.list_groups(None, ALL).await?.items
        } else {
            Vec::new()
        };
        Ok::<_, AdminError>((found, tenants, groups))
    };
    let (found, tenants, groups) = match loaded.await {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    let names = tenant_names(&tenants);
    let own_tenant = principal.user.tenant_id;
    let rows: Vec<UserRow> = found
        .items
        .iter()
        .map(|u: &User| UserRow {
            id: u.id,
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            email: u.email.clone().unwrap_or_default(),
            tenant: names.get(&u.tenant_id).cloned().unwrap_or_default(),
            disabled: u.disabled,
            external: u.external,
            protected: u.protected,
            created: date(u.created_at),
        })
        .collect();
    let count = rows.len() as i64;
    render(
        StatusCode::OK,
        &UsersPage {
            layout: Layout::admin(&state.auth, &principal, "/admin/users")
                .with_script("js/admin/users.js"),
            prev_href: (offset > 0).then(|| users_href(&query, (offset - USERS_PER_PAGE).max(0))),
            next_href: (offset + count < found.total)
                .then(|| users_href(&query, offset + USERS_PER_PAGE)),
            first: if count == 0 { 0 } else { offset + 1 },
            last: offset + count,
            total: found.total,
            query,
            rows,
            can_edit: p.edit_users,
            show_tenant: tenants.len() > 1,
            // New users land in the creator's tenant unless one is chosen: its groups only.
            groups: groups
                .into_iter()
                .filter(|g| g.group.tenant_id == own_tenant)
                .map(|g| Choice {
                    id: g.group.id,
                    name: g.group.name,
                    checked: false,
                })
                .collect(),
            tenants: if p.edit_tenants {
                tenants
                    .iter()
                    .map(|t| Choice {
                        id: t.id,
                        name: t.name.clone(),
                        checked: t.id == own_tenant,
                    })
                    .collect()
            } else {
                Vec::new()
            },
        },
    )
}

#[derive(Template)]
#[template(path = "admin/user.html")]
struct UserPage {
    layout: Layout,
    user: User,
    email: String,
    tenant: String,
    created: String,
    rights: Vec<&'static str>,
    groups: Vec<Choice>,
    /// The user's groups by name, when the viewer cannot list the tenant's groups.
    group_names: Vec<String>,
    can_edit: bool,
    can_set_groups: bool,
    is_self: bool,
    keys: Vec<KeyRow>,
    can_revoke: bool,
    keys_empty_hint: &'static str,
}

async fn user(
    State(state): State<AppState>,
    PageUser(principal, client): PageUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let p = principal.permissions;
    if !admitted(&principal, p.view_users) {
        return not_found();
    }
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    let access = Access::new(&state.auth, &principal, &client);
    let loaded = async {
        let detail: UserDetail = access.get_user(id).await?;
        let all_groups = if p.view_groups {
            access
                .list_groups(Some(detail.user.tenant_id), ALL)
                .await?
                .items
        } else {
            Vec::new()
        };
        let tenant = state.store.get_tenant(detail.user.tenant_id).await?;
        let keys = access.list_user_api_keys(id).await?;
        Ok::<_, AdminError>((detail, all_groups, tenant, keys))
    };
    let (detail, all_groups, tenant, keys) = match loaded.await {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    let member_of: Vec<i64> = detail.groups.iter().map(|g| g.id).collect();
    let UserDetail {
        user,
        groups,
        permissions,
    } = detail;
    let can_set_groups = p.edit_users && p.view_groups;
    render(
        StatusCode::OK,
        &UserPage {
            layout: Layout::admin(&state.auth, &principal, "/admin/users")
                .with_script("js/admin/user.js"),
            email: user.email.clone().unwrap_or_default(),
            tenant: tenant.map(|t| t.name).unwrap_or_default(),
            created: date(user.created_at),
            rights: permissions.granted(),
            groups: all_groups
                .into_iter()
                .map(|g| Choice {
                    checked: member_of.contains(&g.group.id),
                    id: g.group.id,
                    name: g.group.name,
                })
                .collect(),
            group_names: groups.into_iter().map(|g| g.name).collect(),
            can_edit: p.edit_users,
            can_set_groups,
            is_self: user.id == principal.user.id,
            keys: key_rows(&keys, now_millis()),
            can_revoke: p.edit_users,
            keys_empty_hint: "Keys are made by the user on their account page.",
            user,
        },
    )
}

// --- groups ------------------------------------------------------------------------------

struct GroupRow {
    id: i64,
    name: String,
    description: String,
    tenant: String,
    builtin: bool,
    rights: usize,
    limit: String,
}

#[derive(Template)]
#[template(path = "admin/groups.html")]
struct GroupsPage {
    layout: Layout,
    rows: Vec<GroupRow>,
    can_edit: bool,
    show_tenant: bool,
    flags: Vec<Flag>,
    tenants: Vec<Choice>,
}

async fn groups(State(state): State<AppState>, PageUser(principal, client): PageUser) -> Response {
    let p = principal.permissions;
    if !admitted(&principal, p.view_groups) {
        return not_found();
    }
    let access = Access::new(&state.auth, &principal, &client);
    let loaded = async {
        let groups = access.list_groups(None, ALL).await?;
        let tenants = visible_tenants(&access, &p).await?;
        Ok::<_, AdminError>((groups, tenants))
    };
    let (found, tenants) = match loaded.await {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    let names = tenant_names(&tenants);
    let own_tenant = principal.user.tenant_id;
    render(
        StatusCode::OK,
        &GroupsPage {
            layout: Layout::admin(&state.auth, &principal, "/admin/groups")
                .with_script("js/admin/groups.js"),
            rows: found
                .items
                .into_iter()
                .map(|g| GroupRow {
                    id: g.group.id,
                    tenant: names.get(&g.group.tenant_id).cloned().unwrap_or_default(),
                    rights: g.group.permissions.granted().len(),
                    limit: g
                        .group
                        .instance_limit
                        .map_or_else(|| "–".to_owned(), |l| l.to_string()),
                    name: g.group.name,
                    description: g.group.description,
                    builtin: g.builtin,
                })
                .collect(),
            can_edit: p.edit_groups,
            show_tenant: tenants.len() > 1,
            flags: flags(&Permissions::default(), &p),
            tenants: if p.edit_tenants {
                tenants
                    .iter()
                    .map(|t| Choice {
                        id: t.id,
                        name: t.name.clone(),
                        checked: t.id == own_tenant,
                    })
                    .collect()
            } else {
                Vec::new()
            },
        },
    )
}

struct Member {
    id: i64,
    username: String,
    display_name: String,
}

#[derive(Template)]
#[template(path = "admin/group.html")]
struct GroupPage {
    layout: Layout,
    id: i64,
    name: String,
    description: String,
    tenant: String,
    builtin: bool,
    limit: String,
    flags: Vec<Flag>,
    clipboard: Clipboard,
    members: Vec<Member>,
    can_edit: bool,
}

async fn group(
    State(state): State<AppState>,
    PageUser(principal, client): PageUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let p = principal.permissions;
    if !admitted(&principal, p.view_groups) {
        return not_found();
    }
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    let access = Access::new(&state.auth, &principal, &client);
    let loaded = async {
        let detail: GroupDetail = access.get_group(id).await?;
        let clipboard = access.group_clipboard(id).await?;
        let tenant = state.store.get_tenant(detail.group.group.tenant_id).await?;
        Ok::<_, AdminError>((detail, clipboard, tenant))
    };
    let (detail, clipboard, tenant) = match loaded.await {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    let g = detail.group.group;
    render(
        StatusCode::OK,
        &GroupPage {
            layout: Layout::admin(&state.auth, &principal, "/admin/groups")
                .with_script("js/admin/group.js"),
            id: g.id,
            flags: flags(&g.permissions, &p),
            limit: g.instance_limit.map(|l| l.to_string()).unwrap_or_default(),
            name: g.name,
            description: g.description,
            tenant: tenant.map(|t| t.name).unwrap_or_default(),
            builtin: detail.group.builtin,
            clipboard,
            members: detail
                .members
                .into_iter()
                .map(|m| Member {
                    id: m.id,
                    username: m.username,
                    display_name: m.display_name,
                })
                .collect(),
            can_edit: p.edit_groups,
        },
    )
}

// --- tenants -----------------------------------------------------------------------------

struct TenantRow {
    id: i64,
    name: String,
    is_default: bool,
    created: String,
}

#[derive(Template)]
#[template(path = "admin/tenants.html")]
struct TenantsPage {
    layout: Layout,
    rows: Vec<TenantRow>,
    can_edit: bool,
}

async fn tenants(State(state): State<AppState>, PageUser(principal, client): PageUser) -> Response {
    let p = principal.permissions;
    if !admitted(&principal, p.view_tenants || p.edit_tenants) {
        return not_found();
    }
    let access = Access::new(&state.auth, &principal, &client);
    let found = match access.list_tenants(ALL).await {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    render(
        StatusCode::OK,
        &TenantsPage {
            layout: Layout::admin(&state.auth, &principal, "/admin/tenants")
                .with_script("js/admin/tenants.js"),
            rows: found
                .items
                .into_iter()
                .map(|t| TenantRow {
                    id: t.id,
                    created: date(t.created_at),
                    name: t.name,
                    is_default: t.is_default,
                })
                .collect(),
            can_edit: p.edit_tenants,
        },
    )
}

// --- account -----------------------------------------------------------------------------

/// A row of `keys_table.html`, shared by the account page and an administrator's user page.
struct KeyRow {
    id: i64,
    name: String,
    prefix: String,
    created: String,
    last_used: String,
    expires: String,
    active: bool,
}

/// The keys still in force or merely expired; revoked ones are history (the audit log has them).
fn key_rows(keys: &[ApiKey], now: i64) -> Vec<KeyRow> {
    keys.iter()
        .filter(|k| k.revoked_at.is_none())
        .map(|k| KeyRow {
            id: k.id,
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            created: date(k.created_at),
            last_used: k.last_used_at.map_or_else(|| "never".into(), date),
            expires: k.expires_at.map_or_else(|| "never".into(), date),
            active: k.is_active(now),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    layout: Layout,
    username: String,
    display_name: String,
    email: String,
    has_password: bool,
    keys: Vec<KeyRow>,
    can_revoke: bool,
    keys_empty_hint: &'static str,
}

async fn account(State(state): State<AppState>, PageUser(principal, _): PageUser) -> Response {
    let keys = match state.store.list_api_keys_for_user(principal.user.id).await {
        Ok(keys) => keys,
        Err(e) => return failed(e),
    };
    let now = now_millis();
    let user = &principal.user;
    render(
        StatusCode::OK,
        &AccountPage {
            layout: Layout::user(&state.auth, &principal, Section::Account)
                .with_script("js/account.js"),
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            email: user.email.clone().unwrap_or_default(),
            has_password: user.password_hash.is_some(),
            keys: key_rows(&keys, now),
            can_revoke: true,
            keys_empty_hint: "Create one above.",
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc_days() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400_000), "2000-02-29");
        assert_eq!(date(1_798_675_200_000), "2026-12-31");
        assert_eq!(date(-86_400_000), "1969-12-31");
    }

    #[test]
    fn every_flag_has_words() {
        for column in Permissions::COLUMNS {
            assert!(
                FLAG_LABELS.iter().any(|(name, _, _)| name == column),
                "no label for {column}"
            );
        }
    }
}
