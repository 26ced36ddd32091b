// /account: change the password; create (shown once) and revoke API keys.
import { ApiError, api } from "./api.js";
import { confirmClick, onSubmit, toast } from "./app.js";

onSubmit(document.getElementById("password-form"), async (form) => {
  const current = form.elements.namedItem("current_password").value;
  const next = form.elements.namedItem("new_password").value;
  const again = form.elements.namedItem("new_password_confirm").value;
  if (next !== again) {
    throw new ApiError(422, "invalid_input", "The two new passwords differ.", "new_password_confirm");
  }
  await api("POST", "/api/v1/account/password", { current_password: current, new_password: next });
  form.reset();
  document.getElementById("password-done").hidden = false;
});

onSubmit(document.getElementById("key-form"), async (form) => {
  const name = form.elements.namedItem("name").value.trim();
  const created = await api("POST", "/api/v1/account/api-keys", { name });
  form.reset();
  document.getElementById("key-token").textContent = created.token;
  document.getElementById("key-created").hidden = false;
  addKeyRow(created.key);
  toast("Key created.", "ok");
});

/** Lists a new key (the API's key object) at the top of the table. */
function addKeyRow(key) {
  if (!key || key.id === undefined) return;
  let table = document.getElementById("keys-table");
  if (!table) {
    // The first key: the empty note makes way for a table.
    const wrap = document.createElement("div");
    wrap.className = "table-wrap";
    table = document.createElement("table");
    table.className = "table table--cards";
    table.id = "keys-table";
    const head = table.createTHead().insertRow();
    for (const label of ["Key", "Last used", "Expires", ""]) {
      const th = document.createElement("th");
      th.textContent = label;
      head.append(th);
    }
    table.createTBody();
    wrap.append(table);
    document.getElementById("keys-empty")?.replaceWith(wrap);
  }
  const row = table.tBodies[0].insertRow(0);
  row.dataset.keyId = String(key.id);
  const title = row.insertCell();
  title.className = "cell-title";
  const name = document.createElement("div");
  name.className = "cell-main";
  name.textContent = key.name;
  const sub = document.createElement("div");
  sub.className = "cell-sub mono";
  sub.textContent = `${key.prefix || ""}… · created just now`;
  title.append(name, sub);
  for (const [label, text] of [["Last used", "never"], ["Expires", key.expires_at ? new Date(key.expires_at).toISOString().slice(0, 10) : "never"]]) {
    const cell = row.insertCell();
    cell.dataset.label = label;
    cell.textContent = text;
  }
  const actions = row.insertCell();
  actions.className = "actions";
  const revoke = document.createElement("button");
  revoke.type = "button";
  revoke.className = "button button--danger button--small";
  revoke.dataset.revoke = String(key.id);
  revoke.textContent = "Revoke";
  actions.append(revoke);
}

document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-revoke]") : null;
  if (!button) return;
  if (!confirmClick(button, "Confirm")) return;
  try {
    await api("DELETE", `/api/v1/account/api-keys/${encodeURIComponent(button.dataset.revoke)}`);
    button.closest("tr").remove();
    toast("Key revoked.", "ok");
  } catch (error) {
    toast(error.message, "error");
  }
});
