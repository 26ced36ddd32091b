//! The HTTPS front door, a pingora `ProxyHttp`: each phase does one thing.
//! - `request_filter`: classify the host, answer locally what is not ours;
//! - `upstream_peer`: pick the upstream for the class (the control plane's Unix socket);
//! - `upstream_request_filter`: forwarding headers and the request id, computed by us only;
//! - `logging`: one access-log line per request.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use flowcase_config::Config;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, Session};
use pingora::proxy::ProxyHttp;
use pingora::{Error, ErrorType, Result};

use crate::routing::{HostClass, classify, host_name};

/// Headers only the gateway may set upstream; whatever a client sent under these names is
/// dropped first, so no client can forge an address or an identity.
const FORWARDING_HEADERS: [&str; 5] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-request-id",
];

pub struct FrontDoor {
    config: Arc<Config>,
    control_socket: String,
}

pub struct RequestCtx {
    class: HostClass,
    request_id: String,
    started: Instant,
}

impl FrontDoor {
    pub fn new(config: Arc<Config>, control_socket: PathBuf) -> Self {
        Self {
            config,
            control_socket: control_socket.display().to_string(),
        }
    }
}

fn request_host(session: &Session) -> Option<String> {
    let req = session.req_header();
    // HTTP/2 carries the host in :authority, HTTP/1.1 in Host.
    let raw = req
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })?;
    host_name(&raw)
}

fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

async fn respond(session: &mut Session, status: u16, title: &str, message: &str) -> Result<bool> {
    let body = Bytes::from(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · Flowcase</title></head>\
         <body><h1>{title}</h1><p>{message}</p></body></html>\n"
    ));
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

#[async_trait]
impl ProxyHttp for FrontDoor {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            class: HostClass::Other,
            request_id: new_request_id(),
            started: Instant::now(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let Some(host) = request_host(session) else {
            return respond(
                session,
                400,
                "Bad request",
                "The request names no valid host.",
            )
            .await;
        };
        ctx.class = classify(&host, &self.config.server);
        match ctx.class {
            HostClass::Public => Ok(false),
            HostClass::Instance { .. } => {
                respond(
                    session,
                    404,
                    "No such instance",
                    "This instance does not exist or has been deleted.",
                )
                .await
            }
            HostClass::Other => {
                respond(
                    session,
                    421,
                    "Unknown host",
                    "This gateway does not serve this host name.",
                )
                .await
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        match ctx.class {
            HostClass::Public => {
                let mut peer = HttpPeer::new_uds(&self.control_socket, false, String::new())?;
                peer.options.connection_timeout = Some(Duration::from_secs(5));
                peer.options.read_timeout = Some(Duration::from_secs(120));
                Ok(Box::new(peer))
            }
            _ => Err(Error::explain(
                ErrorType::InternalError,
                "no upstream for this host class",
            )),
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        for name in FORWARDING_HEADERS {
            upstream.remove_header(name);
        }
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            upstream.insert_header("x-forwarded-for", addr.ip().to_string())?;
        }
        upstream.insert_header("x-forwarded-proto", "https")?;
        if let Some(host) = request_host(session) {
            upstream.insert_header("x-forwarded-host", host)?;
        }
        upstream.insert_header("x-request-id", ctx.request_id.as_str())?;
        Ok(())
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        tracing::info!(
            target: "access",
            request_id = %ctx.request_id,
            host_class = ctx.class.label(),
            method = %req.method,
            path = req.uri.path(),
            status,
            bytes = session.body_bytes_sent(),
            latency_ms = ctx.started.elapsed().as_millis() as u64,
            error = error.map(|e| e.to_string()),
        );
    }
}
