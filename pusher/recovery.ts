/**
 * Recovery: what a client that subscribes again with `since` missed of a
 * channel that keeps history, read from the bus and sent before the live
 * publications, in order and each once.
 *
 * A subscribe is answered once the worker's subscription to the channel is
 * in effect. Then, when the client gave `since`, the pusher asks
 * `bus.history(channel.<name>, {since, limit: maxRecoverMessages})`; while
 * it waits, the live publications of that channel for that connection are
 * held (at most `maxRecoverMessages`; past it the answer is "not
 * recovered"). Then it sends the reply `{"id":N,"result":{"recovered":R,
 * "offset":O,"epoch":E}}`, the missed publications (only when recovered),
 * and the held ones past the offsets already covered.
 *
 * Without `since`, the reply carries the channel's position too, so that the
 * client has one to come back with. That position is the one of the last
 * publication this worker got on the channel while subscribed: every later
 * publication reaches the new member, so it is exact, and it costs nothing.
 * Only when the worker has seen no publication of the channel yet (it just
 * subscribed, or its bus link came back since) does it ask the bus, with
 * `limit: 0`, once: the answer is remembered as the worker's position until
 * the next publication moves it. Whether a channel keeps history is learned
 * the same way (a publication without a position, a history answer with
 * epoch ""), and remembered for channels that do not, within a bound, so that
 * a channel without history costs one round trip per worker and bus link.
 *
 * A history request that fails (the bus is down, or does not speak history)
 * is answered `{"recovered":false}` without a position when the client asked
 * to recover (the app reloads; the client learns the position from the next
 * publication), and `{}` as before history existed when it did not; the
 * connection stays, and what was held is sent. Should the worker's bus link
 * drop before a publication gives those members a position, they are told
 * they lost what came meanwhile (`catch_up.ts`): nothing else could tell them.
 *
 * @module
 */

import { type Bus, BusError, type Position } from "../shared/bus.ts";
import type { Json } from "../shared/json.ts";
import { channelSubject, type Exclude, toChannelEvent } from "../shared/address.ts";
import type { Logger } from "../shared/log.ts";
import { channelFrame } from "./delivery.ts";
import { resultFrame, type SincePosition, subscribeResultFrame } from "./client_protocol.ts";
import type { Connection } from "./registry.ts";
import type { PreparedMessage } from "./transport.ts";

/** The default of {@linkcode RecoveryOptions.maxRecoverMessages}. */
export const DEFAULT_MAX_RECOVER_MESSAGES = 100;

/** The default of {@linkcode RecoveryOptions.maxNoHistoryChannels}. */
export const DEFAULT_MAX_NO_HISTORY_CHANNELS = 10_000;

/** Options for {@linkcode Recovery}. */
export interface RecoveryOptions<C extends Connection> {
  /** This worker's id: a replayed publication excluding a connection here is not sent to it. */
  workerId: string;
  /** Where history is read from; its `reconnects` tells when what the worker knew of a channel may be stale. */
  bus: Pick<Bus, "history" | "reconnects">;
  /** Whether `connection` is still open. */
  isOpen(connection: C): boolean;
  /** Whether `connection` is a member of `channel` now. */
  isMember(connection: C, channel: string): boolean;
  logger: Logger;
  /**
   * Most publications replayed to one subscribe, and most live ones held for
   * a connection while its history request is out; past either, the answer
   * is not recovered. @default {100}
   */
  maxRecoverMessages?: number;
  /** Channels remembered as keeping no history. @default {10000} */
  maxNoHistoryChannels?: number;
  /** Told each position a subscribe's reply gives a member of `channel`, read from the bus. @default {nothing} */
  onTold?: (channel: string, position: Position) => void;
  /**
   * Told when a member of a channel that may keep history was answered
   * without a position (its history read failed), with the bus's reconnect
   * count from before the read: neither the member nor the worker has a
   * position from which to tell what a later link drop loses. @default {nothing}
   */
  onUnplaced?: (channel: string, reconnects: number) => void;
  /**
   * Resolves once the worker is not catching up on `channel` (`catch_up.ts`);
   * null when it is not now. A subscribe is answered after it, so that what
   * the catch-up delivers is held for the new member, not sent twice.
   * @default {never catching up}
   */
  settled?: (channel: string) => Promise<void> | null;
}

