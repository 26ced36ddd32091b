//! Where the tunnel connects guacd for an instance, and the sealed credentials of external hosts.
//!
//! Owns the one read path from an instance to "protocol, host, port, account, secret, extra
//! parameters" ([`DesktopTarget`], from [`Orchestrator::desktop_target`]) for both kinds of
//! desktop:
//!
//! - container desktops: the instance's upstream (`127.0.0.1:<published port>` in mode
//!   `published-loopback`, the container's address on its network in mode `container-network`)
//!   and the random per-instance password sealed on the instance row;
//! - external hosts: the droplet's host, port, account, domain and parameters, and its password
//!   or SSH private key, which are stored sealed (AES-256-GCM under the key file, key id in
//!   front) and opened only here.
//!
//! External credentials are sealed for a purpose naming the droplet id, so a sealed value copied
//! onto another droplet's row does not open there. Secrets never appear in `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Orchestrator;
use crate::error::{AdminError, Result};
use crate::secrets::{Keyring, seal};
use crate::store::{Droplet, DropletType, Instance, InstanceStatus, Store, TargetKind};

/// Purpose prefix of sealed external-host credentials (AEAD associated data, with the droplet
/// id appended).
pub const EXTERNAL_CREDENTIALS_PURPOSE: &str = "external-host-credentials";

/// What an external host is logged in with. Either or both may be set (an SSH key may come
/// with its passphrase).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalCredentials {
    /// The account's password (VNC, RDP, SSH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// An SSH private key (PEM / OpenSSH text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// The passphrase of the private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
}

impl ExternalCredentials {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.password.is_none() && self.private_key.is_none() && self.passphrase.is_none()
    }
}

impl fmt::Debug for ExternalCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExternalCredentials(..)")
    }
}

fn purpose(droplet_id: i64) -> String {
    format!("{EXTERNAL_CREDENTIALS_PURPOSE}:{droplet_id}")
}

/// Seals `credentials` for the droplet `droplet_id` (the bytes stored in
/// `droplets.external_credentials`).
pub fn seal_external_credentials(
    keyring: &Keyring,
    droplet_id: i64,
    credentials: &ExternalCredentials,
) -> Result<Vec<u8>> {
    seal::seal(keyring, &purpose(droplet_id), credentials, i64::MAX)
        .map(String::into_bytes)
        .ok_or_else(|| AdminError::InvalidData("cannot seal external host credentials".into()))
}

/// Opens a droplet's sealed credentials (none stored = empty credentials). A value sealed under
/// a key the key file no longer holds, or one that does not open with the key of that id (a
/// different key file), is an error saying which.
pub fn open_external_credentials(
    keyring: &Keyring,
    droplet: &Droplet,
) -> Result<ExternalCredentials> {
    let Some(sealed) = droplet.external_credentials.as_deref() else {
        return Ok(ExternalCredentials::default());
    };
    super::lifecycle::open_sealed(
        keyring,
        &purpose(droplet.id),
        std::str::from_utf8(sealed).unwrap_or_default(),
        0,
        &format!("the credentials of droplet {:?}", droplet.name),
    )
}

/// Seals and stores the credentials of an external host droplet (empty = removes them).
pub async fn store_external_credentials(
    store: &Store,
    keyring: &Keyring,
    droplet: &Droplet,
    credentials: &ExternalCredentials,
    now: i64,
) -> Result<()> {
    if droplet.target != TargetKind::External {
        return Err(AdminError::InvalidInput {
            field: "password",
            reason: "only external host droplets have stored credentials".into(),
        });
    }
    let sealed = if credentials.is_empty() {
        None
    } else {
        Some(seal_external_credentials(keyring, droplet.id, credentials)?)
    };
    store
        .set_droplet_external_credentials(droplet.id, sealed.as_deref(), now)
        .await
}

/// `host:port`, with brackets around an IPv6 address.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Everything guacd needs to open one instance's desktop. Secrets are in clear here: hand it
/// to guacd and drop it; it is never logged (`Debug` hides them) nor serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct DesktopTarget {
    /// `vnc`, `rdp` or `ssh`.
    pub protocol: DropletType,
    /// Host name or address guacd connects to.
    pub hostname: String,
    /// Port guacd connects to.
    pub port: u16,
    /// Account to log in as, if any.
    pub username: Option<String>,
    /// Password (the per-instance one for container desktops).
    pub password: Option<String>,
    /// SSH private key.
    pub private_key: Option<String>,
    /// Passphrase of the SSH private key.
    pub passphrase: Option<String>,
    /// Further guacd parameters (`domain` for RDP, the droplet's own parameters).
    pub params: BTreeMap<String, String>,
    /// An external host (no container of ours).
    pub external: bool,
}

