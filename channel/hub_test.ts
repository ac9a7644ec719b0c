import assert from "node:assert/strict";
import { Hub, type Peer } from "./hub.ts";
import { type Json, MessageDecoder, toHubMessage } from "../shared/wire.ts";

/** A peer that records what it is sent, decoded. */
class Recorder implements Peer {
  readonly frames: Uint8Array[] = [];
  full = false;

  constructor(readonly name = "peer") {}

  send(frame: Uint8Array): boolean {
    if (this.full) return false;
    this.frames.push(frame);
    return true;
  }

  /** Whether what it was sent counts as written; a test sets it to false to drop the peer's frames. */
  written = true;

  flushed(): Promise<boolean> {
    return Promise.resolve(this.written);
  }

  /** `data` of every event or queue message received, in order. */
  get data(): Json[] {
    const decoder = new MessageDecoder(toHubMessage);
    return this.frames.flatMap((frame) => decoder.push(frame)).map((m) => "data" in m ? m.data : null);
  }

  get messages() {
    const decoder = new MessageDecoder(toHubMessage);
    return this.frames.flatMap((frame) => decoder.push(frame));
  }
}

function hubWith(...peers: Peer[]): Hub {
  const hub = new Hub();
  for (const peer of peers) hub.join(peer);
  return hub;
}

Deno.test("hub delivers a publish to every subscriber of the subject once", () => {
  const a = new Recorder(), b = new Recorder(), other = new Recorder();
  const hub = hubWith(a, b, other);
  hub.subscribe(a, ["news"]);
  hub.subscribe(b, ["news"]);
  hub.subscribe(other, ["sport"]);
  const reached = hub.publish(["news"], { title: "hi" });
  assert.deepEqual(reached, [a, b]);
  assert.deepEqual(a.messages, [{ type: "event", subject: "news", data: { title: "hi" } }]);
  assert.deepEqual(b.data, [{ title: "hi" }]);
  assert.deepEqual(other.frames, []);
});

Deno.test("hub encodes an event once and hands every subscriber the same bytes", () => {
  const a = new Recorder(), b = new Recorder();
  const hub = hubWith(a, b);
  hub.subscribe(a, ["news"]);
  hub.subscribe(b, ["news"]);
  hub.publish(["news"], "x");
  assert.equal(a.frames[0], b.frames[0]);
});

Deno.test("hub subscribe is idempotent", () => {
  const a = new Recorder();
  const hub = hubWith(a);
  hub.subscribe(a, ["news"]);
  hub.subscribe(a, ["news", "news"]);
  hub.publish(["news"], 1);
  assert.deepEqual(a.data, [1]);
});

Deno.test("hub sends one event per listed subject, and a subject listed twice once", () => {
  const a = new Recorder();
  const hub = hubWith(a);
  hub.subscribe(a, ["x", "y"]);
  const reached = hub.publish(["x", "y", "x", "nobody"], "m");
  assert.equal(reached.length, 2);
  assert.deepEqual(a.messages.map((m) => m.type === "event" && m.subject), ["x", "y"]);
});

Deno.test("hub stops delivering after unsubscribe and after leave", () => {
  const a = new Recorder(), b = new Recorder();
  const hub = hubWith(a, b);
  hub.subscribe(a, ["news"]);
  hub.subscribe(b, ["news"]);
  hub.unsubscribe(a, ["news"]);
  hub.leave(b);
  assert.deepEqual(hub.publish(["news"], 1), []);
  assert.equal(hub.stats.subjects, 0);
});

Deno.test("hub does not count a subscriber that refuses the frame", () => {
  const a = new Recorder(), slow = new Recorder();
  const hub = hubWith(a, slow);
  hub.subscribe(a, ["news"]);
  hub.subscribe(slow, ["news"]);
  slow.full = true;
  assert.deepEqual(hub.publish(["news"], 1), [a]);
});

Deno.test("hub refuses subscriptions past the per-peer limit of subjects and queues, all or nothing", () => {
  const a = new Recorder();
  const hub = new Hub({ maxSubjectsPerPeer: 3 });
  hub.join(a);
  hub.subscribe(a, ["1", "2"]);
  assert.throws(() => hub.subscribe(a, ["3", "4"]), {
    name: "RangeError",
    message: "Cannot subscribe: 4 subjects and queues exceed the limit of 3 per connection",
  });
  assert.deepEqual(hub.publish(["3"], 1), []);
  hub.watch(a, ["q"]);
  assert.throws(() => hub.watch(a, ["q2"]), RangeError);
});