/** A live publication held for a connection while its recovery is out. */
interface Held {
  readonly position: Position | undefined;
  readonly message: string | PreparedMessage;
}

/** One connection's recovery of one channel, while its history request is out. */
interface Pending {
  readonly held: Held[];
  /** Past the bound: nothing more is held, only the newest position seen. */
  overflowed: boolean;
  latest: Position | undefined;
  /** The worker left the channel while this read was out: its answer is this connection's, not the worker's to keep. */
  stale: boolean;
  /** The subscribe made the connection a member (it was not one before): what came before it is none of its. */
  readonly joined: boolean;
  /** Its answer waits for the channel's catch-up to end: it will read where the channel stands after it. */
  awaitingCatchUp: boolean;
}

/** What the worker knows of a channel's position, and on which bus link it learned it. */
interface Known {
  readonly position: Position;
  readonly reconnects: number;
}

/**
 * One worker's recoveries, and what it knows of its channels' positions.
 *
 * @example
 * ```ts
 * import { Recovery } from "./recovery.ts";
 * import { MemoryBroker } from "../shared/memory_bus.ts";
 * import { createLogger } from "../shared/log.ts";
 *
 * const bus = new MemoryBroker({ history: { subjects: ["channel.*"] } }).connect();
 * const recovery = new Recovery({ workerId: "w", bus, isOpen: () => true, isMember: () => true, logger: createLogger("test") });
 * const connection = { id: 1, socket: { send: console.log } };
 * await recovery.answer(connection as never, 1, "news", undefined); // logs {"id":1,"result":{"recovered":false,"offset":0,...}}
 * ```
 */
export class Recovery<C extends Connection> {
  /** Most publications replayed or held per subscribe. */
  readonly maxRecoverMessages: number;
  readonly #workerId: string;
  readonly #bus: Pick<Bus, "history" | "reconnects">;
  readonly #isOpen: (connection: C) => boolean;
  readonly #isMember: (connection: C, channel: string) => boolean;
  readonly #logger: Logger;
  readonly #maxNoHistory: number;
  readonly #onTold: ((channel: string, position: Position) => void) | undefined;
  readonly #onUnplaced: ((channel: string, reconnects: number) => void) | undefined;
  readonly #settled: ((channel: string) => Promise<void> | null) | undefined;
  readonly #pending = new Map<string, Map<C, Pending>>();
  readonly #known = new Map<string, Known>();
  /** Channels known to keep no history, with the bus link they were learned on. */
  readonly #noHistory = new Map<string, number>();

  constructor(options: RecoveryOptions<C>) {
    this.#workerId = options.workerId;
    this.#bus = options.bus;
    this.#isOpen = options.isOpen;
    this.#isMember = options.isMember;
    this.#logger = options.logger;
    this.maxRecoverMessages = options.maxRecoverMessages ?? DEFAULT_MAX_RECOVER_MESSAGES;
    this.#maxNoHistory = options.maxNoHistoryChannels ?? DEFAULT_MAX_NO_HISTORY_CHANNELS;
    this.#onTold = options.onTold;
    this.#onUnplaced = options.onUnplaced;
    this.#settled = options.settled;
    if (!Number.isSafeInteger(this.maxRecoverMessages) || this.maxRecoverMessages < 0) {
      throw new RangeError(
        `Invalid maxRecoverMessages: expected a non-negative integer, got ${this.maxRecoverMessages}`,
      );
    }
  }

  /** A live publication of `channel` reached this worker: its position is now the channel's. */
  observe(channel: string, position: Position | undefined): void {
    if (position === undefined) {
      this.#rememberNoHistory(channel);
      return;
    }
    this.#noHistory.delete(channel);
    this.#known.set(channel, { position, reconnects: this.#bus.reconnects });
  }

