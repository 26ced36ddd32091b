//! A real OpenID Connect provider for the end-to-end tests: the certified npm package
//! `oidc-provider` (tests/peers/oidc/provider.mjs), on plain HTTP on loopback, issuer
//! `http://127.0.0.1:<port>`, with a fresh signing key and in-memory state on every start.
//!
//! ```ignore
//! let provider = OidcProvider::start(
//!     &ProviderConfig::new()
//!         .client(OidcClient::new("flowcase", "secret", "https://app.localhost:8443/callback")
//!             .post_logout_redirect_uri("https://app.localhost:8443/"))
//!         .user(OidcUser::new("alice", "alice@example.test", "Alice", &["admins"])),
//! ).await;
//! let browser = browser_client();
//! let redirect = headless_login(&browser, &authorize_url, "alice").await; // ...?code=&state=&iss=
//! ```
//!
//! What the provider does (the contract tests/tests/oidc_peer.rs checks):
//! - discovery at `/.well-known/openid-configuration`; endpoints `/auth`, `/token`, `/me`,
//!   `/jwks`, `/session/end`, `/token/revocation`, `/token/introspection`;
//! - authorization code flow only with PKCE S256 (a request without `code_challenge` is refused
//!   with `invalid_request`); the redirect to the client carries `code`, `state` and `iss`;
//! - scopes `openid email profile groups offline_access`; the ID token carries the claims of the
//!   granted scopes (`email`, `email_verified`, `name`, `preferred_username`, `groups`) and the
//!   `nonce`; signed RS256 with a key published at `/jwks`;
//! - no consent screen (every requested scope is granted) unless `prompt=consent`;
//! - a refresh token with every code exchange for clients with the `refresh_token` grant (the
//!   default), rotated on every use by default (reusing a rotated one fails with `invalid_grant`
//!   AND revokes the whole grant). Unless `offline_access` was granted (which oidc-provider only
//!   keeps with `prompt=consent`), refresh and access tokens are bound to the provider session:
//!   a logout at the provider or the session's expiry makes them fail with `invalid_grant`;
//! - at the token endpoint a client may authenticate with `client_secret_basic` or
//!   `client_secret_post`, both accepted whichever one it registered; with Basic, client id and
//!   secret are form-urldecoded after base64 (RFC 6749 2.3.1: `+` is a space, `%XX` is decoded,
//!   a malformed `%` is `invalid_request`), so an RP must urlencode them before base64; a wrong
//!   secret is `invalid_client` (401);
//! - RP-initiated logout at `/session/end` (`id_token_hint`, `post_logout_redirect_uri`,
//!   `state`, `client_id`), see [`headless_logout`].
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const NPM_CI_TIMEOUT: Duration = Duration::from_secs(600);

/// A client (relying party) registered at the provider.
#[derive(Clone, Debug)]
pub struct OidcClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Default `authorization_code` and `refresh_token`.
    pub grant_types: Vec<String>,
    /// `client_secret_basic` (default) or `client_secret_post` (what discovery-driven clients
    /// read; oidc-provider 9 accepts either of the two from a client registered with one).
    pub token_endpoint_auth_method: String,
    /// Any other client metadata oidc-provider understands (overrides the fields above).
    pub metadata: Map<String, Value>,
}

impl OidcClient {
    pub fn new(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uris: vec![redirect_uri.into()],
            post_logout_redirect_uris: Vec::new(),
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            token_endpoint_auth_method: "client_secret_basic".into(),
            metadata: Map::new(),
        }
    }

    pub fn redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uris.push(uri.into());
        self
    }

    pub fn post_logout_redirect_uri(mut self, uri: &str) -> Self {
        self.post_logout_redirect_uris.push(uri.into());
        self
    }

    /// `client_secret_basic` or `client_secret_post`.
    pub fn auth_method(mut self, method: &str) -> Self {
        self.token_endpoint_auth_method = method.into();
        self
    }

    /// Only `authorization_code`: no refresh tokens for this client.
    pub fn without_refresh_tokens(mut self) -> Self {
        self.grant_types.retain(|g| g != "refresh_token");
        self
    }

    pub fn metadata(mut self, key: &str, value: Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }

    fn to_json(&self) -> Value {
        let mut client = json!({
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": self.redirect_uris,
            "post_logout_redirect_uris": self.post_logout_redirect_uris,
            "grant_types": self.grant_types,
            "response_types": ["code"],
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
        });
        let map = client.as_object_mut().unwrap();
        for (k, v) in &self.metadata {
            map.insert(k.clone(), v.clone());
        }
        client
    }
}

