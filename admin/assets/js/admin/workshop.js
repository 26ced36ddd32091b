// /admin/workshops/{id}: one workshop (GET /api/v1/workshops/{id}) with each participant's state
// and their instance of every droplet; start all, stop all, edit (the shared form), delete.
// Kept current while it changes: the instances' event stream when the administrator may follow
// it (`/api/v1/events?scope=all`), and a poll that is quick while something is on the way and
// slow otherwise (launch failures and claims are the workshop's own, not instance events).
// Every value from the API goes into the page with textContent or as an attribute.
import { api, oneAtATime } from "../api.js";
import { el } from "../dom.js";
import { busy, confirmClick, onSubmit, toast } from "../app.js";
import { WorkshopForm } from "./workshop-form.js";
import { seatState, settling, span, tally, workshopStatus } from "./workshop-logic.js";

const page = document.getElementById("workshop-page");
const id = page.dataset.workshopId;
const canFollow = page.dataset.canFollow === "1";
const url = `/api/v1/workshops/${encodeURIComponent(id)}`;
const rows = document.getElementById("participants-rows");
const wrap = document.getElementById("participants-wrap");
const empty = document.getElementById("participants-empty");
const errorBox = document.getElementById("workshop-error");
const live = document.getElementById("workshop-live");
const dialog = document.getElementById("workshop-modal");
const form = dialog ? new WorkshopForm(dialog) : null;

const QUICK_MS = 1500;
const SLOW_MS = 10000;

let view = null;
/** The last look failed (a network hiccup): look again soon. */
let failed = false;

function badge(state, extra = "") {
  const s = seatState(state);
  const b = el("span", `badge badge--dot badge--${s.tone}${s.busy ? " badge--busy" : ""}${extra}`, s.label);
  b.dataset.state = state;
  return b;
}

function row(p, droplets) {
  const names = new Map(droplets.map((d) => [d.id, d.name]));
  const tr = el("tr");
  tr.dataset.userId = String(p.user_id);
  tr.dataset.state = p.state;
  const who = el("td", "cell-title");
  who.append(el("div", "cell-main", p.display_name || p.username), el("div", "cell-sub", p.disabled ? `${p.username} · disabled` : p.username));
  const state = el("td");
  state.dataset.label = "State";
  state.append(badge(p.state));
  const seats = el("td");
  seats.dataset.label = "Instances";
  const list = el("div", "seats");
  for (const i of p.instances || []) {
    const seat = el("span", "seat");
    seat.dataset.dropletId = String(i.droplet_id);
    seat.dataset.state = i.state;
    seat.append(el("span", "small", names.get(i.droplet_id) || `Droplet ${i.droplet_id}`), badge(i.state));
    if (i.error) seat.append(el("span", "cell-sub", i.error));
    list.append(seat);
  }
  if (!list.childElementCount) list.append(el("span", "muted small", "No droplet in the template"));
  seats.append(list);
  tr.append(who, state, seats);
  return tr;
}

function render(v) {
  view = v;
  document.getElementById("workshop-title").textContent = v.name;
  document.getElementById("workshop-crumb").textContent = v.name;
  document.title = `${v.name} · Flowcase`;
  const status = workshopStatus(v.status);
  const statusBadge = document.getElementById("workshop-status");
  statusBadge.className = `badge badge--dot badge--${status.tone}`;
  statusBadge.textContent = status.label;
  statusBadge.dataset.status = v.status;
  document.getElementById("workshop-when").textContent = span(v.starts_at, v.ends_at);
  document.getElementById("workshop-description").textContent = v.description || "";
  const droplets = v.droplets || [];
  const chips = document.getElementById("workshop-droplets");
  chips.replaceChildren(...droplets.map((d) => el("span", "badge badge--info", d.name)));
  if (!droplets.length) chips.append(el("span", "muted small", "No droplets yet: edit the workshop to choose them."));
  const participants = v.participants || [];
  rows.replaceChildren(...participants.map((p) => row(p, droplets)));
  wrap.hidden = participants.length === 0;
  empty.hidden = participants.length > 0;
  const counts = tally(participants);
  document.getElementById("stat-participants").textContent = String(counts.participants);
  document.getElementById("stat-running").textContent = String(counts.running);
  document.getElementById("stat-moving").textContent = String(counts.moving);
  document.getElementById("stat-failed").textContent = String(counts.failed);
  const startAll = document.getElementById("start-all");
  const stopAll = document.getElementById("stop-all");
  if (startAll) startAll.disabled = !participants.length || !droplets.length;
  if (stopAll) stopAll.disabled = v.status !== "running";
}

let timer = null;

function schedule() {
  clearTimeout(timer);
  const moving = view && settling(view.participants);
  live.textContent = moving ? "Updating…" : "";
  timer = setTimeout(load, moving || failed ? QUICK_MS : SLOW_MS);
}

const refresh = oneAtATime(async () => {
  try {
    render(await api("GET", url));
    errorBox.textContent = "";
    failed = false;
  } catch (e) {
    failed = true;
    if (e.status === 404) {
      errorBox.textContent = "This workshop no longer exists.";
      clearTimeout(timer);
      return;
    }
    errorBox.textContent = e.message;
  }
});

async function load() {
  await refresh();
  schedule();
}

async function act(button, work, done) {
  try {
    await busy(button, async () => render(await work()));
    toast(done, "ok");
  } catch (e) {
    toast(e.message, "error", 8000);
  }
  schedule();
}

document.getElementById("start-all")?.addEventListener("click", (event) =>
  act(event.currentTarget, () => api("POST", `${url}/start`), "Starting every participant's instances."),
);
document.getElementById("stop-all")?.addEventListener("click", (event) =>
  act(event.currentTarget, () => api("POST", `${url}/stop`), "Stopping every participant's instances."),
);
document.getElementById("edit-workshop")?.addEventListener("click", () => {
  if (view) form.open(view);
});
document.getElementById("delete-workshop")?.addEventListener("click", async (event) => {
  const button = event.currentTarget;
  if (!confirmClick(button, "Confirm delete")) return;
  try {
    await busy(button, () => api("DELETE", url));
    toast("Workshop deleted.", "ok");
    window.location.assign("/admin/workshops");
  } catch (e) {
    toast(e.code === "in_use" ? "The workshop is running: stop all first, then delete it." : e.message, "error", 8000);
  }
});

if (form) {
  onSubmit(form.form, async () => {
    render(await form.save());
    dialog.close();
    toast("Workshop saved.", "ok");
  });
}

// Live: a change of any instance in sight looks at the workshop again (debounced).
function follow() {
  if (!canFollow || !("EventSource" in window)) return;
  let pending = null;
  const source = new EventSource("/api/v1/events?scope=all");
  const soon = () => {
    clearTimeout(pending);
    pending = setTimeout(load, 250);
  };
  source.addEventListener("instance", soon);
  source.addEventListener("instance_removed", soon);
  source.addEventListener("error", () => {
    // The poll goes on; the stream is tried again later.
    source.close();
    setTimeout(follow, 15000);
  });
}

load();
follow();
