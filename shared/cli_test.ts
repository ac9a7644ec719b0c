import assert from "node:assert/strict";
import { durationFlag } from "./cli.ts";
import { MAX_TIMER_MS } from "./duration.ts";

Deno.test("durationFlag reads a duration no longer than a timer waits, in milliseconds or seconds", () => {
  assert.equal(durationFlag({}, "ping-interval", 25_000), 25_000);
  assert.equal(durationFlag({ "ping-interval": "0" }, "ping-interval", 25_000), 0);
  assert.equal(durationFlag({ "ping-interval": String(MAX_TIMER_MS) }, "ping-interval", 25_000), MAX_TIMER_MS);
  assert.throws(
    () => durationFlag({ "ping-interval": String(MAX_TIMER_MS + 1) }, "ping-interval", 25_000),
    new TypeError(
      "Invalid --ping-interval: expected 0 to 2147483647 ms (the longest a timer waits), got 2147483648",
    ),
  );
  assert.equal(durationFlag({ "idle-timeout": "2147483" }, "idle-timeout", 30, { unit: "s" }), 2_147_483);
  assert.throws(
    () => durationFlag({ "idle-timeout": "2147484" }, "idle-timeout", 30, { unit: "s" }),
    /^TypeError: Invalid --idle-timeout: expected 0 to 2147483 s \(the longest a timer waits\), got 2147484$/,
  );
  assert.throws(() => durationFlag({ "publish-timeout": "0" }, "publish-timeout", 5000, { min: 1 }), /expected 1 to/);
  assert.throws(() => durationFlag({ "publish-timeout": "5s" }, "publish-timeout", 5000), /non-negative integer/);
});
