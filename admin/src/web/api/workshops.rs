//! `/api/v1/workshops…`: workshops, their participants and droplets, "start all" and "stop
//! all". Every decision is made by [`crate::access::Access`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use super::input::{Id, JsonBody, ListQuery};
use crate::access::{
    Access, MyWorkshop, NewWorkshopRequest, Page, WorkshopChanges, WorkshopParticipants,
    WorkshopView,
};
use crate::store::{Workshop, now_millis};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::extract::ApiUser;

/// Body of `PUT /api/v1/workshops/{id}/droplets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropletIds {
    pub droplet_ids: Vec<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    query: ListQuery,
) -> Result<Json<Page<Workshop>>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(
        access.list_workshops(query.tenant_id, query.page).await?,
    ))
}

pub async fn mine(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
) -> Result<Json<serde_json::Value>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let items: Vec<MyWorkshop> = access.my_workshops().await?;
    Ok(Json(serde_json::json!({ "items": items })))
}

pub async fn create(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    JsonBody(req): JsonBody<NewWorkshopRequest>,
) -> Result<(StatusCode, Json<WorkshopView>), ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let created = access.create_workshop(req, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn show(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<Json<WorkshopView>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(access.get_workshop(id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
    JsonBody(changes): JsonBody<WorkshopChanges>,
) -> Result<Json<WorkshopView>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(
        access.update_workshop(id, changes, now_millis()).await?,
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    access.delete_workshop(id, now_millis()).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_participants(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
    JsonBody(body): JsonBody<WorkshopParticipants>,
) -> Result<Json<WorkshopView>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(
        access
            .set_workshop_participants(id, body, now_millis())
            .await?,
    ))
}

pub async fn set_droplets(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
    JsonBody(body): JsonBody<DropletIds>,
) -> Result<Json<WorkshopView>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(
        access
            .set_workshop_droplets(id, &body.droplet_ids, now_millis())
            .await?,
    ))
}

/// 202: the launches go on in the background; poll the workshop for each participant's state.
pub async fn start(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<(StatusCode, Json<WorkshopView>), ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let view = access
        .start_workshop(id, state.orchestrator(), now_millis())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// 202: the stops go on in the background.
pub async fn stop(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<(StatusCode, Json<WorkshopView>), ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let view = access
        .stop_workshop(id, state.orchestrator(), now_millis())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}
