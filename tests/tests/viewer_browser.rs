//! The desktop viewer in headless Chromium, through the real binary: the page loads its ES
//! modules under the Content Security Policy without a single violation, asks the control plane
//! for a tunnel token, shows its status overlay, and its menu works; the policy lets the page
//! open the same-origin `wss://…/tunnel` WebSocket; and the acceptance test: through the real
//! tunnel, the canvas shows the picture of the strict guacd double (`flowcase_e2e::guacd`) and
//! typed keys reach it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use flowcase_admin::store::DropletType;
use flowcase_e2e::browser::{Browser, WAIT_TIMEOUT, broken, screenshot_on_failure};
use flowcase_e2e::desktops::{DesktopInstance, desktop_instance};
use flowcase_e2e::guacd::{self, GuacdDouble};
use flowcase_e2e::instances::add_user;
use flowcase_e2e::viewer::reveal_toolbar;
use flowcase_e2e::{Gateway, GatewayDir};
use serde_json::json;

const PASSWORD: &str = "a long enough passphrase";

/// Opens `url`, signing in as `user` when the login page comes up (see `Browser::visit_as`).
async fn visit_as(browser: &Browser, origin: &str, url: &str, user: &str) {
    browser.visit_as(origin, url, user, PASSWORD).await;
}

struct Env {
    /// Kept for the gateway's working directory, removed on drop.
    _dir: GatewayDir,
    gw: Gateway,
    browser: Browser,
    desktop: DesktopInstance,
}

impl Env {
    async fn start(dir: GatewayDir) -> Env {
        let (gw, browser) = tokio::join!(Gateway::start(&dir), Browser::start("alice"));
        add_user(&dir, "alice", PASSWORD);
        let desktop = desktop_instance(
            &dir,
            "alice",
            "desk1",
            "Dev desktop",
            DropletType::Vnc,
            "127.0.0.1:5901",
        )
        .await;
        Env {
            _dir: dir,
            gw,
            browser,
            desktop,
        }
    }

    fn viewer_url(&self) -> String {
        self.gw
            .url("localhost", &format!("/droplet/{}", self.desktop.id))
    }
}

#[tokio::test]
async fn the_viewer_runs_under_the_csp_asks_for_a_token_and_shows_its_status() {
    let env = Env::start(GatewayDir::new()).await;
    let alice = &env.browser;
    let origin = env.gw.origin();
    let viewer = env.viewer_url();

    screenshot_on_failure(&[alice], async {
        visit_as(alice, &origin, &viewer, "alice").await;
        // The module ran: it marks the page once it has wired everything.
        alice.wait_for_element("body[data-viewer='ready']").await;

        // It asked for a tunnel token for this instance (with its session and CSRF header).
        let token_path = format!("/api/v1/instances/{}/tunnel-token", env.desktop.id);
        alice
            .wait_for_js(
                "a tunnel-token request",
                &format!(
                    "return performance.getEntriesByType('resource')\
                 .some(e => new URL(e.name).pathname === {token_path:?});"
                ),
            )
            .await;

        // The status overlay says where things stand, in words.
        let overlay = alice
            .wait_for_js(
                "a settled overlay",
                "const o = document.getElementById('overlay'); \
             const t = document.getElementById('overlay-title').textContent.trim(); \
             return o.dataset.state === 'connecting' ? null : \
               {state: o.dataset.state, hidden: o.hidden, title: t, \
                display: getComputedStyle(o).display};",
            )
            .await;
        let state = overlay["state"].as_str().unwrap();
        assert!(
            ["waiting", "retrying", "failed", "connected"].contains(&state),
            "{overlay}"
        );
        if state != "connected" {
            assert_eq!(overlay["hidden"], false, "{overlay}");
            assert_ne!(overlay["display"], "none", "{overlay}");
            let title = overlay["title"].as_str().unwrap();
            assert!(
                (title.ends_with('.') || title.ends_with('…'))
                    && title.len() > 5
                    && !title.contains("undefined"),
                "a sentence for the user: {overlay}"
            );
        }
        // The toolbar shows the droplet and a badge; the style sheet applied (no inline style
        // is allowed, so this proves the external sheet loaded).
        // textContent, not the rendered text: the toolbar may have hidden itself already.
        let name = alice
            .eval("return document.querySelector('.toolbar__name').textContent;")
            .await;
        assert_eq!(name, "Dev desktop");
        let position = alice
            .eval("return getComputedStyle(document.getElementById('toolbar')).position;")
            .await;
        assert_eq!(position, "fixed");

        // The menu opens with its clipboard panel and closes again (the toolbar hides itself
        // once the desktop shows: the pointer brings it back first).
        reveal_toolbar(alice).await;
        alice.click("#btn-menu").await;
        alice
            .wait_for_js(
                "the open menu",
                "return !document.getElementById('menu').hidden;",
            )
            .await;
        alice.wait_for_element("#clipboard-text").await;
        alice.click("#btn-menu").await;
        alice
            .wait_for_js(
                "the closed menu",
                "return document.getElementById('menu').hidden;",
            )
            .await;

        // The policy lets the page open the tunnel's WebSocket (same origin, wss): whatever the
        // server answers, Chromium must not refuse it before sending. A WebSocket to another
        // origin is the control: the same check must see that one refused.
        let open_websocket = |url: &'static str| {
            alice.client().execute_async(
                "const [url, done] = arguments; \
                 try { \
                   const ws = new WebSocket(url.replace('HOST', location.host), 'guacamole'); \
                   ws.onopen = () => { ws.close(); done('open'); }; \
                   ws.onerror = () => done('error'); \
                 } catch (e) { done('thrown: ' + e); }",
                vec![json!(url)],
            )
        };
        let outcome = open_websocket("wss://HOST/tunnel").await.unwrap();
        assert!(
            !outcome.as_str().unwrap_or_default().starts_with("thrown"),
            "{outcome}"
        );
        let log = alice.console_log().await;
        assert!(broken(&log).is_empty(), "console:\n{}", log.join("\n"));

        open_websocket("wss://127.0.0.1:9/tunnel").await.unwrap();
        let log = alice.console_log().await;
        assert!(
            log.iter().any(|l| l.contains("Content Security Policy")),
            "another origin is refused by the policy, and the check sees it:\n{}",
            log.join("\n")
        );
    })
    .await;
    env.browser.close().await;
}

