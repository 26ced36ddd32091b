//! The front door's own rules, through the real binary: the request's host must agree with the
//! TLS connection's name (SNI), else 421 — also on an HTTP/2 connection a browser reuses for
//! another host its certificate covers; request body limits (413) and upstream timeouts (504),
//! with WebSockets living by a longer idle timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use flowcase_e2e::instances::{EchoInstance, add_user, app_cookie, echo_instance, login};
use flowcase_e2e::pebble::connect_unverified;
use flowcase_e2e::{Gateway, GatewayDir};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "a long enough passphrase";

/// One HTTP/1.1 request on a fresh TLS connection whose handshake names `sni` (an IP address
/// sends no SNI at all); returns the status and the body.
async fn raw_get(gw: &Gateway, sni: &str, host: &str, extra: &[(&str, &str)]) -> (u16, String) {
    let (mut tls, _) = connect_unverified(gw.https_addr(), sni, &[b"http/1.1"]).await;
    let mut request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut got))
        .await
        .expect("no answer");
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

struct TwoInstances {
    dir: GatewayDir,
    gw: Gateway,
    alice: EchoInstance,
    bob: EchoInstance,
    /// alice's app cookie for her instance host.
    cookie: String,
}

/// A gateway with alice's instance `app1` and bob's `app2` (echo upstreams), alice logged in to
/// hers.
async fn two_instances() -> TwoInstances {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    add_user(&dir, "alice", PASSWORD);
    add_user(&dir, "bob", PASSWORD);
    let alice = echo_instance(&dir, "alice", "app1").await;
    let bob = echo_instance(&dir, "bob", "app2").await;
    let client = gw.client(&dir.data_dir(), &["localhost", &alice.host]);
    login(&gw, &client, "alice", PASSWORD).await;
    let cookie = app_cookie(&gw, &client, &alice.host).await;
    TwoInstances {
        dir,
        gw,
        alice,
        bob,
        cookie,
    }
}

#[tokio::test]
async fn a_host_that_disagrees_with_the_tls_name_gets_421() {
    let env = two_instances().await;
    let gw = &env.gw;
    let (alice, bob) = (env.alice.host.as_str(), env.bob.host.as_str());
    let port = env.dir.https_port;
    let with_port = format!("{alice}:{port}");
    let cookie = [("cookie", env.cookie.as_str())];

    for (sni, host) in [
        (alice, "localhost"),
        (alice, bob),
        ("localhost", alice),
        ("localhost", bob),
        (bob, alice),
    ] {
        let (status, body) = raw_get(gw, sni, host, &cookie).await;
        assert_eq!(status, 421, "SNI {sni}, Host {host}: {body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"]["code"], "misdirected_request", "{body}");
    }
    // Browsers get a page.
    let (status, body) = raw_get(gw, alice, "localhost", &[("accept", "text/html")]).await;
    assert_eq!(status, 421);
    assert!(body.contains("Misdirected request"), "{body}");

    // Agreeing names are served as usual (port and case do not matter).
    let (status, body) = raw_get(gw, alice, &with_port, &cookie).await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["x-forwarded-user"], "alice");
    let (status, _) = raw_get(gw, alice, &alice.to_uppercase(), &cookie).await;
    assert_eq!(status, 200);
    let (status, _) = raw_get(gw, bob, bob, &[]).await;
    assert_eq!(status, 302, "an anonymous visitor is sent to log in");
    let (status, _) = raw_get(gw, "localhost", "localhost", &[]).await;
    assert_eq!(status, 200);

    // Without SNI (a client that dialled the address) the Host alone decides.
    let (status, _) = raw_get(gw, "127.0.0.1", "localhost", &[]).await;
    assert_eq!(status, 200);
    let (status, body) = raw_get(gw, "127.0.0.1", alice, &cookie).await;
    assert_eq!(status, 200, "{body}");
}

