import assert from "node:assert/strict";
import fc from "fast-check";
import { concat } from "./bytes.ts";
import { mulberry32 } from "./testing.ts";
import { type ByteSink, FrameWriter } from "./writer.ts";

/** How long any single wait in these tests may take before it fails. */
const DEADLINE_MS = 2000;

/** Awaits `promise`, failing with a message naming `what` if it takes longer than the deadline. */
async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  const signal = AbortSignal.timeout(DEADLINE_MS);
  let onAbort!: () => void;
  const timedOut = new Promise<never>((_, reject) => {
    onAbort = () => reject(new Error(`Timed out after ${DEADLINE_MS} ms waiting for ${what}`));
    signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, timedOut]);
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

const PENDING = Symbol("pending");

/** True if `promise` has not settled yet: it loses a race against an already-resolved marker. */
async function isPending(promise: Promise<unknown>): Promise<boolean> {
  return (await Promise.race([promise, Promise.resolve(PENDING)])) === PENDING;
}

/** Lets every queued microtask and one macrotask run, so a writer that would write has written. */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

function bytes(...values: number[]): Uint8Array {
  return new Uint8Array(values);
}

function filled(length: number, value: number): Uint8Array {
  return new Uint8Array(length).fill(value);
}

/** One `write` call seen by the fake sink; the test decides when and how it completes. */
interface WriteCall {
  /** A copy of the bytes handed to `write`. */
  bytes: Uint8Array;
  /** The very array handed to `write`. */
  handed: Uint8Array;
  /** Completes the write, reporting `count` bytes written (all of them by default). */
  resolve(count?: number): void;
  /** Fails the write. */
  reject(error: Error): void;
}

/** A socket stand-in that records each write and lets the test complete it, fully, partly or with an error. */
class FakeSink implements ByteSink {
  readonly calls: WriteCall[] = [];
  /** Bytes the sink reported as written, in order: what the peer would read. */
  readonly accepted: Uint8Array[] = [];
  #waiters: (() => void)[] = [];

  write(data: Uint8Array): Promise<number> {
    const copy = data.slice();
    const { promise, resolve, reject } = Promise.withResolvers<number>();
    this.calls.push({
      bytes: copy,
      handed: data,
      resolve: (count = copy.length) => {
        this.accepted.push(copy.subarray(0, count));
        resolve(count);
      },
      reject,
    });
    for (const wake of this.#waiters.splice(0)) wake();
    return promise;
  }

  /** The `index`th write call (0-based), once it has been made. */
  async call(index: number): Promise<WriteCall> {
    while (this.calls.length <= index) {
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#waiters.push(resolve);
      await within(promise, `write call #${index} (seen ${this.calls.length})`);
    }
    return this.calls[index]!;
  }

  /** Everything the sink reported as written, concatenated. */
  get written(): Uint8Array {
    return concat(this.accepted);
  }
}

Deno.test("frame writer sends frames enqueued in the same tick in one write call", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink);
  assert.equal(writer.enqueue(bytes(1, 2)), true);
  assert.equal(writer.enqueue(bytes(3)), true);
  assert.equal(writer.enqueue(bytes(4, 5, 6)), true);
  assert.equal(sink.calls.length, 0, "the first write of a burst waits for a microtask");
  // A few microtask turns, no macrotask: the write must already have started.
  for (let turn = 0; turn < 5; turn++) await null;
  assert.equal(sink.calls.length, 1, "the write starts within the same macrotask, not after a timer");
  const first = await sink.call(0);
  assert.deepEqual(first.bytes, bytes(1, 2, 3, 4, 5, 6));
  first.resolve();
  assert.equal(await within(writer.flushed(), "flushed() after the single write"), true);
  await settle();
  assert.equal(sink.calls.length, 1, "all three frames went out in one write");
});

