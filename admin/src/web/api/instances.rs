//! `/api/v1/instances…`, `/api/v1/stats` and `/api/v1/events`: what the dashboard and scripts
//! use to launch, watch and manage instances. Every decision is made by
//! [`crate::access::Access`]; this module extracts requests, shapes the instance view and runs
//! the event stream. Launches, starts, stops and deletes run in a task of their own (`to_the_end`),
//! so a client going away mid-request never leaves an instance half-changed.
//!
//! The event stream (`text/event-stream`) sends an `instance` event with the instance view
//! whenever an instance the principal sees changes, and `instance_removed` with `{id}` when one
//! is deleted or leaves their sight; a stream of the principal's own instances also sends
//! `stats` (the body of `/api/v1/stats`) when those figures change. Changes made in this process arrive at once (the
//! orchestrator's change broadcast); a re-read of the principal's instances every second
//! catches the rest (the reaper of another gateway process on the same database, a container
//! that died). Streams are bounded in number and lifetime and end when the session or API key
//! ends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use flowcase_config::Config;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::idempotency;
use super::input::{Id, JsonBody};
use crate::access::{Access, InstanceQuery, Page, PageRequest, Started};
use crate::auth::{ClientInfo, Principal};
use crate::error::{AdminError, Result};
use crate::orchestrator::{LaunchOptions, Orchestrator, Resolution, Usage};
use crate::store::{DropletType, InstanceFilter, InstanceRow, InstanceStatus, now_millis};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::extract::ApiUser;

// ---------------------------------------------------------------------------------------------
// The instance view
// ---------------------------------------------------------------------------------------------

/// An instance as the API and the dashboard show it. Names are user data, sent as they are:
/// escaping is the page's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    pub id: i64,
    pub slug: String,
    pub droplet_id: i64,
    pub droplet_name: String,
    pub droplet_type: DropletType,
    pub user_id: i64,
    pub username: String,
    /// The owner's tenant.
    pub tenant_id: i64,
    pub status: InstanceStatus,
    pub error_reason: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub last_activity_at: Option<i64>,
    /// Where the instance opens: its own host for web apps, the viewer page for desktops;
    /// `None` while it can be neither used nor started.
    pub open_url: Option<String>,
}

/// The view of `row`.
pub fn view(row: &InstanceRow, config: &Config) -> InstanceView {
    let i = &row.instance;
    let startable = match i.status {
        InstanceStatus::Running | InstanceStatus::Stopped => true,
        // A failed wake keeps its container and can be started again; a failed launch cannot.
        InstanceStatus::Error => i.container_id.is_some() || i.upstream.is_some(),
        _ => false,
    };
    let open_url = startable.then(|| match row.droplet_type {
        DropletType::Http => {
            let server = &config.server;
            let host = format!("{}.{}", i.slug, server.apps_domain.as_str());
            format!(
                "{}/",
                flowcase_config::origin(&host, server.effective_https_port())
            )
        }
        DropletType::Vnc | DropletType::Rdp | DropletType::Ssh => format!("/droplet/{}", i.id),
    });
    InstanceView {
        id: i.id,
        slug: i.slug.clone(),
        droplet_id: i.droplet_id,
        droplet_name: row.droplet_name.clone(),
        droplet_type: row.droplet_type,
        user_id: i.user_id,
        username: row.username.clone(),
        tenant_id: row.tenant_id,
        status: i.status,
        error_reason: i.error_reason.clone(),
        created_at: i.created_at,
        started_at: i.started_at,
        stopped_at: i.stopped_at,
        last_activity_at: i.last_activity_at,
        open_url,
    }
}

