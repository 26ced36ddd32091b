// The desktop viewer (/droplet/{id}): one Guacamole client at a time over the gateway's
// WebSocket tunnel, shown full-window, with keyboard, mouse, touch and clipboard, a status
// overlay, automatic reconnects and a small menu. The page hands over everything this module
// needs in data- attributes of <body>; nothing is inline (the Content Security Policy forbids it).
// With `data-watch="true"` (`/droplet/{id}?watch=1`) it joins the connection someone already has,
// read-only: it asks for a watch token and sends no key, pointer, size or clipboard.

import Guacamole from "./guacamole-common.min.js";
import { Backoff } from "./backoff.js";
import { describe, needsLogin, retryable } from "./status.js";
import { fetchToken } from "./token.js";
import { Chrome } from "./chrome.js";

const data = document.body.dataset;
const config = {
  instanceId: data.instanceId,
  dropletName: data.dropletName,
  csrfHeader: data.csrfHeader,
  csrfToken: data.csrfToken,
  canCopy: data.canCopy === "true",
  canPaste: data.canPaste === "true",
  loginUrl: data.loginUrl,
  watch: data.watch === "true",
};

/** Keysyms of the Ctrl-Alt-Del chord (X11 keysymdef.h). */
const KEYSYM = { controlLeft: 0xffe3, altLeft: 0xffe9, delete: 0xffff };
/** How long the window must keep still before the new size is sent to the desktop. */
const RESIZE_DEBOUNCE_MS = 250;

const display = document.getElementById("display");
const chrome = new Chrome(document, config);

/** The live connection, or null between attempts. */
let session = null;
/** Set when the user chose to disconnect: no automatic reconnect then. */
let userClosed = false;
let retryTimer = null;
let countdownTimer = null;
const backoff = new Backoff();

// --- keyboard --------------------------------------------------------------------------------

const keyboard = new Guacamole.Keyboard(document);

/** Sends keys to the desktop, or (false) lets them reach the page's own fields. */
function captureKeyboard(on) {
  if (!on || config.watch) {
    // Release what is held on the desktop first, while the handlers still forward it.
    keyboard.reset();
    keyboard.onkeydown = null;
    keyboard.onkeyup = null;
    return;
  }
  keyboard.onkeydown = (keysym) => {
    session?.client.sendKeyEvent(1, keysym);
  };
  keyboard.onkeyup = (keysym) => {
    session?.client.sendKeyEvent(0, keysym);
  };
}

chrome.onPanelFocus = (focused) => captureKeyboard(!focused && session?.connected === true);
window.addEventListener("blur", () => {
  // Keys released while another window has focus would stay pressed on the desktop.
  if (keyboard.onkeyup) {
    keyboard.reset();
  }
});

// --- display size ----------------------------------------------------------------------------

function pixelRatio() {
  return window.devicePixelRatio || 1;
}

/** The size to ask the desktop for: the window in device pixels. */
function wantedSize() {
  const ratio = pixelRatio();
  return {
    width: Math.max(1, Math.round(window.innerWidth * ratio)),
    height: Math.max(1, Math.round(window.innerHeight * ratio)),
    dpi: Math.round(96 * ratio),
  };
}

/** Scales the remote display to fit the window (desktops that cannot resize are letterboxed). */
function fit() {
  if (!session) {
    return;
  }
  const guacDisplay = session.client.getDisplay();
  const width = guacDisplay.getWidth();
  const height = guacDisplay.getHeight();
  if (!width || !height) {
    return;
  }
  guacDisplay.scale(Math.min(window.innerWidth / width, window.innerHeight / height));
}

let resizeTimer = null;
window.addEventListener("resize", () => {
  fit();
  window.clearTimeout(resizeTimer);
  resizeTimer = window.setTimeout(() => {
    if (session?.connected && !config.watch) {
      const size = wantedSize();
      session.client.sendSize(size.width, size.height);
    }
  }, RESIZE_DEBOUNCE_MS);
});

// --- clipboard -------------------------------------------------------------------------------

/** The last text exchanged either way, so the same text is not sent back and forth. */
let lastClipboard = "";

