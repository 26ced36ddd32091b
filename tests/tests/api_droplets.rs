//! The droplets API through the real binary: the catalogue a user sees and the one an
//! administrator manages, the checks of every field (each refusal naming its field), secrets
//! that never come back, deletion refused while instances exist, image pulls streamed as
//! Server-Sent Events from a registry of ours on the real dockerd, imports from a catalogue
//! served by a local HTTP server (ours and the Python registry's format), a permission matrix
//! over every endpoint, and hostile names that round-trip as plain JSON strings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_admin::orchestrator::Actor;
use flowcase_admin::store::Store;
use flowcase_e2e::api::{Api, code};
use flowcase_e2e::icon_server::IconServer;
use flowcase_e2e::loopback::LoopbackServer;
use flowcase_e2e::orchestrator::{docker_orchestrator, orchestrator_options};
use flowcase_e2e::{Gateway, GatewayDir, Untag, read_credentials};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "a-long-enough-passphrase";
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

struct Env {
    dir: GatewayDir,
    gw: Gateway,
}

impl Env {
    async fn start() -> Env {
        let dir = GatewayDir::new();
        let gw = Gateway::start(&dir).await;
        Env { dir, gw }
    }

    async fn login(&self, username: &str, password: &str) -> Api {
        Api::login(&self.gw, &self.dir, username, password).await
    }

    async fn admin(&self) -> Api {
        let (username, password) = read_credentials(&self.dir.data_dir());
        self.login(&username, &password).await
    }

    fn anonymous(&self) -> Api {
        Api::anonymous(&self.gw, &self.dir)
    }

    async fn store(&self) -> Store {
        let db = format!(
            "sqlite://{}",
            self.dir.data_dir().join("flowcase.db").display()
        );
        Store::connect(&db).await.unwrap()
    }

    async fn audit(&self) -> Vec<(String, String)> {
        let url = format!(
            "sqlite://{}",
            self.dir.data_dir().join("flowcase.db").display()
        );
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT action, details_json FROM audit_log ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        pool.close().await;
        rows
    }
}

/// The administration and the streams this file's tests go through.
trait Droplets {
    async fn stream(&self, path: &str) -> (StatusCode, String, Vec<(String, Value)>);
    async fn stream_chunks(
        &self,
        path: &str,
    ) -> (StatusCode, String, Vec<(String, Value)>, Vec<String>);
    async fn create_user(&self, username: &str, tenant_id: Option<i64>, groups: &[i64]);
    async fn group_named(&self, name: &str) -> i64;
    async fn create_droplet(&self, body: Value) -> Value;
}

impl Droplets for Api {
    /// A POST answered with an event stream: the status, the content type and every event
    /// (name, data) once the stream ends.
    async fn stream(&self, path: &str) -> (StatusCode, String, Vec<(String, Value)>) {
        let (status, content_type, events, _) = self.stream_chunks(path).await;
        (status, content_type, events)
    }

    /// [`Self::stream`], with the body's pieces as they arrived.
    async fn stream_chunks(
        &self,
        path: &str,
    ) -> (StatusCode, String, Vec<(String, Value)>, Vec<String>) {
        let mut resp = self.request(Method::POST, path).send().await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut chunks = Vec::new();
        let wait = std::time::Duration::from_secs(120);
        while let Some(chunk) = tokio::time::timeout(wait, resp.chunk())
            .await
            .expect("the event stream ends")
            .unwrap()
        {
            chunks.push(String::from_utf8_lossy(&chunk).into_owned());
        }
        let events = sse_events(&chunks.concat());
        (status, content_type, events, chunks)
    }

    async fn create_user(&self, username: &str, tenant_id: Option<i64>, groups: &[i64]) {
        let (status, body) = self
            .post(
                "/api/v1/users",
                json!({"username": username, "password": PASSWORD, "tenant_id": tenant_id,
                       "group_ids": groups}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    async fn group_named(&self, name: &str) -> i64 {
        let (_, page) = self.get("/api/v1/groups?limit=200").await;
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap_or_else(|| panic!("no group {name}: {page}"))["id"]
            .as_i64()
            .unwrap()
    }

    async fn create_droplet(&self, body: Value) -> Value {
        let (status, created) = self.post("/api/v1/droplets", body).await;
        assert_eq!(status, 201, "{created}");
        created
    }
}

/// The events of an SSE body, in order.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            Some((name?, serde_json::from_str(&data).unwrap_or(Value::Null)))
        })
        .collect()
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {page}"))
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect()
}

fn web(name: &str) -> Value {
    json!({"name": name, "droplet_type": "http", "image": "127.0.0.1:9/flowcase/web:1", "ports": [8080]})
}

