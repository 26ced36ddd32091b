//! The admin droplets page (`/admin/droplets`): the catalogue as its administrators see it, with
//! search, create and edit (containers and existing hosts, registry and host credentials as
//! write-only fields), activate/deactivate, delete, pulling one image or all of them with their
//! progress and log as they come, and importing a catalogue URL (`edit_registry`) with each
//! entry's result. The server renders the frame and the choices of the form (the groups that
//! may launch a droplet); the list and every change go through the JSON API
//! (`/api/v1/droplets…`, `assets/js/admin/droplets.js`), so the page and scripts see and may do
//! exactly the same. Without `admin_panel` and `view_droplets` the answer is the 404 page.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;

use super::AppState;
use super::extract::PageUser;
use super::layout::Layout;
use super::pages::{error_page, not_found, render};
use crate::access::{Access, PageRequest};
use crate::error::AdminError;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/droplets", get(droplets))
}

struct GroupChoice {
    id: i64,
    tenant_id: i64,
    name: String,
}

struct TenantChoice {
    id: i64,
    name: String,
    own: bool,
}

#[derive(Template)]
#[template(path = "admin/droplets.html")]
struct DropletsPage {
    layout: Layout,
    can_edit: bool,
    /// `edit_registry`: may import droplets from a catalogue URL.
    can_import: bool,
    /// The groups a droplet may be granted to, of every tenant the viewer sees (the form
    /// shows those of the droplet's tenant).
    groups: Vec<GroupChoice>,
    /// Every tenant, for viewers who see more than their own (else empty).
    tenants: Vec<TenantChoice>,
    /// `edit_tenants` with several tenants: droplets and imports may go to another tenant.
    choose_tenant: bool,
    /// The viewer's tenant: where new droplets go unless another is chosen.
    own_tenant_id: i64,
}

/// The page's answer to a failed read: the 404 page for what the viewer may not see.
fn failed(e: &AdminError) -> Response {
    match e {
        AdminError::NotFound(_) | AdminError::Forbidden(_) => not_found(),
        e => error_page(
            super::error::classify(e).0,
            &super::error::public_message(e),
        ),
    }
}

async fn droplets(
    State(state): State<AppState>,
    PageUser(principal, client): PageUser,
) -> Response {
    let p = principal.permissions;
    if !(p.admin_panel && (p.view_droplets || p.edit_droplets)) {
        return not_found();
    }
    let access = Access::new(&state.auth, &principal, &client);
    let all = PageRequest {
        limit: crate::access::MAX_LIMIT,
        offset: 0,
    };
    let tenants = if p.view_tenants || p.edit_tenants {
        match access.list_tenants(all).await {
            Ok(page) => page
                .items
                .into_iter()
                .map(|t| TenantChoice {
                    own: t.id == principal.user.tenant_id,
                    id: t.id,
                    name: t.name,
                })
                .collect(),
            Err(e) => return failed(&e),
        }
    } else {
        Vec::new()
    };
    let groups = if p.edit_droplets && p.view_groups {
        match access.list_groups(None, all).await {
            Ok(page) => page
                .items
                .into_iter()
                .map(|g| GroupChoice {
                    id: g.group.id,
                    tenant_id: g.group.tenant_id,
                    name: g.group.name,
                })
                .collect(),
            Err(e) => return failed(&e),
        }
    } else {
        Vec::new()
    };
    let choose_tenant = p.edit_tenants && tenants.len() > 1;
    render(
        StatusCode::OK,
        &DropletsPage {
            layout: Layout::admin(&state.auth, &principal, "/admin/droplets")
                .with_script("js/admin/droplets.js"),
            can_edit: p.edit_droplets,
            can_import: p.edit_registry,
            groups,
            tenants: if tenants.len() > 1 {
                tenants
            } else {
                Vec::new()
            },
            choose_tenant,
            own_tenant_id: principal.user.tenant_id,
        },
    )
}
