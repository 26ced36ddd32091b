//! Request decoding for the admin endpoints that answers malformed input in the API's JSON error
//! format with a named field (axum's own extractors answer in plain text), before any handler
//! runs.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::access::PageRequest;
use crate::error::AdminError;
use crate::web::error::ApiError;

fn invalid(field: &'static str, reason: impl Into<String>) -> ApiError {
    ApiError(AdminError::InvalidInput {
        field,
        reason: reason.into(),
    })
}

/// A JSON request body. Requires `Content-Type: application/json`, so that a body can never be
/// read in a different shape than the sender meant.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match OptionalJsonBody::<T>::from_request(req, state).await? {
            OptionalJsonBody(Some(value)) => Ok(Self(value)),
            OptionalJsonBody(None) => Err(invalid("body", "a JSON body is required")),
        }
    }
}

/// A JSON request body that may also be absent (empty), for endpoints whose every field is
/// optional.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let essence = ct.split(';').next().unwrap_or("").trim();
                essence.eq_ignore_ascii_case("application/json")
            });
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| invalid("body", format!("cannot read the body: {e}")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        if !is_json {
            return Err(invalid(
                "body",
                "send JSON with Content-Type: application/json",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(|value| Self(Some(value)))
            .map_err(|e| invalid("body", e.to_string()))
    }
}

/// The numeric id in the path. Anything else names no object: 404, like an unknown id.
pub struct Id(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError(AdminError::NotFound("object")))?;
        raw.parse()
            .map(Self)
            .map_err(|_| ApiError(AdminError::NotFound("object")))
    }
}

/// Two numeric ids in the path (`/things/{id}/parts/{part}`), with [`Id`]'s 404 for anything
/// else.
pub struct IdPair(pub i64, pub i64);

impl<S: Send + Sync> FromRequestParts<S> for IdPair {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((first, second)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError(AdminError::NotFound("object")))?;
        match (first.parse(), second.parse()) {
            (Ok(a), Ok(b)) => Ok(Self(a, b)),
            _ => Err(ApiError(AdminError::NotFound("object"))),
        }
    }
}

/// `?limit=&offset=&tenant_id=` of a list endpoint; other parameters are ignored.
pub struct ListQuery {
    pub page: PageRequest,
    pub tenant_id: Option<i64>,
}

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
                .map_err(|_| invalid("query", "malformed query string"))?;
        // The last occurrence wins, as with most frameworks.
        let get = |name: &str| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let page = PageRequest::parse(get("limit"), get("offset"))?;
        let tenant_id = get("tenant_id")
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| invalid("tenant_id", "must be a tenant id"))
            })
            .transpose()?;
        Ok(Self { page, tenant_id })
    }
}
