//! Which part of the product a request is for, decided by its host name alone: the public
//! host (control plane), an instance host `<slug>.<apps_domain>`, or nothing of ours.

use flowcase_config::ServerConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostClass {
    Public,
    Instance { slug: String },
    Other,
}

impl HostClass {
    /// Low-cardinality label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HostClass::Public => "public",
            HostClass::Instance { .. } => "instance",
            HostClass::Other => "other",
        }
    }
}

/// The host name of a `Host` header value or URI authority: port removed, lower-cased.
/// None for anything that is not a plain DNS name (IP literals, userinfo, junk).
pub fn host_name(raw: &str) -> Option<String> {
    let name = match raw.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => raw,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    valid.then_some(name)
}

pub fn classify(host: &str, server: &ServerConfig) -> HostClass {
    if host == server.public_host.as_str() {
        return HostClass::Public;
    }
    let apps = server.apps_domain.as_str();
    match host.strip_suffix(apps).and_then(|s| s.strip_suffix('.')) {
        // One label only: `a.b.apps.example` is not an instance host.
        Some(slug) if !slug.is_empty() && !slug.contains('.') => HostClass::Instance {
            slug: slug.to_owned(),
        },
        _ => HostClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_hosts() {
        let server = ServerConfig::default();
        let class = |raw: &str| host_name(raw).map(|h| classify(&h, &server));
        assert_eq!(class("localhost:8443"), Some(HostClass::Public));
        assert_eq!(class("LOCALHOST"), Some(HostClass::Public));
        assert_eq!(
            class("abc123.apps.localhost:8443"),
            Some(HostClass::Instance {
                slug: "abc123".into()
            })
        );
        assert_eq!(class("a.b.apps.localhost"), Some(HostClass::Other));
        assert_eq!(class("apps.localhost"), Some(HostClass::Other));
        assert_eq!(class("evil.example"), Some(HostClass::Other));
        assert_eq!(class("xapps.localhost"), Some(HostClass::Other));
        assert_eq!(class("user@localhost"), None);
        assert_eq!(class("[::1]:8443"), None);
        assert_eq!(class(""), None);
    }
}
