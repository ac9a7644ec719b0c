/**
 * Types of the pusher's browser client, `client.js` beside this file (served
 * at `/client.js` and `/client.d.ts` by every pusher).
 *
 * @module
 */

/** Connection states of a {@linkcode PushClient}. */
export type ClientState = "disconnected" | "connecting" | "connected";

/** Subscription states. */
export type SubscriptionState = "subscribing" | "subscribed" | "unsubscribed";

/** Where a connection lives: send to it with `?to_worker_id=&to_connection_id=`. */
export interface Address {
  workerId: string;
  connectionId: number;
}

/**
 * A place in a channel's history: `offset` counts the channel's messages
 * (the first is 1; 0 before any), `epoch` names the history; a new epoch
 * means the history was lost and cannot be recovered from.
 */
export interface Position {
  offset: number;
  epoch: string;
}

/**
 * A channel publication: `{"channel":C,"data":D}` from the pusher, with
 * `"offset"` and `"epoch"` on a channel that keeps history.
 */
export interface Publication {
  channel: string;
  data: unknown;
  /** Its offset in the channel's history; only on a channel that keeps history. */
  offset?: number;
  /** The history's epoch; only on a channel that keeps history. */
  epoch?: string;
}

/** A channel's history, as {@linkcode Subscription.history} answers it. */
export interface HistoryResult {
  /** Oldest first; newest first with `reverse`. */
  publications: { data: unknown; offset: number }[];
  /** The channel's top position when the history was read: go on from it to miss nothing. */
  offset: number;
  epoch: string;
  /** Whether nothing was missing: after `since` everything, with `reverse` every offset of the window. */
  recovered: boolean;
}

/**
 * Who is in a presence channel, over every pusher worker, as
 * {@linkcode Subscription.presence} and {@linkcode Subscription.presenceStats}
 * answer it.
 */
export interface PresenceResult {
  /** Connections subscribed to the channel. */
  num_clients: number;
  /** Their distinct users (of the lists, when `users_truncated`). */
  num_users: number;
  /** The users, sorted; only from `presence()`. */
  users?: string[];
  /** A list was cut at the pusher's `--max-presence-users`. */
  users_truncated?: true;
  /** Some worker did not answer within the pusher's `--presence-timeout`: the counts miss its members. */
  partial?: true;
}

/**
 * What a (re)subscribe achieved: `recovered` true when everything published
 * since the last position seen was replayed (it follows the event), false
 * when the app should reload the channel's state, null for a channel
 * without history; `position` where the channel stands, as the pusher's
 * reply said (null when it said none).
 */
export interface Recovery {
  recovered: boolean | null;
  position: Position | null;
}

/** A presence event on a presence channel. */
export interface PresenceEvent {
  channel: string;
  /** What the pusher said: `{user, worker_id, connection_id}`. */
  info: unknown;
}

/** The minimal timer functions the client uses; injectable for tests. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
  /**
   * A monotonic clock in milliseconds, the one the timers wait on: it times
   * the message rate, a token's life and how long a connection stayed up.
   * @default {performance.now}
   */
  now?(): number;
}

