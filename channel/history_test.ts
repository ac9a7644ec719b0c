import assert from "node:assert/strict";
import { HubBus } from "./bus.ts";
import { HubClient } from "./client.ts";
import { serveHub } from "./server.ts";
import { quiet, RawPeer, startHub, until } from "./testing.ts";
import type { BusMessage, Json, PublishResult } from "../shared/bus.ts";
import { encodeMessage, type HubMessage } from "../shared/wire.ts";
import { concat } from "../shared/bytes.ts";

const HISTORY = { historySubjects: ["news", "chat.*"] };

function bus(port: number): HubBus {
  return new HubBus({ port, logger: quiet, publishTimeout: 5000 });
}

Deno.test("hub gives each history subject's publishes growing positions, and its events carry them", async () => {
  await using hub = startHub(HISTORY);
  await using client = new HubClient({ port: hub.port, logger: quiet });
  const events: [string, Json, unknown][] = [];
  client.subscribe("news", (data, subject, _reply, position) => events.push([subject, data, position]));
  client.subscribe("plain", (data, subject, _reply, position) => events.push([subject, data, position]));
  await client.flush();
  const a = await client.publishWithPositions("news", 1);
  const b = await client.publishWithPositions(["news", "chat.1", "plain"], 2);
  assert.equal(a.count, 1);
  assert.deepEqual(a.positions.map((p) => [p.subject, p.offset]), [["news", 1]]);
  assert.deepEqual(b.positions.map((p) => [p.subject, p.offset]), [["news", 2], ["chat.1", 1]]);
  assert.match(a.positions[0]!.epoch, /^[0-9a-f]{8}$/);
  assert.equal(b.positions[0]!.epoch, a.positions[0]!.epoch);
  assert.equal(await client.publish("news", 3), 1, "publish still resolves with the count");
  await until(() => events.length === 4, 5000, "four events");
  assert.deepEqual(events, [
    ["news", 1, { offset: 1, epoch: a.positions[0]!.epoch }],
    ["news", 2, { offset: 2, epoch: a.positions[0]!.epoch }],
    ["plain", 2, undefined],
    ["news", 3, { offset: 3, epoch: a.positions[0]!.epoch }],
  ]);
});

Deno.test("hub bus history since a position returns exactly what followed, and delivered messages carry positions", async () => {
  await using hub = startHub(HISTORY);
  await using link = bus(hub.port);
  const seen: BusMessage[] = [];
  await link.subscribe("news", (_data, message) => seen.push(message));
  const results: PublishResult[] = [];
  for (let i = 1; i <= 5; i++) results.push(await link.publish("news", { i }));
  const since = results[1]!.position!;
  const read = await link.history("news", { since });
  assert.deepEqual(read.messages, [3, 4, 5].map((i) => ({ data: { i }, position: results[i - 1]!.position })));
  assert.deepEqual(read.position, results[4]!.position);
  assert.equal(read.recovered, true);
  await until(() => seen.length === 5, 5000, "five deliveries");
  assert.deepEqual(seen.map((m) => m.position), results.map((r) => r.position));
  assert.equal((await link.history("news", { since, limit: 2 })).recovered, false, "cut by limit");
  assert.equal((await link.history("news")).messages.length, 5);
  assert.deepEqual(await link.history("plain"), { messages: [], position: { offset: 0, epoch: "" }, recovered: false });
  assert.deepEqual(await link.publish("plain", 1), { reached: 0 });
});

Deno.test("hub history trimmed by size, age or bytes does not recover a position before the trim", async () => {
  let time = 0;
  await using hub = startHub({
    historySubjects: ["size", "age", "bytes"],
    historySize: 3,
    historyTtl: 1000,
    historyMaxBytes: 20,
    now: () => time,
  });
  await using link = bus(hub.port);
  const first = [];
  for (const subject of ["size", "age", "bytes"]) first.push((await link.publish(subject, "0123456789")).position!);
  // A second message each, to be trimmed unseen: a reader at the first missed it.
  for (const subject of ["size", "age", "bytes"]) await link.publish(subject, "0123456789");
  time = 500;
  for (let i = 0; i < 3; i++) await link.publish("size", i);
  await link.publish("bytes", "0123456789"); // 12 bytes each: the first goes
  time = 1000;
  await link.publish("age", "later");
  for (const [i, subject] of ["size", "age", "bytes"].entries()) {
    const read = await link.history(subject, { since: first[i] });
    assert.equal(read.recovered, false, subject);
    assert.equal(read.messages.length, subject === "size" ? 3 : 1, `${subject} still sends what it keeps`);
  }
});

Deno.test("hub restart gives history a new epoch", async () => {
  const options = { port: 0, onListen() {}, logger: quiet, startupGrace: 0, ...HISTORY };
  let position;
  {
    await using server = serveHub(options);
    await using link = bus(server.addr.port);
    position = (await link.publish("news", 1)).position!;
  }
  await using server = serveHub(options);
  await using link = bus(server.addr.port);
  const read = await link.history("news", { since: position });
  assert.equal(read.recovered, false);
  assert.notEqual(read.position.epoch, position.epoch);
  assert.deepEqual(read.messages, []);
});

