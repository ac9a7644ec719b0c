/**
 * One pusher worker: its WebSocket connections, their addresses, who may
 * connect, and the delivery of hub events to them.
 *
 * @module
 */

import { demoPage } from "./demo_page.ts";
import { originMatcher } from "./_origin.ts";
import type { ClientSocket, SocketHandlers } from "./socket.ts";
import { isWebSocketUpgrade, type ServerRequest, upgradeWebSocket } from "./server.ts";
import { CloseCode, PreparedText } from "./websocket.ts";
import { TokenError, verifyJwt } from "../shared/jwt.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import {
  type Counter,
  PROMETHEUS_CONTENT_TYPE,
  Registry,
  type RegistrySnapshot,
  renderPrometheus,
} from "../shared/metrics.ts";
import { BROADCAST_SUBJECT, toPushData, workerSubject } from "../shared/address.ts";
import type { Json } from "../shared/json.ts";

/** What the pusher needs of its hub link: a `HubClient` fits. */
export interface EventSource {
  subscribe(channel: string, handler: (data: Json, channel: string) => void): void;
  unsubscribe(channel: string): void;
  /** Whether the link is up now. */
  readonly connected: boolean;
  /** How many times the link came back. */
  readonly reconnects: number;
}

/** Options for {@linkcode Pusher}. */
export interface PusherOptions {
  /** This worker's id: part of every connection's address. */
  workerId: string;
  /** The hub link events come from. */
  hub: EventSource;
  /** Publisher base URL the demo page calls; null lets the page use its own host on port 4237. @default {null} */
  publisherUrl?: string | null;
  /**
   * Origins allowed to connect, `*` wildcards allowed (`https://*.example.com`).
   * A browser handshake from another origin gets 403. Requests without an
   * `Origin` header (not from a browser) are not affected. null allows all.
   *
   * @default {null}
   */
  allowedOrigins?: readonly string[] | null;
  /**
   * HS256 secret for client tokens. When set, a handshake must carry
   * `?token=JWT` with a valid signature, a future `exp` and a `sub`, which
   * becomes the connection's user id; otherwise 401. An empty secret is
   * refused (RangeError): anyone could sign tokens with it.
   *
   * @default {null}
   */
  tokenSecret?: string | null;
  /** Messages, pings and pongs per second a client may send (with a burst of as many); faster closes with 1008. @default {50} */
  maxMessageRate?: number;
  /**
   * Metrics of every worker of this pusher, merged; `/metrics` and
   * `/healthz` answer from it.
   *
   * @default {this worker's own metrics}
   */
  gather?: () => Promise<RegistrySnapshot>;
  /** Where log lines go. @default {createLogger("pusher")} */
  logger?: Logger;
}

interface Counters {
  accepted: Counter;
  rejected: Counter;
  disconnects: Counter;
  delivered: Counter;
  dropped: Counter;
}

/** One open connection. */
interface Connection {
  id: number;
  socket: ClientSocket;
  /** The token's subject, when tokens are required. */
  user: string | null;
  /** Rate limit: messages allowed now, and when that was computed. */
  allowance: number;
  checkedAt: number;
}

/**
 * A pusher worker. Subscribes its hub link to the broadcast channel and to
 * its own worker channel; greets each new connection with its address; sends
 * broadcasts to every connection and targeted events to one.
 *
 * @example
 * ```ts
 * const pusher = new Pusher({ workerId: newWorkerId(), hub: client });
 * serve({ port: 4236 }, pusher.handler);
 * ```
 */
export class Pusher {
  readonly workerId: string;
  /** Where this pusher logs; its transport can log there too. */
  readonly logger: Logger;
  /** This worker's metrics. */
  readonly metrics: Registry = new Registry();
  readonly #connections = new Map<number, Connection>();
  readonly #bySocket = new WeakMap<ClientSocket, Connection>();
  readonly #hub: EventSource;
  readonly #page: string;
  readonly #originAllowed: ((origin: string) => boolean) | null;
  readonly #tokenSecret: string | null;
  readonly #maxMessageRate: number;
  readonly #gather: () => Promise<RegistrySnapshot>;
  readonly #handlers: SocketHandlers;
  readonly #counters: Counters;
  #nextId = 1;
  #accepting = true;

