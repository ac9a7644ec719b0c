import assert from "node:assert/strict";
import { BusError, type BusMessage, type Json, type Position } from "./bus.ts";
import { NatsBus, type NatsBusOptions, natsHistoryFilter, natsSubject, TOP_PREFIX } from "./nats_bus.ts";
import { startNats } from "../tests/_nats.ts";
import { connect, headers } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { freePort, quiet, until, within } from "../channel/testing.ts";

function bus(servers: NatsBusOptions["servers"], options: Partial<NatsBusOptions> = {}): NatsBus {
  return new NatsBus({ servers, logger: quiet, reconnectDelay: 50, ...options });
}

const HISTORY = { subjects: ["channel.*", "news"], size: 5, ttlMs: 60_000 };

async function busError(promise: Promise<unknown>, code: string, what: string): Promise<BusError> {
  const error = await within(promise.then(() => null, (e) => e), 10_000, what);
  assert.ok(error instanceof BusError, `${what}: expected a BusError, got ${error}`);
  assert.equal(error.code, code, `${what}: ${error.message}`);
  return error;
}

Deno.test("natsSubject keeps NATS subjects and writes anything else as %XX, one subject to one", () => {
  assert.equal(natsSubject("channel.news"), "channel.news");
  assert.equal(natsSubject("user.a b*>"), "user.a%20b%2A%3E");
  assert.equal(natsSubject("channel.a..b."), "channel.a.%2Eb%2E");
  // A dot after a token ends it: the prefix's tokens stay, and a stream's filter of them captures the subject.
  for (const [channel, nats] of [["channel..lead", "channel.%2Elead"], ["channel..", "channel.%2E"]] as const) {
    assert.equal(natsSubject(channel), nats);
    assert.ok(nats.startsWith(natsHistoryFilter("channel.*").slice(0, -1)), channel);
  }
  assert.equal(natsSubject(".x"), "%2Ex");
  assert.equal(natsSubject("user.50%"), "user.50%25");
  assert.equal(natsSubject("user.é"), "user.%C3%A9");
  assert.equal(natsHistoryFilter("channel.*"), "channel.>");
  assert.throws(
    () => natsHistoryFilter("*"),
    /^TypeError: Invalid history pattern "\*" for NATS: a stream cannot keep/,
  );
  assert.equal(natsHistoryFilter("news"), "news");
  assert.throws(
    () => natsHistoryFilter("channel.chat*"),
    /^TypeError: Invalid history pattern "channel.chat\*" for NATS: a prefix must end at a dot/,
  );
});

Deno.test("nats bus delivers a publish once the subscription is in effect, and cannot count", async () => {
  await using nats = await startNats();
  await using subscriber = bus(nats.servers);
  await using publisher = bus(nats.servers);
  const got: [Json, BusMessage][] = [];
  await within(subscriber.subscribe("user.a b", (data, message) => got.push([data, message])), 5000, "subscribe");
  assert.deepEqual(await publisher.publish("user.a b", { n: 1 }), { reached: null });
  await until(() => got.length === 1, 5000, "the message");
  assert.deepEqual(got, [[{ n: 1 }, { subject: "user.a b" }]]);
  assert.equal(publisher.countsReached, false);
  assert.ok(publisher.connected);
  assert.equal(publisher.address, `nats://127.0.0.1:${nats.nodes[0]!.port}`);
  subscriber.subscribe("user.a b", (data) => got.push([data, { subject: "second" }]));
  await publisher.publish("user.a b", 2);
  await until(() => got.length === 2, 5000, "the message to the new handler");
  assert.deepEqual(got[1], [2, { subject: "second" }]);
  subscriber.unsubscribe("user.a b");
  await subscriber.subscribe("other", () => {});
  await publisher.publish("user.a b", 3);
  await publisher.publish("other", 3);
  assert.equal(got.length, 2);
});

