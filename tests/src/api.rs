//! A JSON API client for the admin endpoints: logged in (session cookie, CSRF token and origin
//! on every request, so refusals come from authorization and never from the CSRF check), by API
//! key (bearer token only), or anonymous (a browser of the site without a session: origin only).

use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

use crate::instances::login_response;
use crate::{Gateway, GatewayDir};

pub struct Api {
    client: Client,
    csrf: Option<String>,
    bearer: Option<String>,
    base: String,
    origin: String,
}

impl Api {
    /// Logs `username` in; panics unless the login succeeds.
    pub async fn login(gw: &Gateway, dir: &GatewayDir, username: &str, password: &str) -> Api {
        let client = gw.client(&dir.data_dir(), &["localhost"]);
        let resp = login_response(gw, &client, username, password).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "login of {username}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        Api {
            client,
            csrf: Some(body["csrf_token"].as_str().unwrap().to_owned()),
            bearer: None,
            base: gw.url("localhost", ""),
            origin: gw.origin(),
        }
    }

    /// No session and no key.
    pub fn anonymous(gw: &Gateway, dir: &GatewayDir) -> Api {
        Api {
            client: gw.client(&dir.data_dir(), &["localhost"]),
            csrf: None,
            bearer: None,
            base: gw.url("localhost", ""),
            origin: gw.origin(),
        }
    }

    /// A script holding an API key: no cookie, no CSRF token, no origin.
    pub fn with_key(gw: &Gateway, dir: &GatewayDir, token: &str) -> Api {
        Api {
            bearer: Some(token.to_owned()),
            ..Api::anonymous(gw, dir)
        }
    }

    /// Creates an API key for this (logged-in) client's user and returns its token.
    pub async fn create_key(&self, name: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/account/api-keys",
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// A request to `path` with this caller's cookies and nothing else (no origin, CSRF token
    /// or key), for what a browser sends without the page's script: a navigation, a forged form.
    pub fn bare(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// A request to `path` carrying this caller's credentials, for answers that are not one JSON
    /// value (an event stream, a request sent with headers of its own).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        // Browsers send the site's origin, signed in or not; scripts with a key send nothing.
        if self.bearer.is_none() {
            req = req.header("origin", &self.origin);
        }
        if let Some(csrf) = &self.csrf {
            req = req.header("x-csrf-token", csrf);
        }
        if let Some(token) = &self.bearer {
            req = req.bearer_auth(token);
        }
        req
    }

    /// `method path` with an optional JSON body; the answer's JSON (`null` when it has none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET path` as this caller, the answer untouched (for non-JSON resources).
    pub async fn get_raw(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.bare(Method::GET, path);
        if let Some(token) = &self.bearer {
            req = req.bearer_auth(token);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send().await.unwrap()
    }

    /// The HTML of a page this caller may see (200 asserted).
    pub async fn page(&self, path: &str) -> String {
        let resp = self.get_raw(path, &[]).await;
        assert_eq!(resp.status(), 200, "{path}");
        resp.text().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// `GET path`, asserting 200.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `POST`/`PUT`/`PATCH` with a body, asserting `expected`.
    pub async fn send_ok(&self, method: Method, path: &str, body: Value, expected: u16) -> Value {
        let (status, answer) = self.call(method.clone(), path, Some(body)).await;
        assert_eq!(status.as_u16(), expected, "{method} {path}: {answer}");
        answer
    }

    /// Creates group `name` (in `tenant_id`, or the caller's own tenant) holding the permission
    /// `flags`; returns its id.
    pub async fn create_group(&self, tenant_id: Option<i64>, name: &str, flags: &[&str]) -> i64 {
        let permissions: serde_json::Map<String, Value> = flags
            .iter()
            .map(|f| ((*f).to_owned(), json!(true)))
            .collect();
        let (status, body) = self
            .post(
                "/api/v1/groups",
                json!({"tenant_id": tenant_id, "name": name, "permissions": permissions}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_i64().unwrap()
    }

    /// Polls `GET /api/v1/instances/{id}` until its status is `want`; returns the instance.
    pub async fn wait_status(&self, id: i64, want: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get(&format!("/api/v1/instances/{id}")).await;
            if status == 200 && body["status"] == want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "instance {id} is not {want}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The stable error code of an error answer (`""` when there is none).
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}
