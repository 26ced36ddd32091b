//! The desktop tunnel end to end: a WebSocket client speaking as `Guacamole.WebSocketTunnel`
//! does, over TLS to the real gateway, which relays to the guacd double (`flowcase_e2e::guacd`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use flowcase_admin::auth::tunnel_token::{TTL_MS, TunnelGrant};
use flowcase_e2e::guacd::{self, Command, GuacdDouble};
use flowcase_e2e::instances::{DesktopInstance, add_user, desktop_instance, echo_instance};
use flowcase_e2e::{Gateway, GatewayDir, TunnelSocket as Ws};
use flowcase_guac::{Instruction, Scan, scan};
use futures_util::{SinkExt, StreamExt};
use reqwest::Client;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const PASSWORD: &str = "correct horse battery staple";

struct Env {
    dir: GatewayDir,
    gw: Gateway,
    guacd: GuacdDouble,
    desktop: DesktopInstance,
}

impl Env {
    async fn start() -> Env {
        let guacd = GuacdDouble::start().await;
        let mut dir = desktop_gateway_dir();
        dir.set("FLOWCASE_GUACD__ADDRESS", &guacd.addr.to_string());
        let gw = Gateway::start(&dir).await;
        add_user(&dir, "alice", PASSWORD);
        add_user(&dir, "bob", PASSWORD);
        let desktop = desktop_instance(&dir, "alice", "deskalice").await;
        Env {
            dir,
            gw,
            guacd,
            desktop,
        }
    }

    fn browser(&self) -> Client {
        self.gw.client(&self.dir.data_dir(), &["localhost"])
    }

    async fn login(&self, client: &Client, user: &str) -> String {
        flowcase_e2e::instances::login(&self.gw, client, user, PASSWORD).await
    }

    async fn logout(&self, client: &Client, csrf: &str) {
        let resp = client
            .delete(self.gw.url("localhost", "/api/v1/session"))
            .header("origin", self.gw.origin())
            .header("x-csrf-token", csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }

    async fn mint(&self, client: &Client, csrf: &str, slug: &str) -> reqwest::Response {
        self.mint_with(client, csrf, slug, None).await
    }

    async fn mint_with(
        &self,
        client: &Client,
        csrf: &str,
        slug: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let request = client
            .post(self.gw.url(
                "localhost",
                &format!("/api/v1/instances/{slug}/tunnel-token"),
            ))
            .header("origin", self.gw.origin())
            .header("x-csrf-token", csrf);
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
        .send()
        .await
        .unwrap()
    }

    async fn token(&self, client: &Client, csrf: &str) -> String {
        let resp = self.mint(client, csrf, &self.desktop.slug).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["expires_in"], 60);
        body["token"].as_str().unwrap().to_owned()
    }

    /// Opens the tunnel as the browser client does: `?token=…&GUAC_*…`, subprotocol
    /// `guacamole`. Returns the socket and the subprotocol the server chose.
    async fn open(&self, token: &str) -> (Ws, Option<String>) {
        self.open_on(token, false).await
    }

