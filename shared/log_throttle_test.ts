import assert from "node:assert/strict";
import { ThrottledLine } from "./log_throttle.ts";
import { createLogger } from "./log.ts";

Deno.test("ThrottledLine writes at most one line per interval, and the next says how many it left out", () => {
  const lines: string[] = [];
  const clock = { now: 0 };
  const logger = createLogger("test", { level: "info", sink: (line) => lines.push(line) });
  const failed = new ThrottledLine(logger, "warn", "TLS handshake failed", { now: () => clock.now });
  for (let i = 0; i < 500; i++) failed.log({ remote: `10.0.0.7:${i}` });
  assert.equal(lines.length, 1, "500 in one instant: one line");
  assert.match(lines[0]!, /level=warn .*msg="TLS handshake failed" remote=10\.0\.0\.7:0$/);
  clock.now = 999;
  failed.log({ remote: "10.0.0.7:500" });
  assert.equal(lines.length, 1);
  clock.now = 1000;
  failed.log({ remote: "10.0.0.7:501" });
  assert.equal(lines.length, 2);
  assert.match(lines[1]!, /remote=10\.0\.0\.7:501 unlogged=500$/);
  clock.now = 5000;
  failed.log({ remote: "10.0.0.7:502" });
  assert.doesNotMatch(lines[2]!, /unlogged/, "none left out since");
});
