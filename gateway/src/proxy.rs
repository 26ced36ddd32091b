//! The HTTPS front door, a pingora `ProxyHttp`: each phase does one thing.
//! - `request_filter`: refuse a host that disagrees with the connection's TLS name (421),
//!   classify the host; on instance hosts, admit the request through the app
//!   cookie (or send it to log in); answer locally what goes nowhere;
//! - `upstream_peer`: the control plane's Unix socket, the desktop tunnels' socket (the public
//!   host's `/tunnel`, with the token moved out of the URL so no log ever holds it), or the
//!   instance's upstream;
//! - `upstream_request_filter`: strip what the client may not pass on (our cookies, forged
//!   forwarding and identity headers), then add ours;
//! - `logging`: one access-log line per request.
//!
//! Nothing here waits on the database or Docker: instance routes and revocations come from
//! the in-memory snapshot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use flowcase_admin::auth::assertion::{self, AssertionSigner, Claims};
use flowcase_admin::store::{InstanceStatus, now_millis};
use flowcase_admin::web::extract::USER_HEADER;
use flowcase_config::Config;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::{HttpPeer, Session};
use pingora::proxy::{FailToProxy, ProxyHttp};
use pingora::{Error, ErrorType, Result};

use crate::app_host::{Admitted, AppHostGate, Decision};
use crate::routing::{HostClass, classify, host_name};
use crate::snapshot::Snapshot;
use crate::wake::Waker;

/// Headers only the gateway may set upstream; whatever a client sent under these names is
/// dropped first, so no client can forge an address or an identity.
const FORWARDING_HEADERS: [&str; 10] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-request-id",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-flowcase-assertion",
    crate::tunnel::TOKEN_HEADER,
];

/// Our cookies; instance hosts never see them, whatever the browser sends.
const OUR_COOKIES: [&str; 4] = [
    "__Host-flowcase_session",
    "__Host-flowcase_app",
    "__Host-flowcase_app_state",
    "__Host-flowcase_oidc",
];

pub struct FrontDoor {
    config: Arc<Config>,
    control_socket: String,
    tunnel_socket: String,
    snapshot: Arc<Snapshot>,
    gate: AppHostGate,
    waker: Waker,
    /// Lower-cased `instances.passive_user_agents`.
    passive_agents: Vec<String>,
    assertions: Assertions,
    activity: crate::control_plane::Activity,
}

/// Signs the identity assertion instance hosts receive, reusing one per app cookie for a minute
/// (kept with the opened cookie): an ECDSA signature per request would cost more than the rest
/// of the proxying.
struct Assertions {
    signer: Arc<AssertionSigner>,
    issuer: String,
    https_port: u16,
}

impl Assertions {
    const REUSE_MS: i64 = 60_000;

    fn for_admitted(&self, admitted: &Admitted, now: i64) -> Option<HeaderValue> {
        if let Ok(slot) = admitted.assertion.lock()
            && let Some((token, minted)) = slot.as_ref()
            && now - minted < Self::REUSE_MS
        {
            return Some(token.clone());
        }
        let identity = &admitted.identity;
        let audience = flowcase_config::origin(&identity.host, self.https_port);
        let token = self.signer.sign(&Claims {
            iss: &self.issuer,
            sub: identity.user_id.to_string(),
            aud: &audience,
            iat: now / 1000,
            exp: (now + assertion::LIFETIME_MS) / 1000,
            preferred_username: &identity.username,
            email: identity.email.as_deref(),
            groups: &identity.groups,
        })?;
        let token = HeaderValue::try_from(token).ok()?;
        if let Ok(mut slot) = admitted.assertion.lock() {
            *slot = Some((token.clone(), now));
        }
        Some(token)
    }
}

/// Where an admitted request goes.
enum Target {
    ControlPlane,
    /// A desktop tunnel, with the token taken out of the query string.
    Tunnel {
        token: Option<String>,
    },
    Instance {
        upstream: SocketAddr,
        admitted: Arc<Admitted>,
    },
}

pub struct RequestCtx {
    class: HostClass,
    /// The request's host name, lower-case, without port (empty until `request_filter`).
    host: String,
    target: Option<Target>,
    request_id: String,
    started: Instant,
    /// When the upstream was chosen, for the upstream connect and response times.
    upstream_chosen: Option<Instant>,
    /// Request body bytes passed on so far, against `proxy.max_request_body`.
    body_bytes: u64,
    /// Who the control plane says made the request (its [`USER_HEADER`]), for the access log.
    control_plane_user: Option<String>,
}

