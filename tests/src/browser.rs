//! A real browser for end-to-end tests: headless Debian Chromium driven through `chromedriver`
//! with `fantoccini`. It checks what reqwest-based tests cannot: that Chromium itself follows the
//! login dance across `localhost` and `*.apps.localhost`, stores each cookie on the host it
//! belongs to, and sends them back (SameSite, `__Host-` prefix rules and all).
//!
//! Each [`Browser`] runs its own `chromedriver` (in its own process group, so that the Chromium it
//! starts can be killed with it) with a fresh profile in a temporary directory. Every command and
//! every wait is bounded, so a hung browser fails the test instead of stalling it. On failure,
//! [`screenshot_on_failure`] saves a PNG of each browser and keeps that directory.

use std::future::Future;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fantoccini::cookies::Cookie;
use fantoccini::error::CmdError;
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{Value, json};
use url::Url;

use crate::browser_network::{BrowserNetwork, SOCKS_PORT};

/// How long chromedriver may take to answer `/status` and Chromium to open a session.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The bound on any single WebDriver command (a page load included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// The default bound on the `wait_for_*` polls.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// Chromium aborts the requests in flight (page loads, form posts, redirects) with this error
/// whenever a network interface appears or goes away on the machine, loopback traffic
/// included: here, whenever a parallel test starts or stops a Docker container. There is no
/// switch to turn that off; each browser runs in a network namespace of its own instead
/// ([`crate::browser_network`]). Where none can be made (not root), the helpers retry what is
/// safe to repeat and report it.
pub const NETWORK_CHANGED: &str = "ERR_NETWORK_CHANGED";

/// The Chromium flags for a quiet, deterministic headless run: no sandbox (tests run as root in
/// a container), no GPU or /dev/shm (small CI machines), and none of the background traffic
/// (updates, sync, field trials) that would reach for the network, which is not there.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1280,900",
];

/// A headless Chromium session. Prefer [`Browser::close`] at the end of a test; dropping it
/// (on a panic, say) kills chromedriver and Chromium all the same.
pub struct Browser {
    name: String,
    client: Option<Client>,
    driver: Option<Child>,
    /// The network namespace chromedriver and Chromium run in, when one could be made.
    network: Option<BrowserNetwork>,
    /// Holds `profile/`, `home/` (Chromium's crash database and caches), the chromedriver
    /// log and failure screenshots.
    dir: tempfile::TempDir,
    keep_dir: AtomicBool,
    screenshots: AtomicU32,
}

