import assert from "node:assert/strict";
import { BusError, type BusMessage } from "./bus.ts";
import { MemoryBroker } from "./memory_bus.ts";
import type { Json } from "./json.ts";

/** Matches a BusError with this code, for assert.rejects. */
function busError(code: string): (error: unknown) => boolean {
  return (error) => error instanceof BusError && error.code === code;
}

Deno.test("memory bus delivers a publish to every subscribed link and counts them", async () => {
  const broker = new MemoryBroker();
  await using a = broker.connect();
  await using b = broker.connect();
  await using publisher = broker.connect();
  const got: [string, Json][] = [];
  a.subscribe("news", (data, message) => got.push([`a:${message.subject}`, data]));
  b.subscribe("news", (data) => got.push(["b", data]));
  b.subscribe("other", () => got.push(["b-other", null]));

  const result = await publisher.publish("news", { n: 1 });
  assert.deepEqual(result, { reached: 2 });
  await Promise.resolve();
  assert.deepEqual(got, [["a:news", { n: 1 }], ["b", { n: 1 }]]);
});

Deno.test("memory bus stops delivering after unsubscribe and close", async () => {
  const broker = new MemoryBroker();
  await using a = broker.connect();
  await using publisher = broker.connect();
  a.subscribe("news", () => {});
  assert.deepEqual(await publisher.publish("news", 1), { reached: 1 });
  a.unsubscribe("news");
  assert.deepEqual(await publisher.publish("news", 1), { reached: 0 });
  a.subscribe("news", () => {});
  await a.close();
  assert.deepEqual(await publisher.publish("news", 1), { reached: 0 });
  await assert.rejects(a.publish("news", 1), busError("unavailable"));
});

Deno.test("memory bus request gathers one reply per subscriber", async () => {
  const broker = new MemoryBroker();
  await using a = broker.connect();
  await using b = broker.connect();
  await using asker = broker.connect();
  for (const [link, name] of [[a, "a"], [b, "b"]] as const) {
    link.subscribe("who", (data, message) => void link.publish(message.replyTo!, { name, asked: data }));
  }
  const result = await asker.request("who", "?", { timeout: 5000 });
  assert.deepEqual(result.expected, 2);
  assert.deepEqual(result.replies.map((r) => (r as { name: string }).name).sort(), ["a", "b"]);
  assert.deepEqual(asker.subjects, [], "the inbox is unsubscribed once the request is over");
});

Deno.test("memory bus request answers with what arrived when a subscriber stays silent", async () => {
  const broker = new MemoryBroker();
  await using a = broker.connect();
  await using silent = broker.connect();
  await using asker = broker.connect();
  a.subscribe("who", (_data, message) => void a.publish(message.replyTo!, "a"));
  silent.subscribe("who", () => {});
  const result = await asker.request("who", null, { timeout: 50 });
  assert.deepEqual(result, { replies: ["a"], expected: 2 });
});

Deno.test("memory bus request to a subject nobody subscribes to fails as no_responders", async () => {
  const broker = new MemoryBroker();
  await using asker = broker.connect();
  await assert.rejects(asker.request("nobody", null), busError("no_responders"));
});

Deno.test("memory bus refuses what it cannot take with the bus's own errors", async () => {
  const broker = new MemoryBroker({ maxMessageBytes: 10 });
  await using link = broker.connect();
  await assert.rejects(link.publish("s", "x".repeat(20)), busError("too_large"));
  broker.down = true;
  assert(!link.connected);
  await assert.rejects(link.publish("s", 1), busError("unavailable"));
});

Deno.test("memory bus hands each subscriber its own copy", async () => {
  const broker = new MemoryBroker();
  await using a = broker.connect();
  await using b = broker.connect();
  const copies: Json[] = [];
  a.subscribe("s", (data) => copies.push(data));
  b.subscribe("s", (data) => copies.push(data));
  await a.publish("s", { list: [1] });
  await Promise.resolve();
  assert.deepEqual(copies.length, 2);
  assert(copies[0] !== copies[1]);
});

