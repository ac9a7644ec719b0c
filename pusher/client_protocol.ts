/**
 * The client JSON protocol: what a browser may send a pusher (one command
 * per text frame, `{"id":1,"subscribe":{"channel":"news"}}`, a `history`,
 * `presence` or `presence_stats` of a channel it is in, a `refresh` with
 * a new token, or a `ping` that asks whether the connection still carries
 * anything), and the frames
 * a pusher sends back (replies, errors, server-side subscription pushes).
 * Pure functions: the pusher applies the commands.
 *
 * @module
 */

import { channelNameError, type MergedChannelPresence } from "../shared/address.ts";
import { utf8Length } from "../shared/bytes.ts";
import { MAX_EPOCH_LENGTH } from "../shared/wire.ts";

/** Codes of the error objects in error frames (not close codes). */
export const ErrorCode = {
  /** Not JSON, not an object, unknown command, missing or bad id; or a bad parameter (`badParameter`). */
  malformed: 400,
  /** A refresh's token is not valid (bad signature, expired...). */
  unauthorized: 401,
  /**
   * The token does not allow the channel, a refresh's token is another
   * user's, a history or presence of a channel it is not in, or presence of
   * a channel that is not a presence channel.
   */
  forbidden: 403,
  /** A history of a channel whose history the bus does not keep. */
  notFound: 404,
  /** The message is over the pusher's command size. */
  tooLarge: 413,
  /** The channel name is not valid. */
  badChannel: 422,
  /** Too many channels for this connection, or for this worker. */
  tooManyChannels: 429,
  /** Too many history and presence reads of this connection in flight at once. */
  tooManyReads: 429,
  /** A history or presence the bus did not answer. */
  unavailable: 503,
} as const;

/** One of {@linkcode ErrorCode}'s values. */
export type ErrorCodeValue = typeof ErrorCode[keyof typeof ErrorCode];

/** Close code for a client that sent too many malformed messages in a row. */
export const TOO_MANY_BAD_MESSAGES = 4400;

/** Close reason that goes with {@linkcode TOO_MANY_BAD_MESSAGES}. */
export const TOO_MANY_BAD_MESSAGES_REASON = "too many bad messages";

/**
 * Close code for a connection whose token expired before the client sent a
 * new one (`refresh`). Not terminal: a client reconnects, with a new token.
 */
export const TOKEN_EXPIRED = 4401;

/** Close reason that goes with {@linkcode TOKEN_EXPIRED}. */
export const TOKEN_EXPIRED_REASON = "token expired";

/**
 * Close code for a connection past its user's connection limit (the pusher's
 * `maxConnectionsPerUser`): Centrifugo's `connection limit`. Terminal: a
 * client does not reconnect by itself.
 */
export const CONNECTION_LIMIT = 3504;

/** Close reason that goes with {@linkcode CONNECTION_LIMIT}. */
export const CONNECTION_LIMIT_REASON = "connection limit";

/**
 * Close code of a member of a history channel that missed publications the
 * channel's history no longer has (`catch_up.ts`): it reconnects, and its
 * resubscribe with `since` is told `recovered: false` (Centrifugo's 3010).
 */
export const INSUFFICIENT_STATE = 3010;

/** Close reason that goes with {@linkcode INSUFFICIENT_STATE}. */
export const INSUFFICIENT_STATE_REASON = "insufficient state";

/** The default of {@linkcode ClientProtocolOptions.maxCommandBytes}. */
export const DEFAULT_MAX_COMMAND_BYTES = 4096;

/** Where a client last was in a channel's history: `{offset, epoch}`, as the pusher's frames gave it. */
export interface SincePosition {
  readonly offset: number;
  readonly epoch: string;
}

/** A subscribe or unsubscribe a client sent. */
export interface ChannelCommand {
  /** The client's id for the command, echoed in the reply. */
  readonly id: number;
  readonly op: "subscribe" | "unsubscribe";
  readonly channel: string;
  /** A subscribe's `since`: recover what was published after this position. Absent when not asked. */
  readonly since?: SincePosition;
}

/** A client's new token for its connection, sent before the one it connected with expires. */
export interface RefreshCommand {
  readonly id: number;
  readonly op: "refresh";
  readonly token: string;
}

/**
 * A client's request for a channel's history: forward from `since` (or
 * from the oldest kept), or with `reverse` the last ones, newest first; at
 * most `limit` (the pusher caps it).
 */
export interface HistoryCommand {
  readonly id: number;
  readonly op: "history";
  readonly channel: string;
  readonly limit?: number;
  readonly since?: SincePosition;
  readonly reverse?: true;
}

/**
 * A client's question about a channel's members: `presence` (counts and
 * users, `listUsers` true) or `presence_stats` (counts only).
 */
export interface PresenceCommand {
  readonly id: number;
  readonly op: "presence";
  readonly channel: string;
  readonly listUsers: boolean;
}

