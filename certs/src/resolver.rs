//! The SNI resolver the HTTPS listener asks for a certificate on every handshake. It reads
//! in-memory snapshots only (no I/O, no locks held across anything slow): certificate sources
//! swap new snapshots in when they load or renew a certificate, and connections already
//! established keep the certificate they were opened with.
//!
//! What a handshake gets, in order:
//! 1. a hello offering only `acme-tls/1` (a tls-alpn-01 validation): the challenge certificate of
//!    the ACME order running for that name, or nothing;
//! 2. the certificate of its own for the SNI name (ACME, one per name);
//! 3. the default certificate (self-signed or files), after telling the miss hook about the name
//!    so that an ACME order can start in the background; the next handshake gets the new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_acme::ResolvesServerCertAcme;

use crate::CertError;

/// What the readiness report and the admin pages say about the certificate being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    /// "self-signed", "files" or "acme".
    pub source: &'static str,
    pub names: Vec<String>,
    pub not_after: SystemTime,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    status: CertStatus,
}

type MissHook = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
pub struct CertResolver {
    default: ArcSwapOption<Loaded>,
    named: ArcSwap<HashMap<String, Arc<Loaded>>>,
    /// The running ACME orders by name: they hold the tls-alpn-01 challenge certificate and the
    /// http-01 key authorization while a validation is in progress.
    challenges: ArcSwap<HashMap<String, Arc<ResolvesServerCertAcme>>>,
    on_miss: ArcSwapOption<MissHook>,
    /// The name whose certificate `/readyz` reports (the public host) once it has one.
    primary: ArcSwapOption<String>,
    orders_valid: AtomicU64,
    orders_failed: AtomicU64,
    renewals: AtomicU64,
}

/// ACME orders finished since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcmeOrderCounts {
    /// Certificates issued.
    pub valid: u64,
    /// Orders the ACME server or the validation refused (rustls-acme retries them later).
    pub failed: u64,
    /// Issued certificates that replaced one still being served for the same name (a renewal
    /// before expiry); also counted in `valid`.
    pub renewed: u64,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver")
            .field("default", &self.status())
            .field("named", &self.named.load().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl CertResolver {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Replaces the certificate served to every name that has none of its own.
    pub fn set_default_pem(
        &self,
        cert_pem: &str,
        key_pem: &str,
        status: CertStatus,
    ) -> Result<(), CertError> {
        let parsed = crate::parse::parse_pem(
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            &format!("the {} certificate", status.source),
        )?;
        self.set_default(parsed.key, status);
        Ok(())
    }

    pub(crate) fn set_default(&self, key: CertifiedKey, status: CertStatus) {
        self.default.store(Some(Arc::new(Loaded {
            key: Arc::new(key),
            status,
        })));
    }

    /// Serves `key` to handshakes for exactly `name`.
    pub(crate) fn set_named(&self, name: &str, key: CertifiedKey, status: CertStatus) {
        let loaded = Arc::new(Loaded {
            key: Arc::new(key),
            status,
        });
        self.named.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(name.to_owned(), loaded.clone());
            map
        });
    }

    pub(crate) fn set_challenge_responder(&self, name: &str, acme: Arc<ResolvesServerCertAcme>) {
        self.challenges.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(name.to_owned(), acme.clone());
            map
        });
    }

    /// Stops serving the certificate of `name` and answering its challenges.
    pub(crate) fn forget(&self, name: &str) {
        self.named.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(name);
            map
        });
        self.challenges.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(name);
            map
        });
    }

    /// Called (without waiting for anything) on handshakes for names with no certificate of their
    /// own. It runs on the handshake path: it must only hand the name over, never block.
    pub(crate) fn set_miss_hook(&self, hook: MissHook) {
        self.on_miss.store(Some(Arc::new(hook)));
    }

    pub(crate) fn set_primary(&self, name: &str) {
        self.primary.store(Some(Arc::new(name.to_owned())));
    }

    /// The answer to an ACME http-01 challenge for `host`, while its validation is running.
    pub fn http01_key_authorization(&self, host: &str, token: &str) -> Option<String> {
        let challenges = self.challenges.load();
        challenges.get(host)?.get_http_01_key_auth(token)
    }

    /// Records the end of an ACME order, for the metrics.
    pub(crate) fn record_acme_order(&self, valid: bool) {
        let counter = if valid {
            &self.orders_valid
        } else {
            &self.orders_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that a newly issued certificate replaced one being served, for the metrics.
    pub(crate) fn record_acme_renewal(&self) {
        self.renewals.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `name` has a certificate of its own that has not expired at `now`.
    pub(crate) fn serves_named(&self, name: &str, now: SystemTime) -> bool {
        self.named
            .load()
            .get(name)
            .is_some_and(|loaded| loaded.status.not_after > now)
    }

    pub fn acme_orders(&self) -> AcmeOrderCounts {
        AcmeOrderCounts {
            valid: self.orders_valid.load(Ordering::Relaxed),
            failed: self.orders_failed.load(Ordering::Relaxed),
            renewed: self.renewals.load(Ordering::Relaxed),
        }
    }

    /// The certificates of the names the configuration asks for: the default one and the
    /// primary name's own. Instance hosts' on-demand certificates are left out: one per
    /// instance would make an unbounded metric label.
    pub fn configured_statuses(&self) -> Vec<CertStatus> {
        let mut statuses: Vec<CertStatus> = self
            .default
            .load()
            .iter()
            .map(|l| l.status.clone())
            .collect();
        if let Some(primary) = self.primary.load().as_deref()
            && let Some(loaded) = self.named.load().get(primary.as_str())
        {
            statuses.push(loaded.status.clone());
        }
        statuses
    }

    /// The certificate of the primary name when it has one, else the default.
    pub fn status(&self) -> Option<CertStatus> {
        if let Some(primary) = self.primary.load().as_deref()
            && let Some(loaded) = self.named.load().get(primary.as_str())
        {
            return Some(loaded.status.clone());
        }
        self.default.load().as_ref().map(|l| l.status.clone())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        if rustls_acme::is_tls_alpn_challenge(&hello) {
            // A validation handshake gets the challenge certificate or nothing: any other
            // certificate fails the validation anyway.
            let name = name?;
            let acme = self.challenges.load().get(&name).cloned()?;
            let answer = acme.resolve(hello);
            if answer.is_some() {
                tracing::info!(name = %name, "answering an ACME tls-alpn-01 validation");
            }
            return answer;
        }
        if let Some(name) = name.as_deref() {
            if let Some(loaded) = self.named.load().get(name) {
                return Some(loaded.key.clone());
            }
            if let Some(hook) = self.on_miss.load().as_deref() {
                hook(name);
            }
        }
        self.default.load().as_ref().map(|l| l.key.clone())
    }
}
