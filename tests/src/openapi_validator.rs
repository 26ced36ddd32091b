//! Validation of an OpenAPI document by an independent implementation: the npm package
//! `@seriousme/openapi-schema-validator` (pinned in tests/peers/openapi/package-lock.json),
//! which checks the document against the official JSON Schema of its OpenAPI version and
//! resolves every `$ref`; and real answers of the binary against the schemas the document gives
//! for them (with ajv, JSON Schema 2020-12). `scripts/test` runs `npm ci` there; when
//! `node_modules` is missing this runs it once (one test uses the peer, so there is no race to
//! guard against).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

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

/// A real answer to check against the document.
pub struct Answer {
    /// Lower case, as the document's keys (`get`, `post`, …).
    pub method: String,
    /// The path as the document writes it (`/api/v1/users/{id}`).
    pub path: String,
    pub status: u16,
    /// `null` when the answer had no body.
    pub body: Value,
}

/// Validates `document` (JSON text) and, when given, `answers` against it: `Ok` with the
/// validator's report (`valid 3.1`, then `answers N`), or `Err` with what is wrong.
pub fn validate(document: &str, answers: &[Answer]) -> Result<String, String> {
    let dir = peer_dir();
    ensure_node_modules(&dir);
    let doc_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(doc_file.path(), document).unwrap();
    let answers_file = tempfile::NamedTempFile::new().unwrap();
    let answers: Vec<Value> = answers
        .iter()
        .map(|a| json!({"method": a.method, "path": a.path, "status": a.status, "body": a.body}))
        .collect();
    std::fs::write(answers_file.path(), Value::Array(answers).to_string()).unwrap();
    let node = std::env::var("FLOWCASE_TEST_NODE").unwrap_or_else(|_| "node".to_owned());
    let mut command = Command::new(&node);
    command.arg("validate.mjs").arg(doc_file.path());
    if !answers_file_is_empty(answers_file.path()) {
        command.arg(answers_file.path());
    }
    let out = command.current_dir(&dir).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {node} ({e}): the OpenAPI validator needs Node.js \
             (apt-get install nodejs npm; scripts/test installs them)"
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn answers_file_is_empty(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s == "[]")
}
