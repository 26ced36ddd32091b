//! The control plane's Prometheus metrics, registered in the process-wide default registry that
//! pingora and the gateway's data-plane metrics share, so `/metrics` serves them all. Names and
//! labels are listed in `docs/metrics.md`; labels only take values from small, fixed sets (no
//! user, session or instance ids), so the series count stays bounded whatever the load.
//!
//! Counters and histograms are bumped where things happen; gauges that describe stored state
//! (sessions, instances, pools, host capacity, the database pool) are refreshed by
//! [`spawn_collector`] from the store and the orchestrator, off every request path.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use crate::Store;
use crate::orchestrator::Orchestrator;

/// Buckets for instance start times: containers start in about half a second, images with a
/// slow health check in tens of seconds.
const START_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0];

const COLLECT_EVERY: Duration = Duration::from_secs(10);

// Metric definitions are constants: a bad name or a duplicate registration is a programming
// error that every test run hits at once, so failing loudly here is right.
#[allow(clippy::expect_used)]
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    metric: Result<C, prometheus::Error>,
) -> C {
    let metric = metric.expect("metric definitions are valid");
    prometheus::register(Box::new(metric.clone())).expect("each metric is registered once");
    metric
}

/// A counter with labels, registered in the default registry.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(IntCounterVec::new(Opts::new(name, help), labels))
}

/// A counter without labels, registered in the default registry.
pub fn counter(name: &str, help: &str) -> IntCounter {
    registered(IntCounter::new(name, help))
}

/// A gauge with labels, registered in the default registry.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(IntGaugeVec::new(Opts::new(name, help), labels))
}

/// A gauge without labels, registered in the default registry.
pub fn gauge(name: &str, help: &str) -> IntGauge {
    registered(IntGauge::new(name, help))
}

/// A histogram (seconds) with labels, registered in the default registry.
pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    registered(HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    ))
}

/// A histogram (seconds) without labels, registered in the default registry.
pub fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    registered(Histogram::with_opts(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
    ))
}

/// How someone signed in.
#[derive(Debug, Clone, Copy)]
pub enum LoginMethod {
    Password,
    Oidc,
}

/// How a sign-in ended.
#[derive(Debug, Clone, Copy)]
pub enum LoginResult {
    Success,
    Failure,
    Throttled,
}

static LOGINS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "flowcase_logins_total",
        "Sign-in attempts by method (password, oidc) and result (success, failure, throttled).",
        &["method", "result"],
    )
});

pub fn login(method: LoginMethod, result: LoginResult) {
    LOGINS
        .with_label_values(&[label_of(method), result_of(result)])
        .inc();
}

static LAUNCH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "flowcase_instance_launch_seconds",
        "Time from a launch request to the instance being ready (warm-pool launches included).",
        START_BUCKETS,
    )
});

/// A launch became ready after `seconds`.
pub fn launched(seconds: f64) {
    LAUNCH_SECONDS.observe(seconds);
}

static LAUNCH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "flowcase_instance_launch_failures_total",
        "Launches and wakes that failed, by error code (quota_exceeded, image_missing, ...).",
        &["reason"],
    )
});

/// A launch or wake failed with the API error code `code` (a fixed set of names).
pub fn launch_failed(code: &'static str) {
    LAUNCH_FAILURES.with_label_values(&[code]).inc();
}

static WAKE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "flowcase_instance_wake_seconds",
        "Time from a request for a stopped instance to the instance being ready again.",
        START_BUCKETS,
    )
});

pub fn woke(seconds: f64) {
    WAKE_SECONDS.observe(seconds);
}

static REAPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "flowcase_instance_idle_stops_total",
        "Instances the reaper ended for idleness (action stop or destroy) or age (action expire).",
        &["action"],
    )
});

/// The reaper ended `count` instances: `action` is `stop` or `destroy` (idle) or `expire`
/// (lifetime).
pub fn reaped(action: &'static str, count: usize) {
    REAPED
        .with_label_values(&[action])
        .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
}

static DOCKER_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "flowcase_docker_api_errors_total",
        "Docker engine API calls that failed, by operation (create, start, stop, ...).",
        &["operation"],
    )
});

/// An engine call failed; `operation` names the engine interface method.
pub fn docker_error(operation: &'static str) {
    DOCKER_ERRORS.with_label_values(&[operation]).inc();
}

static DOCKER_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "flowcase_docker_up",
        "1 when the Docker engine answered the last health probe, else 0.",
    )
});

pub fn docker_up(up: bool) {
    DOCKER_UP.set(i64::from(up));
}

/// Gauges refreshed by the collector.
struct StateGauges {
    sessions: IntGauge,
    instances: IntGaugeVec,
    pool: IntGaugeVec,
    db_connections: IntGaugeVec,
    db_max: IntGauge,
    host_cpus: IntGauge,
    host_memory: IntGauge,
    allocated_cpus: prometheus::Gauge,
    allocated_memory: IntGauge,
}

