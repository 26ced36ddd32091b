//! A tiny HTTP server for the orchestrator tests, run inside a FROM-scratch image; with the
//! argument `vnc` it is instead the entrypoint of the VNC test image: it writes the VNC password
//! file from `$VNC_PASSWORD` and execs Xtigervnc (a scratch image has no shell to do that).
//!
//! Std-only, so the image holds nothing but this binary and the libraries `ldd` lists.
//!
//! Server environment: `PORT` (8080), `BODY` (the text `GET /` answers), `PROFILE_DIR` (where
//! `/profile/<name>` reads and writes), `HEALTH_STATUS` (status of `GET /health`, 200),
//! `STARTUP_DELAY_MS` (sleep before listening), `EXIT_CODE` (exit at once with it).
//!
//! Routes: `GET /` → `BODY`; `GET /health`; `PUT|GET /profile/<name>`; `GET /env/<NAME>`;
//! `GET /connect/<ip>/<port>` → `connected` or `failed: <reason>` (a TCP attempt from inside the
//! container, to check that instances cannot reach each other).

// Only the password-file half is used here; the tests use the rest.
#[allow(dead_code)]
#[path = "../../des.rs"]
mod des;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

const MAX_HEADER: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;
const VNC_PASSWORD_FILE: &str = "/tmp/.flowcase-vncpasswd";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("vnc") => exec_vnc(&args[1..]),
        None | Some("serve") => serve(),
        Some(other) => {
            eprintln!("unknown mode {other:?} (expected `serve` or `vnc`)");
            2
        }
    };
    std::process::exit(code);
}

fn exec_vnc(extra: &[String]) -> i32 {
    let mut cmd = std::process::Command::new("/usr/bin/Xtigervnc");
    cmd.args([
        ":0",
        "-rfbport",
        "5900",
        "-geometry",
        "1024x768",
        "-BlacklistThreshold=1000000",
    ]);
    match std::env::var("VNC_PASSWORD") {
        Ok(password) if !password.is_empty() => {
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(VNC_PASSWORD_FILE)
                .and_then(|mut f| f.write_all(&des::vnc_obfuscate(password.as_bytes())));
            if let Err(e) = written {
                eprintln!("cannot write {VNC_PASSWORD_FILE}: {e}");
                return 1;
            }
            cmd.args([
                "-SecurityTypes",
                "VncAuth",
                "-PasswordFile",
                VNC_PASSWORD_FILE,
            ]);
        }
        _ => {
            cmd.args(["-SecurityTypes", "None"]);
        }
    }
    cmd.args(extra);
    let err = cmd.exec();
    eprintln!("cannot exec Xtigervnc: {err}");
    1
}

fn serve() -> i32 {
    let env_num = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    if let Ok(code) = std::env::var("EXIT_CODE")
        && let Ok(code) = code.parse::<i32>()
    {
        eprintln!("exiting with {code} as asked");
        return code;
    }
    std::thread::sleep(Duration::from_millis(env_num("STARTUP_DELAY_MS", 0)));
    let port = u16::try_from(env_num("PORT", 8080)).unwrap_or(8080);
    let listener = match TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on port {port}: {e}");
            return 1;
        }
    };
    eprintln!("listening on port {port}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = handle(stream);
        });
    }
    0
}

fn handle(stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    let mut request_line = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        head.extend_from_slice(line.as_bytes());
        if head.len() > MAX_HEADER {
            return respond(&stream, 431, "header too large");
        }
        let trimmed = line.trim_end();
        if request_line.is_empty() {
            request_line = trimmed.to_owned();
            continue;
        }
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    if content_length > MAX_BODY {
        return respond(&stream, 413, "body too large");
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;

    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    match (method, path) {
        ("GET", "/") => {
            let text = std::env::var("BODY").unwrap_or_else(|_| "flowcase-test-httpd".into());
            respond(&stream, 200, &text)
        }
        ("GET", "/health") => {
            let status = std::env::var("HEALTH_STATUS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            respond(&stream, status, "health")
        }
        (_, p) if p.starts_with("/profile/") => profile(&stream, method, &p[9..], &body),
        ("GET", p) if p.starts_with("/env/") => match std::env::var(&p[5..]) {
            Ok(value) => respond(&stream, 200, &value),
            Err(_) => respond(&stream, 404, "unset"),
        },
        ("GET", p) if p.starts_with("/connect/") => {
            let target = p[9..].replacen('/', ":", 1);
            let text = match target.parse::<SocketAddr>() {
                Ok(addr) => match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(_) => "connected".to_owned(),
                    Err(e) => format!("failed: {e}"),
                },
                Err(e) => format!("failed: bad address {target}: {e}"),
            };
            respond(&stream, 200, &text)
        }
        _ => respond(&stream, 404, "not found"),
    }
}

fn profile(stream: &TcpStream, method: &str, name: &str, body: &[u8]) -> std::io::Result<()> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return respond(stream, 400, "bad name");
    }
    let Ok(dir) = std::env::var("PROFILE_DIR") else {
        return respond(stream, 404, "no PROFILE_DIR");
    };
    let path = std::path::Path::new(&dir).join(name);
    match method {
        "PUT" => match std::fs::write(&path, body) {
            Ok(()) => respond(stream, 201, "stored"),
            Err(e) => respond(stream, 500, &format!("write failed: {e}")),
        },
        "GET" => match std::fs::read(&path) {
            Ok(data) => respond(stream, 200, &String::from_utf8_lossy(&data)),
            Err(_) => respond(stream, 404, "no such file"),
        },
        _ => respond(stream, 405, "method not allowed"),
    }
}

fn respond(mut stream: &TcpStream, status: u16, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