/**
 * A client's question whether its connection still carries anything, after
 * a while of hearing nothing: answered with an empty result at once. A
 * browser cannot see the server's WebSocket pings, so the client library
 * asks this way, and reconnects when no answer comes.
 */
export interface PingCommand {
  readonly id: number;
  readonly op: "ping";
}

/** A command a client sent. */
export type ClientCommand = ChannelCommand | RefreshCommand | HistoryCommand | PresenceCommand | PingCommand;

/** What a subscribe's reply says of a channel's history; see {@linkcode subscribeResultFrame}. */
export interface SubscribeResult {
  /** Whether everything after the client's `since` follows the reply. */
  readonly recovered: boolean;
  /** Where the channel stands, or null when not known (a channel without history, a failed history request). */
  readonly position: SincePosition | null;
}

/** Why a client's message was refused, for its error frame. */
export interface ClientError {
  /** The command's id, when the message had a valid one. */
  readonly id: number | null;
  readonly code: ErrorCodeValue;
  readonly message: string;
  /**
   * A well-formed command with a bad parameter (a history's `limit`, a
   * `since`): answered 400 as the server API answers it, but not counted
   * toward the malformed messages that close a client with 4400, as an app's
   * argument is no broken client. @default {false}
   */
  readonly badParameter?: boolean;
}

/** The commands a client may send, one per message. */
const COMMANDS = ["subscribe", "unsubscribe", "refresh", "history", "presence", "presence_stats", "ping"] as const;

/** Options for {@linkcode parseClientMessage}. */
export interface ClientProtocolOptions {
  /**
   * Largest command, in UTF-8 bytes; larger is refused with 413. A command
   * is a few hundred bytes at most. @default {4096}
   */
  maxCommandBytes?: number;
  /** Longest channel name; longer is refused with 422. @default {248} */
  maxChannelLength?: number;
}

/**
 * Reads one message from a client: a command, or the error to answer it
 * with (400, 413 or 422).
 *
 * @example
 * ```ts
 * import { parseClientMessage } from "./client_protocol.ts";
 *
 * parseClientMessage('{"id":1,"subscribe":{"channel":"news"}}');
 * // { id: 1, op: "subscribe", channel: "news" }
 * ```
 */
export function parseClientMessage(
  message: string | Uint8Array,
  options: ClientProtocolOptions = {},
): ClientCommand | ClientError {
  const maxBytes = options.maxCommandBytes ?? DEFAULT_MAX_COMMAND_BYTES;
  if (typeof message !== "string") return malformed(null, "Malformed message: commands are JSON in text frames");
  // UTF-16 units never outnumber UTF-8 bytes, and a unit is at most 3 bytes:
  // only a message in between needs counting.
  if (message.length > maxBytes || (message.length * 3 > maxBytes && utf8Length(message) > maxBytes)) {
    return { id: null, code: ErrorCode.tooLarge, message: `Message too large: over ${maxBytes} bytes` };
  }
  let value: unknown;
  try {
    value = JSON.parse(message);
  } catch {
    return malformed(null, "Malformed message: not JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return malformed(null, "Malformed message: expected a JSON object");
  }
  const fields = value as Record<string, unknown>;
  const id = fields.id;
  if (!Number.isSafeInteger(id) || (id as number) < 1) {
    return malformed(null, "Malformed message: id must be a positive integer");
  }
  const ops = COMMANDS.filter((op) => fields[op] !== undefined);
  if (ops.length !== 1) {
    return malformed(
      id as number,
      "Malformed message: expected one command, subscribe, unsubscribe, history, presence, presence_stats, refresh or ping",
    );
  }
  const op = ops[0]!;
  const body = fields[op];
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return malformed(id as number, `Malformed message: ${op} must be an object`);
  }
  if (op === "ping") return { id: id as number, op };
  if (op === "refresh") {
    const token = (body as Record<string, unknown>).token;
    if (typeof token !== "string" || token === "") {
      return badParameter(id as number, "refresh.token must be a non-empty string");
    }
    return { id: id as number, op, token };
  }
  const channel = (body as Record<string, unknown>).channel;
  const error = channelNameError(channel, options.maxChannelLength);
  if (error !== null) return { id: id as number, code: ErrorCode.badChannel, message: error };
  const since = (body as Record<string, unknown>).since;
  if (op === "history") return historyCommand(id as number, channel as string, body as Record<string, unknown>);
  if (op === "presence" || op === "presence_stats") {
    return { id: id as number, op: "presence", channel: channel as string, listUsers: op === "presence" };
  }
  if (op === "subscribe" && since !== undefined) {
    const position = sinceError(since);
    if (typeof position === "string") return badParameter(id as number, position);
    return { id: id as number, op, channel: channel as string, since: position };
  }
  return { id: id as number, op, channel: channel as string };
}

