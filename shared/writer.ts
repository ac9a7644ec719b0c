/**
 * A coalescing, bounded frame writer: one write in flight per connection;
 * frames queued meanwhile go out together in the next write.
 *
 * @module
 */

import { concat } from "./bytes.ts";

/** Where a {@linkcode FrameWriter} writes: a `Deno.Conn` or anything like it. */
export interface ByteSink {
  write(bytes: Uint8Array): Promise<number>;
}

/** Options for {@linkcode FrameWriter}. */
export interface FrameWriterOptions {
  /**
   * Most bytes that may wait (queued plus in flight). {@linkcode FrameWriter.enqueue}
   * refuses a frame that would go past it, unless nothing waits: one frame is
   * always accepted, so the backlog is bounded by this plus one frame.
   *
   * @default {8388608} (8 MiB)
   */
  maxPendingBytes?: number;
  /** Called once when a write fails; the writer then accepts nothing more. */
  onError?: (error: Error) => void;
  /**
   * When the first write of a burst starts. `microtask`: right after the code
   * that queued the frame, which is enough when the frames come from one
   * event loop turn (the reads of `Deno.listen` connections that completed
   * together). `immediate`: once the event loop has run every callback that
   * is ready (`setImmediate`), for frames queued by separate turns:
   * `Deno.serve` runs each request in a turn of its own, so a publisher's
   * concurrent requests would otherwise cost one write each.
   *
   * @default {"microtask"}
   */
  defer?: "microtask" | "immediate";
  /**
   * Least milliseconds between the starts of two writes. A frame queued
   * sooner after the last write started waits, with every frame queued
   * meanwhile, for one timer shared by all writers (not one per socket), and
   * they go out in one write: under a stream of small frames (a socket in
   * several busy channels, each hub read bringing a few of them) this caps
   * the socket's writes at one per interval, the syscalls that cost most of a
   * delivery, at the price of at most this much latency, and only for a
   * socket written to this recently. A frame to a socket idle for longer goes
   * out as without pacing. 0: no pacing.
   *
   * @default {0}
   */
  minWriteIntervalMs?: number;
}

/** When a writer's next write starts, if it is to start: see `FrameWriter.#schedule`. */
const Scheduled = { no: 0, soon: 1, paced: 2 } as const;
type Scheduled = typeof Scheduled[keyof typeof Scheduled];

/** Default cap on bytes waiting in one writer: 8 MiB. */
export const DEFAULT_MAX_PENDING_BYTES = 8 * 1024 * 1024;

/**
 * Frames queued behind a write are joined into one buffer every this many.
 * A small frame costs many times its bytes in objects, which the cap does
 * not see: joined, a backlog of tiny frames costs about its size.
 */
const JOIN_EVERY = 256;

/**
 * Largest join kept for the writers after it to share (see
 * `FrameWriter.#join`): 256 KiB, more than a socket's write of a burst of
 * broadcasts, and little to keep after the burst.
 */
const SHARED_JOIN_MAX = 256 * 1024;

const NOTHING = new Uint8Array(0);
/** A writer's waiters while it has none: one array for every idle writer, not one each. */
const NO_WAITERS: Waiter[] = [];

interface Waiter {
  /** Resolve once this many bytes (counted since the writer began) are written. */
  target: number;
  promise: Promise<boolean>;
  resolve: (written: boolean) => void;
}

/**
 * Writes frames to a socket with at most one write in flight. Frames enqueued
 * in the same tick, or while a write is in flight, are concatenated into one
 * write. The first write of a burst waits for a microtask (or the event loop
 * turn, see {@linkcode FrameWriterOptions.defer}), so every frame a read
 * handler produces goes out in a single syscall.
 *
 * @example
 * ```ts
 * import { encodeMessage } from "./wire.ts";
 * import { FrameWriter } from "./writer.ts";
 *
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port: 2206 });
 * const writer = new FrameWriter(conn, { maxPendingBytes: 1 << 20 });
 * const frame = encodeMessage({ type: "ping" });
 * if (!writer.enqueue(frame)) conn.close(); // over the cap: a slow consumer, disconnected
 * await writer.flushed(); // the frame is now in the kernel's buffer
 * ```
 */
