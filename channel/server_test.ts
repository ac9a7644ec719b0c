import assert from "node:assert/strict";
import { HubClient } from "./client.ts";
import { quiet, RawPeer, startHub, until, within } from "./testing.ts";
import { encodeLengthPrefixed, encodeMessage, type Json, PROTOCOL_VERSION } from "../shared/wire.ts";
import { concat } from "../shared/bytes.ts";
import { serveHub } from "./server.ts";

function client(port: number, options: ConstructorParameters<typeof HubClient>[0] = {}): HubClient {
  return new HubClient({ port, logger: quiet, ...options });
}

/** Collects a subject's events on a client; `wait(n)` resolves once n arrived. */
function collect(target: HubClient, channel: string) {
  const received: Json[] = [];
  let wake = () => {};
  target.subscribe(channel, (data) => {
    received.push(data);
    wake();
  });
  return {
    received,
    async wait(n: number, ms = 5000) {
      await within(
        new Promise<void>((resolve) => {
          const check = () => received.length >= n && resolve();
          wake = check;
          check();
        }),
        ms,
        `${n} events on ${channel} (got ${received.length})`,
      );
    },
  };
}

Deno.test("hub delivers a publish to subscribers, acks the count, and stops after unsubscribe", async () => {
  await using hub = startHub();
  await using a = client(hub.port);
  await using b = client(hub.port);
  const news = collect(a, "news");
  await a.ready();
  // The publish goes out after b's hello; a's subscribe was sent before, on
  // a's own connection, so wait for the hub to have it.
  await a.publish("sync", null);
  assert.equal(await b.publish("news", { title: "hi" }), 1);
  await news.wait(1);
  assert.deepEqual(news.received, [{ title: "hi" }]);
  a.unsubscribe("news");
  await a.publish("sync", null);
  assert.equal(await b.publish("news", "again"), 0);
});

Deno.test("hub delivers one event per channel of a multi-channel publish", async () => {
  await using hub = startHub();
  await using a = client(hub.port);
  const x = collect(a, "x");
  const y = collect(a, "y");
  await a.publish("sync", null);
  await using b = client(hub.port);
  assert.equal(await b.publish(["x", "y", "z"], "m"), 2);
  await x.wait(1);
  await y.wait(1);
});

Deno.test("hub delivers a publisher its own publish when it subscribed", async () => {
  await using hub = startHub();
  await using a = client(hub.port);
  const own = collect(a, "self");
  assert.equal(await a.publish("self", "mine"), 1);
  // The event is written before the ack, on the same connection.
  assert.deepEqual(own.received, ["mine"]);
});

Deno.test("hub acks the number of subscribers reached", async () => {
  await using hub = startHub();
  const subscribers = Array.from({ length: 5 }, () => client(hub.port));
  try {
    for (const s of subscribers) {
      s.subscribe("count", () => {});
      await s.publish("sync", null);
    }
    await using publisher = client(hub.port);
    assert.equal(await publisher.publish("count", 1), 5);
    await subscribers[0]!.close();
    await until(() => hub.server.hub.stats.peers === 5, 2000, "the hub to see one subscriber leave");
    assert.equal(await publisher.publish("count", 2), 4);
  } finally {
    await Promise.all(subscribers.map((s) => s.close()));
  }
});

Deno.test("hub publishLoop round-robins over subscribers from the first", async () => {
  await using hub = startHub();
  const subscribers = Array.from({ length: 3 }, () => client(hub.port));
  try {
    const inboxes = [];
    for (const s of subscribers) {
      inboxes.push(collect(s, "jobs"));
      await s.publish("sync", null);
    }
    await using publisher = client(hub.port);
    for (let i = 1; i <= 7; i++) assert.equal(await publisher.publishLoop("jobs", i), 1);
    await inboxes[0]!.wait(3);
    assert.deepEqual(inboxes.map((inbox) => inbox.received), [[1, 4, 7], [2, 5], [3, 6]]);
  } finally {
    await Promise.all(subscribers.map((s) => s.close()));
  }
});

Deno.test("hub queues hand each reserved consumer one message, and enqueue acks", async () => {
  await using hub = startHub();
  await using producer = client(hub.port);
  for (const m of ["m1", "m2", "m3"]) assert.equal(await producer.enqueue("q", m), 1);
  await using worker = client(hub.port);
  const got: Json[] = [];
  worker.watch("q", (data) => {
    got.push(data);
  }, { autoReserve: false });
  worker.reserve();
  await until(() => got.length === 1, 2000, "m1");
  worker.reserve();
  worker.reserve();
  await until(() => got.length === 3, 2000, "m2 and m3");
  assert.deepEqual(got, ["m1", "m2", "m3"]);
});

