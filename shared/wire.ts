/**
 * The wire protocol between the hub and its clients (pushers and
 * publishers): typed messages, a payload codec, and a streaming decoder.
 *
 * Framing ({@linkcode FrameDecoder}) and the payload codec ({@linkcode Codec})
 * are separate pieces: the framing is Workerman's `frame://`, the default codec
 * is UTF-8 JSON, and a second codec can be added without touching either the
 * framing or the message types.
 *
 * Pure TypeScript: no `Deno.*` calls.
 *
 * @module
 */

import { StrictUtf8Decoder } from "./bytes.ts";
import { encodeLengthPrefixed, FrameDecoder, type FrameDecoderOptions, HEADER_BYTES, writeHeader } from "./frame.ts";
import type { Json } from "./json.ts";

export { DEFAULT_MAX_FRAME_BYTES, encodeLengthPrefixed, FrameDecoder, type FrameDecoderOptions } from "./frame.ts";

/** The hub's default TCP port, as in the original. */
export const DEFAULT_HUB_PORT = 2206;

/**
 * Version a client announces in its `hello`. Version 3 added
 * {@linkcode PublishBatch} and its {@linkcode BatchAck}, and
 * {@linkcode EventsMessage}, sent to version-3 clients only; a hub speaks every
 * version from {@linkcode MIN_PROTOCOL_VERSION} up and refuses others, so a
 * client of version 2 keeps working with a hub of version 3 (it never sends a
 * batch). A version-3 client needs a version-3 hub: upgrade the hub first.
 */
export const PROTOCOL_VERSION = 3;

/** The oldest version a hub still speaks: a version-2 client sends no `publish_batch`. */
export const MIN_PROTOCOL_VERSION = 2;

/** Most items one {@linkcode PublishBatch} holds; a longer list is split by the client. */
export const MAX_BATCH_ITEMS = 1000;

/** Longest subject or queue name accepted, in UTF-16 code units. */
export const MAX_SUBJECT_LENGTH = 256;

/** Longest `idempotency_key` accepted, in UTF-16 code units. */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 128;

/**
 * Longest `epoch` accepted in a position, in UTF-16 code units: every bus's
 * are 8 (`newEpoch()`). A `since` from a browser or a backend is held to it
 * too, so that no bus refuses one that the pusher or the publisher took.
 */
export const MAX_EPOCH_LENGTH = 32;

export type { Json } from "./json.ts";

/** First message on every connection: protocol version and optional token. */
export interface Hello {
  type: "hello";
  version: number;
  token?: string;
}

/** Subscribe to, or unsubscribe from, the events of subjects. Idempotent. */
export interface Subscription {
  type: "subscribe" | "unsubscribe";
  subjects: string[];
}

/**
 * Publish `data` to every subscriber of each subject (`publish`), or to one
 * subscriber per subject in turn (`publishLoop`). `id` is echoed in the `ack`.
 * `reply`, a subject, is handed on in each `event`: where subscribers may
 * publish their answers (request/reply, as in NATS).
 */
export interface Publish {
  type: "publish" | "publishLoop";
  id: number;
  subjects: string[];
  data: Json;
  reply?: string;
  /**
   * Makes a retry safe: a publish whose key the hub saw with the same
   * subject list within its idempotency window is not routed again; the hub
   * answers the first one's `ack` again. Up to
   * {@linkcode MAX_IDEMPOTENCY_KEY_LENGTH} characters.
   */
  idempotency_key?: string;
}

/**
 * Many publishes in one frame, each to one subject with its own data (and
 * its own idempotency key), answered by one {@linkcode BatchAck} with a
 * result per item, in order. Each item is routed as a `publish` of it alone
 * would be. At most {@linkcode MAX_BATCH_ITEMS} items. Since version 3.
 */
export interface PublishBatch {
  type: "publish_batch";
  id: number;
  items: BatchItem[];
}

/** One publish of a {@linkcode PublishBatch}. */
export interface BatchItem {
  subject: string;
  data: Json;
  /** As a `publish`'s: a retry of the item with the same key on the same subject is not routed again. */
  idempotency_key?: string;
}

