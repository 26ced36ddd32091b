// /admin/users: the new-user modal posts to the API, then shows the generated password once.
import { api } from "../api.js";
import { onSubmit } from "../app.js";
import { checkedIds, newUser, text } from "./form-data.js";

const form = document.getElementById("user-form");

onSubmit(form, async () => {
  const tenant = text(form, "tenant_id");
  const ownGroups = document.getElementById("nu-groups");
  const defaultTenant = form.querySelector("#nu-tenant option[selected]");
  const body = newUser({
    username: text(form, "username"),
    display_name: text(form, "display_name"),
    email: text(form, "email"),
    password: form.elements.namedItem("password").value,
    tenant_id: tenant,
    // The listed groups belong to the creator's own tenant.
    group_ids:
      ownGroups && (!defaultTenant || tenant === defaultTenant.value) ? checkedIds(form, "group_ids") : [],
  });
  const created = await api("POST", "/api/v1/users", body);
  form.hidden = true;
  const done = document.getElementById("user-created");
  done.hidden = false;
  document.getElementById("created-name").textContent = created.username;
  document.getElementById("created-link").href = `/admin/users/${encodeURIComponent(created.id)}`;
  if (created.generated_password) {
    document.getElementById("created-password").textContent = created.generated_password;
    document.getElementById("created-password-box").hidden = false;
  }
});

const dialog = document.getElementById("user-modal");
if (dialog) {
  // Closing after a creation shows the new row.
  dialog.addEventListener("close", () => {
    if (form.hidden) window.location.reload();
  });
}
