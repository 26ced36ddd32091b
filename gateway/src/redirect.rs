//! The plain-HTTP listener: answers ACME http-01 challenges, and sends browsers to the same URL
//! over HTTPS. Only our own host names are redirected, so the gateway cannot be used to bounce
//! users to arbitrary sites.

use std::sync::Arc;

use async_trait::async_trait;
use flowcase_certs::CertResolver;
use flowcase_config::{Config, origin};
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::routing::{HostClass, classify, host_name};

const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

pub struct Redirector {
    config: Arc<Config>,
    /// Holds the http-01 answers of the ACME orders in progress.
    certs: Arc<CertResolver>,
}

impl Redirector {
    pub fn new(config: Arc<Config>, certs: Arc<CertResolver>) -> Self {
        Self { config, certs }
    }

    /// The key authorization for an ACME http-01 challenge request, when an order for this host
    /// is waiting for it. Only these answers are served over plain HTTP.
    fn acme_answer(&self, host: Option<&str>, path: &str) -> Option<String> {
        let token = path.strip_prefix(ACME_CHALLENGE_PREFIX)?;
        self.certs
            .http01_key_authorization(&host_name(host?)?, token)
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
        if req.uri.path().starts_with(ACME_CHALLENGE_PREFIX) {
            // Validators do not follow a redirect to a certificate that does not exist yet.
            match self.acme_answer(host, req.uri.path()) {
                Some(answer) => {
                    tracing::info!(
                        host = host.unwrap_or_default(),
                        "answering an ACME http-01 validation"
                    );
                    *resp.body_mut() = answer.into_bytes();
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/octet-stream"),
                    );
                }
                None => {
                    *resp.status_mut() = StatusCode::NOT_FOUND;
                    *resp.body_mut() = b"no such challenge\n".to_vec();
                }
            }
            let len = resp.body().len();
            resp.headers_mut()
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
            return resp;
        }
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
        let r = Redirector::new(Arc::new(Config::default()), CertResolver::new());
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
            r.acme_answer(Some("localhost"), "/.well-known/acme-challenge/abc"),
            None
        );
        assert_eq!(
            r.target(Some("localhost"), "//evil.example/x").as_deref(),
            Some("https://localhost:8443/")
        );
    }
}
