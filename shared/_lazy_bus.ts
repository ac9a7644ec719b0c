/**
 * A {@linkcode Bus} whose implementation is imported when it is opened, not
 * when the program starts: the NATS and Redis clients come from npm with
 * Deno's Node layer, about 29 MiB of resident memory in every process and
 * pusher worker that imports them, which a system on the hub never uses.
 *
 * @module
 */

import { publishBatch } from "./bus.ts";
import type {
  BatchOutcome,
  Bus,
  BusBatchItem,
  BusBatchOptions,
  BusHandler,
  BusPublishOptions,
  HistoryOptions,
  HistoryResult,
  Json,
  PublishResult,
  RequestOptions,
  RequestResult,
} from "./bus.ts";

/**
 * Forwards every call to the bus `load` resolves to, once it has: calls made
 * before wait for it, in the order they were made. Until then it is not
 * connected and has not reconnected.
 */
export class LazyBus implements Bus {
  readonly #loading: Promise<Bus>;
  readonly #address: string;
  #bus: Bus | undefined;

  /**
   * @param address Where the bus connects, without secrets, as `Bus.address` says until it is loaded.
   * @param countsReached What the loaded bus's `countsReached` will be: read before it is loaded.
   */
  constructor(address: string, readonly countsReached: boolean, load: () => Promise<Bus>) {
    this.#address = address;
    this.#loading = load().then((bus) => (this.#bus = bus));
  }

  get address(): string {
    return this.#bus?.address ?? this.#address;
  }

  get connected(): boolean {
    return this.#bus?.connected ?? false;
  }

  get reconnects(): number {
    return this.#bus?.reconnects ?? 0;
  }

  async subscribe(subject: string, handler: BusHandler): Promise<void> {
    return (await this.#loading).subscribe(subject, handler);
  }

  unsubscribe(subject: string): void {
    if (this.#bus) return this.#bus.unsubscribe(subject);
    // After the subscribes made before it, which wait on the same promise.
    this.#loading.then((bus) => bus.unsubscribe(subject), () => {});
  }

  async publish(subject: string, data: Json, options?: BusPublishOptions): Promise<PublishResult> {
    return (await this.#loading).publish(subject, data, options);
  }

  async publishBatch(items: readonly BusBatchItem[], options?: BusBatchOptions): Promise<BatchOutcome[]> {
    return publishBatch(await this.#loading, items, options);
  }

  async request(subject: string, data: Json, options?: RequestOptions): Promise<RequestResult> {
    return (await this.#loading).request(subject, data, options);
  }

  async history(subject: string, options?: HistoryOptions): Promise<HistoryResult> {
    return (await this.#loading).history(subject, options);
  }

  async removeHistory(subject: string): Promise<void> {
    return (await this.#loading).removeHistory(subject);
  }

  async close(): Promise<void> {
    return (await this.#loading).close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
