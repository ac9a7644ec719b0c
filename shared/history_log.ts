/**
 * History kept per subject: each subject's bounded log of its last messages
 * with their positions, and the rules for reading what followed a position.
 * Both the hub (`channel/hub.ts`) and the in-process bus
 * (`shared/memory_bus.ts`) keep history with {@linkcode HistoryStore}, so the
 * rules are written, and tested, once.
 *
 * A **position** is `{ offset, epoch }`: `offset` grows by one per message of
 * the subject (the first is 1; 0 before any), and `epoch`, 8 hex characters,
 * changes whenever the subject's history was lost (a new store, a subject
 * dropped to stay within the total bounds, a removal). A position from
 * another epoch can never be recovered from.
 *
 * Pure TypeScript: the clock is injected, nothing runs on a timer.
 *
 * @module
 */

import type { Position } from "./bus.ts";

export type { Position } from "./bus.ts";

/** A message kept in a {@linkcode HistoryLog}. */
export interface LoggedMessage<T> {
  /** Its offset in the subject. */
  readonly offset: number;
  /** What was published, in whatever form the keeper stores it. */
  readonly data: T;
  /** What it costs, counted against the byte bounds. */
  readonly bytes: number;
  /** When it was appended, from the injected clock, in milliseconds. */
  readonly time: number;
}

/** Bounds of one subject's log. */
export interface HistoryLimits {
  /** Most messages kept. @default {100} */
  size?: number;
  /** Longest a message is kept, in milliseconds. @default {300000} */
  ttl?: number;
  /** Most bytes kept, by the `bytes` each append declares. @default {1048576} */
  maxBytes?: number;
}

/** Options for {@linkcode HistoryLog.read} and {@linkcode HistoryStore.read}. */
export interface ReadOptions {
  /** Return the messages after this position; without it, all kept ones. */
  since?: Position;
  /** Most messages returned (capped at the log's `size`). @default {the log's size} */
  limit?: number;
}

/** What a read found. */
export interface HistoryRead<T> {
  /** The subject's current top position: offset 0 when it never had a message; epoch "" without history. */
  readonly position: Position;
  /** The messages after `since` (all kept ones without it), oldest first, at most `limit`. */
  readonly messages: LoggedMessage<T>[];
  /**
   * True only when `since` was given, is of the current epoch, is not past the
   * top, nothing between it and the first message returned was trimmed, and
   * the reply was not cut by `limit`: the reader has missed nothing.
   */
  readonly recovered: boolean;
}

/** The default bounds, as the hub's flags document them. */
export const DEFAULT_HISTORY_SIZE = 100;
/** Default time a message is kept, in milliseconds. */
export const DEFAULT_HISTORY_TTL = 300_000;
/** Default bytes kept per subject. */
export const DEFAULT_HISTORY_MAX_BYTES = 1024 * 1024;
/** Default bytes kept over all subjects. */
export const DEFAULT_HISTORY_TOTAL_BYTES = 64 * 1024 * 1024;
/** Default number of subjects with history. */
export const DEFAULT_MAX_HISTORY_SUBJECTS = 10_000;

