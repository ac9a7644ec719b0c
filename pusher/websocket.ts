/**
 * The server side of the WebSocket protocol (RFC 6455) as pure functions and
 * a streaming parser: handshake key, frame encoding, and a bytes-in,
 * events-out parser of client frames that enforces masking, shortest
 * lengths, size limits, fragmentation rules, close codes and UTF-8. No
 * `Deno.*` calls.
 *
 * @module
 */

import { concat, StrictUtf8Decoder, utf8Length } from "../shared/bytes.ts";
import { DEFAULT_MAX_MESSAGE_BYTES } from "./defaults.ts";
import { sha1 } from "./_sha1.ts";

/** Close codes this server sends, and two it only reports. */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  unsupportedData: 1003,
  /** Reported to handlers for a client's close frame without a code (RFC 6455 7.1.5); never sent. */
  noStatus: 1005,
  /** Reported to handlers when the TCP connection ended without a close frame. */
  abnormal: 1006,
  invalidData: 1007,
  policyViolation: 1008,
  messageTooBig: 1009,
  internalError: 1011,
  /** A client that does not read fast enough (Centrifugo's "slow"). */
  slow: 3008,
} as const;

/** A protocol violation by the client: close the connection with `code`. */
export class ProtocolError extends Error {
  /** The close code to send. */
  readonly code: number;
  /**
   * Events completed in the same chunk before the violation: valid messages
   * the client sent first, to be handled before closing.
   */
  events: ClientEvent[] = [];

  /** A violation to close with `code`; `message` becomes the close reason. */
  constructor(code: number, message: string) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
  }
}

/** What the parser found in the client's bytes. */
export type ClientEvent =
  | { type: "text"; data: string }
  | { type: "binary"; data: Uint8Array }
  | { type: "ping"; data: Uint8Array }
  | { type: "pong"; data: Uint8Array }
  /**
   * A frame of a fragmented message before its last: nothing to handle yet,
   * but a frame the client sent all the same, for its frame rate.
   */
  | { type: "fragment" }
  | { type: "close"; code: number; reason: string };

