/**
 * A {@linkcode Bus} inside one process (centrifuge's `broker_memory.go`): a
 * {@linkcode MemoryBroker} plays the hub, and each {@linkcode MemoryBus} from
 * {@linkcode MemoryBroker.connect} plays one service's link to it. It lets the
 * pusher and the publisher run, and be tested, without a hub.
 *
 * It counts what it reaches as the hub does: one per link subscribed to the
 * subject. Messages are handed over in a microtask, so a publisher never
 * runs its subscribers' code inside its own call, as on a real bus.
 *
 * @module
 */

import {
  type Bus,
  BusError,
  type BusHandler,
  type BusMessage,
  type BusPublishOptions,
  type PublishResult,
} from "./bus.ts";
import type { HistoryOptions, HistoryResult, Position } from "./bus.ts";
import { type RequestOptions, requestOver, type RequestResult } from "./bus.ts";
import { HistoryStore, type HistoryStoreOptions } from "./history_log.ts";
import { IdempotencyCache, idempotencyKey, MAX_IDEMPOTENCY_KEY_LENGTH } from "./idempotency.ts";
import type { Json } from "./json.ts";

/** Options for {@linkcode MemoryBroker}. */
export interface MemoryBrokerOptions {
  /** Largest message, in bytes of its JSON; larger is refused as `too_large`. @default {1048576} */
  maxMessageBytes?: number;
  /**
   * Which subjects keep history, and its bounds, as the hub's `history*`
   * options: `subjects` (names or `prefix*`; default none), `size` (100),
   * `ttl` (ms, 300000), `maxBytes` per subject (1 MiB), `totalBytes` (64 MiB),
   * `maxSubjects` (10,000). A message's bytes are those of its JSON.
   */
  history?: Omit<HistoryStoreOptions, "now">;
  /** How long an idempotency key is remembered, in milliseconds. @default {300000} */
  idempotencyWindow?: number;
  /** Most idempotency keys remembered; past it the oldest go. @default {100000} */
  maxIdempotencyKeys?: number;
  /** The clock for history ages and idempotency windows, in milliseconds. @default {Date.now} */
  now?: () => number;
}

/** The shared middle of a set of {@linkcode MemoryBus} links. */
export class MemoryBroker {
  readonly #links = new Set<MemoryBus>();
  readonly #maxMessageBytes: number;
  #history: HistoryStore<Json>;
  readonly #historyOptions: HistoryStoreOptions;
  readonly #published: IdempotencyCache<PublishResult>;
  #down = false;

