//! `/api/v1/droplets…`: the droplet catalogue and its administration, image pulls streamed as
//! Server-Sent Events, and imports from a catalogue URL. Every decision is made by
//! [`crate::access::Access`]; this module only reads requests and shapes answers.
//!
//! A pull answers `text/event-stream` on the POST itself (an `EventSource` cannot POST, and
//! the CSRF check needs one): the page reads it with `fetch()`. Checks that fail before the
//! pull starts (rights, unknown droplet, no image) are ordinary JSON errors; what happens
//! after is told by the events `progress`, `log`, then exactly one of `done` or `error`.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::input::{Id, JsonBody};
use crate::access::{Access, DropletQuery, DropletView, Page, PageRequest};
use crate::error::AdminError;
use crate::orchestrator::remote_catalogue::ImportReport;
use crate::orchestrator::{PullEvent, PullLog};
use crate::store::{DropletType, now_millis};
use crate::web::AppState;
use crate::web::error::{ApiError, classify, public_message};
use crate::web::extract::ApiUser;

/// Events buffered per stream before a slow reader holds the pull's forwarding back.
const EVENT_BUFFER: usize = 64;

fn invalid(field: &'static str, reason: impl Into<String>) -> ApiError {
    ApiError(AdminError::InvalidInput {
        field,
        reason: reason.into(),
    })
}

fn query_pairs(parts: &Parts) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
        .map_err(|_| invalid("query", "malformed query string"))
}

fn last<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn boolean(field: &'static str, text: &str) -> Result<bool, ApiError> {
    match text.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(field, "must be true or false")),
    }
}

/// `?scope=&q=&type=&active=&tenant_id=&limit=&offset=`.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for DropletQueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs = query_pairs(parts)?;
        let get = |name| last(&pairs, name);
        let all = match get("scope") {
            None | Some("mine") => false,
            Some("all") => true,
            Some(_) => return Err(invalid("scope", "must be \"mine\" or \"all\"")),
        };
        let droplet_type = get("type")
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<DropletType>()
                    .map_err(|_| invalid("type", "must be one of http, vnc, rdp, ssh"))
            })
            .transpose()?;
        let active = get("active")
            .filter(|a| !a.is_empty())
            .map(|a| boolean("active", a))
            .transpose()?;
        let tenant_id = get("tenant_id")
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| invalid("tenant_id", "must be a tenant id"))
            })
            .transpose()?;
        let q = get("q")
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_owned);
        if q.as_ref().is_some_and(|q| q.chars().count() > 100) {
            return Err(invalid("q", "use at most 100 characters"));
        }
        Ok(Self(DropletQuery {
            all,
            q,
            droplet_type,
            active,
            tenant_id,
            page: PageRequest::parse(get("limit"), get("offset"))?,
        }))
    }
}

pub struct DropletQueryParams(DropletQuery);

/// `?dry_run=`.
pub struct DryRun(bool);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for DryRun {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs = query_pairs(parts)?;
        match last(&pairs, "dry_run") {
            None => Ok(Self(false)),
            Some(text) => Ok(Self(boolean("dry_run", text)?)),
        }
    }
}

/// Body of `PUT /api/v1/droplets/{id}/groups`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupIds {
    pub group_ids: Vec<i64>,
}

/// Body of `POST /api/v1/droplets/import`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub url: String,
    #[serde(default)]
    pub tenant_id: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    DropletQueryParams(query): DropletQueryParams,
) -> Result<Json<Page<DropletView>>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(access.list_droplets(query).await?))
}

pub async fn show(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<Json<DropletView>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(access.get_droplet(id).await?))
}

pub async fn create(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<(StatusCode, Json<DropletView>), ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let created = access.create_droplet(body, now_millis()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn update(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<DropletView>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(access.update_droplet(id, body, now_millis()).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    access.delete_droplet(id, now_millis()).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_groups(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
    JsonBody(body): JsonBody<GroupIds>,
) -> Result<Json<DropletView>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(
        access
            .set_droplet_groups(id, &body.group_ids, now_millis())
            .await?,
    ))
}

pub async fn import(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    DryRun(dry_run): DryRun,
    JsonBody(body): JsonBody<ImportRequest>,
) -> Result<Json<ImportReport>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(
        access
            .import_droplets(&body.url, body.tenant_id, dry_run, now_millis())
            .await?,
    ))
}

