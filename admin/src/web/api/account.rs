//! `/api/v1/account/…`: the signed-in user's own password and personal API keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::input::JsonBody;
use crate::store::{ApiKey, now_millis};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::extract::ApiUser;

#[derive(Debug, Deserialize)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

pub async fn change_password(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    JsonBody(req): JsonBody<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .change_password(
            &principal,
            &req.current_password,
            &req.new_password,
            &client,
            now_millis(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct NewKey {
    pub name: String,
    /// Unix milliseconds; none = never expires.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

pub async fn create_key(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    JsonBody(req): JsonBody<NewKey>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let created = state
        .auth
        .create_api_key(&principal, &req.name, req.expires_at, &client, now_millis())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"token": created.token, "key": created.key})),
    ))
}

pub async fn list_keys(
    State(state): State<AppState>,
    ApiUser(principal, _): ApiUser,
) -> Result<Json<serde_json::Value>, ApiError> {
    let keys: Vec<ApiKey> = state
        .store
        .list_api_keys_for_user(principal.user.id)
        .await?;
    Ok(Json(serde_json::json!({ "items": keys })))
}

pub async fn revoke_key(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .revoke_api_key(&principal, id, &client, now_millis())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