impl Browser {
    /// Starts chromedriver and a Chromium session; `name` labels the temporary directory and
    /// the messages (e.g. the user the browser belongs to).
    pub async fn start(name: &str) -> Browser {
        let dir = tempfile::Builder::new()
            .prefix(&format!("flowcase-browser-{name}-"))
            .tempdir()
            .unwrap();
        let mut browser = Browser {
            name: name.to_owned(),
            client: None,
            driver: None,
            network: None,
            dir,
            keep_dir: AtomicBool::new(false),
            screenshots: AtomicU32::new(0),
        };
        // A port found free can be taken before chromedriver binds it; chromedriver then
        // exits, and another port is tried.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = match browser.start_isolated() {
                Some(port) => port,
                None => {
                    let port = free_port();
                    let driver = spawn_driver(browser.dir.path(), port)
                        .unwrap_or_else(|e| panic!("{}", driver_missing(&e)));
                    browser.driver = Some(driver);
                    port
                }
            };
            match browser.connect(port).await {
                Ok(()) => return browser,
                Err(e) => {
                    last_error = e;
                    browser.kill();
                }
            }
        }
        panic!(
            "[{name}] could not start a browser ({last_error}); chromedriver log:\n{}",
            std::fs::read_to_string(browser.dir.path().join("chromedriver.log"))
                .unwrap_or_default()
        );
    }

    /// Starts chromedriver in a network namespace of its own (see [`crate::browser_network`]);
    /// the port the test reaches it on, or `None` where no namespace can be made.
    fn start_isolated(&mut self) -> Option<u16> {
        static REFUSED: AtomicBool = AtomicBool::new(false);
        if REFUSED.load(Ordering::Relaxed) {
            return None;
        }
        let dir = self.dir.path().to_owned();
        match BrowserNetwork::start(move |port| spawn_driver(&dir, port)) {
            Ok((network, driver)) => {
                let port = network.webdriver.port();
                self.network = Some(network);
                self.driver = Some(driver);
                Some(port)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("{}", driver_missing(&e))
            }
            Err(e) => {
                eprintln!(
                    "[{}] no network namespace for the browser ({e}): it shares the host's, \
                     and Docker's interface changes may abort its requests",
                    self.name
                );
                REFUSED.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    async fn connect(&mut self, port: u16) -> Result<(), String> {
        let status_url = format!("http://127.0.0.1:{port}/status");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.driver.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                return Err(format!("chromedriver exited: {exit}"));
            }
            if let Ok(resp) = http.get(&status_url).send().await
                && let Ok(status) = resp.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("chromedriver not ready after {START_TIMEOUT:?}"));
            }
            tokio::time::sleep(POLL).await;
        }

        let profile = self.dir.path().join("profile");
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        if self.network.is_some() {
            args.push(format!("--proxy-server=socks5://127.0.0.1:{SOCKS_PORT}"));
            // Chromium never proxies loopback unless told: all of it goes through the proxy.
            args.push("--proxy-bypass-list=<-loopback>".to_owned());
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        // The gateway serves a self-signed certificate here. Trusting it blindly is fine for
        // these tests: they check the login flow and the cookies, while the TLS itself (which
        // certificate is served for which host, and that it verifies) is tested with a strict
        // client in tests/tls.rs and the other end-to-end tests.
        caps.insert("acceptInsecureCerts".into(), json!(true));
        caps.insert(
            "timeouts".into(),
            json!({
                "pageLoad": COMMAND_TIMEOUT.as_millis() as u64,
                "script": COMMAND_TIMEOUT.as_millis() as u64,
                "implicit": 0,
            }),
        );
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium_bin(), "args": args }),
        );
        // Console messages (CSP violations, blocked navigations) for failure reports.
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let session = tokio::time::timeout(
            START_TIMEOUT,
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .map_err(|_| format!("no WebDriver session after {START_TIMEOUT:?}"))?
        .map_err(|e| format!("new WebDriver session: {e}"))?;
        // Page loads wait at most COMMAND_TIMEOUT; element lookups never wait implicitly (the
        // wait_for_* helpers poll instead).
        session
            .update_timeouts(TimeoutConfiguration::new(
                Some(COMMAND_TIMEOUT),
                Some(COMMAND_TIMEOUT),
                Some(Duration::ZERO),
            ))
            .await
            .map_err(|e| format!("setting timeouts: {e}"))?;
        self.client = Some(session);
        Ok(())
    }

    /// The network namespace chromedriver (and so Chromium) runs in, as `/proc/<pid>/ns/net`
    /// names it (`net:[<inode>]`).
    pub fn network_namespace(&self) -> Option<String> {
        let pid = self.driver.as_ref()?.id();
        let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
        Some(link.display().to_string())
    }

    /// The fantoccini client, for what the helpers below do not cover.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("browser closed")
    }

    /// Runs one WebDriver command with a bound, panicking with `what` on error or timeout.
    async fn run<T>(&self, what: &str, command: impl Future<Output = Result<T, CmdError>>) -> T {
        match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => panic!("[{}] {what}: {e}", self.name),
            Err(_) => panic!(
                "[{}] {what}: no answer after {COMMAND_TIMEOUT:?}",
                self.name
            ),
        }
    }

    /// Navigates to `url` and waits for the page load (redirects included) to finish. A load
    /// that Chromium aborted because the network changed is retried (see [`NETWORK_CHANGED`]):
    /// use it for navigations that are safe to repeat.
    pub async fn goto(&self, url: &str) {
        for attempt in 1..=3 {
            let loaded = tokio::time::timeout(COMMAND_TIMEOUT, self.client().goto(url)).await;
            let error = match loaded {
                Ok(Ok(())) => self.net_error().await,
                // chromedriver may report the aborted load itself rather than show its page.
                Ok(Err(e)) if e.to_string().contains(NETWORK_CHANGED) => {
                    Some(NETWORK_CHANGED.to_owned())
                }
                Ok(Err(e)) => panic!("[{}] goto {url}: {e}", self.name),
                Err(_) => panic!(
                    "[{}] goto {url}: no answer after {COMMAND_TIMEOUT:?}",
                    self.name
                ),
            };
            match error {
                Some(code) if code == NETWORK_CHANGED && attempt < 3 => {
                    eprintln!("[{}] {code} while opening {url}; again", self.name);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => return,
            }
        }
    }

    /// The error code (`ERR_…`) when the current page is Chromium's network-error page.
    pub async fn net_error(&self) -> Option<String> {
        let code = self
            .run(
                "look for an error page",
                self.client().execute(
                    "if (!document.URL.startsWith('chrome-error:')) return null; \
                     const c = document.querySelector('.error-code'); \
                     return c ? c.textContent.trim() : 'network error';",
                    vec![],
                ),
            )
            .await;
        code.as_str().map(str::to_owned)
    }

    /// Reloads the current page.
    pub async fn refresh(&self) {
        self.run("refresh", self.client().refresh()).await;
    }

    /// Clears the input matched by `css` and types `text` into it.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.wait_for_element(css).await;
        self.run(&format!("clear {css}"), element.clear()).await;
        self.run(&format!("type into {css}"), element.send_keys(text))
            .await;
    }

    /// Clicks the element matched by `css` (a submit button, say); a navigation it starts is
    /// not waited for: follow it with [`Browser::wait_for_url`].
    /// An element the page redraws between finding and clicking it (a live list updated by
    /// the event stream) is found again and clicked, as a person's next click would be.
    pub async fn click(&self, css: &str) {
        for _ in 0..ATTEMPTS {
            let element = self.wait_for_element(css).await;
            let clicked = tokio::time::timeout(COMMAND_TIMEOUT, element.click()).await;
            match clicked {
                Ok(Err(e)) if e.to_string().contains("stale element") => continue,
                Ok(Err(e)) => panic!("[{}] click {css}: {e}", self.name),
                Ok(Ok(_)) => return,
                Err(_) => panic!(
                    "[{}] click {css}: no answer after {COMMAND_TIMEOUT:?}",
                    self.name
                ),
            }
        }
        panic!(
            "[{}] click {css}: the element kept being redrawn",
            self.name
        );
    }

    /// Runs `script` (a function body: `return …;`) in the page and gives back its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.run("run a script", self.client().execute(script, vec![]))
            .await
    }

    /// Polls `script` until it returns something truthy (not null, false, 0 or ""), at most
    /// [`WAIT_TIMEOUT`]; gives back that value. `what` names it in the failure.
    pub async fn wait_for_js(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let value = self.eval(script).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "[{}] no {what} within {WAIT_TIMEOUT:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Moves the pointer onto the middle of the element matched by `css`, as a user's mouse
    /// does (hover effects, `mouseenter`), without clicking.
    pub async fn point_at(&self, css: &str) {
        use fantoccini::actions::{InputSource, MouseActions, PointerAction};
        let element = self.wait_for_element(css).await;
        let actions = MouseActions::new("mouse".into()).then(PointerAction::MoveToElement {
            element,
            duration: None,
            x: 0.0,
            y: 0.0,
        });
        self.run(
            &format!("point at {css}"),
            self.client().perform_actions(actions),
        )
        .await;
    }

    /// The page's visible text (`document.body.innerText`).
    pub async fn page_text(&self) -> String {
        let text = self
            .run(
                "read the page text",
                self.client().execute(
                    "return document.body ? document.body.innerText : '';",
                    vec![],
                ),
            )
            .await;
        text.as_str().unwrap_or_default().to_owned()
    }

    /// The text of the first element matched by `css`.
    pub async fn text_of(&self, css: &str) -> String {
        let element = self.wait_for_element(css).await;
        self.run(&format!("read {css}"), element.text()).await
    }

    /// The colour at the middle of a real screenshot of the page, decoded by the browser itself
    /// (pages' policies allow `data:` images).
    pub async fn screenshot_center_rgb(&self) -> [u8; 3] {
        use base64::Engine as _;
        let png = self.client().screenshot().await.unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(png);
        let rgb = self
            .client()
            .execute_async(
                "const [src, done] = arguments; const img = new Image(); \
                 img.onload = () => { const c = document.createElement('canvas'); \
                   c.width = img.width; c.height = img.height; const g = c.getContext('2d'); \
                   g.drawImage(img, 0, 0); \
                   const d = g.getImageData(img.width >> 1, img.height >> 1, 1, 1).data; \
                   done([d[0], d[1], d[2]]); }; \
                 img.onerror = () => done(null); img.src = src;",
                vec![serde_json::json!(format!("data:image/png;base64,{b64}"))],
            )
            .await
            .unwrap();
        let channel = |i: usize| rgb[i].as_u64().unwrap() as u8;
        [channel(0), channel(1), channel(2)]
    }

    /// The URL of the current page.
    pub async fn current_url(&self) -> Url {
        self.run("read the URL", self.client().current_url()).await
    }

    /// The cookies the browser holds for the current page's URL (WebDriver sees HttpOnly ones
    /// too, which page scripts cannot).
    pub async fn cookies(&self) -> Vec<Cookie<'static>> {
        self.run("read the cookies", self.client().get_all_cookies())
            .await
    }

    /// Polls until an element matches `css`, at most [`WAIT_TIMEOUT`].
    pub async fn wait_for_element(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let found = self
                .run(
                    &format!("find {css}"),
                    self.client().find_all(Locator::Css(css)),
                )
                .await;
            if let Some(element) = found.into_iter().next() {
                return element;
            }
            if Instant::now() > deadline {
                panic!(
                    "[{}] no {css} after {WAIT_TIMEOUT:?} on {}",
                    self.name,
                    self.current_url().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls the current URL until `done` holds, at most [`WAIT_TIMEOUT`]; `what` describes
    /// the expected page for the panic message. A network-error page fails at once.
    pub async fn wait_for_url(&self, what: &str, done: impl Fn(&Url) -> bool) -> Url {
        match self.try_wait_for_url(what, done).await {
            Ok(url) => url,
            Err(code) => panic!("[{}] expected {what}, got the error page {code}", self.name),
        }
    }

    /// [`Browser::wait_for_url`], except that Chromium's error page for [`NETWORK_CHANGED`] is
    /// returned as `Err` instead of failing: for steps (a form post) that the caller restarts
    /// in its own way.
    pub async fn try_wait_for_url(
        &self,
        what: &str,
        done: impl Fn(&Url) -> bool,
    ) -> Result<Url, String> {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            // Checked first: an error page keeps the URL that failed, which may be the one
            // waited for.
            match self.net_error().await {
                Some(code) if code == NETWORK_CHANGED => {
                    eprintln!("[{}] {code} while waiting for {what}", self.name);
                    return Err(code);
                }
                Some(code) => panic!(
                    "[{}] expected {what}, got the error page {code} for {}",
                    self.name,
                    self.current_url().await
                ),
                None => {}
            }
            let url = self.current_url().await;
            if done(&url) {
                return Ok(url);
            }
            if Instant::now() > deadline {
                panic!(
                    "[{}] expected {what} within {WAIT_TIMEOUT:?}, still on {url}",
                    self.name
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls the page text until it contains `needle`, at most [`WAIT_TIMEOUT`].
    pub async fn wait_for_text(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            let text = self.page_text().await;
            if text.contains(needle) {
                return text;
            }
            if Instant::now() > deadline {
                panic!(
                    "[{}] no {needle:?} within {WAIT_TIMEOUT:?} on {}:\n{text}",
                    self.name,
                    self.current_url().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The browser console's messages since the last call (Chromium reports CSP violations and
    /// blocked navigations there), one `LEVEL message` line each.
    pub async fn console_log(&self) -> Vec<String> {
        let log = self
            .run("read the console", self.client().issue_cmd(BrowserLog))
            .await;
        log.as_array()
            .into_iter()
            .flatten()
            .map(|entry| {
                format!(
                    "{} {}",
                    entry["level"].as_str().unwrap_or("?"),
                    entry["message"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }

    /// Makes the page see `prefers-color-scheme: scheme` (`"dark"`, `"light"`; `""` resets),
    /// through chromedriver's Chrome DevTools passthrough.
    pub async fn emulate_color_scheme(&self, scheme: &str) {
        self.run(
            "emulate a colour scheme",
            self.client().issue_cmd(Cdp {
                cmd: "Emulation.setEmulatedMedia",
                params: json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
            }),
        )
        .await;
    }

    /// Runs `source` in every page this browser opens from now on, before the page's own
    /// scripts (Chrome DevTools `Page.addScriptToEvaluateOnNewDocument`; the page's Content
    /// Security Policy does not apply to it): for stand-ins of browser APIs.
    pub async fn add_init_script(&self, source: &str) {
        self.run(
            "add an init script",
            self.client().issue_cmd(Cdp {
                cmd: "Page.addScriptToEvaluateOnNewDocument",
                params: json!({ "source": source }),
            }),
        )
        .await;
    }

    /// Saves a PNG of the current viewport to `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let png = tokio::time::timeout(COMMAND_TIMEOUT, self.client().screenshot())
            .await
            .map_err(|_| "screenshot timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        std::fs::write(path, png).map_err(|e| e.to_string())
    }

    /// Saves a numbered failure screenshot into this browser's directory, which is then kept
    /// after the test; returns a line for the panic message.
    async fn failure_screenshot(&self) -> String {
        let n = self.screenshots.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("failure-{n}.png"));
        self.keep_dir.store(true, Ordering::Relaxed);
        let url = match tokio::time::timeout(COMMAND_TIMEOUT, self.client().current_url()).await {
            Ok(Ok(url)) => url.to_string(),
            _ => "?".into(),
        };
        let mut report = match self.screenshot(&path).await {
            Ok(()) => format!("[{}] screenshot of {url}: {}", self.name, path.display()),
            Err(e) => format!("[{}] no screenshot of {url}: {e}", self.name),
        };
        if let Ok(Ok(log)) =
            tokio::time::timeout(COMMAND_TIMEOUT, self.client().issue_cmd(BrowserLog)).await
            && let Some(entries) = log.as_array()
        {
            for entry in entries {
                report.push_str(&format!(
                    "\n[{}] console {} {}",
                    self.name,
                    entry["level"].as_str().unwrap_or("?"),
                    entry["message"].as_str().unwrap_or_default()
                ));
            }
        }
        report
    }

    /// Ends the WebDriver session (chromedriver closes Chromium), then stops chromedriver.
    pub async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, client.close()).await;
        }
        self.kill();
    }

    /// Kills chromedriver's process group, Chromium included, and waits until it is gone.
    fn kill(&mut self) {
        let Some(mut driver) = self.driver.take() else {
            return;
        };
        // The group id is chromedriver's pid (spawned with process_group(0)). The standard
        // library cannot signal a group and the workspace forbids unsafe code, so kill(1) does.
        let group = format!("-{}", driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = driver.wait();
        // Chromium's processes are not our children: wait (bounded) until the group is empty
        // before the profile directory is removed under them.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let alive = Command::new("kill")
                .args(["-0", "--", &group])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !alive {
                break;
            }
            std::thread::sleep(POLL);
        }
        self.network = None;
    }
}

/// How often the page-level helpers below ([`Browser::sign_in`], [`Browser::press`]…) start
/// again when Chromium dropped a request because the network changed.
pub const ATTEMPTS: usize = 3;
/// The window sizes of [`Browser::shots`]: a laptop, and a phone.
pub const LAPTOP: (u32, u32) = (1280, 900);
pub const PHONE: (u32, u32) = (390, 844);

/// `target/screenshots/<name>/`, created: where a test saves the screenshots a person looks at.
pub fn screenshot_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/screenshots")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Console lines that mean the page is broken: policy violations, script errors, and a file of
/// the page that failed to load (unless the network changed under it, see [`NETWORK_CHANGED`]).
/// Failed API requests are not among them: pages show those in words.
pub fn broken(log: &[String]) -> Vec<&String> {
    log.iter()
        .filter(|line| {
            line.contains("Content Security Policy")
                || line.contains("Refused to")
                || line.contains("Uncaught")
                || line.contains("SyntaxError")
                // A page that logs a request lost with the network ("TypeError: Failed to
                // fetch") handled it; a TypeError of its own code is broken.
                || (line.contains("TypeError") && !line.contains("Failed to fetch"))
                || line.contains("ReferenceError")
                || (line.contains("/assets/")
                    && line.contains("Failed to load")
                    && !line.contains(NETWORK_CHANGED))
        })
        .collect()
}

/// The pages of the control plane, as a person uses them: signing in, pressing buttons whose
/// script calls the API, waiting for what a container takes, and the checks every page gets
/// (console, inline code, hostile names, phone layout, screenshots). Each step that Chromium may
/// lose to a network change (see [`NETWORK_CHANGED`]) is retried.
impl Browser {
    /// Signs in with the login form of `origin` (`https://localhost:<port>`), landing on `path`
    /// (directly when the browser is signed in already).
    pub async fn sign_in(&self, origin: &str, user: &str, password: &str, path: &str) {
        let query = serde_urlencoded::to_string([("return", path)]).unwrap();
        for _ in 0..ATTEMPTS {
            self.goto(&format!("{origin}/?{query}")).await;
            let at = self
                .wait_for_url("the login page or the destination", |u| {
                    u.path() == "/" || u.path() == path
                })
                .await;
            if at.path() == path {
                return;
            }
            self.submit_login(user, password).await;
            if self
                .try_wait_for_url(&format!("{path} after signing in"), |u: &Url| {
                    u.path() == path
                })
                .await
                .is_ok()
            {
                return;
            }
        }
        panic!("[{user}] could not sign in: the network kept changing");
    }

    /// Fills the login form on the page and submits it.
    pub async fn submit_login(&self, user: &str, password: &str) {
        self.fill("input[name=username]", user).await;
        self.fill("input[name=password]", password).await;
        self.click("form[action='/login'] button[type=submit]")
            .await;
    }

    /// Opens `url` (a page with its query), signing in as `user` when the login page of
    /// `origin` comes up, until the browser is at `url` exactly.
    pub async fn visit_as(&self, origin: &str, url: &str, user: &str, password: &str) {
        let arrived = |u: &Url| u.as_str() == url;
        let login = |u: &Url| u.as_str().starts_with(&format!("{origin}/?return="));
        for _ in 0..ATTEMPTS {
            self.goto(url).await;
            let Ok(at) = self
                .try_wait_for_url("the login page or the page", |u| login(u) || arrived(u))
                .await
            else {
                continue;
            };
            if arrived(&at) {
                return;
            }
            self.submit_login(user, password).await;
            if self
                .try_wait_for_url("the page after signing in", arrived)
                .await
                .is_ok()
            {
                return;
            }
        }
        panic!("[{user}] could not reach {url}: the network kept changing");
    }

    /// Opens `url` and waits until its modules loaded: a page whose files Chromium lost to a
    /// network change (see [`NETWORK_CHANGED`]) is loaded again. Reads (and so empties) the
    /// console, failing when it reports a broken page.
    pub async fn open_page(&self, url: &str) {
        for attempt in 1..=ATTEMPTS {
            self.goto(url).await;
            let log = self.console_log().await;
            if attempt < ATTEMPTS && log.iter().any(|l| l.contains(NETWORK_CHANGED)) {
                eprintln!(
                    "[{}] {NETWORK_CHANGED} while loading {url}; again",
                    self.name
                );
                continue;
            }
            let bad = broken(&log);
            assert!(bad.is_empty(), "{url}: the console reports {bad:#?}");
            return;
        }
    }

    /// Clicks the element matched by `css` from the page's script: for controls a sticky bar
    /// may cover where WebDriver scrolls them to.
    pub async fn click_js(&self, css: &str) {
        self.wait_for_element(css).await;
        self.eval(&format!(
            "document.querySelector({css:?}).click(); return 1;"
        ))
        .await;
    }

    /// Fails when the console reports a broken page (see [`broken`]) since the last read.
    pub async fn check_console(&self, what: &str) {
        let log = self.console_log().await;
        let bad = broken(&log);
        assert!(bad.is_empty(), "{what}: the console reports {bad:#?}");
    }

    /// Fails when the page holds code its policy would have to allow: an inline script, an
    /// event-handler attribute or an inline style.
    pub async fn check_no_inline_code(&self, what: &str) {
        let inline = self
            .eval(
                "return [...document.querySelectorAll('[style], script:not([src]), style')] \
                   .concat([...document.querySelectorAll('*')].filter(e => \
                     [...e.attributes].some(a => a.name.startsWith('on')))) \
                   .map(e => e.outerHTML.slice(0, 80));",
            )
            .await;
        assert_eq!(inline, json!([]), "{what}: inline code");
    }

    /// Waits until the page shows `text` literally and holds no element made of it
    /// (`<img src=x …>` being the hostile name the tests use).
    pub async fn shows_literally(&self, text: &str) {
        self.wait_for_text(text).await;
        let injected = self
            .eval("return document.querySelectorAll('img[src=\"x\"], img[src$=\"/x\"]').length;")
            .await;
        assert_eq!(
            injected,
            0,
            "a hostile name became markup on {}",
            self.current_url().await
        );
    }

    /// Saves the viewport as `<dir>/<name>.png`.
    pub async fn shot(&self, dir: &Path, name: &str) {
        self.screenshot(&dir.join(format!("{name}.png")))
            .await
            .unwrap();
    }

    /// Saves the page at laptop size (`<name>.png`) and phone size (`<name>-phone.png`), and
    /// fails when anything on the phone is wider than its window.
    pub async fn shots(&self, dir: &Path, name: &str) {
        self.shot(dir, name).await;
        self.client()
            .set_window_size(PHONE.0, PHONE.1)
            .await
            .unwrap();
        // Layout settles on the next frame.
        self.eval("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(1))));")
            .await;
        let overflow = self
            .eval(
                "const d = document.documentElement; \
                 const wide = [...document.querySelectorAll('body *')] \
                   .filter(e => e.getBoundingClientRect().right > d.clientWidth + 1 \
                     && getComputedStyle(e).position !== 'fixed' && !e.closest('dialog:not([open])') \
                     && e.offsetParent !== null) \
                   .slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id); \
                 return {scroll: d.scrollWidth, client: d.clientWidth, wide};",
            )
            .await;
        self.shot(dir, &format!("{name}-phone")).await;
        self.client()
            .set_window_size(LAPTOP.0, LAPTOP.1)
            .await
            .unwrap();
        let scroll = overflow["scroll"].as_i64().unwrap_or_default();
        let client = overflow["client"].as_i64().unwrap_or_default();
        assert!(
            scroll <= client,
            "{name}: the page is wider than a phone ({scroll} > {client}px): {}",
            overflow["wide"]
        );
    }

    /// Clicks `button` (a CSS selector) whose script calls the API, and waits until the call is
    /// over (the button is no longer busy). A call Chromium dropped because the network changed
    /// shows "cannot be reached" in `scope`: the button is pressed again (from the page's
    /// script, in one step with the check, since the list may be redrawn at any moment and the
    /// dropped call may have done its work all the same). Returns how many presses it took.
    pub async fn press(&self, button: &str, scope: &str) -> usize {
        let over = format!(
            "const b = document.querySelector({button:?}); \
             return !b || !b.hasAttribute('aria-busy');"
        );
        let dropped = format!(
            "const f = document.querySelector({scope:?}); \
             return !!f && f.textContent.includes('cannot be reached');"
        );
        let again = format!(
            "const b = document.querySelector({button:?}); \
             if (!b || b.hidden || b.disabled) return false; b.click(); return true;"
        );
        // Old toasts would tell of an earlier attempt.
        let clear =
            "const t = document.getElementById('toasts'); if (t) t.replaceChildren(); return 1;";
        for attempt in 0..ATTEMPTS {
            self.eval(clear).await;
            if attempt == 0 {
                self.click(button).await;
            } else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if self.eval(&again).await != true {
                    return attempt;
                }
            }
            self.wait_for_js(&format!("the end of the call of {button}"), &over)
                .await;
            if self.eval(&dropped).await != true {
                return attempt + 1;
            }
            eprintln!("[{}] the call of {button} was dropped; again", self.name);
        }
        panic!("{button}: the network kept changing");
    }

    /// Submits the form `form` (a CSS selector) whose script calls the API, and waits until the
    /// call is over; submitted again when Chromium dropped it (the form then says "cannot be
    /// reached").
    pub async fn submit(&self, form: &str) {
        let button = format!("{form} button[type=submit]");
        let over = format!(
            "const b = document.querySelector({button:?}); \
             return !b || !b.hasAttribute('aria-busy');"
        );
        let dropped = format!(
            "const f = document.querySelector({form:?}); \
             return !!f && f.textContent.includes('cannot be reached');"
        );
        for _ in 0..ATTEMPTS {
            self.click(&button).await;
            self.wait_for_js(&format!("the end of the call of {form}"), &over)
                .await;
            if self.eval(&dropped).await != true {
                return;
            }
            eprintln!("[{}] the call of {form} was dropped; again", self.name);
        }
        panic!("{form}: the network kept changing");
    }

    /// Types `text` into the filter or search field `css` whose script reloads a list from the
    /// API, and waits until `done` (a script) returns true. A reload Chromium dropped because
    /// the network changed shows "cannot be reached" in `scope`: the field tells the page again.
    pub async fn filter(&self, css: &str, text: &str, scope: &str, done: &str) {
        self.fill(css, text).await;
        self.relisted(css, scope, done).await;
    }

    /// [`Browser::filter`] for controls typing does not fill portably (`select`,
    /// `datetime-local`): sets the value from the page's script and tells the page.
    pub async fn choose(&self, css: &str, value: &str, scope: &str, done: &str) {
        self.eval(&format!(
            "const e = document.querySelector({css:?}); e.value = {value:?}; \
             e.dispatchEvent(new Event('input', {{bubbles: true}})); \
             e.dispatchEvent(new Event('change', {{bubbles: true}})); return 1;"
        ))
        .await;
        self.relisted(css, scope, done).await;
    }

    async fn relisted(&self, css: &str, scope: &str, done: &str) {
        let dropped = format!(
            "const f = document.querySelector({scope:?}); \
             return !!f && f.textContent.includes('cannot be reached');"
        );
        let retell = format!(
            "document.querySelector({css:?}).dispatchEvent(new Event('input', {{bubbles: true}})); \
             return 1;"
        );
        let deadline = Instant::now() + WAIT_TIMEOUT;
        let mut retold = 0;
        loop {
            if self.eval(done).await == true {
                return;
            }
            if retold < ATTEMPTS && self.eval(&dropped).await == true {
                retold += 1;
                eprintln!(
                    "[{}] the list's reload after {css} was dropped; again",
                    self.name
                );
                self.eval(&retell).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "[{}] after {css}: the page never showed what was expected:\n{}",
                self.name,
                self.page_text().await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls `script` until it returns true, at most `within` (longer than [`WAIT_TIMEOUT`]:
    /// containers start on a loaded machine).
    pub async fn wait_long(&self, what: &str, script: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.eval(script).await == true {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "[{}] no {what} within {within:?}:\n{}",
                self.name,
                self.page_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs an image pull whose progress the page streams into a modal, to its end (`done` or
    /// `error`). A stream Chromium dropped because the network changed (the modal then says the
    /// gateway cannot be reached or the connection broke) goes on on the engine, so pulling
    /// again is harmless: the modal is closed, `pull.images` taken away again (so that the next
    /// pull shows every layer rather than "up to date") and the pull started again, up to
    /// [`ATTEMPTS`] times. The caller reads the modal's final state.
    pub async fn streamed_pull(&self, pull: &StreamedPull<'_>) {
        let modal = pull.modal;
        for attempt in 1..=ATTEMPTS {
            self.eval(pull.reset).await;
            self.click(pull.start).await;
            self.wait_long(
                &format!("end of the pull started by {}", pull.start),
                &format!(
                    "const s = document.getElementById('{modal}-modal').dataset.state; \
                     return s === 'done' || s === 'error';"
                ),
                pull.within,
            )
            .await;
            let dropped = self
                .eval(&format!(
                    "const e = document.getElementById('{modal}-error').textContent; \
                     return e.includes('cannot be reached') || e.includes('connection to the gateway broke');"
                ))
                .await;
            if dropped != true || attempt == ATTEMPTS {
                break;
            }
            eprintln!(
                "[{}] the stream of the pull started by {} was dropped; again",
                self.name, pull.start
            );
            self.click(&format!("#{modal}-close")).await;
            for image in pull.images {
                let _ = std::process::Command::new("docker")
                    .args(["rmi", image])
                    .output();
            }
        }
    }
}

/// An image pull streamed into a modal, for [`Browser::streamed_pull`].
pub struct StreamedPull<'a> {
    /// What starts the pull (CSS).
    pub start: &'a str,
    /// The ids' prefix of the modal: `<modal>-modal` (whose `data-state` ends `done` or
    /// `error`), `<modal>-error` and its close button `<modal>-close`.
    pub modal: &'a str,
    /// The images the pull brings, removed before it starts again.
    pub images: &'a [String],
    /// A script run before each start (it clears what the test records of the modal).
    pub reset: &'a str,
    /// How long one pull may take.
    pub within: Duration,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The fantoccini client would close the session on its own task; the kill below makes
        // that moot, so it is dropped first.
        drop(self.client.take());
        self.kill();
        if self.keep_dir.load(Ordering::Relaxed) {
            // Keep the screenshots and the chromedriver log, not the profile.
            let _ = std::fs::remove_dir_all(self.dir.path().join("profile"));
            let _ = std::fs::remove_dir_all(self.dir.path().join("home"));
            self.dir.disable_cleanup(true);
        }
    }
}

/// Runs `test`; if it panics, saves a screenshot of each browser and panics again with the
/// original message followed by the screenshots' paths.
pub async fn screenshot_on_failure<T>(browsers: &[&Browser], test: impl Future<Output = T>) -> T {
    match AssertUnwindSafe(test).catch_unwind().await {
        Ok(value) => value,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(non-text panic)".into());
            let mut lines = Vec::new();
            for browser in browsers {
                lines.push(browser.failure_screenshot().await);
            }
            panic!("{message}\n{}", lines.join("\n"));
        }
    }
}

/// chromedriver's (non-W3C) `POST /session/{id}/se/log` for the `browser` log, which fantoccini
/// has no method for.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &Url, session: Option<&str>) -> Result<Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

/// chromedriver's `POST /session/{id}/goog/cdp/execute`: one Chrome DevTools command.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base: &Url, session: Option<&str>) -> Result<Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "cmd": self.cmd, "params": self.params }).to_string()),
        )
    }
}

/// `$CHROMEDRIVER`, or `chromedriver` on the PATH (Debian's `chromium-driver`).
fn chromedriver_bin() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into())
}

/// `$CHROMIUM`, or Debian's `/usr/bin/chromium`.
fn chromium_bin() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_driver(dir: &Path, port: u16) -> std::io::Result<Child> {
    // Chromium keeps its crash database and caches under $HOME/XDG directories, outside the
    // profile: point them into the temporary directory so that nothing is left behind.
    let home: PathBuf = dir.join("home");
    std::fs::create_dir_all(&home)?;
    Command::new(chromedriver_bin())
        .arg(format!("--port={port}"))
        .arg(format!(
            "--log-path={}",
            dir.join("chromedriver.log").display()
        ))
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        // Its own process group: Chromium inherits it, and one signal to the group ends both.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn driver_missing(e: &std::io::Error) -> String {
    format!(
        "cannot run {}: {e} (Debian: apt-get install chromium chromium-driver)",
        chromedriver_bin()
    )
}

/// Runs the node unit tests of the pages' pure modules in `admin/assets/test/<file>` (node's
/// built-in runner, no packages needed) and checks that all `expected` of them ran and passed:
/// a test file that silently stopped registering its tests would otherwise pass.
pub fn run_node_tests(file: &str, expected: usize) {
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../admin/assets");
    let out = std::process::Command::new("node")
        .args(["--test", &format!("test/{file}")])
        .current_dir(&assets)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); Debian: apt-get install nodejs"));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test {file} failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!("# pass {expected}\n")),
        "{file}: expected {expected} passing tests:\n{report}"
    );
}
