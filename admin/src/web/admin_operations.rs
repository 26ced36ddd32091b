//! The admin area's operations pages: workshops (`/admin/workshops`, `/admin/workshops/{id}`),
//! the audit log (`/admin/audit`) and the system report (`/admin/system`). The server renders
//! the frame (and, for one workshop, checks that it exists and may be seen); the lists, their
//! live parts and every change go through the JSON API (`assets/js/admin/workshops.js`,
//! `workshop.js`, `audit.js`, `system.js`), which decides what this administrator may see and
//! do, exactly as it does for scripts.
//!
//! Each page needs `admin_panel` and the API's read right of its family (`view_workshops` for
//! workshops; the audit log and the system report need `admin_panel` only). Without it the answer
//! is the ordinary 404 page, like the other admin pages.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;

use super::AppState;
use super::extract::PageUser;
use super::layout::Layout;
use super::pages::{error_page, not_found, render};
use crate::access::Access;
use crate::error::AdminError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/workshops", get(workshops))
        .route("/admin/workshops/{id}", get(workshop))
        .route("/admin/audit", get(audit))
        .route("/admin/system", get(system))
}

#[derive(Template)]
#[template(path = "admin/workshops.html")]
struct WorkshopsPage {
    layout: Layout,
    can_edit: bool,
    /// The tenant a new workshop is made in (the administrator's own).
    tenant_id: i64,
}

#[derive(Template)]
#[template(path = "admin/workshop.html")]
struct WorkshopPage {
    layout: Layout,
    id: i64,
    name: String,
    /// The workshop's tenant: its droplets, groups and participants must be of it.
    tenant_id: i64,
    can_edit: bool,
    /// The page may follow the instances' event stream (else it polls).
    can_follow: bool,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    layout: Layout,
    /// Pruning is for the administrators of the whole installation (`edit_tenants`).
    can_prune: bool,
}

#[derive(Template)]
#[template(path = "admin/system.html")]
struct SystemPage {
    layout: Layout,
}

async fn workshops(State(state): State<AppState>, PageUser(principal, _): PageUser) -> Response {
    let p = principal.permissions;
    if !(p.admin_panel && p.view_workshops) {
        return not_found();
    }
    render(
        StatusCode::OK,
        &WorkshopsPage {
            layout: Layout::admin(&state.auth, &principal, "/admin/workshops")
                .with_script("js/admin/workshops.js"),
            can_edit: p.edit_workshops,
            tenant_id: principal.user.tenant_id,
        },
    )
}

async fn workshop(
    State(state): State<AppState>,
    PageUser(principal, client): PageUser,
    Path(id): Path<String>,
) -> Response {
    let p = principal.permissions;
    if !(p.admin_panel && p.view_workshops) {
        return not_found();
    }
    let Ok(id) = id.parse::<i64>() else {
        return not_found();
    };
    let access = Access::new(&state.auth, &principal, &client);
    let view = match access.get_workshop(id).await {
        Ok(view) => view,
        Err(AdminError::NotFound(_) | AdminError::Forbidden(_)) => return not_found(),
        Err(e) => {
            return error_page(
                super::error::classify(&e).0,
                &super::error::public_message(&e),
            );
        }
    };
    render(
        StatusCode::OK,
        &WorkshopPage {
            layout: Layout::admin(&state.auth, &principal, "/admin/workshops")
                .with_script("js/admin/workshop.js"),
            id: view.workshop.id,
            name: view.workshop.name,
            tenant_id: view.workshop.tenant_id,
            can_edit: p.edit_workshops,
            can_follow: p.view_instances,
        },
    )
}

async fn audit(State(state): State<AppState>, PageUser(principal, _): PageUser) -> Response {
    let p = principal.permissions;
    if !p.admin_panel {
        return not_found();
    }
    render(
        StatusCode::OK,
        &AuditPage {
            layout: Layout::admin(&state.auth, &principal, "/admin/audit")
                .with_script("js/admin/audit.js"),
            can_prune: p.edit_tenants,
        },
    )
}

async fn system(State(state): State<AppState>, PageUser(principal, _): PageUser) -> Response {
    if !principal.permissions.admin_panel {
        return not_found();
    }
    render(
        StatusCode::OK,
        &SystemPage {
            layout: Layout::admin(&state.auth, &principal, "/admin/system")
                .with_script("js/admin/system.js"),
        },
    )
}
