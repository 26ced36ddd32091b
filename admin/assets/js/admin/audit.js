// /admin/audit: the audit log (GET /api/v1/audit), newest first, filtered by user, action (a
// prefix with `*`), target and a time range, a page at a time; and pruning (POST
// /api/v1/audit/prune) behind a confirmation. Every value from the API, the details included,
// goes into the page with textContent.
import { api, oneAtATime } from "../api.js";
import { el } from "../dom.js";
import { onSubmit, openModal, toast } from "../app.js";
import { Backoff } from "../backoff.js";
import { fromLocalInput, localInput } from "./workshop-logic.js";

const PAGE = 50;
const rows = document.getElementById("audit-rows");
const wrap = document.getElementById("audit-wrap");
const empty = document.getElementById("audit-empty");
const count = document.getElementById("audit-count");
const listError = document.getElementById("audit-error");
const filters = document.getElementById("audit-filters");
const pager = document.getElementById("audit-pager");
const prev = document.getElementById("audit-prev");
const next = document.getElementById("audit-next");

let offset = 0;
let total = 0;
// A page lost to a network hiccup is asked for again by itself, a few times.
const backoff = new Backoff();
let retry = null;

function when(millis) {
  return new Date(millis).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

/** The details as one line of text: `key: value` pairs, or the JSON as it is. */
export function detailsText(details) {
  if (details === null || details === undefined) return "";
  if (typeof details !== "object" || Array.isArray(details)) return JSON.stringify(details);
  return Object.entries(details)
    .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join("\n");
}

function row(entry) {
  const tr = el("tr");
  tr.dataset.entryId = String(entry.id);
  tr.dataset.action = entry.action;
  const at = el("td", "nowrap small", when(entry.at));
  at.dataset.label = "When";
  const who = el("td");
  who.dataset.label = "User";
  const actor = el("div", "cell-main", entry.actor_name || (entry.actor_user_id ? `user ${entry.actor_user_id}` : "system"));
  actor.dataset.field = "actor";
  who.append(actor);
  if (entry.client_addr) who.append(el("div", "cell-sub", entry.client_addr));
  const action = el("td");
  action.dataset.label = "Action";
  action.append(el("code", "small", entry.action));
  const target = el("td", "small", entry.target_kind ? `${entry.target_kind}${entry.target_id ? ` ${entry.target_id}` : ""}` : "–");
  target.dataset.label = "Target";
  const details = el("td");
  details.dataset.label = "Details";
  details.append(el("pre", "details-text", detailsText(entry.details)));
  tr.append(at, who, action, target, details);
  return tr;
}

function query() {
  const params = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
  for (const name of ["actor", "action", "target"]) {
    const value = String(filters.elements.namedItem(name).value || "").trim();
    if (value) params.set(name, value);
  }
  for (const name of ["since", "until"]) {
    const millis = fromLocalInput(filters.elements.namedItem(name).value);
    if (millis !== null) params.set(name, String(millis));
  }
  return params;
}

const load = oneAtATime(async () => {
  try {
    const page = await api("GET", `/api/v1/audit?${query()}`);
    const items = (page && page.items) || [];
    total = Number.isFinite(page && page.total) ? page.total : items.length;
    if (!items.length && offset > 0 && total > 0) {
      // The last page emptied (a prune, narrower filters): show the last one that has entries.
      offset = Math.max(0, Math.floor((total - 1) / PAGE) * PAGE);
      return true;
    }
    listError.textContent = "";
    rows.replaceChildren(...items.map(row));
    count.textContent = `${total} ${total === 1 ? "entry" : "entries"}`;
    wrap.hidden = items.length === 0;
    empty.hidden = items.length > 0;
    pager.hidden = total <= PAGE;
    document.getElementById("audit-range").textContent = items.length
      ? `${offset + 1}–${offset + items.length} of ${total}`
      : "";
    prev.disabled = offset === 0;
    next.disabled = offset + items.length >= total;
    backoff.reset();
  } catch (e) {
    listError.textContent = e.message;
    const delay = backoff.next();
    clearTimeout(retry);
    if (delay !== null) retry = setTimeout(load, delay);
  }
  return false;
});

let typing = null;
filters.addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(() => {
    offset = 0;
    load();
  }, 250);
});
filters.addEventListener("submit", (event) => {
  event.preventDefault();
  offset = 0;
  load();
});
filters.addEventListener("reset", () => {
  setTimeout(() => {
    offset = 0;
    load();
  });
});
prev.addEventListener("click", () => {
  offset = Math.max(0, offset - PAGE);
  load();
});
next.addEventListener("click", () => {
  if (offset + PAGE < total) offset += PAGE;
  load();
});

// --- prune -----------------------------------------------------------------------------------

const pruneForm = document.getElementById("prune-form");
if (pruneForm) {
  const confirm = document.getElementById("prune-confirm");
  const submit = document.getElementById("prune-submit");
  const before = document.getElementById("prune-before");
  const counted = document.getElementById("prune-count");
  const sync = () => {
    submit.disabled = !(confirm.checked && before.value);
  };
  // How many entries the prune would delete: the log's own count of those before the cutoff.
  let counting = 0;
  const count = async () => {
    const cutoff = fromLocalInput(before.value);
    const mine = ++counting;
    if (cutoff === null) {
      counted.textContent = "";
      return;
    }
    try {
      const page = await api("GET", `/api/v1/audit?${new URLSearchParams({ until: String(cutoff), limit: "1" })}`);
      const n = page && Number.isFinite(page.total) ? page.total : 0;
      if (mine === counting) {
        counted.textContent = n === 0 ? "No entry is that old." : `${n} ${n === 1 ? "entry" : "entries"} will be deleted.`;
      }
    } catch (e) {
      if (mine === counting) counted.textContent = e.message;
    }
  };
  confirm.addEventListener("change", sync);
  before.addEventListener("input", () => {
    sync();
    count();
  });
  document.getElementById("open-prune").addEventListener("click", () => {
    pruneForm.reset();
    // A default that keeps the last 90 days.
    before.value = localInput(Date.now() - 90 * 86400000);
    sync();
    count();
    openModal("prune-modal");
  });
  onSubmit(pruneForm, async () => {
    const cutoff = fromLocalInput(before.value);
    if (cutoff === null) throw Object.assign(new Error("Choose a time."), { field: "before" });
    const result = await api("POST", "/api/v1/audit/prune", { before: cutoff });
    const n = result && Number.isFinite(result.deleted) ? result.deleted : 0;
    toast(`${n} ${n === 1 ? "entry" : "entries"} deleted.`, "ok");
    pruneForm.closest("dialog").close();
    offset = 0;
    await load();
  });
}

load();
