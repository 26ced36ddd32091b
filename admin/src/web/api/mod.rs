//! The JSON API under `/api/v1/`. Handlers extract, call the service, and map errors through
//! [`super::error::ApiError`]. Each family of endpoints lives in its own module and adds its
//! routes here.

pub mod account;
pub mod session;

use axum::Router;
use axum::routing::{delete, get, post};

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
}
