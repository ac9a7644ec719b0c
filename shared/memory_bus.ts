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

import { type Bus, BusError, type BusHandler, type BusPublishOptions, type PublishResult } from "./bus.ts";
import { type RequestOptions, requestOver, type RequestResult } from "./bus.ts";
import type { Json } from "./json.ts";

/** Options for {@linkcode MemoryBroker}. */
export interface MemoryBrokerOptions {
  /** Largest message, in bytes of its JSON; larger is refused as `too_large`. @default {1048576} */
  maxMessageBytes?: number;
}

/** The shared middle of a set of {@linkcode MemoryBus} links. */
export class MemoryBroker {
  readonly #links = new Set<MemoryBus>();
  readonly #maxMessageBytes: number;
  #down = false;

  constructor(options: MemoryBrokerOptions = {}) {
    this.#maxMessageBytes = options.maxMessageBytes ?? 1024 * 1024;
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

  /** @internal Delivers `data` to every link subscribed to `subject`; returns how many. */
  deliver(subject: string, data: Json, replyTo: string | undefined): number {
    if (this.#down) throw new BusError("unavailable", "Memory bus is down");
    const bytes = JSON.stringify(data).length;
    if (bytes > this.#maxMessageBytes) {
      throw new BusError("too_large", `message of ${bytes} bytes is over the ${this.#maxMessageBytes}-byte limit`);
    }
    let reached = 0;
    for (const link of this.#links) if (link.receive(subject, data, replyTo)) reached++;
    return reached;
  }

  /** @internal */
  forget(link: MemoryBus): void {
    this.#links.delete(link);
  }
}

/** One link to a {@linkcode MemoryBroker}. */
export class MemoryBus implements Bus {
  readonly address = "memory://";
  readonly reconnects = 0;
  readonly #broker: MemoryBroker;
  readonly #handlers = new Map<string, BusHandler>();
  #closed = false;

  /** Use {@linkcode MemoryBroker.connect}. */
  constructor(broker: MemoryBroker) {
    this.#broker = broker;
  }

  get connected(): boolean {
    return !this.#closed && !this.#broker.down;
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
      return Promise.resolve({ reached: this.#broker.deliver(subject, data, options.replyTo) });
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
  receive(subject: string, data: Json, replyTo: string | undefined): boolean {
    if (!this.#handlers.has(subject)) return false;
    // Each subscriber gets its own copy, as each does off a real bus.
    const copy = structuredClone(data);
    queueMicrotask(() =>
      this.#handlers.get(subject)?.(copy, replyTo === undefined ? { subject } : { subject, replyTo })
    );
    return true;
  }
}
