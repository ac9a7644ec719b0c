import assert from "node:assert/strict";
import { gateHistory, type Setup, setUp } from "./_fake_setup.ts";
import type { FakeSocket } from "./fake_transport.ts";
import { channelSubject } from "../shared/address.ts";
import { BusError, type HistoryOptions, type HistoryResult } from "../shared/bus.ts";
import type { Json } from "../shared/json.ts";

// Recovery on the pusher (issue 17), on a fake transport and an in-memory
// bus that keeps the history of every channel.

const HISTORY = { history: { subjects: ["channel.*"] } };

function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** What `socket` got from frame `from` on, parsed. */
function framesOf(socket: FakeSocket, from = 1): Record<string, Json>[] {
  return socket.sent.slice(from).map((frame) => JSON.parse(frame));
}

async function send(socket: FakeSocket, command: Json): Promise<Record<string, Json>[]> {
  const before = socket.sent.length;
  socket.receive(JSON.stringify(command));
  await settle();
  return framesOf(socket, before);
}

async function publish(setup: Setup, channel: string, ...data: Json[]): Promise<void> {
  for (const item of data) await setup.publish(channelSubject(channel), { channel, data: item });
}

/** A member of `news` that stays, so the worker keeps the channel, and the epoch of its history. */
async function keeper(setup: Setup): Promise<{ socket: FakeSocket; epoch: string }> {
  const socket = await setup.connect();
  const [reply] = await send(socket, { id: 1, subscribe: { channel: "news" } });
  const result = reply!.result as { recovered: boolean; offset: number; epoch: string };
  assert.deepEqual([result.recovered, result.offset], [false, 0]);
  assert.match(result.epoch, /^[0-9a-f]{8}$/);
  return { socket, epoch: result.epoch };
}

Deno.test("recovery: live publications of a history channel carry their position, framed once per worker", async () => {
  await using setup = setUp({}, HISTORY);
  const { socket: a, epoch } = await keeper(setup);
  const b = await setup.connect();
  await send(b, { id: 1, subscribe: { channel: "news" } });
  let prepared = 0;
  const prepare = setup.transport.prepare.bind(setup.transport);
  setup.transport.prepare = (text) => (prepared++, prepare(text));
  await publish(setup, "news", "one");
  const frame = { channel: "news", data: "one", offset: 1, epoch };
  assert.deepEqual(framesOf(a, 2), [frame]);
  assert.deepEqual(framesOf(b, 2), [frame]);
  assert.equal(prepared, 1);
});

Deno.test("recovery: a subscribe with since gets the reply, then exactly the missed publications in order, then live ones", async () => {
  await using setup = setUp({}, HISTORY);
  const { socket: a, epoch } = await keeper(setup);
  await publish(setup, "news", 1, 2, 3);
  assert.deepEqual(framesOf(a, 2).map((f) => f.offset), [1, 2, 3]);
  a.drop();
  // Nobody here listens now: only the bus's history has these.
  await publish(setup, "news", 4, 5, 6);
  const b = await setup.connect();
  const got = await send(b, { id: 7, subscribe: { channel: "news", since: { offset: 3, epoch } } });
  assert.deepEqual(got, [
    { id: 7, result: { recovered: true, offset: 6, epoch } },
    { channel: "news", data: 4, offset: 4, epoch },
    { channel: "news", data: 5, offset: 5, epoch },
    { channel: "news", data: 6, offset: 6, epoch },
  ]);
  await publish(setup, "news", 7);
  assert.deepEqual(framesOf(b).at(-1), { channel: "news", data: 7, offset: 7, epoch });
  assert.equal(b.sent.length, 6);
});

Deno.test("recovery: a publication arriving during the history request is neither lost nor duplicated", async () => {
  await using setup = setUp({}, HISTORY);
  const { socket: keep, epoch } = await keeper(setup);
  await publish(setup, "news", 1, 2, 3);
  const gate = gateHistory(setup);
  const b = await setup.connect();
  b.receive(JSON.stringify({ id: 1, subscribe: { channel: "news", since: { offset: 2, epoch } } }));
  await settle();
  assert.deepEqual(gate.calls, [{ since: { offset: 2, epoch }, limit: 100 }]);
  // Published before the bus reads the history: both live (held) and in the history.
  await publish(setup, "news", 4);
  assert.equal(b.sent.length, 1, "nothing for b before its reply");
  await gate.release();
  // Published after the bus read it: live only.
  await publish(setup, "news", 5);
  assert.deepEqual(framesOf(b).map((f) => f.offset ?? f.result), [
    { recovered: true, offset: 4, epoch },
    3,
    4,
    5,
  ]);
  assert.deepEqual(framesOf(keep, 2).map((f) => f.offset), [1, 2, 3, 4, 5], "the other member is not held up");
});

