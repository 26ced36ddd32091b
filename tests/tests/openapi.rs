//! The OpenAPI document through the real binary: `GET /api/v1/openapi.json` answers without a
//! session, as `application/json`, with a document an independent validator accepts as OpenAPI
//! 3.1, whose response schemas the binary's real answers match (an administrator's walk through
//! every family, errors included); and every operation it documents is really routed with that
//! method. An anonymous
//! request to each one (path parameters `1`, body `{}` where one is documented) must be neither
//! the router's own 404 (`no such API endpoint`, unlike a handler's `not_found`) nor 405, and
//! must be refused with `401 unauthenticated` unless the operation is documented as public
//! (`security: []`), so the document's security requirements are true too; every refusal is
//! in the one JSON error format.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_e2e::api::{Api, code};
use flowcase_e2e::openapi_validator::{self, Answer};
use flowcase_e2e::{Gateway, GatewayDir};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

/// The router's fallback answer for an unknown `/api/` path.
fn is_router_404(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such API endpoint"
}

async fn fetch_document(gw: &Gateway, dir: &GatewayDir) -> (String, Value) {
    let client = gw.client(&dir.data_dir(), &["localhost"]);
    let resp = client
        .get(gw.url("localhost", "/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the document needs no session");
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/json");
    let text = resp.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    (text, doc)
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_secured_as_documented() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let (_, doc) = fetch_document(&gw, &dir).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));

    let anonymous = Api::anonymous(&gw, &dir);
    let global_security = doc["security"].clone();
    let mut problems = Vec::new();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let verb = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let body = op.get("requestBody").map(|_| json!({}));
            let (status, answer) = anonymous.call(verb.clone(), &concrete, body).await;
            checked += 1;
            let name = format!("{verb} {path}");
            if status == StatusCode::METHOD_NOT_ALLOWED {
                problems.push(format!("{name}: 405, the path has no such method"));
                continue;
            }
            if is_router_404(status, &answer) {
                problems.push(format!("{name}: the router knows no such path"));
                continue;
            }
            // One error format everywhere (the document's `Error` schema), even for a body the
            // handler cannot read.
            if !status.is_success() && !answer["error"]["code"].is_string() {
                problems.push(format!("{name}: {status} is not a JSON error: {answer}"));
            }
            let security = op.get("security").unwrap_or(&global_security);
            let public = security.as_array().is_some_and(Vec::is_empty);
            if !public && (status != StatusCode::UNAUTHORIZED || code(&answer) != "unauthenticated")
            {
                problems.push(format!(
                    "{name}: documented as needing a session or key, but anonymous got {status} {answer}"
                ));
            }
            if public && status == StatusCode::UNAUTHORIZED {
                problems.push(format!(
                    "{name}: documented as public, but anonymous got 401"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "documented operations that are not routed as documented:\n{}",
        problems.join("\n")
    );
    // The unit test in admin/src/web/api/openapi.rs compares the two lists in detail.
    assert_eq!(
        checked,
        flowcase_admin::web::api::ENDPOINTS.len(),
        "the served document has as many operations as the router has endpoints"
    );
}

/// The two failures the test above looks for do happen, so it can tell a routed operation from
/// one that is not: an unknown path gets the router's 404, a known path with another method 405,
/// and a handler's own `not_found` is not mistaken for the router's.
#[tokio::test]
async fn unrouted_methods_and_paths_are_told_apart_from_routed_ones() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let anonymous = Api::anonymous(&gw, &dir);

    let (status, body) = anonymous.call(Method::DELETE, "/api/v1/system", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    let (status, body) = anonymous.get("/api/v1/no-such-family").await;
    assert!(is_router_404(status, &body), "{status} {body}");
    let (status, body) = anonymous.get("/api/v1/droplets/1/nothing").await;
    assert!(is_router_404(status, &body), "{status} {body}");

    let (name, password) = flowcase_e2e::read_credentials(&dir.data_dir());
    let admin = Api::login(&gw, &dir, &name, &password).await;
    let (status, body) = admin.get("/api/v1/droplets/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(code(&body), "not_found");
    assert!(
        !is_router_404(status, &body),
        "a handler's not_found: {body}"
    );

    // A signed-in caller gets the same document.
    let (_, doc) = fetch_document(&gw, &dir).await;
    let (status, served) = admin.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(served, doc);
}

/// Records each call's answer with the documented path it was made on.
struct Recorder<'a> {
    api: &'a Api,
    answers: Vec<Answer>,
}

impl Recorder<'_> {
    /// Calls `template` with `{id}` replaced by `id`; returns the answer.
    async fn call(
        &mut self,
        method: Method,
        template: &str,
        id: i64,
        query: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let path = template.replace("{id}", &id.to_string());
        let (status, answer) = self
            .api
            .call(method.clone(), &format!("{path}{query}"), body)
            .await;
        self.answers.push(Answer {
            method: method.as_str().to_ascii_lowercase(),
            path: template.to_owned(),
            status: status.as_u16(),
            body: answer.clone(),
        });
        (status, answer)
    }

    /// The same, asserting `expected`.
    async fn ok(
        &mut self,
        method: Method,
        template: &str,
        id: i64,
        body: Option<Value>,
        expected: u16,
    ) -> Value {
        let (status, answer) = self.call(method.clone(), template, id, "", body).await;
        assert_eq!(
            status.as_u16(),
            expected,
            "{method} {template} ({id}): {answer}"
        );
        answer
    }
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1_and_real_answers_match_it() {
    use Method as M;
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let (text, _) = fetch_document(&gw, &dir).await;
    let (name, password) = flowcase_e2e::read_credentials(&dir.data_dir());
    let admin = Api::login(&gw, &dir, &name, &password).await;
    let anonymous = Api::anonymous(&gw, &dir);
    let mut r = Recorder {
        api: &admin,
        answers: Vec::new(),
    };

    // Session and account.
    let me = r.ok(M::GET, "/api/v1/session", 0, None, 200).await;
    let my_id = me["user"]["id"].as_i64().unwrap();
    r.ok(M::GET, "/api/v1/stats", 0, None, 200).await;
    let key = r
        .ok(
            M::POST,
            "/api/v1/account/api-keys",
            0,
            Some(json!({"name": "ci"})),
            201,
        )
        .await;
    r.ok(M::GET, "/api/v1/account/api-keys", 0, None, 200).await;
    let key_id = key["key"]["id"].as_i64().unwrap();
    r.ok(
        M::DELETE,
        "/api/v1/account/api-keys/{id}",
        key_id,
        None,
        204,
    )
    .await;
    let (status, _) = r
        .call(M::POST, "/api/v1/account/password", 0, "", Some(json!({})))
        .await;
    assert_eq!(status, 422);

    // Tenants, groups, users.
    r.ok(
        M::POST,
        "/api/v1/tenants",
        0,
        Some(json!({"name": "Other org"})),
        201,
    )
    .await;
    r.ok(M::GET, "/api/v1/tenants", 0, None, 200).await;
    let group = r
        .ok(
            M::POST,
            "/api/v1/groups",
            0,
            Some(json!({"name": "Class", "permissions": {"view_droplets": true}})),
            201,
        )
        .await;
    let group_id = group["id"].as_i64().unwrap();
    r.ok(M::GET, "/api/v1/groups", 0, None, 200).await;
    r.ok(M::GET, "/api/v1/groups/{id}", group_id, None, 200)
        .await;
    r.ok(
        M::PATCH,
        "/api/v1/groups/{id}",
        group_id,
        Some(json!({"instance_limit": 5})),
        200,
    )
    .await;
    r.ok(M::GET, "/api/v1/groups/{id}/clipboard", group_id, None, 200)
        .await;
    r.ok(
        M::PUT,
        "/api/v1/groups/{id}/clipboard",
        group_id,
        Some(json!({"disable_copy": true, "disable_paste": false})),
        200,
    )
    .await;
    let user = r
        .ok(
            M::POST,
            "/api/v1/users",
            0,
            Some(json!({"username": "bob", "group_ids": [group_id]})),
            201,
        )
        .await;
    assert!(user["generated_password"].is_string(), "{user}");
    let user_id = user["id"].as_i64().unwrap();
    r.ok(M::GET, "/api/v1/users", 0, None, 200).await;
    r.ok(M::GET, "/api/v1/users/{id}", user_id, None, 200).await;
    r.ok(
        M::PATCH,
        "/api/v1/users/{id}",
        user_id,
        Some(json!({"email": "bob@example.test"})),
        200,
    )
    .await;
    r.ok(
        M::PUT,
        "/api/v1/users/{id}/groups",
        user_id,
        Some(json!({"group_ids": [group_id]})),
        200,
    )
    .await;
    r.ok(M::POST, "/api/v1/users/{id}/password", user_id, None, 200)
        .await;
    let (status, _) = r
        .call(
            M::POST,
            "/api/v1/users",
            0,
            "",
            Some(json!({"username": "bob"})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = r
        .call(
            M::POST,
            "/api/v1/users",
            0,
            "",
            Some(json!({"nickname": "x"})),
        )
        .await;
    assert_eq!(status, 422);

    // Droplets: an external host, so instances run without an image.
    let mine = r.ok(M::GET, "/api/v1/users/{id}", my_id, None, 200).await;
    let my_groups: Vec<i64> = mine["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_i64().unwrap())
        .collect();
    let droplet = r
        .ok(
            M::POST,
            "/api/v1/droplets",
            0,
            Some(
                json!({"name": "Lab shell", "droplet_type": "ssh", "external_host": "127.0.0.1",
                        "external_port": 22, "group_ids": my_groups}),
            ),
            201,
        )
        .await;
    let droplet_id = droplet["id"].as_i64().unwrap();
    let (status, _) = r
        .call(M::GET, "/api/v1/droplets", 0, "?scope=all", None)
        .await;
    assert_eq!(status, 200);
    r.ok(M::GET, "/api/v1/droplets", 0, None, 200).await;
    r.ok(M::GET, "/api/v1/droplets/{id}", droplet_id, None, 200)
        .await;
    r.ok(
        M::PATCH,
        "/api/v1/droplets/{id}",
        droplet_id,
        Some(json!({"description": "Shell"})),
        200,
    )
    .await;
    r.ok(
        M::PUT,
        "/api/v1/droplets/{id}/groups",
        droplet_id,
        Some(json!({"group_ids": my_groups.iter().chain([&group_id]).collect::<Vec<_>>()})),
        200,
    )
    .await;
    let (status, _) = r
        .call(M::GET, "/api/v1/droplets/{id}", 999_999, "", None)
        .await;
    assert_eq!(status, 404);

    // Instances, the seed's paths included.
    let instance = r
        .ok(
            M::POST,
            "/api/v1/instances",
            0,
            Some(json!({"droplet_id": droplet_id})),
            201,
        )
        .await;
    let instance_id = instance["id"].as_i64().unwrap();
    r.ok(M::GET, "/api/v1/instances", 0, None, 200).await;
    r.ok(M::GET, "/api/v1/instances/{id}", instance_id, None, 200)
        .await;
    r.ok(
        M::POST,
        "/api/v1/instances/{id}/tunnel-token",
        instance_id,
        None,
        200,
    )
    .await;
    r.ok(
        M::POST,
        "/api/v1/instances/{id}/stop",
        instance_id,
        None,
        200,
    )
    .await;
    let (status, _) = r
        .call(
            M::POST,
            "/api/v1/instances/{id}/start",
            instance_id,
            "",
            None,
        )
        .await;
    assert!(status == 200 || status == 202, "{status}");
    r.ok(M::GET, "/api/droplets", 0, None, 200).await;
    r.ok(M::GET, "/api/droplets/stats", 0, None, 200).await;
    let old = r
        .ok(
            M::POST,
            "/api/instance/request",
            0,
            Some(json!({"droplet_id": droplet_id.to_string()})),
            202,
        )
        .await;
    let old_id = old["instance_id"].as_i64().unwrap();
    r.ok(M::GET, "/api/instances", 0, None, 200).await;
    r.ok(M::POST, "/api/instances/{id}/stop", old_id, None, 200)
        .await;
    r.ok(M::GET, "/api/instance/{id}/destroy", old_id, None, 200)
        .await;
    r.ok(M::DELETE, "/api/v1/instances/{id}", instance_id, None, 204)
        .await;

    // Workshops.
    let workshop = r
        .ok(
            M::POST,
            "/api/v1/workshops",
            0,
            Some(json!({"name": "Intro", "droplet_ids": [droplet_id], "user_ids": [user_id]})),
            201,
        )
        .await;
    let workshop_id = workshop["id"].as_i64().unwrap();
    r.ok(M::GET, "/api/v1/workshops", 0, None, 200).await;
    r.ok(M::GET, "/api/v1/workshops/{id}", workshop_id, None, 200)
        .await;
    r.ok(
        M::PATCH,
        "/api/v1/workshops/{id}",
        workshop_id,
        Some(json!({"starts_at": "2026-03-01T09:00:00Z", "ends_at": "2099-03-01T09:00:00Z"})),
        200,
    )
    .await;
    r.ok(
        M::PUT,
        "/api/v1/workshops/{id}/droplets",
        workshop_id,
        Some(json!({"droplet_ids": [droplet_id]})),
        200,
    )
    .await;
    r.ok(
        M::PUT,
        "/api/v1/workshops/{id}/participants",
        workshop_id,
        Some(json!({"user_ids": [user_id, my_id]})),
        200,
    )
    .await;
    r.ok(
        M::POST,
        "/api/v1/workshops/{id}/start",
        workshop_id,
        None,
        202,
    )
    .await;
    r.ok(M::GET, "/api/v1/workshops/mine", 0, None, 200).await;
    let (status, _) = r
        .call(M::DELETE, "/api/v1/workshops/{id}", workshop_id, "", None)
        .await;
    assert_eq!(status, 409, "a running workshop is in use");
    r.ok(
        M::POST,
        "/api/v1/workshops/{id}/stop",
        workshop_id,
        None,
        202,
    )
    .await;
    r.ok(M::DELETE, "/api/v1/workshops/{id}", workshop_id, None, 204)
        .await;

    // Audit log and system report.
    r.ok(M::GET, "/api/v1/audit", 0, None, 200).await;
    r.ok(
        M::POST,
        "/api/v1/audit/prune",
        0,
        Some(json!({"before": 1})),
        200,
    )
    .await;
    r.ok(M::GET, "/api/v1/system", 0, None, 200).await;

    // Deletions.
    // The workshop's instances are still the participant's.
    let (status, body) = r
        .call(M::DELETE, "/api/v1/users/{id}", user_id, "", None)
        .await;
    assert_eq!((status.as_u16(), code(&body)), (409, "in_use"), "{body}");
    r.ok(M::DELETE, "/api/v1/groups/{id}", group_id, None, 204)
        .await;
    r.ok(M::DELETE, "/api/v1/session", 0, None, 204).await;
    let mut answers = r.answers;

    // What strangers get.
    let (status, body) = anonymous.get("/api/v1/users").await;
    answers.push(Answer {
        method: "get".into(),
        path: "/api/v1/users".into(),
        status: status.as_u16(),
        body,
    });

    match openapi_validator::validate(&text, &answers) {
        Ok(report) => assert_eq!(report, format!("valid 3.1\nanswers {}", answers.len())),
        Err(errors) => panic!("the document or the answers are wrong:\n{errors}"),
    }
}
