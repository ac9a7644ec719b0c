/**
 * One pusher worker: it takes WebSocket connections from its transport,
 * greets each with its address, and delivers to them what its bus carries.
 * Who may connect (`admission.ts`), the connections (`registry.ts`), the
 * delivery of events (`delivery.ts`), client message rates
 * (`rate_limit.ts`) and metrics (`pusher_metrics.ts`) each have a file.
 *
 * @module
 */

import { demoPage } from "./demo_page.ts";
import { clientAssetResponse } from "./client_asset.ts";
import { Admission } from "./admission.ts";
import { Delivery } from "./delivery.ts";
import { type Connection, ConnectionRegistry } from "./registry.ts";
import { type RateBucket, RateLimiter } from "./rate_limit.ts";
import { closeReason, healthOf, type PusherCounters, registerPusherMetrics } from "./pusher_metrics.ts";
import type { ClientSocket, SocketHandlers } from "./socket.ts";
import type { Transport, TransportRequest } from "./transport.ts";
import { CloseCode } from "./websocket.ts";
import { BROADCAST_SUBJECT, workerSubject } from "../shared/address.ts";
import type { Bus } from "../shared/bus.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { PROMETHEUS_CONTENT_TYPE, Registry, type RegistrySnapshot, renderPrometheus } from "../shared/metrics.ts";

/** Options for {@linkcode Pusher}. */
export interface PusherOptions {
  /** This worker's id: part of every connection's address. */
  workerId: string;
  /** What events come from; the pusher subscribes it to its subjects. */
  bus: Bus;
  /** What turns requests into sockets: `listenTransport` from `pusher/server.ts`, say. */
  transport: Transport;
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
  /** Monotonic clock for message rates, in milliseconds. @default {performance.now} */
  now?: () => number;
}

/** An open connection, with its message-rate bucket. */
interface PusherConnection extends Connection {
  readonly rate: RateBucket;
}

/**
 * A pusher worker. Subscribes its bus to the broadcast subject and to its
 * own worker subject; greets each new connection with its address; sends
 * broadcasts to every connection and targeted events to one.
 *
 * @example
 * ```ts
 * import { Pusher } from "./pusher.ts";
 * import { listenTransport, serve } from "./server.ts";
 * import { newWorkerId } from "../shared/address.ts";
 * import { openBus } from "../shared/open_bus.ts";
 *
 * const bus = openBus("channel://127.0.0.1:2206");
 * const pusher = new Pusher({ workerId: newWorkerId(), bus, transport: listenTransport });
 * serve({ port: 4236 }, pusher.handler);
 * ```
 */
export class Pusher {
  readonly workerId: string;
  /** Where this pusher logs; its transport can log there too. */
  readonly logger: Logger;
  /** This worker's metrics. */
  readonly metrics: Registry = new Registry();
  readonly #connections = new ConnectionRegistry<PusherConnection>();
  readonly #bus: Bus;
  readonly #transport: Transport;
  readonly #admission: Admission;
  readonly #rates: RateLimiter;
  readonly #delivery: Delivery;
  readonly #page: string;
  readonly #gather: () => Promise<RegistrySnapshot>;
  readonly #anonymous: SocketHandlers;
  readonly #counters: PusherCounters;
  #accepting = true;

  constructor(options: PusherOptions) {
    this.workerId = options.workerId;
    this.#bus = options.bus;
    this.#transport = options.transport;
    this.logger = options.logger ?? createLogger("pusher", { fields: { worker: this.workerId } });
    this.#admission = new Admission(options);
    this.#rates = new RateLimiter(options.maxMessageRate ?? 50, options.now);
    this.#page = demoPage({ publisherUrl: options.publisherUrl ?? null });
    this.#gather = options.gather ?? (() => Promise.resolve(this.metrics.snapshot()));
    // Connections without a user share one handlers object: no per-socket closures.
    this.#anonymous = this.#handlersFor(null);
    this.#counters = registerPusherMetrics(this.metrics, {
      connections: () => this.#connections.size,
      busConnected: () => this.#bus.connected,
      busReconnects: () => this.#bus.reconnects,
    });
    this.#delivery = new Delivery(this.#connections, this.#transport, this.#counters, this.logger);
    this.#bus.subscribe(BROADCAST_SUBJECT, (data) => this.#delivery.broadcast(data));
    this.#bus.subscribe(workerSubject(this.workerId), (data) => this.#delivery.target(data));
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Serves WebSocket upgrades, the demo page on `GET /`, the client library (`/client.js`, `/client.d.ts`), `/healthz` and `/metrics`. */
  readonly handler = async (req: TransportRequest): Promise<Response> => {
    const url = new URL(req.url);
    if (this.#transport.isUpgrade(req)) return this.#upgrade(req, url);
    if (req.method !== "GET" && req.method !== "HEAD") return text(405, "Method not allowed: use GET");
    switch (url.pathname) {
      case "/":
        return new Response(this.#page, { headers: { "content-type": "text/html;charset=utf-8" } });
      case "/client.js":
      case "/client.d.ts":
        return clientAssetResponse(req.headers, url.pathname);
      case "/healthz": {
        const health = healthOf(await this.#gather());
        return text(health.ok ? 200 : 503, health.reason);
      }
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

  /** Stops listening to the bus. */
  detach(): void {
    this.#bus.unsubscribe(BROADCAST_SUBJECT);
    this.#bus.unsubscribe(workerSubject(this.workerId));
  }

  #upgrade(req: TransportRequest, url: URL): Response {
    if (!this.#accepting) return this.#reject("shutting_down", 503, "Shutting down");
    const admission = this.#admission.check(req, url);
    if (!admission.admitted) return this.#reject(admission.reason, admission.status, admission.message);
    const handlers = admission.user === null ? this.#anonymous : this.#handlersFor(admission.user);
    return this.#transport.upgrade(req, handlers);
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
    const id = this.#connections.nextId();
    this.#connections.add({ id, socket, user, rate: this.#rates.bucket() });
    this.#counters.accepted.inc();
    if (user !== null) this.logger.debug("connected", { connection: id, user });
    socket.send(`workerID:${this.workerId} connectionID:${id} connected\n`);
  }

  #forget(socket: ClientSocket, code: number): void {
    if (this.#connections.remove(socket)) this.#counters.disconnects.inc(1, closeReason(code));
  }

  #limitRate(socket: ClientSocket): void {
    const connection = this.#connections.of(socket);
    if (!connection || this.#rates.take(connection.rate)) return;
    this.logger.info("closing a client over its message rate", { connection: connection.id, rate: this.#rates.rate });
    socket.close(CloseCode.policyViolation, "message rate exceeded");
  }
}

function text(status: number, body: string): Response {
  return new Response(`${body}\n`, { status, headers: { "content-type": "text/plain;charset=utf-8" } });
}
