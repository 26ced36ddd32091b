// Unit tests of the pure modules behind the dashboard and the admin forms, run with
// `node --test` (tests/tests/pages_browser.rs runs them as part of the Rust suite).

import { test } from "node:test";
import assert from "node:assert/strict";

import { ApiError, api, messageForStatus, oneAtATime } from "../js/api.js";
import {
  formatBytes,
  formatPercent,
  hostLoad,
  initial,
  instanceMeta,
  matches,
  openUrl,
  pollDelay,
  resolution,
  safeHref,
  safeIcon,
  stateView,
} from "../js/dashboard-logic.js";
import { instanceLimit, newUser } from "../js/admin/form-data.js";
import { pullProgress, sseParser, streamPost } from "../js/admin/pull.js";

test("each instance state has its badge and exactly the actions that make sense", () => {
  const actions = (s) => Object.entries(stateView(s).actions).filter(([, on]) => on).map(([a]) => a);
  assert.deepEqual(actions("running"), ["open", "stop", "delete"]);
  assert.deepEqual(actions("stopped"), ["start", "delete"]);
  assert.deepEqual(actions("error"), ["start", "delete"]);
  for (const s of ["requested", "creating", "starting"]) {
    assert.deepEqual(actions(s), ["delete"], s);
    assert.equal(stateView(s).busy, true, s);
  }
  assert.deepEqual(actions("stopping"), []);
  assert.deepEqual(actions("destroying"), []);
  assert.equal(stateView("running").label, "Running");
  assert.equal(stateView("running").tone, "ok");
  assert.equal(stateView("error").tone, "bad");
  assert.equal(stateView("stopped").tone, "neutral");
  // A state this build does not know still renders, and can be deleted.
  assert.deepEqual(actions("hibernating"), ["delete"]);
  assert.equal(stateView("hibernating").label, "hibernating");
});

test("the resolution follows the window and its pixel ratio, within bounds, even", () => {
  assert.equal(resolution({ innerWidth: 1280, innerHeight: 800, devicePixelRatio: 1 }), "1280x800");
  assert.equal(resolution({ innerWidth: 1440, innerHeight: 900, devicePixelRatio: 2 }), "2880x1800");
  // 4K bound: both sides shrink together (aspect kept).
  assert.equal(resolution({ innerWidth: 2560, innerHeight: 1440, devicePixelRatio: 2 }), "3840x2160");
  assert.equal(resolution({ innerWidth: 3000, innerHeight: 1000, devicePixelRatio: 2 }), "3840x1280");
  // A phone: never below 640x480.
  assert.equal(resolution({ innerWidth: 390, innerHeight: 844, devicePixelRatio: 1 }), "640x844");
  assert.equal(resolution({ innerWidth: 301, innerHeight: 201, devicePixelRatio: 3 }), "902x602");
  assert.equal(resolution({ innerWidth: 1001, innerHeight: 701, devicePixelRatio: 1 }), "1000x700");
  // Nonsense ratios count as 1; absurd ones are capped at 3.
  assert.equal(resolution({ innerWidth: 1000, innerHeight: 700, devicePixelRatio: NaN }), "1000x700");
  assert.equal(resolution({ innerWidth: 1000, innerHeight: 700, devicePixelRatio: 0 }), "1000x700");
  assert.equal(resolution({ innerWidth: 800, innerHeight: 600, devicePixelRatio: 10 }), "2400x1800");
});

test("icons and links that could run script or break the policy are refused", () => {
  assert.equal(safeIcon("/icons/a.png"), "/icons/a.png");
  assert.equal(safeIcon("data:image/png;base64,AA"), "data:image/png;base64,AA");
  assert.equal(safeIcon("https://elsewhere.example/a.png"), null);
  assert.equal(safeIcon("//elsewhere.example/a.png"), null);
  assert.equal(safeIcon("/\\elsewhere.example/a.png"), null);
  assert.equal(safeIcon("javascript:alert(1)"), null);
  assert.equal(safeIcon(undefined), null);
  assert.equal(safeHref("https://x.apps.example.com/"), "https://x.apps.example.com/");
  assert.equal(safeHref("/droplet/4"), "/droplet/4");
  assert.equal(safeHref("javascript:alert(1)"), null);
  assert.equal(safeHref(" JavaScript:alert(1)"), null);
  assert.equal(safeHref("data:text/html,x"), null);
  assert.equal(openUrl({ id: 3, droplet_type: "vnc" }), "/droplet/3");
  assert.equal(openUrl({ id: 3, droplet_type: "http" }), null);
  assert.equal(openUrl({ id: 3, droplet_type: "http", open_url: "javascript:x" }), null);
});

