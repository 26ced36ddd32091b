//! The guacd double (`flowcase_e2e::guacd`) as a program, for the container image the guacd
//! sidecar tests run in place of `guacamole/guacd` (packed FROM scratch by
//! `flowcase_test_images::guacd_double_image`). Like the real image it takes no argument and
//! listens on 0.0.0.0:4822; `GUACD_LOG_LEVEL` is read and ignored.
//!
//! The double's records cannot leave the container by themselves, so each accepted `connect`
//! is printed on standard output as one JSON line (read with `docker logs`): the `select`, the
//! `hostname` and `port` guacd was told to connect to, and what the double found there when it
//! dialled them itself, as guacd would: the desktop's first 12 bytes (`RFB 003.008\n` for a
//! VNC server) or the error. That proves the name resolves on the instance's network.
//!
//! `flowcase-guacd-double exit <code>` exits at once with `code`: a guacd that cannot start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::time::Duration;

use flowcase_e2e::guacd::GuacdDouble;
use tokio::io::AsyncReadExt;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("exit") {
        let code = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(1);
        eprintln!("exiting at once with code {code}, as asked");
        std::process::exit(code);
    }
    let listen = std::env::var("GUACD_DOUBLE_LISTEN").unwrap_or_else(|_| "0.0.0.0:4822".into());
    let double = GuacdDouble::start_on(listen.parse().unwrap()).await;
    eprintln!(
        "guacd double listening on {} (GUACD_LOG_LEVEL={:?})",
        double.addr,
        std::env::var("GUACD_LOG_LEVEL").unwrap_or_default()
    );
    let mut reported = 0;
    loop {
        let handshakes = double.handshakes();
        for hs in handshakes.iter().skip(reported).filter(|h| h.accepted) {
            let hostname = hs.value("hostname").unwrap_or_default().to_owned();
            let port = hs.value("port").unwrap_or_default().to_owned();
            let desktop = first_words(&hostname, &port).await;
            let line = serde_json::json!({
                "select": hs.select,
                "version": hs.value("VERSION"),
                "hostname": hostname,
                "port": port,
                "name": hs.name,
                "desktop": desktop,
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        reported = handshakes.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first 12 bytes the desktop at `hostname:port` sends, or why there are none.
async fn first_words(hostname: &str, port: &str) -> String {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(format!("{hostname}:{port}"))
            .await
            .map_err(|e| format!("error: connect: {e}"))?;
        let mut banner = [0u8; 12];
        stream
            .read_exact(&mut banner)
            .await
            .map_err(|e| format!("error: read: {e}"))?;
        Ok::<_, String>(String::from_utf8_lossy(&banner).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(banner)) => banner,
        Ok(Err(e)) => e,
        Err(_) => "error: no answer within 5 s".into(),
    }
}
