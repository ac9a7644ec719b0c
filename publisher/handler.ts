/**
 * The publisher's HTTP API as a plain handler: `GET /?content=...` (the
 * original's API), or the same fields POSTed as a form, publishes on the
 * bus (the channel hub) and answers `ok` once the bus has taken the publish.
 * `POST /api/<method>` is the JSON server API (`api.ts`): publishes,
 * server-side subscriptions, disconnects and presence. `/healthz` and
 * `/metrics` tell operators how it is doing, and `/dashboard` shows them
 * (`dashboard.ts`).
 *
 * @module
 */

import { DEFAULT_MAX_CHANNEL_LENGTH, presenceQuery, routeOf } from "../shared/address.ts";
import { type Bus, BusError, coalescePublishes, type PublishOne, type RequestResult } from "../shared/bus.ts";
import { publishToConnection } from "./_connection_publish.ts";
import type { Json } from "../shared/json.ts";
import { isMiss, Router, share, text } from "../shared/http.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { PROMETHEUS_CONTENT_TYPE } from "../shared/metrics.ts";
import {
  API_METHODS,
  apiError,
  apiErrorBody,
  type ApiMethod,
  type ApiRequest,
  createApi,
  DEFAULT_COMMAND_TIMEOUT,
  DEFAULT_MAX_BATCH_COMMANDS,
  DEFAULT_MAX_BATCH_REPLY_BYTES,
  DEFAULT_MAX_HISTORY_LIMIT,
  DEFAULT_MAX_LISTED_CHANNELS,
  DEFAULT_MAX_PRESENCE_USERS,
  DEFAULT_PRESENCE_TIMEOUT,
  JSON_CONTENT_TYPE,
  unknownMethod,
} from "./api.ts";
import { info } from "./_api_replies.ts";
import { checkApiKey } from "./_api_key.ts";
import { createDashboard, DASHBOARD_API_PREFIX, type DashboardOptions } from "./dashboard.ts";
import { ConnectionEventStreams, type ConnectionEventStreamsOptions } from "./connection_events.ts";
import { DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_JSON_DEPTH, readBodyOf, requestBody } from "./_json_body.ts";
import { parseUrlEncoded } from "./form.ts";
import { PublisherMetrics, type PublishTargetKind } from "./metrics.ts";
import { type GetRequest, type PublishRequest, readPublishRequest } from "./_publish_request.ts";
import type { RawRequest, RefusalForm } from "../shared/http_server.ts";
import { busRejection, Rejection } from "./_rejection.ts";
import { busName } from "../shared/bus_address.ts";

/** Largest content accepted by default, in UTF-8 bytes. */
export const DEFAULT_MAX_CONTENT_BYTES = 65536;

/** Options for {@linkcode createPublishHandler}. */
export interface PublishHandlerOptions {
  /** Where publishes go (the hub's bus, a memory bus in tests); its link state feeds `/healthz` and `/metrics`. Required. */
  bus: Bus;
  /** How long a publish waits for the bus to take it, in milliseconds. @default {5000} */
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
  /** Where requests and publishes are counted for `/metrics`. @default {new PublisherMetrics(bus)} */
  metrics?: PublisherMetrics;
  /** Clock for publish durations, in milliseconds. @default {performance.now} */
  now?: () => number;
  /** Largest body of a server-API call (a batch's included), in bytes; larger gets 413. @default {1048576} */
  maxBodyBytes?: number;
  /** Deepest nesting of arrays and objects in a server-API body; deeper gets 400. @default {32} */
  maxJsonDepth?: number;
  /** Commands one `batch` holds at most; more gets 413. @default {1000} */
  maxBatchCommands?: number;
  /** Bytes of reads' answers (history, presence, channels) one `batch` holds at most; reads past them get 413. @default {16777216} */
  maxBatchReplyBytes?: number;
  /** Users a `presence` answer lists at most; more are left out with `users_truncated`. @default {1000} */
  maxPresenceUsers?: number;
  /** Channels a `channels` answer lists at most; more are left out with `channels_truncated`. @default {1000} */
  maxListedChannels?: number;
  /** How long `presence`, `presence_stats` and `info` wait for the workers' replies, in milliseconds. @default {1000} */
  presenceTimeout?: number;
  /** How long `subscribe`, `unsubscribe` and `disconnect` wait for the workers' replies, in milliseconds. @default {1000} */
  commandTimeout?: number;
  /** Longest channel name accepted; longer gets 422 (never above what the bus carries, 248). @default {248} */
  maxChannelLength?: number;
  /** Publications a `history` answer lists at most, and its `limit` when none is given; a larger `limit` gets 400. @default {100} */
  maxHistoryLimit?: number;
  /** The dashboard's limits (`/dashboard`, see `dashboard.ts`): sessions, streams, sample interval. @default {{}} */
  dashboard?: DashboardOptions;
  /** The limits of `GET /api/events` (`connection_events.ts`): streams, and events a stream may hold. @default {{}} */
  events?: Omit<ConnectionEventStreamsOptions, "logger" | "subscribeTimeout">;
  /**
   * Aborted when the server shuts down: the dashboard's event streams and
   * those of `/api/events` close then, as they would otherwise hold up the
   * drain. @default {undefined}
   */
  signal?: AbortSignal;
}

