/**
 * The publisher's live dashboard, on `/dashboard`: the cluster at a glance
 * (hub link, pusher workers, connections, rates), charts of the last five
 * minutes updated over server-sent events, and actions through the server
 * API.
 *
 * Behind the API key when the publisher has one: the login form takes the
 * key once (POSTed, never in a URL) and answers with a cookie holding a
 * random session id, never the key (`_sessions.ts`). Actions from the page
 * go to `POST /dashboard/api/<method>`, the same server API as `/api/`,
 * with the session cookie and the session's CSRF token in `x-csrf-token`;
 * the cookie is `SameSite=Strict` as well. Without a key the dashboard is
 * open, as the API is.
 *
 * @module
 */

import type { Json } from "../shared/json.ts";
import type { RegistrySnapshot } from "../shared/metrics.ts";
import type { Route } from "../shared/http.ts";
import { secretsEqual } from "../shared/secret.ts";
import { API_METHODS, type ApiMethod } from "./api.ts";
import { dashboardPage, loginPage } from "./_dashboard_page.ts";
import { EventStreams } from "./_dashboard_events.ts";
import { parseUrlEncoded, readBody } from "./form.ts";
import { Rejection } from "./_rejection.ts";
import { SessionStore } from "./_sessions.ts";
import appJs from "./dashboard/app.js" with { type: "text" };
import appCss from "./dashboard/app.css" with { type: "text" };

export { DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_TTL } from "./_sessions.ts";
export { DEFAULT_MAX_STREAM_AGE, DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_SESSION } from "./_dashboard_events.ts";

/** Where the dashboard's server-API calls go: `/dashboard/api/<method>`. */
export const DASHBOARD_API_PREFIX = "/dashboard/api/";

/** The session cookie's name. */
export const SESSION_COOKIE = "dashboard_session";

/** Every dashboard answer's Content-Security-Policy: the page loads only the publisher's own files. */
export const DASHBOARD_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
  "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/** Headers of every dashboard answer. */
