//! Droplet definitions as operators write them: the flags of `flowcase droplet add` and the
//! entries of a JSON catalogue (`flowcase droplet import FILE`), validated by one parser so both
//! accept and refuse exactly the same things.
//!
//! A catalogue is a JSON array of objects. Keys are the `add` flags without the dashes, `-`
//! turned into `_` (`--health-path` is `health_path`); flags that repeat (`--env`, `--label`,
//! `--group`, `--cap-add`, `--extra-port`) are arrays; numbers may be given as numbers or as
//! strings (flags arrive as strings). Unknown keys are errors, so a typo never silently drops a
//! setting. Every problem of an entry is reported, each naming the entry's index and the key.
//! Beyond field checks, each entry is run through [`super::spec::container_spec`], so anything
//! a launch would refuse is refused at import instead.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::spec;
use crate::error::AdminError;
use crate::store::droplets::{GuacdMode, IdleAction};
use crate::store::{Droplet, DropletType, NewDroplet, Store, TargetKind};

/// Largest warm pool a droplet may ask for.
pub const MAX_POOL_SIZE: i64 = 50;

/// The keys an entry may have, in the order the README documents them.
pub const FIELDS: [&str; 25] = [
    "name",
    "type",
    "image",
    "port",
    "extra_port",
    "cores",
    "memory",
    "pids_limit",
    "health_path",
    "profile_mount",
    "profile_path",
    "env",
    "label",
    "group",
    "idle_timeout",
    "max_lifetime",
    "idle_action",
    "pool_size",
    "pool_started",
    "cap_add",
    "read_only_root",
    "network",
    "guacd",
    "guacd_image",
    "description",
];

/// Keys accepted besides [`FIELDS`] (rarely set; kept out of the main table).
const MORE_FIELDS: [&str; 3] = ["icon", "registry", "active"];

/// Keys of external host droplets (`host` makes an entry one; its password or key is never in
/// a catalogue: `flowcase droplet add` reads it from standard input or a file).
pub const EXTERNAL_FIELDS: [&str; 4] = ["host", "username", "domain", "param"];

/// Keys that only make sense for a container (refused next to `host`).
const CONTAINER_ONLY: [&str; 18] = [
    "image",
    "extra_port",
    "cores",
    "memory",
    "pids_limit",
    "health_path",
    "profile_mount",
    "profile_path",
    "env",
    "label",
    "pool_size",
    "pool_started",
    "cap_add",
    "read_only_root",
    "network",
    "registry",
    "guacd",
    "guacd_image",
];

/// One problem with one key of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The key (`memory`, `group`, ...).
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem of one catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    /// Position in the catalogue, from 0.
    pub index: usize,
    /// The entry's name, when it has a readable one.
    pub name: Option<String>,
    /// What is wrong.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {}", self.index)?;
        if let Some(name) = &self.name {
            write!(f, " ({name:?})")?;
        }
        let parts: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        write!(f, ": {}", parts.join("; "))
    }
}

/// A valid definition: the droplet to create (its `tenant_id` is set at import) and the names
/// of the groups allowed to launch it.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The droplet.
    pub droplet: NewDroplet,
    /// Group names.
    pub groups: Vec<String>,
}

