/**
 * Push addressing: who a push goes to, and where on the bus that is:
 * everyone, one connection named by the original's pair `(to_worker_id,
 * to_connection_id)`, the members of a channel, or the connections of a user.
 *
 * A pusher worker subscribes to {@linkcode BROADCAST_SUBJECT}, to its own
 * {@linkcode workerSubject} and to {@linkcode PRESENCE_SUBJECT}; to a
 * {@linkcode channelSubject} only while it has a member of that channel, and
 * to a {@linkcode userSubject} only while it has a connection of that user.
 *
 * A publisher turns an address into a subject and event data with
 * {@linkcode routeOf} (the original's text pushes, and the GET API's
 * `channel=` and `to_user=`), {@linkcode publishRoute} (the JSON API's
 * publishes) or {@linkcode commandRoute} (server-side commands), and asks
 * for presence with {@linkcode presenceQuery}. The data shapes, and the
 * checks a receiver runs on them (`to...` functions: null when the shape is
 * wrong), are here too, so that both sides agree on them.
 *
 * Pure TypeScript: no `Deno.*` calls.
 *
 * @module
 */

import type { Json } from "./json.ts";
import { type Bus, lastMessages, type Position } from "./bus.ts";
import { MAX_SUBJECT_LENGTH as MAX_HUB_SUBJECT_LENGTH } from "./wire.ts";

/** Every connection on every pusher: the original's `?content=`. */
export interface EveryoneAddress {
  readonly kind: "everyone";
}

/** One connection: the original's `?to_worker_id=&to_connection_id=`. */
export interface ConnectionAddress {
  readonly kind: "connection";
  readonly workerId: string;
  readonly connectionId: number;
}

/** Every member of a channel, on every pusher. */
export interface ChannelAddress {
  readonly kind: "channel";
  readonly channel: string;
}

/** Every connection of a user (a token's `sub`), on every pusher. */
export interface UserAddress {
  readonly kind: "user";
  readonly user: string;
}

/** Who a push goes to. */
export type PushAddress = EveryoneAddress | ConnectionAddress | ChannelAddress | UserAddress;

/** Subject every pusher worker subscribes to; its events go to every connection. */
export const BROADCAST_SUBJECT = "broadcast";

/** Subject every pusher worker subscribes to for presence requests ({@linkcode PresenceQuery}). */
export const PRESENCE_SUBJECT = "presence";

/**
 * Subject pusher workers started with `--connection-events` tell every
 * connection's start and end on ({@linkcode ConnectionEvent}), for backends:
 * the publisher's `GET /api/events` streams them, and a backend on NATS or
 * Redis may subscribe to it itself.
 */
export const CONNECTIONS_SUBJECT = "connections";

/** Who a {@linkcode ConnectionEvent} is about: its address, and its token's `sub` (null without a token). */
export interface ConnectionInfo {
  readonly worker_id: string;
  readonly connection_id: number;
  readonly user: string | null;
}

/**
 * A connection was greeted (`connect`), or ended (`disconnect`, with its
 * close code and the reason the pusher counts it under in
 * `pusher_disconnects_total`: `client_closed`, `dropped`, `expired`, ...).
 */
export type ConnectionEvent =
  | { readonly connect: ConnectionInfo }
  | { readonly disconnect: ConnectionInfo & { readonly code: number; readonly reason: string } };

/**
 * `data` as a {@linkcode ConnectionEvent}, or null when it is not one: the
 * subject is open to any publisher, so what comes on it is checked before it
 * is passed on.
 */
export function toConnectionEvent(data: Json): ConnectionEvent | null {
  if (!isObject(data)) return null;
  const keys = Object.keys(data);
  if (keys.length !== 1) return null;
  const kind = keys[0];
  const body = data[kind!];
  if ((kind !== "connect" && kind !== "disconnect") || !isObject(body)) return null;
  const { worker_id, connection_id, user } = body;
  if (typeof worker_id !== "string" || !WORKER_ID_PATTERN.test(worker_id)) return null;
  if (!Number.isSafeInteger(connection_id) || (connection_id as number) < 1) return null;
  if (user !== null && (typeof user !== "string" || user.length > MAX_CARRIED_USER_LENGTH)) return null;
  const info = { worker_id, connection_id: connection_id as number, user: user as string | null };
  if (kind === "connect") return { connect: info };
  const { code, reason } = body;
  if (!Number.isSafeInteger(code) || typeof reason !== "string" || reason.length > 64) return null;
  return { disconnect: { ...info, code: code as number, reason } };
}

