//! The guacd handshake: `select`, `args` (guacd's version first), the client's display
//! properties, `connect` with one value per argument in guacd's order, `ready`. Protocol 1.5.0
//! with version negotiation: we answer the lower of guacd's version and ours, never an empty
//! version (which would drop guacd to 1.0.0 behaviour).

use std::collections::BTreeMap;
use std::time::Duration;

use flowcase_admin::access::desktop::DesktopTarget;
use flowcase_guac::{Instruction, Status, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The protocol version we speak.
pub const OURS: Version = Version::V1_5_0;

/// What the browser asked for in the tunnel URL's query (`GUAC_*`), already clamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    pub width: u32,
    pub height: u32,
    pub dpi: u32,
    pub timezone: Option<String>,
    pub audio: Vec<String>,
    pub video: Vec<String>,
    pub image: Vec<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            width: 1024,
            height: 768,
            dpi: 96,
            timezone: None,
            audio: Vec::new(),
            video: Vec::new(),
            image: vec!["image/png".into(), "image/jpeg".into(), "image/webp".into()],
        }
    }
}

/// Most values of one repeatable parameter kept.
const MAX_MIMETYPES: usize = 16;

impl ClientOptions {
    /// Reads `GUAC_WIDTH`, `GUAC_HEIGHT`, `GUAC_DPI`, `GUAC_TIMEZONE` and the repeatable
    /// `GUAC_AUDIO`, `GUAC_VIDEO`, `GUAC_IMAGE`. Sizes are clamped to what a screen can be;
    /// anything malformed is left out (the browser still gets a picture).
    pub fn from_query(pairs: &[(String, String)]) -> Self {
        let mut options = Self::default();
        let number = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.trim().parse::<u32>().ok())
        };
        if let Some(w) = number("GUAC_WIDTH") {
            options.width = w.clamp(64, 8192);
        }
        if let Some(h) = number("GUAC_HEIGHT") {
            options.height = h.clamp(64, 8192);
        }
        if let Some(d) = number("GUAC_DPI") {
            options.dpi = d.clamp(48, 600);
        }
        options.timezone = pairs
            .iter()
            .find(|(k, _)| k == "GUAC_TIMEZONE")
            .map(|(_, v)| v.clone())
            .filter(|tz| {
                (1..=64).contains(&tz.len())
                    && tz
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
            });
        let mimetypes = |name: &str| -> Vec<String> {
            pairs
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .filter(|m| {
                    (1..=64).contains(&m.len())
                        && m.contains('/')
                        && m.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"/.+-;=".contains(&b))
                })
                .take(MAX_MIMETYPES)
                .collect()
        };
        options.audio = mimetypes("GUAC_AUDIO");
        options.video = mimetypes("GUAC_VIDEO");
        let image = mimetypes("GUAC_IMAGE");
        if !image.is_empty() {
            options.image = image;
        }
        options
    }
}

