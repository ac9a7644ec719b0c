/**
 * The request head of an HTTP/1.x connection: read from the raw connection
 * up to its blank line, within a byte limit, and parsed into a
 * {@linkcode ServerRequest} (RFC 9112), or into the 4xx that says why not.
 *
 * @module
 */

import { text } from "../shared/http.ts";
import { decodeLatin1 } from "../shared/bytes.ts";
import { authorityOf, encodeRawBytes, hasControl, isHost, isToken, trimOws } from "../shared/http_head.ts";

export { isHost, isToken };

/**
 * What the handler gets of a request: its method, URL and headers, which is
 * all a WebSocket server reads. A fetch `Request` fits, but the server does
 * not build one: a `Request` and its `Headers` cost several times as much
 * time and garbage per handshake as this.
 */
export interface ServerRequest {
  /** `GET`, `HEAD`, ... */
  readonly method: string;
  /**
   * The absolute URL: path and query from the request target; host from an
   * absolute-form target, else from the `Host` header (else the listening address).
   */
  readonly url: string;
  /** Header values by case-insensitive name; repeated fields are joined with ", ", as `Headers.get` does. */
  readonly headers: { get(name: string): string | null };
}

/** Header fields by lower-case name. */
class HeaderFields {
  readonly #fields = new Map<string, string>();

  /** Adds a field; a repeated name joins its values with ", " (RFC 9110 5.3). */
  add(name: string, value: string): void {
    const key = name.toLowerCase();
    const previous = this.#fields.get(key);
    this.#fields.set(key, previous === undefined ? value : `${previous}, ${value}`);
  }

  /** The value of the field `name`, in any case, or null. */
  get(name: string): string | null {
    return this.#fields.get(name.toLowerCase()) ?? null;
  }
}

/** A parsed request head: the request, and whether it is HTTP/1.0 (which has no `Host` and no `Upgrade`). */
export interface ParsedHead {
  /** The request as the handler sees it. */
  req: ServerRequest;
  /** True for HTTP/1.0, false for HTTP/1.1. */
  http10: boolean;
}

/** What {@linkcode readHead} read: a request, with the bytes that came after its head (null for none). */
export interface HeadRead extends ParsedHead {
  /** What the client sent after the head, in the same reads: the first WebSocket frames. */
  rest: Uint8Array | null;
}

/** The request head's first read buffer: most heads are well under 1 KiB. */
const HEAD_READ_BYTES = 1024;

/**
 * Reads the request head from `tcp`: the request, or the error response for
 * a head over `maxHeadBytes` or one that does not parse; null when the
 * connection ended first (or was closed meanwhile).
 */
export async function readHead(
  tcp: Deno.Conn,
  maxHeadBytes: number,
): Promise<HeadRead | { error: Response } | null> {
  // Starts small and grows only for a large head.
  let buffer = new Uint8Array(HEAD_READ_BYTES);
  let filled = 0;
  while (true) {
    if (filled === buffer.length) {
      const grown = new Uint8Array(Math.min(buffer.length * 2, maxHeadBytes + HEAD_READ_BYTES));
      grown.set(buffer);
      buffer = grown;
    }
    let n: number | null;
    try {
      n = await tcp.read(buffer.subarray(filled));
    } catch {
      return null;
    }
    if (n === null) return null;
    const start = Math.max(0, filled - 3);
    filled += n;
    const end = indexOfHeadEnd(buffer, start, filled);
    if (end >= 0) {
      // One read may bring more than the limit at once: the limit is on the head, not on the reads.
      if (end + 4 > maxHeadBytes) return { error: text(431, "Request head too large\n") };
      const parsed = parseHead(decodeLatin1(buffer.subarray(0, end)), tcp.localAddr as Deno.NetAddr);
      if (parsed instanceof Response) return { error: parsed };
      return { ...parsed, rest: filled > end + 4 ? buffer.slice(end + 4, filled) : null };
    }
    if (filled >= maxHeadBytes) return { error: text(431, "Request head too large\n") };
  }
}

function indexOfHeadEnd(bytes: Uint8Array, from: number, to: number): number {
  for (let i = from; i + 3 < to; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}

/**
 * Parses a request head (without its final blank line), or answers why it
 * cannot. `local` is the listening address, the URL's host for an HTTP/1.0
 * request without `Host`.
 *
 * @example
 * ```ts
 * const parsed = parseHead("GET /?a=1 HTTP/1.1\r\nHost: example.com", { transport: "tcp", hostname: "127.0.0.1", port: 80 });
 * // parsed.req.url === "http://example.com/?a=1"
 * ```
 */
export function parseHead(head: string, local: Deno.NetAddr): ParsedHead | Response {
  const lines = head.split("\r\n");
  // The target is anything but ASCII whitespace (`\S` would stop at a raw 0xA0, read as U+00A0).
  const match = /^([A-Z]+) ([^\t\n\v\f\r ]+) HTTP\/1\.([01])$/.exec(lines[0]!);
  if (!match) return text(400, "Bad request line\n");
  // Origin form (/path?query), or absolute form (http://host/path?query),
  // which a server must accept (RFC 9112 3.2.2).
  let target = match[2]!;
  let authority: string | null = null;
  if (!target.startsWith("/")) {
    const absolute = /^https?:\/\/([^/?#]*)([^#]*)$/i.exec(target);
    if (!absolute || !isHost(absolute[1]!)) return text(400, "Bad request target\n");
    authority = absolute[1]!;
    target = absolute[2]!.startsWith("/") ? absolute[2]! : `/${absolute[2]}`;
  }
  target = encodeRawBytes(target);
  const headers = new HeaderFields();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    // Not trimmed: whitespace before the colon, or a folded line, is a 400 (RFC 9112 5.1, 5.2).
    const name = line.slice(0, colon);
    if (colon <= 0 || !isToken(name)) return text(400, "Bad header line\n");
    // Only spaces and tabs around a value are whitespace (RFC 9110 5.6.3): `String.trim()` also took VT, FF, NBSP.
    const value = trimOws(line.slice(colon + 1));
    if (hasControl(value)) return text(400, "Bad header value\n");
    headers.add(name, value);
  }
  const host = headers.get("host");
  // HTTP/1.0 had no Host header; an HTTP/1.1 request without one is a 400 (RFC 9112 3.2).
  if (host === null && match[3] === "1") return text(400, "Missing Host header\n");
  // Pasted before the target, a Host with a path, query or fragment would choose the path or the query.
  if (host !== null && !isHost(host)) return text(400, "Bad Host header\n");
  // The absolute form's host wins over the Host header's (RFC 9112 3.2.2).
  const url = `http://${authority ?? host ?? authorityOf(local)}${target}`;
  if (!URL.canParse(url)) return text(400, "Bad request target\n");
  return { req: { method: match[1]!, url, headers }, http10: match[3] === "0" };
}
