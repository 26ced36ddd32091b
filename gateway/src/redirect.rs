//! The plain-HTTP listener: sends browsers to the same URL over HTTPS. Only our own host names
//! are redirected, so the gateway cannot be used to bounce users to arbitrary sites.

use std::sync::Arc;

use async_trait::async_trait;
use flowcase_config::{Config, origin};
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::routing::{HostClass, classify, host_name};

pub struct Redirector {
    config: Arc<Config>,
}

impl Redirector {
    pub fn new(config: Arc<Config>) -> Self {
        Self { config }
    }

    /// The HTTPS URL for this request, or None when the host is not ours.
    pub fn target(&self, host: Option<&str>, path_and_query: &str) -> Option<String> {
        let host = host_name(host?)?;
        if classify(&host, &self.config.server) == HostClass::Other {
            return None;
        }
        // A request target must be origin-form here; anything else goes to the root.
        let path = if path_and_query.starts_with('/') && !path_and_query.starts_with("//") {
            path_and_query
        } else {
            "/"
        };
        Some(format!(
            "{}{path}",
            origin(&host, self.config.server.effective_https_port())
        ))
    }
}

#[async_trait]
impl ServeHttp for Redirector {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()));
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut resp = Response::new(Vec::new());
        match self.target(host, path) {
            Some(location) => {
                // 301 lets browsers remember it; 308 keeps the method and body of other requests.
                *resp.status_mut() = if matches!(req.method, Method::GET | Method::HEAD) {
                    StatusCode::MOVED_PERMANENTLY
                } else {
                    StatusCode::PERMANENT_REDIRECT
                };
                if let Ok(v) = http::HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(http::header::LOCATION, v);
                }
            }
            None => {
                *resp.status_mut() = StatusCode::NOT_FOUND;
                *resp.body_mut() = b"unknown host\n".to_vec();
            }
        }
        let len = resp.body().len();
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_our_hosts_only() {
        let r = Redirector::new(Arc::new(Config::default()));
        assert_eq!(
            r.target(Some("localhost:8080"), "/dashboard?x=1")
                .as_deref(),
            Some("https://localhost:8443/dashboard?x=1")
        );
        assert_eq!(
            r.target(Some("app1.apps.localhost"), "/").as_deref(),
            Some("https://app1.apps.localhost:8443/")
        );
        assert_eq!(r.target(Some("evil.example"), "/"), None);
        assert_eq!(r.target(None, "/"), None);
        assert_eq!(
            r.target(Some("localhost"), "//evil.example/x").as_deref(),
            Some("https://localhost:8443/")
        );
    }
}