Deno.test("hub gives a queue message to the next consumer when the one it was handed is dropped before taking it", async () => {
  await using hub = startHub({ maxPendingBytes: 64 * 1024, closeGrace: 5000 });
  await using slow = await RawPeer.connect(hub.port);
  await slow.send({ type: "watch", queues: ["q1", "q2"] });
  await slow.send({ type: "reserve" });
  await using producer = client(hub.port);
  await until(() => hub.server.hub.stats.queues === 2, 2000, "the watches");
  // q1's message is queued for the slow consumer; q2's passes its cap, and
  // it is dropped with q1's message unwritten.
  const data = "w".repeat(40 * 1024);
  assert.equal(await producer.enqueue(["q1", "q2"], data), 2);
  assert.deepEqual((await slow.readToEnd(5000)).map((message) => message.type), ["error"]);
  assert.equal(hub.server.hub.stats.queuedMessages, 2, "both messages wait again");
  await using worker = client(hub.port);
  const got: Json[] = [];
  worker.watch("q1", (message) => {
    got.push(message);
  });
  await until(() => got.length === 1, 2000, "q1's message");
  assert.deepEqual(got, [data]);
  assert.equal(hub.server.hub.stats.queuedMessages, 1, "q2's message waits for a consumer of q2");
});

Deno.test("hub queue with autoReserve delivers every message, one at a time", async () => {
  await using hub = startHub();
  await using worker = client(hub.port);
  const got: Json[] = [];
  let busy = 0;
  worker.watch("q", async (data) => {
    busy++;
    assert.equal(busy, 1, "one message at a time");
    got.push(data);
    await new Promise((resolve) => setTimeout(resolve, 1));
    busy--;
  });
  await worker.publish("sync", null);
  await using producer = client(hub.port);
  for (let i = 0; i < 20; i++) await producer.enqueue("q", i);
  await until(() => got.length === 20, 3000, "20 queue messages");
  assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => i));
});

Deno.test("hub refuses an enqueue past the queue limit with an error and keeps the connection", async () => {
  await using hub = startHub({ maxQueueLength: 2 });
  await using producer = client(hub.port);
  await producer.enqueue("q", 1);
  await producer.enqueue("q", 2);
  await assert.rejects(producer.enqueue("q", 3), {
    name: "HubError",
    code: "refused",
    message: 'Cannot enqueue: queue "q" holds its limit of 2 messages',
  });
  assert.equal(hub.server.hub.stats.queuedMessages, 2);
  assert.equal(await producer.publish("still", "up"), 0);
});

Deno.test("hub disconnects a subscriber over its pending-bytes cap while others keep receiving", async () => {
  const cap = 64 * 1024;
  await using hub = startHub({ maxPendingBytes: cap, writeTimeout: 200, closeGrace: 5000 });
  // A subscriber that never reads.
  await using slow = await RawPeer.connect(hub.port);
  await slow.send({ type: "subscribe", subjects: ["firehose"] });
  await using fast = client(hub.port);
  const inbox = collect(fast, "firehose");
  await using publisher = client(hub.port);
  await fast.publish("sync", null);
  await until(() => hub.server.hub.stats.peers === 3, 2000, "three peers");

  const payload = "x".repeat(16 * 1024);
  let sent = 0;
  // Enough to fill the kernel's buffers and the cap several times over.
  while (!hub.logs.some((line) => line.includes("Slow consumer")) && sent < 5000) {
    await publisher.publish("firehose", payload);
    sent++;
  }
  const kicked = hub.logs.find((line) => line.includes("Slow consumer"));
  assert.ok(kicked, `the slow subscriber was never disconnected after ${sent} publishes`);
  assert.match(kicked, /level=warn .*msg="closing connection"/);
  await inbox.wait(sent, 10_000);
  assert.equal(await publisher.publish("firehose", "after"), 1, "only the fast subscriber is left");
  const tail = (await slow.readToEnd(10_000)).at(-1);
  assert.equal(tail?.type, "error");
  assert.match((tail as { reason: string }).reason, /^Slow consumer: /);
});

