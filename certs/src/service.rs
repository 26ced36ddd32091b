//! The pingora background service that keeps the certificate sources running: the file watcher
//! or the ACME orders. It runs on a runtime of its own, so certificate work never competes with
//! request handling, and it starts after pingora has forked (signal handlers and tasks must live
//! in the process that serves).
//!
//! It owns SIGHUP in every mode: files mode reloads on it, the other modes log that there is
//! nothing to reload (the default action of SIGHUP would end the gateway).

use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{SignalKind, signal};

use crate::{AcmeManager, FileSource};

pub enum CertificateService {
    /// A certificate that never changes while running (the self-signed one).
    Fixed,
    Files {
        source: FileSource,
        poll_every: Duration,
    },
    Acme(AcmeManager),
}

#[async_trait]
impl BackgroundService for CertificateService {
    async fn start(&self, shutdown: ShutdownWatch) {
        match self {
            Self::Fixed => ignore_hangup("self-signed", shutdown).await,
            Self::Files { source, poll_every } => source.watch(*poll_every, shutdown).await,
            Self::Acme(manager) => {
                tokio::join!(
                    manager.run(shutdown.clone()),
                    ignore_hangup("acme", shutdown)
                );
            }
        }
    }
}

async fn ignore_hangup(mode: &str, mut shutdown: ShutdownWatch) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            return;
        }
    };
    loop {
        tokio::select! {
            Some(()) = hangup.recv() => {
                tracing::info!(mode, "SIGHUP: nothing to reload in this TLS mode");
            }
            _ = shutdown.changed() => return,
        }
    }
}