    /// [`Self::open`], on a connection that served an ordinary request first (so the upgrade
    /// takes the proxy's route rather than the TLS front's direct one).
    async fn open_on(&self, token: &str, after_a_request: bool) -> (Ws, Option<String>) {
        let mut stream = self
            .gw
            .tls_connect(&self.dir.data_dir(), "localhost", &[b"http/1.1"])
            .await;
        if after_a_request {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let head = format!(
                "HEAD / HTTP/1.1\r\nHost: localhost:{}\r\n\r\n",
                self.dir.https_port
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut response = Vec::new();
            while !response.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await.unwrap();
                response.push(byte[0]);
            }
            assert!(
                response.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&response)
            );
        }
        self.gw
            .open_tunnel(
                stream,
                &[
                    ("token", token),
                    ("GUAC_WIDTH", "1280"),
                    ("GUAC_HEIGHT", "720"),
                    ("GUAC_DPI", "96"),
                    ("GUAC_TIMEZONE", "Europe/Paris"),
                    ("GUAC_AUDIO", "audio/L16"),
                    ("GUAC_AUDIO", "audio/L8"),
                    ("GUAC_IMAGE", "image/png"),
                    ("GUAC_IMAGE", "image/webp"),
                ],
            )
            .await
    }

    /// A signed-in user with an open tunnel past the UUID.
    async fn connected(&self) -> (Client, String, Ws, String) {
        let alice = self.browser();
        let csrf = self.login(&alice, "alice").await;
        let token = self.token(&alice, &csrf).await;
        let (mut ws, _) = self.open(&token).await;
        let first = next_text(&mut ws).await;
        let uuid = Instruction::from_complete(&first).unwrap();
        assert_eq!(uuid.opcode, "", "the UUID comes first: {first}");
        (alice, csrf, ws, uuid.args[0].clone())
    }

    /// The stored id of the newest session of `user`.
    async fn session_of(&self, user: &str) -> String {
        let store = flowcase_admin::store::Store::connect(&format!(
            "sqlite://{}",
            self.dir.data_dir().join("flowcase.db").display()
        ))
        .await
        .unwrap();
        let user = store.find_user_by_login(user).await.unwrap().unwrap();
        let pool = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            self.dir.data_dir().join("flowcase.db").display()
        ))
        .await
        .unwrap();
        let id: String = sqlx::query_scalar(
            "SELECT id FROM sessions WHERE user_id = ? ORDER BY created_at DESC LIMIT 1",
        )
        .bind(user.id)
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        store.close().await;
        id
    }

    fn keyring(&self) -> flowcase_admin::secrets::Keyring {
        flowcase_admin::secrets::ensure_key_file(&self.dir.data_dir().join("secret.key")).unwrap()
    }

    async fn user_id(&self, name: &str) -> i64 {
        let store = flowcase_admin::store::Store::connect(&format!(
            "sqlite://{}",
            self.dir.data_dir().join("flowcase.db").display()
        ))
        .await
        .unwrap();
        let id = store.find_user_by_login(name).await.unwrap().unwrap().id;
        store.close().await;
        id
    }
}

/// A gateway for desktop rows written by [`desktop_instance`]: their "containers" do not exist,
/// so the gateway must not reach Docker, whose reconciliation would mark them gone. Its Docker
/// "socket" is a plain file: the client can be set up (and the orchestrator, which records
/// activity, exists), every call fails.
fn desktop_gateway_dir() -> GatewayDir {
    let mut dir = GatewayDir::new();
    let socket = dir.dir.path().join("no-docker.sock");
    std::fs::write(&socket, "").unwrap();
    dir.set(
        "FLOWCASE_DOCKER__HOST",
        &format!("unix://{}", socket.display()),
    );
    dir
}

/// The next text frame (pings and pongs skipped); every frame must hold whole instructions.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the tunnel is open")
            .expect("a valid frame");
        match message {
            Message::Text(text) => {
                assert_whole_instructions(text.as_str());
                return text.as_str().to_owned();
            }
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// Each frame is a sequence of complete instructions, nothing cut.
fn assert_whole_instructions(frame: &str) {
    let mut rest = frame.as_bytes();
    while !rest.is_empty() {
        match scan(rest) {
            Ok(Scan::Complete(n)) => rest = &rest[n..],
            other => panic!("a frame with a cut instruction ({other:?}): {frame:.200}"),
        }
    }
}

fn instructions(frame: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut rest = frame.as_bytes();
    while let Ok(Some((i, n))) = flowcase_guac::parse(rest) {
        out.push(i);
        rest = &rest[n..];
    }
    out
}

/// Reads until the close frame: its code and reason.
async fn closed(ws: &mut Ws) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, ws.next())
            .await
            .expect("the tunnel closes within 10 s");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.as_str().to_owned());
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                panic!("closed without a status: {message:?}")
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Reads instructions until one with `opcode` arrives; returns everything read.
async fn read_until(ws: &mut Ws, opcode: &str) -> Vec<Instruction> {
    let mut all = Vec::new();
    loop {
        let frame = next_text(ws).await;
        let got = instructions(&frame);
        let done = got.iter().any(|i| i.opcode == opcode);
        all.extend(got);
        if done {
            return all;
        }
    }
}

