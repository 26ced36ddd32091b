//! Signing in through OpenID Connect, end to end: the real gateway binary against a real
//! provider (npm `oidc-provider`, started by the kit): account creation with mapped groups,
//! groups re-applied at the next login, refresh keeping the session alive and the provider
//! ending it, RP-initiated logout, and the attacks (tampered state, replayed code, wrong nonce,
//! wrong issuer, wrong audience).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowcase_e2e::instances::login_response;
use flowcase_e2e::oidc_provider::{
    OidcClient, OidcProvider, OidcUser, ProviderConfig, headless_login, headless_logout,
};
use flowcase_e2e::{Gateway, GatewayDir, free_port};
use reqwest::{Client, Url};
use serde_json::Value;

const CLIENT_ID: &str = "flowcase";
const CLIENT_SECRET: &str = "flowcase-oidc-test-secret";

struct Env {
    dir: GatewayDir,
    gw: Gateway,
    provider: OidcProvider,
    provider_port: u16,
}

fn provider_config(dir: &GatewayDir, alice_groups: &[&str], access_ttl: u64) -> ProviderConfig {
    let origin = format!("https://localhost:{}", dir.https_port);
    let callback = format!("{origin}/auth/oidc/corp/callback");
    ProviderConfig::new()
        .client(
            OidcClient::new(CLIENT_ID, CLIENT_SECRET, &callback)
                .post_logout_redirect_uri(&format!("{origin}/")),
        )
        .client(OidcClient::new("other-app", "other-secret", &callback))
        .user(
            OidcUser::new("alice", "alice@corp.example", "Alice Liddell", alice_groups)
                .preferred_username("alice"),
        )
        .user(OidcUser::new("bob", "bob@corp.example", "Bob", &["staff"]).preferred_username("bob"))
        .access_token_ttl(access_ttl)
}

impl Env {
    async fn start(alice_groups: &[&str], access_ttl: u64) -> Env {
        let dir = GatewayDir::new();
        let provider_port = free_port();
        let provider = OidcProvider::start_on_port(
            &provider_config(&dir, alice_groups, access_ttl),
            provider_port,
        )
        .await;
        let config = dir.dir.path().join("flowcase.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[[auth.oidc]]
id = "corp"
display_name = "Corp SSO"
issuer_url = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
scopes = ["openid", "email", "profile", "groups"]
groups_claim = "groups"
group_mapping = {{ "corp-admins" = "Admin" }}
default_group = "User"
"#,
                issuer = provider.issuer
            ),
        )
        .unwrap();
        let mut dir = dir;
        dir.set("FLOWCASE_CONFIG", config.to_str().unwrap());
        let gw = Gateway::start(&dir).await;
        Env {
            dir,
            gw,
            provider,
            provider_port,
        }
    }

    fn browser(&self) -> Client {
        self.gw.client(&self.dir.data_dir(), &["localhost"])
    }

    fn url(&self, path: &str) -> String {
        self.gw.url("localhost", path)
    }

    /// Starts a login at the gateway: the provider URL it sends the browser to, and the sealed
    /// login-state cookie it set.
    async fn begin(&self, browser: &Client) -> (String, String) {
        let resp = browser
            .get(self.url("/auth/oidc/corp/login?return=%2Fdroplet%2F1"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            303,
            "{}",
            resp.text().await.unwrap_or_default()
        );
        let cookie = resp.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        assert!(cookie.starts_with("__Host-flowcase_oidc="), "{cookie}");
        (
            resp.headers()["location"].to_str().unwrap().to_owned(),
            cookie,
        )
    }

    /// The whole browser journey; returns the callback response.
    async fn sign_in(&self, browser: &Client, login: &str) -> reqwest::Response {
        let (authorize, _) = self.begin(browser).await;
        let callback = headless_login(browser, &authorize, login).await;
        browser.get(callback).send().await.unwrap()
    }

    async fn me(&self, browser: &Client) -> (u16, Value) {
        let resp = browser
            .get(self.url("/api/v1/session"))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut url = Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.to_string()
}

async fn assert_refused(resp: reqwest::Response, what: &str, reason: &str) {
    let status = resp.status();
    let set_cookie: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 401, "{what}: {body}");
    assert!(
        body.contains(reason),
        "{what}: expected `{reason}` in {body}"
    );
    assert!(
        !set_cookie
            .iter()
            .any(|c| c.starts_with("__Host-flowcase_session=") && !c.contains("Max-Age=0")),
        "{what}: no session may be issued"
    );
}

