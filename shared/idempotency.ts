/**
 * Remembers what a publish with an idempotency key answered, so that a retry
 * of it is answered the same and not delivered again. Used by the hub and
 * the in-process bus. Bounded by a window, a count and a weight (what the
 * answers hold: an ack lists a position per history subject): past any, the
 * oldest keys go first, and a retry after that is delivered again.
 *
 * Pure TypeScript: the clock is injected.
 *
 * @module
 */

/** Default window a key is remembered for, in milliseconds. */
export const DEFAULT_IDEMPOTENCY_WINDOW = 300_000;
/** Default number of keys remembered. */
export const DEFAULT_MAX_IDEMPOTENCY_KEYS = 100_000;
export { MAX_IDEMPOTENCY_KEY_LENGTH } from "./wire.ts";

/** Options for {@linkcode IdempotencyCache}. */
export interface IdempotencyOptions {
  /** How long a key is remembered, in milliseconds. @default {300000} */
  window?: number;
  /** Most keys remembered; past it the oldest go. @default {100000} */
  maxKeys?: number;
  /** Most weight of all answers remembered (see {@linkcode IdempotencyCache.set}); past it the oldest go. @default {Infinity} */
  maxWeight?: number;
  /** The clock, in milliseconds. @default {Date.now} */
  now?: () => number;
}

/**
 * Answers remembered by key, the oldest forgotten first.
 *
 * @example
 * ```ts
 * import { IdempotencyCache, idempotencyKey } from "./idempotency.ts";
 *
 * const cache = new IdempotencyCache<number>();
 * const key = idempotencyKey(["news"], "order-17");
 * cache.get(key); // undefined: route it, then
 * cache.set(key, 3);
 * cache.get(key); // 3: answer again, do not route
 * ```
 */
export class IdempotencyCache<V> {
  readonly #window: number;
  readonly #maxKeys: number;
  readonly #maxWeight: number;
  readonly #now: () => number;
  /** In the order they were set: the oldest first. */
  readonly #entries = new Map<string, { value: V; time: number; weight: number }>();
  #weight = 0;

  constructor(options: IdempotencyOptions = {}) {
    this.#window = options.window ?? DEFAULT_IDEMPOTENCY_WINDOW;
    this.#maxKeys = options.maxKeys ?? DEFAULT_MAX_IDEMPOTENCY_KEYS;
    this.#maxWeight = options.maxWeight ?? Infinity;
    this.#now = options.now ?? Date.now;
    if (!(this.#window >= 0) || !(this.#maxKeys >= 0)) {
      throw new RangeError(`Cannot remember keys: window ${this.#window} and maxKeys ${this.#maxKeys} must be >= 0`);
    }
  }

  /** How many keys are remembered. */
  get size(): number {
    this.#expire();
    return this.#entries.size;
  }

  /** The answer remembered for `key`, if it was set within the window. */
  get(key: string): V | undefined {
    this.#expire();
    return this.#entries.get(key)?.value;
  }

  /**
   * Remembers the answer for `key`, weighing `weight` (1 by default),
   * forgetting the oldest past `maxKeys` or `maxWeight`. An answer heavier
   * than `maxWeight` alone is not remembered.
   */
  set(key: string, value: V, weight = 1): void {
    this.#expire();
    this.#delete(key);
    if (this.#maxKeys === 0 || weight > this.#maxWeight) return;
    this.#entries.set(key, { value, time: this.#now(), weight });
    this.#weight += weight;
    while (this.#entries.size > this.#maxKeys || this.#weight > this.#maxWeight) {
      this.#delete(this.#entries.keys().next().value!);
    }
  }

  /** Forgets every key. */
  clear(): void {
    this.#entries.clear();
    this.#weight = 0;
  }

  #delete(key: string): void {
    const entry = this.#entries.get(key);
    if (!entry) return;
    this.#entries.delete(key);
    this.#weight -= entry.weight;
  }

  #expire(): void {
    const oldest = this.#now() - this.#window;
    for (const [key, entry] of this.#entries) {
      if (entry.time > oldest) return;
      this.#delete(key);
    }
  }
}

/**
 * The cache key of a publish: the same key on another subject list is
 * another publish. The list goes in as a 64-bit hash (two FNV-1a), so a
 * remembered key costs the same whatever the publish's subjects: a frame may
 * list thousands.
 */
export function idempotencyKey(subjects: readonly string[], key: string): string {
  const list = JSON.stringify(subjects);
  let a = 0x811c9dc5;
  let b = 0x050c5d1f;
  for (let i = 0; i < list.length; i++) {
    const code = list.charCodeAt(i);
    a = Math.imul(a ^ code, 0x01000193);
    b = Math.imul(b ^ code, 0x01000193) ^ (b >>> 15);
  }
  return `${(a >>> 0).toString(16)}.${(b >>> 0).toString(16)}:${key}`;
}