impl FrontDoor {
    pub fn new(
        config: Arc<Config>,
        runtime_dir: &crate::control_plane::RuntimeDir,
        snapshot: Arc<Snapshot>,
        gate: AppHostGate,
        waker: Waker,
        signer: Arc<AssertionSigner>,
        activity: crate::control_plane::Activity,
    ) -> Self {
        let passive_agents = config
            .instances
            .passive_user_agents
            .iter()
            .map(|a| a.to_lowercase())
            .collect();
        let assertions = Assertions {
            signer,
            issuer: config.server.public_origin(),
            https_port: config.server.effective_https_port(),
        };
        Self {
            config,
            control_socket: runtime_dir.control_socket().display().to_string(),
            tunnel_socket: runtime_dir.tunnel_socket().display().to_string(),
            snapshot,
            gate,
            waker,
            passive_agents,
            assertions,
            activity,
        }
    }

    /// Long-lived exchanges (WebSockets, streamed bodies) are checked again on every chunk
    /// either way: a logout, a disabled user or an expired session cuts them at the next frame.
    fn still_allowed(&self, ctx: &RequestCtx) -> Result<()> {
        let Some(Target::Instance { admitted, .. }) = &ctx.target else {
            return Ok(());
        };
        let identity = &admitted.identity;
        if self.snapshot.is_revoked(&identity.session)
            || now_millis() >= identity.session_expires_at
        {
            return Err(Error::explain(
                ErrorType::ConnectionClosed,
                "the session behind this connection has ended",
            ));
        }
        Ok(())
    }

    /// `proxy.max_request_body`, None when unlimited.
    fn body_limit(&self) -> Option<u64> {
        let limit = self.config.proxy.max_request_body;
        (!limit.is_zero()).then(|| limit.bytes())
    }

    fn is_passive(&self, session: &Session) -> bool {
        let agent = session
            .req_header()
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_lowercase)
            .unwrap_or_default();
        self.passive_agents
            .iter()
            .any(|p| agent.contains(p.as_str()))
    }

    /// The upstream of an admitted request to an instance that is not running: browsers get a
    /// page that reloads itself while the instance starts; other clients wait for it a while.
    async fn wake(
        &self,
        session: &mut Session,
        route: &crate::snapshot::InstanceRoute,
    ) -> Result<Option<SocketAddr>> {
        match route.status {
            InstanceStatus::Error => {
                respond(
                    session,
                    502,
                    "Instance failed",
                    "This instance failed. Start it again from the dashboard.",
                )
                .await?;
                return Ok(None);
            }
            InstanceStatus::Stopping | InstanceStatus::Destroying | InstanceStatus::Gone => {
                respond(
                    session,
                    503,
                    "Instance stopping",
                    "This instance is stopping. Start it again from the dashboard.",
                )
                .await?;
                return Ok(None);
            }
            _ => {}
        }
        if self.is_passive(session) {
            respond(
                session,
                503,
                "Instance asleep",
                "This instance is not running.",
            )
            .await?;
            return Ok(None);
        }
        let navigation = session
            .req_header()
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
        if navigation {
            self.waker.nudge(route.id);
            starting_page(session, &route.droplet_name).await?;
            return Ok(None);
        }
        match tokio::time::timeout(
            self.config.instances.wake_wait.get(),
            self.waker.wake(route.id),
        )
        .await
        {
            Ok(Ok(upstream)) => Ok(Some(upstream)),
            Ok(Err(_)) => {
                respond(
                    session,
                    502,
                    "Instance failed",
                    "This instance could not be started.",
                )
                .await?;
                Ok(None)
            }
            Err(_) => {
                unavailable(session, 5).await?;
                Ok(None)
            }
        }
    }

    async fn admit_instance(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        host: &str,
        slug: &str,
    ) -> Result<bool> {
        let Some(route) = self.snapshot.instance(slug) else {
            return respond(
                session,
                404,
                "No such instance",
                "This instance does not exist or has been deleted.",
            )
            .await;
        };
        let req = session.req_header();
        let cookies: Vec<&str> = req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let decision = if req.uri.path() == flowcase_admin::auth::app_host::AUTH_PATH {
            self.gate
                .enter(host, &route, req.uri.query(), &cookies, now_millis())
                .await
        } else {
            self.gate.decide(
                host,
                &route,
                req.uri.path(),
                req.uri.query(),
                &cookies,
                now_millis(),
            )
        };
        match decision {
            Decision::Allow(admitted) => {
                let upstream = match (route.status, route.upstream) {
                    (InstanceStatus::Running, Some(upstream)) => upstream,
                    _ => match self.wake(session, &route).await? {
                        Some(upstream) => upstream,
                        None => return Ok(true),
                    },
                };
                // Monitors neither wake an instance nor keep it awake.
                if !self.is_passive(session)
                    && let Some(activity) = self.activity.get()
                {
                    activity.record(route.id, &admitted.identity.session);
                }
                ctx.target = Some(Target::Instance { upstream, admitted });
                Ok(false)
            }
            Decision::Login {
                location,
                set_cookie,
            } => redirect(session, &location, set_cookie.as_slice()).await,
            Decision::Enter {
                set_cookies,
                location,
            } => redirect(session, &location, &set_cookies).await,
            Decision::Refuse(status, message) => {
                respond(session, status, "Access refused", message).await
            }
        }
    }
}