/**
 * A worker id: 16 lowercase hex characters (64 random bits), drawn anew each
 * time a pusher worker starts. Ids are never coordinated, never reused, and
 * collide with negligible probability, so an address `(workerId,
 * connectionId)` names one connection in the whole system, across machines
 * and restarts.
 */
export const WORKER_ID_PATTERN = /^[0-9a-f]{16}$/;

/**
 * A connection id within one worker: a decimal integer from 1, at most 15
 * digits, so that it stays below `Number.MAX_SAFE_INTEGER` in JSON.
 */
export const CONNECTION_ID_PATTERN = /^[1-9][0-9]{0,14}$/;

/**
 * The characters of a channel name: letters, digits and `_-.:@/=`, at least
 * one. The length is checked apart ({@linkcode channelNameError}).
 */
export const CHANNEL_NAME_PATTERN = /^[A-Za-z0-9_\-.:@/=]+$/;

/** Longest subject the bus carries (the hub's limit on names). */
export const MAX_SUBJECT_LENGTH: number = MAX_HUB_SUBJECT_LENGTH;

const CHANNEL_PREFIX = "channel.";
const USER_PREFIX = "user.";

/**
 * Longest channel name whose subject (`channel.<name>`) the bus carries:
 * {@linkcode MAX_SUBJECT_LENGTH} less the prefix. It caps any configured
 * maximum length.
 */
export const MAX_CARRIED_CHANNEL_LENGTH: number = MAX_SUBJECT_LENGTH - CHANNEL_PREFIX.length;

/** Longest channel name, in characters, unless configured lower: the longest the bus carries. */
export const DEFAULT_MAX_CHANNEL_LENGTH: number = MAX_CARRIED_CHANNEL_LENGTH;

/** Longest user id whose subject (`user.<id>`) the bus carries. */
export const MAX_CARRIED_USER_LENGTH: number = MAX_SUBJECT_LENGTH - USER_PREFIX.length;

/**
 * Why `name` is not a valid channel name, or null when it is: a string of
 * 1 to `maxLength` characters of {@linkcode CHANNEL_NAME_PATTERN}, and short
 * enough for its subject to fit the bus ({@linkcode MAX_CARRIED_CHANNEL_LENGTH}).
 *
 * @param maxLength Longest name allowed. @default {DEFAULT_MAX_CHANNEL_LENGTH}
 *
 * @example
 * ```ts
 * import { channelNameError } from "./address.ts";
 *
 * channelNameError("news"); // null
 * channelNameError("a b"); // "Invalid channel name: only letters, digits and _-.:@/= are allowed"
 * ```
 */
export function channelNameError(name: unknown, maxLength: number = DEFAULT_MAX_CHANNEL_LENGTH): string | null {
  if (typeof name !== "string") return `Invalid channel name: expected a string, got ${describeJson(name)}`;
  if (name === "") return "Invalid channel name: empty";
  const limit = Math.min(maxLength, MAX_CARRIED_CHANNEL_LENGTH);
  if (name.length > limit) return `Invalid channel name: ${name.length} characters, over the limit of ${limit}`;
  if (!CHANNEL_NAME_PATTERN.test(name)) {
    return "Invalid channel name: only letters, digits and _-.:@/= are allowed";
  }
  return null;
}

/** Draws a fresh worker id. */
export function newWorkerId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return bytes.toHex();
}

/** The subject a worker subscribes to for sends addressed to its connections. */
export function workerSubject(workerId: string): string {
  return `worker.${workerId}`;
}

/** The subject of a channel's publications: `channel.<name>`. */
export function channelSubject(channel: string): string {
  return CHANNEL_PREFIX + channel;
}

/** The subject of a user's publishes and commands: `user.<id>`. */
export function userSubject(user: string): string {
  return USER_PREFIX + user;
}

/** The channel of a {@linkcode channelSubject}, or null for another subject. */
export function channelOfSubject(subject: string): string | null {
  return subject.startsWith(CHANNEL_PREFIX) ? subject.slice(CHANNEL_PREFIX.length) : null;
}