/// Collects field errors while an entry is read.
struct Reader<'a> {
    entry: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Reader<'a> {
    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_owned(),
            message: message.into(),
        });
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.entry.get(field).filter(|v| !v.is_null())
    }

    fn string(&mut self, field: &str) -> Option<String> {
        match self.get(field)? {
            Value::String(s) => Some(s.trim().to_owned()),
            other => {
                self.fail(field, format!("must be a string, not {}", kind(other)));
                None
            }
        }
    }

    fn required_string(&mut self, field: &str) -> Option<String> {
        match self.string(field) {
            Some(s) if !s.is_empty() => Some(s),
            Some(_) => {
                self.fail(field, "must not be empty");
                None
            }
            None => {
                if self.get(field).is_none() {
                    self.fail(field, "is required");
                }
                None
            }
        }
    }

    /// A whole number given as a number or a string, within `min..=max`.
    fn integer(&mut self, field: &str, min: i64, max: i64, unit: &str) -> Option<i64> {
        let value = self.get(field)?;
        let parsed = match value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.fail(
                    field,
                    format!("must be a whole number of {unit} from {min} to {max}, not {value}"),
                );
                None
            }
        }
    }

    fn port(&mut self, field: &str, value: &Value) -> Option<u16> {
        let parsed = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match parsed
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&p| p > 0)
        {
            Some(p) => Some(p),
            None => {
                self.fail(field, format!("{value} is not a TCP port (1 to 65535)"));
                None
            }
        }
    }

    fn boolean(&mut self, field: &str) -> Option<bool> {
        match self.get(field)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s == "true" => Some(true),
            Value::String(s) if s == "false" => Some(false),
            other => {
                self.fail(field, format!("must be true or false, not {other}"));
                None
            }
        }
    }

    /// A list of strings: an array, or one string.
    fn strings(&mut self, field: &str) -> Vec<String> {
        match self.get(field) {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.trim().to_owned()],
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.trim().to_owned()),
                        other => {
                            self.fail(field, format!("item {i} must be a string, not {other}"))
                        }
                    }
                }
                out
            }
            Some(other) => {
                self.fail(
                    field,
                    format!("must be an array of strings, not {}", kind(other)),
                );
                Vec::new()
            }
        }
    }

    /// `KEY=VALUE` pairs: an object, or an array of `"KEY=VALUE"` strings.
    fn pairs(&mut self, field: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match self.get(field) {
            None => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        Value::Number(_) | Value::Bool(_) => {
                            out.insert(k.clone(), v.to_string());
                        }
                        other => self.fail(field, format!("{k} must be a string, not {other}")),
                    }
                }
            }
            Some(_) => {
                for item in self.strings(field) {
                    match item.split_once('=') {
                        Some((k, v)) => {
                            out.insert(k.trim().to_owned(), v.to_owned());
                        }
                        None => self.fail(field, format!("{item:?} is not KEY=VALUE")),
                    }
                }
            }
        }
        out
    }

    /// A duration in seconds: `"30m"`, `"12h"`, `"90"` or a number of seconds; 0 = never.
    fn duration_secs(&mut self, field: &str) -> Option<i64> {
        let value = self.get(field)?;
        let parsed = match value {
            Value::Number(n) => n.as_u64().ok_or_else(|| format!("{n} is not a duration")),
            Value::String(s) => flowcase_config::Duration::parse(s).map(|d| d.get().as_secs()),
            other => Err(format!("{other} is not a duration")),
        };
        match parsed.map(i64::try_from) {
            Ok(Ok(secs)) => Some(secs),
            Ok(Err(_)) => {
                self.fail(field, "is too long");
                None
            }
            Err(message) => {
                self.fail(
                    field,
                    format!("{message} (e.g. \"30m\", \"12h\", or seconds; 0 = never)"),
                );
                None
            }
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn docker_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128
}

/// An image reference as the engine reads it: `[host[:port]/]path[:tag][@digest]`, the path
/// in lowercase components (`a-z`, `0-9`, separated by `.`, `_` or `-`), a tag of up to 128
/// word characters, dots and dashes, a digest `algorithm:hex`. Checked here so a typo is
/// refused when the droplet is written, not when a pull or launch fails later.
pub fn image_reference_ok(image: &str) -> Result<(), &'static str> {
    if image.is_empty() || image.len() > 255 {
        return Err("use 1 to 255 characters");
    }
    let (named, digest) = match image.split_once('@') {
        Some((named, digest)) => (named, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let (algorithm, hex) = digest.split_once(':').ok_or("a digest is algorithm:hex")?;
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
        if !algorithm_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("a digest is algorithm:hex (e.g. sha256: and 64 hex digits)");
        }
    }
    let last_slash = named.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match named[last_slash..].rfind(':') {
        Some(i) => (&named[..last_slash + i], Some(&named[last_slash + i + 1..])),
        None => (named, None),
    };
    if let Some(tag) = tag {
        let mut chars = tag.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok
            || tag.len() > 128
            || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(
                "a tag is up to 128 letters, digits, _, . and - (not starting with . or -)",
            );
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 && (components[0].contains(['.', ':']) || components[0] == "localhost")
    {
        let host = components.remove(0);
        let (hostname, port) = match host.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        };
        let host_ok = !hostname.is_empty()
            && hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        if !host_ok || !port_ok {
            return Err("the registry part is host[:port]");
        }
    }
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        !c.is_empty()
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
    };
    if !components.iter().all(|c| component_ok(c)) {
        return Err("the repository is lowercase letters, digits and . _ - between slashes");
    }
    Ok(())
}

/// Longest icon reference accepted.
pub const ICON_MAX: usize = 2048;

/// An icon is an `http(s)://` URL (the gateway fetches it when the droplet is saved and
/// serves it itself, see [`super::icons`]: browsers never load it from there, so a plain-http
/// source is no mixed content) or one of our own assets (`/assets/...`): never `data:` or
/// `javascript:`, and nothing that could leave an attribute or a CSS `url()` (quotes,
/// brackets, spaces, backslashes), whatever the page that shows it does.
pub fn icon_ok(icon: &str) -> Result<(), String> {
    let safe = |c: char| {
        c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '<' | '>' | '(' | ')' | '\\' | '`')
    };
    if icon.len() > ICON_MAX || !icon.chars().all(safe) {
        return Err(format!(
            "must be at most {ICON_MAX} characters without spaces, quotes or brackets"
        ));
    }
    if let Some(rest) = icon
        .strip_prefix("https://")
        .or_else(|| icon.strip_prefix("http://"))
    {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.is_empty() || host.contains('@') {
            return Err("must name a host after the scheme (and no user name)".into());
        }
        return Ok(());
    }
    if let Some(path) = icon.strip_prefix("/assets/") {
        if path.is_empty() || path.split('/').any(|part| part.is_empty() || part == "..") {
            return Err("must be a path under /assets/ without empty or .. parts".into());
        }
        return Ok(());
    }
    Err("must be an http(s):// URL or one of our /assets/ paths".into())
}

/// Millicores from a core count given as a number or a string (`1.5`, `"0.25"`).
fn millicores(value: &Value) -> Option<i64> {
    let cores = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !cores.is_finite() || cores <= 0.0 || cores > 1024.0 {
        return None;
    }
    let milli = (cores * 1000.0).round();
    // Whole millicores only; the cast is exact for values this small.
    ((milli - cores * 1000.0).abs() < 1e-6 && milli >= 1.0).then_some(milli as i64)
}

