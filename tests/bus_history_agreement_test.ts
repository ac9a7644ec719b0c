/**
 * The buses' history against one another: any sequence of publishes, reads
 * (from the top, from before it, from another epoch, from the future, cut by
 * a limit), retries by idempotency key and removals gets the same answers from the hub (over its wire),
 * Redis and NATS JetStream, real servers, as from the memory bus, whose
 * history rules the hub shares (`shared/history_log.ts`). Epochs are random on each bus, so they
 * are compared as "the first one seen", "the second"...
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import type { Bus, HistoryOptions, Json, Position } from "../shared/bus.ts";
import { MemoryBroker } from "../shared/memory_bus.ts";
import { RedisBus } from "../shared/redis_bus.ts";
import { NatsBus } from "../shared/nats_bus.ts";
import { quiet, startHub } from "../channel/testing.ts";
import { HubBus } from "../channel/bus.ts";
import { startRedis } from "./_redis.ts";
import { startNats } from "./_nats.ts";

const SIZE = 4;
const HISTORY = { subjects: ["h.*"], size: SIZE, ttlMs: 600_000 };

type Op =
  | { publish: number; key: string | null }
  | { read: "all" | "top" | "before top" | "another epoch" | "future"; back: number; limit: number | null }
  | { remove: true };

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      publish: fc.integer({ min: 1, max: 3 }),
      // Sometimes with an idempotency key, which a retry (the same key again) repeats.
      key: fc.option(fc.constantFrom("k1", "k2"), { freq: 3 }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      read: fc.constantFrom(
        "all" as const,
        "top" as const,
        "before top" as const,
        "another epoch" as const,
        "future" as const,
      ),
      back: fc.integer({ min: 1, max: SIZE + 2 }),
      limit: fc.option(fc.integer({ min: 0, max: SIZE + 1 })),
    }),
  },
  fc.constant({ remove: true as const }),
);

/** One bus under test, and what it said so far: its top position, and its epochs in the order they appeared. */
class Side {
  top: Position | null = null;
  readonly #epochs: string[] = [];
  constructor(readonly name: string, readonly bus: Bus) {}

  /** An epoch as "E0", "E1"... by first appearance on this bus; "" (no history) as is. */
  epoch(epoch: string): string {
    if (epoch === "") return "";
    if (!this.#epochs.includes(epoch)) this.#epochs.push(epoch);
    return `E${this.#epochs.indexOf(epoch)}`;
  }

  position(position: Position): string {
    return `${position.offset}@${this.epoch(position.epoch)}`;
  }

  /** Runs `op` on `subject`, and says what came back in terms every bus shares. */
  async apply(subject: string, op: Op, seq: number): Promise<Json> {
    if ("publish" in op) {
      const answers = [];
      for (let n = 0; n < op.publish; n++) {
        const options = op.key === null ? {} : { idempotencyKey: `${subject}.${op.key}` };
        const { position } = await this.bus.publish(subject, { seq, n }, options);
        this.top = position!;
        answers.push(this.position(position!));
      }
      return answers;
    }
    if ("remove" in op) {
      await this.bus.removeHistory(subject);
      this.top = null;
      return "removed";
    }
    const options: HistoryOptions = op.limit === null ? {} : { limit: op.limit };
    if (op.read !== "all") {
      // From this bus's own top as last seen (a read learns it), or offset 0 of its epoch.
      const top = this.top ?? (await this.bus.history(subject, { limit: 0 })).position;
      const offset = op.read === "before top"
        ? Math.max(0, top.offset - op.back)
        : op.read === "future"
        ? top.offset + op.back
        : top.offset;
      options.since = { offset, epoch: op.read === "another epoch" ? "0badc0de" : top.epoch };
    }
    const read = await this.bus.history(subject, options);
    this.top = read.position;
    return {
      messages: read.messages.map((m) => [this.position(m.position), m.data]),
      position: this.position(read.position),
      recovered: read.recovered,
    };
  }
}

Deno.test("history on the hub, Redis and NATS answers as the memory bus's does, for any publishes, reads and removals", async () => {
  await using hub = startHub({ historySubjects: HISTORY.subjects, historySize: SIZE });
  await using hubBus = new HubBus({ port: hub.port, logger: quiet });
  await using redis = await startRedis();
  await using nats = await startNats();
  const memory = new MemoryBroker({ history: { subjects: HISTORY.subjects, size: SIZE } }).connect();
  await using redisBus = new RedisBus({ port: redis.port, logger: quiet, history: HISTORY });
  await using natsBus = new NatsBus({ servers: nats.servers, logger: quiet, history: HISTORY });
  let run = 0;
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 20 }), async (ops) => {
        // A subject of its own per run: every bus starts it empty.
        const subject = `h.run${run++}`;
        const sides = [
          new Side("memory", memory),
          new Side("the hub", hubBus),
          new Side("Redis", redisBus),
          new Side("NATS", natsBus),
        ];
        const trail: string[] = [];
        for (const [seq, step] of ops.entries()) {
          const [expected, ...others] = await Promise.all(sides.map((side) => side.apply(subject, step, seq)));
          trail.push(`${JSON.stringify(step)} -> ${JSON.stringify(expected)}`);
          for (const [i, answer] of others.entries()) {
            assert.deepEqual(answer, expected, `${sides[i + 1]!.name} after:\n${trail.join("\n")}`);
          }
        }
      }),
      { seed: 2206, numRuns: 200 },
    );
  } finally {
    await memory.close();
  }
});