Deno.test("hub publishLoop takes subscribers in turn starting with the first", () => {
  const s = [new Recorder("S0"), new Recorder("S1"), new Recorder("S2")];
  const hub = hubWith(...s);
  for (const peer of s) hub.subscribe(peer, ["jobs"]);
  for (let i = 1; i <= 7; i++) assert.equal(hub.publishLoop(["jobs"], i).length, 1);
  // The original starts with the second subscriber: S1=[1,4,7], S2=[2,5], S0=[3,6].
  assert.deepEqual(s.map((peer) => peer.data), [[1, 4, 7], [2, 5], [3, 6]]);
});

Deno.test("hub publishLoop keeps the turns when a subscriber leaves or unsubscribes", () => {
  const [a, b, c, d] = [new Recorder("A"), new Recorder("B"), new Recorder("C"), new Recorder("D")];
  const hub = hubWith(a, b, c, d);
  for (const peer of [a, b, c]) hub.subscribe(peer, ["jobs"]);
  hub.publishLoop(["jobs"], 1); // A
  hub.leave(a);
  hub.publishLoop(["jobs"], 2); // B, not C: A's leaving takes no one's turn
  hub.publishLoop(["jobs"], 3); // C
  hub.subscribe(d, ["jobs"]);
  hub.unsubscribe(b, ["jobs"]);
  hub.publishLoop(["jobs"], 4); // C again: D joined at the back, after C's turn came round
  hub.publishLoop(["jobs"], 5); // D
  assert.deepEqual([a.data, b.data, c.data, d.data], [[1], [2], [3, 4], [5]]);
});

Deno.test("hub publishLoop skips a subscriber that refuses the frame", () => {
  const a = new Recorder(), b = new Recorder();
  const hub = hubWith(a, b);
  hub.subscribe(a, ["jobs"]);
  hub.subscribe(b, ["jobs"]);
  a.full = true;
  assert.deepEqual(hub.publishLoop(["jobs"], 1), [b]);
  assert.deepEqual(b.data, [1]);
});

Deno.test("hub reserve with queues credits only those of them the peer watches", () => {
  const w = new Recorder("W");
  const hub = hubWith(w);
  hub.watch(w, ["a", "b"]);
  for (const [queue, data] of [["a", "a1"], ["a", "a2"], ["b", "b1"], ["b", "b2"], ["c", "c1"]]) {
    hub.enqueue([queue!], data!);
  }
  hub.reserve(w, ["b", "c"]);
  assert.deepEqual(w.data, ["b1"], "b only: a was not asked, c is not watched");
  hub.reserve(w, ["b"]);
  assert.deepEqual(w.data, ["b1", "b2"]);
  hub.reserve(w);
  assert.deepEqual(w.data, ["b1", "b2", "a1"], "without queues, every watched queue");
});

Deno.test("hub queues follow the original's observed sequence", () => {
  // Reference section 3.3, observed on the original.
  const w1 = new Recorder("W1"), w2 = new Recorder("W2"), w3 = new Recorder("W3");
  const hub = hubWith(w1, w2, w3);
  for (const m of ["m1", "m2", "m3"]) assert.equal(hub.enqueue(["q"], m), 1);
  hub.watch(w1, ["q"]);
  assert.deepEqual(w1.data, [], "watching alone takes nothing");
  hub.reserve(w1);
  assert.deepEqual(w1.data, ["m1"]);
  hub.reserve(w1);
  hub.reserve(w1);
  assert.deepEqual(w1.data, ["m1", "m2", "m3"]);
  hub.watch(w2, ["q"]);
  hub.reserve(w2);
  hub.enqueue(["q"], "m4");
  hub.enqueue(["q"], "m5");
  assert.deepEqual(w2.data, ["m4"]);
  assert.equal(hub.stats.queuedMessages, 1, "m5 waits");
  hub.reserve(w1);
  assert.deepEqual(w1.data, ["m1", "m2", "m3", "m5"]);
  hub.unwatch(w1, ["q"]);
  hub.unwatch(w2, ["q"]);
  hub.enqueue(["q"], "m6");
  hub.watch(w3, ["q"]);
  hub.reserve(w3);
  hub.enqueue(["q"], "m7");
  assert.deepEqual(w3.data, ["m6"], "m7 waits for the next reserve");
  hub.reserve(w3);
  assert.deepEqual(w3.data, ["m6", "m7"]);
});