#[tokio::test]
async fn first_login_creates_the_user_with_mapped_groups_and_the_next_login_updates_them() {
    let mut env = Env::start(&["corp-admins", "unknown-group"], 600).await;
    let login_page = env
        .browser()
        .get(env.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        login_page.contains("Sign in with Corp SSO"),
        "one button per provider"
    );

    let browser = env.browser();
    let resp = env.sign_in(&browser, "alice").await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"],
        "/droplet/1",
        "back to where the login started"
    );
    let (status, me) = env.me(&browser).await;
    assert_eq!(status, 200);
    assert_eq!(me["user"]["username"], "alice");
    assert_eq!(me["user"]["email"], "alice@corp.example");
    assert_eq!(me["user"]["display_name"], "Alice Liddell");
    assert_eq!(
        me["user"]["permissions"]["admin_panel"], true,
        "corp-admins maps to Admin"
    );
    let list = String::from_utf8(env.dir.cli(&["user", "list"]).stdout).unwrap();
    let row = list
        .lines()
        .find(|l| l.contains(" alice "))
        .unwrap()
        .to_owned();
    assert!(row.contains("Admin") && row.contains("User"), "{row}");
    let first_id = me["user"]["id"].clone();

    // The provider now says alice is only staff: the next login takes Admin away. The restarted
    // provider also has new signing keys, which the gateway must fetch.
    env.provider.stop();
    env.provider = OidcProvider::start_on_port(
        &provider_config(&env.dir, &["staff"], 600),
        env.provider_port,
    )
    .await;
    let again = env.browser();
    assert_eq!(env.sign_in(&again, "alice").await.status(), 303);
    let (_, me) = env.me(&again).await;
    assert_eq!(
        me["user"]["id"], first_id,
        "the same account signs in again"
    );
    assert_eq!(
        me["user"]["permissions"]["admin_panel"], false,
        "groups are re-applied at login"
    );
    let list = String::from_utf8(env.dir.cli(&["user", "list"]).stdout).unwrap();
    assert_eq!(
        list.lines().filter(|l| l.contains(" alice ")).count(),
        1,
        "the same account, not a second one"
    );

    // The external account has no password: password login is impossible.
    let pw = login_response(&env.gw, &env.browser(), "alice", "").await;
    assert_eq!(pw.status(), 401);
}

