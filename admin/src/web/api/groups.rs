//! `/api/v1/groups…`: groups and their permission flags. Every decision is made by
//! [`crate::access::Access`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::input::{Id, JsonBody, ListQuery};
use crate::access::{Access, GroupChanges, GroupDetail, GroupView, NewGroupRequest, Page};
use crate::store::{Clipboard, now_millis};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::extract::ApiUser;

pub async fn list(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    query: ListQuery,
) -> Result<Json<Page<GroupView>>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(access.list_groups(query.tenant_id, query.page).await?))
}

pub async fn create(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    JsonBody(req): JsonBody<NewGroupRequest>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let group = access.create_group(req, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(group)))
}

pub async fn show(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<Json<GroupDetail>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(access.get_group(id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
    JsonBody(changes): JsonBody<GroupChanges>,
) -> Result<Json<GroupView>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(access.update_group(id, changes, now_millis()).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    access.delete_group(id, now_millis()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/groups/{id}/clipboard`: what the group's members may not do with the clipboard
/// of a desktop.
pub async fn clipboard(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<Json<Clipboard>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(access.group_clipboard(id).await?))
}

/// `PUT /api/v1/groups/{id}/clipboard` `{"disable_copy": bool, "disable_paste": bool}`.
pub async fn set_clipboard(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
    JsonBody(clipboard): JsonBody<Clipboard>,
) -> Result<Json<Clipboard>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(
        access
            .set_group_clipboard(id, clipboard, now_millis())
            .await?,
    ))
}
