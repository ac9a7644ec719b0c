import assert from "node:assert/strict";
import v8 from "node:v8";
import vm from "node:vm";
import { BusError, type BusMessage, type Json } from "./bus.ts";
import { RedisBus, type RedisBusOptions } from "./redis_bus.ts";
import { freePort, quiet, until, within } from "../channel/testing.ts";
import { startRedis } from "../tests/_redis.ts";
import { makeTestCertificates } from "../tests/_tls.ts";
import { createLogger } from "./log.ts";
import { epochSlot } from "./history_log.ts";

function bus(port: number, options: RedisBusOptions = {}): RedisBus {
  return new RedisBus({ port, logger: quiet, reconnectDelay: 20, maxReconnectDelay: 100, ...options });
}

/** The BusError `promise` rejects with, within 5 s. */
async function busError(promise: Promise<unknown>, what: string): Promise<BusError> {
  const error = await within(promise.then(() => null, (e) => e), 5000, what);
  assert.ok(error instanceof BusError, `${what}: expected a BusError, got ${error}`);
  return error;
}

Deno.test("redis bus publishes to a subscriber once it is in effect, and reports how many it reached", async () => {
  await using redis = await startRedis();
  await using subscriber = bus(redis.port);
  await using publisher = bus(redis.port);
  const got: [Json, BusMessage][] = [];
  await within(subscriber.subscribe("news", (data, message) => got.push([data, message])), 5000, "the subscription");
  assert.deepEqual(await publisher.publish("news", { title: "hi" }), { reached: 1 });
  assert.deepEqual(await publisher.publish("nobody", 1), { reached: 0 });
  await until(() => got.length === 1, 2000, "the event");
  assert.deepEqual(got, [[{ title: "hi" }, { subject: "news" }]]);
  assert.equal(publisher.address, `redis://127.0.0.1:${redis.port}`);
  await until(() => publisher.connected, 2000, "both links");
});

Deno.test("redis bus counts one per subscribed link, and unsubscribe stops the handler", async () => {
  await using redis = await startRedis();
  await using a = bus(redis.port);
  await using b = bus(redis.port);
  await using publisher = bus(redis.port);
  const got: string[] = [];
  await a.subscribe("news", () => got.push("a-first"));
  await a.subscribe("news", (data) => got.push(`a:${data}`));
  await b.subscribe("news", (data) => got.push(`b:${data}`));
  assert.deepEqual(await publisher.publish("news", 1), { reached: 2 });
  await until(() => got.length === 2, 2000, "both events");
  assert.deepEqual(got.sort(), ["a:1", "b:1"]);
  a.unsubscribe("news");
  await until(async () => (await redis.cli("PUBSUB", "NUMSUB", "channel:news")).endsWith("1"), 2000, "the unsubscribe");
  assert.deepEqual(await publisher.publish("news", 2), { reached: 1 });
});

Deno.test("redis bus: a subject unsubscribed and subscribed again at once is subscribed, as a channel whose last member left and a new one came", async () => {
  await using redis = await startRedis();
  await using link = bus(redis.port);
  await using publisher = bus(redis.port);
  for (const subject of ["a", "b", "c"]) {
    await link.subscribe(subject, () => {});
    link.unsubscribe(subject);
    await link.subscribe(subject, () => {});
    assert.equal((await publisher.publish(subject, 1)).reached, 1, subject);
  }
});

Deno.test("redis bus request gathers one reply per subscriber, and no_responders when nobody listens", async () => {
  await using redis = await startRedis();
  await using a = bus(redis.port);
  await using b = bus(redis.port);
  await using requester = bus(redis.port);
  for (const [name, responder] of [["a", a], ["b", b]] as const) {
    await responder.subscribe("time", (data, { replyTo }) => {
      assert.ok(replyTo, "a request carries its inbox");
      void responder.publish(replyTo, { from: name, asked: data });
    });
  }
  const result = await within(requester.request("time", "now?", { timeout: 5000 }), 5000, "the replies");
  assert.equal(result.expected, 2);
  assert.deepEqual(result.replies.map((reply) => (reply as { from: string }).from).sort(), ["a", "b"]);
  assert.deepEqual((result.replies[0] as { asked: Json }).asked, "now?");
  const error = await busError(requester.request("void", 1, { timeout: 2000 }), "the request to nobody");
  assert.equal(error.code, "no_responders");
  assert.equal(error.message, "Cannot request on void: nobody subscribes to it");
  await until(async () => (await redis.cli("PUBSUB", "CHANNELS", "channel:_inbox.*")) === "", 2000, "inboxes gone");
});