/** The user of a {@linkcode userSubject}, or null for another subject. */
export function userOfSubject(subject: string): string | null {
  return subject.startsWith(USER_PREFIX) ? subject.slice(USER_PREFIX.length) : null;
}

// The data shapes below are type aliases, not interfaces: an alias of an
// object type is assignable to Json, so a route's data goes to Bus.publish as it is.

/**
 * Data of a push event. On the broadcast subject: `{ content }`. On a
 * worker's subject: `{ to_connection_id, content }` (the original's field
 * names).
 */
export type PushData = {
  content: string;
  to_connection_id?: number;
};

/** One connection a publish skips: the worker with `worker_id` does not send it to `connection_id`. */
export type Exclude = {
  worker_id: string;
  connection_id: number;
};

/**
 * A JSON-API publish on the broadcast or a user's subject, or to one
 * connection on its worker's subject (with `to_connection_id`). A browser
 * gets `data` as is when it is a string, else `JSON.stringify(data)`.
 */
export type DataPush = {
  data: Json;
  exclude?: Exclude;
  to_connection_id?: number;
};

/** Who joined or left a presence channel. */
export type PresenceMember = {
  /** The connection's user; null without a token. */
  user: string | null;
  worker_id: string;
  connection_id: number;
};

/**
 * What goes on a channel's subject: a publication (`data`), or a presence
 * event (`join` or `leave`) on a presence channel. A member gets
 * `{"channel":name,"data":data}` (or `"join"`/`"leave"` in place of `"data"`).
 */
export type ChannelEvent =
  | { channel: string; data: Json; exclude?: Exclude }
  | { channel: string; join: PresenceMember }
  | { channel: string; leave: PresenceMember };

/** Close codes a `disconnect` command may use: 1000, 3000-3999 and 4000-4999. */
export function isDisconnectCode(code: number): boolean {
  return code === 1000 || (Number.isInteger(code) && code >= 3000 && code <= 4999);
}

/** A `disconnect` command's code and reason when it names none. */
export const DEFAULT_DISCONNECT = { code: 4000, reason: "disconnected by the server" } as const;

/** Longest close reason, in UTF-8 bytes (RFC 6455: 125 less the code's 2). */
export const MAX_CLOSE_REASON_BYTES = 123;

/**
 * A server-side command, to one connection (on its worker's subject, with
 * `to_connection_id`) or to every connection of a user (on the user's
 * subject). Sent with `Bus.request`; the answer is a {@linkcode CommandReply}
 * from a worker subject, a {@linkcode UserCommandReply} from a user's.
 */
export type Command =
  | { cmd: "subscribe"; channel: string; to_connection_id?: number }
  | { cmd: "unsubscribe"; channel: string; to_connection_id?: number }
  | { cmd: "disconnect"; code?: number; reason?: string; to_connection_id?: number };

/** A worker's answer to a command for one of its connections. */
export type CommandReply = { ok: true } | { ok: false; error: string };

/** A worker's answer to a command for a user: to how many of the user's connections it applied it. */
export type UserCommandReply = {
  connections: number;
};

/** A presence request, on {@linkcode PRESENCE_SUBJECT}. */
export type PresenceQuery =
  /** Members of a channel: answered with a {@linkcode ChannelPresence}. */
  | { q: "channel"; channel: string }
  /**
   * Connections of a user: answered with a {@linkcode UserPresence}; with
   * `before`, only those opened before that connection (a pusher's
   * per-user connection limit asks so).
   */
  | { q: "user"; user: string; before?: OpenedAt }
  /**
   * A worker's counts: answered with a {@linkcode WorkerInfo}; with
   * `counters: true` (the publisher's dashboard asks so), its
   * `deliveries` and `slow_closes` counters too.
   */
  | { q: "info"; counters?: boolean }
  /**
   * Channels with members whose names match `pattern` (a name, or
   * `prefix*`; `*` for all): answered with a {@linkcode ChannelList} of at
   * most `limit`, the first by name.
   */
  | { q: "channels"; pattern: string; limit: number };

