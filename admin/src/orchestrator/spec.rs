//! The container an instance gets, as a pure function of the droplet, the instance and the
//! deployment settings: name, labels, limits, hardening knobs, network, ports, environment and
//! the persistent profile volume. Everything here is decided without I/O so it is unit-tested
//! exhaustively; [`super::lifecycle`] supplies the inputs (including the generated password).

use std::collections::BTreeMap;

use super::engine::{
    ContainerSpec, Exposure, LABEL_DEPLOYMENT, LABEL_DROPLET, LABEL_INSTALLATION, LABEL_INSTANCE,
    LABEL_MANAGED, LABEL_POOL, LABEL_USER, VolumeMount,
};
use crate::error::{AdminError, Result};
use crate::store::{Droplet, DropletType, TargetKind};

/// CPU limit of a droplet that sets none (one core).
pub const DEFAULT_CPU_MILLICORES: i64 = 1000;
/// Memory limit of a droplet that sets none.
pub const DEFAULT_MEMORY_MB: i64 = 1024;
/// Process limit of a droplet that sets none.
pub const DEFAULT_PIDS_LIMIT: i64 = 512;
/// Profile volume name template of a droplet that sets none.
pub const DEFAULT_PROFILE_TEMPLATE: &str = "flowcase-profile-{user_id}-{droplet_id}";
/// Prefix of container names (and per-instance networks).
pub const NAME_PREFIX: &str = "flowcase-";

/// Capabilities a droplet may add back: Docker's own default set plus `SYS_NICE`. Anything
/// else (SYS_ADMIN, NET_ADMIN, SYS_PTRACE, ...) widens the path from a container to the host and
/// is refused, whatever an administrator types.
const ALLOWED_CAPS: [&str; 15] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
    "SYS_NICE",
];

/// Paths given a private tmpfs when the root filesystem is read-only.
const READ_ONLY_TMPFS: [&str; 2] = ["/tmp", "/run"];

/// Environment variable carrying the per-instance desktop password, by droplet type.
pub fn password_env(droplet_type: DropletType) -> Option<&'static str> {
    match droplet_type {
        DropletType::Http => None,
        DropletType::Vnc => Some("VNC_PASSWORD"),
        DropletType::Rdp => Some("RDP_PASSWORD"),
        DropletType::Ssh => Some("SSH_PASSWORD"),
    }
}

/// Length of the generated password: VNC authentication only ever uses the first 8 bytes.
pub fn password_len(droplet_type: DropletType) -> usize {
    match droplet_type {
        DropletType::Vnc => 8,
        _ => 24,
    }
}

/// The container port the gateway talks to: the droplet's first port, or the protocol's usual.
pub fn upstream_port(droplet: &Droplet) -> u16 {
    droplet
        .ports
        .first()
        .copied()
        .unwrap_or(match droplet.droplet_type {
            DropletType::Http => 80,
            DropletType::Vnc => 5900,
            DropletType::Rdp => 3389,
            DropletType::Ssh => 22,
        })
}

/// What the spec depends on besides the droplet.
#[derive(Debug, Clone, Copy)]
pub struct SpecInput<'a> {
    /// The instance's public slug.
    pub slug: &'a str,
    /// Owner id.
    pub user_id: i64,
    /// Owner username (for `{user_name}` in profile templates).
    pub user_name: &'a str,
    /// Network to attach to.
    pub network: &'a str,
    /// How the gateway reaches the ports.
    pub exposure: Exposure,
    /// The per-instance desktop password (desktop droplets only).
    pub password: Option<&'a str>,
    /// The deployment the container belongs to (a label).
    pub deployment: &'a str,
    /// The installation the owner belongs to (a profile volume's label).
    pub installation: &'a str,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AdminError {
    AdminError::InvalidInput {
        field,
        reason: reason.into(),
    }
}

/// The container name of an instance.
pub fn container_name(slug: &str) -> String {
    format!("{NAME_PREFIX}{slug}")
}

/// The labels every object of an instance carries.
pub fn instance_labels(slug: &str, user_id: i64, droplet_id: i64) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INSTANCE.to_owned(), slug.to_owned()),
        (LABEL_USER.to_owned(), user_id.to_string()),
        (LABEL_DROPLET.to_owned(), droplet_id.to_string()),
    ])
}