Deno.test("redis bus request answers with what came when a subscriber stays silent", async () => {
  await using redis = await startRedis();
  await using a = bus(redis.port);
  await using silent = bus(redis.port);
  await using requester = bus(redis.port);
  await a.subscribe("who", (_data, { replyTo }) => void a.publish(replyTo!, "a"));
  await silent.subscribe("who", () => {});
  assert.deepEqual(await requester.request("who", null, { timeout: 200 }), { replies: ["a"], expected: 2 });
});

Deno.test("redis bus refuses a message over its size limit and a long idempotency key", async () => {
  await using redis = await startRedis();
  await using small = bus(redis.port, { maxMessageBytes: 1024 });
  const large = await busError(small.publish("news", "x".repeat(2000)), "the oversized publish");
  assert.equal(large.code, "too_large");
  assert.match(large.message, /^Cannot publish to news: message of 2\d{3} bytes is over the 1024-byte limit$/);
  const key = await busError(small.publish("news", 1, { idempotencyKey: "k".repeat(129) }), "the long key");
  assert.equal(key.code, "refused");
});

Deno.test("redis bus publish while Redis is unreachable waits its timeout, then is unavailable", async () => {
  await using down = bus(freePort(), { connectTimeout: 200, history: { subjects: ["news"] } });
  const started = Date.now();
  const error = await busError(down.publish("news", 1, { timeout: 300 }), "the publish to time out");
  assert.equal(error.code, "unavailable");
  assert.match(error.message, /^Cannot publish to news: the Redis link stayed down for 300 ms$/);
  assert.ok(Date.now() - started >= 290, "it waited for the link");
  assert.equal(down.connected, false);
  const history = await busError(down.history("news", { timeout: 100 }), "the history read");
  assert.equal(history.code, "unavailable");
});

Deno.test("redis bus publish after close is unavailable, and closing twice is harmless", async () => {
  await using redis = await startRedis();
  const closed = bus(redis.port);
  await closed.subscribe("news", () => {});
  await closed.close();
  await closed.close();
  const error = await busError(closed.publish("news", 1), "the publish on a closed bus");
  assert.equal(error.code, "unavailable");
  assert.equal(error.message, "Cannot publish to news: the Redis bus is closed");
  await within(closed.subscribe("more", () => {}), 1000, "a subscribe after close to resolve");
});

Deno.test("redis bus asks for the password and reports a wrong one as a link that stays down", async () => {
  await using redis = await startRedis({ password: "s3cret" });
  await using good = bus(redis.port, { token: "s3cret" });
  assert.deepEqual(await good.publish("news", 1), { reached: 0 });
  await using wrong = bus(redis.port, { token: "nope" });
  const error = await busError(wrong.publish("news", 1, { timeout: 300 }), "the publish with a wrong password");
  assert.equal(error.code, "unavailable");
});

Deno.test("redis bus gives history subjects positions, on the result and on delivery", async () => {
  await using redis = await startRedis();
  const history = { subjects: ["news", "chat.*"] };
  await using subscriber = bus(redis.port, { history });
  await using publisher = bus(redis.port, { history });
  const seen: BusMessage[] = [];
  await subscriber.subscribe("news", (_data, message) => seen.push(message));
  await subscriber.subscribe("plain", (_data, message) => seen.push(message));
  const first = await publisher.publish("news", 1);
  const second = await publisher.publish("news", 2);
  const plain = await publisher.publish("plain", 3);
  assert.equal(first.reached, 1);
  assert.equal(first.position?.offset, 1);
  assert.match(first.position!.epoch, /^[0-9a-f]{8}$/);
  assert.deepEqual(second, { reached: 1, position: { offset: 2, epoch: first.position!.epoch } });
  assert.deepEqual(plain, { reached: 1 });
  await until(() => seen.length === 3, 2000, "the three events");
  assert.deepEqual(seen.map((m) => m.position), [first.position, second.position, undefined]);
  assert.equal((await publisher.publish("chat.7", 0)).position?.offset, 1);
});

