//! Accounts and authentication through the real binary: the JSON session API, the login form,
//! cookies on the wire, CSRF and origin checks, throttling, disabled users, API keys, password
//! changes, and open-redirect attempts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_e2e::instances::{add_user, login, login_response};
use flowcase_e2e::{Gateway, GatewayDir, read_credentials};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

struct Env {
    dir: GatewayDir,
    gw: Gateway,
}

impl Env {
    async fn start() -> Env {
        let dir = GatewayDir::new();
        let gw = Gateway::start(&dir).await;
        Env { dir, gw }
    }

    /// A fresh browser-like client (own cookie jar).
    fn client(&self) -> Client {
        self.gw.client(&self.dir.data_dir(), &["localhost"])
    }

    fn url(&self, path: &str) -> String {
        self.gw.url("localhost", path)
    }

    fn admin_password(&self) -> String {
        read_credentials(&self.dir.data_dir()).1
    }

    async fn login(&self, client: &Client, user: &str, password: &str) -> reqwest::Response {
        login_response(&self.gw, client, user, password).await
    }

    /// Logs in and returns the CSRF token.
    async fn login_ok(&self, client: &Client, user: &str, password: &str) -> String {
        login(&self.gw, client, user, password).await
    }

    fn add_user(&self, name: &str, password: &str) {
        add_user(&self.dir, name, password);
    }
}