function receiveClipboard(stream, mimetype) {
  if (!config.canCopy || !/^text\//.test(mimetype)) {
    stream.sendAck("Clipboard data refused", Guacamole.Status.Code.CLIENT_FORBIDDEN);
    return;
  }
  const reader = new Guacamole.StringReader(stream);
  let text = "";
  reader.ontext = (chunk) => {
    text += chunk;
  };
  reader.onend = () => {
    lastClipboard = text;
    chrome.showClipboard(text);
    // Works while the page has focus; otherwise the text waits in the menu's panel.
    navigator.clipboard?.writeText(text).catch(() => {});
  };
}

function sendClipboard(text) {
  if (!config.canPaste || !session?.connected) {
    return;
  }
  const stream = session.client.createClipboardStream("text/plain");
  const writer = new Guacamole.StringWriter(stream);
  writer.sendText(text);
  writer.sendEnd();
  lastClipboard = text;
}

chrome.onSendClipboard = sendClipboard;

/**
 * Brings the local clipboard over when the window gets focus, if the browser already allows
 * reading it (no permission prompt is ever triggered from here).
 */
async function syncLocalClipboard() {
  if (!config.canPaste || !session?.connected || !navigator.clipboard?.readText) {
    return;
  }
  try {
    const permission = await navigator.permissions.query({ name: "clipboard-read" });
    if (permission.state !== "granted") {
      return;
    }
    const text = await navigator.clipboard.readText();
    if (text && text !== lastClipboard) {
      chrome.showClipboard(text);
      sendClipboard(text);
    }
  } catch {
    // Not allowed or not supported: the menu's panel remains.
  }
}
window.addEventListener("focus", syncLocalClipboard);

// --- connection ------------------------------------------------------------------------------