Deno.test("redis bus offsets grow by exactly one per message under concurrent publishers", async () => {
  await using redis = await startRedis();
  const history = { subjects: ["news"], size: 1000 };
  await using a = bus(redis.port, { history });
  await using b = bus(redis.port, { history });
  const results = await Promise.all(
    Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).publish("news", { i })),
  );
  assert.deepEqual(
    results.map((r) => r.position!.offset).sort((x, y) => x - y),
    Array.from({ length: 200 }, (_, i) => i + 1),
  );
  const read = await a.history("news");
  assert.equal(read.messages.length, 200);
  assert.deepEqual(read.messages.map((m) => m.position.offset), Array.from({ length: 200 }, (_, i) => i + 1));
  const byOffset = new Map(results.map((r, i) => [r.position!.offset, i]));
  for (const m of read.messages) {
    assert.deepEqual(m.data, { i: byOffset.get(m.position.offset) }, "each offset holds its message");
  }
});

Deno.test("redis bus history returns what followed a position, and says when it cannot", async () => {
  await using redis = await startRedis();
  await using link = bus(redis.port, { history: { subjects: ["news"], size: 3 } });
  const empty = await link.history("news");
  assert.deepEqual(empty.messages, []);
  assert.equal(empty.position.offset, 0);
  assert.equal(empty.recovered, false);
  assert.equal((await link.history("news", { since: empty.position })).recovered, true, "nothing missed from 0");
  const positions = [];
  for (let i = 1; i <= 5; i++) positions.push((await link.publish("news", { i })).position!);
  assert.equal(positions[0]!.epoch, empty.position.epoch, "the epoch a read made is the one publishes use");
  assert.deepEqual(await link.history("news", { since: positions[2] }), {
    messages: [{ data: { i: 4 }, position: positions[3] }, { data: { i: 5 }, position: positions[4] }],
    position: positions[4],
    recovered: true,
  });
  assert.deepEqual(await link.history("news", { since: positions[4] }), {
    messages: [],
    position: positions[4],
    recovered: true,
  });
  assert.equal((await link.history("news", { since: positions[0] })).recovered, false, "trimmed past it");
  const cut = await link.history("news", { since: positions[2], limit: 1 });
  assert.deepEqual(cut.messages.map((m) => m.data), [{ i: 4 }]);
  assert.equal(cut.recovered, false, "the limit cut it");
  assert.equal((await link.history("news", { since: { offset: 9, epoch: positions[0]!.epoch } })).recovered, false);
  assert.equal((await link.history("news", { since: { offset: 4, epoch: "00000000" } })).recovered, false);
  assert.deepEqual((await link.history("news")).messages.map((m) => m.data), [{ i: 3 }, { i: 4 }, { i: 5 }]);
  assert.deepEqual(await link.history("plain"), { messages: [], position: { offset: 0, epoch: "" }, recovered: false });
});

Deno.test("redis bus history drops messages older than its ttl", async () => {
  await using redis = await startRedis();
  await using link = bus(redis.port, { history: { subjects: ["news"], ttlMs: 300 } });
  const first = (await link.publish("news", 1)).position!;
  assert.equal((await link.history("news")).messages.length, 1);
  await until(async () => (await link.history("news")).messages.length === 0, 3000, "the message to expire");
  const read = await link.history("news", { since: { offset: 0, epoch: first.epoch } });
  assert.equal(read.recovered, false, "a reader from before the expired message missed it");
});

