//! Workshops through the real binary and a real dockerd: an administrator builds a workshop (a
//! template of droplets for participants, one added through a group), starts it, sees every
//! participant's instance come up, stops it all, starts it again (the same instances wake), and
//! deletes it; a second "start all" launches nothing twice. The permission matrix (administrator,
//! plain user, administrator of another tenant, anonymous, API keys) covers every workshop
//! endpoint, and hostile names come back unchanged as JSON strings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use flowcase_admin::store::Store;
use flowcase_e2e::api::{Api, code};
use flowcase_e2e::instances::{httpd_droplet, users_group};
use flowcase_e2e::{Gateway, GatewayDir, read_credentials};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "a-long-enough-passphrase";
const HOSTILE: &str = "<img src=x onerror=alert(1)>\"'&amp;</script>";

struct Env {
    dir: GatewayDir,
    gw: Gateway,
    admin: Api,
    store: Store,
}

impl Env {
    async fn start() -> Env {
        let dir = GatewayDir::new();
        let gw = Gateway::start(&dir).await;
        let (name, password) = read_credentials(&dir.data_dir());
        let admin = Api::login(&gw, &dir, &name, &password).await;
        let store = Store::connect(&format!(
            "sqlite://{}",
            dir.data_dir().join("flowcase.db").display()
        ))
        .await
        .unwrap();
        Env {
            dir,
            gw,
            admin,
            store,
        }
    }

    /// A user of `tenant_id` (the admin's own when `None`) in `group_ids`; returns their id.
    async fn user(&self, name: &str, tenant_id: Option<i64>, group_ids: &[i64]) -> i64 {
        let mut body = json!({"username": name, "password": PASSWORD, "group_ids": group_ids});
        if let Some(t) = tenant_id {
            body["tenant_id"] = json!(t);
        }
        let created = self
            .admin
            .send_ok(Method::POST, "/api/v1/users", body, 201)
            .await;
        created["id"].as_i64().unwrap()
    }

    async fn group(&self, name: &str, tenant_id: Option<i64>, rights: &[&str]) -> i64 {
        let permissions: serde_json::Map<String, Value> = rights
            .iter()
            .map(|r| ((*r).to_owned(), json!(true)))
            .collect();
        let mut body = json!({"name": name, "permissions": permissions});
        if let Some(t) = tenant_id {
            body["tenant_id"] = json!(t);
        }
        let created = self
            .admin
            .send_ok(Method::POST, "/api/v1/groups", body, 201)
            .await;
        created["id"].as_i64().unwrap()
    }

    async fn login(&self, name: &str) -> Api {
        Api::login(&self.gw, &self.dir, name, PASSWORD).await
    }

    /// An http droplet of the default tenant running the locally built test web server.
    async fn http_droplet(&self, name: &str) -> i64 {
        let tenant = self.store.default_tenant().await.unwrap().unwrap();
        let droplet = httpd_droplet(tenant.id, name).await;
        self.store.create_droplet(&droplet, 0).await.unwrap().id
    }