fn view_page(page: Page<InstanceRow>, config: &Config) -> Page<InstanceView> {
    Page {
        items: page.items.iter().map(|row| view(row, config)).collect(),
        total: page.total,
        limit: page.limit,
        offset: page.offset,
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

fn invalid(field: &'static str, reason: impl Into<String>) -> ApiError {
    ApiError(AdminError::InvalidInput {
        field,
        reason: reason.into(),
    })
}

/// `?scope=all&status=&user_id=&droplet_id=&q=&limit=&offset=` of `GET /api/v1/instances`.
pub struct ListParams {
    pub all: bool,
    pub query: InstanceQuery,
    pub page: PageRequest,
}

fn query_pairs(parts: &Parts) -> std::result::Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
        .map_err(|_| invalid("query", "malformed query string"))
}

/// The last value of `name` (as most frameworks read repeated parameters).
fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn scope_all(pairs: &[(String, String)]) -> std::result::Result<bool, ApiError> {
    match param(pairs, "scope") {
        None | Some("" | "mine") => Ok(false),
        Some("all") => Ok(true),
        Some(_) => Err(invalid("scope", "must be mine or all")),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ListParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs = query_pairs(parts)?;
        let id = |name: &'static str| {
            param(&pairs, name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| {
                    v.trim()
                        .parse::<i64>()
                        .map_err(|_| invalid(name, "must be a whole number"))
                })
                .transpose()
        };
        let status = param(&pairs, "status")
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<InstanceStatus>()
                    .map_err(|_| invalid("status", format!("unknown status {v:?}")))
            })
            .transpose()?;
        let text = param(&pairs, "q")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| v.chars().take(100).collect::<String>());
        Ok(Self {
            all: scope_all(&pairs)?,
            query: InstanceQuery {
                status,
                user_id: id("user_id")?,
                droplet_id: id("droplet_id")?,
                text,
            },
            page: PageRequest::parse(param(&pairs, "limit"), param(&pairs, "offset"))?,
        })
    }
}

/// Body of `POST /api/v1/instances`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    pub droplet_id: i64,
    /// `WIDTHxHEIGHT`, e.g. `1920x1080`.
    #[serde(default)]
    pub resolution: Option<String>,
}