/** One worker's members of a channel. */
export type ChannelPresence = {
  /** Its connections subscribed to the channel. */
  clients: number;
  /** Their distinct users, at most the worker's `maxPresenceUsers`. */
  users: string[];
  /** Present and true when `users` was cut at the limit. */
  truncated?: boolean;
};

/**
 * One worker's channels for a `channels` query: `[name, members]` pairs in
 * name order, the first `limit` of those that match.
 */
export type ChannelList = {
  channels: [string, number][];
  /** Present and true when more channels matched than were listed. */
  truncated?: boolean;
};

/** A channel's presence over every worker that answered: see {@linkcode mergeChannelPresence}. */
export type MergedChannelPresence = {
  num_clients: number;
  num_users: number;
  users?: string[];
  users_truncated?: true;
};

/** One worker's connections of a user. */
export type UserPresence = {
  connections: number;
};

/**
 * When and where a connection opened, which orders a user's connections
 * across every pusher: by `at`, then `worker_id`, then `connection_id`.
 */
export type OpenedAt = {
  /** Milliseconds since the epoch. */
  at: number;
  worker_id: string;
  connection_id: number;
};

/** Whether a connection opened at `a` opened before one opened at `b`, by {@linkcode OpenedAt}'s order. */
export function openedBefore(a: OpenedAt, b: OpenedAt): boolean {
  if (a.at !== b.at) return a.at < b.at;
  if (a.worker_id !== b.worker_id) return a.worker_id < b.worker_id;
  return a.connection_id < b.connection_id;
}

/** One worker's counts. */
export type WorkerInfo = {
  worker_id: string;
  /** Open connections. */
  connections: number;
  /** Distinct users among them. */
  users: number;
  /** Distinct channels with at least one of its connections as a member. */
  channels: number;
  /** Messages it handed to sockets since it started; only when the query asked for `counters`. */
  deliveries?: number;
  /** Connections it closed as slow consumers (close code 3008) since it started; only with `counters`. */
  slow_closes?: number;
};

/** A worker's answer to a presence request it could not read. */
export type PresenceError = {
  error: string;
};

/** Where on the bus a push goes: a subject and the event's data. */
export interface Route<D = PushData> {
  readonly subject: string;
  readonly data: D;
}

/**
 * The subject and data that carry `content` to `address`. For everyone and
 * for a connection: the original's `{ content }` and
 * `{ to_connection_id, content }`, delivered as plain text. For a channel:
 * a publication whose `data` is `content`; for a user: `{ data: content }`
 * (the GET API's `channel=` and `to_user=`).
 *
 * @example
 * ```ts
 * import { routeOf } from "./address.ts";
 *
 * const route = routeOf({ kind: "connection", workerId: "1f3a9c2e7b4d0a55", connectionId: 7 }, "hi");
 * // { subject: "worker.1f3a9c2e7b4d0a55", data: { to_connection_id: 7, content: "hi" } }
 * ```
 */
export function routeOf(address: EveryoneAddress | ConnectionAddress, content: string): Route<PushData>;
export function routeOf(address: PushAddress, content: string): Route<PushData | DataPush | ChannelEvent>;
export function routeOf(address: PushAddress, content: string): Route<PushData | DataPush | ChannelEvent> {
  switch (address.kind) {
    case "everyone":
      return { subject: BROADCAST_SUBJECT, data: { content } };
    case "connection":
      return { subject: workerSubject(address.workerId), data: { to_connection_id: address.connectionId, content } };
    default:
      return publishRoute(address, content);
  }
}

/**
 * The subject and data of a JSON-API publish of `data` to `address`,
 * skipping the connection `exclude` (ignored for a connection address: it
 * would skip the only one).
 *
 * @example
 * ```ts
 * import { publishRoute } from "./address.ts";
 *
 * publishRoute({ kind: "channel", channel: "news" }, { title: "hi" });
 * // { subject: "channel.news", data: { channel: "news", data: { title: "hi" } } }
 * ```
 */
export function publishRoute(address: PushAddress, data: Json, exclude?: Exclude): Route<DataPush | ChannelEvent> {
  const skip = exclude === undefined ? {} : { exclude };
  switch (address.kind) {
    case "everyone":
      return { subject: BROADCAST_SUBJECT, data: { data, ...skip } };
    case "connection":
      return { subject: workerSubject(address.workerId), data: { to_connection_id: address.connectionId, data } };
    case "channel":
      return { subject: channelSubject(address.channel), data: { channel: address.channel, data, ...skip } };
    case "user":
      return { subject: userSubject(address.user), data: { data, ...skip } };
  }
}