async fn error_code(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn login_sets_a_hardened_cookie_and_the_session_api_works() {
    let env = Env::start().await;
    let client = env.client();
    let resp = env.login(&client, "admin", &env.admin_password()).await;
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-flowcase_session="), "{cookie}");
    for flag in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    assert!(
        !cookie.to_ascii_lowercase().contains("domain="),
        "host-only: {cookie}"
    );
    assert!(
        !cookie.contains("Max-Age"),
        "without remember-me the cookie ends with the browser"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["user"]["username"], "admin");
    assert_eq!(body["user"]["permissions"]["admin_panel"], true);
    assert!(body["csrf_token"].as_str().unwrap().len() > 20);
    assert!(body["user"].get("password_hash").is_none());

    let me: Value = client
        .get(env.url("/api/v1/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["username"], "admin");
    assert_eq!(me["csrf_token"], body["csrf_token"]);

    // Login by e-mail-or-username is case-insensitive.
    let other = env.client();
    assert_eq!(
        env.login(&other, "ADMIN", &env.admin_password())
            .await
            .status(),
        200
    );

    // Remember me: a persistent cookie.
    let remembered = env.client();
    let resp = remembered
        .post(env.url("/api/v1/session"))
        .header("origin", env.gw.origin())
        .json(&json!({"username": "admin", "password": env.admin_password(), "remember": true}))
        .send()
        .await
        .unwrap();
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    let max_age: i64 = cookie
        .split("Max-Age=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age > 29 * 86400, "{cookie}");
}

#[tokio::test]
async fn failures_are_generic_and_anonymous_api_calls_get_401_json() {
    let env = Env::start().await;
    let client = env.client();
    let wrong_pw = env.login(&client, "admin", "not-the-password").await;
    let (status, code) = error_code(wrong_pw).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );
    let no_user = env.login(&client, "nobody", "not-the-password").await;
    let (status, code) = error_code(no_user).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );

    let anon = client.get(env.url("/api/v1/session")).send().await.unwrap();
    assert_eq!(anon.headers()["content-type"], "application/json");
    let (status, code) = error_code(anon).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );

    let unknown = client.get(env.url("/api/v1/nope")).send().await.unwrap();
    assert_eq!(error_code(unknown).await.1, "not_found");
}

#[tokio::test]
async fn a_cookie_planted_before_login_is_never_promoted() {
    let env = Env::start().await;
    let client = env.client();
    let planted = "attacker-chosen-session-value-0123456789abcdef";
    let resp = client
        .post(env.url("/api/v1/session"))
        .header("origin", env.gw.origin())
        .header("cookie", format!("__Host-flowcase_session={planted}"))
        .json(&json!({"username": "admin", "password": env.admin_password()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        !cookie.contains(planted),
        "a new session id is issued at login"
    );
    let with_planted = env
        .client()
        .get(env.url("/api/v1/session"))
        .header("cookie", format!("__Host-flowcase_session={planted}"))
        .send()
        .await
        .unwrap();
    assert_eq!(with_planted.status(), 401);
}

#[tokio::test]
async fn state_changes_need_a_csrf_token_and_our_origin_and_logout_revokes_server_side() {
    let env = Env::start().await;
    let client = env.client();
    let resp = env.login(&client, "admin", &env.admin_password()).await;
    let session_cookie = resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = resp.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let delete = |origin: Option<String>, token: Option<&str>| {
        let mut req = client.delete(env.url("/api/v1/session"));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        req.send()
    };
    let (status, code) = error_code(delete(Some(env.gw.origin()), None).await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "csrf_failed"),
        "no token"
    );
    let (status, _) =
        error_code(delete(Some(env.gw.origin()), Some("forged")).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "wrong token");
    let (status, _) = error_code(
        delete(Some("https://evil.example".into()), Some(&csrf))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "cross-origin");
    let (status, _) = error_code(delete(None, Some(&csrf)).await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no origin nor referer");
    // Still logged in after all those refusals.
    assert_eq!(
        client
            .get(env.url("/api/v1/session"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A cross-origin login attempt (login CSRF) is refused too.
    let resp = env
        .client()
        .post(env.url("/api/v1/session"))
        .header("origin", "https://evil.example")
        .json(&json!({"username": "admin", "password": env.admin_password()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // The token of another session does not work for this one.
    let other = env.client();
    let other_csrf = env.login_ok(&other, "admin", &env.admin_password()).await;
    assert_ne!(other_csrf, csrf);
    assert_eq!(
        delete(Some(env.gw.origin()), Some(&other_csrf))
            .await
            .unwrap()
            .status(),
        403
    );

    let resp = delete(Some(env.gw.origin()), Some(&csrf)).await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(
        resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // Replaying the old cookie after logout: revoked on the server.
    let replay = env
        .client()
        .get(env.url("/api/v1/session"))
        .header("cookie", session_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);
}

#[tokio::test]
async fn brute_force_is_throttled_with_retry_after() {
    let env = Env::start().await;
    let client = env.client();
    let mut throttled = None;
    for attempt in 1..=8 {
        let resp = env.login(&client, "admin", "wrong-password").await;
        if resp.status() == 429 {
            throttled = Some((attempt, resp));
            break;
        }
        assert_eq!(resp.status(), 401, "attempt {attempt}");
    }
    let (attempt, resp) = throttled.expect("no 429 after 8 failures");
    assert!(
        attempt <= 6,
        "throttling starts after 5 failures, got {attempt}"
    );
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // Even the right password waits now.
    assert_eq!(
        env.login(&client, "admin", &env.admin_password())
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn a_disabled_user_is_refused_at_once_even_with_a_live_session() {
    let env = Env::start().await;
    env.add_user("carol", "carol's long passphrase");
    let client = env.client();
    env.login_ok(&client, "carol", "carol's long passphrase")
        .await;
    assert_eq!(
        client
            .get(env.url("/api/v1/session"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(env.dir.cli(&["user", "disable", "carol"]).status.success());
    assert_eq!(
        client
            .get(env.url("/api/v1/session"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        env.login(&env.client(), "carol", "carol's long passphrase")
            .await
            .status(),
        401,
        "a disabled user cannot log in"
    );
}

#[tokio::test]
async fn the_login_form_redirects_only_to_our_own_paths() {
    let env = Env::start().await;
    let anon = env.client();
    let resp = anon.get(env.url("/dashboard")).send().await.unwrap();
    assert!(resp.status().is_redirection());
    assert_eq!(resp.headers()["location"], "/?return=%2Fdashboard");

    let attempts = [
        ("/droplet/7?x=1", "/droplet/7?x=1"),
        ("//evil.example", "/dashboard"),
        ("https://evil.example", "/dashboard"),
        ("/\\evil.example", "/dashboard"),
        ("/%2F%2Fevil.example", "/dashboard"),
        ("/%5Cevil.example", "/dashboard"),
        ("\t//evil.example", "/dashboard"),
    ];
    for (target, expected) in attempts {
        let client = env.client();
        let resp = client
            .post(env.url("/login"))
            .header("origin", env.gw.origin())
            .form(&[
                ("username", "admin"),
                ("password", env.admin_password().as_str()),
                ("return", target),
            ])
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_redirection(),
            "{target}: {}",
            resp.status()
        );
        assert_eq!(resp.headers()["location"], expected, "{target}");
    }

    // A wrong password re-renders the form with a generic message, HTML-escaped input.
    let resp = env
        .client()
        .post(env.url("/login"))
        .header("origin", env.gw.origin())
        .form(&[
            ("username", "<script>x</script>"),
            ("password", "nope-nope-nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let html = resp.text().await.unwrap();
    assert!(html.contains("Wrong username or password."));
    assert!(!html.contains("<script>x</script>"), "input is escaped");

    // Logout through the form needs the CSRF field.
    let client = env.client();
    let csrf = env.login_ok(&client, "admin", &env.admin_password()).await;
    let refused = client
        .post(env.url("/logout"))
        .header("origin", env.gw.origin())
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("CSRF"));
    let ok = client
        .post(env.url("/logout"))
        .header("origin", env.gw.origin())
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    assert_eq!(
        client
            .get(env.url("/api/v1/session"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn api_keys_act_as_their_owner_without_cookies_or_csrf_and_can_be_revoked() {
    let env = Env::start().await;
    let browser = env.client();
    let csrf = env.login_ok(&browser, "admin", &env.admin_password()).await;
    let resp = browser
        .post(env.url("/api/v1/account/api-keys"))
        .header("origin", env.gw.origin())
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("fc_"));
    let key_id = created["key"]["id"].as_i64().unwrap();

    let script = env.client();
    let me: Value = script
        .get(env.url("/api/v1/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["username"], "admin");
    // State changes by API key need neither CSRF token nor Origin.
    let second = script
        .post(env.url("/api/v1/account/api-keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "second"}))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 201);
    let listed: Value = script
        .get(env.url("/api/v1/account/api-keys"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = listed["items"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        !listed.iter().any(|k| k.to_string().contains(&token[3..])),
        "secrets are never listed"
    );

    let revoke = script
        .delete(env.url(&format!("/api/v1/account/api-keys/{key_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 204);
    let after = script
        .get(env.url("/api/v1/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    let bogus = script
        .get(env.url("/api/v1/session"))
        .bearer_auth("fc_bogus")
        .send()
        .await
        .unwrap();
    assert_eq!(bogus.status(), 401);
}

#[tokio::test]
async fn changing_the_password_checks_policy_and_ends_other_sessions() {
    let env = Env::start().await;
    env.add_user("dave", "dave's first passphrase");
    let (a, b) = (env.client(), env.client());
    let csrf = env.login_ok(&a, "dave", "dave's first passphrase").await;
    env.login_ok(&b, "dave", "dave's first passphrase").await;
    let change = |current: &str, new: &str| {
        a.post(env.url("/api/v1/account/password"))
            .header("origin", env.gw.origin())
            .header("x-csrf-token", &csrf)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    let (status, code) =
        error_code(change("wrong", "dave's second passphrase").await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
    );
    for weak in ["short", "password123", "dave"] {
        let (status, _) = error_code(change("dave's first passphrase", weak).await.unwrap()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{weak}");
    }
    assert_eq!(
        change("dave's first passphrase", "dave's second passphrase")
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        a.get(env.url("/api/v1/session"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "this session stays"
    );
    assert_eq!(
        b.get(env.url("/api/v1/session"))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "others end"
    );
    assert_eq!(
        env.login(&env.client(), "dave", "dave's first passphrase")
            .await
            .status(),
        401
    );
    env.login_ok(&env.client(), "dave", "dave's second passphrase")
        .await;
}

#[tokio::test]
async fn every_login_outcome_logout_password_change_and_key_creation_is_audited() {
    let env = Env::start().await;
    env.add_user("erin", "erin's first passphrase");
    let client = env.client();
    assert_eq!(
        env.login(&client, "erin", "wrong password!").await.status(),
        401
    );
    for _ in 0..6 {
        env.login(&env.client(), "nobody-at-all", "wrong password!")
            .await;
    }
    let csrf = env
        .login_ok(&client, "erin", "erin's first passphrase")
        .await;
    let post = |path: &str, body: Value| {
        client
            .post(env.url(path))
            .header("origin", env.gw.origin())
            .header("x-csrf-token", &csrf)
            .json(&body)
            .send()
    };
    assert_eq!(
        post(
            "/api/v1/account/api-keys",
            json!({"name": "k", "expires_at": 1})
        )
        .await
        .unwrap()
        .status(),
        422,
        "an expiry in the past is refused"
    );
    assert_eq!(
        post("/api/v1/account/api-keys", json!({"name": "k"}))
            .await
            .unwrap()
            .status(),
        201
    );
    let change = json!({"current_password": "erin's first passphrase", "new_password": "erin's second passphrase"});
    assert_eq!(
        post("/api/v1/account/password", change)
            .await
            .unwrap()
            .status(),
        204
    );
    let resp = client
        .delete(env.url("/api/v1/session"))
        .header("origin", env.gw.origin())
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    sqlx::any::install_default_drivers();
    let url = format!(
        "sqlite://{}",
        env.dir.data_dir().join("flowcase.db").display()
    );
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let rows: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT action, actor_name, client_addr FROM audit_log ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    for expected in [
        "login.failure",
        "login.throttled",
        "login.success",
        "api_key.create",
        "password.change",
        "logout",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    let failure = rows.iter().find(|r| r.0 == "login.failure").unwrap();
    assert_eq!(failure.1.as_deref(), Some("erin"), "the account is named");
    assert_eq!(
        failure.2.as_deref(),
        Some("127.0.0.1"),
        "with the client address"
    );
}

#[tokio::test]
async fn an_expired_api_key_stops_working() {
    let env = Env::start().await;
    let browser = env.client();
    let csrf = env.login_ok(&browser, "admin", &env.admin_password()).await;
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 1500;
    let created: Value = browser
        .post(env.url("/api/v1/account/api-keys"))
        .header("origin", env.gw.origin())
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "short", "expires_at": soon}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let script = env.client();
    let call = || {
        script
            .get(env.url("/api/v1/session"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(call().await.unwrap().status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
    assert_eq!(call().await.unwrap().status(), 401);
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_absolute_lifetime_whatever_the_activity() {
    let mut dir = GatewayDir::new();
    dir.set("FLOWCASE_AUTH__SESSION_IDLE_TIMEOUT", "2s");
    dir.set("FLOWCASE_AUTH__SESSION_LIFETIME", "4s");
    let gw = Gateway::start(&dir).await;
    let env = Env { dir, gw };
    let me = |c: &Client| c.get(env.url("/api/v1/session")).send();

    let (active, idle) = (env.client(), env.client());
    // Each session's clock starts with its own login (hashing a password can take a while
    // under load): the active one's lifetime began no earlier than `active_from` and no later
    // than `active_to`; the idle one was last used no later than `idle_to`.
    let active_from = std::time::Instant::now();
    env.login_ok(&active, "admin", &env.admin_password()).await;
    let active_to = std::time::Instant::now();
    env.login_ok(&idle, "admin", &env.admin_password()).await;
    let idle_to = std::time::Instant::now();
    let ms = |since: std::time::Instant| since.elapsed().as_millis();
    let mut idle_checked = false;
    // Poke the active session every half second: activity keeps it alive past its idle timeout,
    // while the unused one ends; but no activity carries it past the absolute lifetime.
    while ms(active_to) < 5000 || (!idle_checked && ms(active_to) < 15_000) {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let status = me(&active).await.unwrap().status();
        if ms(active_from) < 3500 {
            assert_eq!(status, 200, "active session at {} ms", ms(active_from));
        } else if ms(active_to) > 4300 {
            assert_eq!(
                status,
                401,
                "absolute lifetime passed at {} ms",
                ms(active_to)
            );
        }
        if !idle_checked && ms(idle_to) > 2500 {
            assert_eq!(me(&idle).await.unwrap().status(), 401, "idle timeout");
            idle_checked = true;
        }
    }
    assert!(idle_checked);
}

#[tokio::test]
async fn login_works_by_email_and_one_address_guessing_many_accounts_is_throttled() {
    let env = Env::start().await;
    let out = env.dir.cli_with_stdin(
        &[
            "user",
            "add",
            "heidi",
            "--email",
            "Heidi@Example.org",
            "--password-stdin",
        ],
        "heidi's long passphrase\n",
    );
    assert!(out.status.success());
    env.login_ok(
        &env.client(),
        "heidi@example.org",
        "heidi's long passphrase",
    )
    .await;

    // 20 failures from one address over 20 different accounts: the address is throttled,
    // whichever account it tries next.
    let mut statuses = Vec::new();
    for i in 0..22 {
        let status = env
            .login(&env.client(), &format!("guess{i}"), "wrong password!")
            .await
            .status();
        statuses.push(status.as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses[..19].iter().all(|s| *s == 401), "{statuses:?}");
}
