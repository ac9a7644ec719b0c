/**
 * The publisher's HTTP API as a plain handler: `GET /?content=...` (the
 * original's API), or the same fields POSTed as a form, publishes to the
 * channel hub and answers `ok` once the hub has acknowledged the publish.
 * `/healthz` and `/metrics` tell operators how it is doing.
 *
 * @module
 */

import { ChannelError } from "../channel/client.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { PROMETHEUS_CONTENT_TYPE } from "../shared/metrics.ts";
import { secretsEqual } from "../shared/secret.ts";
import { type HubLink, PublisherMetrics, type PublishTargetKind } from "./metrics.ts";
import {
  BROADCAST_SUBJECT,
  CONNECTION_ID_PATTERN,
  type PushData,
  WORKER_ID_PATTERN,
  workerSubject,
} from "../shared/address.ts";
import type { Json } from "../shared/json.ts";
import { type Fields, parseUrlEncoded, readForm } from "./form.ts";
import { Rejection } from "./_rejection.ts";

/** Largest content accepted by default, in UTF-8 bytes. */
export const DEFAULT_MAX_CONTENT_BYTES = 65536;

/**
 * What the handler needs of the hub: publishing, and the link's state for
 * `/healthz` and `/metrics`. A {@linkcode ChannelClient} fits.
 */
export interface PublishTarget extends HubLink {
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
  /**
   * Key every publish must present, as `Authorization: Bearer KEY` or as the
   * `api_key` query parameter. `/healthz`, `/metrics` and CORS preflights
   * need none. Unset or empty, publishes need no key. @default {undefined}
   */
  apiKey?: string;
  /** Where requests and publishes are counted for `/metrics`. @default {new PublisherMetrics(hub)} */
  metrics?: PublisherMetrics;
  /** Clock for publish durations, in milliseconds. @default {performance.now} */
  now?: () => number;
}

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
type Field = "content" | "to_worker_id" | "to_connection_id" | "api_key";

/** One path's methods. The original serves its API on every path, we on `/` only. */
interface Route {
  /** The exact pathname. */
  path: string;
  /** The methods, in the `Allow` header's order. */
  methods: string[];
  /** How a 405 says what to use instead. */
  hint: string;
}

const PUBLISH_ROUTE: Route = { path: "/", methods: ["GET", "POST", "OPTIONS"], hint: "use GET or POST" };
const HEALTHZ_ROUTE: Route = { path: "/healthz", methods: ["GET"], hint: "use GET" };
const METRICS_ROUTE: Route = { path: "/metrics", methods: ["GET"], hint: "use GET" };
/**
 * Keyed by exact path. Not `URLPattern`: its `test` costs about 11 µs on
 * this machine, a third of a whole publish's CPU in the publisher.
 */
const ROUTES = new Map([PUBLISH_ROUTE, HEALTHZ_ROUTE, METRICS_ROUTE].map((route) => [route.path, route]));

const MISSING_KEY = "Unauthorized: this publisher needs an API key (Authorization: Bearer KEY or api_key=KEY)";
const WRONG_KEY = "Unauthorized: wrong API key";
/** `Authorization: Bearer KEY` (RFC 6750 §2.1); the scheme is case-insensitive. */
const BEARER = /^Bearer +(\S+) *$/i;

/**
 * Creates the publish handler. It routes `/` only; GET reads `content`,
 * `to_worker_id` and `to_connection_id` from the query string, POST from an
 * urlencoded or multipart form, falling back to the query string per field.
 * Without an address the content goes to every pusher (`broadcast`); with
 * both parts of one, to one connection. The answer, `ok` with header
 * `X-Pushers-Reached`, waits for the hub's acknowledgement; every failure
 * gets its own status and a one-line reason.
 *
 * With `apiKey`, a publish without the key answers 401. `GET /healthz`
 * answers `ok` while the hub link is up, 503 otherwise; `GET /metrics`
 * answers the Prometheus text of `metrics`.
 *
 * @example
 * ```ts
 * const hub = new ChannelClient({ port: 2206 });
 * Deno.serve({ port: 4237 }, createPublishHandler({ hub, apiKey: "s3cret" }));
 * // curl -H 'Authorization: Bearer s3cret' 'http://127.0.0.1:4237/?content=hello'  -> ok
 * ```
 */
