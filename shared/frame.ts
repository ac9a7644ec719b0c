/**
 * Length-prefixed framing, byte-compatible with Workerman's `frame://`
 * protocol: a uint32 big-endian TOTAL length that counts its own 4 bytes,
 * then TOTAL - 4 bytes of payload.
 *
 * Pure TypeScript: no `Deno.*` calls, so it runs in any isolate and is fed
 * whatever chunks the transport hands over.
 *
 * @module
 */

/** Size of the length header, in bytes. */
export const HEADER_BYTES = 4;

/** Default largest TOTAL length accepted: 1 MiB. */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;

/** Options for {@linkcode FrameDecoder}. */
export interface FrameDecoderOptions {
  /**
   * Largest TOTAL length (header included) accepted. A larger declared length
   * is rejected before anything is allocated.
   *
   * @default {1048576}
   */
  maxFrameBytes?: number;
}

/**
 * Frames a payload: returns a new buffer holding the header and the payload.
 *
 * @example
 * ```ts
 * import { encodeLengthPrefixed } from "./frame.ts";
 *
 * const frame = encodeLengthPrefixed(new TextEncoder().encode("hi"));
 * // frame is 00 00 00 06 68 69
 * ```
 */
export function encodeLengthPrefixed(payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(HEADER_BYTES + payload.length);
  writeHeader(frame, frame.length);
  frame.set(payload, HEADER_BYTES);
  return frame;
}

/** Writes a TOTAL length header into the first 4 bytes of `target`. */
export function writeHeader(target: Uint8Array, total: number): void {
  target[0] = total >>> 24;
  target[1] = (total >>> 16) & 0xff;
  target[2] = (total >>> 8) & 0xff;
  target[3] = total & 0xff;
}

/**
 * Streaming frame decoder: bytes in, payloads out, from any chunking.
 *
 * A payload that arrived whole inside one chunk is returned as a view into
 * that chunk (no copy), so callers must consume payloads before they reuse the
 * chunk's buffer. Only a frame split across chunks is copied, into a buffer of
 * exactly its declared size, allocated after the size was checked.
 *
 * After an error the decoder stays failed: the stream has lost its alignment
 * and the connection must be closed.
 *
 * @example
 * ```ts
 * import { encodeLengthPrefixed, FrameDecoder } from "./frame.ts";
 *
 * const decoder = new FrameDecoder({ maxFrameBytes: 1024 });
 * const chunk = encodeLengthPrefixed(new TextEncoder().encode("hi"));
 * for (const payload of decoder.push(chunk)) console.log(payload); // Uint8Array(2) [ 104, 105 ]
 * ```
 */
export class FrameDecoder {
  readonly #maxFrameBytes: number;
  /** Header bytes collected so far when a header is split across chunks. */
  readonly #header = new Uint8Array(HEADER_BYTES);
  #headerFill = 0;
  /** The frame being assembled across chunks (header included), if any. */
  #partial: Uint8Array | null = null;
  #partialFill = 0;
  #failed: Error | null = null;

  constructor(options: FrameDecoderOptions = {}) {
    this.#maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  }

  /** Bytes held back waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.#partial ? this.#partialFill : this.#headerFill;
  }

  /**
   * Feeds a chunk and returns every payload it completes, in order.
   *
   * @throws {RangeError} when a declared length is below 4 or above the
   * maximum; the decoder then stays failed.
   */
  push(chunk: Uint8Array): Uint8Array[] {
    if (this.#failed) throw this.#failed;
    const out: Uint8Array[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#partial) {
        offset = this.#fillPartial(chunk, offset, out);
        continue;
      }
      if (this.#headerFill > 0 || chunk.length - offset < HEADER_BYTES) {
        offset = this.#fillHeader(chunk, offset);
        if (this.#headerFill < HEADER_BYTES) break;
        const total = this.#check(readTotal(this.#header, 0));
        this.#headerFill = 0;
        if (total === HEADER_BYTES) {
          out.push(new Uint8Array(0));
          continue;
        }
        this.#partial = new Uint8Array(total);
        this.#partial.set(this.#header);
        this.#partialFill = HEADER_BYTES;
        continue;
      }
      const total = this.#check(readTotal(chunk, offset));
      if (chunk.length - offset >= total) {
        out.push(chunk.subarray(offset + HEADER_BYTES, offset + total));
        offset += total;
        continue;
      }
      this.#partial = new Uint8Array(total);
      this.#partialFill = 0;
    }
    return out;
  }

  #fillHeader(chunk: Uint8Array, offset: number): number {
    const take = Math.min(HEADER_BYTES - this.#headerFill, chunk.length - offset);
    this.#header.set(chunk.subarray(offset, offset + take), this.#headerFill);
    this.#headerFill += take;
    return offset + take;
  }

  #fillPartial(chunk: Uint8Array, offset: number, out: Uint8Array[]): number {
    const partial = this.#partial!;
    const take = Math.min(partial.length - this.#partialFill, chunk.length - offset);
    partial.set(chunk.subarray(offset, offset + take), this.#partialFill);
    this.#partialFill += take;
    if (this.#partialFill === partial.length) {
      out.push(partial.subarray(HEADER_BYTES));
      this.#partial = null;
      this.#partialFill = 0;
    }
    return offset + take;
  }

  #check(total: number): number {
    if (total < HEADER_BYTES) {
      this.#failed = new RangeError(
        `Cannot decode frame: declared length ${total} is below the ${HEADER_BYTES}-byte header`,
      );
      throw this.#failed;
    }
    if (total > this.#maxFrameBytes) {
      this.#failed = new RangeError(
        `Cannot decode frame: declared length ${total} exceeds the ${this.#maxFrameBytes}-byte maximum${
          looksLikeTls(total)
            ? " (the bytes are a TLS record: TLS is on at one end of this link and off at the other)"
            : ""
        }`,
      );
      throw this.#failed;
    }
    return total;
  }
}

/** Whether a frame's 4 length bytes are a TLS record's header: a content type of 20 to 23, then version 3.x. */
function looksLikeTls(total: number): boolean {
  const type = total >>> 24;
  return type >= 0x14 && type <= 0x17 && ((total >>> 16) & 0xff) === 0x03;
}

function readTotal(bytes: Uint8Array, offset: number): number {
  return (
    bytes[offset]! * 0x1000000 +
    (bytes[offset + 1]! << 16) +
    (bytes[offset + 2]! << 8) +
    bytes[offset + 3]!
  );
}
