//! The subdomain login in a real browser: headless Chromium, through the real binary. The
//! reqwest tests in app_hosts.rs follow the same redirects by hand; this one checks what only a
//! browser decides: that the login form may be posted and its redirects followed across
//! `localhost` and `app1.apps.localhost` (CSP `form-action`, SameSite and `__Host-` rules
//! applied), that each cookie stays on its own host, and that another user and a signed-out
//! user are turned away.
//!
//! Chromium aborts requests in flight with `ERR_NETWORK_CHANGED` when parallel tests start or
//! stop containers (see `flowcase_e2e::browser::NETWORK_CHANGED`), so each step that posts a
//! form is written to be restarted from its beginning.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use fantoccini::cookies::Cookie;
use flowcase_e2e::browser::{Browser, screenshot_on_failure};
use flowcase_e2e::instances::{add_user, echo_instance};
use flowcase_e2e::{Gateway, GatewayDir};
use serde_json::Value;
use url::Url;

const PASSWORD: &str = "a long enough passphrase";
const SESSION_COOKIE: &str = "__Host-flowcase_session";
const APP_COOKIE: &str = "__Host-flowcase_app";
/// How often a step is restarted after the network changed under it.
const ATTEMPTS: usize = 3;

/// The login page on the public host, as reached on the way to a page that needs a user.
fn is_login_page(url: &Url, origin: &str) -> bool {
    url.as_str().starts_with(&format!("{origin}/?return="))
}

/// Opens `url` and, when the login page comes up on the way, signs in as `user`; returns once
/// `arrived` holds. Opening `url` again restarts everything: the redirects (with a fresh
/// one-time code) and, if the post was lost, the login.
async fn visit_as(
    browser: &Browser,
    origin: &str,
    url: &str,
    user: &str,
    arrived: impl Fn(&Url) -> bool,
) -> Url {
    for _ in 0..ATTEMPTS {
        browser.goto(url).await;
        let Ok(at) = browser
            .try_wait_for_url("the login page or the destination", |u| {
                is_login_page(u, origin) || arrived(u)
            })
            .await
        else {
            continue;
        };
        if arrived(&at) {
            return at;
        }
        browser.submit_login(user, PASSWORD).await;
        if let Ok(at) = browser
            .try_wait_for_url(&format!("{url} after signing in"), &arrived)
            .await
        {
            return at;
        }
    }
    panic!("[{user}] could not reach {url}: the network kept changing");
}

/// Signs out with the dashboard's form, until the dashboard sends the browser to sign in.
async fn sign_out(browser: &Browser, origin: &str) {
    let dashboard = format!("{origin}/dashboard");
    for _ in 0..ATTEMPTS {
        browser.goto(&dashboard).await;
        let at = browser
            .wait_for_url("the dashboard or the login page", |u| {
                u.path() == "/dashboard" || is_login_page(u, origin)
            })
            .await;
        if is_login_page(&at, origin) {
            return; // the last attempt's post arrived, only its answer was lost
        }
        // The sign-out form sits in the account menu of the top bar.
        browser.click("#account-menu summary").await;
        browser
            .click("form[action='/logout'] button[type=submit]")
            .await;
        if browser
            .try_wait_for_url("to leave the dashboard", |u| u.path() != "/dashboard")
            .await
            .is_ok()
        {
            return;
        }
    }
    panic!("could not sign out: the network kept changing");
}

