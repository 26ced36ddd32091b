//! Orchestrator suite against the real dockerd (`/var/run/docker.sock`; scripts/test starts
//! it), with images the suite builds itself (`flowcase-test-images`: our HTTP server and a VNC
//! desktop made of Debian's Xtigervnc, both FROM scratch).
//!
//! Every test has its own run id: its own database (a SQLite file, or a fresh PostgreSQL
//! database from `FLOWCASE_TEST_POSTGRES_URL`), its own `flowcase.deployment` label, network
//! and profile volume names. A guard removes every container, volume and network of the run
//! when the test ends, pass or fail. Traffic stays on loopback; every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flowcase_admin::AdminError;
use flowcase_admin::orchestrator::{Actor, Upstream};
use flowcase_admin::store::{DropletType, InstanceStatus};
use flowcase_config::UpstreamMode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

async fn http_instance_launches_ready_reachable_and_hardened(backend: Backend) {
    let h = Harness::on(backend, Db::Sqlite, |_| {}).await;
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
    match backend {
        Backend::Engine => assert!(upstream.addr.ip().is_loopback()),
        // A gateway on the host of a single-node swarm: the task's address on the node.
        Backend::Swarm => assert!(!upstream.addr.ip().is_loopback()),
    }
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
    let c = h.container(&instance.slug);
    let hc = &c["HostConfig"];
    assert_eq!(hc["NanoCpus"], 250_000_000);
    assert_eq!(hc["Memory"], 64 * 1024 * 1024);
    assert_eq!(hc["PidsLimit"], 512);
    assert_eq!(hc["Privileged"], false);
    assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(hc["CapAdd"], serde_json::json!(["NET_BIND_SERVICE"]));
    if backend == Backend::Engine {
        // Not settable per service through the Swarm API of Docker 20.10 (docs/swarm.md).
        assert_eq!(hc["MemorySwap"], 64 * 1024 * 1024);
        assert_eq!(hc["SecurityOpt"], serde_json::json!(["no-new-privileges"]));
        assert_eq!(hc["NetworkMode"], h.run.as_str());
    } else {
        // Reserved as much as limited, so the scheduler places it only where it fits.
        let service = docker_json(&["service", "inspect", &name]);
        let resources = &service[0]["Spec"]["TaskTemplate"]["Resources"];
        assert_eq!(resources["Reservations"]["NanoCPUs"], 250_000_000);
        assert_eq!(resources["Reservations"]["MemoryBytes"], 64 * 1024 * 1024);
        assert_eq!(
            service[0]["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"],
            "none"
        );
        assert!(
            service[0]["Endpoint"]["Ports"].is_null(),
            "nothing published"
        );
        // Its own attachable overlay network, named after it.
        let network = docker_json(&["network", "inspect", &name]);
        assert_eq!(network[0]["Driver"], "overlay");
        assert_eq!(network[0]["Attachable"], true);
        assert!(c["NetworkSettings"]["Networks"][&name].is_object());
    }
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
    let labels = &h.instance_labels(&instance.slug);
    assert_eq!(
        c["Config"]["Labels"]["flowcase.instance"],
        instance.slug.as_str()
    );
    assert_eq!(labels["flowcase.instance"], instance.slug.as_str());
    assert_eq!(labels["flowcase.user"], alice.id.to_string().as_str());
    assert_eq!(labels["flowcase.droplet"], droplet.id.to_string().as_str());
    assert_eq!(labels["purpose"], "flowcase-test");
    if backend == Backend::Engine {
        let network = docker_json(&["network", "inspect", &h.run]);
        assert_eq!(
            network[0]["Options"]["com.docker.network.bridge.enable_icc"],
            "false"
        );
    }

    // Instances cannot reach each other, even on the same network (engine) or through the
    // node's bridge (swarm).
    let bob = h.user("bob").await;
    let (other, other_upstream) = h.orch.launch(&bob, &droplet).await.unwrap();
    let other_ip = match backend {
        Backend::Engine => h.container(&other.slug)["NetworkSettings"]["Networks"][h.run.as_str()]
            ["IPAddress"]
            .as_str()
            .unwrap()
            .to_owned(),
        Backend::Swarm => other_upstream.addr.ip().to_string(),
    };
    let (_, answer) = http(
        upstream.addr,
        "GET",
        &format!("/connect/{other_ip}/{HTTPD_PORT}"),
        "",
    )
    .await;
    assert!(
        answer.starts_with("failed"),
        "instance reached its neighbour at {other_ip}: {answer}"
    );
    if backend == Backend::Swarm {
        // Nor on an overlay network: each instance is on its own only (dialling the other's
        // overlay address would leave the machine by the default route, so it is not tried).
        let networks: Vec<String> = c["NetworkSettings"]["Networks"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(networks, vec![name.clone()]);
    }

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

async fn stop_start_keeps_the_profile_and_destroy_keeps_the_volume(backend: Backend) {
    let h = Harness::on(backend, Db::Postgres, |_| {}).await;
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
    assert!(!h.instance_running(&instance.slug));
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
    assert!(!h.instance_exists(&instance.slug), "{name} is removed");
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

async fn concurrent_wakes_start_once(backend: Backend, db: Db) {
    let h = Harness::on(backend, db, |_| {}).await;
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

async fn twenty_concurrent_wakes_start_once_sqlite(backend: Backend) {
    concurrent_wakes_start_once(backend, Db::Sqlite).await;
}

async fn twenty_concurrent_wakes_start_once_postgres(backend: Backend) {
    concurrent_wakes_start_once(backend, Db::Postgres).await;
}

async fn missing_image_is_a_clear_error_and_creates_nothing(backend: Backend) {
    let h = Harness::on(backend, Db::Sqlite, |_| {}).await;
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

async fn quotas_and_capacity_refuse_launches(backend: Backend) {
    let h = Harness::on(backend, Db::Postgres, |o| {
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
    let roomy = Harness::on(backend, Db::Sqlite, |_| {}).await;
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

async fn vnc_desktop_becomes_ready_with_its_own_password(backend: Backend) {
    let h = Harness::on(backend, Db::Sqlite, |_| {}).await;
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
    let c = h.container(&instance.slug);
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

async fn unready_and_crashing_containers_end_in_error_without_leftovers(backend: Backend) {
    let h = Harness::on(backend, Db::Sqlite, |o| {
        o.ready_timeout = Duration::from_secs(2)
    })
    .await;
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
    // Bounded by the ready timeout (plus, on a swarm, the removal of the failed service).
    let bound = match backend {
        Backend::Engine => Duration::from_secs(10),
        Backend::Swarm => Duration::from_secs(30),
    };
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());

    let crashing = h
        .http_droplet("crash", |d| {
            d.env.insert("EXIT_CODE".into(), "3".into());
        })
        .await;
    // "code 3" says the exit was seen rather than the ready timeout reached (a wall-clock bound
    // said the same but failed on a busy machine).
    match h.orch.launch(&alice, &crashing).await {
        Err(AdminError::NotReady(reason)) => {
            assert!(reason.contains("exited with code 3"), "{reason}")
        }
        other => panic!("expected NotReady, got {other:?}"),
    }

    let rows = h.store.list_instances_for_user(alice.id).await.unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row.status, InstanceStatus::Error);
        assert!(row.error_reason.is_some());
        assert!(!h.instance_exists(&row.slug));
    }
    // Failed launches do not count against the quota.
    let healthy = h.http_droplet("ok", |_| {}).await;
    h.orch.launch(&alice, &healthy).await.unwrap();
}

async fn profile_templates_without_the_user_id_are_refused(backend: Backend) {
    let h = Harness::on(backend, Db::Sqlite, |_| {}).await;
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

async fn reconciliation_follows_docker_behind_our_back(backend: Backend) {
    let h = Harness::on(backend, Db::Postgres, |_| {}).await;
    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    let droplet = h.http_droplet("recon", |_| {}).await;
    let (removed, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    let (stopped, _) = h.orch.launch(&bob, &droplet).await.unwrap();
    h.remove_behind_our_back(&removed.slug);
    h.stop_behind_our_back(&stopped.slug);
    let orphan = format!("{}-orphan", h.run);
    let deployment = h.run.clone();
    h.create_labelled(
        &orphan,
        &[
            ("flowcase.instance", "nobody"),
            ("flowcase.deployment", &deployment),
        ],
    )
    .await;
    // A container of another deployment is none of our business.
    let foreign = format!("{}-foreign", h.run);
    let other_deployment = format!("{}-other", h.run);
    h.create_labelled(
        &foreign,
        &[
            ("flowcase.instance", "x"),
            ("flowcase.deployment", &other_deployment),
        ],
    )
    .await;

    let report = h.orch.reconcile().await.unwrap();
    assert_eq!(report.gone, vec![removed.slug.clone()]);
    assert_eq!(report.stopped, vec![stopped.slug.clone()]);
    assert_eq!(report.orphans_removed, vec![orphan.clone()]);
    let exists = |name: &str| match backend {
        Backend::Engine => container_exists(name),
        Backend::Swarm => Command::new("docker")
            .args(["service", "inspect", name])
            .output()
            .unwrap()
            .status
            .success(),
    };
    assert!(!exists(&orphan));
    assert!(exists(&foreign));
    h.remove_labelled(&foreign);
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

/// A container (on a swarm: a service) that vanishes — ours removed behind our back, or another
/// deployment's — is "gone" to every operation, never an error that fails them.
async fn vanished_containers_are_gone_and_fail_no_other_operation(backend: Backend) {
    use flowcase_admin::orchestrator::Engine;
    use flowcase_admin::orchestrator::docker::DockerEngine;
    use flowcase_admin::orchestrator::swarm::SwarmEngine;
    use flowcase_config::SwarmImageReference;
    let h = Harness::on(backend, Db::Sqlite, |_| {}).await;
    let alice = h.user("alice").await;
    let droplet = h.http_droplet("vanish", |_| {}).await;
    let (vanished, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    let (kept, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    let foreign = format!("{}-foreign", h.run);
    h.create_labelled(
        &foreign,
        &[
            ("flowcase.instance", "x"),
            ("flowcase.deployment", &format!("{}-other", h.run)),
        ],
    )
    .await;
    h.remove_behind_our_back(&vanished.slug);
    h.remove_labelled(&foreign);

    // Stopping an instance whose container vanished leaves it gone, as reconciliation would.
    h.orch
        .stop(vanished.id, &Actor::system())
        .await
        .expect("stopping a vanished container is no error");
    let row = h.store.get_instance(vanished.id).await.unwrap().unwrap();
    assert_eq!(row.status, InstanceStatus::Gone);
    assert_eq!(
        row.error_reason.as_deref(),
        Some("the container disappeared")
    );
    assert_eq!(
        h.orch.reconcile().await.unwrap(),
        flowcase_admin::orchestrator::ReconcileReport::default()
    );
    h.orch.stop(kept.id, &Actor::system()).await.unwrap();
    h.orch.ensure_running(kept.id).await.unwrap();

    // Containers of our deployment vanishing while the engine lists them: every listing still
    // answers, with or without them (on a swarm the manager refuses a task listing naming a
    // service that was just removed).
    let engine: Box<dyn Engine> = match backend {
        Backend::Engine => Box::new(DockerEngine::connect(SOCKET).unwrap()),
        Backend::Swarm => {
            Box::new(SwarmEngine::connect(SOCKET, SwarmImageReference::LocalId).unwrap())
        }
    };
    let deployment = h.run.clone();
    for round in 0..5 {
        let name = format!("{}-vanishing-{round}", h.run);
        h.create_labelled(
            &name,
            &[
                ("flowcase.instance", "nobody"),
                ("flowcase.deployment", &deployment),
            ],
        )
        .await;
        let remover = {
            let (backend, name) = (backend, name.clone());
            std::thread::spawn(move || match backend {
                Backend::Engine => docker(&["rm", "-f", &name]),
                // No replica, so no task to wait for.
                Backend::Swarm => docker(&["service", "rm", &name]),
            })
        };
        let started = Instant::now();
        let mut listings = 0;
        while !remover.is_finished() && started.elapsed() < Duration::from_secs(30) {
            let listed = engine.list_ours(&deployment).await;
            assert!(listed.is_ok(), "round {round}: {listed:?}");
            listings += 1;
        }
        remover.join().unwrap();
        let listed = engine.list_ours(&deployment).await.unwrap();
        assert!(
            listed.iter().all(|c| c.name != name),
            "round {round}: {listed:?}"
        );
        assert!(listings > 0);
    }
    assert_eq!(
        h.orch.reconcile().await.unwrap(),
        flowcase_admin::orchestrator::ReconcileReport::default()
    );
    assert!(h.instance_running(&kept.slug));
}

/// A running workshop whose end time has come is ended by the sweep, and the instances it
/// started are stopped (kept, with their profiles, as "stop all" leaves them); instances
/// outside it are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workshop_past_its_end_is_ended_and_its_instances_stopped() {
    use flowcase_admin::store::{NewWorkshop, WorkshopStatus};
    let h = Harness::new(Db::Sqlite).await;
    let alice = h.user("alice").await;
    let droplet = h.http_droplet("lab", |_| {}).await;
    let (in_lab, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    let (outside, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    let workshop = h
        .store
        .create_workshop(
            &NewWorkshop {
                tenant_id: h.tenant_id,
                group_id: None,
                name: "Lab 1".into(),
                description: String::new(),
                starts_at: T0,
                ends_at: T0 + 120_000,
                status: WorkshopStatus::Running,
            },
            T0,
        )
        .await
        .unwrap();
    assert!(
        h.store
            .claim_workshop_launch(workshop.id, alice.id, droplet.id, None, T0, T0)
            .await
            .unwrap()
    );
    h.store
        .finish_workshop_launch(workshop.id, alice.id, droplet.id, Ok(in_lab.id))
        .await
        .unwrap();

    assert!(
        h.orch.reap().await.unwrap().workshops_ended.is_empty(),
        "not yet"
    );
    h.clock.advance(Duration::from_secs(121));
    let report = h.orch.reap().await.unwrap();
    assert_eq!(report.workshops_ended, ["Lab 1"], "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    let ended = h.store.get_workshop(workshop.id).await.unwrap().unwrap();
    assert_eq!(ended.status, WorkshopStatus::Ended);
    let stopped = h.store.get_instance(in_lab.id).await.unwrap().unwrap();
    assert_eq!(stopped.status, InstanceStatus::Stopped);
    assert!(!h.instance_running(&in_lab.slug));
    assert!(h.instance_running(&outside.slug), "not the workshop's");
    assert_eq!(
        h.orch.reap().await.unwrap().workshops_ended.len(),
        0,
        "ended once"
    );
}

/// A profile volume is mounted only for its own user of its own installation (database): one
/// another installation on the same engine made, or one left by an earlier database whose user
/// ids started over, is refused. Volumes from before installations were labelled still serve
/// their user; new ones are labelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_volume_of_another_installation_is_never_mounted() {
    let h = Harness::new(Db::Sqlite).await;
    let alice = h.user("alice").await;
    let droplet = h.http_droplet("owned", |_| {}).await;
    let volume = format!("{}-{}-{}", h.run, alice.id, droplet.id);
    let create = |labels: &[(&str, &str)]| {
        let mut args = vec!["volume".to_owned(), "create".to_owned()];
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.push(volume.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args);
        assert!(volume_exists(&volume));
    };
    let user = alice.id.to_string();

    create(&[
        ("flowcase.managed", "profile"),
        ("flowcase.user", &user),
        ("flowcase.installation", "another-database"),
    ]);
    match h.orch.launch(&alice, &droplet).await {
        Err(AdminError::Conflict(reason)) => {
            assert!(reason.contains("another installation"), "{reason}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    docker(&["volume", "rm", &volume]);

    // Made before installations were labelled: still alice's.
    create(&[("flowcase.managed", "profile"), ("flowcase.user", &user)]);
    let (legacy, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    h.orch.destroy(legacy.id, &Actor::system()).await.unwrap();
    docker(&["volume", "rm", &volume]);

    // A new one carries this installation's id.
    h.orch.launch(&alice, &droplet).await.unwrap();
    let labels = docker_json(&["volume", "inspect", &volume]);
    assert_eq!(
        labels[0]["Labels"]["flowcase.installation"],
        h.store.installation_id().await.unwrap().as_str()
    );
}

/// The manager answers for any unique prefix of a service id: a short word (CI's host is called
/// `vm`, tried as the gateway's own container) once "found" another test's service whose id
/// began `vm…`, and every launch then failed attaching that "container" to its network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_service_is_found_by_its_id_or_name_never_by_a_prefix_of_its_id() {
    use flowcase_admin::orchestrator::Engine;
    use flowcase_admin::orchestrator::swarm::SwarmEngine;
    use flowcase_config::SwarmImageReference;
    let h = Harness::on(Backend::Swarm, Db::Sqlite, |_| {}).await;
    let alice = h.user("alice").await;
    let droplet = h.http_droplet("prefix", |_| {}).await;
    let (instance, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    let row = h.store.get_instance(instance.id).await.unwrap().unwrap();
    let id = row.container_id.unwrap();
    let name = row.container_name.unwrap();
    let engine = SwarmEngine::connect(SOCKET, SwarmImageReference::LocalId).unwrap();
    assert_eq!(engine.inspect(&id).await.unwrap().unwrap().id, id);
    assert_eq!(engine.inspect(&name).await.unwrap().unwrap().id, id);
    for len in [2, 5, 12] {
        let found = engine.inspect(&id[..len]).await;
        assert!(
            !matches!(&found, Ok(Some(info)) if info.id == id),
            "{len} characters of the id: {found:?}"
        );
    }
    // The whole life cycle still works on the service by its id.
    h.orch.stop(instance.id, &Actor::system()).await.unwrap();
    h.orch.ensure_running(instance.id).await.unwrap();
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
    // Its own network, named after it, holding only it (and a gateway container, when there is
    // one: see the next test), so instances stay apart.
    let network = docker_json(&["network", "inspect", &name]);
    let members: Vec<String> = network[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["Name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(members, vec![name.clone()]);
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

async fn placement_labels_choose_the_nodes_instances_run_on(backend: Backend) {
    let h = Harness::on(backend, Db::Sqlite, |_| {}).await;
    let alice = h.user("alice").await;
    let manager = h
        .http_droplet("placed", |d| {
            d.labels.insert(
                "flowcase.placement.role".into(),
                "node.role == manager".into(),
            );
        })
        .await;
    let (instance, upstream) = h.orch.launch(&alice, &manager).await.unwrap();
    assert_eq!(http(upstream.addr, "GET", "/", "").await.0, 200);
    let nowhere = h
        .http_droplet("nowhere", |d| {
            d.labels.insert(
                "flowcase.placement".into(),
                "node.labels.flowcase-test-never==true".into(),
            );
        })
        .await;
    let result = h.orch.launch(&alice, &nowhere).await;
    match backend {
        // One engine: nowhere else to place a container, the labels are only labels.
        Backend::Engine => {
            result.unwrap();
        }
        Backend::Swarm => {
            let service = format!("flowcase-{}", instance.slug);
            let spec = docker_json(&["service", "inspect", &service]);
            assert_eq!(
                spec[0]["Spec"]["TaskTemplate"]["Placement"]["Constraints"],
                serde_json::json!(["node.role==manager"])
            );
            // No node has the label: the launch says so at once, and leaves nothing behind.
            match result {
                Err(AdminError::Engine(reason)) => {
                    assert!(reason.contains("no node of the swarm"), "{reason}")
                }
                other => panic!("expected an engine error, got {other:?}"),
            }
            let rows = h.store.list_instances_for_user(alice.id).await.unwrap();
            let failed = rows.iter().find(|r| r.droplet_id == nowhere.id).unwrap();
            assert_eq!(failed.status, InstanceStatus::Error);
            assert!(!h.instance_exists(&failed.slug));
        }
    }
}

async fn racing_launches_never_exceed_the_quota(backend: Backend) {
    let h = Harness::on(backend, Db::Postgres, |o| o.max_per_user = 3).await;
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

// ---------------------------------------------------------------------------------------------
// Activity and the reaper
// ---------------------------------------------------------------------------------------------

async fn status_of(h: &Harness, id: i64) -> InstanceStatus {
    h.store.get_instance(id).await.unwrap().unwrap().status
}

async fn activity_keeps_an_instance_alive_and_the_reaper_stops_it_when_idle(backend: Backend) {
    let h = Harness::on(backend, Db::Sqlite, |o| {
        o.idle_timeout = Duration::from_secs(3600)
    })
    .await;
    let alice = h.user("alice").await;
    // The droplet's own timeout wins over the configured hour.
    let droplet = h
        .http_droplet("idle", |d| d.idle_timeout_secs = Some(60))
        .await;
    let (instance, _) = h.orch.launch(&alice, &droplet).await.unwrap();

    h.clock.advance(Duration::from_secs(50));
    h.orch.activity().record(instance.id, "a session");
    assert_eq!(h.orch.activity().pending(), 1);
    assert!(h.orch.reap().await.unwrap().is_empty());
    assert_eq!(h.orch.activity().pending(), 0, "the sweep flushes first");
    let touched = h.store.get_instance(instance.id).await.unwrap().unwrap();
    assert!(touched.last_activity_at.unwrap() >= T0 + 50_000);

    // 50 s after the last activity: still alive.
    h.clock.advance(Duration::from_secs(50));
    assert!(h.orch.reap().await.unwrap().is_empty());
    assert_eq!(status_of(&h, instance.id).await, InstanceStatus::Running);

    // 70 s after it: stopped, and the row says why.
    h.clock.advance(Duration::from_secs(20));
    let report = h.orch.reap().await.unwrap();
    assert_eq!(report.stopped_idle, vec![instance.slug.clone()]);
    let row = h.store.get_instance(instance.id).await.unwrap().unwrap();
    assert_eq!(row.status, InstanceStatus::Stopped);
    assert_eq!(row.error_reason.as_deref(), Some("idle for 70 s"));
    assert!(!h.instance_running(&instance.slug));

    // A wake gives it a full timeout again, whatever the old activity says.
    let upstream = h.orch.ensure_running(instance.id).await.unwrap();
    assert_eq!(http(upstream.addr, "GET", "/", "").await.0, 200);
    h.clock.advance(Duration::from_secs(59));
    assert!(h.orch.reap().await.unwrap().is_empty());
    h.clock.advance(Duration::from_secs(2));
    assert_eq!(
        h.orch.reap().await.unwrap().stopped_idle,
        vec![instance.slug.clone()]
    );
}

async fn idle_destroy_and_maximum_lifetime_remove_containers_but_keep_profiles(backend: Backend) {
    let h = Harness::on(backend, Db::Postgres, |o| {
        o.idle_timeout = Duration::ZERO;
        o.max_lifetime = Duration::from_secs(300);
    })
    .await;
    let alice = h.user("alice").await;
    let throwaway = h
        .http_droplet("throwaway", |d| {
            d.idle_timeout_secs = Some(60);
            d.idle_action = flowcase_admin::store::droplets::IdleAction::Destroy;
            d.max_lifetime_secs = Some(0);
        })
        .await;
    let aging = h.http_droplet("aging", |_| {}).await;
    let (quick, _) = h.orch.launch(&alice, &throwaway).await.unwrap();
    let (old, _) = h.orch.launch(&alice, &aging).await.unwrap();
    h.orch.stop(old.id, &Actor::system()).await.unwrap();

    h.clock.advance(Duration::from_secs(61));
    let report = h.orch.reap().await.unwrap();
    assert_eq!(report.destroyed_idle, vec![quick.slug.clone()]);
    assert!(report.destroyed_expired.is_empty() && report.stopped_idle.is_empty());
    assert_eq!(status_of(&h, quick.id).await, InstanceStatus::Gone);
    assert!(!h.instance_exists(&quick.slug));

    // The configured lifetime applies to the stopped instance of the droplet without its own.
    h.clock.advance(Duration::from_secs(240));
    let report = h.orch.reap().await.unwrap();
    assert_eq!(report.destroyed_expired, vec![old.slug.clone()]);
    let row = h.store.get_instance(old.id).await.unwrap().unwrap();
    assert_eq!(row.status, InstanceStatus::Gone);
    assert_eq!(
        row.error_reason.as_deref(),
        Some("its maximum lifetime is over")
    );
    assert!(!h.instance_exists(&old.slug));
    for droplet in [&throwaway, &aging] {
        assert!(volume_exists(&format!(
            "{}-{}-{}",
            h.run, alice.id, droplet.id
        )));
    }
    let actions = h.audit_actions(&quick.slug).await;
    assert_eq!(
        actions[actions.len() - 2..],
        ["instance.destroying", "instance.gone"]
    );
}

// ---------------------------------------------------------------------------------------------
// Events and health
// ---------------------------------------------------------------------------------------------

async fn engine_events_reconcile_containers_changed_behind_our_back(backend: Backend) {
    let h = Harness::on(backend, Db::Sqlite, |_| {}).await;
    assert!(!h.orch.engine_health().up, "nobody asked the engine yet");
    let watcher = h.orch.spawn_event_watcher();
    let orch = Arc::clone(&h.orch);
    eventually("engine health up", Duration::from_secs(10), || {
        let orch = Arc::clone(&orch);
        async move { orch.engine_health().up }
    })
    .await;

    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    let droplet = h.http_droplet("events", |_| {}).await;
    let (removed, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    let (stopped, _) = h.orch.launch(&bob, &droplet).await.unwrap();
    h.remove_behind_our_back(&removed.slug);
    h.stop_behind_our_back(&stopped.slug);
    // No reconcile() call: the event stream alone moves the rows.
    for (instance, want) in [
        (&removed, InstanceStatus::Gone),
        (&stopped, InstanceStatus::Stopped),
    ] {
        let store = h.store.clone();
        let id = instance.id;
        eventually(
            "row follows the event",
            Duration::from_secs(10),
            move || {
                let store = store.clone();
                async move { store.get_instance(id).await.unwrap().unwrap().status == want }
            },
        )
        .await;
    }
    // Our own stop is not mistaken for one behind our back.
    let (mine, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    h.orch.stop(mine.id, &Actor::system()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let row = h.store.get_instance(mine.id).await.unwrap().unwrap();
    assert_eq!(
        (row.status, row.error_reason),
        (InstanceStatus::Stopped, None)
    );
    watcher.abort();
}

// ---------------------------------------------------------------------------------------------
// Warm pools
// ---------------------------------------------------------------------------------------------

async fn warm_pool_hands_out_a_started_container_and_refills(backend: Backend) {
    let h = Harness::on(backend, Db::Postgres, |_| {}).await;
    let alice = h.user("alice").await;
    let droplet = h
        .http_droplet("pooled", |d| {
            d.pool_size = 2;
            d.pool_started = true;
            d.profile_mount = None;
        })
        .await;
    let report = h.orch.fill_pools().await.unwrap();
    assert_eq!(report.created.len(), 2, "{report:?}");
    let pooled: Vec<String> = report.created.clone();
    for slug in &pooled {
        let c = h.container(slug);
        assert_eq!(c["State"]["Running"], true);
        let labels = &h.instance_labels(slug);
        assert_eq!(labels["flowcase.pool"], droplet.id.to_string().as_str());
        assert!(labels.get("flowcase.user").is_none(), "nobody's yet");
        assert_eq!(c["HostConfig"]["CapDrop"], serde_json::json!(["ALL"]));
    }
    // Pool containers are claimed: reconciliation leaves them alone.
    let report = h.orch.reconcile().await.unwrap();
    assert!(report.orphans_removed.is_empty() && report.pool_removed.is_empty());
    // Started ahead, they hold capacity.
    let host = h.orch.host_stats().await.unwrap();
    assert_eq!(host.allocated_cpu_millicores, 500);
    assert_eq!(host.pooled_containers, 2);

    let started = Instant::now();
    let (instance, upstream) = h.orch.launch(&alice, &droplet).await.unwrap();
    let took = started.elapsed();
    eprintln!("launch from a warm pool: {took:?}");
    assert!(
        pooled.contains(&instance.slug),
        "served by a pool container"
    );
    assert_eq!(instance.status, InstanceStatus::Running);
    assert_eq!(instance.user_id, alice.id);
    let (status, body) = http(upstream.addr, "GET", "/", "").await;
    assert_eq!((status, body.as_str()), (200, "hello from pooled"));
    assert_eq!(
        h.audit_actions(&instance.slug).await,
        [
            "instance.requested",
            "instance.starting",
            "instance.running"
        ]
    );
    assert_eq!(h.orch.pool_levels().await.unwrap()[&droplet.id], (1, 0));

    // The filler (as spawn_background runs it) makes a new one.
    let filler = h.orch.spawn_pool_filler(Duration::from_secs(3600));
    let orch = Arc::clone(&h.orch);
    let id = droplet.id;
    eventually("the pool refills", Duration::from_secs(20), move || {
        let orch = Arc::clone(&orch);
        async move { orch.pool_levels().await.unwrap().get(&id) == Some(&(2, 0)) }
    })
    .await;
    filler.abort();
    // Handed out, the instance lives like any other: stop, wake, destroy.
    h.orch.stop(instance.id, &Actor::system()).await.unwrap();
    h.orch.ensure_running(instance.id).await.unwrap();
    h.orch.destroy(instance.id, &Actor::system()).await.unwrap();

    // A deactivated droplet drains its pool.
    h.store
        .set_droplet_active(droplet.id, false, T0 + 1)
        .await
        .unwrap();
    let report = h.orch.fill_pools().await.unwrap();
    assert_eq!(report.removed.len(), 2, "{report:?}");
    assert!(h.orch.pool_levels().await.unwrap().is_empty());
    for slug in report.removed {
        assert!(!h.instance_exists(&slug));
    }
}

async fn created_only_pools_start_at_launch_and_profiles_get_no_pool(backend: Backend) {
    let h = Harness::on(backend, Db::Sqlite, |_| {}).await;
    let alice = h.user("alice").await;
    let cold = h
        .http_droplet("cold", |d| {
            d.pool_size = 1;
            d.profile_mount = None;
        })
        .await;
    let profiled = h.http_droplet("profiled", |d| d.pool_size = 1).await;
    let report = h.orch.fill_pools().await.unwrap();
    assert_eq!(
        report.created.len(),
        1,
        "only the droplet without a profile"
    );
    let slug = report.created[0].clone();
    match backend {
        Backend::Engine => assert_eq!(
            inspect(&format!("flowcase-{slug}"))["State"]["Status"],
            "created"
        ),
        // A service of no replica: nothing runs, nothing is reserved.
        Backend::Swarm => {
            let service = docker_json(&["service", "inspect", &format!("flowcase-{slug}")]);
            assert_eq!(service[0]["Spec"]["Mode"]["Replicated"]["Replicas"], 0);
            assert!(!h.instance_running(&slug));
        }
    }
    // Created only: holds no capacity.
    let host = h.orch.host_stats().await.unwrap();
    assert_eq!(host.allocated_cpu_millicores, 0);

    let (instance, upstream) = h.orch.launch(&alice, &cold).await.unwrap();
    assert_eq!(instance.slug, slug);
    assert_eq!(http(upstream.addr, "GET", "/", "").await.0, 200);
    // The profile droplet launches the ordinary way, with its volume.
    let (other, _) = h.orch.launch(&alice, &profiled).await.unwrap();
    assert!(
        !h.orch
            .pool_levels()
            .await
            .unwrap()
            .contains_key(&profiled.id)
    );
    let mounts = &h.container(&other.slug)["Mounts"];
    assert_eq!(
        mounts[0]["Name"],
        format!("{}-{}-{}", h.run, alice.id, profiled.id)
    );

    // A pool container that dies is dropped (and the next pass replaces it).
    let report = h.orch.fill_pools().await.unwrap();
    let fresh = report.created[0].clone();
    h.remove_behind_our_back(&fresh);
    let report = h.orch.reconcile().await.unwrap();
    assert_eq!(report.pool_removed, vec![fresh]);
}

// ---------------------------------------------------------------------------------------------
// Group quotas and stats
// ---------------------------------------------------------------------------------------------

async fn a_group_limit_counts_the_instances_of_all_its_members(backend: Backend) {
    let h = Harness::on(backend, Db::Sqlite, |_| {}).await;
    let (alice, bob, carol) = (
        h.user("alice").await,
        h.user("bob").await,
        h.user("carol").await,
    );
    let class = h
        .store
        .create_group(
            &flowcase_admin::store::NewGroup {
                tenant_id: h.tenant_id,
                name: "class".into(),
                description: String::new(),
                permissions: Default::default(),
            },
            T0,
        )
        .await
        .unwrap();
    h.store
        .set_group_instance_limit(class.id, Some(2))
        .await
        .unwrap();
    assert_eq!(
        h.store.group_instance_limit(class.id).await.unwrap(),
        Some(2)
    );
    h.store.add_member(alice.id, class.id).await.unwrap();
    h.store.add_member(bob.id, class.id).await.unwrap();
    let droplet = h.http_droplet("lab", |_| {}).await;
    h.orch.launch(&alice, &droplet).await.unwrap();
    let (bobs, _) = h.orch.launch(&bob, &droplet).await.unwrap();
    match h.orch.launch(&alice, &droplet).await {
        Err(AdminError::QuotaExceeded(reason)) => assert!(reason.contains("class"), "{reason}"),
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    h.orch.launch(&carol, &droplet).await.unwrap();
    // Destroyed instances no longer count.
    h.orch.destroy(bobs.id, &Actor::system()).await.unwrap();
    h.orch.launch(&alice, &droplet).await.unwrap();
}

async fn stats_report_instance_and_host_usage(backend: Backend) {
    let h = Harness::on(backend, Db::Sqlite, |_| {}).await;
    let alice = h.user("alice").await;
    let droplet = h.http_droplet("stats", |_| {}).await;
    let (instance, _) = h.orch.launch(&alice, &droplet).await.unwrap();
    let stats = h.orch.instance_stats(instance.id).await.unwrap().unwrap();
    assert_eq!(stats.memory_limit_bytes, 64 * 1024 * 1024);
    assert!(stats.memory_bytes > 0 && stats.memory_bytes < stats.memory_limit_bytes);
    assert!(stats.cpu_percent >= 0.0);
    let host = h.orch.host_stats().await.unwrap();
    assert!(host.cpus >= 1 && host.memory_bytes > 0);
    assert_eq!(host.allocated_cpu_millicores, 250);
    assert_eq!(host.allocated_memory_mb, 64);
    assert_eq!((host.running_containers, host.unsampled), (1, 0));
    assert!(host.used_memory_bytes >= stats.memory_bytes / 2);

    // The one call the metrics make: host totals and each running instance, labelled.
    let usage = h.orch.usage().await.unwrap();
    assert_eq!(usage.host.running_containers, 1);
    assert_eq!(usage.instances.len(), 1);
    let one = &usage.instances[0];
    assert_eq!(
        (
            one.instance_id,
            one.slug.as_str(),
            one.droplet_id,
            one.user_id
        ),
        (instance.id, instance.slug.as_str(), droplet.id, alice.id)
    );
    assert_eq!(one.memory_limit_bytes, 64 * 1024 * 1024);
    assert!(one.memory_bytes > 0);

    h.orch.stop(instance.id, &Actor::system()).await.unwrap();
    assert_eq!(h.orch.instance_stats(instance.id).await.unwrap(), None);
    let usage = h.orch.usage().await.unwrap();
    assert!(
        usage.instances.is_empty(),
        "stopped instances have no figures"
    );
    assert_eq!(usage.host.running_containers, 0);
}

/// Removes the stand-in "gateway" container when the test ends, pass or fail.
struct StandIn(String);

impl Drop for StandIn {
    fn drop(&mut self) {
        docker(&["rm", "-f", &self.0]);
    }
}

async fn container_network_mode_attaches_the_gateway_container_to_each_instance_network(
    backend: Backend,
) {
    let h = Harness::on(backend, Db::Sqlite, |o| {
        o.upstream_mode = UpstreamMode::ContainerNetwork;
        o.gateway_container = Some(format!("{}-gateway", o.deployment));
    })
    .await;
    // A container standing in for a gateway that runs in a container: our HTTP server, whose
    // `/connect/<ip>/<port>` dials from inside it. Published on loopback so the test can ask.
    let image = images(flowcase_test_images::httpd_image).await;
    let gateway = format!("{}-gateway", h.run);
    let _stand_in = StandIn(gateway.clone());
    let out = Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &gateway,
            "-p",
            "127.0.0.1::8080",
            &image,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let published = docker(&["port", &gateway, "8080/tcp"]);
    let gateway_addr: SocketAddr = published.lines().next().unwrap().trim().parse().unwrap();
    h.orch.prepare().await.unwrap();

    let alice = h.user("alice").await;
    let droplet = h.http_droplet("inside", |_| {}).await;
    let (instance, upstream) = h.orch.launch(&alice, &droplet).await.unwrap();
    let name = format!("flowcase-{}", instance.slug);

    // The upstream (returned and stored for the front door's snapshot) is the instance's
    // address on its own network (on a swarm, its overlay network; the task runs on this node,
    // so its own address rather than the service's virtual IP).
    let c = h.container(&instance.slug);
    let ip = c["NetworkSettings"]["Networks"][&name]["IPAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(upstream.addr.to_string(), format!("{ip}:{HTTPD_PORT}"));
    let row = h.store.get_instance(instance.id).await.unwrap().unwrap();
    assert_eq!(
        row.upstream.as_deref(),
        Some(upstream.addr.to_string().as_str())
    );

    // The stand-in is attached to that network, and reaches the instance from inside.
    let g = inspect(&gateway);
    assert!(
        g["NetworkSettings"]["Networks"][&name].is_object(),
        "the gateway container is on the instance network: {}",
        g["NetworkSettings"]["Networks"]
    );
    let (status, body) = http(
        gateway_addr,
        "GET",
        &format!("/connect/{ip}/{HTTPD_PORT}"),
        "",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "connected"));

    // A second instance gets a network of its own; the stand-in joins that one too.
    let (other, other_upstream) = h.orch.launch(&alice, &droplet).await.unwrap();
    let other_name = format!("flowcase-{}", other.slug);
    assert!(inspect(&gateway)["NetworkSettings"]["Networks"][&other_name].is_object());
    let (_, across) = http(
        gateway_addr,
        "GET",
        &format!("/connect/{}/{}", other_upstream.addr.ip(), HTTPD_PORT),
        "",
    )
    .await;
    assert_eq!(across, "connected", "the gateway reaches both");

    // Stopped and woken (on a swarm: a new task), it is reached at its new upstream.
    h.orch.stop(instance.id, &Actor::system()).await.unwrap();
    let woken = h.orch.ensure_running(instance.id).await.unwrap();
    let (_, body) = http(
        gateway_addr,
        "GET",
        &format!("/connect/{}/{HTTPD_PORT}", woken.addr.ip()),
        "",
    )
    .await;
    assert_eq!(body, "connected", "woken, reached again");

    // Destroy detaches the stand-in and removes the network.
    h.orch.destroy(instance.id, &Actor::system()).await.unwrap();
    assert!(
        inspect(&gateway)["NetworkSettings"]["Networks"][&name].is_null(),
        "detached at destroy"
    );
    let gone = Command::new("docker")
        .args(["network", "inspect", &name])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the instance network is removed");
    h.orch.destroy(other.id, &Actor::system()).await.unwrap();
    assert!(inspect(&gateway)["NetworkSettings"]["Networks"][&other_name].is_null());
}

async fn a_configured_gateway_container_that_does_not_exist_is_a_startup_error(backend: Backend) {
    let h = Harness::on(backend, Db::Sqlite, |o| {
        o.upstream_mode = UpstreamMode::ContainerNetwork;
        o.gateway_container = Some(format!("{}-missing", o.deployment));
    })
    .await;
    let err = h.orch.prepare().await.unwrap_err();
    assert!(err.to_string().contains("gateway_container"), "{err}");
}

on_every_backend!(
    placement_labels_choose_the_nodes_instances_run_on,
    http_instance_launches_ready_reachable_and_hardened,
    stop_start_keeps_the_profile_and_destroy_keeps_the_volume,
    missing_image_is_a_clear_error_and_creates_nothing,
    quotas_and_capacity_refuse_launches,
    vnc_desktop_becomes_ready_with_its_own_password,
    unready_and_crashing_containers_end_in_error_without_leftovers,
    profile_templates_without_the_user_id_are_refused,
    reconciliation_follows_docker_behind_our_back,
    vanished_containers_are_gone_and_fail_no_other_operation,
    racing_launches_never_exceed_the_quota,
    activity_keeps_an_instance_alive_and_the_reaper_stops_it_when_idle,
    idle_destroy_and_maximum_lifetime_remove_containers_but_keep_profiles,
    engine_events_reconcile_containers_changed_behind_our_back,
    warm_pool_hands_out_a_started_container_and_refills,
    created_only_pools_start_at_launch_and_profiles_get_no_pool,
    a_group_limit_counts_the_instances_of_all_its_members,
    stats_report_instance_and_host_usage,
    container_network_mode_attaches_the_gateway_container_to_each_instance_network,
    a_configured_gateway_container_that_does_not_exist_is_a_startup_error,
    twenty_concurrent_wakes_start_once_sqlite,
    twenty_concurrent_wakes_start_once_postgres,
);