Deno.test("hub disconnects a subscriber that reads, but slower than it is sent to, once what it was sent waits past the write timeout", async () => {
  const writeTimeout = 500;
  // A cap it never reaches: only the wait can catch this subscriber.
  await using hub = startHub({ maxPendingBytes: 256 * 1024 * 1024, writeTimeout, closeGrace: 5000 });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: hub.port });
  const write = async (bytes: Uint8Array) => {
    for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
  };
  await write(encodeMessage({ type: "hello", version: PROTOCOL_VERSION }));
  await write(encodeMessage({ type: "subscribe", subjects: ["trickle"] }));
  await until(() => hub.server.hub.stats.subjects === 1, 2000, "the subscription");
  // 256 KiB every 20 ms: the hub's writes move on well within the timeout, none blocks for long.
  let read = 0;
  const reading = (async () => {
    const buffer = new Uint8Array(256 * 1024);
    while (true) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) return;
      read += n;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  await using publisher = client(hub.port, { maxPendingBytes: 64 * 1024 * 1024, maxWaitingBytes: 256 * 1024 * 1024 });
  const payload = "t".repeat(32 * 1024);
  const acks: Promise<number>[] = [];
  // Up to 80 MB, far faster than 12.8 MB/s is read: a backlog of seconds, under the cap.
  for (let i = 0; i < 2400 && !hub.logs.some((line) => line.includes("Slow consumer")); i++) {
    acks.push(publisher.publish("trickle", payload).catch(() => -1));
    if (i % 100 === 99) await new Promise((resolve) => setTimeout(resolve, 0));
  }
  await until(
    () => hub.logs.some((line) => line.includes("Slow consumer")),
    10_000,
    "the hub to drop the trickling subscriber",
  );
  const line = hub.logs.find((line) => line.includes("Slow consumer"))!;
  assert.match(line, /reason="Slow consumer: what was sent to it \d+ ms ago is not written yet"/);
  assert.ok(read > 0, "it was reading");
  // Those it held are answered now: the rest of its backlog went with it.
  await Promise.all(acks);
  conn.close();
  await reading;
});

Deno.test("hub disconnects a subscriber whose queued frames pass the pending-bytes cap", async () => {
  const cap = 64 * 1024;
  await using hub = startHub({ maxPendingBytes: cap, closeGrace: 5000 });
  await using slow = await RawPeer.connect(hub.port);
  await slow.send({ type: "subscribe", subjects: ["burst"] });
  await using publisher = client(hub.port);
  await until(() => hub.server.hub.stats.peers === 2, 2000, "two peers");
  // Many publishes in one burst: their frames queue behind one write.
  const acks = Array.from({ length: 400 }, () => publisher.publish("burst", "y".repeat(8 * 1024)));
  const counts = await Promise.all(acks);
  assert.ok(counts.includes(0), "publishes after the disconnect reach nobody");
  const reason = `Slow consumer: more than ${cap} bytes waiting to be written`;
  assert.ok(hub.logs.some((line) => line.includes(reason)));
  assert.deepEqual((await slow.readToEnd(10_000)).at(-1), { type: "error", reason });
});

Deno.test("hub does not count a subscriber that a multi-channel publish overflowed, though one of its events was queued", async () => {
  await using hub = startHub({ maxPendingBytes: 64 * 1024, closeGrace: 5000 });
  await using slow = await RawPeer.connect(hub.port);
  await slow.send({ type: "subscribe", subjects: ["a", "b"] });
  await using publisher = client(hub.port);
  await until(() => hub.server.hub.stats.subjects === 2, 2000, "both subscriptions");
  // The event on "a" is queued; the one on "b" passes the cap, and the
  // subscriber is dropped with both undelivered.
  assert.equal(await publisher.publish(["a", "b"], "z".repeat(40 * 1024)), 0);
  const messages = await slow.readToEnd(5000);
  assert.deepEqual(messages.map((message) => message.type), ["error"]);
});

Deno.test("hub refuses a publish whose event would be over the frame limit, and keeps every connection", async () => {
  await using hub = startHub({ maxFrameBytes: 65536 });
  await using subscriber = client(hub.port);
  const inbox = collect(subscriber, "news");
  await subscriber.ready();
  let drops = 0;
  subscriber.addEventListener("disconnected", () => drops++);
  await using publisher = await RawPeer.connect(hub.port);
  await until(() => hub.server.hub.stats.subjects === 1, 2000, "the subscription");
  // 48 KiB of JSON that the hub encodes again as 252 KiB: 1e20 is written out in full.
  const data = `[${Array(12_000).fill("1e20").join(",")}]`;
  const text = `{"type":"publish","id":7,"subjects":["news"],"data":${data}}`;
  await publisher.write(encodeLengthPrefixed(new TextEncoder().encode(text)));
  const refusal = await publisher.next();
  assert.equal(refusal.type, "error");
  assert.equal((refusal as { id?: number }).id, 7);
  assert.match(
    (refusal as { reason: string }).reason,
    /^Cannot route: the message encodes to a \d+-byte frame, over the 65536-byte limit$/,
  );
  await publisher.send({ type: "publish", id: 8, subjects: ["news"], data: "small" });
  assert.deepEqual(await publisher.next(), { type: "ack", id: 8, count: 1 });
  await inbox.wait(1);
  assert.deepEqual(inbox.received, ["small"]);
  assert.equal(drops, 0, "the subscriber kept its link");
});

