//! Validation of an OpenAPI document by an independent implementation: the npm package
//! `@seriousme/openapi-schema-validator` (pinned in tests/peers/openapi/package-lock.json),
//! which checks the document against the official JSON Schema of its OpenAPI version and
//! resolves every `$ref`. `scripts/test` runs `npm ci` there; when `node_modules` is missing this
//! runs it once (a single test uses the peer, so there is no race to guard against).

use std::path::{Path, PathBuf};
use std::process::Command;

/// tests/peers/openapi.
pub fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/openapi")
}

fn ensure_node_modules(dir: &Path) {
    if dir.join("node_modules/.package-lock.json").exists() {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run npm ({e}): run `npm ci` in {} (scripts/test does)",
                dir.display()
            )
        });
    assert!(
        out.status.success(),
        "`npm ci` in {} failed ({}):\n{}{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Validates `document` (JSON text): `Ok("valid 3.1")`, or `Err` with the validator's errors.
pub fn validate(document: &str) -> Result<String, String> {
    let dir = peer_dir();
    ensure_node_modules(&dir);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), document).unwrap();
    let node = std::env::var("FLOWCASE_TEST_NODE").unwrap_or_else(|_| "node".to_owned());
    let out = Command::new(&node)
        .arg("validate.mjs")
        .arg(file.path())
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {node} ({e}): the OpenAPI validator needs Node.js (apt-get install nodejs npm; scripts/test installs them)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
    }
}
