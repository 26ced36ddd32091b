//! Two gateway processes sharing one PostgreSQL database wake the same stopped instance at the
//! same moment: the container is started once, and both get the same upstream.
//!
//! The two processes are this test binary run twice more, each running only the ignored
//! `child_wakes_the_instance` test with its orders in an environment variable: its own `Store`
//! pool, its own Docker client, its own `Orchestrator`. Both wait for a start signal (a file)
//! so that their calls overlap; every wait is bounded and children that overrun are killed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flowcase_admin::Store;
use flowcase_admin::orchestrator::docker::DockerEngine;
use flowcase_admin::orchestrator::{Actor, Orchestrator, SystemClock};
use serde_json::json;

const ORDERS: &str = "FLOWCASE_START_ONCE_CHILD";
const CHILD_TEST: &str = "child_wakes_the_instance";

fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Not a test on its own: the body of each child process (does nothing without orders).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by two_processes_waking_one_instance_start_it_once"]
async fn child_wakes_the_instance() {
    let Ok(orders) = std::env::var(ORDERS) else {
        return;
    };
    let orders: serde_json::Value = serde_json::from_str(&orders).unwrap();
    let text = |key: &str| orders[key].as_str().unwrap().to_owned();
    let store = Store::connect(&text("url")).await.unwrap();
    let engine = DockerEngine::connect("unix:///var/run/docker.sock").unwrap();
    let orch = Orchestrator::new(
        store,
        Arc::new(engine),
        keyring(),
        Arc::new(SystemClock),
        options(&text("run")),
    );
    // Warm the database pool and the engine client so the race is about the wake alone.
    orch.prepare().await.unwrap();
    std::fs::write(text("ready"), b"").unwrap();
    assert!(
        wait_for_file(&PathBuf::from(text("go")), Duration::from_secs(30)),
        "no start signal"
    );
    let instance_id = orders["instance_id"].as_i64().unwrap();
    let outcome = match orch.ensure_running(instance_id).await {
        Ok(upstream) => format!("ok {upstream}"),
        Err(e) => format!("error {e}"),
    };
    std::fs::write(text("result"), outcome).unwrap();
}

fn spawn_child(orders: &serde_json::Value) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--ignored", "--test-threads", "1"])
        .env(ORDERS, orders.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Kills children still running when the test ends, pass or fail.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_waking_one_instance_start_it_once() {
    let h = Harness::new(Db::Postgres).await;
    let alice = h.user("alice").await;
    let droplet = h
        .http_droplet("shared", |d| {
            // Long enough a start for the second process to arrive while the first works.
            d.env.insert("STARTUP_DELAY_MS".into(), "300".into());
        })
        .await;
    let (instance, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    h.orch.stop(instance.id, &Actor::system()).await.unwrap();

    let dir = h.dir.path();
    let go = dir.join("go");
    let mut children = Children(Vec::new());
    let mut results = Vec::new();
    for n in 0..2 {
        let (ready, result) = (
            dir.join(format!("ready{n}")),
            dir.join(format!("result{n}")),
        );
        let orders = json!({
            "url": h.url, "run": h.run, "instance_id": instance.id,
            "ready": ready, "go": go, "result": result,
        });
        children.0.push(spawn_child(&orders));
        results.push((ready, result));
    }
    for (ready, _) in &results {
        assert!(
            wait_for_file(ready, Duration::from_secs(30)),
            "a child did not get ready"
        );
    }
    std::fs::write(&go, b"").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for child in &mut children.0 {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "a child failed: {status}");
                break;
            }
            assert!(Instant::now() < deadline, "a child did not finish in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let outcomes: Vec<String> = results
        .iter()
        .map(|(_, result)| std::fs::read_to_string(result).unwrap())
        .collect();
    assert!(
        outcomes.iter().all(|o| o.starts_with("ok ")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[0], outcomes[1], "one upstream for both");

    let actions = h.audit_actions(&instance.slug).await;
    let count = |what: &str| actions.iter().filter(|a| *a == what).count();
    assert_eq!(
        count("instance.starting"),
        2,
        "one start at launch, one wake: {actions:?}"
    );
    assert_eq!(count("instance.running"), 2, "{actions:?}");
    let upstream = outcomes[0].trim_start_matches("ok ").parse().unwrap();
    let row = h.store.get_instance(instance.id).await.unwrap().unwrap();
    assert_eq!(
        row.upstream,
        Some(outcomes[0].trim_start_matches("ok ").to_owned())
    );
    assert_eq!(http(upstream, "GET", "/", "").await.0, 200);
}
