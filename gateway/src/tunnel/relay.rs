//! The relay between the browser's WebSocket and guacd's TCP stream, once the handshake is done.
//!
//! - guacd → browser: whole instructions only, as many as arrived together per text frame
//!   (valid UTF-8, never cut inside an instruction or a code point); what guacd sent after
//!   `ready` goes first.
//! - browser → guacd: instructions are reassembled across frames; the internal ping
//!   (`0.,4.ping,…;`) is answered with itself and never forwarded, other internal instructions
//!   are dropped; real input is reported as instance activity (and dropped for read-only
//!   watchers).
//! - Memory is bounded both ways: guacd is read only while the browser's queue has room (so a
//!   browser that stops reading stops guacd's reads, and TCP pushes back on guacd), and no
//!   buffer ever holds more than one read plus one incomplete instruction.
//! - Every end closes the WebSocket with a Guacamole status: guacd's own `error` status, an
//!   upstream error when guacd vanishes without saying goodbye, SESSION_CLOSED when the session
//!   behind the token ends, timeouts when a side goes silent.

use std::sync::Arc;
use std::time::Duration;

use flowcase_admin::orchestrator::activity::ActivityReporter;
use flowcase_guac::{Scan, Status, opcode, scan};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::{Direction, TunnelTraffic};
use crate::snapshot::Snapshot;

/// guacd sends at least a `nop` every 5 s; the Java server gives up after 15 s of silence.
pub const GUACD_SILENCE: Duration = Duration::from_secs(15);
/// The browser client pings every half second, but browsers slow the timers of hidden tabs down
/// to one wake-up a minute: a quiet browser is given two of those before it counts as gone.
pub const BROWSER_SILENCE: Duration = Duration::from_secs(120);
/// How long a write to guacd may block.
const GUACD_WRITE: Duration = Duration::from_secs(15);
/// One read from guacd.
const READ_CHUNK: usize = 64 * 1024;
/// Frames waiting for the browser. With [`READ_CHUNK`] this bounds what a stalled browser
/// costs: about `QUEUE × (READ_CHUNK + flowcase_guac::MAX_INSTRUCTION_BYTES)` here, plus the
/// socket buffers.
const QUEUE: usize = 4;
/// How often the session behind the tunnel is looked up in the snapshot.
const SESSION_CHECK: Duration = Duration::from_millis(250);
/// Activity is noted at most this often per tunnel.
const ACTIVITY_EVERY: Duration = Duration::from_secs(1);

/// The session a tunnel lives in.
pub struct SessionWatch {
    pub snapshot: Arc<Snapshot>,
    /// The stored session id (hash).
    pub session: String,
    /// Its absolute expiry, unix ms.
    pub expires_at: i64,
}

/// Where real user input goes: reported as activity, or, for a read-only watcher, dropped
/// before guacd (which would ignore it anyway: two locks are better than one).
pub struct ActivitySink {
    pub reporter: Option<ActivityReporter>,
    pub instance_id: i64,
    /// The sign-in session the tunnel derives from, kept alive by the input.
    pub session: String,
    pub read_only: bool,
}

enum Out {
    Text(String),
    Close(Status),
}

/// Relays until one side ends; returns the status the browser was closed with.
pub async fn relay<S>(
    ws: WebSocketStream<S>,
    guacd: TcpStream,
    leftover: Vec<u8>,
    session: SessionWatch,
    activity: ActivitySink,
) -> Status
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let (guacd_r, guacd_w) = guacd.into_split();
    let (out, out_rx) = mpsc::channel(QUEUE);
    let mut writer = tokio::spawn(write_browser(sink, out_rx));
    let status = tokio::select! {
        s = guacd_to_browser(guacd_r, leftover, out.clone()) => s,
        s = browser_to_guacd(stream, guacd_w, out.clone(), activity) => s,
        s = watch_session(&session) => s,
    };
    // A stalled browser may never take the close frame: give it a moment, then let go.
    let closing = async {
        let _ = out.send(Out::Close(status)).await;
        drop(out);
        let _ = (&mut writer).await;
    };
    if tokio::time::timeout(Duration::from_secs(2), closing)
        .await
        .is_err()
    {
        writer.abort();
    }
    status
}

async fn write_browser<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Out>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(out) = rx.recv().await {
        match out {
            Out::Text(text) => {
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
            Out::Close(status) => {
                let _ = sink
                    .send(Message::Close(Some(super::close_frame(status))))
                    .await;
                let _ = sink.close().await;
                return;
            }
        }
    }
}

async fn guacd_to_browser(
    guacd: OwnedReadHalf,
    leftover: Vec<u8>,
    out: mpsc::Sender<Out>,
) -> Status {
    let mut buf = leftover;
    // What guacd said last about the end: `error` (its status) or `disconnect` (a clean end).
    let mut ending: Option<Status> = None;
    let traffic = TunnelTraffic::new(Direction::ToClient);
    loop {
        // Every complete instruction in the buffer goes out in one frame.
        let mut end = 0;
        let mut instructions = 0;
        loop {
            match scan(&buf[end..]) {
                Ok(Scan::Complete(n)) => {
                    let instruction = &buf[end..end + n];
                    match opcode(instruction) {
                        b"error" => ending = Some(error_status(instruction)),
                        b"disconnect" => ending = ending.or(Some(Status::Success)),
                        _ => {}
                    }
                    end += n;
                    instructions += 1;
                }
                Ok(Scan::Incomplete) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "guacd sent a malformed instruction");
                    return Status::UpstreamError;
                }
            }
        }
        if end > 0 {
            let frame: Vec<u8> = buf.drain(..end).collect();
            traffic.relayed(frame.len(), instructions);
            // `scan` checked every code point: this never fails.
            let Ok(text) = String::from_utf8(frame) else {
                return Status::UpstreamError;
            };
            if out.send(Out::Text(text)).await.is_err() {
                return Status::Success;
            }
        }
        // What is left is one incomplete instruction, which `scan` bounds. Read what is
        // there without waiting; only when nothing is, give the read buffer back and wait: an
        // idle desktop (most of them, most of the time) then holds no read buffer at all.
        buf.reserve_exact(READ_CHUNK);
        let read = match guacd.try_read_buf(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                buf.shrink_to_fit();
                match tokio::time::timeout(GUACD_SILENCE, guacd.readable()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => Err(e),
                    Err(_) => return Status::UpstreamTimeout,
                }
            }
            read => read,
        };
        match read {
            Ok(0) => return ending.unwrap_or(Status::UpstreamError),
            Ok(_) => {}
            Err(e) => {
                tracing::info!(error = %e, "guacd connection lost");
                return ending.unwrap_or(Status::UpstreamError);
            }
        }
    }
}

