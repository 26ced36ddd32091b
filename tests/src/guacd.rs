//! A guacd of our own for the tunnel tests: a TCP server on a free loopback port that follows
//! the protocol as guacd 1.5/1.6 does (see `flowcase_guac` and the protocol notes), strictly:
//!
//! - it expects `select`, answers `args` with `VERSION_1_5_0` and guacd 1.5's VNC argument list,
//!   takes `size`/`audio`/`video`/`image`/`timezone`/`name` in any order, and refuses a `connect`
//!   whose arity is wrong or whose version is empty (`error` with CLIENT_BAD_REQUEST, then close);
//! - after `ready,$<id>` (in the same write, so the gateway must keep what follows `ready`) it
//!   draws a known picture (a `select,$<id>` naming a connection it handed out joins it, as
//!   guacd's sharing does): `size`, `img` + `blob` + `end` (a small PNG), `sync`;
//! - it records every connection, handshake and instruction it receives, so tests can assert
//!   what reached guacd (pings never do) — and that nothing did;
//! - on command it sends a 64 KiB clipboard stream, multi-byte text cut into one-byte writes,
//!   floods (counting what it managed to write), draws a counted series of images (for
//!   `bench/tunnel.sh`), echoes what it receives from then on, or dies mid-session.
//!
//! It uses the gateway's own parser (`flowcase_guac`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowcase_guac::{Instruction, Status, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// guacd 1.5's VNC arguments, in its order.
pub const VNC_ARGS: &[&str] = &[
    "hostname",
    "port",
    "read-only",
    "encodings",
    "username",
    "password",
    "swap-red-blue",
    "color-depth",
    "cursor",
    "autoretry",
    "clipboard-encoding",
    "dest-host",
    "dest-port",
    "enable-audio",
    "audio-servername",
    "reverse-connect",
    "listen-timeout",
    "enable-sftp",
    "sftp-hostname",
    "sftp-host-key",
    "sftp-port",
    "sftp-username",
    "sftp-password",
    "sftp-private-key",
    "sftp-passphrase",
    "sftp-directory",
    "sftp-root-directory",
    "sftp-server-alive-interval",
    "sftp-disable-download",
    "sftp-disable-upload",
    "recording-path",
    "recording-name",
    "recording-exclude-output",
    "recording-exclude-mouse",
    "recording-include-keys",
    "create-recording-path",
    "disable-copy",
    "disable-paste",
    "wol-send-packet",
    "wol-mac-addr",
    "wol-broadcast-addr",
    "wol-udp-port",
    "wol-wait-time",
    "force-lossless",
];

/// The picture the double draws: a 64×48 PNG of one colour (#E63C8C).
pub const PICTURE_PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAEAAAAAwCAIAAAAuKetIAAAAQ0lEQVR42u3PQQkAAAgEsAtmRHOawwp+hcEKLFP9WgQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQErhZ8MyktTeDaJwAAAABJRU5ErkJggg==";
pub const PICTURE_SIZE: (u32, u32) = (64, 48);
pub const PICTURE_RGB: [u8; 3] = [0xE6, 0x3C, 0x8C];

/// Multi-byte text the double can send: 1-, 2-, 3- and 4-byte code points.
pub const MULTIBYTE_TEXT: &str = "aé€😀中文🎉ß";

/// The 64 KiB the double sends as a clipboard stream: a fixed, checkable pattern.
pub fn large_payload() -> Vec<u8> {
    (0..64 * 1024u32).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// What the gateway told the double during one handshake.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    pub select: String,
    pub size: Vec<String>,
    pub audio: Vec<String>,
    pub video: Vec<String>,
    pub image: Vec<String>,
    pub timezone: Option<String>,
    pub name: Option<String>,
    /// The `connect` values by argument name; the version under `"VERSION"`.
    pub connect: Vec<(String, String)>,
    pub accepted: bool,
}

