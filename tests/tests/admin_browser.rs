//! The admin section's operations pages in headless Chromium, through the real binary and a real
//! dockerd: an administrator creates a workshop from its page (a hostile name, a droplet built
//! from the kit's http image, a group of participants), starts it all and sees each
//! participant's instance become running, stops it all and sees them stop, edits and deletes
//! it; reads the audit log (hostile user names as text), filters it, pages through it and
//! prunes it behind a confirmation; reads the system page (database backend, Docker version);
//! and opens a desktop's read-only watch from the instances page: nothing to watch while nobody
//! has it open, then, once its user has, a join of their connection (through the real tunnel to
//! a guacd double) that sends nothing typed. A user without the rights gets the 404 page for
//! each of these pages.
//!
//! Screenshots of each page, at laptop and phone size, are saved under
//! `target/screenshots/admin/` for a person to look at.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use flowcase_admin::store::{DropletType, NewAuditEntry, NewGroup, Store, now_millis};
use flowcase_e2e::browser::{Browser, run_node_tests, screenshot_dir, screenshot_on_failure};
use flowcase_e2e::desktops::desktop_instance;
use flowcase_e2e::guacd::GuacdDouble;
use flowcase_e2e::instances::{add_user, database_url, httpd_droplet};
use flowcase_e2e::{Gateway, GatewayDir, read_credentials};

const PASSWORD: &str = "a long enough passphrase";
const HOSTILE: &str = "<img src=x onerror=alert(1)>";
const DAY_MS: i64 = 86_400_000;

struct Env {
    dir: GatewayDir,
    gw: Gateway,
    browser: Browser,
    admin: (String, String),
}

impl Env {
    async fn start(name: &str) -> Env {
        Env::start_in(GatewayDir::new(), name).await
    }

    async fn start_in(dir: GatewayDir, name: &str) -> Env {
        let (gw, browser) = tokio::join!(Gateway::start(&dir), Browser::start(name));
        let admin = read_credentials(&dir.data_dir());
        Env {
            dir,
            gw,
            browser,
            admin,
        }
    }

    fn url(&self, path: &str) -> String {
        self.gw.url("localhost", path)
    }

    async fn open(&self, path: &str) {
        self.browser.open_page(&self.url(path)).await;
    }

    /// Signs the administrator in and opens `path` (again: a sign-in's landing may lose the
    /// page's modules to a network change).
    async fn sign_in_admin(&self, path: &str) {
        let (user, password) = &self.admin;
        self.browser
            .sign_in(&self.gw.origin(), user, password, path)
            .await;
        self.open(path).await;
    }

    /// Checks the console and the absence of inline code, then saves laptop and phone shots.
    async fn look(&self, name: &str) {
        self.browser.check_console(name).await;
        self.browser.check_no_inline_code(name).await;
        self.browser.shots(&screenshot_dir("admin"), name).await;
    }

    /// Sets a form control's value from the page's script and tells the page it changed (for
    /// `select` and `datetime-local`, which typing does not fill portably).
    async fn set_value(&self, css: &str, value: &str) {
        self.browser
            .eval(&format!(
                "const e = document.querySelector({css:?}); e.value = {value:?}; \
                 e.dispatchEvent(new Event('input', {{bubbles: true}})); \
                 e.dispatchEvent(new Event('change', {{bubbles: true}})); return 1;"
            ))
            .await;
    }

    /// Opens each path as a signed-in user without the rights and expects the 404 page.
    async fn all_not_found(&self, browser: &Browser, paths: &[String]) {
        for path in paths {
            browser.goto(&self.url(path)).await;
            assert_eq!(
                browser.text_of("#error-code").await,
                "404",
                "{path} for a user without the rights"
            );
        }
    }
}

/// `YYYY-MM-DDTHH:MM` of unix milliseconds in the browser's time zone, from the browser itself.
async fn local_input(browser: &Browser, millis: i64) -> String {
    browser
        .eval(&format!(
            "const d = new Date({millis}); const p = n => String(n).padStart(2, '0'); \
             return `${{d.getFullYear()}}-${{p(d.getMonth() + 1)}}-${{p(d.getDate())}}T${{p(d.getHours())}}:${{p(d.getMinutes())}}`;"
        ))
        .await
        .as_str()
        .unwrap()
        .to_owned()
}

