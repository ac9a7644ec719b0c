import assert from "node:assert/strict";
import { OncePerCause, ThrottledLine } from "./log_throttle.ts";
import { createLogger } from "./log.ts";
import { until } from "../channel/testing.ts";

function setUp(intervalMs: number) {
  const lines: string[] = [];
  const logger = createLogger("test", { level: "info", sink: (line) => lines.push(line) });
  return { lines, failed: new ThrottledLine(logger, "warn", "TLS handshake failed", { intervalMs }) };
}

/** Failures a line accounts for: itself and those it says it left out. */
function told(lines: string[]): number {
  return lines.reduce((sum, line) => sum + 1 + Number(/ unlogged=(\d+)$/.exec(line)?.[1] ?? 0), 0);
}

Deno.test("ThrottledLine writes one line per interval, and the latest left out once it passes, with the count before it", async () => {
  const { lines, failed } = setUp(100);
  using _failed = failed;
  for (let i = 0; i < 500; i++) failed.log({ remote: `10.0.0.7:${i}` });
  assert.equal(lines.length, 1, "500 at once: one line now");
  assert.match(lines[0]!, /level=warn .*msg="TLS handshake failed" remote=10\.0\.0\.7:0$/);
  // No more failures: the flood's last is written by itself once the interval has passed.
  await until(() => lines.length === 2, 2000, "the line for those left out");
  assert.match(lines[1]!, /remote=10\.0\.0\.7:499 unlogged=498$/);
  assert.equal(told(lines), 500);
});

Deno.test("ThrottledLine writes a failure after a quiet interval at once, without an old count", () => {
  const lines: string[] = [];
  const clock = { now: 0 };
  const logger = createLogger("test", { level: "info", sink: (line) => lines.push(line) });
  using failed = new ThrottledLine(logger, "warn", "TLS handshake failed", { now: () => clock.now });
  failed.log({ remote: "a" });
  clock.now = 5000;
  failed.log({ remote: "b" });
  assert.equal(lines.length, 2, "written as it came");
  assert.match(lines[1]!, /remote=b$/, "no count carried over");
});

Deno.test("ThrottledLine.close writes what was left out at once (a shutdown loses no count)", () => {
  const { lines, failed } = setUp(60_000);
  failed.log({ remote: "a" });
  failed.log({ remote: "b" });
  failed.log({ remote: "c" });
  failed.close();
  assert.equal(lines.length, 2);
  assert.match(lines[1]!, /remote=c unlogged=1$/);
  assert.equal(told(lines), 3);
});

Deno.test("OncePerCause warns once per cause, at debug while it repeats, and again after a reset", () => {
  const lines: string[] = [];
  const logger = createLogger("test", { level: "debug", sink: (line) => lines.push(line) });
  const refused = new OncePerCause(logger);
  refused.log("warn", "TLS handshake refused", "bad certificate", { bus: "a" });
  refused.log("warn", "TLS handshake refused", "bad certificate", { bus: "a" });
  refused.log("error", "connect not permitted", "no grant");
  refused.log("warn", "TLS handshake refused", "bad certificate");
  refused.reset();
  refused.log("warn", "TLS handshake refused", "bad certificate");
  assert.deepEqual(lines.map((line) => / level=(\w+) /.exec(line)?.[1]), ["warn", "debug", "error", "warn", "warn"]);
  assert.match(lines[0]!, /msg="TLS handshake refused" bus=a$/);
});