const SECURITY: Readonly<Record<string, string>> = {
  "content-security-policy": DASHBOARD_CSP,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

/** The tab's icon: a dot in the accent colour, so the browser asks for no /favicon.ico. */
const ICON =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="6" fill="#2563eb"/></svg>';

/** The login form's body is one short field; more is not a login. */
const MAX_LOGIN_BYTES = 4096;

/** Options for {@linkcode createDashboard}. */
export interface DashboardOptions {
  /** Logins kept at most; a login beyond it ends the oldest. @default {64} */
  maxSessions?: number;
  /** How long a login lasts, in milliseconds. @default {28800000} (8 hours) */
  sessionTtl?: number;
  /** Event streams (open pages) at once; one more gets 429. @default {16} */
  maxStreams?: number;
  /** Event streams of one login at once, when there is an API key; one more gets 429. @default {4} */
  maxStreamsPerSession?: number;
  /**
   * How long an event stream lasts, in milliseconds: the page opens the
   * next one by itself and resumes where it was, and one that stopped
   * reading no longer holds its place. @default {60000}
   */
  maxStreamAge?: number;
  /** Time between two samples sent to the pages, in milliseconds. @default {1000} */
  interval?: number;
  /** Wall clock for sessions and samples, in milliseconds. @default {Date.now} */
  clock?: () => number;
}

/** What {@linkcode createDashboard} reads and calls. */
export interface DashboardDeps extends DashboardOptions {
  /** The key that opens the dashboard; undefined: it is open. */
  apiKey: string | undefined;
  /** Whether the hub link is up. */
  hubConnected: () => boolean;
  /** The server API's `info` result; throws a {@linkcode Rejection} when it fails. */
  info: () => Promise<Json>;
  /** The publisher's metrics. */
  metrics: () => RegistrySnapshot;
  /** The server API without its key check (the dashboard checks the session first). */
  api: (method: ApiMethod, req: Request, url: URL) => Promise<Response>;
  /** Aborted on shutdown: the event streams close, so that they do not hold up the drain. */
  signal?: AbortSignal;
}

/** What answers a dashboard route. */
export type DashboardAnswer = (req: Request, url: URL) => Response | Promise<Response>;

/** The dashboard's routes, for the publisher's router, and its event streams. */
export interface Dashboard {
  /** Routes keyed by pathname, `/dashboard` and below. */
  readonly routes: Readonly<Record<string, Route<DashboardAnswer>>>;
  /** The live streams; {@linkcode EventStreams.close} ends them. */
  readonly streams: EventStreams;
}

/**
 * Creates the dashboard's routes: `GET /dashboard` (the page, or the login
 * form without a session), `POST /dashboard/login` and `/dashboard/logout`,
 * `GET /dashboard/events` (server-sent events), `GET /dashboard/app.js`,
 * `/dashboard/app.css` and `/dashboard/icon.svg`, and `POST /dashboard/api/<method>` for each method
 * of the server API. Refusals are thrown as {@linkcode Rejection}s.
 *
 * @example
 * ```ts
 * import { Router } from "../shared/http.ts";
 * import { createDashboard } from "./dashboard.ts";
 *
 * const dashboard = createDashboard({
 *   apiKey: "s3cret",
 *   hubConnected: () => true,
 *   info: () => Promise.resolve({ workers: [] }),
 *   metrics: () => [],
 *   api: () => Promise.resolve(Response.json({ result: {} })),
 * });
 * const router = new Router(dashboard.routes);
 * ```
 */
export function createDashboard(deps: DashboardDeps): Dashboard {
  const { apiKey } = deps;
  const clock = deps.clock ?? Date.now;
  const sessions = new SessionStore({ maxSessions: deps.maxSessions, ttl: deps.sessionTtl, now: clock });
  const streams = new EventStreams(
    { hubConnected: deps.hubConnected, info: deps.info, metrics: deps.metrics, clock },
    {
      interval: deps.interval,
      maxStreams: deps.maxStreams,
      maxStreamsPerSession: deps.maxStreamsPerSession,
      maxStreamAge: deps.maxStreamAge,
    },
  );
  deps.signal?.addEventListener("abort", () => streams.close(), { once: true });
  if (deps.signal?.aborted) streams.close();

  /** The session id of the request's cookie, if it names a live session. */
  const sessionOf = (req: Request): string | undefined => {
    const id = cookie(req, SESSION_COOKIE);
    return sessions.get(id) === undefined ? undefined : id;
  };

  const routes: Record<string, Route<DashboardAnswer>> = {
    "/dashboard": {
      methods: ["GET"],
      handler: (req) => {
        if (apiKey === undefined) return html(200, dashboardPage({}));
        const session = sessions.get(cookie(req, SESSION_COOKIE));
        if (session === undefined) return html(200, loginPage());
        return html(200, dashboardPage({ csrf: session.csrf }));
      },
    },
    "/dashboard/login": {
      methods: ["POST"],
      hint: "use POST with the form's key",
      handler: async (req, url) => {
        if (apiKey === undefined) return seeOther("/dashboard");
        const type = req.headers.get("content-type")?.split(";")[0]?.trim().toLowerCase();
        if (type !== "application/x-www-form-urlencoded") {
          throw new Rejection(415, "Unsupported media type: log in with the form (application/x-www-form-urlencoded)");
        }
        const body = new TextDecoder().decode(await readBody(req, MAX_LOGIN_BYTES));
        let given: string | undefined;
        try {
          given = parseUrlEncoded(body, "form body").get("key");
        } catch {
          given = undefined;
        }
        if (given === undefined || !secretsEqual(given, apiKey)) {
          return html(401, loginPage("Wrong API key."));
        }
        const session = sessions.create();
        return seeOther("/dashboard", {
          "set-cookie": sessionCookie(session.id, Math.floor(sessions.ttl / 1000), isHttps(req, url)),
        });
      },
    },
    "/dashboard/logout": {
      methods: ["POST"],
      hint: "use POST with the page's form",
      handler: async (req, url) => {
        if (apiKey === undefined) return seeOther("/dashboard");
        const id = cookie(req, SESSION_COOKIE);
        const body = new TextDecoder().decode(await readBody(req, MAX_LOGIN_BYTES));
        let given: string | undefined;
        try {
          given = parseUrlEncoded(body, "form body").get("csrf");
        } catch {
          given = undefined;
        }
        // Without the token a page elsewhere could log an operator out.
        if (!sessions.checkCsrf(id, given)) throw new Rejection(403, "Forbidden: missing or wrong CSRF token");
        sessions.delete(id);
        return seeOther("/dashboard", { "set-cookie": sessionCookie("", 0, isHttps(req, url)) });
      },
    },
    "/dashboard/events": {
      methods: ["GET"],
      handler: (req) => {
        const lastEventId = req.headers.get("last-event-id");
        // The page's EventSource: told to come back when no place is free, where a 429 would stop it.
        const waitWhenFull = req.headers.get("accept")?.includes("text/event-stream") ?? false;
        if (apiKey === undefined) return streams.open(SECURITY, { lastEventId, waitWhenFull });
        const id = sessionOf(req);
        if (id === undefined) throw notLoggedIn();
        const alive = () => sessions.get(id) !== undefined;
        return streams.open(SECURITY, { alive, session: id, lastEventId, waitWhenFull });
      },
    },
    "/dashboard/app.js": {
      methods: ["GET"],
      handler: () => asset(appJs, "text/javascript;charset=utf-8"),
    },
    "/dashboard/app.css": {
      methods: ["GET"],
      handler: () => asset(appCss, "text/css;charset=utf-8"),
    },
    "/dashboard/icon.svg": {
      methods: ["GET"],
      handler: () => asset(ICON, "image/svg+xml"),
    },
  };
  for (const method of API_METHODS) {
    routes[`${DASHBOARD_API_PREFIX}${method}`] = {
      methods: ["POST"],
      hint: "use POST with a JSON body",
      handler: async (req, url) => {
        if (apiKey !== undefined) {
          const id = sessionOf(req);
          if (id === undefined) throw notLoggedIn();
          if (!sessions.checkCsrf(id, req.headers.get("x-csrf-token"))) {
            throw new Rejection(403, "Forbidden: missing or wrong CSRF token (x-csrf-token)");
          }
        }
        const response = await deps.api(method, req, url);
        for (const [name, value] of Object.entries(SECURITY)) response.headers.set(name, value);
        return response;
      },
    };
  }
  return { routes, streams };
}

function notLoggedIn(): Rejection {
  return new Rejection(401, "Unauthorized: log in at /dashboard first");
}

/** Whether the page was reached over HTTPS, directly or through a proxy that says so. */
function isHttps(req: Request, url: URL): boolean {
  if (url.protocol === "https:") return true;
  return req.headers.get("x-forwarded-proto")?.split(",")[0]?.trim().toLowerCase() === "https";
}

/** The session cookie: HttpOnly (no script reads it), SameSite=Strict (no other site sends it), Secure over HTTPS. */
function sessionCookie(value: string, maxAge: number, secure: boolean): string {
  return `${SESSION_COOKIE}=${value}; Path=/dashboard; Max-Age=${maxAge}; HttpOnly; SameSite=Strict` +
    (secure ? "; Secure" : "");
}

/** The value of cookie `name`, if the request carries it. */
function cookie(req: Request, name: string): string | undefined {
  const header = req.headers.get("cookie");
  if (header === null) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function html(status: number, body: string): Response {
  const response = new Response(body, { status });
  for (const [name, value] of Object.entries(SECURITY)) response.headers.set(name, value);
  response.headers.set("content-type", "text/html;charset=utf-8");
  // The page holds the session's CSRF token.
  response.headers.set("cache-control", "no-store");
  return response;
}

function asset(body: string, type: string): Response {
  const response = new Response(body);
  for (const [name, value] of Object.entries(SECURITY)) response.headers.set(name, value);
  response.headers.set("content-type", type);
  response.headers.set("cache-control", "no-cache");
  return response;
}

function seeOther(location: string, headers: Readonly<Record<string, string>> = {}): Response {
  const response = new Response(null, { status: 303, headers: { location } });
  for (const [name, value] of Object.entries({ ...SECURITY, ...headers })) response.headers.set(name, value);
  return response;
}
