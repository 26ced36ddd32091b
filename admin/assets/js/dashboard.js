// The dashboard, live: launch from the catalogue (modal, resolution from this window), start,
// stop and delete without reloading, and state changes pushed by the server (`/api/v1/events`,
// server-sent events) with polling of `/api/v1/instances` as the fallback. The first paint comes
// from the server; this module takes over from it. Every value from the API is put into the page
// with textContent or as an attribute, never parsed as HTML.
import { api } from "./api.js";
import { el } from "./dom.js";
import { busy, closeModal, openModal, toast } from "./app.js";
import {
  formatBytes,
  formatPercent,
  hostLoad,
  initial,
  instanceMeta,
  isRemoved,
  matches,
  openUrl,
  pollDelay,
  resolution,
  safeIcon,
  stateView,
  typeLabel,
} from "./dashboard-logic.js";

const catalogue = document.getElementById("catalogue");
const list = document.getElementById("instances");
const search = document.getElementById("droplet-search");
const modal = document.getElementById("launch-modal");
const launchForm = document.getElementById("launch-form");
const me = Number(list.dataset.userId);

/** id → droplet, id → instance, as last seen. */
const droplets = new Map();
const instances = new Map();
let launching = null;
let launchKey = "";
/**
 * Instance id → the timer disarming its delete button. A first click on Delete arms it (the
 * button asks for confirmation), a second one deletes. Kept here rather than on the button:
 * a pushed change redraws the whole row, and the confirmation must survive that.
 */
const armed = new Map();
/** How long an armed delete waits for its confirming click. */
const ARMED_MS = 6000;
/** Bumped on every change of the instance list, to spot stats answers older than it. */
let listVersion = 0;

function icon(name, type, url) {
  const safe = safeIcon(url);
  if (safe) {
    const img = el("img", "droplet__icon");
    img.src = safe;
    img.alt = "";
    img.dataset.type = type || "";
    return img;
  }
  const tile = el("span", "droplet__icon", initial(name));
  tile.dataset.type = type || "";
  tile.setAttribute("aria-hidden", "true");
  return tile;
}

// --- the first paint -------------------------------------------------------------------------

for (const card of catalogue.querySelectorAll("article[data-droplet-id]")) {
  const id = Number(card.dataset.dropletId);
  droplets.set(id, {
    id,
    name: card.dataset.name,
    description: card.querySelector(".droplet__desc")?.textContent || "",
    droplet_type: card.dataset.type,
  });
}
for (const row of list.querySelectorAll("[data-instance-id]")) {
  const id = Number(row.dataset.instanceId);
  instances.set(id, {
    id,
    status: row.dataset.state,
    droplet_type: row.dataset.dropletType,
    droplet_name: row.querySelector('[data-field="name"]')?.textContent || "",
    open_url: row.querySelector('[data-action="open"]')?.getAttribute("href") || null,
  });
}

// --- the catalogue ---------------------------------------------------------------------------

function dropletCard(d) {
  const card = el("article", "droplet");
  card.dataset.dropletId = String(d.id);
  card.dataset.name = d.name || "";
  card.dataset.type = d.droplet_type || "";
  const head = el("div", "droplet__head");
  const title = el("div");
  title.append(el("h3", "droplet__name", d.name), el("span", "badge badge--info", typeLabel(d.droplet_type)));
  head.append(icon(d.name, d.droplet_type, d.icon_src), title);
  const foot = el("div", "droplet__foot");
  const launch = el("button", "button button--primary button--small", "Launch");
  launch.type = "button";
  launch.dataset.action = "launch";
  launch.dataset.dropletId = String(d.id);
  foot.append(el("span"), launch);
  card.append(head, el("p", "droplet__desc", d.description || ""), foot);
  return card;
}

