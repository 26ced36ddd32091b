//! The pages of the design system in headless Chromium, through the real binary: sign-in (an
//! error in words, the button of a configured identity provider), registration, the 404 page,
//! the admin section (an administrator creates a user and a group with rights, edits them and a
//! tenant; a user without `admin_panel` gets the 404 page), the account page (API keys shown
//! once, revoked), and the dashboard's first paint and launch modal.
//!
//! On every page: no Content Security Policy violation or script error in the console, hostile
//! names (`<img src=x onerror=…>`) shown as text and never as markup, and a phone-sized window
//! (390×844) without horizontal overflow. A screenshot of each page, at laptop and phone size,
//! is saved under `target/screenshots/pages/` for a person to look at.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_admin::store::{DropletType, NewGroup, Permissions, Store, now_millis};
use flowcase_e2e::browser::{
    ATTEMPTS, Browser, NETWORK_CHANGED, broken, run_node_tests, screenshot_dir,
    screenshot_on_failure,
};
use flowcase_e2e::instances::{add_user, database_url, running_instance_row};
use flowcase_e2e::{Gateway, GatewayDir, read_credentials};

const PASSWORD: &str = "a long enough passphrase";
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

struct Env {
    dir: GatewayDir,
    gw: Gateway,
    browser: Browser,
    admin: (String, String),
}

