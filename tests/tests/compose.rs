//! Issue 9, compose files: `docker-compose.yml` (one server: gateway on SQLite + guacd) and
//! `docker-compose.prod.yml` (PostgreSQL, guacd, Prometheus, Grafana provisioned from
//! `dashboards/`) pass `docker-compose config`, hold the services and volumes they should,
//! publish ports on 127.0.0.1 only, and every file they mount from this repository exists and
//! is accepted by what reads it: the gateway's configuration by `flowcase check-config` (with the
//! environment compose gives the gateway), Prometheus's by `promtool check config`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use flowcase_e2e::flowcase_bin;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// `docker-compose -f FILE config`, parsed, with the variables an operator puts in `.env`.
fn config(file: &str) -> Value {
    let out = Command::new("docker-compose")
        .current_dir(repo())
        .args(["-f", file, "config"])
        .env("DOCKER_GID", "998")
        .env("POSTGRES_PASSWORD", "compose-test-password")
        .env("GRAFANA_ADMIN_PASSWORD", "compose-test-grafana")
        .output()
        .unwrap_or_else(|e| {
            panic!("docker-compose: {e} (Debian package docker-compose; scripts/test installs it)")
        });
    assert!(
        out.status.success(),
        "docker-compose -f {file} config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::from_slice(&out.stdout).unwrap()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every published port of every service binds 127.0.0.1.
fn assert_loopback_ports(file: &str, compose: &Value) {
    for (name, service) in compose["services"].as_object().unwrap() {
        for port in service["ports"].as_array().into_iter().flatten() {
            let host_ip = match port {
                Value::String(s) => s.split(':').next().unwrap_or_default().to_owned(),
                other => other["host_ip"].as_str().unwrap_or_default().to_owned(),
            };
            assert_eq!(
                host_ip, "127.0.0.1",
                "{file}: {name} publishes {port} beyond loopback"
            );
        }
    }
}

/// Bind mounts (source on the host → target) of a service.
fn binds(service: &Value) -> Vec<(PathBuf, String)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| match v {
            Value::String(s) => {
                let mut parts = s.split(':');
                let (src, dst) = (parts.next()?, parts.next()?);
                src.starts_with('/')
                    .then(|| (PathBuf::from(src), dst.to_owned()))
            }
            other => (other["type"] == "bind").then(|| {
                (
                    PathBuf::from(other["source"].as_str().unwrap()),
                    other["target"].as_str().unwrap().to_owned(),
                )
            }),
        })
        .collect()
}

/// Checks the mounts from the repository exist; returns them by target.
fn repo_mounts(file: &str, compose: &Value) -> BTreeMap<String, PathBuf> {
    let root = repo();
    let mut found = BTreeMap::new();
    for (name, service) in compose["services"].as_object().unwrap() {
        for (src, dst) in binds(service) {
            let Ok(relative) = src.strip_prefix(&root) else {
                // Host paths (the Docker socket) are not ours.
                assert_eq!(src, Path::new("/var/run/docker.sock"), "{file}: {name}");
                continue;
            };
            if relative.starts_with("secrets") {
                // Created by the operator (the file's header says how), never committed.
                continue;
            }
            assert!(
                src.exists(),
                "{file}: {name} mounts {} which does not exist",
                relative.display()
            );
            found.insert(format!("{name}:{dst}"), src);
        }
    }
    found
}