/** A fresh epoch: 8 random hex characters. */
export function newEpoch(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * One subject's log: its last messages, trimmed by count, age and bytes,
 * oldest first.
 *
 * @example
 * ```ts
 * import { HistoryLog } from "./history_log.ts";
 *
 * const log = new HistoryLog<string>({ size: 2 });
 * const first = log.append("a", 1); // { offset: 1, epoch: "…" }
 * log.append("b", 1);
 * log.read({ since: first }).recovered; // true: "b" follows
 * ```
 */
export class HistoryLog<T> {
  readonly #size: number;
  readonly #ttl: number;
  readonly #maxBytes: number;
  readonly #now: () => number;
  readonly #epoch: string;
  #messages: LoggedMessage<T>[] = [];
  #head = 0;
  #offset = 0;
  #bytes = 0;

  constructor(limits: HistoryLimits = {}, now: () => number = Date.now, epoch: string = newEpoch()) {
    this.#size = positive("size", limits.size ?? DEFAULT_HISTORY_SIZE);
    this.#ttl = positive("ttl", limits.ttl ?? DEFAULT_HISTORY_TTL);
    this.#maxBytes = positive("maxBytes", limits.maxBytes ?? DEFAULT_HISTORY_MAX_BYTES);
    this.#now = now;
    this.#epoch = epoch;
  }

  /** The log's epoch; it never changes: a lost history is a new log. */
  get epoch(): string {
    return this.#epoch;
  }

  /** The top position: the last message's, or offset 0 before any. */
  get position(): Position {
    return { offset: this.#offset, epoch: this.#epoch };
  }

  /** Bytes of the messages kept (expired ones included until trimmed). */
  get bytes(): number {
    return this.#bytes;
  }

  /** How many messages are kept (expired ones included until trimmed). */
  get length(): number {
    return this.#messages.length - this.#head;
  }

  /**
   * Appends a message costing `bytes` and returns its position, then trims
   * to the bounds. A message over `maxBytes` alone takes its offset but is
   * not kept.
   */
  append(data: T, bytes: number): Position {
    this.#offset++;
    this.#messages.push({ offset: this.#offset, data, bytes, time: this.#now() });
    this.#bytes += bytes;
    this.trim();
    return this.position;
  }

  /** Drops what is past the bounds: too many, too old, too many bytes. Returns the bytes freed. */
  trim(): number {
    const before = this.#bytes;
    const oldest = this.#now() - this.#ttl;
    while (this.length > 0) {
      const first = this.#messages[this.#head]!;
      if (this.length <= this.#size && this.#bytes <= this.#maxBytes && first.time > oldest) break;
      this.#bytes -= first.bytes;
      this.#head++;
    }
    // Compact now and then rather than shift on every trim.
    if (this.#head > 64 && this.#head * 2 > this.#messages.length) {
      this.#messages = this.#messages.slice(this.#head);
      this.#head = 0;
    }
    return before - this.#bytes;
  }

  /** The messages after `since` (all without it), with whether the reader missed nothing. */
  read(options: ReadOptions = {}): HistoryRead<T> {
    this.trim();
    const limit = Math.min(options.limit ?? this.#size, this.#size);
    const since = options.since;
    const position = this.position;
    if (since && (since.epoch !== this.#epoch || since.offset > this.#offset)) {
      return { position, messages: [], recovered: false };
    }
    const after = since?.offset ?? 0;
    const firstKept = this.length > 0 ? this.#messages[this.#head]!.offset : this.#offset + 1;
    // Offsets are consecutive, so the first one after `after` is found by arithmetic.
    const start = this.#head + Math.max(0, after + 1 - firstKept);
    const end = Math.min(this.#messages.length, start + Math.max(0, limit));
    const messages = this.#messages.slice(start, end);
    const trimmedPast = firstKept > after + 1;
    const cut = end < this.#messages.length;
    return { position, messages, recovered: since !== undefined && !trimmedPast && !cut };
  }
}

/** Options for {@linkcode HistoryStore}. */
export interface HistoryStoreOptions extends HistoryLimits {
  /**
   * Which subjects keep history: names, or prefixes ending in `*`
   * (`channel.chat.*` matches `channel.chat.room1`). @default {[]} (none)
   */
  subjects?: readonly string[];
  /**
   * Most bytes kept over all subjects, by the `bytes` each append declares
   * plus {@linkcode SUBJECT_BYTES} per subject; past it the least recently
   * published subject's history is dropped whole, and its epoch changes.
   * @default {67108864} (64 MiB)
   */
  totalBytes?: number;
  /** Most subjects with a log; past it, the same eviction. @default {10000} */
  maxSubjects?: number;
  /** The clock, in milliseconds. @default {Date.now} */
  now?: () => number;
}

/**
 * What a subject's log costs beyond its messages (its object, array and map
 * entry; rounded up), counted against `totalBytes` so that many subjects
 * with tiny messages stay within it too.
 */
export const SUBJECT_BYTES = 512;

/**
 * Slots the epochs of subjects without a log are kept in (see
 * `HistoryStore.#unlogged`): 4096 at most, so at most about 200 KiB
 * whatever the readers ask for.
 */
const UNLOGGED_SLOTS = 4096;

/**
 * Which of the 4096 slots of epochs `subject` takes
 * while it has no history: an FNV-1a of its UTF-16 units, from `seed` (0
 * where processes must agree on it, as on a NATS bus).
 */
export function epochSlot(subject: string, seed = 0): number {
  let hash = 0x811c9dc5 ^ seed;
  for (let i = 0; i < subject.length; i++) hash = Math.imul(hash ^ subject.charCodeAt(i), 0x01000193);
  return (hash >>> 0) % UNLOGGED_SLOTS;
}

/** Statistics of a {@linkcode HistoryStore}. */
export interface HistoryStats {
  /** Subjects with a log. */
  subjects: number;
  /** Bytes counted against `totalBytes`. */
  bytes: number;
  /** Subjects whose history was dropped to stay within the bounds, since the start. */
  evictions: number;
}

/**
 * Logs of every subject that keeps history, within total bounds.
 *
 * @example
 * ```ts
 * import { HistoryStore } from "./history_log.ts";
 *
 * const store = new HistoryStore<string>({ subjects: ["news", "chat.*"] });
 * store.append("chat.1", "hi", 2); // { offset: 1, epoch: "…" }
 * store.append("other", "hi", 2); // undefined: no history
 * store.read("chat.1").messages.length; // 1
 * ```
 */
export class HistoryStore<T> {
  readonly #names: Set<string>;
  readonly #prefixes: string[];
  readonly #limits: HistoryLimits;
  readonly #totalBytes: number;
  readonly #maxSubjects: number;
  readonly #now: () => number;
  /** In order of last publish, least recent first. */
  readonly #logs = new Map<string, HistoryLog<T>>();
  /**
   * The epoch a subject without a log answers, by a slot its name hashes
   * to: a read before the first message must answer the epoch that message
   * starts, without making a log (which would count against the bounds and
   * evict the history of subjects really published to, for a reader of
   * fresh names). Subjects share a slot; the slot's epoch changes when a log
   * that took it is dropped, so a reader of that subject sees a new epoch.
   */
  readonly #unlogged = new Map<number, string>();
  /** Seeds the slot hash, so which names share a slot differs from store to store. */
  readonly #seed = crypto.getRandomValues(new Uint32Array(1))[0]!;
  #bytes = 0;
  #evictions = 0;

  constructor(options: HistoryStoreOptions = {}) {
    const subjects = options.subjects ?? [];
    this.#names = new Set(subjects.filter((s) => !s.endsWith("*")));
    this.#prefixes = subjects.filter((s) => s.endsWith("*")).map((s) => s.slice(0, -1));
    this.#limits = { size: options.size, ttl: options.ttl, maxBytes: options.maxBytes };
    this.#totalBytes = positive("totalBytes", options.totalBytes ?? DEFAULT_HISTORY_TOTAL_BYTES);
    this.#maxSubjects = positive("maxSubjects", options.maxSubjects ?? DEFAULT_MAX_HISTORY_SUBJECTS);
    this.#now = options.now ?? Date.now;
    // Checks the per-subject bounds now rather than at the first publish.
    new HistoryLog(this.#limits, this.#now, "");
    const maxBytes = options.maxBytes ?? DEFAULT_HISTORY_MAX_BYTES;
    if (maxBytes + SUBJECT_BYTES > this.#totalBytes) {
      throw new RangeError(
        `Cannot keep history: maxBytes ${maxBytes} plus ${SUBJECT_BYTES} per subject is over totalBytes ${this.#totalBytes}`,
      );
    }
  }

  /** Whether any subject keeps history. */
  get enabled(): boolean {
    return this.#names.size > 0 || this.#prefixes.length > 0;
  }

  /** Current counts, for logs and metrics. */
  get stats(): HistoryStats {
    return { subjects: this.#logs.size, bytes: this.#bytes, evictions: this.#evictions };
  }

  /** Whether `subject` keeps history. */
  keeps(subject: string): boolean {
    return this.#names.has(subject) || this.#prefixes.some((prefix) => subject.startsWith(prefix));
  }

  /** Appends a message to `subject`'s log; its position, or undefined when the subject keeps no history. */
  append(subject: string, data: T, bytes: number): Position | undefined {
    if (!this.keeps(subject)) return undefined;
    const log = this.#log(subject);
    // Most recently published goes last: eviction takes from the front.
    this.#logs.delete(subject);
    this.#logs.set(subject, log);
    const before = log.bytes;
    const position = log.append(data, bytes);
    this.#bytes += log.bytes - before;
    this.#evict(log);
    return position;
  }

  /**
   * Reads `subject`'s history (see {@linkcode HistoryLog.read}). A subject
   * that keeps history but has no log (no message yet, or its history was
   * dropped) reads as an empty log of the epoch its next message will start,
   * so a reader at offset 0 of that epoch misses nothing later; the read
   * makes nothing and drops nothing. One without history reads as
   * `{ offset: 0, epoch: "" }`, never recovered.
   */
  read(subject: string, options: ReadOptions = {}): HistoryRead<T> {
    if (!this.keeps(subject)) return { position: { offset: 0, epoch: "" }, messages: [], recovered: false };
    const log = this.#logs.get(subject);
    if (!log) return new HistoryLog<T>(this.#limits, this.#now, this.#unloggedEpoch(subject)).read(options);
    const before = log.bytes;
    const read = log.read(options);
    this.#bytes += log.bytes - before;
    return read;
  }

  /**
   * Drops `subject`'s history, if it has any: its next message or read is
   * of another epoch than the last it had, read or published.
   */
  remove(subject: string): void {
    const log = this.#logs.get(subject);
    const slot = this.#slot(subject);
    // Without a log, a reader may hold the slot's epoch; with one, the slot may still be at the log's.
    if (!log || this.#unlogged.get(slot) === log.epoch) this.#unlogged.delete(slot);
    if (!log) return;
    this.#logs.delete(subject);
    this.#bytes -= log.bytes + SUBJECT_BYTES;
  }

  /** Trims every log of its expired messages; returns the bytes freed. Call it now and then to free idle subjects' memory. */
  sweep(): number {
    let freed = 0;
    for (const log of this.#logs.values()) freed += log.trim();
    this.#bytes -= freed;
    return freed;
  }

  #log(subject: string): HistoryLog<T> {
    let log = this.#logs.get(subject);
    if (!log) {
      // The epoch a read of it answered until now: a reader from before this message misses nothing.
      log = new HistoryLog<T>(this.#limits, this.#now, this.#unloggedEpoch(subject));
      this.#logs.set(subject, log);
      this.#bytes += SUBJECT_BYTES;
    }
    return log;
  }

  /** The epoch of `subject` while it has no log: its slot's, made on first use. */
  #unloggedEpoch(subject: string): string {
    const slot = this.#slot(subject);
    let epoch = this.#unlogged.get(slot);
    if (epoch === undefined) {
      epoch = newEpoch();
      this.#unlogged.set(slot, epoch);
    }
    return epoch;
  }

  /** `subject`'s slot in `#unlogged`, by the store's seed. */
  #slot(subject: string): number {
    return epochSlot(subject, this.#seed);
  }

  /** Drops least recently published subjects, never `keep`, until within the bounds. */
  #evict(keep: HistoryLog<T>): void {
    for (const [subject, log] of this.#logs) {
      if (this.#bytes <= this.#totalBytes && this.#logs.size <= this.#maxSubjects) return;
      if (log === keep) continue;
      this.remove(subject);
      this.#evictions++;
    }
  }
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(`Cannot keep history: ${name} must be a positive number, got ${value}`);
  }
  return value;
}
