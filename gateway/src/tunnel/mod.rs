//! Desktops in the browser: the Guacamole WebSocket tunnel between `guacamole-common-js` and
//! guacd (the README's "Desktops" section says what users and operators see).
//!
//! - [`front`]: tunnels taken straight at the TLS front (the usual way in), the proxy's
//!   route otherwise;
//! - [`server`]: the WebSocket endpoint, for connections the TLS front hands over and on a
//!   private Unix socket the proxy routes the public host's `/tunnel` to; checks the one-time
//!   token, the session and the user's right to the instance before anything reaches guacd;
//! - [`handshake`]: the guacd handshake at protocol 1.5.0 with version negotiation;
//! - [`relay`]: both directions, whole instructions per frame, ping echo, bounded buffers,
//!   timeouts, status-coded closes, activity reports.
//!
//! The instruction format itself lives in the `flowcase-guac` crate, shared with the test kit's
//! guacd double and the fuzzer.

pub mod front;
pub mod handshake;
pub mod relay;
pub mod server;

use flowcase_guac::Status;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The header the front door passes the token in (taken out of the query string there, so that
/// no log line, ours or pingora's, ever holds it). Only the front door can set it.
pub const TOKEN_HEADER: &str = "x-flowcase-tunnel-token";

/// The close frame for a status: the status as a decimal *reason* (which the browser client
/// reads first), and the WebSocket code the Java server pairs with it.
pub fn close_frame(status: Status) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(status.websocket_close_code()),
        reason: status.code().to_string().into(),
    }
}
