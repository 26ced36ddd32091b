// /admin/droplets: the list (from the API, searched as you type), the create/edit modal,
// activate/deactivate, delete (a droplet still in use is refused, in words), and pulling a
// droplet's image with a progress bar and the engine's log as they come. Every value from the
// API goes into the page with textContent or as an attribute, never as HTML.
import { api } from "../api.js";
import { busy, closeModal, confirmClick, onSubmit, openModal, toast } from "../app.js";
import { checkedIds, text } from "./form-data.js";
import { pullProgress, streamPost } from "./pull.js";

const table = document.getElementById("droplets-table");
const rows = document.getElementById("droplets-rows");
const wrap = document.getElementById("droplets-wrap");
const empty = document.getElementById("droplets-empty");
const count = document.getElementById("droplets-count");
const listError = document.getElementById("droplets-error");
const search = document.getElementById("droplet-search");
const form = document.getElementById("droplet-form");
const canEdit = table.dataset.canEdit === "1";

const TYPES = { http: "Web app", vnc: "Desktop (VNC)", rdp: "Desktop (RDP)", ssh: "Terminal (SSH)" };
/** id → droplet, as last listed. */
const droplets = new Map();
let pulling = false;

function el(tag, className, value) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (value !== undefined && value !== null) node.textContent = value;
  return node;
}

function resources(d) {
  const parts = [];
  if (Number.isFinite(d.cpu_cores)) parts.push(`${d.cpu_cores} CPU`);
  if (Number.isFinite(d.memory_mb)) parts.push(`${d.memory_mb} MiB`);
  return parts.length ? parts.join(" · ") : "Defaults";
}

function button(action, label, className = "") {
  const b = el("button", `button button--small ${className}`.trim(), label);
  b.type = "button";
  b.dataset.action = action;
  return b;
}

function cell(label, className) {
  const td = el("td", className);
  if (label) td.dataset.label = label;
  return td;
}

function row(d) {
  const tr = el("tr");
  tr.dataset.dropletId = String(d.id);
  tr.dataset.active = d.active ? "1" : "0";
  const title = cell(null, "cell-title");
  const name = el("div", "cell-main", d.name);
  name.dataset.field = "name";
  title.append(name, el("div", "cell-sub", d.description || ""));
  const type = cell("Type");
  type.append(el("span", "badge badge--info", TYPES[d.droplet_type] || d.droplet_type));
  const image = cell("Image");
  if (d.target === "external") image.append(el("span", "muted", `External: ${d.external_host || ""}`));
  else image.append(el("code", "small", d.image || "–"));
  const res = cell("Resources", "nowrap");
  res.textContent = resources(d);
  const status = cell("Status");
  status.append(el("span", `badge ${d.active ? "badge--ok" : "badge--bad"}`, d.active ? "Active" : "Inactive"));
  const actions = cell(null, "actions");
  if (canEdit) {
    const bar = el("span", "toolbar-row");
    bar.append(button("edit", "Edit"));
    bar.append(button("toggle", d.active ? "Deactivate" : "Activate"));
    if (d.target !== "external" && d.image) bar.append(button("pull", "Pull image"));
    bar.append(button("delete", "Delete", "button--danger"));
    actions.append(bar);
  }
  tr.append(title, type, image, res, status, actions);
  return tr;
}

async function load() {
  const q = search ? search.value.trim() : "";
  const params = new URLSearchParams({ scope: "all", limit: "200" });
  if (q) params.set("q", q);
  try {
    const page = await api("GET", `/api/v1/droplets?${params}`);
    const items = (page && page.items) || [];
    listError.textContent = "";
    droplets.clear();
    for (const d of items) droplets.set(Number(d.id), d);
    rows.replaceChildren(...items.map(row));
    const total = Number.isFinite(page && page.total) ? page.total : items.length;
    count.textContent = q ? `${total} matching “${q}”` : `${total} ${total === 1 ? "droplet" : "droplets"}`;
    wrap.hidden = items.length === 0;
    empty.hidden = items.length > 0;
    document.getElementById("droplets-empty-title").textContent = q
      ? `No droplet matches “${q}”`
      : "No droplets yet";
  } catch (e) {
    listError.textContent = e.message;
  }
}

let searchTimer = null;
search?.addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(load, 200);
});
document.getElementById("droplet-search-form")?.addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});

// --- create and edit -------------------------------------------------------------------------

function fillForm(d) {
  form.reset();
  form.elements.namedItem("id").value = d ? String(d.id) : "";
  document.getElementById("droplet-modal-title").textContent = d ? `Edit ${d.name}` : "New droplet";
  document.getElementById("droplet-submit").textContent = d ? "Save changes" : "Create droplet";
  const set = (name, value) => {
    const input = form.elements.namedItem(name);
    if (input) input.value = value === null || value === undefined ? "" : String(value);
  };
  if (d) {
    set("name", d.name);
    set("description", d.description);
    set("droplet_type", d.droplet_type);
    set("image", d.image);
    set("ports", Array.isArray(d.ports) && d.ports.length ? d.ports[0] : "");
    set("cpu_cores", d.cpu_cores);
    set("memory_mb", d.memory_mb);
    form.elements.namedItem("active").checked = Boolean(d.active);
  }
  // A type cannot change on an existing droplet's target; the name, image and the rest can.
  form.elements.namedItem("droplet_type").disabled = Boolean(d);
  const granted = new Set((d && d.group_ids) || []);
  for (const box of form.querySelectorAll('input[name="group_ids"]')) box.checked = granted.has(Number(box.value));
  for (const slot of form.querySelectorAll("[data-error-for]")) slot.textContent = "";
  const general = form.querySelector("[data-form-error]");
  if (general) general.textContent = "";
}