/** A command without its target: what {@linkcode commandRoute} addresses. */
export type CommandBody =
  | { cmd: "subscribe"; channel: string }
  | { cmd: "unsubscribe"; channel: string }
  | { cmd: "disconnect"; code?: number; reason?: string };

/**
 * The subject and data of a server-side command to one connection or to a
 * user's connections. Send it with `Bus.request`: workers answer on the
 * request's reply subject ({@linkcode toCommandReply},
 * {@linkcode toUserCommandReply}).
 *
 * @example
 * ```ts
 * import { commandRoute } from "./address.ts";
 *
 * commandRoute({ kind: "user", user: "alice" }, { cmd: "subscribe", channel: "news" });
 * // { subject: "user.alice", data: { cmd: "subscribe", channel: "news" } }
 * ```
 */
export function commandRoute(address: ConnectionAddress | UserAddress, command: CommandBody): Route<Command> {
  if (address.kind === "user") return { subject: userSubject(address.user), data: { ...command } };
  return { subject: workerSubject(address.workerId), data: { ...command, to_connection_id: address.connectionId } };
}

/** The subject and data of a presence request: send it with `Bus.request`. */
export function presenceQuery(query: PresenceQuery): Route<PresenceQuery> {
  return { subject: PRESENCE_SUBJECT, data: query };
}

/**
 * Checks event data received by a pusher. Returns null when it does not have
 * the shape of {@linkcode PushData}: such events are logged and dropped.
 */
export function toPushData(data: Json): PushData | null {
  if (typeof data !== "object" || data === null || Array.isArray(data)) return null;
  if (typeof data.content !== "string") return null;
  const target = data.to_connection_id;
  if (target === undefined) return { content: data.content };
  if (typeof target !== "number" || !Number.isSafeInteger(target) || target < 1) return null;
  return { content: data.content, to_connection_id: target };
}

/**
 * Checks a {@linkcode DataPush}: `data` present, `exclude` and
 * `to_connection_id` well formed when present. Null otherwise.
 */
export function toDataPush(data: Json): DataPush | null {
  if (!isObject(data) || !("data" in data)) return null;
  const push: DataPush = { data: data.data! };
  if (data.exclude !== undefined) {
    const exclude = toExclude(data.exclude);
    if (!exclude) return null;
    push.exclude = exclude;
  }
  if (data.to_connection_id !== undefined) {
    if (!isConnectionId(data.to_connection_id)) return null;
    push.to_connection_id = data.to_connection_id;
  }
  return push;
}

/** A channel's history as the server API and the browser read it; see {@linkcode readChannelHistory}. */
export type ChannelHistory = {
  /** Oldest first; newest first with `reverse`. */
  publications: { data: Json; offset: number }[];
  /** The channel's top position when it was read. */
  offset: number;
  epoch: string;
  /** As the bus's history answer says it (`Bus.history`), or with `reverse` whether every offset of the window was still kept. */
  recovered: boolean;
};

/**
 * Reads a channel's history: forward from `since` (from the oldest kept
 * without it), or with `reverse` the last `limit`, newest first; at most
 * `limit`. Only its publications: a channel's subject carries presence
 * events too. Null for a channel whose history the bus does not keep (it
 * answers an empty epoch); rejects as the bus does.
 */
export async function readChannelHistory(
  bus: Pick<Bus, "history">,
  channel: string,
  options: { limit: number; since?: Position; reverse?: boolean; timeout?: number },
): Promise<ChannelHistory | null> {
  const { limit, since, reverse, timeout } = options;
  const subject = channelSubject(channel);
  const kept = reverse ? await lastMessages(bus, subject, limit, timeout) : await bus.history(subject, {
    limit,
    ...(since === undefined ? {} : { since }),
    ...(timeout === undefined ? {} : { timeout }),
  });
  if (kept.position.epoch === "") return null;
  const publications: ChannelHistory["publications"] = [];
  for (const { data, position } of kept.messages) {
    const event = toChannelEvent(data);
    if (event !== null && "data" in event) publications.push({ data: event.data, offset: position.offset });
  }
  if (reverse) publications.reverse();
  return { publications, offset: kept.position.offset, epoch: kept.position.epoch, recovered: kept.recovered };
}

