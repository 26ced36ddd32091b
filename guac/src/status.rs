//! Guacamole status codes, and the WebSocket close code the Java server pairs with each (the
//! browser client reads the status from the close *reason*, falling back to the close code).

/// A Guacamole status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Success,
    ServerError,
    ServerBusy,
    UpstreamTimeout,
    UpstreamError,
    ResourceNotFound,
    UpstreamNotFound,
    UpstreamUnavailable,
    SessionConflict,
    SessionTimeout,
    SessionClosed,
    ClientBadRequest,
    ClientUnauthorized,
    ClientForbidden,
    ClientTimeout,
    ClientOverrun,
    ClientBadType,
    ClientTooMany,
}

/// Each status with its code, its WebSocket close code and its name (the protocol's constant,
/// lower-cased: a metric label).
const TABLE: [(Status, u16, u16, &str); 18] = [
    (Status::Success, 0x0000, 1000, "success"),
    (Status::ServerError, 0x0200, 1011, "server_error"),
    (Status::ServerBusy, 0x0201, 1008, "server_busy"),
    (Status::UpstreamTimeout, 0x0202, 1011, "upstream_timeout"),
    (Status::UpstreamError, 0x0203, 1011, "upstream_error"),
    (Status::ResourceNotFound, 0x0204, 1002, "resource_not_found"),
    (Status::UpstreamNotFound, 0x0207, 1011, "upstream_not_found"),
    (
        Status::UpstreamUnavailable,
        0x0208,
        1011,
        "upstream_unavailable",
    ),
    (Status::SessionConflict, 0x0209, 1008, "session_conflict"),
    (Status::SessionTimeout, 0x020A, 1002, "session_timeout"),
    (Status::SessionClosed, 0x020B, 1002, "session_closed"),
    (Status::ClientBadRequest, 0x0300, 1002, "client_bad_request"),
    (
        Status::ClientUnauthorized,
        0x0301,
        1008,
        "client_unauthorized",
    ),
    (Status::ClientForbidden, 0x0303, 1008, "client_forbidden"),
    (Status::ClientTimeout, 0x0308, 1002, "client_timeout"),
    (Status::ClientOverrun, 0x030D, 1009, "client_overrun"),
    (Status::ClientBadType, 0x030F, 1003, "client_bad_type"),
    (Status::ClientTooMany, 0x031D, 1008, "client_too_many"),
];

impl Status {
    fn row(self) -> (Status, u16, u16, &'static str) {
        TABLE
            .iter()
            .copied()
            .find(|(s, _, _, _)| *s == self)
            .unwrap_or((Status::ServerError, 0x0200, 1011, "server_error"))
    }

    /// The status's name, e.g. `client_unauthorized`.
    pub fn name(self) -> &'static str {
        self.row().3
    }

    /// The numeric status (`CLIENT_UNAUTHORIZED` = 0x0301 = 769).
    pub fn code(self) -> u16 {
        self.row().1
    }

    /// The WebSocket close code the Java server sends with it.
    pub fn websocket_close_code(self) -> u16 {
        self.row().2
    }

    /// The status a numeric code names; unknown codes are their class's generic error, as in
    /// the Java client (`0x02xx` server/upstream, `0x03xx` client).
    pub fn from_code(code: u16) -> Status {
        if let Some((s, _, _, _)) = TABLE.iter().find(|(_, c, _, _)| *c == code) {
            return *s;
        }
        match code {
            0x0300..=0x03FF => Status::ClientBadRequest,
            _ => Status::ServerError,
        }
    }
}
