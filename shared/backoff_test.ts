import assert from "node:assert/strict";
import { backoffDelay } from "./backoff.ts";

Deno.test("backoff doubles from the initial delay and stops at the maximum", () => {
  const top = (attempt: number) => backoffDelay(attempt, { initialDelay: 100, maxDelay: 1000, random: () => 0.999999 });
  assert.deepEqual([0, 1, 2, 3, 4, 10, 1000].map((a) => Math.round(top(a))), [100, 200, 400, 800, 1000, 1000, 1000]);
});

Deno.test("backoff jitter keeps each delay between half and all of its ceiling", () => {
  for (const attempt of [0, 3, 50]) {
    const ceiling = Math.min(1000, 100 * 2 ** attempt);
    assert.equal(backoffDelay(attempt, { initialDelay: 100, maxDelay: 1000, random: () => 0 }), ceiling / 2);
    for (let i = 0; i < 100; i++) {
      const delay = backoffDelay(attempt, { initialDelay: 100, maxDelay: 1000 });
      assert.ok(delay >= ceiling / 2 && delay <= ceiling, `${delay} outside [${ceiling / 2}, ${ceiling}]`);
    }
  }
});