/** Checks a {@linkcode ChannelEvent}: `channel` a string, and one of `data`, `join` or `leave`. Null otherwise. */
export function toChannelEvent(data: Json): ChannelEvent | null {
  if (!isObject(data) || typeof data.channel !== "string") return null;
  const channel = data.channel;
  if ("data" in data) {
    if (data.exclude === undefined) return { channel, data: data.data! };
    const exclude = toExclude(data.exclude);
    return exclude ? { channel, data: data.data!, exclude } : null;
  }
  const join = data.join === undefined ? null : toPresenceMember(data.join);
  if (join) return { channel, join };
  const leave = data.leave === undefined ? null : toPresenceMember(data.leave);
  return leave ? { channel, leave } : null;
}

/**
 * Checks a {@linkcode Command}. Returns the command, or why it is not one
 * (a string, for the reply); null when the data has no `cmd` at all (not a
 * command).
 */
export function toCommand(data: Json): Command | string | null {
  if (!isObject(data) || data.cmd === undefined) return null;
  const target = data.to_connection_id;
  if (target !== undefined && !isConnectionId(target)) {
    return "Invalid command: to_connection_id must be a connection id";
  }
  const to = target === undefined ? {} : { to_connection_id: target };
  switch (data.cmd) {
    case "subscribe":
    case "unsubscribe":
      if (typeof data.channel !== "string") return `Invalid ${data.cmd} command: channel must be a string`;
      return { cmd: data.cmd, channel: data.channel, ...to };
    case "disconnect": {
      const { code, reason } = data;
      if (code !== undefined && (typeof code !== "number" || !isDisconnectCode(code))) {
        return "Invalid disconnect command: code must be 1000, 3000-3999 or 4000-4999";
      }
      if (reason !== undefined && typeof reason !== "string") {
        return "Invalid disconnect command: reason must be a string";
      }
      if (reason !== undefined && new TextEncoder().encode(reason).length > MAX_CLOSE_REASON_BYTES) {
        return `Invalid disconnect command: reason is over ${MAX_CLOSE_REASON_BYTES} bytes`;
      }
      return {
        cmd: "disconnect",
        ...(code === undefined ? {} : { code }),
        ...(reason === undefined ? {} : { reason }),
        ...to,
      };
    }
    default:
      return "Invalid command: cmd must be subscribe, unsubscribe or disconnect";
  }
}

/** Checks a {@linkcode PresenceQuery}; returns it, or why it is not one. */
export function toPresenceQuery(data: Json): PresenceQuery | string {
  if (!isObject(data)) return "Invalid presence query: expected an object";
  switch (data.q) {
    case "channel":
      return typeof data.channel === "string"
        ? { q: "channel", channel: data.channel }
        : "Invalid presence query: channel must be a string";
    case "user": {
      if (typeof data.user !== "string") return "Invalid presence query: user must be a string";
      if (data.before === undefined) return { q: "user", user: data.user };
      const before = toOpenedAt(data.before);
      return before
        ? { q: "user", user: data.user, before }
        : "Invalid presence query: before must be {at, worker_id, connection_id}";
    }
    case "info":
      return data.counters === true ? { q: "info", counters: true } : { q: "info" };
    case "channels":
      return typeof data.pattern === "string" && isCount(data.limit) && data.limit > 0
        ? { q: "channels", pattern: data.pattern, limit: data.limit }
        : "Invalid presence query: channels needs a pattern string and a positive limit";
    default:
      return "Invalid presence query: q must be channel, user, info or channels";
  }
}

/** Checks an {@linkcode OpenedAt}; null when it is not one. */
function toOpenedAt(data: Json | undefined): OpenedAt | null {
  if (!isObject(data)) return null;
  const { at, worker_id, connection_id } = data;
  if (typeof at !== "number" || !Number.isFinite(at) || typeof worker_id !== "string" || !isCount(connection_id)) {
    return null;
  }
  return { at, worker_id, connection_id };
}