Deno.test("hub stops reading a client that pings without reading its pongs, instead of queueing them up to the cap", async () => {
  // The cap would be reached within a second of pongs; the blocked write only
  // after 3 s.
  await using hub = startHub({ maxPendingBytes: 1024 * 1024, writeTimeout: 3000, closeGrace: 5000 });
  await using pinger = await RawPeer.connect(hub.port);
  const ping = encodeLengthPrefixed(new TextEncoder().encode('{"type":"ping"}'));
  const burst = new Uint8Array(ping.length * 100_000);
  for (let i = 0; i < 100_000; i++) burst.set(ping, i * ping.length);
  // 38 MB of pings, written without reading a byte; the hub's drop ends it.
  const writing = (async () => {
    for (let i = 0; i < 20; i++) await pinger.write(burst);
  })().catch(() => {});
  await until(() => hub.logs.some((line) => line.includes("closing connection")), 10_000, "the hub to drop the pinger");
  const line = hub.logs.find((line) => line.includes("closing connection"))!;
  assert.match(line, /reason="Slow consumer: a write has been blocked for \d+ ms"/);
  pinger.close();
  await writing;
});

Deno.test("hub stops reading a publisher with 10,000 publishes waiting for a slow subscriber, until they are acked", async () => {
  await using hub = startHub({ maxPendingBytes: 64 * 1024 * 1024, writeTimeout: 60_000, closeGrace: 5000 });
  const slow = await RawPeer.connect(hub.port);
  await slow.send({ type: "subscribe", subjects: ["w"] });
  await using publisher = await RawPeer.connect(hub.port);
  await until(() => hub.server.hub.stats.subjects === 1, 2000, "the subscription");
  // 20 MB of events: more than the subscriber's socket buffers take.
  const count = 20_000;
  const data = "d".repeat(1000);
  const frames = Array.from(
    { length: count },
    (_, i) => encodeMessage({ type: "publish", id: i + 1, subjects: ["w"], data }),
  );
  // The write blocks while the hub does not read: it finishes once it reads again.
  const writing = publisher.write(concat(frames));
  // Each publish waits for the subscriber, which reads nothing; each costs memory.
  await until(() => hub.server.stats().publishesWaiting >= 10_000, 5000, "10,000 publishes waiting");
  let most = 0;
  for (let look = 0; look < 20; look++) {
    most = Math.max(most, hub.server.stats().publishesWaiting);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  // One 64 KiB read of publishes past the limit at most.
  assert.ok(most < 12_000, `${most} publishes waiting`);
  slow.close();
  await within(writing, 10_000, "the hub to read the rest");
  const acks = [];
  while (acks.length < count) acks.push(await publisher.next(10_000));
  assert.ok(acks.every((ack) => ack.type === "ack"));
  assert.equal(hub.server.stats().publishesWaiting, 0);
});

for (
  const [name, bytes, reason] of [
    ["a declared length below the header", Uint8Array.of(0, 0, 0, 2), /declared length 2 is below the 4-byte header/],
    ["a declared length over the maximum", Uint8Array.of(0, 0x10, 0, 0), /exceeds the 65536-byte maximum/],
    ["invalid JSON", encodeLengthPrefixed(new TextEncoder().encode("{nope")), /^Cannot decode message:/],
    ["invalid UTF-8", encodeLengthPrefixed(Uint8Array.of(0x22, 0xff, 0x22)), /not valid UTF-8/],
    [
      "an unknown message type",
      encodeLengthPrefixed(new TextEncoder().encode('{"type":"boom"}')),
      /unknown type "boom"/,
    ],
    ["a string as the message", encodeLengthPrefixed(new TextEncoder().encode('"str"')), /expected an object/],
    [
      "an array as a subject",
      encodeLengthPrefixed(new TextEncoder().encode('{"type":"subscribe","subjects":[[1]]}')),
      /every subject must be a non-empty string/,
    ],
  ] as const
) {
  Deno.test(`hub closes only the connection that sent ${name}, with an error frame and a log line`, async () => {
    await using hub = startHub({ maxFrameBytes: 65536 });
    await using good = client(hub.port);
    const inbox = collect(good, "ok");
    await good.publish("sync", null);
    await using bad = await RawPeer.connect(hub.port);
    await bad.write(bytes);
    const messages = await bad.readToEnd();
    assert.equal(messages.length, 1);
    assert.equal(messages[0]!.type, "error");
    assert.match((messages[0] as { reason: string }).reason, reason);
    assert.ok(
      hub.logs.some((line) =>
        line.includes("closing connection") && reason.test(JSON.parse(line.split("reason=")[1]!))
      ),
    );
    assert.equal(await good.publish("ok", "still working"), 1);
    await inbox.wait(1);
  });
}

Deno.test("hub requires hello before anything else", async () => {
  await using hub = startHub();
  await using raw = await RawPeer.connect(hub.port, { hello: false });
  await raw.send({ type: "subscribe", subjects: ["x"] });
  assert.deepEqual(await raw.readToEnd(), [{ type: "error", reason: "Expected hello first, got subscribe" }]);
});

Deno.test("hub refuses a client without the right token", async () => {
  await using hub = startHub({ token: "s3cret" });
  await using none = await RawPeer.connect(hub.port);
  assert.deepEqual(await none.readToEnd(), [{ type: "error", reason: "Unauthorized: this hub needs a token" }]);
  await using wrong = await RawPeer.connect(hub.port, { token: "guess" });
  assert.deepEqual(await wrong.readToEnd(), [{ type: "error", reason: "Unauthorized: wrong token" }]);
  await using right = client(hub.port, { token: "s3cret" });
  assert.equal(await right.publish("x", 1), 0);
  assert.ok(!hub.logs.some((line) => line.includes("s3cret")), "the token never appears in logs");
});

Deno.test("hub answers ping with pong", async () => {
  await using hub = startHub();
  await using raw = await RawPeer.connect(hub.port);
  await raw.send({ type: "ping" });
  assert.deepEqual(await raw.next(), { type: "pong" });
});

Deno.test("hub closes a connection silent for longer than its ping intervals allow", async () => {
  await using hub = startHub({ pingInterval: 50, idlePings: 2 });
  await using raw = await RawPeer.connect(hub.port);
  const started = Date.now();
  const messages = await raw.readToEnd(3000);
  assert.deepEqual(messages, [{ type: "error", reason: "Idle: no message for 100 ms" }]);
  assert.ok(Date.now() - started >= 100);
});

/** Writes `bytes` every `ms` until `done` settles; resolves with `done`'s value. */
async function keepWriting<T>(raw: RawPeer, bytes: Uint8Array, ms: number, done: Promise<T>): Promise<T> {
  let settled = false;
  const watched = done.finally(() => (settled = true));
  // A rejection is reported by the return below, not as unhandled meanwhile.
  watched.catch(() => {});
  while (!settled) {
    await raw.write(bytes).catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, ms));
  }
  return watched;
}