export class FrameWriter {
  readonly #sink: ByteSink;
  readonly #maxPendingBytes: number;
  readonly #onError: ((error: Error) => void) | undefined;
  readonly #immediate: boolean;
  readonly #minWriteInterval: number;
  #queue: Uint8Array[] = [];
  /** Frames at the end of the queue not yet joined into one buffer. */
  #unjoined = 0;
  #queuedBytes = 0;
  /** The bytes of the write in flight, and how many of them are written. */
  #inFlight: Uint8Array = NOTHING;
  #written = 0;
  #enqueuedTotal = 0;
  #writtenTotal = 0;
  /** Callers of flushed() waiting; NO_WAITERS, shared and never written, while none waits. */
  #waiters: Waiter[] = NO_WAITERS;
  /** Whether a write is to start soon: not, soon (a microtask or turn), or when the pacing timer fires. */
  #scheduled: Scheduled = Scheduled.no;
  #writing = false;
  /** Set by end(), close() or a failed write: nothing more is accepted. */
  #ended = false;
  #failed = false;
  /** Set by end(): the peer is being dropped, so nothing it was sent counts as delivered. */
  #dropped = false;
  #idle: { promise: Promise<boolean>; resolve: (ok: boolean) => void } | null = null;
  /**
   * `performance.now()` when the last write started, kept after it ends: it
   * times both a blocked write and the pacing (one field, not two, as every
   * idle socket holds it). -Infinity before the first.
   */
  #writeStarted = -Infinity;

  constructor(sink: ByteSink, options: FrameWriterOptions = {}) {
    this.#sink = sink;
    this.#maxPendingBytes = options.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    this.#onError = options.onError;
    this.#immediate = options.defer === "immediate";
    this.#minWriteInterval = options.minWriteIntervalMs ?? 0;
  }

  /** Bytes queued or in flight. */
  get pendingBytes(): number {
    return this.#queuedBytes + this.#inFlight.length;
  }

  /**
   * Whole milliseconds the write now in flight has been blocked (0 when
   * idle): a peer that does not read makes this grow, which is how a caller
   * spots a slow consumer whose kernel buffer is full. `now` is on the
   * monotonic clock of `performance.now()`, which a step of the wall clock
   * does not move.
   */
  stalledFor(now: number = performance.now()): number {
    return this.#writing ? Math.round(now - this.#writeStarted) : 0;
  }

  /** Bytes ever queued, less those `end()` dropped: with {@linkcode FrameWriter.acceptedBytes}, how far behind it is. */
  get enqueuedBytes(): number {
    return this.#enqueuedTotal;
  }

  /** Bytes the operating system has taken so far: whole writes, and the part of the one in flight. */
  get acceptedBytes(): number {
    return this.#accepted;
  }

  /** Buffers waiting behind the write in flight: one per 256 frames, plus the last few. */
  get queuedBuffers(): number {
    return this.#queue.length;
  }

