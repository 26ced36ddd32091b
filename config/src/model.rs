//! The validated configuration model: every section and key of `flowcase.toml`, their defaults,
//! and the cross-key checks that run before anything starts.
//!
//! The serde structs are the model: field types reject bad values while parsing (addresses,
//! enums, durations), so an error can name the key and its line; `Config::validate` then checks
//! what no single key can (paths required by a TLS mode, host names that must differ).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::secret::Secret;
use crate::size::ByteSize;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub database: DatabaseConfig,
    pub docker: DockerConfig,
    pub auth: AuthConfig,
    pub guacd: GuacdConfig,
    pub instances: InstancesConfig,
    pub proxy: ProxyConfig,
    pub secrets: SecretsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Host name of the control plane (login, dashboard, API, tunnel).
    pub public_host: HostName,
    /// Instances of web-app droplets are served on `<slug>.<apps_domain>`.
    pub apps_domain: HostName,
    pub data_dir: PathBuf,
    pub http_listen: SocketAddr,
    pub https_listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// A file holding the bearer token `/metrics` requires; none = `/metrics` is open to anyone
    /// who reaches `metrics_listen`.
    pub metrics_token_file: Option<PathBuf>,
    /// The HTTPS port browsers use in links and redirects; 0 means the port of `https_listen`
    /// (differs when a load balancer or port mapping sits in front).
    pub public_https_port: u16,
    /// Peers whose `X-Forwarded-For` is believed; everyone else's client address is the socket's.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            public_host: HostName("localhost".into()),
            apps_domain: HostName("apps.localhost".into()),
            data_dir: PathBuf::from("./data"),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            https_listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            metrics_token_file: None,
            public_https_port: 0,
            trusted_proxies: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// The port that public links and redirects name.
    pub fn effective_https_port(&self) -> u16 {
        if self.public_https_port == 0 {
            self.https_listen.port()
        } else {
            self.public_https_port
        }
    }

    /// `https://<public_host>[:port]` with the port left out when it is 443.
    pub fn public_origin(&self) -> String {
        origin(self.public_host.as_str(), self.effective_https_port())
    }
}

/// `https://host[:port]`, without the port when it is the scheme's default.
pub fn origin(host: &str, port: u16) -> String {
    if port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{port}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// A certificate for the public host and `*.<apps_domain>` generated on first start.
    #[default]
    SelfSigned,
    /// A certificate and key from files (a wildcard from a DNS-01 tool, a corporate CA).
    Files,
    /// Certificates ordered from an ACME server.
    Acme,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// PEM certificate chain; required when `mode = "files"`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key; required when `mode = "files"`.
    pub key_file: Option<PathBuf>,
    /// How often `cert_file` and `key_file` are checked for a renewed certificate (SIGHUP also
    /// reloads them at once).
    pub reload_interval: Duration,
    pub acme: AcmeConfig,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            mode: TlsMode::default(),
            cert_file: None,
            key_file: None,
            reload_interval: Duration::from_secs(5),
            acme: AcmeConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AcmeChallenge {
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    pub directory_url: String,
    /// Contact e-mail addresses given to the ACME account.
    pub contact: Vec<String>,
    /// Extra PEM CA bundle trusted when talking to the ACME server (a private ACME server).
    pub ca_bundle: Option<PathBuf>,
    pub challenge: AcmeChallenge,
    /// Order certificates on demand for instance host names (only names of existing instances).
    pub instance_certificates: bool,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            directory_url: "https://acme-v02.api.letsencrypt.org/directory".into(),
            contact: Vec::new(),
            ca_bundle: None,
            challenge: AcmeChallenge::Http01,
            instance_certificates: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB`; empty means
    /// `sqlite://<data_dir>/flowcase.db`.
    pub url: Secret,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::default(),
            max_connections: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamMode {
    /// Instances publish their port on 127.0.0.1 and the gateway dials that.
    #[default]
    PublishedLoopback,
    /// The gateway runs in a container on the Flowcase network and dials instance addresses.
    ContainerNetwork,
}

/// What runs instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Containers on the one Docker engine at `docker.host`.
    #[default]
    Engine,
    /// A Swarm service per instance; `docker.host` is a swarm manager.
    Swarm,
}

/// How a swarm service names its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwarmImageReference {
    /// The image's id on the manager: no node ever asks a registry (every node must hold it).
    #[default]
    LocalId,
    /// The image's name: each node pulls it when a task lands there.
    Name,
}