// Regression (found by channel/fuzz_test.ts): any byte used to count as a
// sign of life, so a peer trickling a frame it never finishes held its slot
// and a buffer of the frame's declared size forever.
Deno.test("hub closes a connection trickling a frame it never finishes at the idle limit", async () => {
  await using hub = startHub({ pingInterval: 50, idlePings: 2 });
  await using raw = await RawPeer.connect(hub.port);
  await raw.write(Uint8Array.of(0, 0, 0x10, 0)); // a 4 KiB frame, sent one byte every 20 ms
  const messages = await keepWriting(raw, Uint8Array.of(0x20), 20, raw.readToEnd(3000));
  assert.deepEqual(messages, [{ type: "error", reason: "Idle: no message for 100 ms" }]);
});

// Regression: the original's empty-frame keepalive kept a connection that
// never said hello (nor gave the token) connected forever; enough of them
// filled --max-connections. It now gets the hello timeout, not the longer
// idle limit.
Deno.test("hub closes a connection that sends keepalives but never says hello at the hello timeout", async () => {
  await using hub = startHub({ pingInterval: 10_000, helloTimeout: 100 });
  await using raw = await RawPeer.connect(hub.port, { hello: false });
  const started = Date.now();
  const messages = await keepWriting(raw, Uint8Array.of(0, 0, 0, 4), 20, raw.readToEnd(3000));
  assert.deepEqual(messages, [{ type: "error", reason: "No hello within 100 ms" }]);
  assert.ok(Date.now() - started < 1000, "long before the idle limit");
});

Deno.test("hub gives a client that says hello in time the idle limit, not the hello timeout", async () => {
  await using hub = startHub({ pingInterval: 50, idlePings: 8, helloTimeout: 50 });
  await using raw = await RawPeer.connect(hub.port);
  // Silent for 250 ms: past twice the hello timeout, within the idle limit of 400.
  assert.equal(await raw.readToEnd(250).then(() => "closed", () => "open"), "open");
});

Deno.test("hub keeps a client sending empty keepalive frames after hello connected", async () => {
  await using hub = startHub({ pingInterval: 50, idlePings: 2 });
  await using raw = await RawPeer.connect(hub.port);
  const ended = raw.readToEnd(400).then(() => "closed", () => "open");
  assert.equal(await keepWriting(raw, Uint8Array.of(0, 0, 0, 4), 20, ended), "open");
});