Deno.test("hub reserve without watch does nothing, and a second unused reserve adds no credit", () => {
  const a = new Recorder();
  const hub = hubWith(a);
  hub.reserve(a);
  hub.enqueue(["q"], 1);
  assert.deepEqual(a.data, []);
  hub.watch(a, ["q"]);
  hub.reserve(a);
  assert.deepEqual(a.data, [1]);
  hub.reserve(a);
  hub.reserve(a);
  hub.enqueue(["q"], 2);
  hub.enqueue(["q"], 3);
  assert.deepEqual(a.data, [1, 2], "two reserves before a message grant one credit");
  assert.equal(hub.stats.queuedMessages, 1);
});

Deno.test("hub reserve grants one credit on every watched queue", () => {
  const a = new Recorder();
  const hub = hubWith(a);
  hub.watch(a, ["q1", "q2"]);
  hub.enqueue(["q1"], "a");
  hub.enqueue(["q1"], "b");
  hub.enqueue(["q2"], "c");
  hub.reserve(a);
  assert.deepEqual(a.data, ["a", "c"]);
});

Deno.test("hub keeps events and queues of the same name apart", () => {
  const a = new Recorder();
  const hub = hubWith(a);
  hub.subscribe(a, ["x"]);
  hub.enqueue(["x"], "queued");
  assert.deepEqual(a.data, []);
  hub.watch(a, ["x"]);
  hub.reserve(a);
  hub.publish(["x"], "published");
  assert.deepEqual(a.messages.map((m) => m.type), ["queue", "event"]);
});

Deno.test("hub refuses an enqueue past the queue length limit and the queue does not grow", () => {
  const hub = new Hub({ maxQueueLength: 2 });
  hub.enqueue(["q"], 1);
  hub.enqueue(["q"], 2);
  assert.throws(() => hub.enqueue(["q"], 3), {
    name: "RangeError",
    message: 'Cannot enqueue: queue "q" holds its limit of 2 messages',
  });
  assert.throws(() => hub.enqueue(["other", "q"], 3), RangeError, "all or nothing");
  assert.equal(hub.stats.queuedMessages, 2);
  assert.equal(hub.stats.queues, 1);
});

Deno.test("hub refuses an enqueue past the total queued bytes limit", () => {
  const hub = new Hub({ maxQueuedBytes: 1500 });
  hub.enqueue(["q"], "x".repeat(100)); // 640 for the queue, and its frame
  hub.enqueue(["q"], "x".repeat(100));
  assert.throws(() => hub.enqueue(["r"], "x".repeat(100)), /queues hold their limit of 1500 bytes/);
  assert.equal(hub.stats.queuedMessages, 2);
});

Deno.test("hub counts what a queue costs against the queued bytes limit: tiny messages to new queues stop early", () => {
  const hub = new Hub({ maxQueuedBytes: 64 * 1024 });
  let queues = 0;
  assert.throws(() => {
    for (;; queues++) hub.enqueue([`q${queues}`], 0);
  }, RangeError);
  // Frames alone (about 40 bytes) would have let some 1,600 queues in.
  assert.ok(queues <= 64 * 1024 / 640, `${queues} queues`);
  assert.equal(hub.stats.queues, queues);
});

Deno.test("hub charges a queue's cost only to queues an enqueue creates: watching alone takes nothing from the limit", () => {
  const hub = new Hub({ maxQueuedBytes: 64 * 1024 });
  for (let p = 0; p < 3; p++) {
    const watcher = new Recorder(`W${p}`);
    hub.join(watcher);
    hub.watch(watcher, Array.from({ length: 1000 }, (_, i) => `w${p}.${i}`));
  }
  assert.equal(hub.stats.queuedBytes, 0);
  assert.equal(hub.enqueue(["jobs"], { n: 1 }), 1);
});

Deno.test("hub puts the messages of a consumer that went before taking them back in their order", async () => {
  const gone = new Recorder("gone"), next = new Recorder("next");
  const hub = hubWith(gone, next);
  gone.written = false; // none of what it is sent reaches it
  hub.watch(gone, ["q"]);
  hub.watch(next, ["q"]);
  for (const data of ["m1", "m2", "m3"]) hub.enqueue(["q"], data);
  hub.reserve(gone); // m1
  hub.reserve(gone); // m2
  hub.leave(gone);
  await new Promise((resolve) => setTimeout(resolve, 0));
  for (let i = 0; i < 3; i++) hub.reserve(next);
  assert.deepEqual(next.data, ["m1", "m2", "m3"]);
});

Deno.test("hub keeps a queue message for the next consumer when the first refuses it", () => {
  const a = new Recorder(), b = new Recorder();
  const hub = hubWith(a, b);
  hub.watch(a, ["q"]);
  hub.watch(b, ["q"]);
  hub.reserve(a);
  hub.reserve(b);
  a.full = true;
  hub.enqueue(["q"], "job");
  assert.deepEqual(b.data, ["job"]);
  assert.equal(hub.stats.queuedMessages, 0);
});