/** A `history` command's `limit`, `since` and `reverse`, or why they are not right. */
function historyCommand(id: number, channel: string, body: Record<string, unknown>): HistoryCommand | ClientError {
  const { limit, since, reverse } = body;
  if (limit !== undefined && (!Number.isSafeInteger(limit) || (limit as number) < 1)) {
    return badParameter(id, "history.limit must be a positive integer");
  }
  if (reverse !== undefined && typeof reverse !== "boolean") {
    return badParameter(id, "history.reverse must be true or false");
  }
  let position: SincePosition | undefined;
  if (since !== undefined) {
    if (reverse === true) return badParameter(id, "history.reverse does not go with since");
    const read = sinceError(since);
    if (typeof read === "string") return badParameter(id, `history.${read}`);
    position = read;
  }
  return {
    id,
    op: "history",
    channel,
    ...(limit === undefined ? {} : { limit: limit as number }),
    ...(position === undefined ? {} : { since: position }),
    ...(reverse === true ? { reverse: true as const } : {}),
  };
}

/** `since` as a position, or why it is not one. */
function sinceError(since: unknown): SincePosition | string {
  if (typeof since !== "object" || since === null || Array.isArray(since)) return "since must be an object";
  const { offset, epoch } = since as Record<string, unknown>;
  // 0 is "before the first message": where a client of a channel not yet published to stands.
  if (!Number.isSafeInteger(offset) || (offset as number) < 0) return "since.offset must be an integer of 0 or more";
  if (typeof epoch !== "string") return "since.epoch must be a string";
  if (epoch.length > MAX_EPOCH_LENGTH) return `since.epoch is over ${MAX_EPOCH_LENGTH} characters`;
  return { offset: offset as number, epoch };
}

/** Whether a parse gave an error rather than a command. */
export function isClientError(parsed: ClientCommand | ClientError): parsed is ClientError {
  return "code" in parsed;
}

/** Whether an error counts toward the malformed messages that close a client with 4400. */
export function isMalformed(error: ClientError): boolean {
  return (error.code === ErrorCode.malformed && !error.badParameter) || error.code === ErrorCode.tooLarge;
}

/** A command's success: `{"id":N,"result":{}}`. */
export function resultFrame(id: number): string {
  return `{"id":${id},"result":{}}`;
}

/**
 * A subscribe's success on a channel that keeps history, or one the client
 * asked to recover: `{"id":N,"result":{"recovered":R,"offset":O,"epoch":E}}`,
 * without `offset` and `epoch` when the position is not known.
 *
 * @example
 * ```ts
 * import { subscribeResultFrame } from "./client_protocol.ts";
 *
 * subscribeResultFrame(1, { recovered: true, position: { offset: 7, epoch: "1f3a9c2e" } });
 * // '{"id":1,"result":{"recovered":true,"offset":7,"epoch":"1f3a9c2e"}}'
 * ```
 */
export function subscribeResultFrame(id: number, result: SubscribeResult): string {
  const { recovered, position } = result;
  const body = position === null ? { recovered } : { recovered, offset: position.offset, epoch: position.epoch };
  return JSON.stringify({ id, result: body });
}

/**
 * An error frame: `{"id":N,"error":{"code":C,"message":"..."}}`, or without
 * `id` for an error tied to no command.
 */
export function errorFrame(error: ClientError): string {
  const body = { code: error.code, message: error.message };
  return JSON.stringify(error.id === null ? { error: body } : { id: error.id, error: body });
}

/**
 * A history's answer: `{"id":N,"result":{"publications":[{"data":D,"offset":O},…],"offset":O,"epoch":E,"recovered":R}}`,
 * as the publisher's `/api/history` answers it.
 */
export function historyResultFrame(
  id: number,
  result: { publications: unknown[]; offset: number; epoch: string; recovered: boolean },
): string {
  return JSON.stringify({ id, result });
}

/**
 * A presence's answer: `{"id":N,"result":{"num_clients":C,"num_users":U,"users":[…]}}`
 * as the publisher's `/api/presence` answers it (`presence_stats`: without
 * `users`), with `"partial":true` when some worker did not answer in time.
 */
export function presenceResultFrame(id: number, presence: MergedChannelPresence, partial: boolean): string {
  return JSON.stringify({ id, result: partial ? { ...presence, partial } : presence });
}

/** Tells a client the backend subscribed it to `channel`. */
export function subscribedFrame(channel: string): string {
  return JSON.stringify({ subscribed: { channel } });
}

/** Tells a client the backend unsubscribed it from `channel`. */
export function unsubscribedFrame(channel: string): string {
  return JSON.stringify({ unsubscribed: { channel } });
}

function malformed(id: number | null, message: string): ClientError {
  return { id, code: ErrorCode.malformed, message };
}

function badParameter(id: number, detail: string): ClientError {
  return { id, code: ErrorCode.malformed, message: `Invalid parameter: ${detail}`, badParameter: true };
}