function tunnelUrl() {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}/tunnel`;
}

function connectData(token) {
  const size = wantedSize();
  const params = new URLSearchParams();
  params.append("token", token);
  params.append("GUAC_WIDTH", String(size.width));
  params.append("GUAC_HEIGHT", String(size.height));
  params.append("GUAC_DPI", String(size.dpi));
  params.append("GUAC_TIMEZONE", Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
  for (const type of Guacamole.AudioPlayer.getSupportedTypes()) {
    params.append("GUAC_AUDIO", type);
  }
  for (const type of Guacamole.VideoPlayer.getSupportedTypes()) {
    params.append("GUAC_VIDEO", type);
  }
  for (const type of ["image/png", "image/jpeg", "image/webp"]) {
    params.append("GUAC_IMAGE", type);
  }
  return params.toString();
}

function clearTimers() {
  window.clearTimeout(retryTimer);
  window.clearInterval(countdownTimer);
  retryTimer = null;
  countdownTimer = null;
}

/** Puts a new client's display on the page and wires mouse and touch to it. */
function mount(client) {
  const guacDisplay = client.getDisplay();
  const element = guacDisplay.getElement();
  display.replaceChildren(element);

  const send = (event) => {
    if (session?.client === client && session.connected && !config.watch) {
      client.sendMouseState(event.state, true);
    }
  };
  const mouse = new Guacamole.Mouse(element);
  mouse.onEach(["mousedown", "mousemove", "mouseup"], send);
  const touch = new Guacamole.Mouse.Touchscreen(element);
  touch.onEach(["mousedown", "mousemove", "mouseup"], send);

  // The desktop's cursor becomes the browser's own, so it moves without a round trip.
  guacDisplay.showCursor(false);
  guacDisplay.oncursor = (canvas, x, y) => {
    if (!mouse.setCursor(canvas, x, y)) {
      guacDisplay.showCursor(true);
    }
  };
  guacDisplay.onresize = fit;
}

async function connect() {
  clearTimers();
  userClosed = false;
  const attempt = backoff.tried;
  const opening = config.watch ? `Joining ${config.dropletName} to watch…` : `Connecting to ${config.dropletName}…`;
  chrome.status("connecting", opening, attempt ? `Attempt ${attempt + 1}.` : "");

  let token;
  try {
    token = await fetchToken(config);
  } catch (e) {
    ended(null, e.code ?? Guacamole.Status.Code.SERVER_ERROR, e.message);
    return;
  }
  if (userClosed) {
    return;
  }

  const tunnel = new Guacamole.WebSocketTunnel(tunnelUrl());
  const client = new Guacamole.Client(tunnel);
  const current = { client, tunnel, connected: false, over: false };
  session = current;
  mount(client);

  tunnel.onstatechange = (state) => {
    if (session !== current || current.over) {
      return;
    }
    if (state === Guacamole.Tunnel.State.UNSTABLE) {
      chrome.unstable(true);
    } else if (state === Guacamole.Tunnel.State.OPEN) {
      chrome.unstable(false);
    } else if (state === Guacamole.Tunnel.State.CLOSED) {
      // A close with an error status reaches onerror first; this one ended normally.
      ended(current, Guacamole.Status.Code.SUCCESS, "closed");
    }
  };
  tunnel.onerror = (status) => ended(current, status.code, status.message);
  client.onerror = (status) => ended(current, status.code, status.message);
  client.onclipboard = receiveClipboard;
  client.onstatechange = (state) => {
    if (session !== current || current.over) {
      return;
    }
    switch (state) {
      case Guacamole.Client.State.WAITING:
        chrome.status("waiting", `Waiting for ${config.dropletName}…`, "The gateway is starting the session.");
        break;
      case Guacamole.Client.State.CONNECTED:
        current.connected = true;
        backoff.reset();
        chrome.connected();
        if (config.watch) chrome.badge("connected", "Watching");
        captureKeyboard(!chrome.panelFocused());
        fit();
        syncLocalClipboard();
        break;
      default:
        break;
    }
  };

  try {
    client.connect(connectData(token));
  } catch (status) {
    ended(current, status?.code ?? Guacamole.Status.Code.SERVER_ERROR, String(status?.message ?? status));
  }
}

/** The end of an attempt or a session: say why, then reconnect, or offer to. */
function ended(current, code, message) {
  if (current) {
    if (session !== current || current.over) {
      return;
    }
    current.over = true;
    session = null;
    captureKeyboard(false);
    current.client.disconnect();
  }
  console.info(`viewer: connection ended with status ${code} (${message})`);
  chrome.unstable(false);
  if (userClosed) {
    chrome.status("disconnected", "Disconnected.", "You closed the connection.", { reconnect: true });
    return;
  }
  if (config.watch && code === Guacamole.Status.Code.RESOURCE_NOT_FOUND) {
    chrome.status("failed", "Nobody is connected to this desktop: there is nothing to watch.", "Try again once its user has it open.", { reconnect: true, code });
    return;
  }
  if (needsLogin(code)) {
    chrome.status("signed-out", describe(code), "", { login: true });
    return;
  }
  const delay = retryable(code) ? backoff.next() : null;
  if (delay === null) {
    const detail = retryable(code) ? "Automatic reconnection gave up." : "";
    chrome.status("failed", describe(code), detail, { reconnect: true, code });
    return;
  }
  let left = Math.ceil(delay / 1000);
  const say = () => chrome.status("retrying", describe(code), `Reconnecting in ${left} s…`, { reconnect: true, code });
  say();
  countdownTimer = window.setInterval(() => {
    left = Math.max(0, left - 1);
    say();
  }, 1000);
  retryTimer = window.setTimeout(connect, delay);
}

function disconnect() {
  userClosed = true;
  clearTimers();
  const current = session;
  if (current) {
    ended(current, Guacamole.Status.Code.SUCCESS, "closed by the user");
  } else {
    ended(null, Guacamole.Status.Code.SUCCESS, "closed by the user");
  }
}

function reconnectNow() {
  backoff.reset();
  connect();
}

function ctrlAltDel() {
  const client = session?.connected && !config.watch ? session.client : null;
  if (!client) {
    return;
  }
  const chord = [KEYSYM.controlLeft, KEYSYM.altLeft, KEYSYM.delete];
  chord.forEach((keysym) => client.sendKeyEvent(1, keysym));
  chord.reverse().forEach((keysym) => client.sendKeyEvent(0, keysym));
}

chrome.onReconnect = reconnectNow;
chrome.onDisconnect = disconnect;
chrome.onCtrlAltDel = ctrlAltDel;

// Leaving the page ends the session cleanly instead of letting it time out on the gateway.
window.addEventListener("pagehide", () => {
  userClosed = true;
  clearTimers();
  session?.client.disconnect();
});

// Back from the browser's page cache: the old session was closed on the way out.
window.addEventListener("pageshow", (event) => {
  if (event.persisted) {
    reconnectNow();
  }
});

document.body.dataset.mode = config.watch ? "watch" : "use";
document.body.dataset.viewer = "ready";
connect();
