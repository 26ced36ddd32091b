//! Issue 9, scale-out: two gateway processes on one PostgreSQL behind any TCP load balancer act
//! as one installation. A user logged in on one is logged in on the other (the same session
//! cookie works on both), an instance started through one is reachable through the other, and
//! neither starts what the other already started: a wake asked of both at once starts the
//! container once, and two pool fillers keep a warm pool at its size, not twice it.
//!
//! What the two share, as docs/operations.md says an operator must: the database, the Docker
//! deployment label, and from the data directory the key file (`secret.key`: sessions' tunnel
//! tokens and instance-host codes are sealed with it), the assertion key (`assertion-key.p8`) and
//! the TLS certificate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use flowcase_admin::orchestrator::{Actor, Options};
use flowcase_admin::store::{InstanceStatus, Store};
use flowcase_config::UpstreamMode;
use flowcase_e2e::instances::{HTTPD_PORT, add_user, app_cookie_across, httpd_droplet, login};
use flowcase_e2e::orchestrator::{docker_orchestrator, orchestrator_options};
use flowcase_e2e::postgres::TestDatabase;
use flowcase_e2e::{Gateway, GatewayDir};
use serde_json::Value;

const PASSWORD: &str = "a long enough passphrase";

/// Copies what two gateways must share from `from`'s data directory into `to`'s.
fn share_identity(from: &GatewayDir, to: &GatewayDir) {
    let (src, dst) = (from.data_dir(), to.data_dir());
    std::fs::create_dir_all(dst.join("tls")).unwrap();
    for file in [
        "secret.key",
        "assertion-key.p8",
        "tls/self-signed.crt",
        "tls/self-signed.key",
        "tls/self-signed.meta",
    ] {
        std::fs::copy(src.join(file), dst.join(file))
            .unwrap_or_else(|e| panic!("copying {file}: {e}"));
    }
}

/// Ids of the containers of `deployment` (all states) whose name contains `part`.
fn containers(deployment: &str, part: &str) -> BTreeSet<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label=flowcase.deployment={deployment}"),
            "--format",
            "{{.ID}} {{.Names}} {{.Labels}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(part))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// How many times the engine started `container` between `since` and `until` (unix seconds).
