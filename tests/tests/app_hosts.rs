//! Instance hosts through the real binary: the subdomain login (app-auth code → host-only
//! cookie), another user's 403, forged / other-host / replayed codes, open-redirect attempts,
//! what the upstream sees (never our cookies; our identity headers, not the client's), and
//! logout cutting access at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use flowcase_admin::auth::app_host::{STATE_COOKIE, new_state};
use flowcase_e2e::echo::EchoServer;
use flowcase_e2e::instances::{EchoInstance, add_user, echo_instance};
use flowcase_e2e::{Gateway, GatewayDir};
use reqwest::{Client, Url};
use serde_json::{Value, json};

const PASSWORD: &str = "a long enough passphrase";

struct Env {
    dir: GatewayDir,
    gw: Gateway,
    echo: EchoServer,
    host: String,
}

impl Env {
    /// A gateway, users alice (owner) and bob, and alice's running instance `app1` whose
    /// upstream is the echo server.
    async fn start() -> Env {
        Env::start_in(GatewayDir::new()).await
    }

    async fn start_in(dir: GatewayDir) -> Env {
        let gw = Gateway::start(&dir).await;
        for user in ["alice", "bob"] {
            add_user(&dir, user, PASSWORD);
        }
        let EchoInstance { echo, host, .. } = echo_instance(&dir, "alice", "app1").await;
        Env {
            dir,
            gw,
            echo,
            host,
        }
    }

    fn browser(&self) -> Client {
        self.gw.client(
            &self.dir.data_dir(),
            &["localhost", "app1.apps.localhost", "nope.apps.localhost"],
        )
    }

    async fn login(&self, client: &Client, user: &str) -> String {
        flowcase_e2e::instances::login(&self.gw, client, user, PASSWORD).await
    }

    fn app(&self, path: &str) -> String {
        self.gw.url(&self.host, path)
    }
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_owned()
}

/// Follows redirects by hand (the client keeps cookies per host), returning the final response
/// and the URLs visited.
async fn follow(client: &Client, start: &str) -> (reqwest::Response, Vec<String>) {
    let (resp, visited, _) = follow_collecting(client, start).await;
    (resp, visited)
}

/// [`follow`], also returning every `Set-Cookie` seen on the way.
async fn follow_collecting(
    client: &Client,
    start: &str,
) -> (reqwest::Response, Vec<String>, Vec<String>) {
    let mut url = Url::parse(start).unwrap();
    let mut visited = vec![url.to_string()];
    let mut cookies = Vec::new();
    for _ in 0..10 {
        let resp = client.get(url.clone()).send().await.unwrap();
        for c in resp.headers().get_all("set-cookie") {
            cookies.push(c.to_str().unwrap().to_owned());
        }
        if !resp.status().is_redirection() {
            return (resp, visited, cookies);
        }
        url = url.join(&location(&resp)).unwrap();
        visited.push(url.to_string());
    }
    panic!("redirect loop: {visited:?}");
}

