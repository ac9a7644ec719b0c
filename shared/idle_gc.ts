/**
 * Gives the JavaScript heap back once a burst of work is over.
 *
 * Under load V8 grows a service's heap, and a long-running service may keep
 * it: V8's own memory reducer runs 30 s after the process starts, and after
 * that only once the heap grows well past the size it last reduced it to.
 * Measured on the publisher: a 6 MiB heap idle, 25 MiB committed during
 * 100,000 batched sends, and still 25 MiB minutes later. With `--expose-gc`
 * (which every service's task passes), {@linkcode collectWhenIdle} watches
 * the heap and, once a burst is over, runs one full collection of the kind
 * that returns free pages to the system: 15-60 ms while the service is
 * quiet, once per burst (twice when the first came in a lull of it).
 *
 * @module
 */

import type { Logger } from "./log.ts";

/** What {@linkcode collectWhenIdle} reads of the heap: a subset of `Deno.memoryUsage()`. */
export interface HeapUsage {
  /** Bytes V8 has committed for its heap. */
  heapTotal: number;
  /** Bytes of it in use. */
  heapUsed: number;
}

/** What one idle collection did, for a log line. */
export interface IdleCollection {
  /** Committed heap bytes before and after. */
  before: number;
  after: number;
  /** How long it took, in milliseconds. */
  ms: number;
}

/** Options for {@linkcode collectWhenIdle}. */
export interface CollectWhenIdleOptions {
  /**
   * How often the heap is looked at, in milliseconds.
   *
   * @default {2000}
   */
  intervalMs?: number;
  /**
   * How far the committed heap must have grown past its size after the last
   * collection (or at the start) for another to be worth its pause.
   *
   * @default {4194304} (4 MiB)
   */
  minGrowthBytes?: number;
  /**
   * The committed heap that growth is first measured from. 0 counts the heap
   * the process built while starting as growth, so the garbage of its start
   * goes back once it is idle, as a burst's does.
   *
   * @default {the heap when watching starts}
   */
  startBytes?: number;
  /**
   * The heap counts as quiet when the bytes in use moved less than this
   * between two looks, twice in a row. A service at work allocates far more
   * in an interval, even at a trickle: the hub routing 50 broadcasts a
   * second, about 100 KiB a second.
   *
   * @default {65536} (64 KiB)
   */
  quietBytes?: number;
  /**
   * When a collection leaves the heap still `minGrowthBytes` above the least
   * it has been (it came in a lull of a burst, while the burst's objects were
   * in use), one more collection follows after this many milliseconds of
   * quiet.
   *
   * @default {30000}
   */
  followUpMs?: number;
  /** Called after each collection. */
  onCollect?: (collection: IdleCollection) => void;
  /** Reads the heap. @default {Deno.memoryUsage} */
  usage?: () => HeapUsage;
  /**
   * Runs a full collection that returns free pages. Defaults to V8's `gc()`
   * with its `last-resort` flavour, present when the process runs with
   * `--v8-flags=--expose-gc`; without it, nothing is watched.
   */
  collect?: () => void;
  /** Starts the timer. @default {setInterval, unref'd so that it never keeps the process alive} */
  every?: (check: () => void, ms: number) => Disposable;
}

/**
 * Watches the heap and collects it once after each burst of work: when the
 * committed heap has grown `minGrowthBytes` past its size after the last
 * collection, and the bytes in use stayed within `quietBytes` over two
 * intervals in a row; and once more after `followUpMs` of quiet if that left the heap
 * well above the least it has been. Dispose the result to stop watching
 * (twice is harmless).
 *
 * @example
 * ```ts
 * import { collectWhenIdle } from "./idle_gc.ts";
 *
 * using _idle = collectWhenIdle({
 *   onCollect: ({ before, after, ms }) => console.log(`heap ${before} -> ${after} bytes in ${ms} ms`),
 * });
 * ```
 */
