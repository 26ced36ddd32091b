// The workshop form (templates/admin/workshop_form.html), shared by the list page (create) and
// a workshop's page (edit): the choices (droplets, groups, users of the workshop's tenant, read
// from the API the administrator may read), filling it from a workshop view, and saving it
// through the workshops API. Every name goes into the page with textContent.
import { api } from "../api.js";
import { el } from "../dom.js";
import { checkedIds, text } from "./form-data.js";
import { fromLocalInput, localInput } from "./workshop-logic.js";

function check(name, value, label, sub) {
  const box = el("label", "check");
  const input = el("input");
  input.type = "checkbox";
  input.name = name;
  input.value = String(value);
  const words = el("span", "check__text", label);
  if (sub) words.append(el("small", null, sub));
  box.append(input, document.createTextNode(" "), words);
  return box;
}

/** All items of a list endpoint the caller may read, or null when it may not. */
async function all(url) {
  try {
    const page = await api("GET", url);
    return (page && page.items) || [];
  } catch {
    return null;
  }
}

export class WorkshopForm {
  constructor(dialog) {
    this.dialog = dialog;
    this.form = dialog.querySelector("form");
    this.tenantId = Number(dialog.dataset.tenantId);
    this.loaded = null;
  }

  /** Reads the choices once: droplets, groups and users of the tenant. */
  choices() {
    if (!this.loaded) this.loaded = this.loadChoices();
    return this.loaded;
  }

  async loadChoices() {
    const ofTenant = (items) => (items || []).filter((x) => x.tenant_id === undefined || x.tenant_id === this.tenantId);
    const [droplets, groups, users] = await Promise.all([
      all("/api/v1/droplets?scope=all&limit=200"),
      all("/api/v1/groups?limit=200"),
      all("/api/v1/users?limit=200"),
    ]);
    const dropletBox = this.form.querySelector("#nw-droplets");
    const userBox = this.form.querySelector("#nw-users");
    const groupSelect = this.form.elements.namedItem("group_id");
    dropletBox.querySelector("[data-empty]")?.remove();
    userBox.querySelector("[data-empty]")?.remove();
    const shownDroplets = ofTenant(droplets);
    if (!shownDroplets.length) {
      dropletBox.append(el("p", "muted small", droplets ? "This tenant has no droplets yet." : "You may not list droplets."));
    }
    for (const d of shownDroplets) {
      dropletBox.append(check("droplet_ids", d.id, d.name, d.active ? d.droplet_type : `${d.droplet_type}, inactive`));
    }
    for (const g of ofTenant(groups)) {
      const option = el("option", null, g.name);
      option.value = String(g.id);
      groupSelect.append(option);
    }
    if (!groups) groupSelect.disabled = true;
    const shownUsers = ofTenant(users);
    if (!shownUsers.length) {
      userBox.append(el("p", "muted small", users ? "This tenant has no users." : "You may not list users; choose a group."));
    }
    for (const u of shownUsers) {
      userBox.append(check("user_ids", u.id, u.display_name || u.username, u.display_name && u.display_name !== u.username ? u.username : ""));
    }
  }

  /** Empties the form for a new workshop, or fills it from a workshop view. */
  async open(view) {
    this.form.reset();
    this.form.elements.namedItem("id").value = view ? String(view.id) : "";
    this.dialog.querySelector("#workshop-modal-title").textContent = view ? `Edit ${view.name}` : "New workshop";
    this.dialog.querySelector("#workshop-submit").textContent = view ? "Save changes" : "Create workshop";
    for (const slot of this.form.querySelectorAll("[data-error-for]")) slot.textContent = "";
    const general = this.form.querySelector("[data-form-error]");
    if (general) general.textContent = "";
    this.dialog.showModal();
    await this.choices();
    if (!view) return;
    this.form.elements.namedItem("name").value = view.name || "";
    this.form.elements.namedItem("description").value = view.description || "";
    this.form.elements.namedItem("starts_at").value = localInput(view.starts_at);
    this.form.elements.namedItem("ends_at").value = localInput(view.ends_at);
    this.form.elements.namedItem("group_id").value = view.group_id ? String(view.group_id) : "";
    const droplets = new Set((view.droplets || []).map((d) => d.id));
    for (const box of this.form.querySelectorAll('input[name="droplet_ids"]')) box.checked = droplets.has(Number(box.value));
    const users = new Set((view.participants || []).map((p) => p.user_id));
    for (const box of this.form.querySelectorAll('input[name="user_ids"]')) box.checked = users.has(Number(box.value));
  }

  /** Creates or saves the workshop; resolves to its view. */
  async save() {
    const id = text(this.form, "id");
    const group = text(this.form, "group_id");
    const groupId = group ? Number(group) : null;
    const starts = fromLocalInput(text(this.form, "starts_at"));
    const ends = fromLocalInput(text(this.form, "ends_at"));
    const base = { name: text(this.form, "name") || "", description: text(this.form, "description") || "" };
    if (starts !== null) base.starts_at = starts;
    if (ends !== null) base.ends_at = ends;
    const dropletIds = checkedIds(this.form, "droplet_ids");
    const userIds = checkedIds(this.form, "user_ids");
    if (!id) {
      const body = { ...base, droplet_ids: dropletIds, user_ids: userIds };
      if (groupId !== null) body.group_id = groupId;
      return api("POST", "/api/v1/workshops", body);
    }
    const url = `/api/v1/workshops/${encodeURIComponent(id)}`;
    await api("PATCH", url, base);
    await api("PUT", `${url}/droplets`, { droplet_ids: dropletIds });
    const participants = { user_ids: userIds };
    if (groupId !== null) participants.group_id = groupId;
    return api("PUT", `${url}/participants`, participants);
  }
}
