//! A loopback HTTP server playing "another site" that droplet icons point at: a real PNG, an
//! SVG, one PNG too large to keep, an HTML page, and slow PNGs. It counts its requests, so a
//! test can tell that browsers never came to it (only the gateway did), and how many slow ones
//! it was answering at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;

use crate::loopback::LoopbackServer;

/// An 8×8 PNG, all violet (#6d4aff): it stands out from the lettered tiles in screenshots.
const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEUlEQVR4nGPI9fqPFTEMLQkApL5tgWAIIn0AAAAASUVORK5CYII=";

/// An SVG that would run script if it were opened as a page of the gateway.
pub const SVG: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"16\" height=\"16\">\
    <script>alert(1)</script><rect width=\"16\" height=\"16\" fill=\"#2a7\"/></svg>";

pub fn png() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(PNG_BASE64)
        .unwrap_or_default()
}

pub struct IconServer {
    pub addr: SocketAddr,
    server: LoopbackServer,
    slow: Arc<Overlap>,
}

/// Slow requests being answered now, and the most there ever were at once.
#[derive(Default)]
struct Overlap {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl IconServer {
    /// `/icon.png`, `/icon.svg`, `/big.png` (PNG bytes, 300 KiB), `/page.html`, and
    /// `/slow/{name}.png` (the PNG, half a second late).
    pub async fn start() -> IconServer {
        let slow = Arc::new(Overlap::default());
        let overlap = slow.clone();
        let app = Router::new()
            .route(
                "/slow/{name}",
                get(move || {
                    let overlap = overlap.clone();
                    async move {
                        let now = overlap.now.fetch_add(1, Ordering::SeqCst) + 1;
                        overlap.most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        overlap.now.fetch_sub(1, Ordering::SeqCst);
                        ([(header::CONTENT_TYPE, "image/png")], png()).into_response()
                    }
                }),
            )
            .route(
                "/icon.png",
                get(|| async { ([(header::CONTENT_TYPE, "image/png")], png()).into_response() }),
            )
            .route(
                "/icon.svg",
                get(|| async { ([(header::CONTENT_TYPE, "image/svg+xml")], SVG).into_response() }),
            )
            .route(
                "/big.png",
                get(|| async {
                    let mut body = png();
                    body.resize(300 * 1024, 0);
                    ([(header::CONTENT_TYPE, "image/png")], body).into_response()
                }),
            )
            .route(
                "/page.html",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/html")],
                        "<html><body>not an icon</body></html>",
                    )
                        .into_response()
                }),
            );
        let server = LoopbackServer::start(app).await;
        IconServer {
            addr: server.addr,
            server,
            slow,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// Requests that reached this server so far.
    pub fn requests(&self) -> usize {
        self.server.requests()
    }

    /// The most `/slow/…` requests this server was answering at the same time.
    pub fn most_slow_at_once(&self) -> usize {
        self.slow.most.load(Ordering::SeqCst)
    }
}