    /// Polls the workshop until every participant's summary state is `state`.
    async fn wait_for_state(&self, id: i64, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let view = self.admin.get_ok(&format!("/api/v1/workshops/{id}")).await;
            let states: Vec<&str> = view["participants"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["state"].as_str().unwrap())
                .collect();
            if states.iter().all(|s| *s == state) {
                return view;
            }
            assert!(!states.contains(&"failed"), "a launch failed: {view:#}");
            assert!(Instant::now() < deadline, "never all {state}: {view:#}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn instance_ids(view: &Value) -> Vec<i64> {
    let mut ids: Vec<i64> = view["participants"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["instances"].as_array().unwrap().clone())
        .map(|i| i["instance_id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn a_workshop_starts_and_stops_every_participants_instances() {
    let env = Env::start().await;
    let droplet = env.http_droplet("Lab web server").await;
    let alice = env.user("alice", None, &[]).await;
    let class = env.group("Class of 2026", None, &[]).await;
    let bob = env.user("bob", None, &[class]).await;

    let created = env
        .admin
        .send_ok(
            Method::POST,
            "/api/v1/workshops",
            json!({
                "name": "Intro to the web",
                "description": "first steps",
                "starts_at": "2026-03-01T09:00:00Z",
                "ends_at": "2026-03-01T17:00:00+00:00",
                "user_ids": [alice],
            }),
            201,
        )
        .await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["status"], "scheduled");
    assert_eq!(created["starts_at"], 1_772_355_600_000_i64);
    assert_eq!(created["participants"].as_array().unwrap().len(), 1);

    // Starting without droplets is refused and changes nothing.
    let (status, body) = env
        .admin
        .call(Method::POST, &format!("/api/v1/workshops/{id}/start"), None)
        .await;
    assert_eq!(
        (status.as_u16(), code(&body)),
        (422, "invalid_input"),
        "{body}"
    );

    let view = env
        .admin
        .send_ok(
            Method::PUT,
            &format!("/api/v1/workshops/{id}/droplets"),
            json!({"droplet_ids": [droplet]}),
            200,
        )
        .await;
    assert_eq!(view["droplets"][0]["name"], "Lab web server");
    assert_eq!(view["droplets"][0]["type"], "http");
    // The group's members join; alice stays.
    let view = env
        .admin
        .send_ok(
            Method::PUT,
            &format!("/api/v1/workshops/{id}/participants"),
            json!({"group_id": class}),
            200,
        )
        .await;
    let names: Vec<&str> = view["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(view["group_id"], class);
    assert!(
        view["participants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "not_started")
    );

    // Start all: answered at once, the launches follow in the background. A second "start
    // all" right away launches nothing twice.
    let started = env
        .admin
        .send_ok(
            Method::POST,
            &format!("/api/v1/workshops/{id}/start"),
            json!({}),
            202,
        )
        .await;
    assert_eq!(started["status"], "running");
    env.admin
        .send_ok(
            Method::POST,
            &format!("/api/v1/workshops/{id}/start"),
            json!({}),
            202,
        )
        .await;
    let running = env.wait_for_state(id, "running").await;
    let first_ids = instance_ids(&running);
    assert_eq!(first_ids.len(), 2);
    for user in [alice, bob] {
        let live: Vec<_> = env
            .store
            .list_instances_for_user(user)
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.status.as_str() != "gone")
            .collect();
        assert_eq!(
            live.len(),
            1,
            "exactly one instance for user {user}: {live:?}"
        );
        assert_eq!(live[0].droplet_id, droplet);
    }
    for p in running["participants"].as_array().unwrap() {
        assert_eq!(p["instances"][0]["state"], "running");
        assert!(
            p["instances"][0]["slug"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
    }
    // The participant sees their own instance of the workshop, and only theirs.
    let alice_api = env.login("alice").await;
    let mine = alice_api.get_ok("/api/v1/workshops/mine").await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert_eq!(mine["items"][0]["name"], "Intro to the web");
    assert_eq!(mine["items"][0]["instances"].as_array().unwrap().len(), 1);
    assert_eq!(mine["items"][0]["instances"][0]["state"], "running");
    let alice_instance = env.store.list_instances_for_user(alice).await.unwrap()[0].id;
    assert_eq!(
        mine["items"][0]["instances"][0]["instance_id"],
        alice_instance
    );

    // Deleting a running workshop is refused.
    let (status, body) = env
        .admin
        .call(Method::DELETE, &format!("/api/v1/workshops/{id}"), None)
        .await;
    assert_eq!((status.as_u16(), code(&body)), (409, "in_use"), "{body}");

    // Stop all, then start all again: the same instances wake.
    let stopped = env
        .admin
        .send_ok(
            Method::POST,
            &format!("/api/v1/workshops/{id}/stop"),
            json!({}),
            202,
        )
        .await;
    assert_eq!(stopped["status"], "ended");
    let stopped = env.wait_for_state(id, "stopped").await;
    assert_eq!(instance_ids(&stopped), first_ids);
    env.admin
        .send_ok(
            Method::POST,
            &format!("/api/v1/workshops/{id}/start"),
            json!({}),
            202,
        )
        .await;
    let again = env.wait_for_state(id, "running").await;
    assert_eq!(
        instance_ids(&again),
        first_ids,
        "the same instances start again"
    );
    env.admin
        .send_ok(
            Method::POST,
            &format!("/api/v1/workshops/{id}/stop"),
            json!({}),
            202,
        )
        .await;
    env.wait_for_state(id, "stopped").await;

    // Removing a participant drops their seat; their instance stays theirs.
    let view = env
        .admin
        .send_ok(
            Method::PUT,
            &format!("/api/v1/workshops/{id}/participants"),
            json!({"user_ids": [alice]}),
            200,
        )
        .await;
    assert_eq!(view["participants"].as_array().unwrap().len(), 1);
    assert_eq!(
        env.store.list_instances_for_user(bob).await.unwrap().len(),
        1
    );

    let (status, _) = env
        .admin
        .call(Method::DELETE, &format!("/api/v1/workshops/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = env.admin.get(&format!("/api/v1/workshops/{id}")).await;
    assert_eq!((status.as_u16(), code(&body)), (404, "not_found"));

    // Every step is in the audit log.
    let audit = env
        .admin
        .get_ok("/api/v1/audit?action=workshop.*&limit=200")
        .await;
    let mut actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    actions.sort_unstable();
    actions.dedup();
    for expected in [
        "workshop.create",
        "workshop.delete",
        "workshop.droplets",
        "workshop.participants",
        "workshop.start",
        "workshop.stop",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
}

#[tokio::test]
async fn workshop_input_is_checked_and_hostile_names_round_trip() {
    let env = Env::start().await;
    let tenant = env
        .admin
        .send_ok(
            Method::POST,
            "/api/v1/tenants",
            json!({"name": "Other"}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let stranger = env.user("stranger", Some(tenant), &[]).await;
    let hostile_user = env.user("mallory", None, &[]).await;
    env.admin
        .send_ok(
            Method::PATCH,
            &format!("/api/v1/users/{hostile_user}"),
            json!({"display_name": HOSTILE}),
            200,
        )
        .await;

    let created = env
        .admin
        .send_ok(
            Method::POST,
            "/api/v1/workshops",
            json!({"name": HOSTILE, "description": HOSTILE, "user_ids": [hostile_user]}),
            201,
        )
        .await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["name"], HOSTILE);
    assert_eq!(created["description"], HOSTILE);
    let shown = env.admin.get_ok(&format!("/api/v1/workshops/{id}")).await;
    assert_eq!(shown["name"], HOSTILE);
    assert_eq!(shown["participants"][0]["display_name"], HOSTILE);
    let listed = env.admin.get_ok("/api/v1/workshops").await;
    assert_eq!(listed["items"][0]["name"], HOSTILE);

    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "a\u{7}b"}), "name"),
        (json!({"name": "x", "starts_at": "tomorrow"}), "starts_at"),
        (
            json!({"name": "x", "starts_at": 2000, "ends_at": 1000}),
            "ends_at",
        ),
        (json!({"name": "x", "user_ids": [stranger]}), "user_ids"),
        (
            json!({"name": "x", "droplet_ids": [999_999]}),
            "droplet_ids",
        ),
        (json!({"name": "x", "colour": "red"}), "body"),
    ] {
        let (status, answer) = env
            .admin
            .call(Method::POST, "/api/v1/workshops", Some(body.clone()))
            .await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(code(&answer), "invalid_input");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let (status, answer) = env
        .admin
        .call(
            Method::POST,
            "/api/v1/workshops",
            Some(json!({"name": HOSTILE})),
        )
        .await;
    assert_eq!((status.as_u16(), code(&answer)), (409, "conflict"));
    let (status, answer) = env
        .admin
        .call(
            Method::PUT,
            &format!("/api/v1/workshops/{id}/participants"),
            Some(json!({})),
        )
        .await;
    assert_eq!((status.as_u16(), code(&answer)), (422, "invalid_input"));
    // Only the listed workshops exist: the refused requests created nothing.
    assert_eq!(env.admin.get_ok("/api/v1/workshops").await["total"], 1);
}

/// Every workshop endpoint, for each kind of caller: status and stable error code.
#[tokio::test]
async fn the_workshop_permission_matrix() {
    let env = Env::start().await;
    let users = users_group(&env.store, &[]).await;
    let plain_group = users.id;
    let plain = env.user("plain", None, &[plain_group]).await;
    let other_tenant = env
        .admin
        .send_ok(
            Method::POST,
            "/api/v1/tenants",
            json!({"name": "Globex"}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let other_admins = env
        .group(
            "Globex admins",
            Some(other_tenant),
            &[
                "admin_panel",
                "view_users",
                "view_workshops",
                "edit_workshops",
            ],
        )
        .await;
    env.user("globex-admin", Some(other_tenant), &[other_admins])
        .await;

    let ws = env
        .admin
        .send_ok(
            Method::POST,
            "/api/v1/workshops",
            json!({"name": "Default tenant workshop", "user_ids": [plain]}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();

    let plain_api = env.login("plain").await;
    let other_api = env.login("globex-admin").await;
    let anonymous = Api::anonymous(&env.gw, &env.dir);
    let admin_key = Api::with_key(&env.gw, &env.dir, &env.admin.create_key("ci").await);
    let plain_key = Api::with_key(&env.gw, &env.dir, &plain_api.create_key("mine").await);

    // (method, path, body) of every endpoint; ids name the default tenant's workshop.
    let path = |suffix: &str| format!("/api/v1/workshops/{ws}{suffix}");
    let endpoints: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/v1/workshops".into(), None),
        (Method::GET, path(""), None),
        (
            Method::PATCH,
            path(""),
            Some(json!({"description": "changed"})),
        ),
        (
            Method::PUT,
            path("/participants"),
            Some(json!({"user_ids": [plain]})),
        ),
        (
            Method::PUT,
            path("/droplets"),
            Some(json!({"droplet_ids": []})),
        ),
        // With no droplets, an allowed start is refused as invalid input (no container needed).
        (Method::POST, path("/start"), Some(json!({}))),
        (Method::POST, path("/stop"), Some(json!({}))),
        (
            Method::POST,
            "/api/v1/workshops".into(),
            Some(json!({"name": "made by the matrix"})),
        ),
    ];
    let expect_admin = [200, 200, 200, 200, 200, 422, 202, 201];
    for (caller, api, expected) in [
        ("admin", &env.admin, expect_admin.map(|s| (s, ""))),
        ("admin API key", &admin_key, expect_admin.map(|s| (s, ""))),
        ("plain user", &plain_api, [(403, "forbidden"); 8]),
        ("plain user's API key", &plain_key, [(403, "forbidden"); 8]),
        ("anonymous", &anonymous, [(401, "unauthenticated"); 8]),
        (
            "other tenant's admin",
            &other_api,
            [
                (200, ""),
                (404, "not_found"),
                (404, "not_found"),
                (404, "not_found"),
                (404, "not_found"),
                (404, "not_found"),
                (404, "not_found"),
                (201, ""),
            ],
        ),
    ] {
        for ((method, path, body), (status, error)) in endpoints.iter().zip(expected) {
            let body = match (path.as_str(), caller) {
                // Each creator needs a name of its own.
                ("/api/v1/workshops", _) if *method == Method::POST => {
                    Some(json!({"name": format!("made by {caller}")}))
                }
                _ => body.clone(),
            };
            let (got, answer) = api.call(method.clone(), path, body).await;
            assert_eq!(
                (got.as_u16(), code(&answer)),
                (
                    status,
                    if status == 422 {
                        "invalid_input"
                    } else {
                        error
                    }
                ),
                "{caller}: {method} {path}: {answer}"
            );
        }
    }
    // The other tenant's administrator lists only their own tenant's workshops.
    let theirs = other_api.get_ok("/api/v1/workshops").await;
    let names: Vec<&str> = theirs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["made by other tenant's admin"]);
    let (status, body) = other_api
        .get(&format!("/api/v1/workshops?tenant_id={}", users.tenant_id))
        .await;
    assert_eq!((status.as_u16(), code(&body)), (404, "not_found"));

    // DELETE last (it removes the workshop): refused for all but the administrator.
    for (caller, api, status, error) in [
        ("plain user", &plain_api, 403, "forbidden"),
        ("plain user's API key", &plain_key, 403, "forbidden"),
        ("anonymous", &anonymous, 401, "unauthenticated"),
        ("other tenant's admin", &other_api, 404, "not_found"),
        ("admin API key", &admin_key, 204, ""),
    ] {
        let (got, answer) = api.call(Method::DELETE, &path(""), None).await;
        assert_eq!(
            (got.as_u16(), code(&answer)),
            (status, error),
            "{caller}: DELETE: {answer}"
        );
    }
    // A participant's own view needs no right; anonymous callers get none.
    let mine = plain_api.get_ok("/api/v1/workshops/mine").await;
    assert!(mine["items"].as_array().unwrap().is_empty());
    let (status, body) = anonymous.get("/api/v1/workshops/mine").await;
    assert_eq!((status.as_u16(), code(&body)), (401, "unauthenticated"));
}
