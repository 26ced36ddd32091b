// The dashboard's pure rules, shared by dashboard.js and its node tests. The state mapping is
// the twin of `state_view` in admin/src/web/dashboard.rs (the server's first paint): keep both
// in step.

const STATES = {
  requested: ["Queued", "warn", true, { del: true }],
  creating: ["Creating", "warn", true, { del: true }],
  starting: ["Starting", "warn", true, { del: true }],
  running: ["Running", "ok", false, { open: true, stop: true, del: true }],
  stopping: ["Stopping", "warn", true, {}],
  stopped: ["Stopped", "neutral", false, { start: true, del: true }],
  destroying: ["Deleting", "warn", true, {}],
  gone: ["Removed", "neutral", false, {}],
  error: ["Error", "bad", false, { start: true, del: true }],
};

/** How a state shows (badge label and tone, busy pulse) and which actions it offers. */
export function stateView(status) {
  const [label, tone, busy, can] = STATES[status] || [String(status || "Unknown"), "neutral", false, { del: true }];
  return {
    label,
    tone,
    busy,
    actions: {
      open: Boolean(can.open),
      start: Boolean(can.start),
      stop: Boolean(can.stop),
      delete: Boolean(can.del),
    },
  };
}

export function typeLabel(type) {
  return (
    { http: "Web app", vnc: "Desktop (VNC)", rdp: "Desktop (RDP)", ssh: "Terminal (SSH)" }[type] ||
    String(type || "")
  );
}

/** Whether an instance in `status` is gone from the user's list. */
export function isRemoved(status) {
  return status === "gone";
}

export const MIN_WIDTH = 640;
export const MIN_HEIGHT = 480;
export const MAX_WIDTH = 3840;
export const MAX_HEIGHT = 2160;

/**
 * The desktop size for a launch from this window: the window's CSS size times the device pixel
 * ratio (a sharp picture on high-density screens), scaled down together to fit 4K, at least
 * 640×480, and even (some encoders want it). Returns "WxH".
 */
export function resolution({ innerWidth, innerHeight, devicePixelRatio }) {
  const ratio = Number.isFinite(devicePixelRatio) && devicePixelRatio > 0 ? Math.min(devicePixelRatio, 3) : 1;
  let w = Math.round((Number(innerWidth) || 1280) * ratio);
  let h = Math.round((Number(innerHeight) || 800) * ratio);
  const shrink = Math.min(1, MAX_WIDTH / w, MAX_HEIGHT / h);
  w = Math.floor(w * shrink);
  h = Math.floor(h * shrink);
  w = Math.max(MIN_WIDTH, Math.min(MAX_WIDTH, w));
  h = Math.max(MIN_HEIGHT, Math.min(MAX_HEIGHT, h));
  return `${w - (w % 2)}x${h - (h % 2)}`;
}

/** The first letter or digit of a name, upper-cased, for a lettered icon tile. */
export function initial(name) {
  const match = String(name || "").match(/[\p{L}\p{N}]/u);
  return match ? match[0].toUpperCase() : "?";
}

/**
 * An icon URL the page may load under its policy (`img-src 'self' data:`), else null: a
 * droplet's `icon_src` (the gateway's copy of an icon of another site, or one of our assets).
 */
export function safeIcon(url) {
  if (typeof url !== "string") return null;
  const u = url.trim();
  if (u.startsWith("/") && !u.startsWith("//") && !u.startsWith("/\\")) return u;
  if (u.startsWith("data:image/")) return u;
  return null;
}

/** The small line under an instance's name. */
export function instanceMeta(instance) {
  const parts = [typeLabel(instance.droplet_type), instance.slug];
  if (instance.status === "error" && instance.error_reason) parts.push(instance.error_reason);
  return parts.filter(Boolean).join(" · ");
}

/** Where an instance opens: the API's open_url, else the viewer for a desktop. */
export function openUrl(instance) {
  if (instance.open_url) return safeHref(instance.open_url);
  if (instance.droplet_type && instance.droplet_type !== "http") return `/droplet/${instance.id}`;
  return null;
}

/** Whether a droplet matches the search box (every word somewhere in name, description, type). */
export function matches(droplet, query) {
  const haystack = `${droplet.name || ""} ${droplet.description || ""} ${typeLabel(droplet.droplet_type)}`.toLowerCase();
  return String(query || "")
    .toLowerCase()
    .split(/\s+/)
    .filter(Boolean)
    .every((word) => haystack.includes(word));
}

export function formatBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 10 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

export function formatPercent(value) {
  if (!Number.isFinite(value) || value < 0) return "–";
  return `${value >= 10 ? Math.round(value) : value.toFixed(1)} %`;
}

/** The delay before poll number `failures + 1`: 3 s while it works, backing off to 30 s. */
export function pollDelay(failures) {
  return Math.min(30000, 3000 * 2 ** Math.max(0, Math.min(failures, 4)));
}

/** A link target that cannot run script: a path on this site or an http(s) URL, else null. */
export function safeHref(url) {
  if (typeof url !== "string") return null;
  const u = url.trim();
  if (u.startsWith("/") && !u.startsWith("//")) return u;
  return /^https?:\/\//i.test(u) ? u : null;
}

/**
 * The host figure shown to administrators, from the `host` object of `/api/v1/stats`: its CPU
 * use when given, else its load average; "–" when the API gives neither (or `host: null`).
 */
export function hostLoad(host) {
  if (!host || typeof host !== "object") return "–";
  if (Number.isFinite(host.cpu_percent)) return formatPercent(host.cpu_percent);
  const load = [host.load1, host.load_1, Array.isArray(host.load_average) ? host.load_average[0] : host.load_average]
    .find((v) => Number.isFinite(v));
  return load === undefined ? "–" : `load ${load.toFixed(2)}`;
}
