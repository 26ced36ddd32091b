//! Desktop instances for viewer tests that need no Docker: a running instance of a VNC (or RDP,
//! SSH) droplet written straight into the gateway's SQLite database with the admin crate's
//! `Store`, as [`crate::instances::echo_instance`] does for web apps. The control plane reads
//! the database for every page, so `/droplet/{id}` treats such a row like one the orchestrator
//! wrote for a real container.

use flowcase_admin::store::DropletType;

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
    let id = crate::instances::running_instance_row(
        dir,
        owner,
        slug,
        (droplet_name, kind),
        upstream,
        None,
    )
    .await;
    DesktopInstance {
        id,
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
