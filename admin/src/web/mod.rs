//! The control plane's web app: pages and the JSON API, served by axum on the private socket
//! that the gateway's front door proxies to. Handlers stay short: extract, call the service,
//! map the error (in `error.rs`, the one place that turns an `AdminError` into HTTP).

mod pages;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flowcase_config::Config;

use crate::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
}

impl AppState {
    pub fn new(config: Arc<Config>, store: Store) -> Self {
        Self { config, store }
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::login))
        .fallback(not_found)
        .with_state(state)
}

/// API callers get JSON with a stable code; browsers get a page.
async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") {
        let body = serde_json::json!({
            "error": {"code": "not_found", "message": "no such API endpoint"}
        });
        (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
    } else {
        pages::not_found().into_response()
    }
}