test("names, metadata, search and numbers read well", () => {
  assert.equal(initial("<img src=x>"), "I");
  assert.equal(initial("  émile"), "É");
  assert.equal(initial("!!!"), "?");
  assert.equal(instanceMeta({ droplet_type: "http", slug: "ab12", status: "running" }), "Web app · ab12");
  assert.equal(
    instanceMeta({ droplet_type: "vnc", slug: "ab12", status: "error", error_reason: "image missing" }),
    "Desktop (VNC) · ab12 · image missing",
  );
  const d = { name: "Firefox", description: "A web browser", droplet_type: "vnc" };
  assert.equal(matches(d, ""), true);
  assert.equal(matches(d, "fire"), true);
  assert.equal(matches(d, "BROWSER desktop"), true);
  assert.equal(matches(d, "chrome"), false);
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(512 * 1024 * 1024), "512 MiB");
  assert.equal(formatBytes(undefined), "–");
  assert.equal(formatPercent(3.14159), "3.1 %");
  assert.equal(formatPercent(42.6), "43 %");
  assert.equal(formatPercent(null), "–");
  assert.deepEqual([0, 1, 2, 3, 4, 9].map(pollDelay), [3000, 6000, 12000, 24000, 30000, 30000]);
  assert.equal(hostLoad(null), "–");
  assert.equal(hostLoad({ cpu_percent: 55.2, load1: 3 }), "55 %");
  assert.equal(hostLoad({ load1: 1.5 }), "load 1.50");
  assert.equal(hostLoad({ load_average: [0.25, 0.5, 1] }), "load 0.25");
  assert.equal(hostLoad({ memory_bytes: 5 }), "–");
});

test("API calls carry the CSRF header when they change state, and errors keep code and field", async () => {
  const doc = { body: { dataset: { csrfHeader: "x-csrf-token", csrfToken: "t0k" } } };
  const calls = [];
  const reply = (status, body) => async (url, init) => {
    calls.push({ url, init });
    return new Response(body === undefined ? null : JSON.stringify(body), { status });
  };
  assert.deepEqual(await api("GET", "/api/v1/x", undefined, { doc, fetchImpl: reply(200, { a: 1 }) }), { a: 1 });
  assert.equal(calls[0].init.headers["x-csrf-token"], undefined, "no token on GET");
  assert.equal(await api("DELETE", "/api/v1/x", undefined, { doc, fetchImpl: reply(204) }), null);
  assert.equal(calls[1].init.headers["x-csrf-token"], "t0k");
  await api("POST", "/api/v1/x", { n: 1 }, { doc, fetchImpl: reply(201, {}) });
  assert.equal(calls[2].init.headers["Content-Type"], "application/json");
  assert.equal(calls[2].init.body, '{"n":1}');
  assert.equal(calls[2].init.credentials, "same-origin");

  const invalid = { error: { code: "invalid_input", message: "too short", field: "username" } };
  await assert.rejects(api("POST", "/api/v1/users", {}, { doc, fetchImpl: reply(422, invalid) }), (e) => {
    assert.ok(e instanceof ApiError);
    assert.equal(e.status, 422);
    assert.equal(e.code, "invalid_input");
    assert.equal(e.field, "username");
    assert.equal(e.message, "too short");
    return true;
  });
  await assert.rejects(
    api("GET", "/api/v1/stats", undefined, { doc, fetchImpl: async () => new Response("nope", { status: 404 }) }),
    (e) => e.code === "http_404" && e.message === messageForStatus(404),
  );
  await assert.rejects(
    api("GET", "/api/v1/stats", undefined, { doc, fetchImpl: async () => { throw new TypeError("offline"); } }),
    (e) => e.status === 0 && e.code === "network",
  );
});

