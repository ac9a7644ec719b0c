/**
 * Reading the fields of a publish: a query string, or a POSTed
 * `application/x-www-form-urlencoded` or `multipart/form-data` body, each
 * value decoded when read and checked to be UTF-8. What does not parse is
 * refused with a {@linkcode Rejection} that names the field.
 *
 * @module
 */

import { concat } from "../shared/bytes.ts";
import { BodyTooLargeError } from "../shared/http_server.ts";
import { Rejection } from "./_rejection.ts";

/**
 * Bytes a form may hold beyond `maxContentBytes`: percent-encoding triples
 * each byte, and the other fields and multipart headers need some room.
 */
export const FORM_OVERHEAD_BYTES = 16 * 1024;

/** The fields of a query string or form. */
export interface Fields {
  /**
   * The last value of field `name`, decoded, or undefined when absent.
   *
   * @throws {Rejection} 400 when that value is malformed (bad
   * percent-encoding, not UTF-8, a file).
   */
  get(name: string): string | undefined;
}

/**
 * Parses `application/x-www-form-urlencoded` text the way PHP's `parse_str`
 * does for plain names: split on `&`, then on the first `=`; `+` is a space;
 * the last duplicate wins. Values are decoded when read, so a malformed one
 * is rejected naming its field and `source`, and one that is never read
 * (a duplicate that lost, an unknown field) cannot be. `URLSearchParams` is
 * not used: it turns bad percent-encoding and invalid UTF-8 into U+FFFD
 * without a word.
 *
 * @example
 * ```ts
 * import { parseUrlEncoded } from "./form.ts";
 *
 * parseUrlEncoded("content=a+b%E2%82%AC&content=c", "query").get("content"); // "c"
 * parseUrlEncoded("content=%ZZ", "query").get("content"); // throws: Invalid query: bad percent-encoding or non-UTF-8 in content
 * ```
 */
export function parseUrlEncoded(text: string, source: "query" | "form body"): Fields {
  const raw = new Map<string, string>();
  for (const pair of text.split("&")) {
    if (pair === "") continue;
    const eq = pair.indexOf("=");
    const name = decode(eq === -1 ? pair : pair.slice(0, eq));
    // A name that does not decode cannot be one of the fields read here.
    if (name !== null) raw.set(name, eq === -1 ? "" : pair.slice(eq + 1));
  }
  return {
    get(name) {
      const value = raw.get(name);
      if (value === undefined) return undefined;
      const decoded = decode(value);
      if (decoded === null) {
        throw new Rejection(400, `Invalid ${source}: bad percent-encoding or non-UTF-8 in ${name}`);
      }
      return decoded;
    },
  };
}

function decode(component: string): string | null {
  // Most names and many values need neither step: each is a copy of the string, on every publish's path.
  const spaced = component.includes("+") ? component.replaceAll("+", " ") : component;
  if (!spaced.includes("%")) return spaced;
  try {
    return decodeURIComponent(spaced);
  } catch {
    return null;
  }
}

/**
 * Reads a POST body as form fields, bounded by what `maxContentBytes` of
 * content needs (`maxContentBytes * 3 + FORM_OVERHEAD_BYTES` bytes). A body
 * with neither a content type nor bytes (`curl -X POST '...?content=hi'`)
 * has no fields.
 *
 * @throws {Rejection} 413 over the bound, 415 for another content type, 400
 * for a body that does not parse.
 */
export async function readForm(req: Request, maxContentBytes: number): Promise<Fields> {
  const limit = maxContentBytes * 3 + FORM_OVERHEAD_BYTES;
  const contentType = req.headers.get("content-type") ?? "";
  const mediaType = contentType.split(";", 1)[0]!.trim().toLowerCase();
  if (mediaType === "application/x-www-form-urlencoded") {
    return parseUrlEncoded(percentEncodeHighBytes(await readBody(req, limit)), "form body");
  }
  if (mediaType === "multipart/form-data") return await parseMultipart(await readBody(req, limit), contentType);
  // `curl -X POST '...?content=hi'` sends neither a type nor a body: the query is all there is.
  if (mediaType === "" && (await readBody(req, limit)).length === 0) return { get: () => undefined };
  throw new Rejection(
    415,
    `Unsupported content type: ${mediaType || "none"}; send application/x-www-form-urlencoded or multipart/form-data`,
  );
}