Deno.test("nats bus request: replies, no responders, and presence ends when every live subscriber answered", async () => {
  await using nats = await startNats();
  await using a = bus(nats.servers, { heartbeatInterval: 200 });
  await using b = bus(nats.servers, { heartbeatInterval: 200 });
  await using requester = bus(nats.servers, { heartbeatInterval: 200 });
  for (const [name, responder] of [["a", a], ["b", b]] as const) {
    await responder.subscribe("presence", (data, { replyTo }) => void responder.publish(replyTo!, { name, data }));
    await responder.subscribe(`worker.${name}`, (_data, { replyTo }) => void responder.publish(replyTo!, name));
  }
  await until(
    async () => {
      const { replies, expected } = await requester.request("presence", "?", { timeout: 3000 });
      return replies.length === 2 && expected === 2;
    },
    10_000,
    "both responders in the census",
  );
  const started = Date.now();
  const presence = await requester.request("presence", "?", { timeout: 5000 });
  assert.ok(Date.now() - started < 1000, `presence answered in ${Date.now() - started} ms, not the 5 s timeout`);
  assert.deepEqual(presence.replies.map((r) => (r as { name: string }).name).sort(), ["a", "b"]);
  assert.equal(presence.expected, 2);
  const one = await requester.request("worker.b", null, { timeout: 5000, maxReplies: 1 });
  assert.deepEqual(one, { replies: ["b"], expected: null });
  const error = await busError(requester.request("worker.gone", null, { timeout: 5000 }), "no_responders", "it");
  assert.match(error.message, /^Cannot request on worker.gone: nobody subscribes to it$/);
  // A subscriber that closes says goodbye: presence stops waiting for it once the goodbye has come through the server,
  // sooner than the 600 ms that three missed heartbeats take.
  await b.close();
  await until(
    async () => (await requester.request("presence", "?", { timeout: 100 })).expected === 1,
    500,
    "b's goodbye",
  );
  const after = Date.now();
  assert.deepEqual((await requester.request("presence", "?", { timeout: 5000 })).expected, 1);
  assert.ok(Date.now() - after < 1000, "presence after a goodbye answers at once");
});

Deno.test("nats bus publishes a batch with one flush: each item delivered, one too large refused alone, keys kept", async () => {
  await using nats = await startNats();
  await using subscriber = bus(nats.servers);
  await using publisher = bus(nats.servers, { history: HISTORY });
  const got: Json[] = [];
  await within(subscriber.subscribe("user.a", (data) => got.push(data)), 5000, "subscribe");
  const outcomes = await publisher.publishBatch([
    { subject: "user.a", data: 1 },
    { subject: "user.a", data: "x".repeat(2 * 1024 * 1024) },
    { subject: "user.a", data: 2, idempotencyKey: "k" },
    { subject: "user.a", data: 2, idempotencyKey: "k" },
    { subject: "news", data: 3 },
    { subject: "user.a", data: 4 },
  ]);
  assert.deepEqual(outcomes[0], { reached: null });
  assert.ok(outcomes[1] instanceof BusError && outcomes[1].code === "too_large", String(outcomes[1]));
  assert.deepEqual(outcomes[2], { reached: null });
  assert.equal((outcomes[4] as { position: Position }).position.offset, 1);
  assert.deepEqual(outcomes[5], { reached: null });
  await until(
    () => got.length === 3,
    5000,
    `the three messages, got ${JSON.stringify(got)} ${JSON.stringify(outcomes)}`,
  );
  assert.deepEqual([...got].sort(), [1, 2, 4]);
});

Deno.test("nats bus refuses what is over max_payload as too_large", async () => {
  await using nats = await startNats();
  await using publisher = bus(nats.servers);
  await until(() => publisher.connected, 5000, "the link");
  await busError(publisher.publish("news2", "x".repeat(1024 * 1024 + 1)), "too_large", "the big publish");
  // Within the limit alone, over it with a history message's headers: refused at once, not retried to the timeout.
  await using keeper = bus(nats.servers, { history: HISTORY });
  await until(() => keeper.connected, 5000, "the link");
  const started = Date.now();
  await busError(
    keeper.publish("channel.big", "x".repeat(1024 * 1024 - 60), { timeout: 20_000 }),
    "too_large",
    "near the limit",
  );
  assert.ok(Date.now() - started < 10_000, "not retried until its timeout");
});

