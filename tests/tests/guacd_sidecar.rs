//! Per-instance guacd sidecars through the real binary and a real dockerd: a VNC droplet (the
//! Xtigervnc test image) whose instances each start a guacd container, here the strict guacd
//! double packed as an image (`flowcase-guacd-double`, which prints each `connect` it accepts
//! and what it found when it dialled the desktop itself). The gateway's shared guacd address
//! points where nothing listens, so a tunnel that works went through the sidecar.
//!
//! Launching starts two containers on the instance's private network; the tunnel reaches the
//! sidecar, which is told the instance's container name (not a host port) and reaches the
//! desktop by it; stopping, a container stopped behind the gateway's back (reconciliation),
//! destroying, and a sidecar that cannot start all leave no sidecar behind; the command line
//! sets the choice. The orchestrator half: in mode `container-network` the sidecar is reached
//! unpublished on the instance's network, reconciliation removes a sidecar no running instance
//! claims, and the Swarm backend refuses sidecar droplets with a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use flowcase_admin::store::{InstanceStatus, Store};
use flowcase_e2e::api::Api;
use flowcase_e2e::instances::{add_user, database_url, users_group};
use flowcase_e2e::{Gateway, GatewayDir, TunnelSocket as Ws, read_credentials};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const PASSWORD: &str = "a-long-enough-passphrase";
const DOUBLE: &str = env!("CARGO_BIN_EXE_flowcase-guacd-double");

