/**
 * A bus link's subscriptions against a model, on each bus whose server can
 * go away: any sequence of subscribes and unsubscribes, made while the server
 * is up, down or just back, leaves the link subscribed to exactly what it
 * asked for last once the server is back: a publish to each subject reaches
 * it (and, where the bus counts, counts it) only then.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import type { Bus } from "../shared/bus.ts";
import { HubBus } from "../channel/bus.ts";
import { RedisBus } from "../shared/redis_bus.ts";
import { NatsBus } from "../shared/nats_bus.ts";
import { freePort, quiet, startHub, type TestHub, until, within } from "../channel/testing.ts";
import { startRedis } from "./_redis.ts";
import { startNats } from "./_nats.ts";

type Op =
  | { subscribe: number }
  | { unsubscribe: number }
  | { server: "stop" | "start" }
  | { wait: "microtask" | "turn" };

const subject = fc.nat({ max: 2 });
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ subscribe: subject }) },
  { weight: 3, arbitrary: fc.record({ unsubscribe: subject }) },
  { weight: 2, arbitrary: fc.record({ server: fc.constantFrom("stop" as const, "start" as const) }) },
  { weight: 2, arbitrary: fc.record({ wait: fc.constantFrom("microtask" as const, "turn" as const) }) },
);

function turn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** A server the test stops and starts again on the same address, and links to it. */
interface Server {
  open(): Bus;
  stop(): Promise<void>;
  start(): Promise<void>;
}

async function resubscribes(server: Server, numRuns: number): Promise<void> {
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 20 }), async (ops) => {
      const prefix = `r${run++}`;
      const name = (n: number) => `${prefix}.s${n}`;
      const link = server.open();
      const publisher = server.open();
      let up = true;
      const wanted = new Set<number>();
      /** Each subject's last subscribe. */
      const subscribed = new Map<number, Promise<void>>();
      const got: string[] = [];
      try {
        for (const step of ops) {
          if ("subscribe" in step) {
            wanted.add(step.subscribe);
            // Resolves once in effect, which waits for a server that is down: awaited at the end.
            subscribed.set(step.subscribe, link.subscribe(name(step.subscribe), (data) => got.push(String(data))));
          } else if ("unsubscribe" in step) {
            wanted.delete(step.unsubscribe);
            link.unsubscribe(name(step.unsubscribe));
          } else if ("server" in step) {
            if (step.server === "stop" && up) {
              await server.stop();
              up = false;
            } else if (step.server === "start" && !up) {
              await server.start();
              up = true;
            }
          } else {
            await (step.wait === "microtask" ? Promise.resolve() : turn());
          }
        }
        if (!up) await server.start();
        // Back, and every subscribe it still wants in effect, as each one's promise says.
        await within(
          Promise.all([...wanted].map((n) => subscribed.get(n))),
          10_000,
          `the subscribes in effect after ${JSON.stringify(ops)}`,
        );
        // And restored after a restart: a subscribe of a fresh subject is in effect once the link restored those.
        await link.subscribe(`${prefix}.fresh`, () => {});
        for (const n of [0, 1, 2]) {
          got.length = 0;
          const { reached } = await publisher.publish(name(n), `to ${n}`);
          if (reached !== null) {
            assert.equal(reached, wanted.has(n) ? 1 : 0, `s${n}: reached ${reached} after ${JSON.stringify(ops)}`);
          }
          if (wanted.has(n)) await until(() => got.includes(`to ${n}`), 5000, `s${n}'s delivery`);
        }
        // What it no longer wants stays quiet: a last message to the probe comes after anything sent before it.
        let probe!: () => void;
        const probed = new Promise<void>((resolve) => (probe = resolve));
        await link.subscribe(`${prefix}.probe`, () => probe());
        await publisher.publish(`${prefix}.probe`, "end");
        await probed;
        const unwanted = [0, 1, 2].filter((n) => !wanted.has(n)).map((n) => `to ${n}`);
        assert.deepEqual(got.filter((message) => unwanted.includes(message)), [], `after ${JSON.stringify(ops)}`);
      } finally {
        await link.close();
        await publisher.close();
      }
    }),
    { seed: 2206, numRuns },
  );
}

Deno.test("hub link: after any subscribes and unsubscribes across hub restarts, it is subscribed to exactly what it asked for last", async () => {
  const port = freePort();
  let hub: TestHub | null = startHub({ port });
  try {
    await resubscribes({
      open: () => new HubBus({ port, logger: quiet, reconnectDelay: 5, maxReconnectDelay: 20 }),
      stop: async () => {
        await hub?.[Symbol.asyncDispose]();
        hub = null;
      },
      start: () => {
        hub = startHub({ port });
        return Promise.resolve();
      },
    }, 200);
  } finally {
    await hub?.[Symbol.asyncDispose]();
  }
});

Deno.test("Redis link: after any subscribes and unsubscribes across Redis restarts, it is subscribed to exactly what it asked for last", async () => {
  await using redis = await startRedis();
  await resubscribes({
    open: () => new RedisBus({ port: redis.port, logger: quiet, reconnectDelay: 5, maxReconnectDelay: 20 }),
    stop: () => redis.stop(),
    start: () => redis.start(),
  }, 30);
});

Deno.test("NATS link: after any subscribes and unsubscribes across a NATS restart, it is subscribed to exactly what it asked for last", async () => {
  await using nats = await startNats();
  await resubscribes({
    open: () => new NatsBus({ servers: nats.servers, logger: quiet, reconnectDelay: 20 }),
    stop: () => nats.kill(0),
    start: () => nats.restart(0),
  }, 30);
});