/// Opening the tunnel with `token` is refused with CLIENT_UNAUTHORIZED (769, close code 1008).
async fn refused(env: &Env, token: &str, what: &str) {
    let (mut ws, _) = env.open(token).await;
    assert_eq!(closed(&mut ws).await, (1008, "769".to_owned()), "{what}");
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_desktop_opens_through_the_tunnel_at_protocol_1_5_0() {
    let env = Env::start().await;
    let alice = env.browser();
    let csrf = env.login(&alice, "alice").await;
    let token = env.token(&alice, &csrf).await;
    let (mut ws, protocol) = env.open(&token).await;
    assert_eq!(protocol.as_deref(), Some("guacamole"), "subprotocol echoed");

    // The tunnel's UUID first, as the internal instruction `0.,36.<uuid>;`.
    let first = next_text(&mut ws).await;
    let uuid = Instruction::from_complete(&first).unwrap();
    assert_eq!((uuid.opcode.as_str(), uuid.args.len()), ("", 1), "{first}");
    assert_eq!(uuid.args[0].len(), 36);
    assert!(first.starts_with("0.,36."), "{first}");

    // What guacd sent in the same write as `ready` arrives: the picture, then its sync.
    let drawn = read_until(&mut ws, "sync").await;
    let ops: Vec<&str> = drawn.iter().map(|i| i.opcode.as_str()).collect();
    assert_eq!(ops, ["size", "img", "blob", "end", "sync"]);
    assert_eq!(drawn[2].args[1], guacd::PICTURE_PNG_BASE64);
    assert!(
        !drawn.iter().any(|i| i.opcode == "ready"),
        "ready is the tunnel's business"
    );

    // The handshake guacd saw: version negotiated to 1.5.0, the client's display, the user's
    // name, the desktop's address and password.
    let hs = env.guacd.handshakes().pop().unwrap();
    assert_eq!(hs.select, "vnc");
    assert_eq!(hs.value("VERSION"), Some("VERSION_1_5_0"));
    assert_eq!(hs.size, ["1280", "720", "96"]);
    assert_eq!(hs.timezone.as_deref(), Some("Europe/Paris"));
    assert_eq!(hs.audio, ["audio/L16", "audio/L8"]);
    assert_eq!(hs.image, ["image/png", "image/webp"]);
    assert_eq!(hs.name.as_deref(), Some("alice"));
    assert_eq!(hs.value("hostname"), Some("127.0.0.1"));
    assert_eq!(
        hs.value("port"),
        Some(env.desktop.upstream.port().to_string().as_str())
    );
    assert_eq!(hs.value("password"), Some(env.desktop.password.as_str()));
    assert_eq!(hs.value("read-only"), Some(""));

    // The ping is answered with itself and never reaches guacd; input does.
    let ping = "0.,4.ping,13.1700000000123;";
    ws.send(Message::text(ping)).await.unwrap();
    assert_eq!(next_text(&mut ws).await, ping);
    ws.send(Message::text("3.key,5.65307,1.1;3.key,5.65307,1.0;"))
        .await
        .unwrap();
    // An instruction cut across two frames is put back together.
    ws.send(Message::text("5.mouse,2.10,")).await.unwrap();
    ws.send(Message::text("2.20,1.1;")).await.unwrap();
    ws.send(Message::text("4.sync,1.1;")).await.unwrap();
    wait_for("the input to reach guacd", || {
        env.guacd.received().iter().any(|i| i.opcode == "sync")
    })
    .await;
    let received = env.guacd.received();
    let ops: Vec<&str> = received.iter().map(|i| i.opcode.as_str()).collect();
    assert_eq!(ops, ["key", "key", "mouse", "sync"], "{received:?}");
    assert_eq!(received[2].args, ["10", "20", "1"]);

    // The token never appears in the gateway's logs.
    ws.close(None).await.unwrap();
    // Access lines are written together, up to `log.access_flush` (1 s) apart.
    wait_for("the tunnel's access line", || {
        env.gw.stderr().contains("path=\"/tunnel\"")
    })
    .await;
    let logs = env.gw.stderr();
    assert!(logs.contains("desktop tunnel open"), "{logs}");
    assert!(!logs.contains(&token), "the token was logged:\n{logs}");
    // A browser's tunnel is taken at the TLS front, not through the proxy's second hop.
    assert!(
        logs.lines().any(|l| l.contains("access")
            && l.contains("path=\"/tunnel\"")
            && l.contains("via=\"tls-front\"")),
        "{logs}"
    );
}

/// A WebSocket upgrade that is not the first request on its connection (a client reusing a
/// kept-alive connection) is not taken at the TLS front but by the proxy's route, and works the
/// same, the token kept out of every log there too.
#[tokio::test]
async fn a_tunnel_after_other_requests_on_a_kept_alive_connection_works_too() {
    let env = Env::start().await;
    let alice = env.browser();
    let csrf = env.login(&alice, "alice").await;
    let token = env.token(&alice, &csrf).await;
    let (mut ws, protocol) = env.open_on(&token, true).await;
    assert_eq!(protocol.as_deref(), Some("guacamole"));
    let first = next_text(&mut ws).await;
    assert!(first.starts_with("0.,36."), "the UUID first: {first}");
    let drawn = read_until(&mut ws, "sync").await;
    assert_eq!(drawn[2].args[1], guacd::PICTURE_PNG_BASE64);
    ws.send(Message::text("3.key,5.65307,1.1;")).await.unwrap();
    wait_for("the key to reach guacd", || {
        env.guacd.received().iter().any(|i| i.opcode == "key")
    })
    .await;
    ws.close(None).await.unwrap();
    wait_for("the upgrade's access line", || {
        env.gw.stderr().contains("path=\"/tunnel\"")
    })
    .await;
    let logs = env.gw.stderr();
    assert!(logs.contains("desktop tunnel open"), "{logs}");
    assert!(!logs.contains(&token), "the token was logged:\n{logs}");
    let upgrade = logs
        .lines()
        .find(|l| l.contains("access") && l.contains("path=\"/tunnel\""))
        .unwrap_or_else(|| panic!("no access line for the upgrade:\n{logs}"));
    assert!(
        upgrade.contains("status=101"),
        "the proxy's route: {upgrade}"
    );
    assert!(!upgrade.contains("tls-front"), "{upgrade}");
}

#[tokio::test]
async fn large_and_multibyte_payloads_arrive_intact_in_whole_instructions() {
    use base64::Engine;
    let env = Env::start().await;
    let (_alice, _csrf, mut ws, _) = env.connected().await;
    read_until(&mut ws, "sync").await;

    env.guacd.command(Command::SendLarge);
    let mut frames = 0;
    let mut stream = Vec::new();
    loop {
        let frame = next_text(&mut ws).await; // checks that each frame holds whole instructions
        frames += 1;
        let got = instructions(&frame);
        let done = got.iter().any(|i| i.opcode == "end" && i.args == ["2"]);
        stream.extend(got);
        if done {
            break;
        }
    }
    let base64: String = stream
        .iter()
        .filter(|i| i.opcode == "blob" && i.args[0] == "2")
        .map(|i| i.args[1].as_str())
        .collect();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .unwrap();
    assert_eq!(payload.len(), 64 * 1024);
    assert!(
        payload == guacd::large_payload(),
        "the 64 KiB arrived altered"
    );
    assert!(frames >= 1);

    // Multi-byte text written by guacd one byte at a time, so reads end inside code points.
    env.guacd.command(Command::SendMultibyte);
    let got = read_until(&mut ws, "utf8").await;
    let text = got.iter().find(|i| i.opcode == "utf8").unwrap();
    assert_eq!(text.args, [guacd::MULTIBYTE_TEXT]);

    // And the other way: multi-byte clipboard text reaches guacd as sent.
    let clipboard = Instruction::new("blob", ["3", guacd::MULTIBYTE_TEXT]).encode();
    ws.send(Message::text(clipboard)).await.unwrap();
    wait_for("the clipboard text to reach guacd", || {
        env.guacd.received().iter().any(|i| i.opcode == "blob")
    })
    .await;
    let received = env.guacd.received();
    let blob = received.iter().find(|i| i.opcode == "blob").unwrap();
    assert_eq!(blob.args, ["3", guacd::MULTIBYTE_TEXT]);
}

#[tokio::test]
async fn every_token_attack_is_refused_with_769_before_guacd_hears_of_it() {
    let env = Env::start().await;
    let alice = env.browser();
    let csrf = env.login(&alice, "alice").await;
    let keyring = env.keyring();
    let alice_id = env.user_id("alice").await;
    let alice_session = env.session_of("alice").await;
    let now = flowcase_admin::store::now_millis();

    // No token, garbage.
    refused(&env, "", "no token").await;
    refused(&env, "not-a-token", "garbage").await;
    // Tampered with.
    let real = env.token(&alice, &csrf).await;
    let mut tampered = real.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    refused(&env, &String::from_utf8(tampered).unwrap(), "tampered").await;
    // Expired: sealed with the gateway's own key, but a minute and more ago.
    let expired = TunnelGrant::new(
        env.desktop.id,
        alice_id,
        &alice_session,
        false,
        now - TTL_MS - 1000,
    )
    .seal(&keyring)
    .unwrap();
    refused(&env, &expired, "expired").await;
    // Naming a session that is not the user's.
    let bob = env.browser();
    let bob_csrf = env.login(&bob, "bob").await;
    let bob_session = env.session_of("bob").await;
    let foreign_session = TunnelGrant::new(env.desktop.id, alice_id, &bob_session, false, now)
        .seal(&keyring)
        .unwrap();
    refused(&env, &foreign_session, "another user's session").await;
    // Another user's instance: the API refuses to mint, and a token naming it anyway (a right
    // lost since minting) is refused by the tunnel.
    let resp = env.mint(&bob, &bob_csrf, &env.desktop.slug).await;
    assert_eq!(resp.status(), 403);
    let bob_id = env.user_id("bob").await;
    let not_bobs = TunnelGrant::new(env.desktop.id, bob_id, &bob_session, false, now)
        .seal(&keyring)
        .unwrap();
    refused(&env, &not_bobs, "another user's instance").await;
    assert_eq!(env.guacd.connections(), 0, "guacd was contacted");

    // Replayed: the first use connects, the second is refused.
    let (mut ws, _) = env.open(&real).await;
    next_text(&mut ws).await;
    ws.close(None).await.unwrap();
    assert_eq!(env.guacd.connections(), 1);
    refused(&env, &real, "replayed").await;

    // A token whose session logged out since.
    let late = env.token(&alice, &csrf).await;
    env.logout(&alice, &csrf).await;
    refused(&env, &late, "logged out").await;
    assert_eq!(
        env.guacd.connections(),
        1,
        "guacd was contacted for a refused token"
    );
    // Operators see the attacks: every refusal is counted by its status.
    let metrics = reqwest::get(env.gw.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"flowcase_tunnels_closed_total{status="client_unauthorized"} 8"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("flowcase_tunnels_opened_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_token_endpoint_checks_csrf_and_desktops() {
    let env = Env::start().await;
    let alice = env.browser();
    let csrf = env.login(&alice, "alice").await;
    // No CSRF token.
    let resp = alice
        .post(env.gw.url(
            "localhost",
            &format!("/api/v1/instances/{}/tunnel-token", env.desktop.slug),
        ))
        .header("origin", env.gw.origin())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "csrf_failed"
    );
    // Not signed in.
    let anonymous = env.browser();
    let resp = env.mint(&anonymous, "x", &env.desktop.slug).await;
    assert_eq!(resp.status(), 401);
    // A web app is no desktop; a missing instance is missing.
    let _web = echo_instance(&env.dir, "alice", "webalice").await;
    let resp = env.mint(&alice, &csrf, "webalice").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "forbidden"
    );
    assert_eq!(env.mint(&alice, &csrf, "nosuch").await.status(), 404);
    // The numeric id works as well as the slug, and is checked the same way.
    let by_id = env.desktop.id.to_string();
    assert_eq!(env.mint(&alice, &csrf, &by_id).await.status(), 200);
    let bob = env.browser();
    let bob_csrf = env.login(&bob, "bob").await;
    assert_eq!(env.mint(&bob, &bob_csrf, &by_id).await.status(), 403);
}

#[tokio::test]
async fn a_guacd_that_dies_mid_session_closes_with_an_upstream_status() {
    let env = Env::start().await;
    let (_alice, _csrf, mut ws, _) = env.connected().await;
    read_until(&mut ws, "sync").await;
    env.guacd.command(Command::Die);
    // UPSTREAM_ERROR (0x0203).
    assert_eq!(closed(&mut ws).await, (1011, "515".to_owned()));
}

#[tokio::test]
async fn logout_closes_the_tunnel_with_session_closed() {
    let env = Env::start().await;
    let (alice, csrf, mut ws, _) = env.connected().await;
    read_until(&mut ws, "sync").await;
    env.logout(&alice, &csrf).await;
    // SESSION_CLOSED (0x020B).
    assert_eq!(closed(&mut ws).await, (1002, "523".to_owned()));
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test]
async fn a_stalled_client_does_not_grow_the_gateways_memory() {
    const FLOOD: usize = 1 << 30;
    let env = Env::start().await;
    let (_alice, _csrf, mut ws, _) = env.connected().await;
    read_until(&mut ws, "sync").await;
    let before = rss(env.gw.pid());
    // guacd sends as fast as it can; the client reads nothing.
    env.guacd.command(Command::Flood { bytes: FLOOD });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled_at = env.guacd.flooded.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = env.guacd.flooded.load(std::sync::atomic::Ordering::SeqCst);
    let after = rss(env.gw.pid());
    eprintln!(
        "flood: {} KiB left guacd; gateway RSS {} -> {} MiB",
        later >> 10,
        before >> 20,
        after >> 20
    );
    // The pressure reaches guacd: its writes block after the socket buffers fill.
    assert_eq!(
        stalled_at, later,
        "guacd kept writing into a stalled tunnel"
    );
    assert!(
        later < 32 << 20,
        "{} MiB left guacd for a client that reads nothing",
        later >> 20
    );
    assert!(
        after < before + (16 << 20),
        "the gateway grew from {} to {} MiB",
        before >> 20,
        after >> 20
    );
    // The client catches up: the stream is intact and resumes.
    let mut blobs = 0usize;
    while blobs < 50 {
        let frame = next_text(&mut ws).await;
        blobs += instructions(&frame)
            .iter()
            .filter(|i| i.opcode == "blob")
            .count();
    }
}

#[tokio::test]
async fn a_watch_link_joins_the_running_connection_read_only() {
    let env = Env::start().await;
    let watch = json!({"watch": true});
    let (alice, csrf, mut ws, _) = env.connected().await;
    read_until(&mut ws, "sync").await;
    // Only who may use the desktop hands out watch links.
    let bob = env.browser();
    let bob_csrf = env.login(&bob, "bob").await;
    let resp = env
        .mint_with(&bob, &bob_csrf, &env.desktop.slug, Some(watch.clone()))
        .await;
    assert_eq!(resp.status(), 403);

    let resp = env
        .mint_with(&alice, &csrf, &env.desktop.slug, Some(watch.clone()))
        .await;
    assert_eq!(resp.status(), 200);
    let link: Value = resp.json().await.unwrap();
    let (mut watcher, _) = env.open(link["token"].as_str().unwrap()).await;
    let uuid = next_text(&mut watcher).await;
    assert!(uuid.starts_with("0.,36."), "{uuid}");
    read_until(&mut watcher, "sync").await;
    let handshakes = env.guacd.handshakes();
    let (owner, joined) = (&handshakes[0], &handshakes[1]);
    assert!(
        joined.select.starts_with('$'),
        "joins by id: {}",
        joined.select
    );
    assert_ne!(joined.select, owner.select);
    assert_eq!(joined.value("read-only"), Some("true"));
    assert_eq!(
        joined.value("password"),
        Some(""),
        "a watcher gets no password"
    );

    // The watcher's input never reaches guacd; its other instructions do.
    watcher
        .send(Message::text(
            "3.key,5.65307,1.1;5.mouse,1.1,1.1,1.1;4.sync,1.7;",
        ))
        .await
        .unwrap();
    wait_for("the watcher's sync", || {
        env.guacd.received().iter().any(|i| i.opcode == "sync")
    })
    .await;
    let ops: Vec<String> = env.guacd.received().into_iter().map(|i| i.opcode).collect();
    assert_eq!(ops, ["sync"]);

    // Once the owner's connection is gone there is nothing to watch: RESOURCE_NOT_FOUND.
    ws.close(None).await.unwrap();
    drop(ws);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resp = env
        .mint_with(&alice, &csrf, &env.desktop.slug, Some(watch))
        .await;
    let late: Value = resp.json().await.unwrap();
    let (mut nothing, _) = env.open(late["token"].as_str().unwrap()).await;
    assert_eq!(closed(&mut nothing).await, (1002, "516".to_owned()));
}

/// The stored `last_activity_at` of the desktop instance.
async fn last_activity(env: &Env) -> Option<i64> {
    let store = flowcase_admin::store::Store::connect(&format!(
        "sqlite://{}",
        env.dir.data_dir().join("flowcase.db").display()
    ))
    .await
    .unwrap();
    let instance = store.get_instance(env.desktop.id).await.unwrap().unwrap();
    store.close().await;
    instance.last_activity_at
}

#[tokio::test]
async fn real_input_keeps_the_desktop_awake_and_keep_alives_do_not() {
    let env = Env::start().await;
    let (_alice, _csrf, mut ws, _) = env.connected().await;
    read_until(&mut ws, "sync").await;
    let before = last_activity(&env).await;
    // What the browser client sends by itself on a still screen: pings, nops, syncs. The
    // activity flush runs every 5 s; give it longer than that.
    let quiet_until = Instant::now() + Duration::from_secs(7);
    let mut n = 0;
    while Instant::now() < quiet_until {
        n += 1;
        let keepalive = format!(
            "0.,4.ping,{0}.{1};3.nop;4.sync,{0}.{1};",
            n.to_string().len(),
            n
        );
        ws.send(Message::text(keepalive)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        last_activity(&env).await,
        before,
        "keep-alives counted as use"
    );
    // A key press does count.
    ws.send(Message::text("3.key,2.97,1.1;3.key,2.97,1.0;"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = last_activity(&env).await;
        if now.is_some() && now > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "input was not recorded as activity\n{}",
            env.gw.stderr()
        );
        // Keep the tunnel alive meanwhile (the client pings every half second).
        ws.send(Message::text("0.,4.ping,1.0;")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn an_unreachable_guacd_closes_with_upstream_not_found() {
    let guacd = GuacdDouble::start().await;
    let mut dir = desktop_gateway_dir();
    // Nothing listens there.
    let dead = flowcase_e2e::free_port();
    dir.set("FLOWCASE_GUACD__ADDRESS", &format!("127.0.0.1:{dead}"));
    let gw = Gateway::start(&dir).await;
    add_user(&dir, "alice", PASSWORD);
    let desktop = desktop_instance(&dir, "alice", "deskalice").await;
    let env = Env {
        dir,
        gw,
        guacd,
        desktop,
    };
    let alice = env.browser();
    let csrf = env.login(&alice, "alice").await;
    let token = env.token(&alice, &csrf).await;
    let (mut ws, _) = env.open(&token).await;
    // UPSTREAM_NOT_FOUND (0x0207).
    assert_eq!(closed(&mut ws).await, (1011, "519".to_owned()));
}

#[tokio::test]
async fn group_clipboard_restrictions_reach_guacd() {
    let env = Env::start().await;
    let (admin_name, admin_password) = flowcase_e2e::read_credentials(&env.dir.data_dir());
    let admin = env.browser();
    let admin_csrf =
        flowcase_e2e::instances::login(&env.gw, &admin, &admin_name, &admin_password).await;
    let call = |method: reqwest::Method, path: &str, body: Value| {
        admin
            .request(method, env.gw.url("localhost", path))
            .header("origin", env.gw.origin())
            .header("x-csrf-token", &admin_csrf)
            .json(&body)
            .send()
    };
    let group: Value = call(
        reqwest::Method::POST,
        "/api/v1/groups",
        json!({"name": "No paste"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let group_id = group["id"].as_i64().unwrap();
    let clipboard_path = format!("/api/v1/groups/{group_id}/clipboard");
    let resp = call(
        reqwest::Method::PUT,
        &clipboard_path,
        json!({"disable_copy": false, "disable_paste": true}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let alice_id = env.user_id("alice").await;
    let resp = call(
        reqwest::Method::PUT,
        &format!("/api/v1/users/{alice_id}/groups"),
        json!({"group_ids": [group_id]}),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    // Only who may edit groups changes restrictions: alice may not lift her own.
    let alice = env.browser();
    let csrf = env.login(&alice, "alice").await;
    let resp = alice
        .put(env.gw.url("localhost", &clipboard_path))
        .header("origin", env.gw.origin())
        .header("x-csrf-token", &csrf)
        .json(&json!({"disable_copy": false, "disable_paste": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    let token = env.token(&alice, &csrf).await;
    let (mut ws, _) = env.open(&token).await;
    next_text(&mut ws).await;
    let hs = env.guacd.handshakes().pop().unwrap();
    assert_eq!(hs.value("disable-paste"), Some("true"));
    assert_eq!(hs.value("disable-copy"), Some(""));
    // The viewer page offers only what guacd allows.
    let page = alice
        .get(
            env.gw
                .url("localhost", &format!("/droplet/{}", env.desktop.id)),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"data-can-paste="false""#), "{page}");
    assert!(page.contains(r#"data-can-copy="true""#), "{page}");
}

#[tokio::test]
async fn a_desktop_has_no_instance_host() {
    let env = Env::start().await;
    // A web app added after the desktop: once its host routes, the gateway's view holds both.
    let app = echo_instance(&env.dir, "alice", "webalice").await;
    let desktop_host = format!("{}.apps.localhost", env.desktop.slug);
    let alice = env.gw.client(
        &env.dir.data_dir(),
        &["localhost", &app.host, &desktop_host],
    );
    env.login(&alice, "alice").await;
    let to_app = alice.get(env.gw.url(&app.host, "/")).send().await.unwrap();
    assert_eq!(to_app.status(), 302, "the web app's host asks for its code");
    // The desktop's port speaks VNC to guacd: browsers never get an HTTP route to it, not even
    // its owner's.
    let to_desktop = alice
        .get(env.gw.url(&desktop_host, "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(to_desktop.status(), 404);
}
