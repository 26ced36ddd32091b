//! The instances API through the real binary and a real dockerd: launching an `http` droplet
//! from a locally built image and following it over the event stream until it serves through
//! the front door, stop, start and delete; failed launches; the seed's paths; a permission
//! matrix over every endpoint (administrator, user, user of another tenant, anonymous, API
//! key); hostile names returned unchanged; a stop or delete whose client goes away mid-request
//! still runs to its end. The PostgreSQL variant runs two gateways on one
//! database and checks that a change made through one shows on the other's event stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flowcase_admin::store::{
    Droplet, DropletType, InstanceStatus, NewDroplet, NewInstance, NewUser, Store, TargetKind,
    now_millis,
};
use flowcase_e2e::api::{Api, code};
use flowcase_e2e::instances::{
    HTTPD_PORT, add_user, database_url, httpd_droplet, login, users_group,
};
use flowcase_e2e::{Gateway, GatewayDir, read_credentials};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "a-long-enough-passphrase";
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// Opens the event stream; events arrive on the returned channel as (name, data).
async fn open_events(caller: &Api, query: &str) -> Events {
    let resp = caller
        .request(Method::GET, &format!("/api/v1/events{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(content_type(&resp).starts_with("text/event-stream"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut resp = resp;
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut name = "message".to_owned();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let value = serde_json::from_str(&data).unwrap_or(Value::Null);
                if tx.send((name, value)).is_err() {
                    return;
                }
            }
        }
    });
    Events { rx, reader }
}

fn content_type(resp: &reqwest::Response) -> &str {
    resp.headers()["content-type"].to_str().unwrap()
}

struct Events {
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
    reader: tokio::task::JoinHandle<()>,
}

impl Events {
    /// Waits for an event `name` whose data satisfies `pred`; returns its data.
    async fn wait_for(
        &mut self,
        name: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((event, data))) => {
                    if event == name && pred(&data) {
                        return data;
                    }
                    seen.push(format!("{event}: {data}"));
                }
                Ok(None) => panic!("the event stream ended; seen: {seen:#?}"),
                Err(_) => panic!("no {name} event in {within:?}; seen: {seen:#?}"),
            }
        }
    }

    /// Whether the stream ends within `within`.
    async fn ends_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(_)) => {}
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn is(id: i64, status: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["id"] == id && v["status"] == status
}

/// The gateway's database, with helpers to set up droplets and memberships.
struct Db {
    store: Store,
    tenant_id: i64,
    users_group: i64,
}

impl Db {
    /// Opens it, once the existing users `members` are in the default tenant's User group.
    async fn open(dir: &GatewayDir, members: &[&str]) -> Db {
        let store = Store::connect(&database_url(dir)).await.unwrap();
        let group = users_group(&store, members).await;
        Db {
            store,
            tenant_id: group.tenant_id,
            users_group: group.id,
        }
    }

    async fn user_id(&self, name: &str) -> i64 {
        self.store
            .find_user_by_login(name)
            .await
            .unwrap()
            .unwrap()
            .id
    }

    /// A droplet granted to the User group.
    async fn granted(&self, new: NewDroplet) -> Droplet {
        let droplet = self.store.create_droplet(&new, now_millis()).await.unwrap();
        self.store
            .grant_droplet(droplet.id, self.users_group)
            .await
            .unwrap();
        droplet
    }

    /// An `http` droplet of the test HTTP server image.
    async fn http_droplet(&self, name: &str, env: &[(&str, &str)]) -> Droplet {
        let mut new = httpd_droplet(self.tenant_id, name).await;
        new.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>();
        self.granted(new).await
    }

    /// An SSH droplet on an external host: launches need no container.
    async fn external_droplet(&self, name: &str) -> Droplet {
        let mut new = NewDroplet::new(self.tenant_id, name, DropletType::Ssh, TargetKind::External);
        new.external_host = Some("127.0.0.1".into());
        new.external_port = Some(22);
        self.granted(new).await
    }
}