fn starts(container: &str, since: u64, until: u64) -> usize {
    let out = Command::new("docker")
        .args([
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
            "--filter",
            &format!("container={container}"),
            "--filter",
            "event=start",
            "--format",
            "{{.Action}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim() == "start")
        .count()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn two_gateways_on_one_postgresql_act_as_one() {
    let pg = TestDatabase::create().await;
    let mut a_dir = GatewayDir::new();
    a_dir.set("FLOWCASE_DATABASE__URL", &pg.url);
    let deployment = a_dir.deployment().to_owned();
    let gw_a = Gateway::start(&a_dir).await;
    let mut b_dir = GatewayDir::new();
    b_dir
        .set("FLOWCASE_DATABASE__URL", &pg.url)
        .set("FLOWCASE_DOCKER__DEPLOYMENT", &deployment);
    share_identity(&a_dir, &b_dir);
    let gw_b = Gateway::start(&b_dir).await;
    assert!(
        !b_dir.data_dir().join("IDENTIFIANTS.txt").exists(),
        "the second gateway found the administrator the first one made"
    );

    add_user(&a_dir, "alice", PASSWORD);
    // --- one session, both gateways ------------------------------------------------------------
    // One browser: the same cookie jar reaches both (cookies ignore ports), as behind a load
    // balancer that sends each connection to either gateway.
    let browser = gw_a.client(&a_dir.data_dir(), &["localhost"]);
    let csrf = login(&gw_a, &browser, "alice", PASSWORD).await;
    let on_b = browser
        .get(gw_b.url("localhost", "/api/v1/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_b.status(), 200, "the session made on A is known on B");
    let body: Value = on_b.json().await.unwrap();
    assert_eq!(body["user"]["username"], "alice", "{body}");

    // --- an instance, stopped, made by an orchestrator of the test's own over the shared
    // database and deployment (there is no launch API yet; the gateways wake it) ---------------
    let store = Store::connect(&pg.url).await.unwrap();
    let orchestrator = docker_orchestrator(
        &a_dir,
        &store,
        Options {
            network: flowcase_e2e::E2E_NETWORK.into(),
            upstream_mode: UpstreamMode::PublishedLoopback,
            ready_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(1),
            remove_orphans: false,
            ..orchestrator_options(&a_dir)
        },
    );
    orchestrator.prepare().await.unwrap();
    let tenant = store.default_tenant().await.unwrap().unwrap();
    let alice = store.find_user_by_login("alice").await.unwrap().unwrap();
    let mut droplet = httpd_droplet(tenant.id, "Notes").await;
    let image = droplet.image.clone().unwrap();
    droplet.env = [("BODY".to_owned(), "hello from notes".to_owned())].into();
    let droplet = store.create_droplet(&droplet, 0).await.unwrap();
    let (instance, _) = orchestrator.launch(&alice, &droplet).await.unwrap();
    let container = instance.container_id.clone().unwrap();
    orchestrator
        .stop(instance.id, &Actor::system())
        .await
        .unwrap();
    let host = format!("{}.apps.localhost", instance.slug);

    // --- started through A, reachable through B ------------------------------------------------
    let app_browser = gw_a.client(&a_dir.data_dir(), &["localhost", &host]);
    login(&gw_a, &app_browser, "alice", PASSWORD).await;
    // The instance-host code is issued by A and redeemed on B (sealed with the shared key).
    let cookie_on_b = app_cookie_across(&gw_a, &gw_b, &app_browser, &host).await;
    let script = |gw: &Gateway| {
        app_browser
            .get(gw.url(&host, "/"))
            .header("cookie", cookie_on_b.clone())
            .header("accept", "*/*")
            .header("user-agent", "curl/8")
            .send()
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let since = unix_now();
    let resp = script(&gw_a).await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(
        status,
        200,
        "A woke the instance: {text}\n{}",
        gw_a.stderr()
    );
    assert_eq!(text.trim(), "hello from notes");
    let resp = script(&gw_b).await.unwrap();
    assert_eq!(resp.status(), 200, "B reaches what A started");
    assert_eq!(resp.text().await.unwrap().trim(), "hello from notes");
    let until = unix_now() + 1;
    assert_eq!(
        starts(&container, since, until),
        1,
        "B used the running instance, it did not start it again"
    );

    // --- a wake asked of both at once starts it once ------------------------------------------
    orchestrator
        .stop(instance.id, &Actor::system())
        .await
        .unwrap();
    // Both front doors must see it stopped before the race (their snapshots refresh every 500 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let since = unix_now();
    let mut wakes = Vec::new();
    for i in 0..6 {
        wakes.push(script(if i % 2 == 0 { &gw_a } else { &gw_b }));
    }
    for resp in futures_util::future::join_all(wakes).await {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap().trim(), "hello from notes");
    }
    // Docker's event timestamps have second resolution: look one second past now.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let until = unix_now() + 1;
    assert_eq!(
        starts(&container, since, until),
        1,
        "six concurrent wakes through two gateways start the container once"
    );
    assert_eq!(
        containers(&deployment, &instance.slug).len(),
        1,
        "one container for the instance"
    );
    let row = store.get_instance(instance.id).await.unwrap().unwrap();
    assert_eq!(row.status, InstanceStatus::Running);
    let audit = store_audit_starts(&store, &instance.slug).await;
    assert_eq!(
        audit, 3,
        "the launch and two wakes moved it to starting, each once"
    );

    // --- two pool fillers, one pool -------------------------------------------------------------
    let out = a_dir.cli(&[
        "droplet",
        "add",
        "--name",
        "Pooled",
        "--type",
        "http",
        "--image",
        &image,
        "--port",
        &HTTPD_PORT.to_string(),
        "--memory",
        "64",
        "--cores",
        "0.1",
        "--pool-size",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pooled = || containers(&deployment, "flowcase.pool=");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pooled().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the pool was never filled\nA:\n{}\nB:\n{}",
            gw_a.stderr(),
            gw_b.stderr()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Both fillers pass at least twice more (every 10 s) with the pool full.
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(
        pooled().len(),
        2,
        "two gateways keep a pool of 2 at 2 containers"
    );
    assert_eq!(store.list_pool_containers().await.unwrap().len(), 2);

    // A logout on B ends the session on A too.
    let out = browser
        .delete(gw_b.url("localhost", "/api/v1/session"))
        .header("origin", gw_b.origin())
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert!(out.status().is_success(), "{}", out.status());
    let on_a = browser
        .get(gw_a.url("localhost", "/api/v1/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_a.status(), 401, "signed out on B is signed out on A");

    orchestrator
        .destroy(instance.id, &Actor::system())
        .await
        .unwrap();
    drop((gw_a, gw_b));
    store.close().await;
    pg.drop_now().await;
}

/// How many times the audit log recorded `slug` moving to `starting`.
async fn store_audit_starts(store: &Store, slug: &str) -> usize {
    store
        .list_audit(10_000, 0)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.action == "instance.starting" && e.target_id.as_deref() == Some(slug))
        .count()
}