Deno.test("frame writer holds frames enqueued while a write is in flight and coalesces them into the next single write", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink);
  writer.enqueue(bytes(1));
  const first = await sink.call(0);
  assert.deepEqual(first.bytes, bytes(1));
  // Frames arriving over several ticks while the first write is in flight.
  writer.enqueue(bytes(2, 3));
  await settle();
  writer.enqueue(bytes(4));
  await settle();
  writer.enqueue(bytes(5, 6));
  await settle();
  assert.equal(sink.calls.length, 1, "no second write starts while one is in flight");
  first.resolve();
  const second = await sink.call(1);
  assert.deepEqual(second.bytes, bytes(2, 3, 4, 5, 6), "the held frames go out together, in order");
  second.resolve();
  assert.equal(await within(writer.flushed(), "flushed() after the coalesced write"), true);
  await settle();
  assert.equal(sink.calls.length, 2);
  assert.deepEqual(sink.written, bytes(1, 2, 3, 4, 5, 6));
});

Deno.test("frame writer joins a backlog of small frames into few buffers, and writes them all in order", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink);
  writer.enqueue(bytes(0));
  const first = await sink.call(0);
  // Behind a blocked write, each small frame would otherwise stay a separate
  // typed array with its buffer: many times its one byte, which the cap does
  // not count.
  const count = 10_000;
  for (let i = 1; i <= count; i++) writer.enqueue(bytes(i % 256));
  assert.equal(writer.queuedBuffers, Math.floor(count / 256) + (count % 256));
  assert.equal(writer.pendingBytes, 1 + count);
  first.resolve();
  (await sink.call(1)).resolve();
  assert.equal(await within(writer.flushed(), "the backlog to flush"), true);
  assert.deepEqual(sink.written, Uint8Array.from({ length: count + 1 }, (_, i) => i % 256));
  assert.equal(sink.calls.length, 2, "the whole backlog went out in one write");
});

/** A sink that keeps the very buffers it is handed, each write done at once: to see which writers share one. */
class KeepingSink implements ByteSink {
  readonly buffers: Uint8Array[] = [];

  write(data: Uint8Array): Promise<number> {
    this.buffers.push(data);
    return Promise.resolve(data.length);
  }
}

Deno.test("frame writer: sockets queued the same frames in a tick share one joined buffer; others get their own bytes", async () => {
  const [a, b, c, x, y] = [bytes(1, 2), bytes(3), bytes(4, 5), bytes(6), bytes(7)];
  const queues = [[a, b], [a, b], [a, b], [a, c], [a, b], [a, x, b], [a, y, b], [b]];
  const sinks = queues.map(() => new KeepingSink());
  queues.forEach((frames, i) => {
    const writer = new FrameWriter(sinks[i]!);
    for (const frame of frames) writer.enqueue(frame);
  });
  await settle();
  const written = sinks.map((sink) => {
    assert.equal(sink.buffers.length, 1, "each writer wrote once");
    return sink.buffers[0]!;
  });
  queues.forEach((frames, i) => assert.deepEqual(written[i], concat(frames), `writer ${i} wrote its own frames`));
  assert.equal(written[1], written[0], "the broadcast's second socket got the first one's buffer");
  assert.equal(written[2], written[0], "and the third");
  assert.notEqual(written[4], written[0], "after another join, equal frames are joined afresh (one join is kept)");
  assert.equal(written[7], b, "a lone frame is written as it is");
});

Deno.test("frame writer: sockets with the same backlog behind a blocked write share its joined buffers", async () => {
  const sinks = [new FakeSink(), new FakeSink()];
  const writers = sinks.map((sink) => new FrameWriter(sink));
  for (const writer of writers) writer.enqueue(bytes(0));
  const firsts = await Promise.all(sinks.map((sink) => sink.call(0)));
  const frames = Array.from({ length: 256 }, (_, i) => bytes(i));
  for (const frame of frames) for (const writer of writers) writer.enqueue(frame);
  const [one, two] = writers as [FrameWriter, FrameWriter];
  assert.equal(one.queuedBuffers, 1, "the 256 frames were joined");
  for (const first of firsts) first.resolve();
  const seconds = await Promise.all(sinks.map((sink) => sink.call(1)));
  assert.equal(seconds[1]!.handed, seconds[0]!.handed, "one buffer for both sockets' backlogs");
  for (const [i, sink] of sinks.entries()) {
    seconds[i]!.resolve();
    assert.deepEqual(sink.written, concat([bytes(0), ...frames]), `socket ${i} got every frame in order`);
  }
  assert.equal(await within(two.flushed(), "the second socket's backlog"), true);
});

