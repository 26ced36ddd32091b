// Reading the admin forms into the JSON bodies the API expects. Pure: tested under node.

/** Trimmed text of a field, or undefined when the form has no such field. */
export function text(form, name) {
  const input = form.elements.namedItem(name);
  return input ? String(input.value).trim() : undefined;
}

/** The numeric values of the checked checkboxes named `name`. */
export function checkedIds(form, name) {
  return [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((i) => Number(i.value));
}

/** `{flag: bool}` for every enabled `perm` checkbox (disabled ones are not the viewer's to set). */
export function permissions(form) {
  const flags = {};
  for (const input of form.querySelectorAll('input[name="perm"]')) {
    if (!input.disabled) flags[input.value] = input.checked;
  }
  return flags;
}

/**
 * An instance limit field: empty means no limit (null); otherwise a whole number ≥ 0.
 * Returns `{value}` or `{error}`.
 */
export function instanceLimit(raw) {
  const s = String(raw ?? "").trim();
  if (s === "") return { value: null };
  if (!/^\d+$/.test(s)) return { error: "Enter a whole number, or leave it empty for no limit." };
  return { value: Number(s) };
}

/** The body of POST /api/v1/users from the new-user form's values. */
export function newUser({ username, display_name, email, password, tenant_id, group_ids }) {
  const body = { username: username || "" };
  if (display_name) body.display_name = display_name;
  if (email) body.email = email;
  if (password) body.password = password;
  if (tenant_id) body.tenant_id = Number(tenant_id);
  if (group_ids && group_ids.length) body.group_ids = group_ids;
  return body;
}
