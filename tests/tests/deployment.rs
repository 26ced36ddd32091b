//! Issue 9 end to end: moving an installation from SQLite to PostgreSQL with `flowcase
//! copy-database` loses nothing (accounts, sessions, droplets, instances) and leaves a database
//! that takes new rows; a non-empty target is refused untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_e2e::instances::{add_user, echo_instance, login};
use flowcase_e2e::postgres::TestDatabase;
use flowcase_e2e::{Gateway, GatewayDir, read_credentials};
use serde_json::Value;

const PASSWORD: &str = "a long enough passphrase";

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn copy_database_moves_everything_from_sqlite_to_postgresql() {
    let pg = TestDatabase::create().await;
    let mut dir = GatewayDir::new();
    let mut gw = Gateway::start(&dir).await;
    add_user(&dir, "alice", PASSWORD);
    let out = dir.cli(&[
        "droplet", "add", "--name", "Notes", "--type", "http", "--image", "notes:1", "--port",
        "8080",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let echo = echo_instance(&dir, "alice", "moved1").await;
    let client = gw.client(&dir.data_dir(), &["localhost", &echo.host]);
    login(&gw, &client, "alice", PASSWORD).await;
    assert!(gw.stop().success());
    // The installation's id labels its users' profile volumes: it must move along.
    let sqlite = flowcase_admin::Store::connect(&format!(
        "sqlite://{}",
        dir.data_dir().join("flowcase.db").display()
    ))
    .await
    .unwrap();
    let installation = sqlite.installation_id().await.unwrap();
    sqlite.close().await;

    dir.set("FLOWCASE_COPY_TO", &pg.url);
    let out = dir.cli(&["copy-database"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let report = stdout(&out);
    assert!(report.contains("users"), "{report}");
    assert!(report.contains("copied"), "{report}");
    assert!(
        !report.contains(pg.url.as_str()) && !stderr(&out).contains(pg.url.as_str()),
        "the target URL holds a password and must not be printed"
    );

    // A second copy into the now filled database is refused and changes nothing.
    let again = dir.cli(&["copy-database"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));

    dir.set("FLOWCASE_DATABASE__URL", &pg.url);
    let gw = Gateway::start(&dir).await;
    // The session opened on SQLite still works: the browser stays signed in after the move.
    let me = client
        .get(gw.url("localhost", "/api/v1/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "{}", me.text().await.unwrap());
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["user"]["username"], "alice", "{me}");
    // The administrator's password from IDENTIFIANTS.txt still signs in.
    let (admin, admin_password) = read_credentials(&dir.data_dir());
    let admin_client = gw.client(&dir.data_dir(), &["localhost"]);
    login(&gw, &admin_client, &admin, &admin_password).await;
    // Droplets and instances came along.
    let list = dir.cli(&["droplet", "list"]);
    assert!(stdout(&list).contains("Notes"), "{}", stdout(&list));
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&pg.url)
        .await
        .unwrap();
    let slugs: Vec<(String,)> = sqlx::query_as("SELECT slug FROM instances")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(
        slugs.iter().any(|(s,)| s == "moved1"),
        "the instance row must be copied: {slugs:?}"
    );
    let moved: (String,) = sqlx::query_as("SELECT id FROM installation")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(moved.0, installation, "the installation id moved along");
    drop(conn);
    drop(echo);
    // New rows get fresh ids: the identity sequences were moved past the copied ones.
    add_user(&dir, "bob", PASSWORD);
    let out = dir.cli(&[
        "droplet", "add", "--name", "Later", "--type", "http", "--image", "later:1", "--port",
        "8080",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(gw);
    pg.drop_now().await;
}

#[tokio::test]
async fn copy_database_refuses_a_target_that_is_not_postgresql() {
    let mut dir = GatewayDir::new();
    dir.set("FLOWCASE_COPY_TO", "sqlite:///tmp/elsewhere.db");
    let out = dir.cli(&["copy-database"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("postgres://"), "{}", stderr(&out));
}
