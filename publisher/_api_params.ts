/**
 * Reading the parameters of a server-API call: who it is for (a channel, a
 * user, one connection, everyone), a channel name, a connection to skip,
 * a disconnect's code and reason. What does not fit is refused with a
 * {@linkcode Rejection} that names the parameter: 400 for a missing or
 * malformed one, 422 for a channel or user name the bus cannot carry.
 *
 * @module
 */

import {
  channelNameError,
  type ConnectionAddress,
  type Exclude,
  isDisconnectCode,
  MAX_CARRIED_USER_LENGTH,
  MAX_CLOSE_REASON_BYTES,
  type PushAddress,
  type UserAddress,
  WORKER_ID_PATTERN,
} from "../shared/address.ts";
import type { Json } from "../shared/json.ts";
import { MAX_EPOCH_LENGTH } from "../shared/wire.ts";
import { Rejection } from "./_rejection.ts";

/** A call's parameters: the JSON object of its body, or of its entry in a batch. */
export type Params = { readonly [key: string]: Json };

/** The kinds of {@linkcode PushAddress} a method accepts. */
export type TargetKind = PushAddress["kind"];

const TARGET_WORDS: Readonly<Record<TargetKind, string>> = {
  channel: "channel",
  user: "user",
  connection: "worker_id with connection_id",
  everyone: "nothing (everyone)",
};

/**
 * Who a call is for, of the `kinds` it accepts: `channel`, `user`, or
 * `worker_id` with `connection_id`; with none of them, everyone when
 * `kinds` has `everyone`. Only the parameters of accepted kinds are read:
 * `subscribe`'s `channel` is not its target.
 *
 * @throws {Rejection} 400 for no target, more than one, or a malformed
 * connection address; 422 for a bad channel or user name.
 */
export function readTarget(params: Params, kinds: readonly TargetKind[], maxChannelLength: number): PushAddress {
  const given: TargetKind[] = [];
  if (kinds.includes("channel") && params.channel !== undefined) given.push("channel");
  if (kinds.includes("user") && params.user !== undefined) given.push("user");
  if (kinds.includes("connection") && (params.worker_id !== undefined || params.connection_id !== undefined)) {
    given.push("connection");
  }
  if (given.length > 1) throw new Rejection(400, `Ambiguous target: pass one of ${choices(kinds)}`);
  switch (given[0]) {
    case "channel":
      return { kind: "channel", channel: readChannel(params, maxChannelLength) };
    case "user":
      return readUser(params);
    case "connection":
      return readConnection(params);
  }
  if (kinds.includes("everyone")) return { kind: "everyone" };
  throw new Rejection(400, `Missing target: pass ${choices(kinds)}`);
}

/** The targets `kinds` allow, in words: "channel, user or nothing (everyone)". */
function choices(kinds: readonly TargetKind[]): string {
  const words = kinds.map((kind) => TARGET_WORDS[kind]);
  return words.length < 2 ? words.join("") : `${words.slice(0, -1).join(", ")} or ${words.at(-1)}`;
}

/**
 * The `channel` parameter, a valid channel name.
 *
 * @throws {Rejection} 400 when it is missing, 422 when it is not a valid name.
 */
export function readChannel(params: Params, maxChannelLength: number): string {
  const channel = params.channel;
  if (channel === undefined) throw new Rejection(400, "Missing channel: pass a channel name");
  const error = channelNameError(channel, maxChannelLength);
  if (error !== null) throw new Rejection(422, error);
  return channel as string;
}

function readUser(params: Params): UserAddress {
  const user = params.user;
  if (typeof user !== "string" || user === "") {
    throw new Rejection(422, "Invalid user: expected a non-empty string");
  }
  if (user.length > MAX_CARRIED_USER_LENGTH) {
    throw new Rejection(422, `Invalid user: ${user.length} characters, over the limit of ${MAX_CARRIED_USER_LENGTH}`);
  }
  return { kind: "user", user };
}

