//! The admin instances page (`/admin/instances`): every instance the administrator may see, to
//! filter (status, user, droplet), stop and delete. The server renders the frame; the list,
//! its live updates (`/api/v1/events?scope=all`) and the actions go through the JSON API
//! (`assets/js/admin/instances.js`), which decides what this administrator may see and do.
//! Without `admin_panel` and `view_instances` the answer is the 404 page.

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
        },
    )
}
