//! Readiness: when a started container can take its first user.
//!
//! A TCP accept alone proves little: Docker's userland proxy accepts on the published port
//! before anything listens inside the container. So each protocol is asked for its first words:
//! `http` droplets must answer the health path with a status below 500 (plain HTTP/1.1), VNC
//! must send its RFB banner, SSH its identification line, RDP must answer an X.224 connection
//! request. Every attempt is bounded; the caller bounds the whole wait.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::store::DropletType;

/// Bound of one probe (connect + exchange).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer read from a probe.
const MAX_ANSWER: usize = 1024;

/// What to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `GET <path>` answered with a status < 500.
    Http {
        /// The health path.
        path: String,
    },
    /// An `RFB 003.00x\n` banner.
    Vnc,
    /// An `SSH-` identification line.
    Ssh,
    /// A TPKT answer to an X.224 connection request.
    Rdp,
}

impl Probe {
    /// The probe for a droplet type; `health_path` is for `http`.
    pub fn for_droplet(droplet_type: DropletType, health_path: Option<&str>) -> Self {
        match droplet_type {
            DropletType::Http => Self::Http {
                path: health_path
                    .filter(|p| p.starts_with('/'))
                    .unwrap_or("/")
                    .to_owned(),
            },
            DropletType::Vnc => Self::Vnc,
            DropletType::Ssh => Self::Ssh,
            DropletType::Rdp => Self::Rdp,
        }
    }
}

/// One attempt: `Ok(())` when ready, otherwise what was seen (for the final error message).
pub async fn probe_once(addr: SocketAddr, probe: &Probe) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, exchange(addr, probe)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer from {addr} within {PROBE_TIMEOUT:?}")),
    }
}

async fn exchange(addr: SocketAddr, probe: &Probe) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    match probe {
        Probe::Http { path } => {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: flowcase-readiness\r\n\
                 Connection: close\r\n\r\n"
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("send to {addr}: {e}"))?;
            let answer = read_some(&mut stream, |buf| buf.contains(&b'\n')).await?;
            let line = String::from_utf8_lossy(&answer);
            let line = line.lines().next().unwrap_or_default();
            let status: u16 = line
                .strip_prefix("HTTP/1.")
                .and_then(|rest| rest.get(2..5))
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| format!("not an HTTP answer from {addr}: {line:?}"))?;
            if status < 500 {
                Ok(())
            } else {
                Err(format!("{path} answered {status}"))
            }
        }
        Probe::Vnc => {
            let answer = read_some(&mut stream, |buf| buf.len() >= 12).await?;
            if answer.len() >= 12 && answer.starts_with(b"RFB 003.") && answer[11] == b'\n' {
                Ok(())
            } else {
                Err(format!(
                    "no RFB banner from {addr}: {:?}",
                    String::from_utf8_lossy(&answer)
                ))
            }
        }
        Probe::Ssh => {
            let answer = read_some(&mut stream, |buf| buf.contains(&b'\n')).await?;
            if answer.starts_with(b"SSH-") {
                Ok(())
            } else {
                Err(format!("no SSH banner from {addr}"))
            }
        }
        Probe::Rdp => {
            // TPKT + X.224 Connection Request with an RDP negotiation request (TLS | CredSSP).
            const REQUEST: [u8; 19] = [
                0x03, 0x00, 0x00, 0x13, 0x0e, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x08,
                0x00, 0x03, 0x00, 0x00, 0x00,
            ];
            stream
                .write_all(&REQUEST)
                .await
                .map_err(|e| format!("send to {addr}: {e}"))?;
            let answer = read_some(&mut stream, |buf| buf.len() >= 4).await?;
            if answer.first() == Some(&0x03) {
                Ok(())
            } else {
                Err(format!("no X.224 answer from {addr}"))
            }
        }
    }
}

/// Reads until `enough` says so, the peer closes, or [`MAX_ANSWER`] bytes arrived.
async fn read_some(
    stream: &mut TcpStream,
    enough: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 256];
    while !enough(&buf) && buf.len() < MAX_ANSWER {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            if buf.is_empty() {
                return Err("connection closed without a word".into());
            }
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
                let _ = s.write_all(answer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_below_500_is_ready_and_500_is_not() {
        let http = Probe::for_droplet(DropletType::Http, Some("/health"));
        let addr = serve_once(b"HTTP/1.1 404 Not Found\r\n\r\n").await;
        assert_eq!(probe_once(addr, &http).await, Ok(()));
        let addr = serve_once(b"HTTP/1.1 503 Busy\r\n\r\n").await;
        assert!(probe_once(addr, &http).await.unwrap_err().contains("503"));
        let addr = serve_once(b"").await;
        assert!(probe_once(addr, &http).await.is_err());
    }

    #[tokio::test]
    async fn vnc_needs_the_rfb_banner() {
        let addr = serve_once(b"RFB 003.008\n").await;
        assert_eq!(probe_once(addr, &Probe::Vnc).await, Ok(()));
        let addr = serve_once(b"HTTP/1.1 200 OK\r\n\r\n").await;
        assert!(probe_once(addr, &Probe::Vnc).await.is_err());
    }

    #[tokio::test]
    async fn nothing_listening_is_not_ready() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(probe_once(addr, &Probe::Ssh).await.is_err());
    }
}