fn has(cookies: &[Cookie<'static>], name: &str) -> bool {
    cookies.iter().any(|c| c.name() == name)
}

fn names<'a>(cookies: &'a [Cookie<'static>]) -> Vec<&'a str> {
    cookies.iter().map(|c| c.name()).collect()
}

#[tokio::test]
async fn the_subdomain_login_in_chromium_keeps_each_cookie_on_its_host() {
    let started = Instant::now();
    let dir = GatewayDir::new();
    // The browsers start while the gateway does: each Chromium takes a second or so.
    let (gw, alice, bob) = tokio::join!(
        Gateway::start(&dir),
        Browser::start("alice"),
        Browser::start("bob")
    );
    for user in ["alice", "bob"] {
        add_user(&dir, user, PASSWORD);
    }
    let app = echo_instance(&dir, "alice", "app1").await;
    let origin = gw.origin();
    let instance_url = gw.url(&app.host, "/hello?x=1");
    let ready = started.elapsed();

    screenshot_on_failure(&[&alice, &bob], async {
        // Alice opens her instance, is sent to sign in on the public host, and comes back to
        // the page she asked for.
        alice.goto(&instance_url).await;
        alice
            .wait_for_url("the login page on localhost", |u| is_login_page(u, &origin))
            .await;
        visit_as(&alice, &origin, &instance_url, "alice", |u| {
            u.as_str() == instance_url
        })
        .await;
        // Chromium shows a JSON response as text in a <pre>.
        let seen: Value = serde_json::from_str(&alice.text_of("pre").await).unwrap();
        assert_eq!(seen["path"], "/hello");
        assert_eq!(seen["query"], "x=1");
        assert_eq!(seen["headers"]["x-forwarded-user"], "alice");
        let cookie = seen["headers"]["cookie"].as_str().unwrap_or_default();
        assert!(
            !cookie.contains("flowcase"),
            "our cookies leaked upstream: {cookie}"
        );
        assert!(
            seen["headers"]["x-flowcase-assertion"]
                .as_str()
                .is_some_and(|t| t.split('.').count() == 3),
            "an identity assertion: {seen}"
        );

        // The instance host holds its host-only app cookie, never the session.
        let on_app = alice.cookies().await;
        assert!(has(&on_app, APP_COOKIE), "{:?}", names(&on_app));
        assert!(!has(&on_app, SESSION_COOKIE), "{:?}", names(&on_app));
        let app_cookie = on_app.iter().find(|c| c.name() == APP_COOKIE).unwrap();
        assert_eq!(app_cookie.http_only(), Some(true));
        assert_eq!(app_cookie.secure(), Some(true));

        // Bob, in his own browser, signs in on the way to alice's instance and is refused
        // (by /app-auth on the public host, before any code is minted).
        visit_as(&bob, &origin, &instance_url, "bob", |u| {
            u.as_str().starts_with(&format!("{origin}/app-auth?"))
        })
        .await;
        bob.wait_for_text("belongs to another user").await;

        // The public host holds the session, and not the app cookie.
        alice.goto(&format!("{origin}/dashboard")).await;
        alice
            .wait_for_url("the dashboard", |u| u.path() == "/dashboard")
            .await;
        let on_public = alice.cookies().await;
        assert!(has(&on_public, SESSION_COOKIE), "{:?}", names(&on_public));
        assert!(!has(&on_public, APP_COOKIE), "{:?}", names(&on_public));

        // Signing out on the dashboard cuts the instance host too: the app cookie is still in
        // the jar, but its session is gone, so the next visit ends on the login page.
        sign_out(&alice, &origin).await;
        // Other hosts learn of the logout within the gateway's revocation refresh (< 1 s).
        tokio::time::sleep(Duration::from_millis(1200)).await;
        alice.goto(&instance_url).await;
        let login = alice
            .wait_for_url("the login page again", |u| is_login_page(u, &origin))
            .await;
        alice.wait_for_element("input[name=password]").await;
        let back_to = login
            .query_pairs()
            .find(|(k, _)| k == "return")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        assert!(
            back_to.starts_with("/app-auth?") && back_to.contains(&app.host),
            "after signing in, the login page returns to the instance: {login}"
        );
    })
    .await;

    alice.close().await;
    bob.close().await;
    eprintln!(
        "gateway and browsers ready after {ready:?}, test done after {:?}",
        started.elapsed()
    );
}

/// The browser runs in a network namespace of its own, where Docker's interface changes (which
/// make Chromium abort requests in flight) cannot reach it, and still reaches servers on the
/// host's loopback by `localhost`, `*.localhost` and address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_has_a_network_of_its_own_yet_reaches_the_hosts_loopback() {
    use axum::response::Html;
    use flowcase_e2e::loopback::LoopbackServer;
    let server = LoopbackServer::start(axum::Router::new().route(
        "/",
        axum::routing::get(|| async { Html("<title>here</title><p id=ok>loopback</p>") }),
    ))
    .await;
    let browser = Browser::start("own-network").await;
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
        })
        .unwrap();
    if uid == "0" {
        // scripts/test runs as root, where a namespace can always be made.
        let its = browser
            .network_namespace()
            .expect("chromedriver's namespace");
        assert_ne!(
            its,
            ours.display().to_string(),
            "the browser shares our network"
        );
    }
    let port = server.addr.port();
    for host in ["localhost", "a.apps.localhost", "127.0.0.1"] {
        browser.goto(&format!("http://{host}:{port}/")).await;
        assert_eq!(browser.text_of("#ok").await, "loopback", "{host}");
    }
    // Each page, and the favicon Chromium asks for with it.
    assert!(server.requests() >= 3, "{} requests", server.requests());
    browser.close().await;
}
