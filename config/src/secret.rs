//! A configuration value that must never be printed: passwords, client secrets, database URLs
//! with credentials. Debug and Serialize show a redacted form; only `expose` gives the value.

use serde::{Deserialize, Serialize};

#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// URLs keep everything but the password (`postgres://user:***@host/db`), so operators can
    /// still see where they point; anything else is replaced whole.
    pub fn redacted(&self) -> String {
        let value = &self.0;
        if value.is_empty() {
            return String::new();
        }
        if let Some((scheme, rest)) = value.split_once("://") {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            return match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                    format!("{scheme}://{user}:***@{host}{path}")
                }
                None => value.clone(),
            };
        }
        "***".into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({:?})", self.redacted())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_user_and_host_but_not_password() {
        let s = Secret::new("postgres://flowcase:hunter2@db.internal:5432/flowcase");
        assert_eq!(
            s.redacted(),
            "postgres://flowcase:***@db.internal:5432/flowcase"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn plain_secrets_are_hidden_whole() {
        assert_eq!(Secret::new("s3cret").redacted(), "***");
        assert_eq!(Secret::new("").redacted(), "");
        assert_eq!(
            Secret::new("sqlite://./data/x.db").redacted(),
            "sqlite://./data/x.db"
        );
    }
}
