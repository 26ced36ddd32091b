// /admin/groups: the new-group modal.
import { api } from "../api.js";
import { onSubmit } from "../app.js";
import { permissions, text } from "./form-data.js";

onSubmit(document.getElementById("group-form"), async (form) => {
  const body = {
    name: text(form, "name"),
    description: text(form, "description") || "",
    permissions: permissions(form),
  };
  const tenant = text(form, "tenant_id");
  if (tenant) body.tenant_id = Number(tenant);
  const group = await api("POST", "/api/v1/groups", body);
  window.location.assign(`/admin/groups/${encodeURIComponent(group.id)}`);
});