/// `[docker.swarm]`: settings of the swarm backend.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwarmConfig {
    pub image_reference: SwarmImageReference,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// `unix:///path/to/docker.sock` (default socket) or `tcp://127.0.0.1:2375`.
    pub host: String,
    /// What runs instances: the engine itself, or Swarm services through it.
    pub backend: Backend,
    pub network: String,
    pub upstream_mode: UpstreamMode,
    /// Label value marking this installation's containers: reconciliation only ever touches
    /// containers of its own deployment, so two installations can share one engine.
    pub deployment: String,
    /// Mode `container-network`: the gateway's own container (name or id), connected to each
    /// instance's network; empty = found from inside the container (`/proc/self/mountinfo`,
    /// `/proc/self/cgroup`, the host name), or none when the gateway runs on the host.
    pub gateway_container: String,
    /// Backend `swarm` only.
    pub swarm: SwarmConfig,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: "unix:///var/run/docker.sock".into(),
            network: "flowcase".into(),
            upstream_mode: UpstreamMode::PublishedLoopback,
            deployment: "flowcase".into(),
            gateway_container: String::new(),
            backend: Backend::Engine,
            swarm: SwarmConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Registration {
    #[default]
    Closed,
    Invite,
    Open,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub registration: Registration,
    /// A session unused for this long ends (use of an app or desktop through it counts).
    pub session_idle_timeout: Duration,
    /// A session ends this long after login, used or not.
    pub session_lifetime: Duration,
    /// Absolute lifetime of a session opened with "remember me".
    pub remember_me_lifetime: Duration,
    pub oidc: Vec<OidcProvider>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            registration: Registration::Closed,
            session_idle_timeout: Duration::from_secs(2 * 3600),
            session_lifetime: Duration::from_secs(12 * 3600),
            remember_me_lifetime: Duration::from_secs(30 * 24 * 3600),
            oidc: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProvider {
    /// Short stable name used in URLs (`/auth/oidc/<id>/callback`).
    pub id: String,
    pub display_name: String,
    pub issuer_url: String,
    pub client_id: String,
    /// The client secret, or `client_secret_file` naming a file that holds it (one of the two).
    #[serde(default)]
    pub client_secret: Secret,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// ID-token (or userinfo) claim listing the user's groups at the provider.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Provider group → Flowcase group name. Provider groups not listed map to the Flowcase
    /// group of the same name, when one exists; unknown names are ignored.
    #[serde(default)]
    pub group_mapping: std::collections::BTreeMap<String, String>,
    /// Flowcase group every user of this provider is put in (e.g. "User").
    #[serde(default)]
    pub default_group: Option<String>,
    /// Create the account on a first login; when false, only users linked before may log in.
    #[serde(default = "default_true")]
    pub create_users: bool,
    /// Tenant (by name) that created users join; the default tenant when unset.
    #[serde(default)]
    pub tenant: Option<String>,
}

impl OidcProvider {
    /// The client secret, read from `client_secret_file` when that is set.
    pub fn resolve_client_secret(&self) -> Result<String, String> {
        match &self.client_secret_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
            None => Ok(self.client_secret.expose().to_owned()),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuacdConfig {
    /// The shared guacd used by desktop droplets that do not start a guacd sidecar.
    pub address: SocketAddr,
    /// How long guacd may take to accept a tunnel's connection, and then to answer each step
    /// of the handshake.
    pub connect_timeout: Duration,
    /// The image of the guacd sidecars that droplets with `guacd = "sidecar"` start with each
    /// instance (a droplet may name its own).
    pub sidecar_image: String,
}

impl Default for GuacdConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 4822)),
            connect_timeout: Duration::from_secs(10),
            sidecar_image: "guacamole/guacd:1.5.5".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstancesConfig {
    /// Instances without user activity for this long are stopped, or destroyed if their droplet
    /// says so (a droplet may override; 0 = never).
    pub idle_timeout: Duration,
    /// Instances are destroyed this long after their creation, in use or not (a droplet may
    /// override; 0 = never).
    pub max_lifetime: Duration,
    pub max_per_user: u32,
    pub max_total: u32,
    /// How long a starting instance may take to answer on its port before it is an error.
    pub ready_timeout: Duration,
    /// How long a request that is not a page view (an API call, a script) waits for a stopped
    /// instance to wake before it gets 503 with Retry-After.
    pub wake_wait: Duration,
    /// User agents containing one of these (case-insensitive) never wake an instance nor count
    /// as activity: uptime monitors and crawlers would otherwise keep everything running.
    pub passive_user_agents: Vec<String>,
}

impl Default for InstancesConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            max_lifetime: Duration::from_secs(12 * 3600),
            max_per_user: 3,
            max_total: 50,
            ready_timeout: Duration::from_secs(60),
            wake_wait: Duration::from_secs(30),
            passive_user_agents: [
                "bot",
                "spider",
                "crawler",
                "uptimerobot",
                "pingdom",
                "monitor",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

/// How the front door treats the requests it proxies (to instances and to the control plane).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Largest request body passed on; larger ones get 413 (0 = no limit).
    pub max_request_body: ByteSize,
    /// How long connecting to an upstream may take.
    pub upstream_connect_timeout: Duration,
    /// How long an upstream may stay silent while answering a request before the client gets 504.
    pub upstream_read_timeout: Duration,
    /// How long a WebSocket (or other upgraded connection) may stay silent in one direction
    /// before it is closed.
    pub upgraded_idle_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            max_request_body: ByteSize::mib(100),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_read_timeout: Duration::from_secs(120),
            upgraded_idle_timeout: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Key file sealing tokens and stored credentials; generated (mode 0600) on first start.
    /// Unset means `<data_dir>/secret.key`.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `flowcase=debug,info`, …
    pub level: String,
    /// How long access lines may wait to be written together; zero writes each at once.
    pub access_flush: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
            access_flush: Duration::from_secs(1),
        }
    }
}

