//! The admin instances page (`/admin/instances`): every instance the administrator may see, to
//! filter (status, user, droplet), stop and delete. The server renders the frame; the list,
//! its live updates (`/api/v1/events?scope=all`) and the actions go through the JSON API
//! (`assets/js/admin/instances.js`), which decides what this administrator may see and do.
//! Without `admin_panel` and `view_instances` the answer is the 404 page.
//!
//! A running desktop gets a "Watch" link: the viewer in read-only mode (`/droplet/{id}?watch=1`),
//! joining the connection its user has open. Only where the tunnel would let this administrator
//! in (`edit_instances` over the owner's tenant, see `access::desktop`): with `edit_tenants`
//! every instance listed, without `view_tenants` every instance listed (all of their own tenant);
//! an administrator who reads other tenants without editing them gets no link, since the page
//! cannot tell which rows are their own tenant's.

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

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/instances", get(instances))
}

#[derive(Template)]
#[template(path = "admin/instances.html")]
struct InstancesPage {
    layout: Layout,
    can_edit: bool,
    can_watch: bool,
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
            can_edit: p.edit_instances,
            can_watch: p.edit_instances && (p.edit_tenants || !p.view_tenants),
        },
    )
}
