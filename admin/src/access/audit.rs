//! The audit log: reading it with filters and pages, and pruning old entries.
//!
//! Reading needs `admin_panel` (the log is part of the admin section). A principal who sees
//! across tenants (`view_tenants` or `edit_tenants`) reads every entry; anyone else reads the
//! entries made by users of their own tenant, so a tenant administrator never learns what
//! happens in other tenants. Entries made by the system or by deleted users have no tenant and
//! are shown to cross-tenant readers only.
//!
//! Pruning needs `edit_tenants`: the log is one table for the whole installation, and only an
//! administrator of the whole installation may erase history (a tenant administrator could
//! otherwise erase the trace of their own actions). The prune itself is logged afterwards.

use serde::{Deserialize, Serialize};

use super::{Access, Page, PageRequest, Right, Scope, validate};
use crate::error::{AdminError, Result};
use crate::store::{AuditEntry, AuditFilter};

/// Longest filter value accepted; longer ones cannot match anything we write.
const FILTER_MAX: usize = 200;

/// The filters of `GET /api/v1/audit`, as given in the query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditQuery {
    /// The actor's username, exactly.
    pub actor: Option<String>,
    /// An action (`user.create`), or a prefix ending in `*` (`workshop.*`).
    pub action: Option<String>,
    /// A target kind (`user`), or kind and id (`user:12`).
    pub target: Option<String>,
    /// Unix milliseconds or RFC 3339: entries at or after it.
    pub since: Option<String>,
    /// Unix milliseconds or RFC 3339: entries strictly before it.
    pub until: Option<String>,
}

/// Answer of `POST /api/v1/audit/prune`.
#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    pub deleted: u64,
    pub before: i64,
}

fn bounded(field: &'static str, value: Option<&str>) -> Result<Option<String>> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) if v.chars().count() > FILTER_MAX => Err(AdminError::InvalidInput {
            field,
            reason: format!("use at most {FILTER_MAX} characters"),
        }),
        other => Ok(other.map(str::to_owned)),
    }
}

impl AuditQuery {
    /// The store filter these parameters ask for; malformed ones are refused with their name.
    pub fn to_filter(&self) -> Result<AuditFilter> {
        let mut filter = AuditFilter {
            actor: bounded("actor", self.actor.as_deref())?,
            ..AuditFilter::default()
        };
        if let Some(action) = bounded("action", self.action.as_deref())? {
            match action.strip_suffix('*') {
                Some(prefix) => {
                    filter.action_prefix = true;
                    filter.action = Some(prefix.to_owned());
                }
                None => filter.action = Some(action),
            }
        }
        if let Some(target) = bounded("target", self.target.as_deref())? {
            match target.split_once(':') {
                Some((kind, id)) => {
                    filter.target_kind = Some(kind.to_owned());
                    filter.target_id = Some(id.to_owned());
                }
                None => filter.target_kind = Some(target),
            }
        }
        filter.since = self
            .since
            .as_deref()
            .map(|t| validate::instant("since", t))
            .transpose()?;
        filter.until = self
            .until
            .as_deref()
            .map(|t| validate::instant("until", t))
            .transpose()?;
        Ok(filter)
    }
}

impl Access<'_> {
    /// `admin_panel`. A page of the entries the filters admit, newest first, limited to the
    /// principal's tenant unless they see across tenants.
    pub async fn list_audit(
        &self,
        query: &AuditQuery,
        page: PageRequest,
    ) -> Result<Page<AuditEntry>> {
        self.require(Right::AdminPanel)?;
        let mut filter = query.to_filter()?;
        filter.actor_tenant = match self.read_scope() {
            Scope::All => None,
            Scope::Tenant(own) => Some(own),
        };
        let found = self
            .store()
            .page_audit(&filter, page.limit, page.offset)
            .await?;
        Ok(Page::new(found, page))
    }

    /// `edit_tenants`. Deletes every entry older than `before` (unix milliseconds or RFC 3339,
    /// not in the future), then records the prune.
    pub async fn prune_audit(&self, before: &str, now: i64) -> Result<Pruned> {
        self.require(Right::EditTenants)?;
        let before = validate::instant("before", before)?;
        if before > now {
            return Err(AdminError::InvalidInput {
                field: "before",
                reason: "must not be in the future".into(),
            });
        }
        let deleted = self.store().prune_audit(before).await?;
        self.audit(
            "audit.prune",
            "audit",
            0,
            serde_json::json!({"before": before, "deleted": deleted}),
            now,
        )
        .await;
        Ok(Pruned { deleted, before })
    }
}
