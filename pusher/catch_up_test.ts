import assert from "node:assert/strict";
import { gateHistory, type Setup, setUp } from "./_fake_setup.ts";
import type { FakeSocket } from "./fake_transport.ts";
import { channelSubject } from "../shared/address.ts";
import { BusError, type HistoryOptions } from "../shared/bus.ts";
import type { Json } from "../shared/json.ts";
import { until } from "../channel/testing.ts";

// Catch-up on the pusher: a worker whose bus link dropped (as a hub's or
// Redis's link: what was published meanwhile is not kept for it) gives its
// members what they missed from the channel's history, in order, once.

const HISTORY = { history: { subjects: ["channel.*"], size: 10 } };

function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** The publications `socket` got, as their data. */
function dataOf(socket: FakeSocket): Json[] {
  return socket.sent.slice(2).map((frame) => JSON.parse(frame).data);
}

async function publish(setup: Setup, channel: string, ...data: Json[]): Promise<void> {
  for (const item of data) await setup.publish(channelSubject(channel), { channel, data: item });
}

/** Publishes `data` to `channel` while the pusher's bus link is down (nothing reaches it), then brings the link back. */
async function missed(setup: Setup, channel: string, ...data: Json[]): Promise<void> {
  setup.pusherBus.offline = true;
  await publish(setup, channel, ...data);
  setup.pusherBus.offline = false;
}

/**
 * Makes the pusher's next history read be answered as the bus is when it is
 * made, but handed over only when the test calls what this resolves with
 * (once that read was made): an answer that predates what comes meanwhile.
 */
async function answeredLate(setup: Setup): Promise<() => void> {
  const real = setup.pusherBus.history.bind(setup.pusherBus);
  let deliver = () => {};
  setup.pusherBus.history = (subject: string, options?: HistoryOptions) => {
    setup.pusherBus.history = real;
    const answer = real(subject, options);
    return new Promise((resolve) => deliver = () => resolve(answer));
  };
  await until(() => setup.pusherBus.history === real, 1000, "the read");
  return () => deliver();
}

/** A member of `news`, past its greeting and its subscribe's reply. */
async function member(setup: Setup): Promise<FakeSocket> {
  const socket = await setup.connect();
  socket.receive(JSON.stringify({ id: 1, subscribe: { channel: "news" } }));
  await until(() => socket.sent.length === 2, 1000, "the subscribe's reply");
  return socket;
}

/**
 * A member at offset 1, then 2 to 16 published while the link was down (history keeps 10: 2 to 6 are gone), then 17:
 * the catch-up's read is out, held by the returned gate.
 */
async function lossUnderWay(setup: Setup): Promise<{ early: FakeSocket; gate: ReturnType<typeof gateHistory> }> {
  const early = await member(setup);
  await publish(setup, "news", 1);
  await missed(setup, "news", ...Array.from({ length: 15 }, (_, i) => i + 2));
  const gate = gateHistory(setup);
  await publish(setup, "news", 17);
  assert.equal(gate.calls.length, 1, "the catch-up's read is out");
  return { early, gate };
}

