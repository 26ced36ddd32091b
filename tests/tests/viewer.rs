//! The desktop viewer page `/droplet/{id}` through the real binary, with a plain HTTP client:
//! who may open it, that it carries no inline script or style (the Content Security Policy
//! forbids both, and the page must not need them), that its ES modules are served as JavaScript
//! from this build's versioned asset path with long cache headers, and that the embedded
//! guacamole-common-js is byte for byte the one npm installed from the lockfile.
//! The same page in a real browser is tested in viewer_browser.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use flowcase_admin::store::DropletType;
use flowcase_e2e::browser::run_node_tests;
use flowcase_e2e::desktops::{DesktopInstance, desktop_instance, installed_guacamole_common_js};
use flowcase_e2e::instances::{add_user, echo_instance, login};
use flowcase_e2e::{Gateway, GatewayDir};
use reqwest::Client;
use serde_json::Value;

const PASSWORD: &str = "a long enough passphrase";
/// A name with characters that must be escaped in HTML text and attributes.
const DROPLET_NAME: &str = "Dev <desk> & \"co\"";

struct Env {
    dir: GatewayDir,
    gw: Gateway,
    desktop: DesktopInstance,
}

impl Env {
    /// A gateway, users alice (owner of a VNC instance) and bob.
    async fn start() -> Env {
        let dir = GatewayDir::new();
        let gw = Gateway::start(&dir).await;
        for user in ["alice", "bob"] {
            add_user(&dir, user, PASSWORD);
        }
        let desktop = desktop_instance(
            &dir,
            "alice",
            "desk1",
            DROPLET_NAME,
            DropletType::Vnc,
            "127.0.0.1:5901",
        )
        .await;
        Env { dir, gw, desktop }
    }

    fn client(&self) -> Client {
        self.gw
            .client(&self.dir.data_dir(), &["localhost", "app1.apps.localhost"])
    }

    /// Signs `user` in on `client`; returns the session's CSRF token.
    async fn login(&self, client: &Client, user: &str) -> String {
        flowcase_e2e::instances::login(&self.gw, client, user, PASSWORD).await
    }

    fn url(&self, path: &str) -> String {
        self.gw.url("localhost", path)
    }

    fn viewer(&self) -> String {
        self.url(&format!("/droplet/{}", self.desktop.id))
    }
}

/// One start tag of an HTML document: its name and attributes (names lower-cased, values
/// with the character references of our templates decoded), and the raw text up to the next
/// tag (a script's body, say).
#[derive(Debug)]
struct Tag {
    name: String,
    attrs: BTreeMap<String, String>,
    text_after: String,
}

/// A small HTML tokenizer, enough for our templates: start tags with quoted or bare
/// attributes, end tags, comments and the doctype. It fails the test on anything it cannot
/// read rather than skipping it, so an inline script cannot hide from the checks below.
fn start_tags(html: &str) -> Vec<Tag> {
    let mut tags: Vec<Tag> = Vec::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        if let Some(tag) = tags.last_mut() {
            tag.text_after.push_str(&rest[..open]);
        }
        rest = &rest[open..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            let end = comment.find("-->").expect("an unterminated comment");
            rest = &comment[end + 3..];
            continue;
        }
        if rest.starts_with("<!") || rest.starts_with("</") {
            let end = rest.find('>').expect("an unterminated tag");
            rest = &rest[end + 1..];
            continue;
        }
        let mut chars = rest[1..].char_indices().peekable();
        let mut name = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c.is_ascii_alphanumeric() {
                name.push(c.to_ascii_lowercase());
                chars.next();
            } else {
                break;
            }
        }
        assert!(
            !name.is_empty(),
            "a bare '<' in the page: {}",
            &rest[..40.min(rest.len())]
        );
        let mut attrs = BTreeMap::new();
        let end = loop {
            let Some((i, c)) = chars.next() else {
                panic!("an unterminated <{name}> tag");
            };
            if c.is_whitespace() || c == '/' {
                continue;
            }
            if c == '>' {
                break i + 1;
            }
            let mut attr = String::from(c.to_ascii_lowercase());
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() || c == '=' || c == '>' || c == '/' {
                    break;
                }
                attr.push(c.to_ascii_lowercase());
                chars.next();
            }
            while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
                chars.next();
            }
            let mut value = String::new();
            if chars.peek().is_some_and(|&(_, c)| c == '=') {
                chars.next();
                while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
                    chars.next();
                }
                match chars.peek().map(|&(_, c)| c) {
                    Some(q @ ('"' | '\'')) => {
                        chars.next();
                        for (_, c) in chars.by_ref() {
                            if c == q {
                                break;
                            }
                            value.push(c);
                        }
                    }
                    _ => {
                        while let Some(&(_, c)) = chars.peek() {
                            if c.is_whitespace() || c == '>' {
                                break;
                            }
                            value.push(c);
                            chars.next();
                        }
                    }
                }
            }
            attrs.insert(attr, decode_entities(&value));
        };
        rest = &rest[1 + end..];
        tags.push(Tag {
            name,
            attrs,
            text_after: String::new(),
        });
    }
    tags
}

