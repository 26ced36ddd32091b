//! Certificates from an ACME server (`tls.mode = "acme"`), through rustls-acme.
//!
//! One rustls-acme order loop runs per host name: the public host from the start, and instance
//! host names on demand. On-demand names come from the resolver's miss hook (a handshake for a
//! name with no certificate of its own); the [`NameAuthority`] decides, in the background, whether
//! the name may be ordered at all — only names of instances that exist — so nobody can make the
//! gateway order certificates for arbitrary names. The handshake that revealed the name gets the
//! default certificate at once; the next one after issuance gets the new certificate.
//!
//! The account key and the certificates are kept in `<data_dir>/acme/<directory>/` (mode 0600),
//! so a restart serves the cached certificates at once and orders nothing; rustls-acme renews a
//! certificate when a third of its lifetime is left (a fixed rule of rustls-acme 0.15: its
//! `AcmeConfig` has no setting for it). The renewed certificate is served to new handshakes at
//! once; connections already open keep theirs. On-demand names that were admitted are
//! listed there too, so their certificates are loaded again after a restart without waiting for
//! a handshake.

use std::collections::{BTreeSet, HashMap};
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use rustls::{ClientConfig, RootCertStore};
use rustls_acme::{AccountCache, CertCache, UseChallenge};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{CertError, CertResolver, CertStatus};

/// Names waiting for the authority's answer; handshakes beyond that are not queued (the next
/// handshake for the name tries again).
const QUEUE: usize = 256;
/// The authority's answer must come quickly; no answer is a refusal.
const AUTHORITY_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused name is not asked about again for this long, however many handshakes name it.
const REFUSAL_TTL: Duration = Duration::from_secs(60);
const MAX_REFUSED: usize = 4096;
/// How often on-demand names are checked again, so deleted instances stop being renewed.
const RECHECK_EVERY: Duration = Duration::from_secs(3600);
const INDEX_FILE: &str = "on-demand-names";

/// Decides which host names the gateway may order certificates for on demand.
#[async_trait]
pub trait NameAuthority: Send + Sync {
    /// Runs on the TLS handshake path, so it must be cheap and never wait: could this name ever be
    /// admitted (is it shaped like one of our host names)? Names failing it are never queued.
    fn is_candidate(&self, host: &str) -> bool;

    /// Runs in the background, never during a handshake: may a certificate be ordered for this
    /// name now?
    async fn may_order(&self, host: &str) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallengeKind {
    /// Answered on the plain-HTTP listener (`/.well-known/acme-challenge/<token>`).
    Http01,
    /// Answered on the HTTPS listener, which must offer the `acme-tls/1` protocol.
    TlsAlpn01,
}

#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub directory_url: String,
    /// Contact addresses; a bare e-mail address gets its `mailto:`.
    pub contact: Vec<String>,
    /// Extra PEM CA certificates trusted for the ACME server (a private ACME server).
    pub ca_bundle: Option<PathBuf>,
    pub challenge: AcmeChallengeKind,
    /// Where accounts and certificates are kept (`<data_dir>/acme`).
    pub cache_dir: PathBuf,
    /// Ordered from the start and always kept; the first is the one `/readyz` reports.
    pub names: Vec<String>,
    /// Order certificates for other names the authority admits, when a handshake asks for them.
    pub on_demand: bool,
}

pub struct AcmeManager {
    settings: AcmeSettings,
    contact: Vec<String>,
    /// `<cache_dir>/<directory>`: accounts and certificates of one ACME server are never mixed
    /// with another's (staging certificates are not served after switching to production).
    dir: PathBuf,
    client: Arc<ClientConfig>,
    resolver: Arc<CertResolver>,
    authority: Arc<dyn NameAuthority>,
}

impl AcmeManager {
    /// Checks the settings (the CA bundle is read here, so a bad one stops the start).
    pub fn new(
        settings: AcmeSettings,
        resolver: Arc<CertResolver>,
        authority: Arc<dyn NameAuthority>,
    ) -> Result<Self, CertError> {
        let client = client_config(settings.ca_bundle.as_deref())?;
        let contact = settings
            .contact
            .iter()
            .map(|c| {
                if c.contains(':') {
                    c.clone()
                } else {
                    format!("mailto:{c}")
                }
            })
            .collect();
        let dir = settings
            .cache_dir
            .join(directory_id(&settings.directory_url));
        Ok(Self {
            settings,
            contact,
            dir,
            client,
            resolver,
            authority,
        })
    }