Deno.test("nats bus publish while no server is up waits its timeout then is unavailable; closed is unavailable", async () => {
  await using down = bus([{ hostname: "127.0.0.1", port: freePort() }]);
  const started = Date.now();
  await busError(down.publish("news", 1, { timeout: 300 }), "unavailable", "the publish to time out");
  assert.ok(Date.now() - started >= 290);
  assert.equal(down.connected, false);
  await down.close();
  await down.close();
  await busError(down.publish("news", 1), "unavailable", "the publish after close");
});

Deno.test("nats bus history: offsets grow by one, positions on delivery, since, limit, epoch and removal", async () => {
  await using nats = await startNats();
  await using subscriber = bus(nats.servers, { history: HISTORY });
  await using publisher = bus(nats.servers, { history: HISTORY });
  const seen: Position[] = [];
  await subscriber.subscribe("channel.news", (_data, message) => seen.push(message.position!));
  const empty = await publisher.history("channel.news");
  assert.equal(empty.position.offset, 0);
  assert.match(empty.position.epoch, /^[0-9a-f]{8}$/);
  const positions: Position[] = [];
  for (let i = 1; i <= 7; i++) positions.push((await publisher.publish("channel.news", { i })).position!);
  assert.deepEqual(positions.map((p) => p.offset), [1, 2, 3, 4, 5, 6, 7]);
  assert.ok(positions.every((p) => p.epoch === empty.position.epoch), "the first publish continues the epoch read");
  await until(() => seen.length === 7, 5000, "seven deliveries");
  assert.deepEqual(seen, positions);
  assert.deepEqual(await publisher.history("channel.news", { since: positions[4] }), {
    messages: [{ data: { i: 6 }, position: positions[5] }, { data: { i: 7 }, position: positions[6] }],
    position: positions[6],
    recovered: true,
  });
  assert.deepEqual(await publisher.history("channel.news", { since: positions[6] }), {
    messages: [],
    position: positions[6],
    recovered: true,
  });
  assert.deepEqual(await publisher.history("channel.news", { since: positions[6], limit: 0 }), {
    messages: [],
    position: positions[6],
    recovered: true,
  });
  assert.equal((await publisher.history("channel.news", { since: positions[5], limit: 0 })).recovered, false);
  const trimmed = await publisher.history("channel.news", { since: positions[0] });
  assert.equal(trimmed.recovered, false, "size 5: offsets 2 to 7 are not all kept");
  assert.deepEqual(trimmed.messages.map((m) => m.position.offset), [3, 4, 5, 6, 7]);
  assert.equal((await publisher.history("channel.news", { since: positions[3], limit: 1 })).recovered, false);
  assert.equal((await publisher.history("channel.news", { since: { offset: 3, epoch: "00000000" } })).recovered, false);
  assert.deepEqual(await publisher.history("plain"), {
    messages: [],
    position: { offset: 0, epoch: "" },
    recovered: false,
  });
  assert.deepEqual(await publisher.publish("plain", 1), { reached: null });
  await publisher.removeHistory("channel.news");
  const removed = await publisher.history("channel.news", { since: positions[6] });
  assert.equal(removed.recovered, false);
  assert.equal(removed.position.offset, 0);
  assert.notEqual(removed.position.epoch, positions[6]!.epoch);
  const next = await publisher.publish("channel.news", "again");
  assert.deepEqual(next.position, { offset: 1, epoch: removed.position.epoch });
  // A channel whose name begins with a dot is the stream's too (it was written outside the stream's filter).
  const dotted = await publisher.publish("channel..lead", "led");
  assert.equal(dotted.position?.offset, 1);
  assert.deepEqual((await publisher.history("channel..lead")).messages.map((m) => m.data), ["led"]);
});

