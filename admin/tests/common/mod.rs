//! The harness the docker suites share: a run id per test (its own database, deployment label,
//! network and volume names), a guard that removes everything of the run when the test ends
//! (pass or fail), a clock tests move by hand, and small loopback clients. Every wait is
//! bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// The swarm helpers of the end-to-end kit (plain `std`), shared rather than copied.
#[path = "../../../tests/src/swarm.rs"]
mod swarm_kit;
pub use swarm_kit::{ensure_swarm, remove_service};

use flowcase_admin::Store;
use flowcase_admin::orchestrator::docker::DockerEngine;
use flowcase_admin::orchestrator::swarm::SwarmEngine;
use flowcase_admin::orchestrator::{Clock, Engine, Options, Orchestrator};
use flowcase_admin::secrets::{Key, Keyring};
use flowcase_admin::store::{Droplet, DropletType, NewDroplet, NewUser, TargetKind, User};
use flowcase_config::{SwarmImageReference, UpstreamMode};
use serde_json::Value;
use sqlx::{Connection, Executor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const PG_ENV: &str = "FLOWCASE_TEST_POSTGRES_URL";
pub const T0: i64 = 1_700_000_000_000;
pub const HTTPD_PORT: u16 = 8080;
pub const SOCKET: &str = "unix:///var/run/docker.sock";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A clock that only moves when told (and by a millisecond per reading, so successive stored
/// timestamps differ), so stored timestamps and idle decisions are exact.
pub struct TestClock(AtomicI64);

impl TestClock {
    pub fn new(start: i64) -> Self {
        Self(AtomicI64::new(start))
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        self.0
            .fetch_add(i64::try_from(by.as_millis()).unwrap(), Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_millis(&self) -> i64 {
        self.0.fetch_add(1, Ordering::SeqCst)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Removes the run's containers, profile volumes and network (docker CLI, so it works from
/// `Drop` while a test panics) and its PostgreSQL database.
pub struct Cleanup {
    pub run: String,
    pub pg: Option<(String, String)>,
    /// Containers and services a test made outside the run's deployment (see
    /// [`Harness::create_labelled`]): removed here too, so a failing test leaks none of them.
    pub labelled: Mutex<Vec<String>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let labelled = std::mem::take(
            self.labelled
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        // Swarm services first, or they would make new task containers. Listed again until none
        // is left: a pool filler of the test may still be making one while these are removed
        // (its runtime ends only after this), and a service made after the listing would stay.
        for _ in 0..5 {
            let mut services = docker(&[
                "service",
                "ls",
                "-q",
                "--filter",
                &format!("label=flowcase.deployment={}", self.run),
            ]);
            for name in &labelled {
                services.push_str(&docker(&[
                    "service",
                    "ls",
                    "-q",
                    "--filter",
                    &format!("name={name}"),
                ]));
                services.push('\n');
            }
            if services.trim().is_empty() {
                break;
            }
            for service in services.split_whitespace() {
                remove_service(service);
            }
        }
        for name in &labelled {
            docker(&["rm", "-f", name]);
        }
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
            // An overlay network lingers in use for a moment after its service's task is gone.
            for _ in 0..25 {
                let removed = Command::new("docker")
                    .args(["network", "rm", network])
                    .output()
                    .is_ok_and(|o| o.status.success());
                let gone = !Command::new("docker")
                    .args(["network", "inspect", network])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if removed || gone {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
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

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn docker_json(args: &[&str]) -> Value {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What runs the instances of a test: the suite runs once per backend.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    /// Containers on the local dockerd.
    Engine,
    /// Services on the local dockerd as a single-node swarm (made one if it is not).
    Swarm,
}

/// Runs each named `async fn(Backend)` once per backend, as `engine::<name>` and
/// `swarm::<name>`.
#[allow(unused_macros)]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Engine).await;
                }
            )*
        }
        mod swarm {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Swarm).await;
                }
            )*
        }
    };
}

pub struct Harness {
    pub backend: Backend,
    pub orch: Arc<Orchestrator>,
    pub store: Store,
    pub run: String,
    pub tenant_id: i64,
    pub clock: Arc<TestClock>,
    pub url: String,
    pub dir: tempfile::TempDir,
    /// Dropped last of the test's values, pass or panic.
    pub cleanup: Cleanup,
}

pub fn options(run: &str) -> Options {
    Options {
        network: run.to_owned(),
        upstream_mode: UpstreamMode::PublishedLoopback,
        max_per_user: 5,
        max_total: 50,
        ready_timeout: Duration::from_secs(20),
        stop_grace: Duration::from_secs(2),
        remove_orphans: true,
        deployment: run.to_owned(),
        ..Options::from_config(&flowcase_config::Config::default())
    }
}

/// The key every suite seals credentials with (two processes of one test must agree).
pub fn keyring() -> Keyring {
    Keyring::from_keys(vec![Key {
        id: "k1".into(),
        bytes: [7; 32],
    }])
    .unwrap()
}

impl Harness {
    pub async fn new(db: Db) -> Self {
        Self::with(db, |_| {}).await
    }

    pub async fn with(db: Db, tweak: impl FnOnce(&mut Options)) -> Self {
        Self::on(Backend::Engine, db, tweak).await
    }

    /// A harness on `backend`; on a swarm the gateway dials instances on their own networks
    /// (mode `container-network`, the only one a swarm allows).
    pub async fn on(backend: Backend, db: Db, tweak: impl FnOnce(&mut Options)) -> Self {
        let run = format!("ft{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let dir = tempfile::tempdir().unwrap();
        let mut cleanup = Cleanup {
            run: run.clone(),
            pg: None,
            labelled: Mutex::new(Vec::new()),
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
        let keyring = keyring();
        let clock = Arc::new(TestClock::new(T0));
        let mut opts = options(&run);
        let engine: Arc<dyn Engine> = match backend {
            Backend::Engine => Arc::new(DockerEngine::connect(SOCKET).unwrap()),
            Backend::Swarm => {
                ensure_swarm();
                opts.upstream_mode = UpstreamMode::ContainerNetwork;
                Arc::new(SwarmEngine::connect(SOCKET, SwarmImageReference::LocalId).unwrap())
            }
        };
        tweak(&mut opts);
        let orch = Orchestrator::new(
            store.clone(),
            engine,
            keyring,
            Arc::clone(&clock) as Arc<dyn Clock>,
            opts,
        );
        Self {
            backend,
            orch: Arc::new(orch),
            store,
            run,
            tenant_id,
            clock,
            url,
            dir,
            cleanup,
        }
    }

    pub async fn user(&self, name: &str) -> User {
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
    pub async fn droplet(
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

    pub async fn http_droplet(&self, name: &str, tweak: impl FnOnce(&mut NewDroplet)) -> Droplet {
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

    /// `docker inspect` of the instance's container: on a swarm, its service's newest task
    /// container (a running one if there is one).
    pub fn container(&self, slug: &str) -> Value {
        let name = format!("flowcase-{slug}");
        match self.backend {
            Backend::Engine => inspect(&name),
            Backend::Swarm => {
                let filter = format!("label=com.docker.swarm.service.name={name}");
                let running = docker(&["ps", "-q", "--filter", &filter]);
                let any = docker(&["ps", "-aq", "--filter", &filter]);
                let id = running
                    .split_whitespace()
                    .next()
                    .or_else(|| any.split_whitespace().next())
                    .unwrap_or_else(|| panic!("service {name} has no task container"))
                    .to_owned();
                inspect(&id)
            }
        }
    }

    /// Whether the instance's container (on a swarm: its service) exists.
    pub fn instance_exists(&self, slug: &str) -> bool {
        let name = format!("flowcase-{slug}");
        match self.backend {
            Backend::Engine => container_exists(&name),
            Backend::Swarm => Command::new("docker")
                .args(["service", "inspect", &name])
                .output()
                .unwrap()
                .status
                .success(),
        }
    }

    /// Whether the instance's container (on a swarm: a task container of its service) runs.
    pub fn instance_running(&self, slug: &str) -> bool {
        let name = format!("flowcase-{slug}");
        match self.backend {
            Backend::Engine => inspect(&name)["State"]["Running"] == true,
            Backend::Swarm => !docker(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name={name}"),
            ])
            .trim()
            .is_empty(),
        }
    }

    /// The labels of the instance's container (on a swarm: of its service).
    pub fn instance_labels(&self, slug: &str) -> Value {
        let name = format!("flowcase-{slug}");
        match self.backend {
            Backend::Engine => inspect(&name)["Config"]["Labels"].clone(),
            Backend::Swarm => {
                docker_json(&["service", "inspect", &name])[0]["Spec"]["Labels"].clone()
            }
        }
    }

    /// Removes the instance's container (on a swarm: its service) as an operator would.
    pub fn remove_behind_our_back(&self, slug: &str) {
        let name = format!("flowcase-{slug}");
        match self.backend {
            Backend::Engine => {
                docker(&["rm", "-f", &name]);
            }
            Backend::Swarm => remove_service(&name),
        };
    }

    /// Stops the instance's container (on a swarm: its task's container, as a crash would).
    pub fn stop_behind_our_back(&self, slug: &str) {
        let id = self.container(slug)["Id"].as_str().unwrap().to_owned();
        docker(&["stop", "-t", "0", &id]);
    }

    /// Makes a container (on a swarm: a service of no replica) labelled `labels`, named `name`;
    /// removed when the harness is dropped (even when the test fails) if not before.
    pub async fn create_labelled(&self, name: &str, labels: &[(&str, &str)]) {
        self.cleanup
            .labelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name.to_owned());
        let httpd = images(flowcase_test_images::httpd_image).await;
        let mut cmd = Command::new("docker");
        match self.backend {
            Backend::Engine => cmd.arg("create"),
            Backend::Swarm => cmd.args(["service", "create", "-d", "--replicas", "0"]),
        };
        cmd.args(["--name", name]);
        for (key, value) in labels {
            cmd.args(["--label", &format!("{key}={value}")]);
        }
        let image = if self.backend == Backend::Swarm {
            // By id, so the manager never asks a registry.
            docker(&["image", "inspect", "--format", "{{.Id}}", &httpd])
                .trim()
                .to_owned()
        } else {
            httpd
        };
        let out = cmd.arg(&image).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Removes what [`Self::create_labelled`] made.
    pub fn remove_labelled(&self, name: &str) {
        match self.backend {
            Backend::Engine => {
                docker(&["rm", "-f", name]);
            }
            Backend::Swarm => remove_service(name),
        };
    }

    pub async fn audit_actions(&self, slug: &str) -> Vec<String> {
        let mut entries = self.store.list_audit(1000, 0).await.unwrap();
        entries.reverse();
        entries
            .into_iter()
            .filter(|e| e.target_id.as_deref() == Some(slug))
            .map(|e| e.action)
            .collect()
    }
}

pub async fn images(build: fn() -> Result<String, String>) -> String {
    tokio::task::spawn_blocking(build)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("building a test image failed: {e}"))
}

pub fn with_database(url: &str, database: &str) -> String {
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
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
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

pub fn inspect(name: &str) -> Value {
    docker_json(&["inspect", "--type", "container", name])[0].clone()
}

pub fn container_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["inspect", "--type", "container", name])
        .output()
        .unwrap()
        .status
        .success()
}

pub fn volume_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
