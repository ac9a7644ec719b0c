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
