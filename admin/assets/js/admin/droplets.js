// /admin/droplets: the list (from the API, searched as you type), the create/edit modal (every
// field of the API; the parts that apply to the chosen type and target; write-only secrets),
// activate/deactivate, delete (a droplet still in use is refused, in words), pulling one image
// or all of them with progress bars and the engine's log as they come, and importing a
// catalogue with each entry's result. Every value from the API or a remote catalogue goes into
// the page with textContent or as an attribute, never as HTML.
import { api } from "../api.js";
import { el } from "../dom.js";
import { busy, clearErrors, closeModal, confirmClick, onSubmit, openModal, toast } from "../app.js";
import { dropletBody, entryView, formValues, importSummary } from "./droplet-form.js";
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
/** id → tenant name, for viewers who see several tenants (else empty: no tenant column). */
const tenantNames = new Map(
  [...document.querySelectorAll("#tenant-names li")].map((li) => [Number(li.dataset.id), li.textContent]),
);

const TYPES = { http: "Web app", vnc: "Desktop (VNC)", rdp: "Desktop (RDP)", ssh: "Terminal (SSH)" };
/** id → droplet, as last listed. */
const droplets = new Map();
let pulling = false;

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
  const tenant = tenantNames.size ? cell("Tenant", "nowrap") : null;
  if (tenant) tenant.textContent = tenantNames.get(Number(d.tenant_id)) || `#${d.tenant_id}`;
  const type = cell("Type");
  type.append(el("span", "badge badge--info", TYPES[d.droplet_type] || d.droplet_type));
  const image = cell("Image");
  if (d.target === "external") {
    const where = d.external_port ? `${d.external_host || ""}:${d.external_port}` : d.external_host || "";
    image.append(el("span", "muted", `Existing host ${where}`));
  }
  else image.append(el("code", "small", d.image || "–"));
  const res = cell("Resources", "nowrap");
  res.textContent = d.target === "external" ? "–" : resources(d);
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
  tr.append(...[title, tenant, type, image, res, status, actions].filter(Boolean));
  return tr;
}

/** Delays before asking again when the gateway could not be reached (a reading is safe to repeat). */
const LIST_RETRIES = [400, 1200, 3000];

async function listPage(params) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await api("GET", `/api/v1/droplets?${params}`);
    } catch (e) {
      if (e.status !== 0 || attempt >= LIST_RETRIES.length) throw e;
      await new Promise((resolve) => setTimeout(resolve, LIST_RETRIES[attempt]));
    }
  }
}

