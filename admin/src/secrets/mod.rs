//! The gateway's secret keys: the key file that seals tokens and stored credentials.
//!
//! One key per line, `<id> <64 hex digits>`; the first line is the key new seals use, the others
//! still open what they sealed, so a key can be rotated by putting a new line first. The file is
//! generated with mode 0600 on first start and never rewritten.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::AdminError;

pub mod seal;

pub const KEY_LEN: usize = 32;

#[derive(Clone)]
pub struct Key {
    pub id: String,
    pub bytes: [u8; KEY_LEN],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

/// The keys of the key file, newest first.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// A keyring of these keys, newest first; None when empty.
    pub fn from_keys(keys: Vec<Key>) -> Option<Self> {
        (!keys.is_empty()).then_some(Self { keys })
    }

    pub fn current(&self) -> &Key {
        // A keyring is only built with at least one key.
        &self.keys[0]
    }

    pub fn by_id(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }
}

/// Creates `dir` (and its parents) with mode 0700 when it does not exist.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Reads the key file, generating it (mode 0600) when it does not exist yet.
pub fn ensure_key_file(path: &Path) -> Result<Keyring, AdminError> {
    if !path.exists() {
        if let Some(parent) = path.parent() {
            create_private_dir(parent).map_err(|e| AdminError::io(parent, e))?;
        }
        let bytes: [u8; KEY_LEN] = rand::random();
        let line = format!("k1 {}\n", hex(&bytes));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                file.write_all(line.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| AdminError::io(path, e))?;
                tracing::info!(path = %path.display(), "generated the secret key file");
            }
            // Another process created it first: read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(AdminError::io(path, e)),
        }
    }
    read_key_file(path)
}

fn read_key_file(path: &Path) -> Result<Keyring, AdminError> {
    let text = std::fs::read_to_string(path).map_err(|e| AdminError::io(path, e))?;
    let bad = |line: usize, reason: &str| AdminError::KeyFile {
        path: path.to_owned(),
        reason: format!("line {line}: {reason}"),
    };
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, hex_key) = line
            .split_once(' ')
            .ok_or_else(|| bad(i + 1, "expected `<id> <64 hex digits>`"))?;
        let bytes =
            unhex(hex_key.trim()).ok_or_else(|| bad(i + 1, "the key is not 64 hex digits"))?;
        keys.push(Key {
            id: id.to_owned(),
            bytes,
        });
    }
    if keys.is_empty() {
        return Err(bad(1, "no key in the file"));
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the secret key file is readable by other users; chmod 600 it");
    }
    Ok(Keyring { keys })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; KEY_LEN]> {
    if text.len() != KEY_LEN * 2 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_once_with_mode_0600_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret.key");
        let first = ensure_key_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = ensure_key_file(&path).unwrap();
        assert_eq!(first.current().bytes, again.current().bytes);
        assert_eq!(first.current().id, "k1");
    }

    #[test]
    fn rotation_keeps_old_keys_readable_and_bad_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        std::fs::write(
            &path,
            format!("k2 {}\nk1 {}\n", "ab".repeat(32), "01".repeat(32)),
        )
        .unwrap();
        let ring = ensure_key_file(&path).unwrap();
        assert_eq!(ring.current().id, "k2");
        assert_eq!(ring.by_id("k1").unwrap().bytes, [1u8; 32]);
        std::fs::write(&path, "k1 nothex\n").unwrap();
        let err = ensure_key_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
