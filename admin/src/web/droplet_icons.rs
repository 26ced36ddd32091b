//! `/droplets/{id}/icon`: a droplet's icon as the control plane fetched it when the droplet was
//! saved (see [`crate::orchestrator::icons`]), served from this site so pages keep
//! `img-src 'self' data:` and users' browsers never contact the icon's original site. Whoever
//! may see the droplet may load it ([`crate::access::Access::droplet_icon`]). Cacheable: the
//! pages' URL carries the ETag (`?v=`), and `If-None-Match` gets a 304.
//!
//! An SVG is a document that could run script if opened on its own: every icon is served with
//! `Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; sandbox` and
//! `X-Content-Type-Options: nosniff`, which leaves an `<img>` nothing to lose.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::api::input::Id;
use super::error::ApiError;
use super::extract::ApiUser;
use crate::access::Access;

pub fn routes() -> Router<AppState> {
    Router::new().route("/droplets/{id}/icon", get(icon))
}

/// The policy of an icon opened on its own: no script, no loads, a unique origin.
const ICON_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

async fn icon(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    Id(id): Id,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let icon = Access::new(&state.auth, &principal, &client)
        .droplet_icon(id)
        .await?;
    let etag = format!("\"{}\"", icon.etag);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (header::CACHE_CONTROL, "private, max-age=86400"),
        (header::CONTENT_SECURITY_POLICY, ICON_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_TYPE, icon.content_type.as_str()),
        (header::ETAG, etag.as_str()),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    if fresh {
        headers.remove(header::CONTENT_TYPE);
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    Ok((StatusCode::OK, headers, icon.body).into_response())
}