Deno.test("recovery: a publication that reaches the worker after the bus read the history follows the replay", async () => {
  await using setup = setUp({}, HISTORY);
  const { epoch } = await keeper(setup);
  await publish(setup, "news", 1);
  const real = setup.pusherBus.history.bind(setup.pusherBus);
  let read: () => void = () => {};
  // The bus reads the history, then 3 is published and reaches the worker, then the answer arrives.
  setup.pusherBus.history = (subject, options) =>
    new Promise((resolve) => {
      read = () => {
        const answer = real(subject, options);
        publish(setup, "news", 3).then(() => resolve(answer));
      };
    });
  const b = await setup.connect();
  b.receive(JSON.stringify({ id: 1, subscribe: { channel: "news", since: { offset: 1, epoch } } }));
  await settle();
  await publish(setup, "news", 2);
  read();
  await settle();
  await settle();
  assert.deepEqual(framesOf(b).map((f) => f.offset ?? f.result), [{ recovered: true, offset: 2, epoch }, 2, 3]);
});

Deno.test("recovery: another epoch, a trimmed history or a future offset is not recovered: the reply's position, nothing replayed", async () => {
  await using setup = setUp({}, { history: { subjects: ["channel.*"], size: 3 } });
  const { epoch } = await keeper(setup);
  await publish(setup, "news", 1, 2, 3, 4, 5, 6);
  const cases: [string, { offset: number; epoch: string }][] = [
    ["another epoch", { offset: 5, epoch: "0badc0de" }],
    ["trimmed", { offset: 1, epoch }],
    ["a future offset", { offset: 99, epoch }],
  ];
  let top = 6;
  for (const [what, since] of cases) {
    const b = await setup.connect();
    const got = await send(b, { id: 1, subscribe: { channel: "news", since } });
    assert.deepEqual(got, [{ id: 1, result: { recovered: false, offset: top++, epoch } }], what);
    await publish(setup, "news", what);
    assert.deepEqual(framesOf(b).at(-1)!.data, what, `${what}: live after the reply`);
  }
  // Recoverable but for the bound: not recovered either.
  await using small = setUp({ maxRecoverMessages: 2 }, HISTORY);
  const { epoch: smallEpoch } = await keeper(small);
  await publish(small, "news", 1, 2, 3, 4);
  const c = await small.connect();
  assert.deepEqual(await send(c, { id: 1, subscribe: { channel: "news", since: { offset: 1, epoch: smallEpoch } } }), [
    { id: 1, result: { recovered: false, offset: 4, epoch: smallEpoch } },
  ]);
});

Deno.test("recovery: a malformed since is answered 400 and joins nothing", async () => {
  await using setup = setUp({}, HISTORY);
  const a = await setup.connect();
  // 33 characters: longer than any bus's epoch, which the hub would refuse.
  for (const since of [{ offset: -1, epoch: "e" }, { offset: 1 }, "1", { offset: 1, epoch: "e".repeat(33) }]) {
    const [reply] = await send(a, { id: 1, subscribe: { channel: "news", since } as Json });
    assert.equal((reply!.error as { code: number }).code, 400, JSON.stringify(since));
  }
  assert.deepEqual(setup.pusherBus.subjects.filter((s) => s.startsWith("channel.")), []);
});

Deno.test("recovery: live publications past the bound while the history request is out make it not recovered", async () => {
  await using setup = setUp({ maxRecoverMessages: 2 }, HISTORY);
  const { epoch } = await keeper(setup);
  await publish(setup, "news", 1);
  const gate = gateHistory(setup);
  const b = await setup.connect();
  b.receive(JSON.stringify({ id: 1, subscribe: { channel: "news", since: { offset: 1, epoch } } }));
  await settle();
  await publish(setup, "news", 2, 3, 4);
  await gate.release();
  // The bus read 4 as its top: the client starts over from there, with nothing held sent.
  assert.deepEqual(framesOf(b), [{ id: 1, result: { recovered: false, offset: 4, epoch } }]);
  await publish(setup, "news", 5);
  assert.deepEqual(framesOf(b).at(-1), { channel: "news", data: 5, offset: 5, epoch });
});

Deno.test("recovery: the overflowed reply names the newest publication held when the bus read an older top", async () => {
  await using setup = setUp({ maxRecoverMessages: 1 }, HISTORY);
  const { epoch } = await keeper(setup);
  const real = setup.pusherBus.history.bind(setup.pusherBus);
  let answer: Promise<HistoryResult> | null = null;
  let release: () => void = () => {};
  setup.pusherBus.history = (subject, options) => {
    // The bus reads at once; its answer arrives only when let go.
    answer = real(subject, options);
    return new Promise((resolve) => (release = () => resolve(answer!)));
  };
  const b = await setup.connect();
  await publish(setup, "news", 1);
  b.receive(JSON.stringify({ id: 1, subscribe: { channel: "news", since: { offset: 1, epoch } } }));
  await settle();
  await publish(setup, "news", 2, 3);
  release();
  await settle();
  assert.deepEqual(framesOf(b), [{ id: 1, result: { recovered: false, offset: 3, epoch } }]);
});

