//! Authentication and request-forgery checks for every request, in one middleware, and the
//! extractors handlers use to get at the result.
//!
//! The middleware resolves the principal once (API key or session cookie), refuses
//! state-changing requests that fail the origin or CSRF check, and leaves a [`RequestAuth`] in
//! the request's extensions. Handlers take [`ApiUser`] (401 JSON when anonymous), [`PageUser`]
//! (redirect to the login page when anonymous) or [`RequestAuth`] itself.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::AppState;
use super::error::ApiError;
use crate::auth::{ClientInfo, Principal, Via, csrf};
use crate::error::AdminError;
use crate::store::now_millis;

/// Form bodies are read whole to find their CSRF field; nothing legitimate posts more.
const MAX_FORM_BYTES: usize = 1 << 20;

/// Response header naming the user a request was made as, for the front door's access log
/// (which cannot tell from the outside); the front door takes it off before the browser sees it.
pub const USER_HEADER: &str = "x-flowcase-user";

/// What the middleware learned about a request.
#[derive(Debug, Clone)]
pub struct RequestAuth {
    pub principal: Option<Principal>,
    pub client: ClientInfo,
}

/// Requests that change state: every unsafe method, and the legacy destroy-by-GET route that old
/// clients still call (it gets the same checks as a DELETE).
fn changes_state(method: &Method, path: &str) -> bool {
    let legacy_destroy =
        method == Method::GET && path.starts_with("/api/instance/") && path.ends_with("/destroy");
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || legacy_destroy
}

fn client_info(headers: &HeaderMap) -> ClientInfo {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    ClientInfo {
        // The front door replaces whatever the client sent with the address it saw; nothing
        // but the front door can reach this app.
        addr: text("x-forwarded-for"),
        user_agent: text("user-agent"),
    }
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
}

/// Answers a refused request as the client expects: JSON for API calls, a page for forms.
fn refuse(path: &str, headers: &HeaderMap, error: AdminError) -> Response {
    if path.starts_with("/api/") || !is_form(headers) {
        ApiError(error).into_response()
    } else {
        let (status, _) = super::error::classify(&error);
        super::pages::error_page(status, &super::error::public_message(&error))
    }
}

pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let now = now_millis();
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let client = client_info(&parts.headers);
    let presented_bearer = parts.headers.contains_key(header::AUTHORIZATION);
    let principal = match state.auth.authenticate(&parts.headers, now).await {
        Ok(p) => p,
        Err(e) => return refuse(&path, &parts.headers, e),
    };
    if presented_bearer && principal.is_none() {
        return ApiError(AdminError::Unauthenticated).into_response();
    }
    let mut body = body;
    let by_api_key = matches!(
        principal,
        Some(Principal {
            via: Via::ApiKey { .. },
            ..
        })
    );
    if changes_state(&parts.method, &path) && !by_api_key {
        let origin = parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let referer = parts
            .headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok());
        if !csrf::same_origin(state.auth.public_origin(), origin, referer) {
            return refuse(
                &path,
                &parts.headers,
                AdminError::Csrf("the request does not come from this site"),
            );
        }
        if let Some(principal) = &principal {
            let (token, restored) = match presented_csrf_token(&parts.headers, body).await {
                Ok(found) => found,
                Err(e) => return refuse(&path, &parts.headers, e),
            };
            body = restored;
            if !token.is_some_and(|t| state.auth.csrf_valid(principal, &t)) {
                return refuse(
                    &path,
                    &parts.headers,
                    AdminError::Csrf("missing or wrong CSRF token"),
                );
            }
        }
    }
    let user = principal
        .as_ref()
        .and_then(|p| header::HeaderValue::from_bytes(p.user.username.as_bytes()).ok());
    parts.extensions.insert(RequestAuth { principal, client });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if let Some(user) = user {
        response.headers_mut().insert(USER_HEADER, user);
    }
    response
}

/// The CSRF token from the header, or else from the form body (which is read and handed back).
async fn presented_csrf_token(
    headers: &HeaderMap,
    body: Body,
) -> Result<(Option<String>, Body), AdminError> {
    if let Some(token) = headers.get(csrf::HEADER).and_then(|v| v.to_str().ok()) {
        return Ok((Some(token.to_owned()), body));
    }
    if !is_form(headers) {
        return Ok((None, body));
    }
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| AdminError::InvalidInput {
            field: "body",
            reason: "the form is too large".into(),
        })?;
    let token = form_urlencoded_field(&bytes, csrf::FORM_FIELD);
    Ok((token, Body::from(bytes)))
}

fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

impl<S: Send + Sync> FromRequestParts<S> for RequestAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<RequestAuth>()
            .cloned()
            .ok_or(ApiError(AdminError::Unauthenticated))
    }
}

/// A logged-in user for an API handler; anonymous requests get 401 JSON, never a redirect.
pub struct ApiUser(pub Principal, pub ClientInfo);

impl<S: Send + Sync> FromRequestParts<S> for ApiUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = RequestAuth::from_request_parts(parts, state).await?;
        match auth.principal {
            Some(p) => Ok(ApiUser(p, auth.client)),
            None => Err(ApiError(AdminError::Unauthenticated)),
        }
    }
}

/// A logged-in user for a page; anonymous browsers are sent to the login page, which brings
/// them back here afterwards.
pub struct PageUser(pub Principal, pub ClientInfo);

pub struct LoginRedirect(String);

impl IntoResponse for LoginRedirect {
    fn into_response(self) -> Response {
        Redirect::to(&self.0).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PageUser {
    type Rejection = LoginRedirect;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = RequestAuth::from_request_parts(parts, state).await.ok();
        match auth {
            Some(RequestAuth {
                principal: Some(p),
                client,
            }) => Ok(PageUser(p, client)),
            _ => {
                let back = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let query = serde_urlencoded::to_string([("return", back)]).unwrap_or_default();
                Err(LoginRedirect(format!("/?{query}")))
            }
        }
    }
}

/// `scheme://host[:port]` of a URL, for a CSP source list; None for anything unexpected.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let safe = matches!(scheme, "http" | "https")
        && !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    safe.then(|| format!("{scheme}://{authority}"))
}

/// Adds the headers every response of ours carries.
pub async fn security_headers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let server = &state.config.server;
    // Browsers check `form-action` against every redirect a form submission follows, not only
    // its action: signing in on the way to an instance posts to /login, which redirects to
    // /app-auth, which redirects to the instance host. With `'self'` alone Chromium blocks that
    // last hop and the login form seems to do nothing.
    // The same goes for signing out, which redirects to an identity provider's end-session
    // page: its origin is allowed too.
    let mut form_targets = vec![flowcase_config::origin(
        &format!("*.{}", server.apps_domain.as_str()),
        server.effective_https_port(),
    )];
    form_targets.extend(
        state
            .config
            .auth
            .oidc
            .iter()
            .filter_map(|p| origin_of(&p.issuer_url)),
    );
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
         form-action 'self' {}",
        form_targets.join(" ")
    );
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", csp.as_str()),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
    ] {
        if let Ok(v) = axum::http::HeaderValue::from_str(value) {
            headers.entry(name).or_insert(v);
        }
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(
            header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
    }
    response
}
