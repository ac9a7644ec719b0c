import assert from "node:assert/strict";
import { MAX_TIMER_MS, timerMs } from "./duration.ts";

Deno.test("timerMs takes what a timer can wait and refuses the rest, naming the option", () => {
  assert.equal(timerMs("pingInterval", 25_000, 1), 25_000);
  assert.equal(timerMs("closeGrace", 0), 0);
  assert.equal(timerMs("pingInterval", MAX_TIMER_MS), MAX_TIMER_MS);
  for (const ms of [MAX_TIMER_MS + 1, Infinity, Number.NaN, -1]) {
    assert.throws(() => timerMs("pingInterval", ms), RangeError, String(ms));
  }
  assert.throws(() => timerMs("pingInterval", 0, 1), {
    name: "RangeError",
    message: "Invalid pingInterval: expected 1 to 2147483647 ms, got 0",
  });
});
