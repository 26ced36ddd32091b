//! Droplets (launchable desktops and apps) and which groups may launch them.
//!
//! Owns the `droplets` and `droplet_groups` tables. Ports, environment and labels are JSON text
//! so their shape can grow without a migration per field. Credentials for external hosts arrive
//! here already sealed by the caller and leave the same way: this module never sees plaintext.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::codec::{flag, get_enum, get_flag, get_json, get_port, text_enum, to_json};
use super::{Store, expect_one};
use crate::error::Result;

text_enum! {
    /// How the user reaches the droplet.
    pub enum DropletType {
        /// A web application or web desktop, proxied over HTTP.
        Http = "http",
        /// A VNC desktop, shown through the in-browser viewer.
        Vnc = "vnc",
        /// An RDP desktop, shown through the in-browser viewer.
        Rdp = "rdp",
        /// An SSH terminal, shown through the in-browser viewer.
        Ssh = "ssh",
    }
}

text_enum! {
    /// What the idle reaper does with an instance nobody used for its idle timeout.
    pub enum IdleAction {
        /// Stop the container; the next visit wakes it.
        Stop = "stop",
        /// Remove the container (the profile volume stays); the user launches anew.
        Destroy = "destroy",
    }
}

text_enum! {
    /// Which guacd opens a desktop droplet's instances.
    pub enum GuacdMode {
        /// The configured shared guacd (`[guacd] address`).
        Shared = "shared",
        /// A guacd container started and stopped with each instance, on its network.
        Sidecar = "sidecar",
    }
}

text_enum! {
    /// Where the droplet runs.
    pub enum TargetKind {
        /// A container started per user from `image`.
        Container = "container",
        /// An existing host at `external_host:external_port`.
        External = "external",
    }
}

macro_rules! columns {
    () => {
        "id, tenant_id, name, description, droplet_type, target, image, registry, \
         cpu_millicores, memory_mb, ports_json, env_json, labels_json, profile_path, network, \
         idle_timeout_secs, max_lifetime_secs, pool_size, icon, active, external_host, \
         external_port, external_username, external_credentials, cap_add_json, read_only_root, \
         pids_limit, health_path, profile_mount, idle_action, pool_started, external_domain, \
         external_params_json, guacd, guacd_image, created_at, updated_at"
    };
}

/// A launchable item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Droplet {
    /// Primary key.
    pub id: i64,
    /// Owning tenant.
    pub tenant_id: i64,
    /// Display name, unique within the tenant.
    pub name: String,
    /// Free-form description.
    pub description: String,
    /// Protocol.
    pub droplet_type: DropletType,
    /// Container or external host.
    pub target: TargetKind,
    /// Container image reference.
    pub image: Option<String>,
    /// Registry the image is pulled from.
    pub registry: Option<String>,
    /// CPU limit in thousandths of a core (1500 = one and a half cores). Integer rather than
    /// float so limits compare exactly and no float ever crosses the `Any` driver.
    pub cpu_millicores: Option<i64>,
    /// Memory limit in MiB.
    pub memory_mb: Option<i64>,
    /// Container ports exposed to the gateway.
    pub ports: Vec<u16>,
    /// Environment variables given to the container.
    pub env: BTreeMap<String, String>,
    /// Docker labels given to the container.
    pub labels: BTreeMap<String, String>,
    /// Persistent profile path template (`{user_id}`, `{user_name}`, `{droplet_id}`, ...).
    pub profile_path: Option<String>,
    /// Docker network to attach to.
    pub network: Option<String>,
    /// Stop (or destroy, per `idle_action`) an instance after this long without activity;
    /// `None` = the configured default, 0 = never.
    pub idle_timeout_secs: Option<i64>,
    /// Destroy an instance this long after it was created, whatever its activity; `None` = the
    /// configured default, 0 = never.
    pub max_lifetime_secs: Option<i64>,
    /// Number of containers kept created (or started, with `pool_started`) ahead for launches.
    /// Only for droplets without a profile: a pooled container exists before its user does.
    pub pool_size: i64,
    /// Icon URL or asset name.
    pub icon: Option<String>,
    /// Shown and launchable while set.
    pub active: bool,
    /// External host name or address.
    pub external_host: Option<String>,
    /// External host port.
    pub external_port: Option<u16>,
    /// Account on the external host.
    pub external_username: Option<String>,
    /// Sealed credentials for the external host; never serialized.
    #[serde(skip)]
    pub external_credentials: Option<Vec<u8>>,
    /// Linux capabilities given back to the container after all are dropped.
    pub cap_add: Vec<String>,
    /// Mount the container's root filesystem read-only (with a private `/tmp` and `/run`).
    pub read_only_root: bool,
    /// Maximum number of processes in the container; `None` = the orchestrator's default.
    pub pids_limit: Option<i64>,
    /// HTTP droplets: the path that must answer before an instance counts as ready.
    pub health_path: Option<String>,
    /// Where the persistent profile volume is mounted in the container; `None` = no profile.
    pub profile_mount: Option<String>,
    /// What the reaper does with an idle instance.
    pub idle_action: IdleAction,
    /// Whether warm pool containers are started (and ready) ahead, not only created.
    pub pool_started: bool,
    /// External RDP hosts: the account's Windows domain.
    pub external_domain: Option<String>,
    /// External hosts: further guacd connection parameters (`security`, `ignore-cert`, ...).
    pub external_params: BTreeMap<String, String>,
    /// Desktop containers: the shared guacd or a per-instance sidecar.
    pub guacd: GuacdMode,
    /// The sidecar's image; `None` = the configured `[guacd] sidecar_image`.
    pub guacd_image: Option<String>,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
    /// Last modification time, unix milliseconds.
    pub updated_at: i64,
}