test("admin form values become the API's bodies", () => {
  assert.deepEqual(instanceLimit(""), { value: null });
  assert.deepEqual(instanceLimit(" 12 "), { value: 12 });
  assert.ok(instanceLimit("-1").error);
  assert.ok(instanceLimit("2.5").error);
  assert.deepEqual(newUser({ username: "ann", display_name: "", email: "", password: "", group_ids: [] }), {
    username: "ann",
  });
  assert.deepEqual(
    newUser({ username: "ann", display_name: "Ann", email: "a@x", password: "pw", tenant_id: "3", group_ids: [1, 2] }),
    { username: "ann", display_name: "Ann", email: "a@x", password: "pw", tenant_id: 3, group_ids: [1, 2] },
  );
});

test("a streamed pull is read frame by frame, whatever the chunks, and its progress adds up", async () => {
  const feed = sseParser();
  assert.deepEqual(feed("event: progress\r\ndata: {\"layer\":\"a\"}\r\n\r\nevent: lo"), [
    { event: "progress", data: '{"layer":"a"}' },
  ]);
  assert.deepEqual(feed("g\ndata: one\ndata: two\n\n: keep-alive\n\n"), [{ event: "log", data: "one\ntwo" }]);

  const p = pullProgress();
  assert.equal(p.percent(), null);
  p.add({ layer: "a", status: "Downloading", current: 50, total: 100 });
  p.add({ layer: "b", status: "Downloading", current: 0, total: 300 });
  assert.equal(p.percent(), 12.5);
  p.add({ layer: "a", status: "Download complete", current: null, total: null });
  assert.equal(p.percent(), 25);
  p.add({ layer: "b", status: "Pull complete", current: null, total: null });
  assert.equal(p.percent(), 100);

  // Over a fake fetch: the CSRF header goes along, events arrive parsed, split anywhere.
  const bytes = new TextEncoder().encode('event: log\ndata: {"line":"x: Pull complete"}\n\nevent: done\ndata: {"image":"i"}\n\n');
  const chunks = [bytes.slice(0, 7), bytes.slice(7, 40), bytes.slice(40)];
  let sent = null;
  const fetchImpl = async (url, init) => {
    sent = init;
    return {
      ok: true,
      body: { getReader: () => ({ read: async () => (chunks.length ? { done: false, value: chunks.shift() } : { done: true }) }) },
    };
  };
  const doc = { body: { dataset: { csrfToken: "t0k", csrfHeader: "x-csrf-token" } } };
  const seen = [];
  const last = await streamPost("/api/v1/droplets/1/pull", (e, d) => seen.push([e, d]), { fetchImpl, doc });
  assert.equal(sent.method, "POST");
  assert.equal(sent.headers["x-csrf-token"], "t0k");
  assert.deepEqual(seen, [["log", { line: "x: Pull complete" }], ["done", { image: "i" }]]);
  assert.deepEqual(last, { event: "done", data: { image: "i" } });

  // Refused before the stream: the API's words.
  const refused = async () => ({ ok: false, status: 422, json: async () => ({ error: { code: "invalid_input", message: "invalid image: is required" } }) });
  await assert.rejects(streamPost("/x", () => {}, { fetchImpl: refused, doc }), /invalid image: is required/);
});

test("a list load runs one at a time, and calls during a run fold into one run after it", async () => {
  let runs = 0;
  let inFlight = 0;
  let most = 0;
  let release = [];
  const load = oneAtATime(async () => {
    runs += 1;
    inFlight += 1;
    most = Math.max(most, inFlight);
    await new Promise((resolve) => release.push(resolve));
    inFlight -= 1;
  });
  const first = load();
  const second = load();
  const third = load();
  assert.equal(runs, 1);
  release.shift()();
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(runs, 2, "the calls made during the first run became one more run");
  release.shift()();
  await Promise.all([first, second, third]);
  assert.equal(runs, 2);
  assert.equal(most, 1, "never two at once");

  // A run that answers `true` (say, its page emptied) asks for one more by itself.
  let left = 2;
  const settle = oneAtATime(async () => --left > 0);
  await settle();
  assert.equal(left, 0);
});
