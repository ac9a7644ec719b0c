/**
 * Presence in one pusher worker: its answers to presence requests on the
 * bus (who is in a channel, how many connections a user has, the worker's
 * counts), and the join and leave events of operator-marked presence
 * channels. A publisher sums and unions the answers of every worker.
 *
 * @module
 */

import {
  type ChannelEvent,
  type ChannelList,
  type ChannelPresence,
  type OpenedAt,
  openedBefore,
  type PresenceQuery,
  type UserPresence,
  type WorkerInfo,
} from "../shared/address.ts";
import { channelMatcher } from "./channel_patterns.ts";

/** The default of {@linkcode PresenceOptions.maxPresenceUsers}. */
export const DEFAULT_MAX_PRESENCE_USERS = 1000;

/** A connection, as presence sees it. */
export interface PresenceConnection {
  readonly id: number;
  /** Its user; null without a token. */
  readonly user: string | null;
  /** When it opened, in milliseconds since the epoch. */
  readonly opened: number;
}

/** What presence reads of the worker. */
export interface PresenceSource<C extends PresenceConnection> {
  /** The worker's id. */
  readonly workerId: string;
  /** Members of a channel in this worker. */
  members(channel: string): ReadonlySet<C>;
  /** The channels with members in this worker. */
  channels(): Iterable<string>;
  /** Connections of a user in this worker. */
  ofUser(user: string): ReadonlySet<C>;
  /** Open connections, distinct users, distinct channels with members. */
  counts(): { connections: number; users: number; channels: number };
  /** Messages handed to sockets and slow-consumer closes since the worker started, for `info` with `counters`. */
  counters?(): { deliveries: number; slow_closes: number };
}

/** Options for {@linkcode Presence}. */
export interface PresenceOptions {
  /** Users listed in an answer about a channel; more are left out and the answer says `truncated`. @default {1000} */
  maxPresenceUsers?: number;
  /**
   * Channels whose members hear who joins and leaves: names and `prefix*`
   * patterns (`room.*`). @default {[]}
   */
  presenceChannels?: readonly string[];
}

/** One worker's presence answers and events. */
export class Presence<C extends PresenceConnection> {
  /** Users listed in an answer about a channel. */
  readonly maxPresenceUsers: number;
  /** Whether members of a channel hear joins and leaves. */
  readonly isPresenceChannel: (channel: string) => boolean;
  readonly #source: PresenceSource<C>;

  constructor(source: PresenceSource<C>, options: PresenceOptions = {}) {
    this.#source = source;
    this.maxPresenceUsers = options.maxPresenceUsers ?? DEFAULT_MAX_PRESENCE_USERS;
    const patterns = options.presenceChannels ?? [];
    this.isPresenceChannel = patterns.length === 0 ? () => false : channelMatcher(patterns);
  }

  /** This worker's answer to a presence request. */
  answer(query: PresenceQuery): ChannelPresence | UserPresence | WorkerInfo | ChannelList {
    switch (query.q) {
      case "channel":
        return this.#channel(query.channel);
      case "user":
        return { connections: this.#userConnections(query.user, query.before) };
      case "info": {
        const info: WorkerInfo = { worker_id: this.#source.workerId, ...this.#source.counts() };
        if (query.counters && this.#source.counters) Object.assign(info, this.#source.counters());
        return info;
      }
      case "channels":
        return this.#channels(query.pattern, query.limit);
    }
  }

  /** How many connections `user` has here, or how many of them opened before `before`. */
  #userConnections(user: string, before: OpenedAt | undefined): number {
    const connections = this.#source.ofUser(user);
    if (before === undefined) return connections.size;
    const workerId = this.#source.workerId;
    let count = 0;
    for (const c of connections) {
      if (openedBefore({ at: c.opened, worker_id: workerId, connection_id: c.id }, before)) count++;
    }
    return count;
  }

  /** The event members of a presence channel get when `connection` joins or leaves it. */
  event(kind: "join" | "leave", channel: string, connection: C): ChannelEvent {
    const member = { user: connection.user, worker_id: this.#source.workerId, connection_id: connection.id };
    return kind === "join" ? { channel, join: member } : { channel, leave: member };
  }

  /**
   * The first `limit` channels by name that match `pattern`, each with its
   * members here. First by name, so that a publisher merging every worker's
   * first `limit` has each of the first `limit` overall with all its counts.
   */
  #channels(pattern: string, limit: number): ChannelList {
    const matches = channelMatcher([pattern]);
    const first = new FirstNames(limit);
    for (const channel of this.#source.channels()) if (matches(channel)) first.offer(channel);
    const listed: [string, number][] = first.sorted().map((name) => [name, this.#source.members(name).size]);
    return first.offered > limit ? { channels: listed, truncated: true } : { channels: listed };
  }

  #channel(channel: string): ChannelPresence {
    const members = this.#source.members(channel);
    const users = new Set<string>();
    let truncated = false;
    for (const member of members) {
      if (member.user === null || users.has(member.user)) continue;
      if (users.size >= this.maxPresenceUsers) {
        truncated = true;
        break;
      }
      users.add(member.user);
    }
    const answer: ChannelPresence = { clients: members.size, users: [...users] };
    if (truncated) answer.truncated = true;
    return answer;
  }
}

/**
 * The first `limit` names in sort order among those offered, kept in a
 * max-heap: a worker with 100,000 channels lists its first 1000 without
 * sorting them all (the call holds its event loop meanwhile).
 */
class FirstNames {
  /** Offered so far. */
  offered = 0;
  readonly #limit: number;
  /** A max-heap: the greatest kept name at 0. */
  readonly #heap: string[] = [];

  constructor(limit: number) {
    this.#limit = limit;
  }

  offer(name: string): void {
    this.offered++;
    const heap = this.#heap;
    if (heap.length < this.#limit) {
      let i = heap.push(name) - 1;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (heap[parent]! >= name) break;
        heap[i] = heap[parent]!;
        i = parent;
      }
      heap[i] = name;
      return;
    }
    if (this.#limit === 0 || name >= heap[0]!) return;
    // Replaces the greatest, and sifts the new name down to its place.
    let i = 0;
    while (true) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && heap[right]! > heap[left]! ? right : left;
      if (heap[child]! <= name) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = name;
  }

  /** The names kept, in sort order. */
  sorted(): string[] {
    return [...this.#heap].sort();
  }
}