/** Checks a worker's {@linkcode CommandReply}; null when it is not one. */
export function toCommandReply(data: Json): CommandReply | null {
  if (!isObject(data)) return null;
  if (data.ok === true) return { ok: true };
  if (data.ok === false && typeof data.error === "string") return { ok: false, error: data.error };
  return null;
}

/** Checks a worker's {@linkcode UserCommandReply} or {@linkcode UserPresence}; null when it is neither. */
export function toUserCommandReply(data: Json): UserCommandReply | null {
  return isObject(data) && isCount(data.connections) ? { connections: data.connections } : null;
}

/** Checks a worker's {@linkcode ChannelPresence}; null when it is not one. */
export function toChannelPresence(data: Json): ChannelPresence | null {
  if (!isObject(data) || !isCount(data.clients) || !Array.isArray(data.users)) return null;
  const users: string[] = [];
  for (const user of data.users) {
    if (typeof user !== "string") return null;
    users.push(user);
  }
  return data.truncated === true ? { clients: data.clients, users, truncated: true } : { clients: data.clients, users };
}

/**
 * A channel's presence summed over the workers' {@linkcode ChannelPresence}
 * replies: `num_clients`, `num_users` (the distinct users of their lists),
 * and with `listUsers` those users, sorted, at most `maxUsers`.
 * `users_truncated: true` says a list was cut (a worker's at its own limit,
 * or the union at `maxUsers`): `num_users` then counts only the users the
 * workers listed. Replies of another shape are skipped.
 */
export function mergeChannelPresence(
  replies: readonly Json[],
  maxUsers: number,
  listUsers: boolean,
): MergedChannelPresence {
  let clients = 0;
  let truncated = false;
  const users = new Set<string>();
  for (const reply of replies) {
    const presence = toChannelPresence(reply);
    if (!presence) continue;
    clients += presence.clients;
    if (presence.truncated) truncated = true;
    for (const user of presence.users) users.add(user);
  }
  const merged: MergedChannelPresence = { num_clients: clients, num_users: users.size };
  if (listUsers) {
    const listed = [...users].sort();
    if (listed.length > maxUsers) truncated = true;
    merged.users = listed.slice(0, maxUsers);
  }
  if (truncated) merged.users_truncated = true;
  return merged;
}

/** Checks a worker's {@linkcode ChannelList}; null when it is not one. */
export function toChannelList(data: Json): ChannelList | null {
  if (!isObject(data) || !Array.isArray(data.channels)) return null;
  const channels: [string, number][] = [];
  for (const entry of data.channels) {
    if (!Array.isArray(entry) || typeof entry[0] !== "string" || !isCount(entry[1])) return null;
    channels.push([entry[0], entry[1]]);
  }
  return data.truncated === true ? { channels, truncated: true } : { channels };
}

/** Checks a worker's {@linkcode WorkerInfo}; null when it is not one. */
export function toWorkerInfo(data: Json): WorkerInfo | null {
  if (!isObject(data) || typeof data.worker_id !== "string") return null;
  const { connections, users, channels } = data;
  if (!isCount(connections) || !isCount(users) || !isCount(channels)) return null;
  const info: WorkerInfo = { worker_id: data.worker_id, connections, users, channels };
  // Counters come only when asked for, and a worker from before them has none.
  if (isCount(data.deliveries)) info.deliveries = data.deliveries;
  if (isCount(data.slow_closes)) info.slow_closes = data.slow_closes;
  return info;
}

function toExclude(data: Json): Exclude | null {
  if (!isObject(data) || typeof data.worker_id !== "string" || !isConnectionId(data.connection_id)) return null;
  return { worker_id: data.worker_id, connection_id: data.connection_id };
}

function toPresenceMember(data: Json): PresenceMember | null {
  if (!isObject(data) || typeof data.worker_id !== "string" || !isConnectionId(data.connection_id)) return null;
  if (data.user !== null && typeof data.user !== "string") return null;
  return { user: data.user, worker_id: data.worker_id, connection_id: data.connection_id };
}

function isObject(data: unknown): data is { [key: string]: Json } {
  return typeof data === "object" && data !== null && !Array.isArray(data);
}

function isConnectionId(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 1;
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** A short description of a value's type, for messages: never the value itself. */
function describeJson(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
}
