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
 * past what the read covered, page by page. What history no longer has
 * (trimmed, or unreadable after ten tries) is skipped and logged, and the
 * members are told (`lost`: the pusher closes them with 3010
 * `insufficient state`, and their resubscribe with `since` is told
 * `recovered: false`), as after any loss history cannot make up. So are
 * members whose subscribe could not be given a position (its history read
 * failed) when the link drops before a publication gives them one.
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

/**
 * Reads of one gap that may fail in a row (one a look, a look a second by
 * default) before the catch-up gives up on it and delivers what it held: a
 * bus that cannot read history must not stop a channel's live publications
 * for good.
 */
const MAX_FAILED_READS = 10;

/** Options for {@linkcode CatchUp}. */
export interface CatchUpOptions {
  /** Where history is read from; its `reconnects` tells when the link came back. */
  bus: Pick<Bus, "history" | "reconnects">;
  /** Gives a publication to the worker's members of `channel`. */
  deliver(channel: string, data: Json, position: Position | undefined): void;
  /**
   * The members of `channel` missed publications its history no longer has
   * (trimmed, or not readable after ten tries), or may have missed some with
   * no position to read back from: they are to be told, as an offset jump
   * alone cannot tell them (an `exclude` makes one too).
   */
  lost(channel: string): void;
  /** Most publications read back per gap, and most live ones held meanwhile, per channel. */
  maxMessages: number;
  logger: Logger;
  /** How often the bus's reconnect count is looked at, in milliseconds. @default {1000} */
  checkInterval?: number;
}

/** A channel being caught up on, from the gap's discovery until a read has covered it. */
interface Filling {
  /** The live publications held meanwhile, or null once past the bound (the next read brings them). */
  held: { data: Json; position: Position }[] | null;
  /** A read is out now. */
  reading: boolean;
  /** The link came back while the read was out: its answer may predate what was missed since, so read again. */
  again: boolean;
  /** Reads that failed in a row: the first is logged, and past {@linkcode MAX_FAILED_READS} the catch-up gives up. */
  failed: number;
  /** Resolved when the catch-up ends, for those waiting on {@linkcode CatchUp.settled}; made when first asked. */
  ended: { promise: Promise<void>; resolve: () => void } | null;
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
 *   lost: (channel) => console.log(channel, "missed what history no longer has"),
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
  /**
   * Channels with members answered without a position (their subscribe's
   * history read failed) while the worker had none either, each with the
   * bus's reconnect count when they joined: a link drop before the
   * channel's next publication leaves nothing to read back from, so they
   * are told (`lost`). Kept until that publication, or until they go.
   */
  readonly #unplaced = new Map<string, number>();
  readonly #filling = new Map<string, Filling>();
  /** Channels whose read waits for its turn (at most {@linkcode MAX_READS_IN_FLIGHT} out at once), in order. */
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
    const joined = this.#unplaced.get(channel);
    if (joined !== undefined) {
      this.#unplaced.delete(channel);
      // The link dropped since they joined: what came meanwhile is unknown, and this publication would hide it.
      if (joined !== this.#options.bus.reconnects) return this.#options.lost(channel);
    }
    const filling = this.#filling.get(channel);
    if (filling) return this.#hold(filling, data, position);
    const last = this.#last.get(channel);
    if (last && last.epoch === position.epoch) {
      if (position.offset <= last.offset) return;
      if (position.offset > last.offset + 1) {
        this.#start(channel).held!.push({ data, position });
        return;
      }
    }
    this.#deliver(channel, data, position);
  }

  /** A subscribe's reply told a member of `channel` this position: the channel's, if it had none yet. */
  told(channel: string, position: Position): void {
    if (!this.#last.has(channel)) this.#last.set(channel, position);
  }

  /**
   * A member of `channel` was answered without a position (its history read
   * failed); `reconnects` is the bus's count from before that read. When
   * the worker has no position of the channel either, a link drop before
   * the channel's next publication closes its members (`lost`).
   */
  unplaced(channel: string, reconnects: number): void {
    if (this.#options.maxMessages === 0 || this.#last.has(channel)) return;
    const joined = this.#unplaced.get(channel);
    if (joined === undefined || reconnects < joined) this.#unplaced.set(channel, reconnects);
  }

  /** The worker has no member of `channel` any more. */
  forget(channel: string): void {
    this.#unplaced.delete(channel);
    this.#last.delete(channel);
    this.#end(channel);
    this.#queue.delete(channel);
  }

  /**
   * Resolves once no catch-up of `channel` is under way; null when none is
   * now. A subscribe answered during one waits for it, so that what the
   * catch-up delivers is held for the new member and never sent twice (once
   * in its replay, once by the catch-up).
   */
  settled(channel: string): Promise<void> | null {
    const filling = this.#filling.get(channel);
    if (!filling) return null;
    if (!filling.ended) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => resolve = r);
      filling.ended = { promise, resolve };
    }
    return filling.ended.promise;
  }