/// The status of a complete `error,<message>,<status>;` instruction.
fn error_status(instruction: &[u8]) -> Status {
    std::str::from_utf8(instruction)
        .ok()
        .and_then(|t| flowcase_guac::Instruction::from_complete(t).ok())
        .and_then(|i| i.args.get(1).and_then(|s| s.parse().ok()))
        .map_or(Status::UpstreamError, Status::from_code)
}

/// Input a person made, as opposed to the client's own keep-alives (`nop`, `sync`, pings).
fn is_user_input(op: &[u8]) -> bool {
    matches!(
        op,
        b"mouse"
            | b"key"
            | b"touch"
            | b"clipboard"
            | b"blob"
            | b"size"
            | b"file"
            | b"pipe"
            | b"argv"
    )
}

async fn browser_to_guacd<S>(
    mut browser: futures_util::stream::SplitStream<WebSocketStream<S>>,
    mut guacd: OwnedWriteHalf,
    out: mpsc::Sender<Out>,
    activity: ActivitySink,
) -> Status
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut pending: Vec<u8> = Vec::new();
    let mut forward: Vec<u8> = Vec::new();
    let mut last_activity: Option<tokio::time::Instant> = None;
    let traffic = TunnelTraffic::new(Direction::ToGuacd);
    loop {
        let message = match tokio::time::timeout(BROWSER_SILENCE, browser.next()).await {
            Err(_) => return Status::ClientTimeout,
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Status::Success,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "browser WebSocket error");
                return Status::ClientBadRequest;
            }
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => pending.extend_from_slice(text.as_bytes()),
            Message::Binary(_) => return Status::ClientBadType,
            _ => continue,
        }
        let mut pos = 0;
        let mut input = false;
        let mut forwarded = 0;
        loop {
            match scan(&pending[pos..]) {
                Ok(Scan::Complete(n)) => {
                    let instruction = &pending[pos..pos + n];
                    let op = opcode(instruction);
                    if op.is_empty() {
                        if is_ping(instruction) {
                            let echo = String::from_utf8_lossy(instruction).into_owned();
                            if out.send(Out::Text(echo)).await.is_err() {
                                return Status::Success;
                            }
                        }
                    } else if is_user_input(op) {
                        if !activity.read_only {
                            input = true;
                            forward.extend_from_slice(instruction);
                            forwarded += 1;
                        }
                    } else {
                        forward.extend_from_slice(instruction);
                        forwarded += 1;
                    }
                    pos += n;
                }
                Ok(Scan::Incomplete) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "the browser sent a malformed instruction");
                    return Status::ClientBadRequest;
                }
            }
        }
        pending.drain(..pos);
        if !forward.is_empty() {
            match tokio::time::timeout(GUACD_WRITE, guacd.write_all(&forward)).await {
                Ok(Ok(())) => {
                    traffic.relayed(forward.len(), forwarded);
                    forward.clear();
                }
                Ok(Err(_)) => return Status::UpstreamError,
                Err(_) => return Status::UpstreamTimeout,
            }
        }
        if input
            && let Some(reporter) = &activity.reporter
            && last_activity.is_none_or(|t| t.elapsed() >= ACTIVITY_EVERY)
        {
            reporter.record(activity.instance_id, &activity.session);
            last_activity = Some(tokio::time::Instant::now());
        }
    }
}

/// `0.,4.ping,…;`: the internal ping.
fn is_ping(instruction: &[u8]) -> bool {
    instruction.starts_with(b"0.,4.ping") && matches!(instruction.get(9), Some(b',') | Some(b';'))
}

async fn watch_session(watch: &SessionWatch) -> Status {
    let mut every = tokio::time::interval(SESSION_CHECK);
    loop {
        every.tick().await;
        if watch.snapshot.is_revoked(&watch.session)
            || flowcase_admin::store::now_millis() >= watch.expires_at
        {
            return Status::SessionClosed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_and_user_input_are_told_apart() {
        assert!(is_ping(b"0.,4.ping,13.1700000000000;"));
        assert!(is_ping(b"0.,4.ping;"));
        assert!(!is_ping(b"0.,5.pings;"));
        assert!(!is_ping(b"4.ping,1.1;"));
        for op in ["mouse", "key", "touch", "clipboard", "blob", "size"] {
            assert!(is_user_input(op.as_bytes()), "{op}");
        }
        for op in ["nop", "sync", "", "ack", "disconnect"] {
            assert!(!is_user_input(op.as_bytes()), "{op}");
        }
        assert_eq!(
            error_status(b"5.error,7.Aborted,3.519;"),
            Status::UpstreamNotFound
        );
        assert_eq!(error_status(b"5.error,1.x;"), Status::UpstreamError);
    }
}
