import assert from "node:assert/strict";
import { startOriginal } from "./_services.ts";

Deno.test("startOriginal leaves out an original that does not route in time, instead of failing the run", async () => {
  // With no time to route, an original that starts (php and its sources
  // here) is stopped and reported like a missing one (as on a machine
  // without them): either way the benchmark goes on without it.
  const started = await startOriginal({ timeout: 0 });
  if ("services" in started) {
    await started.services[Symbol.asyncDispose]();
    assert.fail("the original was taken as routed with no time to route");
  }
  assert.match(started.reason, /^The original did not route a broadcast to its \d+ pusher processes|is missing/);
});
