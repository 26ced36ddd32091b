//! Log output: `tracing` to stderr as text or JSON lines, per `[log]`. pingora's own `log`
//! records are bridged into the same output.
//!
//! Access lines (target `access`, one per request) are gathered and written together at most
//! `log.access_flush` apart, or as soon as 64 KiB have gathered — as Envoy does with its access
//! logs — instead of one `write(2)` per request, a measurable share of a small request's cost
//! (bench/README.md). Any other line first writes out the access lines before it, so the output
//! stays in order; [`flush`] writes out the rest when the server stops. `log.access_flush = "0s"`
//! writes every access line at once.

use std::io::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use flowcase_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Access lines waiting to be written.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Written out at once past this size, whatever the interval.
const WRITE_AT: usize = 64 * 1024;

pub fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.level)
        .map_err(|e| anyhow::anyhow!("log.level `{}` is not a valid filter: {e}", config.level))?;
    let interval = config.access_flush.get();
    let output = Output {
        gather_access: !interval.is_zero(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(output)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    if !interval.is_zero() {
        spawn_flusher(interval)?;
    }
    Ok(())
}

/// Writes out the access lines gathered so far.
pub fn flush() {
    write_out(&mut pending());
}

fn spawn_flusher(interval: Duration) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                flush();
            }
        })
        .map(drop)
        .map_err(|e| anyhow::anyhow!("cannot start the access log writer: {e}"))
}

fn pending() -> MutexGuard<'static, Vec<u8>> {
    PENDING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes and empties `pending`. Lines that cannot be written (stderr closed) are dropped rather
/// than kept growing.
fn write_out(pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        let _ = std::io::stderr().write_all(pending);
        pending.clear();
    }
}

struct Output {
    gather_access: bool,
}

impl<'a> MakeWriter<'a> for Output {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { access: false }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line {
            access: self.gather_access && meta.target() == "access",
        }
    }
}

/// One formatted line (tracing writes each event with one `write_all`).
struct Line {
    access: bool,
}

impl Write for Line {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = pending();
        if self.access {
            pending.extend_from_slice(line);
            if pending.len() >= WRITE_AT {
                write_out(&mut pending);
            }
            return Ok(line.len());
        }
        write_out(&mut pending);
        std::io::stderr().write_all(line)?;
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
