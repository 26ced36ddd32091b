//! The viewer's behaviour in headless Chromium against a fake gateway: a small server of the
//! test's own that serves the viewer's modules (from `admin/assets/`, as the build embeds them),
//! a page with the data attributes `/droplet/{id}` renders, a token endpoint, and a
//! `/tunnel` WebSocket speaking the browser side of the Guacamole protocol
//! (docs/guacamole-protocol.md): the UUID first, ping echo, a picture drawn with
//! `size`/`rect`/`cfill`/`sync`, and status-coded closes on demand.
//!
//! It checks what the real tunnel cannot be asked to do on cue: the picture fills the window
//! and follows its resizes (a `size` instruction once the window settles), typed keys, the mouse
//! and Ctrl-Alt-Del arrive, the toolbar hides itself and comes back at the top edge, text copied
//! on the desktop reaches the clipboard panel and text sent from the panel arrives (keys typed
//! in the panel do not), a quiet network shows the "unstable" notice and recovers, a close with
//! an upstream status reconnects with a fresh token, and a close with CLIENT_UNAUTHORIZED (769)
//! stops with "sign in again" instead.
//! The same flow through the real binary and tunnel is in viewer_browser.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use flowcase_e2e::browser::{Browser, WAIT_TIMEOUT, screenshot_on_failure};
use flowcase_e2e::loopback::LoopbackServer;
use flowcase_e2e::viewer::{overlay_state, reveal_toolbar};
use serde_json::json;
use tokio::sync::mpsc;

/// The colour the fake desktop is filled with.
const PICTURE_RGB: [u8; 3] = [0x1e, 0xa0, 0x5a];

#[derive(Clone, Default)]
struct Fake {
    /// Tokens handed out, in order.
    tokens: Arc<Mutex<Vec<String>>>,
    /// Tokens presented to /tunnel, in order.
    presented: Arc<Mutex<Vec<String>>>,
    /// Instructions the browser sent (pings excepted), per connection.
    received: Arc<Mutex<Vec<Vec<String>>>>,
    /// Orders for the open tunnel: raw instructions to send, or a close status.
    orders: Arc<Mutex<Option<mpsc::UnboundedSender<Order>>>>,
}

enum Order {
    Send(String),
    /// Stop (true) or resume (false) answering pings: a network that went quiet. Resuming
    /// sends a `nop` as guacd would.
    Mute(bool),
    Close(u16, &'static str),
}

impl Fake {
    fn order(&self, order: Order) {
        self.orders
            .lock()
            .unwrap()
            .as_ref()
            .expect("an open tunnel")
            .send(order)
            .unwrap();
    }

    fn received(&self, opcode: &str) -> Vec<Vec<String>> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|i| i[0] == opcode)
            .cloned()
            .collect()
    }
}

fn encode(elements: &[&str]) -> String {
    let parts: Vec<String> = elements
        .iter()
        .map(|e| format!("{}.{e}", e.chars().count()))
        .collect();
    format!("{};", parts.join(","))
}

