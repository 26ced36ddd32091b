// /admin/system: the system report (GET /api/v1/system): versions, the database backend, the
// Docker engine, the host's CPU and memory, object counts and the certificates served, refreshed
// every 10 seconds while the box is ticked (the report costs the engine nothing: the gateway
// caches its figures). Every value goes into the page with textContent.
import { api } from "../api.js";
import { el } from "../dom.js";
import { busy } from "../app.js";
import { Backoff } from "../backoff.js";

const REFRESH_MS = 10000;
const DAY_MS = 86400000;
const errorBox = document.getElementById("system-error");
const auto = document.getElementById("system-auto");
const refresh = document.getElementById("system-refresh");

/** Bytes in binary units, one decimal. */
export function bytes(n) {
  if (!Number.isFinite(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return `${u ? v.toFixed(1) : v} ${units[u]}`;
}

function when(millis) {
  return Number.isFinite(millis) ? new Date(millis).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : "–";
}

/** Fills a <dl> with [term, value] pairs (a value may be a node). */
function pairs(id, list) {
  const dl = document.getElementById(id);
  const nodes = [];
  for (const [term, value] of list) {
    const dd = el("dd");
    if (value instanceof Node) dd.append(value);
    else dd.textContent = value === null || value === undefined || value === "" ? "–" : String(value);
    dd.dataset.field = term;
    nodes.push(el("dt", null, term), dd);
  }
  dl.replaceChildren(...nodes);
}

function text(id, value) {
  document.getElementById(id).textContent = value;
}

function backendName(backend) {
  return { sqlite: "SQLite", postgres: "PostgreSQL" }[backend] || String(backend || "–");
}

function render(r) {
  const v = r.versions || {};
  const db = r.database || {};
  const engine = r.engine || {};
  const host = r.host || {};
  const counts = r.counts || {};
  text("sys-version", v.flowcase || "–");
  text("sys-db", backendName(db.backend));
  document.getElementById("sys-db").dataset.backend = db.backend || "";
  // The version number says more than "up"; the badge of the card below says up or down.
  const short = String(engine.version || "").replace(/^Docker Engine\s*/, "").replace(/\+.*$/, "");
  text("sys-engine", engine.up ? short || "Up" : "Down");
  document.getElementById("sys-engine").dataset.up = engine.up ? "1" : "0";
  const load = Array.isArray(host.load) && host.load.length ? Number(host.load[0]) : null;
  text("sys-load", load === null ? "–" : `${load.toFixed(2)}${host.cpus ? ` / ${host.cpus} CPU` : ""}`);

  pairs("sys-versions", [
    ["Flowcase", v.flowcase],
    ["Commit", v.git_commit],
    ["Rust", v.rust],
  ]);
  pairs("sys-database", [
    ["Backend", backendName(db.backend)],
    ["Server version", db.server_version],
  ]);
  const engineBadge = document.getElementById("sys-engine-badge");
  engineBadge.className = `badge badge--dot ${engine.up ? "badge--ok" : "badge--bad"}`;
  engineBadge.textContent = engine.up ? "Up" : "Down";
  pairs("sys-engine-details", [
    ["Version", engine.version],
    ["Status", engine.message],
    ["Since", when(engine.since)],
    ["CPUs", engine.cpus],
    ["Memory", Number.isFinite(engine.memory_bytes) ? bytes(engine.memory_bytes) : null],
  ]);
  const total = host.memory_total_bytes;
  const available = host.memory_available_bytes;
  const used = Number.isFinite(total) && Number.isFinite(available) ? total - available : null;
  pairs("sys-host", [
    ["CPUs", host.cpus],
    ["Load (1, 5, 15 min)", Array.isArray(host.load) ? host.load.map((x) => Number(x).toFixed(2)).join(", ") : null],
    ["Memory", used === null ? null : `${bytes(used)} used of ${bytes(total)}`],
  ]);
  const meter = document.getElementById("sys-memory-meter");
  meter.hidden = used === null || !total;
  if (!meter.hidden) {
    const percent = Math.round((used / total) * 100);
    document.getElementById("sys-memory-bar").value = percent;
    text("sys-memory-label", `${percent} %`);
  }
  const instances = counts.instances || {};
  pairs("sys-counts", [
    ["Tenants", counts.tenants],
    ["Users", counts.users],
    ["Groups", counts.groups],
    ["Droplets", counts.droplets],
    ["Workshops", counts.workshops],
    ["Instances", `${instances.running ?? 0} running, ${instances.stopped ?? 0} stopped`],
  ]);

  const certs = r.certificates || {};
  const items = certs.items || [];
  document.getElementById("sys-certs-none").hidden = Boolean(certs.known);
  const now = Number.isFinite(r.generated_at) ? r.generated_at : Date.now();
  document.getElementById("sys-certs").replaceChildren(
    ...items.map((c) => {
      const li = el("li");
      const days = Number.isFinite(c.not_after) ? Math.floor((c.not_after - now) / DAY_MS) : null;
      const tone = days === null ? "neutral" : days < 0 ? "bad" : days < 14 ? "warn" : "ok";
      const label = days === null ? "No expiry known" : days < 0 ? "Expired" : `${days} days left`;
      const head = el("div", "toolbar-row");
      head.append(el("strong", null, (c.names || []).join(", ") || "(no name)"), el("span", `badge badge--${tone}`, label));
      li.append(head, el("div", "small muted", `${c.source || "unknown source"} · valid until ${when(c.not_after)}`));
      return li;
    }),
  );
  text("system-updated", `Updated ${new Date(now).toLocaleTimeString()}`);
}

let timer = null;
// A report lost to a network hiccup is asked for again soon, a few times, rather than in 10 s.
const backoff = new Backoff();

async function load() {
  clearTimeout(timer);
  let delay = REFRESH_MS;
  try {
    render(await api("GET", "/api/v1/system"));
    errorBox.textContent = "";
    backoff.reset();
  } catch (e) {
    errorBox.textContent = e.message;
    delay = backoff.next() ?? REFRESH_MS;
  }
  if (auto.checked || delay < REFRESH_MS) timer = setTimeout(load, delay);
}

auto.addEventListener("change", () => {
  if (auto.checked) load();
  else clearTimeout(timer);
});
refresh.addEventListener("click", () => busy(refresh, load));

load();
