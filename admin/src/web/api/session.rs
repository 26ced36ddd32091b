//! `/api/v1/session`: log in, who am I, log out.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::input::JsonBody;
use crate::auth::{UserView, session};
use crate::store::now_millis;
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::extract::{ApiUser, RequestAuth};

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    /// Username or e-mail address.
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub remember: bool,
}

pub async fn create(
    State(state): State<AppState>,
    auth: RequestAuth,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    let now = now_millis();
    let (secret, principal, session) = state
        .auth
        .login(
            &req.username,
            &req.password,
            req.remember,
            &auth.client,
            now,
        )
        .await?;
    let body = serde_json::json!({
        "user": UserView::from(&principal),
        "csrf_token": state.auth.csrf_token(&principal),
        "expires_at": session.absolute_expires_at,
    });
    let mut response = (StatusCode::OK, Json(body)).into_response();
    set_cookie(
        response.headers_mut(),
        &session::set_cookie(&secret, &session, now),
    );
    Ok(response)
}

pub async fn show(
    State(state): State<AppState>,
    ApiUser(principal, _): ApiUser,
) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "user": UserView::from(&principal),
        "csrf_token": state.auth.csrf_token(&principal),
    }))
}

pub async fn delete(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
) -> Result<Response, ApiError> {
    let provider_logout = state.auth.logout(&principal, &client, now_millis()).await?;
    // A session from an identity provider also ends there: the client sends the browser on.
    let mut response = match provider_logout {
        Some(url) => (
            StatusCode::OK,
            Json(serde_json::json!({ "logout_url": url })),
        )
            .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    set_cookie(response.headers_mut(), &session::clear_cookie());
    Ok(response)
}

pub fn set_cookie(headers: &mut HeaderMap, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        headers.append(header::SET_COOKIE, value);
    }
}