function filterCatalogue() {
  const query = search ? search.value : "";
  let shown = 0;
  for (const card of catalogue.querySelectorAll("article[data-droplet-id]")) {
    const d = droplets.get(Number(card.dataset.dropletId));
    const visible = !d || matches(d, query);
    card.hidden = !visible;
    if (visible) shown += 1;
  }
  document.getElementById("catalogue-empty").hidden = droplets.size > 0;
  document.getElementById("catalogue-nomatch").hidden = droplets.size === 0 || shown > 0;
}

async function refreshDroplets() {
  try {
    const page = await api("GET", "/api/v1/droplets?limit=200");
    const items = (page && page.items) || [];
    droplets.clear();
    const cards = [];
    for (const d of items) {
      if (d.active === false) continue;
      droplets.set(Number(d.id), d);
      cards.push(dropletCard(d));
    }
    catalogue.replaceChildren(...cards);
    filterCatalogue();
  } catch {
    // The first paint is the catalogue as of this page load; it stays.
  }
}

// "input" covers typing; "search" the clear button of the field; "keyup" belt and braces for
// input methods that change the value without an input event.
for (const type of ["input", "search", "keyup"]) search?.addEventListener(type, filterCatalogue);

// --- launching -------------------------------------------------------------------------------

catalogue.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest('[data-action="launch"]') : null;
  if (!button) return;
  const d = droplets.get(Number(button.dataset.dropletId));
  if (!d) return;
  launching = d;
  // One key per dialog: pressing Launch again after a lost answer gets the same instance.
  launchKey = crypto.randomUUID();
  document.getElementById("launch-name").textContent = d.name;
  document.getElementById("launch-description").textContent = d.description || "";
  const size = document.getElementById("launch-resolution");
  size.textContent = resolution(window).replace("x", " × ");
  size.closest("p").hidden = d.droplet_type === "http";
  document.getElementById("launch-error").textContent = "";
  openModal("launch-modal");
});

launchForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!launching) return;
  const d = launching;
  const error = document.getElementById("launch-error");
  error.textContent = "";
  try {
    await busy(document.getElementById("launch-submit"), async () => {
      const instance = await api(
        "POST",
        "/api/v1/instances",
        { droplet_id: d.id, resolution: resolution(window) },
        { headers: { "Idempotency-Key": launchKey } },
      );
      if (instance && instance.id !== undefined) upsert(instance);
    });
    closeModal(modal);
    toast(`Launching ${d.name}…`, "ok");
    refreshStats();
  } catch (e) {
    error.textContent = e.message;
  }
});

// --- my instances ----------------------------------------------------------------------------

function actionButton(action, label, className, shown) {
  const button = el("button", `button button--small ${className}`.trim(), label);
  button.type = "button";
  button.dataset.action = action;
  button.hidden = !shown;
  return button;
}

function instanceRow(i) {
  const view = stateView(i.status);
  const row = el("div", "instance");
  row.dataset.instanceId = String(i.id);
  row.dataset.state = i.status;
  row.dataset.dropletType = i.droplet_type || "";
  const main = el("div", "instance__main");
  const text = el("div");
  const name = el("div", "instance__name", i.droplet_name || "");
  name.dataset.field = "name";
  const meta = el("div", "instance__meta", instanceMeta(i));
  meta.dataset.field = "meta";
  text.append(name, meta);
  main.append(icon(i.droplet_name, i.droplet_type, null), text);
  const badge = el("span", `badge badge--dot badge--${view.tone}${view.busy ? " badge--busy" : ""}`, view.label);
  badge.dataset.field = "badge";
  const actions = el("div", "instance__actions");
  const open = el("a", "button button--primary button--small", "Open");
  open.dataset.action = "open";
  const href = openUrl(i);
  if (href) open.href = href;
  if (i.droplet_type === "http") {
    open.target = "_blank";
    open.rel = "noopener";
  }
  open.hidden = !(view.actions.open && href);
  actions.append(
    open,
    actionButton("start", "Start", "", view.actions.start),
    actionButton("stop", "Stop", "", view.actions.stop),
    deleteButton(i.id, view.actions.delete),
  );
  row.append(main, badge, actions);
  return row;
}