/// An account at the provider. `id` is what is typed at the login form and is the `sub` claim.
#[derive(Clone, Debug)]
pub struct OidcUser {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    /// Default: `id`.
    pub preferred_username: String,
    pub groups: Vec<String>,
    /// Further claims (overriding the fields above); a claim reaches tokens only if a granted
    /// scope lists it (profile: given_name, family_name, locale, picture).
    pub claims: Map<String, Value>,
}

impl OidcUser {
    pub fn new(id: &str, email: &str, name: &str, groups: &[&str]) -> Self {
        Self {
            id: id.into(),
            email: email.into(),
            email_verified: true,
            name: name.into(),
            preferred_username: id.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            claims: Map::new(),
        }
    }

    pub fn email_verified(mut self, verified: bool) -> Self {
        self.email_verified = verified;
        self
    }

    pub fn preferred_username(mut self, username: &str) -> Self {
        self.preferred_username = username.into();
        self
    }

    pub fn claim(mut self, key: &str, value: Value) -> Self {
        self.claims.insert(key.into(), value);
        self
    }

    fn to_json(&self) -> Value {
        let mut user = json!({
            "email": self.email,
            "email_verified": self.email_verified,
            "name": self.name,
            "preferred_username": self.preferred_username,
            "groups": self.groups,
        });
        let map = user.as_object_mut().unwrap();
        for (k, v) in &self.claims {
            map.insert(k.clone(), v.clone());
        }
        user
    }
}

/// Everything the provider is configured with; see tests/peers/oidc/README.md for the JSON
/// it becomes.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub clients: Vec<OidcClient>,
    pub users: Vec<OidcUser>,
    /// Seconds, by oidc-provider artifact name: `AccessToken` (default 600), `IdToken` (600),
    /// `RefreshToken` (86400), `Session` (86400), `Grant` (86400), `AuthorizationCode` (60),
    /// `Interaction` (600).
    pub ttl: BTreeMap<String, u64>,
    /// Default true: every refresh returns a new refresh token and consumes the old one.
    pub rotate_refresh_tokens: bool,
    /// Default true: no consent step (every requested scope and claim is granted).
    pub auto_consent: bool,
    /// Default true: the logout confirmation page submits itself (for browsers; the headless
    /// helper posts the form itself either way).
    pub auto_submit_logout: bool,
    /// Seconds the provider still accepts an expired access token (oidc-provider's default is
    /// 15; the peer's is 0 so that TTLs are exact).
    pub clock_tolerance: u64,
    /// oidc-provider `features` merged over the peer's (e.g. `backchannelLogout`).
    pub features: Map<String, Value>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ProviderConfig {
    pub fn new() -> Self {
        Self {
            clients: Vec::new(),
            users: Vec::new(),
            ttl: BTreeMap::new(),
            rotate_refresh_tokens: true,
            auto_consent: true,
            auto_submit_logout: true,
            clock_tolerance: 0,
            features: Map::new(),
        }
    }

    pub fn client(mut self, client: OidcClient) -> Self {
        self.clients.push(client);
        self
    }

    pub fn user(mut self, user: OidcUser) -> Self {
        self.users.push(user);
        self
    }

    /// Time to live in seconds of one oidc-provider artifact (see [`ProviderConfig::ttl`]).
    pub fn ttl(mut self, artifact: &str, seconds: u64) -> Self {
        self.ttl.insert(artifact.into(), seconds);
        self
    }

    pub fn access_token_ttl(self, seconds: u64) -> Self {
        self.ttl("AccessToken", seconds)
    }

    pub fn id_token_ttl(self, seconds: u64) -> Self {
        self.ttl("IdToken", seconds)
    }

    pub fn refresh_token_ttl(self, seconds: u64) -> Self {
        self.ttl("RefreshToken", seconds)
    }

    pub fn session_ttl(self, seconds: u64) -> Self {
        self.ttl("Session", seconds)
    }

    pub fn rotate_refresh_tokens(mut self, rotate: bool) -> Self {
        self.rotate_refresh_tokens = rotate;
        self
    }

    pub fn auto_consent(mut self, auto: bool) -> Self {
        self.auto_consent = auto;
        self
    }

    pub fn auto_submit_logout(mut self, auto: bool) -> Self {
        self.auto_submit_logout = auto;
        self
    }

    pub fn clock_tolerance(mut self, seconds: u64) -> Self {
        self.clock_tolerance = seconds;
        self
    }

    pub fn feature(mut self, name: &str, value: Value) -> Self {
        self.features.insert(name.into(), value);
        self
    }

    /// The JSON file provider.mjs reads.
    pub fn to_json(&self, port: u16) -> Value {
        let users: Map<String, Value> = self
            .users
            .iter()
            .map(|u| (u.id.clone(), u.to_json()))
            .collect();
        json!({
            "port": port,
            "clients": self.clients.iter().map(OidcClient::to_json).collect::<Vec<_>>(),
            "users": users,
            "ttl": self.ttl,
            "rotate_refresh_tokens": self.rotate_refresh_tokens,
            "auto_consent": self.auto_consent,
            "auto_submit_logout": self.auto_submit_logout,
            "clock_tolerance": self.clock_tolerance,
            "features": self.features,
            "exit_on_stdin_close": true,
        })
    }
}

