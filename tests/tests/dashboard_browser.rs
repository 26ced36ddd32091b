//! The dashboard and the admin droplets page in headless Chromium, through the real binary and a
//! real dockerd (no stand-in API): a user launches an `http` droplet (a locally built image)
//! from the launch modal, sees it become running without a reload (pushed over the event
//! stream), opens it on its own subdomain, stops it and deletes it; an administrator creates a
//! droplet and a user from the admin pages and pulls the droplet's image from a local registry,
//! with the progress bar and the log filling in until the pull is done.
//!
//! A screenshot of each step is saved under `target/screenshots/dashboard/` for a person to look
//! at. Page loads and form posts go through retrying helpers: Chromium drops requests in flight
//! whenever a parallel test starts a container (see `browser::NETWORK_CHANGED`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use flowcase_admin::store::{Store, now_millis};
use flowcase_e2e::browser::{
    ATTEMPTS, Browser, StreamedPull, screenshot_dir, screenshot_on_failure,
};
use flowcase_e2e::instances::{add_user, database_url, httpd_droplet, users_group};
use flowcase_e2e::{Gateway, GatewayDir, Untag, read_credentials};
use serde_json::Value;
use url::Url;

const PASSWORD: &str = "a long enough passphrase";
const APP_BODY: &str = "hello from the real notebook";

struct Env {
    dir: GatewayDir,
    gw: Gateway,
    browser: Browser,
}

impl Env {
    async fn start(name: &str) -> Env {
        let dir = GatewayDir::new();
        let (gw, browser) = tokio::join!(Gateway::start(&dir), Browser::start(name));
        Env { dir, gw, browser }
    }

    fn url(&self, path: &str) -> String {
        self.gw.url("localhost", path)
    }

    async fn open(&self, path: &str) {
        self.browser.open_page(&self.url(path)).await;
    }

    async fn shot(&self, name: &str) {
        self.browser.shot(&screenshot_dir("dashboard"), name).await;
    }

    /// Saves the page at laptop and phone size (`<name>-phone.png`) and checks that nothing is
    /// wider than the phone's window.
    async fn phone_shot(&self, name: &str) {
        self.browser.shots(&screenshot_dir("dashboard"), name).await;
    }

    async fn check_console(&self, what: &str) {
        self.browser.check_console(what).await;
    }

    /// Signs in with the login form, landing on `path`.
    async fn sign_in(&self, user: &str, password: &str, path: &str) {
        self.browser
            .sign_in(&self.gw.origin(), user, password, path)
            .await;
    }

    async fn press(&self, button: &str, scope: &str) {
        self.browser.press(button, scope).await;
    }

    async fn wait_long(&self, what: &str, script: &str, within: Duration) {
        self.browser.wait_long(what, script, within).await;
    }
}

fn row_in(state: &str) -> String {
    format!("return !!document.querySelector('#instances [data-instance-id][data-state={state}]');")
}

