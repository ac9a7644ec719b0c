/**
 * The publisher's HTTP API as a plain handler: `GET /?content=...` (the
 * original's API), or the same fields POSTed as a form, publishes to the
 * channel hub and answers `ok` once the hub has acknowledged the publish.
 *
 * @module
 */

import { ChannelError } from "../channel/client.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import {
  BROADCAST_CHANNEL,
  CONNECTION_ID_PATTERN,
  type Json,
  type PushData,
  WORKER_ID_PATTERN,
  workerChannel,
} from "../shared/wire.ts";

/** Largest content accepted by default, in UTF-8 bytes. */
export const DEFAULT_MAX_CONTENT_BYTES = 65536;

/** What the handler needs of the hub. A {@linkcode ChannelClient} fits. */
export interface PublishTarget {
  /** Publishes `data`; resolves with how many subscribers the hub reached. */
  publish(
    channels: string | string[],
    data: Json,
    options?: { timeout?: number; signal?: AbortSignal },
  ): Promise<number>;
}

/** Options for {@linkcode createPublishHandler}. */
export interface PublishHandlerOptions {
  /** Where publishes go, usually a {@linkcode ChannelClient}. Required. */
  hub: PublishTarget;
  /** How long a publish waits for the hub's acknowledgement, in milliseconds. @default {5000} */
  publishTimeout?: number;
  /** Largest `content`, in UTF-8 bytes; larger gets 413. @default {65536} */
  maxContentBytes?: number;
  /** Where rejected and failed requests are logged. @default {createLogger("publisher")} */
  logger?: Logger;
}

/** The only route: the original serves its API on every path, we on `/`. */
const ROUTE = new URLPattern({ pathname: "/" });
const ALLOW = "GET, POST, OPTIONS";
const TEXT = "text/plain;charset=utf-8";
const CORS: Record<string, string> = {
  "Access-Control-Allow-Origin": "*",
  // Without it a page on another origin cannot read these headers.
  "Access-Control-Expose-Headers": "X-Pushers-Reached, Retry-After",
};
const PREFLIGHT: Record<string, string> = {
  ...CORS,
  "Access-Control-Allow-Methods": "GET, POST",
  "Access-Control-Allow-Headers": "Authorization, Content-Type",
};
/**
 * Bytes a form may hold beyond `maxContentBytes`: percent-encoding triples
 * each byte, and the other fields and multipart headers need some room.
 */
const FORM_OVERHEAD_BYTES = 16 * 1024;

type Field = "content" | "to_worker_id" | "to_connection_id";

/** A request the handler answers with a 4xx or 5xx and a one-line reason. */
class Rejection extends Error {
  readonly status: number;
  readonly headers: Record<string, string>;
  /** What the log says, when the reason holds a value the request sent. */
  readonly logReason: string;

  constructor(status: number, reason: string, options: { headers?: Record<string, string>; logReason?: string } = {}) {
    super(reason);
    this.status = status;
    this.headers = options.headers ?? {};
    this.logReason = options.logReason ?? reason;
  }
}

/** The fields of a query string or form; reading one may reject it as malformed. */
interface Fields {
  get(name: Field): string | undefined;
}

/**
 * Creates the publish handler. It routes `/` only; GET reads `content`,
 * `to_worker_id` and `to_connection_id` from the query string, POST from an
 * urlencoded or multipart form, falling back to the query string per field.
 * Without an address the content goes to every pusher (`broadcast`); with
 * both parts of one, to one connection. The answer, `ok` with header
 * `X-Pushers-Reached`, waits for the hub's acknowledgement; every failure
 * gets its own status and a one-line reason.
 *
 * @example
 * ```ts
 * const hub = new ChannelClient({ port: 2206 });
 * Deno.serve({ port: 4237 }, createPublishHandler({ hub }));
 * // curl 'http://127.0.0.1:4237/?content=hello'  -> ok
 * ```
 */