/// An SSE event named `name` with `data` as its JSON.
fn event(name: &str, data: Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

fn error_data(e: &AdminError) -> Value {
    let (_, code) = classify(e);
    json!({ "code": code, "message": public_message(e) })
}

/// Adds `droplet_id` to an event's data (pull-all tells whose progress it is).
fn tagged(mut data: Value, droplet_id: Option<i64>) -> Value {
    if let (Some(id), Value::Object(map)) = (droplet_id, &mut data) {
        map.insert("droplet_id".into(), json!(id));
    }
    data
}

/// Forwards one pull's events as SSE events until it ends; returns the outcome (the image, or
/// the error's data) or `None` when the reader went away.
async fn forward_pull(
    mut pull: mpsc::Receiver<PullEvent>,
    out: &mpsc::Sender<Event>,
    droplet_id: Option<i64>,
) -> Option<Result<String, Value>> {
    let mut log = PullLog::default();
    while let Some(item) = pull.recv().await {
        match item {
            PullEvent::Progress(p) => {
                let line = log.line(&p);
                let progress = json!({
                    "layer": p.layer, "status": p.status, "current": p.current, "total": p.total,
                });
                out.send(event("progress", tagged(progress, droplet_id)))
                    .await
                    .ok()?;
                if let Some(line) = line {
                    out.send(event("log", tagged(json!({ "line": line }), droplet_id)))
                        .await
                        .ok()?;
                }
            }
            PullEvent::Done { image } => return Some(Ok(image)),
            PullEvent::Failed(e) => return Some(Err(error_data(&e))),
        }
    }
    Some(Err(error_data(&AdminError::Engine(
        "the pull ended without saying how".into(),
    ))))
}

fn stream_of(events: mpsc::Receiver<Event>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(events, |mut events| async move {
        events.recv().await.map(|e| (Ok(e), events))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `POST /api/v1/droplets/{id}/pull`: `progress` and `log` events, then `done` {image} or
/// `error` {code, message}.
pub async fn pull(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let orchestrator = state.orchestrator()?.clone();
    let access = Access::new(&state.auth, &principal, &client);
    let pull = access.pull_droplet(&orchestrator, id).await?;
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    tokio::spawn(async move {
        let last = match forward_pull(pull, &tx, None).await {
            Some(Ok(image)) => event("done", json!({ "image": image })),
            Some(Err(error)) => event("error", error),
            None => return,
        };
        let _ = tx.send(last).await;
    });
    Ok(stream_of(rx))
}

/// `POST /api/v1/droplets/pull-all`: the container droplets of the principal's scope, one after
/// the other: `droplet` {droplet_id, name, image} as each starts, its `progress` and `log`
/// (with `droplet_id`), `result` {droplet_id, name, ok, image | code, message} as it ends, and
/// `done` {total, pulled, failed} at the end.
pub async fn pull_all(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let orchestrator = state.orchestrator()?.clone();
    let droplets = Access::new(&state.auth, &principal, &client)
        .pullable_droplets()
        .await?;
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    tokio::spawn(async move {
        let (mut pulled, mut failed) = (0usize, 0usize);
        for droplet in &droplets {
            let start =
                json!({"droplet_id": droplet.id, "name": droplet.name, "image": droplet.image});
            if tx.send(event("droplet", start)).await.is_err() {
                return;
            }
            // Checked again per droplet: rights or the droplet may change during a long run.
            let access = Access::new(&state.auth, &principal, &client);
            let outcome = match access.pull_droplet(&orchestrator, droplet.id).await {
                Ok(pull) => match forward_pull(pull, &tx, Some(droplet.id)).await {
                    Some(outcome) => outcome,
                    None => return,
                },
                Err(e) => Err(error_data(&e)),
            };
            let mut result = json!({"droplet_id": droplet.id, "name": droplet.name});
            match outcome {
                Ok(image) => {
                    pulled += 1;
                    result["ok"] = json!(true);
                    result["image"] = json!(image);
                }
                Err(error) => {
                    failed += 1;
                    result["ok"] = json!(false);
                    result["code"] = error["code"].clone();
                    result["message"] = error["message"].clone();
                }
            }
            if tx.send(event("result", result)).await.is_err() {
                return;
            }
        }
        let done = json!({"total": droplets.len(), "pulled": pulled, "failed": failed});
        let _ = tx.send(event("done", done)).await;
    });
    Ok(stream_of(rx))
}
