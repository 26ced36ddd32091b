//! The audit log and the system report through the real binary: filters (actor, action and
//! action prefix, target, time in milliseconds or RFC 3339), paging, pruning (global
//! administrators only, itself logged), tenant administrators reading only their tenant's
//! entries; the system report's versions, database, engine, host, counts and certificates; and
//! the permission matrix of both families.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowcase_e2e::api::{Api, code};
use flowcase_e2e::{Gateway, GatewayDir, read_credentials};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "a-long-enough-passphrase";
const HOSTILE: &str = "<img src=x onerror=alert(1)>\"'&amp;";

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

struct Env {
    dir: GatewayDir,
    gw: Gateway,
    admin: Api,
    admin_name: String,
}

impl Env {
    async fn start() -> Env {
        let dir = GatewayDir::new();
        let gw = Gateway::start(&dir).await;
        let (admin_name, password) = read_credentials(&dir.data_dir());
        let admin = Api::login(&gw, &dir, &admin_name, &password).await;
        Env {
            dir,
            gw,
            admin,
            admin_name,
        }
    }

    async fn login(&self, name: &str) -> Api {
        Api::login(&self.gw, &self.dir, name, PASSWORD).await
    }

    /// A tenant with an administrator (`admin_panel`, users and groups) named `admin_name`.
    async fn tenant_with_admin(&self, tenant: &str, admin_name: &str) -> (i64, Api) {
        let tenant_id = self
            .admin
            .send_ok(
                Method::POST,
                "/api/v1/tenants",
                json!({"name": tenant}),
                201,
            )
            .await["id"]
            .as_i64()
            .unwrap();
        let group = self
            .admin
            .send_ok(
                Method::POST,
                "/api/v1/groups",
                json!({
                    "name": "Tenant admins",
                    "tenant_id": tenant_id,
                    "permissions": {
                        "admin_panel": true, "view_users": true, "edit_users": true,
                        "view_groups": true, "edit_groups": true,
                    },
                }),
                201,
            )
            .await["id"]
            .as_i64()
            .unwrap();
        self.admin
            .send_ok(
                Method::POST,
                "/api/v1/users",
                json!({"username": admin_name, "password": PASSWORD, "tenant_id": tenant_id,
                       "group_ids": [group]}),
                201,
            )
            .await;
        (tenant_id, self.login(admin_name).await)
    }
}