/// The public host's desktop tunnel endpoint (`Guacamole.WebSocketTunnel`'s URL).
const TUNNEL_PATH: &str = "/tunnel";

/// Takes the `token` parameter out of a tunnel request's URL: the tunnel gets it in a header,
/// and every log line that shows the request (ours, pingora's) shows it without.
fn take_tunnel_token(session: &mut Session) -> Result<Option<String>> {
    let uri = &session.req_header().uri;
    let Some(query) = uri.query() else {
        return Ok(None);
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let token = pairs
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.clone());
    let kept: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k != "token").collect();
    let rest = serde_urlencoded::to_string(&kept).unwrap_or_default();
    let path_and_query = if rest.is_empty() {
        TUNNEL_PATH.to_owned()
    } else {
        format!("{TUNNEL_PATH}?{rest}")
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "bad tunnel query"))?,
    );
    let new_uri = http::Uri::from_parts(parts)
        .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "bad tunnel query"))?;
    session.req_header_mut().set_uri(new_uri);
    Ok(token)
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

fn declared_body_length(session: &Session) -> Option<u64> {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Escapes text for HTML: messages are fixed today, but this keeps it safe tomorrow.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn respond(session: &mut Session, status: u16, title: &str, message: &str) -> Result<bool> {
    let body = Bytes::from(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Flowcase</title></head>\
         <body><h1>{}</h1><p>{}</p></body></html>\n",
        escape(title),
        escape(title),
        escape(message)
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

/// 421: the request names another host than the TLS connection it came on (SNI). Browsers
/// reuse an HTTP/2 connection for any host its certificate covers (a wildcard covers every
/// instance host); this answer makes them open a connection of the request's own instead.
/// Requests on connections without SNI (a client that dialled an IP address) are routed by
/// their host alone: there is no name for them to disagree with.
async fn misdirected(session: &mut Session) -> Result<bool> {
    const MESSAGE: &str = "This connection was opened for another host name; send the request on a connection of its own.";
    if wants_html(session) {
        respond(session, 421, "Misdirected request", MESSAGE).await
    } else {
        respond_json(session, 421, "misdirected_request", MESSAGE).await
    }
}

/// 413 for a body announced larger than the limit, before anything reaches the upstream. The
/// connection closes afterwards: the unread body would otherwise be taken for the next request.
async fn too_large(session: &mut Session) -> Result<bool> {
    session.set_keepalive(None);
    if wants_html(session) {
        respond(session, 413, "Too large", TOO_LARGE).await
    } else {
        respond_json(session, 413, "payload_too_large", TOO_LARGE).await
    }
}

const TOO_LARGE: &str = "The request body is larger than this gateway accepts.";

fn wants_html(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// The page a browser sees while its instance starts: it reloads itself every two seconds, and
/// the first reload after the instance is ready shows the instance.
async fn starting_page(session: &mut Session, droplet: &str) -> Result<bool> {
    let name = if droplet.is_empty() {
        "your instance"
    } else {
        droplet
    };
    let body = Bytes::from(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"2\"><title>Starting {0}… · Flowcase</title></head>\
         <body><h1>Starting {0}…</h1><p>This page reloads by itself when it is ready.</p></body></html>\n",
        escape(name)
    ));
    let mut header = ResponseHeader::build(503, Some(5))?;
    header.insert_header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    header.insert_header(http::header::RETRY_AFTER, "2")?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

async fn unavailable(session: &mut Session, retry_after_secs: u32) -> Result<bool> {
    let body = Bytes::from_static(b"{\"error\":{\"code\":\"instance_starting\",\"message\":\"the instance is starting; retry later\"}}\n");
    let mut header = ResponseHeader::build(503, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    header.insert_header(http::header::RETRY_AFTER, retry_after_secs.to_string())?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

async fn respond_json(
    session: &mut Session,
    status: u16,
    code: &str,
    message: &str,
) -> Result<bool> {
    let body =
        Bytes::from(serde_json::json!({"error": {"code": code, "message": message}}).to_string());
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

/// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries further left
/// were written by the client and prove nothing).
fn client_ip(session: &Session, trusted: &[std::net::IpAddr]) -> Option<std::net::IpAddr> {
    let peer = session.client_addr()?.as_inet()?.ip();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<std::net::IpAddr> = session
        .req_header()
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted.contains(ip))
            .unwrap_or(peer),
    )
}

async fn redirect(session: &mut Session, location: &str, set_cookies: &[String]) -> Result<bool> {
    let mut header = ResponseHeader::build(302, Some(5))?;
    header.insert_header(http::header::LOCATION, location)?;
    header.insert_header(http::header::CONTENT_LENGTH, "0")?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    for cookie in set_cookies {
        header.append_header(http::header::SET_COOKIE, cookie.as_str())?;
    }
    session
        .write_response_header(Box::new(header), true)
        .await?;
    Ok(true)
}

/// The `Cookie` header without our cookies; None when nothing is left.
fn without_our_cookies(values: &[&str]) -> Option<String> {
    let kept: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !is_ours(pair))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Removes an instance's `Set-Cookie` headers that name one of our cookies: they are the
/// gateway's to give, and an app could otherwise plant a state or somebody's app cookie in its
/// visitors' browsers.
fn drop_our_set_cookies(response: &mut ResponseHeader) -> Result<()> {
    let set_cookies = response.headers.get_all(http::header::SET_COOKIE);
    if !set_cookies.iter().any(|v| sets_ours(v.as_bytes())) {
        return Ok(());
    }
    let kept: Vec<HeaderValue> = set_cookies
        .iter()
        .filter(|v| !sets_ours(v.as_bytes()))
        .cloned()
        .collect();
    response.remove_header(&http::header::SET_COOKIE);
    for value in kept {
        response.append_header(http::header::SET_COOKIE, value)?;
    }
    Ok(())
}

/// Whether a `Set-Cookie` value sets one of our cookies (names compared as browsers compare
/// the `__Host-` prefix: without regard to case).
fn sets_ours(value: &[u8]) -> bool {
    let text = String::from_utf8_lossy(value);
    let name = text
        .split(';')
        .next()
        .and_then(|pair| pair.split_once('='))
        .map(|(name, _)| name.trim());
    name.is_some_and(|name| {
        OUR_COOKIES
            .iter()
            .any(|ours| ours.eq_ignore_ascii_case(name))
    })
}

/// Whether a `name=value` pair of a `Cookie` header is one of our cookies.
fn is_ours(pair: &str) -> bool {
    let pair = pair.trim();
    let name = pair.split_once('=').map_or(pair, |(n, _)| n);
    OUR_COOKIES.contains(&name)
}

#[async_trait]
impl ProxyHttp for FrontDoor {
    type CTX = RequestCtx;

    /// None: pingora's default is a response-compression module switched off, which still
    /// costs an allocation and a few calls per request. Instances compress what they want to.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            class: HostClass::Other,
            host: String::new(),
            target: None,
            request_id: new_request_id(),
            started: Instant::now(),
            upstream_chosen: None,
            body_bytes: 0,
            control_plane_user: None,
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
        if let Some(sni) = crate::tls_front::server_name(session.digest())
            && sni != host
        {
            return misdirected(session).await;
        }
        if let Some(limit) = self.body_limit()
            && declared_body_length(session).is_some_and(|length| length > limit)
        {
            return too_large(session).await;
        }
        ctx.class = classify(&host, &self.config.server);
        ctx.host = host.clone();
        match ctx.class.clone() {
            HostClass::Public if session.req_header().uri.path() == TUNNEL_PATH => {
                let token = take_tunnel_token(session)?;
                ctx.target = Some(Target::Tunnel { token });
                Ok(false)
            }
            HostClass::Public => {
                ctx.target = Some(Target::ControlPlane);
                Ok(false)
            }
            HostClass::Instance { slug } => self.admit_instance(session, ctx, &host, &slug).await,
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
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let mut peer = match &ctx.target {
            Some(Target::ControlPlane) => {
                HttpPeer::new_uds(&self.control_socket, false, String::new())?
            }
            Some(Target::Instance { upstream, .. }) => {
                HttpPeer::new(*upstream, false, String::new())
            }
            Some(Target::Tunnel { .. }) => {
                let mut peer = HttpPeer::new_uds(&self.tunnel_socket, false, String::new())?;
                peer.options.connection_timeout = Some(Duration::from_secs(5));
                // A desktop may sit still for long; the tunnel has its own timeouts (guacd's
                // keep-alives, the browser's pings), so pingora's must not cut it first.
                peer.options.read_timeout = None;
                peer.options.write_timeout = None;
                peer.options.idle_timeout = None;
                return Ok(Box::new(peer));
            }
            None => {
                return Err(Error::explain(
                    ErrorType::InternalError,
                    "no upstream for this request",
                ));
            }
        };
        let proxy = &self.config.proxy;
        peer.options.connection_timeout = Some(proxy.upstream_connect_timeout.get());
        peer.options.read_timeout = Some(proxy.upstream_read_timeout.get());
        if session.is_upgrade_req() {
            // A WebSocket may rightly stay quiet for long, in either direction.
            let idle = proxy.upgraded_idle_timeout.get();
            peer.options.read_timeout = Some(idle);
            session.set_read_timeout(Some(idle));
        }
        ctx.upstream_chosen = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let seconds = match (reused, ctx.upstream_chosen) {
            (false, Some(chosen)) => chosen.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        crate::metrics::upstream_connected(seconds);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(chosen) = ctx.upstream_chosen.take() {
            crate::metrics::upstream_responded(chosen.elapsed().as_secs_f64());
        }
        match ctx.target {
            Some(Target::Instance { .. }) => drop_our_set_cookies(upstream_response)?,
            Some(Target::ControlPlane) => {
                if let Some(user) = upstream_response.remove_header(USER_HEADER) {
                    ctx.control_plane_user = Some(String::from_utf8_lossy(user.as_bytes()).into());
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Every name in FORWARDING_HEADERS starts with `x-`; most requests carry none such,
        // and then there is nothing to look up.
        if upstream
            .headers
            .keys()
            .any(|name| name.as_str().starts_with("x-"))
        {
            for name in FORWARDING_HEADERS {
                upstream.remove_header(name);
            }
        }
        if let Some(ip) = client_ip(session, &self.config.server.trusted_proxies) {
            upstream.insert_header("x-forwarded-for", ip.to_string())?;
        }
        upstream.insert_header("x-forwarded-proto", HeaderValue::from_static("https"))?;
        if !ctx.host.is_empty() {
            upstream.insert_header("x-forwarded-host", ctx.host.as_str())?;
        }
        upstream.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(Target::Tunnel { token: Some(token) }) = &ctx.target {
            upstream.insert_header(crate::tunnel::TOKEN_HEADER, token.as_str())?;
        }

        if let Some(Target::Instance { admitted, .. }) = &ctx.target {
            // A value that is not plain text cannot be checked: it is dropped by the rebuild.
            let ours =
                |value: &HeaderValue| value.to_str().map_or(true, |v| v.split(';').any(is_ours));
            // Rebuilt only when one of ours is in it (always, from a browser that logged in
            // here; not from API clients).
            if upstream
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .any(ours)
            {
                let cookies: Vec<String> = upstream
                    .headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_owned))
                    .collect();
                upstream.remove_header(&http::header::COOKIE);
                let refs: Vec<&str> = cookies.iter().map(String::as_str).collect();
                if let Some(kept) = without_our_cookies(&refs) {
                    upstream.insert_header(http::header::COOKIE, kept)?;
                }
            }
            // Our API keys are credentials for the gateway, not for the instance.
            let ours = upstream
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("Bearer fc_"));
            if ours {
                upstream.remove_header(&http::header::AUTHORIZATION);
            }
            upstream.insert_header("x-forwarded-user", admitted.user.clone())?;
            if let Some(email) = &admitted.email {
                upstream.insert_header("x-forwarded-email", email.clone())?;
            }
            upstream.insert_header("x-forwarded-groups", admitted.groups.clone())?;
            if let Some(token) = self.assertions.for_admitted(admitted, now_millis()) {
                upstream.insert_header("x-flowcase-assertion", token)?;
            }
        }
        Ok(())
    }

    /// Failures to reach an upstream: a page for browsers, JSON for API clients, and never an
    /// internal address or error text in either.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                pingora::ErrorSource::Upstream => match e.etype() {
                    ErrorType::ReadTimedout | ErrorType::WriteTimedout => 504,
                    _ => 502,
                },
                pingora::ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                pingora::ErrorSource::Internal | pingora::ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let instance = matches!(ctx.target, Some(Target::Instance { .. }));
            let (title, api_code, message) = match (instance, code) {
                (true, 502) => (
                    "Unavailable",
                    "upstream_unavailable",
                    "The instance is not answering. It may still be starting, or it stopped: try again in a moment.",
                ),
                (false, 502) => (
                    "Unavailable",
                    "upstream_unavailable",
                    "The gateway is starting or restarting: try again in a moment.",
                ),
                (true, 504) => (
                    "Timed out",
                    "upstream_timeout",
                    "The instance took too long to answer: try again in a moment.",
                ),
                (false, 504) => (
                    "Timed out",
                    "upstream_timeout",
                    "The gateway took too long to answer: try again in a moment.",
                ),
                (_, 413) => ("Too large", "payload_too_large", TOO_LARGE),
                (_, 400) => (
                    "Bad request",
                    "bad_request",
                    "The request could not be read.",
                ),
                _ => (
                    "Unavailable",
                    "internal_error",
                    "Something went wrong on our side.",
                ),
            };
            let result = if wants_html(session) {
                respond(session, code, title, message).await
            } else {
                respond_json(session, code, api_code, message).await
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.still_allowed(ctx)?;
        // Streamed bodies (no Content-Length, or one that lies) are cut where they pass the
        // limit; WebSocket frames are not a request body and are not counted.
        if let (Some(limit), Some(chunk)) = (self.body_limit(), body.as_ref())
            && !session.is_upgrade_req()
        {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > limit {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "the request body passed proxy.max_request_body",
                ));
            }
        }
        // What the user sends (WebSocket frames, uploads) is activity that keeps the instance up.
        if let (Some(Target::Instance { admitted, .. }), Some(activity)) =
            (&ctx.target, self.activity.get())
        {
            activity.record(admitted.identity.instance_id, &admitted.identity.session);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        self.still_allowed(ctx).map(|()| None)
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        let latency = ctx.started.elapsed();
        crate::metrics::request(&ctx.class, req.uri.path(), status, latency.as_secs_f64());
        let user = match &ctx.target {
            Some(Target::Instance { admitted, .. }) => Some(admitted.identity.username.as_str()),
            _ => ctx.control_plane_user.as_deref(),
        };
        let instance = match &ctx.class {
            HostClass::Instance { slug } => Some(slug.as_str()),
            _ => None,
        };
        tracing::info!(
            target: "access",
            request_id = %ctx.request_id,
            host_class = ctx.class.label(),
            user,
            instance,
            method = %req.method,
            path = req.uri.path(),
            status,
            bytes = session.body_bytes_sent(),
            latency_ms = latency.as_millis() as u64,
            error = error.map(|e| e.to_string()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_cannot_set_our_cookies() {
        let mut response = ResponseHeader::build(200, None).unwrap();
        for value in [
            "theme=dark; Path=/",
            "__Host-flowcase_app=copied; Path=/; Secure",
            "__host-FLOWCASE_app_state=planted; Path=/; Secure",
            "session=app-own; HttpOnly",
        ] {
            response
                .append_header(http::header::SET_COOKIE, value)
                .unwrap();
        }
        drop_our_set_cookies(&mut response).unwrap();
        let left: Vec<&str> = response
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["theme=dark; Path=/", "session=app-own; HttpOnly"]);
        assert!(!sets_ours(b"flowcase_app=x"), "another name");
    }

    #[test]
    fn our_cookies_never_reach_instances() {
        let kept = without_our_cookies(&[
            "a=1; __Host-flowcase_app=secret; b=2",
            "__Host-flowcase_session=s; __Host-flowcase_oidc=o",
        ]);
        assert_eq!(kept.as_deref(), Some("a=1; b=2"));
        assert_eq!(without_our_cookies(&["__Host-flowcase_app=x"]), None);
    }
}
