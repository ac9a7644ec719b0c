/**
 * What HTTP/1.x request heads share between our two servers (the pusher's
 * WebSocket server and the publisher's HTTP server): the checks of a host,
 * a token, and the parse of a request head into its parts (RFC 9112), or
 * into the status and one-line reason that say why not.
 *
 * @module
 */

/**
 * `host[:port]` (RFC 9110 7.2, RFC 3986 3.2.2): a name or IPv4 address, or
 * an IP literal in brackets, and an optional port; nothing else. One
 * character class or one `%XX` at a time: no backtracking.
 */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+)(?::[0-9]*)?$/;

/** True when `value` is `host[:port]` and nothing else: no user, path, query or fragment. */
export function isHost(value: string): boolean {
  // Clients send the same Host again and again: the last one that passed is not checked twice.
  if (value === lastHost) return true;
  // The URL parser has the last word on what the pattern lets through (a port over 65535, a bad IPv6 address).
  if (!HOST.test(value) || !URL.canParse(`http://${value}/`)) return false;
  lastHost = value;
  return true;
}

let lastHost = "";

/** An HTTP token (RFC 9110 5.6.2): what a header name and a subprotocol are made of. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** True when `value` is an HTTP token (RFC 9110 5.6.2), as a header name or a subprotocol must be. */
export function isToken(value: string): boolean {
  return TOKEN.test(value);
}

/** `host[:port]` of a listening address, with an IPv6 address in brackets. */
export function authorityOf(addr: Deno.NetAddr): string {
  return addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`;
}

/** A request head, parsed: what the publisher's server builds its `Request` from. */
export interface RequestHead {
  /** `GET`, `POST`, ... */
  readonly method: string;
  /** The path and query: the origin form, or taken from an absolute-form target. */
  readonly target: string;
  /** The host: an absolute-form target's, else the `Host` header's, else null (HTTP/1.0 without one). */
  readonly host: string | null;
  /** True for HTTP/1.0, false for HTTP/1.1 (and a later 1.x, read as 1.1). */
  readonly http10: boolean;
  /** Header fields in the order they came, names as sent. */
  readonly fields: [string, string][];
}

/** Why a head cannot be served: the status to answer and its one-line reason (no newline). */
export interface HeadError {
  readonly status: 400 | 431 | 505;
  readonly reason: string;
}

/**
 * A request line. The target is anything but ASCII whitespace: not `\S`, which also stops at U+00A0, the
 * raw byte 0xA0 of a UTF-8 "à" or "你" read as Latin-1.
 */
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([^\t\n\v\f\r ]+) HTTP\/(\d)\.(\d)$/;
const HIGH_BYTE = /[\x80-\xff]/;
const HIGH_BYTES = /[\x80-\xff]/g;
const ABSOLUTE = /^https?:\/\/([^/?#]*)([^#]*)$/i;

/**
 * A request target read as Latin-1 (`decodeLatin1`), its raw bytes above
 * 0x7F percent-encoded as the bytes they were, for the URL parser (which
 * would encode each such character as UTF-8: two bytes for one).
 *
 * @example
 * ```ts
 * import { encodeRawBytes } from "./http_head.ts";
 *
 * encodeRawBytes("/?content=\xe2\x82\xac"); // "/?content=%E2%82%AC"
 * ```
 */
export function encodeRawBytes(target: string): string {
  if (!HIGH_BYTE.test(target)) return target;
  return target.replace(HIGH_BYTES, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * Parses a request head (without its final blank line), or says why it
 * cannot be served: 400 for a malformed line, 505 for an HTTP version other
 * than 1.x.
 *
 * @example
 * ```ts
 * import { parseRequestHead } from "./http_head.ts";
 *
 * const head = parseRequestHead("GET /?a=1 HTTP/1.1\r\nHost: example.com");
 * // head.target === "/?a=1", head.host === "example.com"
 * ```
 */
export function parseRequestHead(head: string): RequestHead | HeadError {
  const lines = head.split("\r\n");
  const match = REQUEST_LINE.exec(lines[0]!);
  if (!match) return { status: 400, reason: "Bad request line" };
  if (match[3] !== "1") return { status: 505, reason: `HTTP version not supported: HTTP/${match[3]}.${match[4]}` };
  const http10 = match[4] === "0";
  // Origin form (/path?query), or absolute form (http://host/path?query),
  // which a server must accept (RFC 9112 3.2.2). `*` (OPTIONS) and the
  // authority form (CONNECT) serve nothing here.
  let target = match[2]!;
  let authority: string | null = null;
  if (!target.startsWith("/")) {
    const absolute = ABSOLUTE.exec(target);
    if (!absolute || !isHost(absolute[1]!)) return { status: 400, reason: "Bad request target" };
    authority = absolute[1]!;
    target = absolute[2]!.startsWith("/") ? absolute[2]! : `/${absolute[2]}`;
  }
  target = encodeRawBytes(target);
  const fields: [string, string][] = [];
  let host: string | null = null;
  let hosts = 0;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(":");
    // Not trimmed: whitespace before the colon, or a folded line, is a 400 (RFC 9112 5.1, 5.2).
    const name = line.slice(0, colon);
    if (colon <= 0 || !TOKEN.test(name)) return { status: 400, reason: "Bad header line" };
    // Only spaces and tabs are whitespace around a value (RFC 9110 5.6.3),
    // not what String.trim takes too: VT, FF, NBSP would make
    // `Transfer-Encoding:\vchunked` chunked here and not to a proxy before us.
    const value = trimOws(line.slice(colon + 1));
    // Control characters but HTAB are invalid in a value (RFC 9110 5.5), NUL, CR and LF dangerous.
    if (hasControl(value)) return { status: 400, reason: "Bad header value" };
    if (name.length === 4 && name.toLowerCase() === "host") {
      host = value;
      hosts++;
    }
    fields.push([name, value]);
  }
  // HTTP/1.0 had no Host header; an HTTP/1.1 request without one, or with two, is a 400 (RFC 9112 3.2).
  if (hosts > 1) return { status: 400, reason: "More than one Host header" };
  if (host === null && !http10) return { status: 400, reason: "Missing Host header" };
  // Pasted before the target, a Host with a path, query or fragment would choose the path or the query.
  if (host !== null && !isHost(host)) return { status: 400, reason: "Bad Host header" };
  // The absolute form's host wins over the Host header's (RFC 9112 3.2.2).
  return { method: match[1]!, target, host: authority ?? host, http10, fields };
}

/** Whether `value` holds a control character other than HTAB: a header value may not (RFC 9110 5.5). */
export function hasControl(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if ((code < 0x20 && code !== 0x09) || code === 0x7f) return true;
  }
  return false;
}

/**
 * `value` without the optional whitespace around it: spaces and tabs
 * (RFC 9110 5.6.3), and nothing else.
 *
 * @example
 * ```ts
 * import { trimOws } from "./http_head.ts";
 *
 * trimOws(" \tchunked "); // "chunked"
 * trimOws("\vchunked"); // "\vchunked"
 * ```
 */
export function trimOws(value: string): string {
  let start = 0;
  let end = value.length;
  while (start < end && isOws(value.charCodeAt(start))) start++;
  while (end > start && isOws(value.charCodeAt(end - 1))) end--;
  return start === 0 && end === value.length ? value : value.slice(start, end);
}

function isOws(code: number): boolean {
  return code === 0x20 || code === 0x09;
}

/** Whether {@linkcode parseRequestHead} refused the head. */
export function isHeadError(head: RequestHead | HeadError): head is HeadError {
  return "status" in head;
}