/// Reads and checks one entry (an object); the result is ready to import except for the
/// existence of its groups and the uniqueness of its name, which need the database.
pub fn parse_entry(index: usize, value: &Value) -> Result<Definition, EntryError> {
    let Value::Object(entry) = value else {
        return Err(EntryError {
            index,
            name: None,
            errors: vec![FieldError {
                field: "(entry)".into(),
                message: format!("must be an object, not {}", kind(value)),
            }],
        });
    };
    let mut r = Reader {
        entry,
        errors: Vec::new(),
    };
    for key in entry.keys() {
        let key = key.as_str();
        if key == "password" || key == "private_key" || key == "passphrase" {
            r.fail(
                key,
                "secrets are never read from a catalogue or the command line: use `flowcase \
                 droplet add --password-stdin` (or --password-file, --private-key-file)",
            );
        } else if !FIELDS.contains(&key)
            && !MORE_FIELDS.contains(&key)
            && !EXTERNAL_FIELDS.contains(&key)
        {
            r.fail(
                key,
                format!(
                    "unknown field (known: {}, {}, {})",
                    FIELDS.join(", "),
                    MORE_FIELDS.join(", "),
                    EXTERNAL_FIELDS.join(", ")
                ),
            );
        }
    }
    if r.get("host").is_some() {
        return parse_external(index, r);
    }

    let name = r.required_string("name");
    if let Some(n) = &name
        && (n.chars().count() > 100 || n.chars().any(char::is_control))
    {
        r.fail(
            "name",
            "must be at most 100 characters, without control characters",
        );
    }
    let droplet_type = r.required_string("type").and_then(|t| {
        let parsed = t.parse::<DropletType>().ok();
        if parsed.is_none() {
            r.fail("type", format!("{t:?} is not one of http, vnc, rdp, ssh"));
        }
        parsed
    });
    let image = r.required_string("image");
    if let Some(i) = &image
        && let Err(why) = image_reference_ok(i)
    {
        r.fail("image", format!("{i:?} is not an image reference: {why}"));
    }
    let port = match r.get("port") {
        Some(v) => r.port("port", v),
        None => {
            r.fail("port", "is required");
            None
        }
    };
    let mut ports: Vec<u16> = port.into_iter().collect();
    let extra: Vec<&Value> = match r.get("extra_port") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one) => vec![one],
        None => Vec::new(),
    };
    for v in extra {
        if let Some(p) = r.port("extra_port", v)
            && !ports.contains(&p)
        {
            ports.push(p);
        }
    }
    let cpu_millicores = r.get("cores").and_then(|v| {
        let m = millicores(v);
        if m.is_none() {
            r.fail(
                "cores",
                format!("{v} is not a CPU count above 0 (up to 1024, at most 3 decimals)"),
            );
        }
        m
    });
    let memory_mb = r.integer("memory", 6, 4 * 1024 * 1024, "MiB");
    let pids_limit = r.integer("pids_limit", 1, 1 << 22, "processes");
    let health_path = r.string("health_path").filter(|p| !p.is_empty());
    if let Some(p) = &health_path {
        if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            r.fail(
                "health_path",
                format!("{p:?} must be a path starting with /"),
            );
        }
        if droplet_type.is_some_and(|t| t != DropletType::Http) {
            r.fail("health_path", "only http droplets have a health path");
        }
    }
    let profile_mount = r.string("profile_mount").filter(|m| !m.is_empty());
    if let Some(m) = &profile_mount
        && let Err(AdminError::InvalidInput { reason, .. }) = spec::validate_mount(m)
    {
        r.fail("profile_mount", reason);
    }
    let profile_path = r.string("profile_path").filter(|p| !p.is_empty());
    if profile_path.is_some() && profile_mount.is_none() {
        r.fail(
            "profile_path",
            "names the profile volume, which needs profile_mount",
        );
    }
    let env = r.pairs("env");
    for key in env.keys() {
        if !env_name_ok(key) {
            r.fail("env", format!("{key:?} is not a variable name"));
        }
    }
    if let Some(var) = droplet_type.and_then(spec::password_env)
        && env.contains_key(var)
    {
        r.fail(
            "env",
            format!("{var} is set by Flowcase (a new random password per instance)"),
        );
    }
    let labels = r.pairs("label");
    for (key, value) in &labels {
        if super::placement::is_placement_label(key) {
            if let Err(reason) = super::placement::constraint(value) {
                r.fail("label", format!("{key}: {reason}"));
            }
        } else if key.starts_with("flowcase.") || key.is_empty() {
            r.fail(
                "label",
                format!(
                    "{key:?}: labels starting with flowcase. are Flowcase's own \
                     (except flowcase.placement[.<name>], a placement constraint)"
                ),
            );
        }
    }
    let groups = r.strings("group");
    if groups.iter().any(String::is_empty) {
        r.fail("group", "group names must not be empty");
    }
    let idle_timeout_secs = r.duration_secs("idle_timeout");
    let max_lifetime_secs = r.duration_secs("max_lifetime");
    let idle_action = r.string("idle_action").and_then(|a| {
        let parsed = a.parse::<IdleAction>().ok();
        if parsed.is_none() {
            r.fail("idle_action", format!("{a:?} is not stop or destroy"));
        }
        parsed
    });
    let pool_size = r.integer("pool_size", 0, MAX_POOL_SIZE, "containers");
    let pool_started = r.boolean("pool_started");
    let cap_add = r.strings("cap_add");
    if let Err(AdminError::InvalidInput { reason, .. }) = spec::validate_caps(&cap_add) {
        r.fail("cap_add", reason);
    }
    let read_only_root = r.boolean("read_only_root");
    let network = r.string("network").filter(|n| !n.is_empty());
    if let Some(n) = &network
        && !docker_name_ok(n)
    {
        r.fail("network", format!("{n:?} is not a Docker network name"));
    }
    let description = r.string("description").unwrap_or_default();
    if description.chars().count() > 2000 {
        r.fail("description", "must be at most 2000 characters");
    }
    let icon = r.string("icon").filter(|i| !i.is_empty());
    if let Some(i) = &icon
        && let Err(message) = icon_ok(i)
    {
        r.fail("icon", message);
    }
    let registry = r.string("registry").filter(|i| !i.is_empty());
    let active = r.boolean("active");
    if pool_size.unwrap_or(0) > 0 && profile_mount.is_some() {
        r.fail(
            "pool_size",
            "a warm pool cannot hold per-user profiles: drop profile_mount or set pool_size 0",
        );
    }
    if pool_started == Some(true) && pool_size.unwrap_or(0) == 0 {
        r.fail("pool_started", "needs a pool_size above 0");
    }
    let guacd = r.string("guacd").filter(|g| !g.is_empty()).and_then(|g| {
        let parsed = g.parse::<GuacdMode>().ok();
        if parsed.is_none() {
            r.fail("guacd", format!("{g:?} is not shared or sidecar"));
        }
        parsed
    });
    let guacd_image = r.string("guacd_image").filter(|i| !i.is_empty());
    if let Some(i) = &guacd_image {
        if let Err(why) = image_reference_ok(i) {
            r.fail(
                "guacd_image",
                format!("{i:?} is not an image reference: {why}"),
            );
        }
        if guacd != Some(GuacdMode::Sidecar) {
            r.fail(
                "guacd_image",
                "is the image of a guacd sidecar: needs guacd sidecar",
            );
        }
    }
    if guacd == Some(GuacdMode::Sidecar) {
        if droplet_type == Some(DropletType::Http) {
            r.fail(
                "guacd",
                "only desktop droplets (vnc, rdp, ssh) are opened through guacd",
            );
        }
        if pool_size.unwrap_or(0) > 0 {
            r.fail(
                "pool_size",
                "a warm pool does not start guacd sidecars: set pool_size 0 or guacd shared",
            );
        }
        if network.is_some() {
            r.fail(
                "network",
                "each instance of a guacd sidecar droplet gets a private network with its \
                 sidecar: drop network or set guacd shared",
            );
        }
    }

    let (Some(name), Some(droplet_type), Some(image)) = (name.clone(), droplet_type, image) else {
        return Err(EntryError {
            index,
            name,
            errors: r.errors,
        });
    };
    let mut droplet = NewDroplet::new(0, name.clone(), droplet_type, TargetKind::Container);
    droplet.description = description;
    droplet.image = Some(image);
    droplet.registry = registry;
    droplet.cpu_millicores = cpu_millicores;
    droplet.memory_mb = memory_mb;
    droplet.ports = ports;
    droplet.env = env;
    droplet.labels = labels;
    droplet.profile_path = profile_path;
    droplet.network = network;
    droplet.idle_timeout_secs = idle_timeout_secs;
    droplet.max_lifetime_secs = max_lifetime_secs;
    droplet.pool_size = pool_size.unwrap_or(0);
    droplet.icon = icon;
    droplet.active = active.unwrap_or(true);
    droplet.cap_add = cap_add;
    droplet.read_only_root = read_only_root.unwrap_or(false);
    droplet.pids_limit = pids_limit;
    droplet.health_path = health_path;
    droplet.profile_mount = profile_mount;
    droplet.idle_action = idle_action.unwrap_or(IdleAction::Stop);
    droplet.pool_started = pool_started.unwrap_or(false);
    droplet.guacd = guacd.unwrap_or(GuacdMode::Shared);
    droplet.guacd_image = guacd_image;

    // Whatever a launch would refuse is refused now (only when the fields themselves passed,
    // so one mistake is not reported twice).
    if r.errors.is_empty()
        && let Err(e) = spec::container_spec(&preview(&droplet), &preview_input())
    {
        let (field, message) = match e {
            AdminError::InvalidInput { field, reason } => (catalogue_field(field), reason),
            other => ("(entry)", other.to_string()),
        };
        r.fail(field, message);
    }
    if r.errors.is_empty() {
        Ok(Definition { droplet, groups })
    } else {
        Err(EntryError {
            index,
            name: Some(name),
            errors: r.errors,
        })
    }
}

