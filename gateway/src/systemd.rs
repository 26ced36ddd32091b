//! The service manager's readiness protocol (`sd_notify`), so that `deploy/systemd/
//! flowcase.service` (`Type=notify`, `NotifyAccess=all`) knows when the gateway serves and which
//! process is the gateway across a zero-downtime upgrade.
//!
//! A reload starts a new `flowcase serve --upgrade` beside the running one and sends the old one
//! `SIGQUIT` (`deploy/systemd/flowcase-reload`). The new process says `MAINPID=<its pid>` as soon
//! as it holds the listeners, before the old one exits: systemd then follows the new process
//! instead of ending the service (and killing the new process) when its old main process exits.
//! `READY=1` follows once the front door and the control plane run.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd, or `Type=simple`) nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the service manager; false when there
/// is none to tell. Failures are logged, never fatal: systemd's own timeouts report them.
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let result = (|| {
        let socket = socket.to_string_lossy();
        let addr = match socket.strip_prefix('@') {
            // Linux abstract socket names are written with a leading '@'.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => SocketAddr::from_pathname(socket.as_ref())?,
        };
        UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)
    })();
    match result {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot notify the service manager");
            false
        }
    }
}

/// Tells the service manager this process is the service's main process from now on.
pub fn notify_main_pid() {
    notify(&format!("MAINPID={}", std::process::id()));
}

/// A background service started after the front door (it depends on it, which depends on the
/// control plane): says `READY=1` once the gateway answers.
pub struct ReadyNotifier;

#[async_trait]
impl BackgroundService for ReadyNotifier {
    async fn start(&self, _shutdown: ShutdownWatch) {
        if notify(&format!(
            "READY=1\nMAINPID={}\nSTATUS=serving",
            std::process::id()
        )) {
            tracing::info!("told the service manager the gateway is ready");
        }
    }
}