Deno.test("hub keeps a pinging client connected past the idle limit", async () => {
  // An idle limit of 400 ms, pings every 50: eight to spare, on a busy machine too.
  await using hub = startHub({ pingInterval: 100, idlePings: 4 });
  await using c = client(hub.port, { pingInterval: 50, maxMissedPongs: 10 });
  await c.ready();
  let drops = 0;
  c.addEventListener("disconnected", () => drops++);
  await new Promise((resolve) => setTimeout(resolve, 1200));
  assert.equal(drops, 0);
  assert.equal(hub.server.stats().disconnects.idle, 0);
  assert.equal(await c.publish("x", 1), 0);
});

Deno.test("hub refuses connections past its limit", async () => {
  await using hub = startHub({ maxConnections: 1 });
  await using first = await RawPeer.connect(hub.port);
  await first.send({ type: "ping" });
  await first.next();
  await using second = await RawPeer.connect(hub.port, { hello: false });
  assert.deepEqual(await second.readToEnd(), [{ type: "error", reason: "Hub is full: 1 connections" }]);
});

Deno.test("hub keeps clients without the token from locking out those with it: the oldest waiting for hello goes", async () => {
  await using hub = startHub({ token: "s3cret", maxConnections: 4 });
  const squatters = [];
  for (let i = 0; i < 4; i++) squatters.push(await RawPeer.connect(hub.port, { hello: false }));
  try {
    await using pusher = await RawPeer.connect(hub.port, { token: "s3cret" });
    await pusher.send({ type: "ping" });
    assert.deepEqual(await pusher.next(), { type: "pong" });
    assert.deepEqual(await squatters[0]!.readToEnd(), [{
      type: "error",
      reason: "Hub is full: 4 connections are waiting for their hello",
    }]);
  } finally {
    for (const squatter of squatters) await squatter[Symbol.asyncDispose]();
  }
});

Deno.test("hub counts a connection against its limit from its hello: a hello past the limit is refused", async () => {
  await using hub = startHub({ maxConnections: 2 });
  const hello = { type: "hello", version: PROTOCOL_VERSION } as const;
  const greet = async (peer: RawPeer) => {
    await peer.send(hello);
    await peer.send({ type: "ping" });
    assert.deepEqual(await peer.next(), { type: "pong" });
  };
  await using a = await RawPeer.connect(hub.port, { hello: false });
  await using b = await RawPeer.connect(hub.port, { hello: false });
  await greet(a);
  // One connection past its hello, and two waiting for theirs: within both budgets.
  await using c = await RawPeer.connect(hub.port, { hello: false });
  await greet(b);
  await c.send(hello);
  assert.deepEqual(await c.readToEnd(), [{ type: "error", reason: "Hub is full: 2 connections" }]);
});

Deno.test("hub closes a connection that subscribes past its channel limit", async () => {
  await using hub = startHub({ maxSubjectsPerPeer: 2 });
  await using raw = await RawPeer.connect(hub.port);
  await raw.send({ type: "subscribe", subjects: ["a", "b", "c"] });
  assert.deepEqual(await raw.readToEnd(), [{
    type: "error",
    reason: "Cannot subscribe: 3 subjects and queues exceed the limit of 2 per connection",
  }]);
});

Deno.test("hub shutdown closes every connection and resolves finished", async () => {
  const hub = startHub();
  const raw = await RawPeer.connect(hub.port);
  await raw.send({ type: "ping" });
  await raw.next();
  await hub.server.shutdown();
  await within(hub.server.finished, 2000, "finished");
  assert.deepEqual(await raw.readToEnd(), []);
  raw.close();
  await hub.server.shutdown();
});

Deno.test("hub shutdown writes every event it queued for a subscriber before closing it, and acks each", async () => {
  // Room for the whole backlog, and no time limit on blocked writes: only the
  // shutdown can cut this subscriber off.
  const hub = startHub({ maxPendingBytes: 64 * 1024 * 1024, writeTimeout: 60_000, closeGrace: 10_000 });
  await using slow = await RawPeer.connect(hub.port);
  await slow.send({ type: "subscribe", subjects: ["news"] });
  await using publisher = await RawPeer.connect(hub.port);
  await until(() => hub.server.hub.stats.subjects === 1, 2000, "the subscription");
  await sendBacklog(publisher, "news", 600);
  await until(() => hub.server.stats().deliveries === 600, 5000, "every event queued");
  const stopping = hub.server.shutdown();
  const [events, replies] = await Promise.all([slow.readToEnd(10_000), publisher.readToEnd(10_000)]);
  assert.equal(events.filter((message) => message.type === "event").length, 600);
  // The acks of events written during the shutdown are sent too: one not
  // sent makes the publisher send again, a duplicate for every subscriber.
  assert.equal(replies.filter((message) => message.type === "ack" && message.count === 1).length, 600);
  await within(stopping, 5000, "the shutdown");
});