Deno.test("recovery: a channel without history ignores since: not recovered, no position, publications without one", async () => {
  await using setup = setUp({}, { history: { subjects: ["channel.kept"] } });
  const a = await setup.connect();
  assert.deepEqual(await send(a, { id: 1, subscribe: { channel: "plain", since: { offset: 3, epoch: "e" } } }), [
    { id: 1, result: { recovered: false } },
  ]);
  const b = await setup.connect();
  assert.deepEqual(b.sent.length, 1);
  assert.deepEqual(await send(b, { id: 1, subscribe: { channel: "plain" } }), [{ id: 1, result: {} }]);
  await publish(setup, "plain", "x");
  assert.deepEqual(framesOf(a).at(-1), { channel: "plain", data: "x" });
});

Deno.test("recovery: a bus error on the history request answers not recovered without a position, and the connection stays", async () => {
  await using setup = setUp({}, HISTORY);
  const { epoch } = await keeper(setup);
  setup.pusherBus.history = () => Promise.reject(new BusError("unavailable", "Memory bus is down"));
  const b = await setup.connect();
  assert.deepEqual(await send(b, { id: 1, subscribe: { channel: "news", since: { offset: 1, epoch } } }), [
    { id: 1, result: { recovered: false } },
  ]);
  assert.equal(b.closed, null);
  await publish(setup, "news", "still live");
  assert.deepEqual(framesOf(b).at(-1), { channel: "news", data: "still live", offset: 1, epoch });
  assert.ok(setup.logs.some((line) => line.includes("could not read a channel's history")));
});

Deno.test("recovery: a bus that refuses one client's since still recovers the channel for the others", async () => {
  await using setup = setUp({}, HISTORY);
  const { epoch } = await keeper(setup);
  await publish(setup, "news", 1, 2);
  const real = setup.pusherBus.history.bind(setup.pusherBus);
  // As the hub refuses a position it cannot take: the client's, not the channel's.
  setup.pusherBus.history = (subject, options = {}) =>
    options.since?.epoch === "refused"
      ? Promise.reject(new BusError("refused", "Invalid history message: epoch"))
      : real(subject, options);
  const odd = await setup.connect();
  assert.deepEqual(await send(odd, { id: 1, subscribe: { channel: "news", since: { offset: 1, epoch: "refused" } } }), [
    { id: 1, result: { recovered: false } },
  ]);
  const other = await setup.connect();
  const [reply, ...replayed] = await send(other, {
    id: 1,
    subscribe: { channel: "news", since: { offset: 1, epoch } },
  });
  assert.deepEqual(reply!.result, { recovered: true, offset: 2, epoch });
  assert.deepEqual(replayed.map((frame) => frame.offset), [2]);
});

Deno.test("recovery: a subscribe and unsubscribe before the reply leave the worker no stale position of the channel", async () => {
  await using setup = setUp({}, HISTORY);
  const gate = gateHistory(setup);
  const a = await setup.connect();
  a.receive(JSON.stringify({ id: 1, subscribe: { channel: "news" } }));
  await settle();
  a.receive(JSON.stringify({ id: 2, unsubscribe: { channel: "news" } }));
  await settle();
  // The worker left the channel; its read answers now, then more is published that the worker no longer hears.
  await gate.release();
  const epoch = (framesOf(a).find((frame) => frame.id === 1)!.result as { epoch: string }).epoch;
  await publish(setup, "news", 1, 2, 3);
  a.receive(JSON.stringify({ id: 3, subscribe: { channel: "news" } }));
  await settle();
  await gate.release();
  assert.deepEqual(framesOf(a).find((frame) => frame.id === 3)!.result, { recovered: false, offset: 3, epoch });
  assert.equal(gate.calls.length, 2, "asked the bus again: it knew nothing it could trust");
});

Deno.test("recovery: without since the reply carries the position the worker knows, asking the bus only when it knows none", async () => {
  await using setup = setUp({}, HISTORY);
  const real = setup.pusherBus.history.bind(setup.pusherBus);
  const calls: HistoryOptions[] = [];
  setup.pusherBus.history = (subject, options = {}) => (calls.push(options), real(subject, options));
  const { epoch } = await keeper(setup);
  assert.deepEqual(calls, [{ limit: 0 }], "the worker knew nothing of the channel yet");
  const b = await setup.connect();
  assert.deepEqual(await send(b, { id: 1, subscribe: { channel: "news" } }), [
    { id: 1, result: { recovered: false, offset: 0, epoch } },
  ]);
  await publish(setup, "news", 1, 2);
  const c = await setup.connect();
  assert.deepEqual(await send(c, { id: 1, subscribe: { channel: "news" } }), [
    { id: 1, result: { recovered: false, offset: 2, epoch } },
  ]);
  assert.equal(calls.length, 1, "the worker's own position, from the last publication it got");
});