  constructor(options: MemoryBrokerOptions = {}) {
    this.#maxMessageBytes = options.maxMessageBytes ?? 1024 * 1024;
    this.#historyOptions = { ...options.history, now: options.now };
    this.#history = new HistoryStore(this.#historyOptions);
    this.#published = new IdempotencyCache({
      window: options.idempotencyWindow,
      maxKeys: options.maxIdempotencyKeys,
      now: options.now,
    });
  }

  /** Opens a link, as a service opens its bus. */
  connect(): MemoryBus {
    const bus = new MemoryBus(this);
    this.#links.add(bus);
    return bus;
  }

  /**
   * Whether the broker is down, as a hub that stopped: links read as not
   * connected and publishes fail as `unavailable`.
   */
  get down(): boolean {
    return this.#down;
  }

  set down(down: boolean) {
    this.#down = down;
  }

  /**
   * Loses every subject's history and remembered idempotency key, as a hub
   * that restarted: epochs change.
   */
  restart(): void {
    this.#history = new HistoryStore(this.#historyOptions);
    this.#published.clear();
  }

  /**
   * @internal Delivers `data` to every link subscribed to `subject`, or
   * answers again what a publish with the same idempotency key did.
   */
  deliver(subject: string, data: Json, replyTo: string | undefined, key: string | undefined): PublishResult {
    if (this.#down) throw new BusError("unavailable", "Memory bus is down");
    if (key !== undefined && key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
      throw new BusError("refused", `idempotency key is over ${MAX_IDEMPOTENCY_KEY_LENGTH} characters`);
    }
    const cacheKey = key === undefined ? undefined : idempotencyKey([subject], key);
    const seen = cacheKey === undefined ? undefined : this.#published.get(cacheKey);
    if (seen) return seen;
    const bytes = new TextEncoder().encode(JSON.stringify(data)).length;
    if (bytes > this.#maxMessageBytes) {
      throw new BusError("too_large", `message of ${bytes} bytes is over the ${this.#maxMessageBytes}-byte limit`);
    }
    // The log keeps its own copy: the publisher may change `data` afterwards.
    const position = this.#history.keeps(subject)
      ? this.#history.append(subject, structuredClone(data), bytes)
      : undefined;
    let reached = 0;
    for (const link of this.#links) if (link.receive(subject, data, replyTo, position)) reached++;
    const result: PublishResult = position ? { reached, position } : { reached };
    if (cacheKey !== undefined) this.#published.set(cacheKey, result);
    return result;
  }

  /** @internal */
  history(subject: string, options: HistoryOptions): HistoryResult {
    if (this.#down) throw new BusError("unavailable", "Memory bus is down");
    const read = this.#history.read(subject, { since: options.since, limit: options.limit });
    return {
      position: read.position,
      messages: read.messages.map((m) => ({
        data: structuredClone(m.data),
        position: { offset: m.offset, epoch: read.position.epoch },
      })),
      recovered: read.recovered,
    };
  }

  /** @internal */
  removeHistory(subject: string): void {
    if (this.#down) throw new BusError("unavailable", "Memory bus is down");
    this.#history.remove(subject);
  }

  /** @internal */
  forget(link: MemoryBus): void {
    this.#links.delete(link);
  }
}

/** One link to a {@linkcode MemoryBroker}. */
export class MemoryBus implements Bus {
  readonly address = "memory://";
  readonly #broker: MemoryBroker;
  readonly #handlers = new Map<string, BusHandler>();
  #closed = false;
  #offline = false;
  #reconnects = 0;

  /** Use {@linkcode MemoryBroker.connect}. */
  constructor(broker: MemoryBroker) {
    this.#broker = broker;
  }

  get connected(): boolean {
    return !this.#closed && !this.#broker.down && !this.#offline;
  }

  /** How many times {@linkcode MemoryBus.offline} went back to false. */
  get reconnects(): number {
    return this.#reconnects;
  }

  /**
   * Whether this link is down, as a service's link to the hub or Redis
   * that dropped: what is published meanwhile does not reach it, and is
   * not kept for it. Set back to false, the link is back (`reconnects`
   * counts it) with its subscriptions.
   */
  get offline(): boolean {
    return this.#offline;
  }

  set offline(offline: boolean) {
    if (this.#offline && !offline) this.#reconnects++;
    this.#offline = offline;
  }

  /** Subjects this link subscribes to. */
  get subjects(): string[] {
    return [...this.#handlers.keys()];
  }

  subscribe(subject: string, handler: BusHandler): Promise<void> {
    this.#handlers.set(subject, handler);
    // In effect at once: the broker delivers to this map synchronously.
    return Promise.resolve();
  }

  unsubscribe(subject: string): void {
    this.#handlers.delete(subject);
  }

  publish(subject: string, data: Json, options: BusPublishOptions = {}): Promise<PublishResult> {
    if (this.#closed) return Promise.reject(new BusError("unavailable", "Memory bus link is closed"));
    if (options.signal?.aborted) return Promise.reject(options.signal.reason);
    try {
      return Promise.resolve(this.#broker.deliver(subject, data, options.replyTo, options.idempotencyKey));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  history(subject: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    if (this.#closed) return Promise.reject(new BusError("unavailable", "Memory bus link is closed"));
    if (options.signal?.aborted) return Promise.reject(options.signal.reason);
    try {
      return Promise.resolve(this.#broker.history(subject, options));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  removeHistory(subject: string): Promise<void> {
    if (this.#closed) return Promise.reject(new BusError("unavailable", "Memory bus link is closed"));
    try {
      this.#broker.removeHistory(subject);
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  request(subject: string, data: Json, options?: RequestOptions): Promise<RequestResult> {
    return requestOver(this, subject, data, options);
  }

  close(): Promise<void> {
    this.#closed = true;
    this.#handlers.clear();
    this.#broker.forget(this);
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** @internal Takes a message from the broker; true if this link subscribes to its subject. */
  receive(subject: string, data: Json, replyTo: string | undefined, position: Position | undefined): boolean {
    if (!this.#handlers.has(subject) || this.#offline) return false;
    // Each subscriber gets its own copy, as each does off a real bus.
    const copy = structuredClone(data);
    const message: BusMessage = {
      subject,
      ...(replyTo === undefined ? {} : { replyTo }),
      ...(position === undefined ? {} : { position }),
    };
    queueMicrotask(() => this.#handlers.get(subject)?.(copy, message));
    return true;
  }
}
