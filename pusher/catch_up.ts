/**
 * Catch-up: a pusher worker gives the members of a history channel every
 * publication once and in order, also across a gap in what the bus brought
 * it. The hub and Redis keep nothing for a link while it is down, so when a
 * worker's link drops and comes back, what was published meanwhile never
 * reaches it live (NATS's bus reads it back itself). The channel's history
 * has it: a publication whose offset jumps past the next one in the epoch
 * the worker's members were given, or the bus's link coming back, makes the
 * worker read what it missed (up to `maxMessages`) and deliver it first.
 * Live publications that come meanwhile are held (as many), then delivered
 * past what the read covered. What history no longer has (trimmed, or more
 * than `maxMessages`) is skipped and logged: members see the offsets jump,
 * and a client that resubscribes from before the jump is told
 * `recovered: false`, as after any loss history cannot make up.
 *
 * @module
 */

import type { Bus, Position } from "../shared/bus.ts";
import type { Json } from "../shared/json.ts";
import type { Logger } from "../shared/log.ts";
import { channelSubject } from "../shared/address.ts";

/** How often the bus's reconnect count is looked at while the worker has channel members, in milliseconds. */
export const DEFAULT_CATCH_UP_CHECK_INTERVAL = 1000;

/** History reads out at once when a link came back with many channels to catch up on. */
const MAX_READS_IN_FLIGHT = 8;

/** Options for {@linkcode CatchUp}. */
export interface CatchUpOptions {
  /** Where history is read from; its `reconnects` tells when the link came back. */
  bus: Pick<Bus, "history" | "reconnects">;
  /** Gives a publication to the worker's members of `channel`. */
  deliver(channel: string, data: Json, position: Position | undefined): void;
  /** Most publications read back per gap, and most live ones held meanwhile, per channel. */
  maxMessages: number;
  logger: Logger;
  /** How often the bus's reconnect count is looked at, in milliseconds. @default {1000} */
  checkInterval?: number;
}

/** A channel being caught up on: the live publications held meanwhile, or null once past the bound. */
interface Filling {
  held: { data: Json; position: Position }[] | null;
}

/**
 * One worker's catch-up on its history channels.
 *
 * @example
 * ```ts
 * import { CatchUp } from "./catch_up.ts";
 * import { MemoryBroker } from "../shared/memory_bus.ts";
 * import { createLogger } from "../shared/log.ts";
 *
 * const bus = new MemoryBroker({ history: { subjects: ["channel.*"] } }).connect();
 * using catchUp = new CatchUp({
 *   bus,
 *   deliver: (channel, data, position) => console.log(channel, data, position),
 *   maxMessages: 100,
 *   logger: createLogger("example"),
 * });
 * catchUp.told("news", { offset: 0, epoch: "e" }); // a subscribe's reply
 * catchUp.receive("news", "hello", { offset: 1, epoch: "e" }); // delivered: the next one
 * ```
 */
