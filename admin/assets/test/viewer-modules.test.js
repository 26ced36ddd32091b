// Unit tests of the viewer's pure modules, run with `node --test` (tests/tests/viewer.rs runs
// them as part of the Rust suite).

import { test } from "node:test";
import assert from "node:assert/strict";

import { Backoff } from "../js/backoff.js";
import { codeForTokenStatus, describe, needsLogin, retryable } from "../js/status.js";
import { TokenError, fetchToken } from "../js/token.js";

test("each status the gateway sends has its own plain words", () => {
  assert.equal(describe(0x0207), "The remote desktop refused the connection.");
  assert.equal(describe(0x0301), "Your session expired; sign in again.");
  assert.equal(describe(0x020b), "Session closed.");
  const codes = [0x0200, 0x0201, 0x0202, 0x0203, 0x0204, 0x0207, 0x0208, 0x0209, 0x020a,
    0x020b, 0x0300, 0x0301, 0x0303, 0x0308, 0x030d, 0x030f, 0x031d];
  const words = new Set(codes.map(describe));
  assert.equal(words.size, codes.length, "no two statuses share a message");
  assert.match(describe(0x0399), /refused \(code 921\)/);
  assert.match(describe(12345), /unexpectedly \(code 12345\)/);
});

test("auth and closing statuses are final; network trouble is retried", () => {
  for (const code of [0x0301, 0x0303, 0x020b, 0x0209, 0x0204, 0x0000]) {
    assert.equal(retryable(code), false, `code ${code}`);
  }
  for (const code of [0x0200, 0x0201, 0x0202, 0x0203, 0x0207, 0x0208, 0x020a, 0x0308]) {
    assert.equal(retryable(code), true, `code ${code}`);
  }
  assert.equal(needsLogin(0x0301), true);
  assert.equal(needsLogin(0x0207), false);
});

test("token refusals map to the statuses the overlay explains", () => {
  assert.equal(codeForTokenStatus(401), 0x0301);
  assert.equal(codeForTokenStatus(403), 0x0303);
  assert.equal(codeForTokenStatus(404), 0x0204);
  assert.equal(codeForTokenStatus(429), 0x031d);
  assert.equal(codeForTokenStatus(503), 0x0201);
  assert.equal(codeForTokenStatus(500), 0x0200);
});

test("backoff grows exponentially with jitter, is capped, gives up, and resets", () => {
  const half = new Backoff({ base: 1000, max: 8000, attempts: 5, random: () => 0 });
  assert.deepEqual([1, 2, 3, 4, 5].map(() => half.next()), [500, 1000, 2000, 4000, 4000]);
  assert.equal(half.next(), null, "gives up after the attempts");
  half.reset();
  assert.equal(half.next(), 500);
  const full = new Backoff({ base: 1000, max: 8000, attempts: 3, random: () => 1 });
  assert.deepEqual([full.next(), full.next(), full.next()], [1000, 2000, 4000]);
});

test("a token is fetched with a POST, the session cookie and the CSRF header", async () => {
  const calls = [];
  globalThis.fetch = async (url, init) => {
    calls.push({ url, init });
    return new Response(JSON.stringify({ token: "t0k", expires_in: 60 }), { status: 200 });
  };
  const token = await fetchToken({ instanceId: "42", csrfHeader: "x-csrf-token", csrfToken: "c5rf" });
  assert.equal(token, "t0k");
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, "/api/v1/instances/42/tunnel-token");
  assert.equal(calls[0].init.method, "POST");
  assert.equal(calls[0].init.credentials, "same-origin");
  assert.equal(calls[0].init.headers["x-csrf-token"], "c5rf");
});

test("a refused token carries the matching status", async () => {
  globalThis.fetch = async () =>
    new Response(JSON.stringify({ error: { code: "unauthenticated" } }), { status: 401 });
  await assert.rejects(
    fetchToken({ instanceId: "1", csrfHeader: "x-csrf-token", csrfToken: "c" }),
    (e) => e instanceof TokenError && e.code === 0x0301 && /unauthenticated/.test(e.message),
  );
  globalThis.fetch = async () => {
    throw new TypeError("Failed to fetch");
  };
  await assert.rejects(
    fetchToken({ instanceId: "1", csrfHeader: "x-csrf-token", csrfToken: "c" }),
    (e) => e instanceof TokenError && retryable(e.code),
  );
  globalThis.fetch = async () => new Response("{}", { status: 200 });
  await assert.rejects(
    fetchToken({ instanceId: "1", csrfHeader: "x-csrf-token", csrfToken: "c" }),
    (e) => e instanceof TokenError && e.code === 0x0200,
  );
});
