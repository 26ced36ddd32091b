//! `/app-auth` on the public host: step 2 of the instance-host login (see
//! [`crate::auth::app_host`]). A signed-in user allowed to use the instance leaves with a
//! one-time code for that host; anyone else gets a page saying why not.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::AppState;
use super::extract::PageUser;
use super::pages::error_page;
use crate::access::Access;
use crate::auth::app_host::{self, AppIdentity};
use crate::error::AdminError;
use crate::store::now_millis;

#[derive(Debug, Deserialize)]
pub struct AppAuthQuery {
    host: String,
    #[serde(rename = "return")]
    return_to: Option<String>,
    /// The browser's state on the instance host (see [`app_host::STATE_COOKIE`]).
    state: Option<String>,
}

pub async fn app_auth(
    State(state): State<AppState>,
    PageUser(principal, client): PageUser,
    Query(q): Query<AppAuthQuery>,
) -> Response {
    let now = now_millis();
    let server = &state.config.server;
    let host = q.host.trim().to_ascii_lowercase();
    let slug = host
        .strip_suffix(server.apps_domain.as_str())
        .and_then(|s| s.strip_suffix('.'))
        .filter(|s| !s.is_empty() && !s.contains('.'));
    let Some(slug) = slug else {
        return error_page(StatusCode::BAD_REQUEST, "This is not an instance address.");
    };
    let Some(browser_state) = q.state.as_deref().filter(|s| app_host::is_state(s)) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in link is incomplete: open the app's address again.",
        );
    };
    let access = Access::new(&state.auth, &principal, &client);
    let instance = match access.usable_instance(slug).await {
        Ok(instance) => instance,
        Err(e) => {
            if matches!(e, AdminError::Forbidden(_)) {
                state
                    .auth
                    .audit(
                        Some(&principal.user),
                        "instance.access_denied",
                        &client,
                        serde_json::json!({"host": host}),
                        now,
                    )
                    .await;
            }
            let (status, _) = super::error::classify(&e);
            return error_page(status, &super::error::public_message(&e));
        }
    };
    let Some(session_id) = principal.session_id_hash() else {
        return error_page(
            StatusCode::FORBIDDEN,
            "Instances open in a browser session only.",
        );
    };
    let session = match state.store.get_session(session_id).await {
        Ok(Some(session)) => session,
        _ => return Redirect::to("/").into_response(),
    };
    let groups = match state.store.groups_of_user(principal.user.id).await {
        Ok(groups) => groups.into_iter().map(|g| g.name).collect(),
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                &super::error::public_message(&e),
            );
        }
    };
    let identity = AppIdentity {
        session: session.id.clone(),
        user_id: principal.user.id,
        username: principal.user.username.clone(),
        email: principal.user.email.clone(),
        groups,
        host: host.clone(),
        instance_id: instance.id,
        session_expires_at: session.absolute_expires_at,
    };
    let return_to = q.return_to.as_deref().unwrap_or("/");
    let Some(code) = app_host::mint_code(
        state.auth.keyring(),
        identity,
        return_to,
        browser_state,
        now,
    ) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot seal the access code",
        );
    };
    let query = serde_urlencoded::to_string([("code", code.as_str()), ("return", return_to)])
        .unwrap_or_default();
    let target = format!(
        "{}{}?{query}",
        flowcase_config::origin(&host, server.effective_https_port()),
        app_host::AUTH_PATH
    );
    Redirect::to(&target).into_response()
}
