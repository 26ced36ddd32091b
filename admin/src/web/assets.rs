//! The browser assets embedded into the binary at build time (`admin/build.rs`): our ES modules
//! and style sheets from `admin/assets/`, and guacamole-common-js as installed from npm by the
//! pinned lockfile. They are served under `/assets/<version>/…`, where the version is a hash of
//! all of them: a page names the exact build it was rendered with, so the files can be cached
//! for a year and a new build can never mix old and new modules.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
pub struct EmbeddedAsset {
    /// Path below the versioned prefix, e.g. `js/viewer.js`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

mod generated {
    use super::EmbeddedAsset;
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

pub use generated::{GUACAMOLE_VERSION, VERSION};

/// The URL prefix of this build's assets, ending without a slash.
pub fn prefix() -> String {
    format!("/assets/{VERSION}")
}

/// The URL of one asset of this build, e.g. `url("js/viewer.js")`.
pub fn url(path: &str) -> String {
    format!("{}/{path}", prefix())
}

/// The embedded file at `path`, if there is one.
pub fn find(path: &str) -> Option<&'static EmbeddedAsset> {
    generated::FILES.iter().find(|a| a.path == path)
}

/// `GET /assets/{version}/{*path}`. Another build's version is a 404 rather than this build's
/// file: a page of an older build must not cache a newer module under its old URL.
pub async fn serve(Path((version, path)): Path<(String, String)>) -> Response {
    let Some(asset) = find(&path).filter(|_| version == VERSION) else {
        return super::pages::not_found();
    };
    let mut response = (StatusCode::OK, asset.bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}