  /**
   * The worker left `channel`: what it knew of its position goes stale, and
   * so does what the reads still out will answer (publications no longer
   * reach the worker to move it on).
   */
  forget(channel: string): void {
    this.#known.delete(channel);
    for (const pending of this.#pending.get(channel)?.values() ?? []) pending.stale = true;
  }

  /**
   * Whether `connection` joined `channel` with a subscribe whose answer
   * waits for the channel's catch-up: the answer will tell it where the
   * channel stands after it, and nothing before was its to miss. Not so for
   * a member that subscribes again (what it was given before counts), nor
   * once its own history read is out (the answer may predate a loss found
   * meanwhile).
   */
  joining(connection: C, channel: string): boolean {
    const pending = this.#pending.get(channel)?.get(connection);
    return pending !== undefined && pending.joined && pending.awaitingCatchUp;
  }

  /** Whether some connection's recovery of `channel` is out: then {@linkcode Recovery.hold} is asked per member. */
  holding(channel: string): boolean {
    return this.#pending.has(channel);
  }

  /** Holds a live publication for `connection` if its recovery of `channel` is out; true if held. */
  hold(connection: C, channel: string, position: Position | undefined, message: string | PreparedMessage): boolean {
    const pending = this.#pending.get(channel)?.get(connection);
    if (!pending) return false;
    if (position !== undefined) pending.latest = newer(pending.latest, position);
    if (pending.overflowed) return true;
    if (pending.held.length >= this.maxRecoverMessages) {
      pending.overflowed = true;
      pending.held.length = 0;
      return true;
    }
    pending.held.push({ position, message });
    return true;
  }

  /**
   * Starts holding `connection`'s live publications of `channel` until its
   * subscribe is answered. Call it when the connection joins: publications
   * reach a member from then on, and must not overtake the reply and what
   * the reply replays. A second subscribe while the first is out holds what
   * comes from now on; the first keeps what it held. `joined`: the
   * subscribe made the connection a member ({@linkcode Recovery.joining}).
   */
  begin(connection: C, channel: string, joined = false): void {
    let byChannel = this.#pending.get(channel);
    if (!byChannel) this.#pending.set(channel, byChannel = new Map());
    const before = byChannel.get(connection);
    byChannel.set(connection, {
      held: [],
      overflowed: false,
      latest: undefined,
      stale: false,
      joined: joined || (before?.joined ?? false),
      awaitingCatchUp: false,
    });
  }

  /**
   * Answers a subscribe of `connection` to `channel`, once the worker's
   * subscription is in effect: with what the worker knows, or after a
   * history request; then sends what was held since {@linkcode Recovery.begin}
   * (called now if it was not). Resolves once the reply (and what follows
   * it) is sent; never rejects.
   */
  answer(connection: C, id: number, channel: string, since: SincePosition | undefined): Promise<void> {
    if (!this.#pending.get(channel)?.has(connection)) this.begin(connection, channel);
    const pending = this.#pending.get(channel)!.get(connection)!;
    // The worker is catching up on the channel: what it delivers meanwhile is held for this connection.
    const catchingUp = this.#settled?.(channel);
    pending.awaitingCatchUp = catchingUp !== null && catchingUp !== undefined;
    if (catchingUp) return catchingUp.then(() => this.answer(connection, id, channel, since));
    const reconnects = this.#bus.reconnects;
    if (this.#noHistory.get(channel) === reconnects) {
      const member = this.#release(connection, channel, pending);
      if (member === null) return Promise.resolve();
      connection.socket.send(since ? subscribeResultFrame(id, { recovered: false, position: null }) : resultFrame(id));
      if (member) this.#sendHeld(connection, pending, null);
      return Promise.resolve();
    }
    const known = this.#known.get(channel);
    if (!since && known?.reconnects === reconnects) {
      const member = this.#release(connection, channel, pending);
      if (member === null) return Promise.resolve();
      const position = pending.overflowed ? newer(known.position, pending.latest)! : known.position;
      if (member) this.#onTold?.(channel, position);
      connection.socket.send(subscribeResultFrame(id, { recovered: false, position }));
      if (member && !pending.overflowed) this.#sendHeld(connection, pending, position);
      return Promise.resolve();
    }
    const limit = since ? this.maxRecoverMessages : 0;
    return this.#bus.history(channelSubject(channel), since ? { since, limit } : { limit }).then(
      (history) => {
        const member = this.#release(connection, channel, pending);
        if (history.position.epoch === "") {
          this.#rememberNoHistory(channel);
          if (member === null) return;
          connection.socket.send(
            since ? subscribeResultFrame(id, { recovered: false, position: null }) : resultFrame(id),
          );
          if (member) this.#sendHeld(connection, pending, null);
          return;
        }
        if (!pending.stale) this.#learn(channel, history.position, reconnects);
        if (member === null) return;
        const recovered = member && since !== undefined && history.recovered && !pending.overflowed;
        // Over the bound, the client starts over from the newest publication it will not get.
        const position = pending.overflowed ? newer(history.position, pending.latest)! : history.position;
        if (member) this.#onTold?.(channel, position);
        connection.socket.send(subscribeResultFrame(id, { recovered, position }));
        if (!member) return;
        if (recovered) this.#replay(connection, channel, history.messages);
        if (!pending.overflowed) this.#sendHeld(connection, pending, position);
      },
      (error) => {
        const member = this.#release(connection, channel, pending);
        // A bus that refuses a plain read keeps no history (the hub's client before it speaks history); one that
        // refuses a `since` refuses this client's position, not the channel's history.
        if (error instanceof BusError && error.code === "refused" && since === undefined) {
          this.#rememberNoHistory(channel);
        } else {
          this.#logger.warn("could not read a channel's history", { channel, error: (error as Error).message });
        }
        if (member === null) return;
        if (member && !this.#noHistory.has(channel)) this.#onUnplaced?.(channel, reconnects);
        connection.socket.send(
          since ? subscribeResultFrame(id, { recovered: false, position: null }) : resultFrame(id),
        );
        if (member && !pending.overflowed) this.#sendHeld(connection, pending, null);
      },
    );
  }

  /**
   * Ends a recovery. Returns whether its connection is still a member of
   * the channel (false: it left meanwhile, and gets only its reply), or null
   * when it closed (nothing to send).
   */
  #release(connection: C, channel: string, pending: Pending): boolean | null {
    const byChannel = this.#pending.get(channel);
    if (byChannel?.get(connection) === pending) {
      byChannel.delete(connection);
      if (byChannel.size === 0) this.#pending.delete(channel);
    }
    if (!this.#isOpen(connection)) return null;
    return this.#isMember(connection, channel);
  }

  /** The missed publications, each as a channel frame with its position. */
  #replay(connection: C, channel: string, messages: readonly { data: Json; position: Position }[]): void {
    for (const { data, position } of messages) {
      const event = toChannelEvent(data);
      if (!event || event.channel !== channel) continue;
      if ("exclude" in event && excludes(event.exclude, this.#workerId, connection.id)) continue;
      connection.socket.send(channelFrame(event, position));
    }
  }

  /** What was held, but for what `covered` (the reply's position, or the replay up to it) already gave the client. */
  #sendHeld(connection: C, pending: Pending, covered: Position | null): void {
    for (const { position, message } of pending.held) {
      if (covered && position && position.epoch === covered.epoch && position.offset <= covered.offset) continue;
      connection.socket.send(message);
    }
  }

  #learn(channel: string, position: Position, reconnects: number): void {
    if (reconnects !== this.#bus.reconnects) return;
    const known = this.#known.get(channel);
    this.#known.set(channel, { position: newer(known?.position, position)!, reconnects });
  }

  #rememberNoHistory(channel: string): void {
    this.#known.delete(channel);
    if (this.#noHistory.size >= this.#maxNoHistory && !this.#noHistory.has(channel)) {
      // The oldest goes: a channel forgotten costs one more history request.
      this.#noHistory.delete(this.#noHistory.keys().next().value!);
    }
    this.#noHistory.set(channel, this.#bus.reconnects);
  }
}

/** The later of two positions: `b` when the epochs differ (the newer history wins). */
function newer(a: Position | undefined, b: Position | undefined): Position | undefined {
  if (!a) return b;
  if (!b) return a;
  return a.epoch !== b.epoch || b.offset > a.offset ? b : a;
}

function excludes(exclude: Exclude | undefined, workerId: string, connectionId: number): boolean {
  return exclude?.worker_id === workerId && exclude.connection_id === connectionId;
}
