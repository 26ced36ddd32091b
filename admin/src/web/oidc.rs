//! The browser side of signing in through an OpenID Connect provider: `/auth/oidc/{id}/login`
//! sends the browser to the provider, `/auth/oidc/{id}/callback` brings it back. The flow
//! itself lives in [`crate::auth::oidc`].

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::AppState;
use super::api::session::set_cookie;
use super::extract::RequestAuth;
use super::pages::error_page;
use crate::auth::oidc::LOGIN_COOKIE;
use crate::auth::{return_path, session};
use crate::error::AdminError;
use crate::store::now_millis;

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(rename = "return")]
    return_to: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(q): Query<LoginQuery>,
) -> Response {
    let return_to = return_path::safe_return_path(q.return_to.as_deref());
    match state
        .auth
        .oidc()
        .begin(&provider, &return_to, now_millis())
        .await
    {
        Ok((url, cookie)) => {
            let mut response = Redirect::to(&url).into_response();
            set_cookie(response.headers_mut(), &cookie);
            response
        }
        Err(e) => failure_page(&e),
    }
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

pub async fn callback(
    State(state): State<AppState>,
    auth: RequestAuth,
    Path(provider): Path<String>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let now = now_millis();
    let pending = cookie(&headers, LOGIN_COOKIE);
    let outcome = match (q.code, q.state, q.error) {
        (Some(code), Some(st), None) => {
            state
                .auth
                .oidc()
                .complete(
                    &state.store,
                    &provider,
                    &code,
                    &st,
                    q.iss.as_deref(),
                    pending.as_deref(),
                    now,
                )
                .await
        }
        (_, _, Some(error)) => Err(AdminError::ExternalLogin(format!(
            "the identity provider did not sign you in ({})",
            error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        ))),
        _ => Err(AdminError::ExternalLogin(
            "the sign-in answer is incomplete".into(),
        )),
    };
    let login = match outcome {
        Ok(login) => login,
        Err(e) => {
            state
                .auth
                .audit(
                    None,
                    "login.failure",
                    &auth.client,
                    serde_json::json!({"method": "oidc", "provider": provider, "reason": e.to_string()}),
                    now,
                )
                .await;
            crate::metrics::login(
                crate::metrics::LoginMethod::Oidc,
                crate::metrics::LoginResult::Failure,
            );
            let mut response = failure_page(&e);
            set_cookie(response.headers_mut(), &session::clear_named(LOGIN_COOKIE));
            return response;
        }
    };
    match state.auth.login_external(&login, &auth.client, now).await {
        Ok((secret, session)) => {
            let mut response = Redirect::to(&login.return_to).into_response();
            set_cookie(
                response.headers_mut(),
                &session::set_cookie(&secret, &session, now),
            );
            set_cookie(response.headers_mut(), &session::clear_named(LOGIN_COOKIE));
            response
        }
        Err(e) => failure_page(&e),
    }
}

fn failure_page(e: &AdminError) -> Response {
    let status = match e {
        AdminError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::UNAUTHORIZED,
    };
    error_page(status, &super::error::public_message(e))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let values = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    session::cookie_values(values, name)
        .next()
        .map(str::to_owned)
}
