// Unit tests of the pure rules behind the workshop and audit pages, run with `node --test`
// (tests/tests/admin_browser.rs runs them as part of the Rust suite).

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  fromLocalInput,
  localInput,
  seatState,
  settling,
  tally,
  workshopStatus,
} from "../js/admin/workshop-logic.js";

test("workshop statuses and seat states have words and tones", () => {
  assert.deepEqual(workshopStatus("running"), { label: "Running", tone: "ok" });
  assert.deepEqual(workshopStatus("ended"), { label: "Ended", tone: "neutral" });
  assert.equal(workshopStatus("odd").label, "odd");
  assert.deepEqual(seatState("launching"), { label: "Launching", tone: "warn", busy: true });
  assert.deepEqual(seatState("failed"), { label: "Failed", tone: "bad", busy: false });
  assert.deepEqual(seatState("mixed"), { label: "Mixed", tone: "info", busy: false });
  assert.equal(seatState(undefined).label, "Unknown");
});

test("the tally counts running, moving and failed instances", () => {
  const participants = [
    { instances: [{ state: "running" }, { state: "starting" }] },
    { instances: [{ state: "failed" }, { state: "error" }] },
    { instances: [{ state: "not_started" }] },
  ];
  assert.deepEqual(tally(participants), { participants: 3, running: 1, moving: 1, failed: 2 });
  assert.equal(settling(participants), true);
  assert.equal(settling([{ instances: [{ state: "stopped" }] }]), false);
  assert.deepEqual(tally(undefined), { participants: 0, running: 0, moving: 0, failed: 0 });
});

test("datetime-local values round-trip through unix milliseconds", () => {
  const millis = new Date(2026, 2, 1, 9, 30).getTime();
  assert.equal(localInput(millis), "2026-03-01T09:30");
  assert.equal(fromLocalInput("2026-03-01T09:30"), millis);
  assert.equal(fromLocalInput(""), null);
  assert.equal(fromLocalInput("not a time"), null);
  assert.equal(localInput(Number.NaN), "");
});