/// Splits a frame of whole instructions.
fn decode(mut frame: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    while !frame.is_empty() {
        let dot = frame.find('.').unwrap();
        let len: usize = frame[..dot].parse().unwrap();
        let value: String = frame[dot + 1..].chars().take(len).collect();
        frame = &frame[dot + 1 + value.len()..];
        current.push(value);
        let (sep, rest) = frame.split_at(1);
        frame = rest;
        if sep == ";" {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../admin/assets")
}

async fn page() -> Html<String> {
    // The body of admin/templates/viewer.html with the values /droplet/{id} would render.
    let template = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../admin/templates/viewer.html"),
    )
    .unwrap();
    let html = without_watch(&template)
        .replace("{{ droplet_name }}", "Fake desktop")
        .replace("{{ instance_id }}", "7")
        .replace("{{ csrf_token }}", "fake-csrf")
        .replace("{{ csrf_header }}", "x-csrf-token")
        .replace("{{ can_copy }}", "true")
        .replace("{{ can_paste }}", "true")
        .replace("{{ login_url }}", "/?return=%2Fdroplet%2F7")
        .replace("{{ script_url }}", "/assets/js/viewer.js")
        .replace("{{ style_url }}", "/assets/css/viewer.css");
    assert!(!html.contains("{{"), "a template value left: {html}");
    Html(html)
}

/// The viewer template as askama renders it for a user (not a read-only watcher): each
/// `{% if watch %}A{% else %}B{% endif %}` becomes B (or nothing), `{{ watch }}` false.
fn without_watch(template: &str) -> String {
    const IF: &str = "{% if watch %}";
    const ELSE: &str = "{% else %}";
    const END: &str = "{% endif %}";
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find(IF) {
        out.push_str(&rest[..start]);
        let after = &rest[start + IF.len()..];
        let end = after
            .find(END)
            .expect("an {% if watch %} without {% endif %}");
        let block = &after[..end];
        if let Some(otherwise) = block.find(ELSE) {
            out.push_str(&block[otherwise + ELSE.len()..]);
        }
        rest = &after[end + END.len()..];
    }
    out.push_str(rest);
    out.replace("{{ watch }}", "false")
}

async fn asset(Path((dir, name)): Path<(String, String)>) -> Response {
    let (path, content_type) = match (dir.as_str(), name.as_str()) {
        ("js", "guacamole-common.min.js") => (
            assets().join("node_modules/guacamole-common-js/dist/esm/guacamole-common.min.js"),
            "text/javascript",
        ),
        ("js", _) => (assets().join("js").join(&name), "text/javascript"),
        ("css", _) => (assets().join("css").join(&name), "text/css"),
        _ => return axum::http::StatusCode::NOT_FOUND.into_response(),
    };
    match std::fs::read(path) {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(_) => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

async fn token(
    State(fake): State<Fake>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    assert_eq!(id, "7");
    assert_eq!(headers["x-csrf-token"], "fake-csrf", "the CSRF header");
    let mut tokens = fake.tokens.lock().unwrap();
    let token = format!("token-{}", tokens.len() + 1);
    tokens.push(token.clone());
    axum::Json(json!({"token": token, "expires_in": 60})).into_response()
}

async fn tunnel(
    State(fake): State<Fake>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    upgrade: WebSocketUpgrade,
) -> Response {
    let query = query.unwrap_or_default();
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| {
        params
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    fake.presented.lock().unwrap().push(get("token"));
    for key in ["GUAC_WIDTH", "GUAC_HEIGHT", "GUAC_DPI"] {
        assert!(get(key).parse::<u32>().unwrap() > 0, "{key} in {query}");
    }
    assert!(!get("GUAC_TIMEZONE").is_empty(), "{query}");
    let images: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "GUAC_IMAGE")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(images, ["image/png", "image/jpeg", "image/webp"]);
    upgrade
        .protocols(["guacamole"])
        .on_upgrade(move |socket| serve_tunnel(socket, fake))
}

async fn serve_tunnel(mut socket: WebSocket, fake: Fake) {
    let (orders, mut inbox) = mpsc::unbounded_channel();
    *fake.orders.lock().unwrap() = Some(orders);
    let rgb = PICTURE_RGB.map(|c| c.to_string());
    let hello = [
        encode(&["", "0f6b5f3a-2f0e-4bd0-9c59-1d3d8e1b9a77"]),
        encode(&["size", "0", "640", "480"]),
        encode(&["rect", "0", "0", "0", "640", "480"]),
        encode(&["cfill", "14", "0", &rgb[0], &rgb[1], &rgb[2], "255"]),
        encode(&["sync", "1"]),
    ];
    for frame in hello {
        if socket.send(Message::Text(frame.into())).await.is_err() {
            return;
        }
    }
    let mut muted = false;
    loop {
        tokio::select! {
            message = socket.recv() => {
                let Some(Ok(Message::Text(text))) = message else { return };
                for instruction in decode(text.as_str()) {
                    if instruction.first().is_some_and(String::is_empty) && instruction.get(1).is_some_and(|s| s == "ping") {
                        if muted {
                            continue;
                        }
                        let echo = encode(&instruction.iter().map(String::as_str).collect::<Vec<_>>());
                        if socket.send(Message::Text(echo.into())).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    fake.received.lock().unwrap().push(instruction);
                }
            }
            order = inbox.recv() => {
                match order {
                    Some(Order::Send(raw)) => {
                        if socket.send(Message::Text(raw.into())).await.is_err() {
                            return;
                        }
                    }
                    Some(Order::Mute(on)) => {
                        muted = on;
                        // The browser pings only after it hears from the server: data flowing
                        // again (guacd's nop every 5 s, or a frame) restarts the pings.
                        if !on && socket.send(Message::Text(encode(&["nop"]).into())).await.is_err() {
                            return;
                        }
                    }
                    Some(Order::Close(code, reason)) => {
                        let frame = CloseFrame { code, reason: reason.into() };
                        let _ = socket.send(Message::Close(Some(frame))).await;
                        return;
                    }
                    None => return,
                }
            }
        }
    }
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "no {what} within {WAIT_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_viewer_shows_the_desktop_forwards_input_and_clipboard_and_reconnects_as_it_should() {
    let fake = Fake::default();
    let app = Router::new()
        .route("/droplet/7", get(page))
        .route("/assets/{dir}/{name}", get(asset))
        .route("/api/v1/instances/{id}/tunnel-token", post(token))
        .route("/tunnel", get(tunnel))
        .with_state(fake.clone());
    let site = LoopbackServer::start(app).await;
    let addr = site.addr;
    let browser = Browser::start("viewer").await;
    let b = &browser;

    screenshot_on_failure(&[b], async {
        b.goto(&format!("http://{addr}/droplet/7")).await;
        wait_until("a connected viewer", async || {
            overlay_state(b).await == "connected"
        })
        .await;
        assert_eq!(*fake.presented.lock().unwrap(), ["token-1"]);
        // textContent: WebDriver's text is empty once the toolbar has slid out of view.
        assert_eq!(
            b.eval("return document.getElementById('badge').textContent;")
                .await,
            "Connected"
        );

        // The 640×480 picture, scaled to the window, fills the middle of the screen.
        wait_until("the desktop's picture on screen", async || {
            b.screenshot_center_rgb()
                .await
                .iter()
                .zip(PICTURE_RGB)
                .all(|(&got, want)| got.abs_diff(want) <= 3)
        })
        .await;
        // The client's sync answers reach the desktop, pings never do.
        wait_until("a sync answer", async || !fake.received("sync").is_empty()).await;
        assert!(
            fake.received("").is_empty(),
            "internal instructions stay in the tunnel"
        );

        // Typed keys arrive as presses and releases ('a' is keysym 97).
        b.wait_for_element("body")
            .await
            .send_keys("ab")
            .await
            .unwrap();
        wait_until("the typed keys", async || {
            let keys = fake.received("key");
            ["97", "98"].iter().all(|sym| {
                keys.iter().any(|k| k[1] == *sym && k[2] == "1")
                    && keys.iter().any(|k| k[1] == *sym && k[2] == "0")
            })
        })
        .await;

        // The mouse: a click in the middle of the window arrives as a mouse instruction.
        b.client()
            .execute(
                "const el = document.querySelector('#display canvas').parentElement; \
                 const r = document.getElementById('display').getBoundingClientRect(); \
                 const at = {clientX: r.width / 2, clientY: r.height / 2, bubbles: true}; \
                 el.dispatchEvent(new MouseEvent('mousemove', at));",
                vec![],
            )
            .await
            .unwrap();
        wait_until("a mouse move", async || !fake.received("mouse").is_empty()).await;

        // A resized window asks the desktop for the new size (once it has settled), and the
        // picture is scaled to the new window at once.
        let before = fake.received("size").len();
        b.client().set_window_size(1000, 700).await.unwrap();
        wait_until("a size instruction", async || {
            fake.received("size").len() > before
        })
        .await;
        let size = fake.received("size").pop().unwrap();
        let inner = b
            .eval("return [innerWidth * devicePixelRatio, innerHeight * devicePixelRatio];")
            .await;
        assert_eq!(
            size[1],
            inner[0].as_f64().unwrap().round().to_string(),
            "{size:?}"
        );
        assert_eq!(
            size[2],
            inner[1].as_f64().unwrap().round().to_string(),
            "{size:?}"
        );
        let shown_width = b
            .eval("return document.querySelector('#display > div').getBoundingClientRect().width;")
            .await;
        let expected = b
            .eval("return Math.min(innerWidth / 640, innerHeight / 480) * 640;")
            .await;
        assert!(
            (shown_width.as_f64().unwrap() - expected.as_f64().unwrap()).abs() < 1.0,
            "the picture fits the window: {shown_width} vs {expected}"
        );

        // While the desktop is in use the toolbar slides out of the way by itself.
        wait_until("the toolbar to hide", async || {
            b.eval("return document.getElementById('toolbar').getBoundingClientRect().bottom <= 0;")
                .await
                == true
        })
        .await;

        // Ctrl-Alt-Del from the menu: three presses, then three releases.
        fake.received.lock().unwrap().clear();
        reveal_toolbar(b).await;
        b.click("#btn-menu").await;
        b.click("#btn-cad").await;
        wait_until("Ctrl-Alt-Del", async || fake.received("key").len() >= 6).await;
        let keys: Vec<(String, String)> = fake
            .received("key")
            .into_iter()
            .map(|k| (k[1].clone(), k[2].clone()))
            .collect();
        for sym in ["65507", "65513", "65535"] {
            assert!(keys.contains(&(sym.into(), "1".into())), "{keys:?}");
            assert!(keys.contains(&(sym.into(), "0".into())), "{keys:?}");
        }

        // Text copied on the desktop shows in the clipboard panel.
        fake.order(Order::Send(
            [
                encode(&["clipboard", "5", "text/plain"]),
                encode(&["blob", "5", "aMOpbGxvIGR1IGJ1cmVhdQ=="]), // "héllo du bureau"
                encode(&["end", "5"]),
            ]
            .concat(),
        ));
        reveal_toolbar(b).await;
        b.click("#btn-menu").await;
        wait_until("the desktop's clipboard in the panel", async || {
            b.eval("return document.getElementById('clipboard-text').value;")
                .await
                == "héllo du bureau"
        })
        .await;

        // Text typed into the panel goes to the desktop on "Send to the desktop"; the keys
        // typed there do not.
        fake.received.lock().unwrap().clear();
        b.fill("#clipboard-text", "from the browser").await;
        b.click("#btn-send-clipboard").await;
        wait_until("the clipboard stream", async || {
            !fake.received("clipboard").is_empty() && !fake.received("end").is_empty()
        })
        .await;
        let clipboard = &fake.received("clipboard")[0];
        assert_eq!(clipboard[2], "text/plain");
        let sent: String = fake
            .received("blob")
            .iter()
            .filter(|blob| blob[1] == clipboard[1])
            .map(|blob| blob[2].clone())
            .collect();
        use base64::Engine as _;
        let sent = base64::engine::general_purpose::STANDARD
            .decode(sent)
            .unwrap();
        assert_eq!(String::from_utf8(sent).unwrap(), "from the browser");
        assert!(
            fake.received("key").is_empty(),
            "typing in the panel sent keys to the desktop: {:?}",
            fake.received("key")
        );
        b.click("#btn-menu").await;

        // A network that goes quiet: the viewer says so (the tunnel is UNSTABLE after 1.5 s
        // without data) without covering the desktop, and recovers when data flows again.
        let notice_shown = async || {
            b.eval("return !document.getElementById('notice').hidden;")
                .await
                == true
        };
        fake.order(Order::Mute(true));
        wait_until("the unstable notice", notice_shown).await;
        assert_eq!(
            b.eval("return document.getElementById('badge').textContent;")
                .await,
            "Unstable"
        );
        assert_eq!(
            overlay_state(b).await,
            "connected",
            "the desktop stays in view"
        );
        fake.order(Order::Mute(false));
        wait_until("the notice to go", async || !notice_shown().await).await;
        assert_eq!(
            b.eval("return document.getElementById('badge').textContent;")
                .await,
            "Connected"
        );

        // The desktop went away (UPSTREAM_NOT_FOUND): the reason in words, then a reconnect
        // by itself with a fresh token.
        fake.order(Order::Close(1011, "519"));
        wait_until("the retry card", async || {
            overlay_state(b).await == "retrying"
        })
        .await;
        assert_eq!(
            b.text_of("#overlay-title").await,
            "The remote desktop refused the connection."
        );
        wait_until("the reconnection", async || {
            overlay_state(b).await == "connected"
        })
        .await;
        assert_eq!(*fake.presented.lock().unwrap(), ["token-1", "token-2"]);

        // CLIENT_UNAUTHORIZED: no reconnect, a link to sign in again.
        fake.order(Order::Close(1008, "769"));
        wait_until("the signed-out card", async || {
            overlay_state(b).await == "signed-out"
        })
        .await;
        assert_eq!(
            b.text_of("#overlay-title").await,
            "Your session expired; sign in again."
        );
        let login = b.wait_for_element("#link-login").await;
        assert!(login.is_displayed().await.unwrap());
        assert_eq!(
            login.attr("href").await.unwrap().as_deref(),
            Some("/?return=%2Fdroplet%2F7")
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(fake.tokens.lock().unwrap().len(), 2, "no new attempt");

        // The Reconnect button of a user's disconnect starts a fresh attempt.
        b.click("#btn-menu").await;
        b.click("#btn-disconnect").await;
        wait_until("the disconnected card", async || {
            overlay_state(b).await == "disconnected"
        })
        .await;
        b.click("#btn-reconnect").await;
        wait_until("the reconnection", async || {
            overlay_state(b).await == "connected"
        })
        .await;
        assert_eq!(fake.tokens.lock().unwrap().len(), 3);
    })
    .await;
    browser.close().await;
}