async fn image(build: impl FnOnce() -> Result<String, String> + Send + 'static) -> String {
    tokio::task::spawn_blocking(build).await.unwrap().unwrap()
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Names of the containers (running or not) labelled as instance `slug`'s.
fn containers_of(slug: &str) -> Vec<String> {
    let mut names: Vec<String> = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=flowcase.instance={slug}"),
        "--format",
        "{{.Names}}",
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    names.sort();
    names
}

fn running(name: &str) -> bool {
    Command::new("docker")
        .args(["inspect", "--format", "{{.State.Running}}", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
}

fn network_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["network", "inspect", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Env {
    dir: GatewayDir,
    gw: Gateway,
    admin: Api,
    alice: Api,
    users_group: i64,
    vnc_image: String,
}

impl Env {
    /// A gateway whose sidecars are the guacd double and whose shared guacd is nowhere.
    async fn start() -> Env {
        let double = image(|| flowcase_test_images::guacd_double_image(DOUBLE.as_ref(), &[])).await;
        let vnc_image = image(flowcase_test_images::vnc_image).await;
        let mut dir = GatewayDir::new();
        dir.set("FLOWCASE_GUACD__SIDECAR_IMAGE", &double);
        let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let unused = nowhere.local_addr().unwrap().to_string();
        drop(nowhere);
        dir.set("FLOWCASE_GUACD__ADDRESS", &unused);
        let gw = Gateway::start(&dir).await;
        add_user(&dir, "alice", PASSWORD);
        let (admin_name, admin_password) = read_credentials(&dir.data_dir());
        let admin = Api::login(&gw, &dir, &admin_name, &admin_password).await;
        let store = Store::connect(&database_url(&dir)).await.unwrap();
        let users_group = users_group(&store, &["alice"]).await.id;
        store.close().await;
        let alice = Api::login(&gw, &dir, "alice", PASSWORD).await;
        Env {
            dir,
            gw,
            admin,
            alice,
            users_group,
            vnc_image,
        }
    }

    /// A VNC droplet with a guacd sidecar (`extra` added to the request), created through the
    /// API and granted to alice's group.
    async fn sidecar_droplet(&self, name: &str, extra: Value) -> i64 {
        let mut body = json!({
            "name": name,
            "droplet_type": "vnc",
            "image": self.vnc_image,
            "ports": [5900],
            "cpu_cores": 0.5,
            "memory_mb": 256,
            "guacd": "sidecar",
            "group_ids": [self.users_group],
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, created) = self.admin.post("/api/v1/droplets", body).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["guacd"], "sidecar", "{created}");
        created["id"].as_i64().unwrap()
    }

    /// Launches `droplet` as alice; returns the instance's id and slug.
    async fn launch(&self, droplet: i64) -> (i64, String) {
        let (status, launched) = self
            .alice
            .post("/api/v1/instances", json!({"droplet_id": droplet}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{launched}");
        (
            launched["id"].as_i64().unwrap(),
            launched["slug"].as_str().unwrap().to_owned(),
        )
    }

    /// Starts alice's stopped instance `id` again and waits until it runs.
    async fn start_again(&self, id: i64) {
        let (status, body) = self
            .alice
            .post(&format!("/api/v1/instances/{id}/start"), json!({}))
            .await;
        assert!(status == 200 || status == 202, "{status} {body}");
        self.alice
            .wait_status(id, "running", Duration::from_secs(90))
            .await;
    }

    /// Opens the desktop tunnel of instance `slug` as alice and reads up to the double's
    /// picture (its `sync`).
    async fn open_tunnel(&self, slug: &str) -> Ws {
        let (status, minted) = self
            .alice
            .post(&format!("/api/v1/instances/{slug}/tunnel-token"), json!({}))
            .await;
        assert_eq!(status, 200, "{minted}");
        let token = minted["token"].as_str().unwrap();
        let stream = self
            .gw
            .tls_connect(&self.dir.data_dir(), "localhost", &[b"http/1.1"])
            .await;
        let (mut ws, _) = self
            .gw
            .open_tunnel(
                stream,
                &[
                    ("token", token),
                    ("GUAC_WIDTH", "1024"),
                    ("GUAC_HEIGHT", "768"),
                    ("GUAC_DPI", "96"),
                ],
            )
            .await;
        let mut opcodes = Vec::new();
        while !opcodes.iter().any(|o| o == "sync") {
            let message = tokio::time::timeout(Duration::from_secs(15), ws.next())
                .await
                .expect("a frame within 15 s")
                .expect("the tunnel is open")
                .expect("a valid frame");
            match message {
                Message::Text(text) => {
                    let mut rest = text.as_bytes();
                    while let Ok(Some((i, n))) = flowcase_guac::parse(rest) {
                        opcodes.push(i.opcode.clone());
                        rest = &rest[n..];
                    }
                }
                Message::Close(frame) => panic!("the tunnel closed: {frame:?}"),
                _ => {}
            }
        }
        assert_eq!(
            opcodes,
            ["", "size", "img", "blob", "end", "sync"],
            "the UUID, then the double's picture"
        );
        ws
    }
}

/// The `connect`s the sidecar double of instance `slug` printed.
fn sidecar_connects(slug: &str) -> Vec<Value> {
    docker(&["logs", &format!("flowcase-{slug}-guacd")])
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// [`sidecar_connects`] once the double printed one (it dials the desktop before it prints).
async fn first_connect(slug: &str) -> Vec<Value> {
    eventually("the sidecar's report", Duration::from_secs(10), || {
        !sidecar_connects(slug).is_empty()
    })
    .await;
    sidecar_connects(slug)
}

#[tokio::test]
async fn a_sidecar_desktop_runs_its_own_guacd_from_launch_to_destroy() {
    let env = Env::start().await;
    let droplet = env.sidecar_droplet("Desk", json!({})).await;

    // Launching starts two containers, the desktop and its guacd, on a network of their own.
    let (id, slug) = env.launch(droplet).await;
    env.alice
        .wait_status(id, "running", Duration::from_secs(90))
        .await;
    let desktop = format!("flowcase-{slug}");
    let sidecar = format!("{desktop}-guacd");
    assert_eq!(containers_of(&slug), [desktop.clone(), sidecar.clone()]);
    assert!(running(&desktop) && running(&sidecar));
    let labels: Value = serde_json::from_str(&docker(&[
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &sidecar,
    ]))
    .unwrap();
    assert_eq!(labels["flowcase.role"], "guacd", "{labels}");
    assert_eq!(
        labels["flowcase.deployment"],
        env.dir.deployment(),
        "{labels}"
    );
    let networks = |name: &str| -> Value {
        serde_json::from_str(&docker(&[
            "inspect",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            name,
        ]))
        .unwrap()
    };
    let desktop_networks = networks(&desktop);
    let sidecar_networks = networks(&sidecar);
    assert_eq!(
        desktop_networks
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        [&desktop],
        "the desktop's own network"
    );
    assert_eq!(
        sidecar_networks
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        [&desktop],
        "the sidecar joins it"
    );
    // guacd's port is published on loopback only, like the instance's.
    let published = docker(&["port", &sidecar, "4822/tcp"]);
    assert!(published.trim().starts_with("127.0.0.1:"), "{published}");
    let env_vars = docker(&["inspect", "--format", "{{json .Config.Env}}", &sidecar]);
    assert!(env_vars.contains("GUACD_LOG_LEVEL=info"), "{env_vars}");

    // The tunnel goes through the sidecar (the shared guacd is nowhere), which is told the
    // desktop's container name and port on their network and reaches the VNC server by it.
    let mut ws = env.open_tunnel(&slug).await;
    let connects = first_connect(&slug).await;
    assert_eq!(connects.len(), 1, "{connects:?}");
    let connect = &connects[0];
    assert_eq!(connect["select"], "vnc");
    assert_eq!(connect["version"], "VERSION_1_5_0");
    assert_eq!(connect["hostname"], desktop.as_str(), "{connect}");
    assert_eq!(connect["port"], "5900", "{connect}");
    assert_eq!(connect["desktop"], "RFB 003.008\n", "{connect}");
    assert_eq!(connect["name"], "alice");
    ws.close(None).await.unwrap();

    // Stopping removes the sidecar and stops the desktop.
    let (status, stopped) = env
        .alice
        .post(&format!("/api/v1/instances/{id}/stop"), json!({}))
        .await;
    assert_eq!(
        (status, stopped["status"].as_str()),
        (StatusCode::OK, Some("stopped"))
    );
    assert_eq!(containers_of(&slug), std::slice::from_ref(&desktop));
    assert!(!running(&desktop));

    // Starting again brings a fresh sidecar, and the tunnel works again.
    env.start_again(id).await;
    assert_eq!(containers_of(&slug), [desktop.clone(), sidecar.clone()]);
    let mut ws = env.open_tunnel(&slug).await;
    assert_eq!(
        first_connect(&slug).await.len(),
        1,
        "a new sidecar, a new log"
    );
    ws.close(None).await.unwrap();

    // A desktop stopped behind the gateway's back: reconciliation marks it stopped and takes
    // its sidecar away.
    docker(&["stop", "-t", "0", &desktop]);
    env.alice
        .wait_status(id, "stopped", Duration::from_secs(30))
        .await;
    eventually("the sidecar to go", Duration::from_secs(10), || {
        containers_of(&slug) == [desktop.clone()]
    })
    .await;

    // A sidecar that dies takes its desktop down with it (it could not be opened any more);
    // the next start makes both anew.
    env.start_again(id).await;
    docker(&["rm", "-f", &sidecar]);
    let stopped = env
        .alice
        .wait_status(id, "stopped", Duration::from_secs(30))
        .await;
    assert_eq!(
        stopped["error_reason"], "its guacd sidecar stopped",
        "{stopped}"
    );
    assert!(!running(&desktop));

    // Destroying removes everything: desktop, sidecar, network.
    env.start_again(id).await;
    assert_eq!(containers_of(&slug).len(), 2);
    let (status, _) = env
        .alice
        .call(Method::DELETE, &format!("/api/v1/instances/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        containers_of(&slug).is_empty(),
        "{:?}",
        containers_of(&slug)
    );
    assert!(!network_exists(&desktop), "the instance network is removed");
}

#[tokio::test]
async fn a_sidecar_that_cannot_start_fails_the_launch_and_leaves_nothing_behind() {
    let env = Env::start().await;
    let crashing =
        image(|| flowcase_test_images::guacd_double_image(DOUBLE.as_ref(), &["exit", "3"])).await;
    let droplet = env
        .sidecar_droplet("Broken guacd", json!({"guacd_image": crashing}))
        .await;
    let (id, slug) = env.launch(droplet).await;
    let failed = env
        .alice
        .wait_status(id, "error", Duration::from_secs(90))
        .await;
    let reason = failed["error_reason"].as_str().unwrap();
    assert!(
        reason.contains("guacd sidecar") && reason.contains("code 3"),
        "{reason}"
    );
    assert!(
        containers_of(&slug).is_empty(),
        "{:?}",
        containers_of(&slug)
    );
    assert!(!network_exists(&format!("flowcase-{slug}")));

    // A sidecar image the engine lacks is refused before anything is made.
    let missing = env
        .sidecar_droplet(
            "Missing guacd",
            json!({"guacd_image": "flowcase-test/no-such-guacd:never"}),
        )
        .await;
    let (status, body) = env
        .alice
        .post("/api/v1/instances", json!({"droplet_id": missing}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "image_missing", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-guacd"),
        "{body}"
    );

    // The API refuses what a sidecar cannot be, naming the field.
    let (status, body) = env
        .admin
        .post(
            "/api/v1/droplets",
            json!({"name": "Web", "droplet_type": "http", "image": env.vnc_image,
                   "ports": [80], "guacd": "sidecar"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "guacd", "{body}");
}

/// The orchestrator's side, over the same gateway's database: reconciliation removes a sidecar
/// that no starting or running instance claims (a crash between a stop and the removal), and
/// the Swarm backend refuses sidecar droplets.
#[tokio::test]
async fn reconciliation_removes_stray_sidecars_and_swarm_refuses_them() {
    use flowcase_admin::orchestrator::Options;
    use flowcase_config::UpstreamMode;
    use flowcase_e2e::orchestrator::{
        docker_orchestrator, orchestrator_options, swarm_orchestrator,
    };

    let env = Env::start().await;
    let droplet = env.sidecar_droplet("Desk", json!({})).await;
    let (id, slug) = env.launch(droplet).await;
    env.alice
        .wait_status(id, "running", Duration::from_secs(90))
        .await;
    let (status, _) = env
        .alice
        .post(&format!("/api/v1/instances/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);

    // A sidecar left next to the stopped instance, as a crash would leave it.
    let sidecar = format!("flowcase-{slug}-guacd");
    let double = image(|| flowcase_test_images::guacd_double_image(DOUBLE.as_ref(), &[])).await;
    docker(&[
        "create",
        "--name",
        &sidecar,
        "--label",
        &format!("flowcase.instance={slug}"),
        "--label",
        "flowcase.role=guacd",
        "--label",
        &format!("flowcase.deployment={}", env.dir.deployment()),
        &double,
    ]);
    let store = Store::connect(&database_url(&env.dir)).await.unwrap();
    let options = Options {
        network: "flowcase-e2e".into(),
        upstream_mode: UpstreamMode::PublishedLoopback,
        ..orchestrator_options(&env.dir)
    };
    let orchestrator = docker_orchestrator(&env.dir, &store, options.clone());
    let report = orchestrator.reconcile().await.unwrap();
    // The gateway's own reconciler (every minute) may have been quicker; either way it is gone.
    assert!(
        report.orphans_removed.is_empty() || report.orphans_removed == [sidecar.clone()],
        "only the stray sidecar goes: {report:?}"
    );
    assert_eq!(containers_of(&slug), [format!("flowcase-{slug}")]);
    let row = store.get_instance(id).await.unwrap().unwrap();
    assert_eq!(
        row.status,
        InstanceStatus::Stopped,
        "the instance is left as it is"
    );

    // On a swarm, a sidecar droplet is refused before anything is admitted.
    let swarm = swarm_orchestrator(
        &env.dir,
        &store,
        Options {
            upstream_mode: UpstreamMode::ContainerNetwork,
            ..options
        },
    );
    let alice = store.find_user_by_login("alice").await.unwrap().unwrap();
    let droplet = store.get_droplet(droplet).await.unwrap().unwrap();
    let before = store.list_instances_for_user(alice.id).await.unwrap().len();
    let refused = swarm
        .launch(&alice, &droplet)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("does not run guacd sidecars"), "{refused}");
    assert_eq!(
        store.list_instances_for_user(alice.id).await.unwrap().len(),
        before
    );
    store.close().await;
}

/// `flowcase droplet add --guacd sidecar [--guacd-image IMAGE]` stores the choice; what a
/// sidecar cannot be is refused naming the flag.
#[tokio::test]
async fn the_command_line_gives_a_droplet_its_guacd_sidecar() {
    let dir = GatewayDir::new();
    let mut gw = Gateway::start(&dir).await;
    gw.stop();
    let add = |extra: &[&str]| {
        let mut args = vec![
            "droplet", "add", "--type", "vnc", "--image", "desk:1", "--port", "5900",
        ];
        args.extend_from_slice(extra);
        dir.cli(&args)
    };
    let out = add(&[
        "--name",
        "Desk",
        "--guacd",
        "sidecar",
        "--guacd-image",
        "registry.test/guacd:1.5.5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = add(&["--name", "Plain"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (extra, key) in [
        (&["--name", "Bad", "--guacd", "own"][..], "--guacd:"),
        (
            &["--name", "Bad", "--guacd-image", "g:1"][..],
            "--guacd-image:",
        ),
        (
            &["--name", "Bad", "--guacd", "sidecar", "--pool-size", "1"][..],
            "--pool-size:",
        ),
    ] {
        let out = add(extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(stderr.contains(key), "{extra:?}: {stderr}");
    }
    // The list says which guacd each desktop goes through.
    let listed = String::from_utf8_lossy(&dir.cli(&["droplet", "list"]).stdout).into_owned();
    let row = |name: &str| {
        listed
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{listed}"))
            .to_owned()
    };
    assert!(listed.lines().next().unwrap().contains("guacd"), "{listed}");
    assert!(row("Desk").contains(" sidecar "), "{listed}");
    assert!(row("Plain").contains(" shared "), "{listed}");
    let store = Store::connect(&database_url(&dir)).await.unwrap();
    let droplets = store.list_droplets().await.unwrap();
    let desk = droplets.iter().find(|d| d.name == "Desk").unwrap();
    assert_eq!(desk.guacd, flowcase_admin::store::GuacdMode::Sidecar);
    assert_eq!(
        desk.guacd_image.as_deref(),
        Some("registry.test/guacd:1.5.5")
    );
    let plain = droplets.iter().find(|d| d.name == "Plain").unwrap();
    assert_eq!(plain.guacd, flowcase_admin::store::GuacdMode::Shared);
    assert_eq!(plain.guacd_image, None);
    assert!(!droplets.iter().any(|d| d.name == "Bad"));
    store.close().await;
}

/// Mode `container-network` (the gateway dials containers on their networks; here from the
/// host, which reaches bridge networks too): the sidecar is not published, the tunnel's target
/// names its address on the instance's network, and guacd there completes a handshake for the
/// desktop it reaches by name. Destroying leaves nothing.
#[tokio::test]
async fn in_container_network_mode_the_sidecar_is_reached_on_the_instance_network() {
    use flowcase_admin::orchestrator::{Actor, Options};
    use flowcase_admin::store::{DropletType, GuacdMode, NewDroplet, NewUser, TargetKind};
    use flowcase_config::UpstreamMode;
    use flowcase_e2e::orchestrator::{docker_orchestrator, orchestrator_options};
    use flowcase_guac::Instruction;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let double = image(|| flowcase_test_images::guacd_double_image(DOUBLE.as_ref(), &[])).await;
    let vnc_image = image(flowcase_test_images::vnc_image).await;
    let dir = GatewayDir::new();
    std::fs::create_dir_all(dir.data_dir()).unwrap();
    let store = Store::connect(&database_url(&dir)).await.unwrap();
    let tenant = store.create_tenant("default", true, 0).await.unwrap();
    let user = store
        .create_user(
            &NewUser {
                tenant_id: tenant.id,
                username: "carol".into(),
                ..NewUser::default()
            },
            0,
        )
        .await
        .unwrap();
    let mut new = NewDroplet::new(tenant.id, "Desk", DropletType::Vnc, TargetKind::Container);
    new.image = Some(vnc_image);
    new.ports = vec![5900];
    new.cpu_millicores = Some(500);
    new.memory_mb = Some(256);
    new.guacd = GuacdMode::Sidecar;
    new.guacd_image = Some(double);
    let droplet = store.create_droplet(&new, 0).await.unwrap();
    let keyring =
        flowcase_admin::secrets::ensure_key_file(&dir.data_dir().join("secret.key")).unwrap();
    let orchestrator = docker_orchestrator(
        &dir,
        &store,
        Options {
            upstream_mode: UpstreamMode::ContainerNetwork,
            ready_timeout: Duration::from_secs(30),
            ..orchestrator_options(&dir)
        },
    );
    let (instance, _) = orchestrator.launch(&user, &droplet).await.unwrap();
    let slug = instance.slug.clone();
    let desktop = format!("flowcase-{slug}");
    let sidecar = format!("{desktop}-guacd");
    assert_eq!(containers_of(&slug), [desktop.clone(), sidecar.clone()]);
    assert_eq!(docker(&["port", &sidecar]).trim(), "", "nothing published");
    let sidecar_ip = docker(&[
        "inspect",
        "--format",
        &format!("{{{{(index .NetworkSettings.Networks \"{desktop}\").IPAddress}}}}"),
        &sidecar,
    ]);

    // What the tunnel would use: the sidecar on the network, the desktop by its name.
    let target = flowcase_admin::access::desktop::desktop_target(
        &store,
        &keyring,
        instance.id,
        user.id,
        flowcase_admin::store::now_millis(),
    )
    .await
    .unwrap();
    let guacd = target.guacd.expect("the sidecar's address");
    assert_eq!(guacd.to_string(), format!("{}:4822", sidecar_ip.trim()));
    let connection = target.connection.unwrap();
    assert_eq!(
        (connection.hostname.as_str(), connection.port),
        (desktop.as_str(), 5900)
    );

    // guacd there takes a handshake for that desktop and reaches it.
    let mut stream = tokio::net::TcpStream::connect(guacd).await.unwrap();
    stream
        .write_all(Instruction::new("select", ["vnc"]).encode().as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let args = loop {
        if let Ok(Some((i, _))) = flowcase_guac::parse(&buf) {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "guacd closed before args");
        buf.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(args.opcode, "args");
    let values: Vec<String> = args
        .args
        .iter()
        .map(|name| match name.as_str() {
            "VERSION_1_5_0" => name.clone(),
            other => connection
                .guacd_args()
                .get(other)
                .cloned()
                .unwrap_or_default(),
        })
        .collect();
    stream
        .write_all(Instruction::new("connect", values).encode().as_bytes())
        .await
        .unwrap();
    let connects = first_connect(&slug).await;
    assert_eq!(connects[0]["hostname"], desktop.as_str(), "{connects:?}");
    assert_eq!(connects[0]["desktop"], "RFB 003.008\n", "{connects:?}");
    drop(stream);

    orchestrator
        .destroy(instance.id, &Actor::system())
        .await
        .unwrap();
    assert!(
        containers_of(&slug).is_empty(),
        "{:?}",
        containers_of(&slug)
    );
    assert!(!network_exists(&desktop));
    store.close().await;
}