  /** True once the writer accepts nothing more (ended, closed or failed). */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * Queues a frame. Returns false, queuing nothing, when the writer has ended
   * or when bytes already wait and the frame would take them past
   * `maxPendingBytes`.
   */
  enqueue(frame: Uint8Array): boolean {
    if (this.#ended) return false;
    const pending = this.pendingBytes;
    if (pending > 0 && pending + frame.length > this.#maxPendingBytes) return false;
    this.#push(frame);
    return true;
  }

  /**
   * Resolves `true` once every byte enqueued before the call has been handed
   * to the operating system, or `false` if the writer failed or dropped them.
   * After `end()`, it resolves `false`: bytes may have been dropped, and a
   * frame queued just before cannot be told apart from them.
   */
  flushed(): Promise<boolean> {
    if (this.#dropped) return Promise.resolve(false);
    const target = this.#enqueuedTotal;
    if (this.#writtenTotal >= target) return Promise.resolve(true);
    if (this.#failed) return Promise.resolve(false);
    const last = this.#waiters.at(-1);
    if (last?.target === target) return last.promise;
    let resolve!: (written: boolean) => void;
    const promise = new Promise<boolean>((r) => (resolve = r));
    if (this.#waiters === NO_WAITERS) this.#waiters = [];
    this.#waiters.push({ target, promise, resolve });
    return promise;
  }

  /**
   * Stops accepting frames, drops those not yet in flight, resolves every
   * pending `flushed()` with `false`, queues `last` (an error frame, say)
   * after the write in flight, and resolves `true` once
   * `last` is written, `false` if the write failed. The caller then closes
   * the socket; it should also bound the wait, since a peer that does not
   * read will never let the write finish.
   */
  end(last?: Uint8Array): Promise<boolean> {
    if (this.#ended) return this.#whenIdle();
    this.#ended = true;
    this.#dropped = true;
    this.#enqueuedTotal -= this.#queuedBytes;
    this.#queue = [];
    this.#unjoined = 0;
    this.#queuedBytes = 0;
    // The peer is being dropped: what the kernel took counts as written, as
    // it would have had the drop come a moment later; the rest of the write
    // in flight, which may never finish, does not.
    this.#settleWaiters(this.#accepted, true);
    this.#settleWaiters(-1, false);
    if (last) this.#push(last);
    return this.#whenIdle();
  }

  /**
   * Stops accepting frames but keeps those queued, queues `last` after them
   * (a close frame, say), and resolves `true` once everything is written,
   * `false` if a write failed. For orderly closes, where nothing may be lost.
   */
  finish(last?: Uint8Array): Promise<boolean> {
    if (this.#ended) return this.#whenIdle();
    this.#ended = true;
    if (last) this.#push(last);
    return this.#whenIdle();
  }

  /**
   * Stops writing at once; every pending `flushed()` resolves `false`, but
   * for those whose bytes the kernel has already taken, which resolve `true`.
   */
  close(): void {
    // Once: close() may come again.
    if (this.#scheduled === Scheduled.paced && !this.#failed) FrameWriter.#leavePaced();
    this.#ended = true;
    this.#failed = true;
    this.#queue = [];
    this.#unjoined = 0;
    this.#queuedBytes = 0;
    this.#settleWaiters(this.#accepted, true);
    this.#settleWaiters(0, false);
    this.#settleIdle(false);
  }

  /** Bytes the operating system has taken: whole writes, and the part of the one in flight. */
  get #accepted(): number {
    return this.#writtenTotal + (this.#inFlight.length > 0 ? this.#written : 0);
  }

  #push(frame: Uint8Array): void {
    this.#queue.push(frame);
    if (++this.#unjoined === JOIN_EVERY) {
      const run = this.#queue.splice(this.#queue.length - JOIN_EVERY);
      this.#queue.push(FrameWriter.#join(run));
      this.#unjoined = 0;
    }
    this.#queuedBytes += frame.length;
    this.#enqueuedTotal += frame.length;
    if (this.#scheduled === Scheduled.no && !this.#writing) this.#schedule();
  }

  /** Starts the next write soon: after a microtask, the event loop's turn, or the pacing timer. */
  #schedule(): void {
    if (this.#paced()) {
      this.#scheduled = Scheduled.paced;
      return FrameWriter.#startPaced(this, this.#minWriteInterval);
    }
    this.#scheduled = Scheduled.soon;
    if (this.#immediate) setImmediate(() => this.#flush());
    else FrameWriter.#startSoon(this);
  }

  /** Whether the next write must wait for the pacing timer: the last one started less than the interval ago. */
  #paced(): boolean {
    return this.#minWriteInterval > 0 && performance.now() - this.#writeStarted < this.#minWriteInterval;
  }

  /**
   * Writes everything queued, then whatever was queued meanwhile, until
   * nothing is left. A chain of callbacks (#write, #wrote), not an async
   * loop, started for all writers due from one microtask (#startSoon): an
   * async call's suspended frame per write, and a closure and a microtask
   * per socket, were a sizeable share of what a broadcast delivery
   * allocated in the pusher (most of the rest is Deno's write op). Less
   * garbage is fewer young-generation collections, a real part of a
   * delivery's CPU when every delivery is its own write (bench scenario (c)).
   */
  #flush(): void {
    this.#scheduled = Scheduled.no;
    if (this.#queue.length === 0 || this.#failed) return this.#stopped();
    this.#writing = true;
    this.#inFlight = FrameWriter.#join(this.#queue, this.#queuedBytes);
    this.#written = 0;
    this.#queue = [];
    this.#unjoined = 0;
    this.#queuedBytes = 0;
    this.#write();
  }

  /** Writes the rest of the bytes in flight. */
  #write(): void {
    const rest = this.#written === 0 ? this.#inFlight : this.#inFlight.subarray(this.#written);
    this.#writeStarted = performance.now();
    let writing: Promise<number>;
    try {
      writing = this.#sink.write(rest);
    } catch (error) {
      return this.#failedWith(error);
    }
    writing.then((n) => this.#wrote(n), (error) => this.#failedWith(error));
  }

  #wrote(n: number): void {
    this.#written += n;
    if (this.#written < this.#inFlight.length) {
      // close() came while this write was in flight: it stops writing at once, the rest too.
      if (this.#failed) {
        this.#inFlight = NOTHING;
        return this.#stopped();
      }
      // Frames wholly in the kernel already count, though the write goes on.
      this.#settleWaiters(this.#accepted, true);
      return this.#write();
    }
    this.#writtenTotal += this.#inFlight.length;
    this.#inFlight = NOTHING;
    this.#settleWaiters(this.#writtenTotal, true);
    // What was queued meanwhile goes now, or, paced, once the interval is up:
    // at most one write per interval, however the frames came.
    if (this.#queue.length > 0 && !this.#failed && this.#paced()) {
      this.#writing = false;
      return this.#schedule();
    }
    this.#flush();
  }

  #failedWith(error: unknown): void {
    // The failed write's bytes are lost, not in flight: pendingBytes must not count them forever.
    this.#inFlight = NOTHING;
    try {
      if (!this.#failed) {
        this.close();
        this.#onError?.(error as Error);
      }
    } finally {
      // Even if onError throws: an end() or finish() waiting for idle must settle.
      this.#stopped();
    }
  }

  /** No write in flight any more: the queue is empty, or the writer failed. */
  #stopped(): void {
    this.#writing = false;
    if (this.#queue.length === 0) this.#settleIdle(!this.#failed);
  }

  /** The frames of the thread's last join of several, and the buffer it made: see #join. */
  static #lastRun: readonly Uint8Array[] = [];
  static #lastJoined: Uint8Array = NOTHING;

  /**
   * Joins `run` (`bytes` long, when the caller keeps the count) into one
   * buffer, or hands out the buffer of the thread's last join when that
   * joined the very same frames. A broadcast queues the same shared frames
   * to every socket, and the sockets' writes (and joins of a backlog) follow
   * one another, so they all get one copy instead of a copy each: a buffer
   * the allocator makes and frees per socket is much of a fan-out write's
   * cost, and of the memory the allocator keeps after a load. The buffer is
   * never written to once made, so sharing it is safe. Only runs up to
   * {@linkcode SHARED_JOIN_MAX} bytes are kept for the next, so what the
   * thread holds on to is bounded.
   */
  static #join(run: Uint8Array[], bytes?: number): Uint8Array {
    if (run.length === 1) return run[0]!;
    if (sameFrames(run, FrameWriter.#lastRun)) return FrameWriter.#lastJoined;
    const joined = concat(run, bytes);
    if (joined.length <= SHARED_JOIN_MAX) {
      FrameWriter.#lastRun = run;
      FrameWriter.#lastJoined = joined;
    }
    return joined;
  }

  /** Writers whose first write of a burst waits for the next microtask. */
  static #due: FrameWriter[] = [];

  /**
   * Starts `writer`'s first write in a microtask that starts every writer
   * due: a broadcast to many sockets queues one microtask, not one (and a
   * closure) per socket.
   */
  static #startSoon(writer: FrameWriter): void {
    if (FrameWriter.#due.length === 0) queueMicrotask(FrameWriter.#startDue);
    FrameWriter.#due.push(writer);
  }

  /** Writers whose next write waits for the pacing timer. */
  static #pacedWriters: FrameWriter[] = [];
  /** How many of them are not closed: the timer is cleared when none is left. */
  static #pacedLive = 0;
  static #pacingTimer: ReturnType<typeof setTimeout> | undefined;

  /**
   * Starts `writer`'s next write when the shared pacing timer fires, at most
   * `interval` ms from now: one timer for every paced writer of the thread,
   * set by the first that waits.
   */
  static #startPaced(writer: FrameWriter, interval: number): void {
    if (FrameWriter.#pacingTimer === undefined) {
      FrameWriter.#pacingTimer = setTimeout(FrameWriter.#startPacedDue, interval);
    }
    FrameWriter.#pacedWriters.push(writer);
    FrameWriter.#pacedLive++;
  }

  static #startPacedDue(): void {
    const writers = FrameWriter.#pacedWriters;
    FrameWriter.#pacedWriters = [];
    FrameWriter.#pacedLive = 0;
    FrameWriter.#pacingTimer = undefined;
    FrameWriter.#startAll(writers);
  }

  /**
   * A paced writer closed. Once none waiting is open, the timer goes, and
   * with it the writers: a closed writer has nothing to write, and a timer
   * kept for nothing would hold a process (or a test) open.
   */
  static #leavePaced(): void {
    if (--FrameWriter.#pacedLive > 0) return;
    clearTimeout(FrameWriter.#pacingTimer);
    FrameWriter.#pacingTimer = undefined;
    for (const writer of FrameWriter.#pacedWriters) writer.#scheduled = Scheduled.no;
    FrameWriter.#pacedWriters = [];
  }

  static #startDue(): void {
    const writers = FrameWriter.#due;
    FrameWriter.#due = [];
    FrameWriter.#startAll(writers);
  }

  /** Starts each writer's write; one whose onError throws does not stop the others. */
  static #startAll(writers: FrameWriter[]): void {
    for (const writer of writers) {
      try {
        writer.#flush();
      } catch (error) {
        // Its onError threw. Reported as uncaught, as it would be on its own,
        // but after the others in this batch have started.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  /** Resolves waiters whose target is at or below `upTo` with `written`. */
  #settleWaiters(upTo: number, written: boolean): void {
    if (!written) {
      // Waiters beyond `upTo` lose their bytes; those at or below keep waiting.
      const kept: Waiter[] = [];
      for (const waiter of this.#waiters) {
        if (waiter.target > upTo || this.#failed) waiter.resolve(false);
        else kept.push(waiter);
      }
      this.#waiters = kept.length === 0 ? NO_WAITERS : kept;
      return;
    }
    let i = 0;
    while (i < this.#waiters.length && this.#waiters[i]!.target <= upTo) {
      this.#waiters[i]!.resolve(true);
      i++;
    }
    if (i === this.#waiters.length) this.#waiters = NO_WAITERS;
    else if (i > 0) this.#waiters.splice(0, i);
  }

  #whenIdle(): Promise<boolean> {
    if (!this.#writing && this.#scheduled === Scheduled.no) return Promise.resolve(!this.#failed);
    if (!this.#idle) {
      let resolve!: (ok: boolean) => void;
      const promise = new Promise<boolean>((r) => (resolve = r));
      this.#idle = { promise, resolve };
    }
    return this.#idle.promise;
  }

  #settleIdle(ok: boolean): void {
    const idle = this.#idle;
    this.#idle = null;
    idle?.resolve(ok);
  }
}

/** Whether `a` and `b` hold the same frames (the same objects, not just equal bytes), in the same order. */
function sameFrames(a: readonly Uint8Array[], b: readonly Uint8Array[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = a.length - 1; i >= 0; i--) if (a[i] !== b[i]) return false;
  return true;
}
