//! Droplet catalogues fetched from a URL and imported entry by entry: the admin API's
//! `POST /api/v1/droplets/import`, and `flowcase droplet import FILE` (which reads a file
//! instead of fetching, then imports the same way).
//!
//! Owns the fetch (http or https only, at most [`MAX_CATALOGUE_BYTES`], [`FETCH_TIMEOUT`] for
//! the whole exchange, a few redirects), the reading of the two formats a catalogue may come in,
//! and the import with one result per entry:
//!
//! - **ours**: the JSON array `flowcase droplet import` reads (see [`super::catalogue`]);
//! - **the Python Flowcase registry's** `droplets.json`: an array (or `{"droplets": [...]}`) of
//!   objects keyed `display_name`, `description`, `image_path`, `droplet_type`,
//!   `container_docker_image`, `container_docker_registry`, `container_cores`,
//!   `container_memory`, `server_ip`, `server_port`, `server_username`. Each such entry is
//!   translated to ours, then meets exactly the checks of ours (a relative `image_path` is
//!   taken relative to the catalogue's URL, and must then be https like any icon).
//!
//! Every entry is validated whole before anything is written: an entry with one bad field is
//! reported `invalid` with every problem and nothing of it is created; an entry whose name is
//! taken in the tenant is `skipped`; the others are `imported` (or `would_import` in a dry
//! run). A remote catalogue is untrusted input: its strings are stored as given and escaped by
//! whatever shows them, and its secrets (`server_password`) are refused, never stored.

use std::collections::BTreeSet;
use std::time::Duration;

use openidconnect::reqwest;
use serde::Serialize;
use serde_json::{Map, Value};

use super::catalogue::{self, FieldError};
use crate::error::{AdminError, Result};
use crate::store::Store;

/// Largest catalogue read; a longer answer is refused, not truncated.
pub const MAX_CATALOGUE_BYTES: usize = 1 << 20;
/// Time allowed for connecting, the answer and its body together.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most entries one import considers.
pub const MAX_ENTRIES: usize = 1000;
/// Longest URL accepted.
const URL_MAX: usize = 2048;

fn bad_url(reason: impl Into<String>) -> AdminError {
    AdminError::InvalidInput {
        field: "url",
        reason: reason.into(),
    }
}

/// Checks the URL of a catalogue: absolute, http or https, with a host and no user name or
/// password (which would end up in logs and the audit log).
pub fn parse_url(raw: &str) -> Result<reqwest::Url> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > URL_MAX {
        return Err(bad_url(format!("use 1 to {URL_MAX} characters")));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| bad_url(format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad_url("must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad_url("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad_url(
            "must not carry a user name or password (they would be logged)",
        ));
    }
    Ok(url)
}

/// Fetches a catalogue's text, bounded in size and time. Failures are `invalid_input` on
/// `url`, worded for the administrator who typed it.
pub async fn fetch(url: &reqwest::Url) -> Result<String> {
    let client = reqwest::ClientBuilder::new()
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .map_err(|e| AdminError::Engine(format!("cannot set up an HTTP client: {e}")))?;
    let fetching = async {
        let mut response = client
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| bad_url(format!("cannot fetch the catalogue: {}", without_url(e))))?;
        if !response.status().is_success() {
            return Err(bad_url(format!(
                "the catalogue server answered {}",
                response.status()
            )));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_CATALOGUE_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| bad_url(format!("cannot read the catalogue: {}", without_url(e))))?
        {
            if body.len() + chunk.len() > MAX_CATALOGUE_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| bad_url("the catalogue is not UTF-8 text"))
    };
    tokio::time::timeout(FETCH_TIMEOUT, fetching)
        .await
        .unwrap_or_else(|_| {
            Err(bad_url(format!(
                "the catalogue did not arrive within {} s",
                FETCH_TIMEOUT.as_secs()
            )))
        })
}