export class CatchUp implements Disposable {
  readonly #options: CatchUpOptions;
  /**
   * The position each history channel's members have: of the last
   * publication delivered to them, or, before any, the first position a
   * subscribe's reply told one (an earlier one than a later reply's, so that
   * no member misses what lies between: a member told the later one drops
   * those as seen). Kept while the worker has members of the channel.
   */
  readonly #last = new Map<string, Position>();
  readonly #filling = new Map<string, Filling>();
  /** Channels waiting for a read after the link came back, in order, and how many reads are out. */
  readonly #queue = new Set<string>();
  #reading = 0;
  #reconnects: number;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(options: CatchUpOptions) {
    this.#options = options;
    this.#reconnects = options.bus.reconnects;
  }

  /** A live publication of `channel` reached the worker: delivered now, after what it missed, or held. */
  receive(channel: string, data: Json, position: Position | undefined): void {
    // Without a channel's position, or with nothing to read back (maxMessages 0), there is nothing to catch up on.
    if (position === undefined || this.#options.maxMessages === 0) {
      return this.#options.deliver(channel, data, position);
    }
    const filling = this.#filling.get(channel);
    if (filling) {
      if (filling.held && filling.held.length < this.#options.maxMessages) filling.held.push({ data, position });
      else filling.held = null;
      return;
    }
    const last = this.#last.get(channel);
    if (last && last.epoch === position.epoch) {
      if (position.offset <= last.offset) return;
      if (position.offset > last.offset + 1) {
        void this.#fill(channel, last, { held: [{ data, position }] });
        return;
      }
    }
    this.#deliver(channel, data, position);
  }

  /** A subscribe's reply told a member of `channel` this position: the channel's, if it had none yet. */
  told(channel: string, position: Position): void {
    if (!this.#last.has(channel)) this.#last.set(channel, position);
  }

  /** The worker has no member of `channel` any more. */
  forget(channel: string): void {
    this.#last.delete(channel);
  }

  #deliver(channel: string, data: Json, position: Position): void {
    this.#last.set(channel, position);
    this.#options.deliver(channel, data, position);
  }

  /**
   * Looks at the bus's reconnect count every `checkInterval` while `active`,
   * and catches up on every channel once it moved. Call with true when the
   * worker gets its first channel member, false when it has none.
   */
  watch(active: boolean): void {
    if (!active) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    this.#timer ??= setInterval(
      () => this.check(),
      this.#options.checkInterval ?? DEFAULT_CATCH_UP_CHECK_INTERVAL,
    );
  }

  /** Catches up on every channel with members if the bus's link came back since the last look. */
  check(): void {
    const reconnects = this.#options.bus.reconnects;
    if (reconnects === this.#reconnects) return;
    this.#reconnects = reconnects;
    for (const channel of this.#last.keys()) this.#queue.add(channel);
    this.#pump();
  }

  #pump(): void {
    for (const channel of this.#queue) {
      if (this.#reading >= MAX_READS_IN_FLIGHT) return;
      this.#queue.delete(channel);
      const last = this.#last.get(channel);
      if (!last || this.#filling.has(channel)) continue;
      this.#reading++;
      void this.#fill(channel, last, { held: [] }).finally(() => {
        this.#reading--;
        this.#pump();
      });
    }
  }

  /** Reads what the worker's members of `channel` missed after `since`, delivers it, then what was held. */
  async #fill(channel: string, since: Position, filling: Filling): Promise<void> {
    this.#filling.set(channel, filling);
    let messages: readonly { data: Json; position: Position }[] = [];
    try {
      const history = await this.#options.bus.history(channelSubject(channel), {
        since,
        limit: this.#options.maxMessages,
      });
      messages = history.messages;
      if (!history.recovered && history.position.epoch === since.epoch && history.position.offset > since.offset) {
        this.#options.logger.warn("a channel's history no longer has all its members missed", {
          channel,
          since: since.offset,
          top: history.position.offset,
        });
      }
    } catch (error) {
      this.#options.logger.warn("cannot read what a channel's members missed", {
        channel,
        error: (error as Error).message,
      });
    } finally {
      this.#filling.delete(channel);
    }
    // The worker may have left the channel meanwhile: then there is no one to give them to, nor a position.
    let last = this.#last.get(channel);
    if (!last) return;
    for (const { data, position } of messages) {
      if (position.epoch !== last.epoch || position.offset <= last.offset) continue;
      this.#deliver(channel, data, position);
      last = position;
    }
    if (filling.held === null) {
      this.#options.logger.warn("too many live publications came while catching up; members see a jump", { channel });
      return;
    }
    for (const { data, position } of filling.held) {
      if (position.epoch === last.epoch && position.offset <= last.offset) continue;
      this.#deliver(channel, data, position);
      last = position;
    }
  }

  /** Stops watching the bus's reconnects. */
  [Symbol.dispose](): void {
    this.watch(false);
  }
}
