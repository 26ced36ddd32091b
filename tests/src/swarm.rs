//! The local dockerd as a single-node swarm, for the tests of the swarm backend, and the
//! cleanup of a deployment's services.
//!
//! Only `std` here: the orchestrator suite of `flowcase-admin` (which this crate depends on, so
//! it cannot depend on this one) includes this file as a module of its own.

use std::process::Command;
use std::time::Duration;

fn docker(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Makes the local dockerd a swarm manager unless it is one (`docker swarm init
/// --advertise-addr 127.0.0.1`). Never leaves the swarm: other tests share this dockerd, and
/// plain containers keep working in swarm mode. Panics if it cannot.
pub fn ensure_swarm() {
    let state = || {
        docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
            .trim()
            .to_owned()
    };
    if state() != "active" {
        // Two test processes may race here; the loser's "already part of a swarm" is fine.
        let _ = Command::new("docker")
            .args(["swarm", "init", "--advertise-addr", "127.0.0.1"])
            .output();
    }
    assert_eq!(state(), "active", "docker swarm init failed");
}

/// Removes every service labelled `flowcase.deployment=<deployment>` with [`remove_service`].
pub fn remove_services(deployment: &str) {
    let services = docker(&[
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("label=flowcase.deployment={deployment}"),
    ]);
    for service in services.split_whitespace() {
        remove_service(service);
    }
}

/// Removes a swarm service (by name or id) as the engine does: scaled to zero, deleted once
/// Swarm reaped its tasks (Docker 20.10's manager crashes when a service is deleted while its
/// tasks are being reaped, and with it the dockerd every suite shares). Bounded: 30 s.
pub fn remove_service(service: &str) {
    docker(&[
        "service",
        "update",
        "-d",
        "--replicas",
        "0",
        "--stop-grace-period",
        "1s",
        service,
    ]);
    for _ in 0..150 {
        if docker(&["service", "ps", "-q", service]).trim().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    docker(&["service", "rm", service]);
}
