//! Issue 8 end to end: the live `/metrics` exposition after real traffic passes `promtool check
//! metrics`; the scrape configuration and alert rules in `dashboards/` pass promtool; every metric
//! a dashboard or rule names exists in the live exposition; a real Prometheus scrapes the gateway
//! and counts the requests we made; no label takes user, instance or path values after a load of
//! many users and instances; the optional bearer token guards `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowcase_e2e::instances::{EchoInstance, add_user, echo_instance, login_response};
use flowcase_e2e::{Gateway, GatewayDir, free_port};
use reqwest::{Client, Url};
use serde_json::{Value, json};

const PASSWORD: &str = "a long enough passphrase";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn dashboards() -> PathBuf {
    repo_root().join("dashboards")
}

fn promtool(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

async fn scrape(gw: &Gateway) -> String {
    let resp = reqwest::get(gw.metrics_url("/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// Names of the metric families in an exposition (`# TYPE name kind`).
fn families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every `flowcase_…` metric name an expression mentions, histogram suffixes folded into their
/// family.
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("flowcase_") {
        let start = i + pos;
        let boundary = start == 0 || {
            let b = bytes[start - 1];
            !(b.is_ascii_alphanumeric() || b == b'_')
        };
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            let name = &expr[start..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(family.to_owned());
        }
        i = end;
    }
    names
}

/// The expressions of every dashboard panel and alert rule in `dashboards/`.
fn dashboard_and_rule_expressions() -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    let boards = dashboards().join("grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&boards)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "five dashboards expected in {boards:?}");
    for file in files {
        let board: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        for panel in board["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                exprs.push((
                    format!("{} / {}", file.display(), panel["title"]),
                    target["expr"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    let rules =
        std::fs::read_to_string(dashboards().join("prometheus/rules/flowcase.rules.yml")).unwrap();
    // Rule expressions are the `expr:` values, one line or a `|` block.
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let mut expr = rest.trim().trim_start_matches('|').trim().to_owned();
        while let Some(next) = lines.peek() {
            let next_indent = next.len() - next.trim_start().len();
            if next.trim().is_empty() || next_indent <= indent {
                break;
            }
            expr.push(' ');
            expr.push_str(next.trim());
            lines.next();
        }
        exprs.push(("alert rules".into(), expr));
    }
    exprs
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()["location"].to_str().unwrap().to_owned()
}

/// Follows redirects by hand (the client keeps cookies per host).
async fn follow(client: &Client, start: &str) -> reqwest::Response {
    let mut url = Url::parse(start).unwrap();
    for _ in 0..10 {
        let resp = client.get(url.clone()).send().await.unwrap();
        if !resp.status().is_redirection() {
            return resp;
        }
        url = url.join(&location(&resp)).unwrap();
    }
    panic!("redirect loop from {start}");
}

async fn login(gw: &Gateway, client: &Client, user: &str, password: &str) -> reqwest::StatusCode {
    login_response(gw, client, user, password).await.status()
}

#[test]
fn promtool_accepts_the_scrape_configuration_and_the_alert_rules() {
    let config = dashboards().join("prometheus/prometheus.yml");
    let out = promtool(&["check", "config", config.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = dashboards().join("prometheus/rules/flowcase.rules.yml");
    let out = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let alerts: BTreeSet<_> = std::fs::read_to_string(&rules)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: ").map(str::to_owned))
        .collect();
    for wanted in [
        "FlowcaseCertificateExpiring",
        "FlowcaseDockerUnreachable",
        "FlowcaseHighErrorRatio",
        "FlowcaseCapacityNearlyExhausted",
        "FlowcaseAcmeOrdersFailing",
    ] {
        assert!(
            alerts.contains(wanted),
            "missing alert {wanted}: {alerts:?}"
        );
    }
}

#[tokio::test]
async fn the_live_exposition_is_valid_and_has_every_metric_the_dashboards_use() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    add_user(&dir, "alice", PASSWORD);
    // Bound to a name: dropping the echo server would stop the upstream.
    let EchoInstance {
        host, echo: _echo, ..
    } = echo_instance(&dir, "alice", "metrics1").await;
    let client = gw.client(&dir.data_dir(), &["localhost", &host]);
    assert_eq!(login(&gw, &client, "alice", "wrong password").await, 401);
    assert_eq!(login(&gw, &client, "alice", PASSWORD).await, 200);
    let app = follow(&client, &gw.url(&host, "/hello")).await;
    assert_eq!(app.status(), 200);
    let dashboard = client
        .get(gw.url("localhost", "/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), 200);

    // State gauges come from a collector that runs every 10 s: wait for it to see the instance.
    let deadline = Instant::now() + Duration::from_secs(30);
    let exposition = loop {
        let exposition = scrape(&gw).await;
        if exposition.contains(r#"flowcase_instances{droplet="Echo",state="running"} 1"#) {
            break exposition;
        }
        assert!(
            Instant::now() < deadline,
            "the instance never showed in flowcase_instances:\n{exposition}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let out = promtool(&["check", "metrics"], Some(&exposition));
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let live = families(&exposition);
    let mut missing = Vec::new();
    for (place, expr) in dashboard_and_rule_expressions() {
        for name in names_in(&expr) {
            if !live.contains(&name) {
                missing.push(format!("{name} ({place})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named in dashboards or rules, absent from /metrics: {missing:#?}"
    );

    // What that traffic must have counted.
    let has = |needle: &str| exposition.lines().any(|l| l.contains(needle));
    assert!(has(
        r#"flowcase_logins_total{method="password",result="failure"} 1"#
    ));
    assert!(has(
        r#"flowcase_logins_total{method="password",result="success"} 1"#
    ));
    assert!(has(
        r#"flowcase_http_requests_total{host_class="instance",route_class="app",status_class="2xx"}"#
    ));
    assert!(has(
        r#"flowcase_http_requests_total{host_class="public",route_class="page",status_class="2xx"}"#
    ));
    assert!(has(r#"flowcase_tls_handshakes_total{result="ok"}"#));
    assert!(has(r#"flowcase_build_info{version=""#));
    assert!(has(
        r#"flowcase_certificate_expiry_timestamp_seconds{name="localhost""#
    ));
}

#[tokio::test]
async fn labels_stay_bounded_under_many_users_and_instances() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let mut secrets = Vec::new();
    let mut instances = Vec::new();
    for i in 0..8 {
        let user = format!("loaduser{i}x");
        add_user(&dir, &user, PASSWORD);
        let slug = format!("loadinst{i}q");
        let instance = echo_instance(&dir, &user, &slug).await;
        secrets.push(user.clone());
        secrets.push(slug.clone());
        instances.push((user, instance));
    }
    let series_after = |exposition: &str| {
        exposition
            .lines()
            .filter(|l| l.starts_with("flowcase_"))
            .count()
    };
    let mut counts = Vec::new();
    for round in 0..2 {
        for (user, instance) in &instances {
            let client = gw.client(&dir.data_dir(), &["localhost", &instance.host]);
            assert_eq!(login(&gw, &client, user, PASSWORD).await, 200);
            let path = format!("/unique-path-{round}-{user}?q={user}");
            let resp = follow(&client, &gw.url(&instance.host, &path)).await;
            assert_eq!(resp.status(), 200);
            let resp = client
                .get(gw.url("localhost", &format!("/api/v1/users/{round}{user}")))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_client_error(), "{}", resp.status());
        }
        counts.push(series_after(&scrape(&gw).await));
    }
    let exposition = scrape(&gw).await;
    for line in exposition.lines().filter(|l| l.starts_with("flowcase_")) {
        for secret in &secrets {
            assert!(!line.contains(secret.as_str()), "unbounded label: {line}");
        }
        assert!(!line.contains("unique-path"), "path in a label: {line}");
    }
    assert_eq!(
        counts[0], counts[1],
        "a second round of the same kind of traffic must not add series"
    );
}

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(target: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: flowcase\n    \
             static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus (Debian package prometheus) must be installed");
    Prometheus {
        child,
        port,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_gateway_and_counts_our_requests() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let target = gw.metrics_url("").trim_start_matches("http://").to_owned();
    let prometheus = start_prometheus(&target);
    let client = gw.client(&dir.data_dir(), &["localhost"]);
    const REQUESTS: usize = 7;
    for _ in 0..REQUESTS {
        let resp = client
            .get(gw.url("localhost", "/.well-known/flowcase/jwks.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let query = r#"sum(flowcase_http_requests_total{job="flowcase",host_class="public",route_class="well_known"})"#;
    let api = format!("http://127.0.0.1:{}/api/v1/query", prometheus.port);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        if let Ok(resp) = reqwest::Client::new()
            .get(&api)
            .query(&[("query", query)])
            .send()
            .await
            && let Ok(body) = resp.json::<Value>().await
        {
            last = body.to_string();
            if body["data"]["result"][0]["value"][1] == json!(REQUESTS.to_string()) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never counted {REQUESTS} requests; last answer: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The scrape target is healthy too.
    let up: Value = reqwest::Client::new()
        .get(&api)
        .query(&[("query", r#"up{job="flowcase"}"#)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
}

#[tokio::test]
async fn a_metrics_token_guards_metrics_but_not_health() {
    let mut dir = GatewayDir::new();
    let token = "metrics-token-0123456789abcdef";
    let token_file = dir.data_dir().with_file_name("metrics.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    dir.set(
        "FLOWCASE_SERVER__METRICS_TOKEN_FILE",
        token_file.to_str().unwrap(),
    );
    let gw = Gateway::start(&dir).await;
    let http = reqwest::Client::new();
    let anonymous = http.get(gw.metrics_url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let wrong = http
        .get(gw.metrics_url("/metrics"))
        .bearer_auth("metrics-token-0123456789abcdeX")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http
        .get(gw.metrics_url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("flowcase_build_info"));
    let health = http.get(gw.metrics_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[test]
fn metric_names_are_found_in_expressions() {
    let names = names_in(
        "histogram_quantile(0.99, sum by (le) (rate(flowcase_a_seconds_bucket{x=\"y\"}[5m]))) / flowcase_b_total",
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "flowcase_a_seconds".to_owned(),
            "flowcase_b_total".to_owned()
        ])
    );
}
