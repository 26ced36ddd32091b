//! External host droplets (VNC, RDP, SSH servers that are not containers of ours) and the
//! desktop target the tunnel reads.
//!
//! The external-host tests run the orchestrator over an engine that records every call and
//! answers none: launching, waking, stopping, destroying and reaping an external instance must
//! not ask it anything. The container desktop test runs on the real dockerd with the suite's
//! VNC image.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use flowcase_admin::orchestrator::desktop_target::{
    ExternalCredentials, store_external_credentials,
};
use flowcase_admin::orchestrator::engine::{
    ContainerInfo, ContainerSpec, ContainerStats, Engine, EngineError, EngineEvent, EngineInfo,
    EngineResult,
};
use flowcase_admin::orchestrator::{Actor, Clock, Options, Orchestrator};
use flowcase_admin::secrets::{Key, Keyring};
use flowcase_admin::store::{DropletType, InstanceStatus, NewDroplet, NewUser, TargetKind};
use flowcase_admin::{AdminError, Store};
use futures_util::stream::BoxStream;
use sqlx::Connection;

const SECRET: &str = "Corr3ct-Horse-Battery";

/// An engine that is always down and remembers what it was asked.
#[derive(Default)]
struct RecordingEngine {
    calls: Mutex<Vec<&'static str>>,
    count: AtomicUsize,
}

impl RecordingEngine {
    fn note<T>(&self, call: &'static str) -> EngineResult<T> {
        self.calls.lock().unwrap().push(call);
        self.count.fetch_add(1, Ordering::SeqCst);
        Err(EngineError::Unavailable(
            "the test engine answers nothing".into(),
        ))
    }
}

#[async_trait::async_trait]
impl Engine for RecordingEngine {
    async fn info(&self) -> EngineResult<EngineInfo> {
        self.note("info")
    }
    async fn image_present(&self, _: &str) -> EngineResult<bool> {
        self.note("image_present")
    }
    async fn ensure_isolated_network(
        &self,
        _: &str,
        _: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        self.note("ensure_isolated_network")
    }
    async fn ensure_private_network(
        &self,
        _: &str,
        _: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        self.note("ensure_private_network")
    }
    async fn remove_network(&self, _: &str) -> EngineResult<()> {
        self.note("remove_network")
    }
    async fn connect_network(&self, _: &str, _: &str) -> EngineResult<()> {
        self.note("connect_network")
    }
    async fn disconnect_network(&self, _: &str, _: &str) -> EngineResult<()> {
        self.note("disconnect_network")
    }
    async fn ensure_volume(
        &self,
        _: &str,
        _: &BTreeMap<String, String>,
    ) -> EngineResult<BTreeMap<String, String>> {
        self.note("ensure_volume")
    }
    async fn create(&self, _: &ContainerSpec) -> EngineResult<String> {
        self.note("create")
    }
    async fn start(&self, _: &str) -> EngineResult<()> {
        self.note("start")
    }
    async fn stop(&self, _: &str, _: Duration) -> EngineResult<()> {
        self.note("stop")
    }
    async fn remove(&self, _: &str) -> EngineResult<()> {
        self.note("remove")
    }
    async fn inspect(&self, _: &str) -> EngineResult<Option<ContainerInfo>> {
        self.note("inspect")
    }
    async fn list_ours(&self, _: &str) -> EngineResult<Vec<ContainerInfo>> {
        self.note("list_ours")
    }
    fn events(&self, _: &str) -> BoxStream<'static, EngineResult<EngineEvent>> {
        self.calls.lock().unwrap().push("events");
        Box::pin(futures_util::stream::empty())
    }
    async fn stats(&self, _: &str) -> EngineResult<ContainerStats> {
        self.note("stats")
    }
}

fn ring(id: &str, byte: u8) -> Keyring {
    Keyring::from_keys(vec![Key {
        id: id.into(),
        bytes: [byte; 32],
    }])
    .unwrap()
}

struct Setup {
    store: Store,
    orch: Orchestrator,
    engine: Arc<RecordingEngine>,
    clock: Arc<TestClock>,
    url: String,
    _dir: tempfile::TempDir,
}

