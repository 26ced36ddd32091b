//! Orchestrator suite against the real dockerd (`/var/run/docker.sock`; scripts/test starts
//! it), with images the suite builds itself (`flowcase-test-images`: our HTTP server and a VNC
//! desktop made of Debian's Xtigervnc, both FROM scratch).
//!
//! Every test has its own run id: its own database (a SQLite file, or a fresh PostgreSQL
//! database from `FLOWCASE_TEST_POSTGRES_URL`), its own `flowcase.deployment` label, network
//! and profile volume names. A guard removes every container, volume and network of the run
//! when the test ends, pass or fail. Traffic stays on loopback; every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowcase_admin::orchestrator::docker::DockerEngine;
use flowcase_admin::orchestrator::{Actor, Clock, Options, Orchestrator, Upstream};
use flowcase_admin::secrets::{Key, Keyring};
use flowcase_admin::store::{
    Droplet, DropletType, InstanceStatus, NewDroplet, NewUser, TargetKind, User,
};
use flowcase_admin::{AdminError, Store};
use flowcase_config::UpstreamMode;
use serde_json::Value;
use sqlx::{Connection, Executor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PG_ENV: &str = "FLOWCASE_TEST_POSTGRES_URL";
const T0: i64 = 1_700_000_000_000;
const HTTPD_PORT: u16 = 8080;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A clock that only moves when told, so stored timestamps are exact.
struct TestClock(std::sync::atomic::AtomicI64);

impl Clock for TestClock {
    fn now_millis(&self) -> i64 {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Db {
    Sqlite,
    Postgres,
}

/// Removes the run's containers, profile volumes and network (docker CLI, so it works from
/// `Drop` while a test panics) and its PostgreSQL database.
struct Cleanup {
    run: String,
    pg: Option<(String, String)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=flowcase.deployment={}", self.run),
        ]);
        for id in ids.split_whitespace() {
            docker(&["rm", "-f", id]);
        }
        let volumes = docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={}", self.run),
        ]);
        for volume in volumes.split_whitespace() {
            docker(&["volume", "rm", "-f", volume]);
        }
        let mut networks = docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name={}", self.run),
        ]);
        networks.push_str(&docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=flowcase.deployment={}", self.run),
        ]));
        for network in networks.split_whitespace() {
            docker(&["network", "rm", network]);
        }
        if let Some((admin_url, name)) = self.pg.take() {
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                runtime.block_on(async {
                    let mut conn = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                    conn.execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await
                    .ok()?;
                    conn.close().await.ok()
                })
            })
            .join();
        }
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker_json(args: &[&str]) -> Value {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

struct Harness {
    orch: Arc<Orchestrator>,
    store: Store,
    run: String,
    tenant_id: i64,
    _dir: tempfile::TempDir,
    _cleanup: Cleanup,
}

fn options(run: &str) -> Options {
    Options {
        network: run.to_owned(),
        upstream_mode: UpstreamMode::PublishedLoopback,
        max_per_user: 5,
        max_total: 50,
        ready_timeout: Duration::from_secs(20),
        stop_grace: Duration::from_secs(2),
        remove_orphans: true,
        deployment: run.to_owned(),
    }
}

impl Harness {
    async fn new(db: Db) -> Self {
        Self::with(db, |_| {}).await
    }

    async fn with(db: Db, tweak: impl FnOnce(&mut Options)) -> Self {
        let run = format!("ft{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let dir = tempfile::tempdir().unwrap();
        let mut cleanup = Cleanup {
            run: run.clone(),
            pg: None,
        };
        let url = match db {
            Db::Sqlite => format!("sqlite://{}/flowcase.db", dir.path().display()),
            Db::Postgres => {
                let base = std::env::var(PG_ENV).unwrap_or_else(|_| {
                    panic!("{PG_ENV} is not set (run scripts/test, which sets it)")
                });
                let admin_url = with_database(&base, "postgres");
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {run}")))
                    .await
                    .unwrap();
                conn.close().await.ok();
                cleanup.pg = Some((admin_url, run.clone()));
                with_database(&base, &run)
            }
        };
        let store = Store::connect(&url).await.unwrap();
        let tenant_id = store.create_tenant("default", true, T0).await.unwrap().id;
        let keyring = Keyring::from_keys(vec![Key {
            id: "k1".into(),
            bytes: [7; 32],
        }])
        .unwrap();
        let engine = DockerEngine::connect("unix:///var/run/docker.sock").unwrap();
        let mut opts = options(&run);
        tweak(&mut opts);
        let orch = Orchestrator::new(
            store.clone(),
            Arc::new(engine),
            keyring,
            Arc::new(TestClock(T0.into())),
            opts,
        );
        Self {
            orch: Arc::new(orch),
            store,
            run,
            tenant_id,
            _dir: dir,
            _cleanup: cleanup,
        }
    }

    async fn user(&self, name: &str) -> User {
        self.store
            .create_user(
                &NewUser {
                    tenant_id: self.tenant_id,
                    username: name.to_owned(),
                    ..NewUser::default()
                },
                T0,
            )
            .await
            .unwrap()
    }

    /// A droplet of the run: our labels for cleanup, a profile template private to the run.
    async fn droplet(
        &self,
        name: &str,
        kind: DropletType,
        image: &str,
        tweak: impl FnOnce(&mut NewDroplet),
    ) -> Droplet {
        let mut new = NewDroplet::new(self.tenant_id, name, kind, TargetKind::Container);
        new.image = Some(image.to_owned());
        new.cpu_millicores = Some(250);
        new.memory_mb = Some(64);
        new.profile_path = Some(format!("{}-{{user_id}}-{{droplet_id}}", self.run));
        new.labels = BTreeMap::from([("purpose".into(), "flowcase-test".into())]);
        tweak(&mut new);
        self.store.create_droplet(&new, T0).await.unwrap()
    }

    async fn http_droplet(&self, name: &str, tweak: impl FnOnce(&mut NewDroplet)) -> Droplet {
        let image = images(flowcase_test_images::httpd_image).await;
        self.droplet(name, DropletType::Http, &image, |d| {
            d.ports = vec![HTTPD_PORT];
            d.health_path = Some("/health".into());
            d.profile_mount = Some("/profile".into());
            d.env = BTreeMap::from([
                ("BODY".into(), format!("hello from {name}")),
                ("PROFILE_DIR".into(), "/profile".into()),
            ]);
            tweak(d);
        })
        .await
    }

    async fn audit_actions(&self, slug: &str) -> Vec<String> {
        let mut entries = self.store.list_audit(1000, 0).await.unwrap();
        entries.reverse();
        entries
            .into_iter()
            .filter(|e| e.target_id.as_deref() == Some(slug))
            .map(|e| e.action)
            .collect()
    }
}

async fn images(build: fn() -> Result<String, String>) -> String {
    tokio::task::spawn_blocking(build)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("building a test image failed: {e}"))
}

fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}/{database}{query}", &base[..path_start])
}

