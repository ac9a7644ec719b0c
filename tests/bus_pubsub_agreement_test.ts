/**
 * The buses' publish and subscribe against one another: any sequence of
 * subscribes, unsubscribes and publishes over two subscriber links and a
 * publisher link delivers the same messages, in the same order, to each link
 * of the hub, Redis and NATS (real servers) as of the memory bus, each
 * publish counts the same links reached (NATS cannot count), and each
 * request gets the same replies, or the same no_responders.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import type { Bus, BusError, BusMessage, Json } from "../shared/bus.ts";
import { MemoryBroker } from "../shared/memory_bus.ts";
import { RedisBus } from "../shared/redis_bus.ts";
import { NatsBus } from "../shared/nats_bus.ts";
import { HubBus } from "../channel/bus.ts";
import { quiet, startHub, until } from "../channel/testing.ts";
import { startRedis } from "./_redis.ts";
import { startNats } from "./_nats.ts";

type Op =
  | { subscribe: number; subject: number }
  | { unsubscribe: number; subject: number }
  | { publish: Json; subject: number }
  | { request: Json; subject: number };

const link = fc.nat({ max: 1 });
const subject = fc.nat({ max: 2 });
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ subscribe: link, subject }) },
  fc.record({ unsubscribe: link, subject }),
  { weight: 3, arbitrary: fc.record({ publish: fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>, subject }) },
  fc.record({ request: fc.jsonValue({ maxDepth: 1 }) as fc.Arbitrary<Json>, subject }),
);

/** One bus's two subscriber links and its publisher, and what each subscriber got. */
interface Side {
  name: string;
  links: Bus[];
  publisher: Bus;
  got: string[][];
}

Deno.test("publish and subscribe on the hub, Redis and NATS deliver and count as on the memory bus, for any sequence", async () => {
  await using hub = startHub();
  await using redis = await startRedis();
  await using nats = await startNats();
  const broker = new MemoryBroker();
  const made: Bus[] = [];
  const make = (bus: Bus) => (made.push(bus), bus);
  const sides: Side[] = [
    ["memory", () => broker.connect()],
    ["the hub", () => new HubBus({ port: hub.port, logger: quiet })],
    ["Redis", () => new RedisBus({ port: redis.port, logger: quiet })],
    ["NATS", () => new NatsBus({ servers: nats.servers, logger: quiet })],
  ].map(([name, open]) => ({
    name: name as string,
    links: [make((open as () => Bus)()), make((open as () => Bus)())],
    publisher: make((open as () => Bus)()),
    got: [[], []],
  }));
  let run = 0;
  try {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 15 }), async (ops) => {
        const prefix = `r${run++}`;
        const name = (n: number) => `${prefix}.s${n}`;
        for (const side of sides) side.got = [[], []];
        const handler = (side: Side, i: number) => (data: Json, message: BusMessage) => {
          side.got[i]!.push(`${message.subject.slice(prefix.length + 1)} ${JSON.stringify(data)}`);
          if (message.replyTo !== undefined) void side.links[i]!.publish(message.replyTo, { link: i });
        };
        /** Which links the model has subscribed to each subject. */
        const members = new Map<number, Set<number>>();
        const trail: string[] = [];
        for (const step of ops) {
          trail.push(JSON.stringify(step));
          if ("subscribe" in step) {
            members.set(step.subject, (members.get(step.subject) ?? new Set()).add(step.subscribe));
            await Promise.all(
              sides.map((side) =>
                side.links[step.subscribe]!.subscribe(name(step.subject), handler(side, step.subscribe))
              ),
            );
          } else if ("unsubscribe" in step) {
            members.get(step.subject)?.delete(step.unsubscribe);
            await Promise.all(sides.map(async (side) => {
              const link = side.links[step.unsubscribe]!;
              link.unsubscribe(name(step.subject));
              // A subscribe on the same link after it: in effect once that is, as the link keeps its order.
              await link.subscribe(`${prefix}.barrier`, () => {});
            }));
          } else if ("request" in step) {
            // NATS cannot count who it reached: it stops at as many replies as the model has members.
            const maxReplies = members.get(step.subject)?.size ?? 0;
            const answers = await Promise.all(
              sides.map((side) =>
                side.publisher.request(name(step.subject), step.request, { timeout: 2000, maxReplies }).then(
                  ({ replies }) => JSON.stringify(replies.map((r) => JSON.stringify(r)).sort()),
                  (error) => (error as BusError).code,
                )
              ),
            );
            for (const [i, answer] of answers.entries()) {
              assert.equal(answer, answers[0], `${sides[i]!.name}'s replies after:\n${trail.join("\n")}`);
            }
          } else {
            const reached = await Promise.all(
              sides.map((side) => side.publisher.publish(name(step.subject), step.publish)),
            );
            for (const [i, result] of reached.entries()) {
              if (sides[i]!.name === "NATS") continue;
              assert.equal(
                result.reached,
                reached[0]!.reached,
                `${sides[i]!.name}'s count after:\n${trail.join("\n")}`,
              );
            }
          }
        }
        // Everything published before a last message to both links has reached them: each link keeps its order.
        await Promise.all(sides.map(async (side) => {
          await Promise.all(side.links.map((link, i) => link.subscribe(`${prefix}.end`, handler(side, i))));
          await side.publisher.publish(`${prefix}.end`, "end");
          await until(() => side.got.every((got) => got.at(-1) === 'end "end"'), 5000, `${side.name}'s last message`);
        }));
        for (const side of sides.slice(1)) {
          assert.deepEqual(side.got, sides[0]!.got, `${side.name}'s deliveries after:\n${trail.join("\n")}`);
        }
      }),
      { seed: 2207, numRuns: 200 },
    );
  } finally {
    for (const bus of made) await bus.close();
  }
});
