//! Wake on demand: the front door asks the control plane to start a stopped instance. The
//! orchestrator (its database pool and Docker client) lives on the control plane's runtime, so
//! requests cross over a channel instead of calling it from the proxy's threads.

use std::net::SocketAddr;
use std::sync::Arc;

use flowcase_admin::orchestrator::Orchestrator;
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<SocketAddr, String>>;

/// Bounded: a flood of wake requests waits at the front door instead of growing memory.
const QUEUE: usize = 1024;

#[derive(Clone)]
pub struct Waker {
    tx: mpsc::Sender<(i64, Reply)>,
}

pub struct WakeRequests(mpsc::Receiver<(i64, Reply)>);

pub fn channel() -> (Waker, WakeRequests) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Waker { tx }, WakeRequests(rx))
}

impl Waker {
    /// Starts the instance if needed and returns its upstream once it is ready.
    pub async fn wake(&self, instance_id: i64) -> Result<SocketAddr, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((instance_id, reply))
            .await
            .map_err(|_| "the control plane is not running".to_owned())?;
        answer
            .await
            .map_err(|_| "the control plane dropped the request".to_owned())?
    }

    /// Starts the instance in the background; nobody waits for the answer.
    pub fn nudge(&self, instance_id: i64) {
        let (reply, _) = oneshot::channel();
        let _ = self.tx.try_send((instance_id, reply));
    }
}

/// Serves wake requests on the control plane's runtime until the front door goes away.
/// `ensure_running` makes concurrent wakes of one instance start it once.
pub async fn serve(orchestrator: Arc<Orchestrator>, WakeRequests(mut rx): WakeRequests) {
    while let Some((instance_id, reply)) = rx.recv().await {
        let orchestrator = orchestrator.clone();
        tokio::spawn(async move {
            let result = orchestrator
                .ensure_running(instance_id)
                .await
                .map(|upstream| upstream.addr)
                .map_err(|e| e.to_string());
            if let Err(e) = &result {
                tracing::warn!(instance_id, error = %e, "waking an instance failed");
            }
            let _ = reply.send(result);
        });
    }
}
