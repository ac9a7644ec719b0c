/**
 * Channel membership in one pusher worker: the members of each channel, the
 * channels of each connection, the limits on both, and the worker's interest
 * in a channel's subject, which starts with its first local member and ends
 * with its last.
 *
 * @module
 */

/** What membership needs of a connection. */
export interface Member {
  /** Its id within the worker. */
  readonly id: number;
  /** Its channels, kept by {@linkcode ChannelMembership}; null until it joins one. */
  channels: Set<string> | null;
}

/** Options for {@linkcode ChannelMembership}. */
export interface ChannelMembershipOptions {
  /** Channels one connection may be a member of. @default {128} */
  maxPerConnection?: number;
  /** Distinct channels the worker may have members of. @default {100000} */
  maxPerWorker?: number;
  /** Called when a channel gets its first member in this worker: subscribe to its subject. */
  onFirst?(channel: string): void;
  /** Called when a channel loses its last member in this worker: unsubscribe from its subject. */
  onLast?(channel: string): void;
}

/**
 * What {@linkcode ChannelMembership.join} did: `joined`; `member` (it was
 * one already: nothing changed); or refused over a limit.
 */
export type JoinOutcome = "joined" | "member" | "connection_limit" | "worker_limit";

/** The default of {@linkcode ChannelMembershipOptions.maxPerConnection}. */
export const DEFAULT_MAX_CHANNELS_PER_CONNECTION = 128;
/** The default of {@linkcode ChannelMembershipOptions.maxPerWorker}. */
export const DEFAULT_MAX_CHANNELS_PER_WORKER = 100_000;

/**
 * Channels and their members.
 *
 * @example
 * ```ts
 * import { ChannelMembership } from "./channels.ts";
 *
 * const membership = new ChannelMembership({ onFirst: (c) => console.log("subscribe", c) });
 * const connection = { id: 1, channels: null };
 * membership.join(connection, "news"); // "joined", and logs "subscribe news"
 * membership.members("news").size; // 1
 * ```
 */
export class ChannelMembership<C extends Member = Member> {
  /** Channels one connection may be a member of. */
  readonly maxPerConnection: number;
  /** Distinct channels this worker may have members of. */
  readonly maxPerWorker: number;
  readonly #members = new Map<string, Set<C>>();
  readonly #onFirst: (channel: string) => void;
  readonly #onLast: (channel: string) => void;

  constructor(options: ChannelMembershipOptions = {}) {
    this.maxPerConnection = options.maxPerConnection ?? DEFAULT_MAX_CHANNELS_PER_CONNECTION;
    this.maxPerWorker = options.maxPerWorker ?? DEFAULT_MAX_CHANNELS_PER_WORKER;
    this.#onFirst = options.onFirst ?? (() => {});
    this.#onLast = options.onLast ?? (() => {});
  }

  /** Distinct channels with at least one member. */
  get size(): number {
    return this.#members.size;
  }

  /** The channels with at least one member. */
  channels(): Iterable<string> {
    return this.#members.keys();
  }

  /** Makes `connection` a member of `channel`, within the limits. */
  join(connection: C, channel: string): JoinOutcome {
    if (connection.channels?.has(channel)) return "member";
    if ((connection.channels?.size ?? 0) >= this.maxPerConnection) return "connection_limit";
    let members = this.#members.get(channel);
    if (!members) {
      if (this.#members.size >= this.maxPerWorker) return "worker_limit";
      this.#members.set(channel, members = new Set());
      this.#onFirst(channel);
    }
    members.add(connection);
    (connection.channels ??= new Set()).add(channel);
    return "joined";
  }

  /** Takes `connection` out of `channel`; false if it was not a member. */
  leave(connection: C, channel: string): boolean {
    if (!connection.channels?.delete(channel)) return false;
    if (connection.channels.size === 0) connection.channels = null;
    this.#drop(connection, channel);
    return true;
  }

  /** Takes `connection` out of every channel (it closed); returns the channels it left. */
  leaveAll(connection: C): string[] {
    const channels = connection.channels;
    if (!channels) return [];
    connection.channels = null;
    for (const channel of channels) this.#drop(connection, channel);
    return [...channels];
  }

  /** The members of `channel` in this worker. */
  members(channel: string): ReadonlySet<C> {
    return this.#members.get(channel) ?? EMPTY;
  }

  /** Whether `connection` is a member of `channel`. */
  has(connection: C, channel: string): boolean {
    return connection.channels?.has(channel) ?? false;
  }

  #drop(connection: C, channel: string): void {
    const members = this.#members.get(channel);
    if (!members) return;
    members.delete(connection);
    if (members.size > 0) return;
    this.#members.delete(channel);
    this.#onLast(channel);
  }
}

const EMPTY: ReadonlySet<never> = new Set();