Deno.test("redis bus: reads of subjects nobody published to make no key per name, and the first publish continues the epoch read", async () => {
  await using redis = await startRedis();
  await using a = bus(redis.port, { history: { subjects: ["channel.*"], ttlMs: 60_000 } });
  await using b = bus(redis.port, { history: { subjects: ["channel.*"], ttlMs: 60_000 } });
  // A browser subscribing to made-up names: each read answers a position, and Redis holds one key for them all.
  const names = Array.from({ length: 6000 }, (_, i) => `channel.made-up-${i}`);
  for (let i = 0; i < names.length; i += 500) {
    const reads = await Promise.all(names.slice(i, i + 500).map((name) => (i % 1000 ? a : b).history(name)));
    assert.ok(reads.every((read) => read.position.offset === 0 && read.messages.length === 0));
  }
  assert.deepEqual((await redis.cli("--scan")).trim().split("\n"), ["channel:epoch-slots"]);
  assert.ok(Number(await redis.cli("HLEN", "channel:epoch-slots")) <= 4096);
  // Another process reads the same epoch, and the first publish continues it: the reader recovers it.
  const read = await a.history("channel.made-up-7");
  assert.deepEqual((await b.history("channel.made-up-7")).position, read.position);
  const first = (await b.publish("channel.made-up-7", "first")).position!;
  assert.deepEqual(first, { offset: 1, epoch: read.position.epoch });
  assert.deepEqual(await a.history("channel.made-up-7", { since: read.position }), {
    messages: [{ data: "first", position: first }],
    position: first,
    recovered: true,
  });
  const [meta] = (await redis.cli("--scan", "--pattern", "*channel.made-up-7*:meta")).trim().split("\n");
  assert.ok(Number(await redis.cli("PTTL", meta!)) > 60_000, "published to, its keys are kept a day");
});

/** Two names of `channel.<prefix>N` whose epochs share a slot. */
function slotMates(prefix: string): [string, string] {
  const seen = new Map<number, string>();
  for (let i = 0;; i++) {
    const name = `channel.${prefix}${i}`;
    const other = seen.get(epochSlot(name));
    if (other) return [other, name];
    seen.set(epochSlot(name), name);
  }
}

Deno.test("redis bus: a channel's first publish continues the epoch its readers got, though a slot-mate was published first", async () => {
  await using redis = await startRedis();
  await using link = bus(redis.port, { history: { subjects: ["channel.*"], ttlMs: 60_000 } });
  const [room, mate] = slotMates("room-");
  const read = await link.history(room);
  assert.deepEqual((await link.publish(mate, "mate first")).position, { offset: 1, epoch: read.position.epoch });
  const first = (await link.publish(room, "first")).position!;
  assert.deepEqual(first, { offset: 1, epoch: read.position.epoch }, "no reload for a reader that missed nothing");
  assert.equal((await link.history(room, { since: read.position })).recovered, true);
});

Deno.test("redis bus: once Redis evicted a key, a slot's epoch is not answered again, as the channel that took it may have lost its keys", async () => {
  await using redis = await startRedis();
  await using link = bus(redis.port, { history: { subjects: ["channel.*"], ttlMs: 60_000 } });
  const [taken, fresh] = slotMates("evicted-");
  const before = (await link.history(fresh)).position;
  const published = (await link.publish(taken, 1)).position!;
  assert.equal(published.epoch, before.epoch);
  // Memory pressure: Redis evicted the channel's keys, and not the slot's (eviction keeps no order): as if, its keys
  // go, and Redis evicts one key (a filler, the one with the shortest ttl) to count an eviction.
  const [meta] = (await redis.cli("--scan", "--pattern", `*${taken}*:meta`)).trim().split("\n");
  await redis.cli("DEL", meta!, meta!.replace(/:meta$/, ":stream"));
  await redis.cli("SET", "filler", "x".repeat(100_000), "PX", "100000");
  const used = Number((await redis.cli("INFO", "memory")).match(/used_memory:(\d+)/)![1]);
  await redis.cli("CONFIG", "SET", "maxmemory-policy", "volatile-ttl");
  await redis.cli("CONFIG", "SET", "maxmemory", String(used - 50_000));
  await redis.cli("CONFIG", "SET", "maxmemory", "0");
  assert.match(await redis.cli("INFO", "stats"), /evicted_keys:1\r?\n/);
  assert.equal(Number(await redis.cli("EXISTS", "channel:epoch-slots")), 1, "the slots are still there");
  const after = await link.history(taken, { since: published });
  assert.notEqual(after.position.epoch, published.epoch, "not the epoch it had positions in");
  assert.equal(after.recovered, false);
  // Its slot-mate, never published to, was answered the old epoch: it now gets the new one, and is told so.
  assert.equal((await link.history(fresh, { since: before })).recovered, false);
});

