/**
 * What a publish asks for: its fields, from a POSTed form or the query
 * string, read into content and a {@linkcode PushAddress}, or refused with
 * the reason a user can act on.
 *
 * @module
 */

import {
  channelNameError,
  CONNECTION_ID_PATTERN,
  DEFAULT_MAX_CHANNEL_LENGTH,
  MAX_CARRIED_USER_LENGTH,
  type PushAddress,
  WORKER_ID_PATTERN,
} from "../shared/address.ts";
import { utf8Length } from "../shared/bytes.ts";
import { type Fields, readForm } from "./form.ts";
import { checkIdempotencyKey } from "./_api_params.ts";
import { Rejection } from "./_rejection.ts";

/** A publish, checked. */
export interface PublishRequest {
  /** Who it goes to. */
  readonly address: PushAddress;
  /** What it says; never empty. */
  readonly content: string;
  /** The content's size in UTF-8 bytes, at most the limit. */
  readonly bytes: number;
  /** The `idempotency_key` field: a retry with the same key on the same address is routed once. */
  readonly idempotencyKey?: string;
}

const INCOMPLETE =
  "Incomplete address: to_worker_id and to_connection_id go together (both for one connection, neither to broadcast)";
const INVALID_WORKER = "Invalid to_worker_id: expected a worker id, 16 lowercase hex digits";
const INVALID_CONNECTION = "Invalid to_connection_id: expected a connection id, a decimal integer of 1 to 15 digits";
const AMBIGUOUS =
  "Ambiguous address: pass one of channel, to_user, or to_worker_id with to_connection_id (none to broadcast)";

/** A request without a body, as a server's fast path sees it before any `Request` is built. */
export interface GetRequest {
  readonly method: string;
  readonly headers: { get(name: string): string | null };
}

/** Limits of {@linkcode readPublishRequest}. */
export interface PublishRequestLimits {
  /** Largest content, in UTF-8 bytes; larger gets 413. Required. */
  maxContentBytes: number;
  /** Longest channel name; longer gets 422. @default {255} */
  maxChannelLength?: number;
}

/**
 * Reads `content` and its address: `to_worker_id` and `to_connection_id`
 * (the original's), `channel` or `to_user`; for a POST from its form body,
 * falling back to `query` per field; otherwise from `query`. Without an
 * address the content goes to everyone; with both parts of a connection's,
 * to that connection; with `channel`, to the channel's members as its
 * publication's `data`; with `to_user`, to that user's connections. Empty
 * address fields count as absent, so a form with blank address inputs
 * broadcasts. Unlike the original, `"0"` is content: PHP's `empty("0")`
 * dropped it. `idempotency_key`, when given, is 1 to 128 characters (an
 * empty one is refused, not ignored: a retry that lost its key would go out
 * twice).
 *
 * @throws {Rejection} 400 for missing content, a malformed address or more
 * than one, a bad idempotency key, 413 for content over `maxContentBytes`, 422 for a bad channel
 * or user name, or as {@linkcode readForm} does.
 */
export async function readPublishRequest(
  req: Request | GetRequest,
  query: Fields,
  limits: PublishRequestLimits,
): Promise<PublishRequest> {
  const { maxContentBytes, maxChannelLength = DEFAULT_MAX_CHANNEL_LENGTH } = limits;
  const body = "body" in req && req.method === "POST" ? await readForm(req, maxContentBytes) : undefined;
  const field = (name: string) => body?.get(name) ?? query.get(name);

  const content = field("content");
  if (content === undefined || content === "") {
    throw new Rejection(400, "Missing content: pass a non-empty content parameter");
  }
  const bytes = utf8Length(content);
  if (bytes > maxContentBytes) {
    throw new Rejection(413, `Content too large: ${bytes} bytes, the limit is ${maxContentBytes}`);
  }
  const connection = toAddress(field("to_worker_id") || undefined, field("to_connection_id") || undefined);
  const channel = field("channel") || undefined;
  const user = field("to_user") || undefined;
  const given = [connection.kind === "connection", channel !== undefined, user !== undefined].filter(Boolean).length;
  if (given > 1) throw new Rejection(400, AMBIGUOUS);
  const address = toChannelOrUser(channel, user, maxChannelLength) ?? connection;
  const idempotencyKey = checkIdempotencyKey(field("idempotency_key"));
  return { address, content, bytes, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) };
}

function toChannelOrUser(
  channel: string | undefined,
  user: string | undefined,
  maxChannelLength: number,
): PushAddress | null {
  if (channel !== undefined) {
    const error = channelNameError(channel, maxChannelLength);
    if (error !== null) throw new Rejection(422, error);
    return { kind: "channel", channel };
  }
  if (user === undefined) return null;
  if (user.length > MAX_CARRIED_USER_LENGTH) {
    throw new Rejection(
      422,
      `Invalid to_user: ${user.length} characters, over the limit of ${MAX_CARRIED_USER_LENGTH}`,
    );
  }
  return { kind: "user", user };
}

function toAddress(workerId: string | undefined, connectionId: string | undefined): PushAddress {
  if (workerId === undefined && connectionId === undefined) return EVERYONE;
  if (workerId === undefined || connectionId === undefined) throw new Rejection(400, INCOMPLETE);
  if (!WORKER_ID_PATTERN.test(workerId)) throw new Rejection(400, INVALID_WORKER);
  if (!CONNECTION_ID_PATTERN.test(connectionId)) throw new Rejection(400, INVALID_CONNECTION);
  return { kind: "connection", workerId, connectionId: Number(connectionId) };
}

const EVERYONE: PushAddress = { kind: "everyone" };