Deno.test("hub routes a retried idempotent publish once and answers it with the first one's ack", async () => {
  await using hub = startHub(HISTORY);
  await using subscriber = new HubClient({ port: hub.port, logger: quiet });
  let deliveries = 0;
  subscriber.subscribe("news", () => deliveries++);
  await subscriber.flush();
  await using peer = await RawPeer.connect(hub.port);
  await peer.send({ type: "publish", id: 1, subjects: ["news"], data: 1, idempotency_key: "k1" });
  await peer.send({ type: "publish", id: 2, subjects: ["news"], data: 1, idempotency_key: "k1" });
  await peer.send({ type: "publish", id: 3, subjects: ["news"], data: 1, idempotency_key: "k2" });
  const acks = [await peer.next(), await peer.next(), await peer.next()] as Extract<HubMessage, { type: "ack" }>[];
  assert.deepEqual(acks.map((a) => a.id), [1, 2, 3]);
  assert.deepEqual({ ...acks[1], id: 1 }, acks[0]);
  assert.equal(acks[0]!.count, 1);
  assert.equal(acks[2]!.positions?.[0]?.offset, 2);
  await subscriber.flush();
  assert.equal(deliveries, 2);
  await using link = bus(hub.port);
  const first = await link.publish("news", 9, { idempotencyKey: "k3" });
  assert.deepEqual(await link.publish("news", 9, { idempotencyKey: "k3" }), first);
});

Deno.test("hub forgets idempotency keys past their window", async () => {
  let time = 0;
  await using hub = startHub({ ...HISTORY, idempotencyWindow: 1000, now: () => time });
  await using link = bus(hub.port);
  assert.equal((await link.publish("news", 1, { idempotencyKey: "k" })).position?.offset, 1);
  assert.equal((await link.publish("news", 1, { idempotencyKey: "k" })).position?.offset, 1);
  time = 1000;
  assert.equal((await link.publish("news", 1, { idempotencyKey: "k" })).position?.offset, 2);
});

Deno.test("hub history_remove drops a subject's history and changes its epoch", async () => {
  await using hub = startHub(HISTORY);
  await using link = bus(hub.port);
  const before = (await link.publish("news", 1)).position!;
  await link.removeHistory("news");
  const read = await link.history("news", { since: before });
  assert.equal(read.recovered, false);
  assert.deepEqual(read.messages, []);
  assert.notEqual(read.position.epoch, before.epoch);
  assert.equal(read.position.offset, 0);
  await using peer = await RawPeer.connect(hub.port);
  await peer.send({ type: "history_remove", id: 4, subject: "news" });
  assert.deepEqual(await peer.next(), { type: "ack", id: 4, count: 0 });
});

Deno.test("hub keeps history within its total bytes by dropping the least recently published subjects whole", async () => {
  const total = 64 * 1024;
  await using hub = startHub({
    historySubjects: ["chat.*"],
    historyMaxBytes: 8 * 1024,
    historyTotalBytes: total,
    maxHistorySubjects: 1000,
  });
  await using link = bus(hub.port);
  const first = (await link.publish("chat.0", "x".repeat(4000))).position!;
  for (let i = 1; i < 40; i++) await link.publish(`chat.${i}`, "x".repeat(4000));
  const stats = hub.server.hub.stats;
  assert(stats.historyBytes <= total, `${stats.historyBytes} bytes kept, over ${total}`);
  assert(stats.historyEvictions > 0);
  const evicted = await link.history("chat.0", { since: first });
  assert.equal(evicted.recovered, false);
  assert.notEqual(evicted.position.epoch, first.epoch);
  assert.equal((await link.history("chat.39")).messages.length, 1, "the latest subject keeps its message");
});

Deno.test("hub keeps at most maxHistorySubjects subjects with history", async () => {
  await using hub = startHub({ historySubjects: ["chat.*"], maxHistorySubjects: 5 });
  await using link = bus(hub.port);
  for (let i = 0; i < 20; i++) await link.publish(`chat.${i}`, i);
  assert.equal(hub.server.hub.stats.historySubjects, 5);
});

Deno.test("hub answers a malformed history request with an error carrying its id, and keeps the connection", async () => {
  await using hub = startHub(HISTORY);
  await using peer = await RawPeer.connect(hub.port);
  const malformed = [
    { type: "history", id: 1, subject: "news", since: { offset: "7", epoch: "e" } },
    { type: "history", id: 2, subject: "" },
    { type: "history", id: 3, subject: "news", limit: -5 },
    { type: "history_remove", id: 4, subject: 7 },
    { type: "publish", id: 5, subjects: ["news"], data: 1, idempotency_key: "k".repeat(200) },
  ];
  for (const message of malformed) await peer.send(message as never);
  for (const { id } of malformed) {
    const reply = await peer.next();
    assert.equal(reply.type, "error");
    assert.equal((reply as { id?: number }).id, id);
  }
  await peer.send({ type: "ping" });
  assert.deepEqual(await peer.next(), { type: "pong" });
});