/**
 * Answers a {@linkcode PublishBatch} once every item's event is written to
 * its subscribers: `results[i]` is item i's `count` (and its position when
 * its subject keeps history), or the `error` that refused it alone (an
 * event over the frame limit).
 */
export interface BatchAck {
  type: "batch_ack";
  id: number;
  results: BatchResult[];
}

/** What one item of a batch achieved, as a `publish`'s `ack` says it, or why it was refused. */
export type BatchResult = { count: number; offset?: number; epoch?: string } | { error: string };

/** A place in a subject's history: see {@linkcode HistoryRequest}. */
export interface WirePosition {
  /** Grows by one per message of the subject; the first is 1, 0 before any. */
  offset: number;
  /** Changes whenever the subject's history was lost. */
  epoch: string;
}

/**
 * Read a subject's history: the messages after `since` (all kept ones
 * without it), oldest first, at most `limit` (capped at the hub's history
 * size). Answered by a {@linkcode HistoryReply} or an `error` with the id.
 */
export interface HistoryRequest {
  type: "history";
  id: number;
  subject: string;
  since?: WirePosition;
  /** @default {the hub's history size} */
  limit?: number;
}

/** Drop a subject's history; its epoch changes. Answered by an `ack` with count 0. */
export interface HistoryRemove {
  type: "history_remove";
  id: number;
  subject: string;
}

/** Start or stop watching work queues. */
export interface Watch {
  type: "watch" | "unwatch";
  queues: string[];
}

/** Append `data` to each queue. `id` is echoed in the `ack` or `error`. */
export interface Enqueue {
  type: "enqueue";
  id: number;
  queues: string[];
  data: Json;
}

/**
 * Take one message from each watched queue, when one is available; with
 * `queues`, from those of them only (a consumer whose handler for one
 * queue is done asks that queue alone for its next message).
 */
export interface Reserve {
  type: "reserve";
  queues?: string[];
}

/** Liveness probe; the hub answers `pong`. */
export interface Ping {
  type: "ping";
}

/** Everything a client sends to the hub. */
export type ClientMessage =
  | Hello
  | Subscription
  | Publish
  | PublishBatch
  | Watch
  | Enqueue
  | Reserve
  | Ping
  | HistoryRequest
  | HistoryRemove
  | InvalidRequest;

/**
 * Never sent: what {@linkcode toClientMessage} makes of a `history`,
 * `history_remove` or `publish` with a valid `id` but a malformed field new in
 * issue 17, so the hub answers an `error` with that id and keeps the
 * connection (older fields, malformed, still close it).
 */
export interface InvalidRequest {
  type: "invalid";
  id: number;
  /** What is wrong, as the `error`'s reason. */
  reason: string;
}

/**
 * A published message, delivered to a subscriber of `subject`. Not `Event`:
 * that name is the DOM's, which the client also uses for its lifecycle.
 */
export interface EventMessage {
  type: "event";
  subject: string;
  data: Json;
  /** The publish's `reply` subject; absent when it had none. */
  reply?: string;
  /** Its offset in the subject's history, when the subject keeps history. */
  offset?: number;
  /** The subject's history epoch, with `offset`. */
  epoch?: string;
}

/**
 * Many events in one frame, for a client of version 3: the events a
 * `publish_batch` routed to it, in order, each exactly the
 * {@linkcode EventMessage} it would have had in a frame of its own.
 */
export interface EventsMessage {
  type: "events";
  events: EventMessage[];
}

/** A queued message of `queue`, delivered to a consumer that reserved. */
export interface QueueMessage {
  type: "queue";
  queue: string;
  data: Json;
}

/**
 * Acknowledges the publish or enqueue with this `id`. `count` is how many
 * subscribers the event was written to (or how many queues took the message).
 */
export interface Ack {
  type: "ack";
  id: number;
  count: number;
  /** Of a publish: the position given to it in each of its subjects that keeps history. */
  positions?: AckPosition[];
}

