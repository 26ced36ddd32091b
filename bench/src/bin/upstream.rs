//! The upstream of the proxy benchmark: a minimal HTTP/1.1 keep-alive server answering every
//! request with the same small body, so that what is measured is the proxy in front of it, not
//! the upstream. Requests are read up to the end of their header (the benchmark sends no
//! bodies). `upstream ADDR` (e.g. 127.0.0.1:18081).

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!";

fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .context("usage: upstream ADDR (e.g. 127.0.0.1:18081)")?;
    // One thread: the benchmark pins it to one CPU next to the load generator.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        loop {
            let (mut stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut filled = 0;
                loop {
                    let read = tokio::time::timeout(
                        Duration::from_secs(300),
                        stream.read(&mut buf[filled..]),
                    )
                    .await;
                    let n = match read {
                        Ok(Ok(n)) if n > 0 => n,
                        _ => return,
                    };
                    filled += n;
                    // Answer every complete request header in the buffer (pipelining included).
                    let mut start = 0;
                    while let Some(end) =
                        buf[start..filled].windows(4).position(|w| w == b"\r\n\r\n")
                    {
                        if stream.write_all(RESPONSE).await.is_err() {
                            return;
                        }
                        start += end + 4;
                    }
                    buf.copy_within(start..filled, 0);
                    filled -= start;
                    if filled == buf.len() {
                        return; // a header larger than the buffer: not a benchmark request
                    }
                }
            });
        }
    })
}
