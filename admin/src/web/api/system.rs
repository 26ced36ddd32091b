//! `GET /api/v1/system`: the system report for administrators (`admin_panel`), gathered by
//! [`crate::system`]; who sees which counts is decided by [`crate::access::Access`].

use axum::Json;
use axum::extract::State;

use crate::access::Access;
use crate::store::now_millis;
use crate::system::{self, SystemReport};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::extract::ApiUser;

pub async fn show(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
) -> Result<Json<SystemReport>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let counts = access.system_counts().await?;
    let orchestrator = state.orchestrator.as_ref().map_err(Clone::clone);
    Ok(Json(
        system::report(&state.store, orchestrator, counts, now_millis()).await,
    ))
}