impl Droplet {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            droplet_type: get_enum(row, "droplet_type")?,
            target: get_enum(row, "target")?,
            image: row.try_get("image")?,
            registry: row.try_get("registry")?,
            cpu_millicores: row.try_get("cpu_millicores")?,
            memory_mb: row.try_get("memory_mb")?,
            ports: get_json(row, "ports_json")?,
            env: get_json(row, "env_json")?,
            labels: get_json(row, "labels_json")?,
            profile_path: row.try_get("profile_path")?,
            network: row.try_get("network")?,
            idle_timeout_secs: row.try_get("idle_timeout_secs")?,
            max_lifetime_secs: row.try_get("max_lifetime_secs")?,
            pool_size: row.try_get("pool_size")?,
            icon: row.try_get("icon")?,
            active: get_flag(row, "active")?,
            external_host: row.try_get("external_host")?,
            external_port: get_port(row, "external_port")?,
            external_username: row.try_get("external_username")?,
            external_credentials: row.try_get("external_credentials")?,
            cap_add: get_json(row, "cap_add_json")?,
            read_only_root: get_flag(row, "read_only_root")?,
            pids_limit: row.try_get("pids_limit")?,
            health_path: row.try_get("health_path")?,
            profile_mount: row.try_get("profile_mount")?,
            idle_action: get_enum(row, "idle_action")?,
            pool_started: get_flag(row, "pool_started")?,
            external_domain: row.try_get("external_domain")?,
            external_params: get_json(row, "external_params_json")?,
            guacd: get_enum(row, "guacd")?,
            guacd_image: row.try_get("guacd_image")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// Input for [`Store::create_droplet`]; start from [`NewDroplet::new`] and set what applies.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDroplet {
    /// Owning tenant.
    pub tenant_id: i64,
    /// Display name, unique within the tenant.
    pub name: String,
    /// Free-form description.
    pub description: String,
    /// Protocol.
    pub droplet_type: DropletType,
    /// Container or external host.
    pub target: TargetKind,
    /// Container image reference.
    pub image: Option<String>,
    /// Registry the image is pulled from.
    pub registry: Option<String>,
    /// CPU limit in thousandths of a core.
    pub cpu_millicores: Option<i64>,
    /// Memory limit in MiB.
    pub memory_mb: Option<i64>,
    /// Container ports exposed to the gateway.
    pub ports: Vec<u16>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Docker labels.
    pub labels: BTreeMap<String, String>,
    /// Persistent profile path template.
    pub profile_path: Option<String>,
    /// Docker network.
    pub network: Option<String>,
    /// Idle timeout in seconds.
    pub idle_timeout_secs: Option<i64>,
    /// Maximum lifetime in seconds.
    pub max_lifetime_secs: Option<i64>,
    /// Spare instances to keep ready.
    pub pool_size: i64,
    /// Icon URL or asset name.
    pub icon: Option<String>,
    /// Launchable right away.
    pub active: bool,
    /// External host.
    pub external_host: Option<String>,
    /// External port.
    pub external_port: Option<u16>,
    /// External account.
    pub external_username: Option<String>,
    /// Sealed external credentials.
    pub external_credentials: Option<Vec<u8>>,
    /// Capabilities given back after all are dropped.
    pub cap_add: Vec<String>,
    /// Read-only root filesystem.
    pub read_only_root: bool,
    /// Process limit (`None` = the orchestrator's default).
    pub pids_limit: Option<i64>,
    /// HTTP health path (`None` = `/`).
    pub health_path: Option<String>,
    /// Profile mount point in the container (`None` = no profile).
    pub profile_mount: Option<String>,
    /// What the reaper does with an idle instance.
    pub idle_action: IdleAction,
    /// Start warm pool containers ahead.
    pub pool_started: bool,
    /// External RDP hosts: the Windows domain.
    pub external_domain: Option<String>,
    /// External hosts: further guacd connection parameters.
    pub external_params: BTreeMap<String, String>,
    /// Desktop containers: the shared guacd or a per-instance sidecar.
    pub guacd: GuacdMode,
    /// The sidecar's image (`None` = the configured one).
    pub guacd_image: Option<String>,
}

