//! The self-signed certificate used when no other source is configured: generated once for the
//! public host and `*.<apps_domain>`, kept in `<data_dir>/tls/` so browsers that accepted it keep
//! accepting it across restarts, and generated anew only when the names change or it nears expiry.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::CertError;

/// Browsers cap server certificate lifetimes at 398 days.
const LIFETIME: Duration = Duration::from_secs(397 * 86400);
/// Regenerated when less than this is left, so a long-running install never serves an expired one.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86400);

/// A certificate chain and its private key, both PEM, and where they are kept.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_path: PathBuf,
    pub names: Vec<String>,
    pub not_after: SystemTime,
    /// True when this call generated it (first start, changed names or near expiry).
    pub generated: bool,
}

/// Loads the self-signed certificate kept in `<data_dir>/tls/`, generating it when it is missing,
/// was made for other names, or expires within 30 days of `now`.
pub fn ensure_self_signed(
    data_dir: &Path,
    names: &[String],
    now: SystemTime,
) -> Result<SelfSigned, CertError> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join("self-signed.crt");
    let key_path = dir.join("self-signed.key");
    let meta_path = dir.join("self-signed.meta");
    if let Some(kept) = read_kept(&cert_path, &key_path, &meta_path, names, now) {
        return Ok(kept);
    }
    std::fs::create_dir_all(&dir).map_err(|source| CertError::Io {
        action: "create directory",
        path: dir.clone(),
        source,
    })?;
    let not_after = now + LIFETIME;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.not_before = time::OffsetDateTime::from(now - Duration::from_secs(3600));
    params.not_after = time::OffsetDateTime::from(not_after);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name.push(
        rcgen::DnType::OrganizationName,
        "Flowcase Gateway (self-signed)",
    );
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    write_file(&key_path, key_pem.as_bytes(), 0o600)?;
    write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
    let expires = not_after
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    write_file(
        &meta_path,
        format!("{expires}\n{}\n", names.join(" ")).as_bytes(),
        0o644,
    )?;
    tracing::info!(path = %cert_path.display(), names = ?names, "generated a self-signed certificate");
    Ok(SelfSigned {
        cert_pem,
        key_pem,
        cert_path,
        names: names.to_vec(),
        not_after,
        generated: true,
    })
}

fn read_kept(
    cert_path: &Path,
    key_path: &Path,
    meta_path: &Path,
    names: &[String],
    now: SystemTime,
) -> Option<SelfSigned> {
    let meta = std::fs::read_to_string(meta_path).ok()?;
    let mut lines = meta.lines();
    let expires: u64 = lines.next()?.trim().parse().ok()?;
    let kept_names: Vec<String> = lines
        .next()?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let not_after = UNIX_EPOCH + Duration::from_secs(expires);
    if kept_names != names || not_after < now + RENEW_BEFORE {
        return None;
    }
    Some(SelfSigned {
        cert_pem: std::fs::read_to_string(cert_path).ok()?,
        key_pem: std::fs::read_to_string(key_path).ok()?,
        cert_path: cert_path.to_owned(),
        names: kept_names,
        not_after,
        generated: false,
    })
}

/// Writes through a temporary file created with its final mode, then renames: a key is never
/// readable by others, not even briefly, and a crash never leaves half a file.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let tmp = path.with_extension("tmp");
    let io = |action, source| CertError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io("create", e))?;
    file.write_all(bytes).map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("rename into", e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names() -> Vec<String> {
        vec!["localhost".into(), "*.apps.localhost".into()]
    }

    #[test]
    fn generated_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let first = ensure_self_signed(dir.path(), &names(), now).unwrap();
        assert!(first.generated);
        let mode = std::fs::metadata(dir.path().join("tls/self-signed.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = ensure_self_signed(dir.path(), &names(), now).unwrap();
        assert!(!second.generated);
        assert_eq!(first.cert_pem, second.cert_pem);
    }

    #[test]
    fn regenerated_for_new_names_or_near_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let first = ensure_self_signed(dir.path(), &names(), now).unwrap();
        let renamed = ensure_self_signed(dir.path(), &["gw.example".to_owned()], now).unwrap();
        assert!(renamed.generated);
        assert_ne!(first.cert_pem, renamed.cert_pem);
        let later = now + LIFETIME - Duration::from_secs(86400);
        assert!(
            ensure_self_signed(dir.path(), &["gw.example".to_owned()], later)
                .unwrap()
                .generated
        );
    }
}