/** Headers of every answer but the preflight's and /metrics'. */
const CORS: Readonly<Record<string, string>> = {
  "access-control-allow-origin": "*",
  // Without it a page on another origin cannot read these headers.
  "access-control-expose-headers": "X-Pushers-Reached, Retry-After",
};
const PREFLIGHT: Readonly<Record<string, string>> = {
  ...CORS,
  "access-control-allow-methods": "GET, POST",
  "access-control-allow-headers": "Authorization, Content-Type, X-API-Key",
};
const METRICS: Readonly<Record<string, string>> = { ...CORS, "content-type": PROMETHEUS_CONTENT_TYPE };
const API_PREFIX = "/api/";

/**
 * A request target the fast path takes: `/`, or `/?` and a query of
 * characters that the URL parser keeps as they are, so that its query is
 * the one `new URL(req.url).search` gives. Anything else takes the handler.
 */
const PLAIN_PUBLISH_TARGET = /^\/(?:\?[A-Za-z0-9\-._~!$&()*+,;=:@/?%]*)?$/;

/** The publish handler, and a fast path for a server that reads heads itself (`shared/http_server.ts`). */
export interface PublishHandler {
  /** Answers any request. */
  (req: Request): Promise<Response>;
  /**
   * Answers a plain `GET /?...` publish (the original's API) from its head,
   * without a `Request` or a `URL` built for it, with the same answer the
   * handler gives; undefined for any other request, which the handler then
   * answers. Its `ok` answers are shared between requests: a server writes
   * them from their string body ({@linkcode stringBodyOf}) and never reads
   * their stream.
   */
  fast(req: RawRequest): Promise<Response> | undefined;
  /**
   * The form of a refusal the server writes itself (a body over its limit,
   * a malformed head) to a server-API path: the API's JSON error, with its
   * CORS headers; undefined for other paths, which keep the server's text.
   */
  refusal: RefusalForm;
}

/** What answers one route: the request, its URL, and when it started (for publish durations). */
type Answer = (req: Request, url: URL, started: number) => Response | Promise<Response>;

/**
 * Creates the publish handler. It routes `/`, `/api/<method>` (the server
 * API, see `api.ts`), `/healthz` and `/metrics`. On `/`, GET reads
 * `content`, `to_worker_id` and `to_connection_id`, `channel` and `to_user`
 * from the query string, POST from an urlencoded or multipart form, falling
 * back to the query string per field. Without an address the content goes
 * to every pusher (`broadcast`); with both parts of one, to one connection;
 * with `channel`, to the channel's members as its publication's `data`
 * string; with `to_user`, to the user's connections. The answer, `ok` with header
 * `X-Pushers-Reached` (how many pusher workers the bus reached), waits for
 * the bus to take the publish; every failure gets its own status and a
 * one-line reason, from the {@linkcode BusError} code: `unavailable` 503
 * with `Retry-After: 1`, `refused` 502, `too_large` 413.
 *
 * A send to one connection that reached 0 workers answers 404: its worker is gone.
 * On a bus that cannot count (`countsReached` false, NATS) such a send goes
 * as a request that its worker answers (no responders: 404, answered:
 * `X-Pushers-Reached: 1`), and any other publish answers without
 * `X-Pushers-Reached`.
 *
 * With `apiKey`, a publish without the key answers 401. `GET /healthz`
 * answers `ok` while the bus link is up, 503 otherwise; `GET /metrics`
 * answers the Prometheus text of `metrics`.
 *
 * @example
 * ```ts
 * import { openBus } from "../shared/open_bus.ts";
 * import { createPublishHandler } from "./handler.ts";
 *
 * const bus = openBus("channel://127.0.0.1:2206");
 * Deno.serve({ port: 4237 }, createPublishHandler({ bus, apiKey: "s3cret" }));
 * // curl -H 'Authorization: Bearer s3cret' 'http://127.0.0.1:4237/?content=hello'  -> ok
 * ```
 */