    /// Runs the orders until shutdown.
    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        if let Err(e) = create_private_dir(&self.dir) {
            tracing::error!(error = %e, dir = %self.dir.display(), "cannot create the ACME cache directory");
        }
        // One account for every order: each name's order loop would otherwise create its own.
        if let Err(e) = self.ensure_account().await {
            tracing::error!(error = %e, "cannot keep an ACME account key; orders may create several accounts");
        }
        if let Some(primary) = self.settings.names.first() {
            self.resolver.set_primary(primary);
        }
        let mut orders: HashMap<String, JoinHandle<()>> = HashMap::new();
        for name in &self.settings.names {
            orders.insert(name.clone(), self.start(name));
        }

        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        let mut index = BTreeSet::new();
        if self.settings.on_demand {
            let authority = self.authority.clone();
            self.resolver.set_miss_hook(Box::new(move |name| {
                if authority.is_candidate(name) {
                    let _ = tx.try_send(name.to_owned());
                }
            }));
            for name in self.read_index().await {
                if self.admitted(&name).await {
                    orders.insert(name.clone(), self.start(&name));
                    index.insert(name);
                }
            }
            self.write_index(&index).await;
        }

        let mut refused: HashMap<String, Instant> = HashMap::new();
        let mut recheck =
            tokio::time::interval_at(tokio::time::Instant::now() + RECHECK_EVERY, RECHECK_EVERY);
        loop {
            tokio::select! {
                Some(name) = rx.recv() => {
                    if orders.contains_key(&name)
                        || refused.get(&name).is_some_and(|t| t.elapsed() < REFUSAL_TTL)
                    {
                        continue;
                    }
                    if self.admitted(&name).await {
                        tracing::info!(name = %name, "ordering a certificate on demand");
                        orders.insert(name.clone(), self.start(&name));
                        index.insert(name);
                        self.write_index(&index).await;
                    } else {
                        tracing::info!(name = %name, "not ordering a certificate: the name is not ours to order");
                        if refused.len() >= MAX_REFUSED {
                            refused.retain(|_, t| t.elapsed() < REFUSAL_TTL);
                            if refused.len() >= MAX_REFUSED {
                                refused.clear();
                            }
                        }
                        refused.insert(name, Instant::now());
                    }
                }
                _ = recheck.tick() => {
                    let mut dropped = false;
                    for name in index.clone() {
                        if !self.admitted(&name).await {
                            tracing::info!(name = %name, "no longer renewing the certificate: the name is gone");
                            if let Some(order) = orders.remove(&name) {
                                order.abort();
                            }
                            self.resolver.forget(&name);
                            index.remove(&name);
                            dropped = true;
                        }
                    }
                    if dropped {
                        self.write_index(&index).await;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        for order in orders.into_values() {
            order.abort();
        }
    }

    async fn admitted(&self, name: &str) -> bool {
        tokio::time::timeout(AUTHORITY_TIMEOUT, self.authority.may_order(name))
            .await
            .unwrap_or_else(|_| {
                tracing::warn!(name, "the name authority did not answer in time");
                false
            })
    }

    /// Starts the order loop of one name: it loads the cached certificate (or orders one), then
    /// sleeps until renewal is due, for ever.
    fn start(&self, name: &str) -> JoinHandle<()> {
        let cache = DiskCache {
            dir: self.dir.clone(),
            name: name.to_owned(),
            resolver: self.resolver.clone(),
        };
        let state = rustls_acme::AcmeConfig::new_with_client_config([name], self.client.clone())
            .directory(&self.settings.directory_url)
            .contact(&self.contact)
            .challenge_type(match self.settings.challenge {
                AcmeChallengeKind::Http01 => UseChallenge::Http01,
                AcmeChallengeKind::TlsAlpn01 => UseChallenge::TlsAlpn01,
            })
            .cache(cache)
            .state();
        self.resolver
            .set_challenge_responder(name, state.resolver());
        let name = name.to_owned();
        let resolver = self.resolver.clone();
        let mut state = Box::pin(state);
        tokio::spawn(async move {
            while let Some(event) = state.next().await {
                match event {
                    Ok(event) => {
                        if matches!(event, rustls_acme::EventOk::DeployedNewCert) {
                            resolver.record_acme_order(true);
                        }
                        tracing::info!(name = %name, event = ?event, "acme");
                    }
                    // rustls-acme retries with a growing back-off (up to 18 hours).
                    Err(e) => {
                        if matches!(e, rustls_acme::EventError::Order(_)) {
                            resolver.record_acme_order(false);
                        }
                        tracing::error!(name = %name, error = %e, "acme: will retry");
                    }
                }
            }
        })
    }

    async fn ensure_account(&self) -> std::io::Result<()> {
        let path = account_path(&self.dir, &self.contact);
        if tokio::fs::try_exists(&path).await? {
            return Ok(());
        }
        let key = rustls_acme::acme::Account::generate_key_pair();
        write_private(path, key).await
    }

    async fn read_index(&self) -> Vec<String> {
        match tokio::fs::read_to_string(self.dir.join(INDEX_FILE)).await {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the list of on-demand certificate names");
                Vec::new()
            }
        }
    }

    async fn write_index(&self, names: &BTreeSet<String>) {
        let text: String = names.iter().map(|n| format!("{n}\n")).collect();
        if let Err(e) = write_private(self.dir.join(INDEX_FILE), text.into_bytes()).await {
            tracing::warn!(error = %e, "cannot write the list of on-demand certificate names");
        }
    }
}

/// rustls-acme's cache, on disk: private files written atomically (its own `DirCache` writes the
/// key world-readable and in place). Loading or storing a certificate also serves it.
struct DiskCache {
    dir: PathBuf,
    name: String,
    resolver: Arc<CertResolver>,
}

impl DiskCache {
    fn serve(&self, pem: &[u8], cached: bool) {
        let parsed = match crate::parse::parse_pem(
            pem,
            pem,
            &format!("the ACME certificate for {}", self.name),
        ) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::warn!(name = %self.name, error = %e, "not serving the ACME certificate");
                return;
            }
        };
        let now = SystemTime::now();
        if cached && parsed.not_after <= now {
            tracing::info!(name = %self.name, "the cached certificate has expired; ordering a new one");
            return;
        }
        // A new certificate while an unexpired one is served is a renewal; one that replaces an
        // expired certificate (a gateway stopped for too long) is not.
        let renewal = !cached && self.resolver.serves_named(&self.name, now);
        if renewal {
            self.resolver.record_acme_renewal();
        }
        tracing::info!(
            name = %self.name,
            cached,
            renewal,
            not_after = ?parsed.not_after,
            "serving an ACME certificate"
        );
        self.resolver.set_named(
            &self.name,
            parsed.key,
            CertStatus {
                source: "acme",
                names: parsed.names,
                not_after: parsed.not_after,
            },
        );
    }
}

