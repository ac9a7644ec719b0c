import assert from "node:assert/strict";
import { BusError } from "./bus.ts";
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
