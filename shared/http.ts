/**
 * What our HTTP answers share: plain-text responses ({@linkcode text}) and
 * routes kept as data ({@linkcode Router}), for the publisher, the pusher
 * and the hub's metrics port.
 *
 * Header names are written in lower case, as HTTP/2 requires and as
 * `content-type` already is on the wire; fetch `Headers` compare them
 * case-insensitively, so readers may spell them either way.
 *
 * @module
 */

/** The `content-type` of every {@linkcode text} answer. */
export const TEXT_CONTENT_TYPE = "text/plain;charset=utf-8";

const NO_HEADERS: Readonly<Record<string, string>> = Object.freeze({});

/**
 * A plain-text response: `content-type: text/plain;charset=utf-8`, then
 * `headers` (whose own `content-type`, if any, loses).
 *
 * The body is sent exactly as given: no newline is added. A one-line reason
 * meant for `curl` ends in `"\n"` by the caller's choice (the publisher's
 * reasons do, its `ok` does not; every answer of the pusher does).
 *
 * @example
 * ```ts
 * import { text } from "./http.ts";
 *
 * const response = text(503, "Hub unavailable: try again\n", { "retry-after": "1" });
 * ```
 */
export function text(status: number, body: string, headers: Readonly<Record<string, string>> = NO_HEADERS): Response {
  return typed(status, body, TEXT_HEADER, headers);
}

const TEXT_HEADER: ContentTypeHeader = [["content-type", TEXT_CONTENT_TYPE]];

/**
 * A `200` answer whose body is a stream of server-sent events
 * (`text/event-stream`), never cached, with `headers` besides.
 *
 * @example
 * ```ts
 * import { eventStream } from "./http.ts";
 *
 * const body = new ReadableStream<Uint8Array>({ start: (c) => c.enqueue(new TextEncoder().encode("data: hi\n\n")) });
 * const response = eventStream(body, { "access-control-allow-origin": "*" });
 * await response.body?.cancel();
 * ```
 */
export function eventStream(
  body: ReadableStream<Uint8Array>,
  headers: Readonly<Record<string, string>> = NO_HEADERS,
): Response {
  const response = new Response(body, { headers });
  response.headers.set("content-type", "text/event-stream;charset=utf-8");
  response.headers.set("cache-control", "no-store");
  return response;
}

/** A `content-type` header as a `Response` init takes it: `[["content-type", TYPE]]`. */
export type ContentTypeHeader = readonly [readonly ["content-type", string]];

/**
 * A response with a string body, `contentType` (built once, as
 * `[["content-type", TYPE]]`), then `headers` (whose own `content-type`, if
 * any, loses), every header name written as given, in lower case.
 *
 * The content type goes in the init: set afterwards, it would keep the name
 * `Content-Type` that a string body adds by itself, and that name is what
 * goes on the wire. The other headers are set one by one: a headers record in
 * the init costs several times what a few set() calls do, and this answer is
 * on every publish's path.
 *
 * @example
 * ```ts
 * import { typed } from "./http.ts";
 *
 * const JSON_HEADER = [["content-type", "application/json"]] as const;
 * const response = typed(200, '{"result":{}}', JSON_HEADER, { "x-pushers-reached": "2" });
 * ```
 */
export function typed(
  status: number,
  body: string,
  contentType: ContentTypeHeader,
  headers: Readonly<Record<string, string>> = NO_HEADERS,
): Response {
  const response = new Response(body, { status, headers: contentType as unknown as [string, string][] });
  for (const [name, value] of Object.entries(headers)) {
    if (name.toLowerCase() !== "content-type") response.headers.set(name, value);
  }
  bodies.set(response, body);
  return response;
}

/**
 * Marks a response built by {@linkcode text} or {@linkcode typed} as one
 * that will be answered again and again, unchanged: a server may keep its
 * bytes on the wire for the next time ({@linkcode isShared}). Its headers
 * must not change after this.
 *
 * @example
 * ```ts
 * import { share, text } from "./http.ts";
 *
 * const OK = share(text(200, "ok"));
 * ```
 */
export function share(response: Response): Response {
  if (bodies.has(response)) shared.add(response);
  return response;
}

