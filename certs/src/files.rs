//! Certificate and key from files (`tls.mode = "files"`): a wildcard from a DNS-01 tool, a
//! corporate CA. Renewal tools replace the files in place; the gateway notices by polling their
//! metadata (no inotify: it misses renames over bind mounts and symlink swaps, as certbot's
//! `live/` links are) and on SIGHUP, loads them, and swaps the new certificate in. A file that
//! does not parse, or a key that does not match, keeps the certificate served so far.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::server::ShutdownWatch;
use tokio::signal::unix::{SignalKind, signal};

use crate::{CertError, CertResolver, CertStatus};

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified_ns: i128,
    len: u64,
    inode: u64,
    device: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        // `metadata` follows symlinks: a link re-pointed to a new file changes the stamp.
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            len: meta.len(),
            inode: meta.ino(),
            device: meta.dev(),
        })
    }
}

type Stamps = (Option<Stamp>, Option<Stamp>);

pub struct FileSource {
    cert_path: PathBuf,
    key_path: PathBuf,
    resolver: Arc<CertResolver>,
    /// The files' stamps at the last load attempt, good or bad: a bad file is reported once, not
    /// on every poll.
    seen: Mutex<Stamps>,
}

impl FileSource {
    pub fn new(cert_path: PathBuf, key_path: PathBuf, resolver: Arc<CertResolver>) -> Self {
        Self {
            cert_path,
            key_path,
            resolver,
            seen: Mutex::new((None, None)),
        }
    }

    fn stamps(&self) -> Stamps {
        (Stamp::of(&self.cert_path), Stamp::of(&self.key_path))
    }

    /// Reads both files and serves them. On error nothing changes.
    pub fn load(&self) -> Result<CertStatus, CertError> {
        // Stamped before reading: a write landing during the read changes the stamp again and is
        // picked up by the next poll.
        let stamps = self.stamps();
        if let Ok(mut seen) = self.seen.lock() {
            *seen = stamps;
        }
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| CertError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            })
        };
        let cert = read(&self.cert_path)?;
        let key = read(&self.key_path)?;
        let parsed = crate::parse::parse_pem(
            &cert,
            &key,
            &format!(
                "{} and {}",
                self.cert_path.display(),
                self.key_path.display()
            ),
        )?;
        let status = CertStatus {
            source: "files",
            names: parsed.names,
            not_after: parsed.not_after,
        };
        self.resolver.set_default(parsed.key, status.clone());
        Ok(status)
    }

    fn changed(&self) -> bool {
        let now = self.stamps();
        self.seen.lock().map(|seen| *seen != now).unwrap_or(true)
    }

    fn reload(&self, why: &str) {
        match self.load() {
            Ok(status) => tracing::info!(
                reason = why,
                cert_file = %self.cert_path.display(),
                names = ?status.names,
                not_after = ?status.not_after,
                "reloaded the TLS certificate from files"
            ),
            Err(e) => tracing::error!(
                reason = why,
                error = %e,
                "cannot reload the TLS certificate; still serving the previous one"
            ),
        }
    }

    /// Polls the files every `interval` and reloads on SIGHUP, until shutdown.
    pub async fn watch(&self, interval: Duration, mut shutdown: ShutdownWatch) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; certificate files are only polled");
                None
            }
        };
        tracing::info!(
            cert_file = %self.cert_path.display(),
            key_file = %self.key_path.display(),
            every = ?interval,
            sighup = hangup.is_some(),
            "watching the certificate files"
        );
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if self.changed() {
                        self.reload("the files changed");
                    }
                }
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                } => self.reload("SIGHUP"),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write_cert(dir: &Path, name: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    }

    #[test]
    fn a_bad_file_keeps_the_served_certificate() {
        let dir = tempfile::tempdir().unwrap();
        write_cert(dir.path(), "one.example");
        let resolver = CertResolver::new();
        let source = FileSource::new(
            dir.path().join("cert.pem"),
            dir.path().join("key.pem"),
            resolver.clone(),
        );
        source.load().unwrap();
        assert!(!source.changed());
        std::fs::write(dir.path().join("cert.pem"), "garbage").unwrap();
        assert!(source.changed());
        assert!(source.load().is_err());
        assert!(!source.changed(), "a bad version is reported once");
        assert_eq!(resolver.status().unwrap().names, ["one.example"]);
        write_cert(dir.path(), "two.example");
        assert!(source.changed());
        source.load().unwrap();
        assert_eq!(resolver.status().unwrap().names, ["two.example"]);
        assert_eq!(resolver.status().unwrap().source, "files");
    }
}