function numberOrNull(name) {
  const raw = text(form, name);
  return raw === undefined || raw === "" ? null : Number(raw);
}

document.getElementById("new-droplet")?.addEventListener("click", () => {
  fillForm(null);
  openModal("droplet-modal");
});

onSubmit(form, async () => {
  const id = text(form, "id");
  const port = numberOrNull("ports");
  const body = {
    name: text(form, "name") || "",
    description: text(form, "description") || "",
    image: text(form, "image") || null,
    ports: port === null ? [] : [port],
    cpu_cores: numberOrNull("cpu_cores"),
    memory_mb: numberOrNull("memory_mb"),
    active: form.elements.namedItem("active").checked,
  };
  if (form.querySelector('input[name="group_ids"]')) body.group_ids = checkedIds(form, "group_ids");
  if (id) {
    await api("PATCH", `/api/v1/droplets/${encodeURIComponent(id)}`, body);
    toast(`${body.name} saved.`, "ok");
  } else {
    body.droplet_type = form.elements.namedItem("droplet_type").value;
    body.target = "container";
    const created = await api("POST", "/api/v1/droplets", body);
    toast(`${created.name} created. Pull its image before users launch it.`, "ok");
  }
  closeModal(document.getElementById("droplet-modal"));
  await load();
});

/** The API's `in_use` refusal of a delete, in an administrator's words. */
function inUse(name, message) {
  const n = /(\d+) instance/.exec(String(message || ""));
  const what = n ? (n[1] === "1" ? "1 instance still exists" : `${n[1]} instances still exist`) : "instances of it still exist";
  return `${name} cannot be deleted yet: ${what}. Stop and delete them first (Instances), or deactivate it so that no new ones start.`;
}

// --- row actions -----------------------------------------------------------------------------

rows.addEventListener("click", async (event) => {
  const target = event.target instanceof Element ? event.target.closest("button[data-action]") : null;
  if (!target) return;
  const id = Number(target.closest("[data-droplet-id]").dataset.dropletId);
  const d = droplets.get(id);
  if (!d) return;
  const url = `/api/v1/droplets/${encodeURIComponent(id)}`;
  const action = target.dataset.action;
  if (action === "edit") {
    fillForm(d);
    openModal("droplet-modal");
    return;
  }
  if (action === "pull") {
    pull(d);
    return;
  }
  if (action === "delete" && !confirmClick(target, "Confirm delete")) return;
  try {
    await busy(target, async () => {
      if (action === "toggle") {
        await api("PATCH", url, { active: !d.active });
        toast(`${d.name} is ${d.active ? "inactive: no new launches" : "active"}.`, "ok");
      } else if (action === "delete") {
        await api("DELETE", url);
        toast(`${d.name} deleted.`, "ok");
      }
    });
    await load();
  } catch (e) {
    toast(e.code === "in_use" ? inUse(d.name, e.message) : `${d.name}: ${e.message}`, "error", 10000);
  }
});

// --- pulling an image ------------------------------------------------------------------------

const pullModal = document.getElementById("pull-modal");
const bar = document.getElementById("pull-progress");
const percent = document.getElementById("pull-percent");
const pullStatus = document.getElementById("pull-status");
const pullError = document.getElementById("pull-error");
const pullLog = document.getElementById("pull-log");

function logLine(line) {
  const atBottom = pullLog.scrollHeight - pullLog.scrollTop - pullLog.clientHeight < 24;
  pullLog.append(document.createTextNode(`${line}\n`));
  if (atBottom) pullLog.scrollTop = pullLog.scrollHeight;
}

function showPercent(value) {
  if (value === null) {
    bar.removeAttribute("value");
    percent.textContent = "…";
    return;
  }
  bar.value = value;
  percent.textContent = `${Math.floor(value)} %`;
}

async function pull(d) {
  if (pulling) return;
  pulling = true;
  document.getElementById("pull-modal-title").textContent = `Pull image of ${d.name}`;
  document.getElementById("pull-image").textContent = d.image || "";
  pullLog.replaceChildren();
  pullError.textContent = "";
  pullStatus.textContent = "Asking the engine…";
  bar.dataset.state = "running";
  showPercent(null);
  pullModal.dataset.state = "running";
  openModal("pull-modal");
  const progress = pullProgress();
  let outcome = null;
  try {
    const last = await streamPost(`/api/v1/droplets/${encodeURIComponent(d.id)}/pull`, (event, data) => {
      if (event === "progress") {
        progress.add(data);
        showPercent(progress.percent());
        const sizes = Number.isFinite(data.current) && Number.isFinite(data.total) && data.total > 0
          ? ` (${Math.round(data.current / 1024)} of ${Math.round(data.total / 1024)} KiB)`
          : "";
        pullStatus.textContent = `${data.layer ? `${data.layer}: ` : ""}${data.status || ""}${sizes}`;
      } else if (event === "log") {
        logLine(data.line || "");
      } else if (event === "done") {
        outcome = "done";
        showPercent(100);
        pullStatus.textContent = `Done: ${data.image || d.image} is on the engine.`;
        logLine(`Done: ${data.image || d.image}`);
      } else if (event === "error") {
        outcome = "error";
        pullError.textContent = data.message || "The pull failed.";
        logLine(`Failed: ${data.message || data.code || "error"}`);
      }
    });
    if (!outcome) {
      outcome = "error";
      pullError.textContent = last
        ? "The pull ended without saying how; its outcome is in the audit log."
        : "The engine sent nothing; try again.";
    }
  } catch (e) {
    outcome = "error";
    pullError.textContent = e.message;
  } finally {
    pulling = false;
  }
  bar.dataset.state = outcome;
  pullModal.dataset.state = outcome;
  if (outcome === "error") pullStatus.textContent = "The image was not pulled.";
}

load();