export function createPublishHandler(options: PublishHandlerOptions): PublishHandler {
  const bus = options.bus;
  const logger = options.logger ?? createLogger("publisher");
  const metrics = options.metrics ?? new PublisherMetrics(bus);
  const now = options.now ?? (() => performance.now());
  const publishTimeout = options.publishTimeout ?? 5000;
  // One for the GET API and the server API alike: the publishes of a turn go to the bus together.
  const publishOne = coalescePublishes(bus, { timeout: publishTimeout });
  const publish = publisher({ ...options, logger, metrics, now, publishOne });
  const apiDeps = {
    bus,
    publishOne,
    logger,
    metrics,
    now,
    apiKey: options.apiKey || undefined,
    headers: CORS,
    publishTimeout,
    presenceTimeout: options.presenceTimeout ?? DEFAULT_PRESENCE_TIMEOUT,
    commandTimeout: options.commandTimeout ?? DEFAULT_COMMAND_TIMEOUT,
    maxContentBytes: options.maxContentBytes ?? DEFAULT_MAX_CONTENT_BYTES,
    maxPresenceUsers: options.maxPresenceUsers ?? DEFAULT_MAX_PRESENCE_USERS,
    maxListedChannels: options.maxListedChannels ?? DEFAULT_MAX_LISTED_CHANNELS,
    maxChannelLength: options.maxChannelLength ?? DEFAULT_MAX_CHANNEL_LENGTH,
    maxHistoryLimit: options.maxHistoryLimit ?? DEFAULT_MAX_HISTORY_LIMIT,
    maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    maxJsonDepth: options.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH,
    maxBatchCommands: options.maxBatchCommands ?? DEFAULT_MAX_BATCH_COMMANDS,
    maxBatchReplyBytes: options.maxBatchReplyBytes ?? DEFAULT_MAX_BATCH_REPLY_BYTES,
  };
  const api = createApi(apiDeps);
  // The dashboard checks its session and CSRF token before it calls the API, and is same-origin: no CORS.
  const dashboardApi = createApi({ ...apiDeps, apiKey: undefined, headers: {} });
  const presenceTimeout = apiDeps.presenceTimeout;
  const dashboard = createDashboard({
    ...options.dashboard,
    apiKey: apiDeps.apiKey,
    hubConnected: () => bus.connected,
    info: () => clusterInfo(bus, presenceTimeout),
    metrics: () => metrics.snapshot(),
    api: (method, req, url) => dashboardApi(method, apiRequest(req, url)),
    signal: options.signal,
  });
  const connectionEvents = new ConnectionEventStreams(bus, {
    ...options.events,
    subscribeTimeout: publishTimeout,
    logger,
  });
  options.signal?.addEventListener("abort", () => connectionEvents.close(), { once: true });
  if (options.signal?.aborted) connectionEvents.close();
  const dashboardRoutes = Object.fromEntries(
    Object.entries(dashboard.routes).map(([path, route]) => [path, { ...route, handler: route.handler as Answer }]),
  );
  const apiRoutes = Object.fromEntries(API_METHODS.map((method) => [`${API_PREFIX}${method}`, {
    methods: ["POST", "OPTIONS"],
    hint: "use POST with a JSON body",
    handler: ((req, url) =>
      req.method === "OPTIONS"
        ? new Response(null, { status: 204, headers: PREFLIGHT })
        : api(method, apiRequest(req, url))) as Answer,
  }]));
  const apiMethodsByPath = new Map<string, ApiMethod>(API_METHODS.map((method) => [`${API_PREFIX}${method}`, method]));
  // The original serves its API on every path, we on `/` only.
  const router = new Router<Answer>({
    ...apiRoutes,
    ...dashboardRoutes,
    [`${API_PREFIX}events`]: {
      methods: ["GET"],
      hint: "use GET: it answers an event stream",
      handler: (req, url) => {
        checkApiKey(req, parseUrlEncoded(url.search.slice(1), "query"), apiDeps.apiKey);
        return connectionEvents.open(CORS);
      },
    },
    "/": {
      methods: ["GET", "POST", "OPTIONS"],
      hint: "use GET or POST",
      handler: (req, url, started) =>
        req.method === "OPTIONS"
          ? new Response(null, { status: 204, headers: PREFLIGHT })
          : publish(req, url.search, started).then(ok),
    },
    // Not a Rejection when down: probes poll it, and a down link is logged by the bus already.
    "/healthz": {
      methods: ["GET"],
      handler: () => bus.connected ? text(200, "ok", CORS) : text(503, `${busName(bus.address)} link down\n`, CORS),
    },
    "/metrics": { methods: ["GET"], handler: () => new Response(metrics.render(), { headers: METRICS }) },
  });

  async function answer(req: Request, url: URL, started: number): Promise<Response> {
    // Answered in JSON, whatever goes wrong.
    const isApi = url.pathname.startsWith(API_PREFIX) || url.pathname.startsWith(DASHBOARD_API_PREFIX);
    try {
      const route = router.match(req.method, url.pathname);
      if (isMiss(route)) {
        const apiPath = url.pathname.startsWith(DASHBOARD_API_PREFIX)
          ? url.pathname.slice("/dashboard".length)
          : url.pathname;
        const reason = route.status === 404 && isApi ? unknownMethod(apiPath) : route.reason;
        throw new Rejection(route.status, reason, { headers: route.headers });
      }
      return await route.handler(req, url, started);
    } catch (error) {
      return failed(error, req.method, url.pathname, isApi);
    }
  }

  /** The answer to a request that threw: its rejection's status and reason, logged; else a 500. */
  function failed(error: unknown, method: string, path: string, isApi: boolean): Response {
    const fields = { method, path };
    if (error instanceof Rejection) {
      const line = { ...fields, status: error.status, reason: error.logReason };
      if (error.status >= 500) logger.warn("publish failed", line);
      else logger.info("request rejected", line);
      if (isApi) return apiError(error.status, error.message, { ...CORS, ...error.headers });
      return text(error.status, `${error.message}\n`, { ...CORS, ...error.headers });
    }
    logger.error("request failed", { ...fields, status: 500, error: String(error) });
    if (isApi) return apiError(500, "Internal error", CORS);
    return text(500, "Internal error\n", CORS);
  }

  const counted = (response: Response): Response => {
    metrics.countRequest(response.status);
    return response;
  };
  // Shared by the fast path's answers, by reached count: they are never read but by the server, from their string.
  const sharedOk = new Map<number | null, Response>();
  /**
   * A server-API call whose whole body came with its head: answered as its
   * route would answer it, without a fetch `Request` and a stream for its body.
   */
  const fastApi = (req: RawRequest, body: Uint8Array): Promise<Response> | undefined => {
    const queryStart = req.target.indexOf("?");
    const path = queryStart < 0 ? req.target : req.target.slice(0, queryStart);
    const method = apiMethodsByPath.get(path);
    if (method === undefined) return undefined;
    const query = queryStart < 0 ? "" : req.target.slice(queryStart + 1);
    return api(method, { headers: req.headers, query, body: readBodyOf(body) })
      .then(counted, (error) => counted(failed(error, "POST", path, true)));
  };
  const fast = (req: RawRequest): Promise<Response> | undefined => {
    if (req.body !== null) return req.method === "POST" ? fastApi(req, req.body) : undefined;
    if (req.method !== "GET" || !PLAIN_PUBLISH_TARGET.test(req.target)) return undefined;
    const started = now();
    return publish(req, req.target.slice(1), started).then((reached) => {
      let response = sharedOk.get(reached);
      if (response === undefined) {
        response = ok(reached);
        if (sharedOk.size < 64) sharedOk.set(reached, share(response));
      }
      return counted(response);
    }, (error) => counted(failed(error, "GET", "/", false)));
  };
  const handle = async (req: Request): Promise<Response> => counted(await answer(req, new URL(req.url), now()));
  const refusal: RefusalForm = (status, reason, path) => {
    if (!path.startsWith(API_PREFIX) && !path.startsWith(DASHBOARD_API_PREFIX)) return undefined;
    return { body: apiErrorBody(status, reason), headers: { ...CORS, "content-type": JSON_CONTENT_TYPE } };
  };
  return Object.assign(handle, { fast, refusal });
}