Deno.test("frame writer continues partial writes until every byte is written, in order", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink);
  const a = filled(10, 0xa);
  const b = filled(10, 0xb);
  writer.enqueue(a);
  writer.enqueue(b);
  const done = writer.flushed();

  const first = await sink.call(0);
  assert.deepEqual(first.bytes, concat([a, b]));
  first.resolve(3);
  const second = await sink.call(1);
  assert.deepEqual(second.bytes, concat([a, b]).subarray(3), "the rest follows from where the sink stopped");
  // A frame enqueued mid-way must not cut into the unfinished write.
  const c = filled(4, 0xc);
  writer.enqueue(c);
  second.resolve(1);
  const third = await sink.call(2);
  assert.deepEqual(third.bytes, concat([a, b]).subarray(4));
  assert.equal(await isPending(done), true, "flushed() waits until the partial write has finished");
  third.resolve();
  assert.equal(await within(done, "flushed() after the partial writes"), true);
  const fourth = await sink.call(3);
  assert.deepEqual(fourth.bytes, c);
  fourth.resolve(2);
  (await sink.call(4)).resolve();
  assert.equal(await within(writer.flushed(), "flushed() after the last frame"), true);
  assert.deepEqual(sink.written, concat([a, b, c]), "every byte arrives exactly once, in order");
  assert.equal(writer.pendingBytes, 0);
});

Deno.test("frame writer enqueue refuses a frame past maxPendingBytes and queues nothing, counting queued and in-flight bytes", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink, { maxPendingBytes: 10 });
  assert.equal(writer.pendingBytes, 0);
  assert.equal(writer.enqueue(filled(4, 1)), true);
  assert.equal(writer.pendingBytes, 4);
  const first = await sink.call(0);
  assert.equal(writer.pendingBytes, 4, "bytes in flight still count");
  assert.equal(writer.enqueue(filled(4, 2)), true);
  assert.equal(writer.pendingBytes, 8, "queued plus in flight");
  assert.equal(writer.enqueue(filled(3, 3)), false, "8 + 3 would pass the cap of 10");
  assert.equal(writer.pendingBytes, 8, "a refused frame is not counted");
  assert.equal(writer.enqueue(filled(2, 4)), true, "8 + 2 reaches the cap exactly");
  assert.equal(writer.pendingBytes, 10);
  assert.equal(writer.enqueue(bytes(5)), false);

  first.resolve();
  const second = await sink.call(1);
  assert.deepEqual(second.bytes, concat([filled(4, 2), filled(2, 4)]), "refused frames were never queued");
  assert.equal(writer.pendingBytes, 6);
  second.resolve(5);
  const third = await sink.call(2);
  assert.equal(writer.pendingBytes, 6, "a partly written buffer is in flight until it is all written");
  third.resolve();
  assert.equal(await within(writer.flushed(), "flushed() after the capped writes"), true);
  assert.equal(writer.pendingBytes, 0);
  assert.equal(writer.enqueue(filled(10, 5)), true, "room frees up once bytes are written");
  (await sink.call(3)).resolve();
  assert.equal(await within(writer.flushed(), "flushed() after the last frame"), true);
});

Deno.test("frame writer accepts one frame larger than maxPendingBytes when nothing waits, and refuses frames behind it", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink, { maxPendingBytes: 10 });
  assert.equal(writer.enqueue(filled(11, 9)), true, "an idle writer takes one frame whatever its size");
  assert.equal(writer.pendingBytes, 11);
  assert.equal(writer.enqueue(bytes(1)), false, "bytes already wait past the cap");
  const first = await sink.call(0);
  assert.equal(writer.enqueue(bytes(1)), false, "in-flight bytes count against the cap");
  first.resolve();
  assert.equal(await within(writer.flushed(), "flushed() after the oversized frame"), true);
  assert.equal(writer.pendingBytes, 0);
  await settle();
  assert.deepEqual(sink.written, filled(11, 9), "only the oversized frame was written");
});