/// `flowcase check-config` on the file compose mounts as the gateway's configuration, with the
/// FLOWCASE_* environment compose gives the gateway; returns what it printed.
fn check_gateway_config(file: &str, compose: &Value, mounts: &BTreeMap<String, PathBuf>) -> String {
    let config = &mounts["gateway:/etc/flowcase/flowcase.toml"];
    let gateway = &compose["services"]["gateway"];
    let mut cmd = Command::new(flowcase_bin());
    for (var, _) in std::env::vars() {
        if var.starts_with("FLOWCASE_") {
            cmd.env_remove(var);
        }
    }
    if let Some(env) = gateway["environment"].as_object() {
        for (k, v) in env {
            cmd.env(k, v.as_str().unwrap());
        }
    }
    let out = cmd
        .args(["check-config", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{file}: flowcase check-config {}: {printed}",
        config.display()
    );
    printed
}

fn assert_gateway_service(file: &str, compose: &Value) {
    let gateway = &compose["services"]["gateway"];
    assert_eq!(gateway["read_only"], true, "{file}: read-only root");
    assert!(
        gateway["group_add"]
            .as_array()
            .is_some_and(|g| g.iter().any(|x| x.to_string().contains("998"))),
        "{file}: the docker socket's group comes from DOCKER_GID: {}",
        gateway["group_add"]
    );
    let mounts: Vec<String> = binds(gateway).into_iter().map(|(_, d)| d).collect();
    assert!(
        mounts.iter().any(|d| d == "/var/run/docker.sock"),
        "{file}: the Docker socket is mounted"
    );
    let volumes = gateway["volumes"].to_string();
    assert!(
        volumes.contains("flowcase-data") && volumes.contains("/data"),
        "{file}: the data directory is a named volume: {volumes}"
    );
    assert_eq!(
        compose["services"]["guacd"]["network_mode"], "service:gateway",
        "{file}: guacd shares the gateway's network namespace"
    );
    let guacd = compose["services"]["guacd"]["command"].to_string();
    assert!(
        guacd.contains("\"-b\",\"127.0.0.1\""),
        "{file}: guacd listens on loopback only, out of the instances' reach: {guacd}"
    );
    assert!(
        gateway["build"]["dockerfile"]
            .as_str()
            .is_some_and(|d| d.ends_with("deploy/Dockerfile")),
        "{file}: built from deploy/Dockerfile"
    );
}

#[test]
fn the_single_server_compose_file_is_valid_and_its_config_loads() {
    let file = "docker-compose.yml";
    let compose = config(file);
    assert_eq!(
        keys(&compose["services"]),
        BTreeSet::from(["gateway".into(), "guacd".into()])
    );
    assert_eq!(
        keys(&compose["volumes"]),
        BTreeSet::from(["flowcase-data".into()])
    );
    assert_loopback_ports(file, &compose);
    assert_gateway_service(file, &compose);
    let mounts = repo_mounts(file, &compose);
    let printed = check_gateway_config(file, &compose, &mounts);
    assert!(
        printed.contains("container-network") && printed.contains("127.0.0.1:4822"),
        "{printed}"
    );
    assert!(
        printed.contains("sqlite") || !printed.contains("postgres"),
        "SQLite in the data volume: {printed}"
    );
}

#[test]
fn the_production_compose_file_is_valid_and_its_configs_load() {
    let file = "docker-compose.prod.yml";
    let compose = config(file);
    assert_eq!(
        keys(&compose["services"]),
        BTreeSet::from([
            "gateway".into(),
            "guacd".into(),
            "postgres".into(),
            "prometheus".into(),
            "grafana".into()
        ])
    );
    assert_eq!(
        keys(&compose["volumes"]),
        BTreeSet::from([
            "flowcase-data".into(),
            "postgres-data".into(),
            "prometheus-data".into(),
            "grafana-data".into()
        ])
    );
    assert_loopback_ports(file, &compose);
    assert_gateway_service(file, &compose);
    for internal in ["postgres", "prometheus"] {
        assert!(
            compose["services"][internal]["ports"].is_null(),
            "{file}: {internal} stays on the internal network"
        );
    }
    let mounts = repo_mounts(file, &compose);

    // The gateway: PostgreSQL from the environment, metrics behind a token.
    let printed = check_gateway_config(file, &compose, &mounts);
    assert!(printed.contains("postgres"), "{printed}");
    assert!(
        !printed.contains("compose-test-password"),
        "check-config redacts the database password: {printed}"
    );

    // Prometheus: its configuration and the alert rules (mounted from dashboards/) load; the
    // token file is the operator's, so a stand-in takes its place.
    let prometheus = tempfile::tempdir().unwrap();
    let token = prometheus.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    let yml = std::fs::read_to_string(&mounts["prometheus:/etc/prometheus/prometheus.yml"])
        .unwrap()
        .replace(
            "/etc/prometheus/flowcase-metrics.token",
            token.to_str().unwrap(),
        );
    assert!(yml.contains("gateway:9100"), "scrapes the gateway service");
    std::fs::write(prometheus.path().join("prometheus.yml"), yml).unwrap();
    let rules = &mounts["prometheus:/etc/prometheus/rules"];
    std::fs::create_dir(prometheus.path().join("rules")).unwrap();
    for entry in std::fs::read_dir(rules).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            prometheus.path().join("rules").join(entry.file_name()),
        )
        .unwrap();
    }
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(prometheus.path().join("prometheus.yml"))
        .output()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Grafana: provisioned from dashboards/, its data source the prometheus service.
    let datasources = &mounts["grafana:/etc/grafana/provisioning/datasources"];
    let datasource = std::fs::read_to_string(datasources.join("prometheus.yml")).unwrap();
    assert!(
        datasource.contains("http://prometheus:9090"),
        "{datasource}"
    );
    let dashboards = &mounts["grafana:/var/lib/grafana/dashboards/flowcase"];
    let count = std::fs::read_dir(dashboards)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
        })
        .count();
    assert!(count >= 5, "the dashboards are mounted ({count})");
    let provider = std::fs::read_to_string(
        mounts["grafana:/etc/grafana/provisioning/dashboards"].join("flowcase.yml"),
    )
    .unwrap();
    assert!(
        provider.contains("/var/lib/grafana/dashboards/flowcase"),
        "{provider}"
    );
}
