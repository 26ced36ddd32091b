//! A tiny Docker Registry (HTTP API v2) on a loopback port, so tests can pull with the real
//! dockerd although no registry on the internet is reachable: dockerd treats registries on
//! 127.0.0.0/8 as insecure (plain HTTP) by default.
//!
//! It serves what a pull reads and nothing else: `GET /v2/` (the API check, or `401` with
//! `WWW-Authenticate: Basic` when auth is on and the request lacks the right `Authorization`),
//! `HEAD`/`GET /v2/<name>/manifests/<tag or digest>` (a schema2 manifest with its
//! `Docker-Content-Digest`) and `HEAD`/`GET /v2/<name>/blobs/<digest>` (the config and the
//! layers). Content is exported from a local image with `docker save`, plus one small layer
//! unique to each push (so a pull has a layer to download and makes a new image): layers are
//! served as uncompressed tars (media type `...rootfs.diff.tar`, which dockerd 20.10 accepts),
//! so their digest is their diff id and no gzip is needed. Pushes are not supported: [`Registry::push`] copies a
//! local image in directly.
//!
//! One thread accepts, one thread per connection answers (requests are small and few); the
//! server stops when the [`Registry`] is dropped. Every request line is recorded (with whether
//! it carried credentials, never the credentials) so tests can say what dockerd asked.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::{Result, TempDir, run};

const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPE: &str = "application/vnd.docker.container.image.v1+json";
const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Longest request head accepted; a pull's requests are far smaller.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Default)]
struct Content {
    /// `(repository, tag or digest)` → manifest bytes.
    manifests: HashMap<(String, String), Arc<Vec<u8>>>,
    /// Digest → blob bytes.
    blobs: HashMap<String, Arc<Vec<u8>>>,
}

struct Shared {
    content: Mutex<Content>,
    /// `Basic <base64(user:password)>` when auth is on.
    expected_auth: Option<String>,
    requests: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// A running registry.
pub struct Registry {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Registry {
    /// A registry on a free loopback port; with `auth` (`user`, `password`) it answers `401`
    /// to requests without those credentials.
    pub fn start(auth: Option<(&str, &str)>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared {
            content: Mutex::new(Content::default()),
            expected_auth: auth.map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}")))),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let serving = Arc::clone(&accepting);
                std::thread::spawn(move || serve(stream, &serving));
            }
        });
        Ok(Self { addr, shared })
    }

    /// `127.0.0.1:<port>`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The reference dockerd pulls `repository:tag` from here by.
    pub fn reference(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.host())
    }

    /// Request lines seen so far (`GET /v2/ auth=none|good|bad`).
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Serves the local image `local_image` as `repository:tag`.
    pub fn push(&self, repository: &str, tag: &str, local_image: &str) -> Result<()> {
        let dir = TempDir::new()?;
        let archive = dir.0.join("image.tar");
        run(Command::new("docker")
            .args(["save", "-o"])
            .arg(&archive)
            .arg(local_image))?;
        let root = dir.0.join("x");
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        run(Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&root))?;
        let saved: serde_json::Value = serde_json::from_slice(&read(&root.join("manifest.json"))?)
            .map_err(|e| format!("manifest.json: {e}"))?;
        let entry = &saved[0];
        let config_file = entry["Config"]
            .as_str()
            .ok_or("manifest.json has no Config")?;
        let mut config: serde_json::Value = serde_json::from_slice(&read(&root.join(config_file))?)
            .map_err(|e| format!("{config_file}: {e}"))?;
        let mut layer_files = Vec::new();
        for layer in entry["Layers"]
            .as_array()
            .ok_or("manifest.json has no Layers")?
        {
            layer_files.push(root.join(layer.as_str().ok_or("a layer is not a path")?));
        }
        // One more layer of our own, unique to this push, so that dockerd has something to
        // download (the other layers are the local image's and already present) and the pulled
        // image is a new one, removable without touching the local test image.
        let extra = root.join("extra");
        std::fs::create_dir_all(&extra).map_err(|e| e.to_string())?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        std::fs::write(
            extra.join("flowcase-registry-push"),
            format!("{repository}:{tag} {nonce}\n"),
        )
        .map_err(|e| e.to_string())?;
        let extra_tar = root.join("extra.tar");
        run(Command::new("tar")
            .arg("-cf")
            .arg(&extra_tar)
            .arg("-C")
            .arg(&extra)
            .arg("flowcase-registry-push"))?;
        layer_files.push(extra_tar);
        let mut blobs = Vec::new();
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for file in &layer_files {
            let bytes = read(file)?;
            let d = digest(&bytes);
            layers.push(serde_json::json!({
                "mediaType": LAYER_TYPE, "size": bytes.len(), "digest": d,
            }));
            diff_ids.push(serde_json::Value::String(d.clone()));
            blobs.push((d, bytes));
        }
        config["rootfs"]["diff_ids"] = serde_json::Value::Array(diff_ids);
        if let Some(history) = config["history"].as_array_mut() {
            history.push(serde_json::json!({"created_by": "flowcase test registry"}));
        }
        let config = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
        blobs.push((digest(&config), config.clone()));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": config.len(), "digest": digest(&config)},
            "layers": layers,
        });
        let manifest = Arc::new(serde_json::to_vec(&manifest).map_err(|e| e.to_string())?);
        let mut content = self
            .shared
            .content
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (d, bytes) in blobs {
            content.blobs.insert(d, Arc::new(bytes));
        }
        let manifest_digest = digest(&manifest);
        content.manifests.insert(
            (repository.to_owned(), tag.to_owned()),
            Arc::clone(&manifest),
        );
        content
            .manifests
            .insert((repository.to_owned(), manifest_digest), manifest);
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn base64(text: String) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Answers the requests of one connection (keep-alive) until it closes or goes quiet.
fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    // Bounded: a connection serves at most this many requests.
    for _ in 0..1000 {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            head.push(line.trim_end().to_owned());
            if head.iter().map(String::len).sum::<usize>() > MAX_HEAD {
                return;
            }
        }
        let Some((method, path)) = head.first().and_then(|l| {
            let mut parts = l.split(' ');
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        }) else {
            return;
        };
        let header = |name: &str| {
            head.iter().skip(1).find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        if let Some(length) = header("content-length").and_then(|l| l.parse::<u64>().ok()) {
            // No request of a pull has a body; drain one anyway to keep the connection in step.
            let _ = std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink());
        }
        let authorization = header("authorization");
        let auth_state = match (&authorization, &shared.expected_auth) {
            (None, _) => "none",
            (Some(got), Some(want)) if got == want => "good",
            (Some(_), None) => "good",
            (Some(_), Some(_)) => "bad",
        };
        shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{method} {path} auth={auth_state}"));
        let response = if shared.expected_auth.is_some() && auth_state != "good" {
            Response::unauthorized()
        } else {
            route(&path, shared)
        };
        if response.write(&mut writer, method == "HEAD").is_err() {
            return;
        }
    }
}