/// The catalogue key for a droplet field named in a spec error.
fn catalogue_field(field: &'static str) -> &'static str {
    match field {
        "cpu_millicores" => "cores",
        "memory_mb" => "memory",
        "labels" => "label",
        other => other,
    }
}

/// The droplet `new` would become (id 0), for checks that need a whole droplet.
pub(crate) fn preview(new: &NewDroplet) -> Droplet {
    Droplet {
        id: 0,
        tenant_id: new.tenant_id,
        name: new.name.clone(),
        description: new.description.clone(),
        droplet_type: new.droplet_type,
        target: new.target,
        image: new.image.clone(),
        registry: new.registry.clone(),
        cpu_millicores: new.cpu_millicores,
        memory_mb: new.memory_mb,
        ports: new.ports.clone(),
        env: new.env.clone(),
        labels: new.labels.clone(),
        profile_path: new.profile_path.clone(),
        network: new.network.clone(),
        idle_timeout_secs: new.idle_timeout_secs,
        max_lifetime_secs: new.max_lifetime_secs,
        pool_size: new.pool_size,
        icon: new.icon.clone(),
        active: new.active,
        external_host: new.external_host.clone(),
        external_port: new.external_port,
        external_username: new.external_username.clone(),
        external_credentials: new.external_credentials.clone(),
        cap_add: new.cap_add.clone(),
        read_only_root: new.read_only_root,
        pids_limit: new.pids_limit,
        health_path: new.health_path.clone(),
        profile_mount: new.profile_mount.clone(),
        idle_action: new.idle_action,
        pool_started: new.pool_started,
        external_domain: new.external_domain.clone(),
        external_params: new.external_params.clone(),
        guacd: new.guacd,
        guacd_image: new.guacd_image.clone(),
        created_at: 0,
        updated_at: 0,
    }
}

fn preview_input() -> spec::SpecInput<'static> {
    spec::SpecInput {
        slug: "preview",
        user_id: 1,
        user_name: "preview",
        network: "preview",
        exposure: super::engine::Exposure::LoopbackEphemeral,
        password: None,
        deployment: "preview",
        installation: "preview",
    }
}

