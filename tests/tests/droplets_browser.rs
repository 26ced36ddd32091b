//! The admin droplets page beyond one droplet and one pull, in headless Chromium through the real
//! binary and a real dockerd: an administrator creates a VNC droplet on an existing host with a
//! password, in another tenant and granted to that tenant's group, finds the password neither
//! shown nor lost when editing it; gives a container droplet a private registry account the
//! same way; pulls every image at once from a local registry that wants that account, and
//! watches each image's own progress; imports a catalogue served
//! by a loopback HTTP server, with one valid entry (named like markup) and one invalid entry,
//! and sees each entry's result, the hostile name shown as text.
//!
//! Screenshots of each step are saved under `target/screenshots/droplets/` for a person to look
//! at (desktop and phone width). The page's pure form logic has its own node tests
//! (`admin/assets/test/droplet-form.test.js`), run here too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use flowcase_e2e::api::Api;
use flowcase_e2e::browser::{
    Browser, StreamedPull, run_node_tests, screenshot_dir, screenshot_on_failure,
};
use flowcase_e2e::loopback::LoopbackServer;
use flowcase_e2e::{Gateway, GatewayDir, Untag, read_credentials};
use reqwest::Method;
use serde_json::{Value, json};

const HOST_PASSWORD: &str = "vnc-secret-7f3a";
const REGISTRY_PASSWORD: &str = "registry-token-5c1e";
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

struct Env {
    dir: GatewayDir,
    gw: Gateway,
    browser: Browser,
}

/// The kit's page steps (`flowcase_e2e::browser`), with this test's screenshot folder and origin.
impl Env {
    async fn shot(&self, name: &str) {
        self.browser.shot(&screenshot_dir("droplets"), name).await;
    }

    /// Saves the page at phone size too (`<name>-phone.png`), failing when it overflows.
    async fn phone_shot(&self, name: &str) {
        self.browser.shots(&screenshot_dir("droplets"), name).await;
    }

    async fn check_console(&self, what: &str) {
        self.browser.check_console(what).await;
    }

    async fn sign_in(&self, user: &str, password: &str, path: &str) {
        self.browser
            .sign_in(&self.gw.origin(), user, password, path)
            .await;
    }

    /// Returns how many clicks it took (a dropped call may have reached the gateway all the
    /// same, which the caller may then see).
    async fn press(&self, button: &str, scope: &str) -> usize {
        self.browser.press(button, scope).await
    }
}

/// Serves `body` as `application/json` on a loopback port (any path) until dropped.
async fn serve_catalogue(body: String) -> LoopbackServer {
    LoopbackServer::start(axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        }
    }))
    .await
}

#[test]
fn the_form_logic_passes_its_node_tests() {
    run_node_tests("droplet-form.test.js", 8);
}