#[tokio::test]
async fn tampered_state_replayed_code_wrong_nonce_issuer_and_audience_are_refused() {
    let env = Env::start(&["staff"], 600).await;

    // Tampered state.
    let browser = env.browser();
    let (authorize, _) = env.begin(&browser).await;
    let callback = headless_login(&browser, &authorize, "bob").await;
    let tampered = with_param(callback.as_str(), "state", "forged-state");
    assert_refused(
        browser.get(tampered).send().await.unwrap(),
        "tampered state",
        "state does not match",
    )
    .await;

    // No login-state cookie at all (a callback link sent to a victim).
    let victim = env.browser();
    let (authorize, _) = env.begin(&env.browser()).await;
    let callback = headless_login(&env.browser(), &authorize, "bob").await;
    assert_refused(
        victim.get(callback).send().await.unwrap(),
        "callback without the browser's state",
        "started elsewhere",
    )
    .await;

    // Replayed code: a successful callback, then the same code again with the same state cookie.
    let browser = env.browser();
    let (authorize, state_cookie) = env.begin(&browser).await;
    let callback = headless_login(&browser, &authorize, "bob").await;
    assert_eq!(
        browser.get(callback.clone()).send().await.unwrap().status(),
        303
    );
    let replay = env
        .browser()
        .get(callback)
        .header("cookie", &state_cookie)
        .send()
        .await
        .unwrap();
    assert_refused(replay, "replayed code", "refused the sign-in").await;

    // Wrong nonce: the code is bound to a nonce the gateway did not choose.
    let browser = env.browser();
    let (authorize, _) = env.begin(&browser).await;
    let callback = headless_login(
        &browser,
        &with_param(&authorize, "nonce", "attacker-nonce"),
        "bob",
    )
    .await;
    assert_refused(
        browser.get(callback).send().await.unwrap(),
        "wrong nonce",
        "could not be verified",
    )
    .await;

    // Wrong issuer named in the answer (mix-up).
    let browser = env.browser();
    let (authorize, _) = env.begin(&browser).await;
    let callback = headless_login(&browser, &authorize, "bob").await;
    let mixed_up = with_param(callback.as_str(), "iss", "https://evil.example");
    assert_refused(
        browser.get(mixed_up).send().await.unwrap(),
        "wrong issuer",
        "another identity provider",
    )
    .await;

    // Wrong audience: a code issued to another client of the provider.
    let browser = env.browser();
    let (authorize, _) = env.begin(&browser).await;
    let callback = headless_login(
        &browser,
        &with_param(&authorize, "client_id", "other-app"),
        "bob",
    )
    .await;
    assert_refused(
        browser.get(callback).send().await.unwrap(),
        "wrong audience",
        "refused the sign-in",
    )
    .await;

    // After all that, a clean login still works.
    let browser = env.browser();
    assert_eq!(env.sign_in(&browser, "bob").await.status(), 303);
    assert_eq!(env.me(&browser).await.0, 200);
}

#[tokio::test]
async fn refresh_keeps_the_session_and_the_provider_ending_it_ends_ours_and_logout_goes_through_the_provider()
 {
    let env = Env::start(&["staff"], 2).await;
    let browser = env.browser();
    assert_eq!(env.sign_in(&browser, "alice").await.status(), 303);

    // The access token expires after 2 s; the session goes on through a refresh.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(env.me(&browser).await.0, 200, "refreshed, still signed in");

    // The user signs out at the provider: the next refresh is refused and our session ends.
    let end_session = format!(
        "{}?client_id={CLIENT_ID}&post_logout_redirect_uri={}",
        env.provider.end_session_endpoint(),
        url_escape(&format!("{}/", env.gw.origin()))
    );
    headless_logout(&browser, &end_session).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        env.me(&browser).await.0,
        401,
        "the provider refused the refresh"
    );

    // RP-initiated logout: our logout sends the browser to the provider's end-session endpoint.
    let browser = env.browser();
    assert_eq!(env.sign_in(&browser, "bob").await.status(), 303);
    let (_, me) = env.me(&browser).await;
    let csrf = me["csrf_token"].as_str().unwrap().to_owned();
    // Browsers check form-action against the redirect a sign-out form follows: the provider's
    // origin must be allowed, or the logout form seems to do nothing.
    let dashboard = browser.get(env.url("/dashboard")).send().await.unwrap();
    let csp = dashboard.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let form_action = csp
        .split(';')
        .find(|d| d.trim().starts_with("form-action"))
        .unwrap();
    assert!(form_action.contains(&env.provider.issuer), "{csp}");
    let resp = browser
        .post(env.url("/logout"))
        .header("origin", env.gw.origin())
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&env.provider.end_session_endpoint()),
        "{location}"
    );
    assert!(location.contains("id_token_hint="), "{location}");
    assert_eq!(env.me(&browser).await.0, 401, "our session ended at once");
    let back = headless_logout(&browser, &location).await;
    assert_eq!(back.as_str(), format!("{}/", env.gw.origin()));
}

fn url_escape(s: &str) -> String {
    Url::parse_with_params("http://x/", &[("v", s)])
        .unwrap()
        .query()
        .unwrap()
        .trim_start_matches("v=")
        .to_owned()
}
