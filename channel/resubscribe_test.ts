/**
 * A hub link's subscriptions against a model: any sequence of subscribes and
 * unsubscribes, made while the hub is up, down or just back, leaves the link
 * subscribed at the hub to exactly what it asked for last, once it is back:
 * a publish to each subject reaches it (and counts it) only then.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { HubBus } from "./bus.ts";
import { freePort, quiet, startHub, type TestHub, until } from "./testing.ts";

type Op =
  | { subscribe: number }
  | { unsubscribe: number }
  | { hub: "stop" | "start" }
  | { wait: "microtask" | "turn" };

const subject = fc.nat({ max: 2 });
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ subscribe: subject }) },
  { weight: 3, arbitrary: fc.record({ unsubscribe: subject }) },
  fc.record({ hub: fc.constantFrom("stop" as const, "start" as const) }),
  { weight: 2, arbitrary: fc.record({ wait: fc.constantFrom("microtask" as const, "turn" as const) }) },
);

function turn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

Deno.test("hub link: after any subscribes and unsubscribes across hub restarts, it is subscribed to exactly what it asked for last", async () => {
  const port = freePort();
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 20 }), async (ops) => {
      const name = (n: number) => `r${run}.s${n}`;
      run++;
      let hub: TestHub | null = startHub({ port });
      const link = new HubBus({ port, logger: quiet, reconnectDelay: 5, maxReconnectDelay: 20 });
      const publisher = new HubBus({ port, logger: quiet, reconnectDelay: 5, maxReconnectDelay: 20 });
      const wanted = new Set<number>();
      const got: string[] = [];
      try {
        for (const step of ops) {
          if ("subscribe" in step) {
            wanted.add(step.subscribe);
            // Resolves once in effect, which waits for a hub that is down: not awaited here.
            void link.subscribe(name(step.subscribe), (data) => got.push(String(data))).catch(() => {});
          } else if ("unsubscribe" in step) {
            wanted.delete(step.unsubscribe);
            link.unsubscribe(name(step.unsubscribe));
          } else if ("hub" in step) {
            if (step.hub === "stop" && hub) {
              await hub[Symbol.asyncDispose]();
              hub = null;
            } else if (step.hub === "start" && !hub) {
              hub = startHub({ port });
            }
          } else {
            await (step.wait === "microtask" ? Promise.resolve() : turn());
          }
        }
        hub ??= startHub({ port });
        // Back and settled: a subscribe of a fresh subject is in effect once the link restored the rest before it.
        await link.subscribe(`r${run - 1}.probe`, () => {});
        for (const n of [0, 1, 2]) {
          got.length = 0;
          const { reached } = await publisher.publish(name(n), `to ${n}`);
          assert.equal(reached, wanted.has(n) ? 1 : 0, `s${n}: reached ${reached} after ${JSON.stringify(ops)}`);
          if (wanted.has(n)) await until(() => got.includes(`to ${n}`), 5000, `s${n}'s delivery`);
        }
      } finally {
        await link.close();
        await publisher.close();
        if (hub) await hub[Symbol.asyncDispose]();
      }
    }),
    { seed: 2206, numRuns: 200 },
  );
});