#[tokio::test]
async fn the_owner_gets_in_through_a_code_and_the_upstream_never_sees_our_cookies() {
    let env = Env::start().await;
    let alice = env.browser();
    env.login(&alice, "alice").await;

    // Without an app cookie: off to the public host's /app-auth, which hands out a code.
    let first = alice.get(env.app("/hello?x=1")).send().await.unwrap();
    assert_eq!(first.status(), 302);
    let to_auth = location(&first);
    assert!(
        to_auth.starts_with(&format!("{}/app-auth?", env.gw.origin())),
        "{to_auth}"
    );
    let (resp, visited, cookies) = follow_collecting(&alice, env.app("/hello?x=1").as_str()).await;
    assert_eq!(resp.status(), 200, "{visited:?}");
    let app_cookie = cookies
        .iter()
        .find(|c| c.starts_with("__Host-flowcase_app="))
        .expect("the instance host sets its app cookie")
        .clone();
    for flag in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(app_cookie.contains(flag), "{flag}: {app_cookie}");
    }
    assert!(
        !app_cookie.to_ascii_lowercase().contains("domain="),
        "host-only: {app_cookie}"
    );
    let app_cookie = app_cookie.split(';').next().unwrap().to_owned();
    assert!(
        visited.iter().any(|u| u.contains("/__flowcase/auth?code=")),
        "{visited:?}"
    );
    assert_eq!(visited.last().unwrap(), &env.app("/hello?x=1"));
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["path"], "/hello");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["headers"]["x-forwarded-user"], "alice");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");

    // The browser holds a host-only app cookie; the upstream sees none of our cookies, but its
    // own, and not the identity headers a client tries to forge.
    let resp = alice
        .get(env.app("/again"))
        // A hand-written Cookie header replaces the jar's, so the app cookie goes in it too.
        .header(
            "cookie",
            format!("theirs=1; {app_cookie}; __Host-flowcase_session=stolen"),
        )
        .header("x-forwarded-user", "root")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-groups", "Admin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    let cookie = seen["headers"]["cookie"].as_str().unwrap_or_default();
    assert!(
        !cookie.contains("flowcase"),
        "our cookies leaked upstream: {cookie}"
    );
    assert!(
        cookie.contains("theirs=1"),
        "the instance's own cookies pass: {cookie}"
    );
    assert_eq!(seen["headers"]["x-forwarded-user"], "alice");
    assert_eq!(seen["headers"]["x-forwarded-groups"], "User");
    assert_eq!(
        seen["headers"]["x-forwarded-for"], "127.0.0.1",
        "a client's own X-Forwarded-For is not believed"
    );
    let _ = &env.echo;
}

#[tokio::test]
async fn another_user_gets_403_and_anonymous_users_are_sent_to_log_in() {
    let env = Env::start().await;
    let bob = env.browser();
    env.login(&bob, "bob").await;
    let (resp, visited) = follow(&bob, &env.app("/")).await;
    assert_eq!(resp.status(), 403, "{visited:?}");
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("belongs to another user")
    );

    let anonymous = env.browser();
    let (resp, visited) = follow(&anonymous, &env.app("/private")).await;
    assert_eq!(resp.status(), 200, "the login page");
    let last = visited.last().unwrap();
    assert!(
        last.starts_with(&format!("{}/?return=", env.gw.origin())),
        "{visited:?}"
    );

    // Unknown instances are a 404 without any login dance.
    let resp = anonymous
        .get(env.gw.url("nope.apps.localhost", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn forged_other_host_and_replayed_codes_are_refused_and_return_paths_stay_local() {
    let env = Env::start().await;
    let alice = env.browser();
    env.login(&alice, "alice").await;
    // The codes below are asked for with this state and redeemed by browsers holding it.
    let state = new_state();
    let with_state = |client: Client, url: String| {
        client
            .get(url)
            .header("cookie", format!("{STATE_COOKIE}={state}"))
    };
    let code_url = |ret: &str| {
        let alice = alice.clone();
        let url = format!(
            "{}/app-auth?host={}&return={}&state={state}",
            env.gw.origin(),
            env.host,
            url_escape(ret)
        );
        async move {
            let resp = alice.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 303, "app-auth answers with a redirect");
            location(&resp)
        }
    };

    // Forged.
    let forged = env.app("/__flowcase/auth?code=AAAAforgedBBBB&return=/");
    assert_eq!(
        env.browser().get(forged).send().await.unwrap().status(),
        403
    );

    // A code for app1 presented on another instance host is refused (no such instance there).
    let code = code_url("/").await;
    let moved = code.replace("app1.apps.localhost", "nope.apps.localhost");
    let resp = alice.get(moved).send().await.unwrap();
    assert_eq!(resp.status(), 404);

    // Used once, refused the second time (by a browser holding the same state, too).
    let code = code_url("/").await;
    let first = with_state(env.browser(), code.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 302);
    let replay = with_state(env.browser(), code).send().await.unwrap();
    assert_eq!(replay.status(), 403, "a code works once");

    // /app-auth mints nothing without a well-formed state.
    for state in [
        "",
        "&state=short",
        "&state=not%20base64url%20but%20long%20enough%20to%20pass%21",
    ] {
        let url = format!(
            "{}/app-auth?host={}&return=/{state}",
            env.gw.origin(),
            env.host
        );
        let resp = alice.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{state:?}");
    }

    // Open-redirect attempts end on a local path of the instance host.
    for attempt in [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "/%2F%2Fevil.example",
    ] {
        let code = code_url(attempt).await;
        let resp = with_state(env.browser(), code).send().await.unwrap();
        assert_eq!(resp.status(), 302, "{attempt}");
        let to = location(&resp);
        assert!(
            to.starts_with('/') && !to.starts_with("//") && !to.contains("evil"),
            "{attempt} → {to}"
        );
    }
}

/// A code is good only in the browser that went to fetch it: someone who mints a code for an
/// instance (their own, say) and sends the link to somebody else cannot sign that person's
/// browser in as themselves. The refused attempt does not spend the code.
#[tokio::test]
async fn a_code_sent_to_another_browser_signs_nobody_in() {
    let env = Env::start().await;
    let alice = env.browser();
    env.login(&alice, "alice").await;
    // Alice's browser on the instance host: sent to /app-auth with a state it now holds.
    let resp = alice.get(env.app("/notes?x=1")).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let to_auth = location(&resp);
    assert!(to_auth.contains("&state="), "{to_auth}");
    let state_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        state_cookie.starts_with("__Host-flowcase_app_state=")
            && state_cookie.contains("Secure")
            && state_cookie.contains("HttpOnly"),
        "{state_cookie}"
    );
    let resp = alice.get(to_auth).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let code_url = location(&resp);

    // Bob, signed in or not, and a stranger holding a state of their own: all refused.
    let bob = env.browser();
    env.login(&bob, "bob").await;
    let stranger = env.browser();
    let _ = stranger.get(env.app("/")).send().await.unwrap();
    for (who, client) in [
        ("bob", &bob),
        ("a stranger", &stranger),
        ("nobody", &env.browser()),
    ] {
        let resp = client.get(code_url.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{who}");
        assert!(
            resp.text().await.unwrap().contains("another browser"),
            "{who}"
        );
    }
    assert_eq!(env.echo.requests(), 0, "nothing reached the instance");

    // Alice's own browser still gets in with it, and her state is spent.
    let resp = alice.get(code_url).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(location(&resp), "/notes?x=1");
    let set: Vec<&str> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        set.iter().any(|c| c.starts_with("__Host-flowcase_app=")),
        "{set:?}"
    );
    assert!(
        set.iter()
            .any(|c| c.starts_with("__Host-flowcase_app_state=;") && c.contains("Max-Age=0")),
        "{set:?}"
    );
    let (resp, _) = follow(&alice, &env.app("/notes?x=1")).await;
    assert_eq!(resp.status(), 200);
}

