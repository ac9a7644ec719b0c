/**
 * The benchmark's message contents: `<seq>:<send time in µs>:` padded with
 * `_` to a fixed size. The load generator writes the publish request and
 * reads the delivery in one process, so one clock (`performance.now()`)
 * timestamps both ends. Only URL-safe characters: the content goes into a
 * query string as is.
 *
 * Pure TypeScript: no `Deno.*` calls.
 *
 * @module
 */

/** Size of every content, in bytes, unless a scenario says otherwise. */
export const CONTENT_BYTES = 64;

const COLON = 0x3a;
const ZERO = 0x30;

/** Options for {@linkcode encodeContent}. */
export interface ContentOptions {
  /** Size of the content, in bytes. @default {64} */
  bytes?: number;
}

/**
 * Builds a content: sequence number, send time in whole microseconds, then
 * padding up to `bytes` characters.
 *
 * @throws {RangeError} when the two numbers do not fit in `bytes`.
 *
 * @example
 * ```ts
 * import { encodeContent } from "./_content.ts";
 *
 * encodeContent(7, 1234567); // "7:1234567:____…" (64 characters)
 * ```
 */
export function encodeContent(seq: number, sendUs: number, options: ContentOptions = {}): string {
  const bytes = options.bytes ?? CONTENT_BYTES;
  const head = `${seq}:${sendUs}:`;
  if (head.length > bytes) throw new RangeError(`Cannot encode content: ${head.length} characters exceed ${bytes}`);
  return head.padEnd(bytes, "_");
}

/**
 * Reads the sequence number back from a content's bytes. Returns NaN for
 * anything that is not a benchmark content.
 */
export function readSeq(payload: Uint8Array): number {
  if (Number.isNaN(readSendTime(payload))) return NaN;
  let value = 0;
  for (let i = 0; payload[i] !== COLON; i++) value = value * 10 + payload[i]! - ZERO;
  return value;
}

/**
 * Reads the send time (µs) back from a content's bytes, without decoding
 * them as text: the generator does this for every delivery. Returns NaN for
 * anything that is not a benchmark content (a greeting, say).
 */
export function readSendTime(payload: Uint8Array): number {
  let i = 0;
  const end = payload.length;
  while (i < end && payload[i] !== COLON) {
    const digit = payload[i]! - ZERO;
    if (digit < 0 || digit > 9) return NaN;
    i++;
  }
  if (i === 0 || i === end) return NaN;
  i++;
  const start = i;
  let value = 0;
  while (i < end && payload[i] !== COLON) {
    const digit = payload[i]! - ZERO;
    if (digit < 0 || digit > 9) return NaN;
    value = value * 10 + digit;
    i++;
  }
  return i === start || i === end ? NaN : value;
}

/** The name of the benchmark's channel `index`: `bench.<index>`. */
export function benchChannel(index: number): string {
  return `bench.${index}`;
}

/** A channel publication read back: the channel's index, the content it carried and its position, if any. */
export interface ChannelFrame {
  channel: number;
  content: Uint8Array;
  /** The publication's `offset` on a channel with history; null without. */
  offset: number | null;
  /** Its `epoch`'s bytes (between the quotes) on a channel with history; null without. */
  epoch: Uint8Array | null;
}

const CHANNEL_HEAD = new TextEncoder().encode('{"channel":"bench.');
const DATA_HEAD = new TextEncoder().encode('","data":"');
const FRAME_TAIL = new TextEncoder().encode('"}');
const OFFSET_HEAD = new TextEncoder().encode('","offset":');
const EPOCH_HEAD = new TextEncoder().encode(',"epoch":"');
const QUOTE = 0x22;

/**
 * Reads a channel publication of a benchmark content,
 * `{"channel":"bench.<n>","data":"<content>"}`, or on a channel with history
 * `{"channel":"bench.<n>","data":"<content>","offset":<o>,"epoch":"<e>"}`,
 * from its bytes without decoding or parsing JSON: the generator does this
 * for every delivery, and a content needs no escaping (it holds no quote).
 * Returns null for anything else (a command's reply, another shape).
 *
 * @example
 * ```ts
 * import { readChannelFrame } from "./_content.ts";
 *
 * const frame = readChannelFrame(new TextEncoder().encode('{"channel":"bench.3","data":"7:1234:__"}'));
 * // { channel: 3, content: the bytes of "7:1234:__", offset: null, epoch: null }
 * ```
 */
export function readChannelFrame(payload: Uint8Array): ChannelFrame | null {
  const end = payload.length - FRAME_TAIL.length;
  if (end <= CHANNEL_HEAD.length || !startsAt(payload, CHANNEL_HEAD, 0) || !startsAt(payload, FRAME_TAIL, end)) {
    return null;
  }
  let i = CHANNEL_HEAD.length;
  let channel = 0;
  const digits = i;
  while (i < end && payload[i]! >= ZERO && payload[i]! <= ZERO + 9) channel = channel * 10 + payload[i++]! - ZERO;
  if (i === digits || !startsAt(payload, DATA_HEAD, i)) return null;
  const start = i + DATA_HEAD.length;
  let close = start;
  while (close < end && payload[close] !== QUOTE) close++;
  if (close === end) return { channel, content: payload.subarray(start, end), offset: null, epoch: null };
  // A position follows the data: `","offset":<digits>,"epoch":"<epoch>"}`.
  if (!startsAt(payload, OFFSET_HEAD, close)) return null;
  i = close + OFFSET_HEAD.length;
  const offsetStart = i;
  let offset = 0;
  while (i < end && payload[i]! >= ZERO && payload[i]! <= ZERO + 9) offset = offset * 10 + payload[i++]! - ZERO;
  if (i === offsetStart || !startsAt(payload, EPOCH_HEAD, i)) return null;
  const epochStart = i + EPOCH_HEAD.length;
  for (let j = epochStart; j < end; j++) if (payload[j] === QUOTE) return null;
  return { channel, content: payload.subarray(start, close), offset, epoch: payload.subarray(epochStart, end) };
}

function startsAt(payload: Uint8Array, head: Uint8Array, at: number): boolean {
  if (at + head.length > payload.length) return false;
  for (let i = 0; i < head.length; i++) if (payload[at + i] !== head[i]) return false;
  return true;
}