/** Options for {@linkcode PushClient}. */
export interface PushClientOptions {
  /**
   * Client token, sent as `?token=` (browsers cannot set headers on a
   * WebSocket handshake). A function is called before every connection
   * attempt, and before the connection's token expires (a fifth of its time
   * left, at most a minute ahead), whose result is sent as a `refresh` so
   * that the connection outlives the token it was opened with. A fixed
   * string is used as it is: once it expires, the pusher closes the
   * connection (4401) and the client stops (an `error` event says why); a
   * handshake with a token already expired is closed with 4401 the same way.
   *
   * A token's time left is counted from when the client got it: `exp`
   * against the browser's clock, but never more than its lifetime
   * `exp - iat` when it has an `iat` claim, so that a browser whose clock is
   * behind renews it on time (one already past `exp` is taken to be ahead:
   * the lifetime counts); without `iat`, `exp` against the browser's clock.
   * Give tokens an `iat`, and have a token function hand out fresh ones.
   *
   * @default {none}
   */
  token?: string | (() => string | Promise<string>);
  /**
   * Ceiling of the first reconnect delay, in milliseconds; it doubles per
   * failed attempt, and starts over once a connection stayed up 5 s.
   * @default {250}
   */
  minReconnectDelay?: number;
  /**
   * Largest reconnect delay ceiling, in milliseconds, at most 2147483647. The
   * delay is random below the ceiling (full jitter). @default {10000}
   */
  maxReconnectDelay?: number;
  /**
   * How long to wait for the greeting after opening a socket before trying
   * again, in milliseconds: more than 0, at most 2147483647. @default {10000}
   */
  connectTimeout?: number;
  /**
   * Commands that may wait for a connection, and that may wait their turn
   * under `maxMessageRate` while connected; over it, `subscribe` throws a
   * RangeError and a read (`history`, `presence`, `presenceStats`) rejects
   * with one. The client's pings and token renewals go ahead of them.
   * @default {128}
   */
  maxQueuedCommands?: number;
  /**
   * Silence, in milliseconds, after which the client pings the pusher
   * (`{"id":N,"ping":{}}`): a dead connection (a laptop that slept, a
   * changed network) shows no close, and a browser sees none of the
   * server's WebSocket pings. Any message from the pusher resets it. 0 sends
   * no pings; at most 2147483647, the longest a browser's timer waits. @default {25000}
   */
  pingInterval?: number;
  /**
   * How long, in milliseconds, a ping may go unanswered (nothing at all
   * from the pusher) before the client drops the connection and reconnects,
   * with an `error` event and a `disconnected` one (code 4000, reason
   * `no answer to ping`). @default {10000}
   */
  pingTimeout?: number;
  /**
   * Commands a second the client sends at most, with a burst of as many;
   * more wait their turn (the resubscribes after a reconnect, say). A pusher
   * closes a connection over its `--max-message-rate` (50 a second, a burst
   * of 50) with `1008`: keep this at half of that or less, so that frames
   * the network delivers together stay under it. @default {25}
   */
  maxMessageRate?: number;
  /** The WebSocket class to use. @default {globalThis.WebSocket} */
  WebSocket?: typeof WebSocket;
  /** Source of randomness in [0, 1) for the jitter. @default {Math.random} */
  random?: () => number;
  /** Timer functions. @default {globalThis.setTimeout and clearTimeout} */
  timers?: Timers;
  /**
   * Where the browser says the network is back (an `online` event): a
   * reconnect waiting out its backoff is then made at once, and an open
   * connection pinged at once (unless `pingInterval` is 0).
   * @default {globalThis, when it is an EventTarget}
   */
  network?: Pick<EventTarget, "addEventListener" | "removeEventListener">;
}

/** What each {@linkcode PushClient} event carries as its detail. */
export interface PushClientEvents {
  state: { state: ClientState; previous: ClientState };
  connected: Address & { greeting: string };
  /**
   * The connection ended. `reconnecting` is false after a close code that
   * says not to come back (3500-3999, 4500-4999: 3504 `connection limit`, the
   * user has `--max-connections-per-user` connections open already) or
   * `disconnect()`; `delay` is the wait before the next attempt, in ms.
   */
  disconnected: { code: number; reason: string; reconnecting: boolean; delay: number | null };
  message: { data: string };
  publication: Publication;
  subscribed: { channel: string; subscription: Subscription } & Recovery;
  unsubscribed: { channel: string; subscription: Subscription };
  join: PresenceEvent;
  leave: PresenceEvent;
  error: { error: Error; channel?: string };
}

/** What each {@linkcode Subscription} event carries as its detail. */
export interface SubscriptionEvents {
  publication: Publication;
  state: { state: SubscriptionState; previous: SubscriptionState };
  subscribed: { channel: string } & Recovery;
  unsubscribed: { channel: string };
  join: PresenceEvent;
  leave: PresenceEvent;
  error: { error: Error };
}

/**
 * An error reply to a command, or an error the pusher pushed: `code` is the
 * protocol's (400, 403, 413, 422, 429).
 */
export class PushError extends Error {
  constructor(code: number, message: string);
  readonly code: number;
}