/// What joins the handshake: a connection of our own, or a read-only watch of a running one.
#[derive(Debug, Clone)]
pub enum Join<'a> {
    New(&'a DesktopTarget),
    Watch { connection_id: &'a str },
}

/// A handshake that went through.
#[derive(Debug)]
pub struct Connected {
    pub stream: TcpStream,
    /// guacd's connection id (`$…`), for sharing.
    pub connection_id: String,
    /// The version both sides speak.
    pub version: Version,
    /// Bytes guacd sent after `ready`: the start of the stream, kept.
    pub leftover: Vec<u8>,
}

/// Why a handshake failed, as the status the browser gets.
#[derive(Debug)]
pub struct Failed {
    pub status: Status,
    pub reason: String,
}

fn failed(status: Status, reason: impl Into<String>) -> Failed {
    Failed {
        status,
        reason: reason.into(),
    }
}

/// Runs the handshake on a fresh guacd connection; each step waits at most `step_timeout`.
pub async fn handshake(
    mut stream: TcpStream,
    join: Join<'_>,
    user_name: &str,
    client: &ClientOptions,
    step_timeout: Duration,
) -> Result<Connected, Failed> {
    let mut buf = Vec::with_capacity(4096);
    let select = match &join {
        Join::New(target) => target.protocol.to_owned(),
        Join::Watch { connection_id } => (*connection_id).to_owned(),
    };
    send(
        &mut stream,
        &Instruction::new("select", [select]),
        step_timeout,
    )
    .await?;
    let args = expect(&mut stream, &mut buf, "args", step_timeout).await?;
    let (version, names) = match args.args.split_first() {
        Some((first, rest)) if first.starts_with("VERSION_") => {
            let theirs = Version::parse(first).ok_or_else(|| {
                failed(
                    Status::UpstreamError,
                    format!("guacd sent version {first:?}"),
                )
            })?;
            (Some(theirs.min(OURS)), rest)
        }
        // A guacd before 1.1.0 lists only names.
        _ => (None, &args.args[..]),
    };
    let speaks = |v: Version| version.is_some_and(|ours| ours >= v);

    let mut setup = String::new();
    Instruction::new(
        "size",
        [client.width, client.height, client.dpi].map(|n| n.to_string()),
    )
    .encode_into(&mut setup);
    Instruction::new("audio", client.audio.iter().cloned()).encode_into(&mut setup);
    Instruction::new("video", client.video.iter().cloned()).encode_into(&mut setup);
    Instruction::new("image", client.image.iter().cloned()).encode_into(&mut setup);
    if speaks(Version::V1_1_0)
        && let Some(tz) = &client.timezone
    {
        Instruction::new("timezone", [tz.as_str()]).encode_into(&mut setup);
    }
    if speaks(Version::V1_5_0) {
        Instruction::new("name", [user_name]).encode_into(&mut setup);
    }
    let mut values: Vec<String> = Vec::with_capacity(names.len() + 1);
    if let Some(v) = version {
        values.push(v.to_string());
    }
    let args = match &join {
        Join::New(t) => t.connection.as_ref().map(|c| c.guacd_args()),
        Join::Watch { .. } => None,
    }
    .unwrap_or_default();
    values.extend(names.iter().map(|name| value_for(name, &join, &args)));
    Instruction::new("connect", values).encode_into(&mut setup);
    write(&mut stream, setup.as_bytes(), step_timeout).await?;

    let ready = expect(&mut stream, &mut buf, "ready", step_timeout).await?;
    let connection_id = ready.args.first().cloned().unwrap_or_default();
    Ok(Connected {
        stream,
        connection_id,
        version: version.unwrap_or(Version::V1_0_0),
        leftover: buf,
    })
}

/// The value of one of guacd's connection arguments. What we do not set stays empty: guacd's
/// default.
fn value_for(name: &str, join: &Join<'_>, args: &BTreeMap<String, String>) -> String {
    let flag = |on: bool| if on { "true".to_owned() } else { String::new() };
    match join {
        Join::Watch { .. } => match name {
            "read-only" => "true".into(),
            _ => String::new(),
        },
        Join::New(t) => match name {
            "disable-copy" => flag(t.disable_copy),
            "disable-paste" => flag(t.disable_paste),
            _ => args.get(name).cloned().unwrap_or_default(),
        },
    }
}

async fn send(stream: &mut TcpStream, i: &Instruction, timeout: Duration) -> Result<(), Failed> {
    write(stream, i.encode().as_bytes(), timeout).await
}

async fn write(stream: &mut TcpStream, bytes: &[u8], timeout: Duration) -> Result<(), Failed> {
    match tokio::time::timeout(timeout, stream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(failed(
            Status::UpstreamError,
            format!("writing to guacd: {e}"),
        )),
        Err(_) => Err(failed(Status::UpstreamTimeout, "guacd does not read")),
    }
}

/// Reads the next instruction, which must be `opcode`; an `error` from guacd ends the handshake
/// with guacd's status. What follows the instruction stays in `buf`.
async fn expect(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    opcode: &str,
    timeout: Duration,
) -> Result<Instruction, Failed> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match flowcase_guac::parse(buf) {
            Ok(Some((i, n))) => {
                buf.drain(..n);
                if i.opcode == opcode {
                    return Ok(i);
                }
                if i.opcode == "error" {
                    let status = i
                        .args
                        .get(1)
                        .and_then(|s| s.parse().ok())
                        .map_or(Status::UpstreamError, Status::from_code);
                    return Err(failed(
                        status,
                        format!("guacd: {}", i.args.first().map_or("", String::as_str)),
                    ));
                }
                return Err(failed(
                    Status::UpstreamError,
                    format!("guacd sent {:?} instead of {opcode:?}", i.opcode),
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(failed(Status::UpstreamError, format!("guacd: {e}"))),
        }
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(0)) => {
                return Err(failed(
                    Status::UpstreamError,
                    format!("guacd closed the connection before {opcode:?}"),
                ));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(failed(Status::UpstreamError, format!("guacd: {e}"))),
            Err(_) => {
                return Err(failed(
                    Status::UpstreamTimeout,
                    format!("guacd sent no {opcode:?} in time"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        serde_urlencoded::from_str(q).unwrap_or_default()
    }

    #[test]
    fn client_options_are_clamped_and_filtered() {
        let o = ClientOptions::from_query(&pairs(
            "GUAC_WIDTH=100000&GUAC_HEIGHT=1&GUAC_DPI=96&GUAC_TIMEZONE=Europe%2FParis\
             &GUAC_AUDIO=audio%2FL16%3Brate%3D44100&GUAC_AUDIO=%3Cscript%3E&GUAC_IMAGE=image%2Fwebp",
        ));
        assert_eq!((o.width, o.height, o.dpi), (8192, 64, 96));
        assert_eq!(o.timezone.as_deref(), Some("Europe/Paris"));
        assert_eq!(o.audio, ["audio/L16;rate=44100"]);
        assert_eq!(o.image, ["image/webp"]);
        let bad_tz = ClientOptions::from_query(&pairs("GUAC_TIMEZONE=a%2Cb%3B"));
        assert_eq!(bad_tz.timezone, None);
        assert_eq!(ClientOptions::from_query(&[]), ClientOptions::default());
    }
}
