//! A loopback HTTP server playing "another site" that droplet icons point at: a real PNG, an
//! SVG, one PNG too large to keep, and an HTML page. It counts its requests, so a test can tell
//! that browsers never came to it (only the gateway did).

use std::net::SocketAddr;

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
}

impl IconServer {
    /// `/icon.png`, `/icon.svg`, `/big.png` (PNG bytes, 300 KiB), `/page.html`.
    pub async fn start() -> IconServer {
        let app = Router::new()
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
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// Requests that reached this server so far.
    pub fn requests(&self) -> usize {
        self.server.requests()
    }
}