export function createPublishHandler(options: PublishHandlerOptions): (req: Request) => Promise<Response> {
  const hub = options.hub;
  const publishTimeout = options.publishTimeout ?? 5000;
  const maxContentBytes = options.maxContentBytes ?? DEFAULT_MAX_CONTENT_BYTES;
  const logger = options.logger ?? createLogger("publisher");
  const apiKey = options.apiKey || undefined;
  const metrics = options.metrics ?? new PublisherMetrics(hub);
  const now = options.now ?? (() => performance.now());

  /** Rejects a publish that does not present the API key; the key is compared in constant time. */
  function authorize(req: Request, query: Fields): void {
    if (apiKey === undefined) return;
    let given = req.headers.get("authorization")?.match(BEARER)?.[1];
    if (given === undefined) {
      try {
        given = query.get("api_key");
      } catch {
        // Bad percent-encoding cannot be the key; the answer must not say more.
        given = "";
      }
    }
    if (given === undefined) {
      throw new Rejection(401, MISSING_KEY, { headers: { "WWW-Authenticate": "Bearer" } });
    }
    if (!secretsEqual(given, apiKey)) {
      throw new Rejection(401, WRONG_KEY, { headers: { "WWW-Authenticate": 'Bearer error="invalid_token"' } });
    }
  }

  async function publish(req: Request, url: URL, started: number): Promise<Response> {
    const query = parseUrlEncoded(url.search.slice(1), "query");
    // Before the body: a caller without the key does not get it read.
    authorize(req, query);
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

    let channel = BROADCAST_SUBJECT;
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
      channel = workerSubject(workerId);
      data = { to_connection_id: Number(connectionId), content } satisfies PushData;
    }

    const target: PublishTargetKind = channel === BROADCAST_SUBJECT ? "broadcast" : "connection";
    logger.debug("publishing", { method: req.method, target, bytes: contentBytes });
    let reached: number;
    try {
      // Not req.signal: Deno.serve aborts it after every response (legacy
      // behaviour, with a warning), and a publish, once sent, cannot be taken back.
      reached = await hub.publish(channel, data, { timeout: publishTimeout });
    } catch (error) {
      throw toRejection(error);
    }
    if (reached === 0 && channel !== BROADCAST_SUBJECT) {
      // A restarted pusher draws new worker ids, so addresses from before miss.
      throw new Rejection(404, `No pusher worker ${workerId} is connected: the address is stale or wrong`, {
        logReason: "No pusher worker is connected: the address is stale or wrong",
      });
    }
    metrics.countPublish(target, reached, (now() - started) / 1000);
    logger.debug("published", { method: req.method, target, reached });
    return text(200, "ok", { "X-Pushers-Reached": String(reached) });
  }

  async function route(req: Request, url: URL, started: number): Promise<Response> {
    const matched = ROUTES.get(url.pathname);
    if (matched === undefined) throw new Rejection(404, `Not found: ${url.pathname}`);
    if (!matched.methods.includes(req.method)) {
      throw new Rejection(405, `Method ${req.method} not allowed: ${matched.hint}`, {
        headers: { Allow: matched.methods.join(", ") },
      });
    }
    switch (matched) {
      case HEALTHZ_ROUTE:
        // Not a Rejection: probes poll it, and a down link is logged by the client already.
        return hub.connected ? text(200, "ok") : text(503, "hub link down\n");
      case METRICS_ROUTE:
        return new Response(metrics.render(), { headers: { ...CORS, "Content-Type": PROMETHEUS_CONTENT_TYPE } });
      default:
        if (req.method === "OPTIONS") return new Response(null, { status: 204, headers: PREFLIGHT });
        return await publish(req, url, started);
    }
  }

  async function answer(req: Request, url: URL, started: number): Promise<Response> {
    const fields = { method: req.method, path: url.pathname };
    try {
      return await route(req, url, started);
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
  }

  return async function handle(req: Request): Promise<Response> {
    const started = now();
    const response = await answer(req, new URL(req.url), started);
    metrics.countRequest(response.status);
    return response;
  };
}

function text(status: number, body: string, headers: Record<string, string> = {}): Response {
  // Set one by one: a headers record in the init costs about 8 µs here, a
  // quarter of a publish's CPU; four set() calls cost 2.
  const response = new Response(body, { status });
  for (const [name, value] of Object.entries(CORS)) response.headers.set(name, value);
  for (const [name, value] of Object.entries(headers)) response.headers.set(name, value);
  response.headers.set("Content-Type", TEXT);
  return response;
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
    case "too_large":
      return new Rejection(413, `Content too large for the hub: ${error.message}`);
  }
}
