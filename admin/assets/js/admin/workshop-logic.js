// The workshop and audit pages' pure rules (tested under node): how a workshop's status and a seat's
// state show, and what a participants list adds up to.

const STATUS = {
  scheduled: ["Scheduled", "info"],
  running: ["Running", "ok"],
  ended: ["Ended", "neutral"],
  cancelled: ["Cancelled", "neutral"],
};

/** Badge label and tone of a workshop status. */
export function workshopStatus(status) {
  const [label, tone] = STATUS[status] || [String(status || "Unknown"), "neutral"];
  return { label, tone };
}

const SEAT = {
  not_started: ["Not started", "neutral", false],
  launching: ["Launching", "warn", true],
  failed: ["Failed", "bad", false],
  requested: ["Queued", "warn", true],
  creating: ["Creating", "warn", true],
  starting: ["Starting", "warn", true],
  running: ["Running", "ok", false],
  stopping: ["Stopping", "warn", true],
  stopped: ["Stopped", "neutral", false],
  destroying: ["Deleting", "warn", true],
  gone: ["Removed", "neutral", false],
  error: ["Error", "bad", false],
  mixed: ["Mixed", "info", false],
};

/** Badge label, tone and busy pulse of a participant's or an instance's state. */
export function seatState(state) {
  const [label, tone, busy] = SEAT[state] || [String(state || "Unknown"), "neutral", false];
  return { label, tone, busy };
}

/** Counts over every participant's instances: running, on the way, failed. */
export function tally(participants) {
  const counts = { participants: 0, running: 0, moving: 0, failed: 0 };
  for (const p of participants || []) {
    counts.participants += 1;
    for (const i of p.instances || []) {
      const s = seatState(i.state);
      if (i.state === "running") counts.running += 1;
      else if (s.busy) counts.moving += 1;
      else if (s.tone === "bad") counts.failed += 1;
    }
  }
  return counts;
}

/** Whether anything is still moving, so that the page looks again soon. */
export function settling(participants) {
  return (participants || []).some((p) => (p.instances || []).some((i) => seatState(i.state).busy));
}

/** "26 Nov 2026, 09:00 – 27 Nov 2026, 09:00" in the browser's words. */
export function span(startsAt, endsAt, locale) {
  const f = (ms) =>
    Number.isFinite(ms) ? new Date(ms).toLocaleString(locale, { dateStyle: "medium", timeStyle: "short" }) : "–";
  return `${f(startsAt)} – ${f(endsAt)}`;
}

/** Unix milliseconds as the value of a `datetime-local` input (the browser's time zone). */
export function localInput(millis) {
  if (!Number.isFinite(millis)) return "";
  const d = new Date(millis);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A `datetime-local` value as unix milliseconds, or null when empty or invalid. */
export function fromLocalInput(value) {
  if (!value) return null;
  const millis = new Date(value).getTime();
  return Number.isFinite(millis) ? millis : null;
}