fn orchestrator(
    store: &Store,
    keyring: Keyring,
    engine: Arc<RecordingEngine>,
    clock: Arc<TestClock>,
) -> Orchestrator {
    Orchestrator::new(
        store.clone(),
        engine,
        keyring,
        clock as Arc<dyn Clock>,
        Options {
            max_per_user: 5,
            max_total: 50,
            ..options("external-test")
        },
    )
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/flowcase.db", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    let engine = Arc::new(RecordingEngine::default());
    let clock = Arc::new(TestClock::new(T0));
    let orch = orchestrator(
        &store,
        ring("k1", 7),
        Arc::clone(&engine),
        Arc::clone(&clock),
    );
    Setup {
        store,
        orch,
        engine,
        clock,
        url,
        _dir: dir,
    }
}

/// An RDP host on loopback (the address need not answer: nothing connects in these tests).
async fn rdp_host(s: &Setup, keyring: &Keyring) -> (flowcase_admin::store::User, i64) {
    let tenant = s.store.create_tenant("default", true, T0).await.unwrap();
    let user = s
        .store
        .create_user(
            &NewUser {
                tenant_id: tenant.id,
                username: "alice".into(),
                ..NewUser::default()
            },
            T0,
        )
        .await
        .unwrap();
    let mut new = NewDroplet::new(tenant.id, "Windows", DropletType::Rdp, TargetKind::External);
    new.external_host = Some("127.0.0.1".into());
    new.external_port = Some(3389);
    new.external_username = Some("bob".into());
    new.external_domain = Some("CORP".into());
    new.external_params = BTreeMap::from([("security".into(), "nla".into())]);
    new.idle_timeout_secs = Some(60);
    let droplet = s.store.create_droplet(&new, T0).await.unwrap();
    store_external_credentials(
        &s.store,
        keyring,
        &droplet,
        &ExternalCredentials {
            password: Some(SECRET.into()),
            ..Default::default()
        },
        T0,
    )
    .await
    .unwrap();
    (user, droplet.id)
}

