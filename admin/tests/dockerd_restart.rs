//! dockerd going away and coming back mid-run: operations fail cleanly and at once, the health
//! `/readyz` reads says down, and after the restart the watcher reconnects, reconciles what
//! happened meanwhile (the running instance was stopped with the daemon) and launches work.
//!
//! This restarts the one dockerd every docker test shares, so it is ignored by default and run
//! alone after the main suite (scripts/test):
//! `cargo test --locked -p flowcase-admin --test dockerd_restart -- --ignored --test-threads=1`.
//! A guard starts dockerd again if the test fails while it is down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flowcase_admin::AdminError;
use flowcase_admin::store::InstanceStatus;

const PID_FILE: &str = "/var/run/docker.pid";
/// Where scripts/test sends the daemon's log; the restarted daemon appends to it.
const LOG_FILE: &str = "/var/log/flowcase-test-dockerd.log";

/// A command as root: directly when we are root, else through `sudo -n`.
fn as_root(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        Command::new(program)
    } else {
        let mut cmd = Command::new("sudo");
        cmd.args(["-n", program]);
        cmd
    }
}

fn docker_answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ID}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn dockerd_pid() -> Option<String> {
    std::fs::read_to_string(PID_FILE)
        .ok()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty() && std::path::Path::new(&format!("/proc/{p}")).exists())
}

fn stop_dockerd() {
    let pid = dockerd_pid().expect("dockerd's pid file");
    assert!(
        as_root("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The daemon stops its containers first (up to their stop timeout), then exits.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "dockerd did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_dockerd() {
    if docker_answers() {
        return;
    }
    // A killed daemon leaves its pid file behind, and a new one refuses to start over it.
    let _ = as_root("rm").args(["-f", PID_FILE]).status();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(LOG_FILE)
        .unwrap();
    // Its own session: the daemon outlives this test process.
    as_root("setsid")
        .args(["-f", "dockerd"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !docker_answers() {
        assert!(
            Instant::now() < deadline,
            "dockerd did not come back; see {LOG_FILE}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whatever happens, the test leaves a running dockerd behind.
struct RestoreDockerd;

impl Drop for RestoreDockerd {
    fn drop(&mut self) {
        start_dockerd();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared dockerd: run alone after the main suite (see the file's docs)"]
async fn dockerd_restarted_mid_run_is_survived() {
    let h = Harness::with(Db::Sqlite, |o| {
        o.intervals.engine_ping = Duration::from_secs(1);
        o.intervals.engine_backoff_max = Duration::from_secs(1);
    })
    .await;
    let alice = h.user("alice").await;
    let droplet = h.http_droplet("survivor", |_| {}).await;
    let (before, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    let watcher = h.orch.spawn_event_watcher();
    let orch = Arc::clone(&h.orch);
    eventually("engine up", Duration::from_secs(10), || {
        let orch = Arc::clone(&orch);
        async move { orch.engine_health().up }
    })
    .await;

    let _restore = RestoreDockerd;
    stop_dockerd();
    let orch = Arc::clone(&h.orch);
    eventually("engine reported down", Duration::from_secs(10), || {
        let orch = Arc::clone(&orch);
        async move { !orch.engine_health().up }
    })
    .await;
    let health = h.orch.engine_health();
    eprintln!("while down: {health:?}");
    assert!(!health.message.is_empty());
    // Operations fail at once with an engine error, not a hang nor a panic.
    let started = Instant::now();
    match h.orch.launch(&alice, &droplet).await {
        Err(AdminError::Engine(reason)) => eprintln!("launch while down: {reason}"),
        other => panic!("expected an engine error, got {other:?}"),
    }
    assert!(matches!(
        h.orch.reconcile().await,
        Err(AdminError::Engine(_))
    ));
    assert!(matches!(
        h.orch.host_stats().await,
        Err(AdminError::Engine(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    start_dockerd();
    let orch = Arc::clone(&h.orch);
    eventually("engine back up", Duration::from_secs(30), || {
        let orch = Arc::clone(&orch);
        async move { orch.engine_health().up }
    })
    .await;
    // The reconnection reconciled: the daemon stopped the container on its way down.
    let store = h.store.clone();
    let id = before.id;
    eventually("instance reconciled", Duration::from_secs(20), move || {
        let store = store.clone();
        async move { store.get_instance(id).await.unwrap().unwrap().status == InstanceStatus::Stopped }
    })
    .await;
    let upstream = h.orch.ensure_running(before.id).await.unwrap();
    assert_eq!(http(upstream.addr, "GET", "/", "").await.0, 200);
    let (_, fresh) = h.orch.launch(&alice, &droplet).await.unwrap();
    assert_eq!(http(fresh.addr, "GET", "/", "").await.0, 200);
    watcher.abort();
}