/** A fetch request to the server API as the API reads it. */
function apiRequest(req: Request, url: URL): ApiRequest {
  return { ...requestBody(req), query: url.search.slice(1) };
}

/** The answer to a publish the bus took, having reached `reached` pusher workers (null: a bus that cannot count). */
function ok(reached: number | null): Response {
  // A bus that cannot count says nothing rather than a made-up number.
  if (reached === null) return text(200, "ok", CORS);
  return text(200, "ok", { ...CORS, "x-pushers-reached": String(reached) });
}

/** What {@linkcode publisher} needs: the handler's options with its defaults filled in. */
interface PublishDeps extends PublishHandlerOptions {
  /** Publishes one item on the bus, gathered with the turn's others. */
  publishOne: PublishOne;
  logger: Logger;
  metrics: PublisherMetrics;
  now: () => number;
}

/**
 * A publish on `/`: checks the key, reads the request (its query is
 * `search`, `?` included), publishes, and resolves with how many pusher
 * workers the bus reached once it has taken it.
 */
function publisher(
  deps: PublishDeps,
): (req: Request | GetRequest, search: string, started: number) => Promise<number | null> {
  const { bus, logger, metrics, now, publishOne } = deps;
  const publishTimeout = deps.publishTimeout ?? 5000;
  const maxContentBytes = deps.maxContentBytes ?? DEFAULT_MAX_CONTENT_BYTES;
  const maxChannelLength = deps.maxChannelLength ?? DEFAULT_MAX_CHANNEL_LENGTH;
  const apiKey = deps.apiKey || undefined;
  return async (req, search, started) => {
    const query = parseUrlEncoded(search.slice(1), "query");
    // Before the body: a caller without the key does not get it read.
    checkApiKey(req, query, apiKey);
    const read = await readPublishRequest(req, query, { maxContentBytes, maxChannelLength });
    // Returned, not awaited: this call, and the request it holds, ends here
    // rather than after the bus answers (an async call keeps its variables
    // alive across an await, long enough for a young collection to move a
    // request and its head to the old generation).
    return send(read, req.method, started);
  };

  /** Publishes what a request asked for; what waits for the bus holds only what the answer needs. */
  function send(
    { address, content, bytes, idempotencyKey }: PublishRequest,
    method: string,
    started: number,
  ): Promise<number | null> {
    const target: PublishTargetKind = address.kind === "everyone" ? "broadcast" : address.kind;
    logger.debug("publishing", { method, target, bytes });
    const { subject, data } = routeOf(address, content);
    // Not req.signal: a publish, once sent, cannot be taken back.
    // A copy, as the route's data (a type alias) is Json but not mutable as one.
    const published = address.kind === "connection" && bus.countsReached === false
      ? publishToConnection(bus, subject, { ...data }, { timeout: publishTimeout })
      : publishOne({ subject, data: { ...data }, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) });
    return published.then(({ reached }) => {
      if (reached === 0 && address.kind === "connection") {
        // A restarted pusher draws new worker ids, so addresses from before miss.
        throw new Rejection(404, `No pusher worker ${address.workerId} is connected: the address is stale or wrong`, {
          logReason: "No pusher worker is connected: the address is stale or wrong",
        });
      }
      metrics.countPublish(target, reached, (now() - started) / 1000);
      logger.debug("published", { method, target, reached: reached ?? undefined });
      return reached;
    }, (error) => {
      throw busRejection(error, busName(bus.address));
    });
  }
}

/**
 * The `info` result with every worker's counters (deliveries, slow closes)
 * too, for the dashboard: `/api/info` asks without them, so its answer
 * keeps its shape.
 *
 * @throws {Rejection} as `/api/info` would: the bus's refusal or timeout.
 */
async function clusterInfo(bus: Bus, timeout: number): Promise<Json> {
  const query = presenceQuery({ q: "info", counters: true });
  let gathered: RequestResult;
  try {
    gathered = await bus.request(query.subject, { ...query.data }, { timeout });
  } catch (error) {
    if (!(error instanceof BusError && error.code === "no_responders")) throw busRejection(error, busName(bus.address));
    gathered = { replies: [], expected: 0 };
  }
  return info(gathered);
}
