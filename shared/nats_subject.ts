/**
 * How bus subjects are written as NATS subjects, and history patterns as
 * stream subject filters: pure, so that flags can be checked without the
 * NATS client.
 *
 * @module
 */

const encoder = new TextEncoder();
const SAFE = /^[A-Za-z0-9_\-:@/=]$/;

/**
 * The NATS subject of a bus subject: itself when it is a valid NATS subject
 * of letters, digits, `_-:@/=` and dots between non-empty tokens; otherwise
 * any other character is written `%XX` (its UTF-8 bytes), and so is a dot
 * that would leave a token empty: one that begins a token or ends the
 * subject. A dot after a token always ends it, so a subject keeps the tokens
 * of its prefix (`channel.` of `channel..x`), which a stream's filter
 * captures. One bus subject, one NATS subject.
 *
 * @example
 * ```ts
 * import { natsSubject } from "./nats_subject.ts";
 *
 * natsSubject("channel.news"); // "channel.news"
 * natsSubject("user.a b"); // "user.a%20b"
 * natsSubject("channel.a..b"); // "channel.a.%2Eb"
 * ```
 */
export function natsSubject(subject: string): string {
  let out = "";
  let tokenEmpty = true;
  const chars = [...subject];
  for (let i = 0; i < chars.length; i++) {
    const char = chars[i]!;
    if (char === ".") {
      if (!tokenEmpty && i + 1 < chars.length) {
        out += ".";
        tokenEmpty = true;
        continue;
      }
    } else if (SAFE.test(char)) {
      out += char;
      tokenEmpty = false;
      continue;
    }
    for (const byte of encoder.encode(char)) out += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
    tokenEmpty = false;
  }
  return out;
}

/**
 * The NATS subject filter of a history pattern: a name as
 * {@linkcode natsSubject}, a prefix `p.*` as `p.>`.
 *
 * @throws {TypeError} for a prefix that does not end at a dot: a stream
 * captures whole tokens; and for `*` alone: a stream of every subject would
 * take in the `_live.` subjects it republishes to, which NATS refuses as a
 * cycle (and every request's reply too).
 */
export function natsHistoryFilter(pattern: string): string {
  if (!pattern.endsWith("*")) return natsSubject(pattern);
  const prefix = pattern.slice(0, -1);
  if (prefix === "") {
    throw new TypeError(
      'Invalid history pattern "*" for NATS: a stream cannot keep every subject (its republished copies would be kept too); name a prefix (channel.*)',
    );
  }
  const encoded = natsSubject(prefix.slice(0, -1));
  if (!prefix.endsWith(".") || natsSubject(`${prefix}x`) !== `${encoded}.x`) {
    throw new TypeError(
      `Invalid history pattern ${
        JSON.stringify(pattern)
      } for NATS: a prefix must end at a dot (channel.chat.*), as a stream captures whole subject tokens`,
    );
  }
  return `${encoded}.>`;
}