/// Clicks a pager button of the audit log until the page shows `range` (a click whose request
/// the network change dropped is repeated: the pager stops at the first and last page, so a
/// repeat cannot go too far with two pages).
async fn turn_page(b: &Browser, button: &str, range: &str) {
    let shown = format!("return document.getElementById('audit-range').textContent === {range:?};");
    for _ in 0..3 {
        b.click_js(button).await;
        for _ in 0..40 {
            if b.eval(&shown).await == true {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("the page {range} did not come; again");
    }
    panic!("the audit log never showed {range}");
}

fn participants_in(state: &str, n: usize) -> String {
    format!(
        "return document.querySelectorAll('#participants-rows tr[data-state={state}]').length === {n};"
    )
}

#[tokio::test]
async fn an_administrator_runs_a_workshop_from_its_page() {
    let env = Env::start("admin-workshops").await;
    let b = &env.browser;
    add_user(&env.dir, "alice", PASSWORD);
    add_user(&env.dir, "bob", PASSWORD);
    add_user(&env.dir, "mallory", PASSWORD);
    let store = Store::connect(&database_url(&env.dir)).await.unwrap();
    let tenant = store.default_tenant().await.unwrap().unwrap();
    let class = store
        .create_group(
            &NewGroup {
                tenant_id: tenant.id,
                name: "Class of 2026".into(),
                ..NewGroup::default()
            },
            now_millis(),
        )
        .await
        .unwrap();
    for name in ["alice", "bob"] {
        let user = store.find_user_by_login(name).await.unwrap().unwrap();
        store.add_member(user.id, class.id).await.unwrap();
    }
    let mut new = httpd_droplet(tenant.id, "Notebook").await;
    new.env = BTreeMap::from([("BODY".to_owned(), "workshop".to_owned())]);
    let droplet = store.create_droplet(&new, now_millis()).await.unwrap();

    let mallory = Browser::start("mallory").await;
    screenshot_on_failure(&[b, &mallory], async {
        env.sign_in_admin("/admin/workshops").await;
        b.wait_for_js(
            "the empty list",
            "return !document.getElementById('workshops-empty').hidden;",
        )
        .await;
        assert!(
            b.text_of(".tabs a[aria-current=page]").await == "Workshops",
            "the Workshops tab is current"
        );
        env.look("workshops-empty").await;

        // Create: a hostile name, the droplet, the group as participants.
        b.click_js("#new-workshop").await;
        b.wait_for_element(&format!(
            "#nw-droplets input[value='{}']",
            droplet.id
        ))
        .await;
        b.wait_for_element(&format!("#nw-group option[value='{}']", class.id))
            .await;
        b.fill("#nw-name", HOSTILE).await;
        b.fill("#nw-description", "Build a page, serve it, share it")
            .await;
        b.click_js(&format!("#nw-droplets input[value='{}']", droplet.id))
            .await;
        env.set_value("#nw-group", &class.id.to_string()).await;
        env.browser
            .shots(&screenshot_dir("admin"), "workshop-form")
            .await;
        b.submit("#workshop-form").await;
        let at = b
            .wait_for_url("the new workshop's page", |u| {
                u.path().starts_with("/admin/workshops/")
            })
            .await;
        let workshop_path = at.path().to_owned();
        b.wait_for_js("two participants", &participants_in("not_started", 2))
            .await;
        b.shows_literally(HOSTILE).await;
        assert_eq!(
            b.eval("return document.title;").await.as_str().unwrap(),
            format!("{HOSTILE} · Flowcase")
        );
        let rows = b.text_of("#participants-rows").await;
        assert!(rows.contains("alice") && rows.contains("bob"), "{rows}");
        assert!(rows.contains("Notebook"), "{rows}");
        env.look("workshop-ready").await;

        // Start all: each participant's instance becomes running, without a reload.
        b.eval("window.__no_reload = true; return 1;").await;
        b.press("#start-all", "#toasts").await;
        b.wait_for_js(
            "the running status",
            "return document.getElementById('workshop-status').dataset.status === 'running';",
        )
        .await;
        b.wait_long(
            "both participants running",
            &participants_in("running", 2),
            Duration::from_secs(120),
        )
        .await;
        assert_eq!(b.eval("return window.__no_reload === true;").await, true);
        assert_eq!(b.text_of("#stat-running").await, "2");
        env.look("workshop-running").await;

        // Stop all: they stop.
        b.press("#stop-all", "#toasts").await;
        b.wait_long(
            "both participants stopped",
            &participants_in("stopped", 2),
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(b.text_of("#stat-running").await, "0");
        assert_eq!(
            b.eval("return document.getElementById('workshop-status').dataset.status;")
                .await,
            "ended"
        );
        env.look("workshop-stopped").await;

        // The list shows it, its name as text.
        env.open("/admin/workshops").await;
        b.wait_for_element("#workshops-rows tr[data-status=ended]")
            .await;
        b.shows_literally(HOSTILE).await;
        env.look("workshops").await;

        // Someone without the rights sees none of it.
        mallory
            .sign_in(&env.gw.origin(), "mallory", PASSWORD, "/dashboard")
            .await;
        env.all_not_found(
            &mallory,
            &["/admin/workshops".to_owned(), workshop_path.clone()],
        )
        .await;
        mallory.check_console("the 404 pages").await;

        // Edit: a new name, and only alice stays.
        env.open(&workshop_path).await;
        b.wait_for_js("the participants", &participants_in("stopped", 2))
            .await;
        b.click_js("#edit-workshop").await;
        b.wait_for_js(
            "the form filled in",
            "return document.getElementById('nw-name').value !== '';",
        )
        .await;
        b.fill("#nw-name", "Web development 101").await;
        env.set_value("#nw-group", "").await;
        let bob = store.find_user_by_login("bob").await.unwrap().unwrap();
        b.click_js(&format!("#nw-users input[value='{}']", bob.id))
            .await;
        b.submit("#workshop-form").await;
        b.wait_for_js(
            "the new name",
            "return document.getElementById('workshop-title').textContent === 'Web development 101';",
        )
        .await;
        b.wait_for_js(
            "one participant left",
            "return document.querySelectorAll('#participants-rows tr').length === 1;",
        )
        .await;
        assert!(b.text_of("#participants-rows").await.contains("alice"));

        // Delete (a second click confirms).
        b.click_js("#delete-workshop").await;
        b.press("#delete-workshop", "#toasts").await;
        b.wait_for_url("the list after the delete", |u| {
            u.path() == "/admin/workshops"
        })
        .await;
        b.wait_for_js(
            "the empty list again",
            "return !document.getElementById('workshops-empty').hidden;",
        )
        .await;
        b.check_console("the workshops after the delete").await;
    })
    .await;
    store.close().await;
    mallory.close().await;
    env.browser.close().await;
}

#[tokio::test]
async fn the_audit_log_filters_pages_and_prunes_and_the_system_page_reports() {
    let env = Env::start("admin-audit").await;
    let b = &env.browser;
    add_user(&env.dir, "mallory", PASSWORD);
    let store = Store::connect(&database_url(&env.dir)).await.unwrap();
    // Sixty old entries by a user with a hostile name, a month ago.
    let month_ago = now_millis() - 30 * DAY_MS;
    for i in 0..60 {
        store
            .append_audit(
                &NewAuditEntry {
                    actor_user_id: None,
                    actor_name: Some(HOSTILE.to_owned()),
                    action: "test.hostile".into(),
                    target_kind: Some("user".into()),
                    target_id: Some(i.to_string()),
                    client_addr: Some("192.0.2.7".into()),
                    details: serde_json::json!({ "note": HOSTILE, "n": i }),
                },
                month_ago + i * 60_000,
            )
            .await
            .unwrap();
    }
    let docker_version = String::from_utf8(
        std::process::Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let errors = "#audit-error";
    let count_is = |text: &str| {
        format!("return document.getElementById('audit-count').textContent === {text:?};")
    };

    let mallory = Browser::start("mallory").await;
    screenshot_on_failure(&[b, &mallory], async {
        env.sign_in_admin("/admin/audit").await;
        b.wait_for_element("#audit-rows tr").await;
        // The newest first: the sign-in just made is above the old entries.
        assert_ne!(
            b.eval("return document.querySelector('#audit-rows tr').dataset.action;")
                .await,
            "test.hostile"
        );
        env.look("audit").await;

        // By user: sixty, shown as text, fifty to a page.
        b.choose("#af-actor", HOSTILE, errors, &count_is("60 entries"))
            .await;
        b.shows_literally(HOSTILE).await;
        assert_eq!(b.text_of("#audit-range").await, "1–50 of 60");
        assert_eq!(
            b.eval("return document.querySelectorAll('#audit-rows tr').length;")
                .await,
            50
        );
        let details = b.text_of("#audit-rows tr td:last-child").await;
        assert!(details.contains(&format!("note: {HOSTILE}")), "{details}");
        env.look("audit-filtered").await;
        turn_page(b, "#audit-next", "51–60 of 60").await;
        assert_eq!(
            b.eval("return document.querySelectorAll('#audit-rows tr').length;")
                .await,
            10
        );
        assert_eq!(
            b.eval("return document.getElementById('audit-next').disabled;")
                .await,
            true
        );
        turn_page(b, "#audit-prev", "1–50 of 60").await;

        // By action (a prefix) and time range.
        b.click_js("#audit-clear").await;
        b.choose("#af-action", "test.*", errors, &count_is("60 entries"))
            .await;
        let ten_days_ago = local_input(b, now_millis() - 10 * DAY_MS).await;
        b.choose("#af-since", &ten_days_ago, errors, &count_is("0 entries"))
            .await;
        assert!(b.eval("return !document.getElementById('audit-empty').hidden;").await == true);
        env.set_value("#af-since", "").await;
        b.choose("#af-until", &ten_days_ago, errors, &count_is("60 entries"))
            .await;

        // Prune what is older than a week, after confirming.
        b.click_js("#audit-clear").await;
        b.click_js("#open-prune").await;
        assert_eq!(
            b.eval("return document.getElementById('prune-submit').disabled;")
                .await,
            true,
            "nothing is deleted before the confirmation"
        );
        let week_ago = local_input(b, now_millis() - 7 * DAY_MS).await;
        env.set_value("#prune-before", &week_ago).await;
        b.wait_for_js(
            "the count of what the prune deletes",
            "return document.getElementById('prune-count').textContent === '60 entries will be deleted.';",
        )
        .await;
        b.click_js("#prune-confirm").await;
        b.shots(&screenshot_dir("admin"), "audit-prune").await;
        b.submit("#prune-form").await;
        let toast = b
            .wait_for_js(
                "the prune's outcome",
                "const t = [...document.querySelectorAll('#toasts .toast')] \
                   .find(t => t.textContent.includes('deleted')); return t ? t.textContent : null;",
            )
            .await;
        assert_eq!(toast, "60 entries deleted.");
        b.choose("#af-action", "test.*", errors, &count_is("0 entries"))
            .await;
        b.choose("#af-action", "audit.prune", errors, &count_is("1 entry"))
            .await;
        b.check_console("the audit log after the prune").await;

        // The system page: the database backend and the Docker engine's version.
        env.open("/admin/system").await;
        b.wait_for_js(
            "the report",
            "return document.getElementById('sys-db').dataset.backend === 'sqlite';",
        )
        .await;
        assert_eq!(b.text_of("#sys-db").await, "SQLite");
        b.wait_for_js(
            "the engine up",
            "return document.getElementById('sys-engine').dataset.up === '1';",
        )
        .await;
        let version = b
            .text_of("#sys-engine-details dd[data-field=Version]")
            .await;
        assert!(
            !docker_version.is_empty() && version.contains(&docker_version),
            "engine version {version:?}, docker says {docker_version:?}"
        );
        let host = b.text_of("#sys-host").await;
        assert!(host.contains("used of"), "{host}");
        assert!(
            b.text_of("#sys-certs").await.contains("localhost"),
            "the served certificate is listed"
        );
        env.look("system").await;

        // Someone without admin_panel sees neither page.
        mallory
            .sign_in(&env.gw.origin(), "mallory", PASSWORD, "/dashboard")
            .await;
        env.all_not_found(
            &mallory,
            &["/admin/audit".to_owned(), "/admin/system".to_owned()],
        )
        .await;
    })
    .await;
    store.close().await;
    mallory.close().await;
    env.browser.close().await;
}

#[tokio::test]
async fn a_running_desktop_offers_a_read_only_watch_from_the_instances_page() {
    let guacd = GuacdDouble::start().await;
    let mut dir = GatewayDir::new();
    dir.set("FLOWCASE_GUACD__ADDRESS", &guacd.addr.to_string());
    let env = Env::start_in(dir, "admin-watch").await;
    let b = &env.browser;
    add_user(&env.dir, "alice", PASSWORD);
    let desktop = desktop_instance(
        &env.dir,
        "alice",
        "deskwatch",
        "Design desktop",
        DropletType::Vnc,
        "127.0.0.1:5901",
    )
    .await;
    // Records the tunnel-token requests' bodies.
    b.add_init_script(
        "const real = window.fetch.bind(window); window.__tokens = []; \
         window.fetch = (url, init = {}) => { \
           if (String(url).includes('/tunnel-token')) window.__tokens.push(init.body || null); \
           return real(url, init); };",
    )
    .await;

    let alice = Browser::start("alice").await;
    let origin = env.gw.origin();
    screenshot_on_failure(&[b, &alice], async {
        env.sign_in_admin("/admin/instances").await;
        let href = b
            .wait_for_js(
                "the watch link",
                &format!(
                    "const a = document.querySelector('tr[data-instance-id=\"{}\"] a[data-action=watch]'); \
                     return a ? a.getAttribute('href') : null;",
                    desktop.id
                ),
            )
            .await;
        assert_eq!(href, format!("/droplet/{}?watch=1", desktop.id));
        env.look("instances-watch").await;

        // It opens the viewer read-only: a watch token, no controls, and since nobody has the
        // desktop open, words saying there is nothing to watch.
        env.open(href.as_str().unwrap()).await;
        b.wait_for_element("body[data-viewer=ready][data-mode=watch]")
            .await;
        b.wait_for_js(
            "a token request",
            "return window.__tokens.length > 0;",
        )
        .await;
        assert_eq!(
            b.eval("return window.__tokens[0];").await,
            r#"{"watch":true}"#
        );
        assert_eq!(
            b.eval("return document.getElementById('btn-cad').hidden \
                      && document.querySelector('.menu__clipboard').hidden \
                      && document.getElementById('watch-badge').textContent;")
                .await,
            "Read-only"
        );
        let title = b
            .wait_for_js(
                "the overlay's verdict",
                "const o = document.getElementById('overlay'); \
                 return o.dataset.state === 'failed' ? \
                   document.getElementById('overlay-title').textContent : null;",
            )
            .await;
        assert_eq!(
            title,
            "Nobody is connected to this desktop: there is nothing to watch."
        );
        b.check_console("the watch viewer").await;
        b.shot(&screenshot_dir("admin"), "watch-nothing-to-watch")
            .await;

        // Alice opens her desktop; the administrator's "Reconnect" now joins her connection,
        // read-only: guacd is asked to join it, the picture shows, and nothing typed on the
        // watching side reaches the desktop.
        alice
            .visit_as(&origin, &env.url(&format!("/droplet/{}", desktop.id)), "alice", PASSWORD)
            .await;
        alice
            .wait_for_js(
                "alice's connected viewer",
                "return document.getElementById('overlay').dataset.state === 'connected';",
            )
            .await;
        b.click_js("#btn-reconnect").await;
        b.wait_for_js(
            "the connected watch",
            "return document.getElementById('overlay').dataset.state === 'connected' \
               && document.getElementById('badge').textContent === 'Watching';",
        )
        .await;
        let handshakes = guacd.handshakes();
        assert!(
            handshakes.iter().any(|h| h.select.starts_with('$')),
            "the watch joins the running connection: {handshakes:?}"
        );
        // The desktop's picture (the double's, a bright one) fills the watcher's window.
        let mut shown = [0u8; 3];
        for _ in 0..50 {
            shown = b.screenshot_center_rgb().await;
            if shown.iter().map(|&c| u32::from(c)).sum::<u32>() > 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            shown.iter().map(|&c| u32::from(c)).sum::<u32>() > 200,
            "the watcher shows no picture: {shown:?}"
        );
        let before = guacd.received().iter().filter(|i| i.opcode == "key").count();
        let body = b.wait_for_element("body").await;
        body.send_keys("zz").await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let keys = guacd.received().iter().filter(|i| i.opcode == "key").count();
        assert_eq!(keys, before, "a key typed while watching reached the desktop");
        b.check_console("the connected watch").await;
        b.shot(&screenshot_dir("admin"), "watch-connected").await;
    })
    .await;
    alice.close().await;
    env.browser.close().await;
}

#[test]
fn the_admin_page_modules_pass_their_unit_tests_under_node() {
    run_node_tests("admin-modules.test.js", 3);
}

/// An administrator who edits their own tenant's instances and only reads the other tenants'
/// gets Watch, Stop and Delete on their own tenant's running desktops, not on another tenant's
/// (the API and the tunnel would refuse them there): the actions follow each row's tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_actions_show_only_where_the_administrator_may_act() {
    use flowcase_admin::store::{NewUser, Permissions};
    let env = Env::start("admin-watch-scope").await;
    let b = &env.browser;
    for name in ["alice", "dana"] {
        add_user(&env.dir, name, PASSWORD);
    }
    let store = Store::connect(&database_url(&env.dir)).await.unwrap();
    let home = store.default_tenant().await.unwrap().unwrap();
    let beta = store
        .create_tenant("beta", false, now_millis())
        .await
        .unwrap();
    store
        .create_user(
            &NewUser {
                tenant_id: beta.id,
                username: "carol".into(),
                display_name: "carol".into(),
                ..NewUser::default()
            },
            now_millis(),
        )
        .await
        .unwrap();
    let readers = store
        .create_group(
            &NewGroup {
                tenant_id: home.id,
                name: "Instance keepers".into(),
                permissions: Permissions {
                    admin_panel: true,
                    view_instances: true,
                    edit_instances: true,
                    view_tenants: true,
                    ..Permissions::default()
                },
                ..NewGroup::default()
            },
            now_millis(),
        )
        .await
        .unwrap();
    let dana = store.find_user_by_login("dana").await.unwrap().unwrap();
    store.add_member(dana.id, readers.id).await.unwrap();
    let own = desktop_instance(
        &env.dir,
        "alice",
        "deskhome",
        "Home desktop",
        DropletType::Vnc,
        "127.0.0.1:5901",
    )
    .await;
    let other = desktop_instance(
        &env.dir,
        "carol",
        "deskbeta",
        "Beta desktop",
        DropletType::Vnc,
        "127.0.0.1:5901",
    )
    .await;
    store.close().await;

    screenshot_on_failure(&[b], async {
        b.sign_in(&env.gw.origin(), "dana", PASSWORD, "/admin/instances")
            .await;
        env.open("/admin/instances").await;
        let actions = b
            .wait_for_js(
                "both desktops listed",
                &format!(
                    "const rows = ['{}', '{}'].map((id) => \
                       document.querySelector(`tr[data-instance-id=\"${{id}}\"]`)); \
                     return rows.every((r) => r) \
                       ? rows.map((r) => [...r.querySelectorAll('[data-action]')] \
                           .map((a) => a.dataset.action).join(' ')) \
                       : null;",
                    own.id, other.id
                ),
            )
            .await;
        assert_eq!(
            actions,
            serde_json::json!(["watch stop delete", ""]),
            "actions on the own tenant's desktop only"
        );
        env.look("instances-watch-scope").await;
    })
    .await;
    env.browser.close().await;
}