/// Labels of a profile volume: owner, droplet and installation, not the instance (it outlives
/// them).
pub fn profile_labels(
    user_id: i64,
    droplet_id: i64,
    installation: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED.to_owned(), "profile".to_owned()),
        (LABEL_USER.to_owned(), user_id.to_string()),
        (LABEL_DROPLET.to_owned(), droplet_id.to_string()),
        (LABEL_INSTALLATION.to_owned(), installation.to_owned()),
    ])
}

/// Why a volume with `labels` may not be mounted as the profile of `wanted`'s owner, if it may
/// not: it is no profile of ours, another user's, or another installation's. A volume made before
/// installations were labelled carries none and is still its user's.
pub fn profile_refusal(
    labels: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> Option<&'static str> {
    if labels.get(LABEL_MANAGED).map(String::as_str) != Some("profile")
        || labels.get(LABEL_USER) != wanted.get(LABEL_USER)
    {
        return Some("belongs to someone else");
    }
    match labels.get(LABEL_INSTALLATION) {
        Some(installation) if Some(installation) != wanted.get(LABEL_INSTALLATION) => {
            Some("belongs to another installation (another database on this engine)")
        }
        _ => None,
    }
}

/// The profile volume name for a user and droplet, from the droplet's template (`{user_id}`,
/// `{user_name}`, `{droplet_id}`, `{droplet_name}`) or the default one.
///
/// A template without `{user_id}` is refused: it would give several users one volume (the old
/// Flowcase's weakness 9). Templates written as host paths (`/flowcase/profiles/{user_id}`)
/// are accepted and flattened into a volume name. The orchestrator also checks the volume's
/// owner label before mounting it, so even an unlucky template cannot share a volume.
pub fn profile_volume_name(droplet: &Droplet, user_id: i64, user_name: &str) -> Result<String> {
    let template = droplet
        .profile_path
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or(DEFAULT_PROFILE_TEMPLATE);
    if !template.contains("{user_id}") {
        return Err(invalid(
            "profile_path",
            format!(
                "the template {template:?} must contain {{user_id}}, or users would share a profile"
            ),
        ));
    }
    let expanded = template
        .replace("{user_id}", &user_id.to_string())
        .replace("{droplet_id}", &droplet.id.to_string())
        .replace("{user_name}", user_name)
        .replace("{droplet_name}", &droplet.name);
    // Docker volume names: [a-zA-Z0-9][a-zA-Z0-9_.-]*. Runs of anything else become one '-'.
    let mut name = String::with_capacity(expanded.len());
    for c in expanded.chars() {
        let keep = c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if keep {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 200 {
        return Err(invalid(
            "profile_path",
            format!("the template {template:?} does not give a usable volume name"),
        ));
    }
    Ok(name.to_owned())
}

/// Why a droplet cannot keep a warm pool, or `None` when it can. A pooled container is created
/// before anyone asks for it, so it cannot carry a user's profile volume (Docker cannot add a
/// mount to an existing container, and recreating it at hand-out would cost what the pool
/// saves): droplets with a profile mount get no pool.
pub fn pool_refusal(droplet: &Droplet) -> Option<&'static str> {
    if droplet.target != TargetKind::Container {
        Some("an external droplet has no containers to pool")
    } else if droplet
        .profile_mount
        .as_deref()
        .is_some_and(|m| !m.trim().is_empty())
    {
        Some("a warm pool cannot hold per-user profiles: remove the profile mount or the pool")
    } else if super::sidecar::uses_sidecar(droplet) {
        // A pooled container is handed out already running, without the sidecar its launch
        // would start.
        Some("a warm pool does not start guacd sidecars: set the pool to 0 or guacd to shared")
    } else {
        None
    }
}

/// The container of a warm pool place: the droplet's container with the future instance slug,
/// marked as pooled and owned by nobody. `input.user_id`/`user_name` are ignored.
pub fn pool_spec(droplet: &Droplet, input: &SpecInput<'_>) -> Result<ContainerSpec> {
    if let Some(reason) = pool_refusal(droplet) {
        return Err(invalid("pool_size", reason));
    }
    let mut spec = container_spec(droplet, input)?;
    spec.labels.remove(LABEL_USER);
    spec.labels
        .insert(LABEL_POOL.to_owned(), droplet.id.to_string());
    Ok(spec)
}

pub(crate) fn validate_caps(caps: &[String]) -> Result<Vec<String>> {
    caps.iter()
        .map(|cap| {
            let upper = cap.trim().to_ascii_uppercase();
            let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
            if ALLOWED_CAPS.contains(&bare) {
                Ok(bare.to_owned())
            } else {
                Err(invalid(
                    "cap_add",
                    format!(
                        "capability {cap:?} is not allowed (allowed: {})",
                        ALLOWED_CAPS.join(", ")
                    ),
                ))
            }
        })
        .collect()
}

pub(crate) fn validate_mount(path: &str) -> Result<String> {
    let ok = path.starts_with('/')
        && path != "/"
        && !path.split('/').any(|part| part == ".." || part == ".")
        && !path.contains(':')
        && !path.contains('\0');
    if ok {
        Ok(path.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(
            "profile_mount",
            format!("{path:?} must be an absolute path inside the container, not /"),
        ))
    }
}

/// The container of an instance of `droplet`.
pub fn container_spec(droplet: &Droplet, input: &SpecInput<'_>) -> Result<ContainerSpec> {
    if droplet.target != TargetKind::Container {
        return Err(invalid("target", "an external droplet has no container"));
    }
    let image = droplet
        .image
        .as_deref()
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| invalid("image", "a container droplet needs an image"))?;
    let cpu = droplet.cpu_millicores.unwrap_or(DEFAULT_CPU_MILLICORES);
    let memory_mb = droplet.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    let pids = droplet.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT);
    if cpu <= 0 {
        return Err(invalid("cpu_millicores", "must be positive"));
    }
    if memory_mb < 6 {
        // Docker refuses limits under 6 MiB.
        return Err(invalid("memory_mb", "must be at least 6"));
    }
    if pids <= 0 {
        return Err(invalid("pids_limit", "must be positive"));
    }

    let mut labels: BTreeMap<String, String> = droplet
        .labels
        .iter()
        // Our own labels cannot be forged; placement constraints are the one kind a droplet
        // gives, for cluster backends.
        .filter(|(k, _)| !k.starts_with("flowcase.") || super::placement::is_placement_label(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    super::placement::constraints(&labels).map_err(|reason| invalid("labels", reason))?;
    labels.extend(instance_labels(input.slug, input.user_id, droplet.id));
    labels.insert(LABEL_DEPLOYMENT.to_owned(), input.deployment.to_owned());

    let mut env = BTreeMap::new();
    for (key, value) in &droplet.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(invalid("env", format!("bad environment variable {key:?}")));
        }
        env.insert(key.clone(), value.clone());
    }
    if let Some(var) = password_env(droplet.droplet_type) {
        // Ours wins over a droplet value of the same name: the tunnel only knows ours.
        match input.password {
            Some(password) => {
                env.insert(var.to_owned(), password.to_owned());
            }
            None => {
                env.remove(var);
            }
        }
    }

    let mut mounts = Vec::new();
    if let Some(target) = droplet.profile_mount.as_deref().filter(|m| !m.is_empty()) {
        let target = validate_mount(target)?;
        let volume = profile_volume_name(droplet, input.user_id, input.user_name)?;
        let labels = profile_labels(input.user_id, droplet.id, input.installation);
        mounts.push(VolumeMount {
            volume,
            target,
            labels,
        });
    }

    let mut ports = vec![upstream_port(droplet)];
    for &p in &droplet.ports {
        if !ports.contains(&p) {
            ports.push(p);
        }
    }

    Ok(ContainerSpec {
        name: container_name(input.slug),
        image: image.to_owned(),
        env,
        labels,
        nano_cpus: cpu.saturating_mul(1_000_000),
        memory_bytes: memory_mb.saturating_mul(1024 * 1024),
        pids_limit: pids,
        cap_add: validate_caps(&droplet.cap_add)?,
        read_only_root: droplet.read_only_root,
        tmpfs: if droplet.read_only_root {
            READ_ONLY_TMPFS.iter().map(|p| (*p).to_owned()).collect()
        } else {
            Vec::new()
        },
        network: input.network.to_owned(),
        ports,
        exposure: input.exposure,
        mounts,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::store::NewDroplet;

    fn droplet(kind: DropletType) -> Droplet {
        let new = NewDroplet::new(1, "Desk top", kind, TargetKind::Container);
        Droplet {
            id: 7,
            tenant_id: new.tenant_id,
            name: new.name,
            description: new.description,
            droplet_type: new.droplet_type,
            target: new.target,
            image: Some("example/desktop:1".into()),
            registry: None,
            cpu_millicores: Some(1500),
            memory_mb: Some(512),
            ports: vec![],
            env: BTreeMap::from([("LANG".into(), "C.UTF-8".into())]),
            labels: BTreeMap::from([
                ("team".into(), "blue".into()),
                ("flowcase.user".into(), "999".into()),
            ]),
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
            cap_add: vec![],
            read_only_root: false,
            pids_limit: None,
            health_path: None,
            profile_mount: Some("/home/user".into()),
            idle_action: crate::store::droplets::IdleAction::Stop,
            pool_started: false,
            external_domain: None,
            external_params: BTreeMap::new(),
            guacd: crate::store::GuacdMode::Shared,
            guacd_image: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn input(password: Option<&str>) -> SpecInput<'_> {
        SpecInput {
            slug: "abc123",
            user_id: 42,
            user_name: "Alice Smith",
            network: "flowcase",
            exposure: Exposure::LoopbackEphemeral,
            password,
            deployment: "prod",
            installation: "inst-1",
        }
    }

    #[test]
    fn placement_labels_reach_the_spec_and_bad_ones_are_refused() {
        let mut d = droplet(DropletType::Vnc);
        d.labels.insert(
            "flowcase.placement.gpu".into(),
            "node.labels.gpu==true".into(),
        );
        let spec = container_spec(&d, &input(Some("pw123456"))).unwrap();
        assert_eq!(
            spec.labels["flowcase.placement.gpu"],
            "node.labels.gpu==true"
        );
        d.labels
            .insert("flowcase.placement".into(), "anywhere".into());
        match container_spec(&d, &input(Some("pw123456"))) {
            Err(AdminError::InvalidInput { field, reason }) => {
                assert_eq!(field, "labels");
                assert!(reason.contains("flowcase.placement"), "{reason}");
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn limits_labels_name_and_port_follow_the_droplet() {
        let spec = container_spec(&droplet(DropletType::Vnc), &input(Some("pw123456"))).unwrap();
        assert_eq!(spec.name, "flowcase-abc123");
        assert_eq!(spec.image, "example/desktop:1");
        assert_eq!(spec.nano_cpus, 1_500_000_000);
        assert_eq!(spec.memory_bytes, 512 * 1024 * 1024);
        assert_eq!(spec.pids_limit, DEFAULT_PIDS_LIMIT);
        assert_eq!(spec.ports, vec![5900]);
        assert_eq!(spec.network, "flowcase");
        assert_eq!(spec.labels["flowcase.instance"], "abc123");
        // A droplet cannot forge our labels.
        assert_eq!(spec.labels["flowcase.user"], "42");
        assert_eq!(spec.labels["flowcase.droplet"], "7");
        assert_eq!(spec.labels["team"], "blue");
        assert_eq!(spec.labels["flowcase.deployment"], "prod");
        assert_eq!(spec.env["VNC_PASSWORD"], "pw123456");
        assert_eq!(spec.env["LANG"], "C.UTF-8");
        assert_eq!(
            spec.mounts,
            vec![VolumeMount {
                volume: "flowcase-profile-42-7".into(),
                target: "/home/user".into(),
                labels: profile_labels(42, 7, "inst-1"),
            }]
        );
        assert!(spec.tmpfs.is_empty());
    }

    #[test]
    fn defaults_apply_when_the_droplet_sets_no_limits() {
        let mut d = droplet(DropletType::Http);
        d.cpu_millicores = None;
        d.memory_mb = None;
        d.ports = vec![8080, 9090, 8080];
        d.read_only_root = true;
        d.profile_mount = None;
        let spec = container_spec(&d, &input(None)).unwrap();
        assert_eq!(spec.nano_cpus, DEFAULT_CPU_MILLICORES * 1_000_000);
        assert_eq!(spec.memory_bytes, DEFAULT_MEMORY_MB * 1024 * 1024);
        assert_eq!(spec.ports, vec![8080, 9090]);
        assert_eq!(spec.tmpfs, vec!["/tmp".to_owned(), "/run".to_owned()]);
        assert!(spec.mounts.is_empty());
        assert!(!spec.env.contains_key("VNC_PASSWORD"));
    }

    #[test]
    fn a_droplet_cannot_preset_the_desktop_password() {
        let mut d = droplet(DropletType::Rdp);
        d.env.insert("RDP_PASSWORD".into(), "known".into());
        let spec = container_spec(&d, &input(Some("generated"))).unwrap();
        assert_eq!(spec.env["RDP_PASSWORD"], "generated");
        let spec = container_spec(&d, &input(None)).unwrap();
        assert!(!spec.env.contains_key("RDP_PASSWORD"));
    }

    #[test]
    fn capabilities_come_from_an_allow_list() {
        let mut d = droplet(DropletType::Http);
        d.cap_add = vec!["net_bind_service".into(), "CAP_CHOWN".into()];
        let spec = container_spec(&d, &input(None)).unwrap();
        assert_eq!(spec.cap_add, vec!["NET_BIND_SERVICE", "CHOWN"]);
        for bad in ["SYS_ADMIN", "ALL", "NET_ADMIN", "SYS_PTRACE", "sys_module"] {
            d.cap_add = vec![bad.into()];
            let err = container_spec(&d, &input(None)).unwrap_err();
            assert!(
                matches!(
                    err,
                    AdminError::InvalidInput {
                        field: "cap_add",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn profile_templates_need_the_user_id_and_become_volume_names() {
        let mut d = droplet(DropletType::Vnc);
        d.profile_path = Some("/flowcase/profiles/{user_id}/{droplet_name}".into());
        assert_eq!(
            profile_volume_name(&d, 42, "alice").unwrap(),
            "flowcase-profiles-42-Desk-top"
        );
        d.profile_path = Some("home-{user_name}-{user_id}".into());
        assert_eq!(
            profile_volume_name(&d, 5, "Bob/../x").unwrap(),
            "home-Bob-..-x-5"
        );
        for shared in ["/profiles/{user_name}", "{droplet_id}", "shared"] {
            d.profile_path = Some(shared.into());
            let err = profile_volume_name(&d, 42, "alice").unwrap_err();
            assert!(err.to_string().contains("{user_id}"), "{shared}: {err}");
            assert!(container_spec(&d, &input(None)).is_err());
        }
    }

    #[test]
    fn profile_mounts_must_be_absolute_paths_below_root() {
        let mut d = droplet(DropletType::Vnc);
        for bad in ["relative", "/", "/home/../etc", "/a:/b"] {
            d.profile_mount = Some(bad.into());
            assert!(container_spec(&d, &input(None)).is_err(), "{bad}");
        }
        d.profile_mount = Some("/home/user/".into());
        let spec = container_spec(&d, &input(None)).unwrap();
        assert_eq!(spec.mounts[0].target, "/home/user");
    }

    #[test]
    fn external_droplets_and_missing_images_have_no_spec() {
        let mut d = droplet(DropletType::Vnc);
        d.image = None;
        assert!(container_spec(&d, &input(None)).is_err());
        d.image = Some("x".into());
        d.target = TargetKind::External;
        assert!(container_spec(&d, &input(None)).is_err());
    }

    #[test]
    fn pool_containers_belong_to_nobody_and_never_hold_a_profile() {
        let mut d = droplet(DropletType::Vnc);
        assert!(pool_spec(&d, &input(Some("pw"))).is_err(), "profile mount");
        d.profile_mount = None;
        let spec = pool_spec(&d, &input(Some("pw"))).unwrap();
        assert!(!spec.labels.contains_key("flowcase.user"));
        assert_eq!(spec.labels["flowcase.pool"], "7");
        assert_eq!(spec.labels["flowcase.instance"], "abc123");
        assert!(spec.mounts.is_empty());
    }

    #[test]
    fn passwords_fit_the_protocol() {
        assert_eq!(password_len(DropletType::Vnc), 8);
        assert_eq!(password_env(DropletType::Http), None);
        assert_eq!(password_env(DropletType::Ssh), Some("SSH_PASSWORD"));
    }
}
