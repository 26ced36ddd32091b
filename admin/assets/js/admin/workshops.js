// /admin/workshops: the list (GET /api/v1/workshops), and the form that creates one (POST), which
// then opens the new workshop's page. Every value from the API goes into the page with
// textContent or as an attribute.
import { api } from "../api.js";
import { el } from "../dom.js";
import { onSubmit, toast } from "../app.js";
import { Backoff } from "../backoff.js";
import { WorkshopForm } from "./workshop-form.js";
import { span, workshopStatus } from "./workshop-logic.js";

const rows = document.getElementById("workshops-rows");
const wrap = document.getElementById("workshops-wrap");
const empty = document.getElementById("workshops-empty");
const count = document.getElementById("workshops-count");
const listError = document.getElementById("workshops-error");
const dialog = document.getElementById("workshop-modal");
const form = dialog ? new WorkshopForm(dialog) : null;
// A list lost to a network hiccup is asked for again by itself, a few times.
const backoff = new Backoff();

function row(w) {
  const tr = el("tr");
  tr.dataset.workshopId = String(w.id);
  tr.dataset.status = w.status;
  const title = el("td", "cell-title");
  const link = el("a", "cell-main", w.name);
  link.href = `/admin/workshops/${encodeURIComponent(w.id)}`;
  title.append(link, el("div", "cell-sub", w.description || ""));
  const status = el("td");
  status.dataset.label = "Status";
  const view = workshopStatus(w.status);
  status.append(el("span", `badge badge--dot badge--${view.tone}`, view.label));
  const when = el("td", "small", span(w.starts_at, w.ends_at));
  when.dataset.label = "When";
  const actions = el("td", "actions");
  const open = el("a", "button button--small", "Open");
  open.href = link.href;
  actions.append(open);
  tr.append(title, status, when, actions);
  return tr;
}

async function load() {
  try {
    const page = await api("GET", "/api/v1/workshops?limit=200");
    const items = (page && page.items) || [];
    listError.textContent = "";
    rows.replaceChildren(...items.map(row));
    const total = Number.isFinite(page && page.total) ? page.total : items.length;
    count.textContent = `${total} ${total === 1 ? "workshop" : "workshops"}`;
    wrap.hidden = items.length === 0;
    empty.hidden = items.length > 0;
    backoff.reset();
  } catch (e) {
    listError.textContent = e.message;
    const delay = backoff.next();
    if (delay !== null) setTimeout(load, delay);
  }
}

document.getElementById("new-workshop")?.addEventListener("click", () => form.open(null));

if (form) {
  onSubmit(form.form, async () => {
    const created = await form.save();
    toast(`${created.name} created.`, "ok");
    dialog.close();
    window.location.assign(`/admin/workshops/${encodeURIComponent(created.id)}`);
  });
}

load();