Deno.test("redis bus makes only keys that expire, so a Redis run with maxmemory-policy volatile-lru can evict any of them", async () => {
  await using redis = await startRedis();
  await using link = bus(redis.port, { history: { subjects: ["channel.*"], ttlMs: 60_000 } });
  await link.subscribe("channel.a", () => {});
  await link.publish("channel.a", 1);
  await link.publish("channel.a", 2, { idempotencyKey: "k" });
  await link.publish("plain", 3, { idempotencyKey: "k2" });
  await link.history("channel.read-only");
  await link.history("channel.a", { since: { offset: 1, epoch: "x" } });
  await link.publish("channel.b", 4);
  await link.removeHistory("channel.b");
  const keys = (await redis.cli("--scan")).trim().split("\n").filter((key) => key !== "");
  assert.ok(keys.length >= 4, `keys: ${keys}`);
  for (const key of keys) {
    const ttl = Number(await redis.cli("PTTL", key));
    assert.ok(ttl > 0, `${key} never expires (PTTL ${ttl})`);
  }
});

Deno.test("redis bus removeHistory and a Redis restart change the epoch", async () => {
  await using redis = await startRedis();
  await using link = bus(redis.port, { history: { subjects: ["news"] } });
  const first = (await link.publish("news", 1)).position!;
  await link.removeHistory("news");
  await link.removeHistory("plain");
  const second = (await link.publish("news", 1)).position!;
  assert.equal(second.offset, 1);
  assert.notEqual(second.epoch, first.epoch);
  await redis.stop();
  await redis.start();
  const read = await within(link.history("news", { since: second, timeout: 5000 }), 6000, "the read after the restart");
  assert.equal(read.recovered, false);
  assert.deepEqual(read.messages, []);
  assert.notEqual(read.position.epoch, second.epoch);
  assert.equal(read.position.offset, 0);
});

Deno.test("redis bus delivers a retried publish once and answers it the same", async () => {
  await using redis = await startRedis();
  await using subscriber = bus(redis.port);
  await using publisher = bus(redis.port, { history: { subjects: ["news"] }, idempotencyWindow: 300 });
  let deliveries = 0;
  await subscriber.subscribe("news", () => deliveries++);
  await subscriber.subscribe("other", () => deliveries++);
  const first = await publisher.publish("news", 1, { idempotencyKey: "k" });
  const retry = await publisher.publish("news", 1, { idempotencyKey: "k" });
  const other = await publisher.publish("other", 1, { idempotencyKey: "k" });
  const again = await publisher.publish("other", 1, { idempotencyKey: "k" });
  assert.deepEqual(first, { reached: 1, position: { offset: 1, epoch: first.position!.epoch } });
  assert.deepEqual(retry, first);
  assert.deepEqual(other, { reached: 1 });
  assert.deepEqual(again, other);
  await until(() => deliveries === 2, 2000, "one delivery per key and subject");
  await until(async () => (await redis.cli("EXISTS", "channel:{news}:idem:k")) === "0", 3000, "the window to pass");
  assert.equal((await publisher.publish("news", 1, { idempotencyKey: "k" })).position?.offset, 2);
});

Deno.test("redis bus restores its subscriptions after Redis restarts, and holds publishes meanwhile", async () => {
  await using redis = await startRedis();
  await using subscriber = bus(redis.port);
  await using publisher = bus(redis.port, { reconnectGrace: 2000 });
  const got: Json[] = [];
  await subscriber.subscribe("news", (data) => got.push(data));
  assert.deepEqual(await publisher.publish("news", "before"), { reached: 1 });
  // Received before Redis stops: an event still on its way then can be lost
  // (Redis pub/sub is at most once; its closing socket may reset the
  // subscriber's, whose unread bytes go with it), which is not what this tests.
  await until(() => got.length === 1, 2000, "the event before the restart");
  await redis.stop();
  await until(() => !publisher.connected && !subscriber.connected, 3000, "both buses to see Redis go");
  const during = await busError(publisher.publish("news", "during", { timeout: 200 }), "the publish during the outage");
  assert.equal(during.code, "unavailable");
  assert.equal(during.message, "Cannot publish to news: the Redis link stayed down for 200 ms");
  // A publish made during the outage waits for Redis, then for the grace in
  // which subscribers come back: it reaches the subscriber.
  const waiting = publisher.publish("news", "waited", { timeout: 10_000 });
  await redis.start();
  assert.deepEqual(await within(waiting, 10_000, "the waiting publish"), { reached: 1 });
  assert.equal(subscriber.reconnects, 1);
  assert.deepEqual(await publisher.publish("news", "after"), { reached: 1 });
  await until(() => got.length === 3, 2000, "the events");
  assert.deepEqual(got, ["before", "waited", "after"]);
});