/// A running provider; stopped when dropped.
pub struct OidcProvider {
    /// `http://127.0.0.1:<port>`, as in the discovery document and the `iss` claim.
    pub issuer: String,
    pub port: u16,
    child: Option<Child>,
    /// Held open: the provider exits when it closes (when this process dies, even by SIGKILL).
    stdin: Option<ChildStdin>,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Starts the provider on a free loopback port and waits for its `ready` line.
    pub async fn start(config: &ProviderConfig) -> OidcProvider {
        let node = node_bin();
        ensure_node_modules();
        let mut last_error = String::new();
        // A free port can be taken by someone else before node binds it: try a few.
        for _ in 0..3 {
            match Self::try_start(&node, config, crate::free_port()).await {
                Ok(provider) => return provider,
                Err(e) => last_error = e,
            }
        }
        panic!("the OIDC provider did not start:\n{last_error}");
    }

    /// Starts the provider on a given port (the issuer of a provider restarted with other
    /// users or groups stays the same; its signing keys do not).
    pub async fn start_on_port(config: &ProviderConfig, port: u16) -> OidcProvider {
        let node = node_bin();
        ensure_node_modules();
        Self::try_start(&node, config, port)
            .await
            .unwrap_or_else(|e| panic!("the OIDC provider did not start:\n{e}"))
    }

