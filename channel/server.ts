/**
 * The channel hub's TCP server: accepts connections on `Deno.listen`, decodes
 * their frames, routes messages through a {@linkcode Hub}, and writes through
 * one coalescing {@linkcode FrameWriter} per connection.
 *
 * @module
 */

import { Hub, type HubOptions, type Peer } from "./hub.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { secretsEqual } from "../shared/secret.ts";
import {
  type ClientMessage,
  DEFAULT_CHANNEL_PORT,
  DEFAULT_MAX_FRAME_BYTES,
  encodeMessage,
  type HubMessage,
  type Json,
  MessageDecoder,
  PROTOCOL_VERSION,
  toClientMessage,
} from "../shared/wire.ts";
import { DEFAULT_MAX_PENDING_BYTES, FrameWriter } from "../shared/writer.ts";

/** Options for {@linkcode serveChannel}. */
export interface ChannelServerOptions extends HubOptions {
  /** Address to listen on. Use `0.0.0.0` to take connections from other machines. @default {"127.0.0.1"} */
  hostname?: string;
  /** TCP port; 0 picks a free one. @default {2206} */
  port?: number;
  /** When set, every client must present it in its `hello`. */
  token?: string;
  /** Largest frame accepted from a client, header included. @default {1048576} */
  maxFrameBytes?: number;
  /**
   * Most bytes waiting to be written to one client. A client past it is a slow
   * consumer: it gets an error frame and is disconnected.
   *
   * @default {8388608}
   */
  maxPendingBytes?: number;
  /**
   * Longest a write to one client may stay blocked, in milliseconds. A client
   * that stops reading fills its kernel buffer, its writes block, and past
   * this it is disconnected as a slow consumer. It bounds how long one stuck
   * subscriber can hold up the acknowledgements of publishes.
   *
   * @default {2000}
   */
  writeTimeout?: number;
  /** Most clients connected at once; more are refused with an error frame. @default {1024} */
  maxConnections?: number;
  /** How often clients are expected to ping, in milliseconds. @default {25000} */
  pingInterval?: number;
  /** A client silent for this many ping intervals is disconnected. @default {3} */
  idlePings?: number;
  /**
   * Publishes and enqueues that arrive within this many milliseconds of the
   * hub starting wait until it ends, so that after a restart every client
   * has reconnected and re-subscribed before anything is routed. Clients
   * reconnect within their `maxReconnectDelay` (1000 ms by default).
   *
   * @default {1500}
   */
  startupGrace?: number;
  /** How long a closing connection gets to take its error frame, in milliseconds. @default {1000} */
  closeGrace?: number;
  /** Aborting it shuts the server down. */
  signal?: AbortSignal;
  /** Called once listening. @default {logs the address} */
  onListen?: (addr: Deno.NetAddr) => void;
  /** Where log lines go. @default {createLogger("channel")} */
  logger?: Logger;
}

/** A running hub. */
export interface ChannelServer extends AsyncDisposable {
  /** The address it listens on (with the real port when 0 was asked). */
  readonly addr: Deno.NetAddr;
  /** Resolves once the server has shut down and every connection is closed. */
  readonly finished: Promise<void>;
  /** The routing state, for stats. */
  readonly hub: Hub;
  /** Stops accepting, lets every connection flush (bounded by `closeGrace`), and closes them. */
  shutdown(): Promise<void>;
}

/**
 * Starts a channel hub.
 *
 * @example
 * ```ts
 * await using server = serveChannel({ port: 0, onListen() {} });
 * console.log(server.addr.port);
 * ```
 */