  /** Ends `channel`'s catch-up, if one is under way: those waiting for it go on. */
  #end(channel: string): void {
    this.#filling.get(channel)?.ended?.resolve();
    this.#filling.delete(channel);
  }

  /**
   * Looks at the bus's reconnect count every `checkInterval` while `active`:
   * once it moved, catches up on every channel; and tries again the reads
   * that failed. Call with true when the worker gets its first channel
   * member, false when it has none.
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

  /** Catches up on every channel if the bus's link came back since the last look, and on those whose read failed. */
  check(): void {
    const reconnects = this.#options.bus.reconnects;
    if (reconnects !== this.#reconnects) {
      this.#reconnects = reconnects;
      const unplaced = [...this.#unplaced].filter(([, joined]) => joined !== reconnects).map(([channel]) => channel);
      for (const channel of unplaced) {
        this.#unplaced.delete(channel);
        this.#options.lost(channel);
      }
      for (const channel of this.#last.keys()) {
        const filling = this.#filling.get(channel);
        if (filling?.reading) filling.again = true;
        else this.#start(channel);
      }
    }
    for (const [channel, filling] of this.#filling) if (!filling.reading) this.#queue.add(channel);
    this.#pump();
  }

  #deliver(channel: string, data: Json, position: Position): void {
    this.#last.set(channel, position);
    this.#options.deliver(channel, data, position);
  }

  #hold(filling: Filling, data: Json, position: Position): void {
    if (filling.held && filling.held.length < this.#options.maxMessages) filling.held.push({ data, position });
    else filling.held = null;
  }

  /** Begins catching up on `channel` (or goes on with the catch-up under way), its read queued. */
  #start(channel: string): Filling {
    let filling = this.#filling.get(channel);
    if (!filling) {
      this.#filling.set(channel, filling = { held: [], reading: false, again: false, failed: 0, ended: null });
    }
    if (!filling.reading) this.#queue.add(channel);
    this.#pump();
    return filling;
  }

  #pump(): void {
    for (const channel of this.#queue) {
      if (this.#reading >= MAX_READS_IN_FLIGHT) return;
      this.#queue.delete(channel);
      const filling = this.#filling.get(channel);
      if (!filling || filling.reading) continue;
      filling.reading = true;
      this.#reading++;
      void this.#read(channel, filling).finally(() => {
        this.#reading--;
        this.#pump();
      });
    }
  }

  /**
   * Reads a page of what `channel`'s members missed after their position,
   * and delivers it. Then reads the next page if this one was full, again
   * if the link came back meanwhile, and otherwise delivers what was held
   * and ends the catch-up. A failed read keeps everything as it is, for the
   * next look ({@linkcode CatchUp.check}) to try again: delivering past the
   * gap would skip what history still has.
   */
  async #read(channel: string, filling: Filling): Promise<void> {
    const since = this.#last.get(channel);
    let history;
    try {
      if (!since) throw new Error("no position");
      history = await this.#options.bus.history(channelSubject(channel), { since, limit: this.#options.maxMessages });
    } catch (error) {
      filling.reading = false;
      if (this.#filling.get(channel) !== filling) return;
      if (++filling.failed === 1) {
        this.#options.logger.warn("cannot read what a channel's members missed; trying again at each look", {
          channel,
          error: (error as Error).message,
        });
      }
      if (filling.failed < MAX_FAILED_READS) return;
      this.#options.logger.error("gave up reading what a channel's members missed; they see a jump", {
        channel,
        since: since?.offset,
        error: (error as Error).message,
      });
      this.#end(channel);
      if (since) this.#release(channel, filling, since);
      this.#options.lost(channel);
      return;
    }
    filling.reading = false;
    filling.failed = 0;
    // The worker left the channel meanwhile: no one to give them to.
    if (this.#filling.get(channel) !== filling) return;
    let last = since;
    const first = history.messages[0];
    // History's top is past the members' position, and what follows it is not there (trimmed, or all expired).
    const gone = history.position.epoch === last.epoch && history.position.offset > last.offset &&
      (!first || (first.position.epoch === last.epoch && first.position.offset > last.offset + 1));
    if (gone) {
      this.#options.logger.warn("a channel's history no longer has all its members missed", {
        channel,
        since: last.offset,
        from: first?.position.offset,
        top: history.position.offset,
      });
      this.#options.lost(channel);
      // Told, the members went (and with them the channel): nothing left to deliver to.
      if (this.#filling.get(channel) !== filling) return;
    }
    for (const { data, position } of history.messages) {
      if (position.epoch !== last.epoch || position.offset <= last.offset) continue;
      this.#deliver(channel, data, position);
      last = position;
    }
    const more = history.messages.length >= this.#options.maxMessages && history.position.epoch === last.epoch &&
      history.position.offset > last.offset;
    // Live publications were dropped past the bound while the read was out: the next read brings them.
    const dropped = filling.held === null;
    if (more || filling.again || dropped) {
      filling.again = false;
      if (dropped) filling.held = [];
      this.#queue.add(channel);
      this.#pump();
      return;
    }
    this.#end(channel);
    this.#release(channel, filling, last);
  }

  /** Delivers what was held past `last`, at the end of a catch-up. */
  #release(channel: string, filling: Filling, last: Position): void {
    // Dropped while over the bound (and the catch-up given up): the next live publication shows the jump.
    if (filling.held === null) return;
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