export function collectWhenIdle(options: CollectWhenIdleOptions = {}): Disposable {
  const collect = options.collect ?? v8Collect();
  if (!collect) return { [Symbol.dispose]() {} };
  const usage = options.usage ?? Deno.memoryUsage;
  const minGrowth = options.minGrowthBytes ?? 4 * 1024 * 1024;
  const quiet = options.quietBytes ?? 64 * 1024;
  const every = options.every ?? unrefInterval;
  const intervalMs = options.intervalMs ?? 2000;
  const followUpLooks = Math.max(1, Math.ceil((options.followUpMs ?? 30_000) / intervalMs));
  const start = usage();
  let floor = options.startBytes ?? start.heapTotal;
  let lastUsed = start.heapUsed;
  /** The least the heap has been: what a follow-up compares with. */
  let least = start.heapTotal;
  /** Whether the last collection left the heap well above its least, and may have come mid-burst. */
  let followUp = false;
  /** Looks in a row that found the heap quiet. */
  let quietLooks = 0;
  return every(() => {
    const now = usage();
    const moved = Math.abs(now.heapUsed - lastUsed);
    lastUsed = now.heapUsed;
    if (now.heapTotal < floor) floor = now.heapTotal;
    if (now.heapTotal < least) least = now.heapTotal;
    quietLooks = moved < quiet ? quietLooks + 1 : 0;
    // Two quiet looks in a row: a young-generation collection between two
    // looks can bring the bytes in use back near where they were while the
    // service still works at a trickle, but not twice running.
    if (quietLooks < 2) return;
    const grown = now.heapTotal - floor >= minGrowth;
    if (!grown && !(followUp && quietLooks >= followUpLooks)) return;
    const started = performance.now();
    collect();
    const ms = performance.now() - started;
    const after = usage();
    floor = after.heapTotal;
    lastUsed = after.heapUsed;
    if (floor < least) least = floor;
    // A collection that came in a lull of a burst finds the burst's objects
    // still in use; once the heap has been quiet a while they may be garbage,
    // so one more look is worth its pause. Only one: a heap that holds that
    // much for good (10,000 open connections) is left alone until it grows.
    followUp = grown && floor - least >= minGrowth;
    quietLooks = 0;
    options.onCollect?.({ before: now.heapTotal, after: after.heapTotal, ms });
  }, intervalMs);
}

/**
 * {@linkcode collectWhenIdle} at its defaults, but counting the heap built
 * while starting as growth, logging each collection at info: what the hub,
 * the publisher and each pusher worker run. Starting leaves garbage, the
 * modules' compilation and the set-up's, that V8's memory reducer would
 * collect only 30 s after the start: a pusher worker's heap goes from 9.8
 * to 6.5-6.8 MiB a few seconds after it starts, and the pusher's RSS by 5-7
 * MiB.
 */
export function returnIdleHeap(logger: Logger): Disposable {
  return collectWhenIdle({
    startBytes: 0,
    onCollect: ({ before, after, ms }) =>
      logger.info("gave idle heap back", { fromMiB: toMiB(before), toMiB: toMiB(after), ms: Math.round(ms) }),
  });
}

function toMiB(bytes: number): number {
  return Math.round(bytes / 1048576 * 10) / 10;
}

type GcFunction = (options: { type: "major"; execution: "sync"; flavor: "last-resort" }) => void;

/** V8's `gc()` as a collection that returns free pages, or undefined without `--expose-gc`. */
function v8Collect(): (() => void) | undefined {
  const gc = (globalThis as { gc?: GcFunction }).gc;
  if (typeof gc !== "function") return undefined;
  return () => gc({ type: "major", execution: "sync", flavor: "last-resort" });
}

function unrefInterval(check: () => void, ms: number): Disposable {
  const id = setInterval(check, ms);
  Deno.unrefTimer(id);
  return { [Symbol.dispose]: () => clearInterval(id) };
}
