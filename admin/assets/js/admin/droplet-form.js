// The droplet form of /admin/droplets turned into the JSON body of POST or PATCH
// /api/v1/droplets, and back; and the words for import results. Pure (no DOM): tested under
// node (admin/assets/test/droplet-form.test.js).
//
// Values go to the API as typed: the API checks every field with the parser behind
// `flowcase droplet add` and imports, and its `invalid_input` error names the field, which
// the page shows next to it. The page adds no rules of its own.
//
// Secrets (registry and host passwords, keys) are write-only: the form never holds a stored
// one, and an empty secret field means "keep what is stored".

/** Container-only fields: never sent for an external host (the API refuses them there). */
const CONTAINER_FIELDS = ["image", "registry", "health_path", "network", "profile_mount", "profile_path"];
const CONTAINER_NUMBERS = ["cpu_cores", "memory_mb", "pids_limit", "pool_size"];
const EXTERNAL_TEXT = ["external_host", "external_username"];

/** `null` for an empty text, else the trimmed text. */
function orNull(raw) {
  const s = String(raw ?? "").trim();
  return s === "" ? null : s;
}

/** A plain number as a number (what the API documents), anything else as typed (the API names it). */
export function numberish(raw) {
  const s = orNull(raw);
  if (s === null) return null;
  return /^\d+(\.\d+)?$/.test(s) ? Number(s) : s;
}

/** Non-empty lines, trimmed (`KEY=value` lists). */
export function lines(raw) {
  return String(raw ?? "")
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "");
}

/** Items separated by commas or spaces (ports, capabilities). */
export function items(raw) {
  return String(raw ?? "")
    .split(/[\s,]+/)
    .filter((i) => i !== "");
}

/** `{K: V}` as the lines `K=V`, for a textarea. */
export function pairsText(map) {
  if (!map || typeof map !== "object") return "";
  return Object.entries(map)
    .map(([k, v]) => `${k}=${v}`)
    .join("\n");
}

/** Seconds as the shortest duration the API reads back (`90s`, `30m`, `12h`, `7d`; 0 is `0`). */
export function formatDuration(secs) {
  if (secs === null || secs === undefined || !Number.isFinite(Number(secs))) return "";
  const s = Number(secs);
  if (s === 0) return "0";
  if (s % 86400 === 0) return `${s / 86400}d`;
  if (s % 3600 === 0) return `${s / 3600}h`;
  if (s % 60 === 0) return `${s / 60}m`;
  return `${s}s`;
}

/**
 * The form's values for a droplet (`null` for a new one): what the inputs show. Secrets are
 * never among them.
 */
export function formValues(d) {
  if (!d) {
    return { target: "container", droplet_type: "http", active: true, idle_action: "stop" };
  }
  const ports = Array.isArray(d.ports) ? d.ports.join(", ") : "";
  return {
    name: d.name ?? "",
    description: d.description ?? "",
    droplet_type: d.droplet_type,
    target: d.target === "external" ? "external" : "container",
    icon_url: d.icon_url ?? "",
    image: d.image ?? "",
    ports,
    cpu_cores: d.cpu_cores ?? "",
    memory_mb: d.memory_mb ?? "",
    pids_limit: d.pids_limit ?? "",
    pool_size: d.pool_size ? String(d.pool_size) : "",
    pool_started: Boolean(d.pool_started),
    read_only_root: Boolean(d.read_only_root),
    registry: d.registry ?? "",
    health_path: d.health_path ?? "",
    network: d.network ?? "",
    profile_mount: d.profile_mount ?? "",
    profile_path: d.profile_path ?? "",
    env: pairsText(d.env),
    labels: pairsText(d.labels),
    cap_add: Array.isArray(d.cap_add) ? d.cap_add.join(", ") : "",
    external_host: d.external_host ?? "",
    external_port: d.external_port ?? "",
    external_username: d.external_username ?? "",
    external_domain: d.external_domain ?? "",
    external_params: pairsText(d.external_params),
    idle_timeout_secs: formatDuration(d.idle_timeout_secs),
    max_lifetime_secs: formatDuration(d.max_lifetime_secs),
    idle_action: d.idle_action || "stop",
    active: Boolean(d.active),
  };
}