impl NewDroplet {
    /// An active droplet with only the mandatory fields set.
    pub fn new(
        tenant_id: i64,
        name: impl Into<String>,
        droplet_type: DropletType,
        target: TargetKind,
    ) -> Self {
        Self {
            tenant_id,
            name: name.into(),
            description: String::new(),
            droplet_type,
            target,
            image: None,
            registry: None,
            cpu_millicores: None,
            memory_mb: None,
            ports: Vec::new(),
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            profile_path: None,
            network: None,
            idle_timeout_secs: None,
            max_lifetime_secs: None,
            pool_size: 0,
            icon: None,
            active: true,
            external_host: None,
            external_port: None,
            external_username: None,
            external_credentials: None,
            cap_add: Vec::new(),
            read_only_root: false,
            pids_limit: None,
            health_path: None,
            profile_mount: None,
            idle_action: IdleAction::Stop,
            pool_started: false,
            external_domain: None,
            external_params: BTreeMap::new(),
            guacd: GuacdMode::Shared,
            guacd_image: None,
        }
    }
}

impl Store {
    /// Creates a droplet. A name already used in the tenant is a `Conflict`.
    pub async fn create_droplet(&self, new: &NewDroplet, now: i64) -> Result<Droplet> {
        let row = sqlx::query(concat!(
            "INSERT INTO droplets (tenant_id, name, description, droplet_type, target, image, \
             registry, cpu_millicores, memory_mb, ports_json, env_json, labels_json, profile_path, \
             network, idle_timeout_secs, max_lifetime_secs, pool_size, icon, active, \
             external_host, external_port, external_username, external_credentials, \
             cap_add_json, read_only_root, pids_limit, health_path, profile_mount, \
             idle_action, pool_started, external_domain, external_params_json, guacd, \
             guacd_image, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, \
             $33, $34, $35, $35) \
             RETURNING ",
            columns!()
        ))
        .bind(new.tenant_id)
        .bind(new.name.as_str())
        .bind(new.description.as_str())
        .bind(new.droplet_type.as_str())
        .bind(new.target.as_str())
        .bind(new.image.as_deref())
        .bind(new.registry.as_deref())
        .bind(new.cpu_millicores)
        .bind(new.memory_mb)
        .bind(to_json(&new.ports)?)
        .bind(to_json(&new.env)?)
        .bind(to_json(&new.labels)?)
        .bind(new.profile_path.as_deref())
        .bind(new.network.as_deref())
        .bind(new.idle_timeout_secs)
        .bind(new.max_lifetime_secs)
        .bind(new.pool_size)
        .bind(new.icon.as_deref())
        .bind(flag(new.active))
        .bind(new.external_host.as_deref())
        .bind(new.external_port.map(i64::from))
        .bind(new.external_username.as_deref())
        .bind(new.external_credentials.clone())
        .bind(to_json(&new.cap_add)?)
        .bind(flag(new.read_only_root))
        .bind(new.pids_limit)
        .bind(new.health_path.as_deref())
        .bind(new.profile_mount.as_deref())
        .bind(new.idle_action.as_str())
        .bind(flag(new.pool_started))
        .bind(new.external_domain.as_deref())
        .bind(to_json(&new.external_params)?)
        .bind(new.guacd.as_str())
        .bind(new.guacd_image.as_deref())
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Droplet::from_row(&row)
    }