impl LaunchRequest {
    pub fn options(&self) -> Result<LaunchOptions> {
        let resolution = self
            .resolution
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(Resolution::parse)
            .transpose()?;
        Ok(LaunchOptions { resolution })
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

pub async fn list(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    params: ListParams,
) -> Result<Json<Page<InstanceView>>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let page = if params.all {
        access.list_all_instances(params.query, params.page).await?
    } else {
        access.list_my_instances(params.query, params.page).await?
    };
    Ok(Json(view_page(page, &state.config)))
}

/// `202 Accepted` with the instance (`creating`), or `201 Created` when it is running already
/// (an external host, a warm pool container).
/// `POST /api/v1/instances`. With an `Idempotency-Key`, a request repeating an earlier one's
/// key answers that request's instance (as it is now) and launches nothing
/// (`Idempotent-Replayed: true`).
pub async fn launch(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    headers: HeaderMap,
    JsonBody(req): JsonBody<LaunchRequest>,
) -> Result<Response, ApiError> {
    let options = req.options()?;
    let key = idempotency::key(&headers)?;
    let orchestrator = Arc::clone(state.orchestrator()?);
    let shared = state.clone();
    let reader = (principal.clone(), client.clone());
    let launch = async move {
        Access::new(&shared.auth, &principal, &client)
            .launch_instance(&orchestrator, req.droplet_id, options, now_millis())
            .await
    };
    let (row, replayed) = match key {
        None => (to_the_end(launch).await?, false),
        Some(key) => {
            let slot = state
                .launch_keys
                .slot(reader.0.user.id, &key, Instant::now());
            let ran = Arc::new(AtomicBool::new(false));
            let ran_here = Arc::clone(&ran);
            let id = to_the_end(async move {
                slot.get_or_try_init(|| async move {
                    ran_here.store(true, Ordering::Relaxed);
                    launch.await.map(|row| row.instance.id)
                })
                .await
                .copied()
            })
            .await?;
            let row = Access::new(&state.auth, &reader.0, &reader.1)
                .get_instance_row(id)
                .await?;
            (row, !ran.load(Ordering::Relaxed))
        }
    };
    let status = if row.instance.status == InstanceStatus::Running {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    let mut response = (status, Json(view(&row, &state.config))).into_response();
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

pub async fn show(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<Json<InstanceView>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let row = access.get_instance_row(id).await?;
    Ok(Json(view(&row, &state.config)))
}

/// `200` once running, `202 Accepted` while the start goes on in the background.
pub async fn start(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<(StatusCode, Json<InstanceView>), ApiError> {
    let orchestrator = Arc::clone(state.orchestrator()?);
    let shared = state.clone();
    let started = to_the_end(async move {
        Access::new(&shared.auth, &principal, &client)
            .start_instance(&orchestrator, id, now_millis())
            .await
    })
    .await?;
    Ok(match started {
        Started::Running(row) => (StatusCode::OK, Json(view(&row, &state.config))),
        Started::Pending(row) => (StatusCode::ACCEPTED, Json(view(&row, &state.config))),
    })
}

pub async fn stop(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<Json<InstanceView>, ApiError> {
    let orchestrator = Arc::clone(state.orchestrator()?);
    let shared = state.clone();
    let row = to_the_end(async move {
        Access::new(&shared.auth, &principal, &client)
            .stop_instance(&orchestrator, id, now_millis())
            .await
    })
    .await?;
    Ok(Json(view(&row, &state.config)))
}

pub async fn delete(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
) -> Result<StatusCode, ApiError> {
    let orchestrator = Arc::clone(state.orchestrator()?);
    let shared = state.clone();
    to_the_end(async move {
        Access::new(&shared.auth, &principal, &client)
            .delete_instance(&orchestrator, id, now_millis())
            .await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a change of an instance to its end in a task of its own. A client that goes away (a
/// closed tab, a connection the browser dropped because the network changed) makes the server
/// drop the request's future; a launch, stop or delete cut off there would leave the instance
/// `creating`, `stopping` or `destroying` for good, with nobody left to finish it.
pub(super) async fn to_the_end<T, F>(change: F) -> std::result::Result<T, ApiError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>> + Send + 'static,
{
    match tokio::spawn(change).await {
        Ok(done) => done.map_err(ApiError::from),
        Err(e) => Err(AdminError::Engine(format!("the change was interrupted: {e}")).into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Usage figures
// ---------------------------------------------------------------------------------------------

/// How old cached usage figures may be before a request asks for fresh ones.
const USAGE_MAX_AGE: Duration = Duration::from_secs(2);
/// How old a sample must be before one missing a running instance is taken again (bounds the
/// engine calls while a container is too young to report).
const USAGE_MIN_AGE: Duration = Duration::from_millis(500);

/// The last usage sample of the engine, shared by every request of the process: sampling
/// costs one engine call per running container (and about a second), so requests read this
/// and at most one refresh runs at a time. A request finding it stale starts a refresh and
/// answers with what is there; only the very first request waits.
struct UsageCache {
    last: std::sync::Mutex<Option<(Instant, Arc<Usage>)>>,
    refreshing: tokio::sync::Mutex<()>,
}

static USAGE: UsageCache = UsageCache {
    last: std::sync::Mutex::new(None),
    refreshing: tokio::sync::Mutex::const_new(()),
};

impl UsageCache {
    fn cached(&self) -> Option<(Instant, Arc<Usage>)> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn refresh(&self, orchestrator: &Orchestrator) -> Result<Arc<Usage>> {
        let _one_at_a_time = self.refreshing.lock().await;
        if let Some((at, usage)) = self.cached()
            && at.elapsed() < USAGE_MIN_AGE
        {
            return Ok(usage);
        }
        let usage = Arc::new(orchestrator.usage().await?);
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), Arc::clone(&usage)));
        Ok(usage)
    }

    /// The cached sample, refreshed in the background when it is older than
    /// [`USAGE_MAX_AGE`], or when it misses one of `running` (instances running now: one just
    /// started has no figures in a sample taken before) and is older than
    /// [`USAGE_MIN_AGE`].
    async fn get(
        &'static self,
        orchestrator: &Arc<Orchestrator>,
        running: &[i64],
    ) -> Result<Arc<Usage>> {
        match self.cached() {
            Some((at, usage)) => {
                let misses = running.iter().any(|id| !measured(&usage, *id));
                let stale =
                    at.elapsed() >= USAGE_MAX_AGE || (misses && at.elapsed() >= USAGE_MIN_AGE);
                if stale && self.refreshing.try_lock().is_ok() {
                    let orchestrator = Arc::clone(orchestrator);
                    tokio::spawn(async move {
                        if let Err(e) = self.refresh(&orchestrator).await {
                            tracing::debug!(error = %e, "usage sample failed");
                        }
                    });
                }
                Ok(usage)
            }
            None => self.refresh(orchestrator).await,
        }
    }
}

/// `GET /api/v1/stats`.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// The principal's running instances.
    pub running: i64,
    /// The principal's instances (any status but gone).
    pub instances: i64,
    /// CPU their running instances use, percent of one CPU; `None` without engine figures.
    pub cpu_percent: Option<f64>,
    /// Memory their running instances use, bytes; `None` without engine figures.
    pub memory_bytes: Option<u64>,
    /// The host, for principals holding `view_instances`.
    pub host: Option<HostView>,
}

#[derive(Debug, Serialize)]
pub struct HostView {
    /// CPU the deployment's running containers use, percent of the whole host (all CPUs).
    pub cpu_percent: f64,
    pub cpus: i64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: i64,
    /// Running instances (warm pool containers not counted).
    pub instances_running: usize,
    /// Running warm pool containers.
    pub pool_running: usize,
    /// CPU limits of running instances, millicores (what admission counts).
    pub cpu_allocated_millicores: i64,
    /// Memory limits of running instances, MiB.
    pub memory_allocated_mb: i64,
}

/// The principal's figures and, for those who may see it, the host's.
pub async fn usage_stats(state: &AppState, access: &Access<'_>) -> Result<Stats> {
    let mine = access
        .list_my_instances(
            InstanceQuery::default(),
            PageRequest {
                limit: crate::access::MAX_LIMIT,
                offset: 0,
            },
        )
        .await?;
    let running: Vec<i64> = mine
        .items
        .iter()
        .filter(|r| r.instance.status == InstanceStatus::Running)
        .map(|r| r.instance.id)
        .collect();
    let usage = engine_usage(state, &running).await;
    Ok(stats_of(
        access.stats_scope(),
        &running,
        mine.total,
        usage.as_deref(),
    ))
}

/// The engine's last figures (refreshed when they miss one of `running`), `None` without an
/// engine or when it cannot say.
async fn engine_usage(state: &AppState, running: &[i64]) -> Option<Arc<Usage>> {
    let orchestrator = state.orchestrator().ok()?;
    match USAGE.get(orchestrator, running).await {
        Ok(usage) => Some(usage),
        Err(e) => {
            tracing::debug!(error = %e, "no usage figures");
            None
        }
    }
}

/// Whether `usage` has figures of instance `id`. A container sampled in its first moments
/// reports no memory yet: that is no figure either (a running process uses some).
fn measured(usage: &Usage, id: i64) -> bool {
    usage
        .instances
        .iter()
        .any(|i| i.instance_id == id && i.memory_bytes > 0)
}

/// The figures of a principal whose running instances are `running`. CPU and memory are
/// `None` ("not measured yet") while the sample lacks one of them: a sum missing a fresh
/// instance would read as a misleadingly low number.
fn stats_of(
    scope: crate::access::StatsScope,
    running: &[i64],
    instances: i64,
    usage: Option<&Usage>,
) -> Stats {
    let own = usage.and_then(|u| {
        running.iter().all(|id| measured(u, *id)).then(|| {
            u.instances
                .iter()
                .filter(|i| i.user_id == scope.user_id && running.contains(&i.instance_id))
                .fold((0.0, 0u64), |(cpu, mem), i| {
                    (cpu + i.cpu_percent, mem.saturating_add(i.memory_bytes))
                })
        })
    });
    let host = usage.filter(|_| scope.host).map(|u| {
        let h = &u.host;
        HostView {
            cpu_percent: if h.cpus > 0 {
                h.used_cpu_percent / h.cpus as f64
            } else {
                0.0
            },
            cpus: h.cpus,
            memory_used_bytes: h.used_memory_bytes,
            memory_total_bytes: h.memory_bytes,
            instances_running: h.running_containers.saturating_sub(h.pooled_containers),
            pool_running: h.pooled_containers,
            cpu_allocated_millicores: h.allocated_cpu_millicores,
            memory_allocated_mb: h.allocated_memory_mb,
        }
    });
    Stats {
        running: i64::try_from(running.len()).unwrap_or(i64::MAX),
        instances,
        cpu_percent: own.map(|(cpu, _)| cpu),
        memory_bytes: own.map(|(_, mem)| mem),
        host,
    }
}

pub async fn stats(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
) -> Result<Json<Stats>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(usage_stats(&state, &access).await?))
}

// ---------------------------------------------------------------------------------------------
// Event stream
// ---------------------------------------------------------------------------------------------

/// How often a stream re-reads the instances it shows (changes of other processes).
const REREAD_EVERY: Duration = Duration::from_secs(1);
/// How often a stream checks that its session or API key still holds.
const SIGNED_IN_CHECK_EVERY: Duration = Duration::from_secs(5);
/// A stream ends after this long; `EventSource` reconnects by itself.
const STREAM_LIFETIME: Duration = Duration::from_secs(3600);
/// Comment lines keeping idle connections (and proxies) open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Streams open at once in this process.
const MAX_STREAMS: usize = 1024;
/// Instances one stream follows (the newest); an administrator's list past this is paged by
/// the list endpoint instead.
const MAX_WATCHED: i64 = 500;
/// Events waiting for a slow client before the stream gives up on it.
const EVENT_BACKLOG: usize = 64;

static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// A slot among [`MAX_STREAMS`], given back when the stream ends.
struct StreamSlot;

impl StreamSlot {
    fn take() -> Result<Self> {
        let taken = OPEN_STREAMS.fetch_add(1, Ordering::SeqCst);
        if taken >= MAX_STREAMS {
            OPEN_STREAMS.fetch_sub(1, Ordering::SeqCst);
            return Err(AdminError::CapacityExhausted(
                "too many open event streams; poll the instance list instead".into(),
            ));
        }
        Ok(Self)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET /api/v1/events[?scope=all]`.
pub async fn events(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    parts: EventParams,
) -> Result<Response, ApiError> {
    let filter = Access::new(&state.auth, &principal, &client).event_filter(parts.all)?;
    let slot = StreamSlot::take()?;
    let changes = state.orchestrator().ok().map(|o| o.subscribe_changes());
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(EVENT_BACKLOG);
    let watcher = Watcher {
        state,
        principal,
        client,
        filter,
        shown: HashMap::new(),
        stats_sent: None,
        tx,
    };
    tokio::spawn(watcher.run(changes, slot));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<Event, Infallible>(event), rx))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Proxies must pass events on as they come.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// `?scope=all` of the event stream.
pub struct EventParams {
    pub all: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for EventParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs = query_pairs(parts)?;
        Ok(Self {
            all: scope_all(&pairs)?,
        })
    }
}

/// One stream's state: what the client was last told about each instance it sees.
struct Watcher {
    state: AppState,
    principal: Principal,
    client: ClientInfo,
    filter: InstanceFilter,
    /// Instance id → the view last sent.
    shown: HashMap<i64, InstanceView>,
    /// The `stats` event last sent (JSON), on a stream of the principal's own instances.
    stats_sent: Option<String>,
    tx: tokio::sync::mpsc::Sender<Event>,
}

/// Why a stream stops.
enum End {
    /// The client went away (or cannot keep up).
    Gone,
}

impl Watcher {
    async fn run(
        mut self,
        mut changes: Option<tokio::sync::broadcast::Receiver<i64>>,
        _slot: StreamSlot,
    ) {
        let started = tokio::time::Instant::now();
        let mut reread = tokio::time::interval(REREAD_EVERY);
        reread.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_check = tokio::time::Instant::now();
        loop {
            if started.elapsed() >= STREAM_LIFETIME {
                return;
            }
            if last_check.elapsed() >= SIGNED_IN_CHECK_EVERY {
                last_check = tokio::time::Instant::now();
                let access = Access::new(&self.state.auth, &self.principal, &self.client);
                match access.still_signed_in(now_millis()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // The client's reconnection then gets 401 and stops.
                        let _ = self
                            .send(Event::default().event("signed_out").data("{}"))
                            .await;
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "event stream: cannot check the session"),
                }
            }
            let outcome = tokio::select! {
                _ = reread.tick() => self.reread_all().await,
                change = recv(&mut changes) => match change {
                    Ok(id) => self.reread_one(id).await,
                    // Fell behind: the full re-read catches up.
                    Err(RecvError::Lagged(_)) => self.reread_all().await,
                    Err(RecvError::Closed) => {
                        changes = None;
                        Ok(())
                    }
                },
                () = self.tx.closed() => return,
            };
            if let Err(End::Gone) = outcome {
                return;
            }
            if let Err(End::Gone) = self.send_stats().await {
                return;
            }
        }
    }

    /// On a stream of the principal's own instances, sends the dashboard's figures (`stats`,
    /// the body of `GET /api/v1/stats`) whenever they changed: a started instance counts at
    /// once, its CPU and memory as soon as the engine has sampled it. Counted from the
    /// instances this stream shows, so no query of its own.
    async fn send_stats(&mut self) -> std::result::Result<(), End> {
        let own =
            self.filter.user_id == Some(self.principal.user.id) && self.filter.tenant_id.is_none();
        if !own {
            return Ok(());
        }
        let running: Vec<i64> = self
            .shown
            .values()
            .filter(|v| v.status == InstanceStatus::Running)
            .map(|v| v.id)
            .collect();
        let usage = engine_usage(&self.state, &running).await;
        let scope = Access::new(&self.state.auth, &self.principal, &self.client).stats_scope();
        let shown = i64::try_from(self.shown.len()).unwrap_or(i64::MAX);
        let stats = stats_of(scope, &running, shown, usage.as_deref());
        let data = serde_json::to_string(&stats).unwrap_or_else(|_| "{}".into());
        if self.stats_sent.as_deref() == Some(data.as_str()) {
            return Ok(());
        }
        self.send(Event::default().event("stats").data(data.clone()))
            .await?;
        self.stats_sent = Some(data);
        Ok(())
    }

    async fn send(&self, event: Event) -> std::result::Result<(), End> {
        // A client that stops reading for long gets dropped rather than buffered without end.
        match tokio::time::timeout(Duration::from_secs(10), self.tx.send(event)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }

    async fn show(&mut self, view: InstanceView) -> std::result::Result<(), End> {
        if self.shown.get(&view.id) == Some(&view) {
            return Ok(());
        }
        let data = serde_json::to_string(&view).unwrap_or_else(|_| "{}".into());
        self.send(Event::default().event("instance").data(data))
            .await?;
        self.shown.insert(view.id, view);
        Ok(())
    }

    async fn remove(&mut self, id: i64) -> std::result::Result<(), End> {
        if self.shown.remove(&id).is_some() {
            let data = serde_json::json!({ "id": id }).to_string();
            self.send(Event::default().event("instance_removed").data(data))
                .await?;
        }
        Ok(())
    }

    /// Whether `row` belongs on this stream.
    fn wants(&self, row: &InstanceRow) -> bool {
        let f = &self.filter;
        row.instance.status != InstanceStatus::Gone
            && f.user_id.is_none_or(|u| u == row.instance.user_id)
            && f.tenant_id.is_none_or(|t| t == row.tenant_id)
            && Access::new(&self.state.auth, &self.principal, &self.client).may_see_instance(row)
    }

    async fn reread_one(&mut self, id: i64) -> std::result::Result<(), End> {
        let row = match self.state.store.instance_row(id).await {
            Ok(row) => row,
            Err(e) => {
                tracing::debug!(error = %e, "event stream: cannot read an instance");
                return Ok(());
            }
        };
        match row {
            Some(row) if self.wants(&row) => self.show(view(&row, &self.state.config)).await,
            _ => self.remove(id).await,
        }
    }

    async fn reread_all(&mut self) -> std::result::Result<(), End> {
        let rows = match self
            .state
            .store
            .list_instance_rows(&self.filter, MAX_WATCHED, 0)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(error = %e, "event stream: cannot read instances");
                return Ok(());
            }
        };
        let mut seen = std::collections::HashSet::new();
        for row in rows {
            if !self.wants(&row) {
                continue;
            }
            seen.insert(row.instance.id);
            self.show(view(&row, &self.state.config)).await?;
        }
        let vanished: Vec<i64> = self
            .shown
            .keys()
            .copied()
            .filter(|id| !seen.contains(id))
            .collect();
        for id in vanished {
            self.remove(id).await?;
        }
        Ok(())
    }
}

/// The next change, or never when there is no orchestrator (the re-read still runs).
async fn recv(
    changes: &mut Option<tokio::sync::broadcast::Receiver<i64>>,
) -> std::result::Result<i64, RecvError> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::StatsScope;
    use crate::orchestrator::{HostStats, InstanceUsage};

    fn sample(instances: &[(i64, i64, u64)]) -> Usage {
        Usage {
            host: HostStats {
                cpus: 2,
                memory_bytes: 1 << 30,
                allocated_cpu_millicores: 0,
                allocated_memory_mb: 0,
                running_containers: instances.len(),
                pooled_containers: 0,
                used_cpu_percent: 50.0,
                used_memory_bytes: 1 << 20,
                unsampled: 0,
            },
            instances: instances
                .iter()
                .map(|&(instance_id, user_id, memory_bytes)| InstanceUsage {
                    instance_id,
                    slug: format!("s{instance_id}"),
                    droplet_id: 1,
                    user_id,
                    cpu_percent: 1.5,
                    memory_bytes,
                    memory_limit_bytes: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn a_new_instance_counts_at_once_and_its_figures_wait_for_a_real_sample() {
        let scope = StatsScope {
            user_id: 7,
            host: false,
        };
        // Sampled before instance 2 ran: counted, but CPU and memory are "not measured yet"
        // rather than a sum without it.
        let before = sample(&[(1, 7, 1000)]);
        let stats = stats_of(scope, &[1, 2], 2, Some(&before));
        assert_eq!(stats.running, 2);
        assert_eq!((stats.cpu_percent, stats.memory_bytes), (None, None));
        // A container sampled in its first moment reports no memory: not a figure either.
        let young = sample(&[(1, 7, 1000), (2, 7, 0)]);
        assert_eq!(stats_of(scope, &[1, 2], 2, Some(&young)).memory_bytes, None);
        let after = sample(&[(1, 7, 1000), (2, 7, 500), (3, 8, 9999)]);
        let stats = stats_of(scope, &[1, 2], 2, Some(&after));
        assert_eq!(
            (stats.cpu_percent, stats.memory_bytes),
            (Some(3.0), Some(1500))
        );
        assert!(
            stats.host.is_none(),
            "the host's figures are for view_instances"
        );
        // Nothing running: nothing used.
        let stats = stats_of(scope, &[], 1, Some(&after));
        assert_eq!((stats.running, stats.memory_bytes), (0, Some(0)));
        assert!(measured(&after, 2) && !measured(&young, 2) && !measured(&before, 2));
    }
}