static STATE: LazyLock<StateGauges> = LazyLock::new(|| StateGauges {
    sessions: gauge(
        "flowcase_sessions_active",
        "Sessions that are neither revoked nor expired.",
    ),
    instances: gauge_vec(
        "flowcase_instances",
        "Instances by state and droplet name (gone instances are not counted).",
        &["state", "droplet"],
    ),
    pool: gauge_vec(
        "flowcase_pool_containers",
        "Warm-pool containers ready to hand out, by droplet name.",
        &["droplet"],
    ),
    db_connections: gauge_vec(
        "flowcase_db_pool_connections",
        "Database connections held by the pool, by state (idle, in_use).",
        &["state"],
    ),
    db_max: gauge(
        "flowcase_db_pool_max_connections",
        "The database pool's configured size.",
    ),
    host_cpus: gauge(
        "flowcase_host_cpu_cores",
        "CPUs of the Docker engine's host.",
    ),
    host_memory: gauge(
        "flowcase_host_memory_bytes",
        "Memory of the Docker engine's host, bytes.",
    ),
    allocated_cpus: registered(prometheus::Gauge::new(
        "flowcase_host_cpu_allocated_cores",
        "CPU limits of running and starting instances and started pool containers, cores.",
    )),
    allocated_memory: gauge(
        "flowcase_host_memory_allocated_bytes",
        "Memory limits of running and starting instances and started pool containers, bytes.",
    ),
});

/// Registers every control-plane metric now, so the exposition lists them (at zero) before the
/// first event: dashboards and alerts then see a series instead of nothing.
pub fn register() {
    LazyLock::force(&LOGINS);
    LazyLock::force(&LAUNCH_SECONDS);
    LazyLock::force(&LAUNCH_FAILURES);
    LazyLock::force(&WAKE_SECONDS);
    LazyLock::force(&REAPED);
    LazyLock::force(&DOCKER_ERRORS);
    LazyLock::force(&DOCKER_UP);
    LazyLock::force(&STATE);
    for method in [LoginMethod::Password, LoginMethod::Oidc] {
        for result in [
            LoginResult::Success,
            LoginResult::Failure,
            LoginResult::Throttled,
        ] {
            let _ = LOGINS.get_metric_with_label_values(&[label_of(method), result_of(result)]);
        }
    }
    for action in ["stop", "destroy", "expire"] {
        let _ = REAPED.get_metric_with_label_values(&[action]);
    }
    for code in [
        "quota_exceeded",
        "capacity_exhausted",
        "image_missing",
        "engine_error",
        "instance_not_ready",
    ] {
        let _ = LAUNCH_FAILURES.get_metric_with_label_values(&[code]);
    }
    for operation in crate::orchestrator::metered::OPERATIONS {
        let _ = DOCKER_ERRORS.get_metric_with_label_values(&[operation]);
    }
}

fn label_of(method: LoginMethod) -> &'static str {
    match method {
        LoginMethod::Password => "password",
        LoginMethod::Oidc => "oidc",
    }
}

fn result_of(result: LoginResult) -> &'static str {
    match result {
        LoginResult::Success => "success",
        LoginResult::Failure => "failure",
        LoginResult::Throttled => "throttled",
    }
}

/// Refreshes the state gauges every few seconds until the process ends. Without an
/// orchestrator (no engine client) the host figures are left out.
pub fn spawn_collector(
    store: Store,
    max_connections: u32,
    orchestrator: Option<Arc<Orchestrator>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let state = &*STATE;
        state.db_max.set(i64::from(max_connections));
        loop {
            collect_once(state, &store, orchestrator.as_ref()).await;
            tokio::time::sleep(COLLECT_EVERY).await;
        }
    })
}

async fn collect_once(
    state: &StateGauges,
    store: &Store,
    orchestrator: Option<&Arc<Orchestrator>>,
) {
    let (size, idle) = store.pool_connections();
    let idle = i64::try_from(idle).unwrap_or(i64::MAX);
    state.db_connections.with_label_values(&["idle"]).set(idle);
    state
        .db_connections
        .with_label_values(&["in_use"])
        .set(i64::from(size).saturating_sub(idle));
    match store.gauge_counts(crate::now_millis()).await {
        Ok(counts) => {
            state.sessions.set(counts.active_sessions);
            // Reset first: a droplet renamed or a state emptied must not keep its last value.
            state.instances.reset();
            for (status, droplet, n) in &counts.instances {
                state
                    .instances
                    .with_label_values(&[status, droplet])
                    .set(*n);
            }
            state.pool.reset();
            for (droplet, n) in &counts.pool_ready {
                state.pool.with_label_values(&[droplet]).set(*n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count sessions and instances for metrics"),
    }
    if let Some(orchestrator) = orchestrator {
        match orchestrator.capacity().await {
            Ok(capacity) => {
                state.host_cpus.set(capacity.cpus);
                state.host_memory.set(capacity.memory_bytes);
                state
                    .allocated_cpus
                    .set(capacity.allocated_cpu_millicores as f64 / 1000.0);
                state
                    .allocated_memory
                    .set(capacity.allocated_memory_mb.saturating_mul(1024 * 1024));
            }
            Err(e) => tracing::debug!(error = %e, "no host capacity for metrics"),
        }
    }
}