/** Where a publish went in one subject's history. */
export interface AckPosition extends WirePosition {
  subject: string;
}

/**
 * Answer to a {@linkcode HistoryRequest}. `offset`/`epoch` are the subject's
 * current top position (offset 0 when it never had a message; epoch "" when
 * it keeps no history). `recovered` is true only when `since` was given,
 * its epoch is the current one, it is not past the top, nothing between it
 * and the first message returned was trimmed, and the reply was not cut (by
 * `limit`, or to fit the frame limit).
 */
export interface HistoryReply {
  type: "history";
  id: number;
  epoch: string;
  offset: number;
  messages: { offset: number; data: Json }[];
  recovered: boolean;
}

/**
 * Something went wrong. With an `id`, that one request was refused and the
 * connection stays open; without, the hub closes the connection after it.
 */
export interface ErrorMessage {
  type: "error";
  reason: string;
  id?: number;
}

/** Answer to `ping`. */
export interface Pong {
  type: "pong";
}

/** Everything the hub sends to a client. */
export type HubMessage =
  | EventMessage
  | EventsMessage
  | QueueMessage
  | Ack
  | BatchAck
  | HistoryReply
  | ErrorMessage
  | Pong;

/** Any message of the protocol. */
export type Message = ClientMessage | HubMessage;

/**
 * Turns a message into payload bytes and back. The result of `decode` is
 * untrusted: it goes through {@linkcode toClientMessage} or
 * {@linkcode toHubMessage} before use.
 */
export interface Codec {
  /** Short name, for logs. */
  readonly name: string;
  /** Encodes one message as a payload (without the frame header). */
  encode(message: Message): Uint8Array;
  /**
   * Decodes one payload.
   *
   * @throws {SyntaxError} when the payload is not valid for this codec.
   */
  decode(payload: Uint8Array): unknown;
}

const utf8 = new TextEncoder();
const strictUtf8 = new StrictUtf8Decoder({ ignoreBOM: true });

/** UTF-8 JSON payloads: the default codec. */
export const jsonCodec: Codec = {
  name: "json",
  encode(message: Message): Uint8Array {
    return utf8.encode(JSON.stringify(message));
  },
  decode(payload: Uint8Array): unknown {
    let text: string;
    try {
      text = strictUtf8.decode(payload);
    } catch {
      throw new SyntaxError("Cannot decode message: payload is not valid UTF-8");
    }
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new SyntaxError(`Cannot decode message: ${(error as Error).message}`);
    }
  },
};

/**
 * Encodes one message as a complete frame, header included.
 *
 * @example
 * ```ts
 * import { encodeMessage, PROTOCOL_VERSION } from "./wire.ts";
 *
 * using conn = await Deno.connect({ hostname: "127.0.0.1", port: 2206 });
 * await conn.write(encodeMessage({ type: "hello", version: PROTOCOL_VERSION }));
 * await conn.write(encodeMessage({ type: "subscribe", subjects: ["news"] }));
 * ```
 */
export function encodeMessage(message: Message, codec: Codec = jsonCodec): Uint8Array {
  if (codec === jsonCodec) return encodeJsonFrame(JSON.stringify(message));
  return encodeLengthPrefixed(codec.encode(message));
}

/**
 * Encodes a message's JSON text, from `JSON.stringify(message)`, as a frame.
 * For holding many messages while they wait: a short string costs much
 * less memory than a short frame (a typed array with its own buffer).
 *
 * @example
 * ```ts
 * import { encodeMessageText } from "./wire.ts";
 *
 * const waiting = JSON.stringify({ type: "queue", queue: "jobs", data: 1 });
 * const bytes = encodeMessageText(waiting); // when it is sent
 * ```
 */
export function encodeMessageText(text: string): Uint8Array {
  return encodeJsonFrame(text);
}

/**
 * Encodes a JSON text straight into a frame, with no intermediate payload
 * buffer. Used on the hub's hot path, where an event is encoded once and the
 * bytes shared by every subscriber.
 */
