/**
 * WebSocket framing (RFC 6455) for the load generator's raw clients: server
 * frames in, masked client frames out. Only what a push client needs: whole
 * (unfragmented) text, binary and control frames.
 *
 * Pure TypeScript: no `Deno.*` calls, fed whatever the socket hands over.
 *
 * @module
 */

/** Opcode of a text frame. */
export const OPCODE_TEXT = 0x1;
/** Opcode of a binary frame. */
export const OPCODE_BINARY = 0x2;
/** Opcode of a close frame. */
export const OPCODE_CLOSE = 0x8;
/** Opcode of a ping frame. */
export const OPCODE_PING = 0x9;
/** Opcode of a pong frame. */
export const OPCODE_PONG = 0xa;

/** Options for {@linkcode ServerFrameParser}. */
export interface ServerFrameParserOptions {
  /**
   * Called with each complete frame. `payload` is a view into the parsed
   * buffer: consume it before the buffer is reused.
   */
  onFrame(opcode: number, payload: Uint8Array): void;
  /**
   * Largest payload accepted; a larger declared length is refused before the
   * caller allocates room for it.
   *
   * @default {1048576}
   */
  maxPayloadBytes?: number;
}

/**
 * Parses frames a server sends (unmasked, RFC 6455 section 5.2): 7-bit,
 * 16-bit and 64-bit lengths, many frames per call, a frame cut anywhere.
 *
 * The parser keeps no bytes: the caller owns the buffer, calls
 * {@linkcode ServerFrameParser.parse} with what it holds, drops the consumed
 * prefix, and keeps the rest for the next call. When the buffer is full of
 * one incomplete frame, {@linkcode ServerFrameParser.needed} says how big it
 * must grow.
 *
 * @example
 * ```ts
 * import { ServerFrameParser } from "./_ws_frames.ts";
 *
 * const buffer = new Uint8Array(16384);
 * buffer.set([0x81, 0x02, 0x68, 0x69, 0x81]); // a text frame "hi", then the first byte of the next frame
 * let filled = 5;
 * const parser = new ServerFrameParser({ onFrame: (opcode, payload) => console.log(opcode, payload) });
 * const consumed = parser.parse(buffer.subarray(0, filled)); // 4, after onFrame(0x1, "hi")
 * buffer.copyWithin(0, consumed, filled);
 * filled -= consumed; // 1 byte kept for the next read
 * ```
 */
export class ServerFrameParser {
  readonly #onFrame: (opcode: number, payload: Uint8Array) => void;
  readonly #maxPayloadBytes: number;
  #needed = 0;

  constructor(options: ServerFrameParserOptions) {
    this.#onFrame = options.onFrame;
    this.#maxPayloadBytes = options.maxPayloadBytes ?? 1024 * 1024;
  }

  /**
   * Total size (header included) of the incomplete frame the last
   * {@linkcode parse} stopped at, or 0 when it stopped inside a header or at
   * a frame boundary.
   */
  get needed(): number {
    return this.#needed;
  }

  /**
   * Calls `onFrame` for every complete frame at the start of `bytes`, in
   * order, and returns how many bytes they took.
   *
   * @throws {RangeError} on a declared length over the maximum.
   * @throws {TypeError} on a masked, fragmented or otherwise invalid frame.
   */
  parse(bytes: Uint8Array): number {
    const end = bytes.length;
    let offset = 0;
    this.#needed = 0;
    while (end - offset >= 2) {
      const b0 = bytes[offset]!;
      const b1 = bytes[offset + 1]!;
      const opcode = b0 & 0x0f;
      if ((b0 & 0x70) !== 0) throw new TypeError("Cannot parse frame: reserved bits are set");
      if ((b1 & 0x80) !== 0) throw new TypeError("Cannot parse frame: a server frame must not be masked");
      if ((b0 & 0x80) === 0 || opcode === 0) {
        throw new TypeError("Cannot parse frame: fragmented messages are not supported");
      }
      let length = b1 & 0x7f;
      let header = 2;
      if (length === 126) {
        if (end - offset < 4) break;
        length = (bytes[offset + 2]! << 8) | bytes[offset + 3]!;
        header = 4;
      } else if (length === 127) {
        if (end - offset < 10) break;
        const high = (bytes[offset + 2]! << 24 | bytes[offset + 3]! << 16 | bytes[offset + 4]! << 8 |
          bytes[offset + 5]!) >>> 0;
        const low = (bytes[offset + 6]! << 24 | bytes[offset + 7]! << 16 | bytes[offset + 8]! << 8 |
          bytes[offset + 9]!) >>> 0;
        length = high * 0x1_0000_0000 + low;
        header = 10;
      }
      if (length > this.#maxPayloadBytes) {
        throw new RangeError(
          `Cannot parse frame: declared length ${length} exceeds the ${this.#maxPayloadBytes}-byte maximum`,
        );
      }
      if (opcode >= OPCODE_CLOSE && length > 125) {
        throw new TypeError(`Cannot parse frame: control frame of ${length} bytes, the limit is 125`);
      }
      const total = header + length;
      if (end - offset < total) {
        this.#needed = total;
        break;
      }
      this.#onFrame(opcode, bytes.subarray(offset + header, offset + total));
      offset += total;
    }
    return offset;
  }
}

/**
 * Encodes a client frame: FIN set, masked with a random key, as RFC 6455
 * requires of every frame a client sends.
 *
 * @example
 * ```ts
 * import { encodeClientFrame, OPCODE_PONG } from "./_ws_frames.ts";
 *
 * const frame = encodeClientFrame(OPCODE_PONG, new TextEncoder().encode("hi"));
 * // 8 bytes: 0x8a (FIN, pong), 0x82 (masked, length 2), the 4-byte key, the masked payload
 * ```
 */
export function encodeClientFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const header = payload.length < 126 ? 2 : payload.length < 0x10000 ? 4 : 10;
  const frame = new Uint8Array(header + 4 + payload.length);
  frame[0] = 0x80 | opcode;
  if (header === 2) {
    frame[1] = 0x80 | payload.length;
  } else if (header === 4) {
    frame[1] = 0x80 | 126;
    frame[2] = payload.length >>> 8;
    frame[3] = payload.length & 0xff;
  } else {
    frame[1] = 0x80 | 127;
    new DataView(frame.buffer).setBigUint64(2, BigInt(payload.length));
  }
  const mask = crypto.getRandomValues(new Uint8Array(4));
  frame.set(mask, header);
  for (let i = 0; i < payload.length; i++) frame[header + 4 + i] = payload[i]! ^ mask[i & 3]!;
  return frame;
}

/** The payload of a close frame: a status code and a UTF-8 reason. */
export function closePayload(code: number, reason = ""): Uint8Array {
  const text = new TextEncoder().encode(reason);
  const payload = new Uint8Array(2 + text.length);
  payload[0] = code >>> 8;
  payload[1] = code & 0xff;
  payload.set(text, 2);
  return payload;
}

/** The status code of a close frame's payload; 1005 (none given) when it has none. */
export function closeCode(payload: Uint8Array): number {
  return payload.length >= 2 ? (payload[0]! << 8) | payload[1]! : 1005;
}