/// A browser reuses an HTTP/2 connection for every host its certificate covers — with the
/// wildcard certificate, every instance host. Requests for another host on it get 421 (the
/// browser then opens a connection of their own), and the connection keeps serving its own host.
/// One request on an open HTTP/2 connection: the status and the body as JSON (Null if not).
async fn h2_get(
    h2: &h2::client::SendRequest<bytes::Bytes>,
    uri: &str,
    cookie: &str,
) -> (u16, Value) {
    let request = http::Request::get(uri)
        .header("cookie", cookie)
        .body(())
        .unwrap();
    let mut ready = h2.clone().ready().await.unwrap();
    let (response, _) = ready.send_request(request, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("no answer")
        .unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_reused_http2_connection_gets_421_for_other_hosts_and_stays_usable() {
    let env = two_instances().await;
    let port = env.dir.https_port;
    let (tls, _) = connect_unverified(env.gw.https_addr(), &env.alice.host, &[b"h2"]).await;
    let (h2, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);

    let get = async |host: &str| h2_get(&h2, &format!("https://{host}:{port}/"), &env.cookie).await;
    let (status, seen) = get(&env.alice.host).await;
    assert_eq!(status, 200);
    assert_eq!(seen["headers"]["x-forwarded-user"], "alice");
    let (status, answer) = get(&env.bob.host).await;
    assert_eq!(status, 421, "{answer}");
    let (status, _) = get("localhost").await;
    assert_eq!(status, 421);
    let (status, seen) = get(&env.alice.host).await;
    assert_eq!(status, 200, "the connection still serves its own host");
    assert_eq!(seen["path"], "/");
}

/// A gateway with small limits (1 MiB bodies, 1 s upstream silence, 4 s WebSocket silence) and
/// alice's instance, alice logged in.
async fn tight_limits() -> (GatewayDir, Gateway, EchoInstance, reqwest::Client, String) {
    let mut dir = GatewayDir::new();
    dir.set("FLOWCASE_PROXY__MAX_REQUEST_BODY", "1MiB")
        .set("FLOWCASE_PROXY__UPSTREAM_READ_TIMEOUT", "1s")
        .set("FLOWCASE_PROXY__UPGRADED_IDLE_TIMEOUT", "4s");
    let gw = Gateway::start(&dir).await;
    add_user(&dir, "alice", PASSWORD);
    let instance = echo_instance(&dir, "alice", "app1").await;
    let client = gw.client(&dir.data_dir(), &["localhost", &instance.host]);
    login(&gw, &client, "alice", PASSWORD).await;
    let cookie = app_cookie(&gw, &client, &instance.host).await;
    (dir, gw, instance, client, cookie)
}

#[tokio::test]
async fn oversized_request_bodies_get_413_and_never_reach_the_upstream_whole() {
    let (_dir, gw, instance, client, cookie) = tight_limits().await;
    let upload = gw.url(&instance.host, "/upload");

    let fits = client
        .post(&upload)
        .header("cookie", &cookie)
        .body(vec![b'a'; 512 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), 200);
    assert_eq!(fits.json::<Value>().await.unwrap()["received"], 512 * 1024);

    // Announced too large: refused before the upstream hears of it.
    let before = instance.echo.requests();
    let resp = client
        .post(&upload)
        .header("cookie", &cookie)
        .body(vec![b'a'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    assert_eq!(
        instance.echo.requests(),
        before,
        "the upstream saw the request"
    );

    // Streamed without a length (HTTP/2 DATA frames): cut where it passes the limit, before
    // the upstream (which reads the whole body before answering) can answer.
    let (tls, _) = connect_unverified(gw.https_addr(), &instance.host, &[b"h2"]).await;
    let (h2, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(&upload)
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .body(())
        .unwrap();
    let mut h2 = h2.ready().await.unwrap();
    let (response, mut stream) = h2.send_request(request, false).unwrap();
    for _ in 0..32 {
        stream
            .send_data(bytes::Bytes::from(vec![b'b'; 64 * 1024]), false)
            .unwrap();
    }
    let _ = stream.send_data(bytes::Bytes::new(), true);
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("no answer")
        .unwrap();
    assert_eq!(response.status(), 413);
    let mut body = response.into_body();
    let mut page = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        page.extend_from_slice(&chunk);
    }
    assert!(
        String::from_utf8_lossy(&page).contains("larger than this gateway accepts"),
        "{}",
        String::from_utf8_lossy(&page)
    );
}

#[tokio::test]
async fn an_upstream_slower_than_the_read_timeout_gets_a_friendly_504() {
    let (_dir, gw, instance, client, cookie) = tight_limits().await;
    let resp = client
        .get(gw.url(&instance.host, "/slow/0"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "finally");

    for (accept, content_type) in [
        ("text/html", "text/html; charset=utf-8"),
        ("application/json", "application/json"),
    ] {
        let resp = client
            .get(gw.url(&instance.host, "/slow/4"))
            .header("cookie", &cookie)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 504);
        assert_eq!(resp.headers()["content-type"], content_type);
        let body = resp.text().await.unwrap();
        assert!(body.contains("took too long"), "{body}");
        assert!(!body.contains("127.0.0.1"), "no internal address: {body}");
    }
}

#[tokio::test]
async fn websockets_outlive_the_request_timeout_and_close_after_their_own_idle_timeout() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let (dir, gw, instance, _client, cookie) = tight_limits().await;
    let (tls, _) = connect_unverified(gw.https_addr(), &instance.host, &[b"http/1.1"]).await;
    let mut request = format!("wss://{}:{}/ws", instance.host, dir.https_port)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    let mut echo = async |text: &str| {
        ws.send(Message::text(text)).await.ok()?;
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => Some(t.as_str().to_owned()),
            _ => None,
        }
    };
    assert_eq!(echo("one").await.as_deref(), Some("one"));
    // Quiet for longer than an ordinary request may wait (1 s), shorter than 4 s: still open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(echo("two").await.as_deref(), Some("two"));
    // Quiet for longer than the WebSocket idle timeout: closed.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        echo("three").await,
        None,
        "the idle WebSocket was not closed"
    );
}