Deno.test("redis bus subscribe made while Redis is down resolves once it is in effect", async () => {
  await using redis = await startRedis();
  await redis.stop();
  await using subscriber = bus(redis.port);
  await using publisher = bus(redis.port);
  const got: Json[] = [];
  let inEffect = false;
  const subscribed = subscriber.subscribe("news", (data) => got.push(data)).then(() => (inEffect = true));
  await until(async () => (await subscriber.history("x").then(() => true)), 1000, "a local answer");
  assert.equal(inEffect, false, "not in effect while Redis is down");
  await redis.start();
  await within(subscribed, 5000, "the subscription once Redis is up");
  assert.deepEqual(await publisher.publish("news", 1), { reached: 1 });
  await until(() => got.length === 1, 2000, "the event");
});

Deno.test("redis bus subscribe waiting out an outage resolves when its subject is unsubscribed, and the others still wait", async () => {
  await using redis = await startRedis();
  await redis.stop();
  await using subscriber = bus(redis.port);
  let kept = false;
  const gone = subscriber.subscribe("gone", () => {});
  const news = subscriber.subscribe("news", () => {}).then(() => (kept = true));
  await until(async () => (await subscriber.history("x").then(() => true)), 1000, "a local answer");
  subscriber.unsubscribe("gone");
  await within(gone, 1000, "the unsubscribed subject's subscribe");
  assert.equal(kept, false, "a subscribe of another subject still waits for Redis");
  await redis.start();
  await within(news, 5000, "the subscribe of the subject still subscribed");
});

Deno.test("redis bus drops a link that hears nothing and reconnects it", async () => {
  await using redis = await startRedis();
  const lines: string[] = [];
  const logger = createLogger("test", { level: "warn", sink: (line) => lines.push(line) });
  await using link = bus(redis.port, { pingInterval: 100, logger });
  await link.subscribe("news", () => {});
  await until(() => link.connected, 2000, "the links");
  // SIGSTOP: the server keeps its sockets open but answers nothing, as behind a partition.
  const pid = Number(await redis.cli("INFO", "server").then((info) => /process_id:(\d+)/.exec(info)![1]));
  Deno.kill(pid, "SIGSTOP");
  try {
    await until(() => !link.connected, 3000, "the silent link to be dropped");
    // Both links ping on their own timers: `connected` goes false with the
    // first one dropped; the subscription link (the one `reconnects` counts)
    // must be dropped too before Redis answers again.
    await until(
      () => lines.some((line) => line.includes("link=subscriptions")),
      3000,
      "the subscription link to be dropped",
    );
  } finally {
    Deno.kill(pid, "SIGCONT");
  }
  // At least once: with pings every 100 ms, a loaded machine can drop the new link too, and it comes back again.
  await until(() => link.connected && link.reconnects >= 1, 5000, "the link to come back");
  assert.deepEqual(await link.publish("news", 1), { reached: 1 });
});

Deno.test("redis bus keeps delivering after a handler throws", async () => {
  await using redis = await startRedis();
  await using subscriber = bus(redis.port);
  await using publisher = bus(redis.port);
  const got: Json[] = [];
  await subscriber.subscribe("news", (data) => {
    if (data === "bad") throw new Error("the app failed");
    got.push(data);
  });
  await publisher.publish("news", "bad");
  await publisher.publish("news", "good");
  await until(() => got.length === 1, 2000, "the next event");
  assert.deepEqual(got, ["good"]);
  assert.ok(subscriber.connected);
  assert.equal(subscriber.reconnects, 0);
});

Deno.test("redis bus drops a message on its channel that another Redis user published", async () => {
  await using redis = await startRedis();
  await using subscriber = bus(redis.port);
  const got: Json[] = [];
  await subscriber.subscribe("news", (data) => got.push(data));
  await redis.cli("PUBLISH", "channel:news", "not json");
  await redis.cli("PUBLISH", "channel:news", JSON.stringify({ d: "ours" }));
  await until(() => got.length === 1, 2000, "our message");
  assert.deepEqual(got, ["ours"]);
});

