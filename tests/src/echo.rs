//! An upstream for proxy tests: answers every HTTP request with a JSON description of what it
//! received (method, path, query, headers), and echoes WebSocket messages at `/ws`. Tests point
//! instance routes at it to see exactly what the gateway forwards. `/slow/<secs>` answers after
//! that many seconds; `/upload` reads the whole body and answers its length. It counts the
//! requests that reached it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use serde_json::{Map, Value, json};

use crate::loopback::LoopbackServer;

pub struct EchoServer {
    pub addr: SocketAddr,
    server: LoopbackServer,
}

impl EchoServer {
    pub async fn start() -> EchoServer {
        let app = Router::new()
            .route("/ws", any(websocket))
            .route("/slow/{secs}", any(slow))
            .route("/upload", any(upload))
            .fallback(describe);
        let server = LoopbackServer::start(app).await;
        EchoServer {
            addr: server.addr,
            server,
        }
    }

    /// How many requests reached this server so far.
    pub fn requests(&self) -> usize {
        self.server.requests()
    }
}

async fn slow(Path(secs): Path<u64>) -> impl IntoResponse {
    tokio::time::sleep(Duration::from_secs(secs)).await;
    "finally"
}

/// Reads the whole body: `{"received": <bytes>}`, or 400 when the body broke off.
async fn upload(body: Body) -> impl IntoResponse {
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => axum::Json(json!({"received": bytes.len()})).into_response(),
        Err(_) => (axum::http::StatusCode::BAD_REQUEST, "broken body").into_response(),
    }
}

async fn describe(method: Method, uri: Uri, headers: HeaderMap) -> impl IntoResponse {
    let mut seen = Map::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match seen.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                seen.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    axum::Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": seen,
    }))
}

async fn websocket(upgrade: WebSocketUpgrade) -> impl IntoResponse {
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            let reply = match message {
                Message::Text(t) => Message::Text(t),
                Message::Binary(b) => Message::Binary(b),
                Message::Close(_) => break,
                _ => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}
