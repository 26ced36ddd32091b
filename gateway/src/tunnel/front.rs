//! Desktop tunnels taken straight at the TLS front, without the HTTP proxy in between.
//!
//! A browser opens each WebSocket on a connection of its own, and its upgrade request is the
//! first thing on it. So the TLS front reads that first request head of every HTTP/1.1
//! connection: when it is the public host's `GET /tunnel` upgrade (the same host, SNI and
//! path rules the proxy applies), the connection goes to the tunnel server directly; anything
//! else goes to pingora with the bytes given back ([`crate::rewound::Rewound`]). The direct
//! path spares every desktop the proxy's per-connection buffers and a second hop through the
//! tunnels' Unix socket, which is most of what an idle tunnel cost and much of its latency.
//!
//! The proxy's `/tunnel` route stays for what does not arrive this way (an upgrade after
//! other requests on a kept-alive connection, a request split across many packets).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use flowcase_config::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::server::Tunnels;
use crate::routing::{HostClass, classify, host_name};

/// The tunnel server, once the control plane has started it; until then tunnels take the
/// proxy's route.
pub type TunnelDoor = Arc<OnceLock<Arc<Tunnels>>>;

/// The request line that may start a tunnel.
const TUNNEL_REQUEST: &[u8] = b"GET /tunnel";
/// A tunnel's upgrade request head is a few hundred bytes; a longer one takes the proxy's route.
const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 64;

/// Reads the start of a connection: one read, plus more only while the bytes may still turn
/// out to be a tunnel's request head and it is incomplete. `None` when the client closed or
/// went quiet first.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, quiet: Duration) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    loop {
        let read = tokio::time::timeout(quiet, stream.read_buf(&mut head)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
        if !may_become_tunnel(&head) || head_complete(&head) || head.len() >= MAX_HEAD {
            return Some(head);
        }
        head.reserve(1024);
    }
}

fn may_become_tunnel(head: &[u8]) -> bool {
    let n = head.len().min(TUNNEL_REQUEST.len());
    head[..n] == TUNNEL_REQUEST[..n]
}

fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n")
}

/// Whether `head` is a desktop tunnel's WebSocket upgrade to the public host, on a
/// connection whose TLS server name (if any) is that host. Anything unusual is left to the
/// proxy, which answers it as it answers every request.
pub fn is_tunnel_request(head: &[u8], sni: Option<&str>, server: &ServerConfig) -> bool {
    if !may_become_tunnel(head) || head.len() < TUNNEL_REQUEST.len() {
        return false;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(length)) if length == head.len() => {}
        // Incomplete, malformed, or followed by more bytes (pipelined): not for us.
        _ => return false,
    }
    if request.method != Some("GET") || request.version != Some(1) {
        return false;
    }
    let path = request.path.unwrap_or_default();
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    if path != "/tunnel" {
        return false;
    }
    let header = |name: &str| {
        let mut values = request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name));
        match (values.next(), values.next()) {
            (Some(one), None) => std::str::from_utf8(one.value).ok(),
            _ => None,
        }
    };
    let Some(host) = header("host").and_then(host_name) else {
        return false;
    };
    if sni.is_some_and(|sni| sni != host) || classify(&host, server) != HostClass::Public {
        return false;
    }
    header("upgrade").is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ServerConfig {
        // public host `localhost`, instances under `apps.localhost`
        ServerConfig::default()
    }

    fn upgrade(path: &str, host: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn only_the_public_hosts_tunnel_upgrade_is_taken() {
        let s = server();
        let tunnel = upgrade("/tunnel?token=t&GUAC_WIDTH=800", "localhost");
        assert!(is_tunnel_request(&tunnel, Some("localhost"), &s));
        assert!(is_tunnel_request(&tunnel, None, &s));
        assert!(is_tunnel_request(
            &upgrade("/tunnel", "LocalHost:443"),
            None,
            &s
        ));
        // Another SNI than the Host: the proxy answers 421.
        assert!(!is_tunnel_request(&tunnel, Some("other.localhost"), &s));
        // An instance's own /tunnel belongs to the instance.
        let app = upgrade("/tunnel", "abc123.apps.localhost");
        assert!(!is_tunnel_request(&app, None, &s));
        assert!(!is_tunnel_request(
            &upgrade("/tunnels", "localhost"),
            None,
            &s
        ));
        assert!(!is_tunnel_request(
            &upgrade("/tunnel/x", "localhost"),
            None,
            &s
        ));
        let plain = b"GET /tunnel HTTP/1.1\r\nHost: localhost\r\n\r\n";
        assert!(!is_tunnel_request(plain, None, &s), "not an upgrade");
        let twice = b"GET /tunnel HTTP/1.1\r\nHost: localhost\r\nHost: other.localhost\r\n\
                      Upgrade: websocket\r\n\r\n";
        assert!(!is_tunnel_request(twice, None, &s), "two Host headers");
        let mut pipelined = tunnel.clone();
        pipelined.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert!(!is_tunnel_request(&pipelined, None, &s));
        assert!(!is_tunnel_request(&tunnel[..40], None, &s), "incomplete");
        assert!(!is_tunnel_request(
            b"POST /tunnel HTTP/1.1\r\n\r\n",
            None,
            &s
        ));
    }

    #[tokio::test]
    async fn other_requests_are_not_waited_for() {
        // A request that cannot be a tunnel is handed on after the first read, complete or not.
        let (mut client, mut server) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET /dashboard HT")
            .await
            .unwrap();
        let head = read_head(&mut server, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(head, b"GET /dashboard HT");
        // A tunnel's head is read until it is complete.
        let (mut client, mut server) = tokio::io::duplex(1024);
        let whole = upgrade("/tunnel?token=t", "localhost");
        let (first, rest) = whole.split_at(20);
        tokio::io::AsyncWriteExt::write_all(&mut client, first)
            .await
            .unwrap();
        let reading = tokio::spawn(async move {
            read_head(&mut server, Duration::from_secs(5))
                .await
                .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tokio::io::AsyncWriteExt::write_all(&mut client, rest)
            .await
            .unwrap();
        assert_eq!(reading.await.unwrap(), whole);
        // A client that goes quiet is let go.
        let (_client, mut server) = tokio::io::duplex(1024);
        assert!(
            read_head(&mut server, Duration::from_millis(20))
                .await
                .is_none()
        );
    }
}
