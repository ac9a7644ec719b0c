import assert from "node:assert/strict";
import { HubBus } from "./bus.ts";
import { HubClient, HubError } from "./client.ts";
import { quiet, RawPeer, startHub, until, within } from "./testing.ts";
import { BusError, coalescePublishes, type Json, publishBatch } from "../shared/bus.ts";
import { encodeLengthPrefixed, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from "../shared/wire.ts";
import { FrameDecoder } from "../shared/frame.ts";

Deno.test("hub answers a publish_batch with one batch_ack holding each item's count and position, in order", async () => {
  await using hub = startHub({ historySubjects: ["kept.*"] });
  await using subscriber = new HubClient({ port: hub.port, logger: quiet });
  const events: [string, Json, number | undefined][] = [];
  for (const subject of ["user.a", "user.b", "kept.1"]) {
    subscriber.subscribe(subject, (data, at, _reply, position) => events.push([at, data, position?.offset]));
  }
  await subscriber.flush();
  await using publisher = await RawPeer.connect(hub.port);
  await publisher.send({
    type: "publish_batch",
    id: 7,
    items: [
      { subject: "user.a", data: 1 },
      { subject: "nobody", data: 2 },
      { subject: "kept.1", data: 3 },
      { subject: "user.b", data: 4 },
      { subject: "kept.1", data: 5 },
    ],
  });
  const ack = await publisher.next();
  assert.equal(ack.type, "batch_ack");
  if (ack.type !== "batch_ack") return;
  assert.equal(ack.id, 7);
  const epoch = (ack.results[2] as { epoch: string }).epoch;
  assert.match(epoch, /^[0-9a-f]{8}$/);
  assert.deepEqual(ack.results, [
    { count: 1 },
    { count: 0 },
    { count: 1, offset: 1, epoch },
    { count: 1 },
    { count: 1, offset: 2, epoch },
  ]);
  await until(() => events.length === 4, 5000, "the four events");
  assert.deepEqual(events, [["user.a", 1, undefined], ["kept.1", 3, 1], ["user.b", 4, undefined], ["kept.1", 5, 2]]);
});

Deno.test("hub refuses a batch item too large alone, and routes the others of its batch", async () => {
  await using hub = startHub({ maxFrameBytes: 1024 });
  await using subscriber = new HubClient({ port: hub.port, logger: quiet, maxFrameBytes: 1024 });
  const got: Json[] = [];
  subscriber.subscribe("a", (data) => got.push(data));
  await subscriber.flush();
  await using publisher = await RawPeer.connect(hub.port);
  // 60 times 1e20 fits the request's frame, but not the event's, where each becomes 21 digits.
  const big = `[${Array(60).fill("1e20").join(",")}]`;
  const text = `{"type":"publish_batch","id":1,"items":[{"subject":"a","data":${big}},{"subject":"a","data":"small"}]}`;
  await publisher.write(encodeLengthPrefixed(new TextEncoder().encode(text)));
  const ack = await publisher.next();
  assert.equal(ack.type, "batch_ack");
  if (ack.type !== "batch_ack") return;
  assert.match((ack.results[0] as { error: string }).error, /over the 1024-byte limit/);
  assert.deepEqual(ack.results[1], { count: 1 });
  await until(() => got.length === 1, 5000, "the small item's event");
  assert.deepEqual(got, ["small"]);
});

Deno.test("hub delivers a keyed batch item once, and answers its retry, in the batch or later, as the first", async () => {
  await using hub = startHub({ historySubjects: ["news"] });
  await using subscriber = new HubClient({ port: hub.port, logger: quiet });
  const got: Json[] = [];
  subscriber.subscribe("news", (data) => got.push(data));
  await subscriber.flush();
  await using client = new HubClient({ port: hub.port, logger: quiet });
  const first = await client.publishBatch([
    { subject: "news", data: 1, idempotencyKey: "k1" },
    { subject: "news", data: 1, idempotencyKey: "k1" },
    { subject: "news", data: 2 },
  ]);
  assert.deepEqual(first.map((outcome) => outcome instanceof HubError ? outcome.code : outcome.count), [1, 1, 1]);
  assert.deepEqual(first[1], first[0]);
  const again = await client.publishBatch([{ subject: "news", data: 1, idempotencyKey: "k1" }]);
  assert.deepEqual(again, [first[0]]);
  // A single publish with the same key and subject is the same publish.
  assert.deepEqual(await client.publishWithPositions("news", 1, { idempotencyKey: "k1" }), first[0]);
  await client.flush();
  await subscriber.flush();
  assert.deepEqual(got, [1, 2]);
});

Deno.test("hub routes two batch items whose subject and key differ, however their newlines fall", async () => {
  await using hub = startHub();
  await using subscriber = new HubClient({ port: hub.port, logger: quiet });
  const got: [string, Json][] = [];
  for (const subject of ["a\nb", "a"]) subscriber.subscribe(subject, (data, at) => got.push([at, data]));
  await subscriber.flush();
  await using client = new HubClient({ port: hub.port, logger: quiet });
  // Subject "a\nb" with key "c", and subject "a" with key "b\nc": two publishes, not a retry of one.
  const outcomes = await client.publishBatch([
    { subject: "a\nb", data: "first", idempotencyKey: "c" },
    { subject: "a", data: "second", idempotencyKey: "b\nc" },
  ]);
  assert.deepEqual(outcomes, [{ count: 1, positions: [] }, { count: 1, positions: [] }]);
  // The hub acked once the events were in the subscriber's socket: they come before its pong.
  await within(subscriber.flush(), 5000, "the subscriber's flush");
  assert.deepEqual(got, [["a\nb", "first"], ["a", "second"]]);
});

Deno.test("hub client splits a batch over the frame limit into several frames and refuses an item too large alone", async () => {
  await using hub = startHub({ maxFrameBytes: 4096 });
  await using subscriber = new HubClient({ port: hub.port, logger: quiet, maxFrameBytes: 4096 });
  const got: Json[] = [];
  subscriber.subscribe("s", (data) => got.push(data));
  await subscriber.flush();
  await using client = new HubClient({ port: hub.port, logger: quiet, maxFrameBytes: 4096 });
  const items = Array.from({ length: 200 }, (_, i) => ({ subject: "s", data: `${i}`.padStart(100, "0") }));
  items.splice(50, 0, { subject: "s", data: "y".repeat(5000) });
  const outcomes = await client.publishBatch(items);
  assert.equal(outcomes.length, 201);
  const refused = outcomes[50];
  assert.ok(refused instanceof HubError && refused.code === "too_large", String(refused));
  assert.ok(outcomes.every((outcome, i) => i === 50 || (!(outcome instanceof HubError) && outcome.count === 1)));
  await until(() => got.length === 200, 5000, "the 200 events");
  assert.deepEqual(got, items.filter((_, i) => i !== 50).map((item) => item.data), "in order");
});

/**
 * A TCP proxy in front of the hub that counts the `publish_batch` frames
 * sent through it, for one client connection.
 */
/** A relay to the hub that counts the frames its client sends, by type (`publish_batch` unless named). */
function countingBatchFrames(hubPort: number): { port: number; frames: (type?: string) => number } & AsyncDisposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const frames = new Map<string, number>();
  const conns: Deno.Conn[] = [];
  const relay = (async () => {
    const client = await listener.accept();
    const hub = await Deno.connect({ hostname: "127.0.0.1", port: hubPort });
    conns.push(client, hub);
    const decoder = new FrameDecoder({ maxFrameBytes: 1 << 20 });
    const toHub = (async () => {
      const buffer = new Uint8Array(64 * 1024);
      for (let n; (n = await client.read(buffer).catch(() => null)) !== null;) {
        const chunk = buffer.slice(0, n);
        for (const payload of decoder.push(chunk)) {
          const { type } = JSON.parse(new TextDecoder().decode(payload));
          frames.set(type, (frames.get(type) ?? 0) + 1);
        }
        await hub.write(chunk).catch(() => {});
      }
    })();
    await Promise.all([toHub, hub.readable.pipeTo(client.writable).catch(() => {})]);
  })();
  return {
    port: listener.addr.port,
    frames: (type = "publish_batch") => frames.get(type) ?? 0,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* closed by the pipe */ }
      }
      await relay.catch(() => {});
    },
  };
}

