//! The admin instances page (`/admin/instances`): every instance the administrator may see, to
//! filter (status, user, droplet), stop and delete. The server renders the frame; the list,
//! its live updates (`/api/v1/events?scope=all`) and the actions go through the JSON API
//! (`assets/js/admin/instances.js`), which decides what this administrator may see and do.
//! Without `admin_panel` and `view_instances` the answer is the 404 page.
//!
//! A running desktop gets a "Watch" link: the viewer in read-only mode (`/droplet/{id}?watch=1`),
//! joining the connection its user has open. It, Stop and Delete show only where the API and the
//! tunnel would let this administrator act ([`Scope::others_instances`]: `edit_instances` over
//! their own tenant, every tenant with `edit_tenants`): an administrator who reads other tenants
//! without editing them gets them on their own tenant's rows only (each row carries its tenant).

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;

use super::AppState;
use super::extract::PageUser;
use super::layout::Layout;
use super::pages::{not_found, render};
use crate::access::Scope;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/instances", get(instances))
}

#[derive(Template)]
#[template(path = "admin/instances.html")]
struct InstancesPage {
    layout: Layout,
    /// Whose instances get Stop, Delete and (running desktops) Watch: "" for nobody's, "*" for
    /// every tenant's, or the tenant id ([`Scope::others_instances`], the rule the API and the
    /// tunnel check).
    change_tenant: String,
}

async fn instances(State(state): State<AppState>, PageUser(principal, _): PageUser) -> Response {
    let p = principal.permissions;
    if !(p.admin_panel && p.view_instances) {
        return not_found();
    }
    render(
        StatusCode::OK,
        &InstancesPage {
            layout: Layout::admin(&state.auth, &principal, "/admin/instances")
                .with_script("js/admin/instances.js"),
            change_tenant: match Scope::others_instances(&p, principal.user.tenant_id) {
                None => String::new(),
                Some(Scope::Tenant(tenant)) => tenant.to_string(),
                Some(Scope::All) => "*".to_owned(),
            },
        },
    )
}
