// /admin/tenants: creating a tenant.
import { api } from "../api.js";
import { onSubmit } from "../app.js";
import { text } from "./form-data.js";

onSubmit(document.getElementById("tenant-form"), async (form) => {
  await api("POST", "/api/v1/tenants", { name: text(form, "name") });
  window.location.reload();
});
