//! `POST /api/v1/instances/{id}/tunnel-token` (`{id}`: the instance's slug, or its numeric id):
//! the viewer page asks for a one-time token to
//! open the desktop tunnel (`/tunnel?token=…`). See [`crate::auth::tunnel_token`].
//!
//! With `{"watch": true}` the token is a read-only watch link for someone else: it joins the
//! instance's running connection (guacd `select,$id` with `read-only`), and the tunnel drops
//! every input instruction it brings. Only who may use the desktop (the owner, an administrator
//! in scope) can hand one out; it ends with the session that made it.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;

use crate::access::desktop::usable_desktop;
use crate::auth::tunnel_token::{TTL_MS, TunnelGrant};
use crate::error::AdminError;
use crate::store::now_millis;
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::extract::ApiUser;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// A read-only watch of the running connection (sharing).
    #[serde(default)]
    pub watch: bool,
}

pub async fn mint(
    State(state): State<AppState>,
    ApiUser(principal, _): ApiUser,
    Path(slug): Path<String>,
    body: Option<Json<TokenRequest>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = now_millis();
    let request = body.map(|Json(r)| r).unwrap_or_default();
    let Some(session) = principal.session_id_hash() else {
        return Err(AdminError::Forbidden("desktops open in a browser session only").into());
    };
    // The public name (slug); the numeric id as the old API used it works too. Either way the
    // access check below decides.
    let mut instance = state.store.get_instance_by_slug(&slug).await?;
    if instance.is_none()
        && let Ok(id) = slug.parse::<i64>()
    {
        instance = state.store.get_instance(id).await?;
    }
    let instance = instance.ok_or(AdminError::NotFound("instance"))?;
    let (instance, _) = usable_desktop(&state.store, &principal.user, instance).await?;
    let grant = TunnelGrant::new(instance.id, principal.user.id, session, request.watch, now);
    let token = grant
        .seal(state.auth.keyring())
        .ok_or_else(|| AdminError::InvalidData("cannot seal the tunnel token".into()))?;
    Ok(Json(serde_json::json!({
        "token": token,
        "expires_in": TTL_MS / 1000,
    })))
}