Deno.test("frame writer flushed() resolves true only after the write holding the earlier frames completes", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink);
  writer.enqueue(bytes(1));
  writer.enqueue(bytes(2));
  const firstFlushed = writer.flushed();
  const first = await sink.call(0);
  assert.equal(await isPending(firstFlushed), true, "flushed() is pending while its bytes are in flight");

  writer.enqueue(bytes(3));
  const secondFlushed = writer.flushed();
  assert.equal(await isPending(secondFlushed), true);

  first.resolve();
  assert.equal(await within(firstFlushed, "flushed() for the first write"), true);
  assert.equal(await isPending(secondFlushed), true, "a later frame's flushed() waits for its own write");
  const second = await sink.call(1);
  assert.deepEqual(second.bytes, bytes(3));
  second.resolve();
  assert.equal(await within(secondFlushed, "flushed() for the second write"), true);
});

Deno.test("frame writer flushed() resolves true at once when nothing is pending", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink);
  const idle = writer.flushed();
  assert.equal(await isPending(idle), false, "a new writer has nothing to flush");
  assert.equal(await idle, true);

  writer.enqueue(bytes(1));
  (await sink.call(0)).resolve();
  assert.equal(await within(writer.flushed(), "flushed() after the write"), true);
  const again = writer.flushed();
  assert.equal(await isPending(again), false, "everything enqueued is already written");
  assert.equal(await again, true);
  assert.equal(sink.calls.length, 1, "flushed() does not write anything by itself");
});

Deno.test("frame writer on a write that rejects calls onError once, resolves flushed() false and refuses enqueue", async () => {
  const sink = new FakeSink();
  const errors: Error[] = [];
  const writer = new FrameWriter(sink, { onError: (error) => errors.push(error) });
  writer.enqueue(bytes(1, 2, 3));
  const firstFlushed = writer.flushed();
  const first = await sink.call(0);
  writer.enqueue(bytes(4));
  const secondFlushed = writer.flushed();

  const failure = new Error("Broken pipe");
  first.reject(failure);
  assert.equal(await within(firstFlushed, "flushed() for the failed write"), false);
  assert.equal(await within(secondFlushed, "flushed() for the frame queued behind it"), false);
  assert.deepEqual(errors, [failure], "onError gets the write's error, once");
  assert.equal(writer.ended, true);
  assert.equal(writer.enqueue(bytes(5)), false, "a failed writer accepts nothing");
  assert.equal(await within(writer.flushed(), "flushed() after the failure"), false);
  assert.equal(await within(writer.end(bytes(6)), "end() after the failure"), false);
  await settle();
  assert.equal(sink.calls.length, 1, "nothing more is written after a failure");
  assert.equal(errors.length, 1);
  assert.equal(writer.pendingBytes, 0, "nothing is pending on a failed writer");
});

Deno.test("frame writer: many writers started in one tick each send their frames in one write, and one started later still writes", async () => {
  const sinks = Array.from({ length: 300 }, () => new FakeSink());
  const writers = sinks.map((sink) => new FrameWriter(sink));
  writers.forEach((writer, i) => {
    writer.enqueue(bytes(i % 256));
    writer.enqueue(bytes(7));
  });
  for (let turn = 0; turn < 5; turn++) await null;
  for (const [i, sink] of sinks.entries()) {
    assert.equal(sink.calls.length, 1, `writer ${i} made one write`);
    assert.deepEqual(sink.calls[0]!.bytes, bytes(i % 256, 7), `writer ${i} wrote both its frames`);
    sink.calls[0]!.resolve();
  }
  // Queued from a promise callback, once the writers above have started: it must not wait for them.
  const late = new FakeSink();
  await Promise.resolve().then(() => new FrameWriter(late).enqueue(bytes(9)));
  assert.deepEqual((await late.call(0)).bytes, bytes(9));
  assert.equal(await within(writers[299]!.flushed(), "the last of the 300 writers"), true);
});

Deno.test("frame writer on a sink that throws calls onError once, and other writers started with it still write", async () => {
  const failure = new Error("Bad resource ID");
  const errors: Error[] = [];
  const throwing = new FrameWriter({
    write() {
      throw failure;
    },
  }, { onError: (error) => errors.push(error) });
  const sink = new FakeSink();
  const other = new FrameWriter(sink);
  throwing.enqueue(bytes(1));
  other.enqueue(bytes(2));
  assert.equal(await within(throwing.flushed(), "flushed() of the throwing writer"), false);
  assert.deepEqual(errors, [failure]);
  assert.equal(throwing.enqueue(bytes(3)), false, "a failed writer accepts nothing");
  assert.equal(throwing.pendingBytes, 0);
  assert.deepEqual((await sink.call(0)).bytes, bytes(2), "the other writer wrote");
});

