//! `/api/v1/tenants`: the organisations, for global administrators. Every decision is made by
//! [`crate::access::Access`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::input::{JsonBody, ListQuery};
use crate::access::{Access, NewTenantRequest, Page};
use crate::store::{Tenant, now_millis};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::extract::ApiUser;

pub async fn list(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    query: ListQuery,
) -> Result<Json<Page<Tenant>>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(access.list_tenants(query.page).await?))
}

pub async fn create(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    JsonBody(req): JsonBody<NewTenantRequest>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let tenant = access.create_tenant(req, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(tenant)))
}