/**
 * `worker_id` and `connection_id` together, as one connection's address.
 *
 * @throws {Rejection} 400 when one is missing or malformed.
 */
function readConnection(params: Params, prefix = ""): ConnectionAddress {
  const workerId = params.worker_id;
  const connectionId = params.connection_id;
  if (workerId === undefined || connectionId === undefined) {
    throw new Rejection(400, `Incomplete ${prefix}address: worker_id and connection_id go together`);
  }
  if (typeof workerId !== "string" || !WORKER_ID_PATTERN.test(workerId)) {
    throw new Rejection(400, `Invalid ${prefix}worker_id: expected a worker id, 16 lowercase hex digits`);
  }
  if (typeof connectionId !== "number" || !Number.isSafeInteger(connectionId) || connectionId < 1) {
    throw new Rejection(400, `Invalid ${prefix}connection_id: expected a connection id, a positive integer`);
  }
  return { kind: "connection", workerId, connectionId };
}

/**
 * The optional `exclude` parameter: `{worker_id, connection_id}`, the one
 * connection a publish skips.
 *
 * @throws {Rejection} 400 when it is not an object with both, well formed.
 */
export function readExclude(params: Params): Exclude | undefined {
  const exclude = params.exclude;
  if (exclude === undefined) return undefined;
  if (typeof exclude !== "object" || exclude === null || Array.isArray(exclude)) {
    throw new Rejection(400, "Invalid exclude: expected an object with worker_id and connection_id");
  }
  const address = readConnection(exclude, "exclude ");
  return { worker_id: address.workerId, connection_id: address.connectionId };
}

const utf8 = new TextEncoder();

/**
 * A disconnect's optional `code` (1000, 3000-3999 or 4000-4999) and
 * `reason` (at most 123 UTF-8 bytes), as the command carries them: absent
 * ones stay absent and the pusher uses its defaults (4000, "disconnected by
 * the server"). They come as parameters of their own, or as Centrifugo
 * sends them, in a `disconnect` object.
 *
 * @throws {Rejection} 400 for a code or reason out of bounds, or both ways at once.
 */
export function readDisconnect(params: Params): { code?: number; reason?: string } {
  let source = params;
  if (params.disconnect !== undefined) {
    const nested = params.disconnect;
    if (typeof nested !== "object" || nested === null || Array.isArray(nested)) {
      throw new Rejection(400, 'Invalid disconnect: expected an object {"code": N, "reason": "..."}');
    }
    if (params.code !== undefined || params.reason !== undefined) {
      throw new Rejection(400, "Ambiguous disconnect: pass code and reason, or a disconnect object, not both");
    }
    source = nested;
  }
  const { code, reason } = source;
  if (code !== undefined && (typeof code !== "number" || !isDisconnectCode(code))) {
    throw new Rejection(400, "Invalid code: expected 1000, 3000-3999 or 4000-4999");
  }
  if (reason !== undefined && typeof reason !== "string") {
    throw new Rejection(400, "Invalid reason: expected a string");
  }
  if (reason !== undefined && utf8.encode(reason).length > MAX_CLOSE_REASON_BYTES) {
    throw new Rejection(400, `Invalid reason: over ${MAX_CLOSE_REASON_BYTES} UTF-8 bytes`);
  }
  return { ...(code === undefined ? {} : { code }), ...(reason === undefined ? {} : { reason }) };
}

/** Longest `idempotency_key`, in characters: what the hub keeps per key. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 128;

/**
 * The optional `idempotency_key` of a publish: a string of 1 to 128
 * characters. The hub routes a publish with a key it saw on the same
 * subject within its window only once, and answers a retry as it answered
 * the first.
 *
 * @throws {Rejection} 400 for anything else.
 */
export function readIdempotencyKey(params: Params): string | undefined {
  return checkIdempotencyKey(params.idempotency_key);
}