function encodeJsonFrame(text: string): Uint8Array {
  // ASCII text, the usual case, is as many bytes as code units: encode it in
  // place, into a frame of exactly its size. A frame can sit in a queue for
  // long, so it must not hold a larger buffer than it needs.
  const frame = new Uint8Array(HEADER_BYTES + text.length);
  const { read, written } = utf8.encodeInto(text, frame.subarray(HEADER_BYTES));
  if (read === text.length) {
    writeHeader(frame, HEADER_BYTES + written);
    return frame;
  }
  // Wider characters: pay one copy.
  return encodeLengthPrefixed(utf8.encode(text));
}

/** Options for {@linkcode MessageDecoder}. */
export interface MessageDecoderOptions extends FrameDecoderOptions {
  /** Payload codec. @default {jsonCodec} */
  codec?: Codec;
}

/**
 * Streaming decoder: bytes in, typed messages out, from any chunking.
 * `validate` is {@linkcode toClientMessage} on the hub and
 * {@linkcode toHubMessage} on clients.
 *
 * An empty payload (the 4-byte frame `00 00 00 04`, the original's ping) is a
 * keepalive: it yields nothing.
 *
 * Any error leaves the decoder failed: close the connection.
 *
 * @example
 * ```ts
 * import { encodeMessage, MessageDecoder, toClientMessage } from "./wire.ts";
 *
 * const decoder = new MessageDecoder(toClientMessage);
 * const chunk = encodeMessage({ type: "subscribe", subjects: ["news"] });
 * for (const message of decoder.push(chunk)) console.log(message.type); // "subscribe"
 * ```
 */
export class MessageDecoder<T extends Message> {
  readonly #frames: FrameDecoder;
  readonly #codec: Codec;
  readonly #validate: (value: unknown) => T;
  #failed: Error | null = null;

  constructor(validate: (value: unknown) => T, options: MessageDecoderOptions = {}) {
    this.#frames = new FrameDecoder(options);
    this.#codec = options.codec ?? jsonCodec;
    this.#validate = validate;
  }

