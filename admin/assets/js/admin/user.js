// /admin/users/{id}: profile, groups, password reset, API key revocation and deletion through
// the API.
import { api } from "../api.js";
import { confirmClick, onSubmit, toast } from "../app.js";
import { checkedIds, text } from "./form-data.js";

const page = document.getElementById("user-page");
const id = page.dataset.userId;
const url = `/api/v1/users/${encodeURIComponent(id)}`;

function showUser(user) {
  document.getElementById("user-title").textContent = user.display_name;
  const status = document.getElementById("user-status");
  status.textContent = user.disabled ? "Disabled" : "Active";
  status.className = `badge ${user.disabled ? "badge--bad" : "badge--ok"}`;
}

onSubmit(document.getElementById("profile-form"), async (form) => {
  const changes = {
    username: text(form, "username"),
    display_name: text(form, "display_name"),
  };
  const email = text(form, "email");
  changes.email = email === "" ? null : email;
  const disabled = form.elements.namedItem("disabled");
  if (disabled && !disabled.disabled) changes.disabled = disabled.checked;
  const user = await api("PATCH", url, changes);
  showUser(user);
  toast("Changes saved.", "ok");
});

onSubmit(document.getElementById("groups-form"), async (form) => {
  await api("PUT", `${url}/groups`, { group_ids: checkedIds(form, "group_ids") });
  toast("Groups saved.", "ok");
  // The rights shown below come from the groups: show them as they are now.
  window.location.reload();
});

onSubmit(document.getElementById("password-form"), async (form) => {
  const chosen = form.elements.namedItem("new_password").value;
  const answer = await api("POST", `${url}/password`, chosen ? { new_password: chosen } : undefined);
  form.elements.namedItem("new_password").value = "";
  if (answer && answer.password) {
    document.getElementById("reset-password").textContent = answer.password;
    document.getElementById("reset-result").hidden = false;
  }
  toast("The password was reset; the user's sessions ended.", "ok");
});

const remove = document.getElementById("delete-user");
if (remove) {
  remove.addEventListener("click", async () => {
    if (!confirmClick(remove, "Click again to delete")) return;
    const slot = document.getElementById("delete-error");
    slot.textContent = "";
    try {
      await api("DELETE", url);
      window.location.assign("/admin/users");
    } catch (error) {
      slot.textContent = error.message;
    }
  });
}

document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-revoke]") : null;
  if (!button) return;
  if (!confirmClick(button, "Confirm")) return;
  try {
    await api("DELETE", `${url}/api-keys/${encodeURIComponent(button.dataset.revoke)}`);
    button.closest("tr").remove();
    toast("Key revoked: it no longer works.", "ok");
  } catch (error) {
    toast(error.message, "error");
  }
});