impl fmt::Debug for DesktopTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DesktopTarget")
            .field("protocol", &self.protocol)
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("params", &self.params.keys().collect::<Vec<_>>())
            .field("external", &self.external)
            .finish_non_exhaustive()
    }
}

impl DesktopTarget {
    /// The guacd `connect` arguments by name (`hostname`, `port`, `username`, `password`,
    /// `private-key`, `passphrase`, plus [`Self::params`]); what the tunnel answers to guacd's
    /// `args` instruction.
    pub fn guacd_args(&self) -> BTreeMap<String, String> {
        let mut args = self.params.clone();
        args.insert("hostname".into(), self.hostname.clone());
        args.insert("port".into(), self.port.to_string());
        let secrets = [
            ("username", &self.username),
            ("password", &self.password),
            ("private-key", &self.private_key),
            ("passphrase", &self.passphrase),
        ];
        for (name, value) in secrets {
            if let Some(value) = value {
                args.insert(name.into(), value.clone());
            }
        }
        args
    }
}

/// The target of an external host droplet, credentials opened.
pub fn external_target(keyring: &Keyring, droplet: &Droplet) -> Result<DesktopTarget> {
    let (Some(hostname), Some(port)) = (droplet.external_host.clone(), droplet.external_port)
    else {
        return Err(AdminError::InvalidData(format!(
            "external droplet {:?} has no host or port",
            droplet.name
        )));
    };
    let credentials = open_external_credentials(keyring, droplet)?;
    let mut params = droplet.external_params.clone();
    if let Some(domain) = &droplet.external_domain {
        params.insert("domain".into(), domain.clone());
    }
    Ok(DesktopTarget {
        protocol: droplet.droplet_type,
        hostname,
        port,
        username: droplet.external_username.clone(),
        password: credentials.password,
        private_key: credentials.private_key,
        passphrase: credentials.passphrase,
        params,
        external: true,
    })
}

/// Where guacd connects for `instance` of `droplet` (a desktop), with the secret it logs in
/// with; `Ok(None)` while the instance does not run (it must be started first). The one read
/// path behind [`Orchestrator::desktop_target`] and the tunnel's own lookup (which adds the
/// user's rights, `access::desktop`).
pub fn connection(
    keyring: &Keyring,
    instance: &Instance,
    droplet: &Droplet,
    now: i64,
) -> Result<Option<DesktopTarget>> {
    if droplet.droplet_type == DropletType::Http {
        return Err(AdminError::InvalidInput {
            field: "instance",
            reason: "http droplets are reached over HTTP, not through a desktop tunnel".into(),
        });
    }
    if instance.status != InstanceStatus::Running {
        return Ok(None);
    }
    match droplet.target {
        TargetKind::External => external_target(keyring, droplet).map(Some),
        TargetKind::Container => {
            let upstream = super::lifecycle::parse_upstream(instance).ok_or_else(|| {
                AdminError::InvalidData("a running instance has no upstream".into())
            })?;
            let password = super::lifecycle::open_instance_credentials(keyring, instance, now)?
                .map(|c| c.password);
            // A sidecar guacd sits on the instance's network and finds the desktop there by
            // its container name (Docker's DNS), at the container's own port.
            let (hostname, port) = if super::sidecar::uses_sidecar(droplet) {
                (
                    super::spec::container_name(&instance.slug),
                    super::spec::upstream_port(droplet),
                )
            } else {
                (upstream.addr.ip().to_string(), upstream.addr.port())
            };
            Ok(Some(DesktopTarget {
                protocol: droplet.droplet_type,
                hostname,
                port,
                username: None,
                password,
                private_key: None,
                passphrase: None,
                params: BTreeMap::new(),
                external: false,
            }))
        }
    }
}