/**
 * Checks an idempotency key, however it came (a JSON value, a form field):
 * undefined stays undefined, a string of 1 to 128 characters is returned.
 *
 * @throws {Rejection} 400 for anything else, an empty string included.
 */
export function checkIdempotencyKey(key: Json | undefined): string | undefined {
  if (key === undefined) return undefined;
  if (typeof key !== "string" || key.length < 1 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
    throw new Rejection(
      400,
      `Invalid idempotency_key: expected a string of 1 to ${MAX_IDEMPOTENCY_KEY_LENGTH} characters`,
    );
  }
  return key;
}

/** A place in a channel's history: the offset of a message, and the epoch of the history it belongs to. */
export interface SincePosition {
  readonly offset: number;
  readonly epoch: string;
}

/**
 * The optional `since` of a history call: `{offset, epoch}`, a position the
 * caller saw (a publish result's, a history answer's, a browser's last
 * publication's). Offset 0 is a position too: that of a channel before its
 * first message, which a history answer of an empty channel gives.
 *
 * @throws {Rejection} 400 when it is not an object, its offset is not a
 * non-negative integer or its epoch not a string (of at most `MAX_EPOCH_LENGTH`, 32, characters).
 */
export function readSince(params: Params): SincePosition | undefined {
  const since = params.since;
  if (since === undefined) return undefined;
  if (typeof since !== "object" || since === null || Array.isArray(since)) {
    throw new Rejection(400, 'Invalid since: expected a position, {"offset": N, "epoch": "..."}');
  }
  const { offset, epoch } = since;
  if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) {
    throw new Rejection(400, "Invalid since.offset: expected a non-negative integer");
  }
  if (typeof epoch !== "string" || epoch.length > MAX_EPOCH_LENGTH) {
    throw new Rejection(400, `Invalid since.epoch: expected a string of at most ${MAX_EPOCH_LENGTH} characters`);
  }
  return { offset, epoch };
}

/**
 * A history call's optional `reverse` (Centrifugo's name): true for the
 * channel's last publications, newest first. Not with `since`, which reads
 * forward from a position.
 *
 * @throws {Rejection} 400 for anything but a boolean, or true with `since`.
 */
export function readReverse(params: Params): boolean {
  const reverse = params.reverse;
  if (reverse === undefined || reverse === false) return false;
  if (reverse !== true) throw new Rejection(400, "Invalid reverse: expected true or false");
  if (params.since !== undefined) {
    throw new Rejection(400, "Invalid reverse: it reads the newest publications, not forward from since");
  }
  return true;
}

/**
 * The optional `limit` of a history call: how many publications to answer
 * at most, 1 to `max`; `max` when absent.
 *
 * @throws {Rejection} 400 for anything else.
 */
export function readLimit(params: Params, max: number): number {
  const limit = params.limit;
  if (limit === undefined) return max;
  if (typeof limit !== "number" || !Number.isSafeInteger(limit) || limit < 1 || limit > max) {
    throw new Rejection(400, `Invalid limit: expected an integer from 1 to ${max}`);
  }
  return limit;
}

/**
 * A `channels` call's `pattern`: a channel name, or a name's first
 * characters and `*` (`room.*`; `*` alone, the default, for every channel).
 *
 * @throws {Rejection} 422 for anything else.
 */
export function readPattern(params: Params, maxChannelLength: number): string {
  const pattern = params.pattern ?? "*";
  const invalid = 'Invalid pattern: expected a channel name, or its first characters and "*"';
  if (typeof pattern !== "string") throw new Rejection(422, invalid);
  const prefix = pattern.endsWith("*") ? pattern.slice(0, -1) : pattern;
  if (prefix === "" && pattern === "*") return pattern;
  if (channelNameError(prefix, maxChannelLength) !== null) throw new Rejection(422, invalid);
  return pattern;
}