Deno.test("nats bus history: concurrent publishers never share an offset, and a retried key is stored once", async () => {
  await using nats = await startNats();
  await using a = bus(nats.servers, { history: { ...HISTORY, size: 100 } });
  await using b = bus(nats.servers, { history: { ...HISTORY, size: 100 } });
  const results = await Promise.all(
    Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).publish("channel.race", i)),
  );
  assert.deepEqual(
    results.map((r) => r.position!.offset).sort((x, y) => x - y),
    Array.from({ length: 40 }, (_, i) => i + 1),
  );
  const first = await a.publish("channel.race", "once", { idempotencyKey: "k1" });
  const retry = await b.publish("channel.race", "once", { idempotencyKey: "k1" });
  assert.deepEqual(retry, first, "the retry answers the first one's position");
  assert.equal((await a.history("channel.race")).position.offset, 41);
  // Outside history, keys are remembered by the process that published.
  await a.subscribe("plain", () => {});
  assert.deepEqual(await a.publish("plain", 1, { idempotencyKey: "k" }), { reached: null });
  await busError(a.publish("plain", 1, { idempotencyKey: "k".repeat(129) }), "refused", "the long key");
});

/** Resolves once the history stream keeps no message of `subject` any more (its `max_age` expired them). */
async function expired(servers: NatsBusOptions["servers"], subject: string): Promise<void> {
  const nc = await connect({ servers: servers.map(({ hostname, port }) => `${hostname}:${port}`) });
  try {
    const jsm = await jetstreamManager(nc);
    await until(
      async () => (await jsm.direct.getMessage("CHANNEL_HISTORY", { last_by_subj: natsSubject(subject) })) === null,
      10_000,
      `the stream to expire every message of ${subject}`,
    );
  } finally {
    await nc.close();
  }
}

const SHORT = { subjects: ["channel.*"], size: 5, ttlMs: 1000 };

Deno.test("nats bus history: a channel whose messages all expired keeps its position, as the hub and Redis do", async () => {
  await using nats = await startNats();
  await using publisher = bus(nats.servers, { history: SHORT });
  await using subscriber = bus(nats.servers, { history: SHORT });
  const seen: Position[] = [];
  await subscriber.subscribe("channel.idle", (_data, message) => seen.push(message.position!));
  const positions: Position[] = [];
  for (let i = 1; i <= 3; i++) positions.push((await publisher.publish("channel.idle", i)).position!);
  await expired(nats.servers, "channel.idle");
  // A client away a second from a channel idle for longer than the ttl: nothing missed, no reload.
  assert.deepEqual(await subscriber.history("channel.idle", { since: positions[2], limit: 0 }), {
    messages: [],
    position: positions[2],
    recovered: true,
  });
  assert.deepEqual(await publisher.history("channel.idle", { since: positions[2] }), {
    messages: [],
    position: positions[2],
    recovered: true,
  });
  // One that had not seen the last two missed them, and they are gone.
  assert.deepEqual(await publisher.history("channel.idle", { since: positions[0] }), {
    messages: [],
    position: positions[2],
    recovered: false,
  });
  const next = await publisher.publish("channel.idle", 4);
  assert.deepEqual(next.position, { offset: 4, epoch: positions[0]!.epoch }, "the epoch goes on, one past the top");
  await until(() => seen.length === 4, 5000, "the live message after the expiry");
  assert.deepEqual(seen, [...positions, next.position]);
  // A removal still starts a new epoch, and that one is kept once its marker expired too.
  await publisher.removeHistory("channel.idle");
  const removed = (await publisher.history("channel.idle", { limit: 0 })).position;
  assert.equal(removed.offset, 0);
  assert.notEqual(removed.epoch, positions[0]!.epoch);
  await expired(nats.servers, "channel.idle");
  assert.deepEqual(await subscriber.history("channel.idle", { since: removed }), {
    messages: [],
    position: removed,
    recovered: true,
  });
  assert.deepEqual((await publisher.publish("channel.idle", 5)).position, { offset: 1, epoch: removed.epoch });
});

