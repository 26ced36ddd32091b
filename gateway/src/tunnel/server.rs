//! The tunnel endpoint: a WebSocket server for the connections the TLS front hands over
//! ([`super::front`]) and on a private Unix socket, which the proxy routes the public host's
//! `/tunnel` to otherwise. Each connection is checked before guacd hears of it:
//! the token opens (sealed for tunnels, not expired), was never used (by this process, nor by
//! another sharing the database), its session is still
//! valid and not revoked, and its user may still use the instance; any failure closes with
//! CLIENT_UNAUTHORIZED. Then guacd is dialled, the handshake runs, the browser gets the tunnel's
//! UUID, and the relay takes over.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowcase_admin::access::desktop::{DesktopTarget, desktop_target};
use flowcase_admin::auth::tunnel_token::{TunnelGrant, UsedTokens};
use flowcase_admin::error::AdminError;
use flowcase_admin::secrets::Keyring;
use flowcase_admin::store::{Store, now_millis};
use flowcase_config::Config;
use flowcase_guac::{Instruction, Status};
use futures_util::SinkExt;
use tokio::net::{TcpStream, UnixListener};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::handshake::{ClientOptions, Join, handshake};
use super::relay::{ActivitySink, SessionWatch, relay};
use crate::control_plane::Activity;
use crate::snapshot::Snapshot;
use crate::wake::Waker;

/// The subprotocol `Guacamole.WebSocketTunnel` asks for.
const SUBPROTOCOL: &str = "guacamole";
/// The WebSocket upgrade must complete within this.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message a browser may send: the client sends single instructions (at most 8192
/// code points); anything much bigger is not the Guacamole client.
const MAX_BROWSER_MESSAGE: usize = 64 * 1024;
/// What the WebSocket reader holds between messages (see where it is set).
const BROWSER_READ_BUFFER: usize = 4 * 1024;

/// What every tunnel needs.
pub struct Tunnels {
    pub config: Arc<Config>,
    pub store: Store,
    pub keyring: Keyring,
    pub snapshot: Arc<Snapshot>,
    pub activity: Activity,
    pub waker: Waker,
    pub used: Mutex<UsedTokens>,
    /// guacd's connection id of each instance's open tunnel in this process, for watchers to
    /// join (sharing).
    pub connections: Mutex<HashMap<i64, String>>,
}

pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// Accepts tunnels until the process ends.
pub async fn serve(listener: UnixListener, tunnels: Arc<Tunnels>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let tunnels = tunnels.clone();
                tokio::spawn(async move { tunnels.handle(stream, Via::Proxy).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a tunnel connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A tunnel ready to relay.
struct Opened {
    grant: TunnelGrant,
    session_expires_at: i64,
    connected: super::handshake::Connected,
    uuid: String,
    /// From dialling guacd to its `ready`.
    handshake_seconds: f64,
}

/// How a tunnel connection arrived, which says where its token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// From the proxy's route, which moved the token into [`super::TOKEN_HEADER`].
    Proxy,
    /// Straight from the TLS front: the browser's own request, token in the query string
    /// (which nothing here logs).
    Front,
}

/// What the upgrade request carried.
#[derive(Default)]
struct Upgrade {
    token: Option<String>,
    query: Vec<(String, String)>,
}

impl Tunnels {
    pub async fn handle<S>(&self, stream: S, via: Via)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut upgrade = Upgrade::default();
        // The refusal's type is tungstenite's (`http::Response`), large or not.
        #[allow(clippy::result_large_err)]
        let callback = |request: &Request, mut response: Response| {
            if request.uri().path() != "/tunnel" {
                let mut refusal = ErrorResponse::new(Some("not found".into()));
                *refusal.status_mut() = StatusCode::NOT_FOUND;
                return Err(refusal);
            }
            let mut query: Vec<(String, String)> =
                serde_urlencoded::from_str(request.uri().query().unwrap_or_default())
                    .unwrap_or_default();
            upgrade.token = match via {
                Via::Proxy => request
                    .headers()
                    .get(super::TOKEN_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                Via::Front => query
                    .iter()
                    .position(|(name, _)| name == "token")
                    .map(|at| query.remove(at).1),
            };
            upgrade.query = query;
            let wants_guacamole = request
                .headers()
                .get_all("sec-websocket-protocol")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|p| p.trim() == SUBPROTOCOL);
            if wants_guacamole {
                response.headers_mut().insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_static(SUBPROTOCOL),
                );
            }
            Ok(response)
        };
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(MAX_BROWSER_MESSAGE);
        config.max_frame_size = Some(MAX_BROWSER_MESSAGE);
        // The browser sends keys and pointer moves: a small read buffer (it grows for the rare
        // large clipboard) instead of the default 128 KiB every idle tunnel would hold.
        config.read_buffer_size = BROWSER_READ_BUFFER;
        let accepted = tokio::time::timeout(
            UPGRADE_TIMEOUT,
            tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)),
        )
        .await;
        let mut ws = match accepted {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "tunnel upgrade failed");
                return;
            }
            Err(_) => return,
        };
        let opened = match self.open(&mut ws, upgrade).await {
            Ok(opened) => opened,
            Err(status) => {
                crate::metrics::tunnel_closed(status);
                return close(&mut ws, status).await;
            }
        };
        let _open = crate::metrics::tunnel_opened(opened.handshake_seconds);
        let instance_id = opened.grant.instance_id;
        let connection_id = opened.connected.connection_id.clone();
        let shared = !opened.grant.watch;
        if shared && let Ok(mut connections) = self.connections.lock() {
            connections.insert(instance_id, connection_id.clone());
        }
        let status = relay(
            ws,
            opened.connected.stream,
            opened.connected.leftover,
            SessionWatch {
                snapshot: self.snapshot.clone(),
                session: opened.grant.session.clone(),
                expires_at: opened.session_expires_at,
            },
            ActivitySink {
                reporter: self.activity.get().cloned(),
                instance_id,
                session: opened.grant.session.clone(),
                read_only: opened.grant.watch,
            },
        )
        .await;
        if shared && let Ok(mut connections) = self.connections.lock() {
            // A newer tunnel of the instance may have replaced ours meanwhile.
            if connections.get(&instance_id) == Some(&connection_id) {
                connections.remove(&instance_id);
            }
        }
        crate::metrics::tunnel_closed(status);
        tracing::info!(tunnel = %opened.uuid, status = status.code(), "desktop tunnel closed");
    }

    /// Checks the token, connects to guacd, runs the handshake and announces the tunnel's
    /// UUID; the status to close with when any of it fails.
    async fn open<S>(&self, ws: &mut WebSocketStream<S>, upgrade: Upgrade) -> Result<Opened, Status>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let now = now_millis();
        let (grant, session_expires_at) = self.admit(upgrade.token.as_deref(), now).await?;
        let target = if grant.watch {
            // The sharer's right to the instance is checked again; the desktop need not run
            // (there is nothing to watch otherwise, which the lookup below finds).
            desktop_target(
                &self.store,
                &self.keyring,
                grant.instance_id,
                grant.user_id,
                now,
            )
            .await
            .map_err(refusal)?
        } else {
            self.target(&grant).await?
        };
        let watching = if grant.watch {
            let running = self
                .connections
                .lock()
                .ok()
                .and_then(|c| c.get(&grant.instance_id).cloned());
            Some(running.ok_or_else(|| {
                tracing::info!(instance_id = grant.instance_id, "nothing to watch");
                Status::ResourceNotFound
            })?)
        } else {
            None
        };
        let join = match &watching {
            Some(connection_id) => Join::Watch { connection_id },
            None => Join::New(&target),
        };
        let client = ClientOptions::from_query(&upgrade.query);
        let guacd_addr = target.guacd.unwrap_or(self.config.guacd.address);
        let step = self.config.guacd.connect_timeout.get();
        let dialled = std::time::Instant::now();
        let stream = match tokio::time::timeout(step, TcpStream::connect(guacd_addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::warn!(guacd = %guacd_addr, error = %e, "cannot reach guacd");
                return Err(Status::UpstreamNotFound);
            }
            Err(_) => {
                tracing::warn!(guacd = %guacd_addr, "guacd does not answer");
                return Err(Status::UpstreamTimeout);
            }
        };
        let _ = stream.set_nodelay(true);
        let connected = handshake(stream, join, &target.user_display_name, &client, step)
            .await
            .map_err(|f| {
                tracing::warn!(
                    instance_id = grant.instance_id,
                    status = f.status.code(),
                    reason = %f.reason,
                    "guacd handshake failed"
                );
                f.status
            })?;
        let handshake_seconds = dialled.elapsed().as_secs_f64();
        let uuid = new_uuid();
        tracing::info!(
            instance_id = grant.instance_id,
            user_id = grant.user_id,
            tunnel = %uuid,
            connection = %connected.connection_id,
            version = %connected.version,
            "desktop tunnel open"
        );
        let announce = Instruction::new("", [uuid.as_str()]).encode();
        ws.send(Message::text(announce))
            .await
            .map_err(|_| Status::Success)?;
        Ok(Opened {
            grant,
            session_expires_at,
            connected,
            uuid,
            handshake_seconds,
        })
    }

    /// The token's grant and its session's expiry, if the token may open a tunnel now.
    async fn admit(&self, token: Option<&str>, now: i64) -> Result<(TunnelGrant, i64), Status> {
        let refuse = |why: &str| {
            tracing::info!(reason = why, "tunnel refused");
            Status::ClientUnauthorized
        };
        let grant = token
            .and_then(|t| TunnelGrant::open(&self.keyring, t, now))
            .ok_or_else(|| refuse("invalid or expired token"))?;
        let first = self
            .used
            .lock()
            .map(|mut used| used.first_use(&grant, now))
            .unwrap_or(false);
        if !first {
            return Err(refuse("token already used"));
        }
        // Other gateway processes sharing the database may have seen it.
        match self
            .store
            .claim_tunnel_token(&grant.jti, grant.expires_at, now)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Err(refuse("token already used by another gateway process")),
            Err(e) => {
                tracing::error!(error = %e, "cannot record a tunnel token as used");
                return Err(Status::ServerError);
            }
        }
        if self.snapshot.is_revoked(&grant.session) {
            return Err(refuse("session revoked"));
        }
        let session = match self.store.get_session(&grant.session).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(refuse("no such session")),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the session of a tunnel");
                return Err(Status::ServerError);
            }
        };
        if !session.is_active(now) || session.user_id != grant.user_id {
            return Err(refuse("session ended"));
        }
        Ok((grant, session.absolute_expires_at))
    }

    /// The desktop to connect to, starting its instance first if it sleeps.
    async fn target(&self, grant: &TunnelGrant) -> Result<DesktopTarget, Status> {
        let lookup = || {
            desktop_target(
                &self.store,
                &self.keyring,
                grant.instance_id,
                grant.user_id,
                now_millis(),
            )
        };
        let target = lookup().await.map_err(refusal)?;
        if target.connection.is_some() {
            return Ok(target);
        }
        let woken = tokio::time::timeout(
            self.config.instances.wake_wait.get(),
            self.waker.wake(grant.instance_id),
        )
        .await;
        match woken {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(instance_id = grant.instance_id, error = %e, "cannot start the instance of a tunnel");
                return Err(Status::UpstreamUnavailable);
            }
            Err(_) => return Err(Status::UpstreamUnavailable),
        }
        let target = lookup().await.map_err(refusal)?;
        if target.connection.is_some() {
            Ok(target)
        } else {
            Err(Status::UpstreamUnavailable)
        }
    }
}

/// A tunnel whose user may not (or no longer) reach the instance is unauthorised; a failure of
/// ours is a server error.
fn refusal(e: AdminError) -> Status {
    match e {
        AdminError::Forbidden(_) | AdminError::NotFound(_) | AdminError::Unauthenticated => {
            tracing::info!(error = %e, "tunnel refused");
            Status::ClientUnauthorized
        }
        e => {
            tracing::error!(error = %e, "cannot look up the target of a tunnel");
            Status::ServerError
        }
    }
}

async fn close<S>(ws: &mut WebSocketStream<S>, status: Status)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        ws.close(Some(super::close_frame(status))),
    )
    .await;
}

/// A random (version 4) UUID, as the browser client expects the tunnel's id.
fn new_uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