/** Sends `count` publishes of 16 KiB to `channel` in one write: at 600, 10 MB, more than a socket takes unread. */
function sendBacklog(publisher: RawPeer, channel: string, count: number): Promise<void> {
  const data = "n".repeat(16 * 1024);
  const frames = Array.from(
    { length: count },
    (_, i) => encodeMessage({ type: "publish", id: i + 1, subjects: [channel], data }),
  );
  return publisher.write(concat(frames));
}

Deno.test("hub holds publishes during its startup grace so subscribers that reconnect late still get them", async () => {
  // A grace long enough for the late subscriber to connect on a busy machine.
  await using hub = startHub({ startupGrace: 1000 });
  const started = Date.now();
  await using publisher = client(hub.port);
  const publishing = publisher.publish("news", "early");
  await publisher.ready();
  await using late = client(hub.port);
  const inbox = collect(late, "news");
  await late.ready();
  assert.equal(await within(publishing, 3000, "the held publish"), 1);
  assert.ok(Date.now() - started >= 990, "the publish waited for the grace");
  await inbox.wait(1);
  assert.deepEqual(inbox.received, ["early"]);
});

Deno.test("hub refuses a ping interval longer than a timer waits, before it listens", () => {
  // Longer, the timer fires after 1 ms: the idle sweep would run every millisecond.
  assert.throws(() => serveHub({ port: 0, pingInterval: 2 ** 31 }), /^RangeError: Invalid pingInterval/);
});

Deno.test("hub hands out no queue message twice: one taken by a slow consumer that is dropped arrives once", async () => {
  const MiB = 1024 * 1024;
  await using hub = startHub({ maxFrameBytes: 64 * MiB, maxPendingBytes: 128 * MiB, writeTimeout: 1000 });
  await using c1 = await RawPeer.connect(hub.port);
  await c1.send({ type: "subscribe", subjects: ["big"] });
  await c1.send({ type: "watch", queues: ["q"] });
  await c1.send({ type: "reserve" });
  await c1.send({ type: "ping" });
  assert.equal((await c1.next()).type, "pong"); // c1 holds the first credit
  await using c2 = await RawPeer.connect(hub.port);
  await c2.send({ type: "watch", queues: ["q"] });
  await c2.send({ type: "reserve" });
  await c2.send({ type: "ping" });
  assert.equal((await c2.next()).type, "pong");
  await using producer = await RawPeer.connect(hub.port);
  const big = "x".repeat(16 * MiB);
  // An event larger than c1's socket buffers while it does not read: the write blocks.
  await producer.send({ type: "publish", id: 1, subjects: ["big"], data: big });
  await until(() => hub.server.stats().deliveries === 1, 15_000, "the first event to be queued");
  // m1 and another big event wait behind it, for the next write.
  await producer.send({ type: "enqueue", id: 2, queues: ["q"], data: "m1" });
  assert.deepEqual(await producer.next(), { type: "ack", id: 2, count: 1 });
  // Larger than any socket buffers can take: reading the first event grows
  // c1's receive buffer (Linux autotunes it up to tcp_rmem's maximum, 32 MiB
  // on our machines), and a second event of 16 MiB then fit whole, sometimes,
  // so that nothing stalled and c1 was never dropped.
  await producer.send({ type: "publish", id: 3, subjects: ["big"], data: "x".repeat(48 * MiB) });
  await until(() => hub.server.stats().deliveries === 2, 15_000, "the second event to be queued");
  // c1 reads the first event and stops: m1 and the head of the second go
  // into its socket, the rest blocks until c1 is dropped as slow. (The
  // deadlines are generous: with the whole suite running, moving and parsing
  // 16 MiB events took over 5 s on our 2 cores.)
  assert.equal((await c1.next()).type, "event");
  await until(() => hub.server.stats().disconnects.slow_consumer === 1, 15_000, "c1 to be dropped as slow").catch(
    (error) => {
      // It timed out twice in full runs on a loaded machine and never alone: say what the hub saw.
      throw new Error(
        `${error.message}; hub stats ${JSON.stringify(hub.server.stats())}; logs:\n${hub.logs.join("\n")}`,
      );
    },
  );
  // What c1's socket holds: m1, then up to tens of MiB of the second event's head, which took over 5 s to read and
  // decode once in CI's full run (the default deadline, whose timeout this used to turn into "no m1").
  const rest = await c1.readToEnd(30_000);
  const inC1 = rest.filter((message) => message.type === "queue").map((message) => message.data);
  // m1 in c1's socket when c1 was dropped stays taken. On a loaded machine
  // c1 can be dropped before it reads the first event, with m1 still in the
  // hub's writer, never written: then m1 goes back to its queue, for c2.
  // Either way once: c2 gets m2 exactly when c1 got m1.
  assert.ok(inC1.length <= 1 && inC1.every((data) => data === "m1"), `c1 got ${JSON.stringify(inC1)}`);
  await producer.send({ type: "enqueue", id: 4, queues: ["q"], data: "m2" });
  assert.deepEqual(await c2.next(), { type: "queue", queue: "q", data: inC1.length === 1 ? "m2" : "m1" });
});