/** The text fields of a multipart body; a value whose bytes were not UTF-8 is refused when read. */
async function parseMultipart(bytes: Uint8Array<ArrayBuffer>, contentType: string): Promise<Fields> {
  let form: FormData;
  try {
    form = await new Response(bytes, { headers: { "content-type": contentType } }).formData();
  } catch {
    throw new Rejection(400, "Invalid form body: cannot parse it as multipart/form-data");
  }
  // FormData decodes text fields leniently: invalid UTF-8 becomes U+FFFD.
  // A value with one is checked in its own part's bytes, and in those of
  // every other part of its name (the last one's value is the one read).
  let parts: Map<string, Uint8Array[]> | undefined;
  const carried = (name: string) => {
    parts ??= partsByName(bytes, contentType);
    const own = parts.get(name);
    return own !== undefined && own.every(isUtf8);
  };
  return {
    get(name) {
      const value = form.getAll(name).at(-1);
      if (value === undefined) return value;
      if (typeof value !== "string") {
        throw new Rejection(400, `Invalid form body: ${name} must be a text field, not a file`);
      }
      if (value.includes("\uFFFD") && !carried(name)) {
        throw new Rejection(400, `Invalid form body: non-UTF-8 in ${name}`);
      }
      return value;
    },
  };
}

/** One character per byte, so that a search for bytes is a string search (linear, unlike a naive one). */
const byteText = new TextDecoder("latin1");
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

const BOUNDARY = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i;
/** The name in a part's `Content-Disposition` (not its `filename`), quoted or not. */
const DISPOSITION_NAME = /^content-disposition:[^\r\n]*;\s*name=(?:"([^"]*)"|([^;\s]*))/im;

/**
 * The value bytes of a multipart body's parts, by the name their
 * `Content-Disposition` gives, every part of a name in order. Only read to
 * vouch for a value that FormData decoded with a U+FFFD, so a part it does
 * not find (an odd header, a name that is not ASCII) leaves that value
 * refused, never let through.
 */
function partsByName(bytes: Uint8Array, contentType: string): Map<string, Uint8Array[]> {
  const byName = new Map<string, Uint8Array[]>();
  const boundary = BOUNDARY.exec(contentType);
  if (!boundary) return byName;
  const text = byteText.decode(bytes);
  const delimiter = `\r\n--${boundary[1] ?? boundary[2]}`;
  // The first delimiter may open the body, without the CRLF before it.
  let at = text.startsWith(delimiter.slice(2)) ? -2 : text.indexOf(delimiter);
  while (at !== -1) {
    const start = at + delimiter.length;
    // The part ends where the next delimiter (or the close delimiter) begins.
    const next = text.indexOf(delimiter, start);
    if (next === -1) break;
    const headEnd = text.indexOf("\r\n\r\n", start);
    const disposition = headEnd !== -1 && headEnd < next ? DISPOSITION_NAME.exec(text.slice(start, headEnd)) : null;
    if (disposition !== null) {
      const name = disposition[1] ?? disposition[2]!;
      byName.set(name, [...(byName.get(name) ?? []), bytes.subarray(headEnd + 4, next)]);
    }
    at = next;
  }
  return byName;
}

function isUtf8(bytes: Uint8Array): boolean {
  try {
    strictUtf8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/**
 * Reads the whole body of `req`.
 *
 * @throws {Rejection} 413 as soon as it passes `limit` bytes (before reading
 * anything when `content-length` says so), 400 when it cannot be read.
 */
export async function readBody(req: Request, limit: number): Promise<Uint8Array<ArrayBuffer>> {
  const tooLarge = () => new Rejection(413, `Body too large: over the ${limit}-byte limit`);
  if (Number(req.headers.get("content-length")) > limit) throw tooLarge();
  if (req.body === null) return new Uint8Array();
  const reader = req.body.getReader();
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let size = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > limit) {
        await reader.cancel();
        throw tooLarge();
      }
      chunks.push(value);
    }
  } catch (error) {
    if (error instanceof Rejection) throw error;
    // A chunked body past the server's own limit: that limit is at least this one.
    if (error instanceof BodyTooLargeError) throw tooLarge();
    throw new Rejection(400, `Cannot read the body: ${(error as Error).message}`);
  }
  return concat(chunks, size);
}

/**
 * Turns a urlencoded body into text for {@linkcode parseUrlEncoded}. Raw
 * bytes above 0x7f (`curl -d 'content=€'` sends them) become `%XX`, so one
 * decoder checks UTF-8 for encoded and raw bytes alike.
 *
 * @example
 * ```ts
 * import { percentEncodeHighBytes } from "./form.ts";
 *
 * percentEncodeHighBytes(new TextEncoder().encode("a=€")); // "a=%e2%82%ac"
 * ```
 */
export function percentEncodeHighBytes(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += byte < 0x80 ? String.fromCharCode(byte) : `%${byte.toString(16)}`;
  return text;
}
