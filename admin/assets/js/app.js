// What every page of the design system shares: toasts, modals (<dialog>), copy buttons, the
// account menu, and inline form errors. Imported by each page's own module; it wires the
// generic [data-…] behaviours on import.

export function toast(message, kind = "info", ms = 5000) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const item = document.createElement("div");
  item.className = `toast toast--${kind}`;
  item.setAttribute("role", kind === "error" ? "alert" : "status");
  item.textContent = message;
  box.append(item);
  setTimeout(() => item.remove(), ms);
}

export function openModal(id) {
  const dialog = document.getElementById(id);
  if (dialog && !dialog.open) dialog.showModal();
  return dialog;
}

export function closeModal(dialog) {
  if (dialog && dialog.open) dialog.close();
}

/** Marks a button busy (spinner, disabled) while `work` runs. */
export async function busy(button, work) {
  if (button) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
  }
  try {
    return await work();
  } finally {
    if (button) {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }
}

export function clearErrors(form) {
  for (const el of form.querySelectorAll("[data-error-for]")) el.textContent = "";
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const general = form.querySelector("[data-form-error]");
  if (general) general.textContent = "";
}

/** Shows an API error next to its field when the form has one, else at the top of the form. */
export function showError(form, error) {
  const field = error && error.field;
  const slot = field ? form.querySelector(`[data-error-for="${CSS.escape(field)}"]`) : null;
  if (slot) {
    slot.textContent = error.message;
    const input = form.querySelector(`[name="${CSS.escape(field)}"]`);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
    return;
  }
  const general = form.querySelector("[data-form-error]");
  if (general) general.textContent = error.message;
  else toast(error.message, "error");
}

/** Wires a form to `submit(form)`: errors shown inline, the submit button busy meanwhile. */
export function onSubmit(form, submit) {
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const button = event.submitter || form.querySelector("[type=submit]");
    try {
      await busy(button, () => submit(form));
    } catch (error) {
      showError(form, error);
    }
  });
}

/** A delete-style button that asks for a second click within a few seconds. */
export function confirmClick(button, label = "Click again to confirm") {
  if (button.dataset.armed === "1") {
    delete button.dataset.armed;
    button.textContent = button.dataset.label || button.textContent;
    return true;
  }
  button.dataset.label = button.textContent;
  button.dataset.armed = "1";
  button.textContent = label;
  setTimeout(() => {
    if (button.dataset.armed === "1") {
      delete button.dataset.armed;
      button.textContent = button.dataset.label;
    }
  }, 4000);
  return false;
}

function wire() {
  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    const opener = target.closest("[data-open]");
    if (opener) openModal(opener.dataset.open);
    const closer = target.closest("[data-close]");
    if (closer) closeModal(closer.closest("dialog"));
    const copier = target.closest("[data-copy]");
    if (copier) {
      const source = document.getElementById(copier.dataset.copy);
      if (source && navigator.clipboard) {
        navigator.clipboard.writeText(source.textContent).then(
          () => toast("Copied.", "ok", 2000),
          () => toast("Copying failed; select the text and copy it by hand.", "error"),
        );
      }
    }
    if (target.closest("[data-reload]")) window.location.reload();
    const menu = document.getElementById("account-menu");
    if (menu && menu.open && !menu.contains(target)) menu.open = false;
  });
  document.addEventListener("keydown", (event) => {
    const menu = document.getElementById("account-menu");
    if (event.key === "Escape" && menu && menu.open) menu.open = false;
  });
}

wire();

// On a narrow window the admin tabs scroll sideways: bring the current one into sight.
document.querySelector(".tabs [aria-current=page]")?.scrollIntoView({ block: "nearest", inline: "nearest" });