#[tokio::test]
async fn a_launched_web_app_goes_live_over_the_event_stream_and_is_stopped_started_and_deleted() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    add_user(&dir, "alice", PASSWORD);
    let db = Db::open(&dir, &["alice"]).await;
    let droplet = db
        .http_droplet(HOSTILE, &[("BODY", "hello from the notebook")])
        .await;

    let alice = Api::login(&gw, &dir, "alice", PASSWORD).await;
    let mut events = open_events(&alice, "").await;

    // Malformed requests are refused, naming the field.
    for (resolution, field) in [
        ("big", "resolution"),
        ("99999x1", "resolution"),
        ("100x100", "resolution"),
    ] {
        let (status, body) = alice
            .post(
                "/api/v1/instances",
                json!({"droplet_id": droplet.id, "resolution": resolution}),
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
            "{body}"
        );
        assert_eq!(body["error"]["field"], field);
    }

    let (status, launched) = alice
        .post(
            "/api/v1/instances",
            json!({"droplet_id": droplet.id, "resolution": "1280x800"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{launched}");
    assert_eq!(launched["status"], "creating");
    assert_eq!(
        launched["droplet_name"], HOSTILE,
        "names come back unchanged"
    );
    assert_eq!(launched["droplet_type"], "http");
    assert_eq!(launched["username"], "alice");
    assert_eq!(launched["open_url"], Value::Null, "nothing to open yet");
    let id = launched["id"].as_i64().unwrap();
    let slug = launched["slug"].as_str().unwrap().to_owned();

    // The dashboard learns of the change without asking.
    let running = events
        .wait_for("instance", Duration::from_secs(60), is(id, "running"))
        .await;
    assert_eq!(running["droplet_name"], HOSTILE);
    assert!(running["started_at"].as_i64().is_some());
    let host = format!("{slug}.apps.localhost");
    let url = format!("https://{host}:{}/", dir.https_port);
    assert_eq!(running["open_url"], url);

    // The open URL serves the app through the front door, with the requested resolution.
    let browser = gw.client(&dir.data_dir(), &["localhost", &host]);
    login(&gw, &browser, "alice", PASSWORD).await;
    let cookie = flowcase_e2e::instances::app_cookie(&gw, &browser, &host).await;
    let fetch = |path: &'static str| {
        browser
            .get(gw.url(&host, path))
            .header("cookie", cookie.clone())
            .send()
    };
    let resp = fetch("/").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap().trim(), "hello from the notebook");
    let resp = fetch("/env/FLOWCASE_RESOLUTION").await.unwrap();
    assert_eq!(resp.text().await.unwrap().trim(), "1280x800");

    // Mine: listed, with filters.
    let (_, mine) = alice.get("/api/v1/instances").await;
    assert_eq!(mine["total"], 1, "{mine}");
    assert_eq!(mine["items"][0]["id"], id);
    let (_, none) = alice.get("/api/v1/instances?status=stopped").await;
    assert_eq!(none["total"], 0, "{none}");
    let (status, body) = alice.get("/api/v1/instances?status=sleeping").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input")
    );

    // Stats: mine, without the host. Usage figures are null ("not measured yet") until the
    // engine has sampled the new container, then numbers.
    let deadline = Instant::now() + Duration::from_secs(15);
    let stats = loop {
        let (status, stats) = alice.get("/api/v1/stats").await;
        assert_eq!(status, 200, "{stats}");
        assert_eq!(stats["running"], 1, "{stats}");
        assert_eq!(stats["instances"], 1, "{stats}");
        assert_eq!(stats["host"], Value::Null, "{stats}");
        if stats["memory_bytes"].as_u64().is_some() || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(stats["memory_bytes"].as_u64().is_some(), "{stats}");

    // Stop: answered once stopped, and pushed.
    let (status, stopped) = alice
        .post(&format!("/api/v1/instances/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(
        stopped["open_url"], url,
        "a stopped web app opens (and wakes) at its host"
    );
    events
        .wait_for("instance", Duration::from_secs(5), is(id, "stopped"))
        .await;

    // Start again.
    let (status, body) = alice
        .post(&format!("/api/v1/instances/{id}/start"), json!({}))
        .await;
    assert!(
        status == StatusCode::OK || status == StatusCode::ACCEPTED,
        "{status} {body}"
    );
    events
        .wait_for("instance", Duration::from_secs(60), is(id, "running"))
        .await;
    // The front door reloads its routes every 500 ms: it may still hold the instance as
    // stopping (503) for that long after the event.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut resp = fetch("/").await.unwrap();
    while resp.status() == 503 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        resp = fetch("/").await.unwrap();
    }
    assert_eq!(resp.status(), 200);

    // Delete: gone from the list, the stream and the engine.
    let (status, _) = alice
        .call(Method::DELETE, &format!("/api/v1/instances/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let removed = events
        .wait_for("instance_removed", Duration::from_secs(5), |v| {
            v["id"] == id
        })
        .await;
    assert_eq!(removed, json!({"id": id}));
    let (status, body) = alice.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (_, mine) = alice.get("/api/v1/instances").await;
    assert_eq!(mine["total"], 0, "{mine}");
    let ps = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=flowcase.instance={slug}"),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "the container is gone"
    );

    // Each request is in the audit log under alice's name.
    let audit = db.store.list_audit(1000, 0).await.unwrap();
    for action in [
        "instance.launch",
        "instance.stop",
        "instance.start",
        "instance.delete",
    ] {
        assert!(
            audit.iter().any(|e| e.action == action
                && e.actor_name.as_deref() == Some("alice")
                && e.target_id.as_deref() == Some(&id.to_string())),
            "no {action} entry"
        );
    }
    db.store.close().await;
}

#[tokio::test]
async fn failed_launches_are_refused_at_once_or_end_in_error_with_their_reason() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    add_user(&dir, "alice", PASSWORD);
    let db = Db::open(&dir, &["alice"]).await;
    let alice = Api::login(&gw, &dir, "alice", PASSWORD).await;

    // An image the engine does not have: refused before anything is created.
    let mut missing = NewDroplet::new(
        db.tenant_id,
        "Missing",
        DropletType::Http,
        TargetKind::Container,
    );
    missing.image = Some("flowcase-test/does-not-exist:never".into());
    missing.ports = vec![HTTPD_PORT];
    let missing = db.granted(missing).await;
    let (status, body) = alice
        .post("/api/v1/instances", json!({"droplet_id": missing.id}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "image_missing"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does-not-exist")
    );
    let (_, mine) = alice.get("/api/v1/instances").await;
    assert_eq!(mine["total"], 0, "{mine}");

    // A container that dies while booting: accepted, then `error` with the reason.
    let crashing = db.http_droplet("Crashing", &[("EXIT_CODE", "3")]).await;
    let mut events = open_events(&alice, "").await;
    let (status, launched) = alice
        .post("/api/v1/instances", json!({"droplet_id": crashing.id}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{launched}");
    let id = launched["id"].as_i64().unwrap();
    let failed = events
        .wait_for("instance", Duration::from_secs(60), is(id, "error"))
        .await;
    let reason = failed["error_reason"].as_str().unwrap();
    assert!(reason.contains("exit"), "{reason}");
    assert_eq!(
        failed["open_url"],
        Value::Null,
        "a failed launch cannot be opened"
    );
    let shown = alice.wait_status(id, "error", Duration::from_secs(1)).await;
    assert_eq!(shown["error_reason"], reason);
    // Its container is gone, but the operator can still read why: its last output is in the
    // gateway's log, on the line that names the instance.
    let slug = shown["slug"].as_str().unwrap().to_owned();
    let logged = gw
        .wait_for_log(
            "the output of the failed container",
            Duration::from_secs(10),
            |log| {
                log.lines()
                    .find(|l| l.contains("the last output of its container") && l.contains(&slug))
                    .map(str::to_owned)
            },
        )
        .await;
    assert!(logged.contains("exiting with 3 as asked"), "{logged}");
    // It can be deleted.
    let (status, _) = alice
        .call(Method::DELETE, &format!("/api/v1/instances/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    db.store.close().await;
}

#[tokio::test]
async fn the_seed_paths_keep_working_with_the_same_checks() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    add_user(&dir, "alice", PASSWORD);
    let db = Db::open(&dir, &["alice"]).await;
    let droplet = db.external_droplet("Lab shell").await;
    let hidden = NewDroplet::new(
        db.tenant_id,
        "Not granted",
        DropletType::Ssh,
        TargetKind::External,
    );
    let hidden = db
        .store
        .create_droplet(&hidden, now_millis())
        .await
        .unwrap();
    let alice = Api::login(&gw, &dir, "alice", PASSWORD).await;

    let (status, body) = alice.get("/api/droplets").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    let droplets = body["droplets"].as_array().unwrap();
    assert_eq!(droplets.len(), 1, "only granted droplets: {body}");
    assert_eq!(droplets[0]["id"], droplet.id);
    assert_eq!(droplets[0]["display_name"], "Lab shell");
    assert_eq!(droplets[0]["droplet_type"], "ssh");

    // The old client sent the droplet id as a string, and fields we do not know.
    let (status, body) = alice
        .post(
            "/api/instance/request",
            json!({"droplet_id": droplet.id.to_string(), "resolution": "1920x1080", "run_as_root": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["success"], true);
    let id = body["instance_id"].as_i64().unwrap();
    assert_eq!(
        body["instance"]["status"], "running",
        "an external host runs at once"
    );
    assert_eq!(body["instance"]["open_url"], format!("/droplet/{id}"));
    let (status, body) = alice
        .post("/api/instance/request", json!({"droplet_id": hidden.id}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    let (status, body) = alice.get("/api/instances").await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    assert_eq!(body["instances"][0]["id"], id, "{body}");
    assert_eq!(body["instances"][0]["container_status"], "running");
    assert_eq!(body["instances"][0]["droplet"]["display_name"], "Lab shell");

    let (status, body) = alice.get("/api/droplets/stats").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["running"], 1);

    let (status, body) = alice
        .post(&format!("/api/instances/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instance"]["status"], "stopped");
    let (status, body) = alice
        .post(&format!("/api/instances/{id}/start"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instance"]["status"], "running");

    // The destroy-by-GET: a cross-site navigation (no CSRF header, a foreign referer) or a
    // same-site one without the header destroys nothing.
    let destroy = format!("/api/instance/{id}/destroy");
    let resp = alice
        .bare(Method::GET, &destroy)
        .header("referer", "https://evil.example/page")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "csrf_failed");
    let resp = alice
        .bare(Method::GET, &destroy)
        .header("origin", gw.origin())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (status, body) = alice.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("running"))
    );
    // With the session's CSRF header, it destroys.
    let (status, body) = alice.get(&format!("/api/instance/{id}/destroy")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    let (status, _) = alice.get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Anonymous callers get the API's 401.
    let nobody = Api::anonymous(&gw, &dir);
    for path in ["/api/droplets", "/api/droplets/stats", "/api/instances"] {
        let (status, body) = nobody.get(path).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNAUTHORIZED, "unauthenticated"),
            "{path}"
        );
    }
    db.store.close().await;
}

/// One caller's rows of a permission matrix: who, the caller, and `("METHOD path", status,
/// error code or "" on success)` for each request.
type MatrixRow<'a> = (&'a str, &'a Api, &'a [(&'a str, u16, &'a str)]);

/// Sends every request of `matrix` and checks its status and stable error code. In paths,
/// `{one}`, `{start}`, `{stop}` and `{id}` stand for instance `id`; launches (POST to the
/// instance lists) carry `launch` as their body. Event streams are judged by their status alone
/// (a success never ends).
async fn check_matrix(matrix: &[MatrixRow<'_>], id: i64, launch: &Value) {
    let one = format!("/api/v1/instances/{id}");
    let mut count = 0;
    for (who, caller, requests) in matrix {
        for (request, want_status, want_code) in *requests {
            let (method, path) = request.split_once(' ').unwrap();
            let method: Method = method.parse().unwrap();
            let path = path
                .replace("{one}", &one)
                .replace("{start}", &format!("{one}/start"))
                .replace("{stop}", &format!("{one}/stop"))
                .replace("{id}", &id.to_string());
            let body = (method == Method::POST
                && ["/api/v1/instances", "/api/instance/request"].contains(&path.as_str()))
            .then(|| launch.clone());
            let (status, answer) = if path.split('?').next() == Some("/api/v1/events") {
                let resp = caller.request(method.clone(), &path).send().await.unwrap();
                let status = resp.status();
                let answer = if status.is_success() {
                    Value::Null
                } else {
                    resp.json().await.unwrap_or(Value::Null)
                };
                (status, answer)
            } else {
                caller.call(method.clone(), &path, body).await
            };
            assert_eq!(
                status.as_u16(),
                *want_status,
                "{who} {method} {path}: {answer}"
            );
            assert_eq!(code(&answer), *want_code, "{who} {method} {path}: {answer}");
            count += 1;
        }
    }
    assert!(count > 0);
}

/// Every endpoint, for each kind of caller: status and stable error code.
#[tokio::test]
async fn the_permission_matrix_holds_on_every_instance_endpoint() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let (admin_name, admin_password) = read_credentials(&dir.data_dir());
    add_user(&dir, "alice", PASSWORD);
    add_user(&dir, "bob", PASSWORD);
    let db = Db::open(&dir, &["alice", "bob"]).await;
    let droplet = db.external_droplet("Lab shell").await;

    let admin = Api::login(&gw, &dir, &admin_name, &admin_password).await;
    // A second tenant with a user of its own.
    let (status, tenant) = admin
        .post("/api/v1/tenants", json!({"name": "Other"}))
        .await;
    assert_eq!(status, 201, "{tenant}");
    let (status, body) = admin
        .post(
            "/api/v1/users",
            json!({"username": "carol", "password": PASSWORD, "tenant_id": tenant["id"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // An auditor of the default tenant (sees every instance, changes none), and an instance
    // manager of the other tenant (rights that stop at their tenant's border).
    let group = |name: &str, tenant: Value, flags: Value| json!({"name": name, "tenant_id": tenant, "permissions": flags});
    let (status, auditors) = admin
        .post(
            "/api/v1/groups",
            group("Auditors", Value::Null, json!({"view_instances": true})),
        )
        .await;
    assert_eq!(status, 201, "{auditors}");
    let (status, managers) = admin
        .post(
            "/api/v1/groups",
            group(
                "Managers",
                tenant["id"].clone(),
                json!({"view_instances": true, "edit_instances": true}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{managers}");
    for (name, group) in [("erin", &auditors), ("dave", &managers)] {
        let tenant_id = group["tenant_id"].clone();
        let (status, body) = admin
            .post(
                "/api/v1/users",
                json!({"username": name, "password": PASSWORD, "tenant_id": tenant_id,
                       "group_ids": [group["id"]]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    let alice = Api::login(&gw, &dir, "alice", PASSWORD).await;
    let bob = Api::login(&gw, &dir, "bob", PASSWORD).await;
    let carol = Api::login(&gw, &dir, "carol", PASSWORD).await;
    let erin = Api::login(&gw, &dir, "erin", PASSWORD).await;
    let dave = Api::login(&gw, &dir, "dave", PASSWORD).await;
    let nobody = Api::anonymous(&gw, &dir);
    let alice_key = Api::with_key(&gw, &dir, &alice.create_key("script").await);

    // Alice's instance, launched by her API key (no cookie, no CSRF token).
    let (status, body) = alice_key
        .post("/api/v1/instances", json!({"droplet_id": droplet.id}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_i64().unwrap();
    let one = format!("/api/v1/instances/{id}");
    let stop = format!("{one}/stop");

    // Who calls, then each request as "METHOD path" (`{one}`, `{start}`, `{stop}`, `{id}`:
    // alice's instance) with the status and error code it must get ("" on success).
    let matrix: &[MatrixRow] = &[
        // Anonymous: 401 everywhere.
        (
            "anonymous",
            &nobody,
            &[
                ("GET /api/v1/instances", 401, "unauthenticated"),
                ("POST /api/v1/instances", 401, "unauthenticated"),
                ("GET {one}", 401, "unauthenticated"),
                ("POST {stop}", 401, "unauthenticated"),
                ("POST {start}", 401, "unauthenticated"),
                ("DELETE {one}", 401, "unauthenticated"),
                ("GET /api/v1/stats", 401, "unauthenticated"),
                ("GET /api/v1/events", 401, "unauthenticated"),
            ],
        ),
        // The owner, by session.
        (
            "alice",
            &alice,
            &[
                ("GET {one}", 200, ""),
                ("GET /api/v1/instances?scope=all", 403, "forbidden"),
                ("GET /api/v1/events?scope=all", 403, "forbidden"),
                ("POST {stop}", 200, ""),
                ("POST {start}", 200, ""),
            ],
        ),
        // Another user of the same tenant: not theirs to see.
        (
            "bob",
            &bob,
            &[
                ("GET {one}", 404, "not_found"),
                ("POST {stop}", 404, "not_found"),
                ("POST {start}", 404, "not_found"),
                ("DELETE {one}", 404, "not_found"),
                ("GET /api/v1/instances?scope=all", 403, "forbidden"),
                ("GET /api/instance/{id}/destroy", 404, "not_found"),
            ],
        ),
        // A user of another tenant: the instance and the droplet do not exist for them.
        (
            "carol",
            &carol,
            &[
                ("GET {one}", 404, "not_found"),
                ("POST {stop}", 404, "not_found"),
                ("DELETE {one}", 404, "not_found"),
                ("POST /api/v1/instances", 404, "not_found"),
                ("POST /api/instance/request", 404, "not_found"),
                ("GET /api/v1/instances?scope=all", 403, "forbidden"),
            ],
        ),
        // The auditor sees it but may not change it.
        (
            "erin",
            &erin,
            &[
                ("GET {one}", 200, ""),
                ("GET /api/v1/instances?scope=all", 200, ""),
                ("GET /api/v1/events?scope=all", 200, ""),
                ("POST {stop}", 403, "forbidden"),
                ("POST {start}", 403, "forbidden"),
                ("DELETE {one}", 403, "forbidden"),
            ],
        ),
        // The other tenant's instance manager: alice's instance does not exist for them.
        (
            "dave",
            &dave,
            &[
                ("GET {one}", 404, "not_found"),
                ("POST {stop}", 404, "not_found"),
                ("DELETE {one}", 404, "not_found"),
                ("GET /api/v1/instances?scope=all", 200, ""),
            ],
        ),
        // The administrator sees and manages everyone's.
        (
            "admin",
            &admin,
            &[
                ("GET {one}", 200, ""),
                ("GET /api/v1/instances?scope=all", 200, ""),
                ("POST {stop}", 200, ""),
                ("POST {start}", 200, ""),
            ],
        ),
        // The API key acts as alice, without CSRF.
        (
            "alice's key",
            &alice_key,
            &[
                ("GET /api/v1/instances", 200, ""),
                ("POST {stop}", 200, ""),
                ("POST {start}", 200, ""),
                ("GET /api/v1/stats", 200, ""),
                ("GET /api/v1/instances?scope=all", 403, "forbidden"),
            ],
        ),
    ];
    check_matrix(matrix, id, &json!({"droplet_id": droplet.id})).await;

    // Lists: the admin's includes alice's instance; bob's and carol's own lists are empty.
    let (_, all) = admin.get("/api/v1/instances?scope=all&q=ALI").await;
    assert_eq!(all["total"], 1, "{all}");
    assert_eq!(all["items"][0]["username"], "alice");
    let (_, filtered) = admin
        .get(&format!(
            "/api/v1/instances?scope=all&droplet_id={}&status=running",
            droplet.id
        ))
        .await;
    assert_eq!(filtered["total"], 1, "{filtered}");
    let (_, theirs) = dave.get("/api/v1/instances?scope=all").await;
    assert_eq!(theirs["total"], 0, "another tenant's list: {theirs}");
    let (_, seen) = erin.get("/api/v1/instances?scope=all").await;
    assert_eq!(seen["total"], 1, "{seen}");
    let (_, stats) = erin.get("/api/v1/stats").await;
    assert!(stats["host"].is_object(), "{stats}");
    for caller in [&bob, &carol] {
        let (_, mine) = caller.get("/api/v1/instances").await;
        assert_eq!(mine["total"], 0, "{mine}");
    }
    // The host's figures are for those who may see every instance.
    let (_, stats) = admin.get("/api/v1/stats").await;
    assert!(stats["host"].is_object(), "{stats}");
    let (_, stats) = bob.get("/api/v1/stats").await;
    assert_eq!(stats["host"], Value::Null, "{stats}");

    // A cookie session without the CSRF header changes nothing.
    let no_csrf = alice
        .bare(Method::POST, &stop)
        .header("origin", gw.origin())
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN);
    let body: Value = no_csrf.json().await.unwrap();
    assert_eq!(code(&body), "csrf_failed");

    // The administrator deletes it; alice's stream had shown it.
    let mut events = open_events(&alice, "").await;
    events
        .wait_for("instance", Duration::from_secs(5), is(id, "running"))
        .await;
    let (status, _) = admin.call(Method::DELETE, &one, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    events
        .wait_for("instance_removed", Duration::from_secs(5), |v| {
            v["id"] == id
        })
        .await;

    // Signing out ends the stream.
    let (status, _) = alice.call(Method::DELETE, "/api/v1/session", None).await;
    assert!(status.is_success(), "{status}");
    assert!(
        events.ends_within(Duration::from_secs(10)).await,
        "the stream outlived the session"
    );
    db.store.close().await;
}

#[tokio::test]
async fn hostile_names_come_back_as_plain_json_strings() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    let (admin_name, admin_password) = read_credentials(&dir.data_dir());
    let db = Db::open(&dir, &[]).await;
    // A username no form accepts, as an identity provider might send it.
    db.store
        .create_user(
            &NewUser {
                tenant_id: db.tenant_id,
                username: HOSTILE.into(),
                email: None,
                password_hash: None,
                display_name: HOSTILE.into(),
                external: true,
                disabled: false,
                protected: false,
            },
            now_millis(),
        )
        .await
        .unwrap();
    let owner = db.user_id(HOSTILE).await;
    // On an external host droplet: reconciliation leaves its row alone (no container).
    let mut droplet = NewDroplet::new(
        db.tenant_id,
        HOSTILE,
        DropletType::Ssh,
        TargetKind::External,
    );
    droplet.external_host = Some("127.0.0.1".into());
    droplet.external_port = Some(22);
    let droplet = db
        .store
        .create_droplet(&droplet, now_millis())
        .await
        .unwrap();
    let instance = db
        .store
        .create_instance(
            &NewInstance {
                slug: "hostile1".into(),
                droplet_id: droplet.id,
                user_id: owner,
                status: InstanceStatus::Running,
            },
            now_millis(),
        )
        .await
        .unwrap();
    let id = instance.id;
    let admin = Api::login(&gw, &dir, &admin_name, &admin_password).await;
    let resp = admin
        .request(Method::GET, &format!("/api/v1/instances/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(content_type(&resp).starts_with("application/json"));
    let shown: Value = resp.json().await.unwrap();
    assert_eq!(shown["username"], HOSTILE);
    assert_eq!(shown["droplet_name"], HOSTILE);
    let (_, found) = admin.get("/api/v1/instances?scope=all&q=%3Cimg").await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["items"][0]["username"], HOSTILE);
    db.store.close().await;
}

/// Issue 9 runs two gateways on one PostgreSQL database: a change made through one shows on
/// the other's event stream within about a second.
#[tokio::test]
async fn changes_made_through_another_gateway_reach_the_event_stream() {
    use flowcase_e2e::postgres::TestDatabase;
    let pg = TestDatabase::create().await;
    let mut first = GatewayDir::new();
    let key = first.dir.path().join("shared-secret.key");
    let mut second = GatewayDir::new();
    for dir in [&mut first, &mut second] {
        dir.set("FLOWCASE_DATABASE__URL", &pg.url)
            .set("FLOWCASE_SECRETS__KEY_FILE", key.to_str().unwrap());
    }
    let gw1 = Gateway::start(&first).await;
    let gw2 = Gateway::start(&second).await;
    add_user(&first, "alice", PASSWORD);
    let db = Db::open(&first, &["alice"]).await;
    let droplet = db.external_droplet("Lab shell").await;

    let on_first = Api::login(&gw1, &first, "alice", PASSWORD).await;
    let on_second = Api::login(&gw2, &second, "alice", PASSWORD).await;
    let mut events = open_events(&on_second, "").await;
    let (status, body) = on_first
        .post("/api/v1/instances", json!({"droplet_id": droplet.id}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_i64().unwrap();
    events
        .wait_for("instance", Duration::from_secs(3), is(id, "running"))
        .await;
    // The list's filters on PostgreSQL: the search takes `%` and `_` literally.
    for (query, total) in [
        ("?q=LAB%20sh", 1),
        ("?q=lab_shell", 0),
        ("?q=%25", 0),
        ("?status=running", 1),
        ("?status=stopped", 0),
    ] {
        let (status, list) = on_second.get(&format!("/api/v1/instances{query}")).await;
        assert_eq!(status, 200, "{query}: {list}");
        assert_eq!(list["total"], total, "{query}: {list}");
    }
    let (status, _) = on_first
        .post(&format!("/api/v1/instances/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, 200);
    events
        .wait_for("instance", Duration::from_secs(3), is(id, "stopped"))
        .await;
    let (status, _) = on_first
        .call(Method::DELETE, &format!("/api/v1/instances/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    events
        .wait_for("instance_removed", Duration::from_secs(3), |v| {
            v["id"] == id
        })
        .await;
    drop(events);
    db.store.close().await;
    drop(gw1);
    drop(gw2);
    pg.drop_now().await;
}

/// An event stream never ends by itself; a graceful stop must not wait for it.
#[tokio::test]
async fn an_open_event_stream_does_not_hold_up_a_graceful_stop() {
    let dir = GatewayDir::new();
    let mut gw = Gateway::start(&dir).await;
    add_user(&dir, "alice", PASSWORD);
    let alice = Api::login(&gw, &dir, "alice", PASSWORD).await;
    let mut events = open_events(&alice, "").await;
    gw.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = gw.wait_exit(Duration::ZERO) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not stop within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(events.ends_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_stop_or_delete_whose_client_goes_away_still_runs_to_its_end() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    add_user(&dir, "alice", PASSWORD);
    let db = Db::open(&dir, &["alice"]).await;
    let droplet = db.http_droplet("Notes", &[]).await;
    let alice = Api::login(&gw, &dir, "alice", PASSWORD).await;
    let (status, launched) = alice
        .post(
            "/api/v1/instances",
            json!({"droplet_id": droplet.id, "resolution": "1280x800"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{launched}");
    let id = launched["id"].as_i64().unwrap();
    alice
        .wait_status(id, "running", Duration::from_secs(60))
        .await;

    // The stop is asked for, and the client goes away while the container is stopping (a
    // closed tab; a browser dropping its requests because the network changed): the gateway
    // must not drop the stop half-way and leave the instance `stopping` for good.
    let path = format!("/api/v1/instances/{id}/stop");
    let gone = Api::login(&gw, &dir, "alice", PASSWORD).await;
    let request = tokio::spawn(async move { gone.post(&path, json!({})).await });
    alice
        .wait_status(id, "stopping", Duration::from_secs(10))
        .await;
    request.abort();
    assert!(request.await.is_err_and(|e| e.is_cancelled()));
    alice
        .wait_status(id, "stopped", Duration::from_secs(60))
        .await;

    // Likewise a delete.
    let gone = Api::login(&gw, &dir, "alice", PASSWORD).await;
    let (status, _) = alice
        .post(&format!("/api/v1/instances/{id}/start"), json!({}))
        .await;
    assert!(status == StatusCode::OK || status == StatusCode::ACCEPTED);
    alice
        .wait_status(id, "running", Duration::from_secs(60))
        .await;
    let request = tokio::spawn(async move {
        gone.call(Method::DELETE, &format!("/api/v1/instances/{id}"), None)
            .await
    });
    alice
        .wait_status(id, "destroying", Duration::from_secs(10))
        .await;
    request.abort();
    assert!(request.await.is_err_and(|e| e.is_cancelled()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = alice.get(&format!("/api/v1/instances/{id}")).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "still there: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.store.close().await;
}

#[tokio::test]
async fn a_launch_repeated_with_its_idempotency_key_makes_one_instance() {
    let dir = GatewayDir::new();
    let gw = Gateway::start(&dir).await;
    add_user(&dir, "alice", PASSWORD);
    add_user(&dir, "bob", PASSWORD);
    let db = Db::open(&dir, &["alice", "bob"]).await;
    let droplet = db.external_droplet("Lab shell").await;
    let alice = Api::login(&gw, &dir, "alice", PASSWORD).await;
    let bob = Api::login(&gw, &dir, "bob", PASSWORD).await;
    let launch = |caller: &Api, key: &str| {
        caller
            .request(Method::POST, "/api/v1/instances")
            .header("idempotency-key", key)
            .json(&json!({"droplet_id": droplet.id, "resolution": "1280x800"}))
            .send()
    };
    let answer = |resp: reqwest::Response| async move {
        let replayed = resp.headers().get("idempotent-replayed").is_some();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        (status, replayed, body)
    };
    // Sent twice at the same moment (the second while the first still runs), then once more
    // after: one instance, the same answer each time.
    let (first, second) = tokio::join!(launch(&alice, "dialog-1"), launch(&alice, "dialog-1"));
    let (s1, r1, b1) = answer(first.unwrap()).await;
    let (s2, r2, b2) = answer(second.unwrap()).await;
    assert_eq!(
        (s1, s2),
        (StatusCode::CREATED, StatusCode::CREATED),
        "{b1} {b2}"
    );
    assert_eq!(b1["id"], b2["id"]);
    assert!(r1 != r2, "exactly one of the two launched: {r1} {r2}");
    let id = b1["id"].as_i64().unwrap();
    let (s3, r3, b3) = answer(launch(&alice, "dialog-1").await.unwrap()).await;
    assert_eq!(
        (s3, r3, b3["id"].as_i64()),
        (StatusCode::CREATED, true, Some(id))
    );
    assert_eq!(instance_ids(&alice).await, [id]);

    // A new key is a new launch; the same key of another user is theirs.
    let (_, replayed, other) = answer(launch(&alice, "dialog-2").await.unwrap()).await;
    assert!(!replayed);
    assert_ne!(other["id"], id);
    let (_, replayed, bobs) = answer(launch(&bob, "dialog-1").await.unwrap()).await;
    assert!(!replayed);
    assert_ne!(bobs["id"], id);
    assert_eq!(instance_ids(&alice).await.len(), 2);
    assert_eq!(instance_ids(&bob).await.len(), 1);

    // A malformed key is refused before anything starts.
    let resp = launch(&alice, &"k".repeat(129)).await.unwrap();
    let (status, _, body) = answer(resp).await;
    assert_eq!(
        (status, code(&body), body["error"]["field"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            Some("Idempotency-Key")
        )
    );
    assert_eq!(instance_ids(&alice).await.len(), 2);
}

/// The ids of the instances `caller` sees.
async fn instance_ids(caller: &Api) -> Vec<i64> {
    let (status, page) = caller.get("/api/v1/instances").await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}
