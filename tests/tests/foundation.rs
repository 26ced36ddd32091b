//! Issue 2 end to end, through the real binary: first start and restart, the generated
//! certificate, the HTTP redirect, health endpoints, `check-config`, and the same on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;

use argon2::PasswordVerifier;
use flowcase_e2e::postgres::TestDatabase;
use flowcase_e2e::{Gateway, GatewayDir, read_credentials};
use sqlx::Connection;

async fn stored_admin_hash(url: &str) -> String {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let row: (String,) = sqlx::query_as("SELECT password_hash FROM users WHERE username = 'admin'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    row.0
}

fn assert_argon2id_matches(hash: &str, password: &str) {
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let parsed = argon2::PasswordHash::new(hash).unwrap();
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .expect("the password in IDENTIFIANTS.txt must verify against the stored hash");
    assert!(
        argon2::Argon2::default()
            .verify_password(b"not the password", &parsed)
            .is_err()
    );
}

fn sqlite_url(dir: &GatewayDir) -> String {
    sqlx::any::install_default_drivers();
    format!("sqlite://{}", dir.data_dir().join("flowcase.db").display())
}

#[tokio::test]
async fn first_start_creates_the_admin_once_and_a_restart_keeps_everything() {
    let dir = GatewayDir::new();
    let mut gw = Gateway::start(&dir).await;
    let creds_path = dir.data_dir().join("IDENTIFIANTS.txt");
    let mode = std::fs::metadata(&creds_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "IDENTIFIANTS.txt must be private");
    let (username, password) = read_credentials(&dir.data_dir());
    assert_eq!(username, "admin");
    assert!(password.len() >= 20, "password too short: {password}");
    assert!(
        gw.stdout().contains(&password),
        "the password is printed once at first start"
    );
    let hash = stored_admin_hash(&sqlite_url(&dir)).await;
    assert_argon2id_matches(&hash, &password);
    let file_before = std::fs::read(&creds_path).unwrap();
    let modified_before = std::fs::metadata(&creds_path).unwrap().modified().unwrap();
    assert!(gw.stop().success() || cfg!(not(unix)));

    let gw2 = Gateway::start(&dir).await;
    assert!(
        !gw2.stdout().contains(&password),
        "a restart must not print the password again"
    );
    assert_eq!(std::fs::read(&creds_path).unwrap(), file_before);
    assert_eq!(
        std::fs::metadata(&creds_path).unwrap().modified().unwrap(),
        modified_before
    );
    assert_eq!(
        stored_admin_hash(&sqlite_url(&dir)).await,
        hash,
        "the admin password is unchanged"
    );
}

#[tokio::test]
async fn https_serves_the_generated_certificate_for_the_public_and_instance_hosts() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let pem = std::fs::read(dir.data_dir().join("tls/self-signed.crt")).unwrap();
    let expected = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();

    for host in ["localhost", "someapp.apps.localhost"] {
        let stream = gw
            .tls_connect(&dir.data_dir(), host, &[b"h2", b"http/1.1"])
            .await;
        let (_, conn) = stream.get_ref();
        let served = &conn.peer_certificates().unwrap()[0];
        assert_eq!(
            served.as_ref(),
            expected.as_ref(),
            "{host} gets the generated certificate"
        );
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]), "HTTP/2 is offered");
    }

    // And a browser-like client reaches the login page over it.
    let client = gw.client(&dir.data_dir(), &["localhost"]);
    let resp = client.get(gw.url("localhost", "/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(resp.text().await.unwrap().contains("Flowcase"));
}

#[tokio::test]
async fn unknown_hosts_are_not_served() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    // The default certificate does not cover evil.example: trust is beside the point here.
    let client = gw
        .client_builder(
            &dir.data_dir(),
            &["localhost", "evil.example", "nosuch.apps.localhost"],
        )
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    for (host, status) in [
        ("evil.example", 421),
        ("nosuch.apps.localhost", 404),
        ("localhost", 200),
    ] {
        let resp = client.get(gw.url(host, "/")).send().await.unwrap();
        assert_eq!(resp.status(), status, "{host}");
    }
}

#[tokio::test]
async fn plain_http_redirects_to_https() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(gw.http_url("/dashboard?tab=mine"))
        .header("host", format!("localhost:{}", dir.http_port))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(
        resp.headers()["location"],
        format!("https://localhost:{}/dashboard?tab=mine", dir.https_port).as_str()
    );
    let post = client
        .post(gw.http_url("/api/v1/session"))
        .header("host", "localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 308, "non-GET requests keep their method");
    let foreign = client
        .get(gw.http_url("/"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        foreign.status(),
        404,
        "no open redirect to hosts that are not ours"
    );
}

#[tokio::test]
async fn health_endpoints_report_each_part_and_docker_down_does_not_stop_the_gateway() {
    let mut dir = GatewayDir::new();
    dir.set("FLOWCASE_DOCKER__HOST", "unix:///nonexistent/docker.sock");
    let gw = Gateway::start(&dir).await;
    let client = reqwest::Client::new();
    let healthz = client.get(gw.metrics_url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let ready = client.get(gw.metrics_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["database"]["ok"], true, "{body}");
    assert_eq!(body["checks"]["database"]["detail"], "sqlite", "{body}");
    assert_eq!(body["checks"]["certificates"]["ok"], true, "{body}");
    assert_eq!(
        body["checks"]["certificates"]["source"], "self-signed",
        "{body}"
    );
    assert_eq!(body["checks"]["docker"]["ok"], false, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    let metrics = client.get(gw.metrics_url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
}

#[tokio::test]
async fn readyz_reports_a_reachable_docker_engine() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let body: serde_json::Value = client
            .get(gw.metrics_url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["checks"]["docker"]["ok"] == true {
            assert_eq!(body["status"], "ready");
            assert!(
                body["checks"]["docker"]["detail"]
                    .as_str()
                    .unwrap()
                    .contains("Docker Engine")
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Docker never reported reachable: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_gateway_runs_on_postgresql() {
    let db = TestDatabase::create().await;
    let mut dir = GatewayDir::new();
    dir.set("FLOWCASE_DATABASE__URL", &db.url);
    let mut gw = Gateway::start(&dir).await;
    let (_, password) = read_credentials(&dir.data_dir());
    sqlx::any::install_default_drivers();
    assert_argon2id_matches(&stored_admin_hash(&db.url).await, &password);
    let body: serde_json::Value = reqwest::get(gw.metrics_url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["checks"]["database"]["detail"], "postgres", "{body}");
    let password_in_url = db
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('@')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        !gw.stdout().contains(&password_in_url) && !gw.stderr().contains(&password_in_url),
        "the database password is never printed"
    );
    gw.stop();
    db.drop_now().await;
}
