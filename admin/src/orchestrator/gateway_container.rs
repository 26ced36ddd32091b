//! Mode `container-network`: the gateway's own container and the instance networks it joins.
//!
//! A gateway that runs in a container reaches an instance at the instance's address on the
//! instance's private network (inter-container traffic off, one network per instance), so its
//! own container must be attached to that network: at launch (and when a warm pool container
//! is made) it is connected, at destroy disconnected before the network is removed. Which
//! container is "ours" comes from `docker.gateway_container`, or else is found from inside:
//! the container id in `/proc/self/mountinfo` (Docker bind-mounts `/etc/hostname` from
//! `/var/lib/docker/containers/<id>/`), in `/proc/self/cgroup` (cgroup v1 and systemd
//! `docker-<id>.scope` paths), or the host name (Docker's default is the short id). Each
//! candidate is checked with the engine; none found means a gateway on the host, which reaches
//! bridge addresses directly and attaches nothing.

use super::Orchestrator;
use super::engine::ContainerInfo;
use super::lifecycle::engine_err;
use crate::error::Result;

/// The container id behind this process's `/etc/hostname` (or `/etc/hosts`,
/// `/etc/resolv.conf`) in `/proc/self/mountinfo` text: Docker bind-mounts them from
/// `<data root>/containers/<id>/`. Only those mount points count: a process on the host sees
/// other containers' mounts (their `shm`) under the same directory.
pub fn ids_in_mountinfo(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        if !matches!(
            *mount_point,
            "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf"
        ) {
            continue;
        }
        if let Some(at) = root.find("/containers/") {
            let rest = &root[at + "/containers/".len()..];
            push_id(&mut ids, rest.split('/').next().unwrap_or_default());
        }
    }
    ids
}

/// Container ids in `/proc/self/cgroup` text (`.../docker/<id>`, `.../docker-<id>.scope`).
pub fn ids_in_cgroup(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for line in text.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or_default();
        for part in path.split('/') {
            let part = part.strip_prefix("docker-").unwrap_or(part);
            let part = part.strip_suffix(".scope").unwrap_or(part);
            push_id(&mut ids, part);
        }
    }
    ids
}

fn push_id(ids: &mut Vec<String>, candidate: &str) {
    if candidate.len() == 64
        && candidate.chars().all(|c| c.is_ascii_hexdigit())
        && !ids.iter().any(|id| id == candidate)
    {
        ids.push(candidate.to_owned());
    }
}

/// The ids found in this process's mounts and cgroups, best first, and the host name.
fn candidates() -> (Vec<String>, Option<String>) {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let mut ids = ids_in_mountinfo(&read("/proc/self/mountinfo"));
    for id in ids_in_cgroup(&read("/proc/self/cgroup")) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let host = read("/etc/hostname").trim().to_owned();
    let host = (!host.is_empty() && host.len() <= 64 && !ids.contains(&host)).then_some(host);
    (ids, host)
}

/// Length of the short id Docker gives a container as its default host name.
const SHORT_ID_LEN: usize = 12;

/// Whether the engine's answer for the host name is the container behind it. An engine
/// resolves a word to a container by exact name or by any unique prefix of an id, so a machine
/// merely called `vm` or `db` would otherwise "be" whichever container's (or swarm service's)
/// id happens to begin that way.
fn is_the_host_names_container(host: &str, info: &ContainerInfo) -> bool {
    info.name == host || (host.len() >= SHORT_ID_LEN && info.id.starts_with(host))
}