Deno.test("nats bus history: two buses racing the first publishes after expiry go on past the top, no offset twice", async () => {
  await using nats = await startNats();
  await using a = bus(nats.servers, { history: SHORT });
  await using b = bus(nats.servers, { history: SHORT });
  let top = (await a.publish("channel.race", 0)).position!;
  for (let round = 0; round < 3; round++) {
    await expired(nats.servers, "channel.race");
    // Both may know the top from before (a published it, b read it), or not at all.
    if (round === 1) await b.history("channel.race", { limit: 0 });
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).publish("channel.race", { round, i })),
    );
    // Past the top, each once. Not always without a gap: a publisher that reads another's recorded position before
    // that one's message is stored, and stores first, goes on past it (README: the stream of tops).
    const offsets = results.map((r) => r.position!.offset).sort((x, y) => x - y);
    assert.equal(new Set(offsets).size, offsets.length, `round ${round}: no offset twice: ${offsets}`);
    assert.ok(offsets[0]! > top.offset, `round ${round}: offsets after ${top.offset}: ${offsets}`);
    assert.ok(results.every((r) => r.position!.epoch === top.epoch), `round ${round}: the epoch goes on`);
    top = (await a.history("channel.race", { limit: 0 })).position;
    assert.equal(top.offset, offsets.at(-1));
  }
});

Deno.test("nats bus history: a publish that recorded its position and died before storing leaves a gap, never a repeated offset", async () => {
  await using nats = await startNats();
  await using publisher = bus(nats.servers, { history: SHORT });
  await using subscriber = bus(nats.servers, { history: SHORT });
  const seen: Position[] = [];
  await subscriber.subscribe("channel.gap", (_data, message) => seen.push(message.position!));
  const stored = (await publisher.publish("channel.gap", 1)).position!;
  // What a publisher that died between its two writes leaves: offset 2 recorded, no message 2.
  const nc = await connect({ servers: nats.servers.map(({ hostname, port }) => `${hostname}:${port}`) });
  try {
    const hdrs = headers();
    hdrs.set("Bus-Offset", "2");
    hdrs.set("Bus-Epoch", stored.epoch);
    await jetstream(nc).publish(TOP_PREFIX + natsSubject("channel.gap"), new Uint8Array(), { headers: hdrs });
  } finally {
    await nc.close();
  }
  await expired(nats.servers, "channel.gap");
  // A client at 1 may have missed 2, for all a reader can tell: no recovery, and 2 is never given again.
  assert.deepEqual(await subscriber.history("channel.gap", { since: stored, limit: 0 }), {
    messages: [],
    position: { offset: 2, epoch: stored.epoch },
    recovered: false,
  });
  const next = (await publisher.publish("channel.gap", 3)).position!;
  assert.deepEqual(next, { offset: 3, epoch: stored.epoch });
  await until(() => seen.length === 2, 5000, "the live message after the gap");
  assert.deepEqual(seen, [stored, next], "the subscriber gets it across the gap, once");
  assert.deepEqual(await subscriber.history("channel.gap", { since: next }), {
    messages: [],
    position: next,
    recovered: true,
  });
});

/** A stream's messages and bytes, as the server counts them. */
async function streamState(
  servers: NatsBusOptions["servers"],
  stream = "CHANNEL_HISTORY",
): Promise<{ messages: number; bytes: number }> {
  const nc = await connect({ servers: servers.map(({ hostname, port }) => `${hostname}:${port}`) });
  try {
    const { state } = await (await jetstreamManager(nc)).streams.info(stream);
    return { messages: state.messages, bytes: state.bytes };
  } finally {
    await nc.close();
  }
}