/// One HTTP/1.1 exchange over loopback; (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("HTTP exchange timed out")
}

fn inspect(name: &str) -> Value {
    docker_json(&["inspect", "--type", "container", name])[0].clone()
}

fn container_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["inspect", "--type", "container", name])
        .output()
        .unwrap()
        .status
        .success()
}

fn volume_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_instance_launches_ready_reachable_and_hardened() {
    let h = Harness::new(Db::Sqlite).await;
    let alice = h.user("alice").await;
    let droplet = h
        .http_droplet("web", |d| d.cap_add = vec!["NET_BIND_SERVICE".into()])
        .await;

    let started = Instant::now();
    let (instance, upstream) = h.orch.launch(&alice, &droplet).await.unwrap();
    eprintln!("launch to ready: {:?}", started.elapsed());
    assert_eq!(instance.status, InstanceStatus::Running);
    assert_eq!(
        instance.upstream.as_deref(),
        Some(upstream.to_string().as_str())
    );
    assert!(upstream.addr.ip().is_loopback());
    assert_eq!(instance.slug.len(), 20);
    assert!(
        instance.credentials.is_none(),
        "http droplets get no password"
    );
    let (status, body) = http(upstream.addr, "GET", "/", "").await;
    assert_eq!((status, body.as_str()), (200, "hello from web"));

    // Limits and hardening, as the engine reports them.
    let name = format!("flowcase-{}", instance.slug);
    assert_eq!(instance.container_name.as_deref(), Some(name.as_str()));
    let c = inspect(&name);
    let hc = &c["HostConfig"];
    assert_eq!(hc["NanoCpus"], 250_000_000);
    assert_eq!(hc["Memory"], 64 * 1024 * 1024);
    assert_eq!(hc["MemorySwap"], 64 * 1024 * 1024);
    assert_eq!(hc["PidsLimit"], 512);
    assert_eq!(hc["Privileged"], false);
    assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(hc["CapAdd"], serde_json::json!(["NET_BIND_SERVICE"]));
    assert_eq!(hc["SecurityOpt"], serde_json::json!(["no-new-privileges"]));
    assert_eq!(hc["NetworkMode"], h.run.as_str());
    for (port, bindings) in hc["PortBindings"].as_object().unwrap() {
        for binding in bindings.as_array().unwrap() {
            assert_eq!(
                binding["HostIp"], "127.0.0.1",
                "{port} must bind loopback only"
            );
        }
    }
    for (_, bindings) in c["NetworkSettings"]["Ports"].as_object().unwrap() {
        for binding in bindings.as_array().unwrap() {
            assert_eq!(binding["HostIp"], "127.0.0.1");
        }
    }
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["flowcase.instance"], instance.slug.as_str());
    assert_eq!(labels["flowcase.user"], alice.id.to_string().as_str());
    assert_eq!(labels["flowcase.droplet"], droplet.id.to_string().as_str());
    assert_eq!(labels["purpose"], "flowcase-test");
    let network = docker_json(&["network", "inspect", &h.run]);
    assert_eq!(
        network[0]["Options"]["com.docker.network.bridge.enable_icc"],
        "false"
    );

    // Instances cannot reach each other, even on the same network.
    let bob = h.user("bob").await;
    let (other, _) = h.orch.launch(&bob, &droplet).await.unwrap();
    let other_ip = inspect(&format!("flowcase-{}", other.slug))["NetworkSettings"]["Networks"]
        [h.run.as_str()]["IPAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, answer) = http(
        upstream.addr,
        "GET",
        &format!("/connect/{other_ip}/{HTTPD_PORT}"),
        "",
    )
    .await;
    assert!(
        answer.starts_with("failed"),
        "instance reached its neighbour: {answer}"
    );

    assert_eq!(
        h.audit_actions(&instance.slug).await,
        [
            "instance.requested",
            "instance.creating",
            "instance.starting",
            "instance.running"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_keeps_the_profile_and_destroy_keeps_the_volume() {
    let h = Harness::new(Db::Postgres).await;
    let alice = h.user("alice").await;
    let droplet = h.http_droplet("notes", |_| {}).await;
    let (instance, upstream) = h.orch.launch(&alice, &droplet).await.unwrap();
    let (status, _) = http(upstream.addr, "PUT", "/profile/note", "remember me").await;
    assert_eq!(status, 201);

    let actor = Actor::user(&alice);
    h.orch.stop(instance.id, &actor).await.unwrap();
    let stopped = h.store.get_instance(instance.id).await.unwrap().unwrap();
    assert_eq!(stopped.status, InstanceStatus::Stopped);
    assert!(stopped.stopped_at.is_some());
    let name = format!("flowcase-{}", instance.slug);
    assert_eq!(inspect(&name)["State"]["Running"], false);
    // Stopping twice is harmless.
    h.orch.stop(instance.id, &actor).await.unwrap();

    let started = Instant::now();
    let upstream = h.orch.ensure_running(instance.id).await.unwrap();
    eprintln!("wake to ready: {:?}", started.elapsed());
    let (status, body) = http(upstream.addr, "GET", "/profile/note", "").await;
    assert_eq!((status, body.as_str()), (200, "remember me"));

    h.orch.destroy(instance.id, &actor).await.unwrap();
    let gone = h.store.get_instance(instance.id).await.unwrap().unwrap();
    assert_eq!(gone.status, InstanceStatus::Gone);
    assert!(!container_exists(&name));
    let volume = format!("{}-{}-{}", h.run, alice.id, droplet.id);
    assert!(
        volume_exists(&volume),
        "the profile volume must survive destroy"
    );
    // Gone is final: no wake, and destroying again changes nothing.
    assert!(matches!(
        h.orch.ensure_running(instance.id).await,
        Err(AdminError::Conflict(_))
    ));
    h.orch.destroy(instance.id, &actor).await.unwrap();

    // A new instance of the same droplet gets the same profile back.
    let (_, upstream) = h.orch.launch(&alice, &droplet).await.unwrap();
    let (_, body) = http(upstream.addr, "GET", "/profile/note", "").await;
    assert_eq!(body, "remember me");
    assert_eq!(
        h.audit_actions(&instance.slug).await[4..],
        [
            "instance.stopping",
            "instance.stopped",
            "instance.starting",
            "instance.running",
            "instance.destroying",
            "instance.gone"
        ]
    );
}

async fn concurrent_wakes_start_once(db: Db) {
    let h = Harness::new(db).await;
    let alice = h.user("alice").await;
    let droplet = h
        .http_droplet("wake", |d| {
            d.env.insert("STARTUP_DELAY_MS".into(), "300".into());
        })
        .await;
    let (instance, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    h.orch.stop(instance.id, &Actor::system()).await.unwrap();

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let orch = Arc::clone(&h.orch);
        tasks.push(tokio::spawn(async move {
            orch.ensure_running(instance.id).await
        }));
    }
    let mut upstreams: Vec<Upstream> = Vec::new();
    for task in tasks {
        upstreams.push(task.await.unwrap().unwrap());
    }
    assert!(upstreams.windows(2).all(|w| w[0] == w[1]));
    let starts = h
        .audit_actions(&instance.slug)
        .await
        .iter()
        .filter(|a| *a == "instance.starting")
        .count();
    assert_eq!(starts, 2, "one start at launch, one wake");
    let (status, _) = http(upstreams[0].addr, "GET", "/", "").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_wakes_start_once_sqlite() {
    concurrent_wakes_start_once(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_wakes_start_once_postgres() {
    concurrent_wakes_start_once(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_is_a_clear_error_and_creates_nothing() {
    let h = Harness::new(Db::Sqlite).await;
    let alice = h.user("alice").await;
    let image = format!("flowcase-test-missing-{}:nope", h.run);
    let droplet = h.droplet("ghost", DropletType::Http, &image, |_| {}).await;
    match h.orch.launch(&alice, &droplet).await {
        Err(AdminError::ImageMissing(named)) => assert_eq!(named, image),
        other => panic!("expected ImageMissing, got {other:?}"),
    }
    assert!(
        h.store
            .list_instances_for_user(alice.id)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_capacity_refuse_launches() {
    let h = Harness::with(Db::Postgres, |o| {
        o.max_per_user = 1;
        o.max_total = 2;
    })
    .await;
    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    let carol = h.user("carol").await;
    let droplet = h.http_droplet("quota", |_| {}).await;
    h.orch.launch(&alice, &droplet).await.unwrap();
    match h.orch.launch(&alice, &droplet).await {
        Err(AdminError::QuotaExceeded(reason)) => assert!(reason.contains('1'), "{reason}"),
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    h.orch.launch(&bob, &droplet).await.unwrap();
    assert!(matches!(
        h.orch.launch(&carol, &droplet).await,
        Err(AdminError::QuotaExceeded(_))
    ));

    // Capacity: more CPU or memory than the engine has, whatever the quotas say.
    let roomy = Harness::new(Db::Sqlite).await;
    let dave = roomy.user("dave").await;
    let cpus = docker_json(&["info", "--format", "{{json .NCPU}}"])
        .as_i64()
        .unwrap();
    let big_cpu = roomy
        .http_droplet("big-cpu", |d| d.cpu_millicores = Some(cpus * 1000 + 1))
        .await;
    match roomy.orch.launch(&dave, &big_cpu).await {
        Err(AdminError::CapacityExhausted(reason)) => {
            assert!(reason.starts_with("cpu"), "{reason}")
        }
        other => panic!("expected CapacityExhausted, got {other:?}"),
    }
    let big_memory = roomy
        .http_droplet("big-mem", |d| d.memory_mb = Some(64 * 1024 * 1024))
        .await;
    match roomy.orch.launch(&dave, &big_memory).await {
        Err(AdminError::CapacityExhausted(reason)) => {
            assert!(reason.starts_with("memory"), "{reason}")
        }
        other => panic!("expected CapacityExhausted, got {other:?}"),
    }
    assert!(
        roomy
            .store
            .list_instances_for_user(dave.id)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vnc_desktop_becomes_ready_with_its_own_password() {
    let h = Harness::new(Db::Sqlite).await;
    let alice = h.user("alice").await;
    let image = images(flowcase_test_images::vnc_image).await;
    let droplet = h
        .droplet("desktop", DropletType::Vnc, &image, |d| {
            d.memory_mb = Some(256);
            d.read_only_root = true;
            d.profile_mount = Some("/home/user".into());
        })
        .await;
    let started = Instant::now();
    let (instance, upstream) = h.orch.launch(&alice, &droplet).await.unwrap();
    eprintln!("VNC launch to ready: {:?}", started.elapsed());
    assert_eq!(instance.status, InstanceStatus::Running);

    // The password is sealed in the row, given to the container, and works; nothing else does.
    assert!(!instance.credentials.as_deref().unwrap().contains(' '));
    let password = h.orch.credentials(&instance).unwrap().unwrap().password;
    assert_eq!(password.len(), 8);
    let c = inspect(&format!("flowcase-{}", instance.slug));
    assert!(
        c["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == &Value::String(format!("VNC_PASSWORD={password}")))
    );
    assert_eq!(c["HostConfig"]["ReadonlyRootfs"], true);
    assert_eq!(
        vnc_auth(upstream.addr, &password).await,
        0,
        "right password"
    );
    assert_ne!(
        vnc_auth(upstream.addr, "wrong!!!").await,
        0,
        "wrong password"
    );
}

/// RFB 3.8 handshake with VncAuth; returns the SecurityResult (0 = accepted).
async fn vnc_auth(addr: SocketAddr, password: &str) -> u32 {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut banner = [0u8; 12];
        s.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"RFB 003.008\n");
        s.write_all(b"RFB 003.008\n").await.unwrap();
        let count = s.read_u8().await.unwrap();
        let mut types = vec![0u8; usize::from(count)];
        s.read_exact(&mut types).await.unwrap();
        assert!(types.contains(&2), "VncAuth not offered: {types:?}");
        s.write_u8(2).await.unwrap();
        let mut challenge = [0u8; 16];
        s.read_exact(&mut challenge).await.unwrap();
        let response = flowcase_test_images::des::vnc_auth_response(password.as_bytes(), challenge);
        s.write_all(&response).await.unwrap();
        s.read_u32().await.unwrap()
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("VNC handshake timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unready_and_crashing_containers_end_in_error_without_leftovers() {
    let h = Harness::with(Db::Sqlite, |o| o.ready_timeout = Duration::from_secs(2)).await;
    let alice = h.user("alice").await;

    let sick = h
        .http_droplet("sick", |d| {
            d.env.insert("HEALTH_STATUS".into(), "503".into());
        })
        .await;
    let started = Instant::now();
    match h.orch.launch(&alice, &sick).await {
        Err(AdminError::NotReady(reason)) => assert!(reason.contains("503"), "{reason}"),
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    let crashing = h
        .http_droplet("crash", |d| {
            d.env.insert("EXIT_CODE".into(), "3".into());
        })
        .await;
    let started = Instant::now();
    match h.orch.launch(&alice, &crashing).await {
        Err(AdminError::NotReady(reason)) => assert!(reason.contains("code 3"), "{reason}"),
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a dead container fails fast"
    );

    let rows = h.store.list_instances_for_user(alice.id).await.unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row.status, InstanceStatus::Error);
        assert!(row.error_reason.is_some());
        assert!(!container_exists(&format!("flowcase-{}", row.slug)));
    }
    // Failed launches do not count against the quota.
    let healthy = h.http_droplet("ok", |_| {}).await;
    h.orch.launch(&alice, &healthy).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_templates_without_the_user_id_are_refused() {
    let h = Harness::new(Db::Sqlite).await;
    let alice = h.user("alice").await;
    let droplet = h
        .http_droplet("shared", |d| {
            d.profile_path = Some("/profiles/{droplet_id}".into())
        })
        .await;
    match h.orch.launch(&alice, &droplet).await {
        Err(AdminError::InvalidInput { field, reason }) => {
            assert_eq!(field, "profile_path");
            assert!(reason.contains("{user_id}"), "{reason}");
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_follows_docker_behind_our_back() {
    let h = Harness::new(Db::Postgres).await;
    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    let droplet = h.http_droplet("recon", |_| {}).await;
    let (removed, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    let (stopped, _) = h.orch.launch(&bob, &droplet).await.unwrap();
    docker(&["rm", "-f", &format!("flowcase-{}", removed.slug)]);
    docker(&["stop", "-t", "0", &format!("flowcase-{}", stopped.slug)]);
    let httpd = images(flowcase_test_images::httpd_image).await;
    let orphan = format!("{}-orphan", h.run);
    let created = Command::new("docker")
        .args([
            "create",
            "--name",
            &orphan,
            "--label",
            "flowcase.instance=nobody",
        ])
        .args(["--label", &format!("flowcase.deployment={}", h.run), &httpd])
        .output()
        .unwrap();
    assert!(created.status.success());
    // A container of another deployment is none of our business.
    let foreign = format!("{}-foreign", h.run);
    Command::new("docker")
        .args([
            "create",
            "--name",
            &foreign,
            "--label",
            "flowcase.instance=x",
        ])
        .args([
            "--label",
            &format!("flowcase.deployment={}-other", h.run),
            &httpd,
        ])
        .output()
        .unwrap();

    let report = h.orch.reconcile().await.unwrap();
    assert_eq!(report.gone, vec![removed.slug.clone()]);
    assert_eq!(report.stopped, vec![stopped.slug.clone()]);
    assert_eq!(report.orphans_removed, vec![orphan.clone()]);
    assert!(!container_exists(&orphan));
    assert!(container_exists(&foreign));
    docker(&["rm", "-f", &foreign]);
    let row = h.store.get_instance(removed.id).await.unwrap().unwrap();
    assert_eq!(row.status, InstanceStatus::Gone);
    assert_eq!(
        row.error_reason.as_deref(),
        Some("the container disappeared")
    );

    // The stopped one wakes up again; a second pass finds nothing to do.
    h.orch.ensure_running(stopped.id).await.unwrap();
    assert_eq!(
        h.orch.reconcile().await.unwrap(),
        flowcase_admin::orchestrator::ReconcileReport::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_network_mode_reaches_instances_by_address() {
    let h = Harness::with(Db::Sqlite, |o| {
        o.upstream_mode = UpstreamMode::ContainerNetwork
    })
    .await;
    let alice = h.user("alice").await;
    let droplet = h.http_droplet("private", |_| {}).await;
    let (instance, upstream) = h.orch.launch(&alice, &droplet).await.unwrap();
    assert!(!upstream.addr.ip().is_loopback());
    assert_eq!(upstream.addr.port(), HTTPD_PORT);
    let name = format!("flowcase-{}", instance.slug);
    let c = inspect(&name);
    assert!(
        c["HostConfig"]["PortBindings"]
            .as_object()
            .is_none_or(|p| p.is_empty())
    );
    // Its own network, named after it, with inter-container traffic off.
    let network = docker_json(&["network", "inspect", &name]);
    assert_eq!(
        network[0]["Options"]["com.docker.network.bridge.enable_icc"],
        "false"
    );
    let (status, body) = http(upstream.addr, "GET", "/", "").await;
    assert_eq!((status, body.as_str()), (200, "hello from private"));
    h.orch.destroy(instance.id, &Actor::system()).await.unwrap();
    assert!(!container_exists(&name));
    let gone = Command::new("docker")
        .args(["network", "inspect", &name])
        .output()
        .unwrap();
    assert!(
        !gone.status.success(),
        "the instance network is removed with it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_launches_never_exceed_the_quota() {
    let h = Harness::with(Db::Postgres, |o| o.max_per_user = 3).await;
    let alice = h.user("alice").await;
    let droplet = h.http_droplet("race", |_| {}).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (orch, alice, droplet) = (Arc::clone(&h.orch), alice.clone(), droplet.clone());
        tasks.push(tokio::spawn(
            async move { orch.launch(&alice, &droplet).await },
        ));
    }
    let (mut launched, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => launched += 1,
            Err(AdminError::QuotaExceeded(_)) => refused += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!((launched, refused), (3, 5));
}