Deno.test("hub client sends a batch that fits one frame as one frame, counting its UTF-8 exactly near the limit", async () => {
  await using hub = startHub({ maxFrameBytes: 4096 });
  await using subscriber = new HubClient({ port: hub.port, logger: quiet, maxFrameBytes: 4096 });
  const got: Json[] = [];
  subscriber.subscribe("s", (data) => got.push(data));
  await subscriber.flush();
  await using proxy = countingBatchFrames(hub.port);
  await using client = new HubClient({ port: proxy.port, logger: quiet, maxFrameBytes: 4096 });
  // 3000 bytes of items: over the frame at three bytes per character, within it counted exactly.
  const ascii = Array.from({ length: 30 }, (_, i) => ({ subject: "s", data: `${i}`.padStart(70, "0") }));
  const outcomes = await client.publishBatch(ascii);
  assert.ok(outcomes.every((outcome) => !(outcome instanceof HubError) && outcome.count === 1));
  assert.equal(proxy.frames(), 1, "one frame");
  // The same number of characters, but 3 bytes each: over the frame, so cut in several.
  const wide = ascii.map(({ subject }, i) => ({ subject, data: `${i}`.padStart(70, "€") }));
  const wideOutcomes = await client.publishBatch(wide);
  assert.ok(wideOutcomes.every((outcome) => !(outcome instanceof HubError) && outcome.count === 1));
  assert.ok(proxy.frames() - 1 >= 2, `several frames, got ${proxy.frames() - 1}`);
  await until(() => got.length === 60, 5000, "the 60 events");
  assert.deepEqual(got, [...ascii, ...wide].map((item) => item.data), "in order");
});