Deno.test("nats bus history: reads of channels nobody published to store nothing per channel, and agree on the epoch a publish continues", async () => {
  await using nats = await startNats();
  await using a = bus(nats.servers, { history: HISTORY });
  await using b = bus(nats.servers, { history: HISTORY });
  await a.publish("channel.real", "kept");
  // Browsers subscribing to made-up names: each read answers a position, and neither stream grows with the names:
  // the history stream holds the real message only, the tops stream its record and at most one epoch per slot.
  const names = Array.from({ length: 6000 }, (_, i) => `channel.made-up-${i}`);
  for (let i = 0; i < names.length; i += 200) {
    const reads = await Promise.all(names.slice(i, i + 200).map((name) => (i % 400 ? a : b).history(name)));
    assert.ok(reads.every((read) => read.position.offset === 0 && read.messages.length === 0));
  }
  assert.equal((await streamState(nats.servers)).messages, 1, "no message for a read");
  const tops = (await streamState(nats.servers, "CHANNEL_HISTORY_TOPS")).messages;
  assert.ok(tops <= 1 + 4096, `${tops} records for 6000 names read`);
  // Two readers and a publisher meeting a fresh channel at once agree on its epoch, and the publish continues it.
  const [first, second, published] = await Promise.all([
    a.history("channel.fresh", { limit: 0 }),
    b.history("channel.fresh", { limit: 0 }),
    b.publish("channel.fresh", 1),
  ]);
  assert.equal(first.position.epoch, published.position!.epoch, "the first reader's epoch is the publish's");
  assert.equal(second.position.epoch, published.position!.epoch, "the second reader's too");
  assert.equal(published.position!.offset, 1);
  // A client that read a made-up name before its first publish recovers that publish.
  const early = await a.history("channel.made-up-7");
  const firstPublish = (await b.publish("channel.made-up-7", "first")).position!;
  assert.deepEqual(firstPublish, { offset: 1, epoch: early.position.epoch });
  assert.deepEqual(await a.history("channel.made-up-7", { since: early.position }), {
    messages: [{ data: "first", position: firstPublish }],
    position: firstPublish,
    recovered: true,
  });
});

Deno.test("nats bus history: the stream keeps at most its total bytes, oldest out first, and a channel pushed out keeps its position", async () => {
  await using nats = await startNats();
  const history = { subjects: ["channel.*"], size: 100, ttlMs: 60_000, totalBytes: 64 * 1024 };
  await using publisher = bus(nats.servers, { history });
  await using reader = bus(nats.servers, { history });
  const old = (await publisher.publish("channel.old", "x".repeat(1000))).position!;
  // 200 KiB more, over other channels: three times the bound.
  for (let i = 0; i < 200; i++) await publisher.publish(`channel.busy-${i % 20}`, "y".repeat(1000));
  const state = await streamState(nats.servers);
  assert.ok(state.bytes <= 64 * 1024, `the stream holds ${state.bytes} bytes, over its 64 KiB`);
  assert.ok(state.messages < 201, `the oldest went: ${state.messages} kept`);
  // channel.old's message went first; its position did not: a client at it has missed nothing.
  assert.deepEqual(await reader.history("channel.old", { since: old }), {
    messages: [],
    position: old,
    recovered: true,
  });
  // The epoch goes on past it. (This publisher remembered offset 1 as the top and recorded 2 before its store found
  // 1 gone, so the message is 3: a gap, never an offset given twice; README: the stream of tops.)
  const again = (await publisher.publish("channel.old", "again")).position!;
  assert.equal(again.epoch, old.epoch);
  assert.ok(again.offset > old.offset, `offset ${again.offset} after ${old.offset}`);
  assert.deepEqual((await reader.history("channel.old", { since: old })).messages.map((m) => m.data), ["again"]);
});

Deno.test("nats bus moves to another node when its node dies, resubscribes, and catches up on history", async () => {
  await using nats = await startNats({ nodes: 3 });
  await using publisher = bus(nats.servers, { history: HISTORY });
  await publisher.publish("channel.news", 1, { timeout: 10_000 });
  // The node that leads the history stream dies: the hardest one to lose.
  const leaderName = await nats.streamLeader("CHANNEL_HISTORY");
  const dying = nats.nodes.findIndex((node) => node.name === leaderName);
  // The subscriber knows only the dying node, and learns the others from it.
  await using subscriber = bus([nats.servers[dying]!], { history: HISTORY });
  const got: [Json, Position | undefined][] = [];
  await subscriber.subscribe("channel.news", (data, message) => got.push([data, message.position]));
  await subscriber.subscribe("plain", (data) => got.push([data, undefined]));
  const quiet: Position[] = [];
  await subscriber.subscribe("channel.quiet", (_data, message) => quiet.push(message.position!));
  await publisher.publish("channel.news", 1, { timeout: 10_000 });
  await until(() => got.length === 1, 5000, "the first message");
  await nats.kill(dying);
  // The stream's new leader takes 3-5 s to be elected here, and took over 10 s once in a CI run: what a
  // publish waits for meanwhile is JetStream, which answers again once the election is over.
  const FAILOVER = 30_000;
  // A subject that had no message yet when the link moved: its first one still comes.
  const first = await publisher.publish("channel.quiet", "first", { timeout: FAILOVER });
  // Published while the subscriber moves: it must come, live or through the stream.
  await publisher.publish("channel.news", 2, { timeout: FAILOVER });
  await until(() => subscriber.connected && subscriber.reconnects === 1, FAILOVER, "the subscriber on another node");
  await until(() => got.length === 2, 10_000, "the message published while it was away");
  await publisher.publish("channel.news", 3, { timeout: 10_000 });
  await publisher.publish("plain", "live", { timeout: 10_000 });
  await until(() => got.length === 4, 10_000, "live messages after the move");
  assert.deepEqual(got.map(([data]) => data), [1, 2, 3, "live"]);
  assert.deepEqual(got.slice(0, 3).map(([, p]) => p?.offset), [2, 3, 4]);
  await until(() => quiet.length === 1, 10_000, "the quiet subject's first message");
  assert.deepEqual(quiet, [first.position]);
});