/// A host name or address: letters, digits, `.`, `-`, `_`, or an IPv6 address (`:`; brackets
/// allowed).
fn host_ok(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    !bare.is_empty()
        && bare.len() <= 253
        && (bare.parse::<std::net::Ipv6Addr>().is_ok()
            || bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
}

/// An entry with `host`: an external VNC, RDP or SSH host (no container).
fn parse_external(index: usize, mut r: Reader<'_>) -> Result<Definition, EntryError> {
    let name = r.required_string("name");
    if let Some(n) = &name
        && (n.chars().count() > 100 || n.chars().any(char::is_control))
    {
        r.fail(
            "name",
            "must be at most 100 characters, without control characters",
        );
    }
    let droplet_type = r.required_string("type").and_then(|t| match t.parse() {
        Ok(DropletType::Http) => {
            r.fail(
                "type",
                "an external host is a vnc, rdp or ssh desktop; web apps are containers",
            );
            None
        }
        Ok(kind) => Some(kind),
        Err(_) => {
            r.fail("type", format!("{t:?} is not one of vnc, rdp, ssh"));
            None
        }
    });
    for key in CONTAINER_ONLY {
        if r.get(key).is_some() {
            r.fail(key, "only container droplets have this (not with host)");
        }
    }
    let host = r.required_string("host");
    if let Some(h) = &host
        && !host_ok(h)
    {
        r.fail("host", format!("{h:?} is not a host name or address"));
    }
    let port = match r.get("port") {
        Some(v) => r.port("port", v),
        None => droplet_type.map(|kind| {
            let bare = NewDroplet::new(0, "", kind, TargetKind::External);
            spec::upstream_port(&preview(&bare))
        }),
    };
    let username = r.string("username").filter(|u| !u.is_empty());
    if let Some(u) = &username
        && (u.chars().count() > 256 || u.chars().any(char::is_control))
    {
        r.fail(
            "username",
            "must be at most 256 characters, without control characters",
        );
    }
    let domain = r.string("domain").filter(|d| !d.is_empty());
    if domain.is_some() && droplet_type.is_some_and(|t| t != DropletType::Rdp) {
        r.fail("domain", "only rdp hosts have a domain");
    }
    if let Some(d) = &domain
        && (d.chars().count() > 256 || d.chars().any(char::is_control))
    {
        r.fail(
            "domain",
            "must be at most 256 characters, without control characters",
        );
    }
    let params = r.pairs("param");
    for key in params.keys() {
        let own = [
            "hostname",
            "port",
            "username",
            "password",
            "private-key",
            "passphrase",
            "domain",
        ];
        if own.contains(&key.as_str()) {
            r.fail(
                "param",
                format!("{key:?} is set from the droplet's own fields"),
            );
        } else if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            r.fail("param", format!("{key:?} is not a guacd parameter name"));
        }
    }
    let idle_timeout_secs = r.duration_secs("idle_timeout");
    let max_lifetime_secs = r.duration_secs("max_lifetime");
    let idle_action = r.string("idle_action").and_then(|a| {
        let parsed = a.parse::<IdleAction>().ok();
        if parsed.is_none() {
            r.fail("idle_action", format!("{a:?} is not stop or destroy"));
        }
        parsed
    });
    let groups = r.strings("group");
    if groups.iter().any(String::is_empty) {
        r.fail("group", "group names must not be empty");
    }
    let description = r.string("description").unwrap_or_default();
    if description.chars().count() > 2000 {
        r.fail("description", "must be at most 2000 characters");
    }
    let icon = r.string("icon").filter(|i| !i.is_empty());
    if let Some(i) = &icon
        && let Err(message) = icon_ok(i)
    {
        r.fail("icon", message);
    }
    let active = r.boolean("active");
    let (Some(name), Some(droplet_type), Some(host), Some(port), true) =
        (name.clone(), droplet_type, host, port, r.errors.is_empty())
    else {
        return Err(EntryError {
            index,
            name,
            errors: r.errors,
        });
    };
    let mut droplet = NewDroplet::new(0, name, droplet_type, TargetKind::External);
    droplet.description = description;
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    droplet.external_host = Some(bare.map_or(host.clone(), str::to_owned));
    droplet.external_port = Some(port);
    droplet.external_username = username;
    droplet.external_domain = domain;
    droplet.external_params = params;
    droplet.idle_timeout_secs = idle_timeout_secs;
    droplet.max_lifetime_secs = max_lifetime_secs;
    droplet.idle_action = idle_action.unwrap_or(IdleAction::Stop);
    droplet.icon = icon;
    droplet.active = active.unwrap_or(true);
    Ok(Definition { droplet, groups })
}

