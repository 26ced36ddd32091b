// /admin/instances: everyone's instances the administrator sees (GET /api/v1/instances?scope=all),
// filtered by status, droplet and a user or droplet name; stop and delete; kept current by the
// event stream of every instance in sight (`/api/v1/events?scope=all`), with polling when it
// breaks; a running desktop offers "Watch", the viewer in read-only mode. Every value from the
// API goes into the page with textContent or as an attribute.
import { api, oneAtATime } from "../api.js";
import { el } from "../dom.js";
import { busy, toast } from "../app.js";
import { openUrl, stateView, typeLabel } from "../dashboard-logic.js";

const table = document.getElementById("admin-instances");
const rows = document.getElementById("instances-rows");
const wrap = document.getElementById("instances-wrap");
const empty = document.getElementById("instances-empty");
const count = document.getElementById("instances-count");
const listError = document.getElementById("instances-error");
const filters = document.getElementById("instance-filters");
// Whose instances this administrator may stop, delete and watch (the API's rule, for the
// buttons only): "" nobody's, "*" every tenant's, or a tenant id.
const changeTenant = table.dataset.changeTenant || "";
const mayChange = (i) =>
  changeTenant === "*" || (changeTenant !== "" && String(i.tenant_id) === changeTenant);

function when(millis) {
  if (!Number.isFinite(millis)) return "–";
  return new Date(millis).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function button(action, label, className = "") {
  const b = el("button", `button button--small ${className}`.trim(), label);
  b.type = "button";
  b.dataset.action = action;
  return b;
}

// A delete asks for a second click within a few seconds. The list is redrawn whenever an
// instance changes, so the armed state is kept here, by id, rather than on the button.
const ARMED_MS = 4000;
const armedUntil = new Map();

function isArmed(id) {
  return (armedUntil.get(String(id)) || 0) > Date.now();
}

function row(i) {
  const view = stateView(i.status);
  const tr = el("tr");
  tr.dataset.instanceId = String(i.id);
  tr.dataset.state = i.status;
  const title = el("td", "cell-title");
  title.append(el("div", "cell-main", i.droplet_name || ""), el("div", "cell-sub", `${typeLabel(i.droplet_type)} · ${i.slug || ""}`));
  const user = el("td", null, i.username || "");
  user.dataset.label = "User";
  const status = el("td");
  status.dataset.label = "Status";
  status.append(el("span", `badge badge--dot badge--${view.tone}${view.busy ? " badge--busy" : ""}`, view.label));
  if (i.status === "error" && i.error_reason) status.append(el("div", "cell-sub", i.error_reason));
  const started = el("td", "nowrap", when(i.started_at || i.created_at));
  started.dataset.label = "Started";
  const actions = el("td", "actions");
  const bar = el("span", "toolbar-row");
  const href = openUrl(i);
  if (view.actions.open && href && i.droplet_type === "http") {
    const open = el("a", "button button--small", "Open");
    open.href = href;
    open.target = "_blank";
    open.rel = "noopener";
    bar.append(open);
  }
  if (mayChange(i) && i.status === "running" && i.droplet_type !== "http") {
    const watch = el("a", "button button--small", "Watch");
    watch.href = `/droplet/${encodeURIComponent(i.id)}?watch=1`;
    watch.target = "_blank";
    watch.rel = "noopener";
    watch.dataset.action = "watch";
    watch.title = "See the desktop as its user does, without touching it";
    bar.append(watch);
  }
  if (mayChange(i)) {
    if (view.actions.stop) bar.append(button("stop", "Stop"));
    if (view.actions.delete) {
      const armed = isArmed(i.id);
      const del = button("delete", armed ? "Confirm delete" : "Delete", "button--danger");
      if (armed) del.dataset.armed = "1";
      bar.append(del);
    }
  }
  actions.append(bar);
  tr.append(title, user, status, started, actions);
  return tr;
}

function query() {
  const params = new URLSearchParams({ scope: "all", limit: "200" });
  for (const name of ["status", "droplet_id", "q"]) {
    const value = String(filters.elements.namedItem(name).value || "").trim();
    if (value) params.set(name, value);
  }
  return params;
}

const load = oneAtATime(async () => {
  try {
    const page = await api("GET", `/api/v1/instances?${query()}`);
    const items = (page && page.items) || [];
    listError.textContent = "";
    rows.replaceChildren(...items.map(row));
    const total = Number.isFinite(page && page.total) ? page.total : items.length;
    count.textContent = `${total} ${total === 1 ? "instance" : "instances"}`;
    wrap.hidden = items.length === 0;
    empty.hidden = items.length > 0;
  } catch (e) {
    listError.textContent = e.message;
  }
});

async function loadDroplets() {
  try {
    const page = await api("GET", "/api/v1/droplets?scope=all&limit=200");
    const select = filters.elements.namedItem("droplet_id");
    for (const d of (page && page.items) || []) {
      const option = el("option", null, d.name);
      option.value = String(d.id);
      select.append(option);
    }
  } catch {
    // Without view_droplets the filter keeps "Any"; the list still works.
  }
}

let typing = null;
filters.addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(load, 200);
});
filters.addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});

rows.addEventListener("click", async (event) => {
  const target = event.target instanceof Element ? event.target.closest("button[data-action]") : null;
  if (!target) return;
  const id = target.closest("[data-instance-id]").dataset.instanceId;
  const url = `/api/v1/instances/${encodeURIComponent(id)}`;
  const action = target.dataset.action;
  if (action === "delete" && !isArmed(id)) {
    armedUntil.set(id, Date.now() + ARMED_MS);
    target.textContent = "Confirm delete";
    target.dataset.armed = "1";
    setTimeout(() => {
      if (!isArmed(id)) load();
    }, ARMED_MS + 50);
    return;
  }
  armedUntil.delete(id);
  try {
    await busy(target, () => (action === "delete" ? api("DELETE", url) : api("POST", `${url}/stop`)));
    toast(action === "delete" ? "Instance deleted." : "Instance stopped.", "ok");
  } catch (e) {
    toast(e.message, "error");
  }
  load();
});

// Live: any change of an instance in sight reloads the filtered list (debounced).
let pending = null;
function soon() {
  clearTimeout(pending);
  pending = setTimeout(load, 250);
}
let poller = null;
function connect() {
  if (!("EventSource" in window)) {
    poller = setInterval(load, 5000);
    return;
  }
  const source = new EventSource("/api/v1/events?scope=all");
  source.addEventListener("instance", soon);
  source.addEventListener("instance_removed", soon);
  source.addEventListener("open", () => {
    clearInterval(poller);
    poller = null;
  });
  source.addEventListener("error", () => {
    source.close();
    if (poller === null) poller = setInterval(load, 5000);
    setTimeout(connect, 15000);
  });
}

loadDroplets();
load();
connect();