struct Response {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Arc<Vec<u8>>,
}

impl Response {
    fn new(status: &'static str, content_type: &str, body: Arc<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body,
        }
    }

    fn error(status: &'static str, code: &str) -> Self {
        let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{code}"}}]}}"#);
        Self::new(status, "application/json", Arc::new(body.into_bytes()))
    }

    fn unauthorized() -> Self {
        let mut r = Self::error("401 Unauthorized", "UNAUTHORIZED");
        r.headers.push((
            "WWW-Authenticate",
            r#"Basic realm="flowcase-test-registry""#.to_owned(),
        ));
        r
    }

    fn write(&self, out: &mut TcpStream, head_only: bool) -> std::io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {}\r\nContent-Length: {}\r\nDocker-Distribution-API-Version: registry/2.0\r\n",
            self.status,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        if !head_only {
            out.write_all(&self.body)?;
        }
        out.flush()
    }
}

fn route(path: &str, shared: &Shared) -> Response {
    let path = path.split('?').next().unwrap_or(path);
    if path == "/v2/" || path == "/v2" {
        return Response::new("200 OK", "application/json", Arc::new(b"{}".to_vec()));
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Response::error("404 Not Found", "NOT_FOUND");
    };
    let content = shared
        .content
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return match content
            .manifests
            .get(&(name.to_owned(), reference.to_owned()))
        {
            Some(manifest) => {
                let mut r = Response::new("200 OK", MANIFEST_TYPE, Arc::clone(manifest));
                r.headers.push(("Docker-Content-Digest", digest(manifest)));
                r
            }
            None => Response::error("404 Not Found", "MANIFEST_UNKNOWN"),
        };
    }
    if let Some((_, d)) = rest.rsplit_once("/blobs/") {
        return match content.blobs.get(d) {
            Some(blob) => {
                let mut r = Response::new("200 OK", "application/octet-stream", Arc::clone(blob));
                r.headers.push(("Docker-Content-Digest", d.to_owned()));
                r
            }
            None => Response::error("404 Not Found", "BLOB_UNKNOWN"),
        };
    }
    Response::error("404 Not Found", "NAME_UNKNOWN")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        assert_eq!(base64("f".into()), "Zg==");
        assert_eq!(base64("fo".into()), "Zm8=");
        assert_eq!(base64("foo".into()), "Zm9v");
        assert_eq!(base64("user:pass".into()), "dXNlcjpwYXNz");
    }
}