    /// The droplet with this id.
    pub async fn get_droplet(&self, id: i64) -> Result<Option<Droplet>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM droplets WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Droplet::from_row).transpose()
    }

    /// Every droplet, active or not, by name.
    pub async fn list_droplets(&self) -> Result<Vec<Droplet>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM droplets ORDER BY name, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Droplet::from_row).collect()
    }

    /// Active droplets, by name.
    pub async fn list_active_droplets(&self) -> Result<Vec<Droplet>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM droplets WHERE active = 1 ORDER BY name, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Droplet::from_row).collect()
    }

    /// Active droplets that at least one of the user's groups may launch: the catalogue a user
    /// sees, and the check a launch must pass.
    pub async fn list_droplets_for_user(&self, user_id: i64) -> Result<Vec<Droplet>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM droplets WHERE active = 1 AND id IN (\
               SELECT dg.droplet_id FROM droplet_groups dg \
               JOIN memberships m ON m.group_id = dg.group_id WHERE m.user_id = $1) \
             ORDER BY name, id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Droplet::from_row).collect()
    }

    /// Shows or hides a droplet.
    pub async fn set_droplet_active(&self, id: i64, active: bool, now: i64) -> Result<()> {
        let result = sqlx::query("UPDATE droplets SET active = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(flag(active))
            .bind(now)
            .execute(&self.pool)
            .await?;
        expect_one(result, "droplet")
    }

    /// Replaces the sealed credentials of an external host (the caller seals them; this module
    /// never sees plaintext).
    pub async fn set_droplet_external_credentials(
        &self,
        id: i64,
        sealed: Option<&[u8]>,
        now: i64,
    ) -> Result<()> {
        let result = sqlx::query(
            "UPDATE droplets SET external_credentials = $2, updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(sealed.map(<[u8]>::to_vec))
        .bind(now)
        .execute(&self.pool)
        .await?;
        expect_one(result, "droplet")
    }

    /// Deletes a droplet and its group grants. Refused (`Reference`) while instances of it
    /// exist, since they may stand for running containers.
    pub async fn delete_droplet(&self, id: i64) -> Result<()> {
        let result = sqlx::query("DELETE FROM droplets WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        expect_one(result, "droplet")
    }

    /// Lets a group launch a droplet; doing it twice is harmless.
    pub async fn grant_droplet(&self, droplet_id: i64, group_id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO droplet_groups (droplet_id, group_id) VALUES ($1, $2) \
             ON CONFLICT (droplet_id, group_id) DO NOTHING",
        )
        .bind(droplet_id)
        .bind(group_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Withdraws a group's access to a droplet; returns whether it had access.
    pub async fn revoke_droplet(&self, droplet_id: i64, group_id: i64) -> Result<bool> {
        let result =
            sqlx::query("DELETE FROM droplet_groups WHERE droplet_id = $1 AND group_id = $2")
                .bind(droplet_id)
                .bind(group_id)
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Ids of the groups allowed to launch a droplet, ascending.
    pub async fn droplet_group_ids(&self, droplet_id: i64) -> Result<Vec<i64>> {
        let ids = sqlx::query_scalar(
            "SELECT group_id FROM droplet_groups WHERE droplet_id = $1 ORDER BY group_id",
        )
        .bind(droplet_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// Replaces the sealed registry credentials of a droplet (`None` removes them). The caller
    /// seals them; this module never sees plaintext.
    pub async fn set_droplet_registry_credentials(
        &self,
        droplet_id: i64,
        sealed: Option<&[u8]>,
        now: i64,
    ) -> Result<()> {
        let Some(sealed) = sealed else {
            sqlx::query("DELETE FROM droplet_registry_credentials WHERE droplet_id = $1")
                .bind(droplet_id)
                .execute(&self.pool)
                .await?;
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO droplet_registry_credentials (droplet_id, sealed, updated_at) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (droplet_id) DO UPDATE SET sealed = $2, updated_at = $3",
        )
        .bind(droplet_id)
        .bind(sealed.to_vec())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The sealed registry credentials of a droplet, if any.
    pub async fn droplet_registry_credentials(&self, droplet_id: i64) -> Result<Option<Vec<u8>>> {
        let row =
            sqlx::query("SELECT sealed FROM droplet_registry_credentials WHERE droplet_id = $1")
                .bind(droplet_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.try_get("sealed")).transpose()?)
    }
}

impl Store {
    /// Replaces every definition field of a droplet with `new`'s (not its tenant, its
    /// external credentials or its group grants, which have their own methods). A name already
    /// used in the tenant is a `Conflict`.
    pub async fn update_droplet(&self, id: i64, new: &NewDroplet, now: i64) -> Result<Droplet> {
        let row = sqlx::query(concat!(
            "UPDATE droplets SET name = $2, description = $3, droplet_type = $4, target = $5, \
             image = $6, registry = $7, cpu_millicores = $8, memory_mb = $9, ports_json = $10, \
             env_json = $11, labels_json = $12, profile_path = $13, network = $14, \
             idle_timeout_secs = $15, max_lifetime_secs = $16, pool_size = $17, icon = $18, \
             active = $19, external_host = $20, external_port = $21, external_username = $22, \
             cap_add_json = $23, read_only_root = $24, pids_limit = $25, health_path = $26, \
             profile_mount = $27, idle_action = $28, pool_started = $29, \
             external_domain = $30, external_params_json = $31, guacd = $32, \
             guacd_image = $33, updated_at = $34 \
             WHERE id = $1 RETURNING ",
            columns!()
        ))
        .bind(id)
        .bind(new.name.as_str())
        .bind(new.description.as_str())
        .bind(new.droplet_type.as_str())
        .bind(new.target.as_str())
        .bind(new.image.as_deref())
        .bind(new.registry.as_deref())
        .bind(new.cpu_millicores)
        .bind(new.memory_mb)
        .bind(to_json(&new.ports)?)
        .bind(to_json(&new.env)?)
        .bind(to_json(&new.labels)?)
        .bind(new.profile_path.as_deref())
        .bind(new.network.as_deref())
        .bind(new.idle_timeout_secs)
        .bind(new.max_lifetime_secs)
        .bind(new.pool_size)
        .bind(new.icon.as_deref())
        .bind(flag(new.active))
        .bind(new.external_host.as_deref())
        .bind(new.external_port.map(i64::from))
        .bind(new.external_username.as_deref())
        .bind(to_json(&new.cap_add)?)
        .bind(flag(new.read_only_root))
        .bind(new.pids_limit)
        .bind(new.health_path.as_deref())
        .bind(new.profile_mount.as_deref())
        .bind(new.idle_action.as_str())
        .bind(flag(new.pool_started))
        .bind(new.external_domain.as_deref())
        .bind(to_json(&new.external_params)?)
        .bind(new.guacd.as_str())
        .bind(new.guacd_image.as_deref())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Droplet::from_row(&row),
            None => Err(crate::error::AdminError::NotFound("droplet")),
        }
    }

    /// Ids of the droplets with sealed registry credentials (for listings that show their
    /// presence without opening them).
    pub async fn droplets_with_registry_credentials(&self) -> Result<Vec<i64>> {
        let ids = sqlx::query_scalar(
            "SELECT droplet_id FROM droplet_registry_credentials ORDER BY droplet_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// Every group grant, as `(droplet_id, group_id)` pairs, for listings of many droplets.
    pub async fn droplet_grants(&self) -> Result<Vec<(i64, i64)>> {
        let rows = sqlx::query("SELECT droplet_id, group_id FROM droplet_groups")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("droplet_id")?, r.try_get("group_id")?)))
            .collect()
    }

    /// Deletes a droplet whose instances have all ended for good (`gone`): their rows go with
    /// it (the audit log keeps their history). Refused with `Reference` (`in_use`) while an
    /// instance that is not `gone` or a warm pool container exists, since they stand for
    /// containers that would be left behind; nothing is deleted then.
    pub async fn delete_droplet_and_history(&self, id: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM instances WHERE droplet_id = $1 AND status <> 'gone'",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if live > 0 {
            return Err(crate::error::AdminError::Reference(format!(
                "{live} instance(s) of this droplet still exist: stop and delete them first \
                 (or set active to false so that no new ones start)"
            )));
        }
        let pooled: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pool_containers WHERE droplet_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if pooled > 0 {
            return Err(crate::error::AdminError::Reference(format!(
                "{pooled} warm pool container(s) of this droplet exist: set active to false \
                 (its pool drains), then delete it"
            )));
        }
        sqlx::query("DELETE FROM instances WHERE droplet_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let result = sqlx::query("DELETE FROM droplets WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        expect_one(result, "droplet")?;
        tx.commit().await?;
        Ok(())
    }
}
