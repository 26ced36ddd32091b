// The JSON API from the pages: every call carries the session cookie and, when it changes
// state, the CSRF token the page was rendered with (in <body data-csrf-token>). Errors come back
// as ApiError with the API's stable code, its message and, for invalid input, the field.

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

/** Words for a failed request whose answer carried no JSON error. */
export function messageForStatus(status) {
  if (status === 0) return "The gateway cannot be reached. Check your connection and try again.";
  if (status === 401) return "Your session has ended. Sign in again.";
  if (status === 403) return "You are not allowed to do this.";
  if (status === 404) return "This is not available (yet) on this gateway.";
  if (status === 429) return "Too many requests; wait a moment and try again.";
  if (status >= 500) return "The gateway failed to answer. Try again in a moment.";
  return `The request failed (HTTP ${status}).`;
}

function csrf(doc) {
  const body = doc && doc.body;
  return {
    header: (body && body.dataset.csrfHeader) || "x-csrf-token",
    token: (body && body.dataset.csrfToken) || "",
  };
}

/** Calls the API; resolves to the parsed JSON (null for 204), rejects with an ApiError. */
export async function api(method, url, data, { fetchImpl = globalThis.fetch, doc = globalThis.document, headers: extra = {} } = {}) {
  const headers = { Accept: "application/json", ...extra };
  if (method !== "GET" && method !== "HEAD") {
    const { header, token } = csrf(doc);
    headers[header] = token;
  }
  let body;
  if (data !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(data);
  }
  let response;
  try {
    response = await fetchImpl(url, { method, headers, body, credentials: "same-origin" });
  } catch {
    throw new ApiError(0, "network", messageForStatus(0));
  }
  if (response.status === 204) return null;
  let json = null;
  try {
    json = await response.json();
  } catch {
    json = null;
  }
  if (!response.ok) {
    const e = json && json.error;
    throw new ApiError(
      response.status,
      (e && e.code) || `http_${response.status}`,
      (e && e.message) || messageForStatus(response.status),
      e && e.field,
    );
  }
  return json;
}

/**
 * `task` (an async function taking no arguments) made to run one at a time. A call while it
 * runs does not start another run beside it: it waits for the current one, and exactly one more
 * run follows (however many calls came meanwhile), so what is shown reflects the latest state
 * without requests racing each other. A run that resolves to `true` asks for one more too.
 */
export function oneAtATime(task) {
  let running = null;
  let again = false;
  const run = async () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      if ((await task()) === true) again = true;
    })();
    try {
      await running;
    } finally {
      running = null;
    }
    if (again) {
      again = false;
      await run();
    }
  };
  return run;
}
