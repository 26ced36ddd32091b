//! Per-instance guacd sidecars: a desktop droplet with `guacd = sidecar` gets, with each
//! instance, its own guacd container on the instance's private network. It is created and
//! started when the instance's container starts (launch or wake) and removed when the instance
//! stops, is destroyed or fails to start; reconciliation removes any sidecar whose instance is
//! not running, and stops a running instance whose sidecar died (its desktop could not be opened
//! any more; the next start makes a new one). The instance row keeps where the sidecar listens
//! (`instances.guacd`) while it runs, so the tunnel finds it without asking the engine.
//!
//! Owns the sidecar's container spec ([`sidecar_spec`], pure) and its start, readiness wait and
//! removal. The sidecar runs the stock `guacamole/guacd` image (configured as `[guacd]
//! sidecar_image`, or the droplet's own): it takes no configuration but `GUACD_LOG_LEVEL` and
//! listens on [`GUACD_PORT`]; where the desktop is comes with each tunnel's `connect`
//! (`hostname` = the instance container's name, which Docker's DNS resolves on the instance's
//! network, `port` = the container's own port; no host port is involved). The gateway reaches
//! the sidecar the way it reaches instances: at a port published on 127.0.0.1 in mode
//! `published-loopback`, at its address on the instance network (which the gateway's container
//! joins) in mode `container-network`.
//!
//! The instances of a sidecar droplet always get a private network named after the instance's
//! container, in both modes: the shared network of `published-loopback` turns traffic between
//! containers off, which would keep guacd from the desktop; a private one holds only the
//! instance, its sidecar and (mode `container-network`) the gateway.
//!
//! The Swarm backend does not run sidecars ([`super::Engine::runs_sidecars`]): launching a
//! sidecar droplet there fails with a clear error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use flowcase_config::UpstreamMode;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::Orchestrator;
use super::engine::{ContainerSpec, Exposure, LABEL_DEPLOYMENT, LABEL_ROLE, ROLE_GUACD};
use super::lifecycle::engine_err;
use super::spec;
use crate::error::{AdminError, Result};
use crate::store::{Droplet, DropletType, GuacdMode, Instance, TargetKind};

/// The port guacd listens on.
pub const GUACD_PORT: u16 = 4822;
/// CPU limit of a sidecar: guacd encodes the desktop's picture for one user.
const SIDECAR_CPU_MILLICORES: i64 = 1000;
/// Memory limit of a sidecar (guacd forks one process per connection).
const SIDECAR_MEMORY_MB: i64 = 512;
/// Process limit of a sidecar.
const SIDECAR_PIDS_LIMIT: i64 = 256;
/// `GUACD_LOG_LEVEL` of a sidecar: the one setting the stock image reads.
const SIDECAR_LOG_LEVEL: &str = "info";
/// How long a fresh connection must stay open and silent to prove guacd itself accepted it
/// (Docker's userland proxy accepts on a published port before anything listens inside, then
/// closes at once; guacd waits silently for the client's `select`).
const HELD_OPEN: Duration = Duration::from_millis(150);
/// Bound of one connection attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts.
const PAUSE: Duration = Duration::from_millis(50);

/// The container name of an instance's guacd sidecar.
pub fn sidecar_name(slug: &str) -> String {
    format!("{}-guacd", spec::container_name(slug))
}

/// Whether instances of `droplet` get a guacd sidecar.
pub fn uses_sidecar(droplet: &Droplet) -> bool {
    droplet.guacd == GuacdMode::Sidecar
        && droplet.target == TargetKind::Container
        && droplet.droplet_type != DropletType::Http
}

/// The image of `droplet`'s sidecars: its own, else `default`.
pub fn sidecar_image<'a>(droplet: &'a Droplet, default: &'a str) -> &'a str {
    droplet
        .guacd_image
        .as_deref()
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .unwrap_or(default)
}