#[async_trait]
impl CertCache for DiskCache {
    type EC = std::io::Error;

    async fn load_cert(
        &self,
        domains: &[String],
        _directory_url: &str,
    ) -> Result<Option<Vec<u8>>, Self::EC> {
        let pem = read_optional(cert_path(&self.dir, domains)).await?;
        if let Some(pem) = &pem {
            self.serve(pem, true);
        }
        Ok(pem)
    }

    async fn store_cert(
        &self,
        domains: &[String],
        _directory_url: &str,
        cert: &[u8],
    ) -> Result<(), Self::EC> {
        self.serve(cert, false);
        write_private(cert_path(&self.dir, domains), cert.to_vec()).await
    }
}

#[async_trait]
impl AccountCache for DiskCache {
    type EA = std::io::Error;

    async fn load_account(
        &self,
        contact: &[String],
        _directory_url: &str,
    ) -> Result<Option<Vec<u8>>, Self::EA> {
        read_optional(account_path(&self.dir, contact)).await
    }

    async fn store_account(
        &self,
        contact: &[String],
        _directory_url: &str,
        account: &[u8],
    ) -> Result<(), Self::EA> {
        write_private(account_path(&self.dir, contact), account.to_vec()).await
    }
}

async fn read_optional(path: PathBuf) -> std::io::Result<Option<Vec<u8>>> {
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

async fn write_private(path: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        crate::self_signed::write_file(&path, &bytes, 0o600).map_err(std::io::Error::other)
    })
    .await
    .map_err(std::io::Error::other)?
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A readable, file-system-safe name for an ACME directory URL, with a hash so that two URLs
/// differing only in replaced characters do not share a directory.
fn directory_id(url: &str) -> String {
    let bare = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let readable: String = bare
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    format!("{readable}-{:08x}", fnv1a(url.as_bytes()) as u32)
}

fn cert_path(dir: &Path, domains: &[String]) -> PathBuf {
    let joined = domains.join(",");
    let safe: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == ',' {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    dir.join(format!("{safe}.pem"))
}

fn account_path(dir: &Path, contact: &[String]) -> PathBuf {
    let mut bytes = Vec::new();
    for c in contact {
        bytes.extend_from_slice(c.as_bytes());
        bytes.push(0);
    }
    dir.join(format!("account-{:016x}.pk8", fnv1a(&bytes)))
}

/// FNV-1a: stable across builds and versions (file names depend on it), unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn client_config(ca_bundle: Option<&Path>) -> Result<Arc<ClientConfig>, CertError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(path).map_err(|source| CertError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        let bad = |reason: String| CertError::Unusable {
            source_name: format!("tls.acme.ca_bundle ({})", path.display()),
            reason,
        };
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| bad(format!("bad PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("not a CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no certificate in the file".into()));
        }
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| CertError::AcmeClient(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cache_file_names_are_stable_and_safe() {
        let id = directory_id("https://acme-v02.api.letsencrypt.org/directory");
        assert!(
            id.starts_with("acme-v02.api.letsencrypt.org_directory-"),
            "{id}"
        );
        assert_eq!(
            id,
            directory_id("https://acme-v02.api.letsencrypt.org/directory")
        );
        assert_ne!(
            id,
            directory_id("https://acme-staging-v02.api.letsencrypt.org/directory")
        );
        let dir = Path::new("/d");
        assert_eq!(
            cert_path(dir, &["gw.example.com".into()]),
            Path::new("/d/gw.example.com.pem")
        );
        assert_eq!(cert_path(dir, &["../x".into()]), Path::new("/d/.._x.pem"));
        assert_ne!(
            account_path(dir, &["mailto:a@b".into()]),
            account_path(dir, &[])
        );
    }
}