function deleteButton(id, shown) {
  const confirming = shown && armed.has(Number(id));
  const button = actionButton("delete", confirming ? "Confirm delete" : "Delete", "button--danger", shown);
  if (confirming) button.dataset.armed = "1";
  return button;
}

/** Redraws just the delete button of instance `id` (arming and disarming). */
function redrawDelete(id) {
  const old = rowOf(id)?.querySelector('[data-action="delete"]');
  const i = instances.get(Number(id));
  if (old && i) old.replaceWith(deleteButton(id, stateView(i.status).actions.delete));
}

function disarm(id) {
  clearTimeout(armed.get(Number(id)));
  armed.delete(Number(id));
}

/** The first click on Delete: asks for a second one within ARMED_MS. */
function arm(id) {
  disarm(id);
  armed.set(
    Number(id),
    setTimeout(() => {
      armed.delete(Number(id));
      redrawDelete(id);
    }, ARMED_MS),
  );
  redrawDelete(id);
}

function rowOf(id) {
  return list.querySelector(`[data-instance-id="${CSS.escape(String(id))}"]`);
}

function updateCounts() {
  let running = 0;
  for (const i of instances.values()) if (i.status === "running") running += 1;
  document.getElementById("stat-running").textContent = String(running);
  document.getElementById("stat-instances").textContent = String(instances.size);
  document.getElementById("instances-empty").hidden = instances.size > 0;
}

/** Shows an instance as the API describes it now (adds, updates or removes its row). */
function upsert(instance) {
  if (!instance || instance.id === undefined) return;
  if (Number.isFinite(me) && instance.user_id !== undefined && Number(instance.user_id) !== me) return;
  const id = Number(instance.id);
  if (isRemoved(instance.status)) {
    removeInstance(id);
    return;
  }
  const before = instances.get(id);
  const merged = { ...(before || {}), ...instance, id };
  instances.set(id, merged);
  if (!stateView(merged.status).actions.delete) disarm(id);
  if (!before || before.status !== merged.status) {
    listVersion += 1;
    statsSoon();
  }
  const row = instanceRow(merged);
  const existing = rowOf(id);
  if (existing) existing.replaceWith(row);
  else list.prepend(row);
  updateCounts();
}

function removeInstance(id) {
  disarm(id);
  listVersion += 1;
  instances.delete(Number(id));
  rowOf(id)?.remove();
  updateCounts();
}

list.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("button[data-action]") : null;
  if (!button) return;
  const row = button.closest("[data-instance-id]");
  const id = row.dataset.instanceId;
  const action = button.dataset.action;
  if (action === "delete") {
    if (!armed.has(Number(id))) {
      arm(id);
      return;
    }
    disarm(id);
  }
  const url = `/api/v1/instances/${encodeURIComponent(id)}`;
  try {
    await busy(button, async () => {
      const answer =
        action === "delete" ? await api("DELETE", url) : await api("POST", `${url}/${action}`);
      // The row may have been redrawn meanwhile: the busy button is then a detached one.
      if (answer && answer.id !== undefined) upsert(answer);
      else if (action === "delete") removeInstance(id);
    });
  } catch (e) {
    toast(e.message, "error");
  }
});

// --- live updates ----------------------------------------------------------------------------

let pollTimer = null;
/** Whether the event stream is open (it then carries the stats too). */
let streaming = false;
let pollFailures = 0;
let warned = false;