fn actions(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_audit_log_filters_pages_and_prunes() {
    let env = Env::start().await;
    let started = now_ms();
    let mut user_ids = Vec::new();
    for name in ["ann", "ben", "cid"] {
        let created = env
            .admin
            .send_ok(
                Method::POST,
                "/api/v1/users",
                json!({"username": name, "password": PASSWORD, "display_name": HOSTILE}),
                201,
            )
            .await;
        user_ids.push(created["id"].as_i64().unwrap());
    }
    env.admin
        .send_ok(
            Method::PATCH,
            &format!("/api/v1/users/{}", user_ids[0]),
            json!({"display_name": "Ann"}),
            200,
        )
        .await;
    let (tenant_id, tenant_admin) = env.tenant_with_admin("Initech", "peter").await;
    tenant_admin
        .send_ok(
            Method::POST,
            "/api/v1/users",
            json!({"username": "milton", "password": PASSWORD}),
            201,
        )
        .await;

    // Exact action, newest first, with the total.
    let created = env.admin.get_ok("/api/v1/audit?action=user.create").await;
    assert_eq!(created["total"], 5, "{created:#}");
    let targets: Vec<&str> = created["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["username"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["milton", "peter", "cid", "ben", "ann"]);
    // Prefix, actor, target.
    let users = env
        .admin
        .get_ok("/api/v1/audit?action=user.*&limit=200")
        .await;
    assert!(actions(&users).iter().all(|a| a.starts_with("user.")));
    assert!(actions(&users).contains(&"user.update".to_owned()));
    let by_peter = env.admin.get_ok("/api/v1/audit?actor=peter").await;
    assert!(actions(&by_peter).contains(&"user.create".to_owned()));
    assert!(
        by_peter["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor_name"] == "peter")
    );
    let peter_created = env
        .admin
        .get_ok("/api/v1/audit?actor=peter&action=user.create")
        .await;
    assert_eq!(peter_created["total"], 1);
    assert_eq!(peter_created["items"][0]["details"]["username"], "milton");
    let ann = env
        .admin
        .get_ok(&format!("/api/v1/audit?target=user:{}", user_ids[0]))
        .await;
    let mut ann_actions = actions(&ann);
    ann_actions.sort();
    assert_eq!(ann_actions, ["user.create", "user.update"]);
    assert_eq!(
        env.admin.get_ok("/api/v1/audit?target=tenant").await["total"],
        1
    );
    // Hostile text comes back as it was written, as a JSON string.
    let update = ann["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "user.update")
        .unwrap();
    assert_eq!(update["details"]["changes"]["display_name"][0], HOSTILE);
    // Time windows, in milliseconds and in RFC 3339.
    let future = env
        .admin
        .get_ok(&format!("/api/v1/audit?since={}", now_ms() + 60_000))
        .await;
    assert_eq!(future["total"], 0);
    let window = env
        .admin
        .get_ok(&format!(
            "/api/v1/audit?action=user.create&since={started}&until={}",
            now_ms() + 1
        ))
        .await;
    assert_eq!(window["total"], 5);
    let before_2000 = env
        .admin
        .get_ok("/api/v1/audit?until=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(before_2000["total"], 0);
    let since_2000 = env
        .admin
        .get_ok("/api/v1/audit?since=2000-01-01T00:00:00%2B02:00&action=user.create")
        .await;
    assert_eq!(since_2000["total"], 5);
    // Paging walks the same list without overlap.
    let all = env.admin.get_ok("/api/v1/audit?limit=200").await;
    let total = all["total"].as_i64().unwrap();
    assert!(total >= 8, "{all:#}");
    let mut walked = Vec::new();
    for offset in (0..total).step_by(3) {
        let page = env
            .admin
            .get_ok(&format!("/api/v1/audit?limit=3&offset={offset}"))
            .await;
        assert_eq!(page["total"], total);
        assert_eq!(page["limit"], 3);
        walked.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap()),
        );
    }
    let listed: Vec<i64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(walked, listed);
    // Malformed filters name their field.
    for (query, field) in [
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("limit=0", "limit"),
    ] {
        let (status, body) = env.admin.get(&format!("/api/v1/audit?{query}")).await;
        assert_eq!(
            (status.as_u16(), code(&body)),
            (422, "invalid_input"),
            "{query}"
        );
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }

    // A tenant administrator reads only what users of their tenant did.
    let theirs = tenant_admin.get_ok("/api/v1/audit?limit=200").await;
    assert!(theirs["total"].as_i64().unwrap() >= 2, "{theirs:#}");
    for entry in theirs["items"].as_array().unwrap() {
        let actor = entry["actor_name"].as_str().unwrap_or("");
        assert!(
            ["peter", "milton"].contains(&actor),
            "a tenant admin sees another tenant's entry: {entry}"
        );
    }
    let _ = tenant_id;
    // ... and cannot prune.
    let (status, body) = tenant_admin
        .call(
            Method::POST,
            "/api/v1/audit/prune",
            Some(json!({"before": now_ms()})),
        )
        .await;
    assert_eq!((status.as_u16(), code(&body)), (403, "forbidden"));

    // Pruning: a future cutoff is refused; a past one deletes what is older, then logs itself.
    let (status, body) = env
        .admin
        .call(
            Method::POST,
            "/api/v1/audit/prune",
            Some(json!({"before": now_ms() + 3_600_000})),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["field"].as_str()),
        (422, Some("before"))
    );
    let pruned = env
        .admin
        .send_ok(
            Method::POST,
            "/api/v1/audit/prune",
            json!({"before": "2000-01-01T00:00:00Z"}),
            200,
        )
        .await;
    assert_eq!(pruned["deleted"], 0);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = now_ms();
    let pruned = env
        .admin
        .send_ok(
            Method::POST,
            "/api/v1/audit/prune",
            json!({"before": cutoff}),
            200,
        )
        .await;
    assert!(pruned["deleted"].as_u64().unwrap() >= u64::try_from(total).unwrap());
    let left = env.admin.get_ok("/api/v1/audit?limit=200").await;
    assert!(
        left["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["at"].as_i64().unwrap() >= cutoff),
        "{left:#}"
    );
    let prune_entries = env.admin.get_ok("/api/v1/audit?action=audit.prune").await;
    assert_eq!(
        prune_entries["total"], 1,
        "only the last prune survives: {prune_entries:#}"
    );
    assert_eq!(
        prune_entries["items"][0]["actor_name"],
        env.admin_name.as_str()
    );
    assert_eq!(prune_entries["items"][0]["details"]["before"], cutoff);
}

#[tokio::test]
async fn the_system_report_shows_versions_engine_database_host_and_certificates() {
    let env = Env::start().await;
    // The engine's health is known once the control plane has prepared the orchestrator.
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let report = env.admin.get_ok("/api/v1/system").await;
        if report["engine"]["up"] == true || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(report["versions"]["flowcase"], env!("CARGO_PKG_VERSION"));
    assert!(
        report["versions"]["rust"]
            .as_str()
            .is_some_and(|v| v.starts_with("rustc ")),
        "{report:#}"
    );
    if let Some(commit) = report["versions"]["git_commit"].as_str() {
        assert!(commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()));
    }
    assert_eq!(report["database"]["backend"], "sqlite");
    assert!(
        report["database"]["server_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{report:#}"
    );
    assert_eq!(report["engine"]["up"], true, "{report:#}");
    assert!(
        report["engine"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("Docker Engine ")),
        "{report:#}"
    );
    assert!(report["engine"]["cpus"].as_i64().unwrap() >= 1);
    assert!(report["host"]["cpus"].as_u64().unwrap() >= 1);
    assert!(report["host"]["memory_total_bytes"].as_u64().unwrap() > 1 << 20);
    assert_eq!(report["host"]["load"].as_array().unwrap().len(), 3);
    assert_eq!(report["counts"]["users"], 1);
    assert_eq!(report["counts"]["tenants"], 1);
    assert_eq!(report["counts"]["groups"], 2);
    assert!(report["counts"]["instances"].is_object());
    let certs = &report["certificates"];
    assert_eq!(certs["known"], true, "{report:#}");
    let first = &certs["items"][0];
    assert_eq!(first["source"], "self-signed");
    assert!(
        first["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "localhost"),
        "{report:#}"
    );
    assert!(first["not_after"].as_i64().unwrap() > now_ms());

    // A tenant administrator sees their tenant's counts only.
    let (_, tenant_admin) = env.tenant_with_admin("Initech", "peter").await;
    let theirs = tenant_admin.get_ok("/api/v1/system").await;
    assert_eq!(theirs["counts"]["tenants"], 1);
    assert_eq!(theirs["counts"]["users"], 1);
    assert_eq!(theirs["counts"]["groups"], 1);
    let everything = env.admin.get_ok("/api/v1/system").await;
    assert_eq!(everything["counts"]["users"], 2);
    assert_eq!(everything["counts"]["tenants"], 2);
}

/// `GET /api/v1/audit`, `POST /api/v1/audit/prune` and `GET /api/v1/system` for each kind of
/// caller: status and stable error code.
#[tokio::test]
async fn the_audit_and_system_permission_matrix() {
    let env = Env::start().await;
    env.admin
        .send_ok(
            Method::POST,
            "/api/v1/users",
            json!({"username": "plain", "password": PASSWORD}),
            201,
        )
        .await;
    let plain = env.login("plain").await;
    let (_, tenant_admin) = env.tenant_with_admin("Initech", "peter").await;
    let anonymous = Api::anonymous(&env.gw, &env.dir);
    let admin_key = Api::with_key(&env.gw, &env.dir, &env.admin.create_key("ci").await);
    let plain_key = Api::with_key(&env.gw, &env.dir, &plain.create_key("mine").await);

    let prune = json!({"before": "2000-01-01T00:00:00Z"});
    let endpoints = [
        (Method::GET, "/api/v1/audit", None),
        (Method::POST, "/api/v1/audit/prune", Some(prune)),
        (Method::GET, "/api/v1/system", None),
    ];
    for (caller, api, expected) in [
        ("admin", &env.admin, [(200, ""), (200, ""), (200, "")]),
        (
            "admin API key",
            &admin_key,
            [(200, ""), (200, ""), (200, "")],
        ),
        (
            "other tenant's admin",
            &tenant_admin,
            [(200, ""), (403, "forbidden"), (200, "")],
        ),
        ("plain user", &plain, [(403, "forbidden"); 3]),
        ("plain user's API key", &plain_key, [(403, "forbidden"); 3]),
        ("anonymous", &anonymous, [(401, "unauthenticated"); 3]),
    ] {
        for ((method, path, body), (status, error)) in endpoints.iter().zip(expected) {
            let (got, answer) = api.call(method.clone(), path, body.clone()).await;
            assert_eq!(
                (got.as_u16(), code(&answer)),
                (status, error),
                "{caller}: {method} {path}: {answer}"
            );
        }
    }
}