Deno.test("frame writer end(last) drops frames queued but not in flight, writes last after the in-flight write and resolves true", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink);
  writer.enqueue(bytes(1, 1));
  const inFlightFlushed = writer.flushed();
  const first = await sink.call(0);
  writer.enqueue(bytes(2, 2));
  const droppedFlushed = writer.flushed();

  const last = bytes(9, 9, 9);
  const ended = writer.end(last);
  assert.equal(writer.ended, true);
  assert.equal(await within(droppedFlushed, "flushed() for the dropped frame"), false, "dropped bytes never flush");
  // The peer is being dropped, so even the write in flight no longer counts as delivered.
  assert.equal(await within(inFlightFlushed, "flushed() for the in-flight write"), false);
  assert.equal(await isPending(ended), true, "end() waits for last to be written");
  assert.equal(writer.enqueue(bytes(3)), false, "an ended writer accepts nothing");
  assert.equal(writer.pendingBytes, 2 + 3, "in flight plus last; the dropped frame is gone");

  first.resolve();
  const second = await sink.call(1);
  assert.deepEqual(second.bytes, last, "only last follows the in-flight write");
  assert.equal(await isPending(ended), true);
  second.resolve();
  assert.equal(await within(ended, "end() to resolve"), true);
  assert.equal(await within(writer.end(), "a second end()"), true, "ending twice is harmless");
  await settle();
  assert.equal(sink.calls.length, 2);
  assert.deepEqual(sink.written, concat([bytes(1, 1), last]));
});

Deno.test("frame writer end(last) before the first write drops the same-tick frames and writes only last", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink);
  writer.enqueue(bytes(1));
  writer.enqueue(bytes(2));
  const ended = writer.end(bytes(9));
  const only = await sink.call(0);
  assert.deepEqual(only.bytes, bytes(9));
  only.resolve();
  assert.equal(await within(ended, "end() to resolve"), true);
  await settle();
  assert.equal(sink.calls.length, 1);

  const idle = new FrameWriter(new FakeSink());
  assert.equal(await within(idle.end(), "end() on an idle writer"), true);
});

Deno.test("frame writer flushed() called after end() resolves false, even for a frame whose bytes were all written", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink);
  writer.enqueue(bytes(1));
  (await sink.call(0)).resolve();
  assert.equal(await within(writer.flushed(), "flushed() before end()"), true);
  writer.enqueue(bytes(2));
  const ended = writer.end(bytes(9));
  // A caller that queued a frame just before the end (a hub acknowledging a
  // publish, say) must not count it as delivered: it was dropped.
  assert.equal(await within(writer.flushed(), "flushed() after end()"), false);
  (await sink.call(1)).resolve();
  assert.equal(await within(ended, "end() to resolve"), true);
  assert.equal(await within(writer.flushed(), "flushed() once idle"), false);
  assert.deepEqual(sink.written, bytes(1, 9));
});

Deno.test("frame writer end(last) resolves false when the write fails", async () => {
  const sink = new FakeSink();
  const errors: Error[] = [];
  const writer = new FrameWriter(sink, { onError: (error) => errors.push(error) });
  writer.enqueue(bytes(1));
  const first = await sink.call(0);
  const ended = writer.end(bytes(9));
  first.resolve();
  (await sink.call(1)).reject(new Error("Connection reset"));
  assert.equal(await within(ended, "end() to resolve"), false);
  assert.equal(errors.length, 1);
});