impl Handshake {
    pub fn value(&self, name: &str) -> Option<&str> {
        self.connect
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the double saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// TCP connections accepted.
    pub connections: usize,
    pub handshakes: Vec<Handshake>,
    /// Instructions received after `ready`, in order, across sessions.
    pub received: Vec<Instruction>,
    /// Connection ids handed out in `ready`, which `select,$<id>` may join.
    pub ids: Vec<String>,
}

/// Things a test can make the current session do.
#[derive(Debug, Clone)]
pub enum Command {
    /// A `clipboard` stream carrying [`large_payload`] (base64 in `blob`s), written at once.
    SendLarge,
    /// `4.utf8,<MULTIBYTE_TEXT>;` written one byte at a time.
    SendMultibyte,
    /// `blob`s of 8000 characters until `bytes` are written or the session ends.
    Flood { bytes: usize },
    /// `count` display instructions (`img` + `blob` of [`DISPLAY_BLOB_CHARS`] base64 + `end`,
    /// repeated), the last of which is `sync,<DISPLAY_DONE>`; written in batches.
    Display { count: usize },
    /// From now on, every instruction received after `ready` is written back as it came,
    /// at once: a round trip through a relay without guacd's own work in it.
    Echo,
    /// Drop the connection without a word.
    Die,
}

/// The base64 characters of each `blob` that [`Command::Display`] sends: about a 64×64 tile
/// of a PNG-compressed desktop.
pub const DISPLAY_BLOB_CHARS: usize = 4096;
/// The timestamp of the `sync` that ends a [`Command::Display`].
pub const DISPLAY_DONE: &str = "424242";

pub struct GuacdDouble {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    sessions: Arc<Mutex<Vec<mpsc::UnboundedSender<Command>>>>,
    /// Bytes written by floods so far.
    pub flooded: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GuacdDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GuacdDouble {
    pub async fn start() -> GuacdDouble {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// The double listening on `addr` (`0.0.0.0:4822` in its container image, see
    /// `src/bin/flowcase-guacd-double.rs`).
    pub async fn start_on(addr: SocketAddr) -> GuacdDouble {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let flooded = Arc::new(AtomicUsize::new(0));
        let task = {
            let (seen, sessions, flooded) = (seen.clone(), sessions.clone(), flooded.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    seen.lock().unwrap().connections += 1;
                    let (tx, rx) = mpsc::unbounded_channel();
                    sessions.lock().unwrap().push(tx);
                    tokio::spawn(session(stream, seen.clone(), rx, flooded.clone()));
                }
            })
        };
        GuacdDouble {
            addr,
            seen,
            sessions,
            flooded,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.seen.lock().unwrap().connections
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.seen.lock().unwrap().handshakes.clone()
    }

    /// Instructions received after `ready`.
    pub fn received(&self) -> Vec<Instruction> {
        self.seen.lock().unwrap().received.clone()
    }

    /// Sends a command to the latest session.
    pub fn command(&self, command: Command) {
        if let Some(tx) = self.sessions.lock().unwrap().last() {
            let _ = tx.send(command);
        }
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// The next instruction; None at the end of the stream or on a protocol error.
    async fn next(&mut self) -> Option<Instruction> {
        loop {
            match flowcase_guac::parse(&self.buf) {
                Ok(Some((i, n))) => {
                    self.buf.drain(..n);
                    return Some(i);
                }
                Ok(None) => {}
                Err(_) => return None,
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn send(&mut self, text: &str) -> bool {
        self.stream.write_all(text.as_bytes()).await.is_ok()
    }

    async fn fail(&mut self, message: &str, status: Status) {
        let error = Instruction::new("error", [message.to_owned(), status.code().to_string()]);
        let _ = self.send(&error.encode()).await;
    }
}

async fn session(
    stream: TcpStream,
    seen: Arc<Mutex<Seen>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    flooded: Arc<AtomicUsize>,
) {
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    let Some(handshake) = handshake(&mut conn, &seen).await else {
        return;
    };
    let accepted = handshake.accepted;
    seen.lock().unwrap().handshakes.push(handshake);
    if !accepted {
        return;
    }
    let mut nop = tokio::time::interval(Duration::from_secs(5));
    nop.tick().await;
    let mut echo = false;
    loop {
        tokio::select! {
            instruction = conn.next() => {
                let Some(instruction) = instruction else { return };
                let done = instruction.opcode == "disconnect";
                if echo && !done && !conn.send(&instruction.encode()).await {
                    return;
                }
                if instruction.opcode == "sync" {
                    // The client acknowledges our frames; nothing to do.
                }
                seen.lock().unwrap().received.push(instruction);
                if done {
                    return;
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { return };
                match command {
                    Command::Die => return,
                    Command::Echo => echo = true,
                    Command::Display { count } => {
                        if !display(&mut conn, count).await {
                            return;
                        }
                    }
                    Command::SendLarge => {
                        if !conn.send(&large_stream()).await {
                            return;
                        }
                    }
                    Command::SendMultibyte => {
                        let text = Instruction::new("utf8", [MULTIBYTE_TEXT]).encode();
                        for byte in text.as_bytes() {
                            if conn.stream.write_all(&[*byte]).await.is_err() {
                                return;
                            }
                            let _ = conn.stream.flush().await;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                    Command::Flood { bytes } => {
                        let blob = Instruction::new("blob", ["9".to_owned(), "A".repeat(8000)]).encode();
                        while flooded.load(Ordering::SeqCst) < bytes {
                            if conn.stream.write_all(blob.as_bytes()).await.is_err() {
                                return;
                            }
                            flooded.fetch_add(blob.len(), Ordering::SeqCst);
                        }
                    }
                }
            }
            _ = nop.tick() => {
                if !conn.send("3.nop;").await {
                    return;
                }
            }
        }
    }
}

/// The handshake, guacd's side. None when the peer went away or broke the protocol before
/// `connect` (after an `error` where guacd would send one).
async fn handshake(conn: &mut Conn, seen: &Mutex<Seen>) -> Option<Handshake> {
    let select = conn.next().await?;
    if select.opcode != "select" || select.args.len() != 1 {
        conn.fail("Expected select", Status::ClientBadRequest).await;
        return None;
    }
    let mut hs = Handshake {
        select: select.args[0].clone(),
        ..Handshake::default()
    };
    let joins_known = seen.lock().unwrap().ids.contains(&hs.select);
    if hs.select != "vnc" && !joins_known {
        conn.fail("No such protocol or connection", Status::ResourceNotFound)
            .await;
        return None;
    }
    let mut args = vec![Version::V1_5_0.to_string()];
    args.extend(VNC_ARGS.iter().map(|a| (*a).to_owned()));
    if !conn.send(&Instruction::new("args", args).encode()).await {
        return None;
    }
    loop {
        let i = conn.next().await?;
        match i.opcode.as_str() {
            "size" => hs.size = i.args,
            "audio" => hs.audio = i.args,
            "video" => hs.video = i.args,
            "image" => hs.image = i.args,
            "timezone" => hs.timezone = i.args.into_iter().next(),
            "name" => hs.name = i.args.into_iter().next(),
            "connect" => {
                let right_arity = i.args.len() == VNC_ARGS.len() + 1;
                let version = i.args.first().and_then(|v| Version::parse(v));
                if !right_arity || version.is_none() {
                    conn.fail("Wrong connect arity or version", Status::ClientBadRequest)
                        .await;
                    return Some(hs);
                }
                hs.connect = std::iter::once("VERSION")
                    .chain(VNC_ARGS.iter().copied())
                    .map(str::to_owned)
                    .zip(i.args)
                    .collect();
                break;
            }
            _ => {
                conn.fail("Unexpected instruction", Status::ClientBadRequest)
                    .await;
                return Some(hs);
            }
        }
    }
    hs.accepted = true;
    let id = format!(
        "$2f0c6a8e-1d1b-4c3e-9a55-{:012x}",
        rand::random::<u64>() >> 16
    );
    seen.lock().unwrap().ids.push(id.clone());
    let (w, h) = PICTURE_SIZE;
    let mut first = Instruction::new("ready", [id]).encode();
    for i in [
        Instruction::new("size", ["0".to_owned(), w.to_string(), h.to_string()]),
        Instruction::new("img", ["1", "14", "0", "image/png", "0", "0"]),
        Instruction::new("blob", ["1", PICTURE_PNG_BASE64]),
        Instruction::new("end", ["1"]),
        Instruction::new("sync", ["1"]),
    ] {
        i.encode_into(&mut first);
    }
    conn.send(&first).await.then_some(hs)
}

/// [`Command::Display`]: `count` instructions, the last `sync,<DISPLAY_DONE>`.
async fn display(conn: &mut Conn, count: usize) -> bool {
    let blob = "A".repeat(DISPLAY_BLOB_CHARS);
    let mut batch = String::new();
    for n in 0..count.saturating_sub(1) {
        let stream = (n / 3 % 16 + 1).to_string();
        let instruction = match n % 3 {
            0 => {
                let (x, y) = (
                    (n / 3 % 20 * 64).to_string(),
                    (n / 60 % 11 * 64).to_string(),
                );
                Instruction::new(
                    "img",
                    [stream, "14".into(), "0".into(), "image/png".into(), x, y],
                )
            }
            1 => Instruction::new("blob", [stream, blob.clone()]),
            _ => Instruction::new("end", [stream]),
        };
        instruction.encode_into(&mut batch);
        if batch.len() >= 64 * 1024 {
            if !conn.send(&batch).await {
                return false;
            }
            batch.clear();
        }
    }
    Instruction::new("sync", [DISPLAY_DONE]).encode_into(&mut batch);
    conn.send(&batch).await
}

/// The [`large_payload`] as a clipboard stream on stream 2, base64 in 6000-character blobs.
fn large_stream() -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(large_payload());
    let mut out = Instruction::new("clipboard", ["2", "application/octet-stream"]).encode();
    for chunk in encoded.as_bytes().chunks(6000) {
        let chunk = std::str::from_utf8(chunk).unwrap_or_default();
        Instruction::new("blob", ["2", chunk]).encode_into(&mut out);
    }
    Instruction::new("end", ["2"]).encode_into(&mut out);
    out
}
