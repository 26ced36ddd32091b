// What each Guacamole status code means to the person in front of the viewer, and whether the
// viewer should try again on its own. Codes follow Guacamole.Status.Code (guacamole-common-js),
// which the tunnel sends as the WebSocket close reason or in an `error` instruction.

/** Closes after which reconnecting by itself would be wrong: the user must act first. */
const FINAL = new Set([
  0x0204, // RESOURCE_NOT_FOUND: the instance is gone
  0x0209, // SESSION_CONFLICT: someone took the session over; reconnecting would steal it back
  0x020b, // SESSION_CLOSED: signed out, revoked, or closed on purpose
  0x0300, // CLIENT_BAD_REQUEST: the same request would fail the same way
  0x0301, // CLIENT_UNAUTHORIZED: the session is gone; sign in again
  0x0303, // CLIENT_FORBIDDEN
  0x030f, // CLIENT_BAD_TYPE
  0x031d, // CLIENT_TOO_MANY: another connection holds the slot
]);

/** Closes that mean "sign in again" rather than "try again". */
const NEEDS_LOGIN = new Set([0x0301]);

const WORDS = {
  0x0000: "Disconnected.",
  0x0100: "The remote desktop asked for something this viewer does not support.",
  0x0200: "The gateway hit an internal error.",
  0x0201: "The gateway is busy. Try again in a moment.",
  0x0202: "The remote desktop stopped answering.",
  0x0203: "The remote desktop reported an error.",
  0x0204: "This desktop does not exist any more.",
  0x0205: "This desktop is already in use.",
  0x0206: "This desktop was closed.",
  0x0207: "The remote desktop refused the connection.",
  0x0208: "The remote desktop is not available right now.",
  0x0209: "This session was taken over from another window.",
  0x020a: "The session timed out.",
  0x020b: "Session closed.",
  0x0300: "The gateway did not understand the connection request.",
  0x0301: "Your session expired; sign in again.",
  0x0303: "You are not allowed to open this desktop.",
  0x0308: "The connection was closed after a long time without activity.",
  0x030d: "Too much data was sent at once.",
  0x030f: "The desktop does not accept that kind of data.",
  0x031d: "Too many connections are open for your account.",
};

/** Plain words for a Guacamole status code. */
export function describe(code) {
  if (Object.hasOwn(WORDS, code)) {
    return WORDS[code];
  }
  if (code >= 0x0300 && code < 0x0400) {
    return `The connection request was refused (code ${code}).`;
  }
  return `The connection ended unexpectedly (code ${code}).`;
}

/** Whether the viewer may reconnect by itself after a close with `code`. */
export function retryable(code) {
  return !FINAL.has(code) && code !== 0x0000;
}

/** Whether the close means the user must sign in again. */
export function needsLogin(code) {
  return NEEDS_LOGIN.has(code);
}

/** The Guacamole code for a failed token request, from the HTTP status of the answer. */
export function codeForTokenStatus(httpStatus) {
  switch (httpStatus) {
    case 401:
      return 0x0301;
    case 403:
      return 0x0303;
    case 404:
      return 0x0204;
    case 429:
      return 0x031d;
    case 503:
      return 0x0201;
    default:
      return 0x0200;
  }
}