fn too_large() -> AdminError {
    bad_url(format!(
        "the catalogue is larger than {} KiB",
        MAX_CATALOGUE_BYTES / 1024
    ))
}

/// A reqwest error's words, with its causes, without the URL it carries (the administrator
/// already knows it).
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

/// One catalogue entry as read: ours as is, a Python registry entry translated to ours, and
/// which format it came in (to name its fields as the catalogue spells them).
#[derive(Debug, Clone, PartialEq)]
pub struct RawEntry {
    pub value: Value,
    pub python: bool,
}

/// The entries of a catalogue document: a JSON array, or an object with a `droplets` array.
/// `base` (the catalogue's URL) resolves relative icon paths of Python registry entries;
/// without one they stay as written (and are refused as icons). The error says why the
/// document is no catalogue.
pub fn entries(
    text: &str,
    base: Option<&reqwest::Url>,
) -> std::result::Result<Vec<RawEntry>, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the catalogue is not valid JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut map) => match map.remove("droplets") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(
                    "the catalogue must be a JSON array of droplets, or an object with \
                            a \"droplets\" array"
                        .into(),
                );
            }
        },
        _ => return Err("the catalogue must be a JSON array of droplets".into()),
    };
    if items.len() > MAX_ENTRIES {
        return Err(format!(
            "the catalogue has {} entries; at most {MAX_ENTRIES} are imported at once",
            items.len()
        ));
    }
    Ok(items
        .into_iter()
        .map(|item| match item {
            Value::Object(map) if is_python_entry(&map) => RawEntry {
                value: Value::Object(from_python(map, base)),
                python: true,
            },
            other => RawEntry {
                value: other,
                python: false,
            },
        })
        .collect())
}

/// Keys only the Python registry format has.
const PYTHON_KEYS: [&str; 6] = [
    "display_name",
    "container_docker_image",
    "container_docker_registry",
    "image_path",
    "droplet_type",
    "server_ip",
];

fn is_python_entry(map: &Map<String, Value>) -> bool {
    PYTHON_KEYS.iter().any(|k| map.contains_key(*k))
}

/// Our key for a Python registry key, and back (for error messages).
const PYTHON_RENAMES: [(&str, &str); 12] = [
    ("display_name", "name"),
    ("droplet_type", "type"),
    ("container_docker_image", "image"),
    ("container_cores", "cores"),
    ("container_memory", "memory"),
    ("container_network", "network"),
    ("image_path", "icon"),
    ("server_ip", "host"),
    ("server_port", "port"),
    ("server_username", "username"),
    ("server_password", "password"),
    ("is_active", "active"),
];

/// The Python registry key a field of ours came from, for the reports of Python entries.
pub fn python_field(ours: &str) -> &str {
    // `port` is also what a container entry adds to say its app's port: kept as is.
    if ours == "port" {
        return ours;
    }
    PYTHON_RENAMES
        .iter()
        .find(|(_, o)| *o == ours)
        .map_or(ours, |(p, _)| p)
}

/// Memory as the Python version wrote it: MiB as a number, or `"2g"`, `"512m"`.
fn python_memory(value: Value) -> Value {
    let Value::String(text) = &value else {
        return value;
    };
    let lower = text.trim().to_ascii_lowercase();
    let parsed = if let Some(g) = lower.strip_suffix('g') {
        g.trim()
            .parse::<i64>()
            .ok()
            .and_then(|g| g.checked_mul(1024))
    } else if let Some(m) = lower.strip_suffix('m') {
        m.trim().parse::<i64>().ok()
    } else {
        None
    };
    parsed.map_or(value, Value::from)
}