export function serveChannel(options: ChannelServerOptions = {}): ChannelServer {
  const listener = Deno.listen({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? DEFAULT_CHANNEL_PORT,
  });
  const addr = listener.addr as Deno.NetAddr;
  const logger = options.logger ?? createLogger("channel");
  const settings: Settings = {
    token: options.token,
    maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
    maxPendingBytes: options.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES,
    maxConnections: options.maxConnections ?? 1024,
    writeTimeout: options.writeTimeout ?? 2000,
    pingInterval: options.pingInterval ?? 25_000,
    idlePings: options.idlePings ?? 3,
    closeGrace: options.closeGrace ?? 1000,
    startupGrace: options.startupGrace ?? 1500,
  };
  const server = new Server(listener, new Hub(options), settings, logger);
  if (options.signal?.aborted) server.shutdown();
  options.signal?.addEventListener("abort", () => server.shutdown(), { once: true });
  (options.onListen ?? ((a) => logger.info("listening", { addr: `${a.hostname}:${a.port}` })))(addr);
  return {
    addr,
    finished: server.finished,
    hub: server.hub,
    shutdown: () => server.shutdown(),
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

interface Settings {
  token: string | undefined;
  maxFrameBytes: number;
  maxPendingBytes: number;
  maxConnections: number;
  writeTimeout: number;
  pingInterval: number;
  idlePings: number;
  closeGrace: number;
  startupGrace: number;
}

class Server {
  readonly hub: Hub;
  readonly finished: Promise<void>;
  readonly #listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>;
  readonly #settings: Settings;
  readonly #logger: Logger;
  readonly #connections = new Set<Connection>();
  readonly #sweep: ReturnType<typeof setInterval>;
  readonly #watchdog: ReturnType<typeof setInterval>;
  readonly #grace: Grace;
  #nextId = 1;
  #shuttingDown: Promise<void> | null = null;

  constructor(
    listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>,
    hub: Hub,
    settings: Settings,
    logger: Logger,
  ) {
    this.#listener = listener;
    this.hub = hub;
    this.#settings = settings;
    this.#logger = logger;
    this.#grace = new Grace(settings.startupGrace);
    this.#sweep = setInterval(() => this.#closeIdle(), settings.pingInterval);
    this.#watchdog = setInterval(() => this.#closeStalled(), Math.max(10, settings.writeTimeout / 4));
    this.finished = this.#acceptLoop();
  }

  shutdown(): Promise<void> {
    if (this.#shuttingDown) return this.#shuttingDown;
    this.#shuttingDown = (async () => {
      clearInterval(this.#sweep);
      clearInterval(this.#watchdog);
      this.#grace.end();
      try {
        this.#listener.close();
      } catch { /* already closed */ }
      for (const connection of this.#connections) connection.end();
      await this.finished;
    })();
    return this.#shuttingDown;
  }

  async #acceptLoop(): Promise<void> {
    const serving = new Set<Promise<void>>();
    while (true) {
      let tcp: Deno.TcpConn;
      try {
        tcp = await this.#listener.accept();
      } catch (error) {
        if (this.#shuttingDown) break;
        // Out of file descriptors and the like: log it and keep serving.
        this.#logger.error("accept failed", { error: (error as Error).message });
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      const connection = new Connection(this.#nextId++, tcp, this.hub, this.#settings, this.#logger, this.#grace);
      if (this.#connections.size >= this.#settings.maxConnections) {
        connection.fail(`Hub is full: ${this.#settings.maxConnections} connections`);
      }
      this.#connections.add(connection);
      const done = connection.serve().finally(() => {
        this.#connections.delete(connection);
        serving.delete(done);
      });
      serving.add(done);
    }
    await Promise.all(serving);
  }

  #closeStalled(): void {
    const now = Date.now();
    for (const connection of this.#connections) {
      const stalled = connection.stalledFor(now);
      if (stalled > this.#settings.writeTimeout) {
        connection.fail(`Slow consumer: a write has been blocked for ${stalled} ms`);
      }
    }
  }

  #closeIdle(): void {
    const limit = this.#settings.pingInterval * this.#settings.idlePings;
    const now = Date.now();
    for (const connection of this.#connections) {
      if (now - connection.lastSeen > limit) connection.fail(`Idle: no message for ${limit} ms`);
    }
  }
}

/** The startup grace: a promise that resolves when it is over. */
class Grace {
  readonly over: Promise<void>;
  #active = true;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #resolve!: () => void;

  constructor(ms: number) {
    this.over = new Promise((resolve) => (this.#resolve = resolve));
    if (ms > 0) this.#timer = setTimeout(() => this.end(), ms);
    else this.end();
  }

  get active(): boolean {
    return this.#active;
  }

  end(): void {
    clearTimeout(this.#timer);
    this.#active = false;
    this.#resolve();
  }
}

/** Messages that route data to others, held during the startup grace. */
const ROUTED = new Set<ClientMessage["type"]>(["publish", "publishLoop", "enqueue"]);

class Connection implements Peer {
  lastSeen = Date.now();
  readonly #id: number;
  readonly #tcp: Deno.TcpConn;
  readonly #hub: Hub;
  readonly #settings: Settings;
  readonly #logger: Logger;
  readonly #writer: FrameWriter;
  readonly #decoder: MessageDecoder<ClientMessage>;
  readonly #grace: Grace;
  #greeted = false;
  #closing = false;
  #closed = false;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(id: number, tcp: Deno.TcpConn, hub: Hub, settings: Settings, logger: Logger, grace: Grace) {
    this.#id = id;
    this.#grace = grace;
    this.#tcp = tcp;
    this.#hub = hub;
    this.#settings = settings;
    this.#logger = logger;
    this.#writer = new FrameWriter(tcp, {
      maxPendingBytes: settings.maxPendingBytes,
      onError: () => this.#close(),
    });
    this.#decoder = new MessageDecoder(toClientMessage, { maxFrameBytes: settings.maxFrameBytes });
    tcp.setNoDelay(true);
    hub.join(this);
  }

  send(frame: Uint8Array): boolean {
    if (this.#writer.enqueue(frame)) return true;
    this.fail(`Slow consumer: more than ${this.#settings.maxPendingBytes} bytes waiting to be written`);
    return false;
  }

  /** Milliseconds the write in flight has been blocked; 0 once closing, as it is being dealt with. */
  stalledFor(now: number): number {
    return this.#closing ? 0 : this.#writer.stalledFor(now);
  }

  /** Resolves true once everything queued so far is in the kernel's socket buffer. */
  flushed(): Promise<boolean> {
    return this.#writer.flushed();
  }

  async serve(): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await this.#tcp.read(buffer);
        if (n === null) break;
        this.lastSeen = Date.now();
        // After an error the connection only drains what the peer still sends.
        if (this.#closing) continue;
        const held = this.#receive(buffer.subarray(0, n));
        if (held) await this.#resume(held);
      }
    } catch (error) {
      if (!this.#closed) this.#logger.debug("read failed", { conn: this.#id, error: (error as Error).message });
    } finally {
      this.#hub.leave(this);
      if (this.#closing) await this.#writer.end();
      this.#close();
    }
  }

  /** Closes with an error frame: for the peer's mistakes and for limits. */
  fail(reason: string): void {
    if (this.#closing) return;
    this.#logger.warn("closing connection", { conn: this.#id, reason });
    this.#closing = true;
    this.#hub.leave(this);
    this.#graceTimer = setTimeout(() => this.#close(), this.#settings.closeGrace);
    this.#writer.end(encodeMessage({ type: "error", reason })).then(() => {
      // Half-close: the peer reads the error, then end of stream.
      if (!this.#closed) this.#tcp.closeWrite().catch(() => this.#close());
    });
  }

  /** Closes after flushing what is queued: for shutdown. */
  end(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#hub.leave(this);
    this.#graceTimer = setTimeout(() => this.#close(), this.#settings.closeGrace);
    this.#writer.end().then(() => this.#close());
  }

  /**
   * Decodes and handles a chunk's messages. Returns those not yet handled
   * when one of them must wait for the startup grace to end.
   */
  #receive(chunk: Uint8Array): ClientMessage[] | null {
    let messages: ClientMessage[];
    try {
      messages = this.#decoder.push(chunk);
    } catch (error) {
      this.fail((error as Error).message);
      return null;
    }
    return this.#handleAll(messages);
  }

  #handleAll(messages: ClientMessage[]): ClientMessage[] | null {
    for (let i = 0; i < messages.length; i++) {
      const message = messages[i]!;
      if (this.#grace.active && ROUTED.has(message.type)) return messages.slice(i);
      this.#handle(message);
      if (this.#closing) return null;
    }
    return null;
  }

  /** Waits for the grace to end, then handles held messages in order; reading pauses meanwhile. */
  async #resume(held: ClientMessage[]): Promise<void> {
    await this.#grace.over;
    if (!this.#closing) this.#handleAll(held);
  }

  #handle(message: ClientMessage): void {
    if (message.type === "hello") {
      this.#greet(message.version, message.token);
      return;
    }
    if (!this.#greeted) {
      this.fail(`Expected hello first, got ${message.type}`);
      return;
    }
    try {
      switch (message.type) {
        case "subscribe":
          this.#hub.subscribe(this, message.channels);
          break;
        case "unsubscribe":
          this.#hub.unsubscribe(this, message.channels);
          break;
        case "publish":
          this.#acknowledge(message.id, this.#hub.publish(message.channels, message.data));
          break;
        case "publishLoop":
          this.#acknowledge(message.id, this.#hub.publishLoop(message.channels, message.data));
          break;
        case "watch":
          this.#hub.watch(this, message.channels);
          break;
        case "unwatch":
          this.#hub.unwatch(this, message.channels);
          break;
        case "enqueue":
          this.#enqueue(message.id, message.channels, message.data);
          break;
        case "reserve":
          this.#hub.reserve(this);
          break;
        case "ping":
          this.#reply({ type: "pong" });
          break;
      }
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      this.fail(error.message);
    }
  }

  #greet(version: number, token: string | undefined): void {
    if (this.#greeted) return this.fail("Hello sent twice");
    if (version !== PROTOCOL_VERSION) {
      return this.fail(`Unsupported protocol version ${version}: this hub speaks ${PROTOCOL_VERSION}`);
    }
    const expected = this.#settings.token;
    if (expected !== undefined && (token === undefined || !secretsEqual(token, expected))) {
      return this.fail(token === undefined ? "Unauthorized: this hub needs a token" : "Unauthorized: wrong token");
    }
    this.#greeted = true;
  }

  #enqueue(id: number, queues: string[], data: Json): void {
    let count: number;
    try {
      count = this.#hub.enqueue(queues, data);
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      this.#reply({ type: "error", id, reason: error.message });
      return;
    }
    this.#reply({ type: "ack", id, count });
  }

  /**
   * Acknowledges a publish once its event is in the kernel's buffer of every
   * subscriber it was queued for, so an `ack` survives a hub crash after it.
   */
  #acknowledge(id: number, reached: Peer[]): void {
    if (reached.length === 0) {
      this.#reply({ type: "ack", id, count: 0 });
      return;
    }
    const writes = reached.map((peer) => (peer as Connection).flushed());
    Promise.all(writes).then((written) => {
      this.#reply({ type: "ack", id, count: written.filter(Boolean).length });
    });
  }

  #reply(message: HubMessage): void {
    this.send(encodeMessage(message));
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing = true;
    clearTimeout(this.#graceTimer);
    this.#writer.close();
    try {
      this.#tcp.close();
    } catch { /* already closed */ }
  }
}