Deno.test("redis bus over TLS keeps no memory per failed connect while Redis is down, and links again once it is back", async () => {
  // Deno 2.9's node:tls keeps every TLS socket whose TCP connect was refused (about 9 KiB each): a bus that dialed TLS
  // at each retry grew by megabytes a minute while Redis was down. At these delays that would be hundreds of attempts.
  v8.setFlagsFromString("--expose-gc");
  const gc: () => void = vm.runInNewContext("gc");
  const heapAfterGc = () => (gc(), Deno.memoryUsage().heapUsed);
  await using certs = await makeTestCertificates();
  const root = (path: string) => new URL(`../${path}`, import.meta.url).pathname;
  await using redis = await startRedis({
    tls: { certFile: root(certs.server.cert), keyFile: root(certs.server.key), caFile: root(certs.ca) },
  });
  await using link = bus(redis.port, { tls: { caCerts: [certs.caPem] }, reconnectDelay: 1, maxReconnectDelay: 2 });
  await using publisher = bus(redis.port, { tls: { caCerts: [certs.caPem] } });
  const got: Json[] = [];
  await within(link.subscribe("news", (data) => got.push(data)), 5000, "the subscription");
  await redis.stop();
  await until(() => !link.connected, 5000, "the links lost");
  const before = heapAfterGc();
  const outage = performance.now();
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const grown = heapAfterGc() - before;
  assert.ok(
    grown < 1024 * 1024,
    `the heap grew ${grown} bytes in ${Math.round(performance.now() - outage)} ms of outage`,
  );
  await redis.start();
  await until(() => link.connected && publisher.connected, 10_000, "both buses linked again");
  await until(async () => (await publisher.publish("news", "back")).reached === 1, 5000, "the subscription again");
  await until(() => got.includes("back"), 2000, "the event");
});

Deno.test("redis bus says when the address's scheme may be wrong: rediss:// to a plain Redis, redis:// to a TLS one", async () => {
  await using certs = await makeTestCertificates();
  const root = (path: string) => new URL(`../${path}`, import.meta.url).pathname;
  await using plain = await startRedis();
  await using tls = await startRedis({
    tls: { certFile: root(certs.server.cert), keyFile: root(certs.server.key), caFile: root(certs.ca) },
  });
  const cases: [number, RedisBusOptions, RegExp][] = [
    [
      plain.port,
      { tls: { caCerts: [certs.caPem] }, connectTimeout: 300 },
      /hint="no TLS handshake in time: .*use redis:\/\//,
    ],
    [tls.port, {}, /hint="Redis closed the connection before answering: .*use rediss:\/\/"/],
  ];
  for (const [port, options, hint] of cases) {
    const lines: string[] = [];
    const logger = createLogger("test", { level: "info", sink: (line) => lines.push(line) });
    await using _link = bus(port, { ...options, logger });
    await until(() => lines.some((line) => line.includes("cannot reach redis")), 5000, "the warning");
    assert.match(lines.find((line) => line.includes("cannot reach redis"))!, hint);
  }
});

Deno.test("redis bus: a subject unsubscribed while Redis is down stays unsubscribed, even past a connect attempt that fails", async () => {
  await using redis = await startRedis();
  await using link = bus(redis.port, { reconnectDelay: 5, maxReconnectDelay: 50 });
  await using publisher = bus(redis.port);
  await within(link.subscribe("a", () => {}), 5000, "a");
  await within(link.subscribe("b", () => {}), 5000, "b");
  await redis.stop();
  await until(() => !link.connected, 5000, "the links lost");
  link.unsubscribe("a");
  // Something on Redis's port that accepts and closes (a Redis starting, a proxy): an attempt that fails after TCP.
  const flapping = Deno.listen({ hostname: "127.0.0.1", port: redis.port });
  let accepted = 0;
  const accepting = (async () => {
    for await (const conn of flapping) accepted++, conn.close();
  })();
  await until(() => accepted >= 8, 5000, "attempts that fail (probes and connects of both links)");
  flapping.close();
  await accepting;
  await redis.start();
  await until(() => link.connected && publisher.connected, 10_000, "both buses linked again");
  await until(
    async () => /channel:a\s+0\s+channel:b\s+1/.test(await redis.cli("PUBSUB", "NUMSUB", "channel:a", "channel:b")),
    5000,
    "a unsubscribed at Redis, b subscribed",
  );
  assert.equal((await publisher.publish("a", 1)).reached, 0);
});