Deno.test("hub does not close as idle a peer it holds back from reading, whose pings wait unread", async () => {
  await using hub = startHub({
    pingInterval: 100,
    idlePings: 2,
    writeTimeout: 60_000,
    maxPendingBytes: 64 * 1024 * 1024,
  });
  await using subscriber = await RawPeer.connect(hub.port);
  await subscriber.send({ type: "subscribe", subjects: ["c"] });
  await using publisher = await RawPeer.connect(hub.port);
  await until(() => hub.server.hub.stats.subjects === 1, 2000, "the subscription");
  // Events the subscriber does not read: over 64 KiB wait for it, so after
  // its next message the hub reads nothing more from it.
  await sendBacklog(publisher, "c", 600);
  await until(() => hub.server.stats().deliveries === 600, 5000, "the events to be queued");
  publisher.close(); // it would go idle too
  await subscriber.send({ type: "ping" });
  // A peer that came later and says nothing: once it is closed as idle, the
  // subscriber's own limit, earlier, has passed too.
  await using silent = await RawPeer.connect(hub.port);
  assert.deepEqual(await silent.readToEnd(), [{ type: "error", reason: "Idle: no message for 200 ms" }]);
  assert.equal(hub.server.stats().disconnects.idle, 1);
});

Deno.test("hub hands a publish's reply subject on in each event, and leaves it out when there is none", async () => {
  await using hub = startHub();
  await using subscriber = await RawPeer.connect(hub.port);
  await using publisher = await RawPeer.connect(hub.port);
  await subscriber.send({ type: "subscribe", subjects: ["news"] });
  await until(() => hub.server.hub.stats.subjects === 1, 2000, "the subscription");
  await publisher.send({ type: "publish", id: 1, subjects: ["news"], data: "q", reply: "_inbox.1" });
  assert.deepEqual(await subscriber.next(), { type: "event", subject: "news", data: "q", reply: "_inbox.1" });
  assert.deepEqual(await publisher.next(), { type: "ack", id: 1, count: 1 });
  await publisher.send({ type: "publishLoop", id: 2, subjects: ["news"], data: "r", reply: "_inbox.2" });
  assert.deepEqual(await subscriber.next(), { type: "event", subject: "news", data: "r", reply: "_inbox.2" });
  await publisher.send({ type: "publish", id: 3, subjects: ["news"], data: "plain" });
  const plain = await subscriber.next();
  assert.deepEqual(plain, { type: "event", subject: "news", data: "plain" });
  assert.ok(!("reply" in plain), "an event without a reply has no reply key");
});

for (
  const [name, reply, reason] of [
    ["an empty reply", "", /reply must be a non-empty string/],
    ["a reply that is not a string", 7, /reply must be a non-empty string/],
    ["a reply over the subject length", "r".repeat(257), /reply is limited to 256 characters/],
  ] as const
) {
  Deno.test(`hub answers a publish with ${name} with an error frame`, async () => {
    await using hub = startHub();
    await using bad = await RawPeer.connect(hub.port);
    const text = JSON.stringify({ type: "publish", id: 1, subjects: ["news"], data: 1, reply });
    await bad.write(encodeLengthPrefixed(new TextEncoder().encode(text)));
    const messages = await bad.readToEnd();
    assert.equal(messages.length, 1);
    assert.equal(messages[0]!.type, "error");
    assert.match((messages[0] as { reason: string }).reason, reason);
  });
}

Deno.test("hub shutdown also ends connections accepted in the turn it began in", async () => {
  // Connects resolve once the kernel has the connection, before the hub's
  // accept loop has taken it: shutting down right then finds accepts the
  // runtime completed but whose connections the loop has not yet recorded.
  for (let round = 0; round < 20; round++) {
    const hub = startHub({ closeGrace: 100 });
    const conns = await Promise.all(
      Array.from({ length: 20 }, () => Deno.connect({ hostname: "127.0.0.1", port: hub.port })),
    );
    try {
      await within(hub.server.shutdown(), 5000, `shutdown in round ${round}`);
    } finally {
      for (const conn of conns) conn.close();
    }
  }
});