Deno.test("recovery: a connection that leaves while its history request is out gets only its reply, one that closes nothing", async () => {
  await using setup = setUp({}, HISTORY);
  const { epoch } = await keeper(setup);
  await publish(setup, "news", 1, 2);
  const gate = gateHistory(setup);
  const leaver = await setup.connect();
  const closer = await setup.connect();
  for (const socket of [leaver, closer]) {
    socket.receive(JSON.stringify({ id: 1, subscribe: { channel: "news", since: { offset: 1, epoch } } }));
  }
  await settle();
  await publish(setup, "news", 3);
  leaver.receive(JSON.stringify({ id: 2, unsubscribe: { channel: "news" } }));
  closer.drop();
  await gate.release();
  await gate.release();
  assert.deepEqual(framesOf(leaver), [{ id: 2, result: {} }, {
    id: 1,
    result: { recovered: false, offset: 3, epoch },
  }]);
  assert.equal(closer.sent.length, 1);
});

Deno.test("recovery: a client that joined before a channel's first message recovers from offset 0", async () => {
  await using setup = setUp({}, HISTORY);
  const a = await setup.connect();
  const [first] = await send(a, { id: 1, subscribe: { channel: "news" } });
  const { epoch, offset } = first!.result as { epoch: string; offset: number };
  assert.equal(offset, 0, "nothing published yet");
  a.drop();
  await publish(setup, "news", 1, 2);
  const b = await setup.connect();
  const [reply, ...replayed] = await send(b, { id: 1, subscribe: { channel: "news", since: { offset: 0, epoch } } });
  assert.deepEqual(reply!.result, { recovered: true, offset: 2, epoch });
  assert.deepEqual(replayed.map((frame) => [frame.data, frame.offset]), [[1, 1], [2, 2]]);
});

Deno.test("history: a member asks its channel's history, forward from since or the last ones newest first, capped", async () => {
  await using setup = setUp({ maxRecoverMessages: 3 }, { history: { subjects: ["channel.news"] } });
  const { socket, epoch } = await keeper(setup);
  await publish(setup, "news", "a", "b", "c", "d", "e");
  await settle();
  socket.sent.splice(1);
  const publications = (...items: [string, number][]) => items.map(([data, offset]) => ({ data, offset }));
  assert.deepEqual(await send(socket, { id: 2, history: { channel: "news", since: { offset: 1, epoch } } }), [{
    id: 2,
    result: { publications: publications(["b", 2], ["c", 3], ["d", 4]), offset: 5, epoch, recovered: false },
  }], "cut at the pusher's --max-recover-messages, so not all that followed");
  assert.deepEqual(await send(socket, { id: 3, history: { channel: "news", limit: 2, reverse: true } }), [{
    id: 3,
    result: { publications: publications(["e", 5], ["d", 4]), offset: 5, epoch, recovered: true },
  }]);
  assert.deepEqual(await send(socket, { id: 4, history: { channel: "news", since: { offset: 4, epoch }, limit: 9 } }), [
    {
      id: 4,
      result: { publications: publications(["e", 5]), offset: 5, epoch, recovered: true },
    },
  ]);

  // Not a member: refused, and the connection stays.
  const stranger = await setup.connect();
  assert.deepEqual(await send(stranger, { id: 5, history: { channel: "news" } }), [{
    id: 5,
    error: { code: 403, message: "Not subscribed to channel news: history is for its members" },
  }]);
  // A channel without history.
  await send(stranger, { id: 6, subscribe: { channel: "chat" } });
  assert.deepEqual(await send(stranger, { id: 7, history: { channel: "chat", reverse: true } }), [{
    id: 7,
    error: { code: 404, message: "History is not kept for channel chat" },
  }]);
  assert.equal(stranger.closed, null);
});

Deno.test("history: a bus that does not answer is a 503 on the socket, which stays open", async () => {
  await using setup = setUp({}, HISTORY);
  const { socket } = await keeper(setup);
  setup.pusherBus.history = () => Promise.reject(new BusError("unavailable", "the hub link is down"));
  assert.deepEqual(await send(socket, { id: 2, history: { channel: "news" } }), [{
    id: 2,
    error: { code: 503, message: "History is not available: the hub link is down" },
  }]);
  assert.equal(socket.closed, null);
});
