//! The Python Flowcase's API paths, kept for old clients and scripts, in their old shapes
//! (`{"success": true, ...}`, droplets with `display_name`): `GET /api/droplets`,
//! `GET /api/droplets/stats`, `POST /api/instance/request`, `GET /api/instances`,
//! `POST /api/instances/{id}/start|stop` and `GET /api/instance/{id}/destroy`.
//!
//! They call the same access methods as `/api/v1/`, so the same rules hold. Errors use the
//! API's one error format (`{"error": {"code", "message"}}`). The destroy-by-GET gets the
//! checks of a DELETE (same origin, and the CSRF header for a cookie session: see
//! `web/extract.rs`), so a cross-site link or navigation can never destroy anything.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::input::{Id, JsonBody};
use super::instances::{LaunchRequest, to_the_end, usage_stats, view};
use crate::access::{Access, InstanceQuery, PageRequest, Started};
use crate::store::{Droplet, DropletType, InstanceRow, now_millis};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::extract::ApiUser;

/// The old droplet types: web apps and web desktops were `container`.
fn old_type(kind: DropletType) -> &'static str {
    match kind {
        DropletType::Http => "container",
        DropletType::Vnc => "vnc",
        DropletType::Rdp => "rdp",
        DropletType::Ssh => "ssh",
    }
}

fn old_droplet(d: &Droplet) -> Value {
    json!({
        "id": d.id,
        "display_name": d.name,
        "description": d.description,
        "image_path": d.icon,
        "droplet_type": old_type(d.droplet_type),
        "container_docker_image": d.image,
        "container_docker_registry": d.registry,
        "container_cores": d.cpu_millicores.map(|m| m as f64 / 1000.0),
        "container_memory": d.memory_mb,
    })
}

/// The instance view with the old fields added (`container_status`, `droplet`).
fn old_instance(row: &InstanceRow, state: &AppState) -> Value {
    let mut value = serde_json::to_value(view(row, &state.config)).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert(
            "container_status".into(),
            json!(row.instance.status.as_str()),
        );
        map.insert(
            "droplet".into(),
            json!({
                "id": row.instance.droplet_id,
                "display_name": row.droplet_name,
                "droplet_type": old_type(row.droplet_type),
            }),
        );
    }
    value
}

pub async fn droplets(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
) -> Result<Json<Value>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let droplets = access.launchable_droplets().await?;
    Ok(Json(json!({
        "success": true,
        "droplets": droplets.iter().map(old_droplet).collect::<Vec<_>>(),
    })))
}

/// `cpu_usage` and `memory_usage` in percent: of the host for principals holding
/// `view_instances`, else `cpu_usage` is what their own instances use (percent of one CPU)
/// and `memory_usage` is `null`. Plus the counts of `/api/v1/stats`.
pub async fn droplet_stats(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
) -> Result<Json<Value>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let stats = usage_stats(&state, &access).await?;
    let (cpu, memory) = match &stats.host {
        Some(h) => (
            Some(h.cpu_percent),
            (h.memory_total_bytes > 0)
                .then(|| h.memory_used_bytes as f64 * 100.0 / h.memory_total_bytes as f64),
        ),
        None => (stats.cpu_percent, None),
    };
    let round = |v: f64| (v * 10.0).round() / 10.0;
    Ok(Json(json!({
        "success": true,
        "cpu_usage": cpu.map(round),
        "memory_usage": memory.map(round),
        "running": stats.running,
        "instances": stats.instances,
    })))
}

/// The old body: `droplet_id` as a number or a string of digits; fields old clients sent
/// that mean nothing here (`run_as_root`, ...) are ignored.
#[derive(Debug, Deserialize)]
pub struct OldLaunchRequest {
    pub droplet_id: Value,
    #[serde(default)]
    pub resolution: Option<String>,
}

pub async fn request(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    JsonBody(req): JsonBody<OldLaunchRequest>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    let droplet_id = match &req.droplet_id {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or(crate::error::AdminError::NotFound("droplet"))?;
    let launch = LaunchRequest {
        droplet_id,
        resolution: req.resolution,
    };
    let options = launch.options()?;
    let orchestrator = std::sync::Arc::clone(state.orchestrator()?);
    let shared = state.clone();
    let row = to_the_end(async move {
        Access::new(&shared.auth, &principal, &client)
            .launch_instance(&orchestrator, droplet_id, options, now_millis())
            .await
    })
    .await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({
            "success": true,
            "instance_id": row.instance.id,
            "instance": old_instance(&row, &state),
        })),
    ))
}

pub async fn instances(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
) -> Result<Json<Value>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let page = access
        .list_my_instances(
            InstanceQuery::default(),
            PageRequest {
                limit: crate::access::MAX_LIMIT,
                offset: 0,
            },
        )
        .await?;
    Ok(Json(json!({
        "success": true,
        "instances": page.items.iter().map(|r| old_instance(r, &state)).collect::<Vec<_>>(),
    })))
}

pub async fn start(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<Json<Value>, ApiError> {
    let orchestrator = std::sync::Arc::clone(state.orchestrator()?);
    let shared = state.clone();
    let started = to_the_end(async move {
        Access::new(&shared.auth, &principal, &client)
            .start_instance(&orchestrator, id, now_millis())
            .await
    })
    .await?;
    let row = match started {
        Started::Running(row) | Started::Pending(row) => row,
    };
    Ok(Json(
        json!({"success": true, "instance": old_instance(&row, &state)}),
    ))
}

pub async fn stop(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<Json<Value>, ApiError> {
    let orchestrator = std::sync::Arc::clone(state.orchestrator()?);
    let shared = state.clone();
    let row = to_the_end(async move {
        Access::new(&shared.auth, &principal, &client)
            .stop_instance(&orchestrator, id, now_millis())
            .await
    })
    .await?;
    Ok(Json(
        json!({"success": true, "instance": old_instance(&row, &state)}),
    ))
}

/// A GET that destroys, for old clients only: the authentication middleware gives it the
/// checks of a DELETE before it gets here.
pub async fn destroy(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<Json<Value>, ApiError> {
    let orchestrator = std::sync::Arc::clone(state.orchestrator()?);
    let shared = state.clone();
    to_the_end(async move {
        Access::new(&shared.auth, &principal, &client)
            .delete_instance(&orchestrator, id, now_millis())
            .await
    })
    .await?;
    Ok(Json(json!({"success": true})))
}