export function createPublishHandler(options: PublishHandlerOptions): (req: Request) => Promise<Response> {
  const hub = options.hub;
  const publishTimeout = options.publishTimeout ?? 5000;
  const maxContentBytes = options.maxContentBytes ?? DEFAULT_MAX_CONTENT_BYTES;
  const logger = options.logger ?? createLogger("publisher");

  async function publish(req: Request, url: URL): Promise<Response> {
    const query = parseUrlEncoded(url.search.slice(1), "query");
    const body = req.method === "POST" ? await readForm(req, maxContentBytes) : undefined;
    const field = (name: Field) => body?.get(name) ?? query.get(name);

    const content = field("content");
    // Unlike the original, "0" is content: PHP's empty("0") dropped it.
    if (content === undefined || content === "") {
      throw new Rejection(400, "Missing content: pass a non-empty content parameter");
    }
    const contentBytes = new TextEncoder().encode(content).length;
    if (contentBytes > maxContentBytes) {
      throw new Rejection(413, `Content too large: ${contentBytes} bytes, the limit is ${maxContentBytes}`);
    }
    // Empty counts as absent, so a form with blank address inputs broadcasts.
    const workerId = field("to_worker_id") || undefined;
    const connectionId = field("to_connection_id") || undefined;
    if ((workerId === undefined) !== (connectionId === undefined)) {
      throw new Rejection(
        400,
        "Incomplete address: to_worker_id and to_connection_id go together (both for one connection, neither to broadcast)",
      );
    }

    let channel = BROADCAST_CHANNEL;
    let data: Json = { content } satisfies PushData;
    if (workerId !== undefined && connectionId !== undefined) {
      if (!WORKER_ID_PATTERN.test(workerId)) {
        throw new Rejection(400, "Invalid to_worker_id: expected a worker id, 16 lowercase hex digits");
      }
      if (!CONNECTION_ID_PATTERN.test(connectionId)) {
        throw new Rejection(
          400,
          "Invalid to_connection_id: expected a connection id, a decimal integer of 1 to 15 digits",
        );
      }
      channel = workerChannel(workerId);
      data = { to_connection_id: Number(connectionId), content } satisfies PushData;
    }

    const target = channel === BROADCAST_CHANNEL ? "broadcast" : "connection";
    logger.debug("publishing", { method: req.method, target, bytes: contentBytes });
    let reached: number;
    try {
      // Not req.signal: Deno.serve aborts it after every response (legacy
      // behaviour, with a warning), and a publish, once sent, cannot be taken back.
      reached = await hub.publish(channel, data, { timeout: publishTimeout });
    } catch (error) {
      throw toRejection(error);
    }
    if (reached === 0 && channel !== BROADCAST_CHANNEL) {
      // A restarted pusher draws new worker ids, so addresses from before miss.
      throw new Rejection(404, `No pusher worker ${workerId} is connected: the address is stale or wrong`, {
        logReason: "No pusher worker is connected: the address is stale or wrong",
      });
    }
    logger.debug("published", { method: req.method, target, reached });
    return text(200, "ok", { "X-Pushers-Reached": String(reached) });
  }

  async function route(req: Request, url: URL): Promise<Response> {
    if (!ROUTE.test(url)) throw new Rejection(404, `Not found: ${url.pathname}`);
    switch (req.method) {
      case "GET":
      case "POST":
        return await publish(req, url);
      case "OPTIONS":
        return new Response(null, { status: 204, headers: PREFLIGHT });
      default:
        throw new Rejection(405, `Method ${req.method} not allowed: use GET or POST`, { headers: { Allow: ALLOW } });
    }
  }

  return async function handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const fields = { method: req.method, path: url.pathname };
    try {
      return await route(req, url);
    } catch (error) {
      if (error instanceof Rejection) {
        const line = { ...fields, status: error.status, reason: error.logReason };
        if (error.status >= 500) logger.warn("publish failed", line);
        else logger.info("request rejected", line);
        return text(error.status, `${error.message}\n`, error.headers);
      }
      logger.error("request failed", { ...fields, status: 500, error: String(error) });
      return text(500, "Internal error\n");
    }
  };
}

