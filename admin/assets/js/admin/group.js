// /admin/groups/{id}: settings and rights, clipboard policy, deletion.
import { ApiError, api } from "../api.js";
import { confirmClick, onSubmit, toast } from "../app.js";
import { instanceLimit, permissions, text } from "./form-data.js";

const page = document.getElementById("group-page");
const url = `/api/v1/groups/${encodeURIComponent(page.dataset.groupId)}`;

onSubmit(document.getElementById("group-edit-form"), async (form) => {
  const limit = instanceLimit(text(form, "instance_limit"));
  if (limit.error) throw new ApiError(422, "invalid_input", limit.error, "instance_limit");
  const changes = {
    description: text(form, "description") || "",
    permissions: permissions(form),
    instance_limit: limit.value,
  };
  const name = form.elements.namedItem("name");
  if (name && !name.disabled) changes.name = name.value.trim();
  const group = await api("PATCH", url, changes);
  document.getElementById("group-title").textContent = group.name;
  toast("Changes saved.", "ok");
});

onSubmit(document.getElementById("clipboard-form"), async (form) => {
  await api("PUT", `${url}/clipboard`, {
    disable_copy: form.elements.namedItem("disable_copy").checked,
    disable_paste: form.elements.namedItem("disable_paste").checked,
  });
  toast("Clipboard policy saved.", "ok");
});

const remove = document.getElementById("delete-group");
if (remove) {
  remove.addEventListener("click", async () => {
    if (!confirmClick(remove, "Click again to delete")) return;
    const slot = document.getElementById("delete-error");
    slot.textContent = "";
    try {
      await api("DELETE", url);
      window.location.assign("/admin/groups");
    } catch (error) {
      slot.textContent = error.message;
    }
  });
}