    async fn try_start(
        node: &Path,
        config: &ProviderConfig,
        port: u16,
    ) -> Result<OidcProvider, String> {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("provider.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config.to_json(port)).unwrap(),
        )
        .unwrap();
        let stdout_path = dir.path().join("stdout.log");
        let stderr_path = dir.path().join("stderr.log");
        let mut child = Command::new(node)
            .current_dir(peer_dir())
            .arg("provider.mjs")
            .arg(&config_path)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", node.display()));
        let stdin = child.stdin.take();
        let mut provider = OidcProvider {
            issuer: String::new(),
            port,
            child: Some(child),
            stdin,
            stderr_path,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
            // Only a complete line: the file may be read while node writes it.
            if let Some(issuer) = stdout
                .split_inclusive('\n')
                .filter_map(|l| l.strip_suffix('\n'))
                .find_map(|l| l.strip_prefix("ready "))
            {
                provider.issuer = issuer.trim().to_owned();
                return Ok(provider);
            }
            if let Some(status) = provider.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!(
                    "node provider.mjs exited with {status} on port {port}\nstdout:\n{stdout}\nstderr:\n{}",
                    provider.stderr()
                ));
            }
            if Instant::now() > deadline {
                panic!(
                    "the OIDC provider printed no `ready` line after {READY_TIMEOUT:?}\nstdout:\n{stdout}\nstderr:\n{}",
                    provider.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `<issuer><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub fn discovery_url(&self) -> String {
        self.url("/.well-known/openid-configuration")
    }

    pub fn authorization_endpoint(&self) -> String {
        self.url("/auth")
    }

    pub fn token_endpoint(&self) -> String {
        self.url("/token")
    }

    pub fn userinfo_endpoint(&self) -> String {
        self.url("/me")
    }

    pub fn jwks_uri(&self) -> String {
        self.url("/jwks")
    }

    pub fn end_session_endpoint(&self) -> String {
        self.url("/session/end")
    }

    pub fn revocation_endpoint(&self) -> String {
        self.url("/token/revocation")
    }

    pub fn introspection_endpoint(&self) -> String {
        self.url("/token/introspection")
    }

    /// What the provider wrote on stderr so far (its development warnings, and one line per
    /// grant/authorization/end-session error, e.g. `grant.error: invalid_grant (...)`).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM, and wait for the process to exit (it exits 0).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("provider already stopped");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.stdin = None;
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                self.stdin = None;
                return child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// tests/peers/oidc.
pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/oidc")
}

/// `$FLOWCASE_TEST_NODE`, or `node` from PATH (checked once).
fn node_bin() -> PathBuf {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        let node = PathBuf::from(
            std::env::var("FLOWCASE_TEST_NODE").unwrap_or_else(|_| "node".to_owned()),
        );
        match Command::new(&node).arg("--version").output() {
            Ok(out) if out.status.success() => node,
            _ => panic!(
                "node not found ({}): the OIDC test peer needs Node.js 20 or later \
                 (apt-get install nodejs npm; scripts/test installs them), or set FLOWCASE_TEST_NODE",
                node.display()
            ),
        }
    })
    .clone()
}

/// Makes sure tests/peers/oidc/node_modules holds what package-lock.json says (scripts/test runs
/// `npm ci` there first). Otherwise runs `npm ci` once, under a `mkdir` lock so that test
/// processes running in parallel (nextest) do not race.
fn ensure_node_modules() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = peer_dir();
        if node_modules_ok(&dir) {
            return;
        }
        let lock = dir.join(".npm-ci.lock");
        let deadline = Instant::now() + NPM_CI_TIMEOUT;
        loop {
            match std::fs::create_dir(&lock) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Left behind by a killed process?
                    let stale = std::fs::metadata(&lock)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age > NPM_CI_TIMEOUT);
                    if stale {
                        let _ = std::fs::remove_dir(&lock);
                    }
                    assert!(
                        Instant::now() < deadline,
                        "waited {NPM_CI_TIMEOUT:?} for {} (another test running npm ci?)",
                        lock.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot create {}: {e}", lock.display()),
            }
        }
        struct Unlock(PathBuf);
        impl Drop for Unlock {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let _unlock = Unlock(lock);
        // Another process may have installed it while we waited for the lock.
        if node_modules_ok(&dir) {
            return;
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run npm ({e}): run `npm ci` in {} (scripts/test does)",
                    dir.display()
                )
            });
        assert!(
            out.status.success(),
            "`npm ci` in {} failed ({}); run it by hand to see why.\nstdout:\n{}\nstderr:\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            node_modules_ok(&dir),
            "`npm ci` in {} succeeded but node_modules still does not match package.json",
            dir.display()
        );
    });
}

/// node_modules is complete (npm writes its hidden lockfile last) and holds the oidc-provider
/// version package.json pins.
fn node_modules_ok(dir: &Path) -> bool {
    let read = |p: &Path| -> Option<Value> {
        serde_json::from_slice(&std::fs::read(dir.join(p)).ok()?).ok()
    };
    let Some(wanted) = read(Path::new("package.json")) else {
        panic!("cannot read {}/package.json", dir.display());
    };
    let wanted = wanted["dependencies"]["oidc-provider"]
        .as_str()
        .map(str::to_owned);
    let installed = read(Path::new("node_modules/oidc-provider/package.json"))
        .and_then(|p| p["version"].as_str().map(str::to_owned));
    dir.join("node_modules/.package-lock.json").exists() && wanted.is_some() && wanted == installed
}

/// A client that behaves like a browser for the provider's pages: keeps cookies, follows no
/// redirects (the helpers below follow the provider's own and hand back the first one that
/// leaves it).
pub fn browser_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs `login` in through the provider's development login form, headlessly: starting at
/// `authorize_url` (the provider's `/auth?...`), it follows the redirects that stay on the
/// provider's origin (that of `authorize_url`), answers the login form (`prompt=login`,
/// `login`, any password) and the consent form if one shows (`prompt=consent`; only with
/// `prompt=consent` or `auto_consent(false)`), and returns the first redirect that leaves the
/// provider, without following it: normally `redirect_uri?code=…&state=…&iss=…`, or
/// `redirect_uri?error=…&state=…&iss=…` when the provider refuses the request.
///
/// `client` must keep cookies and not follow redirects ([`browser_client`], or a gateway client
/// with `.cookie_store(true)` and `Policy::none()`). With a provider session already in its
/// cookies, no form shows and `login` is not used.
pub async fn headless_login(
    client: &reqwest::Client,
    authorize_url: &str,
    login: &str,
) -> reqwest::Url {
    headless_login_prompts(client, authorize_url, login).await.0
}

/// [`headless_login`], also returning the forms it answered, in order: `["login"]` for a fresh
/// login, `[]` when the provider session was still there, `["login", "consent"]` with
/// `prompt=consent`.
pub async fn headless_login_prompts(
    client: &reqwest::Client,
    authorize_url: &str,
    login: &str,
) -> (reqwest::Url, Vec<String>) {
    let mut prompts = Vec::new();
    let start = reqwest::Url::parse(authorize_url).unwrap();
    let mut url = start.clone();
    for _ in 0..20 {
        let resp = client.get(url.clone()).send().await.unwrap();
        if resp.status().is_redirection() {
            let next = location(&url, &resp);
            if !same_origin(&start, &next) {
                return (next, prompts);
            }
            url = next;
            continue;
        }
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(
            status.is_success() && url.path().starts_with("/interaction/"),
            "headless_login: GET {url} answered {status} where a redirect or the login form was expected:\n{body}"
        );
        let action = form_attr(&body, "action")
            .map(|a| url.join(&a).unwrap())
            .unwrap_or_else(|| url.clone());
        let prompt = hidden_value(&body, "prompt")
            .unwrap_or_else(|| panic!("headless_login: no prompt in the form at {url}:\n{body}"));
        let form: Vec<(&str, &str)> = match prompt.as_str() {
            "login" => vec![
                ("prompt", "login"),
                ("login", login),
                ("password", "any password"),
            ],
            "consent" => vec![("prompt", "consent")],
            other => panic!("headless_login: unknown prompt {other:?} at {url}:\n{body}"),
        };
        prompts.push(prompt.clone());
        assert!(
            prompts.len() <= 4,
            "headless_login: login loop at {url}: {prompts:?}"
        );
        let resp = client
            .post(action.clone())
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        if !status.is_redirection() {
            let body = resp.text().await.unwrap();
            panic!("headless_login: POST {action} ({prompt}) answered {status}:\n{body}");
        }
        let next = location(&action, &resp);
        if !same_origin(&start, &next) {
            return (next, prompts);
        }
        url = next;
    }
    panic!("headless_login: too many redirects from {authorize_url}");
}

/// Logs out at the provider headlessly: GETs `end_session_url` (the provider's
/// `/session/end?id_token_hint=…&post_logout_redirect_uri=…&state=…`) with the provider's
/// session cookie in `client`, posts the confirmation form (`xsrf` + `logout=yes` to
/// `/session/end/confirm`) and returns where the provider redirects, without following it:
/// `post_logout_redirect_uri?state=…`, or the provider's `/session/end/success` when no
/// (registered) post_logout_redirect_uri was given. This ends the provider session and revokes
/// the grants made in it (their refresh tokens then fail with `invalid_grant`).
pub async fn headless_logout(client: &reqwest::Client, end_session_url: &str) -> reqwest::Url {
    let url = reqwest::Url::parse(end_session_url).unwrap();
    let resp = client.get(url.clone()).send().await.unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(
        status.is_success(),
        "headless_logout: GET {url} answered {status}:\n{body}"
    );
    let action = form_attr(&body, "action")
        .map(|a| url.join(&a).unwrap())
        .unwrap_or_else(|| panic!("headless_logout: no form at {url}:\n{body}"));
    let xsrf = hidden_value(&body, "xsrf")
        .unwrap_or_else(|| panic!("headless_logout: no xsrf at {url}:\n{body}"));
    let resp = client
        .post(action.clone())
        .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    if !status.is_redirection() {
        let body = resp.text().await.unwrap();
        panic!("headless_logout: POST {action} answered {status}:\n{body}");
    }
    location(&action, &resp)
}

fn location(base: &reqwest::Url, resp: &reqwest::Response) -> reqwest::Url {
    let loc = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{} from {base} without a Location", resp.status()));
    base.join(loc)
        .unwrap_or_else(|e| panic!("bad Location {loc:?} from {base}: {e}"))
}

fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.origin() == b.origin()
}

/// The first `<name>="…"` attribute of the first form in `html`.
fn form_attr(html: &str, name: &str) -> Option<String> {
    let form = &html[html.find("<form")?..];
    let start = form.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = form[start..].find('"')?;
    Some(unescape(&form[start..start + end]))
}

/// The value of the input named `name` (`name="…" value="…"`, as the provider writes them).
fn hidden_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let rest = &html[at..];
    let tag_end = rest.find('>')?;
    let tag = &rest[..tag_end];
    let start = tag.find("value=\"")? + 7;
    let end = tag[start..].find('"')?;
    Some(unescape(&tag[start..start + end]))
}

fn unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#38;", "&")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}