function text(status: number, body: string, headers: Record<string, string> = {}): Response {
  return new Response(body, { status, headers: { ...CORS, ...headers, "Content-Type": TEXT } });
}

/** Maps a failed publish to its answer; anything unforeseen is rethrown for a 500. */
function toRejection(error: unknown): unknown {
  if (!(error instanceof ChannelError)) return error;
  switch (error.code) {
    case "timeout":
    case "closed":
    case "overloaded":
      return new Rejection(503, `Hub unavailable: ${error.message}`, { headers: { "Retry-After": "1" } });
    case "refused":
      return new Rejection(502, `Hub refused the publish: ${error.message}`);
  }
}

/**
 * Parses `application/x-www-form-urlencoded` text the way PHP's `parse_str`
 * does for plain names: split on `&`, then on the first `=`; `+` is a space;
 * the last duplicate wins. Values are decoded when read, so a malformed one
 * is rejected naming its field. `URLSearchParams` is not used: it turns bad
 * percent-encoding and invalid UTF-8 into U+FFFD without a word.
 */
function parseUrlEncoded(text: string, source: "query" | "form body"): Fields {
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
  try {
    return decodeURIComponent(component.replaceAll("+", " "));
  } catch {
    return null;
  }
}

/** Reads a POST body as form fields, bounded by what `maxContentBytes` of content needs. */
async function readForm(req: Request, maxContentBytes: number): Promise<Fields> {
  const limit = maxContentBytes * 3 + FORM_OVERHEAD_BYTES;
  const contentType = req.headers.get("content-type") ?? "";
  const mediaType = contentType.split(";", 1)[0]!.trim().toLowerCase();
  if (mediaType === "application/x-www-form-urlencoded") {
    return parseUrlEncoded(percentEncodeHighBytes(await readBody(req, limit)), "form body");
  }
  if (mediaType === "multipart/form-data") {
    const bytes = await readBody(req, limit);
    let form: FormData;
    try {
      form = await new Response(bytes, { headers: { "Content-Type": contentType } }).formData();
    } catch {
      throw new Rejection(400, "Invalid form body: cannot parse it as multipart/form-data");
    }
    return {
      get(name) {
        const value = form.getAll(name).at(-1);
        if (value === undefined || typeof value === "string") return value;
        throw new Rejection(400, `Invalid form body: ${name} must be a text field, not a file`);
      },
    };
  }
  // `curl -X POST '...?content=hi'` sends neither a type nor a body: the query is all there is.
  if (mediaType === "" && (await readBody(req, limit)).length === 0) return { get: () => undefined };
  throw new Rejection(
    415,
    `Unsupported content type: ${mediaType || "none"}; send application/x-www-form-urlencoded or multipart/form-data`,
  );
}

/** Reads the whole body, or rejects with 413 as soon as it passes `limit` bytes. */
async function readBody(req: Request, limit: number): Promise<Uint8Array<ArrayBuffer>> {
  const tooLarge = () => new Rejection(413, `Body too large: over the ${limit}-byte limit`);
  if (Number(req.headers.get("content-length")) > limit) throw tooLarge();
  if (req.body === null) return new Uint8Array();
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
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
    throw new Rejection(400, `Cannot read the body: ${(error as Error).message}`);
  }
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.length;
  }
  return body;
}

/**
 * Turns a urlencoded body into text for {@linkcode parseUrlEncoded}. Raw
 * bytes above 0x7f (`curl -d 'content=€'` sends them) become `%XX`, so one
 * decoder checks UTF-8 for encoded and raw bytes alike.
 */
function percentEncodeHighBytes(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += byte < 0x80 ? String.fromCharCode(byte) : `%${byte.toString(16)}`;
  return text;
}
