//! The Docker engine client, configured from `[docker]`. Connecting is lazy: a gateway starts
//! while Docker is down and reports it until it comes back.

pub use bollard::Docker;

/// A client for `unix:///path` or `tcp://host:port` (the config has checked the scheme).
pub fn connect(host: &str) -> Result<Docker, String> {
    const TIMEOUT_SECS: u64 = 30;
    let result = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_http(host, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
    };
    result.map_err(|e| format!("cannot set up the Docker client for {host}: {e}"))
}