/// Decodes the character references an HTML escaper produces: named (`&lt;` …) and numeric
/// (`&#60;`, `&#x3c;`). Anything else is left as is.
fn decode_entities(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').and_then(|semi| {
            let name = &rest[1..semi];
            let c = match name {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let number = name.strip_prefix('#')?;
                    let code = match number.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => number.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, semi + 1))
        });
        match decoded {
            Some((c, used)) => {
                out.push(c);
                rest = &rest[used..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The relative module imports of an ES module (`from "./x.js"` and `import "./x.js"`).
fn relative_imports(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for quote in ['"', '\''] {
        for marker in [format!("from {quote}./"), format!("import {quote}./")] {
            let mut rest = source;
            while let Some(at) = rest.find(&marker) {
                let after = &rest[at + marker.len()..];
                let end = after.find(quote).unwrap();
                found.push(after[..end].to_owned());
                rest = &after[end..];
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[tokio::test]
async fn the_viewer_needs_a_login_and_only_the_owner_or_an_admin_gets_it() {
    let env = Env::start().await;

    // Anonymous: off to the login page, which brings the browser back here.
    let anonymous = env.client();
    let resp = anonymous.get(env.viewer()).send().await.unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    let location = header(&resp, "location");
    assert_eq!(
        location,
        format!("/?return=%2Fdroplet%2F{}", env.desktop.id),
        "the login page, returning to the viewer"
    );

    // Bob: a 403 page, not alice's desktop.
    let bob = env.client();
    env.login(&bob, "bob").await;
    let resp = bob.get(env.viewer()).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(header(&resp, "content-type").starts_with("text/html"));
    let page = resp.text().await.unwrap();
    assert!(page.contains("belongs to another user"), "{page}");
    assert!(
        !page.contains("data-csrf-token"),
        "no viewer for bob: {page}"
    );

    // Unknown and malformed ids: the 404 page.
    for path in ["/droplet/999999", "/droplet/not-a-number", "/droplet/desk1"] {
        let resp = bob.get(env.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert!(
            header(&resp, "content-type").starts_with("text/html"),
            "{path}"
        );
    }

    // The administrator (edit_instances over alice's tenant) may open it.
    let (admin_name, admin_password) = flowcase_e2e::read_credentials(&env.dir.data_dir());
    let admin = env.client();
    login(&env.gw, &admin, &admin_name, &admin_password).await;
    let resp = admin.get(env.viewer()).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the administrator opens alice's viewer");

    // Alice: her viewer.
    let alice = env.client();
    env.login(&alice, "alice").await;
    let resp = alice.get(env.viewer()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "cache-control"),
        "no-store",
        "the page holds a CSRF token"
    );
}

#[tokio::test]
async fn a_web_app_instance_has_no_viewer_and_is_sent_to_its_own_host() {
    let env = Env::start().await;
    let app = echo_instance(&env.dir, "alice", "app1").await;
    let alice = env.client();
    env.login(&alice, "alice").await;
    let resp = alice
        .get(env.url(&format!("/droplet/{}", app.id)))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    assert_eq!(header(&resp, "location"), env.gw.url(&app.host, "/"));
}

#[tokio::test]
async fn the_viewer_page_has_no_inline_code_and_hands_its_settings_to_the_module() {
    let env = Env::start().await;
    let alice = env.client();
    let csrf = env.login(&alice, "alice").await;
    let resp = alice.get(env.viewer()).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // The policy forbids inline script and style, and lets the page reach the tunnel.
    let csp = header(&resp, "content-security-policy");
    let directive = |name: &str| -> String {
        csp.split(';')
            .map(str::trim)
            .find(|d| d.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {csp}"))
            .to_owned()
    };
    for name in ["script-src", "style-src"] {
        let d = directive(name);
        assert!(d.contains("'self'"), "{d}");
        for loose in ["'unsafe-inline'", "'unsafe-eval'", "*", "data:", "blob:"] {
            assert!(
                !d.split(' ').any(|s| s == loose),
                "{name} allows {loose}: {csp}"
            );
        }
    }
    assert!(directive("connect-src").contains("'self'"), "{csp}");
    assert!(directive("default-src").contains("'self'"), "{csp}");

    let html = resp.text().await.unwrap();
    let tags = start_tags(&html);
    let scripts: Vec<&Tag> = tags.iter().filter(|t| t.name == "script").collect();
    assert_eq!(scripts.len(), 1, "one entry module: {scripts:?}");
    let script = scripts[0];
    assert_eq!(script.attrs.get("type").map(String::as_str), Some("module"));
    assert!(
        script.text_after.trim().is_empty(),
        "no inline code in the script element: {:?}",
        script.text_after
    );
    let script_src = script.attrs.get("src").expect("an external module");
    for tag in &tags {
        assert_ne!(tag.name, "style", "no style element");
        for attr in tag.attrs.keys() {
            assert_ne!(attr, "style", "no inline style on <{}>", tag.name);
            assert!(
                !attr.starts_with("on"),
                "no inline event handler {attr} on <{}>",
                tag.name
            );
        }
        for (attr, value) in &tag.attrs {
            assert!(
                !value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("javascript:"),
                "no javascript: URL in {attr} of <{}>",
                tag.name
            );
        }
    }

    // The settings the module reads, from <body>'s data attributes.
    let body = tags.iter().find(|t| t.name == "body").expect("a body");
    let data = |name: &str| {
        body.attrs
            .get(&format!("data-{name}"))
            .unwrap_or_else(|| panic!("no data-{name} on body: {:?}", body.attrs))
            .as_str()
    };
    assert_eq!(data("instance-id"), env.desktop.id.to_string());
    assert_eq!(
        data("droplet-name"),
        DROPLET_NAME,
        "escaped and decoded intact"
    );
    assert_eq!(data("csrf-token"), csrf, "the session's CSRF token");
    assert_eq!(data("csrf-header"), "x-csrf-token");
    assert_eq!(data("can-copy"), "true");
    assert_eq!(data("can-paste"), "true");
    assert_eq!(
        data("login-url"),
        format!("/?return=%2Fdroplet%2F{}", env.desktop.id)
    );
    assert!(
        !html.contains("<desk>"),
        "the droplet name is escaped in the HTML"
    );

    // The style sheet is external, from the same versioned path.
    let sheet = tags
        .iter()
        .find(|t| t.name == "link" && t.attrs.get("rel").map(String::as_str) == Some("stylesheet"))
        .expect("a style sheet");
    let href = sheet.attrs.get("href").unwrap();
    assert!(href.ends_with("/css/viewer.css"), "{href}");
    let resp = alice.get(env.url(href)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/css; charset=utf-8");
    assert!(script_src.starts_with("/assets/"), "{script_src}");
}

#[tokio::test]
async fn the_modules_are_served_as_javascript_with_long_caching_and_guacamole_is_the_npm_build() {
    let env = Env::start().await;
    let alice = env.client();
    env.login(&alice, "alice").await;
    let html = alice
        .get(env.viewer())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let tags = start_tags(&html);
    let src = tags
        .iter()
        .find(|t| t.name == "script")
        .and_then(|t| t.attrs.get("src"))
        .expect("the entry module")
        .clone();
    let (dir, entry) = src.rsplit_once('/').unwrap();
    assert_eq!(entry, "viewer.js");
    let version = dir
        .strip_prefix("/assets/")
        .and_then(|d| d.strip_suffix("/js"))
        .expect("/assets/<version>/js/viewer.js");
    assert!(
        version.len() >= 8 && version.bytes().all(|b| b.is_ascii_hexdigit()),
        "a content hash as the version: {version}"
    );

    // Every module the entry imports, transitively, is served as JavaScript.
    let anonymous = env.client();
    let mut pending = vec![entry.to_owned()];
    let mut seen = Vec::new();
    while let Some(name) = pending.pop() {
        if seen.contains(&name) {
            continue;
        }
        let resp = anonymous
            .get(env.url(&format!("{dir}/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        assert_eq!(
            header(&resp, "content-type"),
            "text/javascript; charset=utf-8",
            "{name}"
        );
        let cache = header(&resp, "cache-control");
        assert!(
            cache.contains("immutable") && cache.contains("max-age=31536000"),
            "{name}: {cache}"
        );
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff");
        let source = resp.text().await.unwrap();
        pending.extend(relative_imports(&source));
        seen.push(name);
    }
    for module in [
        "viewer.js",
        "status.js",
        "backoff.js",
        "token.js",
        "chrome.js",
        "guacamole-common.min.js",
    ] {
        assert!(
            seen.iter().any(|s| s == module),
            "{module} not reached: {seen:?}"
        );
    }

    // guacamole-common-js is the file npm installed from the lockfile, unchanged.
    let served = anonymous
        .get(env.url(&format!("{dir}/guacamole-common.min.js")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let installed = std::fs::read(installed_guacamole_common_js()).unwrap();
    assert!(
        served[..] == installed[..],
        "the embedded copy differs from node_modules"
    );
    let text = String::from_utf8_lossy(&served);
    assert!(
        text.contains("API_VERSION=\"1.5.0\""),
        "guacamole-common-js 1.5.0"
    );
    assert!(
        text.trim_end().ends_with("export default Guacamole;"),
        "its ESM build"
    );
    let lock: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../admin/assets/package-lock.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        lock["packages"]["node_modules/guacamole-common-js"]["version"], "1.5.0",
        "pinned in the lockfile"
    );

    // Another build's version, or a file that is not there: 404, never this build's bytes.
    for path in [
        "/assets/0000000000000000/js/viewer.js".to_owned(),
        format!("{dir}/nope.js"),
        format!("{dir}/../../../Cargo.toml"),
    ] {
        let resp = anonymous.get(env.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
}

/// The viewer's pure modules (status words, retry rules, backoff, token request) have unit
/// tests of their own; node runs them here so that the suite covers them.
#[test]
fn the_viewer_modules_pass_their_unit_tests_under_node() {
    run_node_tests("viewer-modules.test.js", 6);
}