/// A Python registry entry in our format. Keys we do not know are kept, so the parser names
/// them as unknown rather than the import dropping them silently.
fn from_python(mut map: Map<String, Value>, base: Option<&reqwest::Url>) -> Map<String, Value> {
    map.remove("id");
    let registry = map
        .remove("container_docker_registry")
        .and_then(|v| v.as_str().map(|s| s.trim().to_owned()))
        .filter(|r| !r.is_empty());
    let mut out = Map::new();
    for (key, value) in map {
        let ours = PYTHON_RENAMES
            .iter()
            .find(|(p, _)| *p == key)
            .map_or(key.as_str(), |(_, o)| o);
        let value = match ours {
            // Python's "container" droplets are web apps and web desktops: our `http`.
            "type" if value.as_str() == Some("container") => Value::from("http"),
            "memory" => python_memory(value),
            "icon" => match (value.as_str().map(str::trim), base) {
                (Some(path), Some(base)) if !path.is_empty() && !path.contains("://") => base
                    .join(path)
                    .map_or(value.clone(), |u| Value::from(u.to_string())),
                _ => value,
            },
            _ => value,
        };
        out.insert(ours.to_owned(), value);
    }
    // The Python version pulled `<registry>/<image>`; Docker Hub needs no prefix.
    if let (Some(registry), Some(Value::String(image))) = (registry, out.get("image").cloned()) {
        let host = registry
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let hub = matches!(
            host.as_str(),
            "docker.io" | "index.docker.io" | "registry-1.docker.io" | "hub.docker.com"
        );
        let names_host = image
            .split_once('/')
            .is_some_and(|(first, _)| first.contains(['.', ':']) || first == "localhost");
        if !hub && !names_host {
            out.insert("image".into(), Value::from(format!("{host}/{image}")));
        }
    }
    out
}

/// What became of one entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EntryResult {
    /// Position in the catalogue, from 0.
    pub index: usize,
    /// The entry's name, when it has a readable one.
    pub name: Option<String>,
    /// `imported`, `would_import` (dry run), `skipped` or `invalid`.
    pub status: &'static str,
    /// The new droplet's id (`imported` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every problem of an invalid entry, each naming its field as the catalogue spells it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<EntryFieldError>,
    /// Why the entry's icon could not be fetched (the droplet is imported all the same and
    /// shows its initial instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon_error: Option<String>,
}

/// One problem of an invalid entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EntryFieldError {
    pub field: String,
    pub reason: String,
}

/// The outcome of an import.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImportReport {
    pub dry_run: bool,
    pub imported: usize,
    pub skipped: usize,
    pub invalid: usize,
    pub entries: Vec<EntryResult>,
}

fn field_errors(errors: Vec<FieldError>, python: bool) -> Vec<EntryFieldError> {
    errors
        .into_iter()
        .map(|e| {
            let field = if python {
                python_field(&e.field).to_owned()
            } else {
                e.field
            };
            let reason = if python && field == "port" && e.message == "is required" {
                "is required: the Python registry format does not say which port the app \
                 listens on; add \"port\" to the entry"
                    .to_owned()
            } else {
                e.message
            };
            EntryFieldError { field, reason }
        })
        .collect()
}

