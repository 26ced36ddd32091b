//! Issue 9, the container image: the final stage of `deploy/Dockerfile` (FROM scratch + the tree
//! `scripts/image-rootfs` lays out), built with the local dockerd from the binary under test —
//! nothing is pulled — runs as an unprivileged user on a read-only root filesystem with a data
//! volume, talks to the Docker socket mounted into it, and serves HTTPS on a port published on
//! loopback only: ready, an administrator can sign in, and it reports Docker up.
//!
//! The image holds the binary under test (`$FLOWCASE_BIN`, the debug build CI already has)
//! rather than a release build: the layout, libraries and final stage are the same, and CI does
//! not compile the workspace a second time. `/readyz` lives on the metrics listener (plain HTTP,
//! published on loopback like HTTPS); the sign-in goes over HTTPS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use flowcase_e2e::{flowcase_bin, free_port, read_credentials};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The final stage of deploy/Dockerfile, reading the image tree from the build context instead
/// of the build stage: everything else (user, volume, configuration, entry point) is the file's.
fn final_stage() -> String {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let start = dockerfile
        .rfind("\nFROM scratch")
        .expect("deploy/Dockerfile ends with a FROM scratch stage");
    let stage = &dockerfile[start + 1..];
    assert!(
        stage.contains("--from=build /image/rootfs/ /"),
        "the final stage copies the tree of scripts/image-rootfs:\n{stage}"
    );
    let stage = stage.replace("--from=build ", "").replace(" /image/", " ");
    assert!(
        !stage.contains("--from="),
        "the final stage takes nothing else from the build stage:\n{stage}"
    );
    stage
}

/// Removes what the test made, whatever its outcome.
struct Cleanup {
    container: String,
    volume: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.container])
            .output();
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.volume])
            .output();
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

#[tokio::test]
async fn the_image_runs_unprivileged_on_a_read_only_root_and_drives_docker() {
    let id = format!("{:010x}", rand::random::<u64>() >> 24);
    let cleanup = Cleanup {
        container: format!("flowcase-e2e-image-{id}"),
        volume: format!("flowcase-e2e-data-{id}"),
        image: format!("flowcase-e2e-gateway:{id}"),
    };

    // --- build: the same tree and final stage as deploy/Dockerfile, from local files --------
    let ctx = tempfile::tempdir().unwrap();
    run(Command::new(repo().join("scripts/image-rootfs"))
        .arg(flowcase_bin())
        .arg(ctx.path()));
    for lib in ["lib64/ld-linux-x86-64.so.2", "usr/local/bin/flowcase"] {
        assert!(ctx.path().join("rootfs").join(lib).exists(), "{lib}");
    }
    std::fs::create_dir_all(ctx.path().join("deploy/container")).unwrap();
    std::fs::copy(
        repo().join("deploy/container/flowcase.toml"),
        ctx.path().join("deploy/container/flowcase.toml"),
    )
    .unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), final_stage()).unwrap();
    run(Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "--quiet", "-t", &cleanup.image])
        .arg(ctx.path()));
    let user = text(&docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Config.User}}",
        &cleanup.image,
    ]));
    assert_eq!(
        user, "10001:10001",
        "the image runs as an unprivileged user"
    );

    // The configuration built in parses with our loader.
    let check = docker(&["run", "--rm", &cleanup.image, "check-config"]);
    assert!(text(&check).contains("0.0.0.0:8443"), "{}", text(&check));

    // --- run: socket mounted, data volume, read-only root, loopback ports ---------------------
    let (https_port, metrics_port) = (free_port(), free_port());
    let socket_gid = text(&run(Command::new("stat").args([
        "-c",
        "%g",
        "/var/run/docker.sock",
    ])));
    let deployment = format!("e2e-image-{id}");
    docker(&[
        "run",
        "-d",
        "--name",
        &cleanup.container,
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--group-add",
        &socket_gid,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &format!("{}:/data", cleanup.volume),
        "-p",
        &format!("127.0.0.1:{https_port}:8443"),
        "-p",
        &format!("127.0.0.1:{metrics_port}:9100"),
        // Its reconciler touches only containers of its own deployment.
        "-e",
        &format!("FLOWCASE_DOCKER__DEPLOYMENT={deployment}"),
        "-e",
        &format!("FLOWCASE_SERVER__PUBLIC_HTTPS_PORT={https_port}"),
        &cleanup.image,
    ]);
    let logs = || {
        let out = Command::new("docker")
            .args(["logs", &cleanup.container])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let plain = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready: Value = loop {
        if let Ok(resp) = plain
            .get(format!("http://127.0.0.1:{metrics_port}/readyz"))
            .send()
            .await
            && resp.status() == 200
        {
            // Ready, and (once the engine was first contacted) Docker up through the socket.
            let body: Value = resp.json().await.unwrap();
            if body["checks"]["docker"]["ok"] == true {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the container never got ready:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        ready["status"],
        "ready",
        "database, certificate and Docker are up: {ready}\n{}",
        logs()
    );
    assert_eq!(ready["checks"]["docker"]["ok"], true, "{ready}");

    let ports = text(&docker(&["port", &cleanup.container]));
    assert!(
        ports.lines().all(|l| l.contains("-> 127.0.0.1:")),
        "published on loopback only: {ports}"
    );
    let top = text(&docker(&["top", &cleanup.container, "-eo", "pid,uid,comm"]));
    assert!(
        top.lines().count() > 1
            && top
                .lines()
                .skip(1)
                .all(|l| l.split_whitespace().nth(1) == Some("10001")),
        "the gateway runs as uid 10001: {top}"
    );

    // --- HTTPS: trust the certificate it generated in its volume, sign in ---------------------
    let data = ctx.path().join("from-volume");
    std::fs::create_dir_all(&data).unwrap();
    for file in ["tls/self-signed.crt", "IDENTIFIANTS.txt"] {
        let to = data.join(Path::new(file).file_name().unwrap());
        docker(&[
            "cp",
            &format!("{}:/data/{file}", cleanup.container),
            to.to_str().unwrap(),
        ]);
    }
    let (username, password) = read_credentials(&data);
    let pem = std::fs::read(data.join("self-signed.crt")).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], https_port)))
        .cookie_store(true)
        .build()
        .unwrap();
    let origin = format!("https://localhost:{https_port}");
    let login = client
        .post(format!("{origin}/api/v1/session"))
        .header("origin", &origin)
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "{}", logs());
    let me: Value = client
        .get(format!("{origin}/api/v1/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["username"], username.as_str(), "{me}");

    // The data outlives the container: a new one on the same volume knows the administrator.
    docker(&["rm", "-f", &cleanup.container]);
    let again = docker(&[
        "run",
        "--rm",
        "--read-only",
        "-v",
        &format!("{}:/data", cleanup.volume),
        &cleanup.image,
        "user",
        "list",
    ]);
    assert!(text(&again).contains(&username), "{}", text(&again));
    drop(cleanup);
}
