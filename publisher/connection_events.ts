/**
 * `GET /api/events`: the connection events of pusher workers started with
 * `--connection-events` (`connect` once a connection is greeted,
 * `disconnect` when it ends), streamed to backends as a `text/event-stream`.
 * The publisher subscribes to the bus's `connections` subject while at least
 * one stream is open. Events are live only: a backend that (re)connects
 * learns who is there now from `/api/presence` or `/api/info`, and hears of
 * every change from the moment its stream's answer came.
 *
 * @module
 */

import { CONNECTIONS_SUBJECT, toConnectionEvent } from "../shared/address.ts";
import type { Bus } from "../shared/bus.ts";
import type { Json } from "../shared/json.ts";
import type { Logger } from "../shared/log.ts";
import { eventStream } from "../shared/http.ts";
import { Rejection } from "./_rejection.ts";

/** The default of {@linkcode ConnectionEventStreamsOptions.maxStreams}. */
export const DEFAULT_MAX_EVENT_STREAMS = 16;
/** The default of {@linkcode ConnectionEventStreamsOptions.maxQueued}. */
export const DEFAULT_MAX_QUEUED_EVENTS = 10_000;

/** Options for {@linkcode ConnectionEventStreams}. */
export interface ConnectionEventStreamsOptions {
  /** Streams open at once; past it, 429. @default {16} */
  maxStreams?: number;
  /**
   * Events a stream may hold that its reader has not taken; one more ends
   * it with `event: error`, as it then missed some. @default {10000}
   */
  maxQueued?: number;
  /** How long a first stream waits for the bus to confirm the subscription, in milliseconds; then 503. @default {5000} */
  subscribeTimeout?: number;
  /** Milliseconds between comment lines that keep an idle stream (and the proxies on its way) open. @default {25000} */
  heartbeat?: number;
  /** Where malformed events and dropped streams are logged. */
  logger: Logger;
}

interface EventStream {
  controller: ReadableStreamDefaultController<Uint8Array>;
}

const utf8 = new TextEncoder();
const OPENED = utf8.encode("retry: 2000\n: connection events follow\n\n");
const PING = utf8.encode(": ping\n\n");

/**
 * The open event streams, and the bus subscription they share.
 *
 * @example
 * ```ts
 * import { ConnectionEventStreams } from "./connection_events.ts";
 * import { createLogger } from "../shared/log.ts";
 * import { MemoryBroker } from "../shared/memory_bus.ts";
 *
 * const streams = new ConnectionEventStreams(new MemoryBroker().connect(), { logger: createLogger("publisher") });
 * const response = await streams.open({}); // text/event-stream: event: connect, data: {"worker_id":...}
 * streams.close();
 * await response.body?.cancel();
 * ```
 */
export class ConnectionEventStreams {
  readonly #bus: Bus;
  readonly #maxStreams: number;
  readonly #maxQueued: number;
  readonly #subscribeTimeout: number;
  readonly #heartbeat: number;
  readonly #logger: Logger;
  readonly #streams = new Set<EventStream>();
  /** Streams being opened: they count against `maxStreams` while they wait for the subscription. */
  #opening = 0;
  #subscribed: Promise<void> | undefined;
  #pinger: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  constructor(bus: Bus, options: ConnectionEventStreamsOptions) {
    this.#bus = bus;
    this.#maxStreams = options.maxStreams ?? DEFAULT_MAX_EVENT_STREAMS;
    this.#maxQueued = options.maxQueued ?? DEFAULT_MAX_QUEUED_EVENTS;
    this.#subscribeTimeout = options.subscribeTimeout ?? 5000;
    this.#heartbeat = options.heartbeat ?? 25_000;
    this.#logger = options.logger;
  }

  /** Streams open now. */
  get size(): number {
    return this.#streams.size;
  }

  /**
   * Opens a stream, once the bus has the publisher's subscription: every
   * event told after the answer's head is in it.
   *
   * @throws {Rejection} 429 when `maxStreams` are open, 503 when the bus
   * did not confirm the subscription in time or the streams are closed.
   */
  async open(headers: Readonly<Record<string, string>>): Promise<Response> {
    if (this.#closed) throw new Rejection(503, "Shutting down", { headers: { "retry-after": "5" } });
    if (this.#streams.size + this.#opening >= this.#maxStreams) {
      throw new Rejection(429, `Too many event streams: ${this.#maxStreams} are open`, {
        headers: { "retry-after": "5" },
      });
    }
    this.#opening++;
    try {
      await this.#subscribe();
    } finally {
      this.#opening--;
    }
    if (this.#closed) throw new Rejection(503, "Shutting down", { headers: { "retry-after": "5" } });
    let stream!: EventStream;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        stream = { controller };
        this.#streams.add(stream);
        controller.enqueue(OPENED);
      },
      cancel: () => this.#drop(stream),
    }, new CountQueuingStrategy({ highWaterMark: this.#maxQueued }));
    this.#pinger ??= setInterval(() => this.#sendAll(PING), this.#heartbeat);
    return eventStream(body, headers);
  }

  /** Ends every stream and refuses new ones (the server is draining). Harmless twice. */
  close(): void {
    this.#closed = true;
    for (const stream of [...this.#streams]) this.#end(stream);
    this.#release();
  }

  async #subscribe(): Promise<void> {
    this.#subscribed ??= this.#bus.subscribe(CONNECTIONS_SUBJECT, (data) => this.#event(data));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const message =
          `Cannot stream connection events: the bus did not confirm a subscription within ${this.#subscribeTimeout} ms`;
        reject(new Rejection(503, message, { headers: { "retry-after": "5" } }));
      }, this.#subscribeTimeout);
    });
    try {
      await Promise.race([this.#subscribed, late]);
    } catch (error) {
      // No stream came of it: no subscription kept for none.
      if (this.#streams.size === 0 && this.#opening === 1) this.#release();
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  #event(data: Json): void {
    const event = toConnectionEvent(data);
    if (event === null) {
      this.#logger.warn("dropped a malformed connection event", { data: JSON.stringify(data).slice(0, 200) });
      return;
    }
    const [kind, body] = "connect" in event ? ["connect", event.connect] : ["disconnect", event.disconnect];
    this.#sendAll(utf8.encode(`event: ${kind}\ndata: ${JSON.stringify(body)}\n\n`));
  }

  #sendAll(bytes: Uint8Array): void {
    for (const stream of [...this.#streams]) {
      const { controller } = stream;
      if (controller.desiredSize !== null && controller.desiredSize > 0) {
        controller.enqueue(bytes);
        continue;
      }
      // A reader this far behind has missed events: it is told, and ends, rather than hold more.
      this.#logger.warn("ended a connection event stream that fell behind", { queued: this.#maxQueued });
      const message = JSON.stringify({ message: `Too slow: over ${this.#maxQueued} events waited; some were dropped` });
      controller.enqueue(utf8.encode(`event: error\ndata: ${message}\n\n`));
      this.#end(stream);
    }
  }

  #end(stream: EventStream): void {
    try {
      stream.controller.close();
    } catch { /* already closed or cancelled */ }
    this.#drop(stream);
  }

  #drop(stream: EventStream): void {
    this.#streams.delete(stream);
    if (this.#streams.size === 0 && this.#opening === 0) this.#release();
  }

  /** No stream left: the subscription and the heartbeat go. */
  #release(): void {
    clearInterval(this.#pinger);
    this.#pinger = undefined;
    if (this.#subscribed === undefined) return;
    this.#subscribed = undefined;
    this.#bus.unsubscribe(CONNECTIONS_SUBJECT);
  }
}
