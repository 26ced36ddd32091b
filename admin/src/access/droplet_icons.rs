//! Who may load a droplet's icon (`/droplets/{id}/icon`): whoever may see the droplet (those
//! it is granted to, and droplet administrators of its tenant), exactly as
//! `GET /api/v1/droplets/{id}` decides. Anything else is `NotFound`, like a droplet without a
//! stored icon, so the endpoint tells nothing about droplets one may not see.

use super::Access;
use crate::error::{AdminError, Result};
use crate::store::droplet_icons::DropletIcon;

impl Access<'_> {
    /// The stored icon of droplet `id`, if the principal may see the droplet and the icon is
    /// the one its droplet names now.
    pub async fn droplet_icon(&self, id: i64) -> Result<DropletIcon> {
        let droplet = self.get_droplet(id).await?;
        let icon = self
            .store()
            .droplet_icon(id)
            .await?
            .ok_or(AdminError::NotFound("icon"))?;
        if droplet.icon_url.as_deref().map(str::trim) == Some(icon.source_url.as_str()) {
            Ok(icon)
        } else {
            Err(AdminError::NotFound("icon"))
        }
    }
}