Deno.test("frame writer close() resolves pending flushed() false and stops writing", async () => {
  const sink = new FakeSink();
  const errors: Error[] = [];
  const writer = new FrameWriter(sink, { onError: (error) => errors.push(error) });
  writer.enqueue(bytes(1));
  const inFlightFlushed = writer.flushed();
  const first = await sink.call(0);
  writer.enqueue(bytes(2));
  const queuedFlushed = writer.flushed();
  const ended = writer.end(bytes(3));

  writer.close();
  assert.equal(await within(inFlightFlushed, "flushed() for the in-flight write"), false);
  assert.equal(await within(queuedFlushed, "flushed() for the queued frame"), false);
  assert.equal(await within(ended, "end() interrupted by close()"), false);
  assert.equal(writer.ended, true);
  assert.equal(writer.enqueue(bytes(4)), false);
  assert.equal(await within(writer.flushed(), "flushed() after close()"), false);

  // The socket's write settles later; the writer must neither write again nor report it.
  first.reject(new Error("Bad resource ID"));
  await settle();
  assert.equal(sink.calls.length, 1, "close() stops all further writes");
  assert.deepEqual(errors, [], "a write failing after close() is not reported");
  writer.close();
});

Deno.test("frame writer flushed() counts the frames a short write took, also when end() drops the rest", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink);
  writer.enqueue(filled(4, 1));
  const first = writer.flushed();
  writer.enqueue(filled(6, 2));
  const second = writer.flushed();
  (await sink.call(0)).resolve(5); // the first frame and one byte of the second
  assert.equal(await within(first, "flushed() of the frame the kernel took"), true);
  assert.equal(await isPending(second), true, "the second is not all written");
  writer.end();
  assert.equal(await within(second, "flushed() of the frame end() dropped"), false);
});

Deno.test("frame writer close() during a write that ends short writes none of the rest", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink);
  writer.enqueue(filled(10, 1));
  const first = await sink.call(0);
  writer.close();
  first.resolve(4);
  await settle();
  assert.equal(sink.calls.length, 1, "close() stops writing at once, the rest of a short write too");
  assert.equal(writer.pendingBytes, 0);
});

Deno.test("frame writer: an onError that throws leaves the other writers of its tick writing, and is reported", async () => {
  const reported: unknown[] = [];
  const swallow = (event: ErrorEvent) => {
    event.preventDefault();
    reported.push(event.error);
  };
  globalThis.addEventListener("error", swallow);
  try {
    const bug = new Error("onError bug");
    const failing = new FrameWriter({
      write() {
        throw new Error("Bad resource ID");
      },
    }, {
      onError() {
        throw bug;
      },
    });
    const sink = new FakeSink();
    const other = new FrameWriter(sink);
    failing.enqueue(bytes(1));
    other.enqueue(bytes(2));
    const flushed = other.flushed();
    (await sink.call(0)).resolve();
    assert.equal(await within(flushed, "flushed() of the other writer"), true);
    await settle();
    assert.deepEqual(reported, [bug]);
    // The failing writer itself is idle, not stuck writing.
    assert.equal(await within(failing.end(), "end() of the writer whose onError threw"), false);
  } finally {
    globalThis.removeEventListener("error", swallow);
  }
});

Deno.test("frame writer finish(last) keeps queued frames, writes last after them, and refuses more", async () => {
  const written: number[][] = [];
  const sink = { write: (bytes: Uint8Array) => (written.push([...bytes]), Promise.resolve(bytes.length)) };
  const writer = new FrameWriter(sink);
  writer.enqueue(Uint8Array.of(1));
  writer.enqueue(Uint8Array.of(2));
  const finished = writer.finish(Uint8Array.of(9));
  assert.equal(writer.enqueue(Uint8Array.of(3)), false);
  assert.equal(await finished, true);
  assert.deepEqual(written.flat(), [1, 2, 9]);
});

Deno.test("frame writer defer: immediate sends frames queued by separate callbacks in one write", async () => {
  // Deno.serve runs each request in its own callback, with microtasks run in
  // between; `await null` stands in for that boundary.
  const microtask = new FakeSink();
  const eager = new FrameWriter(microtask);
  eager.enqueue(bytes(1));
  await null;
  eager.enqueue(bytes(2));
  (await microtask.call(0)).resolve();
  (await microtask.call(1)).resolve();
  assert.deepEqual(microtask.calls.map((call) => [...call.bytes]), [[1], [2]]);

  const immediate = new FakeSink();
  const patient = new FrameWriter(immediate, { defer: "immediate" });
  patient.enqueue(bytes(1));
  await null;
  patient.enqueue(bytes(2));
  const flushed = patient.flushed();
  (await immediate.call(0)).resolve();
  assert.equal(await within(flushed, "the flush"), true);
  assert.deepEqual(immediate.calls.map((call) => [...call.bytes]), [[1, 2]]);
});