#[tokio::test]
async fn an_administrator_manages_external_hosts_pulls_all_and_imports_a_catalogue() {
    let dir = GatewayDir::new();
    // Two images in a local registry (unique per run: parallel tests share one dockerd).
    let repositories: Vec<String> = ["alpha", "beta"]
        .iter()
        .map(|r| format!("flowcase/all-{r}-{}", dir.deployment()))
        .collect();
    let pushed = repositories.clone();
    let registry_start = tokio::task::spawn_blocking(move || {
        let image = flowcase_test_images::httpd_image()?;
        let registry =
            flowcase_test_images::registry::Registry::start(Some(("puller", REGISTRY_PASSWORD)))?;
        for repository in &pushed {
            registry.push(repository, "v1", &image)?;
        }
        Ok::<_, String>(registry)
    });
    let (gw, browser) = tokio::join!(Gateway::start(&dir), Browser::start("admin-droplets-all"));
    let registry = registry_start.await.unwrap().unwrap();
    let references: Vec<String> = repositories
        .iter()
        .map(|r| registry.reference(r, "v1"))
        .collect();
    let _untag = Untag(references.clone());
    let env = Env { dir, gw, browser };
    let b = &env.browser;
    let (admin, admin_password) = read_credentials(&env.dir.data_dir());
    let api = Api::login(&env.gw, &env.dir, &admin, &admin_password).await;
    // The registry wants an account: Alpha gets it through the API, Beta through the page.
    api.send_ok(
        Method::POST,
        "/api/v1/droplets",
        json!({"name": "Alpha app", "droplet_type": "http", "image": references[0],
               "ports": [8080], "registry_username": "puller",
               "registry_password": REGISTRY_PASSWORD}),
        201,
    )
    .await;
    // A second tenant with a group of its own: the page offers the tenant, and each tenant's
    // groups only.
    let research = api
        .send_ok(
            Method::POST,
            "/api/v1/tenants",
            json!({"name": "Research"}),
            201,
        )
        .await["id"]
        .as_i64()
        .unwrap();
    api.send_ok(
        Method::POST,
        "/api/v1/groups",
        json!({"tenant_id": research, "name": "Researchers", "permissions": {}}),
        201,
    )
    .await;
    // A catalogue a remote registry controls: one valid entry named like markup, one invalid.
    let catalogue = json!([
        {"name": HOSTILE, "type": "http", "image": "registry.example/tools/notes:3", "port": 8080,
         "description": "<b onmouseover=alert(2)>notes</b>"},
        {"name": "Broken desk", "type": "http", "image": "registry.example/tools/desk:1",
         "port": 8080, "memory": "lots"}
    ]);
    let catalogue_server = serve_catalogue(catalogue.to_string()).await;
    let catalogue_url = catalogue_server.url("/flowcase/droplets.json");
    // A script that a hostile name could run would call alert: recorded, never shown.
    b.add_init_script(
        "window.__alerts = []; window.alert = (m) => window.__alerts.push(String(m));",
    )
    .await;

    screenshot_on_failure(&[b], async {
        env.sign_in(&admin, &admin_password, "/admin/droplets").await;
        b.wait_for_element("#droplets-rows tr[data-droplet-id]").await;
        env.shot("1-list").await;
        env.check_console("the droplets page").await;

        // --- the form, all of it ------------------------------------------------------------
        b.click("#new-droplet").await;
        // Only desktops may run on an existing host: the choice appears with the type.
        assert_eq!(b.eval("return document.getElementById('nd-target').hidden;").await, true);
        b.eval(
            "for (const d of document.querySelectorAll('#droplet-form details')) d.open = true; \
             return 1;",
        )
        .await;
        env.shot("2-container-form").await;
        b.eval(
            "document.querySelectorAll('#droplet-form details')[1].scrollIntoView(); return 1;",
        )
        .await;
        env.shot("2-container-settings").await;
        env.phone_shot("2-container-form").await;

        // --- a container from a private registry: its account is write-only ---------------
        b.fill("#nd-name", "Beta app").await;
        b.fill("#nd-image", &references[1]).await;
        b.fill("#nd-port", "8080").await;
        b.fill("#nd-registry-user", "puller").await;
        b.fill("#nd-registry-password", REGISTRY_PASSWORD).await;
        env.press("#droplet-submit", "#droplet-form").await;
        b.wait_for_js(
            "Beta's row",
            "return [...document.querySelectorAll('#droplets-rows [data-field=name]')] \
               .some(n => n.textContent === 'Beta app') \
               && !document.getElementById('droplet-modal').open;",
        )
        .await;
        b.eval(
            "[...document.querySelectorAll('#droplets-rows tr')] \
               .find(r => r.querySelector('[data-field=name]').textContent === 'Beta app') \
               .querySelector('[data-action=edit]').click(); return 1;",
        )
        .await;
        b.wait_for_js(
            "Beta's edit form",
            "return document.getElementById('droplet-modal').open \
               && document.getElementById('nd-name').value === 'Beta app';",
        )
        .await;
        let registry_form = b
            .eval(&format!(
                "return {{user: document.getElementById('nd-registry-user').value, \
                          password: document.getElementById('nd-registry-password').value, \
                          state: document.getElementById('nd-registry-state').textContent, \
                          forget: !document.getElementById('nd-registry-forget').hidden, \
                          html: document.documentElement.outerHTML.includes({REGISTRY_PASSWORD:?})}};"
            ))
            .await;
        assert_eq!(
            registry_form,
            json!({"user": "", "password": "", "state": "· account stored", "forget": true,
                   "html": false}),
            "a stored registry account is never shown"
        );
        b.click("#droplet-modal .modal__close").await;

        // --- an existing VNC host with a password ------------------------------------------
        b.click("#new-droplet").await;
        b.fill("#nd-name", "Design desk").await;
        b.eval(
            "const t = document.getElementById('nd-type'); t.value = 'vnc'; \
             t.dispatchEvent(new Event('change')); return 1;",
        )
        .await;
        b.click("#nd-target input[value=external]").await;
        let parts = b
            .eval(
                "return {container: document.querySelector('[data-target-part=container]').hidden, \
                         external: document.querySelector('[data-target-part=external]').hidden, \
                         ssh: document.querySelector('#droplet-form [data-type-only=ssh]').hidden, \
                         rdp: document.querySelector('#droplet-form [data-type-only=rdp]').hidden};",
            )
            .await;
        assert_eq!(
            parts,
            json!({"container": true, "external": false, "ssh": true, "rdp": true}),
            "only the VNC host's fields show"
        );
        let groups = "return [...document.querySelectorAll('#nd-groups label')] \
                        .filter(l => !l.hidden).map(l => l.textContent.trim());";
        let own_groups = b.eval(groups).await;
        assert!(
            own_groups.as_array().unwrap().iter().any(|g| g == "User")
                && !own_groups.to_string().contains("Researchers"),
            "{own_groups}"
        );
        // The API's refusal (a bad host name) shows next to its field.
        b.fill("#nd-host", "not a host!").await;
        b.fill("#nd-host-port", "5901").await;
        b.fill("#nd-host-password", HOST_PASSWORD).await;
        env.press("#droplet-submit", "#droplet-form").await;
        let refusal = b.text_of("[data-error-for=external_host]").await;
        assert!(refusal.contains("not a host"), "{refusal}");
        env.shot("3-external-refused").await;
        // A taken name is refused next to the name.
        b.fill("#nd-host", "desk.internal").await;
        b.fill("#nd-name", "Alpha app").await;
        env.press("#droplet-submit", "#droplet-form").await;
        let taken = b.text_of("[data-error-for=name]").await;
        assert!(taken.contains("already has a droplet"), "{taken}");
        assert_eq!(b.text_of("[data-error-for=external_host]").await, "");
        b.fill("#nd-name", "Design desk").await;
        assert_eq!(
            b.text_of("[data-error-for=name]").await,
            "",
            "an error goes once its field changes"
        );
        b.eval(&format!(
            "const t = document.getElementById('nd-tenant'); t.value = '{research}'; \
             t.dispatchEvent(new Event('change')); return 1;"
        ))
        .await;
        assert_eq!(b.eval(groups).await, json!(["Researchers"]));
        b.eval(
            "[...document.querySelectorAll('#nd-groups label')] \
               .find(l => l.textContent.trim() === 'Researchers').querySelector('input').click(); \
             return 1;",
        )
        .await;
        env.shot("4-external-form").await;
        env.phone_shot("4-external-form").await;
        let clicks = env.press("#droplet-submit", "#droplet-form").await;
        if clicks > 1 && b.eval("return document.getElementById('droplet-modal').open;").await == true
        {
            // The dropped creation reached the gateway: the retry was told the name is taken.
            let taken = b.text_of("[data-error-for=name]").await;
            assert!(taken.contains("already has a droplet"), "{taken}");
            b.click("#droplet-modal .modal__close").await;
        }
        b.wait_for_js(
            "the new host's row",
            "return [...document.querySelectorAll('#droplets-rows tr')] \
               .some(r => r.textContent.includes('Design desk')) \
               && !document.getElementById('droplet-modal').open;",
        )
        .await;
        let row = "#droplets-rows tr[data-droplet-id]:has([data-field=name])";
        let desk_row = b
            .eval(&format!(
                "return [...document.querySelectorAll({row:?})] \
                   .find(r => r.textContent.includes('Design desk')).textContent;"
            ))
            .await;
        let desk_row = desk_row.as_str().unwrap();
        assert!(
            desk_row.contains("Existing host desk.internal:5901") && desk_row.contains("Research"),
            "{desk_row}"
        );

        // Editing: the password is not in the page, the form says one is stored, and saving
        // with the field left empty keeps it.
        b.eval(
            "[...document.querySelectorAll('#droplets-rows tr')] \
               .find(r => r.textContent.includes('Design desk')) \
               .querySelector('[data-action=edit]').click(); return 1;",
        )
        .await;
        b.wait_for_js(
            "the edit form",
            "return document.getElementById('droplet-modal').open \
               && document.getElementById('nd-host').value === 'desk.internal';",
        )
        .await;
        let edit = b
            .eval(
                "return {password: document.getElementById('nd-host-password').value, \
                         placeholder: document.getElementById('nd-host-password').placeholder, \
                         hint: document.getElementById('nd-credentials-hint').textContent, \
                         forget: !document.getElementById('nd-credentials-forget').hidden, \
                         target: document.querySelector('#nd-target input[value=external]').checked, \
                         html: document.documentElement.outerHTML};",
            )
            .await;
        assert_eq!(edit["password"], "", "a stored password is never shown");
        assert!(
            !edit["html"].as_str().unwrap().contains(HOST_PASSWORD),
            "the password is nowhere in the page"
        );
        assert!(edit["hint"].as_str().unwrap().contains("stored"), "{edit}");
        assert!(edit["placeholder"].as_str().unwrap().contains("stored"));
        assert_eq!((&edit["forget"], &edit["target"]), (&json!(true), &json!(true)));
        assert_eq!(
            b.eval("const t = document.getElementById('nd-tenant'); return [t.disabled, t.value];")
                .await,
            json!([true, research.to_string()]),
            "a droplet stays in its tenant"
        );
        b.fill("#nd-description", "The design team's workstation").await;
        env.shot("5-external-edit").await;
        env.press("#droplet-submit", "#droplet-form").await;
        b.wait_for_text("The design team's workstation").await;

        // --- pull all ---------------------------------------------------------------------
        // Records each image's percent figure over time.
        b.eval(
            "window.__figures = {}; \
             new MutationObserver(() => { \
               for (const li of document.querySelectorAll('#pull-all-list li')) { \
                 const f = li.querySelector('[data-role=percent]').textContent; \
                 const seen = (window.__figures[li.dataset.dropletId] ||= []); \
                 if (seen[seen.length - 1] !== f) seen.push(f); } \
             }).observe(document.getElementById('pull-all-list'), \
               {childList: true, characterData: true, subtree: true}); return 1;",
        )
        .await;
        b.streamed_pull(&StreamedPull {
            start: "#pull-all",
            modal: "pull-all",
            images: &references,
            reset: "window.__figures = {}; return 1;",
            within: Duration::from_secs(120),
        })
        .await;
        env.shot("6-pulled-all").await;
        env.phone_shot("6-pulled-all").await;
        let pulled = b
            .eval(
                "return {state: document.getElementById('pull-all-modal').dataset.state, \
                         status: document.getElementById('pull-all-status').textContent, \
                         error: document.getElementById('pull-all-error').textContent, \
                         items: [...document.querySelectorAll('#pull-all-list li')].map(li => ({ \
                           id: li.dataset.dropletId, state: li.dataset.state, \
                           name: li.querySelector('.pull-item__name').textContent, \
                           value: li.querySelector('progress').value})), \
                         log: document.getElementById('pull-all-log').textContent, \
                         figures: window.__figures};",
            )
            .await;
        assert_eq!(pulled["state"], "done", "{pulled:#}");
        assert_eq!(pulled["status"], "2 of 2 images pulled.", "{pulled:#}");
        let items = pulled["items"].as_array().unwrap();
        let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Alpha app", "Beta app"], "{pulled:#}");
        for item in items {
            assert_eq!((&item["state"], &item["value"]), (&json!("done"), &json!(100)));
            let figures = &pulled["figures"][item["id"].as_str().unwrap()];
            let figures: Vec<&str> = figures
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                figures.len() >= 2 && figures.last() == Some(&"100 %"),
                "{}: its own figure moved: {figures:?}",
                item["name"]
            );
        }
        let log = pulled["log"].as_str().unwrap();
        for name in names {
            assert!(log.contains(&format!("{name}: done")), "{log}");
        }
        assert!(log.contains("Pull complete"), "{log}");
        for image in &references {
            let inspect = std::process::Command::new("docker")
                .args(["image", "inspect", image])
                .output()
                .unwrap();
            assert!(inspect.status.success(), "{image} is on the engine");
        }
        b.click("#pull-all-close").await;

        // --- import from a catalogue -------------------------------------------------------
        b.click("#import-droplets").await;
        b.fill("#import-url", &catalogue_url).await;
        let clicks = env.press("#import-submit", "#import-form").await;
        b.wait_for_js(
            "the import report",
            "return !document.getElementById('import-result').hidden;",
        )
        .await;
        let report = b
            .eval(
                "return {summary: document.getElementById('import-summary').textContent, \
                         entries: [...document.querySelectorAll('#import-entries > li')].map(li => ({ \
                           status: li.dataset.status, \
                           name: li.querySelector('.import-entry__name').textContent, \
                           text: li.innerText}))};",
            )
            .await;
        let entries = report["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{report:#}");
        // A dropped import that reached the gateway leaves the retry an existing droplet.
        let (status, badge, summary) = if clicks > 1 && entries[0]["status"] == "skipped" {
            (
                "skipped",
                "Already exists",
                "2 entries checked: 0 imported, 1 already there, 1 rejected.",
            )
        } else {
            (
                "imported",
                "Imported",
                "2 entries checked: 1 imported, 0 already there, 1 rejected.",
            )
        };
        assert_eq!(report["summary"], summary, "{report:#}");
        assert_eq!(
            (&entries[0]["status"], &entries[0]["name"]),
            (&json!(status), &json!(HOSTILE))
        );
        assert!(entries[0]["text"].as_str().unwrap().contains(badge));
        assert_eq!(
            (&entries[1]["status"], &entries[1]["name"]),
            (&json!("invalid"), &json!("Broken desk"))
        );
        let rejected = entries[1]["text"].as_str().unwrap();
        assert!(
            rejected.contains("Rejected") && rejected.contains("memory:"),
            "{rejected}"
        );
        env.shot("7-imported").await;
        env.phone_shot("7-imported").await;
        // The list refreshed behind the dialog, with the hostile name as text.
        b.wait_for_js(
            "the imported droplet in the list",
            &format!(
                "return [...document.querySelectorAll('#droplets-rows [data-field=name]')] \
                   .some(n => n.textContent === {HOSTILE:?});"
            ),
        )
        .await;
        b.click("#import-modal .modal__foot [data-close]").await;
        let text = b.page_text().await;
        assert!(text.contains(HOSTILE), "the name shows as text:\n{text}");
        assert!(text.contains("<b onmouseover=alert(2)>notes</b>"), "{text}");
        let markup = b
            .eval(
                "return {img: document.querySelectorAll('img').length, \
                         b: document.querySelectorAll('main b').length, \
                         alerts: window.__alerts};",
            )
            .await;
        assert_eq!(
            markup,
            json!({"img": 0, "b": 0, "alerts": []}),
            "a catalogue's names and descriptions became markup"
        );
        assert!(!text.contains("Broken desk"), "a rejected entry is not imported");
        env.shot("8-list-after-import").await;
        env.phone_shot("8-list-after-import").await;
        env.check_console("the droplets page at the end").await;
    })
    .await;

    // The host droplet still has its credentials, which the API never shows.
    let (_, list) = api.get("/api/v1/droplets?scope=all&q=design").await;
    assert_eq!(list["total"], 1, "{list}");
    let desk = &list["items"][0];
    assert_eq!(desk["target"], "external", "{desk}");
    assert_eq!(desk["droplet_type"], "vnc", "{desk}");
    assert_eq!(desk["external_port"], 5901, "{desk}");
    assert_eq!(desk["has_external_credentials"], true, "{desk}");
    assert_eq!(desk["description"], "The design team's workstation");
    assert_eq!(desk["tenant_id"], research, "{desk}");
    assert_eq!(desk["group_ids"].as_array().unwrap().len(), 1, "{desk}");
    assert!(!desk.to_string().contains(HOST_PASSWORD), "{desk}");
    let (_, beta) = api.get("/api/v1/droplets?scope=all&q=beta").await;
    assert_eq!(beta["items"][0]["has_registry_credentials"], true, "{beta}");
    assert!(!beta.to_string().contains(REGISTRY_PASSWORD), "{beta}");
    let (_, all) = api.get("/api/v1/droplets?scope=all").await;
    assert_eq!(all["total"], 4, "two apps, the host, one imported: {all}");
    drop(registry);
    env.browser.close().await;
}