/// Codes live 60 s. Time is passed into the minting, so the test mints with the gateway's own
/// key one code "61 seconds ago" and one now, for the same user, instance and host: only the
/// fresh one opens the door.
#[tokio::test]
async fn a_code_older_than_60_seconds_is_refused() {
    use flowcase_admin::auth::app_host::{AppIdentity, CODE_TTL_MS, mint_code};
    use flowcase_admin::store::{Store, now_millis};

    let env = Env::start().await;
    let keyring =
        flowcase_admin::secrets::ensure_key_file(&env.dir.data_dir().join("secret.key")).unwrap();
    let store = Store::connect(&format!(
        "sqlite://{}",
        env.dir.data_dir().join("flowcase.db").display()
    ))
    .await
    .unwrap();
    let alice = store.find_user_by_login("alice").await.unwrap().unwrap();
    let instance = store.get_instance_by_slug("app1").await.unwrap().unwrap();
    store.close().await;
    let now = now_millis();
    let identity = AppIdentity {
        session: "a session of alice".into(),
        user_id: alice.id,
        username: "alice".into(),
        email: None,
        groups: vec!["User".into()],
        host: env.host.clone(),
        instance_id: instance.id,
        session_expires_at: now + 3_600_000,
    };
    let state = new_state();
    let enter = |code: &str| {
        env.browser()
            .get(env.app(&format!("/__flowcase/auth?code={code}&return=/")))
            .header("cookie", format!("{STATE_COOKIE}={state}"))
    };

    let old = mint_code(
        &keyring,
        identity.clone(),
        "/",
        &state,
        now - CODE_TTL_MS - 1_000,
    )
    .unwrap();
    let resp = enter(&old).send().await.unwrap();
    assert_eq!(resp.status(), 403, "a code minted 61 s ago");
    assert!(resp.text().await.unwrap().contains("expired"));

    let fresh = mint_code(&keyring, identity, "/", &state, now).unwrap();
    let resp = enter(&fresh).send().await.unwrap();
    assert_eq!(resp.status(), 302, "the same code minted now");
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("__Host-flowcase_app=")
    );
}