/// The guacd that opens `instance`'s desktop: its sidecar's address while it runs, `None` for
/// the configured shared guacd (droplets without a sidecar, instances not running).
pub fn guacd_address(instance: &Instance, droplet: &Droplet) -> Result<Option<SocketAddr>> {
    if !super::sidecar::uses_sidecar(droplet) || instance.status != InstanceStatus::Running {
        return Ok(None);
    }
    let recorded = instance.guacd.as_deref().and_then(|a| a.parse().ok());
    recorded.map(Some).ok_or_else(|| {
        AdminError::NotReady(format!(
            "the guacd sidecar of instance {} is not running; stop and start the instance",
            instance.slug
        ))
    })
}

impl Orchestrator {
    /// Where guacd connects for a running desktop instance (VNC, RDP, SSH), with the secret it
    /// logs in with. `http` droplets are no desktops; an instance that is not `running` must be
    /// started first ([`Self::ensure_running`]). The caller has checked that the user may use
    /// the instance (`access::usable_instance`).
    pub async fn desktop_target(&self, instance_id: i64) -> Result<DesktopTarget> {
        let instance = self.reload(instance_id).await?;
        let droplet = self
            .store
            .get_droplet(instance.droplet_id)
            .await?
            .ok_or(AdminError::NotFound("droplet"))?;
        connection(&self.keyring, &instance, &droplet, self.now())?.ok_or_else(|| {
            AdminError::NotReady(format!(
                "the instance is {}; start it first",
                instance.status
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::secrets::Key;
    use crate::store::NewDroplet;

    fn ring(id: &str, byte: u8) -> Keyring {
        Keyring::from_keys(vec![Key {
            id: id.into(),
            bytes: [byte; 32],
        }])
        .unwrap()
    }

    fn droplet(id: i64, sealed: Option<Vec<u8>>) -> Droplet {
        let new = NewDroplet::new(1, "Server", DropletType::Rdp, TargetKind::External);
        let mut d = super::super::catalogue::preview(&new);
        d.id = id;
        d.external_host = Some("rdp.example.test".into());
        d.external_port = Some(3389);
        d.external_username = Some("alice".into());
        d.external_domain = Some("CORP".into());
        d.external_params = BTreeMap::from([("security".into(), "nla".into())]);
        d.external_credentials = sealed;
        d
    }

    fn secret() -> ExternalCredentials {
        ExternalCredentials {
            password: Some("s3cret-Pa55".into()),
            ..Default::default()
        }
    }

    #[test]
    fn sealed_credentials_open_only_for_their_droplet_and_key() {
        let keys = ring("k1", 1);
        let sealed = seal_external_credentials(&keys, 7, &secret()).unwrap();
        assert!(
            !String::from_utf8_lossy(&sealed).contains("s3cret"),
            "sealed bytes hold no clear text"
        );
        let target = external_target(&keys, &droplet(7, Some(sealed.clone()))).unwrap();
        assert_eq!(target.password.as_deref(), Some("s3cret-Pa55"));
        assert_eq!(
            (target.hostname.as_str(), target.port),
            ("rdp.example.test", 3389)
        );
        let args = target.guacd_args();
        assert_eq!(args["domain"], "CORP");
        assert_eq!(args["security"], "nla");
        assert_eq!(args["username"], "alice");
        assert_eq!(args["password"], "s3cret-Pa55");
        assert!(!format!("{target:?}").contains("s3cret"), "Debug hides it");

        let moved = open_external_credentials(&keys, &droplet(8, Some(sealed.clone())));
        assert!(moved.is_err(), "sealed for droplet 7, not 8");
        let other_file =
            open_external_credentials(&ring("k1", 2), &droplet(7, Some(sealed.clone())))
                .unwrap_err()
                .to_string();
        assert!(
            other_file.contains("key \"k1\" of the secret key file does not fit"),
            "{other_file}"
        );
        let rotated_away =
            open_external_credentials(&ring("k2", 1), &droplet(7, Some(sealed))).unwrap_err();
        assert!(
            rotated_away.to_string().contains("does not hold"),
            "{rotated_away}"
        );
        assert_eq!(
            open_external_credentials(&keys, &droplet(7, None)).unwrap(),
            ExternalCredentials::default()
        );
    }

    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(host_port("::1", 22), "[::1]:22");
        assert_eq!(host_port("example.test", 22), "example.test:22");
    }
}