Deno.test("frame writer minWriteIntervalMs: frames for a socket just written to wait and go out in one write", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink, { minWriteIntervalMs: 50 });
  writer.enqueue(bytes(1));
  for (let turn = 0; turn < 5; turn++) await null;
  assert.equal(sink.calls.length, 1, "a first frame goes out at once, not after the interval");
  const started = performance.now();
  (await sink.call(0)).resolve();
  // Frames over several turns, each of which would have been its own write.
  writer.enqueue(bytes(2));
  await settle();
  writer.enqueue(bytes(3));
  await settle();
  assert.equal(sink.calls.length, 1, "no write within the interval of the last");
  const second = await sink.call(1);
  assert.ok(performance.now() - started >= 45, "the paced write waited for about the interval");
  assert.deepEqual(second.bytes, bytes(2, 3), "the waiting frames go out together, in order");
  second.resolve();
  assert.equal(await within(writer.flushed(), "flushed() after the paced write"), true);
});

Deno.test("frame writer minWriteIntervalMs: frames queued behind a write wait for the interval too, and a lone frame later goes at once", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink, { minWriteIntervalMs: 40 });
  writer.enqueue(bytes(1));
  const first = await sink.call(0);
  writer.enqueue(bytes(2));
  first.resolve();
  await settle();
  assert.equal(sink.calls.length, 1, "what queued during the write waits for the interval");
  const second = await sink.call(1);
  assert.deepEqual(second.bytes, bytes(2));
  second.resolve();
  await new Promise((resolve) => setTimeout(resolve, 60));
  writer.enqueue(bytes(3));
  for (let turn = 0; turn < 5; turn++) await null;
  assert.equal(sink.calls.length, 3, "a frame after a quiet interval is not delayed");
  (await sink.call(2)).resolve();
  const finished = writer.finish(bytes(4));
  (await sink.call(3)).resolve();
  assert.equal(await within(finished, "finish() of a paced writer"), true);
  assert.deepEqual(sink.written, bytes(1, 2, 3, 4));
});

Deno.test("frame writer minWriteIntervalMs: writers waiting for the interval share one timer, and a closed one writes nothing", async () => {
  const sinks = [new FakeSink(), new FakeSink(), new FakeSink()];
  const writers = sinks.map((sink) => new FrameWriter(sink, { minWriteIntervalMs: 20 }));
  for (const writer of writers) writer.enqueue(bytes(1));
  for (const sink of sinks) (await sink.call(0)).resolve();
  await settle();
  for (const writer of writers) writer.enqueue(bytes(2));
  writers[2]!.close();
  const [a, b] = await Promise.all([sinks[0]!.call(1), sinks[1]!.call(1)]);
  assert.deepEqual([a.bytes, b.bytes], [bytes(2), bytes(2)]);
  a.resolve();
  b.resolve();
  await settle();
  assert.equal(sinks[2]!.calls.length, 1, "the closed writer's paced frame is dropped");
});

Deno.test("frame writer minWriteIntervalMs: closing the last paced writer clears the shared timer, and closing twice is harmless", async () => {
  const sink = new FakeSink();
  const writer = new FrameWriter(sink, { minWriteIntervalMs: 10_000 });
  writer.enqueue(bytes(1));
  (await sink.call(0)).resolve();
  await settle();
  writer.enqueue(bytes(2));
  const flushed = writer.flushed();
  writer.close();
  writer.close();
  assert.equal(await within(flushed, "flushed() of the closed writer"), false);
  assert.equal(await within(writer.finish(), "finish() after close()"), false);
  // The leak check fails this test if the 10 s timer is still pending.
});

/** A sink that completes each write by itself, partly or fully, at once or a turn later, as a seeded generator says. */
class AutoSink implements ByteSink {
  readonly accepted: Uint8Array[] = [];
  readonly #random: () => number;
  /** Bytes it reported written, in all. */
  written = 0;

  constructor(seed: number) {
    this.#random = mulberry32(seed);
  }

