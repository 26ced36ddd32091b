//! `/api/v1/users…`: user administration. Every decision is made by [`crate::access::Access`].

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::input::{Id, IdPair, JsonBody, ListQuery, OptionalJsonBody};
use crate::access::{Access, CreatedUser, NewUserRequest, Page, UserChanges, UserDetail};
use crate::store::{User, now_millis};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::extract::ApiUser;

/// Body of `POST /api/v1/users/{id}/password`; no body or no field generates a password. No
/// `Debug`: it carries a password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordReset {
    #[serde(default)]
    pub new_password: Option<String>,
}

/// Body of `PUT /api/v1/users/{id}/groups`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupIds {
    pub group_ids: Vec<i64>,
}

/// `GET /api/v1/users?q=…&limit=&offset=&tenant_id=`: `q` narrows the list to users whose
/// username, e-mail address or display name contains it (what the admin page's search does).
pub async fn list(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    query: ListQuery,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page<User>>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let search = serde_urlencoded::from_str::<Vec<(String, String)>>(raw.as_deref().unwrap_or(""))
        .unwrap_or_default()
        .into_iter()
        .rev()
        .find_map(|(k, v)| (k == "q").then_some(v))
        .unwrap_or_default();
    Ok(Json(
        access
            .search_users(query.tenant_id, &search, query.page)
            .await?,
    ))
}

pub async fn create(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    JsonBody(req): JsonBody<NewUserRequest>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let created = access.create_user(req, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn show(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<Json<UserDetail>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(access.get_user(id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
    JsonBody(changes): JsonBody<UserChanges>,
) -> Result<Json<UserDetail>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(access.update_user(id, changes, now_millis()).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    access.delete_user(id, now_millis()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// 200 with `{"password"}` when one was generated (the only time it is shown), else 204.
pub async fn reset_password(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
    OptionalJsonBody(body): OptionalJsonBody<PasswordReset>,
) -> Result<Response, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let given = body.and_then(|b| b.new_password);
    let generated = access.reset_user_password(id, given, now_millis()).await?;
    Ok(match generated {
        Some(password) => Json(serde_json::json!({ "password": password })).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

pub async fn set_groups(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
    JsonBody(body): JsonBody<GroupIds>,
) -> Result<Json<UserDetail>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(
        access
            .set_user_groups(id, &body.group_ids, now_millis())
            .await?,
    ))
}

/// `GET /api/v1/users/{id}/api-keys`: the user's keys without their secrets.
pub async fn list_api_keys(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let keys = access.list_user_api_keys(id).await?;
    Ok(Json(serde_json::json!({ "items": keys })))
}

/// `DELETE /api/v1/users/{id}/api-keys/{key_id}`.
pub async fn revoke_api_key(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    IdPair(id, key_id): IdPair,
) -> Result<StatusCode, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    access.revoke_user_api_key(id, key_id, now_millis()).await?;
    Ok(StatusCode::NO_CONTENT)
}