Deno.test("nats bus publish during an outage rejects unavailable, and works again once a server is back", async () => {
  await using nats = await startNats();
  await using publisher = bus(nats.servers, { history: HISTORY });
  await publisher.publish("channel.news", 1, { timeout: 10_000 });
  await nats.kill(0);
  await until(() => !publisher.connected, 5000, "the link to drop");
  await busError(publisher.publish("plain", 1, { timeout: 300 }), "unavailable", "a plain publish in the outage");
  await busError(
    publisher.publish("channel.news", 2, { timeout: 300 }),
    "unavailable",
    "a history publish in the outage",
  );
  await busError(publisher.history("channel.news", { timeout: 300 }), "unavailable", "a history read in the outage");
  await nats.restart(0);
  await until(() => publisher.connected, 10_000, "the link to come back");
  const after = await publisher.publish("channel.news", 3, { timeout: 10_000 });
  assert.equal(after.position?.offset, 2, "the refused publish was not stored");
});

Deno.test("nats bus subscribe waiting out an outage resolves when its subject is unsubscribed, and the others still wait", async () => {
  await using nats = await startNats();
  await using b = bus(nats.servers);
  await b.subscribe("before", () => {});
  await nats.kill(0);
  await until(() => !b.connected, 5000, "the link to drop");
  let kept = false;
  const gone = b.subscribe("gone", () => {});
  const news = b.subscribe("news", () => {}).then(() => (kept = true));
  await new Promise((resolve) => setTimeout(resolve, 300));
  b.unsubscribe("gone");
  // Not after the link's wait of up to a minute: at once.
  await within(gone, 1000, "the unsubscribed subject's subscribe");
  assert.equal(kept, false, "a subscribe of another subject still waits for the link");
  await nats.restart(0);
  await within(news, 10_000, "the subscribe of the subject still subscribed");
});

