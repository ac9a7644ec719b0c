/**
 * The channel hub's TCP server: accepts connections on `Deno.listen`, decodes
 * their frames, routes messages through a {@linkcode Hub}, and writes through
 * one coalescing {@linkcode FrameWriter} per connection.
 *
 * @module
 */

import { Hub, type HubOptions, type Peer } from "./hub.ts";
import { acceptNext } from "../shared/accept.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { Registry, type RegistrySnapshot } from "../shared/metrics.ts";
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
import { timerMs } from "../shared/duration.ts";

/** Options for {@linkcode serveChannel}. */
export interface ChannelServerOptions extends HubOptions {
  /** Address to listen on. Use `0.0.0.0` to take connections from other machines. @default {"127.0.0.1"} */
  hostname?: string;
  /** TCP port; 0 picks a free one. @default {2206} */
  port?: number;
  /** When set, every client must present it in its `hello`. */
  token?: string;
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
  /**
   * Most clients connected at once past their `hello` (with the token, if
   * the hub has one); more are refused with an error frame. Connections
   * still waiting for their `hello` have a budget of as many again, and a
   * new one past it closes the oldest: clients without the token cannot
   * keep those with it out. @default {1024}
   */
  maxConnections?: number;
  /** How often clients are expected to ping, in milliseconds. @default {25000} */
  pingInterval?: number;
  /** A client silent for this many ping intervals is disconnected. @default {3} */
  idlePings?: number;
  /**
   * Time a new connection gets to send `hello`, in milliseconds; without it,
   * it is disconnected (within twice this), or sooner when newer
   * connections need its place (see `maxConnections`). @default {10000}
   */
  helloTimeout?: number;
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

/** Why the hub let a connection go, as counted in `channel_disconnects_total{reason}`. */
export type DisconnectReason =
  /** Over `maxPendingBytes`, or a write blocked past `writeTimeout`. */
  | "slow_consumer"
  /** No complete frame for `pingInterval` × `idlePings` (or no `hello` within it). */
  | "idle"
  /** A bad frame or message, `hello` missing or sent twice, an unknown protocol version. */
  | "protocol_error"
  /** No token or a wrong one. */
  | "unauthorized"
  /** Refused at `maxConnections`. */
  | "full"
  /** Subscribed or watched past `maxChannelsPerPeer`. */
  | "limit"
  /** The peer went away: end of stream, or a failed read or write. */
  | "closed"
  /** The hub shut down. */
  | "shutdown";

/** Every {@linkcode DisconnectReason}, in the order metrics list them. */
export const DISCONNECT_REASONS: readonly DisconnectReason[] = [
  "slow_consumer",
  "idle",
  "protocol_error",
  "unauthorized",
  "full",
  "limit",
  "closed",
  "shutdown",
];

/** Counters and gauges of a running hub, from {@linkcode ChannelServer.stats}. */
export interface ChannelServerStats {
  /** Connections open now, closing ones included. */
  connections: number;
  /** `publish` and `publishLoop` messages handled. */
  publishes: number;
  /** Event frames queued to subscribers (a publish reaching 3 subscribers counts 3). */
  deliveries: number;
  /** `enqueue` messages handled, refused ones included. */
  enqueues: number;
  /** `enqueue` messages refused: a queue or all queues were full, or the message too large once encoded. */
  enqueuesRefused: number;
  /** Connections the hub let go, by reason; each connection counts once. */
  disconnects: Record<DisconnectReason, number>;
  /** Channels with at least one subscriber. */
  channels: number;
  /** Queues that exist (watched, or holding messages). */
  queues: number;
  /** Messages waiting in queues. */
  queuedMessages: number;
  /** Bytes of the messages waiting in queues. */
  queuedBytes: number;
  /** Publishes waiting for their subscribers' writes before they are acked. */
  publishesWaiting: number;
}

/** A running hub. */
export interface ChannelServer extends AsyncDisposable {
  /** The address it listens on (with the real port when 0 was asked). */
  readonly addr: Deno.NetAddr;
  /** Resolves once the server has shut down and every connection is closed. */
  readonly finished: Promise<void>;
  /** The routing state, for stats. */
  readonly hub: Hub;
  /** True until shutdown begins: the hub takes new connections. */
  readonly accepting: boolean;
  /** Current counters and gauges, as a fresh object. */
  stats(): ChannelServerStats;
  /**
   * The same counters and gauges as Prometheus metrics (`channel_*`), for
   * `renderPrometheus` from `shared/metrics.ts`.
   */
  metrics(): RegistrySnapshot;
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
  // Checked before listening: a bad option must not leave a listener behind.
  const settings: Settings = {
    token: options.token,
    maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES,
    maxPendingBytes: options.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES,
    maxConnections: options.maxConnections ?? 1024,
    writeTimeout: timerMs("writeTimeout", options.writeTimeout ?? 2000),
    pingInterval: timerMs("pingInterval", options.pingInterval ?? 25_000, 1),
    idlePings: options.idlePings ?? 3,
    helloTimeout: timerMs("helloTimeout", options.helloTimeout ?? 10_000, 1),
    closeGrace: timerMs("closeGrace", options.closeGrace ?? 1000),
    startupGrace: timerMs("startupGrace", options.startupGrace ?? 1500),
  };
  const listener = Deno.listen({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? DEFAULT_CHANNEL_PORT,
  });
  const addr = listener.addr as Deno.NetAddr;
  const logger = options.logger ?? createLogger("channel");
  const server = new Server(listener, new Hub(options), settings, logger);
  if (options.signal?.aborted) server.shutdown();
  options.signal?.addEventListener("abort", () => server.shutdown(), { once: true });
  (options.onListen ?? ((a) => logger.info("listening", { addr: `${a.hostname}:${a.port}` })))(addr);
  return {
    addr,
    finished: server.finished,
    hub: server.hub,
    get accepting() {
      return server.accepting;
    },
    stats: () => server.stats(),
    metrics: () => metricsOf(server.stats()),
    shutdown: () => server.shutdown(),
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** Builds the Prometheus view of `stats`; called per scrape, never on the hot path. */
function metricsOf(stats: ChannelServerStats): RegistrySnapshot {
  const registry = new Registry();
  const gauge = (name: string, help: string, value: number) => registry.gauge({ name, help }).set(value);
  const counter = (name: string, help: string, value: number) => registry.counter({ name, help }).inc(value);
  gauge("channel_connections", "Connections open now, closing ones included", stats.connections);
  counter("channel_publishes_total", "publish and publishLoop messages handled", stats.publishes);
  counter("channel_deliveries_total", "Event frames queued to subscribers", stats.deliveries);
  counter("channel_enqueues_total", "enqueue messages handled, refused ones included", stats.enqueues);
  counter(
    "channel_enqueues_refused_total",
    "enqueue messages refused by full queues or as too large",
    stats.enqueuesRefused,
  );
  const disconnects = registry.counter({
    name: "channel_disconnects_total",
    help: "Connections the hub let go, by reason",
    labels: ["reason"],
  });
  for (const reason of DISCONNECT_REASONS) disconnects.inc(stats.disconnects[reason], reason);
  gauge("channel_channels", "Channels with at least one subscriber", stats.channels);
  gauge("channel_queues", "Queues that exist", stats.queues);
  gauge("channel_queued_messages", "Messages waiting in queues", stats.queuedMessages);
  gauge(
    "channel_queued_bytes",
    "Bytes queues hold: their messages' frames and 640 per queue an enqueue created",
    stats.queuedBytes,
  );
  gauge(
    "channel_publishes_waiting",
    "Publishes waiting for their subscribers' writes to be acked",
    stats.publishesWaiting,
  );
  return registry.snapshot();
}

/**
 * The counters, bumped on the hot path: plain number fields, so counting
 * allocates nothing.
 */
class Counters {
  publishes = 0;
  deliveries = 0;
  enqueues = 0;
  enqueuesRefused = 0;
  readonly disconnects: Record<DisconnectReason, number> = {
    slow_consumer: 0,
    idle: 0,
    protocol_error: 0,
    unauthorized: 0,
    full: 0,
    limit: 0,
    closed: 0,
    shutdown: 0,
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
  helloTimeout: number;
  closeGrace: number;
  startupGrace: number;
}

class Server {
  readonly hub: Hub;
  readonly finished: Promise<void>;
  readonly counters = new Counters();
  readonly #listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>;
  readonly #settings: Settings;
  readonly #logger: Logger;
  readonly #connections = new Set<Connection>();
  /** Connections waiting for their hello, oldest first: the first to go when too many wait. */
  readonly #ungreeted = new Set<Connection>();
  /** Connections past their hello, counted against `maxConnections`. */
  #greetedCount = 0;
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
    this.#sweep = setInterval(() => this.#closeIdle(), Math.min(settings.pingInterval, settings.helloTimeout));
    this.#watchdog = setInterval(() => this.#closeStalled(), Math.max(10, settings.writeTimeout / 4));
    this.finished = this.#acceptLoop();
  }

  get accepting(): boolean {
    return this.#shuttingDown === null;
  }

  stats(): ChannelServerStats {
    const counters = this.counters;
    const hub = this.hub.stats;
    return {
      connections: this.#connections.size,
      publishes: counters.publishes,
      deliveries: counters.deliveries,
      enqueues: counters.enqueues,
      enqueuesRefused: counters.enqueuesRefused,
      disconnects: { ...counters.disconnects },
      channels: hub.channels,
      queues: hub.queues,
      queuedMessages: hub.queuedMessages,
      queuedBytes: hub.queuedBytes,
      publishesWaiting: [...this.#connections].reduce((sum, connection) => sum + connection.unacked, 0),
    };
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
    const options = { stopping: () => this.#shuttingDown !== null, logger: this.#logger };
    while (true) {
      const tcp = await acceptNext(this.#listener, options);
      if (!tcp) break;
      const connection = new Connection(this.#nextId++, tcp, this, this.#settings, this.#logger, this.#grace);
      this.#waitForHello(connection);
      this.#connections.add(connection);
      const done = connection.serve().finally(() => {
        this.#connections.delete(connection);
        this.#ungreeted.delete(connection);
        if (connection.greeted) this.#greetedCount--;
        serving.delete(done);
      });
      serving.add(done);
    }
    await Promise.all(serving);
  }

  /**
   * Admits a new connection to wait for its hello, closing the oldest
   * waiting one if as many as `maxConnections` already wait; refuses it
   * when the hub is full.
   */
  #waitForHello(connection: Connection): void {
    const max = this.#settings.maxConnections;
    if (this.#greetedCount >= max) return connection.fail("full", `Hub is full: ${max} connections`);
    if (this.#ungreeted.size >= max) {
      const oldest: Connection = this.#ungreeted.values().next().value!;
      this.#ungreeted.delete(oldest);
      oldest.fail("full", `Hub is full: ${max} connections are waiting for their hello`);
    }
    this.#ungreeted.add(connection);
  }

  /** Counts a connection whose hello was accepted; false when the hub is full. */
  admit(connection: Connection): boolean {
    this.#ungreeted.delete(connection);
    if (this.#greetedCount >= this.#settings.maxConnections) return false;
    this.#greetedCount++;
    return true;
  }

  #closeStalled(): void {
    const now = performance.now();
    for (const connection of this.#connections) {
      const stalled = connection.stalledFor(now);
      if (stalled > this.#settings.writeTimeout) {
        connection.fail("slow_consumer", `Slow consumer: a write has been blocked for ${stalled} ms`);
      }
    }
  }

  #closeIdle(): void {
    const limit = this.#settings.pingInterval * this.#settings.idlePings;
    const helloTimeout = this.#settings.helloTimeout;
    const now = performance.now();
    for (const connection of this.#connections) {
      if (connection.readPaused) continue;
      if (!connection.greeted) {
        if (now - connection.lastSeen > helloTimeout) connection.fail("idle", `No hello within ${helloTimeout} ms`);
      } else if (now - connection.lastSeen > limit) connection.fail("idle", `Idle: no message for ${limit} ms`);
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

/** Every pong is the same bytes: a peer's queue of pongs holds references, not copies. */
const PONG = encodeMessage({ type: "pong" });

/**
 * Past this many bytes waiting to be written to a connection, the hub reads
 * nothing more from it until they are written. A peer that sends requests
 * (pings, publishes) without reading the replies is then held back by TCP,
 * rather than growing its queue of small replies, each with its own objects,
 * up to `maxPendingBytes`.
 */
const READ_PAUSE_BYTES = 64 * 1024;

/**
 * Past this many publishes waiting for their acks, the hub reads nothing more
 * from the publisher until half of them are acked. Each costs memory while a
 * subscriber is slow to take its event; a `ChannelClient` with its default
 * `maxWaitingPublishes` never has more in flight.
 */
const MAX_UNACKED = 10_000;

/** Messages that route data to others, held during the startup grace. */
const ROUTED = new Set<ClientMessage["type"]>(["publish", "publishLoop", "enqueue"]);

class Connection implements Peer {
  /**
   * When the last complete frame arrived after `hello` (before it: when the
   * connection opened). Bytes of a frame not yet finished, and frames before
   * `hello` (keepalives, say), do not count: otherwise a peer trickling one
   * byte at a time, or one that never says hello, would hold its slot and its
   * partial-frame buffer forever.
   */
  lastSeen = performance.now();
  /** True while the hub holds back reading this peer (its replies unread, its publishes unacked, the startup grace). */
  readPaused = false;
  readonly #id: number;
  readonly #tcp: Deno.TcpConn;
  readonly #hub: Hub;
  readonly #counters: Counters;
  readonly #settings: Settings;
  readonly #logger: Logger;
  readonly #writer: FrameWriter;
  readonly #decoder: MessageDecoder<ClientMessage>;
  readonly #grace: Grace;
  readonly #server: Server;
  #greeted = false;
  #closing = false;
  #closed = false;
  /** Why the connection is going, once that is known; counted once. */
  #disconnectReason: DisconnectReason | null = null;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;
  /** Publishes from this connection still waiting for their subscribers' writes, to be acked. */
  #unacked = 0;
  /** Resumes the read loop, paused while `#unacked` was over `MAX_UNACKED`. */
  #readerWaiting: (() => void) | null = null;
  /** Called once no publish waits for its ack, while the hub shuts down. */
  #allAcked: (() => void) | null = null;

  constructor(id: number, tcp: Deno.TcpConn, server: Server, settings: Settings, logger: Logger, grace: Grace) {
    this.#id = id;
    this.#grace = grace;
    this.#tcp = tcp;
    this.#server = server;
    this.#hub = server.hub;
    this.#counters = server.counters;
    this.#settings = settings;
    this.#logger = logger;
    this.#writer = new FrameWriter(tcp, {
      maxPendingBytes: settings.maxPendingBytes,
      onError: () => this.#close(),
    });
    this.#decoder = new MessageDecoder(toClientMessage, { maxFrameBytes: settings.maxFrameBytes });
    tcp.setNoDelay(true);
    this.#hub.join(this);
  }

  /** Publishes from this connection waiting for their subscribers' writes, to be acked. */
  get unacked(): number {
    return this.#unacked;
  }

  /** True once the client's `hello` was accepted. */
  get greeted(): boolean {
    return this.#greeted;
  }

  send(frame: Uint8Array): boolean {
    if (this.#writer.enqueue(frame)) return true;
    this.fail(
      "slow_consumer",
      `Slow consumer: more than ${this.#settings.maxPendingBytes} bytes waiting to be written`,
    );
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
        // After an error the connection only drains what the peer still sends.
        if (this.#closing) continue;
        const buffered = this.#decoder.bufferedBytes;
        const held = this.#receive(buffer.subarray(0, n));
        // Unless a frame was completed, every byte read is still buffered.
        if (this.#greeted && this.#decoder.bufferedBytes !== buffered + n) this.lastSeen = performance.now();
        const pauses = held !== null || this.#writer.pendingBytes > READ_PAUSE_BYTES ||
          this.#unacked > MAX_UNACKED;
        if (!pauses) continue;
        // While the hub does not read a peer, its silence is the hub's doing:
        // the idle check passes it over, and starts again from the end of the pause.
        this.readPaused = true;
        if (held) await this.#resume(held);
        if (this.#writer.pendingBytes > READ_PAUSE_BYTES) await this.#writer.flushed();
        if (this.#unacked > MAX_UNACKED) await new Promise<void>((resolve) => (this.#readerWaiting = resolve));
        this.readPaused = false;
        if (this.#greeted) this.lastSeen = performance.now();
      }
    } catch (error) {
      if (!this.#closed) this.#logger.debug("read failed", { conn: this.#id, error: (error as Error).message });
    } finally {
      this.#countDisconnect("closed");
      this.#hub.leave(this);
      if (this.#closing) await this.#writer.end();
      this.#close();
    }
  }

  /** Closes with an error frame: for the peer's mistakes and for limits. */
  fail(kind: DisconnectReason, reason: string): void {
    if (this.#closing) return;
    this.#countDisconnect(kind);
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
    this.#countDisconnect("shutdown");
    this.#closing = true;
    this.#hub.leave(this);
    this.#graceTimer = setTimeout(() => this.#close(), this.#settings.closeGrace);
    // Its publishes' acks first, as their events reach their subscribers
    // (within the grace): an ack not sent makes the publisher send again.
    // Then finish(), not end(): what was queued before the shutdown is written.
    const acked = this.#unacked === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.#allAcked = resolve));
    acked.then(() => this.#writer.finish()).then(() => this.#close());
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
      this.fail("protocol_error", (error as Error).message);
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
      this.fail("protocol_error", `Expected hello first, got ${message.type}`);
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
        case "publishLoop":
          this.#publish(message);
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
          this.#hub.reserve(this, message.channels);
          break;
        case "ping":
          this.send(PONG);
          break;
      }
    } catch (error) {
      // The hub throws RangeError for a peer past its channel limit only.
      if (!(error instanceof RangeError)) throw error;
      this.fail("limit", error.message);
    }
  }

  #greet(version: number, token: string | undefined): void {
    if (this.#greeted) return this.fail("protocol_error", "Hello sent twice");
    if (version !== PROTOCOL_VERSION) {
      return this.fail(
        "protocol_error",
        `Unsupported protocol version ${version}: this hub speaks ${PROTOCOL_VERSION}`,
      );
    }
    const expected = this.#settings.token;
    if (expected !== undefined && (token === undefined || !secretsEqual(token, expected))) {
      return this.fail(
        "unauthorized",
        token === undefined ? "Unauthorized: this hub needs a token" : "Unauthorized: wrong token",
      );
    }
    if (!this.#server.admit(this)) {
      return this.fail("full", `Hub is full: ${this.#settings.maxConnections} connections`);
    }
    this.#greeted = true;
  }

  #enqueue(id: number, queues: string[], data: Json): void {
    this.#counters.enqueues++;
    let count: number;
    try {
      count = this.#hub.enqueue(queues, data);
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      this.#counters.enqueuesRefused++;
      this.#reply({ type: "error", id, reason: error.message });
      return;
    }
    this.#reply({ type: "ack", id, count });
  }

  #publish(message: Extract<ClientMessage, { type: "publish" | "publishLoop" }>): void {
    let reached: Peer[];
    try {
      reached = message.type === "publish"
        ? this.#hub.publish(message.channels, message.data)
        : this.#hub.publishLoop(message.channels, message.data);
    } catch (error) {
      // Too large an event: the publisher is told, and keeps its connection.
      if (!(error instanceof RangeError)) throw error;
      this.#counters.publishes++;
      this.#reply({ type: "error", id: message.id, reason: error.message });
      return;
    }
    this.#acknowledge(message.id, reached);
  }

  /**
   * Counts a publish, and acknowledges it once its event is in the kernel's
   * buffer of every subscriber it was queued for, so an `ack` survives a hub
   * crash after it.
   */
  #acknowledge(id: number, reached: Peer[]): void {
    this.#counters.publishes++;
    this.#counters.deliveries += reached.length;
    if (reached.length === 0) {
      this.#reply({ type: "ack", id, count: 0 });
      return;
    }
    const writes = reached.map((peer) => peer.flushed());
    this.#unacked++;
    Promise.all(writes).then((written) => {
      this.#reply({ type: "ack", id, count: written.filter(Boolean).length });
      this.#unacked--;
      if (this.#unacked <= MAX_UNACKED / 2) this.#wakeReader();
      if (this.#unacked === 0) this.#allAcked?.();
    });
  }

  #wakeReader(): void {
    const wake = this.#readerWaiting;
    this.#readerWaiting = null;
    wake?.();
  }

  #reply(message: HubMessage): void {
    this.send(encodeMessage(message));
  }

  /** Records why the connection goes: the first reason given is the one counted. */
  #countDisconnect(reason: DisconnectReason): void {
    if (this.#disconnectReason !== null) return;
    this.#disconnectReason = reason;
    this.#counters.disconnects[reason]++;
  }

  #close(): void {
    if (this.#closed) return;
    this.#countDisconnect("closed");
    this.#closed = true;
    this.#closing = true;
    clearTimeout(this.#graceTimer);
    this.#wakeReader();
    this.#writer.close();
    try {
      this.#tcp.close();
    } catch { /* already closed */ }
  }
}