/**
 * The API body from the form's values `v` (strings, and booleans for checkboxes). `editing`:
 * a PATCH of an existing droplet (its target and tenant are not sent: they never change).
 * `tenantId`: where a new droplet goes (only for those who may choose). Every field of
 * the droplet's target is sent, an empty one as `null` (the default), so the body is the
 * whole form; secrets only when typed (or `null` to forget them).
 */
export function dropletBody(v, { editing = false, groupIds = null, tenantId = null } = {}) {
  const type = v.droplet_type;
  const target = type !== "http" && v.target === "external" ? "external" : "container";
  const body = {
    name: String(v.name ?? "").trim(),
    description: String(v.description ?? "").trim(),
    droplet_type: type,
    icon_url: orNull(v.icon_url),
    idle_timeout_secs: numberish(v.idle_timeout_secs),
    max_lifetime_secs: numberish(v.max_lifetime_secs),
    idle_action: v.idle_action || "stop",
    active: Boolean(v.active),
  };
  if (!editing) body.target = target;
  if (target === "container") {
    for (const f of CONTAINER_FIELDS) body[f] = orNull(v[f]);
    for (const f of CONTAINER_NUMBERS) body[f] = numberish(v[f]);
    if (body.pool_size === null) body.pool_size = 0;
    // Only HTTP droplets have a health path; a type change drops it.
    if (type !== "http") body.health_path = null;
    body.ports = items(v.ports).map(numberish);
    body.env = lines(v.env);
    body.labels = lines(v.labels);
    body.cap_add = items(v.cap_add);
    body.pool_started = Boolean(v.pool_started);
    body.read_only_root = Boolean(v.read_only_root);
    const user = orNull(v.registry_username);
    const password = v.registry_password ? String(v.registry_password) : null;
    if (user !== null || password !== null) {
      body.registry_username = user;
      body.registry_password = password;
    } else if (v.registry_forget) {
      body.registry_username = null;
    }
  } else {
    for (const f of EXTERNAL_TEXT) body[f] = orNull(v[f]);
    body.external_port = numberish(v.external_port);
    body.external_domain = type === "rdp" ? orNull(v.external_domain) : null;
    body.external_params = lines(v.external_params);
    const secrets = {
      external_password: v.external_password ? String(v.external_password) : null,
      external_private_key: type === "ssh" && orNull(v.external_private_key) ? String(v.external_private_key) : null,
      external_passphrase: type === "ssh" && v.external_passphrase ? String(v.external_passphrase) : null,
    };
    if (Object.values(secrets).some((s) => s !== null)) {
      for (const [k, s] of Object.entries(secrets)) if (s !== null) body[k] = s;
    } else if (v.external_forget) {
      Object.assign(body, secrets);
    }
  }
  if (groupIds) body.group_ids = groupIds;
  // The tenant is chosen once, at creation (the API refuses a change).
  if (!editing && tenantId !== null) body.tenant_id = tenantId;
  return body;
}

/** How an import report's entry is shown: a badge's words and tone, and what to add. */
export function entryView(entry) {
  const e = entry || {};
  const details = Array.isArray(e.errors)
    ? e.errors.map((x) => `${x.field}: ${x.reason}`)
    : [];
  if (e.reason) details.unshift(String(e.reason));
  switch (e.status) {
    case "imported":
      return { label: "Imported", tone: "ok", details };
    case "would_import":
      return { label: "Valid", tone: "info", details };
    case "skipped":
      return { label: "Already exists", tone: "warn", details };
    default:
      return { label: "Rejected", tone: "bad", details };
  }
}

/** The one-line summary of an import report. */
export function importSummary(report) {
  const r = report || {};
  const n = (count, one, many) => `${count} ${count === 1 ? one : many}`;
  const entries = Array.isArray(r.entries) ? r.entries.length : 0;
  const done = r.dry_run ? `${n(r.imported || 0, "would be imported", "would be imported")}` : `${r.imported || 0} imported`;
  return `${n(entries, "entry", "entries")} checked: ${done}, ${r.skipped || 0} already there, ${r.invalid || 0} rejected.`;
}
