//! `/api/v1/audit…`: the audit log, filtered and paged, and its pruning. Every decision is made
//! by [`crate::access::Access`].

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use serde::Deserialize;

use super::input::{JsonBody, ListQuery};
use crate::access::{Access, AuditQuery, Page, Pruned};
use crate::error::AdminError;
use crate::store::{AuditEntry, now_millis};
use crate::web::AppState;
use crate::web::error::ApiError;
use crate::web::extract::ApiUser;

/// Body of `POST /api/v1/audit/prune`: unix milliseconds or RFC 3339.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    pub before: serde_json::Value,
}

/// The filters of the query string (paging is read by [`ListQuery`]); malformed ones are an
/// `invalid_input` naming the query, like every other parameter.
pub struct Filters(pub AuditQuery);

impl<S: Send + Sync> FromRequestParts<S> for Filters {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct Raw {
            actor: Option<String>,
            action: Option<String>,
            target: Option<String>,
            since: Option<String>,
            until: Option<String>,
        }
        let raw: Raw =
            serde_urlencoded::from_str(parts.uri.query().unwrap_or("")).map_err(|_| {
                ApiError(AdminError::InvalidInput {
                    field: "query",
                    reason: "malformed query string".into(),
                })
            })?;
        Ok(Self(AuditQuery {
            actor: raw.actor,
            action: raw.action,
            target: raw.target,
            since: raw.since,
            until: raw.until,
        }))
    }
}

pub async fn list(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    page: ListQuery,
    Filters(filters): Filters,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    Ok(Json(access.list_audit(&filters, page.page).await?))
}

pub async fn prune(
    State(state): State<AppState>,
    ApiUser(principal, client): ApiUser,
    JsonBody(body): JsonBody<PruneRequest>,
) -> Result<Json<Pruned>, ApiError> {
    let access = Access::new(&state.auth, &principal, &client);
    let before = match &body.before {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => {
            return Err(ApiError(AdminError::InvalidInput {
                field: "before",
                reason: "give unix milliseconds or an RFC 3339 time".into(),
            }));
        }
    };
    Ok(Json(access.prune_audit(&before, now_millis()).await?))
}