impl Orchestrator {
    /// The gateway's own container in mode `container-network` (its engine id), or `None` for a
    /// gateway on the host. Found once; the configured name must exist.
    pub async fn gateway_container(&self) -> Result<Option<String>> {
        self.gateway
            .get_or_try_init(|| async {
                if let Some(name) = &self.options.gateway_container {
                    return match self.engine.inspect(name).await.map_err(engine_err)? {
                        Some(info) => Ok(Some(info.id)),
                        None => Err(crate::error::AdminError::InvalidInput {
                            field: "docker.gateway_container",
                            reason: format!("no container named {name} on the engine"),
                        }),
                    };
                }
                let (ids, host) = candidates();
                for id in ids {
                    if let Some(info) = self.engine.inspect(&id).await.map_err(engine_err)? {
                        return Ok(Some(self.found(info)));
                    }
                }
                let Some(host) = host else { return Ok(None) };
                // Only a guess: an engine refusing the word (a prefix of several ids) means it
                // names no container of ours, not that the gateway cannot start.
                match self.engine.inspect(&host).await {
                    Ok(Some(info)) if is_the_host_names_container(&host, &info) => {
                        Ok(Some(self.found(info)))
                    }
                    Ok(_) => Ok(None),
                    Err(e) => {
                        tracing::debug!(host = %host, error = %e, "the host name names no container");
                        Ok(None)
                    }
                }
            })
            .await
            .cloned()
    }

    fn found(&self, info: ContainerInfo) -> String {
        tracing::info!(container = %info.name, "the gateway runs in a container; instance networks are attached to it");
        info.id
    }

    /// Connects the gateway's container (if any) to an instance network.
    pub(super) async fn attach_gateway(&self, network: &str) -> Result<()> {
        if let Some(container) = self.gateway_container().await? {
            self.engine
                .connect_network(network, &container)
                .await
                .map_err(engine_err)?;
        }
        Ok(())
    }

    /// Disconnects the gateway's container (if any) from an instance network and removes the
    /// network (Docker refuses to remove a network something is still attached to).
    pub(super) async fn remove_instance_network(&self, network: &str) -> Result<()> {
        if let Some(container) = self.gateway_container().await? {
            self.engine
                .disconnect_network(network, &container)
                .await
                .map_err(engine_err)?;
        }
        self.engine
            .remove_network(network)
            .await
            .map_err(engine_err)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const ID: &str = "3f4e1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

    #[test]
    fn the_container_id_is_found_in_mountinfo_and_cgroup_lines() {
        let mountinfo = format!(
            "585 567 0:52 / / rw,relatime master:1 - overlay overlay rw\n\
             601 585 254:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(ids_in_mountinfo(&mountinfo), vec![ID.to_owned()]);
        let v1 = format!("12:memory:/docker/{ID}\n11:cpu:/docker/{ID}\n");
        assert_eq!(ids_in_cgroup(&v1), vec![ID.to_owned()]);
        let systemd = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(ids_in_cgroup(&systemd), vec![ID.to_owned()]);
        assert!(
            ids_in_cgroup("0::/\n").is_empty(),
            "cgroup v2 namespaced: nothing"
        );
        assert!(ids_in_mountinfo("1 0 0:1 / / rw - ext4 /dev/sda rw\n").is_empty());
        // On the host, other containers' mounts are visible: they are not ours.
        let host =
            format!("700 29 0:60 / /var/lib/docker/containers/{ID}/mounts/shm rw - tmpfs shm rw\n");
        assert!(ids_in_mountinfo(&host).is_empty());
    }

    #[test]
    fn a_host_name_is_a_container_by_its_name_or_its_short_id_never_a_shorter_prefix() {
        let info = |id: &str, name: &str| ContainerInfo {
            id: id.into(),
            name: name.into(),
            state: super::super::engine::ContainerState::Running,
            exit_code: None,
            labels: Default::default(),
            addresses: Default::default(),
            published: Default::default(),
        };
        assert!(is_the_host_names_container(&ID[..12], &info(ID, "gateway")));
        assert!(is_the_host_names_container("gateway", &info(ID, "gateway")));
        assert!(is_the_host_names_container(ID, &info(ID, "gateway")));
        // A machine called "vm" and a swarm service whose id begins "vm" (seen in CI).
        let service = info("vmfjrzi17fggv0d9qnag5fy7q", "flowcase-abc");
        assert!(!is_the_host_names_container("vm", &service));
        assert!(!is_the_host_names_container(&ID[..4], &info(ID, "x")));
        assert!(!is_the_host_names_container("other", &info(ID, "gateway")));
    }
}
