//! The system report: who may read it and how much of it they see.
//!
//! It needs `admin_panel`. Versions, the engine, the database and the host are the same for
//! everyone who may open the admin section; the object counts are the whole installation's
//! only for principals who see across tenants, and their own tenant's otherwise, so a tenant
//! administrator learns nothing about the size of other tenants.

use super::{Access, Right, Scope};
use crate::error::Result;
use crate::store::Counts;

impl Access<'_> {
    /// `admin_panel`. The object counts this principal may see.
    pub async fn system_counts(&self) -> Result<Counts> {
        self.require(Right::AdminPanel)?;
        let tenant = match self.read_scope() {
            Scope::All => None,
            Scope::Tenant(own) => Some(own),
        };
        self.store().counts(tenant).await
    }
}
