/**
 * HTTP/1.1 response parsing for the load generator's pipelined publish
 * connections: bytes in, one answer per response out, in order, from any
 * chunking. Bodies are framed by `Content-Length` or chunked encoding.
 *
 * Pure TypeScript: no `Deno.*` calls.
 *
 * @module
 */

import { concat } from "../shared/bytes.ts";

/** One response. */
export interface HttpAnswer {
  /** The status code. */
  status: number;
  /**
   * The body as text for a status outside 2xx (the reason); for a 2xx, empty
   * to save the decoding, unless the parser keeps bodies.
   */
  body: string;
}

/** Options for {@linkcode ResponseParser}. */
export interface ResponseParserOptions {
  /** Largest status line plus headers. @default {65536} */
  maxHeadBytes?: number;
  /** Largest body. @default {1048576} */
  maxBodyBytes?: number;
  /** Decode 2xx bodies too (a batch's replies say how each command went). @default {false} */
  keepBodies?: boolean;
}

const CR = 0x0d;
const LF = 0x0a;
const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder();

/**
 * Streaming parser of HTTP/1.1 responses to pipelined requests.
 *
 * @example
 * ```ts
 * import { ResponseParser } from "./_http_responses.ts";
 *
 * const parser = new ResponseParser();
 * const chunk = new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
 * for (const answer of parser.push(chunk)) console.log(answer.status); // 200
 * ```
 */
export class ResponseParser {
  readonly #maxHeadBytes: number;
  readonly #maxBodyBytes: number;
  readonly #keepBodies: boolean;
  #pending: Uint8Array | null = null;

  constructor(options: ResponseParserOptions = {}) {
    this.#maxHeadBytes = options.maxHeadBytes ?? 64 * 1024;
    this.#maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
    this.#keepBodies = options.keepBodies ?? false;
  }

  /** Bytes held back waiting for the rest of a response. */
  get bufferedBytes(): number {
    return this.#pending?.length ?? 0;
  }

  /**
   * Feeds a chunk and returns every response it completes, in order. The
   * chunk may be reused by the caller afterwards.
   *
   * @throws {SyntaxError} on something that is not an HTTP/1.x response.
   * @throws {RangeError} on a head or body over its limit.
   */
  push(chunk: Uint8Array): HttpAnswer[] {
    let bytes = chunk;
    if (this.#pending) {
      bytes = new Uint8Array(this.#pending.length + chunk.length);
      bytes.set(this.#pending);
      bytes.set(chunk, this.#pending.length);
    }
    const answers: HttpAnswer[] = [];
    let offset = 0;
    while (offset < bytes.length) {
      const next = this.#parseOne(bytes, offset, answers);
      if (next === -1) break;
      offset = next;
    }
    this.#pending = offset < bytes.length ? bytes.slice(offset) : null;
    return answers;
  }

  /** Parses the response at `offset`; returns the offset after it, or -1 when it is incomplete. */
  #parseOne(bytes: Uint8Array, offset: number, answers: HttpAnswer[]): number {
    const headEnd = indexOfBlankLine(bytes, offset);
    if (headEnd === -1) {
      if (bytes.length - offset > this.#maxHeadBytes) {
        throw new RangeError(`Cannot parse response: head over ${this.#maxHeadBytes} bytes`);
      }
      return -1;
    }
    const head = latin1.decode(bytes.subarray(offset, headEnd));
    const statusLine = /^HTTP\/1\.[01] (\d{3})/.exec(head);
    if (!statusLine) {
      throw new SyntaxError(`Cannot parse response: bad status line ${JSON.stringify(head.split("\r\n")[0])}`);
    }
    const status = Number(statusLine[1]);
    const bodyStart = headEnd + 4;
    let bodyEnd: number;
    let next: number;
    let body: Uint8Array;
    if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(head)) {
      const chunked = this.#readChunked(bytes, bodyStart);
      if (!chunked) return -1;
      ({ body, next } = chunked);
    } else {
      const declared = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
      const length = declared ? Number(declared[1]) : 0;
      if (length > this.#maxBodyBytes) {
        throw new RangeError(`Cannot parse response: body of ${length} bytes over ${this.#maxBodyBytes}`);
      }
      bodyEnd = bodyStart + length;
      if (bodyEnd > bytes.length) return -1;
      body = bytes.subarray(bodyStart, bodyEnd);
      next = bodyEnd;
    }
    const ok = status >= 200 && status < 300;
    answers.push({ status, body: ok && !this.#keepBodies ? "" : ok ? utf8.decode(body) : utf8.decode(body).trim() });
    return next;
  }

  /** Reads a chunked body from `start`; null when incomplete. */
  #readChunked(bytes: Uint8Array, start: number): { body: Uint8Array; next: number } | null {
    const parts: Uint8Array[] = [];
    let size = 0;
    let offset = start;
    while (true) {
      const lineEnd = indexOfLineEnd(bytes, offset);
      if (lineEnd === -1) return null;
      const chunkSize = parseInt(latin1.decode(bytes.subarray(offset, lineEnd)).split(";")[0]!.trim(), 16);
      if (!Number.isSafeInteger(chunkSize) || chunkSize < 0) {
        throw new SyntaxError("Cannot parse response: bad chunk size");
      }
      size += chunkSize;
      if (size > this.#maxBodyBytes) {
        throw new RangeError(`Cannot parse response: chunked body over ${this.#maxBodyBytes} bytes`);
      }
      offset = lineEnd + 2;
      if (chunkSize === 0) {
        // Trailers, if any, end with a blank line; without, the blank line follows at once.
        if (bytes.length - offset < 2) return null;
        if (bytes[offset] === CR && bytes[offset + 1] === LF) return { body: concat(parts, size), next: offset + 2 };
        const end = indexOfBlankLine(bytes, offset);
        return end === -1 ? null : { body: concat(parts, size), next: end + 4 };
      }
      if (bytes.length < offset + chunkSize + 2) return null;
      parts.push(bytes.subarray(offset, offset + chunkSize));
      offset += chunkSize + 2;
    }
  }
}

function indexOfBlankLine(bytes: Uint8Array, from: number): number {
  for (let i = from; i + 3 < bytes.length; i++) {
    if (bytes[i] === CR && bytes[i + 1] === LF && bytes[i + 2] === CR && bytes[i + 3] === LF) return i;
  }
  return -1;
}

function indexOfLineEnd(bytes: Uint8Array, from: number): number {
  for (let i = from; i + 1 < bytes.length; i++) {
    if (bytes[i] === CR && bytes[i + 1] === LF) return i;
  }
  return -1;
}
