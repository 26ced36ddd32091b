//! The OpenAPI document through the real binary: `GET /api/v1/openapi.json` answers without a
//! session, as `application/json`, with a document an independent validator accepts as OpenAPI
//! 3.1; and every operation it documents is really routed with that method. An anonymous
//! request to each one (path parameters `1`, body `{}` where one is documented) must be neither
//! the router's own 404 (`no such API endpoint`, unlike a handler's `not_found`) nor 405, and
//! must be refused with `401 unauthenticated` unless the operation is documented as public
//! (`security: []`), so the document's security requirements are true too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_e2e::api::{Api, code};
use flowcase_e2e::openapi_validator;
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
async fn the_document_is_public_valid_openapi_3_1_and_every_operation_is_routed() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let (text, doc) = fetch_document(&gw, &dir).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));

    match openapi_validator::validate(&text) {
        Ok(verdict) => assert_eq!(verdict, "valid 3.1"),
        Err(errors) => panic!("the OpenAPI validator refuses the document:\n{errors}"),
    }

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
            let security = op.get("security").unwrap_or(&global_security);
            let public = security.as_array().is_some_and(Vec::is_empty);
            if !public && (status != StatusCode::UNAUTHORIZED || code(&answer) != "unauthenticated")
            {
                problems.push(format!(
                    "{name}: documented as needing a session or key, but anonymous got {status} {answer}"
                ));
            }
            if public && status == StatusCode::UNAUTHORIZED {
                problems.push(format!("{name}: documented as public, but anonymous got 401"));
            }
        }
    }
    assert_eq!(
        checked,
        flowcase_admin::web::api::ENDPOINTS.len(),
        "every routed endpoint is documented"
    );
    assert!(
        problems.is_empty(),
        "documented operations that are not routed as documented:\n{}",
        problems.join("\n")
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
    assert!(!is_router_404(status, &body), "a handler's not_found: {body}");

    // A signed-in caller gets the same document.
    let (_, doc) = fetch_document(&gw, &dir).await;
    let (status, served) = admin.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(served, doc);
}