/// A droplet as the catalogue entry that would define it (without its groups and secrets),
/// so a change can be applied to it and the whole result checked again by [`parse_entry`]:
/// an edit meets exactly the checks of a creation.
pub fn entry_of(droplet: &Droplet) -> Map<String, Value> {
    let mut entry = Map::new();
    let mut put = |key: &str, value: Value| {
        if !value.is_null() {
            entry.insert(key.to_owned(), value);
        }
    };
    put("name", Value::from(droplet.name.clone()));
    put("type", Value::from(droplet.droplet_type.as_str()));
    if !droplet.description.is_empty() {
        put("description", Value::from(droplet.description.clone()));
    }
    put("icon", serde_json::json!(droplet.icon));
    put("active", Value::from(droplet.active));
    put("idle_timeout", serde_json::json!(droplet.idle_timeout_secs));
    put("max_lifetime", serde_json::json!(droplet.max_lifetime_secs));
    if droplet.idle_action != IdleAction::Stop {
        put("idle_action", Value::from(droplet.idle_action.as_str()));
    }
    if droplet.target == TargetKind::External {
        put("host", serde_json::json!(droplet.external_host));
        put("port", serde_json::json!(droplet.external_port));
        put("username", serde_json::json!(droplet.external_username));
        put("domain", serde_json::json!(droplet.external_domain));
        if !droplet.external_params.is_empty() {
            put("param", serde_json::json!(droplet.external_params));
        }
        return entry;
    }
    put("image", serde_json::json!(droplet.image));
    put("registry", serde_json::json!(droplet.registry));
    if let Some((first, rest)) = droplet.ports.split_first() {
        put("port", Value::from(*first));
        if !rest.is_empty() {
            put("extra_port", serde_json::json!(rest));
        }
    }
    put(
        "cores",
        serde_json::json!(droplet.cpu_millicores.map(|m| m as f64 / 1000.0)),
    );
    put("memory", serde_json::json!(droplet.memory_mb));
    put("pids_limit", serde_json::json!(droplet.pids_limit));
    put("health_path", serde_json::json!(droplet.health_path));
    put("profile_mount", serde_json::json!(droplet.profile_mount));
    put("profile_path", serde_json::json!(droplet.profile_path));
    if !droplet.env.is_empty() {
        put("env", serde_json::json!(droplet.env));
    }
    if !droplet.labels.is_empty() {
        put("label", serde_json::json!(droplet.labels));
    }
    if droplet.pool_size > 0 {
        put("pool_size", Value::from(droplet.pool_size));
    }
    if droplet.pool_started {
        put("pool_started", Value::from(true));
    }
    if !droplet.cap_add.is_empty() {
        put("cap_add", serde_json::json!(droplet.cap_add));
    }
    if droplet.read_only_root {
        put("read_only_root", Value::from(true));
    }
    put("network", serde_json::json!(droplet.network));
    if droplet.guacd != GuacdMode::Shared {
        put("guacd", Value::from(droplet.guacd.as_str()));
    }
    put("guacd_image", serde_json::json!(droplet.guacd_image));
    entry
}

/// Reads a catalogue: a JSON array of entries. Returns one result per entry, in order, or an
/// error when the document itself is not a catalogue.
pub fn parse_catalogue(text: &str) -> Result<Vec<Result<Definition, EntryError>>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Array(entries) = value else {
        return Err(format!(
            "a catalogue is a JSON array of droplet objects, not {}",
            kind(&value)
        ));
    };
    Ok(entries
        .iter()
        .enumerate()
        .map(|(i, entry)| parse_entry(i, entry))
        .collect())
}