#[tokio::test]
async fn a_user_launches_opens_stops_and_deletes_a_web_app_from_the_dashboard() {
    let env = Env::start("dashboard").await;
    let b = &env.browser;
    add_user(&env.dir, "alice", PASSWORD);

    let store = Store::connect(&database_url(&env.dir)).await.unwrap();
    let users = users_group(&store, &["alice"]).await;
    let mut new = httpd_droplet(users.tenant_id, "Notebook").await;
    new.description = "A small web app, served from a container".into();
    new.env = BTreeMap::from([("BODY".to_owned(), APP_BODY.to_owned())]);
    let droplet = store.create_droplet(&new, now_millis()).await.unwrap();
    store.grant_droplet(droplet.id, users.id).await.unwrap();

    screenshot_on_failure(&[b], async {
        env.sign_in("alice", PASSWORD, "/dashboard").await;
        b.wait_for_text("Notebook").await;
        env.shot("1-dashboard").await;

        // Launch from the modal.
        // Enabled once the page's script runs (a click before that would do nothing).
        b.click(&format!(
            "#catalogue [data-action=launch][data-droplet-id='{}']:not([disabled])",
            droplet.id
        ))
        .await;
        b.wait_for_js(
            "the launch modal",
            "return document.getElementById('launch-modal').open;",
        )
        .await;
        env.shot("2-launch-modal").await;
        env.press("#launch-submit", "#launch-form").await;
        let error = b.text_of("#launch-error").await;
        assert!(error.is_empty(), "the launch failed: {error}");
        b.wait_for_js(
            "the modal closed",
            "return !document.getElementById('launch-modal').open;",
        )
        .await;
        b.wait_for_js(
            "the new instance's row",
            "return !!document.querySelector('#instances [data-instance-id]');",
        )
        .await;
        env.shot("3-launching").await;
        // Marks the page: a reload would lose it, so finding it later proves there was none.
        b.eval("window.__no_reload = true; return 1;").await;

        // Running, pushed over the event stream.
        env.wait_long(
            "a running instance",
            &row_in("running"),
            Duration::from_secs(90),
        )
        .await;
        assert_eq!(b.eval("return window.__no_reload === true;").await, true);
        assert_eq!(b.text_of("#stat-running").await, "1");
        // The usage tiles follow without a reload: CPU and memory as soon as the engine has
        // sampled the new container (pushed with the instance events, not left to a periodic
        // poll of figures sampled before the container ran), and the count stays put (an older
        // figure never overwrites it). Until then the tiles say "–", never a false 0. The bound
        // is generous: one engine sample takes a second or two, far more on a loaded CI machine.
        assert!(
            !["0 B", "0 %", "0%"].contains(&b.text_of("#stat-memory").await.as_str()),
            "an unmeasured instance shows as using nothing"
        );
        env.wait_long(
            "the running instance's memory in the tiles",
            "const m = document.getElementById('stat-memory').textContent; \
             const c = document.getElementById('stat-cpu').textContent; \
             return /[1-9]/.test(m) && m !== '–' && c !== '–';",
            Duration::from_secs(30),
        )
        .await;
        for _ in 0..10 {
            assert_eq!(b.text_of("#stat-running").await, "1");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let open = b
            .eval(
                "const a = document.querySelector('#instances [data-action=open]'); \
                 return {hidden: a.hidden, href: a.getAttribute('href'), target: a.target};",
            )
            .await;
        assert_eq!(open["hidden"], false, "{open}");
        assert_eq!(open["target"], "_blank", "{open}");
        let href = open["href"].as_str().unwrap().to_owned();
        let url = Url::parse(&href).unwrap();
        let host = url.host_str().unwrap().to_owned();
        assert!(host.ends_with(".apps.localhost"), "{href}");
        env.shot("4-running").await;
        env.phone_shot("4-running").await;
        env.check_console("the dashboard with a running instance")
            .await;

        // Opens on its subdomain (through the app-host sign-in, which needs no password: the
        // session on the public host vouches for alice).
        let mut served = String::new();
        for _ in 0..ATTEMPTS {
            b.goto(&href).await;
            match b
                .try_wait_for_url("the app on its own host", |u| {
                    u.host_str() == Some(host.as_str())
                        && !u.query().unwrap_or_default().contains("code")
                })
                .await
            {
                Ok(_) => {}
                Err(_) => continue,
            }
            served = b.page_text().await;
            if served.contains(APP_BODY) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            served = b.page_text().await;
            if served.contains(APP_BODY) {
                break;
            }
        }
        assert!(
            served.contains(APP_BODY),
            "the app's host showed {served:?}"
        );
        env.shot("5-app-on-its-subdomain").await;

        // Back on the dashboard: stop, and the state changes.
        env.open("/dashboard").await;
        b.wait_for_js("the running row", &row_in("running")).await;
        b.eval("window.__no_reload = true; return 1;").await;
        env.press("#instances [data-action=stop]", "#toasts").await;
        env.wait_long(
            "a stopped instance",
            &row_in("stopped"),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(
            b.eval(
                "return !document.querySelector('#instances [data-action=start]').hidden \
                   && document.querySelector('[data-field=badge]').textContent;"
            )
            .await,
            "Stopped"
        );
        assert_eq!(b.text_of("#stat-running").await, "0");
        env.shot("6-stopped").await;

        // Delete: the first click arms a confirmation, which survives the row being redrawn
        // by a pushed change (here: the instance started from elsewhere, a script or another
        // tab), and the second click deletes.
        let id = b
            .eval("return document.querySelector('#instances [data-instance-id]').dataset.instanceId;")
            .await;
        let id = id.as_str().unwrap().to_owned();
        let elsewhere = flowcase_e2e::api::Api::login(&env.gw, &env.dir, "alice", PASSWORD).await;
        b.click("#instances [data-action=delete]").await;
        let delete_label =
            "return document.querySelector('#instances [data-action=delete]').textContent;";
        assert_eq!(b.eval(delete_label).await, "Confirm delete");
        let path = format!("/api/v1/instances/{id}/start");
        // Not awaited here: the start answers when the instance runs, the redraw comes first.
        let start = tokio::spawn(async move {
            elsewhere
                .call(reqwest::Method::POST, &path, Some(serde_json::json!({})))
                .await
        });
        b.wait_for_js(
            "the row redrawn by the pushed start",
            "return !document.querySelector('#instances [data-instance-id][data-state=stopped]');",
        )
        .await;
        assert_eq!(
            b.eval(delete_label).await,
            "Confirm delete",
            "the redraw lost the armed delete"
        );
        env.shot("6b-delete-armed-after-redraw").await;
        b.click("#instances [data-action=delete]").await;
        let _ = start.await;
        env.wait_long(
            "the deleted instance gone",
            "return !document.querySelector('#instances [data-instance-id]') \
               && !document.getElementById('instances-empty').hidden;",
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(b.eval("return window.__no_reload === true;").await, true);
        env.shot("7-deleted").await;
        env.check_console("the dashboard after the delete").await;
    })
    .await;

    // The engine agrees: no container left.
    let (_, list) = flowcase_e2e::api::Api::login(&env.gw, &env.dir, "alice", PASSWORD)
        .await
        .get("/api/v1/instances")
        .await;
    assert_eq!(list["total"], 0, "{list}");
    store.close().await;
    env.browser.close().await;
}

#[tokio::test]
async fn an_administrator_creates_a_droplet_and_a_user_and_pulls_the_image_with_live_progress() {
    let env = Env::start("admin-droplets").await;
    let b = &env.browser;
    let (admin, admin_password) = read_credentials(&env.dir.data_dir());
    // Unique per run: parallel tests share one dockerd.
    let repository = format!("flowcase/page-{}", env.dir.deployment());
    let pushed = repository.clone();
    let registry = tokio::task::spawn_blocking(move || {
        let image = flowcase_test_images::httpd_image()?;
        let registry = flowcase_test_images::registry::Registry::start(None)?;
        registry.push(&pushed, "v1", &image)?;
        Ok::<_, String>(registry)
    })
    .await
    .unwrap()
    .unwrap();
    let reference = registry.reference(&repository, "v1");
    let _untag = Untag(vec![reference.clone()]);

    screenshot_on_failure(&[b], async {
        env.sign_in(&admin, &admin_password, "/admin/droplets").await;
        b.wait_for_js(
            "the droplets list",
            "return document.getElementById('droplets-count').textContent !== 'Loading…';",
        )
        .await;
        env.shot("admin-1-droplets-empty").await;
        env.check_console("the empty droplets page").await;

        // A droplet: the API's refusal (no image) shows next to its field, then it is made.
        b.click("#new-droplet").await;
        b.fill("#nd-name", "Team notes").await;
        b.fill("#nd-description", "<img src=x onerror=alert(1)>").await;
        b.fill("#nd-port", "8080").await;
        env.press("#droplet-submit", "#droplet-form").await;
        let refusal = b.text_of("[data-error-for=image]").await;
        assert!(!refusal.is_empty(), "no error next to the image field");
        env.shot("admin-2-droplet-refused").await;
        b.fill("#nd-image", &reference).await;
        b.fill("#nd-cpu", "0.5").await;
        b.fill("#nd-memory", "128").await;
        b.eval(
            "const u = [...document.querySelectorAll('#nd-groups label')] \
               .find(l => l.textContent.trim() === 'User'); \
             u.querySelector('input').checked = true; return 1;",
        )
        .await;
        env.shot("admin-3-droplet-form").await;
        env.press("#droplet-submit", "#droplet-form").await;
        b.wait_for_js(
            "the new droplet's row",
            "return !!document.querySelector('#droplets-rows tr[data-droplet-id]') \
               && !document.getElementById('droplet-modal').open;",
        )
        .await;
        let text = b.text_of("#droplets-rows tr").await;
        assert!(text.contains("Team notes"), "{text}");
        assert!(text.contains("<img src=x onerror=alert(1)>"), "{text}");
        assert!(text.contains("0.5 CPU · 128 MiB"), "{text}");
        assert_eq!(
            b.eval("return document.querySelectorAll('img[src=\"x\"], img[src$=\"/x\"]').length;")
                .await,
            0,
            "a hostile description became markup"
        );
        env.shot("admin-4-droplet-created").await;
        env.phone_shot("admin-4-droplet-created").await;

        // Search narrows the list.
        b.filter(
            "#droplet-search",
            "nothing like it",
            "#droplets-error",
            "return !document.getElementById('droplets-empty').hidden;",
        )
        .await;
        b.filter(
            "#droplet-search",
            "team",
            "#droplets-error",
            "return !!document.querySelector('#droplets-rows tr[data-droplet-id]');",
        )
        .await;

        // A user, from the users page.
        env.open("/admin/users").await;
        b.click("#new-user").await;
        b.fill("#nu-username", "dora").await;
        b.fill("#nu-password", PASSWORD).await;
        env.press("#user-form button[type=submit]", "#user-form").await;
        // Created; or, when a dropped creation reached the gateway all the same, the retry is
        // told the name is taken (the API check at the end finds dora either way).
        b.wait_for_js(
            "the created user",
            "const f = document.getElementById('user-form'); \
             return !document.getElementById('user-created').hidden \
               || [...f.querySelectorAll('[data-error-for=username], [data-form-error]')] \
                    .some(e => /exists|taken/i.test(e.textContent));",
        )
        .await;
        env.shot("admin-5-user-created").await;

        // The pull: progress and log fill in as the engine reports them, ending with done.
        env.open("/admin/droplets").await;
        b.wait_for_element("#droplets-rows [data-action=pull]").await;
        // Records what the progress figure shows over time.
        b.eval(
            "window.__percents = []; \
             new MutationObserver(() => __percents.push(document.getElementById('pull-percent').textContent)) \
               .observe(document.getElementById('pull-percent'), {childList: true, characterData: true, subtree: true}); \
             return 1;",
        )
        .await;
        b.streamed_pull(&StreamedPull {
            start: "#droplets-rows [data-action=pull]",
            modal: "pull",
            images: std::slice::from_ref(&reference),
            reset: "window.__percents.length = 0; return 1;",
            within: Duration::from_secs(90),
        })
        .await;
        env.shot("admin-6-pulled").await;
        let state = b
            .eval(
                "return {state: document.getElementById('pull-modal').dataset.state, \
                         error: document.getElementById('pull-error').textContent, \
                         value: document.getElementById('pull-progress').value, \
                         log: document.getElementById('pull-log').textContent, \
                         status: document.getElementById('pull-status').textContent, \
                         percents: window.__percents};",
            )
            .await;
        assert_eq!(state["state"], "done", "{state:#}");
        assert_eq!(state["value"], 100, "{state:#}");
        let log = state["log"].as_str().unwrap();
        assert!(log.contains("Pulling from"), "{log}");
        assert!(log.contains(": Pull complete"), "{log}");
        assert!(log.trim_end().ends_with(&format!("Done: {reference}")), "{log}");
        assert!(
            state["status"].as_str().unwrap().starts_with("Done"),
            "{state:#}"
        );
        let percents: Vec<&str> = state["percents"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            percents.len() >= 2 && percents.last() == Some(&"100 %"),
            "the progress figure moved: {percents:?}"
        );
        let inspect = std::process::Command::new("docker")
            .args(["image", "inspect", &reference])
            .output()
            .unwrap();
        assert!(inspect.status.success(), "the image is on the engine");
        env.check_console("the droplets page after the pull").await;
        b.click("#pull-close").await;

        // Deactivate, then delete (a second click confirms).
        env.press("#droplets-rows [data-action=toggle]", "#toasts").await;
        b.wait_for_js(
            "the inactive droplet",
            "return !!document.querySelector('#droplets-rows tr[data-active=\"0\"]');",
        )
        .await;
        env.shot("admin-7-deactivated").await;
    })
    .await;

    // The droplet is granted to the User group, and dora exists.
    let api = flowcase_e2e::api::Api::login(&env.gw, &env.dir, &admin, &admin_password).await;
    let (_, list) = api.get("/api/v1/droplets?scope=all").await;
    assert_eq!(list["total"], 1, "{list}");
    let droplet = &list["items"][0];
    assert_eq!(droplet["image"], reference.as_str(), "{droplet}");
    assert_eq!(droplet["ports"], serde_json::json!([8080]), "{droplet}");
    assert_eq!(droplet["memory_mb"], 128, "{droplet}");
    assert_eq!(droplet["active"], false, "{droplet}");
    assert_eq!(
        droplet["group_ids"].as_array().unwrap().len(),
        1,
        "{droplet}"
    );
    let (status, users) = api.get("/api/v1/users?q=dora").await;
    assert_eq!(
        (status.as_u16(), &users["total"]),
        (200, &Value::from(1)),
        "{users}"
    );
    drop(registry);
    env.browser.close().await;
}

#[tokio::test]
async fn an_administrator_filters_stops_and_deletes_a_users_instance_on_the_instances_page() {
    let env = Env::start("admin-instances").await;
    let b = &env.browser;
    let (admin, admin_password) = read_credentials(&env.dir.data_dir());
    add_user(&env.dir, "alice", PASSWORD);
    let store = Store::connect(&database_url(&env.dir)).await.unwrap();
    let users = users_group(&store, &["alice"]).await;
    let new = httpd_droplet(users.tenant_id, "Wiki").await;
    let droplet = store.create_droplet(&new, now_millis()).await.unwrap();
    store.grant_droplet(droplet.id, users.id).await.unwrap();
    let as_alice = flowcase_e2e::api::Api::login(&env.gw, &env.dir, "alice", PASSWORD).await;
    as_alice
        .send_ok(
            reqwest::Method::POST,
            "/api/v1/instances",
            serde_json::json!({"droplet_id": droplet.id, "resolution": "1280x800"}),
            202,
        )
        .await;

    let shows = |n: usize| {
        format!(
            "return document.querySelectorAll('#instances-rows tr[data-instance-id]').length === {n} \
                   && document.getElementById('instances-count').textContent !== 'Loading…';"
        )
    };
    screenshot_on_failure(&[b], async {
        env.sign_in(&admin, &admin_password, "/admin/instances")
            .await;
        // Running, pushed by the event stream of every instance in sight.
        env.wait_long(
            "alice's running instance",
            "return !!document.querySelector('#instances-rows tr[data-state=running]');",
            Duration::from_secs(90),
        )
        .await;
        let text = b.text_of("#instances-rows tr").await;
        assert!(text.contains("Wiki") && text.contains("alice"), "{text}");
        env.shot("instances-1-running").await;
        env.check_console("the instances page").await;

        // Filters (a reload the network change dropped is asked for again).
        let errors = "#instances-error";
        b.choose("#if-status", "stopped", errors, &shows(0)).await;
        assert!(
            b.eval("return !document.getElementById('instances-empty').hidden;")
                .await
                == true
        );
        b.choose("#if-status", "", errors, &shows(1)).await;
        b.filter("#if-q", "nobody-like-that", errors, &shows(0))
            .await;
        b.filter("#if-q", "alic", errors, &shows(1)).await;
        b.choose("#if-droplet", &droplet.id.to_string(), errors, &shows(1))
            .await;
        env.shot("instances-2-filtered").await;
        env.phone_shot("instances-2-filtered").await;

        // Its droplet cannot be deleted while the instance exists: the droplets page says so.
        env.open("/admin/droplets").await;
        b.click("#droplets-rows [data-action=delete]").await;
        env.press("#droplets-rows [data-action=delete]", "#toasts")
            .await;
        let toast = b
            .wait_for_js(
                "the in-use refusal",
                "const t = [...document.querySelectorAll('#toasts .toast')] \
                   .find(t => t.textContent.includes('cannot be deleted yet')); \
                 return t ? t.textContent : null;",
            )
            .await;
        assert!(
            toast.as_str().unwrap().starts_with(
                "Wiki cannot be deleted yet: 1 instance still exists. Stop and delete"
            ),
            "{toast}"
        );
        env.shot("instances-droplet-in-use").await;
        env.open("/admin/instances").await;
        b.wait_for_js("the instance listed again", &shows(1)).await;

        // Stop, then delete (a second click confirms).
        env.press("#instances-rows [data-action=stop]", "#toasts")
            .await;
        env.wait_long(
            "the stopped instance",
            "return !!document.querySelector('#instances-rows tr[data-state=stopped]');",
            Duration::from_secs(30),
        )
        .await;
        env.shot("instances-3-stopped").await;
        b.click("#instances-rows [data-action=delete]").await;
        env.press("#instances-rows [data-action=delete]", "#toasts")
            .await;
        env.wait_long(
            "the deleted instance gone",
            &shows(0),
            Duration::from_secs(30),
        )
        .await;
        env.shot("instances-4-deleted").await;
        env.check_console("the instances page after the delete")
            .await;
    })
    .await;

    let (_, mine) = as_alice.get("/api/v1/instances").await;
    assert_eq!(mine["total"], 0, "{mine}");
    store.close().await;
    env.browser.close().await;
}

/// Droplet icons given as URLs of another site (a loopback server here) are fetched by the
/// gateway when the droplet is saved and shown from the gateway's own origin, under the page's
/// unchanged policy (`img-src 'self' data:`); the browser never contacts the other site. An
/// oversize file and a web page in place of an image leave the name's initial.
#[tokio::test]
async fn droplet_icons_of_other_sites_show_on_the_dashboard_from_the_gateway() {
    let env = Env::start("dashboard-icons").await;
    let b = &env.browser;
    let site = flowcase_e2e::icon_server::IconServer::start().await;
    add_user(&env.dir, "alice", PASSWORD);
    let store = Store::connect(&database_url(&env.dir)).await.unwrap();
    let users = users_group(&store, &["alice"]).await;
    store.close().await;

    let (admin, admin_password) = read_credentials(&env.dir.data_dir());
    let api = flowcase_e2e::api::Api::login(&env.gw, &env.dir, &admin, &admin_password).await;
    let mut ids = BTreeMap::new();
    for (name, path) in [
        ("Pictured", "/icon.png"),
        ("Vector", "/icon.svg"),
        ("Oversize", "/big.png"),
        ("Webpage", "/page.html"),
    ] {
        let saved = api
            .send_ok(
                reqwest::Method::POST,
                "/api/v1/droplets",
                serde_json::json!({
                    "name": name, "droplet_type": "http", "image": "example/app:1",
                    "ports": [8080], "icon_url": site.url(path), "group_ids": [users.id],
                }),
                201,
            )
            .await;
        ids.insert(name, saved["id"].as_i64().unwrap());
    }
    let fetched = site.requests();

    screenshot_on_failure(&[b], async {
        env.sign_in("alice", PASSWORD, "/dashboard").await;
        b.wait_for_text("Pictured").await;
        for name in ["Pictured", "Vector"] {
            let id = ids[name];
            // The catalogue is redrawn from the API after the first paint: wait for the image
            // of whichever paint is there now to have loaded.
            let script = format!(
                "const img = document.querySelector('#catalogue [data-droplet-id=\"{id}\"] img.droplet__icon'); \
                 if (!img || !img.complete || img.naturalWidth === 0) return false; \
                 const u = new URL(img.src); \
                 return u.origin === location.origin && u.pathname === '/droplets/{id}/icon';"
            );
            b.wait_for_js(&format!("{name}'s icon, loaded from the gateway"), &script)
                .await;
        }
        for (name, initial) in [("Oversize", "O"), ("Webpage", "W")] {
            let id = ids[name];
            let shown = b
                .eval(&format!(
                    "const c = document.querySelector('#catalogue [data-droplet-id=\"{id}\"]'); \
                     return !c.querySelector('img') && c.querySelector('.droplet__icon').textContent;"
                ))
                .await;
            assert_eq!(shown, initial, "{name} shows its initial");
        }
        env.shot("8-droplet-icons").await;
        env.check_console("the dashboard with icons").await;
    })
    .await;
    assert_eq!(
        site.requests(),
        fetched,
        "the browser contacted the icons' site itself"
    );
    env.browser.close().await;
}
