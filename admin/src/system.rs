//! The system report of `GET /api/v1/system`: versions, the database, the container engine, the
//! host and the certificates, gathered without any slow call per request.
//!
//! - The engine's state comes from the orchestrator's health (kept current by its event
//!   watcher); its version and size from one `info` call cached for [`ENGINE_INFO_TTL`] and
//!   bounded by [`ENGINE_INFO_TIMEOUT`], so a page refresh loop costs the engine nothing.
//! - The host figures are read from `/proc` (Linux), which costs microseconds.
//! - Certificates live in the gateway's TLS layer, which this crate does not depend on. The
//!   gateway registers a function returning their status once at startup
//!   ([`register_certificates`]); until then (or in a process without a front door) the
//!   report says they are unknown. A process-wide hook rather than a field of `AppState`: there
//!   is one TLS front door per process, and the control plane only reads through it.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::orchestrator::Orchestrator;
use crate::orchestrator::engine::EngineInfo;
use crate::orchestrator::events::EngineHealth;
use crate::store::{Counts, Store};

/// How long one engine `info` answer is reused.
pub const ENGINE_INFO_TTL: Duration = Duration::from_secs(60);
/// Bound of the `info` call when the cache is stale.
pub const ENGINE_INFO_TIMEOUT: Duration = Duration::from_secs(2);

/// One certificate the front door serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateStatus {
    /// `self-signed`, `files` or `acme`.
    pub source: String,
    pub names: Vec<String>,
    /// Expiry, unix milliseconds.
    pub not_after: i64,
}

type CertificateSource = Box<dyn Fn() -> Vec<CertificateStatus> + Send + Sync>;

static CERTIFICATES: OnceLock<CertificateSource> = OnceLock::new();

/// Lets the gateway report its certificates in the system report. The first registration wins
/// (one front door per process); later ones are ignored.
pub fn register_certificates(source: impl Fn() -> Vec<CertificateStatus> + Send + Sync + 'static) {
    let _ = CERTIFICATES.set(Box::new(source));
}

/// Versions of this build.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    /// The crate version, e.g. `0.1.0`.
    pub flowcase: &'static str,
    /// The git commit built, when the build knew it.
    pub git_commit: Option<&'static str>,
    /// The compiler, e.g. `rustc 1.94.0 (…)`.
    pub rust: Option<&'static str>,
}

/// The build's versions.
pub fn versions() -> Versions {
    Versions {
        flowcase: env!("CARGO_PKG_VERSION"),
        git_commit: option_env!("FLOWCASE_GIT_COMMIT").filter(|c| !c.is_empty()),
        rust: option_env!("FLOWCASE_RUSTC_VERSION").filter(|c| !c.is_empty()),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DatabaseReport {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The server's version, or `None` when it did not answer.
    pub server_version: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineReport {
    /// Whether the engine answered last time.
    pub up: bool,
    /// What was seen, or why it is down.
    pub message: String,
    /// Since when (unix milliseconds) it has been up or down.
    pub since: i64,
    /// Product and version, e.g. `Docker Engine 20.10.24`, once known.
    pub version: Option<String>,
    pub cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// Logical CPUs this process may use.
    pub cpus: usize,
    /// Load averages over 1, 5 and 15 minutes (Linux).
    pub load: Option<[f64; 3]>,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CertificatesReport {
    /// Whether the front door reported its certificates (false in a process without one).
    pub known: bool,
    pub items: Vec<CertificateStatus>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct SystemReport {
    pub versions: Versions,
    pub database: DatabaseReport,
    pub engine: EngineReport,
    pub host: HostReport,
    pub counts: Counts,
    pub certificates: CertificatesReport,
    /// When the report was made, unix milliseconds.
    pub generated_at: i64,
}

/// Gathers the report; `counts` are those the caller may see.
pub async fn report(
    store: &Store,
    orchestrator: Result<&Arc<Orchestrator>, String>,
    counts: Counts,
    now: i64,
) -> SystemReport {
    let server_version = match store.server_version().await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the database server's version");
            None
        }
    };
    let engine = match orchestrator {
        Ok(orchestrator) => engine_report(orchestrator).await,
        Err(reason) => EngineReport {
            up: false,
            message: reason,
            since: now,
            version: None,
            cpus: None,
            memory_bytes: None,
        },
    };
    let certificates = match CERTIFICATES.get() {
        Some(source) => CertificatesReport {
            known: true,
            items: source(),
        },
        None => CertificatesReport {
            known: false,
            items: Vec::new(),
        },
    };
    SystemReport {
        versions: versions(),
        database: DatabaseReport {
            backend: store.backend().as_str(),
            server_version,
        },
        engine,
        host: host_report(),
        counts,
        certificates,
        generated_at: now,
    }
}

/// The last engine `info` answer and when it came.
static ENGINE_INFO: Mutex<Option<(Instant, EngineInfo)>> = Mutex::new(None);
/// One refresh at a time: concurrent reports share it instead of each calling the engine.
static ENGINE_REFRESH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cached_info(max_age: Duration) -> Option<EngineInfo> {
    let cache = ENGINE_INFO.lock().unwrap_or_else(PoisonError::into_inner);
    cache
        .as_ref()
        .filter(|(at, _)| at.elapsed() < max_age)
        .map(|(_, info)| info.clone())
}

async fn engine_report(orchestrator: &Arc<Orchestrator>) -> EngineReport {
    let EngineHealth { up, message, since } = orchestrator.engine_health();
    let mut info = cached_info(ENGINE_INFO_TTL);
    // Asking a down engine would only wait for the timeout: its health already says why.
    if info.is_none() && up {
        let _one = ENGINE_REFRESH.lock().await;
        info = cached_info(ENGINE_INFO_TTL);
        if info.is_none() {
            match tokio::time::timeout(ENGINE_INFO_TIMEOUT, orchestrator.engine().info()).await {
                Ok(Ok(fresh)) => {
                    *ENGINE_INFO.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((Instant::now(), fresh.clone()));
                    info = Some(fresh);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the engine's info"),
                Err(_) => tracing::warn!("the engine's info did not come in time"),
            }
        }
    }
    // A stale answer still names the engine better than nothing when it is down.
    let info = info.or_else(|| cached_info(Duration::MAX));
    EngineReport {
        up,
        message,
        since,
        version: info.as_ref().map(|i| i.description.clone()),
        cpus: info.as_ref().map(|i| i.cpus),
        memory_bytes: info.as_ref().map(|i| i.memory_bytes),
    }
}

fn host_report() -> HostReport {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| parse_loadavg(&text));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    HostReport {
        cpus,
        load,
        memory_total_bytes: meminfo_bytes(&meminfo, "MemTotal"),
        memory_available_bytes: meminfo_bytes(&meminfo, "MemAvailable"),
    }
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

/// A `/proc/meminfo` line such as `MemTotal:  16318496 kB`, in bytes.
fn meminfo_bytes(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kib.checked_mul(1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 1/389 12345\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("garbage"), None);
        let meminfo = "MemTotal:       16318496 kB\nMemFree:  1 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(meminfo_bytes(meminfo, "MemTotal"), Some(16_318_496 * 1024));
        assert_eq!(
            meminfo_bytes(meminfo, "MemAvailable"),
            Some(8_000_000 * 1024)
        );
        assert_eq!(meminfo_bytes(meminfo, "Mem"), None);
    }

    #[test]
    fn versions_name_the_crate() {
        assert_eq!(versions().flowcase, env!("CARGO_PKG_VERSION"));
    }
}
