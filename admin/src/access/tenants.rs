//! Tenants: listing and creating them is for global administrators only (`view_tenants`,
//! `edit_tenants`); everyone else lives inside their own tenant and never names one.

use serde::Deserialize;

use super::{Access, Page, PageRequest, Right, validate};
use crate::error::{AdminError, Result};
use crate::store::Tenant;

/// `POST /api/v1/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenantRequest {
    pub name: String,
}

impl Access<'_> {
    /// `view_tenants`. Every tenant, by name.
    pub async fn list_tenants(&self, page: PageRequest) -> Result<Page<Tenant>> {
        self.require(Right::ViewTenants)?;
        let found = self.store().page_tenants(page.limit, page.offset).await?;
        Ok(Page::new(found, page))
    }

    /// `edit_tenants`. A new, empty, non-default tenant: its groups and users are created
    /// through the group and user operations, naming its id.
    pub async fn create_tenant(&self, req: NewTenantRequest, now: i64) -> Result<Tenant> {
        self.require(Right::EditTenants)?;
        let name = validate::tenant_name(&req.name)?;
        let tenant = self
            .store()
            .create_tenant(&name, false, now)
            .await
            .map_err(|e| match e {
                AdminError::Conflict(_) => {
                    AdminError::Conflict("a tenant with this name already exists".into())
                }
                other => other,
            })?;
        self.audit(
            "tenant.create",
            "tenant",
            tenant.id,
            serde_json::json!({"name": tenant.name}),
            now,
        )
        .await;
        Ok(tenant)
    }
}
