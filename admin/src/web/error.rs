//! The one place where control-plane errors become HTTP: a status, a stable machine-readable
//! code, and a message safe to show (internal details go to the log, not the client).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::AdminError;

/// An error answered as JSON: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
pub struct ApiError(pub AdminError);

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        Self(e)
    }
}

/// Status and stable code of an error.
pub fn classify(e: &AdminError) -> (StatusCode, &'static str) {
    match e {
        AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        AdminError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        AdminError::Reference(_) => (StatusCode::CONFLICT, "in_use"),
        AdminError::Protected(_) => (StatusCode::CONFLICT, "protected"),
        AdminError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
        AdminError::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
        AdminError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        AdminError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        AdminError::Csrf(_) => (StatusCode::FORBIDDEN, "csrf_failed"),
        AdminError::InvalidInput { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
        AdminError::ExternalLogin(_) => (StatusCode::UNAUTHORIZED, "external_login_failed"),
        AdminError::QuotaExceeded(_) => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
        AdminError::CapacityExhausted(_) => (StatusCode::SERVICE_UNAVAILABLE, "capacity_exhausted"),
        AdminError::ImageMissing(_) | AdminError::ImageNotInRegistry(_) => {
            (StatusCode::CONFLICT, "image_missing")
        }
        AdminError::RegistryRefused(_) => (StatusCode::FAILED_DEPENDENCY, "registry_refused"),
        AdminError::RegistryUnreachable(_) => {
            (StatusCode::FAILED_DEPENDENCY, "registry_unreachable")
        }
        AdminError::Engine(_) => (StatusCode::BAD_GATEWAY, "engine_error"),
        AdminError::NotReady(_) => (StatusCode::GATEWAY_TIMEOUT, "instance_not_ready"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// The message shown to the client: the error's own words for client errors, a generic one for
/// server errors (whose details may name files, hosts or queries).
pub fn public_message(e: &AdminError) -> String {
    let (status, _) = classify(e);
    if status.is_server_error() {
        tracing::error!(error = %e, "request failed");
        "internal error; the details are in the gateway's log".into()
    } else {
        e.to_string()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = classify(&self.0);
        let mut error = serde_json::json!({"code": code, "message": public_message(&self.0)});
        if let AdminError::InvalidInput { field, .. } = &self.0 {
            error["field"] = serde_json::json!(field);
        }
        let mut response = (status, Json(serde_json::json!({ "error": error }))).into_response();
        let retry_after = match self.0 {
            AdminError::Throttled { retry_after_secs } => Some(retry_after_secs),
            // Capacity frees up as instances stop; a minute is a fair first guess.
            AdminError::CapacityExhausted(_) => Some(60),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