/// Creates a checked definition in `tenant_id` and grants its groups. Returns the droplet, or
/// the field errors only the database can find (unknown group, name taken).
pub async fn create(
    store: &Store,
    tenant_id: i64,
    definition: &Definition,
    now: i64,
) -> crate::error::Result<Result<Droplet, Vec<FieldError>>> {
    let mut errors = Vec::new();
    let mut group_ids = Vec::new();
    for name in &definition.groups {
        match store.find_group_by_name(tenant_id, name).await? {
            Some(group) => group_ids.push(group.id),
            None => errors.push(FieldError {
                field: "group".into(),
                message: format!("no group named {name:?}"),
            }),
        }
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let mut new = definition.droplet.clone();
    new.tenant_id = tenant_id;
    let droplet = match store.create_droplet(&new, now).await {
        Ok(droplet) => droplet,
        Err(AdminError::Conflict(_)) => {
            return Ok(Err(vec![FieldError {
                field: "name".into(),
                message: format!("a droplet named {:?} already exists", new.name),
            }]));
        }
        Err(e) => return Err(e),
    };
    for group_id in group_ids {
        store.grant_droplet(droplet.id, group_id).await?;
    }
    Ok(Ok(droplet))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn fields(result: Result<Definition, EntryError>) -> Vec<String> {
        result
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_full_entry_becomes_a_droplet() {
        let def = parse_entry(
            0,
            &json!({
                "name": "Firefox", "type": "http", "image": "firefox:1", "port": 8080,
                "extra_port": [9000], "cores": 1.5, "memory": "512", "health_path": "/health",
                "env": {"LANG": "C.UTF-8"}, "label": ["team=blue"], "group": ["User"],
                "idle_timeout": "30m", "max_lifetime": 3600, "idle_action": "destroy",
                "pool_size": 2, "pool_started": true, "cap_add": ["chown"],
                "read_only_root": true, "description": "A browser"
            }),
        )
        .unwrap();
        let d = def.droplet;
        assert_eq!(d.cpu_millicores, Some(1500));
        assert_eq!(d.memory_mb, Some(512));
        assert_eq!(d.ports, vec![8080, 9000]);
        assert_eq!(d.env["LANG"], "C.UTF-8");
        assert_eq!(d.labels["team"], "blue");
        assert_eq!(d.idle_timeout_secs, Some(1800));
        assert_eq!(d.max_lifetime_secs, Some(3600));
        assert_eq!(d.idle_action, IdleAction::Destroy);
        assert_eq!((d.pool_size, d.pool_started), (2, true));
        assert_eq!(d.cap_add, vec!["chown"]);
        assert_eq!(def.groups, vec!["User"]);
    }

    #[test]
    fn every_problem_of_an_entry_is_named_by_its_field() {
        let errors = fields(parse_entry(
            3,
            &json!({
                "name": "x", "type": "telnet", "port": 0, "memory": "lots", "cores": -1,
                "idle_timeout": "soon", "colour": "red", "env": ["NOEQUALS"],
                "label": {"flowcase.user": "1"}, "cap_add": ["SYS_ADMIN"]
            }),
        ));
        for field in [
            "type",
            "image",
            "port",
            "memory",
            "cores",
            "idle_timeout",
            "colour",
            "env",
            "label",
            "cap_add",
        ] {
            assert!(errors.iter().any(|f| f == field), "{field}: {errors:?}");
        }
        let err = parse_entry(3, &json!({"name": "n", "type": "vnc"})).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("entry 3 (\"n\"): "), "{shown}");
        assert!(shown.contains("image: is required"), "{shown}");
    }

    #[test]
    fn placement_labels_are_the_only_flowcase_labels_and_are_checked() {
        let entry = |labels: Value| {
            parse_entry(
                0,
                &json!({"name": "g", "type": "http", "image": "i", "port": 80, "label": labels}),
            )
        };
        let def = entry(json!({"flowcase.placement.gpu": "node.labels.gpu==true"})).unwrap();
        assert_eq!(
            def.droplet.labels["flowcase.placement.gpu"],
            "node.labels.gpu==true"
        );
        let err = entry(json!({"flowcase.placement": "gpu"})).unwrap_err();
        assert_eq!(err.errors[0].field, "label");
        assert!(
            err.errors[0].message.contains("no == or !="),
            "{}",
            err.errors[0].message
        );
        assert_eq!(
            fields(entry(json!({"flowcase.placementx": "node.role==worker"}))),
            ["label"]
        );
    }

    #[test]
    fn a_guacd_sidecar_is_for_desktop_containers_without_pool_or_network() {
        let entry = |extra: Value| {
            let mut v = json!({"name": "d", "type": "vnc", "image": "i", "port": 5900});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parse_entry(0, &v)
        };
        let d = entry(json!({"guacd": "sidecar", "guacd_image": "reg.test/guacd:1.5.5"}))
            .unwrap()
            .droplet;
        assert_eq!(d.guacd, GuacdMode::Sidecar);
        assert_eq!(d.guacd_image.as_deref(), Some("reg.test/guacd:1.5.5"));
        assert_eq!(entry(json!({})).unwrap().droplet.guacd, GuacdMode::Shared);
        // What an edit starts from says the same again.
        let back = entry_of(&preview(&d));
        assert_eq!(
            (back["guacd"].as_str(), back["guacd_image"].as_str()),
            (Some("sidecar"), Some("reg.test/guacd:1.5.5"))
        );
        assert_eq!(fields(entry(json!({"guacd": "own"}))), ["guacd"]);
        assert_eq!(
            fields(entry(json!({"guacd_image": "g:1"}))),
            ["guacd_image"]
        );
        assert_eq!(
            fields(entry(
                json!({"guacd": "sidecar", "guacd_image": "bad image"})
            )),
            ["guacd_image"]
        );
        assert_eq!(
            fields(entry(json!({"guacd": "sidecar", "pool_size": 1}))),
            ["pool_size"]
        );
        assert_eq!(
            fields(entry(json!({"guacd": "sidecar", "network": "lan"}))),
            ["network"]
        );
        assert_eq!(
            fields(entry(
                json!({"guacd": "sidecar", "type": "http", "port": 80})
            )),
            ["guacd"]
        );
        let external = parse_entry(
            0,
            &json!({"name": "h", "type": "rdp", "host": "h.test", "guacd": "sidecar"}),
        );
        assert_eq!(fields(external), ["guacd"]);
    }

    #[test]
    fn pools_and_profiles_exclude_each_other_and_templates_need_the_user() {
        let base = json!({"name": "d", "type": "vnc", "image": "i", "port": 5900});
        let with = |extra: Value| {
            let mut v = base.clone();
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parse_entry(0, &v)
        };
        assert_eq!(
            fields(with(json!({"pool_size": 1, "profile_mount": "/home/u"}))),
            vec!["pool_size"]
        );
        assert_eq!(
            fields(with(
                json!({"profile_mount": "/home/u", "profile_path": "shared"})
            )),
            vec!["profile_path"]
        );
        assert_eq!(
            fields(with(json!({"env": {"VNC_PASSWORD": "x"}}))),
            vec!["env"]
        );
        assert_eq!(
            fields(with(json!({"health_path": "/h"}))),
            vec!["health_path"]
        );
        assert!(with(json!({"pool_size": 3, "pool_started": true})).is_ok());
    }

    #[test]
    fn a_catalogue_is_an_array_and_each_entry_stands_alone() {
        assert!(parse_catalogue("{}").unwrap_err().contains("array"));
        assert!(parse_catalogue("[").unwrap_err().contains("JSON"));
        let results = parse_catalogue(
            r#"[{"name":"a","type":"http","image":"i","port":80}, 5,
                {"name":"b","type":"ssh","image":"i","port":"22"}]"#,
        )
        .unwrap();
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().unwrap_err().index, 1);
        assert!(results[2].is_ok());
    }

    #[test]
    fn external_hosts_take_host_fields_and_never_secrets() {
        let def = parse_entry(
            0,
            &json!({"name": "Win", "type": "rdp", "host": "10.0.0.5", "username": "bob",
                    "domain": "CORP", "param": {"security": "nla"}, "group": ["User"]}),
        )
        .unwrap();
        let d = def.droplet;
        assert_eq!(d.target, TargetKind::External);
        assert_eq!(d.external_host.as_deref(), Some("10.0.0.5"));
        assert_eq!(d.external_port, Some(3389), "the protocol's usual port");
        assert_eq!(d.external_domain.as_deref(), Some("CORP"));
        assert_eq!(d.external_params["security"], "nla");
        assert_eq!(d.image, None);

        let errors = fields(parse_entry(
            1,
            &json!({"name": "x", "type": "vnc", "host": "bad host!", "image": "i",
                    "domain": "CORP", "password": "hunter2", "param": {"password": "p"}}),
        ));
        for field in ["host", "image", "domain", "password", "param"] {
            assert!(errors.iter().any(|f| f == field), "{field}: {errors:?}");
        }
        let err = parse_entry(2, &json!({"name": "w", "type": "http", "host": "h"})).unwrap_err();
        assert!(err.to_string().contains("type"), "{err}");
        assert!(
            !parse_entry(
                3,
                &json!({"name": "y", "type": "vnc", "host": "h", "password": "hunter2"})
            )
            .unwrap_err()
            .to_string()
            .contains("hunter2"),
            "a refused secret is not echoed"
        );
        assert!(
            parse_entry(
                4,
                &json!({"name": "v6", "type": "ssh", "host": "[::1]", "port": 2222})
            )
            .is_ok()
        );
    }

    #[test]
    fn image_references_follow_the_engine_grammar() {
        for good in [
            "i",
            "debian",
            "library/debian:12",
            "ghcr.io/flowcase/firefox:latest",
            "127.0.0.1:5000/a/b:v1",
            "localhost/a_b/c-d.e:1.0_rc-2",
            "a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a/b:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(image_reference_ok(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "has space:1",
            "Upper/Case:1",
            "a//b",
            "a/b:",
            "a/b:-x",
            "-a/b",
            "a/b@sha256:xyz",
            "registry.example:99999/a:1",
            "a/b:tag:more",
            &"a".repeat(256),
        ] {
            assert!(image_reference_ok(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn icons_are_web_urls_or_our_assets() {
        assert!(icon_ok("https://cdn.example/icons/firefox.svg").is_ok());
        assert!(icon_ok("http://cdn.example/a.png").is_ok());
        assert!(icon_ok("/assets/icons/firefox.svg").is_ok());
        for bad in [
            "ftp://cdn.example/a.png",
            "http://",
            "javascript:alert(1)",
            "data:image/png;base64,AAAA",
            "https://",
            "https://user@evil.example/a.png",
            "/assets/../secret",
            "/etc/passwd",
            "https://a.example/x\" onerror=\"alert(1)",
            "icon.png",
        ] {
            assert!(icon_ok(bad).is_err(), "{bad}");
        }
        let entry = json!({"name": "A", "type": "http", "image": "a:1", "port": 80,
                           "icon": "javascript:alert(1)"});
        assert_eq!(fields(parse_entry(0, &entry)), ["icon"]);
    }

    #[test]
    fn a_droplet_reads_back_as_the_entry_that_defines_it() {
        let entries = [
            json!({"name": "Web", "type": "http", "image": "a/b:1", "port": 8080,
                   "extra_port": [9000], "cores": 1.5, "memory": 512, "env": {"A": "1"},
                   "label": {"team": "x"}, "idle_timeout": 600, "health_path": "/ok",
                   "icon": "/assets/web.svg", "active": false, "description": "d"}),
            json!({"name": "Win", "type": "rdp", "host": "win.example", "port": 3390,
                   "username": "bob", "domain": "CORP", "param": {"security": "nla"}}),
        ];
        for entry in entries {
            let first = parse_entry(0, &entry).unwrap();
            let again = parse_entry(0, &Value::Object(entry_of(&preview(&first.droplet))));
            assert_eq!(again.unwrap().droplet, first.droplet, "{entry}");
        }
    }

    #[test]
    fn cores_are_whole_millicores() {
        assert_eq!(millicores(&json!(0.25)), Some(250));
        assert_eq!(millicores(&json!("2")), Some(2000));
        assert_eq!(millicores(&json!(0.0001)), None);
        assert_eq!(millicores(&json!(0)), None);
        assert_eq!(millicores(&json!("many")), None);
    }
}
