//! The metrics and health listener: `/healthz` (the process answers), `/readyz` (JSON report of
//! the database, Docker and certificates; 503 when a required part is down) and `/metrics`
//! (Prometheus). Answers come from a snapshot that the control plane's prober keeps fresh.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use flowcase_admin::auth::tokens;
use flowcase_certs::CertResolver;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

/// The last result of one readiness probe.
#[derive(Debug, Clone)]
pub struct Check {
    /// None until the first probe has run.
    pub ok: Option<bool>,
    pub detail: String,
}

impl Check {
    pub fn ok(detail: String) -> Self {
        Self {
            ok: Some(true),
            detail,
        }
    }

    pub fn failed(detail: String) -> Self {
        Self {
            ok: Some(false),
            detail,
        }
    }

    fn pending() -> Self {
        Self {
            ok: None,
            detail: "not checked yet".into(),
        }
    }

    fn to_json(&self, required: bool) -> serde_json::Value {
        json!({
            "ok": self.ok == Some(true),
            "required": required,
            "detail": self.detail,
        })
    }
}

pub struct HealthState {
    pub database: ArcSwap<Check>,
    pub docker: ArcSwap<Check>,
    certs: Arc<CertResolver>,
}

impl HealthState {
    pub fn new(certs: Arc<CertResolver>) -> Self {
        Self {
            database: ArcSwap::from_pointee(Check::pending()),
            docker: ArcSwap::from_pointee(Check::pending()),
            certs,
        }
    }

    /// The readiness report and whether the gateway can serve. Docker is reported but not
    /// required: logins, pages and running instances keep working while it is down.
    pub fn readiness(&self, now: SystemTime) -> (bool, serde_json::Value) {
        let database = self.database.load();
        let docker = self.docker.load();
        let certificates = match self.certs.status() {
            Some(status) => {
                let expires = secs(status.not_after);
                let valid = status.not_after > now;
                json!({
                    "ok": valid,
                    "required": true,
                    "source": status.source,
                    "names": status.names,
                    "not_after": expires,
                    "detail": if valid { "valid" } else { "expired" },
                })
            }
            None => json!({"ok": false, "required": true, "detail": "no certificate loaded"}),
        };
        let ready = database.ok == Some(true) && certificates["ok"] == json!(true);
        let body = json!({
            "status": if !ready { "unavailable" } else if docker.ok == Some(true) { "ready" } else { "degraded" },
            "checks": {
                "database": database.to_json(true),
                "docker": docker.to_json(false),
                "certificates": certificates,
            },
        });
        (ready, body)
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct HealthApp {
    state: Arc<HealthState>,
    /// Digest of the bearer token `/metrics` requires, if any. Compared as digests so the
    /// comparison's timing says nothing about the token.
    metrics_token_digest: Option<String>,
}

impl HealthApp {
    pub fn new(state: Arc<HealthState>, metrics_token: Option<String>) -> Self {
        Self {
            state,
            metrics_token_digest: metrics_token.as_deref().map(tokens::digest),
        }
    }

    fn may_read_metrics(&self, session: &ServerSession) -> bool {
        let Some(expected) = &self.metrics_token_digest else {
            return true;
        };
        session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|presented| tokens::digest(presented.trim()) == *expected)
    }
}

fn response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

#[async_trait]
impl ServeHttp for HealthApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => response(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                b"ok\n".to_vec(),
            ),
            "/readyz" => {
                let (ready, body) = self.state.readiness(SystemTime::now());
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                response(status, "application/json", body.to_string().into_bytes())
            }
            "/metrics" if !self.may_read_metrics(session) => {
                let mut resp = response(
                    StatusCode::UNAUTHORIZED,
                    "text/plain; charset=utf-8",
                    b"a bearer token is required\n".to_vec(),
                );
                resp.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
                resp
            }
            "/metrics" => {
                let mut buf = Vec::new();
                let encoder = prometheus::TextEncoder::new();
                match prometheus::Encoder::encode(&encoder, &prometheus::gather(), &mut buf) {
                    Ok(()) => response(StatusCode::OK, prometheus::TEXT_FORMAT, buf),
                    Err(e) => response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        e.to_string().into_bytes(),
                    ),
                }
            }
            _ => response(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
