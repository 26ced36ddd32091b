//! Issue 9, systemd: `deploy/systemd/flowcase.service` passes `systemd-analyze verify` without a
//! warning and keeps its sandbox, and its reload (`deploy/systemd/flowcase-reload`, run the way
//! systemd runs an ExecReload) upgrades the gateway without losing a request while telling the
//! service manager, over a notify socket of the test's own, which process is the service now; a
//! reload with a broken configuration leaves the running gateway serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flowcase_e2e::load::Load;
use flowcase_e2e::{Gateway, GatewayDir, flowcase_bin};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const UNIT: &str = "deploy/systemd/flowcase.service";
const RELOAD: &str = "deploy/systemd/flowcase-reload";

#[test]
fn the_unit_passes_systemd_analyze_verify_and_keeps_its_sandbox() {
    let unit = std::fs::read_to_string(repo().join(UNIT)).unwrap();
    for key in [
        "Type=notify",
        "NotifyAccess=all",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/flowcase",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "SystemCallFilter=@system-service",
        "SupplementaryGroups=docker",
        "ExecReload=/usr/local/lib/flowcase/flowcase-reload /usr/local/bin/flowcase",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == key),
            "{UNIT} lacks `{key}`"
        );
    }
    // systemd checks that the commands exist: point them at the binary under test and at the
    // reload script of this checkout.
    let bin = flowcase_bin();
    let unit = unit
        .replace(
            "/usr/local/lib/flowcase/flowcase-reload",
            &repo()
                .join(RELOAD)
                .canonicalize()
                .unwrap()
                .display()
                .to_string(),
        )
        .replace("/usr/local/bin/flowcase", &bin.display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flowcase.service");
    std::fs::write(&path, unit).unwrap();
    let Ok(out) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
    else {
        // scripts/test installs systemd; a machine without it cannot check the unit.
        eprintln!("SKIPPED: systemd-analyze is missing (Debian package systemd)");
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Unknown keys and bad values are only warnings: the unit must have none.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("flowcase.service"))
        .collect();
    assert!(warnings.is_empty(), "systemd-analyze warns: {warnings:#?}");
}

/// Datagrams the gateway sent to the notify socket, waiting for one containing `want`.
fn wait_for_notification(socket: &UnixDatagram, want: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    loop {
        if let Some(found) = seen.iter().find(|m| m.contains(want)) {
            return found.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no notification with {want:?}; got {seen:?}"
        );
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

fn main_pid(message: &str) -> u32 {
    message
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .unwrap_or_else(|| panic!("no MAINPID in {message:?}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_reload_hands_the_service_over_and_tells_the_service_manager() {
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify");
    let socket = UnixDatagram::bind(&notify_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut dir = GatewayDir::new();
    dir.set("NOTIFY_SOCKET", &notify_path.display().to_string());
    let old = Gateway::start(&dir).await;
    let mut seen = Vec::new();
    let ready = wait_for_notification(&socket, "READY=1", &mut seen);
    assert_eq!(main_pid(&ready), old.pid(), "{ready:?}");

    // Requests on new connections all along the reload.
    let load = Load::start(&old, &dir, 3);

    // What systemd runs for `systemctl reload`: the script, with $MAINPID, in the unit's
    // environment (here the gateway's directory and variables).
    let mut reload = Command::new(repo().join(RELOAD));
    reload
        .arg(flowcase_bin())
        .current_dir(dir.dir.path())
        .env("MAINPID", old.pid().to_string());
    for (var, _) in std::env::vars() {
        if var.starts_with("FLOWCASE_") {
            reload.env_remove(var);
        }
    }
    reload.envs(&dir.env);
    // The new process inherits the script's output (the journal, under systemd): a file here,
    // since a pipe would stay open as long as the new process runs.
    let log = dir.dir.path().join("reload.log");
    reload
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.dir.path().join("reload.err")).unwrap());
    let reloaded = tokio::task::spawn_blocking(move || reload.status().unwrap())
        .await
        .unwrap();
    assert!(
        reloaded.success(),
        "flowcase-reload: {}",
        std::fs::read_to_string(dir.dir.path().join("reload.err")).unwrap_or_default()
    );
    let handed = wait_for_notification(&socket, "MAINPID=", &mut Vec::new());
    let new_pid = main_pid(&handed);
    // The new process is no child of ours: stop it by the pid it announced, whatever happens.
    let _new = KillOnDrop(new_pid);
    assert_ne!(
        new_pid,
        old.pid(),
        "the new process names itself: {handed:?}"
    );
    let _old = old.exits_cleanly(Duration::from_secs(20)).await;
    let mut later = Vec::new();
    let ready = wait_for_notification(&socket, "READY=1", &mut later);
    assert_eq!(
        main_pid(&ready),
        new_pid,
        "the new process says it is ready"
    );
    let at_switch = load.served();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (after, errors) = load.stop().await;
    assert!(after > at_switch, "the new process serves");
    assert!(
        errors.is_empty(),
        "requests lost during the reload: {errors:?}"
    );
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
    }
}

#[tokio::test]
async fn a_reload_with_a_bad_configuration_keeps_the_running_gateway() {
    let dir = GatewayDir::new();
    let mut gw = Gateway::start(&dir).await;
    let mut reload = Command::new(repo().join(RELOAD));
    reload
        .arg(flowcase_bin())
        .current_dir(dir.dir.path())
        .env("MAINPID", gw.pid().to_string());
    for (var, _) in std::env::vars() {
        if var.starts_with("FLOWCASE_") {
            reload.env_remove(var);
        }
    }
    // The configuration was edited wrongly before the reload.
    reload
        .envs(&dir.env)
        .env("FLOWCASE_SERVER__HTTPS_LISTEN", "not an address");
    let out = tokio::task::spawn_blocking(move || reload.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success(), "the reload reports the failure");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("https_listen"),
        "and says why: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        gw.wait_exit(Duration::from_millis(1500)).is_none(),
        "the running gateway was left alone"
    );
    let client = gw.client(&dir.data_dir(), &["localhost"]);
    let resp = client.get(gw.url("localhost", "/")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "and still serves");
}