/// The sidecar container of instance `slug` of `droplet` (owned by `user_id`): the instance's
/// labels plus [`LABEL_ROLE`] `guacd`, on the instance's `network`, port 4822 exposed as the
/// instance's ports are. Hardening (capabilities dropped, no-new-privileges) is the engine's.
pub fn sidecar_spec(
    droplet: &Droplet,
    slug: &str,
    user_id: i64,
    network: &str,
    exposure: Exposure,
    deployment: &str,
    default_image: &str,
) -> ContainerSpec {
    let mut labels = spec::instance_labels(slug, user_id, droplet.id);
    labels.insert(LABEL_DEPLOYMENT.to_owned(), deployment.to_owned());
    labels.insert(LABEL_ROLE.to_owned(), ROLE_GUACD.to_owned());
    ContainerSpec {
        name: sidecar_name(slug),
        image: sidecar_image(droplet, default_image).to_owned(),
        env: BTreeMap::from([("GUACD_LOG_LEVEL".to_owned(), SIDECAR_LOG_LEVEL.to_owned())]),
        labels,
        nano_cpus: SIDECAR_CPU_MILLICORES * 1_000_000,
        memory_bytes: SIDECAR_MEMORY_MB * 1024 * 1024,
        pids_limit: SIDECAR_PIDS_LIMIT,
        cap_add: Vec::new(),
        // guacd writes its per-connection files (FreeRDP's settings, recordings) in its home.
        read_only_root: false,
        tmpfs: Vec::new(),
        network: network.to_owned(),
        ports: vec![GUACD_PORT],
        exposure,
        mounts: Vec::new(),
    }
}

impl Orchestrator {
    /// Whether the instances of `droplet` get a network of their own (named after the
    /// instance's container) rather than the shared one.
    pub(super) fn private_network(&self, droplet: &Droplet) -> bool {
        self.options.upstream_mode == UpstreamMode::ContainerNetwork || uses_sidecar(droplet)
    }

    /// Why a sidecar droplet cannot launch here (engine without sidecars, image absent), checked
    /// before admission so the refusal is immediate.
    pub(super) async fn check_sidecar(&self, droplet: &Droplet) -> Result<()> {
        if !uses_sidecar(droplet) {
            return Ok(());
        }
        if !self.engine.runs_sidecars() {
            return Err(AdminError::InvalidInput {
                field: "guacd",
                reason: "this engine (Docker Swarm) does not run guacd sidecars: set the \
                         droplet's guacd to shared"
                    .into(),
            });
        }
        let image = sidecar_image(droplet, &self.options.guacd_sidecar_image).to_owned();
        if !self
            .engine
            .image_present(&image)
            .await
            .map_err(engine_err)?
        {
            return Err(AdminError::ImageMissing(image));
        }
        Ok(())
    }

    /// Starts the guacd sidecar of `instance` (whose container was just started), waits until
    /// guacd accepts connections and records its address on the row. A sidecar left from an
    /// earlier start is replaced. On failure the caller removes it ([`Self::remove_sidecar`]).
    pub(super) async fn start_sidecar(
        &self,
        instance: &Instance,
        droplet: &Droplet,
    ) -> Result<SocketAddr> {
        self.check_sidecar(droplet).await?;
        let network = self.network_for(droplet, &instance.slug);
        let spec = sidecar_spec(
            droplet,
            &instance.slug,
            instance.user_id,
            &network,
            self.exposure(),
            &self.options.deployment,
            &self.options.guacd_sidecar_image,
        );
        self.engine.remove(&spec.name).await.map_err(engine_err)?;
        let id = self.engine.create(&spec).await.map_err(engine_err)?;
        self.engine.start(&id).await.map_err(engine_err)?;
        let info = self
            .engine
            .inspect(&id)
            .await
            .map_err(engine_err)?
            .ok_or_else(|| sidecar_failed("it vanished after its start".into()))?;
        sidecar_exited(&info)?;
        let addr = match self.options.upstream_mode {
            UpstreamMode::PublishedLoopback => {
                let port = info.published.get(&GUACD_PORT).ok_or_else(|| {
                    sidecar_failed(format!("port {GUACD_PORT} was not published on 127.0.0.1"))
                })?;
                SocketAddr::from(([127, 0, 0, 1], *port))
            }
            UpstreamMode::ContainerNetwork => {
                let ip = info.addresses.get(&network).ok_or_else(|| {
                    sidecar_failed(format!("it has no address on network {network}"))
                })?;
                SocketAddr::new(*ip, GUACD_PORT)
            }
        };
        self.wait_accepting(&id, addr).await?;
        self.store
            .set_instance_guacd(instance.id, Some(&addr.to_string()))
            .await?;
        Ok(addr)
    }