// --- the acceptance test: the strict guacd double (`flowcase_e2e::guacd`) behind the tunnel ---

/// The colour of the double's picture (a PNG drawn with `img`).
const PICTURE_RGB: [u8; 3] = guacd::PICTURE_RGB;

#[tokio::test]
async fn the_viewer_shows_the_desktop_and_sends_typed_keys_through_the_tunnel() {
    let guacd = GuacdDouble::start().await;
    let mut dir = GatewayDir::new();
    dir.set("FLOWCASE_GUACD__ADDRESS", &guacd.addr.to_string());
    let env = Env::start(dir).await;
    let alice = &env.browser;
    let origin = env.gw.origin();
    let viewer = env.viewer_url();

    screenshot_on_failure(&[alice], async {
        visit_as(alice, &origin, &viewer, "alice").await;
        alice
            .wait_for_js(
                "the connected viewer",
                "return document.getElementById('overlay').dataset.state === 'connected';",
            )
            .await;
        // textContent: WebDriver's text is empty once the toolbar has slid out of view.
        assert_eq!(
            alice
                .eval("return document.getElementById('badge').textContent;")
                .await,
            "Connected"
        );

        // The picture is on screen, scaled to the window: the middle of a screenshot has the
        // desktop's colour (the overlay is gone, the toolbar is at the top edge).
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let rgb = alice.screenshot_center_rgb().await;
            let close = rgb
                .iter()
                .zip(PICTURE_RGB)
                .all(|(&got, want)| got.abs_diff(want) <= 3);
            if close {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the screenshot's middle is {rgb:?}, not the desktop's {PICTURE_RGB:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Typed keys reach guacd as key presses and releases (keysym 0x61 = 'a').
        let body = alice.wait_for_element("body").await;
        body.send_keys("ab").await.unwrap();
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let keys: Vec<(String, String)> = guacd
                .received()
                .into_iter()
                .filter(|i| i.opcode == "key" && i.args.len() == 2)
                .map(|i| (i.args[0].clone(), i.args[1].clone()))
                .collect();
            let seen =
                |sym: &str, pressed: &str| keys.iter().any(|(s, p)| s == sym && p == pressed);
            if seen("97", "1") && seen("97", "0") && seen("98", "1") && seen("98", "0") {
                break;
            }
            assert!(Instant::now() < deadline, "keys seen by guacd: {keys:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let log = alice.console_log().await;
        assert!(broken(&log).is_empty(), "console:\n{}", log.join("\n"));
    })
    .await;
    env.browser.close().await;
}
