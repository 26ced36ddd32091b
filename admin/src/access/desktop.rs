//! Desktops reached through the Guacamole tunnel: who may open one, and what guacd needs to
//! connect to it. The control plane checks the first when it mints a tunnel token; the tunnel
//! checks it again (a right may be gone since) and gets the target, with the desktop password
//! opened from the instance row, just before it contacts guacd.

use std::net::SocketAddr;

use super::Scope;
use crate::error::{AdminError, Result};
use crate::orchestrator::desktop_target::{DesktopTarget as Connection, connection, guacd_address};
use crate::secrets::Keyring;
use crate::store::{Droplet, DropletType, Instance, InstanceStatus, Store, User};

/// The guacd protocol of a desktop droplet; None for HTTP droplets.
pub fn guacd_protocol(droplet_type: DropletType) -> Option<&'static str> {
    match droplet_type {
        DropletType::Vnc => Some("vnc"),
        DropletType::Rdp => Some("rdp"),
        DropletType::Ssh => Some("ssh"),
        DropletType::Http => None,
    }
}

/// What the tunnel needs to have guacd connect a user to a desktop: where guacd connects (with
/// the secret it logs in with: never logged, never sent to the browser) and what the user may
/// do there.
#[derive(Debug, Clone)]
pub struct DesktopTarget {
    pub instance_id: i64,
    /// `vnc`, `rdp` or `ssh`.
    pub protocol: &'static str,
    /// Where guacd connects; None while the instance does not run (it has to be started first).
    pub connection: Option<Connection>,
    /// The user's name, shown to other participants of a shared connection.
    pub user_display_name: String,
    /// The guacd to use: the instance's guacd sidecar, or None = the configured shared one
    /// (`[guacd] address`).
    pub guacd: Option<SocketAddr>,
    /// Clipboard from the desktop to the browser is refused (a group of the user says so).
    pub disable_copy: bool,
    /// Clipboard from the browser to the desktop is refused (a group of the user says so).
    pub disable_paste: bool,
}

/// The instance `instance` and its droplet, if `user` may open its desktop: the owner, or a
/// holder of `edit_instances` over the owner's tenant (`edit_tenants` for every tenant), and the
/// droplet is a desktop. Disabled users and deleted instances are refused.
pub async fn usable_desktop(
    store: &Store,
    user: &User,
    instance: Instance,
) -> Result<(Instance, Droplet)> {
    if user.disabled {
        return Err(AdminError::Forbidden("this account is disabled"));
    }
    if matches!(
        instance.status,
        InstanceStatus::Gone | InstanceStatus::Destroying
    ) {
        return Err(AdminError::NotFound("instance"));
    }
    if instance.user_id != user.id {
        let rights = store.user_permissions(user.id).await?;
        let owner = store
            .get_user(instance.user_id)
            .await?
            .ok_or(AdminError::NotFound("instance"))?;
        if !Scope::others_instances(&rights, user.tenant_id)
            .is_some_and(|scope| scope.admits(owner.tenant_id))
        {
            return Err(AdminError::Forbidden(
                "this instance belongs to another user",
            ));
        }
    }
    let droplet = store
        .get_droplet(instance.droplet_id)
        .await?
        .ok_or(AdminError::NotFound("droplet"))?;
    if guacd_protocol(droplet.droplet_type).is_none() {
        return Err(AdminError::Forbidden("this instance is not a desktop"));
    }
    Ok((instance, droplet))
}

/// The target of instance `instance_id` for user `user_id`, checking their right to it as
/// [`usable_desktop`] does.
pub async fn desktop_target(
    store: &Store,
    keyring: &Keyring,
    instance_id: i64,
    user_id: i64,
    now: i64,
) -> Result<DesktopTarget> {
    let user = store
        .get_user(user_id)
        .await?
        .ok_or(AdminError::Unauthenticated)?;
    let instance = store
        .get_instance(instance_id)
        .await?
        .ok_or(AdminError::NotFound("instance"))?;
    let (instance, droplet) = usable_desktop(store, &user, instance).await?;
    let protocol = guacd_protocol(droplet.droplet_type)
        .ok_or(AdminError::Forbidden("this instance is not a desktop"))?;
    let connection = connection(keyring, &instance, &droplet, now)?;
    let guacd = guacd_address(&instance, &droplet)?;
    let clipboard = store.user_clipboard(user.id).await?;
    Ok(DesktopTarget {
        instance_id: instance.id,
        protocol,
        connection,
        user_display_name: if user.display_name.is_empty() {
            user.username.clone()
        } else {
            user.display_name.clone()
        },
        guacd,
        disable_copy: clipboard.disable_copy,
        disable_paste: clipboard.disable_paste,
    })
}
