/**
 * Reading the JSON body of a server-API call: bounded in bytes before it is
 * read whole and in nesting before it is parsed, valid UTF-8, an object.
 * As Centrifugo's API does, the body is read as JSON without a
 * `Content-Type: application/json`: `curl --data '{...}'`, the call its
 * documentation shows, sends `application/x-www-form-urlencoded`.
 *
 * @module
 */

import { StrictUtf8Decoder } from "../shared/bytes.ts";
import type { Json } from "../shared/json.ts";
import { readBody } from "./form.ts";
import { Rejection } from "./_rejection.ts";

/** Largest JSON body by default, in bytes. */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/** Deepest nesting of arrays and objects in a JSON body by default; the body's own object is level 1. */
export const DEFAULT_MAX_JSON_DEPTH = 32;

const utf8 = new StrictUtf8Decoder();

/** What a JSON body is read from: a fetch `Request`, or a request whose whole body the server already read. */
export interface JsonBodySource {
  readonly headers: { get(name: string): string | null };
  /** The whole body, as bytes or as the text they decoded to. @throws {Rejection} 413 past `limit` bytes, 400 not UTF-8 */
  body(limit: number): Uint8Array | string | Promise<Uint8Array>;
}

/** A fetch `Request` as a {@linkcode JsonBodySource}. */
export function requestBody(req: Request): JsonBodySource {
  return { headers: req.headers, body: (limit) => readBody(req, limit) };
}

/**
 * The body reader of a request whose whole body the server already read:
 * `bytes` is a view of the server's buffer, valid only during the call that
 * hands it over, so it is decoded now. Its text, unless it is over the limit
 * or not UTF-8.
 */
export function readBodyOf(bytes: Uint8Array): JsonBodySource["body"] {
  const length = bytes.length;
  let text: string | null;
  try {
    text = utf8.decode(bytes);
  } catch {
    text = null;
  }
  let taken = false;
  // Once: the text is let go when read, so that a request waiting for the
  // bus does not keep its body in memory (an async call holds its
  // arguments until it returns).
  return (limit) => {
    if (taken) throw new TypeError("Body already read");
    taken = true;
    if (length > limit) throw new Rejection(413, `Body too large: over the ${limit}-byte limit`);
    if (text === null) throw notUtf8();
    const read = text;
    text = null;
    return read;
  };
}

/**
 * Media types that are not JSON's but whose body is read as JSON all the
 * same: what a client sends JSON text under without saying so (`text/plain`,
 * and `application/x-www-form-urlencoded`, curl's `--data`).
 */
const UNDECLARED_JSON = new Set(["text/plain", "application/x-www-form-urlencoded"]);

/**
 * Reads a request's body as a JSON object.
 *
 * @throws {Rejection} 415 for a content type that cannot hold JSON text (a
 * multipart form, a file), 413 over `maxBodyBytes`, 400 for a body that is
 * not UTF-8, nests deeper than `maxDepth`, does not parse, or is not an
 * object; a body that does not parse and was not sent as JSON says which type
 * it came as.
 */
export async function readJsonBody(
  req: JsonBodySource,
  limits: { maxBodyBytes: number; maxDepth: number },
): Promise<{ [key: string]: Json }> {
  const contentType = req.headers.get("content-type") ?? "";
  const mediaType = contentType.split(";", 1)[0]!.trim().toLowerCase();
  const undeclared = UNDECLARED_JSON.has(mediaType);
  if (!undeclared && mediaType !== "" && mediaType !== "application/json" && !mediaType.endsWith("+json")) {
    throw new Rejection(415, `Unsupported content type: ${mediaType}; send application/json`);
  }
  const read = await req.body(limits.maxBodyBytes);
  let text: string;
  if (typeof read === "string") text = read;
  else {
    try {
      text = utf8.decode(read);
    } catch {
      throw notUtf8();
    }
  }
  const depth = jsonDepth(text);
  if (depth > limits.maxDepth) {
    throw new Rejection(400, `Invalid JSON: nested ${depth} levels deep, the limit is ${limits.maxDepth}`);
  }
  let body: Json;
  try {
    body = JSON.parse(text);
  } catch (error) {
    const sentAs = undeclared ? ` (sent as ${mediaType})` : "";
    throw new Rejection(400, `Invalid JSON${sentAs}: ${(error as SyntaxError).message}`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new Rejection(400, "Invalid JSON: the body must be an object");
  }
  return body;
}

/**
 * The deepest nesting of `[` and `{` in JSON text, outside strings, read
 * before parsing so that a deep body costs a scan and not a parse. Text that
 * is not JSON gets a number all the same; the parser refuses it later.
 *
 * @example
 * ```ts
 * import { jsonDepth } from "./_json_body.ts";
 *
 * jsonDepth('{"a":[1,{"b":"[["}]}'); // 3
 * ```
 */
export function jsonDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // Over the string to its closing quote, found natively: most of a body is strings (a third of the time per
      // character). A quote is escaped by an odd run of backslashes before it.
      do {
        i = text.indexOf('"', i + 1);
        if (i === -1) return deepest;
      } while (backslashesBefore(text, i) % 2 === 1);
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > deepest) deepest = depth;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return deepest;
}

function backslashesBefore(text: string, end: number): number {
  let i = end;
  while (i > 0 && text.charCodeAt(i - 1) === 0x5c) i--;
  return end - i;
}

function notUtf8(): Rejection {
  return new Rejection(400, "Invalid JSON: the body is not UTF-8");
}