async function load() {
  const q = search ? search.value.trim() : "";
  const params = new URLSearchParams({ scope: "all", limit: "200" });
  if (q) params.set("q", q);
  try {
    const page = await listPage(params);
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

/** The droplet being edited (null: a new one). */
let editing = null;

function setValue(name, value) {
  const input = form.elements.namedItem(name);
  if (!input) return;
  if (input instanceof RadioNodeList) {
    for (const r of input) r.checked = r.value === value;
  } else if (input.type === "checkbox") {
    input.checked = Boolean(value);
  } else {
    input.value = value === null || value === undefined ? "" : String(value);
  }
}

function formValuesRead() {
  const v = {};
  for (const input of form.elements) {
    if (!input.name || input.name === "group_ids" || input.name === "id") continue;
    if (input.type === "radio") {
      if (input.checked) v[input.name] = input.value;
    } else if (input.type === "checkbox") {
      v[input.name] = input.checked;
    } else {
      v[input.name] = input.value;
    }
  }
  return v;
}

/** Shows the parts of the form that apply to the chosen type and target. */
function showParts() {
  const type = form.elements.namedItem("droplet_type").value;
  const targetInput = form.querySelector('input[name="target"]:checked');
  const external = type !== "http" && targetInput && targetInput.value === "external";
  for (const part of form.querySelectorAll("[data-desktop-only]")) part.hidden = type === "http";
  for (const part of form.querySelectorAll("[data-target-part]")) {
    part.hidden = part.dataset.targetPart !== (external ? "external" : "container");
  }
  for (const part of form.querySelectorAll("[data-type-only]")) part.hidden = part.dataset.typeOnly !== type;
  const port = document.getElementById("nd-host-port");
  port.placeholder = { vnc: "5900", rdp: "3389", ssh: "22" }[type] || "";
  // A web app is never an external host: the option goes away on external droplets.
  const http = form.querySelector('#nd-type option[value="http"]');
  http.disabled = Boolean(editing && editing.target === "external");
}

/** The tenant the droplet in the form belongs to (or will). */
function formTenant() {
  if (editing) return Number(editing.tenant_id);
  const select = form.elements.namedItem("tenant_id");
  return Number(select ? select.value : form.dataset.ownTenant);
}

/** Shows the groups of the droplet's tenant only (a grant must stay within it). */
function showGroups() {
  const tenant = formTenant();
  let shown = 0;
  for (const label of form.querySelectorAll("#nd-groups label[data-tenant-id]")) {
    const mine = Number(label.dataset.tenantId) === tenant;
    label.hidden = !mine;
    if (!mine) label.querySelector("input").checked = false;
    else shown += 1;
  }
  const none = document.getElementById("nd-groups-none");
  if (none) none.hidden = shown > 0;
}

/** What the write-only secrets of `d` look like: stored or not, never their value. */
function showSecrets(d) {
  const hasHost = Boolean(d && d.has_external_credentials);
  const hasRegistry = Boolean(d && d.has_registry_credentials);
  document.getElementById("nd-credentials-forget").hidden = !hasHost;
  document.getElementById("nd-registry-forget").hidden = !hasRegistry;
  document.getElementById("nd-credentials-hint").textContent = hasHost
    ? "Credentials are stored (never shown). Leave these empty to keep them; type new ones to replace them."
    : "Sealed before it is stored and never shown again.";
  document.getElementById("nd-registry-hint").textContent = hasRegistry
    ? "An account is stored (never shown). Leave these empty to keep it; type a new one to replace it."
    : "Sealed before it is stored and never shown again.";
  document.getElementById("nd-registry-state").textContent = hasRegistry ? "· account stored" : "";
  for (const name of ["external_password", "external_passphrase", "registry_password"]) {
    const input = form.elements.namedItem(name);
    input.placeholder = (name.startsWith("external") ? hasHost : hasRegistry) ? "•••••• stored: leave empty to keep" : "";
  }
  form.elements.namedItem("external_private_key").placeholder = hasHost
    ? "Stored: leave empty to keep"
    : "-----BEGIN OPENSSH PRIVATE KEY-----";
}

function fillForm(d) {
  editing = d;
  form.reset();
  form.elements.namedItem("id").value = d ? String(d.id) : "";
  document.getElementById("droplet-modal-title").textContent = d ? `Edit ${d.name}` : "New droplet";
  document.getElementById("droplet-submit").textContent = d ? "Save changes" : "Create droplet";
  const values = formValues(d);
  for (const [name, value] of Object.entries(values)) setValue(name, value);
  // The target is chosen once: an existing droplet keeps it (the API refuses a change).
  for (const r of form.querySelectorAll('input[name="target"]')) r.disabled = Boolean(d);
  const tenantSelect = form.elements.namedItem("tenant_id");
  if (tenantSelect) {
    tenantSelect.value = String(d ? d.tenant_id : form.dataset.ownTenant);
    tenantSelect.disabled = Boolean(d);
  }
  const granted = new Set((d && d.group_ids) || []);
  for (const box of form.querySelectorAll('input[name="group_ids"]')) box.checked = granted.has(Number(box.value));
  showGroups();
  for (const section of form.querySelectorAll("details.disclosure")) section.open = false;
  // Sections holding a value open, so nothing set is hidden.
  for (const section of form.querySelectorAll("details.disclosure")) {
    const filled = [...section.querySelectorAll("input, textarea")].some((i) =>
      i.type === "checkbox" ? i.checked : i.type !== "password" && i.value.trim() !== "" && i.name !== "idle_action",
    );
    if (filled) section.open = true;
  }
  clearErrors(form);
  showSecrets(d);
  showParts();
}

form?.elements.namedItem("droplet_type").addEventListener("change", showParts);
for (const r of form ? form.querySelectorAll('input[name="target"]') : []) r.addEventListener("change", showParts);
form?.elements.namedItem("tenant_id")?.addEventListener("change", showGroups);
// An error is about what was sent: it goes away as soon as its field changes.
form?.addEventListener("input", (event) => {
  const input = event.target;
  if (!(input instanceof Element) || !input.name) return;
  const slot = form.querySelector(`[data-error-for="${CSS.escape(input.name)}"]`);
  if (slot) slot.textContent = "";
  input.removeAttribute("aria-invalid");
});

document.getElementById("new-droplet")?.addEventListener("click", () => {
  fillForm(null);
  openModal("droplet-modal");
});

/** Opens the collapsed section holding the field an API error names, so the error is seen. */
function revealField(field) {
  if (!field) return;
  const slot = form.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
  const section = slot && slot.closest("details");
  if (section) section.open = true;
}

onSubmit(form, async () => {
  const id = text(form, "id");
  const groupIds = form.querySelector('input[name="group_ids"]') ? checkedIds(form, "group_ids") : null;
  const tenantId = !id && form.elements.namedItem("tenant_id") ? formTenant() : null;
  const body = dropletBody(formValuesRead(), { editing: Boolean(id), groupIds, tenantId });
  try {
    if (id) {
      await api("PATCH", `/api/v1/droplets/${encodeURIComponent(id)}`, body);
      toast(`${body.name} saved.`, "ok");
    } else {
      const created = await api("POST", "/api/v1/droplets", body);
      toast(
        created.target === "external"
          ? `${created.name} created.`
          : `${created.name} created. Pull its image before users launch it.`,
        "ok",
      );
    }
  } catch (e) {
    // A taken name is `conflict` without a field: it belongs next to the name all the same.
    if (e.code === "conflict" && !e.field) e.field = "name";
    revealField(e.field);
    throw e;
  }
  // Typed secrets do not outlive the request.
  for (const input of form.querySelectorAll('input[type="password"], textarea[name="external_private_key"]')) input.value = "";
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

// --- pulling every image ---------------------------------------------------------------------

const pullAllModal = document.getElementById("pull-all-modal");
const pullAllList = document.getElementById("pull-all-list");
const pullAllLog = document.getElementById("pull-all-log");
const pullAllStatus = document.getElementById("pull-all-status");
const pullAllError = document.getElementById("pull-all-error");

function appendLog(pre, line) {
  const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
  pre.append(document.createTextNode(`${line}\n`));
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

/** One image's line in the pull-all list: name, image, its own bar and state. */
function pullItem(data) {
  const li = el("li", "pull-item");
  li.dataset.dropletId = String(data.droplet_id);
  li.dataset.state = "running";
  const head = el("div", "pull-item__head");
  const who = el("div", "pull-item__who");
  who.append(el("span", "pull-item__name", data.name || ""), el("code", "small pull-item__image", data.image || ""));
  const badge = el("span", "badge badge--info badge--dot badge--busy", "Pulling");
  badge.dataset.role = "state";
  head.append(who, badge);
  const bar = el("div", "pull__bar");
  const progress = el("progress");
  progress.max = 100;
  progress.dataset.state = "running";
  const figure = el("span", "small nowrap", "…");
  figure.dataset.role = "percent";
  bar.append(progress, figure);
  const note = el("p", "small muted pull-item__note", "Asking the engine…");
  note.dataset.role = "note";
  li.append(head, bar, note);
  li.progress = pullProgress();
  return li;
}

function itemOf(id) {
  return pullAllList.querySelector(`li[data-droplet-id="${CSS.escape(String(id))}"]`);
}

function finishItem(li, ok, message) {
  li.dataset.state = ok ? "done" : "error";
  const badge = li.querySelector('[data-role="state"]');
  badge.className = `badge ${ok ? "badge--ok" : "badge--bad"}`;
  badge.textContent = ok ? "Pulled" : "Failed";
  const progress = li.querySelector("progress");
  progress.dataset.state = ok ? "done" : "error";
  if (ok) {
    progress.value = 100;
    li.querySelector('[data-role="percent"]').textContent = "100 %";
  }
  const note = li.querySelector('[data-role="note"]');
  note.textContent = message;
  note.className = `small pull-item__note${ok ? " muted" : " pull-item__note--bad"}`;
}

async function pullAll(button) {
  if (pulling) return;
  pulling = true;
  pullAllList.replaceChildren();
  pullAllLog.replaceChildren();
  pullAllError.textContent = "";
  pullAllStatus.textContent = "Finding the images to pull…";
  pullAllModal.dataset.state = "running";
  openModal("pull-all-modal");
  const names = new Map();
  let outcome = null;
  try {
    await busy(button, () =>
      streamPost("/api/v1/droplets/pull-all", (event, data) => {
        const li = data && data.droplet_id !== undefined ? itemOf(data.droplet_id) : null;
        if (event === "droplet") {
          names.set(data.droplet_id, data.name || "");
          pullAllList.append(pullItem(data));
          pullAllStatus.textContent = `Pulling ${data.name || "an image"}…`;
          appendLog(pullAllLog, `${data.name}: pulling ${data.image}`);
        } else if (event === "progress" && li) {
          li.progress.add(data);
          const value = li.progress.percent();
          const progress = li.querySelector("progress");
          if (value === null) progress.removeAttribute("value");
          else progress.value = value;
          li.querySelector('[data-role="percent"]').textContent = value === null ? "…" : `${Math.floor(value)} %`;
          li.querySelector('[data-role="note"]').textContent = `${data.layer ? `${data.layer}: ` : ""}${data.status || ""}`;
        } else if (event === "log") {
          const who = names.get(data.droplet_id);
          appendLog(pullAllLog, who ? `${who}: ${data.line || ""}` : data.line || "");
        } else if (event === "result" && li) {
          finishItem(li, Boolean(data.ok), data.ok ? "The image is on the engine." : data.message || data.code || "The pull failed.");
          appendLog(pullAllLog, data.ok ? `${data.name}: done` : `${data.name}: failed: ${data.message || data.code}`);
        } else if (event === "done") {
          outcome = (data.failed || 0) > 0 ? "error" : "done";
          pullAllStatus.textContent =
            data.total === 0
              ? "No container droplet has an image to pull."
              : `${data.pulled} of ${data.total} ${data.total === 1 ? "image" : "images"} pulled${data.failed ? `, ${data.failed} failed` : ""}.`;
          appendLog(pullAllLog, `Finished: ${data.pulled} pulled, ${data.failed} failed.`);
        }
      }),
    );
    if (!outcome) {
      outcome = "error";
      pullAllError.textContent = "The pulls ended without a summary; their outcomes are in the audit log.";
    }
  } catch (e) {
    outcome = "error";
    pullAllError.textContent = e.message;
  } finally {
    pulling = false;
  }
  for (const li of pullAllList.querySelectorAll('li[data-state="running"]')) finishItem(li, false, "Not finished.");
  pullAllModal.dataset.state = outcome;
}

const pullAllButton = document.getElementById("pull-all");
pullAllButton?.addEventListener("click", () => pullAll(pullAllButton));

// --- importing a catalogue -------------------------------------------------------------------

const importForm = document.getElementById("import-form");
const importEntries = document.getElementById("import-entries");

function entryItem(entry) {
  const view = entryView(entry);
  const li = el("li", "import-entry");
  li.dataset.status = entry.status || "invalid";
  const head = el("div", "import-entry__head");
  const name = el("span", "import-entry__name", entry.name || `Entry ${Number(entry.index) + 1}`);
  if (!entry.name) name.classList.add("muted");
  head.append(name, el("span", `badge badge--${view.tone}`, view.label));
  li.append(head);
  if (view.details.length) {
    const list = el("ul", "import-entry__details");
    for (const line of view.details) list.append(el("li", null, line));
    li.append(list);
  }
  return li;
}

document.getElementById("import-droplets")?.addEventListener("click", () => {
  importForm.reset();
  clearErrors(importForm);
  document.getElementById("import-result").hidden = true;
  importEntries.replaceChildren();
  openModal("import-modal");
});

// Which button sent the form: registered before onSubmit's listener, so it runs first. Enter
// in the URL field checks (the first button); only "Import" writes.
let importDryRun = true;
importForm?.addEventListener("submit", (event) => {
  importDryRun = !(event.submitter && event.submitter.id === "import-submit");
});

onSubmit(importForm, async (f) => {
  const dryRun = importDryRun;
  const body = { url: text(f, "url") || "" };
  const tenant = f.elements.namedItem("tenant_id");
  if (tenant) body.tenant_id = Number(tenant.value);
  const report = await api("POST", `/api/v1/droplets/import${dryRun ? "?dry_run=true" : ""}`, body);
  const entries = (report && report.entries) || [];
  importEntries.replaceChildren(...entries.map(entryItem));
  document.getElementById("import-summary").textContent = importSummary(report);
  document.getElementById("import-result").hidden = false;
  if (!dryRun) {
    if (report.imported > 0) toast(`${report.imported} ${report.imported === 1 ? "droplet" : "droplets"} imported.`, "ok");
    await load();
  }
});

load();