/** The one `fragment` event, shared: a flood of fragments allocates no events. */
const FRAGMENT: ClientEvent = Object.freeze({ type: "fragment" });

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`. */
export function acceptKey(key: string): string {
  return sha1(utf8.encode(key + GUID)).toBase64();
}

/** True for a valid `Sec-WebSocket-Key`: base64 of 16 bytes. */
export function isValidKey(key: string): boolean {
  return /^[A-Za-z0-9+/]{22}==$/.test(key);
}

const OP_CONTINUATION = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

const utf8 = new TextEncoder();
const strictUtf8 = new StrictUtf8Decoder({ ignoreBOM: true });

/**
 * A text message encoded once as a server frame, to be written to any number
 * of sockets: a broadcast costs one encoding, whatever the audience.
 */
export class PreparedText {
  /** The message. */
  readonly text: string;
  /** The complete frame: header and payload. */
  readonly frame: Uint8Array;

  /** Frames `text` once. */
  constructor(text: string) {
    this.text = text;
    // One buffer, not the text's bytes and then the frame with a copy: one is made per publication.
    this.frame = encodeText(text);
  }
}

/** Encodes a text message as one unmasked server frame. */
export function encodeText(text: string): Uint8Array {
  // Encoded straight into the frame: one buffer, not the text's bytes and then a copy of them.
  const length = utf8Length(text);
  const frame = new Uint8Array(headerLength(length) + length);
  writeHeader(frame, OP_TEXT, length);
  utf8.encodeInto(text, frame.subarray(frame.length - length));
  return frame;
}

/** Encodes a close frame; the reason is cut to fit the 125-byte control frame limit. */
export function encodeClose(code: number, reason = ""): Uint8Array {
  let bytes = utf8.encode(reason);
  if (bytes.length > 123) {
    // Cut on a character boundary (never inside a UTF-8 sequence or a
    // surrogate pair): the client checks the reason's UTF-8.
    let end = 123;
    while ((bytes[end]! & 0xc0) === 0x80) end--;
    bytes = bytes.subarray(0, end);
  }
  const payload = new Uint8Array(2 + bytes.length);
  payload[0] = code >> 8;
  payload[1] = code & 0xff;
  payload.set(bytes, 2);
  return encodeWebSocketFrame(OP_CLOSE, payload);
}

/** Encodes a ping frame. */
export function encodePing(payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  return encodeWebSocketFrame(OP_PING, payload);
}

/** Encodes a pong frame answering a ping with `payload`. */
export function encodePong(payload: Uint8Array): Uint8Array {
  return encodeWebSocketFrame(OP_PONG, payload);
}

/** Encodes one final, unmasked frame. */
export function encodeWebSocketFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(headerLength(payload.length) + payload.length);
  writeHeader(frame, opcode, payload.length);
  frame.set(payload, frame.length - payload.length);
  return frame;
}

/** Bytes of an unmasked frame's header for a payload of `length` bytes. */
function headerLength(length: number): number {
  return length < 126 ? 2 : length < 0x10000 ? 4 : 10;
}

/** Writes an unmasked, final frame's header at the start of `frame`. */
function writeHeader(frame: Uint8Array, opcode: number, length: number): void {
  frame[0] = 0x80 | opcode;
  if (length < 126) {
    frame[1] = length;
  } else if (length < 0x10000) {
    frame[1] = 126;
    frame[2] = length >> 8;
    frame[3] = length & 0xff;
  } else {
    frame[1] = 127;
    new DataView(frame.buffer, frame.byteOffset).setBigUint64(2, BigInt(length));
  }
}

/** Options for {@linkcode FrameParser}. */
export interface FrameParserOptions {
  /**
   * Largest message accepted, in bytes, fragments added up. A larger
   * declared length closes with 1009 before anything is allocated.
   *
   * @default {65536}
   */
  maxMessageBytes?: number;
}

/**
 * Streaming parser of client frames: bytes in, events out, from any
 * chunking. Throws {@linkcode ProtocolError} on any violation; the parser is
 * then failed and the connection must be closed with the error's code.
 */
export class FrameParser {
  readonly #maxMessageBytes: number;
  /**
   * An incomplete frame carried over to the next chunk: its first
   * `#partialBytes` bytes. One buffer, grown once to what the frame needs,
   * so that memory is bounded by the frame however small the reads.
   */
  #partial: Uint8Array | null = null;
  #partialBytes = 0;
  /** Bytes the incomplete frame needs, as far as is known. */
  #need = 0;
  /** A fragmented message in progress: its first `#fragmentBytes` bytes, and its opcode. */
  #message: Uint8Array | null = null;
  #fragmentBytes = 0;
  #fragmentOpcode = -1;
  #failed: ProtocolError | null = null;
  /** Set by {@linkcode FrameParser.discardData}. */
  #discarding = false;
  /** Payload bytes of a discarded data frame still to come, skipped as they arrive. */
  #skip = 0;

  /** A parser for one connection's bytes. */
  constructor(options: FrameParserOptions = {}) {
    this.#maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  }

  /**
   * Bytes of buffer held for an incomplete frame and a fragmented message:
   * at most one frame plus `maxMessageBytes`, however the client splits its
   * frames and its writes.
   */
  get heldBytes(): number {
    return (this.#partial?.length ?? 0) + (this.#message?.length ?? 0);
  }

  /**
   * True between frames and messages, with nothing held and no violation:
   * a new parser would go on exactly as this one, so an idle connection
   * need not keep it.
   */
  get atRest(): boolean {
    return this.#partialBytes === 0 && this.#fragmentOpcode < 0 && this.#failed === null && this.#skip === 0;
  }

  /**
   * From now on, skips data frames as they stream by: their payload is not
   * unmasked, held or decoded, the size limit does not apply to them, and
   * they give no events. Control frames are parsed as before, and the
   * headers of all frames checked, so a closing connection still finds the
   * client's close frame, at the cost of its headers only. A fragmented
   * message in progress is dropped. Calling it again does nothing.
   */
  discardData(): void {
    if (this.#discarding) return;
    this.#discarding = true;
    this.#message = null;
    this.#fragmentBytes = 0;
  }

  /**
   * Feeds a chunk; returns the events it completes, in order.
   *
   * @throws {ProtocolError} on a violation of RFC 6455 or of the size limit;
   * its `events` are those the chunk completed before the violation. Every
   * later call throws it again, without events.
   */
  push(chunk: Uint8Array): ClientEvent[] {
    if (this.#failed) throw new ProtocolError(this.#failed.code, this.#failed.message);
    let bytes = chunk;
    if (this.#skip > 0) {
      // Nothing is held while a discarded payload streams by.
      if (chunk.length <= this.#skip) {
        this.#skip -= chunk.length;
        return [];
      }
      bytes = chunk.subarray(this.#skip);
      this.#skip = 0;
    }
    if (this.#partialBytes > 0) {
      const total = this.#partialBytes + bytes.length;
      const partial = this.#partial!.subarray(0, this.#partialBytes);
      // Gather reads until the frame in progress can complete.
      if (total < this.#need) {
        if (this.#partial!.length < this.#need) {
          this.#partial = new Uint8Array(this.#need);
          this.#partial.set(partial);
        }
        this.#partial!.set(bytes, this.#partialBytes);
        this.#partialBytes = total;
        return [];
      }
      bytes = concat([partial, bytes], total);
    }
    const events: ClientEvent[] = [];
    let offset = 0;
    try {
      while (true) {
        const used = this.#frame(bytes, offset, events);
        if (used === 0) break;
        offset += used;
      }
    } catch (error) {
      if (error instanceof ProtocolError) {
        this.#failed = error;
        error.events = events;
      }
      throw error;
    }
    // Copy the tail: the caller reuses its read buffer.
    this.#partialBytes = bytes.length - offset;
    this.#partial = this.#partialBytes === 0 ? null : bytes.slice(offset);
    return events;
  }

  /** Notes how many bytes the incomplete frame needs; returns 0. */
  #incomplete(need: number): number {
    this.#need = need;
    return 0;
  }

  /** Parses one frame at `offset`; returns its size, or 0 when incomplete. */
  #frame(bytes: Uint8Array, offset: number, events: ClientEvent[]): number {
    const available = bytes.length - offset;
    if (available < 2) return this.#incomplete(2);
    const b0 = bytes[offset]!;
    const b1 = bytes[offset + 1]!;
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    if ((b0 & 0x70) !== 0) throw new ProtocolError(CloseCode.protocolError, "Reserved bits set without an extension");
    if ((b1 & 0x80) === 0) throw new ProtocolError(CloseCode.protocolError, "Client frames must be masked");
    const control = opcode >= 0x8;
    if (control && opcode > OP_PONG || !control && opcode > OP_BINARY) {
      throw new ProtocolError(CloseCode.protocolError, `Unknown opcode ${opcode}`);
    }
    // What the header says is checked against the protocol before the size
    // limits: a malformed frame is a 1002 whatever length it declares.
    if (control) {
      if (!fin) throw new ProtocolError(CloseCode.protocolError, "Control frames must not be fragmented");
    } else if (opcode === OP_CONTINUATION) {
      if (this.#fragmentOpcode < 0) throw new ProtocolError(CloseCode.protocolError, "Continuation without a message");
    } else if (this.#fragmentOpcode >= 0) {
      throw new ProtocolError(CloseCode.protocolError, "New message before the fragmented one ended");
    }
    let length = b1 & 0x7f;
    let headerLength = 2;
    if (length === 126) {
      if (available < 4) return this.#incomplete(4);
      length = (bytes[offset + 2]! << 8) | bytes[offset + 3]!;
      headerLength = 4;
      // RFC 6455 5.2: "the minimal number of bytes MUST be used to encode the length".
      if (length < 126) {
        throw new ProtocolError(CloseCode.protocolError, `Frame length ${length} not in its shortest encoding`);
      }
    } else if (length === 127) {
      if (available < 10) return this.#incomplete(10);
      const high =
        (bytes[offset + 2]! << 24 | bytes[offset + 3]! << 16 | bytes[offset + 4]! << 8 | bytes[offset + 5]!) >>> 0;
      // RFC 6455 5.2: the most significant bit of a 64-bit length MUST be 0.
      if (high >= 0x80000000) throw new ProtocolError(CloseCode.protocolError, "Frame length with its top bit set");
      // Exact up to 2^53, and past that still far over any limit.
      length = high * 0x100000000 + (bytes[offset + 6]! * 0x1000000) +
        (bytes[offset + 7]! << 16 | bytes[offset + 8]! << 8 | bytes[offset + 9]!);
      headerLength = 10;
      if (length < 0x10000) {
        throw new ProtocolError(CloseCode.protocolError, `Frame length ${length} not in its shortest encoding`);
      }
    }
    if (control) {
      if (length > 125) throw new ProtocolError(CloseCode.protocolError, "Control frame payload over 125 bytes");
    } else if (this.#discarding) {
      return this.#discard(opcode, fin, headerLength + 4 + length, available);
    } else {
      if (length > 0xffffffff) throw new ProtocolError(CloseCode.messageTooBig, "Frame larger than 4 GiB");
      // Checked on the declared length, before the payload is buffered.
      const total = (opcode === OP_CONTINUATION ? this.#fragmentBytes : 0) + length;
      if (total > this.#maxMessageBytes) {
        throw new ProtocolError(CloseCode.messageTooBig, `Message over ${this.#maxMessageBytes} bytes`);
      }
    }
    const frameLength = headerLength + 4 + length;
    if (available < frameLength) return this.#incomplete(frameLength);
    const maskAt = offset + headerLength;
    const payload = bytes.slice(maskAt + 4, maskAt + 4 + length);
    for (let i = 0; i < length; i++) payload[i]! ^= bytes[maskAt + (i & 3)]!;
    if (control) events.push(this.#control(opcode, payload));
    else this.#data(opcode, fin, payload, events);
    return frameLength;
  }

  /** Skips a data frame of `frameLength` bytes of which `available` are here; returns the bytes used. */
  #discard(opcode: number, fin: boolean, frameLength: number, available: number): number {
    // Kept for the checks of the frames that follow.
    if (opcode !== OP_CONTINUATION) this.#fragmentOpcode = fin ? -1 : opcode;
    else if (fin) this.#fragmentOpcode = -1;
    if (available >= frameLength) return frameLength;
    this.#skip = frameLength - available;
    return available;
  }

  #control(opcode: number, payload: Uint8Array): ClientEvent {
    if (opcode === OP_PING) return { type: "ping", data: payload };
    if (opcode === OP_PONG) return { type: "pong", data: payload };
    if (payload.length === 0) return { type: "close", code: CloseCode.noStatus, reason: "" };
    if (payload.length === 1) throw new ProtocolError(CloseCode.protocolError, "Close frame with a 1-byte payload");
    const code = (payload[0]! << 8) | payload[1]!;
    if (!isValidCloseCode(code)) throw new ProtocolError(CloseCode.protocolError, `Invalid close code ${code}`);
    return { type: "close", code, reason: decodeUtf8(payload.subarray(2), "Close reason") };
  }

  #data(opcode: number, fin: boolean, payload: Uint8Array, events: ClientEvent[]): void {
    // Fragmentation was checked with the header.
    if (opcode !== OP_CONTINUATION) {
      if (fin) return events.push(message(opcode, payload)), undefined;
      this.#fragmentOpcode = opcode;
    }
    this.#append(payload);
    if (!fin) return events.push(FRAGMENT), undefined;
    const whole = this.#message?.length === this.#fragmentBytes
      ? this.#message
      : (this.#message?.slice(0, this.#fragmentBytes) ?? new Uint8Array(0));
    const first = this.#fragmentOpcode;
    this.#message = null;
    this.#fragmentBytes = 0;
    this.#fragmentOpcode = -1;
    events.push(message(first, whole));
  }

  /**
   * Copies a fragment into the message buffer, which doubles as it fills,
   * up to the size limit (already checked): at most the limit held, however
   * many fragments, and nothing kept per fragment.
   */
  #append(payload: Uint8Array): void {
    const total = this.#fragmentBytes + payload.length;
    const capacity = this.#message?.length ?? 0;
    if (total > capacity) {
      const grown = new Uint8Array(Math.min(this.#maxMessageBytes, Math.max(total, capacity * 2)));
      if (this.#message) grown.set(this.#message.subarray(0, this.#fragmentBytes));
      this.#message = grown;
    }
    this.#message?.set(payload, this.#fragmentBytes);
    this.#fragmentBytes = total;
  }
}

function message(opcode: number, payload: Uint8Array): ClientEvent {
  return opcode === OP_TEXT
    ? { type: "text", data: decodeUtf8(payload, "Text message") }
    : { type: "binary", data: payload };
}

function decodeUtf8(bytes: Uint8Array, what: string): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw new ProtocolError(CloseCode.invalidData, `${what} is not valid UTF-8`);
  }
}

/** Close codes a client may send (RFC 6455 section 7.4). */
export function isValidCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}