Deno.test("hub bus publishes a batch natively; the shared fallback gives the same outcomes one by one", async () => {
  await using hub = startHub({ historySubjects: ["kept"], maxFrameBytes: 2048 });
  await using subscriber = new HubBus({ port: hub.port, logger: quiet, maxFrameBytes: 2048 });
  await subscriber.subscribe("a", () => {});
  await using bus = new HubBus({ port: hub.port, logger: quiet, maxFrameBytes: 2048 });
  const items = [{ subject: "a", data: 1 }, { subject: "kept", data: 2 }, { subject: "a", data: "z".repeat(3000) }];
  const native = await publishBatch(bus, items);
  const oneByOne = await publishBatch({ publish: bus.publish.bind(bus) }, items);
  for (const outcomes of [native, oneByOne]) {
    assert.deepEqual(outcomes[0], { reached: 1 });
    assert.equal((outcomes[1] as { reached: number }).reached, 0);
    assert.ok(outcomes[2] instanceof BusError && outcomes[2].code === "too_large", String(outcomes[2]));
  }
  assert.equal((native[1] as { position: { offset: number } }).position.offset, 1);
  assert.equal((oneByOne[1] as { position: { offset: number } }).position.offset, 2);
});

Deno.test("publishes coalesced in one turn go to the hub as one batch, each answered alone", async () => {
  await using hub = startHub({ maxFrameBytes: 4096 });
  await using subscriber = new HubBus({ port: hub.port, logger: quiet, maxFrameBytes: 4096 });
  const got: Json[] = [];
  await subscriber.subscribe("a", (data) => got.push(data));
  await using proxy = countingBatchFrames(hub.port);
  await using bus = new HubBus({ port: proxy.port, logger: quiet, maxFrameBytes: 4096 });
  const publish = coalescePublishes(bus, { timeout: 5000 });
  const items = [
    ...Array.from({ length: 50 }, (_, i) => ({ subject: "a", data: i })),
    { subject: "nobody", data: "x" },
    { subject: "a", data: "z".repeat(5000) },
  ];
  const outcomes = await Promise.allSettled(items.map((item) => publish(item)));
  assert.equal(proxy.frames(), 1, "one publish_batch frame");
  assert.equal(proxy.frames("publish"), 0, "no publish frame");
  assert.deepEqual(outcomes.slice(0, 51).map((outcome) => outcome.status === "fulfilled" && outcome.value.reached), [
    ...Array(50).fill(1),
    0,
  ]);
  const refused = outcomes[51]!;
  assert.ok(refused.status === "rejected" && refused.reason instanceof BusError, "the item too large is refused");
  assert.equal(refused.reason.code, "too_large");
  await until(() => got.length === 50, 5000, "the 50 events");
  assert.deepEqual(got, items.slice(0, 50).map(({ data }) => data), "in order");
  // One at a time, each waiting for the last: a batch of one per turn.
  for (const data of [50, 51]) assert.deepEqual(await publish({ subject: "a", data }), { reached: 1 });
  assert.equal(proxy.frames(), 3);
});

Deno.test("hub speaks protocol versions 2 and 3, and refuses others with the range it speaks", async () => {
  assert.equal(PROTOCOL_VERSION, 3);
  await using hub = startHub();
  for (const version of [MIN_PROTOCOL_VERSION, PROTOCOL_VERSION]) {
    await using peer = await RawPeer.connect(hub.port, { hello: false });
    await peer.send({ type: "hello", version });
    await peer.send({ type: "publish", id: 1, subjects: ["x"], data: 1 });
    assert.deepEqual(await peer.next(), { type: "ack", id: 1, count: 0 }, `version ${version}`);
  }
  for (const version of [1, 4]) {
    await using peer = await RawPeer.connect(hub.port, { hello: false });
    await peer.send({ type: "hello", version });
    const [error] = await peer.readToEnd();
    assert.deepEqual(error, {
      type: "error",
      reason: `Unsupported protocol version ${version}: this hub speaks 2 to 3`,
    });
  }
});