Deno.test("hub answers a future offset unrecovered, and cuts a reply to its frame limit", async () => {
  await using hub = startHub({ ...HISTORY, maxFrameBytes: 4096 });
  await using link = bus(hub.port);
  const top = (await link.publish("news", "y")).position!;
  const future = await link.history("news", { since: { offset: 5, epoch: top.epoch } });
  assert.deepEqual({ ...future, messages: future.messages.length }, { messages: 0, position: top, recovered: false });
  for (let i = 0; i < 5; i++) await link.publish("news", "z".repeat(1000));
  const cut = await link.history("news", { since: top });
  assert(cut.messages.length > 0 && cut.messages.length < 5, `${cut.messages.length} messages fit`);
  assert.equal(cut.recovered, false);
});

Deno.test("hub answers many large history reads sent at once, pausing between them, without closing the reader as slow", async () => {
  // 12 replies of about 1 MiB queued at once would pass the 8 MiB a peer may have waiting: the hub reads no further
  // frame while 64 KiB of replies wait, as it reads no further chunk, so the peer is held back instead of closed.
  await using hub = startHub(HISTORY);
  await using link = bus(hub.port);
  for (let i = 0; i < 100; i++) await link.publish("news", "x".repeat(10_000));
  await using peer = await RawPeer.connect(hub.port);
  const requests = Array.from({ length: 12 }, (_, i) => encodeMessage({ type: "history", id: i + 1, subject: "news" }));
  await peer.write(concat(requests));
  for (let id = 1; id <= 12; id++) {
    const reply = await peer.next() as HubMessage & { id?: number; messages?: unknown[] };
    assert.equal(reply.type, "history", JSON.stringify(reply).slice(0, 200));
    assert.equal(reply.id, id);
    assert.equal(reply.messages!.length, 100);
  }
  await peer.send({ type: "ping" });
  assert.deepEqual(await peer.next(), { type: "pong" });
});

Deno.test("hub counts history in bytes of UTF-8, as its flags say: non-ASCII data weighs what it is sent as", async () => {
  await using hub = startHub({ historySubjects: ["h.*"] });
  await using link = bus(hub.port);
  const stats = () => hub.server.hub.stats.historyBytes;
  // 300 "€" are 302 characters of JSON but 902 bytes of UTF-8, as many as 900 "x".
  await link.publish("h.euro", "€".repeat(300));
  const euro = stats();
  await link.publish("h.ascii", "x".repeat(900));
  assert.equal(stats() - euro, euro, "the same bytes kept for both");
});

Deno.test("hub refuses a publish whose ack would list more positions than a frame holds, routing none of it", async () => {
  // Its ack would pass the frame limit: the client would drop its link on it and publish again, each time anew.
  await using hub = startHub({ historySubjects: ["h.*"], maxFrameBytes: 16 * 1024 });
  // The client's frame limit kept at the hub's, as its docs ask.
  await using client = new HubClient({ port: hub.port, logger: quiet, maxFrameBytes: 16 * 1024 });
  const got: Json[] = [];
  client.subscribe("h.7", (data) => got.push(data));
  await client.flush();
  const subjects = Array.from({ length: 400 }, (_, i) => `h.${i}`);
  await assert.rejects(client.publishWithPositions(subjects, "all"), /acknowledgement would list a position for each/);
  // A publish the ack of which fits goes through on the same link.
  const fits = await client.publishWithPositions(subjects.slice(0, 100), "some");
  assert.equal(fits.positions.length, 100);
  assert.equal(fits.positions.find((p) => p.subject === "h.7")!.offset, 1, "the refused one took no offset");
  await until(() => got.length === 1, 2000, "the event");
  assert.deepEqual(got, ["some"]);
  assert.equal(client.reconnects, 0, "the link never dropped");
});

Deno.test("hub forgets the oldest idempotency keys once their acks hold 250,000 positions, whatever their count", async () => {
  // An ack lists a position per history subject: keys of publishes to 5,000 of them held half a megabyte each.
  await using hub = startHub({ historySubjects: ["h.*"], historySize: 1, maxHistorySubjects: 10_000 });
  await using client = new HubClient({ port: hub.port, logger: quiet });
  const subjects = Array.from({ length: 5000 }, (_, i) => `h.${i}`);
  const first = await client.publishWithPositions(subjects, 0, { idempotencyKey: "k0" });
  const again = await client.publishWithPositions(subjects, 0, { idempotencyKey: "k0" });
  assert.deepEqual(again.positions[0], first.positions[0], "remembered: answered as the first");
  // 50 keys of 5,001 each are 250,050: the oldest, k0, goes.
  for (let i = 1; i <= 50; i++) await client.publishWithPositions(subjects, i, { idempotencyKey: `k${i}` });
  const late = await client.publishWithPositions(subjects, 0, { idempotencyKey: "k0" });
  assert.equal(late.positions[0]!.offset, 52, "forgotten: routed again");
  const recent = await client.publishWithPositions(subjects, 50, { idempotencyKey: "k50" });
  assert.equal(recent.positions[0]!.offset, 51, "a recent key is still remembered");
});