/** One channel of a {@linkcode PushClient}. */
export class Subscription extends EventTarget {
  private constructor(client: PushClient, channel: string, serverSide: boolean);
  readonly channel: string;
  readonly state: SubscriptionState;
  /** True when the server made it and the client did not ask: it ends with its connection. */
  readonly serverSide: boolean;
  /**
   * Whether the last (re)subscribe missed nothing (false also once a
   * publication showed the history was lost); null before the first reply
   * and on a channel without history.
   */
  readonly recovered: boolean | null;
  /** The last position seen, sent as `since` on the next subscribe; null on a channel without history. */
  readonly position: Position | null;
  /** Calls `listener` with each `type` event's detail; returns a function that removes it. */
  on<K extends keyof SubscriptionEvents>(type: K, listener: (detail: SubscriptionEvents[K]) => void): () => void;
  /**
   * Resolves once the server confirmed it; rejects with a {@linkcode PushError}
   * if refused (also when called after the refusal), when it is unsubscribed
   * first, or when the client stops (`disconnect()`, or a close after which
   * it does not reconnect); at once while the client is stopped (before
   * `connect()`, or after it stopped): it stays `subscribing` until the next
   * `connect()`.
   */
  ready(options?: { signal?: AbortSignal }): Promise<void>;
  /** Leaves the channel; it is not made again after a reconnect. */
  unsubscribe(): void;
  /**
   * The channel's history, which the pusher answers to its members: forward
   * from `since` (from the oldest kept without it), or with `reverse` the
   * last publications, newest first; at most `limit` (a positive integer)
   * and the pusher's cap. Rejects with a {@linkcode PushError}: 400 for a
   * bad `limit`, `since`, or `reverse` with `since`; 403 when not subscribed
   * yet, 404 for a channel without history, 429 with too many reads in
   * flight, 503 when the pusher could not read it; with an `Error` at once
   * while the client is stopped.
   */
  history(options?: { limit?: number; since?: Position; reverse?: boolean }): Promise<HistoryResult>;
  /**
   * Who is in this presence channel (`--presence-channels`), over every
   * pusher worker: connections, distinct users and the users. Rejects with
   * a {@linkcode PushError}: 403 when not subscribed yet or not a presence
   * channel, 429 with too many reads in flight, 503 when the pusher could
   * not ask; with an `Error` at once while the client is stopped.
   */
  presence(): Promise<PresenceResult>;
  /** As {@linkcode Subscription.presence}, without the list of users. */
  presenceStats(): Promise<PresenceResult>;
}

/**
 * A client of one pusher that reconnects by itself and makes its
 * subscriptions again on every new connection.
 *
 * @example
 * ```ts
 * import { PushClient } from "./client.js";
 *
 * const client = new PushClient("ws://127.0.0.1:4236");
 * client.on("message", ({ data }) => console.log(data));
 * client.subscribe("news", ({ data }) => console.log("news", data));
 * client.connect();
 * ```
 */
export class PushClient extends EventTarget {
  constructor(url: string | URL, options?: PushClientOptions);
  readonly state: ClientState;
  /** The last greeting's address; null before the first. */
  readonly address: Address | null;
  /** Subscriptions now, by channel (a copy). */
  readonly subscriptions: Map<string, Subscription>;
  subscription(channel: string): Subscription | null;
  /** Calls `listener` with each `type` event's detail; returns a function that removes it. */
  on<K extends keyof PushClientEvents>(type: K, listener: (detail: PushClientEvents[K]) => void): () => void;
  /**
   * Resolves with the address once connected; rejects when the client stops
   * first (`disconnect()`, or a close after which it does not reconnect), and
   * at once while it is stopped (before `connect()`, or after it stopped).
   */
  ready(options?: { signal?: AbortSignal }): Promise<Address>;
  /** Connects, and reconnects after a lost connection until {@linkcode PushClient.disconnect}. */
  connect(): void;
  /** Closes the connection and stops reconnecting; subscriptions stay for the next `connect()`. */
  disconnect(): void;
  /**
   * Subscribes to `channel` now, or as soon as connected, and again after
   * every reconnect.
   *
   * @throws {Error} when this client already subscribed to `channel`
   * @throws {RangeError} when `maxQueuedCommands` commands wait already (for the connection, or their turn)
   */
  subscribe(channel: string, handler?: (publication: Publication) => void): Subscription;
  [Symbol.dispose](): void;
}