/// Two gateway processes on one PostgreSQL database (and one key): a code redeemed on one is
/// refused on the other, while a fresh code works on either.
#[tokio::test]
async fn a_code_works_once_across_gateway_processes_sharing_the_database() {
    use flowcase_e2e::instances::{login, wait_until_routed};
    use flowcase_e2e::postgres::TestDatabase;

    let db = TestDatabase::create().await;
    let mut first = GatewayDir::new();
    let key = first.dir.path().join("shared-secret.key");
    let mut second = GatewayDir::new();
    for dir in [&mut first, &mut second] {
        dir.set("FLOWCASE_DATABASE__URL", &db.url)
            .set("FLOWCASE_SECRETS__KEY_FILE", key.to_str().unwrap());
    }
    let gw1 = Gateway::start(&first).await;
    let gw2 = Gateway::start(&second).await;
    add_user(&first, "alice", PASSWORD);
    let EchoInstance {
        echo: _echo, host, ..
    } = echo_instance(&first, "alice", "app1").await;
    wait_until_routed(&second, &host).await;

    let alice = gw1.client(&first.data_dir(), &["localhost", &host]);
    login(&gw1, &alice, "alice", PASSWORD).await;
    let state = new_state();
    let code_for = async || {
        let resp = alice
            .get(gw1.url(
                "localhost",
                &format!("/app-auth?host={host}&return=/&state={state}"),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303);
        let to = Url::parse(&location(&resp)).unwrap();
        format!("{}?{}", to.path(), to.query().unwrap())
    };
    // Each redemption from a browser holding the state the code was asked with.
    let on = |gw: &Gateway, dir: &GatewayDir, path: &str| {
        let client = gw.client(&dir.data_dir(), &[&host]);
        let url = gw.url(&host, path);
        let cookie = format!("{STATE_COOKIE}={state}");
        async move {
            client
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    let code = code_for().await;
    assert_eq!(
        on(&gw1, &first, &code).await,
        302,
        "first use, first process"
    );
    assert_eq!(
        on(&gw2, &second, &code).await,
        403,
        "replayed on the other process"
    );
    let code = code_for().await;
    assert_eq!(
        on(&gw2, &second, &code).await,
        302,
        "first use, other process"
    );
    assert_eq!(on(&gw1, &first, &code).await, 403, "replayed on the first");

    drop((gw1, gw2));
    db.drop_now().await;
}

#[tokio::test]
async fn logging_out_cuts_the_instance_host_at_once() {
    let env = Env::start().await;
    let alice = env.browser();
    let csrf = env.login(&alice, "alice").await;
    let (resp, _) = follow(&alice, &env.app("/")).await;
    assert_eq!(resp.status(), 200);
    let logout = alice
        .delete(env.gw.url("localhost", "/api/v1/session"))
        .header("origin", env.gw.origin())
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = alice.get(env.app("/")).send().await.unwrap();
    assert_eq!(after.status(), 302, "the app cookie died with the session");
}

fn url_escape(s: &str) -> String {
    Url::parse_with_params("http://x/", &[("v", s)])
        .unwrap()
        .query()
        .unwrap()
        .trim_start_matches("v=")
        .to_owned()
}

#[tokio::test]
async fn the_upstream_gets_an_identity_assertion_verifiable_with_the_published_jwks() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let env = Env::start().await;
    let alice = env.browser();
    env.login(&alice, "alice").await;
    let (resp, _) = follow(&alice, &env.app("/whoami")).await;
    let seen: Value = resp.json().await.unwrap();
    let token = seen["headers"]["x-flowcase-assertion"]
        .as_str()
        .expect("an assertion")
        .to_owned();
    // A client cannot forge one: its own header is replaced.
    let forged = alice
        .get(env.app("/whoami"))
        .header("x-flowcase-assertion", "eyJhbGciOiJub25lIn0.e30.")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_ne!(
        forged["headers"]["x-flowcase-assertion"],
        "eyJhbGciOiJub25lIn0.e30."
    );

    let jwks: Value = env
        .browser()
        .get(env.gw.url("localhost", "/.well-known/flowcase/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the assertion's key is published");
    let mut point = vec![4u8];
    point.extend(URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap());
    point.extend(URL_SAFE_NO_PAD.decode(key["y"].as_str().unwrap()).unwrap());
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the signature verifies against the JWKS");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["iss"], env.gw.origin());
    assert_eq!(
        claims["aud"],
        format!("https://{}:{}", env.host, env.dir.https_port)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp > now && exp <= now + 301, "short-lived: {exp} vs {now}");
}

#[tokio::test]
async fn websockets_pass_through_instance_hosts_and_logout_cuts_them() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let env = Env::start().await;
    let alice = env.browser();
    let csrf = env.login(&alice, "alice").await;
    let (_, _, cookies) = follow_collecting(&alice, &env.app("/")).await;
    let app_cookie = cookies
        .iter()
        .find(|c| c.starts_with("__Host-flowcase_app="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    // WebSockets need HTTP/1.1: a TLS connection offering only that, trusting our certificate.
    let stream = env
        .gw
        .tls_connect(&env.dir.data_dir(), &env.host, &[b"http/1.1"])
        .await;
    let mut request = format!("wss://{}:{}/ws", env.host, env.dir.https_port)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", app_cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    ws.send(Message::text("ping 1")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("ping 1"));

    let logout = alice
        .delete(env.gw.url("localhost", "/api/v1/session"))
        .header("origin", env.gw.origin())
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The next frame finds the session gone and the connection cut.
    let _ = ws.send(Message::text("ping 2")).await;
    let after = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    assert!(
        !matches!(after, Some(Ok(Message::Text(ref t))) if t.as_str() == "ping 2"),
        "the WebSocket outlived the logout: {after:?}"
    );
}

#[tokio::test]
async fn a_dead_upstream_gets_a_friendly_error_without_internal_addresses() {
    let mut env = Env::start().await;
    let alice = env.browser();
    env.login(&alice, "alice").await;
    let (resp, visited, cookies) = follow_collecting(&alice, &env.app("/")).await;
    assert_eq!(resp.status(), 200, "{visited:?}");
    let app_cookie = cookies
        .iter()
        .find(|c| c.starts_with("__Host-flowcase_app="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let upstream = env.echo.addr.to_string();
    env.echo = EchoServer::start().await; // the old one is dropped: nothing listens there now
    for (accept, content_type) in [
        ("application/json", "application/json"),
        ("text/html", "text/html; charset=utf-8"),
    ] {
        let resp = alice
            .get(env.app("/"))
            .header("cookie", &app_cookie)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502);
        assert_eq!(resp.headers()["content-type"], content_type);
        let body = resp.text().await.unwrap();
        assert!(
            !body.contains(&upstream) && !body.contains("127.0.0.1"),
            "{body}"
        );
        assert!(body.contains("not answering"), "{body}");
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_address_is_believed() {
    let mut dir = GatewayDir::new();
    dir.set("FLOWCASE_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1\"]");
    let gw = Gateway::start(&dir).await;
    let resp = gw
        .client(&dir.data_dir(), &["localhost"])
        .post(gw.url("localhost", "/api/v1/session"))
        .header("origin", gw.origin())
        .header("x-forwarded-for", "198.51.100.7, 203.0.113.9")
        .json(&json!({"username": "admin", "password": "wrong password!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", dir.data_dir().join("flowcase.db").display());
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let (addr,): (Option<String>,) =
        sqlx::query_as("SELECT client_addr FROM audit_log WHERE action = 'login.failure'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        addr.as_deref(),
        Some("203.0.113.9"),
        "the right-most untrusted address"
    );
}

/// Each request is in the access log under the request id its upstream got in `X-Request-Id`.
/// Access lines are written together (`log.access_flush`, 1 s), so they show up within a moment
/// while the gateway runs, and a stop loses none of them.
#[tokio::test]
async fn access_lines_carry_the_upstreams_request_id_and_a_stop_loses_none() {
    let mut env = Env::start().await;
    let alice = env.browser();
    env.login(&alice, "alice").await;
    let (resp, visited) = follow(&alice, env.app("/first").as_str()).await;
    assert_eq!(resp.status(), 200, "{visited:?}");
    let mut requests = Vec::new();
    for i in 0..25 {
        let path = format!("/request-{i}");
        let seen: Value = alice
            .get(env.app(&path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = seen["headers"]["x-request-id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 16, "{id}");
        requests.push((path, id));
    }
    let logged = |logs: &str, (path, id): &(String, String)| {
        let path = format!("path=\"{path}\"");
        logs.lines()
            .any(|l| l.contains("access") && l.contains(id.as_str()) && l.contains(&path))
    };
    let (earlier, last) = requests.split_at(20);
    env.gw
        .wait_for_log(
            "the first 20 access lines",
            Duration::from_secs(5),
            |logs| earlier.iter().all(|r| logged(logs, r)).then_some(()),
        )
        .await;
    let status = env.gw.stop();
    assert!(status.success(), "{status}");
    let logs = env.gw.stderr();
    for request in last {
        assert!(
            logged(&logs, request),
            "{request:?} lost at the stop:\n{logs}"
        );
    }
}

/// The public host's access lines name the signed-in user too (the control plane tells the
/// front door in a response header, which never reaches the browser); anonymous requests name
/// nobody.
#[tokio::test]
async fn access_lines_of_the_public_host_name_the_signed_in_user() {
    let env = Env::start().await;
    let alice = env.browser();
    env.login(&alice, "alice").await;
    let signed_in = alice
        .get(env.gw.url("localhost", "/api/v1/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    assert!(signed_in.headers().get("x-flowcase-user").is_none());
    let anonymous = env
        .browser()
        .get(env.gw.url("localhost", "/api/v1/droplets"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let line_of = |logs: &str, path: &str| {
        let path = format!("path=\"{path}\"");
        logs.lines()
            .find(|l| l.contains("access") && l.contains("method=GET") && l.contains(&path))
            .map(str::to_owned)
    };
    let (mine, theirs) = env
        .gw
        .wait_for_log("both access lines", Duration::from_secs(10), |logs| {
            Some((
                line_of(logs, "/api/v1/session")?,
                line_of(logs, "/api/v1/droplets")?,
            ))
        })
        .await;
    assert!(mine.contains("user=\"alice\""), "{mine}");
    assert!(!theirs.contains("user="), "{theirs}");
}

/// Working in an app keeps the sign-in session alive past its idle timeout (the gateway notes
/// each use and renews the session, as a page of the control plane would), and once nothing
/// uses it for its idle timeout it ends: the control plane and the app host both let the
/// browser in no more.
#[tokio::test]
async fn using_an_app_keeps_the_session_alive_and_idleness_ends_it_on_the_app_host_too() {
    let mut dir = GatewayDir::new();
    dir.set("FLOWCASE_AUTH__SESSION_IDLE_TIMEOUT", "8s");
    let env = Env::start_in(dir).await;
    let alice = env.browser();
    env.login(&alice, "alice").await;
    let (resp, visited) = follow(&alice, &env.app("/")).await;
    assert_eq!(resp.status(), 200, "{visited:?}");

    // Twice the idle timeout of work in the app, and nothing else.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(16) {
        let resp = alice.get(env.app("/work")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "at {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let session = || alice.get(env.gw.url("localhost", "/api/v1/session")).send();
    assert_eq!(
        session().await.unwrap().status(),
        200,
        "kept alive by the app"
    );

    // Then nothing for longer than the idle timeout: the session is over (asking the control
    // plane does not renew an ended session)...
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(session().await.unwrap().status(), 401, "idle for 9 s");
    // ...and the app host follows within a flush of the gateway's activity notes.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let resp = alice.get(env.app("/work")).send().await.unwrap();
        if resp.status() == 302 {
            assert!(
                location(&resp).contains("/app-auth?"),
                "{}",
                location(&resp)
            );
            break;
        }
        assert_eq!(resp.status(), 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the app host still lets an idle session's browser in"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
