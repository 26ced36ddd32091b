//! The JSON API under `/api/v1/`. Handlers extract, call the service, and map errors through
//! [`super::error::ApiError`]. Each family of endpoints lives in its own module and adds its
//! routes here.

pub mod account;
pub mod audit;
pub mod droplets;
pub mod groups;
pub mod input;
pub mod instances;
pub mod legacy;
pub mod session;
pub mod system;
pub mod tenants;
pub mod tunnel;
pub mod users;
pub mod workshops;

use axum::Router;
use axum::routing::{delete, get, post, put};

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/session",
            post(session::create)
                .get(session::show)
                .delete(session::delete),
        )
        .route("/api/v1/account/password", post(account::change_password))
        .route(
            "/api/v1/account/api-keys",
            get(account::list_keys).post(account::create_key),
        )
        .route("/api/v1/account/api-keys/{id}", delete(account::revoke_key))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{id}",
            get(users::show).patch(users::update).delete(users::delete),
        )
        .route("/api/v1/users/{id}/password", post(users::reset_password))
        .route("/api/v1/users/{id}/groups", put(users::set_groups))
        .route("/api/v1/groups", get(groups::list).post(groups::create))
        .route(
            "/api/v1/groups/{id}",
            get(groups::show)
                .patch(groups::update)
                .delete(groups::delete),
        )
        .route(
            "/api/v1/groups/{id}/clipboard",
            get(groups::clipboard).put(groups::set_clipboard),
        )
        .route("/api/v1/tenants", get(tenants::list).post(tenants::create))
        .route("/api/v1/instances/{slug}/tunnel-token", post(tunnel::mint))
        .merge(droplets::routes())
        .merge(instances::routes())
        .merge(legacy::routes())
        .merge(workshops::routes())
        .merge(audit::routes())
        .merge(system::routes())
}