#[tokio::test]
async fn an_external_host_lives_as_a_row_and_never_asks_the_engine() {
    let s = setup().await;
    let (alice, droplet_id) = rdp_host(&s, &ring("k1", 7)).await;
    let droplet = s.store.get_droplet(droplet_id).await.unwrap().unwrap();

    let (instance, upstream) = s.orch.launch(&alice, &droplet).await.unwrap();
    assert_eq!(instance.status, InstanceStatus::Running, "running at once");
    assert_eq!(instance.container_id, None);
    assert_eq!(instance.upstream.as_deref(), Some("127.0.0.1:3389"));
    assert_eq!(upstream.addr.to_string(), "127.0.0.1:3389");

    let target = s.orch.desktop_target(instance.id).await.unwrap();
    assert!(target.external);
    assert_eq!(target.protocol, DropletType::Rdp);
    assert_eq!((target.hostname.as_str(), target.port), ("127.0.0.1", 3389));
    assert_eq!(target.username.as_deref(), Some("bob"));
    assert_eq!(target.password.as_deref(), Some(SECRET));
    let args = target.guacd_args();
    assert_eq!(args["domain"], "CORP");
    assert_eq!(args["security"], "nla");
    assert!(
        !format!("{target:?}").contains(SECRET),
        "Debug hides secrets"
    );

    // Idle past the droplet's minute: the reaper stops the row; a wake runs it again.
    s.clock.advance(Duration::from_secs(61));
    let report = s.orch.reap().await.unwrap();
    assert_eq!(report.stopped_idle, vec![instance.slug.clone()]);
    let row = s.store.get_instance(instance.id).await.unwrap().unwrap();
    assert_eq!(row.status, InstanceStatus::Stopped);
    let err = s.orch.desktop_target(instance.id).await.unwrap_err();
    assert!(matches!(err, AdminError::NotReady(_)), "{err}");
    let woken = s.orch.ensure_running(instance.id).await.unwrap();
    assert_eq!(woken, upstream);
    assert_eq!(
        s.store
            .get_instance(instance.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        InstanceStatus::Running
    );

    s.orch.stop(instance.id, &Actor::system()).await.unwrap();
    s.orch.destroy(instance.id, &Actor::system()).await.unwrap();
    assert_eq!(
        s.store
            .get_instance(instance.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        InstanceStatus::Gone
    );
    assert_eq!(
        s.engine.count.load(Ordering::SeqCst),
        0,
        "the engine was asked: {:?}",
        s.engine.calls.lock().unwrap()
    );
}

#[tokio::test]
async fn external_instances_count_against_quotas_but_hold_no_capacity() {
    let s = setup().await;
    let (alice, droplet_id) = rdp_host(&s, &ring("k1", 7)).await;
    let droplet = s.store.get_droplet(droplet_id).await.unwrap().unwrap();
    let limited = Orchestrator::new(
        s.store.clone(),
        Arc::clone(&s.engine) as Arc<dyn Engine>,
        ring("k1", 7),
        Arc::clone(&s.clock) as Arc<dyn Clock>,
        Options {
            max_per_user: 2,
            ..options("external-test")
        },
    );
    limited.launch(&alice, &droplet).await.unwrap();
    limited.launch(&alice, &droplet).await.unwrap();
    let err = limited.launch(&alice, &droplet).await.unwrap_err();
    assert!(matches!(err, AdminError::QuotaExceeded(_)), "{err}");
    assert_eq!(s.engine.count.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn external_credentials_are_sealed_at_rest_survive_a_restart_and_need_the_key() {
    let s = setup().await;
    let (alice, droplet_id) = rdp_host(&s, &ring("k1", 7)).await;
    let droplet = s.store.get_droplet(droplet_id).await.unwrap().unwrap();
    let (instance, _) = s.orch.launch(&alice, &droplet).await.unwrap();

    // The raw column holds no clear text, not even a fragment of it.
    s.store.close().await;
    let mut raw = sqlx::SqliteConnection::connect(&s.url).await.unwrap();
    let (sealed,): (Vec<u8>,) =
        sqlx::query_as("SELECT external_credentials FROM droplets WHERE id = ?")
            .bind(droplet_id)
            .fetch_one(&mut raw)
            .await
            .unwrap();
    let text = String::from_utf8_lossy(&sealed);
    assert!(sealed.len() > SECRET.len(), "something is stored");
    assert!(
        !text.contains(SECRET) && !text.contains("Battery"),
        "{text}"
    );
    raw.close().await.unwrap();
    // Nor any database file (the main file and its write-ahead log).
    for file in std::fs::read_dir(s._dir.path()).unwrap() {
        let path = file.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the password in clear",
            path.display()
        );
    }

    // A new process (new store, new orchestrator, same key file) opens it.
    let store = Store::connect(&s.url).await.unwrap();
    let restarted = orchestrator(
        &store,
        ring("k1", 7),
        Arc::clone(&s.engine),
        Arc::clone(&s.clock),
    );
    let target = restarted.desktop_target(instance.id).await.unwrap();
    assert_eq!(target.password.as_deref(), Some(SECRET));

    // Another key file with the same key id: a clear error, never garbage.
    let wrong = orchestrator(
        &store,
        ring("k1", 8),
        Arc::clone(&s.engine),
        Arc::clone(&s.clock),
    );
    let err = wrong
        .desktop_target(instance.id)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("key \"k1\" of the secret key file does not fit"),
        "{err}"
    );
    assert!(err.contains("Windows"), "names the droplet: {err}");
    // A key file that lost the key: says which key is missing.
    let rotated = orchestrator(
        &store,
        ring("k2", 7),
        Arc::clone(&s.engine),
        Arc::clone(&s.clock),
    );
    let err = rotated
        .desktop_target(instance.id)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"k1\"") && err.contains("does not hold"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_desktop_target_is_its_published_port_and_its_own_password() {
    let h = Harness::new(Db::Sqlite).await;
    let alice = h.user("alice").await;
    let image = images(flowcase_test_images::vnc_image).await;
    let droplet = h
        .droplet("desktop", DropletType::Vnc, &image, |d| {
            d.memory_mb = Some(256);
        })
        .await;
    let (instance, upstream) = h.orch.launch(&alice, &droplet).await.unwrap();
    let target = h.orch.desktop_target(instance.id).await.unwrap();
    assert!(!target.external);
    assert_eq!(target.protocol, DropletType::Vnc);
    assert_eq!(target.hostname, "127.0.0.1");
    assert_eq!(target.port, upstream.addr.port());
    let password = h.orch.credentials(&instance).unwrap().unwrap().password;
    assert_eq!(target.password.as_deref(), Some(password.as_str()));
    // The port answers with the RFB banner: this is where guacd will connect.
    let mut stream = tokio::net::TcpStream::connect((target.hostname.as_str(), target.port))
        .await
        .unwrap();
    let mut banner = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut banner)
        .await
        .unwrap();
    assert!(banner.starts_with(b"RFB "), "{banner:?}");
    // Under another key file, the per-instance password does not open, and the error says so.
    let other_key = Orchestrator::new(
        h.store.clone(),
        Arc::new(RecordingEngine::default()),
        ring("k1", 9),
        Arc::clone(&h.clock) as Arc<dyn Clock>,
        options(&h.run),
    );
    let err = other_key
        .desktop_target(instance.id)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not fit") && err.contains(&instance.slug),
        "{err}"
    );

    // An http droplet is no desktop.
    let web = h.http_droplet("web", |_| {}).await;
    let (page, _) = h.orch.launch(&alice, &web).await.unwrap();
    assert!(matches!(
        h.orch.desktop_target(page.id).await.unwrap_err(),
        AdminError::InvalidInput { .. }
    ));
}

#[tokio::test]
async fn external_credentials_round_trip_on_postgresql_sealed() {
    let h = Harness::new(Db::Postgres).await;
    let engine = Arc::new(RecordingEngine::default());
    let clock = Arc::new(TestClock::new(T0));
    let orch = orchestrator(
        &h.store,
        ring("k1", 7),
        Arc::clone(&engine),
        Arc::clone(&clock),
    );
    let alice = h.user("alice").await;
    let mut new = NewDroplet::new(h.tenant_id, "Shell", DropletType::Ssh, TargetKind::External);
    new.external_host = Some("::1".into());
    new.external_port = Some(2222);
    new.external_username = Some("ops".into());
    let droplet = h.store.create_droplet(&new, T0).await.unwrap();
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n";
    store_external_credentials(
        &h.store,
        &ring("k1", 7),
        &droplet,
        &ExternalCredentials {
            private_key: Some(key.into()),
            passphrase: Some(SECRET.into()),
            ..Default::default()
        },
        T0,
    )
    .await
    .unwrap();
    let droplet = h.store.get_droplet(droplet.id).await.unwrap().unwrap();
    let (instance, upstream) = orch.launch(&alice, &droplet).await.unwrap();
    assert_eq!(upstream.addr.to_string(), "[::1]:2222");
    assert_eq!(instance.upstream.as_deref(), Some("[::1]:2222"));

    let mut raw = sqlx::PgConnection::connect(&h.url).await.unwrap();
    let (sealed,): (Vec<u8>,) =
        sqlx::query_as("SELECT external_credentials FROM droplets WHERE id = $1")
            .bind(droplet.id)
            .fetch_one(&mut raw)
            .await
            .unwrap();
    let text = String::from_utf8_lossy(&sealed);
    assert!(
        !text.contains(SECRET) && !text.contains("OPENSSH"),
        "{text}"
    );
    raw.close().await.unwrap();

    let store = Store::connect(&h.url).await.unwrap();
    let restarted = orchestrator(&store, ring("k1", 7), Arc::clone(&engine), clock);
    let target = restarted.desktop_target(instance.id).await.unwrap();
    assert_eq!((target.hostname.as_str(), target.port), ("::1", 2222));
    assert_eq!(target.private_key.as_deref(), Some(key));
    assert_eq!(target.passphrase.as_deref(), Some(SECRET));
    assert_eq!(target.password, None);
    assert_eq!(target.guacd_args()["private-key"], key);
    store.close().await;
    assert_eq!(engine.count.load(Ordering::SeqCst), 0);
}
