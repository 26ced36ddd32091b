// Tunnel tokens: one per connection attempt. A token is valid for 60 seconds and only once, so
// every connect and every reconnect asks for a fresh one.

import { codeForTokenStatus } from "./status.js";

/** A failed token request, carrying the Guacamole status the viewer shows for it. */
export class TokenError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/**
 * Mints a token for `instanceId` with the session cookie and the CSRF header the control plane
 * requires of every state-changing call; with `watch`, a read-only watch of the running
 * connection.
 * @returns {Promise<string>}
 */
export async function fetchToken({ instanceId, csrfHeader, csrfToken, watch = false }) {
  let response;
  const headers = { [csrfHeader]: csrfToken, Accept: "application/json" };
  // A watch token joins the running connection read-only (the tunnel drops its input).
  const request = watch ? JSON.stringify({ watch: true }) : undefined;
  if (request) headers["Content-Type"] = "application/json";
  try {
    response = await fetch(`/api/v1/instances/${encodeURIComponent(instanceId)}/tunnel-token`, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers,
      body: request,
    });
  } catch (e) {
    // The gateway is unreachable (restarting, network gone): worth retrying.
    throw new TokenError(0x0208, `the gateway is unreachable: ${e}`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const reason = body?.error?.code ?? `HTTP ${response.status}`;
    throw new TokenError(codeForTokenStatus(response.status), `token refused: ${reason}`);
  }
  if (typeof body?.token !== "string" || body.token === "") {
    throw new TokenError(0x0200, "the token answer holds no token");
  }
  return body.token;
}