/// A DNS host name, lower-cased, checked on parse.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct HostName(String);

impl HostName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "`{raw}` is not a host name (letters, digits, hyphens and dots, like gateway.example.com)"
            ));
        }
        Ok(Self(name))
    }
}

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(de)?;
        HostName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A problem that involves more than one key, found after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted key the problem is reported against.
    pub key: String,
    pub reason: String,
}

impl Config {
    /// The SQLite or PostgreSQL URL actually used.
    pub fn database_url(&self) -> String {
        if self.database.url.expose().is_empty() {
            format!(
                "sqlite://{}",
                self.server.data_dir.join("flowcase.db").display()
            )
        } else {
            self.database.url.expose().to_owned()
        }
    }

    pub fn secret_key_file(&self) -> PathBuf {
        self.secrets
            .key_file
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("secret.key"))
    }

    /// Checks that span several keys; the first problem found is returned.
    pub fn validate(&self) -> Result<(), Invalid> {
        let invalid = |key: &str, reason: String| {
            Err(Invalid {
                key: key.into(),
                reason,
            })
        };
        let s = &self.server;
        if s.apps_domain == s.public_host {
            return invalid(
                "server.apps_domain",
                "must differ from server.public_host: instance hosts must never share the \
                 public host's cookies"
                    .into(),
            );
        }
        if s.public_host
            .as_str()
            .ends_with(&format!(".{}", s.apps_domain.as_str()))
        {
            return invalid(
                "server.public_host",
                format!(
                    "must not be a sub-domain of server.apps_domain (`{}`): it would collide with instance hosts",
                    s.apps_domain.as_str()
                ),
            );
        }
        let listeners = [
            ("server.http_listen", s.http_listen),
            ("server.https_listen", s.https_listen),
            ("server.metrics_listen", s.metrics_listen),
        ];
        for (i, (key, addr)) in listeners.iter().enumerate() {
            if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| a == addr) {
                return invalid(key, format!("`{addr}` is already used by {other}"));
            }
        }
        if s.data_dir.as_os_str().is_empty() {
            return invalid("server.data_dir", "must not be empty".into());
        }
        if self.tls.mode == TlsMode::Files {
            for (key, path) in [
                ("tls.cert_file", &self.tls.cert_file),
                ("tls.key_file", &self.tls.key_file),
            ] {
                match path {
                    None => return invalid(key, "is required when tls.mode = \"files\"".into()),
                    Some(p) if !p.is_file() => {
                        return invalid(key, format!("file `{}` does not exist", p.display()));
                    }
                    Some(_) => {}
                }
            }
        }
        for (key, value) in [
            (
                "proxy.upstream_connect_timeout",
                self.proxy.upstream_connect_timeout,
            ),
            (
                "proxy.upstream_read_timeout",
                self.proxy.upstream_read_timeout,
            ),
            (
                "proxy.upgraded_idle_timeout",
                self.proxy.upgraded_idle_timeout,
            ),
        ] {
            if value.is_zero() {
                return invalid(key, "must be longer than zero".into());
            }
        }
        let sidecar = self.guacd.sidecar_image.trim();
        if sidecar.is_empty() || sidecar.chars().any(char::is_whitespace) {
            return invalid(
                "guacd.sidecar_image",
                "must be an image reference (like guacamole/guacd:1.5.5)".into(),
            );
        }
        if self.tls.reload_interval.is_zero() {
            return invalid("tls.reload_interval", "must be longer than zero".into());
        }
        if self.tls.mode == TlsMode::Acme {
            let url = &self.tls.acme.directory_url;
            if !url.starts_with("https://") {
                return invalid(
                    "tls.acme.directory_url",
                    format!("`{url}` must be an https:// URL"),
                );
            }
            if let Some(bundle) = &self.tls.acme.ca_bundle
                && !bundle.is_file()
            {
                return invalid(
                    "tls.acme.ca_bundle",
                    format!("file `{}` does not exist", bundle.display()),
                );
            }
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return invalid(
                "database.url",
                "must start with sqlite:// or postgres://".into(),
            );
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1".into());
        }
        let docker = &self.docker.host;
        if !(docker.starts_with("unix://") || docker.starts_with("tcp://")) {
            return invalid(
                "docker.host",
                format!("`{docker}` must start with unix:// or tcp://"),
            );
        }
        if self.docker.backend == Backend::Swarm
            && self.docker.upstream_mode != UpstreamMode::ContainerNetwork
        {
            return invalid(
                "docker.upstream_mode",
                "backend \"swarm\" needs \"container-network\": a swarm service cannot publish \
                 a port on 127.0.0.1 only"
                    .into(),
            );
        }
        let gateway = &self.docker.gateway_container;
        if gateway.len() > 128
            || !gateway
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return invalid(
                "docker.gateway_container",
                format!("`{gateway}` is not a container name or id"),
            );
        }
        let a = &self.auth;
        if a.session_idle_timeout.is_zero() || a.session_lifetime.is_zero() {
            return invalid(
                "auth.session_lifetime",
                "session lifetimes must be longer than zero".into(),
            );
        }
        if a.session_idle_timeout > a.session_lifetime {
            return invalid(
                "auth.session_idle_timeout",
                "must not be longer than auth.session_lifetime".into(),
            );
        }
        let mut ids = std::collections::HashSet::new();
        for (i, p) in a.oidc.iter().enumerate() {
            let id_ok = !p.id.is_empty()
                && p.id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !id_ok {
                return invalid(
                    &format!("auth.oidc[{i}].id"),
                    "must be lower-case letters, digits and hyphens".into(),
                );
            }
            if !ids.insert(p.id.as_str()) {
                return invalid(
                    &format!("auth.oidc[{i}].id"),
                    format!("`{}` is used by two providers", p.id),
                );
            }
            if !p.issuer_url.starts_with("https://") && !p.issuer_url.starts_with("http://") {
                return invalid(
                    &format!("auth.oidc[{i}].issuer_url"),
                    "must be an http(s):// URL".into(),
                );
            }
            match (&p.client_secret_file, p.client_secret.expose().is_empty()) {
                (Some(_), false) => {
                    return invalid(
                        &format!("auth.oidc[{i}].client_secret_file"),
                        "set client_secret or client_secret_file, not both".into(),
                    );
                }
                (Some(file), true) if !file.is_file() => {
                    return invalid(
                        &format!("auth.oidc[{i}].client_secret_file"),
                        format!("file `{}` does not exist", file.display()),
                    );
                }
                (None, true) => {
                    return invalid(
                        &format!("auth.oidc[{i}].client_secret"),
                        "is required (or client_secret_file)".into(),
                    );
                }
                _ => {}
            }
            if !p.scopes.iter().any(|s| s == "openid") {
                return invalid(
                    &format!("auth.oidc[{i}].scopes"),
                    "must include \"openid\"".into(),
                );
            }
        }
        if self.instances.max_per_user == 0 {
            return invalid("instances.max_per_user", "must be at least 1".into());
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted (for `check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Resolves the data directory to an absolute path (for messages and files written there).
    pub fn data_dir(&self) -> &Path {
        &self.server.data_dir
    }
}