  constructor(options: PusherOptions) {
    this.workerId = options.workerId;
    this.#hub = options.hub;
    this.#page = demoPage({ publisherUrl: options.publisherUrl ?? null });
    this.logger = options.logger ?? createLogger("pusher", { fields: { worker: this.workerId } });
    this.#originAllowed = options.allowedOrigins ? originMatcher(options.allowedOrigins) : null;
    if (options.tokenSecret === "") {
      throw new RangeError("Cannot check tokens with an empty secret: anyone could sign one");
    }
    this.#tokenSecret = options.tokenSecret ?? null;
    this.#maxMessageRate = options.maxMessageRate ?? 50;
    this.#gather = options.gather ?? (() => Promise.resolve(this.metrics.snapshot()));
    this.#handlers = this.#handlersFor(null);
    this.#counters = this.#registerMetrics();
    this.#hub.subscribe(BROADCAST_SUBJECT, (data) => this.#broadcast(data));
    this.#hub.subscribe(workerSubject(this.workerId), (data) => this.#target(data));
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Serves WebSocket upgrades, the demo page on `GET /`, `/healthz` and `/metrics`. */
  readonly handler = async (req: ServerRequest): Promise<Response> => {
    const url = new URL(req.url);
    if (isWebSocketUpgrade(req)) return this.#upgrade(req, url);
    if (req.method !== "GET" && req.method !== "HEAD") return text(405, "Method not allowed: use GET");
    switch (url.pathname) {
      case "/":
        return new Response(this.#page, { headers: { "content-type": "text/html;charset=utf-8" } });
      case "/healthz":
        return this.#health();
      case "/metrics":
        return new Response(renderPrometheus(await this.#gather()), {
          headers: { "content-type": PROMETHEUS_CONTENT_TYPE },
        });
      default:
        return text(404, `Not found: ${url.pathname}`);
    }
  };

  /** Stops taking connections and closes every open one with `code`. */
  closeAll(code: number = CloseCode.goingAway, reason = "going away"): void {
    this.#accepting = false;
    for (const connection of this.#connections.values()) connection.socket.close(code, reason);
  }

  /** Counts in `pusher_rejected_total` a connection its transport refused before {@linkcode Pusher.handler} saw it. */
  countRefusal(reason: string): void {
    this.#counters.rejected.inc(1, reason);
  }

  /** Stops listening to the hub. */
  detach(): void {
    this.#hub.unsubscribe(BROADCAST_SUBJECT);
    this.#hub.unsubscribe(workerSubject(this.workerId));
  }

  #upgrade(req: ServerRequest, url: URL): Response {
    if (!this.#accepting) return this.#reject("shutting_down", 503, "Shutting down");
    const origin = req.headers.get("origin");
    if (this.#originAllowed && origin !== null && !this.#originAllowed(origin)) {
      return this.#reject("origin", 403, `Origin not allowed: ${origin}`);
    }
    let user: string | null = null;
    if (this.#tokenSecret !== null) {
      const token = url.searchParams.get("token");
      if (!token) return this.#reject("token", 401, "Unauthorized: this pusher needs a token (?token=JWT)");
      try {
        user = verifyJwt(token, this.#tokenSecret).sub;
      } catch (error) {
        if (!(error instanceof TokenError)) throw error;
        return this.#reject("token", 401, `Unauthorized: ${error.message}`);
      }
    }
    // Connections without a user share one handlers object: no per-socket closures.
    return upgradeWebSocket(req, user === null ? this.#handlers : this.#handlersFor(user));
  }

  #reject(reason: string, status: number, message: string): Response {
    this.#counters.rejected.inc(1, reason);
    this.logger.info("refused a connection", { status, reason: message });
    return text(status, message);
  }

  #handlersFor(user: string | null): SocketHandlers {
    return {
      open: (socket) => this.#open(socket, user),
      message: (socket) => this.#limitRate(socket),
      control: (socket) => this.#limitRate(socket),
      close: (socket, code) => this.#forget(socket, code),
    };
  }

  #open(socket: ClientSocket, user: string | null): void {
    const id = this.#nextId++;
    const connection = { id, socket, user, allowance: this.#maxMessageRate, checkedAt: performance.now() };
    this.#connections.set(id, connection);
    this.#bySocket.set(socket, connection);
    this.#counters.accepted.inc();
    if (user !== null) this.logger.debug("connected", { connection: id, user });
    socket.send(`workerID:${this.workerId} connectionID:${id} connected\n`);
  }

  #forget(socket: ClientSocket, code: number): void {
    const connection = this.#bySocket.get(socket);
    if (!connection) return;
    this.#connections.delete(connection.id);
    this.#counters.disconnects.inc(1, closeReason(code));
  }

  /** Client messages, pings and pongs are not used, but a flood costs CPU: a token bucket per connection. */
  #limitRate(socket: ClientSocket): void {
    const connection = this.#bySocket.get(socket);
    if (!connection) return;
    const now = performance.now();
    const rate = this.#maxMessageRate;
    connection.allowance = Math.min(rate, connection.allowance + (now - connection.checkedAt) * rate / 1000);
    connection.checkedAt = now;
    if (connection.allowance >= 1) {
      connection.allowance -= 1;
      return;
    }
    this.logger.info("closing a client over its message rate", { connection: connection.id, rate });
    socket.close(CloseCode.policyViolation, "message rate exceeded");
  }

  #broadcast(data: Json): void {
    const push = toPushData(data);
    if (!push || push.to_connection_id !== undefined) {
      this.#counters.dropped.inc(1, "bad_shape");
      this.logger.warn("dropped a broadcast of the wrong shape", { type: describe(data) });
      return;
    }
    // Encoded once; every socket gets the same frame.
    const message = new PreparedText(push.content);
    for (const connection of this.#connections.values()) connection.socket.send(message);
    this.#counters.delivered.inc(this.#connections.size, "broadcast");
  }

  #target(data: Json): void {
    const push = toPushData(data);
    if (!push || push.to_connection_id === undefined) {
      this.#counters.dropped.inc(1, "bad_shape");
      this.logger.warn("dropped a targeted event of the wrong shape", { type: describe(data) });
      return;
    }
    const connection = this.#connections.get(push.to_connection_id);
    if (!connection) {
      this.#counters.dropped.inc(1, "no_connection");
      this.logger.info("no such connection", { connection: push.to_connection_id });
      return;
    }
    connection.socket.send(push.content);
    this.#counters.delivered.inc(1, "targeted");
  }