Deno.test("hub drops an empty queue once nobody watches it", () => {
  const a = new Recorder();
  const hub = hubWith(a);
  hub.watch(a, ["q"]);
  assert.equal(hub.stats.queues, 1);
  hub.leave(a);
  assert.equal(hub.stats.queues, 0);
});

Deno.test("hub refuses to route a message over maxFrameBytes, to any subject or queue, once encoded", () => {
  const a = new Recorder(), b = new Recorder();
  const hub = new Hub({ maxFrameBytes: 120 });
  hub.join(a);
  hub.join(b);
  hub.subscribe(a, ["short"]);
  hub.subscribe(b, ["a-much-longer-channel-name"]);
  hub.watch(a, ["q"]);
  // Fits in "short"'s event (108 bytes), not in the other's (129): neither gets it.
  const data = "x".repeat(60);
  assert.throws(() => hub.publish(["short", "a-much-longer-channel-name"], data), RangeError);
  assert.throws(() => hub.publishLoop(["short", "a-much-longer-channel-name"], data), RangeError);
  assert.throws(() => hub.enqueue(["q"], "x".repeat(80)), /over the 120-byte limit/);
  assert.deepEqual([a.frames, b.frames], [[], []]);
  assert.deepEqual(hub.publish(["short"], data), [a]);
  assert.equal(hub.stats.queuedMessages, 0);
});

Deno.test("hub puts a queue message back at the head of its queue when its consumer goes before writing it", async () => {
  const gone = new Recorder("gone"), next = new Recorder("next");
  const hub = hubWith(gone, next);
  hub.watch(gone, ["q"]);
  hub.watch(next, ["q"]);
  hub.enqueue(["q"], "m1");
  hub.enqueue(["q"], "m2");
  gone.written = false;
  hub.reserve(gone);
  assert.deepEqual(gone.data, ["m1"]);
  hub.leave(gone);
  // flushed() settles on a later microtask, as a socket's would.
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(hub.stats.queuedMessages, 2);
  hub.reserve(next);
  assert.deepEqual(next.data, ["m1"], "m1 is first again");
  hub.reserve(next);
  assert.deepEqual(next.data, ["m1", "m2"]);
  assert.equal(hub.stats.queuedMessages, 0);
});

Deno.test("hub reserve stops when the peer leaves while taking a message, even if its other queues went too", () => {
  const hub = new Hub();
  const quitter: Peer = {
    send() {
      hub.leave(quitter); // what a connection does when it cannot take a frame
      return false;
    },
    flushed: () => Promise.resolve(false),
  };
  hub.join(quitter);
  hub.watch(quitter, ["full", "empty"]);
  hub.enqueue(["full"], "waiting");
  hub.reserve(quitter);
  assert.deepEqual(hub.stats, {
    peers: 0,
    subjects: 0,
    queues: 1,
    queuedMessages: 1,
    queuedBytes: hub.stats.queuedBytes,
    historySubjects: 0,
    historyBytes: 0,
    historyEvictions: 0,
  });
});

Deno.test("hub bare reserve costs the same whatever the peer watches, once its credits are given", () => {
  // A 22-byte reserve that walked every watched queue let one peer hold the hub for a minute and a half.
  const timeReserves = (queues: number): number => {
    const peer = new Recorder();
    const hub = hubWith(peer);
    hub.watch(peer, Array.from({ length: queues }, (_, i) => `q${i}`));
    hub.reserve(peer);
    const start = performance.now();
    for (let i = 0; i < 2000; i++) hub.reserve(peer);
    return performance.now() - start;
  };
  timeReserves(1); // warm up
  const one = Math.max(timeReserves(1), 0.5);
  const many = timeReserves(20_000);
  assert.ok(
    many < 50 * one,
    `2000 reserves: ${many.toFixed(1)} ms watching 20,000 queues, ${one.toFixed(1)} ms watching 1`,
  );
  // And a credit used is given again by the next bare reserve.
  const peer = new Recorder();
  const hub = hubWith(peer);
  hub.watch(peer, ["a", "b"]);
  hub.reserve(peer);
  hub.enqueue(["a"], 1);
  hub.enqueue(["a"], 2);
  hub.enqueue(["b"], 3);
  hub.reserve(peer);
  hub.reserve(peer);
  assert.deepEqual(peer.data, [1, 3, 2]);
});