  /** Bytes held back waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.#frames.bufferedBytes;
  }

  /**
   * Feeds a chunk and returns every message it completes, in order.
   *
   * @throws {RangeError} on a bad frame length.
   * @throws {SyntaxError} on a payload the codec cannot read.
   * @throws {TypeError} on a well-formed payload that is not a valid message.
   */
  push(chunk: Uint8Array): T[] {
    if (this.#failed) throw this.#failed;
    const messages: T[] = [];
    try {
      for (const payload of this.#frames.push(chunk)) {
        if (payload.length === 0) continue;
        messages.push(this.#validate(this.#codec.decode(payload)));
      }
    } catch (error) {
      this.#failed = error as Error;
      throw error;
    }
    return messages;
  }
}

/**
 * Checks that a decoded value is a valid client-to-hub message.
 *
 * @throws {TypeError} naming what is wrong.
 */
export function toClientMessage(value: unknown): ClientMessage {
  const message = asMessageObject(value);
  switch (message.type) {
    case "hello":
      requireInteger(message, "version");
      if (message.token !== undefined) requireString(message, "token");
      break;
    case "subscribe":
    case "unsubscribe":
      requireNames(message, "subjects");
      break;
    case "watch":
    case "unwatch":
      requireNames(message, "queues");
      break;
    case "publish":
    case "publishLoop":
      requireInteger(message, "id");
      requireNames(message, "subjects");
      if (!("data" in message)) throw invalid(message.type, "data is missing");
      if (message.reply !== undefined) requireName(message, "reply", message.reply);
      if (message.idempotency_key !== undefined) return checkRequest(message, checkIdempotencyKey);
      break;
    case "publish_batch":
      requireInteger(message, "id");
      return checkRequest(message, checkBatch);
    case "history":
      requireInteger(message, "id");
      return checkRequest(message, checkHistoryRequest);
    case "history_remove":
      requireInteger(message, "id");
      return checkRequest(message, (m) => requireName(m, "subject", m.subject));
    case "enqueue":
      requireInteger(message, "id");
      requireNames(message, "queues");
      if (!("data" in message)) throw invalid(message.type, "data is missing");
      break;
    case "reserve":
      if (message.queues !== undefined) requireNames(message, "queues");
      break;
    case "ping":
      break;
    default:
      throw unknownType(message.type);
  }
  return message as unknown as ClientMessage;
}

/**
 * Checks that a decoded value is a valid hub-to-client message.
 *
 * @throws {TypeError} naming what is wrong.
 */
export function toHubMessage(value: unknown): HubMessage {
  const message = asMessageObject(value);
  switch (message.type) {
    case "event":
      checkEvent(message);
      break;
    case "events":
      if (!Array.isArray(message.events)) throw invalid("events", "events must be an array");
      for (const event of message.events as unknown[]) {
        if (asMessageObject(event).type !== "event") throw invalid("events", "every event must be of type event");
        checkEvent(event as Fields);
      }
      break;
    case "queue":
      requireString(message, "queue");
      if (!("data" in message)) throw invalid(message.type, "data is missing");
      break;
    case "ack":
      requireInteger(message, "id");
      requireInteger(message, "count");
      if (message.positions !== undefined) {
        if (!Array.isArray(message.positions)) throw invalid("ack", "positions must be an array");
        for (const position of message.positions) {
          requirePosition(message, position);
          if (typeof (position as { subject?: unknown }).subject !== "string") {
            throw invalid("ack", "every position needs a subject");
          }
        }
      }
      break;
    case "batch_ack":
      requireInteger(message, "id");
      if (!Array.isArray(message.results)) throw invalid("batch_ack", "results must be an array");
      for (const result of message.results as unknown[]) checkBatchResult(message, result);
      break;
    case "history": {
      requireInteger(message, "id");
      requirePosition(message, message);
      if (typeof message.recovered !== "boolean") throw invalid("history", "recovered must be a boolean");
      if (!Array.isArray(message.messages)) throw invalid("history", "messages must be an array");
      for (const entry of message.messages as unknown[]) {
        if (typeof entry !== "object" || entry === null || !("data" in entry)) {
          throw invalid("history", "every message needs data");
        }
        requireOffset(message, (entry as { offset?: unknown }).offset);
      }
      break;
    }
    case "error":
      requireString(message, "reason");
      if (message.id !== undefined) requireInteger(message, "id");
      break;
    case "pong":
      break;
    default:
      throw unknownType(message.type);
  }
  return message as unknown as HubMessage;
}

type Fields = Record<string, unknown> & { type: string };

/**
 * Runs `check` on a request whose `id` is valid; a malformed field then
 * makes an {@linkcode InvalidRequest}, answered with an error and the id.
 */
function checkRequest(message: Fields, check: (message: Fields) => void): ClientMessage {
  try {
    check(message);
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    return { type: "invalid", id: message.id as number, reason: error.message };
  }
  return message as unknown as ClientMessage;
}

function checkIdempotencyKey(message: Fields): void {
  const key = message.idempotency_key;
  if (typeof key !== "string" || key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
    throw invalid(message.type, `idempotency_key must be a string of 1 to ${MAX_IDEMPOTENCY_KEY_LENGTH} characters`);
  }
}

function checkEvent(message: Fields): void {
  requireString(message, "subject");
  if (!("data" in message)) throw invalid(message.type, "data is missing");
  if (message.reply !== undefined) requireString(message, "reply");
  if (message.offset !== undefined || message.epoch !== undefined) requirePosition(message, message);
}

function checkBatch(message: Fields): void {
  const items = message.items;
  if (!Array.isArray(items) || items.length === 0 || items.length > MAX_BATCH_ITEMS) {
    throw invalid(message.type, `items must be an array of 1 to ${MAX_BATCH_ITEMS} items`);
  }
  for (const item of items as unknown[]) {
    if (typeof item !== "object" || item === null || Array.isArray(item)) {
      throw invalid(message.type, "every item must be an object with subject and data");
    }
    const fields = item as Record<string, unknown>;
    requireName(message, "every item's subject", fields.subject);
    if (!("data" in fields)) throw invalid(message.type, "every item needs data");
    if (fields.idempotency_key !== undefined) checkIdempotencyKey({ ...fields, type: message.type });
  }
}

function checkBatchResult(message: Fields, result: unknown): void {
  if (typeof result !== "object" || result === null || Array.isArray(result)) {
    throw invalid("batch_ack", "every result must be an object");
  }
  const fields = result as Record<string, unknown>;
  if (fields.error !== undefined) {
    if (typeof fields.error !== "string") throw invalid("batch_ack", "error must be a string");
    return;
  }
  if (!Number.isSafeInteger(fields.count) || (fields.count as number) < 0) {
    throw invalid("batch_ack", "every result needs a count or an error");
  }
  if (fields.offset !== undefined || fields.epoch !== undefined) requirePosition(message, fields);
}

function checkHistoryRequest(message: Fields): void {
  requireName(message, "subject", message.subject);
  if (message.since !== undefined) requirePosition(message, message.since, "since");
  if (message.limit !== undefined && (!Number.isSafeInteger(message.limit) || (message.limit as number) < 0)) {
    throw invalid(message.type, "limit must be an integer of 0 or more");
  }
}

/** Checks `{ offset, epoch }` on `value` (the message itself, or a field of it named `what`). */
function requirePosition(message: Fields, value: unknown, what = "position"): void {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalid(message.type, `${what} must be an object with offset and epoch`);
  }
  const { offset, epoch } = value as { offset?: unknown; epoch?: unknown };
  requireOffset(message, offset);
  if (typeof epoch !== "string" || epoch.length > MAX_EPOCH_LENGTH) {
    throw invalid(message.type, `epoch must be a string of up to ${MAX_EPOCH_LENGTH} characters`);
  }
}

function requireOffset(message: Fields, offset: unknown): void {
  if (!Number.isSafeInteger(offset) || (offset as number) < 0) {
    throw invalid(message.type, "offset must be an integer of 0 or more");
  }
}

function asMessageObject(value: unknown): Fields {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError("Invalid message: expected an object with a type");
  }
  const type = (value as Record<string, unknown>).type;
  if (typeof type !== "string") {
    throw new TypeError("Invalid message: type is missing or not a string");
  }
  return value as Fields;
}