Deno.test("memory bus gives history subjects positions, on the result and on delivery", async () => {
  const broker = new MemoryBroker({ history: { subjects: ["news", "chat.*"] } });
  await using sub = broker.connect();
  await using publisher = broker.connect();
  const seen: BusMessage[] = [];
  sub.subscribe("news", (_data, message) => seen.push(message));
  sub.subscribe("plain", (_data, message) => seen.push(message));
  const first = await publisher.publish("news", 1);
  const second = await publisher.publish("news", 2);
  const plain = await publisher.publish("plain", 3);
  await Promise.resolve();
  assert.equal(first.position?.offset, 1);
  assert.deepEqual(second.position, { offset: 2, epoch: first.position!.epoch });
  assert.deepEqual(plain, { reached: 1 });
  assert.deepEqual(seen.map((m) => m.position), [first.position, second.position, undefined]);
  assert.equal((await publisher.publish("chat.7", 0)).position?.offset, 1);
});

Deno.test("memory bus history returns what followed a position", async () => {
  const broker = new MemoryBroker({ history: { subjects: ["news"], size: 3 } });
  await using link = broker.connect();
  const positions = [];
  for (let i = 1; i <= 5; i++) positions.push((await link.publish("news", { i })).position!);
  const read = await link.history("news", { since: positions[2] });
  assert.deepEqual(read, {
    messages: [{ data: { i: 4 }, position: positions[3] }, { data: { i: 5 }, position: positions[4] }],
    position: positions[4],
    recovered: true,
  });
  assert.equal((await link.history("news", { since: positions[0] })).recovered, false);
  assert.equal((await link.history("news", { since: positions[2], limit: 1 })).recovered, false);
  assert.deepEqual(await link.history("plain"), { messages: [], position: { offset: 0, epoch: "" }, recovered: false });
});

Deno.test("memory bus history keeps its own copy and ages with the injected clock", async () => {
  let time = 0;
  const broker = new MemoryBroker({ history: { subjects: ["news"], ttl: 100 }, now: () => time });
  await using link = broker.connect();
  const data = { n: 1 };
  await link.publish("news", data);
  data.n = 2;
  assert.deepEqual((await link.history("news")).messages[0]?.data, { n: 1 });
  time = 100;
  assert.deepEqual((await link.history("news")).messages, []);
});

Deno.test("memory bus removeHistory and restart change the epoch", async () => {
  const broker = new MemoryBroker({ history: { subjects: ["news"] } });
  await using link = broker.connect();
  const first = (await link.publish("news", 1)).position!;
  await link.removeHistory("news");
  const second = (await link.publish("news", 1)).position!;
  assert.equal(second.offset, 1);
  assert.notEqual(second.epoch, first.epoch);
  broker.restart();
  const read = await link.history("news", { since: second });
  assert.equal(read.recovered, false);
  assert.notEqual(read.position.epoch, second.epoch);
});

Deno.test("memory bus delivers a retried publish once and answers it the same", async () => {
  let time = 0;
  const broker = new MemoryBroker({ history: { subjects: ["news"] }, idempotencyWindow: 1000, now: () => time });
  await using sub = broker.connect();
  await using publisher = broker.connect();
  let deliveries = 0;
  sub.subscribe("news", () => deliveries++);
  const first = await publisher.publish("news", 1, { idempotencyKey: "k" });
  const retry = await publisher.publish("news", 1, { idempotencyKey: "k" });
  const other = await publisher.publish("other", 1, { idempotencyKey: "k" });
  await Promise.resolve();
  assert.deepEqual(retry, first);
  assert.deepEqual(other, { reached: 0 });
  assert.equal(deliveries, 1);
  time = 1000;
  assert.equal((await publisher.publish("news", 1, { idempotencyKey: "k" })).position?.offset, 2);
  await assert.rejects(publisher.publish("news", 1, { idempotencyKey: "k".repeat(129) }), busError("refused"));
});

Deno.test("memory bus history fails as unavailable when down or closed", async () => {
  const broker = new MemoryBroker({ history: { subjects: ["news"] } });
  const link = broker.connect();
  broker.down = true;
  await assert.rejects(link.history("news"), busError("unavailable"));
  await assert.rejects(link.removeHistory("news"), busError("unavailable"));
  broker.down = false;
  await link.close();
  await assert.rejects(link.history("news"), busError("unavailable"));
});