#[tokio::test]
async fn droplets_are_created_checked_listed_changed_and_deleted() {
    let env = Env::start().await;
    let admin = env.admin().await;
    let users = admin.group_named("User").await;
    admin.create_user("uma", None, &[users]).await;
    let uma = env.login("uma", PASSWORD).await;

    // A full droplet, with a hostile name and description that come back unchanged.
    let created = admin
        .create_droplet(json!({
            "name": HOSTILE,
            "description": format!("{HOSTILE} & \"quotes\""),
            "droplet_type": "http",
            "image": "127.0.0.1:9/flowcase/web:1",
            "icon_url": "/assets/icons/web.svg",
            "cpu_cores": 1.5,
            "memory_mb": 512,
            "ports": [8080, 9000],
            "idle_timeout_secs": 1800,
            "max_lifetime_secs": 0,
            "env": {"GREETING": "hello"},
            "labels": {"team": "blue"},
            "registry_username": "puller",
            "registry_password": "Reg-secret-93f1",
        }))
        .await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["name"], HOSTILE);
    assert_eq!(created["description"], format!("{HOSTILE} & \"quotes\""));
    for (key, value) in [
        ("droplet_type", json!("http")),
        ("target", json!("container")),
        ("image", json!("127.0.0.1:9/flowcase/web:1")),
        ("icon_url", json!("/assets/icons/web.svg")),
        ("cpu_cores", json!(1.5)),
        ("memory_mb", json!(512)),
        ("active", json!(true)),
        ("ports", json!([8080, 9000])),
        ("idle_timeout_secs", json!(1800)),
        ("max_lifetime_secs", json!(0)),
        ("pool_size", json!(0)),
        ("group_ids", json!([])),
        ("has_registry_credentials", json!(true)),
        ("external_host", Value::Null),
        ("external_port", Value::Null),
        ("env", json!({"GREETING": "hello"})),
        ("labels", json!({"team": "blue"})),
    ] {
        assert_eq!(created[key], value, "{key} in {created}");
    }
    assert!(created["tenant_id"].is_i64());
    assert!(!created.to_string().contains("Reg-secret-93f1"));

    // Not granted to any group yet: not in uma's catalogue, and not found by id.
    let path = format!("/api/v1/droplets/{id}");
    let (_, page) = uma.get("/api/v1/droplets").await;
    assert_eq!(page["total"], 0, "{page}");
    let (status, body) = uma.get(&path).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    // Granted to the User group: in the catalogue, without the administrators' fields.
    let (status, body) = admin
        .call(
            Method::PUT,
            &format!("{path}/groups"),
            Some(json!({"group_ids": [users]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["group_ids"], json!([users]));
    let (_, page) = uma.get("/api/v1/droplets").await;
    assert_eq!(names(&page), [HOSTILE]);
    let (status, seen) = uma.get(&path).await;
    assert_eq!(status, 200);
    assert_eq!(seen["name"], HOSTILE);
    for admin_only in ["env", "labels", "registry", "has_registry_credentials"] {
        assert!(seen.get(admin_only).is_none(), "{admin_only} in {seen}");
    }
    let (status, body) = uma.get("/api/v1/droplets?scope=all").await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));

    // Every field is checked, and the refusal names it.
    for (change, field) in [
        (json!({"image": "bad image"}), "image"),
        (json!({"image": "Upper/Case:1"}), "image"),
        (json!({"image": "a/b:-tag"}), "image"),
        (json!({"image": null}), "image"),
        (json!({"ports": [70000]}), "ports"),
        (json!({"ports": "8080"}), "ports"),
        (json!({"memory_mb": 2}), "memory_mb"),
        (json!({"cpu_cores": 0}), "cpu_cores"),
        (json!({"cpu_cores": 5000}), "cpu_cores"),
        (json!({"env": {"BAD-NAME": "x"}}), "env"),
        (json!({"labels": {"flowcase.owner": "me"}}), "labels"),
        (json!({"icon_url": "javascript:alert(1)"}), "icon_url"),
        (json!({"icon_url": "ftp://cdn.example/a.png"}), "icon_url"),
        (json!({"droplet_type": "telnet"}), "droplet_type"),
        (json!({"name": ""}), "name"),
        (json!({"name": "a\u{7}b"}), "name"),
        (json!({"external_port": 22}), "external_port"),
        (
            json!({"registry_password": "Reg-secret-93f1"}),
            "registry_username",
        ),
        (json!({"is_admin": true}), "body"),
        (json!({"group_ids": [999_999]}), "group_ids"),
        (json!({"target": "external"}), "target"),
    ] {
        let (status, body) = admin.patch(&path, change.clone()).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            "{change}: {body}"
        );
        assert_eq!(body["error"]["field"], field, "{change}: {body}");
        assert!(!body.to_string().contains("Reg-secret-93f1"), "{body}");
    }
    for (body, field) in [
        (
            json!({"droplet_type": "http", "image": "a:1", "ports": [80]}),
            "name",
        ),
        (
            json!({"name": "No type", "image": "a:1", "ports": [80]}),
            "droplet_type",
        ),
        (
            json!({"name": "No port", "droplet_type": "http", "image": "a:1"}),
            "ports",
        ),
        (
            json!({"name": "Ext", "droplet_type": "ssh", "target": "external"}),
            "external_host",
        ),
        (
            json!({"name": "Ext", "droplet_type": "http", "external_host": "h.example"}),
            "droplet_type",
        ),
        (
            json!({"name": "Ext", "droplet_type": "ssh", "external_host": "bad host"}),
            "external_host",
        ),
        (
            json!({"name": "Ext", "droplet_type": "ssh", "external_host": "h.example",
                   "registry_username": "u", "registry_password": "p"}),
            "registry_username",
        ),
    ] {
        let (status, answer) = admin.post("/api/v1/droplets", body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let (status, body) = admin.post("/api/v1/droplets", web(HOSTILE)).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));

    // A change keeps what it does not name; null clears; the result is checked whole.
    let (status, body) = admin
        .patch(
            &path,
            json!({"memory_mb": null, "active": false, "description": "plain"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["memory_mb"], Value::Null);
    assert_eq!(body["cpu_cores"], 1.5);
    assert_eq!(body["ports"], json!([8080, 9000]));
    assert_eq!(body["active"], false);
    assert_eq!(body["has_registry_credentials"], true);
    // Inactive: out of the catalogue, still listed for administrators.
    let (_, page) = uma.get("/api/v1/droplets").await;
    assert_eq!(page["total"], 0);
    let (status, body) = admin
        .patch(&path, json!({"registry_username": null, "active": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["has_registry_credentials"], false);

    // An external host, with its password write-only.
    let host = admin
        .create_droplet(json!({
            "name": "Build server",
            "droplet_type": "ssh",
            "external_host": "127.0.0.1",
            "external_port": 2222,
            "external_username": "ci",
            "external_password": "Host-secret-5c2e",
        }))
        .await;
    assert_eq!(host["target"], "external");
    assert_eq!(host["external_host"], "127.0.0.1");
    assert_eq!(host["external_port"], 2222);
    assert_eq!(host["has_external_credentials"], true);
    assert_eq!(host["image"], Value::Null);
    assert!(!host.to_string().contains("Host-secret-5c2e"));

    // Filters and pages over every droplet of the tenant.
    for name in ["Alpha desk", "Beta desk", "Gamma app"] {
        admin
            .create_droplet(json!({"name": name, "droplet_type": "vnc",
                                   "image": "127.0.0.1:9/flowcase/desk:1", "ports": [5901],
                                   "active": name != "Gamma app"}))
            .await;
    }
    let (_, page) = admin.get("/api/v1/droplets?scope=all").await;
    assert_eq!(page["total"], 5, "{page}");
    let (_, page) = admin.get("/api/v1/droplets?scope=all&q=DESK").await;
    assert_eq!(names(&page), ["Alpha desk", "Beta desk"]);
    let (_, page) = admin.get("/api/v1/droplets?scope=all&type=ssh").await;
    assert_eq!(names(&page), ["Build server"]);
    let (_, page) = admin
        .get("/api/v1/droplets?scope=all&type=vnc&active=false")
        .await;
    assert_eq!(names(&page), ["Gamma app"]);
    let (_, page) = admin
        .get("/api/v1/droplets?scope=all&limit=2&offset=1")
        .await;
    assert_eq!(
        (page["total"].clone(), page["limit"].clone()),
        (json!(5), json!(2))
    );
    assert_eq!(names(&page), ["Alpha desk", "Beta desk"]);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    for (query, field) in [
        ("type=ftp", "type"),
        ("active=maybe", "active"),
        ("scope=everything", "scope"),
        ("limit=0", "limit"),
    ] {
        let (status, body) = admin
            .get(&format!("/api/v1/droplets?scope=all&{query}"))
            .await;
        assert_eq!(status, 422, "{query}");
        assert_eq!(body["error"]["field"], field, "{query}");
    }

    // Deleting: refused while an instance of it exists, allowed once it is gone.
    let store = env.store().await;
    let orchestrator = docker_orchestrator(&env.dir, &store, orchestrator_options(&env.dir));
    let host_id = host["id"].as_i64().unwrap();
    let droplet = store.get_droplet(host_id).await.unwrap().unwrap();
    let uma_user = store.find_user_by_login("uma").await.unwrap().unwrap();
    let (instance, _) = orchestrator.launch(&uma_user, &droplet).await.unwrap();
    let host_path = format!("/api/v1/droplets/{host_id}");
    let (status, body) = admin.call(Method::DELETE, &host_path, None).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "in_use"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 instance")
    );
    orchestrator
        .destroy(instance.id, &Actor::system())
        .await
        .unwrap();
    let (status, _) = admin.call(Method::DELETE, &host_path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin.get(&host_path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    store.close().await;

    // Every change is audited, never with a secret.
    let audit = env.audit().await;
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    for action in [
        "droplet.create",
        "droplet.groups",
        "droplet.update",
        "droplet.delete",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    for (_, details) in &audit {
        assert!(!details.contains("Reg-secret-93f1") && !details.contains("Host-secret-5c2e"));
    }
}

/// One request of the matrix and the status and error code it must get.
type Case = (Method, String, Option<Value>, (StatusCode, &'static str));

/// Who calls, in the permission matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Admin,
    User,
    OtherTenantUser,
    OtherTenantAdmin,
    Anonymous,
    ApiKey,
}

#[tokio::test]
async fn every_endpoint_answers_each_kind_of_caller_as_it_should() {
    let env = Env::start().await;
    let admin = env.admin().await;
    let users = admin.group_named("User").await;
    admin.create_user("uma", None, &[users]).await;
    let (_, beta) = admin.post("/api/v1/tenants", json!({"name": "Beta"})).await;
    let beta = beta["id"].as_i64().unwrap();
    let beta_users = admin.create_group(Some(beta), "Beta users", &[]).await;
    let beta_admins = admin
        .create_group(
            Some(beta),
            "Beta droplet admins",
            &["view_droplets", "edit_droplets", "edit_registry"],
        )
        .await;
    admin.create_user("otto", Some(beta), &[beta_users]).await;
    admin.create_user("bea", Some(beta), &[beta_admins]).await;
    let (status, key) = admin
        .post("/api/v1/account/api-keys", json!({"name": "matrix"}))
        .await;
    assert_eq!(status, 201);
    let key = Api::with_key(&env.gw, &env.dir, key["token"].as_str().unwrap());
    let callers = [
        (Who::Admin, env.admin().await),
        (Who::User, env.login("uma", PASSWORD).await),
        (Who::OtherTenantUser, env.login("otto", PASSWORD).await),
        (Who::OtherTenantAdmin, env.login("bea", PASSWORD).await),
        (Who::Anonymous, env.anonymous()),
        (Who::ApiKey, key),
    ];

    // A droplet of the default tenant in uma's catalogue; its image's registry does not
    // exist, so pulls fail fast (inside the stream).
    let shared = admin
        .create_droplet(json!({"name": "Shared", "droplet_type": "http",
                               "image": "127.0.0.1:9/flowcase/none:v1", "ports": [80],
                               "group_ids": [users]}))
        .await;
    let id = shared["id"].as_i64().unwrap();

    use Who::*;
    let sse = StatusCode::OK;
    for (who, api) in &callers {
        let who = *who;
        let refused = |admin_ok: StatusCode| match who {
            Admin | ApiKey => (admin_ok, ""),
            User | OtherTenantUser => (StatusCode::FORBIDDEN, "forbidden"),
            OtherTenantAdmin => (StatusCode::NOT_FOUND, "not_found"),
            Anonymous => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        };
        // Each caller deletes a droplet of its own making, so deletions do not collide.
        let victim = admin.create_droplet(web(&format!("Victim {who:?}"))).await["id"]
            .as_i64()
            .unwrap();
        let cases: Vec<Case> = vec![
            (
                Method::GET,
                "/api/v1/droplets".into(),
                None,
                match who {
                    Anonymous => (StatusCode::UNAUTHORIZED, "unauthenticated"),
                    _ => (StatusCode::OK, ""),
                },
            ),
            (
                Method::GET,
                "/api/v1/droplets?scope=all".into(),
                None,
                match who {
                    Admin | ApiKey | OtherTenantAdmin => (StatusCode::OK, ""),
                    User | OtherTenantUser => (StatusCode::FORBIDDEN, "forbidden"),
                    Anonymous => (StatusCode::UNAUTHORIZED, "unauthenticated"),
                },
            ),
            (
                Method::GET,
                format!("/api/v1/droplets/{id}"),
                None,
                match who {
                    Admin | ApiKey | User => (StatusCode::OK, ""),
                    OtherTenantUser | OtherTenantAdmin => (StatusCode::NOT_FOUND, "not_found"),
                    Anonymous => (StatusCode::UNAUTHORIZED, "unauthenticated"),
                },
            ),
            (
                Method::POST,
                "/api/v1/droplets".into(),
                Some(web(&format!("Made by {who:?}"))),
                match who {
                    OtherTenantAdmin => (StatusCode::CREATED, ""),
                    _ => refused(StatusCode::CREATED),
                },
            ),
            (
                Method::PATCH,
                format!("/api/v1/droplets/{id}"),
                Some(json!({"description": format!("seen by {who:?}")})),
                refused(StatusCode::OK),
            ),
            (
                Method::PUT,
                format!("/api/v1/droplets/{id}/groups"),
                Some(json!({"group_ids": [users]})),
                refused(StatusCode::OK),
            ),
            (
                Method::POST,
                format!("/api/v1/droplets/{id}/pull"),
                None,
                refused(sse),
            ),
            (
                Method::POST,
                "/api/v1/droplets/import".into(),
                Some(json!({"url": "ftp://catalogue.example/droplets.json"})),
                match who {
                    // Past the rights check, the URL is refused.
                    Admin | ApiKey | OtherTenantAdmin => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
                    }
                    User | OtherTenantUser => (StatusCode::FORBIDDEN, "forbidden"),
                    Anonymous => (StatusCode::UNAUTHORIZED, "unauthenticated"),
                },
            ),
            (
                Method::DELETE,
                format!("/api/v1/droplets/{victim}"),
                None,
                refused(StatusCode::NO_CONTENT),
            ),
            (
                Method::GET,
                "/api/v1/droplets/not-a-number".into(),
                None,
                match who {
                    Anonymous => (StatusCode::UNAUTHORIZED, "unauthenticated"),
                    _ => (StatusCode::NOT_FOUND, "not_found"),
                },
            ),
        ];
        for (method, path, body, (status, want_code)) in cases {
            let is_pull = path.ends_with("/pull");
            let (got, answer) = if is_pull && status == sse {
                let (got, content_type, events) = api.stream(&path).await;
                assert!(
                    content_type.starts_with("text/event-stream"),
                    "{content_type}"
                );
                let last = events.last().unwrap();
                assert_eq!(last.0, "error", "{events:?}");
                assert!(
                    last.1["code"].as_str().unwrap().starts_with("registry"),
                    "{events:?}"
                );
                (got, Value::Null)
            } else {
                api.call(method.clone(), &path, body).await
            };
            assert_eq!(got, status, "{who:?} {method} {path}: {answer}");
            assert_eq!(
                code(&answer),
                want_code,
                "{who:?} {method} {path}: {answer}"
            );
        }
        // Pull-all: a stream for droplet administrators, over their own tenant only.
        let (status, content_type, events) = api.stream("/api/v1/droplets/pull-all").await;
        match who {
            Admin | ApiKey | OtherTenantAdmin => {
                assert_eq!(status, 200);
                assert!(content_type.starts_with("text/event-stream"));
                let done = &events.last().unwrap().1;
                let expected = if who == OtherTenantAdmin { 1 } else { 0 };
                assert!(done["total"].as_u64().unwrap() >= expected, "{events:?}");
                for (name, data) in &events {
                    if name == "droplet" && who == OtherTenantAdmin {
                        assert_ne!(data["droplet_id"], id, "another tenant's droplet pulled");
                    }
                }
            }
            _ => assert_ne!(status, 200, "{who:?}"),
        }
    }

    // The catalogue of a user of another tenant does not hold our droplet.
    let (_, page) = callers[2].1.get("/api/v1/droplets").await;
    assert_eq!(page["total"], 0, "{page}");
    // Beta's administrator lists Beta only.
    let (_, page) = callers[3].1.get("/api/v1/droplets?scope=all").await;
    assert_eq!(names(&page), ["Made by OtherTenantAdmin"]);
    // A session without its CSRF token changes nothing.
    let resp = callers[0]
        .1
        .bare(Method::DELETE, &format!("/api/v1/droplets/{id}"))
        .header("origin", env.gw.origin())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "csrf_failed");
}

#[tokio::test]
async fn a_pull_streams_progress_and_log_then_done_and_failures_are_error_events() {
    const REGISTRY_PASSWORD: &str = "Pull-secret-2b7d";
    let env = Env::start().await;
    let admin = env.admin().await;
    // Unique per run: parallel tests share one dockerd.
    let repository = format!("flowcase/api-{}", env.dir.deployment());
    let pushed = repository.clone();
    let registry = tokio::task::spawn_blocking(move || {
        let image = flowcase_test_images::httpd_image()?;
        let registry =
            flowcase_test_images::registry::Registry::start(Some(("puller", REGISTRY_PASSWORD)))?;
        registry.push(&pushed, "v1", &image)?;
        Ok::<_, String>(registry)
    })
    .await
    .unwrap()
    .unwrap();
    let reference = registry.reference(&repository, "v1");
    let missing = registry.reference(&repository, "v9");
    let _untag = Untag(vec![reference.clone()]);
    let credentials = json!({"registry_username": "puller",
                             "registry_password": REGISTRY_PASSWORD});
    let mut body = json!({"name": "Web", "droplet_type": "http", "image": reference,
                          "ports": [8080]});
    body.as_object_mut()
        .unwrap()
        .extend(credentials.as_object().unwrap().clone());
    let web = admin.create_droplet(body.clone()).await;
    body["name"] = json!("Missing");
    body["image"] = json!(missing);
    let gone = admin.create_droplet(body).await;
    let anonymous = admin
        .create_droplet(json!({"name": "Anonymous", "droplet_type": "http",
                               "image": reference, "ports": [8080]}))
        .await;

    // Progress as it comes, a readable log, then `done` naming the image.
    let (status, content_type, events, chunks) = admin
        .stream_chunks(&format!("/api/v1/droplets/{}/pull", web["id"]))
        .await;
    // Live: the events come through the front door as they happen, not all at the end.
    assert!(chunks.len() > 2, "{chunks:?}");
    assert!(!chunks[0].contains("event: done"), "{chunks:?}");
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let progress: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "progress")
        .map(|(_, d)| d)
        .collect();
    assert!(!progress.is_empty(), "{events:?}");
    for p in &progress {
        for key in ["layer", "status", "current", "total"] {
            assert!(p.get(key).is_some(), "{key} in {p}");
        }
    }
    assert!(
        progress.iter().any(|p| p["layer"].is_string()),
        "{events:?}"
    );
    let log: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "log")
        .map(|(_, d)| d["line"].as_str().unwrap())
        .collect();
    assert!(log.iter().any(|l| l.contains("Pulling from")), "{log:?}");
    assert!(
        log.iter().any(|l| l.ends_with(": Pull complete")),
        "{log:?}"
    );
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "done", "{events:?}");
    assert_eq!(data["image"], reference.as_str());
    let first_progress = events.iter().position(|(n, _)| n == "progress").unwrap();
    assert!(first_progress < events.len() - 1);
    let inspect = std::process::Command::new("docker")
        .args(["image", "inspect", &reference])
        .output()
        .unwrap();
    assert!(inspect.status.success(), "the image is on the engine");

    // A tag the registry does not have, and a registry refusing anonymous pulls.
    let (status, _, events) = admin
        .stream(&format!("/api/v1/droplets/{}/pull", gone["id"]))
        .await;
    assert_eq!(status, 200);
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "error", "{events:?}");
    assert_eq!(data["code"], "image_missing", "{data}");
    assert!(
        data["message"].as_str().unwrap().contains(&missing),
        "{data}"
    );
    let (_, _, events) = admin
        .stream(&format!("/api/v1/droplets/{}/pull", anonymous["id"]))
        .await;
    assert_eq!(
        events.last().unwrap().1["code"],
        "registry_refused",
        "{events:?}"
    );

    // An external host has no image: refused before any stream starts.
    let host = admin
        .create_droplet(json!({"name": "Host", "droplet_type": "ssh",
                               "external_host": "127.0.0.1"}))
        .await;
    let (status, body) = admin
        .call(
            Method::POST,
            &format!("/api/v1/droplets/{}/pull", host["id"]),
            None,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "image");

    // Pull all: one result per container droplet, then the totals.
    let (status, _, events) = admin.stream("/api/v1/droplets/pull-all").await;
    assert_eq!(status, 200);
    let results: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "result")
        .map(|(_, d)| d)
        .collect();
    let outcome = |id: &Value| {
        results
            .iter()
            .find(|r| r["droplet_id"] == *id)
            .unwrap_or_else(|| panic!("no result for {id}: {events:?}"))
    };
    assert_eq!(outcome(&web["id"])["ok"], true);
    assert_eq!(outcome(&web["id"])["image"], reference.as_str());
    assert_eq!(outcome(&gone["id"])["code"], "image_missing");
    assert_eq!(outcome(&anonymous["id"])["code"], "registry_refused");
    assert!(results.iter().all(|r| r["droplet_id"] != host["id"]));
    assert!(
        events
            .iter()
            .any(|(n, d)| n == "log" && d["droplet_id"] == web["id"]),
        "{events:?}"
    );
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done");
    assert_eq!(done, &json!({"total": 3, "pulled": 1, "failed": 2}));

    let audit = env.audit().await;
    assert!(audit.iter().filter(|(a, _)| a == "droplet.pull").count() >= 6);
    assert!(audit.iter().all(|(_, d)| !d.contains(REGISTRY_PASSWORD)));
}