/// Imports `entries` into `tenant_id`: each checked whole (see the module documentation);
/// with `dry_run`, nothing is written and valid entries are reported `would_import`.
pub async fn import(
    store: &Store,
    tenant_id: i64,
    entries: Vec<RawEntry>,
    dry_run: bool,
    now: i64,
) -> Result<ImportReport> {
    let mut taken: BTreeSet<String> = store
        .list_droplets()
        .await?
        .into_iter()
        .filter(|d| d.tenant_id == tenant_id)
        .map(|d| d.name)
        .collect();
    let mut report = ImportReport {
        dry_run,
        imported: 0,
        skipped: 0,
        invalid: 0,
        entries: Vec::new(),
    };
    for (index, entry) in entries.into_iter().enumerate() {
        let mut result = EntryResult {
            index,
            name: None,
            status: "invalid",
            id: None,
            reason: None,
            errors: Vec::new(),
            icon_error: None,
        };
        match catalogue::parse_entry(index, &entry.value) {
            Err(e) => {
                result.name = e.name;
                result.errors = field_errors(e.errors, entry.python);
            }
            Ok(definition) => {
                let name = definition.droplet.name.clone();
                result.name = Some(name.clone());
                let mut missing = Vec::new();
                for group in &definition.groups {
                    if store.find_group_by_name(tenant_id, group).await?.is_none() {
                        missing.push(FieldError {
                            field: "group".into(),
                            message: format!("no group named {group:?} in this tenant"),
                        });
                    }
                }
                if !missing.is_empty() {
                    result.errors = field_errors(missing, entry.python);
                } else if taken.contains(&name) {
                    result.status = "skipped";
                    result.reason = Some(format!("a droplet named {name:?} already exists"));
                } else if dry_run {
                    result.status = "would_import";
                    taken.insert(name);
                } else {
                    match catalogue::create(store, tenant_id, &definition, now).await? {
                        Ok(droplet) => {
                            result.status = "imported";
                            result.id = Some(droplet.id);
                            taken.insert(name);
                        }
                        Err(errors) => result.errors = field_errors(errors, entry.python),
                    }
                }
            }
        }
        match result.status {
            "imported" | "would_import" => report.imported += 1,
            "skipped" => report.skipped += 1,
            _ => report.invalid += 1,
        }
        report.entries.push(result);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn base() -> reqwest::Url {
        reqwest::Url::parse("https://registry.example/flowcase/droplets.json").unwrap()
    }

    #[test]
    fn urls_are_http_or_https_without_credentials() {
        assert!(parse_url("https://registry.example/droplets.json").is_ok());
        assert!(parse_url(" http://127.0.0.1:8000/c.json ").is_ok());
        for bad in [
            "",
            "file:///etc/passwd",
            "ftp://a.example/c.json",
            "https://user:pw@a.example/c.json",
            "javascript:alert(1)",
            "/relative/c.json",
        ] {
            match parse_url(bad) {
                Err(AdminError::InvalidInput { field: "url", .. }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn python_registry_entries_become_ours() {
        let text = json!({"droplets": [{
            "id": "x",
            "display_name": "Firefox",
            "description": "A browser",
            "droplet_type": "container",
            "container_docker_image": "flowcase/firefox:latest",
            "container_docker_registry": "ghcr.io",
            "container_cores": 2,
            "container_memory": "2g",
            "image_path": "icons/firefox.png",
            "port": 6901
        }]})
        .to_string();
        let entries = entries(&text, Some(&base())).unwrap();
        assert!(entries[0].python);
        assert_eq!(
            entries[0].value,
            json!({"name": "Firefox", "description": "A browser", "type": "http",
                   "image": "ghcr.io/flowcase/firefox:latest", "cores": 2, "memory": 2048,
                   "icon": "https://registry.example/flowcase/icons/firefox.png", "port": 6901})
        );
        let parsed = catalogue::parse_entry(0, &entries[0].value).unwrap();
        assert_eq!(parsed.droplet.cpu_millicores, Some(2000));
    }

    #[test]
    fn python_fields_are_reported_by_their_own_names() {
        let text = json!([{"display_name": "Old", "container_docker_image": "a:1",
                           "server_password": "pw"}])
        .to_string();
        let entry = entries(&text, Some(&base())).unwrap().remove(0);
        let errors = catalogue::parse_entry(0, &entry.value).unwrap_err().errors;
        let fields: Vec<String> = field_errors(errors, true)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert!(fields.contains(&"server_password".to_owned()), "{fields:?}");
        assert!(fields.contains(&"droplet_type".to_owned()), "{fields:?}");
    }

    #[test]
    fn documents_that_are_not_catalogues_are_refused() {
        for text in ["{", "42", "{\"items\": []}"] {
            assert!(entries(text, Some(&base())).is_err(), "{text}");
        }
        let many = Value::Array(vec![json!({}); MAX_ENTRIES + 1]).to_string();
        assert!(entries(&many, Some(&base())).is_err());
    }
}