/** A CA and a certificate for 127.0.0.1 signed by it, made with openssl in `dir`. */
async function makeCertificates(dir: string, name: string): Promise<{ ca: string; certFile: string; keyFile: string }> {
  const run = async (...args: string[]) => {
    const { success, stderr } = await new Deno.Command("openssl", { args, stdout: "null", stderr: "piped" }).output();
    assert.ok(success, `openssl ${args[0]}: ${new TextDecoder().decode(stderr)}`);
  };
  const at = (file: string) => `${dir}/${name}-${file}`;
  await run(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "1",
    "-subj",
    `/CN=${name} test CA`,
    "-keyout",
    at("ca.key"),
    "-out",
    at("ca.pem"),
  );
  await run(
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    "/CN=127.0.0.1",
    "-keyout",
    at("server.key"),
    "-out",
    at("server.csr"),
  );
  await Deno.writeTextFile(at("ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  await run(
    "x509",
    "-req",
    "-in",
    at("server.csr"),
    "-CA",
    at("ca.pem"),
    "-CAkey",
    at("ca.key"),
    "-CAcreateserial",
    "-days",
    "1",
    "-extfile",
    at("ext"),
    "-out",
    at("server.pem"),
  );
  return { ca: await Deno.readTextFile(at("ca.pem")), certFile: at("server.pem"), keyFile: at("server.key") };
}

Deno.test("nats bus over tls:// verifies the servers with the CA given, and never connects with another", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nats-tls-" });
  try {
    const right = await makeCertificates(dir, "right");
    const wrong = await makeCertificates(dir, "wrong");
    await using nats = await startNats({ tls: { certFile: right.certFile, keyFile: right.keyFile } });
    assert.match(nats.url, /^tls:\/\//);
    // By name, as certificates name servers: the client checks an IP address as if it were "localhost".
    const servers = nats.servers.map(({ port }) => ({ hostname: "localhost", port }));
    const lines: string[] = [];
    const logger = {
      ...quiet,
      warn: (msg: string, fields?: Record<string, unknown>) => lines.push(`${msg} ${JSON.stringify(fields)}`),
    };
    await using subscriber = bus(servers, { tls: { caCerts: [right.ca] } });
    await using publisher = bus(servers, { tls: { caCerts: [right.ca] } });
    assert.equal(publisher.address, `tls://localhost:${nats.nodes[0]!.port}`);
    const got: Json[] = [];
    await within(subscriber.subscribe("news", (data) => got.push(data)), 5000, "subscribe over TLS");
    await publisher.publish("news", "secret", { timeout: 5000 });
    await until(() => got.length === 1, 5000, "the message over TLS");
    await using untrusting = bus(servers, { tls: { caCerts: [wrong.ca] }, logger: logger as typeof quiet });
    await busError(
      untrusting.publish("news", 1, { timeout: 1000 }),
      "unavailable",
      "the publish without a trusted server",
    );
    assert.ok(lines.some((line) => line.startsWith("cannot connect to NATS yet")), lines.join("\n"));
    await using plain = bus(servers);
    await busError(plain.publish("news", 1, { timeout: 1000 }), "unavailable", "a plain-text publish to a TLS server");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("nats bus history: a NATS that came back without its store gets its streams made again, by the bus that meets it", async () => {
  await using nats = await startNats();
  await using publisher = bus(nats.servers, { history: HISTORY });
  await using reader = bus(nats.servers, { history: HISTORY });
  const before = (await publisher.publish("channel.news", 1)).position!;
  assert.equal((await reader.history("channel.news")).messages.length, 1);
  await nats.kill(0);
  await nats.restart(0, { wipe: true });
  // Both buses made their streams before: neither is told to, yet each publish and read finds them again.
  const after = await within(publisher.publish("channel.news", 2), 10_000, "a publish after the wipe");
  assert.notEqual(after.position!.epoch, before.epoch, "a new epoch: the old history is gone");
  const read = await within(reader.history("channel.news"), 10_000, "a read after the wipe");
  assert.deepEqual(read.messages.map((m) => m.data), [2]);
});

Deno.test("nats bus history: a call that fails and checks the streams again leaves the bounds the last bus opened set", async () => {
  await using nats = await startNats({ nodes: 3 });
  await using older = bus(nats.servers, { history: { ...HISTORY, size: 100 } });
  await older.publish("channel.news", 1, { timeout: 10_000 });
  await using newer = bus(nats.servers, { history: { ...HISTORY, size: 50 } });
  await newer.publish("channel.news", 2, { timeout: 10_000 });
  const sizeNow = async () => {
    const nc = await connect({ servers: nats.servers.map(({ hostname, port }) => `${hostname}:${port}`) });
    try {
      return (await (await jetstreamManager(nc)).streams.info("CHANNEL_HISTORY")).config.max_msgs_per_subject;
    } finally {
      await nc.close();
    }
  };
  assert.equal(await sizeNow(), 50, "the last bus opened set them");
  // The stream's leader dies: the older bus's publishes fail until a new one is elected, each failure a check.
  const leader = await nats.streamLeader("CHANNEL_HISTORY");
  await nats.kill(nats.nodes.findIndex((node) => node.name === leader));
  for (let i = 0; i < 3; i++) await older.publish("channel.news", 3 + i, { timeout: 30_000 });
  assert.equal(await sizeNow(), 50, "still the newer bus's");
});