Deno.test("hub sends a version-3 subscriber a batch's events in one events frame, a version-2 one an event frame each", async () => {
  await using hub = startHub();
  await using modern = await RawPeer.connect(hub.port);
  await using old = await RawPeer.connect(hub.port, { hello: false });
  await old.send({ type: "hello", version: MIN_PROTOCOL_VERSION });
  for (const peer of [modern, old]) {
    await peer.send({ type: "subscribe", subjects: ["a", "b"] });
    await peer.send({ type: "ping" });
    assert.deepEqual(await peer.next(), { type: "pong" });
  }
  await using client = new HubClient({ port: hub.port, logger: quiet });
  const items = [{ subject: "a", data: 1 }, { subject: "b", data: 2 }, { subject: "a", data: 3 }];
  const outcomes = await client.publishBatch(items);
  assert.deepEqual(outcomes.map((outcome) => (outcome as { count: number }).count), [2, 2, 2]);
  const expected = items.map(({ subject, data }) => ({ type: "event" as const, subject, data }));
  assert.deepEqual(await modern.next(), { type: "events", events: expected });
  for (const event of expected) assert.deepEqual(await old.next(), event);
  // A lone event stays an event frame.
  await client.publishBatch([{ subject: "b", data: 4 }]);
  assert.deepEqual(await modern.next(), { type: "event", subject: "b", data: 4 });
});

Deno.test("hub splits a batch's events for one peer at the frame limit, keeping their order", async () => {
  await using hub = startHub({ maxFrameBytes: 2048 });
  await using subscriber = new HubClient({ port: hub.port, logger: quiet, maxFrameBytes: 2048 });
  const got: Json[] = [];
  subscriber.subscribe("s", (data) => got.push(data));
  await subscriber.flush();
  await using raw = await RawPeer.connect(hub.port);
  await raw.send({ type: "subscribe", subjects: ["s"] });
  await using client = new HubClient({ port: hub.port, logger: quiet, maxFrameBytes: 2048 });
  const data = Array.from({ length: 60 }, (_, i) => `${i}`.padStart(200, "-"));
  const outcomes = await client.publishBatch(data.map((d) => ({ subject: "s", data: d })));
  assert.ok(outcomes.every((outcome) => (outcome as { count: number }).count === 2));
  await until(() => got.length === 60, 5000, "the 60 events");
  assert.deepEqual(got, data);
  const frames: Json[][] = [];
  while (frames.flat().length < 60) {
    const message = await raw.next();
    frames.push(message.type === "events" ? message.events.map((e) => e.data) : [(message as { data: Json }).data]);
  }
  assert.ok(frames.length > 1 && frames.length < 60, `${frames.length} frames`);
  assert.deepEqual(frames.flat(), data);
});

Deno.test("hub client cuts a batch so that its batch_ack fits a small frame limit too: each item delivered once", async () => {
  // 1000 items of a few bytes fit one 32 KiB frame, but their ack, with a position each, would not: the client
  // would drop its link on it and publish them again, as many times as it retried.
  await using hub = startHub({ maxFrameBytes: 32 * 1024, historySubjects: ["h.*"] });
  await using subscriber = new HubClient({ port: hub.port, logger: quiet, maxFrameBytes: 32 * 1024 });
  let got = 0;
  subscriber.subscribe("h.1", () => got++);
  await subscriber.flush();
  await using client = new HubClient({ port: hub.port, logger: quiet, maxFrameBytes: 32 * 1024 });
  const outcomes = await client.publishBatch(Array.from({ length: 1000 }, (_, i) => ({ subject: "h.1", data: i })));
  assert.ok(
    outcomes.every((outcome) => !(outcome instanceof HubError)),
    String(outcomes.find((o) => o instanceof HubError)),
  );
  assert.deepEqual(
    outcomes.map((outcome) => (outcome as { positions: { offset: number }[] }).positions[0]!.offset).slice(-1),
    [1000],
  );
  await subscriber.flush();
  await until(() => got === 1000, 5000, "the 1000 events");
  assert.equal(client.reconnects, 0, "the link never dropped");
});