/// A catalogue server on loopback until dropped: each path answers its body (others: 404).
async fn serve_catalogues(files: Vec<(&'static str, String)>) -> LoopbackServer {
    use axum::routing::get;
    let mut app = axum::Router::new();
    for (path, body) in files {
        app = app.route(path, get(move || async move { body }));
    }
    LoopbackServer::start(app).await
}

/// The icons of an imported catalogue are fetched a few at a time, not one after another (each
/// may take up to its time limit), and every one is kept.
#[tokio::test]
async fn a_catalogues_icons_are_fetched_a_few_at_a_time() {
    let env = Env::start().await;
    let admin = env.admin().await;
    let site = IconServer::start().await;
    let entries: Vec<Value> = (0..6)
        .map(|i| {
            json!({"name": format!("Slow icon {i}"), "type": "http",
                   "image": "127.0.0.1:9/a/slow:1", "port": 80,
                   "icon": site.url(&format!("/slow/{i}.png"))})
        })
        .collect();
    let catalogues =
        serve_catalogues(vec![("/slow.json", Value::Array(entries).to_string())]).await;
    let (status, report) = admin
        .post(
            "/api/v1/droplets/import",
            json!({ "url": catalogues.url("/slow.json") }),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let entries = report["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 6, "{report}");
    for entry in entries {
        assert_eq!(entry["status"], "imported", "{report}");
        assert!(entry.get("icon_error").is_none(), "{report}");
        let (_, droplet) = admin
            .get(&format!("/api/v1/droplets/{}", entry["id"]))
            .await;
        assert!(
            droplet["icon_src"]
                .as_str()
                .is_some_and(|src| src.starts_with("/droplets/")),
            "served by the gateway: {droplet}"
        );
    }
    let most = site.most_slow_at_once();
    assert!((2..=4).contains(&most), "{most} icon fetches at once");
}

#[tokio::test]
async fn a_catalogue_is_imported_entry_by_entry_and_nothing_half_valid_lands() {
    let env = Env::start().await;
    let admin = env.admin().await;
    admin
        .create_droplet(json!({"name": "Existing", "droplet_type": "http",
                               "image": "127.0.0.1:9/a/c:1", "ports": [80]}))
        .await;
    let ours = json!([
        {"name": "Imported web", "type": "http", "image": "127.0.0.1:9/a/web:1",
         "port": 8080, "group": ["User"], "icon": "https://127.0.0.1:9/web.svg"},
        {"name": HOSTILE, "type": "vnc", "image": "127.0.0.1:9/a/desk:1", "port": 5901,
         "description": "<script>alert(1)</script>"},
        {"name": "Half valid", "type": "http", "image": "127.0.0.1:9/a/b:1", "port": 8080,
         "memory": "lots", "icon": "javascript:alert(1)"},
        {"name": "Existing", "type": "http", "image": "127.0.0.1:9/a/c:1", "port": 80},
        {"name": "Ghost group", "type": "http", "image": "127.0.0.1:9/a/d:1", "port": 80,
         "group": ["Nobody"]},
        "not an object",
        {"name": "Imported web", "type": "http", "image": "127.0.0.1:9/a/e:1", "port": 80}
    ]);
    let python = json!({"droplets": [
        {"display_name": "Firefox", "description": "Browser", "droplet_type": "container",
         "container_docker_image": "flowcase/firefox:latest",
         "container_docker_registry": "127.0.0.1:9", "container_cores": 2,
         "container_memory": "2g", "image_path": "https://127.0.0.1:9/ff.png", "port": 6901},
        {"display_name": "Legacy desktop", "droplet_type": "vnc", "server_ip": "10.0.0.5",
         "server_port": 5901, "server_username": "u", "server_password": "pw-legacy-77"},
        {"display_name": "No port", "droplet_type": "container",
         "container_docker_image": "a/b:1"}
    ]});
    let catalogues = serve_catalogues(vec![
        ("/ours.json", ours.to_string()),
        ("/registry/droplets.json", python.to_string()),
        ("/big.json", format!("[{}]", " ".repeat(2 << 20))),
        ("/text", "<html>not json</html>".to_owned()),
    ])
    .await;
    let base = catalogues.url("");
    let import = |path: &str, dry_run: bool| {
        let url = format!("{base}{path}");
        let query = if dry_run { "?dry_run=true" } else { "" };
        let admin = &admin;
        async move {
            admin
                .post(
                    &format!("/api/v1/droplets/import{query}"),
                    json!({ "url": url }),
                )
                .await
        }
    };
    let statuses = |report: &Value| -> Vec<String> {
        report["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["status"].as_str().unwrap().to_owned())
            .collect()
    };
    let count = || async { admin.get("/api/v1/droplets?scope=all").await.1["total"].clone() };

    // A dry run reports what would happen and writes nothing.
    let before = count().await;
    let (status, report) = import("/ours.json", true).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["dry_run"], true);
    assert_eq!(
        statuses(&report),
        [
            "would_import",
            "would_import",
            "invalid",
            "skipped",
            "invalid",
            "invalid",
            "skipped"
        ]
    );
    assert_eq!(count().await, before);

    let (status, report) = import("/ours.json", false).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        statuses(&report),
        [
            "imported", "imported", "invalid", "skipped", "invalid", "invalid", "skipped"
        ]
    );
    assert_eq!(
        (&report["imported"], &report["skipped"], &report["invalid"]),
        (&json!(2), &json!(2), &json!(3))
    );
    let entries = report["entries"].as_array().unwrap();
    let half: Vec<&str> = entries[2]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(half, ["memory", "icon"], "{report}");
    assert!(
        entries[2]["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("MiB")
    );
    assert!(
        entries[3]["reason"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    assert_eq!(entries[4]["errors"][0]["field"], "group");
    assert_eq!(entries[5]["errors"][0]["field"], "(entry)");
    assert_eq!(entries[1]["name"], HOSTILE);
    // An icon nobody serves: imported all the same, and the report says why it has none.
    assert!(
        entries[0]["icon_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot fetch")),
        "{report}"
    );
    assert!(entries[1].get("icon_error").is_none(), "{report}");

    // What was imported is there, exactly; what was invalid is not, not even in part.
    let id = entries[0]["id"].as_i64().unwrap();
    let (_, web) = admin.get(&format!("/api/v1/droplets/{id}")).await;
    assert_eq!(web["name"], "Imported web");
    assert_eq!(web["icon_url"], "https://127.0.0.1:9/web.svg");
    assert_eq!(web["group_ids"], json!([admin.group_named("User").await]));
    let (_, desk) = admin
        .get(&format!("/api/v1/droplets/{}", entries[1]["id"]))
        .await;
    assert_eq!(desk["name"], HOSTILE);
    assert_eq!(desk["description"], "<script>alert(1)</script>");
    for absent in ["Half", "Ghost"] {
        let (_, page) = admin
            .get(&format!("/api/v1/droplets?scope=all&q={absent}"))
            .await;
        assert_eq!(page["total"], 0, "{absent}: {page}");
    }

    // The Python registry's format: translated, checked the same way.
    let (status, report) = import("/registry/droplets.json", false).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        statuses(&report),
        ["imported", "invalid", "invalid"],
        "{report}"
    );
    let entries = report["entries"].as_array().unwrap();
    let (_, firefox) = admin
        .get(&format!("/api/v1/droplets/{}", entries[0]["id"]))
        .await;
    assert_eq!(firefox["image"], "127.0.0.1:9/flowcase/firefox:latest");
    assert_eq!(firefox["memory_mb"], 2048);
    assert_eq!(firefox["cpu_cores"], 2.0);
    assert_eq!(firefox["droplet_type"], "http");
    assert_eq!(firefox["ports"], json!([6901]));
    assert_eq!(firefox["icon_url"], "https://127.0.0.1:9/ff.png");
    assert_eq!(
        entries[1]["errors"][0]["field"], "server_password",
        "{report}"
    );
    assert_eq!(entries[2]["errors"][0]["field"], "port", "{report}");
    assert!(!report.to_string().contains("pw-legacy-77"));

    // Bad URLs and bad documents are refused as a whole, naming the url.
    for (url, words) in [
        ("file:///etc/passwd".to_owned(), "http"),
        (format!("{base}/missing.json"), "404"),
        (format!("{base}/big.json"), "larger"),
        (format!("{base}/text"), "JSON"),
        ("http://user:pw@127.0.0.1:9/c.json".to_owned(), "password"),
    ] {
        let (status, body) = admin
            .post("/api/v1/droplets/import", json!({ "url": url }))
            .await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(body["error"]["field"], "url", "{url}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{url}: {message}");
    }

    let audit = env.audit().await;
    let imports: Vec<&String> = audit
        .iter()
        .filter(|(a, _)| a == "droplet.import")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(imports.len(), 2, "dry runs are not audited: {imports:?}");
    assert!(audit.iter().all(|(_, d)| !d.contains("pw-legacy-77")));
}