async function refreshInstances() {
  const page = await api("GET", "/api/v1/instances?limit=200");
  const seen = new Set();
  for (const i of (page && page.items) || []) {
    if (Number.isFinite(me) && i.user_id !== undefined && Number(i.user_id) !== me) continue;
    seen.add(Number(i.id));
    upsert(i);
  }
  // Rows missing from the answer are gone, but only if the answer was the whole list (an
  // administrator's list holds everyone's instances and may be cut into pages).
  const items = (page && page.items) || [];
  const whole = !page || !Number.isFinite(page.total) || page.total <= items.length;
  if (whole) for (const id of [...instances.keys()]) if (!seen.has(id)) removeInstance(id);
}

function schedulePoll() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, pollDelay(pollFailures));
}

async function poll() {
  try {
    await refreshInstances();
    pollFailures = 0;
  } catch (e) {
    pollFailures += 1;
    if (!warned) {
      warned = true;
      toast(`Live updates are unavailable: ${e.message}`, "error", 8000);
    }
  }
  if (pollTimer !== null) schedulePoll();
}

function startPolling() {
  if (pollTimer === null) {
    pollTimer = 0;
    poll();
  }
}

function stopPolling() {
  clearTimeout(pollTimer);
  pollTimer = null;
}

function connect() {
  if (!("EventSource" in window)) {
    startPolling();
    return;
  }
  const source = new EventSource("/api/v1/events");
  source.addEventListener("stats", (event) => {
    try {
      // The counts come with the instance events of this same stream (updateCounts); the
      // stream's own may lag a launch this page has just shown.
      showStats(JSON.parse(event.data), false);
    } catch {
      // as below
    }
  });
  source.addEventListener("instance", (event) => {
    try {
      upsert(JSON.parse(event.data));
    } catch {
      // A malformed event is skipped; the next poll or event corrects the list.
    }
  });
  source.addEventListener("instance_removed", (event) => {
    try {
      removeInstance(JSON.parse(event.data).id);
    } catch {
      // as above
    }
  });
  source.addEventListener("open", () => {
    streaming = true;
    stopPolling();
    warned = false;
    // Whatever changed while there was no stream.
    refreshInstances().catch(() => {});
  });
  source.addEventListener("error", () => {
    streaming = false;
    source.close();
    startPolling();
    setTimeout(connect, 15000);
  });
}

// --- stats ----------------------------------------------------------------------------------

/** Shows the figures of `/api/v1/stats` (or of a `stats` event). */
function showStats(stats, counts = true) {
  if (!stats) return;
  // The running and instance counts of an answer older than the last change of the list would
  // undo it: the list's own counts (updateCounts) stay then.
  if (counts && Number.isFinite(stats.running)) document.getElementById("stat-running").textContent = String(stats.running);
  if (counts && Number.isFinite(stats.instances)) document.getElementById("stat-instances").textContent = String(stats.instances);
  document.getElementById("stat-cpu").textContent = formatPercent(stats.cpu_percent);
  document.getElementById("stat-memory").textContent = formatBytes(stats.memory_bytes);
  const host = document.getElementById("stat-host");
  if (host) host.textContent = hostLoad(stats.host);
}

async function refreshStats() {
  const asked = listVersion;
  try {
    showStats(await api("GET", "/api/v1/stats"), asked === listVersion);
  } catch {
    // The numbers of the first paint stay; the instance list reports the trouble.
  }
}

let statsTimer = null;

/**
 * After a state change: the figures again shortly (the engine samples a new container within
 * a second or two). The event stream pushes them by itself; this serves the polling fallback.
 */
function statsSoon() {
  if (streaming) return;
  clearTimeout(statsTimer);
  statsTimer = setTimeout(refreshStats, 1500);
}

// The first paint's Launch buttons are disabled until now: a click before this script ran
// would have done nothing.
for (const button of catalogue.querySelectorAll("button[data-action=launch][disabled]")) {
  button.disabled = false;
  button.removeAttribute("title");
}
filterCatalogue();
refreshDroplets();
refreshStats();
// The event stream pushes the figures when they change; without it, they are asked for.
setInterval(() => {
  if (!streaming) refreshStats();
}, 10000);
connect();
