//! Self-service registration in its three modes (closed, open, invite), through the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_e2e::{Gateway, GatewayDir};
use reqwest::Client;
use serde_json::Value;

async fn start(mode: Option<&str>) -> (GatewayDir, Gateway) {
    let mut dir = GatewayDir::new();
    if let Some(mode) = mode {
        dir.set("FLOWCASE_AUTH__REGISTRATION", mode);
    }
    let gw = Gateway::start(&dir).await;
    (dir, gw)
}

async fn register(gw: &Gateway, client: &Client, fields: &[(&str, &str)]) -> reqwest::Response {
    client
        .post(gw.url("localhost", "/register"))
        .header("origin", gw.origin())
        .form(fields)
        .send()
        .await
        .unwrap()
}

fn fields<'a>(user: &'a str, password: &'a str, code: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("username", user),
        ("email", ""),
        ("password", password),
        ("password_confirm", password),
        ("invite_code", code),
    ]
}

#[tokio::test]
async fn closed_by_default() {
    let (dir, gw) = start(None).await;
    let client = gw.client(&dir.data_dir(), &["localhost"]);
    assert_eq!(
        client
            .get(gw.url("localhost", "/register"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let resp = register(
        &gw,
        &client,
        &fields("mallory", "a fine long passphrase", ""),
    )
    .await;
    assert_eq!(resp.status(), 404);
    let login = client
        .get(gw.url("localhost", "/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!login.contains("/register"));
}

#[tokio::test]
async fn open_registration_checks_every_field_and_logs_the_new_user_in() {
    let (dir, gw) = start(Some("open")).await;
    let client = gw.client(&dir.data_dir(), &["localhost"]);
    let login = client
        .get(gw.url("localhost", "/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        login.contains("/register"),
        "the login page offers registration"
    );
    assert_eq!(
        client
            .get(gw.url("localhost", "/register"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let mismatch = register(
        &gw,
        &client,
        &[
            ("username", "erin"),
            ("password", "a fine long passphrase"),
            ("password_confirm", "another one entirely"),
        ],
    )
    .await;
    assert_eq!(mismatch.status(), 422);
    assert!(mismatch.text().await.unwrap().contains("differ"));
    for (user, password, expected) in [
        ("erin", "password123", "too common"),
        ("erin", "short", "at least 10"),
        ("erin-the-great", "Erin-The-Great", "not be the username"),
        (
            "no spaces allowed",
            "a fine long passphrase",
            "letters, digits",
        ),
        ("admin", "a fine long passphrase", "already taken"),
    ] {
        let resp = register(&gw, &client, &fields(user, password, "")).await;
        assert_eq!(resp.status(), 422, "{user}/{password}");
        let html = resp.text().await.unwrap();
        assert!(html.contains(expected), "{user}/{password}: {html}");
        assert!(
            !html.contains(password) || password == "Erin-The-Great",
            "passwords are not echoed back"
        );
    }
    let cross_site = client
        .post(gw.url("localhost", "/register"))
        .header("origin", "https://evil.example")
        .form(&fields("erin", "a fine long passphrase", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);

    let ok = register(&gw, &client, &fields("Erin", "a fine long passphrase", "")).await;
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "/dashboard");
    let me: Value = client
        .get(gw.url("localhost", "/api/v1/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["username"], "erin");
    assert_eq!(
        me["user"]["permissions"]["admin_panel"], false,
        "new accounts get no rights"
    );
    let list = String::from_utf8(dir.cli(&["user", "list"]).stdout).unwrap();
    let erin = list.lines().find(|l| l.contains(" erin ")).unwrap();
    assert!(erin.ends_with("User"), "{erin}");
}

#[tokio::test]
async fn invite_mode_needs_a_valid_unused_unexpired_code() {
    let (dir, gw) = start(Some("invite")).await;
    let client = gw.client(&dir.data_dir(), &["localhost"]);
    let page = client
        .get(gw.url("localhost", "/register?invite=abc"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("invite_code") && page.contains("value=\"abc\""));

    let none = register(&gw, &client, &fields("frank", "a fine long passphrase", "")).await;
    assert_eq!(none.status(), 422);
    assert!(
        none.text()
            .await
            .unwrap()
            .contains("invitation code is not valid")
    );

    let code_of = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("code: "))
            .unwrap()
            .to_owned()
    };
    let code = code_of(dir.cli(&["user", "invite", "--uses", "1"]));
    let ok = register(
        &gw,
        &client,
        &fields("frank", "a fine long passphrase", &code),
    )
    .await;
    assert_eq!(ok.status(), 303);
    let reused = register(
        &gw,
        &gw.client(&dir.data_dir(), &["localhost"]),
        &fields("grace", "a fine long passphrase", &code),
    )
    .await;
    assert_eq!(reused.status(), 422, "a single-use code works once");

    let short_lived = code_of(dir.cli(&["user", "invite", "--expires", "1s"]));
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let expired = register(
        &gw,
        &gw.client(&dir.data_dir(), &["localhost"]),
        &fields("grace", "a fine long passphrase", &short_lived),
    )
    .await;
    assert_eq!(expired.status(), 422, "an expired code is refused");

    // The code went to the invitation's group, and the code itself is not stored.
    for file in ["flowcase.db", "flowcase.db-wal"] {
        let bytes = std::fs::read(dir.data_dir().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(code.len()).any(|w| w == code.as_bytes()),
            "only a digest of the code is stored ({file})"
        );
    }
}
