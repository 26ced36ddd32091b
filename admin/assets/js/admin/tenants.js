// /admin/tenants: creating a tenant; the new one is listed at once.
import { api } from "../api.js";
import { onSubmit, toast } from "../app.js";
import { text } from "./form-data.js";

function row(tenant) {
  const tr = document.createElement("tr");
  tr.dataset.tenantId = String(tenant.id);
  const name = tr.insertCell();
  name.className = "cell-title";
  const main = document.createElement("span");
  main.className = "cell-main";
  main.dataset.field = "name";
  main.textContent = tenant.name;
  name.append(main);
  const id = tr.insertCell();
  id.dataset.label = "Id";
  id.className = "mono";
  id.textContent = String(tenant.id);
  const created = tr.insertCell();
  created.dataset.label = "Created";
  created.textContent = new Date(tenant.created_at).toISOString().slice(0, 10);
  return tr;
}

onSubmit(document.getElementById("tenant-form"), async (form) => {
  const tenant = await api("POST", "/api/v1/tenants", { name: text(form, "name") });
  document.querySelector("#tenants-table tbody").append(row(tenant));
  form.reset();
  toast(`Tenant “${tenant.name}” created.`, "ok");
});