Deno.test("catch-up: what was published while the bus link was down comes before the next publication, in order, once", async () => {
  await using setup = setUp({ catchUpCheckInterval: 60_000 }, HISTORY);
  const socket = await member(setup);
  await publish(setup, "news", 1, 2);
  await missed(setup, "news", 3, 4, 5);
  assert.deepEqual(dataOf(socket), [1, 2], "nothing reached the worker while its link was down");
  await publish(setup, "news", 6);
  await until(() => dataOf(socket).length === 6, 1000, "the missed publications");
  assert.deepEqual(dataOf(socket), [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(socket.sent.slice(2).map((frame) => JSON.parse(frame).offset), [1, 2, 3, 4, 5, 6]);
});

Deno.test("catch-up: a quiet channel gets what it missed once the worker sees its bus link came back", async () => {
  await using setup = setUp({ catchUpCheckInterval: 10 }, HISTORY);
  const socket = await member(setup);
  await publish(setup, "news", 1);
  await missed(setup, "news", 2, 3);
  await until(() => dataOf(socket).length === 3, 2000, "the missed publications, with no new one");
  assert.deepEqual(dataOf(socket), [1, 2, 3]);
  await publish(setup, "news", 4);
  assert.deepEqual(dataOf(socket), [1, 2, 3, 4], "and nothing twice after it");
});

Deno.test("catch-up: live publications during the read are held and come after it, each once", async () => {
  await using setup = setUp({ catchUpCheckInterval: 60_000 }, HISTORY);
  const socket = await member(setup);
  await publish(setup, "news", 1);
  await missed(setup, "news", 2, 3);
  const gate = gateHistory(setup);
  await publish(setup, "news", 4);
  assert.equal(gate.calls.length, 1);
  assert.deepEqual(gate.calls[0]!.since?.offset, 1);
  await publish(setup, "news", 5, 6);
  assert.deepEqual(dataOf(socket), [1], "held while the read is out");
  await gate.release();
  assert.deepEqual(dataOf(socket), [1, 2, 3, 4, 5, 6]);
});

Deno.test("catch-up: members who missed what history no longer has are closed with 3010 insufficient state", async () => {
  await using setup = setUp({ catchUpCheckInterval: 60_000 }, HISTORY);
  const socket = await member(setup);
  await publish(setup, "news", 1);
  setup.pusherBus.offline = true;
  // 15 missed, and history keeps 10 (8 to 17, with the live one): 2 to 7 are gone.
  await publish(setup, "news", ...Array.from({ length: 15 }, (_, i) => i + 2));
  setup.pusherBus.offline = false;
  await publish(setup, "news", 17);
  await until(() => socket.closed !== null, 1000, "the member told");
  assert.deepEqual(socket.closed, { code: 3010, reason: "insufficient state" }, "told, as Centrifugo tells it");
  assert.deepEqual(dataOf(socket), [1], "nothing past the gap: its resubscribe recovers, or is told it did not");
  assert.ok(setup.logs.some((line) => line.includes("no longer has all its members missed")));
  const metrics = await (await setup.get("/metrics")).text();
  assert.match(metrics, /^pusher_disconnects_total\{reason="insufficient_state"\} 1$/m);
});

Deno.test("catch-up: a read that fails holds what came and is tried again, never skipping what history has", async () => {
  await using setup = setUp({ catchUpCheckInterval: 10 }, HISTORY);
  const socket = await member(setup);
  await publish(setup, "news", 1);
  await missed(setup, "news", 2);
  const real = setup.pusherBus.history.bind(setup.pusherBus);
  let failures = 0;
  setup.pusherBus.history = (subject: string, options?: HistoryOptions) => {
    if (++failures <= 3) return Promise.reject(new BusError("unavailable", "down"));
    return real(subject, options);
  };
  await publish(setup, "news", 3);
  await until(() => dataOf(socket).length === 3, 2000, "2 read back once the bus answers, then 3");
  assert.deepEqual(dataOf(socket), [1, 2, 3]);
  assert.equal(failures, 4, "three failed reads, then one that answered");
  assert.equal(setup.logs.filter((line) => line.includes("cannot read what a channel's members missed")).length, 1);
});

Deno.test("catch-up: more missed than one read takes is read page by page, all of it", async () => {
  await using setup = setUp({ catchUpCheckInterval: 60_000, maxRecoverMessages: 3 }, HISTORY);
  const socket = await member(setup);
  await publish(setup, "news", 1);
  await missed(setup, "news", 2, 3, 4, 5, 6, 7, 8);
  await publish(setup, "news", 9);
  await until(() => dataOf(socket).length === 9, 1000, "every missed publication, in pages of 3");
  assert.deepEqual(dataOf(socket), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.ok(!setup.logs.some((line) => line.includes("no longer has")), "history had them all");
});

Deno.test("catch-up: at most 8 reads are out at once, however many channels have a gap", async () => {
  await using setup = setUp({ catchUpCheckInterval: 60_000 }, HISTORY);
  const sockets: FakeSocket[] = [];
  for (let i = 0; i < 20; i++) {
    const socket = await setup.connect();
    socket.receive(JSON.stringify({ id: 1, subscribe: { channel: `c${i}` } }));
    await until(() => socket.sent.length === 2, 1000, "the subscribe's reply");
    sockets.push(socket);
  }
  setup.pusherBus.offline = true;
  for (let i = 0; i < 20; i++) await publish(setup, `c${i}`, "missed");
  setup.pusherBus.offline = false;
  const gate = gateHistory(setup);
  for (let i = 0; i < 20; i++) await publish(setup, `c${i}`, "live");
  assert.equal(gate.calls.length, 8);
  for (let i = 0; i < 20; i++) await gate.release();
  await until(() => sockets.every((socket) => socket.sent.length === 4), 1000, "every channel caught up");
  assert.equal(gate.calls.length, 20);
  for (const socket of sockets) assert.deepEqual(dataOf(socket), ["missed", "live"]);
});

Deno.test("catch-up: a link that drops again while a read is out gets that channel read again", async () => {
  await using setup = setUp({ catchUpCheckInterval: 10 }, HISTORY);
  const socket = await member(setup);
  await publish(setup, "news", 1);
  await missed(setup, "news", 2);
  // The worker sees the link back and reads; the bus answers (without 3), and before the answer arrives, the link
  // drops and comes back again, with 3 published meanwhile.
  const deliverAnswer = await answeredLate(setup);
  await missed(setup, "news", 3);
  // Five of the worker's looks (every 10 ms) see the second return while the first read is out.
  await new Promise((resolve) => setTimeout(resolve, 50));
  deliverAnswer();
  await until(() => dataOf(socket).length === 3, 1000, "3, missed while the first read was out, on a quiet channel");
  assert.deepEqual(dataOf(socket), [1, 2, 3]);
});

Deno.test("catch-up: a publication seen twice goes out once, and a new epoch is delivered as it comes", async () => {
  await using setup = setUp({ catchUpCheckInterval: 60_000 }, HISTORY);
  const socket = await member(setup);
  await publish(setup, "news", 1, 2);
  const frames = socket.sent.slice(2).map((frame) => JSON.parse(frame));
  // The bus hands the worker a copy of publication 2 again (as after a resubscribe that overlaps).
  setup.pusherBus.receive(channelSubject("news"), { channel: "news", data: 2 }, undefined, {
    offset: 2,
    epoch: frames[1].epoch,
  });
  await settle();
  assert.deepEqual(dataOf(socket), [1, 2]);
  setup.broker.restart();
  await publish(setup, "news", "after a restart");
  assert.deepEqual(dataOf(socket), [1, 2, "after a restart"]);
  assert.notEqual(JSON.parse(socket.sent.at(-1)!).epoch, frames[0].epoch);
});

Deno.test("catch-up: a member that subscribes after the gap, told the newer position, does not hide the gap from those before it", async () => {
  await using setup = setUp({ catchUpCheckInterval: 60_000 }, HISTORY);
  const early = await member(setup);
  await publish(setup, "news", 1, 2);
  await missed(setup, "news", 3, 4);
  // The worker's link came back: a new member's subscribe reads the channel's position from the bus, 4.
  const late = await member(setup);
  assert.equal(JSON.parse(late.sent[1]!).result.offset, 4);
  await publish(setup, "news", 5);
  await until(() => dataOf(early).length === 5, 1000, "the early member's missed publications");
  assert.deepEqual(dataOf(early), [1, 2, 3, 4, 5]);
  // The late one may get 3 and 4 again (its client drops what is at or below the position it was told), and 5.
  assert.deepEqual(dataOf(late).at(-1), 5);
});

Deno.test("catch-up: a bus that cannot read history does not stop a channel for good: after ten failed looks, what was held goes out", async () => {
  await using setup = setUp({ catchUpCheckInterval: 10 }, HISTORY);
  const socket = await member(setup);
  await publish(setup, "news", 1);
  await missed(setup, "news", 2);
  let reads = 0;
  setup.pusherBus.history = () => (reads++, Promise.reject(new BusError("refused", "no history here")));
  await publish(setup, "news", 3, 4);
  await until(() => socket.closed !== null, 2000, "the member told, once the catch-up gave up");
  assert.deepEqual(socket.closed, { code: 3010, reason: "insufficient state" });
  assert.deepEqual(dataOf(socket), [1, 3, 4], "what was held went out first: 2 is lost, and said to be");
  assert.equal(reads, 10);
  assert.ok(setup.logs.some((line) => line.includes("gave up reading what a channel's members missed")));
  // A member that joins after goes on with the channel.
  const next = await member(setup);
  await publish(setup, "news", 5);
  assert.deepEqual(dataOf(next), [5], "and the channel goes on");
});

Deno.test("catch-up: a member that subscribes with since during a catch-up gets each publication once", async () => {
  await using setup = setUp({ catchUpCheckInterval: 60_000 }, HISTORY);
  const early = await member(setup);
  await publish(setup, "news", 1);
  const { epoch } = JSON.parse(early.sent.at(-1)!);
  await missed(setup, "news", 2, 3, 4);
  const gate = gateHistory(setup);
  await publish(setup, "news", 5);
  assert.equal(gate.calls.length, 1, "the catch-up's read is out");
  const late = await setup.connect();
  late.receive(JSON.stringify({ id: 1, subscribe: { channel: "news", since: { offset: 1, epoch } } }));
  await settle();
  assert.equal(gate.calls.length, 1, "the subscribe waits for the catch-up");
  await gate.release();
  assert.deepEqual(dataOf(early), [1, 2, 3, 4, 5]);
  await until(() => gate.calls.length === 2, 1000, "the subscribe's own read");
  await gate.release();
  await until(() => late.sent.length === 6, 1000, "the reply and four publications");
  assert.deepEqual(JSON.parse(late.sent[1]!).result, { recovered: true, offset: 5, epoch });
  assert.deepEqual(late.sent.slice(2).map((frame) => JSON.parse(frame).offset), [2, 3, 4, 5], "each once");
});

Deno.test("catch-up: members who missed what has all expired from history are told, though the channel stays quiet", async () => {
  const clock = { now: 1_000_000 };
  await using setup = setUp({ catchUpCheckInterval: 10 }, {
    history: { subjects: ["channel.*"], size: 10, ttl: 1000 },
    now: () => clock.now,
  });
  const socket = await member(setup);
  await publish(setup, "news", 1);
  setup.pusherBus.offline = true;
  await publish(setup, "news", 2, 3);
  // Down longer than the history keeps a message: history says the top is 3, and has nothing after 1.
  clock.now += 5000;
  setup.pusherBus.offline = false;
  await until(() => socket.closed !== null, 2000, "the member told");
  assert.deepEqual(socket.closed, { code: 3010, reason: "insufficient state" });
  assert.deepEqual(dataOf(socket), [1]);
});

Deno.test("catch-up: live publications dropped past the bound while a read was out are read back, though the channel then stays quiet", async () => {
  await using setup = setUp({ catchUpCheckInterval: 10, maxRecoverMessages: 3 }, HISTORY);
  const socket = await member(setup);
  await publish(setup, "news", 1);
  await missed(setup, "news", 2);
  // The worker's look sees the link back and reads; the bus answers (2 only) before 3 to 7 come, but late.
  const deliverAnswer = await answeredLate(setup);
  await publish(setup, "news", 3, 4, 5, 6, 7);
  deliverAnswer();
  await until(() => dataOf(socket).length === 7, 1000, "3 to 7, held over the bound, read back");
  assert.deepEqual(dataOf(socket), [1, 2, 3, 4, 5, 6, 7]);
});

Deno.test("catch-up: ten failed reads in a row give up, not ten in all", async () => {
  await using setup = setUp({ catchUpCheckInterval: 5, maxRecoverMessages: 1 }, {
    history: { subjects: ["channel.*"], size: 50 },
  });
  const socket = await member(setup);
  await publish(setup, "news", 1);
  await missed(setup, "news", ...Array.from({ length: 12 }, (_, i) => i + 2));
  const real = setup.pusherBus.history.bind(setup.pusherBus);
  let reads = 0;
  // Every other read fails: never two in a row, and a page of one each time.
  setup.pusherBus.history = (subject: string, options?: HistoryOptions) =>
    ++reads % 2 === 1 ? Promise.reject(new BusError("unavailable", "blip")) : real(subject, options);
  await publish(setup, "news", 14);
  await until(() => dataOf(socket).length === 14, 5000, "every publication, page by page");
  assert.deepEqual(dataOf(socket), Array.from({ length: 14 }, (_, i) => i + 1));
  assert.equal(socket.closed, null);
});

/** A member of `news` whose subscribe's history read failed: answered without a position. */
async function unplacedMember(setup: Setup): Promise<FakeSocket> {
  const real = setup.pusherBus.history.bind(setup.pusherBus);
  setup.pusherBus.history = () => {
    setup.pusherBus.history = real;
    return Promise.reject(new BusError("unavailable", "down"));
  };
  const socket = await member(setup);
  assert.deepEqual(JSON.parse(socket.sent[1]!), { id: 1, result: {} }, "answered, without a position");
  return socket;
}

Deno.test("catch-up: a member answered without a position is told when the link drops before the next publication", async () => {
  await using setup = setUp({ catchUpCheckInterval: 60_000 }, HISTORY);
  const socket = await unplacedMember(setup);
  await missed(setup, "news", 1, 2);
  await publish(setup, "news", 3);
  await until(() => socket.closed !== null, 1000, "the member told");
  assert.deepEqual(
    socket.closed,
    { code: 3010, reason: "insufficient state" },
    "no position to read 1 and 2 back from",
  );
  assert.deepEqual(dataOf(socket), [], "3 alone would have hidden the gap");
});

Deno.test("catch-up: a member answered without a position is told on a quiet channel once the worker sees its link came back", async () => {
  await using setup = setUp({ catchUpCheckInterval: 10 }, HISTORY);
  const socket = await unplacedMember(setup);
  await missed(setup, "news", 1);
  await until(() => socket.closed !== null, 2000, "the member told");
  assert.deepEqual(socket.closed, { code: 3010, reason: "insufficient state" });
});

Deno.test("catch-up: a member answered without a position gets one from the next publication, and later gaps are read back", async () => {
  await using setup = setUp({ catchUpCheckInterval: 10 }, HISTORY);
  const socket = await unplacedMember(setup);
  await publish(setup, "news", 1);
  await missed(setup, "news", 2, 3);
  await until(() => dataOf(socket).length === 3, 2000, "2 and 3 read back from 1");
  assert.deepEqual(dataOf(socket), [1, 2, 3]);
  assert.equal(socket.closed, null);
});

Deno.test("catch-up: a member whose subscribe waits for a catch-up that finds a loss is answered, not closed: it missed nothing", async () => {
  await using setup = setUp({ catchUpCheckInterval: 60_000 }, HISTORY);
  const { early, gate } = await lossUnderWay(setup);
  const late = await setup.connect();
  late.receive(JSON.stringify({ id: 1, subscribe: { channel: "news" } }));
  await settle();
  assert.equal(late.sent.length, 1, "its reply waits for the catch-up");
  await gate.release();
  await until(() => early.closed !== null, 1000, "the early member told");
  assert.deepEqual(early.closed, { code: 3010, reason: "insufficient state" });
  await until(() => late.sent.length === 2, 1000, "the late member's reply");
  const reply = JSON.parse(late.sent[1]!);
  assert.equal(reply.id, 1);
  assert.equal(reply.result.recovered, false);
  assert.equal(late.closed, null, "it joined after the gap: nothing of it was lost to it");
  await publish(setup, "news", 18);
  await until(() => dataOf(late).includes(18), 1000, "the next publication");
  assert.equal(late.closed, null);
});

Deno.test("catch-up: a member from before the gap that subscribes again during the catch-up is still told of the loss", async () => {
  await using setup = setUp({ catchUpCheckInterval: 60_000 }, HISTORY);
  const { early, gate } = await lossUnderWay(setup);
  // Its second subscribe has no `since`: were it answered, it would go on from 17 with 2 to 16 lost untold.
  early.receive(JSON.stringify({ id: 2, subscribe: { channel: "news" } }));
  await settle();
  await gate.release();
  await until(() => early.closed !== null, 1000, "the member told");
  assert.deepEqual(early.closed, { code: 3010, reason: "insufficient state" });
});

Deno.test("catch-up: a joiner whose own history read is out when a later loss is found is told of it", async () => {
  await using setup = setUp({ catchUpCheckInterval: 60_000 }, HISTORY);
  const early = await member(setup);
  // Every read held until the test hands it over, in any order: the joiner's answer may predate a loss.
  const real = setup.pusherBus.history.bind(setup.pusherBus);
  const reads: (() => void)[] = [];
  setup.pusherBus.history = (subject: string, options?: HistoryOptions) => {
    const answer = real(subject, options);
    return new Promise((resolve) => reads.push(() => resolve(answer)));
  };
  const release = async (which: "first" | "last") => {
    (which === "first" ? reads.shift() : reads.pop())!();
    await settle();
  };
  await publish(setup, "news", 1);
  await missed(setup, "news", ...Array.from({ length: 15 }, (_, i) => i + 2));
  await publish(setup, "news", 17);
  const epoch = JSON.parse(early.sent[1]!).result.epoch;
  const late = await setup.connect();
  late.receive(JSON.stringify({ id: 1, subscribe: { channel: "news", since: { offset: 17, epoch } } }));
  await settle();
  await release("first"); // the first catch-up: 2 to 6 are gone, the early member is told
  await until(() => early.closed !== null, 1000, "the early member told");
  await until(() => reads.length === 1, 1000, "the joiner's own read, once the catch-up ended");
  await missed(setup, "news", ...Array.from({ length: 15 }, (_, i) => i + 18));
  await publish(setup, "news", 33);
  await until(() => reads.length === 2, 1000, "the second catch-up's read");
  await release("last"); // it finds 18 to 23 gone, while the joiner's answer, from offset 17, is still out
  await release("first");
  await until(() => late.closed !== null, 1000, "the joiner told");
  assert.deepEqual(late.closed, { code: 3010, reason: "insufficient state" });
});
