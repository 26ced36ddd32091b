//! Reading the configuration: the TOML file, then `FLOWCASE_<SECTION>__<KEY>` environment
//! overrides, then validation. Every error names where the value came from (file and line, or
//! the environment variable), the dotted key and what was expected.

use std::path::{Path, PathBuf};

use crate::model::Config;

/// Environment variables with this prefix and a `__` separator override config keys.
pub const ENV_PREFIX: &str = "FLOWCASE_";

/// Where a bad value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File { path: PathBuf, line: Option<usize> },
    Env { var: String },
    Defaults,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{}, line {line}", path.display()),
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::Env { var } => write!(f, "environment variable {var}"),
            Origin::Defaults => f.write_str("built-in defaults"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config error in {origin}: {}{reason}", key_prefix(key))]
    Invalid {
        origin: Origin,
        /// Dotted key (`server.https_listen`); empty for a syntax error outside any key.
        key: String,
        reason: String,
    },
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("key `{key}`: ")
    }
}

impl ConfigError {
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } => None,
        }
    }
}

/// Loads the file (or the built-in defaults when `path` is `None`), applies the environment
/// overrides found in `env`, and validates the result.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
            path: p.to_owned(),
            source,
        })?,
        None => String::new(),
    };
    let source = Source { path, text: &text };
    let file_config: Config = source.parse_text()?;
    let overrides = env_overrides(env)?;
    let config = if overrides.is_empty() {
        file_config
    } else {
        source.apply_overrides(&overrides)?
    };
    config.validate().map_err(|invalid| {
        let origin = overrides
            .iter()
            .find(|o| o.key == invalid.key)
            .map(|o| Origin::Env { var: o.var.clone() })
            .unwrap_or_else(|| source.origin_of_key(&invalid.key));
        ConfigError::Invalid {
            origin,
            key: invalid.key,
            reason: invalid.reason,
        }
    })?;
    Ok(config)
}

/// One `FLOWCASE_A__B=value` variable, as a dotted key and its raw text.
#[derive(Debug)]
struct Override {
    var: String,
    key: String,
    value: String,
}

fn env_overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, ConfigError> {
    let mut overrides = Vec::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        // Variables without a section separator (FLOWCASE_CONFIG, test settings) are not keys.
        if !rest.contains("__") {
            continue;
        }
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if parts.iter().any(String::is_empty) {
            return Err(ConfigError::Invalid {
                origin: Origin::Env { var: var.clone() },
                key: parts.join("."),
                reason: "empty key segment (expected FLOWCASE_<SECTION>__<KEY>)".into(),
            });
        }
        overrides.push(Override {
            key: parts.join("."),
            var,
            value,
        });
    }
    overrides.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(overrides)
}

struct Source<'a> {
    path: Option<&'a Path>,
    text: &'a str,
}

impl Source<'_> {
    fn origin(&self, line: Option<usize>) -> Origin {
        match self.path {
            Some(p) => Origin::File {
                path: p.to_owned(),
                line,
            },
            None => Origin::Defaults,
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// The file and the line that set `key`, when the file sets it.
    fn origin_of_key(&self, key: &str) -> Origin {
        let line = toml::de::DeTable::parse(self.text).ok().and_then(|root| {
            let mut parts = key.split('.').map(split_index);
            let (first, first_index) = parts.next()?;
            let mut node = root.get_ref().get(first)?;
            if let Some(i) = first_index {
                node = node.get_ref().get(i)?;
            }
            for (name, index) in parts {
                node = node.get_ref().get(name)?;
                if let Some(i) = index {
                    node = node.get_ref().get(i)?;
                }
            }
            Some(self.line_of(node.span().start))
        });
        self.origin(line)
    }

    fn parse_text(&self) -> Result<Config, ConfigError> {
        let de = toml::de::Deserializer::parse(self.text).map_err(|e| self.toml_error(&e, ""))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            self.toml_error(e.inner(), &key)
        })
    }

    fn toml_error(&self, error: &toml::de::Error, key: &str) -> ConfigError {
        let line = error.span().map(|s| self.line_of(s.start));
        let (key, reason) = explain(key, error.message());
        ConfigError::Invalid {
            origin: self.origin(line),
            key,
            reason,
        }
    }

    fn apply_overrides(&self, overrides: &[Override]) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(self.text).map_err(|e| self.toml_error(&e, ""))?;
        // A value is read as a TOML literal when it is one (numbers, booleans, arrays) and as a
        // string otherwise; when the literal has the wrong type for its key, the string is tried.
        let mut as_string = vec![false; overrides.len()];
        loop {
            for (o, &string) in overrides.iter().zip(&as_string) {
                insert(&mut table, &o.key, env_value(&o.value, string)).map_err(|reason| {
                    ConfigError::Invalid {
                        origin: Origin::Env { var: o.var.clone() },
                        key: o.key.clone(),
                        reason,
                    }
                })?;
            }
            let result: Result<Config, _> =
                serde_path_to_error::deserialize(toml::Value::Table(table.clone()));
            let error = match result {
                Ok(config) => return Ok(config),
                Err(e) => e,
            };
            let (key, reason) = explain(&error.path().to_string(), error.inner().message());
            let Some(i) = overrides.iter().position(|o| o.key == key) else {
                return Err(ConfigError::Invalid {
                    origin: self.origin_of_key(&key),
                    key,
                    reason,
                });
            };
            if as_string[i] || toml_literal(&overrides[i].value).is_none() {
                return Err(ConfigError::Invalid {
                    origin: Origin::Env {
                        var: overrides[i].var.clone(),
                    },
                    key,
                    reason,
                });
            }
            as_string[i] = true;
        }
    }
}

/// serde names an unknown key in its message, not in the path: put it in the key, and say what
/// the valid keys are in plain words.
fn explain(path: &str, message: &str) -> (String, String) {
    let path = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        let key = if path.is_empty() || path.ends_with(field) {
            path.trim_end_matches(&format!(".{field}")).to_owned()
        } else {
            path.to_owned()
        };
        let key = if key.is_empty() || key == field {
            field.to_owned()
        } else {
            format!("{key}.{field}")
        };
        let expected = expected.trim_start_matches(", ");
        return (key, format!("unknown key ({expected})"));
    }
    (path.to_owned(), message.trim().to_owned())
}

fn split_index(part: &str) -> (&str, Option<usize>) {
    match part.split_once('[') {
        Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
        None => (part, None),
    }
}

fn toml_literal(raw: &str) -> Option<toml::Value> {
    let doc: toml::Table = toml::from_str(&format!("v = {raw}")).ok()?;
    doc.get("v").cloned()
}

fn env_value(raw: &str, force_string: bool) -> toml::Value {
    if force_string {
        return toml::Value::String(raw.to_owned());
    }
    toml_literal(raw).unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn insert(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else {
        return Err("empty key".into());
    };
    let mut node = table;
    for part in parts {
        let entry = node
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{part}` is not a section")),
        };
    }
    node.insert(last.to_owned(), value);
    Ok(())
}