    /// Removes the guacd sidecar of instance `slug` (missing is fine) and forgets its address.
    pub(super) async fn remove_sidecar(&self, instance_id: i64, slug: &str) -> Result<()> {
        self.engine
            .remove(&sidecar_name(slug))
            .await
            .map_err(engine_err)?;
        self.store.set_instance_guacd(instance_id, None).await
    }

    /// Waits, within the readiness timeout, until guacd itself holds a connection open at
    /// `addr`; a sidecar that exits fails at once.
    async fn wait_accepting(&self, id: &str, addr: SocketAddr) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.options.ready_timeout;
        loop {
            let last = match tokio::time::timeout(ATTEMPT_TIMEOUT, held_open(addr)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(seen)) => seen,
                Err(_) => format!("no connection to {addr} within {ATTEMPT_TIMEOUT:?}"),
            };
            match self.engine.inspect(id).await.map_err(engine_err)? {
                Some(info) => sidecar_exited(&info)?,
                None => return Err(sidecar_failed("it disappeared while starting".into())),
            }
            if tokio::time::Instant::now() + PAUSE >= deadline {
                return Err(sidecar_failed(format!(
                    "guacd did not accept connections within {} s (last try: {last})",
                    self.options.ready_timeout.as_secs_f64()
                )));
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
}

/// One try: connected, and the connection stays open and silent for [`HELD_OPEN`].
async fn held_open(addr: SocketAddr) -> std::result::Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(HELD_OPEN, stream.read(&mut byte)).await {
        Err(_) => Ok(()),
        Ok(Ok(0)) => Err(format!("{addr} closed the connection at once")),
        Ok(Ok(_)) => Err(format!("{addr} spoke first, which guacd never does")),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
    }
}

fn sidecar_failed(why: String) -> AdminError {
    AdminError::NotReady(format!("the guacd sidecar failed to start: {why}"))
}

fn sidecar_exited(info: &super::engine::ContainerInfo) -> Result<()> {
    use super::engine::ContainerState;
    if matches!(info.state, ContainerState::Exited | ContainerState::Dead) {
        return Err(sidecar_failed(format!(
            "it exited with code {}",
            info.exit_code.unwrap_or(-1)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::orchestrator::engine::{LABEL_INSTANCE, is_sidecar};
    use crate::store::NewDroplet;

    fn droplet(mode: GuacdMode, image: Option<&str>) -> Droplet {
        let mut new = NewDroplet::new(1, "Desk", DropletType::Vnc, TargetKind::Container);
        new.image = Some("desk:1".into());
        new.guacd = mode;
        new.guacd_image = image.map(Into::into);
        let mut d = super::super::catalogue::preview(&new);
        d.id = 7;
        d
    }

    #[test]
    fn the_sidecar_is_labelled_as_part_of_its_instance_on_its_network() {
        let d = droplet(GuacdMode::Sidecar, None);
        let s = sidecar_spec(
            &d,
            "abc",
            3,
            "flowcase-abc",
            Exposure::LoopbackEphemeral,
            "prod",
            "guacamole/guacd:1.5.5",
        );
        assert_eq!(s.name, "flowcase-abc-guacd");
        assert_eq!(s.image, "guacamole/guacd:1.5.5");
        assert_eq!(s.labels[LABEL_INSTANCE], "abc");
        assert_eq!(s.labels[LABEL_DEPLOYMENT], "prod");
        assert!(is_sidecar(&s.labels));
        assert_eq!(
            (s.network.as_str(), s.ports.as_slice()),
            ("flowcase-abc", &[4822][..])
        );
        assert_eq!(s.env.keys().collect::<Vec<_>>(), ["GUACD_LOG_LEVEL"]);
        assert!(s.cap_add.is_empty());
    }

    #[test]
    fn a_droplet_may_name_its_own_image_and_only_desktop_containers_get_one() {
        let own = droplet(GuacdMode::Sidecar, Some("registry.test/guacd:2"));
        assert_eq!(
            sidecar_image(&own, "guacamole/guacd:1.5.5"),
            "registry.test/guacd:2"
        );
        assert!(uses_sidecar(&own));
        assert!(!uses_sidecar(&droplet(GuacdMode::Shared, None)));
        let mut web = droplet(GuacdMode::Sidecar, None);
        web.droplet_type = DropletType::Http;
        assert!(!uses_sidecar(&web));
    }
}