  async #health(): Promise<Response> {
    const snapshot = await this.#gather();
    const total = (name: string) =>
      Object.values(snapshot.find((m) => m.name === name)?.series ?? {}).reduce((sum, v) => sum + v[0]!, 0);
    const expected = total("pusher_workers_expected") || 1;
    const answering = total("pusher_workers");
    const linked = total("pusher_hub_connected");
    if (answering === expected && linked === expected) return text(200, "ok");
    if (answering < expected) return text(503, `${expected - answering} of ${expected} workers not answering`);
    return text(503, `hub link down in ${expected - linked} of ${expected} workers`);
  }

  #registerMetrics(): Counters {
    const m = this.metrics;
    m.gauge({ name: "pusher_workers", help: "Pusher workers answering" }).set(1);
    m.gauge({ name: "pusher_connections", help: "Open WebSocket connections" }).collect(() => this.#connections.size);
    m.gauge({ name: "pusher_hub_connected", help: "Workers whose hub link is up" })
      .collect(() => this.#hub.connected ? 1 : 0);
    m.gauge({ name: "pusher_hub_reconnects_total", help: "Times a hub link came back" })
      .collect(() => this.#hub.reconnects);
    return {
      accepted: m.counter({ name: "pusher_connections_total", help: "WebSocket connections accepted" }),
      rejected: m.counter({
        name: "pusher_rejected_total",
        help: "Connections refused, by reason",
        labels: ["reason"],
      }),
      disconnects: m.counter({ name: "pusher_disconnects_total", help: "Connections closed", labels: ["reason"] }),
      delivered: m.counter({ name: "pusher_deliveries_total", help: "Messages handed to sockets", labels: ["kind"] }),
      dropped: m.counter({ name: "pusher_drops_total", help: "Hub events not delivered", labels: ["reason"] }),
    };
  }
}

/** Why a connection closed, from its close code, for metrics. */
function closeReason(code: number): string {
  switch (code) {
    case CloseCode.slow:
      return "slow";
    case CloseCode.abnormal:
      return "dropped";
    case CloseCode.policyViolation:
      return "policy";
    case CloseCode.protocolError:
    case CloseCode.invalidData:
    case CloseCode.messageTooBig:
      return "protocol_error";
    case CloseCode.goingAway:
      return "going_away";
    default:
      return "closed";
  }
}

function text(status: number, body: string): Response {
  return new Response(`${body}\n`, { status, headers: { "content-type": "text/plain;charset=utf-8" } });
}

function describe(data: Json): string {
  return data === null ? "null" : Array.isArray(data) ? "array" : typeof data;
}
