// Unit tests of the droplet form's body builder and import words (js/admin/droplet-form.js),
// run with `node --test` (tests/tests/droplets_browser.rs runs them as part of the Rust suite).

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  dropletBody,
  entryView,
  formValues,
  formatDuration,
  importSummary,
  items,
  lines,
  numberish,
} from "../js/admin/droplet-form.js";

test("values go to the API as typed: plain numbers as numbers, anything else untouched", () => {
  assert.equal(numberish(""), null);
  assert.equal(numberish(" 0.5 "), 0.5);
  assert.equal(numberish("128"), 128);
  assert.equal(numberish("30m"), "30m");
  assert.equal(numberish("-1"), "-1");
  assert.deepEqual(items("8080, 9000 9001"), ["8080", "9000", "9001"]);
  assert.deepEqual(lines("A=1\n\n B=2 \r\n"), ["A=1", "B=2"]);
});

test("durations come back in the shortest form the API reads", () => {
  assert.equal(formatDuration(null), "");
  assert.equal(formatDuration(0), "0");
  assert.equal(formatDuration(90), "90s");
  assert.equal(formatDuration(1800), "30m");
  assert.equal(formatDuration(7200), "2h");
  assert.equal(formatDuration(604800), "7d");
});

test("a container droplet sends its container fields and no host fields", () => {
  const body = dropletBody({
    name: " Notes ", droplet_type: "http", target: "external", image: "a/b:1", ports: "8080, 9000",
    cpu_cores: "0.5", memory_mb: "", env: "A=1\nB=2", labels: "", cap_add: "NET_ADMIN",
    idle_timeout_secs: "30m", active: true, external_host: "ignored", external_password: "x",
  });
  assert.equal(body.name, "Notes");
  assert.equal(body.target, "container", "a web app is always a container");
  assert.deepEqual(body.ports, [8080, 9000]);
  assert.equal(body.cpu_cores, 0.5);
  assert.equal(body.memory_mb, null);
  assert.deepEqual(body.env, ["A=1", "B=2"]);
  assert.deepEqual(body.cap_add, ["NET_ADMIN"]);
  assert.equal(body.idle_timeout_secs, "30m");
  assert.equal(body.pool_size, 0);
  for (const k of Object.keys(body)) assert.ok(!k.startsWith("external"), k);
  assert.ok(!("registry_username" in body) && !("registry_password" in body));
});

test("an external host sends host fields, no container fields, and secrets only when typed", () => {
  const base = { name: "Desk", droplet_type: "vnc", target: "external", external_host: "h.example", external_port: "5901",
    image: "ignored", ports: "1", external_domain: "CORP", active: true };
  const created = dropletBody({ ...base, external_password: "s3cret" });
  assert.equal(created.target, "external");
  assert.equal(created.external_port, 5901);
  assert.equal(created.external_password, "s3cret");
  assert.equal(created.external_domain, null, "only rdp hosts have a domain");
  for (const k of ["image", "ports", "cpu_cores", "env", "pool_size", "registry_username"]) assert.ok(!(k in created), k);
  // Editing with the secret left empty keeps it: no secret key is sent at all.
  const kept = dropletBody({ ...base, external_password: "" }, { editing: true });
  assert.ok(!("target" in kept));
  for (const k of ["external_password", "external_private_key", "external_passphrase"]) assert.ok(!(k in kept), k);
  // Forgetting sends all three as null.
  const forgot = dropletBody({ ...base, external_forget: true }, { editing: true });
  assert.equal(forgot.external_password, null);
  assert.ok("external_private_key" in forgot && "external_passphrase" in forgot);
  // SSH keys only for ssh.
  const ssh = dropletBody({ ...base, droplet_type: "ssh", external_private_key: "KEY", external_passphrase: "pp" });
  assert.equal(ssh.external_private_key, "KEY");
  assert.ok(!("external_password" in ssh));
});

test("registry accounts are sent as a pair when typed, left alone when empty, nulled to forget", () => {
  const base = { name: "N", droplet_type: "http", image: "a:1", ports: "80" };
  assert.ok(!("registry_username" in dropletBody(base)));
  const typed = dropletBody({ ...base, registry_password: "pw" });
  assert.equal(typed.registry_username, null, "the API names the missing half");
  assert.equal(typed.registry_password, "pw");
  const forgot = dropletBody({ ...base, registry_forget: true });
  assert.equal(forgot.registry_username, null);
  assert.ok(!("registry_password" in forgot));
});

test("a droplet fills the form without any secret", () => {
  const v = formValues({ name: "D", droplet_type: "rdp", target: "external", external_host: "h", external_port: 3389,
    has_external_credentials: true, env: {}, external_params: { security: "nla" }, idle_timeout_secs: 3600 });
  assert.equal(v.external_params, "security=nla");
  assert.equal(v.idle_timeout_secs, "1h");
  for (const k of Object.keys(v)) assert.ok(!/password|private_key|passphrase/.test(k), k);
});

test("import results in words", () => {
  assert.equal(entryView({ status: "imported" }).label, "Imported");
  assert.equal(entryView({ status: "skipped", reason: "exists" }).details[0], "exists");
  const bad = entryView({ status: "invalid", errors: [{ field: "memory", reason: "too small" }] });
  assert.deepEqual([bad.label, bad.tone, bad.details], ["Rejected", "bad", ["memory: too small"]]);
  assert.equal(
    importSummary({ dry_run: false, imported: 1, skipped: 0, invalid: 1, entries: [{}, {}] }),
    "2 entries checked: 1 imported, 0 already there, 1 rejected.",
  );
});

test("the tenant is sent once, at creation", () => {
  const v = { name: "N", droplet_type: "http", image: "a:1", ports: "80" };
  assert.equal(dropletBody(v, { tenantId: 3 }).tenant_id, 3);
  assert.ok(!("tenant_id" in dropletBody(v, { tenantId: 3, editing: true })));
  assert.ok(!("tenant_id" in dropletBody(v)));
});
