//! Desktop instances for viewer tests that need no Docker: a running instance of a VNC (or RDP,
//! SSH) droplet written straight into the gateway's SQLite database with the admin crate's
//! `Store`, as [`crate::instances::echo_instance`] does for web apps. The control plane reads
//! the database for every page, so `/droplet/{id}` treats such a row like one the orchestrator
//! wrote for a real container.

use flowcase_admin::store::{
    DropletType, InstanceStatus, NewDroplet, NewInstance, Store, TargetKind, now_millis,
};

use crate::GatewayDir;

/// A running desktop instance.
pub struct DesktopInstance {
    /// The instance's primary key: the `{id}` of `/droplet/{id}`.
    pub id: i64,
    /// Its public slug (its host name label).
    pub slug: String,
    /// The droplet's display name, which the viewer shows.
    pub droplet_name: String,
}

/// Creates a running instance `slug` owned by the existing user `owner`, on a fresh droplet
/// named `droplet_name` of type `kind`, whose desktop is at `upstream` (`host:port`, e.g. the
/// VNC server guacd should reach).
pub async fn desktop_instance(
    dir: &GatewayDir,
    owner: &str,
    slug: &str,
    droplet_name: &str,
    kind: DropletType,
    upstream: &str,
) -> DesktopInstance {
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.data_dir().join("flowcase.db").display()
    ))
    .await
    .unwrap();
    let tenant = store.default_tenant().await.unwrap().unwrap();
    let user = store
        .find_user_by_login(owner)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no user {owner}"));
    let now = now_millis();
    let droplet = store
        .create_droplet(
            &NewDroplet::new(tenant.id, droplet_name, kind, TargetKind::Container),
            now,
        )
        .await
        .unwrap();
    let instance = store
        .create_instance(
            &NewInstance {
                slug: slug.into(),
                droplet_id: droplet.id,
                user_id: user.id,
                status: InstanceStatus::Requested,
            },
            now,
        )
        .await
        .unwrap();
    store
        .set_instance_container(
            instance.id,
            Some("c1"),
            Some(&format!("flowcase-{slug}")),
            Some(upstream),
        )
        .await
        .unwrap();
    store
        .set_instance_status(instance.id, InstanceStatus::Running, None, now)
        .await
        .unwrap();
    store.close().await;
    DesktopInstance {
        id: instance.id,
        slug: slug.to_owned(),
        droplet_name: droplet_name.to_owned(),
    }
}

/// Where the build installed guacamole-common-js (admin/build.rs runs `npm ci` there), to
/// compare the embedded copy with.
pub fn installed_guacamole_common_js() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../admin/assets/node_modules/guacamole-common-js/dist/esm/guacamole-common.min.js")
}
