// Reading an image pull streamed by POST /api/v1/droplets/{id}/pull: Server-Sent Events framing
// on the POST answer itself (an EventSource cannot POST), read with fetch() and a stream reader.
// Pure parts (the frame parser, the progress sum) are apart from the network part.

/**
 * Feeds text into an SSE frame parser; returns the complete events `{event, data}` and keeps
 * the unfinished tail for the next call. `data` is the frame's data lines joined by "\n".
 */
export function sseParser() {
  let buffer = "";
  return function feed(chunk) {
    buffer += chunk.replace(/\r\n?/g, "\n");
    const events = [];
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
      if (data.length) events.push({ event, data: data.join("\n") });
    }
    return events;
  };
}

/**
 * The overall progress of a pull from the engine's per-layer `progress` events: bytes done over
 * bytes known, a finished layer counting whole. Returns `{add(p), percent()}`; percent is null
 * until a size is known.
 */
export function pullProgress() {
  const layers = new Map();
  return {
    add(p) {
      if (!p || typeof p.layer !== "string") return;
      const layer = layers.get(p.layer) || { current: 0, total: 0, done: false };
      if (Number.isFinite(p.total) && p.total > 0) layer.total = p.total;
      if (Number.isFinite(p.current) && p.current >= 0) layer.current = p.current;
      if (/complete|already exists/i.test(String(p.status || ""))) layer.done = true;
      layers.set(p.layer, layer);
    },
    percent() {
      let done = 0;
      let total = 0;
      let finished = 0;
      for (const l of layers.values()) {
        if (l.done) finished += 1;
        if (l.total > 0) {
          total += l.total;
          done += l.done ? l.total : Math.min(l.current, l.total);
        }
      }
      if (total > 0) return Math.min(100, (100 * done) / total);
      return layers.size ? (100 * finished) / layers.size : null;
    },
  };
}

function csrf(doc) {
  const body = doc.body;
  return {
    header: body.dataset.csrfHeader || "x-csrf-token",
    token: body.dataset.csrfToken || "",
  };
}

/**
 * POSTs `url` and calls `on(event, data)` for each streamed event (data parsed as JSON). Resolves
 * to the last event's `{event, data}`; rejects with an Error whose message is in words when the
 * request is refused before the stream starts or the connection breaks.
 */
export async function streamPost(url, on, { fetchImpl = globalThis.fetch, doc = globalThis.document } = {}) {
  const { header, token } = csrf(doc);
  let response;
  try {
    response = await fetchImpl(url, {
      method: "POST",
      headers: { Accept: "text/event-stream", [header]: token },
      credentials: "same-origin",
    });
  } catch {
    throw new Error("The gateway cannot be reached. Check your connection and try again.");
  }
  if (!response.ok) {
    let message = `The request failed (HTTP ${response.status}).`;
    try {
      const json = await response.json();
      if (json && json.error && json.error.message) message = json.error.message;
    } catch {
      // no JSON: the status says it
    }
    throw new Error(message);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const feed = sseParser();
  let last = null;
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch {
      throw new Error("The connection to the gateway broke during the pull; its outcome is in the audit log.");
    }
    const text = chunk.done ? decoder.decode() : decoder.decode(chunk.value, { stream: true });
    for (const { event, data } of feed(chunk.done ? `${text}\n\n` : text)) {
      let parsed = null;
      try {
        parsed = JSON.parse(data);
      } catch {
        parsed = { line: data };
      }
      last = { event, data: parsed };
      on(event, parsed);
    }
    if (chunk.done) break;
  }
  return last;
}