/** Whether `response` was marked by {@linkcode share}. */
export function isShared(response: Response): boolean {
  return shared.has(response);
}

const shared = new WeakSet<Response>();

/** The string bodies of the responses {@linkcode typed} built, for a server that writes them without a stream. */
const bodies = new WeakMap<Response, string>();

/**
 * The body `response` was built with by {@linkcode text} or
 * {@linkcode typed}, or undefined for any other response. A server writes
 * it as it is, with its length, rather than read it back from the
 * response's stream: a body is immutable, so the two are the same bytes.
 */
export function stringBodyOf(response: Response): string | undefined {
  return response.bodyUsed ? undefined : bodies.get(response);
}

/** One path's methods and what answers them. */
export interface Route<H> {
  /** The methods it answers, in the order a 405's `allow` header lists them. Required. */
  readonly methods: readonly string[];
  /** What answers them: a request handler, in whatever shape the server calls. Required. */
  readonly handler: H;
  /**
   * How a 405 says what to use instead, after `Method X not allowed: `.
   * @default {"use " + methods joined with " or "}
   */
  readonly hint?: string;
}

/** Why no route answers a request: its status, one-line reason (no newline) and headers. */
export interface RouteMiss {
  /** 404 for an unknown path, 405 for a method the path does not answer. */
  readonly status: 404 | 405;
  /** `Not found: <path>`, or `Method <method> not allowed: <hint>`. */
  readonly reason: string;
  /** `allow` with the path's methods on a 405; none on a 404. */
  readonly headers: Readonly<Record<string, string>>;
}

/**
 * Routes keyed by exact pathname, as data. Not `URLPattern`: its `test` is
 * a large share of a whole publish's CPU in the publisher, where a `Map`
 * lookup costs nothing worth measuring.
 *
 * {@linkcode Router.match} finds a request's route or says why none fits,
 * for a server that answers misses its own way (the publisher logs and
 * counts them); {@linkcode Router.handler} answers misses itself.
 *
 * @example
 * ```ts
 * import { Router, text } from "./http.ts";
 *
 * const router = new Router<(req: Request) => Response>({
 *   "/healthz": { methods: ["GET", "HEAD"], handler: () => text(200, "ok\n") },
 * });
 * Deno.serve(router.handler((route, req: Request) => route.handler(req)));
 * // GET /healthz -> 200 ok; POST /healthz -> 405 with allow: GET, HEAD; GET /x -> 404 Not found: /x
 * ```
 */
export class Router<H> {
  readonly #routes: ReadonlyMap<string, Route<H>>;

  /** Takes the routes keyed by exact pathname (`"/"`, `"/healthz"`). */
  constructor(routes: Readonly<Record<string, Route<H>>>) {
    this.#routes = new Map(Object.entries(routes));
  }

  /** The route of `pathname` if it answers `method`, else why none does. */
  match(method: string, pathname: string): Route<H> | RouteMiss {
    const route = this.#routes.get(pathname);
    if (route === undefined) return { status: 404, reason: `Not found: ${pathname}`, headers: NO_HEADERS };
    if (route.methods.includes(method)) return route;
    return {
      status: 405,
      reason: `Method ${method} not allowed: ${route.hint ?? `use ${route.methods.join(" or ")}`}`,
      headers: { allow: route.methods.join(", ") },
    };
  }

  /**
   * A request handler that calls `answer` with the matched route, and
   * answers a miss with {@linkcode text}: the reason and a newline, plus the
   * miss's headers.
   */
  handler<R extends { readonly method: string; readonly url: string }, A extends Response | Promise<Response>>(
    answer: (route: Route<H>, req: R, url: URL) => A,
  ): (req: R) => A | Response {
    return (req) => {
      const url = new URL(req.url);
      const matched = this.match(req.method, url.pathname);
      if (isMiss(matched)) return text(matched.status, `${matched.reason}\n`, matched.headers);
      return answer(matched, req, url);
    };
  }
}

/** Whether {@linkcode Router.match} found no route. */
export function isMiss<H>(matched: Route<H> | RouteMiss): matched is RouteMiss {
  return "status" in matched;
}
