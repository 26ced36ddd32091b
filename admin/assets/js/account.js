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
  toast("Key created. It is listed after a reload.", "ok");
});

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