  write(data: Uint8Array): Promise<number> {
    const copy = data.slice();
    const count = this.#random() < 0.5 ? copy.length : 1 + Math.floor(this.#random() * copy.length);
    const done = () => {
      this.accepted.push(copy.subarray(0, count));
      this.written += count;
      return count;
    };
    const later = this.#random();
    if (later < 0.3) return Promise.resolve().then(done);
    return new Promise((resolve) => setTimeout(() => resolve(done()), later < 0.6 ? 0 : 1));
  }
}

Deno.test("frame writer: any enqueues on several writers, frames shared or not, bursts past its joins, over short and late writes, arrive whole and in order, within the bound", async () => {
  type Step =
    | { enqueue: { writer: number; frame: number; all: boolean; times: number } }
    | { flushed: number }
    | { wait: "microtask" | "turn" };
  const WRITERS = 3;
  const step: fc.Arbitrary<Step> = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        enqueue: fc.record({
          writer: fc.nat({ max: WRITERS - 1 }),
          frame: fc.nat({ max: 7 }),
          // One writer, or every writer the same frames, as a broadcast does (their joins then shared).
          all: fc.boolean(),
          // Mostly one, sometimes a burst past the writer's joins (every 256 frames).
          times: fc.oneof({ weight: 6, arbitrary: fc.constant(1) }, fc.integer({ min: 2, max: 600 })),
        }),
      }),
    },
    fc.record({ flushed: fc.nat({ max: WRITERS - 1 }) }),
    { weight: 2, arbitrary: fc.record({ wait: fc.constantFrom("microtask" as const, "turn" as const) }) },
  );
  await fc.assert(
    fc.asyncProperty(
      fc.array(step, { maxLength: 40 }),
      fc.integer(),
      fc.integer({ min: 64, max: 4096 }),
      async (steps, seed, maxPendingBytes) => {
        // Frames of every size from empty to over the bound, shared by all the writers.
        const random = mulberry32(seed);
        const pool = [0, 1, 2, 7, 30, 100, 1000, 5000].map((n, i) =>
          Uint8Array.from({ length: n }, () => Math.floor(random() * 256) ^ i)
        );
        const sinks = Array.from({ length: WRITERS }, (_, i) => new AutoSink(seed + i));
        const writers = sinks.map((sink) => new FrameWriter(sink, { maxPendingBytes }));
        const sent: Uint8Array[][] = sinks.map(() => []);
        const queued = sinks.map(() => 0);
        const flushes: { writer: number; upTo: number; promise: Promise<boolean> }[] = [];
        for (const s of steps) {
          if ("enqueue" in s) {
            const { frame, times } = s.enqueue;
            for (let t = 0; t < times; t++) {
              const targets: number[] = s.enqueue.all ? [0, 1, 2] : [s.enqueue.writer];
              for (const writer of targets) {
                const bytes = pool[frame]!;
                // What waits as the writer counts it: never less than what the sink has not taken, and
                // never more than the bound and one frame.
                const pending = writers[writer]!.pendingBytes;
                assert.ok(pending >= queued[writer]! - sinks[writer]!.written, "every unwritten byte counted");
                assert.ok(pending <= maxPendingBytes + 5000, `bounded: ${pending}`);
                const fits = pending === 0 || pending + bytes.length <= maxPendingBytes;
                assert.equal(
                  writers[writer]!.enqueue(bytes),
                  fits,
                  `enqueue of ${bytes.length} with ${pending} waiting`,
                );
                if (fits) {
                  sent[writer]!.push(bytes);
                  queued[writer]! += bytes.length;
                }
              }
            }
          } else if ("flushed" in s) {
            const upTo = queued[s.flushed]!;
            flushes.push({ writer: s.flushed, upTo, promise: writers[s.flushed]!.flushed() });
          } else if (s.wait === "microtask") {
            await Promise.resolve();
          } else {
            await settle();
          }
        }
        for (const writer of writers) assert.equal(await within(writer.flushed(), "the drain"), true);
        for (const { writer, upTo, promise } of flushes) {
          assert.equal(await promise, true);
          assert.ok(sinks[writer]!.written >= upTo, "flushed() resolved after its bytes");
        }
        for (const [i, sink] of sinks.entries()) {
          assert.deepEqual(concat(sink.accepted), concat(sent[i]!), `writer ${i}'s bytes`);
        }
      },
    ),
    { seed: 6455, numRuns: 300 },
  );
});
