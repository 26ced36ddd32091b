//! The control plane's web app: pages and the JSON API, served by axum on the private socket
//! that the gateway's front door proxies to. Handlers stay short: extract, call the service,
//! map the error (in `error.rs`, the one place that turns an `AdminError` into HTTP).

pub mod admin_droplets;
pub mod admin_instances;
pub mod admin_operations;
pub mod admin_pages;
pub mod api;
pub mod app_auth;
pub mod assets;
pub mod dashboard;
pub mod droplet_icons;
pub mod error;
pub mod extract;
pub mod layout;
pub mod oidc;
pub mod pages;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flowcase_config::Config;

use crate::Store;
use crate::auth::Auth;
use crate::error::{AdminError, Result};
use crate::orchestrator::Orchestrator;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub auth: Arc<Auth>,
    pub assertions: Arc<crate::auth::assertion::AssertionSigner>,
    /// The orchestrator, or why it could not be set up (no Docker client): pages and logins
    /// work without it; what needs it answers `engine_error` with that reason.
    pub orchestrator: std::result::Result<Arc<Orchestrator>, String>,
    /// Launches already made for an `Idempotency-Key` (see [`api::idempotency`]).
    pub launch_keys: Arc<api::idempotency::LaunchKeys>,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        orchestrator: std::result::Result<Arc<Orchestrator>, String>,
    ) -> Result<Self> {
        let keyring = crate::secrets::ensure_key_file(&config.secret_key_file())?;
        let auth = Arc::new(Auth::new(store.clone(), keyring, &config)?);
        let assertions = Arc::new(crate::auth::assertion::AssertionSigner::load_or_create(
            &config.server.data_dir,
        )?);
        Ok(Self {
            config,
            store,
            auth,
            assertions,
            orchestrator,
            launch_keys: Arc::default(),
        })
    }

    /// The orchestrator, for handlers that start, stop or pull: an `engine_error` when the
    /// Docker client could not be set up.
    pub fn orchestrator(&self) -> Result<&Arc<Orchestrator>> {
        self.orchestrator
            .as_ref()
            .map_err(|reason| AdminError::Engine(reason.clone()))
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::login))
        .route("/login", post(pages::login_submit))
        .route("/logout", post(pages::logout))
        .route(
            "/register",
            get(pages::register).post(pages::register_submit),
        )
        .route("/dashboard", get(dashboard::dashboard))
        .merge(droplet_icons::routes())
        .merge(admin_pages::routes())
        .merge(admin_droplets::routes())
        .merge(admin_instances::routes())
        .merge(admin_operations::routes())
        .route("/droplet/{id}", get(pages::viewer))
        .route("/assets/{version}/{*path}", get(assets::serve))
        .route("/app-auth", get(app_auth::app_auth))
        .route("/.well-known/flowcase/jwks.json", get(jwks))
        .route("/auth/oidc/{provider}/login", get(oidc::login))
        .route("/auth/oidc/{provider}/callback", get(oidc::callback))
        .merge(api::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::security_headers,
        ))
        .with_state(state)
}

/// The public key of the identity assertions instance hosts receive.
async fn jwks(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(state.assertions.jwks()),
    )
        .into_response()
}

/// API callers get JSON with a stable code; browsers get a page.
async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") {
        let body = serde_json::json!({
            "error": {"code": "not_found", "message": "no such API endpoint"}
        });
        (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
    } else {
        pages::not_found()
    }
}