impl Env {
    /// A gateway with open registration and an identity provider configured (never contacted:
    /// the login page only shows its button), users bob and the bootstrap administrator.
    async fn start() -> Env {
        let mut dir = GatewayDir::new();
        let config = dir.dir.path().join("flowcase.toml");
        std::fs::write(
            &config,
            r#"
[[auth.oidc]]
id = "corp"
display_name = "Corp SSO"
issuer_url = "https://sso.invalid"
client_id = "flowcase"
client_secret = "not-used-by-this-test"
"#,
        )
        .unwrap();
        dir.set("FLOWCASE_CONFIG", config.to_str().unwrap());
        dir.set("FLOWCASE_AUTH__REGISTRATION", "open");
        let (gw, browser) = tokio::join!(Gateway::start(&dir), Browser::start("pages"));
        add_user(&dir, "bob", PASSWORD);
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

    /// Opens `path`, checks the console, and saves laptop and phone screenshots named `name`,
    /// asserting that the phone-sized window has no horizontal overflow.
    async fn look(&self, path: &str, name: &str) {
        for attempt in 1..=ATTEMPTS {
            self.open(path).await;
            let log = self.browser.console_log().await;
            // A file of the page lost to a network change (see browser::NETWORK_CHANGED):
            // load the page again.
            if attempt < ATTEMPTS && log.iter().any(|l| l.contains(NETWORK_CHANGED)) {
                continue;
            }
            let bad = broken(&log);
            assert!(bad.is_empty(), "{name}: the console reports {bad:#?}");
            self.browser.check_no_inline_code(name).await;
            break;
        }
        self.shots(name).await;
    }

    /// Saves the current page at laptop and phone size and checks the phone layout.
    async fn shots(&self, name: &str) {
        self.browser.shots(&screenshot_dir("pages"), name).await;
    }

    async fn check_console(&self, name: &str) {
        self.browser.check_console(name).await;
    }

    /// Opens `path` (retried when Chromium drops the load because the network changed).
    async fn open(&self, path: &str) {
        self.browser.open_page(&self.url(path)).await;
    }

    /// Signs in with the login form, landing on `path`.
    async fn sign_in(&self, user: &str, password: &str, path: &str) {
        self.browser
            .sign_in(&self.gw.origin(), user, password, path)
            .await;
    }

    /// Signs out with the account menu's form.
    async fn sign_out(&self) {
        let b = &self.browser;
        for _ in 0..ATTEMPTS {
            self.open("/dashboard").await;
            if b.current_url().await.path() == "/" {
                return; // the last attempt's post arrived, only its answer was lost
            }
            b.click("#account-menu summary").await;
            b.click("#sign-out").await;
            if b.try_wait_for_url("the start page after signing out", |u| u.path() == "/")
                .await
                .is_ok()
            {
                return;
            }
        }
        panic!("could not sign out: the network kept changing");
    }

    async fn submit(&self, form: &str) {
        self.browser.submit(form).await;
    }

    async fn shows_literally(&self, text: &str) {
        self.browser.shows_literally(text).await;
    }
}

#[tokio::test]
async fn the_pages_work_look_right_and_keep_hostile_names_as_text() {
    let env = Env::start().await;
    let b = &env.browser;
    screenshot_on_failure(&[b], async {
        // --- signing in ----------------------------------------------------------------
        env.look("/", "login").await;
        assert_eq!(
            b.text_of("a[data-provider='corp']").await.trim(),
            "Sign in with Corp SSO"
        );
        assert!(b.page_text().await.contains("Create an account"));
        b.submit_login("bob", "not the password").await;
        b.wait_for_element("#login-error").await;
        assert_eq!(
            b.text_of("#login-error").await,
            "Wrong username or password."
        );
        // The name typed stays, the password does not.
        assert_eq!(
            b.eval("return document.getElementById('username').value;").await,
            "bob"
        );
        env.check_console("login error").await;
        env.shots("login-error").await;

        // --- registration ---------------------------------------------------------------
        env.look("/register", "register").await;
        b.fill("input[name=username]", "carol").await;
        b.fill("input[name=password]", PASSWORD).await;
        b.fill("input[name=password_confirm]", "something else entirely").await;
        b.click("form[action='/register'] button[type=submit]").await;
        b.wait_for_element("#register-error").await;
        assert!(b.text_of("#register-error").await.contains("differ"));
        b.fill("input[name=password]", PASSWORD).await;
        b.fill("input[name=password_confirm]", PASSWORD).await;
        b.click("form[action='/register'] button[type=submit]").await;
        if b
            .try_wait_for_url("the dashboard after registering", |u| {
                u.path() == "/dashboard"
            })
            .await
            .is_err()
        {
            // The network changed under the post, after the account was made or before.
            env.sign_in("carol", PASSWORD, "/dashboard").await;
        }
        b.wait_for_text("Welcome, carol").await;
        env.sign_out().await;

        // --- the 404 page ---------------------------------------------------------------
        env.look("/no/such/page", "not-found").await;
        assert_eq!(b.text_of("#error-code").await, "404");

        // --- the admin section ----------------------------------------------------------
        let (admin, admin_password) = env.admin.clone();
        env.sign_in(&admin, &admin_password, "/admin/users").await;
        env.look("/admin/users", "admin-users").await;

        // A user with a hostile display name; the password is generated and shown once.
        b.click("#new-user").await;
        b.fill("#nu-username", "x").await;
        env.submit("#user-form").await;
        // The API's refusal shows next to the field it names.
        let inline = b
            .wait_for_js(
                "the inline error for the username",
                "return document.querySelector('[data-error-for=username]').textContent;",
            )
            .await;
        assert!(!inline.as_str().unwrap().is_empty());
        b.fill("#nu-username", "dave").await;
        b.fill("#nu-display", HOSTILE).await;
        b.fill("#nu-email", "dave@example.com").await;
        env.submit("#user-form").await;
        let password = b
            .wait_for_js(
                "the generated password",
                "return document.getElementById('created-password').textContent;",
            )
            .await;
        assert!(password.as_str().unwrap().len() >= 12, "{password}");
        env.shots("admin-user-created").await;
        b.click("#user-created [data-reload]").await;
        b.wait_for_url("the list again", |u| u.path() == "/admin/users")
            .await;
        // (Again, in case Chromium dropped the reload; see browser::NETWORK_CHANGED.)
        env.open("/admin/users").await;
        env.shows_literally(HOSTILE).await;
        env.check_console("users after creating").await;

        // Search finds dave and only him.
        env.open("/admin/users?q=DAV").await;
        let rows = b
            .eval("return document.querySelectorAll('#users-table tbody tr').length;")
            .await;
        assert_eq!(rows, 1);
        env.shows_literally(HOSTILE).await;
        // The JSON API searches the same way.
        let found = b
            .client()
            .execute_async(
                "const done = arguments[0]; \
                 fetch('/api/v1/users?q=DAVE@example').then(r => r.json()) \
                   .then(p => done(p.items.map(u => u.username))).catch(e => done(String(e)));",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(found, serde_json::json!(["dave"]));
        env.open("/admin/users?q=nobody-matches-this").await;
        b.wait_for_element("#users-empty").await;

        // Dave's page: disable him, and reset his password.
        env.open("/admin/users?q=dave").await;
        b.click("#users-table tbody tr a").await;
        b.wait_for_element("#user-page").await;
        let user_path = b.current_url().await.path().to_owned();
        env.shows_literally(HOSTILE).await;
        assert_eq!(
            b.eval("return document.title;").await.as_str().unwrap(),
            format!("{HOSTILE} · Flowcase")
        );
        b.click("#u-disabled").await;
        env.submit("#profile-form").await;
        b.wait_for_js(
            "the disabled badge",
            "return document.getElementById('user-status').textContent === 'Disabled';",
        )
        .await;
        env.submit("#password-form").await;
        b.wait_for_js(
            "the reset password",
            "return document.getElementById('reset-password').textContent.length >= 12;",
        )
        .await;
        env.look(&user_path, "admin-user").await;
        assert_eq!(
            b.eval("return document.getElementById('u-disabled').checked;").await,
            true,
            "the change was saved"
        );

        // A group with a hostile name and two rights; then more rights, a limit, a policy.
        env.look("/admin/groups", "admin-groups").await;
        b.click("#new-group").await;
        b.fill("#ng-name", &format!("{HOSTILE} team")).await;
        b.fill("#ng-desc", "People who look after users").await;
        b.click("#group-form input[value=admin_panel]").await;
        b.click("#group-form input[value=view_users]").await;
        env.submit("#group-form").await;
        b.wait_for_element("#group-page").await;
        let group_path = b.current_url().await.path().to_owned();
        env.shows_literally(&format!("{HOSTILE} team")).await;
        let checked = |flag: &str| {
            format!("return document.querySelector('#group-edit-form input[value={flag}]').checked;")
        };
        assert_eq!(b.eval(&checked("admin_panel")).await, true);
        assert_eq!(b.eval(&checked("view_users")).await, true);
        assert_eq!(b.eval(&checked("edit_users")).await, false);
        b.click("#group-edit-form input[value=edit_users]").await;
        b.fill("#g-limit", "-3").await;
        env.submit("#group-edit-form").await;
        b.wait_for_js(
            "the inline error for the limit",
            "return document.querySelector('[data-error-for=instance_limit]').textContent;",
        )
        .await;
        b.fill("#g-limit", "5").await;
        env.submit("#group-edit-form").await;
        b.wait_for_text("Changes saved.").await;
        b.click("#clipboard-form input[name=disable_copy]").await;
        env.submit("#clipboard-form").await;
        b.wait_for_text("Clipboard policy saved.").await;
        env.look(&group_path, "admin-group").await;
        assert_eq!(b.eval(&checked("edit_users")).await, true);
        assert_eq!(
            b.eval("return document.getElementById('g-limit').value;").await,
            "5"
        );
        assert_eq!(
            b.eval("return document.querySelector('#clipboard-form input[name=disable_copy]').checked;")
                .await,
            true
        );
        env.open("/admin/groups").await;
        env.shows_literally(&format!("{HOSTILE} team")).await;

        // Dave joins the group: his page lists its rights, the group lists him.
        env.open(&user_path).await;
        b.wait_for_element("#groups-form").await;
        b.eval(
            "const box = [...document.querySelectorAll('#groups-form label')] \
               .find(l => l.textContent.includes('onerror')).querySelector('input'); \
             box.click(); return 1;",
        )
        .await;
        env.submit("#groups-form").await;
        env.open(&user_path).await;
        b.wait_for_js(
            "the rights of the new group",
            "return document.getElementById('user-rights') \
               && document.getElementById('user-rights').textContent.includes('edit_users');",
        )
        .await;
        env.open(&group_path).await;
        env.shows_literally(HOSTILE).await;
        assert!(b.text_of("#members").await.contains("dave"));

        // A tenant.
        env.look("/admin/tenants", "admin-tenants").await;
        b.fill("#t-name", "Acme <b>Labs</b>").await;
        env.submit("#tenant-form").await;
        b.wait_for_text("Acme <b>Labs</b>").await;
        assert_eq!(
            b.eval("return document.querySelectorAll('#tenants-table b').length;").await,
            0
        );
        b.fill("#t-name", "Acme <b>Labs</b>").await;
        env.submit("#tenant-form").await;
        b.wait_for_js(
            "the refusal of a second tenant of that name",
            "return document.querySelector('#tenant-form [data-error-for=name], #tenant-form [data-form-error]') \
               && [...document.querySelectorAll('#tenant-form [data-error-for], #tenant-form [data-form-error]')] \
                  .some(e => e.textContent.includes('already'));",
        )
        .await;
        env.check_console("tenants").await;

        // --- paging through many users --------------------------------------------------
        let store = Store::connect(&database_url(&env.dir)).await.unwrap();
        let tenant = store.default_tenant().await.unwrap().unwrap();
        for n in 0..30 {
            store
                .create_user(
                    &flowcase_admin::store::NewUser {
                        tenant_id: tenant.id,
                        username: format!("user{n:02}"),
                        display_name: format!("User {n:02}"),
                        ..Default::default()
                    },
                    now_millis(),
                )
                .await
                .unwrap();
        }
        env.open("/admin/users").await;
        let rows = "return document.querySelectorAll('#users-table tbody tr').length;";
        assert_eq!(b.eval(rows).await, 25);
        // admin, bob, carol, dave and the 30.
        let pager = b.text_of(".pager").await;
        assert!(pager.contains("1–25 of 34"), "{pager}");
        b.click("#next-page").await;
        b.wait_for_url("the second page", |u| u.query() == Some("offset=25"))
            .await;
        assert_eq!(b.eval(rows).await, 9);
        let pager = b.text_of(".pager").await;
        assert!(pager.contains("26–34 of 34"), "{pager}");
        env.open("/admin/users?q=user2").await;
        assert_eq!(b.eval(rows).await, 10, "user20 to user29");

        // Deleting a user and a group: a second click confirms, then back to the list.
        let user29 = store.find_user_by_login("user29").await.unwrap().unwrap();
        env.open(&format!("/admin/users/{}", user29.id)).await;
        b.click("#delete-user").await;
        assert_eq!(b.text_of("#delete-user").await, "Click again to delete");
        b.click("#delete-user").await;
        b.wait_for_url("the users after deleting", |u| u.path() == "/admin/users")
            .await;
        assert!(store.get_user(user29.id).await.unwrap().is_none());
        let temp = store
            .create_group(
                &NewGroup {
                    tenant_id: tenant.id,
                    name: "Temporary".into(),
                    ..NewGroup::default()
                },
                now_millis(),
            )
            .await
            .unwrap();
        env.open(&format!("/admin/groups/{}", temp.id)).await;
        b.click("#delete-group").await;
        b.click("#delete-group").await;
        b.wait_for_url("the groups after deleting", |u| u.path() == "/admin/groups")
            .await;
        assert!(store.get_group(temp.id).await.unwrap().is_none());

        // --- the account page -----------------------------------------------------------
        env.look("/account", "account").await;
        b.fill("#a-current", &admin_password).await;
        b.fill("#a-new", "one new passphrase").await;
        b.fill("#a-new2", "another passphrase").await;
        env.submit("#password-form").await;
        let differ = b
            .wait_for_js(
                "the mismatch error",
                "return document.querySelector('[data-error-for=new_password_confirm]').textContent;",
            )
            .await;
        assert!(differ.as_str().unwrap().contains("differ"));
        b.fill("#k-name", HOSTILE).await;
        env.submit("#key-form").await;
        let token = b
            .wait_for_js(
                "the new key",
                "return document.getElementById('key-token').textContent;",
            )
            .await;
        assert!(token.as_str().unwrap().len() > 20, "{token}");
        // Listed at once, as text.
        env.shows_literally(HOSTILE).await;
        b.wait_for_element("#keys-table [data-revoke]").await;
        env.shots("account-key-created").await;
        env.open("/account").await;
        env.shows_literally(HOSTILE).await;
        b.click("#keys-table [data-revoke]").await;
        b.click("#keys-table [data-revoke]").await;
        b.wait_for_js(
            "the revoked key gone",
            "return document.querySelectorAll('#keys-table tbody tr').length === 0;",
        )
        .await;
        env.open("/account").await;
        b.wait_for_element("#keys-empty").await;

        // --- the dashboard --------------------------------------------------------------
        // A droplet with a hostile name in the catalogue, and a running instance of it.
        let admin_name = admin.clone();
        running_instance_row(
            &env.dir,
            &admin_name,
            "hostile1",
            (HOSTILE, DropletType::Vnc),
            "127.0.0.1:5901",
            None,
        )
        .await;
        let store = Store::connect(&database_url(&env.dir)).await.unwrap();
        let tenant = store.default_tenant().await.unwrap().unwrap();
        let admins = store
            .find_group_by_name(tenant.id, "Admin")
            .await
            .unwrap()
            .unwrap();
        let droplet = store
            .list_droplets()
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.name == HOSTILE)
            .unwrap();
        store.grant_droplet(droplet.id, admins.id).await.unwrap();
        env.open("/dashboard").await;
        env.shows_literally(HOSTILE).await;
        b.wait_for_element("#instances [data-instance-id][data-state=running]")
            .await;
        assert_eq!(
            b.eval("return document.querySelector('#instances [data-state=running] [data-field=badge]').textContent;")
                .await,
            "Running"
        );
        assert_eq!(b.text_of("#stat-running").await, "1");
        // The catalogue search hides what does not match.
        b.fill("#droplet-search", "no such droplet").await;
        b.wait_for_js(
            "the no-match note",
            "return !document.getElementById('catalogue-nomatch').hidden;",
        )
        .await;
        b.fill("#droplet-search", "img").await;
        b.wait_for_js(
            "the card again",
            "return document.getElementById('catalogue-nomatch').hidden \
               && !document.querySelector('#catalogue [data-droplet-id]').hidden;",
        )
        .await;
        env.check_console("dashboard").await;
        env.shots("dashboard").await;
        // The launch modal names the droplet (as text) and the window's size.
        b.click("#catalogue [data-action=launch]:not([disabled])").await;
        b.wait_for_js("the launch modal", "return document.getElementById('launch-modal').open;")
            .await;
        assert_eq!(b.text_of("#launch-name").await, HOSTILE);
        let size = b.text_of("#launch-resolution").await;
        assert!(size.contains(" × "), "{size}");
        env.shows_literally(HOSTILE).await;
        env.shots("dashboard-launch").await;
        b.click("#launch-modal [data-close]").await;
        env.check_console("dashboard after the modal").await;

        // The dark variant, for a person to look at.
        b.emulate_color_scheme("dark").await;
        env.look("/dashboard", "dashboard-dark").await;
        env.look(&group_path, "admin-group-dark").await;
        env.look("/admin/users", "admin-users-dark").await;
        b.emulate_color_scheme("").await;

        // --- a user without admin_panel -------------------------------------------------
        env.sign_out().await;
        env.sign_in("bob", PASSWORD, "/dashboard").await;
        env.look("/dashboard", "dashboard-empty").await;
        assert!(
            b.eval("return document.getElementById('nav-admin') === null;").await == true,
            "no admin link for bob"
        );
        for path in ["/admin", "/admin/users", &user_path, "/admin/groups", &group_path, "/admin/tenants"] {
            env.open(path).await;
            assert_eq!(b.text_of("#error-code").await, "404", "{path}");
            assert!(
                b.page_text().await.contains("There is nothing at this address."),
                "{path}"
            );
        }

        // --- a helpdesk: the admin area, but users only, and read-only --------------------
        let helpdesk = store
            .create_group(
                &NewGroup {
                    tenant_id: tenant.id,
                    name: "Helpdesk".into(),
                    description: String::new(),
                    permissions: Permissions {
                        admin_panel: true,
                        view_users: true,
                        ..Permissions::default()
                    },
                },
                now_millis(),
            )
            .await
            .unwrap();
        let carol = store.find_user_by_login("carol").await.unwrap().unwrap();
        store.add_member(carol.id, helpdesk.id).await.unwrap();
        env.sign_out().await;
        env.sign_in("carol", PASSWORD, "/dashboard").await;
        env.open("/admin").await;
        b.wait_for_url("the users section", |u| u.path() == "/admin/users")
            .await;
        assert_eq!(
            b.eval("return [...document.querySelectorAll('.tabs a')].map(a => a.textContent);")
                .await,
            serde_json::json!(["Users", "Audit log", "System"])
        );
        assert_eq!(
            b.eval("return document.getElementById('new-user') === null;").await,
            true,
            "no user creation without edit_users"
        );
        env.shows_literally(HOSTILE).await;
        env.open(&user_path).await;
        assert_eq!(
            b.eval("return document.querySelector('#profile-form button[type=submit]') === null \
                      && document.getElementById('u-display').disabled;")
                .await,
            true,
            "a read-only user page"
        );
        for path in ["/admin/groups", &group_path, "/admin/tenants"] {
            env.open(path).await;
            assert_eq!(b.text_of("#error-code").await, "404", "{path}");
        }
    })
    .await;
    env.browser.close().await;
}

/// The pure modules behind the dashboard and the admin forms (state → badge and actions, the
/// launch resolution, the API client, form bodies) have unit tests of their own; node runs
/// them here so that the suite covers them.
#[test]
fn the_page_modules_pass_their_unit_tests_under_node() {
    run_node_tests("app-modules.test.js", 8);
}

/// A stand-in for the instance API of the contract the dashboard codes against (`fetch` of
/// `/api/v1/…` and `EventSource`), installed before the page's scripts: the dashboard's live
/// part is checked here on its own, whatever serves that API. `__DROPLET__` and `__ME__` are
/// replaced by the test.
const FAKE_API: &str = r#"
(() => {
  const f = (window.__fake = { calls: [], instances: [], es: null, me: __ME__ });
  f.droplets = [{ id: __DROPLET__, name: "Fake desk", description: "From the API", droplet_type: "vnc",
                  icon_url: null, active: true }];
  const json = (status, body) =>
    new Response(body === null ? null : JSON.stringify(body), {
      status, headers: { "content-type": "application/json" } });
  const page = (items) => json(200, { items, total: items.length, limit: 200, offset: 0 });
  const realFetch = window.fetch.bind(window);
  window.fetch = async (url, init = {}) => {
    const u = new URL(url, location.href);
    if (!u.pathname.startsWith("/api/v1/")) return realFetch(url, init);
    const method = init.method || "GET";
    const body = init.body ? JSON.parse(init.body) : null;
    f.calls.push({ method, path: u.pathname, body, csrf: (init.headers || {})["x-csrf-token"] || null });
    const find = (id) => f.instances.find((i) => i.id === Number(id));
    let m;
    if (u.pathname === "/api/v1/droplets") return page(f.droplets);
    if (u.pathname === "/api/v1/stats")
      return json(200, { running: 0, instances: 0, cpu_percent: 12.5, memory_bytes: 1610612736, host: null });
    if (u.pathname === "/api/v1/instances" && method === "GET") return page(f.instances);
    if (u.pathname === "/api/v1/instances" && method === "POST") {
      const i = { id: 900, slug: "fake900", droplet_id: body.droplet_id, droplet_name: "Fake desk",
                  droplet_type: "vnc", user_id: f.me, username: "admin", status: "requested",
                  error_reason: null, created_at: Date.now(), started_at: null, stopped_at: null,
                  last_activity_at: null, open_url: "/droplet/900" };
      f.instances.push(i);
      return json(202, i);
    }
    if ((m = u.pathname.match(/^\/api\/v1\/instances\/(\d+)\/(start|stop)$/))) {
      const i = find(m[1]);
      i.status = m[2] === "stop" ? "stopping" : "starting";
      return json(202, i);
    }
    if ((m = u.pathname.match(/^\/api\/v1\/instances\/(\d+)$/)) && method === "DELETE") {
      f.instances = f.instances.filter((i) => i.id !== Number(m[1]));
      return json(204, null);
    }
    return json(404, { error: { code: "not_found", message: "no such API endpoint" } });
  };
  class FakeEventSource extends EventTarget {
    constructor(url) {
      super();
      this.url = url;
      this.readyState = 0;
      f.es = this;
      f.opened = (f.opened || 0) + 1;
      setTimeout(() => {
        if (f.sseFails) {
          this.readyState = 2;
          this.dispatchEvent(new Event("error"));
        } else {
          this.readyState = 1;
          this.dispatchEvent(new Event("open"));
        }
      }, 10);
    }
    close() { this.readyState = 2; }
  }
  window.EventSource = FakeEventSource;
  window.__push = (type, data) => f.es.dispatchEvent(new MessageEvent(type, { data: JSON.stringify(data) }));
})();
"#;

#[tokio::test]
async fn the_dashboard_launches_starts_stops_and_deletes_through_the_api_contract_live() {
    let env = Env::start().await;
    let b = &env.browser;
    let (admin, admin_password) = env.admin.clone();
    let store = Store::connect(&database_url(&env.dir)).await.unwrap();
    let tenant = store.default_tenant().await.unwrap().unwrap();
    let me = store.find_user_by_login(&admin).await.unwrap().unwrap();
    let admins = store
        .find_group_by_name(tenant.id, "Admin")
        .await
        .unwrap()
        .unwrap();
    let droplet = store
        .create_droplet(
            &flowcase_admin::store::NewDroplet::new(
                tenant.id,
                "Fake desk",
                DropletType::Vnc,
                flowcase_admin::store::TargetKind::Container,
            ),
            now_millis(),
        )
        .await
        .unwrap();
    store
        .set_droplet_active(droplet.id, true, now_millis())
        .await
        .unwrap();
    store.grant_droplet(droplet.id, admins.id).await.unwrap();
    b.add_init_script(
        &FAKE_API
            .replace("__DROPLET__", &droplet.id.to_string())
            .replace("__ME__", &me.id.to_string()),
    )
    .await;

    screenshot_on_failure(&[b], async {
        env.sign_in(&admin, &admin_password, "/dashboard").await;
        env.open("/dashboard").await;
        let row = |id: u32, state: &str| {
            format!("return !!document.querySelector('#instances [data-instance-id=\"{id}\"][data-state={state}]');")
        };
        // Stats and catalogue from the API.
        b.wait_for_js(
            "the stats",
            "return document.getElementById('stat-memory').textContent === '1.5 GiB' \
               && document.getElementById('stat-cpu').textContent === '13 %';",
        )
        .await;
        b.wait_for_text("From the API").await;

        // Launch: the POST carries the droplet, a WxH resolution and the CSRF token; the new
        // instance shows at once, queued.
        b.click("#catalogue [data-action=launch]:not([disabled])").await;
        b.click("#launch-submit").await;
        b.wait_for_js("the queued instance", &row(900, "requested")).await;
        let launch = b
            .eval("return __fake.calls.find(c => c.method === 'POST' && c.path === '/api/v1/instances');")
            .await;
        assert_eq!(launch["body"]["droplet_id"], droplet.id);
        let resolution = launch["body"]["resolution"].as_str().unwrap();
        let (w, h) = resolution.split_once('x').unwrap();
        assert!(w.parse::<u32>().unwrap() >= 640 && h.parse::<u32>().unwrap() >= 480, "{resolution}");
        assert!(launch["csrf"].as_str().is_some_and(|t| !t.is_empty()), "{launch}");
        assert_eq!(
            b.eval("return document.getElementById('launch-modal').open;").await,
            false
        );
        assert_eq!(
            b.eval("return document.querySelector('[data-instance-id=\"900\"] [data-field=badge]').textContent;")
                .await,
            "Queued"
        );

        // Pushed by the server: running, with Open.
        b.eval("__push('instance', Object.assign({}, __fake.instances[0], {status: 'running'})); return 1;")
            .await;
        b.wait_for_js("the running instance", &row(900, "running")).await;
        assert_eq!(
            b.eval("const a = document.querySelector('[data-instance-id=\"900\"] [data-action=open]'); \
                    return !a.hidden && a.getAttribute('href');")
                .await,
            "/droplet/900"
        );
        assert_eq!(b.text_of("#stat-running").await, "1");
        env.shots("dashboard-live").await;

        // Stop; then the server says it stopped: Start comes back.
        b.click("[data-instance-id='900'] [data-action=stop]").await;
        b.wait_for_js("the stopping instance", &row(900, "stopping")).await;
        b.eval("__push('instance', Object.assign({}, __fake.instances[0], {status: 'stopped'})); return 1;")
            .await;
        b.wait_for_js("the stopped instance", &row(900, "stopped")).await;
        assert_eq!(
            b.eval("return !document.querySelector('[data-instance-id=\"900\"] [data-action=start]').hidden \
                      && document.querySelector('[data-instance-id=\"900\"] [data-action=open]').hidden;")
                .await,
            true
        );
        b.click("[data-instance-id='900'] [data-action=start]").await;
        b.wait_for_js("the starting instance", &row(900, "starting")).await;

        // Another user's instance (an administrator's stream may carry it) is not "mine".
        b.eval(&format!(
            "__push('instance', {{id: 901, slug: 's901', droplet_name: 'Theirs', droplet_type: 'http', \
               user_id: {}, status: 'running'}}); return 1;",
            me.id + 1000
        ))
        .await;
        // An instance removed elsewhere disappears.
        b.eval(&format!(
            "__push('instance', {{id: 902, slug: 's902', droplet_name: 'Short-lived', droplet_type: 'http', \
               user_id: {}, status: 'running', open_url: 'https://s902.apps.localhost/'}}); return 1;",
            me.id
        ))
        .await;
        b.wait_for_js("the pushed instance", &row(902, "running")).await;
        assert_eq!(
            b.eval("return document.querySelector('[data-instance-id=\"902\"] [data-action=open]').target;")
                .await,
            "_blank",
            "a web app opens on its own host, in a new tab"
        );
        b.eval("__push('instance_removed', {id: 902}); return 1;").await;
        b.wait_for_js(
            "the removed instance gone",
            "return !document.querySelector('[data-instance-id=\"902\"]');",
        )
        .await;
        assert_eq!(
            b.eval("return !!document.querySelector('[data-instance-id=\"901\"]');").await,
            false
        );

        // Delete asks for a second click, then the row goes.
        b.click("[data-instance-id='900'] [data-action=delete]").await;
        assert_eq!(
            b.eval("return !!document.querySelector('[data-instance-id=\"900\"]');").await,
            true,
            "one click is not enough"
        );
        b.click("[data-instance-id='900'] [data-action=delete]").await;
        b.wait_for_js(
            "the deleted instance gone",
            "return !document.querySelector('[data-instance-id=\"900\"]') \
               && !document.getElementById('instances-empty').hidden;",
        )
        .await;
        assert_eq!(
            b.eval("return __fake.calls.filter(c => c.method === 'DELETE').map(c => c.path);")
                .await,
            serde_json::json!(["/api/v1/instances/900"])
        );

        // The stream breaks: polling takes over and finds what changed.
        b.eval(&format!(
            "__fake.instances = [{{id: 903, slug: 's903', droplet_name: 'Polled', droplet_type: 'vnc', \
               user_id: {}, status: 'running', open_url: '/droplet/903'}}]; \
             __fake.sseFails = true; __fake.es.dispatchEvent(new Event('error')); return 1;",
            me.id
        ))
        .await;
        b.wait_for_js("the polled instance", &row(903, "running")).await;
        env.check_console("the live dashboard").await;
    })
    .await;
    env.browser.close().await;
}