function requireString(message: Fields, field: string): void {
  if (typeof message[field] !== "string") throw invalid(message.type, `${field} must be a string`);
}

function requireInteger(message: Fields, field: string): void {
  if (!Number.isSafeInteger(message[field])) {
    throw invalid(message.type, `${field} must be an integer`);
  }
}

/** Checks a list of subjects or queues: `field` is `subjects` or `queues`. */
function requireNames(message: Fields, field: "subjects" | "queues"): void {
  const names = message[field];
  if (!Array.isArray(names)) throw invalid(message.type, `${field} must be an array`);
  const what = field === "queues" ? "every queue" : "every subject";
  for (const name of names) requireName(message, what, name);
}

/**
 * Checks one subject or queue name: a non-empty string up to
 * {@linkcode MAX_SUBJECT_LENGTH}. `what` names it in the error (`every subject`, `reply`).
 */
function requireName(message: Fields, what: string, name: unknown): void {
  if (typeof name !== "string" || name.length === 0) {
    throw invalid(message.type, `${what} must be a non-empty string`);
  }
  if (name.length > MAX_SUBJECT_LENGTH) {
    throw invalid(message.type, `${what} is limited to ${MAX_SUBJECT_LENGTH} characters`);
  }
}

function invalid(type: string, detail: string): TypeError {
  return new TypeError(`Invalid ${type} message: ${detail}`);
}

function unknownType(type: string): TypeError {
  return new TypeError(`Invalid message: unknown type ${JSON.stringify(type.slice(0, 64))}`);
}
