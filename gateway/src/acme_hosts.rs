//! Which host names the gateway may order ACME certificates for on demand: the public host, and
//! `<slug>.<apps_domain>` only when an instance with that slug exists. Anything else — random
//! names in SNI, deeper sub-domains, instances that are gone — is refused, so nobody can make the
//! gateway order certificates (and spend its ACME rate limits) for names of their choosing.
//!
//! Asked from the certificate service's runtime, never during a handshake. It opens a small
//! store of its own on first use: the control plane's store lives on another runtime.

use std::sync::Arc;

use async_trait::async_trait;
use flowcase_admin::Store;
use flowcase_admin::store::InstanceStatus;
use flowcase_certs::NameAuthority;
use flowcase_config::Config;
use tokio::sync::OnceCell;

use crate::routing::{HostClass, classify};

pub struct InstanceHosts {
    config: Arc<Config>,
    store: OnceCell<Store>,
}

impl InstanceHosts {
    pub fn new(config: Arc<Config>) -> Self {
        Self {
            config,
            store: OnceCell::new(),
        }
    }

    async fn store(&self) -> anyhow::Result<&Store> {
        self.store
            .get_or_try_init(|| async {
                let mut config = (*self.config).clone();
                // A lookup now and then: two connections are plenty.
                config.database.max_connections = 2;
                Store::open(&config).await.map_err(anyhow::Error::from)
            })
            .await
    }
}

#[async_trait]
impl NameAuthority for InstanceHosts {
    fn is_candidate(&self, host: &str) -> bool {
        classify(host, &self.config.server) != HostClass::Other
    }

    async fn may_order(&self, host: &str) -> bool {
        let slug = match classify(host, &self.config.server) {
            HostClass::Public => return true,
            HostClass::Other => return false,
            HostClass::Instance { slug } => slug,
        };
        let store = match self.store().await {
            Ok(store) => store,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the database to check an instance host");
                return false;
            }
        };
        match store.get_instance_by_slug(&slug).await {
            Ok(Some(instance)) => instance.status != InstanceStatus::Gone,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, host, "cannot look up the instance of a host name");
                false
            }
        }
    }
}
