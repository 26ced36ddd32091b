//! Who may reach an instance: its owner, and principals holding `edit_instances` over the
//! owner's tenant. Everyone else — even a logged-in user who guessed the host name — is refused,
//! as the Python version's missing per-instance check must never come back.

use super::Access;
use crate::error::{AdminError, Result};
use crate::store::{Instance, InstanceStatus};

impl Access<'_> {
    /// The instance behind `slug`, if the principal may use it. Missing or deleted instances
    /// are `NotFound`; someone else's is `Forbidden` (the host name is no secret, the content is).
    pub async fn usable_instance(&self, slug: &str) -> Result<Instance> {
        let instance = self.store().get_instance_by_slug(slug).await?;
        self.usable(instance).await
    }

    /// [`Self::usable_instance`] by the instance's primary key (the viewer page's
    /// `/droplet/{id}`), with the same refusals.
    pub async fn usable_instance_by_id(&self, id: i64) -> Result<Instance> {
        let instance = self.store().get_instance(id).await?;
        self.usable(instance).await
    }

    async fn usable(&self, instance: Option<Instance>) -> Result<Instance> {
        let instance = instance
            .filter(|i| !matches!(i.status, InstanceStatus::Gone | InstanceStatus::Destroying))
            .ok_or(AdminError::NotFound("instance"))?;
        if instance.user_id == self.principal.user.id {
            return Ok(instance);
        }
        let owner = self
            .store()
            .get_user(instance.user_id)
            .await?
            .ok_or(AdminError::NotFound("instance"))?;
        if self.rights().edit_instances && self.write_scope().admits(owner.tenant_id) {
            return Ok(instance);
        }
        Err(AdminError::Forbidden(
            "this instance belongs to another user",
        ))
    }
}
