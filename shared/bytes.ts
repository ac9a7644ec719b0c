/**
 * Byte-array helpers shared by the services and their tests.
 *
 * @module
 */

/**
 * Joins `chunks` into one byte array. A single chunk is returned as is, not
 * copied (the writer's common case: one frame queued per write); callers
 * that will mutate the result, or whose chunk aliases a reused read buffer,
 * must copy it themselves. Two or more chunks, or none, always give a fresh
 * array.
 *
 * @param chunks The byte arrays to join, in order.
 * @param total Their summed length, when the caller already keeps it; computed otherwise.
 *
 * @example
 * ```ts
 * import { concat } from "./bytes.ts";
 *
 * const joined = concat([new Uint8Array([1, 2]), new Uint8Array([3])]);
 * // joined is 01 02 03
 * ```
 */
export function concat<T extends ArrayBufferLike = ArrayBufferLike>(
  chunks: readonly Uint8Array<T>[],
  total?: number,
): Uint8Array<T | ArrayBuffer> {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total ?? chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/**
 * Decodes UTF-8 and throws a `TypeError` on invalid input, as
 * `new TextDecoder("utf-8", { fatal: true })` does, at about the cost of a
 * replacing decoder. Deno's fatal decoder allocates a UTF-16 buffer on every
 * call (10 µs for 11 KB of JSON here, against 0.7 µs replacing), and every
 * frame, event batch and request body goes through this. So the text is
 * decoded replacing first: valid input leaves no U+FFFD, as every invalid
 * sequence would. Only a text with U+FFFD in it is decoded again by the fatal
 * decoder, to tell a U+FFFD that was sent from an error.
 *
 * @example
 * ```ts
 * import { StrictUtf8Decoder } from "./bytes.ts";
 *
 * const utf8 = new StrictUtf8Decoder();
 * utf8.decode(new Uint8Array([0xe2, 0x82, 0xac])); // "€"
 * utf8.decode(new Uint8Array([0xe2, 0x82])); // throws TypeError
 * ```
 */
export class StrictUtf8Decoder {
  readonly #replacing: TextDecoder;
  readonly #fatal: TextDecoder;

  /** @param options.ignoreBOM Keep a leading byte order mark as U+FEFF instead of dropping it; default `false`. */
  constructor(options: { ignoreBOM?: boolean } = {}) {
    const ignoreBOM = options.ignoreBOM ?? false;
    this.#replacing = new TextDecoder("utf-8", { ignoreBOM });
    this.#fatal = new TextDecoder("utf-8", { fatal: true, ignoreBOM });
  }

  /** The text of `bytes`. @throws {TypeError} when `bytes` is not valid UTF-8 */
  decode(bytes: Uint8Array): string {
    const text = this.#replacing.decode(bytes);
    return text.includes("\uFFFD") ? this.#fatal.decode(bytes) : text;
  }
}

/**
 * The length of `text` in UTF-8, as `new TextEncoder().encode(text).length`
 * gives it (a lone surrogate counts as U+FFFD, 3 bytes), without encoding it.
 *
 * @example
 * ```ts
 * import { utf8Length } from "./bytes.ts";
 *
 * utf8Length("a€😀"); // 1 + 3 + 4 = 8
 * ```
 */
export function utf8Length(text: string): number {
  // A long ASCII text (most JSON) is found so 4 times faster than by the loop.
  if (text.length > 64 && !NON_ASCII.test(text)) return text.length;
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) continue;
    if (code < 0x800) bytes += 1;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      // A surrogate pair: two UTF-16 units, four bytes.
      bytes += 2;
      i++;
    } else bytes += 2;
  }
  return bytes;
}

const NON_ASCII = /[\u0080-\uffff]/;

/** WHATWG's "latin1" is windows-1252: bytes 0x80-0x9F but five decode to characters past U+00FF (0x80 is "€"). */
const windows1252 = new TextDecoder("latin1");
const PAST_LATIN1 = /[\u0100-\uffff]/;

/**
 * Decodes each byte as the character of the same code (ISO-8859-1), as a
 * request head is read: raw bytes above 0x7F come out as U+0080-U+00FF and
 * can be told apart and percent-encoded again byte for byte. Not
 * `new TextDecoder("latin1")`, which is windows-1252 and turns the bytes of
 * a raw UTF-8 "€" (E2 82 AC) into "â‚¬", three characters of which one is
 * not a byte.
 *
 * @example
 * ```ts
 * import { decodeLatin1 } from "./bytes.ts";
 *
 * decodeLatin1(new TextEncoder().encode("€")); // "\xe2\x82\xac"
 * ```
 */
export function decodeLatin1(bytes: Uint8Array): string {
  const text = windows1252.decode(bytes);
  if (!PAST_LATIN1.test(text)) return text;
  let exact = "";
  for (let i = 0; i < bytes.length; i += 4096) exact += String.fromCharCode(...bytes.subarray(i, i + 4096));
  return exact;
}
