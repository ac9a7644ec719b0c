/**
 * One pusher worker: its WebSocket connections, their addresses, and the
 * delivery of hub events to them.
 *
 * @module
 */

import { demoPage } from "./demo_page.ts";
import type { ClientSocket, SocketHandlers } from "./socket.ts";
import { upgradeWebSocket } from "./server.ts";
import { CloseCode, PreparedText } from "./websocket.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { BROADCAST_CHANNEL, type Json, toPushData, workerChannel } from "../shared/wire.ts";

/** What the pusher needs of its hub link: a `ChannelClient` fits. */
export interface EventSource {
  on(channel: string, handler: (data: Json, channel: string) => void): void;
  off(channel: string): void;
}

/** Options for {@linkcode Pusher}. */
export interface PusherOptions {
  /** This worker's id: part of every connection's address. */
  workerId: string;
  /** The hub link events come from. */
  hub: EventSource;
  /** Publisher base URL the demo page calls; null lets the page use its own host on port 4237. @default {null} */
  publisherUrl?: string | null;
  /** Where log lines go. @default {createLogger("pusher")} */
  logger?: Logger;
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
  readonly #connections = new Map<number, ClientSocket>();
  readonly #ids = new WeakMap<ClientSocket, number>();
  readonly #hub: EventSource;
  readonly #page: string;
  readonly #logger: Logger;
  readonly #handlers: SocketHandlers;
  #nextId = 1;
  #accepting = true;

  constructor(options: PusherOptions) {
    this.workerId = options.workerId;
    this.#hub = options.hub;
    this.#page = demoPage({ publisherUrl: options.publisherUrl ?? null });
    this.#logger = options.logger ?? createLogger("pusher", { fields: { worker: this.workerId } });
    this.logger = this.#logger;
    this.#handlers = {
      open: (socket) => this.#open(socket),
      message: () => {},
      close: (socket) => this.#forget(socket),
    };
    this.#hub.on(BROADCAST_CHANNEL, (data) => this.#broadcast(data));
    this.#hub.on(workerChannel(this.workerId), (data) => this.#target(data));
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Serves WebSocket upgrades, and the demo page on `GET /`. */
  readonly handler = (req: Request): Response => {
    const url = new URL(req.url);
    if (req.headers.get("upgrade") !== null) {
      if (!this.#accepting) return text(503, "Shutting down");
      return upgradeWebSocket(req, this.#handlers);
    }
    if (url.pathname !== "/") return text(404, `Not found: ${url.pathname}`);
    if (req.method !== "GET" && req.method !== "HEAD") return text(405, "Method not allowed: use GET");
    return new Response(this.#page, { headers: { "content-type": "text/html;charset=utf-8" } });
  };

  /** Stops taking connections and closes every open one with `code`. */
  closeAll(code: number = CloseCode.goingAway, reason = "going away"): void {
    this.#accepting = false;
    for (const socket of this.#connections.values()) socket.close(code, reason);
  }

  /** Stops listening to the hub. */
  detach(): void {
    this.#hub.off(BROADCAST_CHANNEL);
    this.#hub.off(workerChannel(this.workerId));
  }

  #open(socket: ClientSocket): void {
    const id = this.#nextId++;
    this.#connections.set(id, socket);
    this.#ids.set(socket, id);
    socket.send(`workerID:${this.workerId} connectionID:${id} connected\n`);
  }

  #forget(socket: ClientSocket): void {
    const id = this.#ids.get(socket);
    if (id !== undefined) this.#connections.delete(id);
  }

  #broadcast(data: Json): void {
    const push = toPushData(data);
    if (!push || push.to_connection_id !== undefined) {
      this.#logger.warn("dropped a broadcast of the wrong shape", { type: describe(data) });
      return;
    }
    // Encoded once; every socket gets the same frame.
    const message = new PreparedText(push.content);
    for (const socket of this.#connections.values()) socket.send(message);
  }

  #target(data: Json): void {
    const push = toPushData(data);
    if (!push || push.to_connection_id === undefined) {
      this.#logger.warn("dropped a targeted event of the wrong shape", { type: describe(data) });
      return;
    }
    const socket = this.#connections.get(push.to_connection_id);
    if (!socket) {
      this.#logger.info("no such connection", { connection: push.to_connection_id });
      return;
    }
    socket.send(push.content);
  }
}

function text(status: number, body: string): Response {
  return new Response(`${body}\n`, { status, headers: { "content-type": "text/plain;charset=utf-8" } });
}

function describe(data: Json): string {
  return data === null ? "null" : Array.isArray(data) ? "array" : typeof data;
}
