/**
 * A pusher tells a client it is reachable (its greeting for a user's
 * connection, its subscribe's reply for a channel) only once the bus has
 * its subscription in effect: before that a publish could miss it. The bus
 * here confirms subscriptions only when the test says so, as a hub does
 * one round trip later.
 */

import assert from "node:assert/strict";
import { Pusher } from "./pusher.ts";
import { type FakeSocket, FakeTransport } from "./fake_transport.ts";
import { channelSubject, newWorkerId, userSubject } from "../shared/address.ts";
import type { Bus, BusHandler } from "../shared/bus.ts";
import { signJwt } from "../shared/jwt.ts";
import { createLogger } from "../shared/log.ts";
import { MemoryBroker, type MemoryBus } from "../shared/memory_bus.ts";

const SECRET = "in-effect-secret";

/** A memory bus link whose subscriptions are confirmed only by `confirm()`. */
function slowBus(link: MemoryBus): { bus: Bus; confirm: () => void } {
  const waiting: (() => void)[] = [];
  const bus: Bus = {
    address: link.address,
    get connected() {
      return link.connected;
    },
    reconnects: 0,
    subscribe(subject: string, handler: BusHandler) {
      void link.subscribe(subject, handler);
      return new Promise<void>((resolve) => waiting.push(resolve));
    },
    unsubscribe: (subject) => link.unsubscribe(subject),
    publish: (subject, data, options) => link.publish(subject, data, options),
    request: (subject, data, options) => link.request(subject, data, options),
    history: (subject, options) => link.history(subject, options),
    removeHistory: (subject) => link.removeHistory(subject),
    close: () => link.close(),
    [Symbol.asyncDispose]: () => link.close(),
  };
  return { bus, confirm: () => waiting.splice(0).forEach((resolve) => resolve()) };
}

function tick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

async function setUp() {
  const broker = new MemoryBroker({ history: { subjects: ["channel.*"] } });
  const publisher = broker.connect();
  const link = broker.connect();
  const { bus, confirm } = slowBus(link);
  const transport = new FakeTransport();
  const pusher = new Pusher({
    workerId: newWorkerId(),
    bus,
    transport,
    tokenSecret: SECRET,
    logger: createLogger("pusher", { level: "silent" }),
  });
  confirm(); // broadcast, worker and presence subjects
  await tick();
  const token = (sub: string) => signJwt({ sub, exp: Math.floor(Date.now() / 1000) + 60, channels: ["news"] }, SECRET);
  const connect = async (user: string) =>
    await transport.connect(pusher.handler, `/?token=${token(user)}`) as FakeSocket;
  return {
    pusher,
    publisher,
    confirm,
    connect,
    async [Symbol.asyncDispose]() {
      pusher.closeAll();
      pusher.detach();
      await publisher.close();
      await link.close();
    },
  };
}

Deno.test("a user's first connection is greeted only once the user's subject is in effect, and then a publish to the user reaches it", async () => {
  await using setup = await setUp();
  const alice = await setup.connect("alice");
  await tick();
  assert.deepEqual(alice.sent, [], "no greeting while the subscription is not confirmed");
  setup.confirm();
  await tick();
  assert.match(alice.sent[0] ?? "", /^workerID:[0-9a-f]{16} connectionID:1 connected\n$/);
  await setup.publisher.publish(userSubject("alice"), { data: "hi alice" });
  await tick();
  assert.deepEqual(alice.sent.slice(1), ["hi alice"]);
  const second = await setup.connect("alice");
  await tick();
  assert.equal(second.sent.length, 1, "the user's subject is in effect already: greeted at once");
});

Deno.test("a subscribe is answered only once the channel's subject is in effect", async () => {
  await using setup = await setUp();
  const bob = await setup.connect("bob");
  setup.confirm();
  await tick();
  bob.receive(JSON.stringify({ id: 1, subscribe: { channel: "news" } }));
  await tick();
  assert.equal(bob.sent.length, 1, "only the greeting: the reply waits for the channel's subject");
  setup.confirm();
  await tick();
  assert.equal(bob.sent.length, 2);
  assert.deepEqual(JSON.parse(bob.sent[1]!), {
    id: 1,
    result: { recovered: false, offset: 0, epoch: bob.sent[1]!.match(/"epoch":"(\w+)"/)![1] },
  });
});

Deno.test("a recovering subscribe's reply and replay come before any live publication, even one that arrives before the subscription is confirmed", async () => {
  await using setup = await setUp();
  const publish = (n: number) => setup.publisher.publish(channelSubject("news"), { channel: "news", data: n });
  const first = await setup.publisher.publish(channelSubject("news"), { channel: "news", data: 1 });
  const { epoch } = first.position!;
  await publish(2);
  const carol = await setup.connect("carol");
  setup.confirm();
  await tick();
  carol.receive(JSON.stringify({ id: 1, subscribe: { channel: "news", since: { offset: 1, epoch } } }));
  await tick();
  await publish(3); // reaches the worker, whose subscription is not confirmed yet
  await tick();
  assert.equal(carol.sent.length, 1, "nothing but the greeting before the reply");
  setup.confirm();
  await tick();
  await tick();
  const frames = carol.sent.slice(1).map((frame) => JSON.parse(frame));
  assert.deepEqual(frames[0], { id: 1, result: { recovered: true, offset: 3, epoch } });
  assert.deepEqual(frames.slice(1).map((frame) => [frame.data, frame.offset]), [[2, 2], [3, 3]]);
});
