//! What the front door knows without asking anyone: the web-app instances by slug, and the
//! sessions revoked since the app-host cookies derived from them were issued. The control plane's
//! refresher keeps both fresh from the database; the proxy only ever reads memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use flowcase_admin::store::{DropletType, Instance, InstanceStatus, Store, now_millis};

/// How stale the front door's view may get. Revocations (logout, a disabled user) reach
/// instance hosts within this time, also from other gateway processes.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// What the proxy needs of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRoute {
    pub id: i64,
    pub user_id: i64,
    pub status: InstanceStatus,
    pub upstream: Option<SocketAddr>,
    /// For the "Starting …" page.
    pub droplet_name: String,
}

impl InstanceRoute {
    fn new(i: &Instance, droplet_names: &HashMap<i64, String>) -> Self {
        Self {
            id: i.id,
            user_id: i.user_id,
            status: i.status,
            upstream: i.upstream.as_deref().and_then(|u| u.parse().ok()),
            droplet_name: droplet_names
                .get(&i.droplet_id)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

#[derive(Default)]
pub struct Snapshot {
    instances: ArcSwap<HashMap<String, Arc<InstanceRoute>>>,
    /// Revoked session id hashes, with the absolute expiry after which they can be forgotten.
    revoked: ArcSwap<HashMap<String, i64>>,
}

impl Snapshot {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn instance(&self, slug: &str) -> Option<Arc<InstanceRoute>> {
        self.instances.load().get(slug).cloned()
    }

    pub fn is_revoked(&self, session_id: &str) -> bool {
        self.revoked.load().contains_key(session_id)
    }

    /// Only instances of `http` droplets get an instance host: a desktop's port speaks VNC, RDP
    /// or SSH to guacd through the tunnel, never HTTP to a browser.
    fn set_instances(
        &self,
        instances: &[Instance],
        droplets: &HashMap<i64, (String, DropletType)>,
    ) {
        let names: HashMap<i64, String> = droplets
            .iter()
            .map(|(id, (name, _))| (*id, name.clone()))
            .collect();
        let map = instances
            .iter()
            .filter(|i| !matches!(i.status, InstanceStatus::Gone))
            .filter(|i| matches!(droplets.get(&i.droplet_id), Some((_, DropletType::Http))))
            .map(|i| (i.slug.clone(), Arc::new(InstanceRoute::new(i, &names))))
            .collect();
        self.instances.store(Arc::new(map));
    }

    fn add_revoked(&self, sessions: Vec<(String, i64)>, now: i64) {
        let current = self.revoked.load();
        // The polls overlap, so most bring nothing new: only rebuild when something changes.
        let nothing_new = sessions.iter().all(|(id, _)| current.contains_key(id));
        if nothing_new && current.values().all(|&exp| exp > now) {
            return;
        }
        let mut next: HashMap<String, i64> = current
            .iter()
            .filter(|(_, exp)| **exp > now)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        next.extend(sessions);
        self.revoked.store(Arc::new(next));
    }
}

/// Keeps the snapshot fresh until the process ends. Failures keep the last good view.
pub async fn refresh_forever(store: Store, snapshot: Arc<Snapshot>) {
    // A margin below the last poll: a revocation committed just as we read must not slip by.
    const OVERLAP_MS: i64 = 5_000;
    let mut since = 0;
    loop {
        let now = now_millis();
        let routes = async {
            let instances = store.list_live_instances().await?;
            let droplets = store.list_droplets().await?;
            let droplets: HashMap<i64, (String, DropletType)> = droplets
                .into_iter()
                .map(|d| (d.id, (d.name, d.droplet_type)))
                .collect();
            Ok::<_, flowcase_admin::AdminError>((instances, droplets))
        };
        match routes.await {
            Ok((instances, droplets)) => snapshot.set_instances(&instances, &droplets),
            Err(e) => tracing::warn!(error = %e, "cannot refresh the instance routes"),
        }
        match store.revoked_sessions_since(since, now).await {
            Ok(revoked) => {
                snapshot.add_revoked(revoked, now);
                since = now - OVERLAP_MS;
            }
            Err(e) => tracing::warn!(error = %e, "cannot refresh the revoked sessions"),
        }
        tokio::time::sleep(REFRESH_INTERVAL).await;
    }
}
