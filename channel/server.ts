/**
 * The hub's TCP server: listens on `Deno.listen` (`Deno.listenTls` with a
 * certificate; `node:tls` when it requires client certificates,
 * `_node_tls_listener.ts`) and runs the accept loop. Each accepted socket
 * becomes a {@linkcode Connection} (`connection.ts`) routing through a
 * {@linkcode Hub} (`hub.ts`); who is let
 * in and who is swept out is `_admission.ts`, the startup grace `_grace.ts`,
 * and what is counted `metrics.ts`.
 *
 * @module
 */

import { ThrottledLine } from "../shared/log_throttle.ts";
import { Hub, type HubOptions } from "./hub.ts";
import { Connection, type ConnectionHost, type ConnectionSettings, type HubConn } from "./connection.ts";
import { Admission, Sweeps, type SweepSettings } from "./_admission.ts";
import { Grace } from "./_grace.ts";
import { Counters, type HubServerStats, metricsOf } from "./metrics.ts";
import { AcceptLog, acceptNext } from "../shared/accept.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import type { RegistrySnapshot } from "../shared/metrics.ts";
import { DEFAULT_HUB_PORT, DEFAULT_MAX_FRAME_BYTES } from "../shared/wire.ts";
import { DEFAULT_MAX_PENDING_BYTES } from "../shared/writer.ts";
import { timerMs } from "../shared/duration.ts";
import type { CertifiedKey } from "../shared/tls.ts";

export { DISCONNECT_REASONS, type DisconnectReason, type HubServerStats } from "./metrics.ts";

/** Options for {@linkcode serveHub}. */
export interface HubServerOptions extends HubOptions {
  /** Address to listen on. Use `0.0.0.0` to take connections from other machines. @default {"127.0.0.1"} */
  hostname?: string;
  /** TCP port; 0 picks a free one. @default {2206} */
  port?: number;
  /** When set, every client must present it in its `hello` (as well as its certificate, with `clientCa`). */
  token?: string;
  /**
   * Serve TLS with this certificate chain and key (PEM).
   * @default {plain text}
   */
  tls?: CertifiedKey;
  /**
   * CA certificates (PEM): every client must present a certificate they
   * signed, in date, or its handshake is refused (and logged). Needs `tls`
   * and {@linkcode startHub}: `Deno.listenTls` cannot ask for client
   * certificates, so the hub then listens with `node:tls`.
   * @default {no client certificate asked for}
   */
  clientCa?: string;
  /**
   * Most bytes waiting to be written to one client. A client past it is a slow
   * consumer: it gets an error frame and is disconnected.
   *
   * @default {8388608}
   */
  maxPendingBytes?: number;
  /**
   * Longest what is sent to one client may wait to be written, in
   * milliseconds: a write blocked this long (a client that stopped reading
   * filled its kernel buffer), or bytes queued this long ago and not yet
   * written (one that reads, but slower than it is sent to). Past it the
   * client is disconnected as a slow consumer, within a quarter of it. It
   * bounds how long one slow subscriber can hold up the acknowledgements of
   * publishes.
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

/** How often expired history messages are trimmed from idle subjects, in milliseconds. */
const HISTORY_SWEEP_INTERVAL = 10_000;

/** A running hub. */
export interface HubServer extends AsyncDisposable {
  /** The address it listens on (with the real port when 0 was asked). */
  readonly addr: Deno.NetAddr;
  /** Resolves once the server has shut down and every connection is closed. */
  readonly finished: Promise<void>;
  /** The routing state, for stats. */
  readonly hub: Hub;
  /** True until shutdown begins: the hub takes new connections. */
  readonly accepting: boolean;
  /** Current counters and gauges, as a fresh object. */
  stats(): HubServerStats;
  /**
   * The same counters and gauges as Prometheus metrics (`channel_*`), for
   * `renderPrometheus` from `shared/metrics.ts`.
   */
  metrics(): RegistrySnapshot;
  /** Stops accepting, lets every connection flush (bounded by `closeGrace`), and closes them. */
  shutdown(): Promise<void>;
}

/**
 * Starts a hub on `Deno.listen` or `Deno.listenTls`, listening when it
 * returns. For client certificates (`clientCa`), use {@linkcode startHub}.
 *
 * @throws {TypeError} when `clientCa` is given.
 *
 * @example
 * ```ts
 * import { serveHub } from "./server.ts";
 *
 * await using server = serveHub({ port: 0, onListen() {} });
 * console.log(server.addr.port);
 * ```
 */
export function serveHub(options: HubServerOptions = {}): HubServer {
  if (options.clientCa !== undefined) {
    throw new TypeError(
      "Cannot require client certificates in serveHub: node:tls listens asynchronously; use startHub",
    );
  }
  const settings = settingsOf(options);
  const at = { hostname: options.hostname ?? "127.0.0.1", port: options.port ?? DEFAULT_HUB_PORT };
  const listener: HubListener = options.tls
    ? Deno.listenTls({ ...at, cert: options.tls.cert, key: options.tls.key })
    : Deno.listen(at);
  return run(listener, settings, options);
}

/**
 * Starts a hub and resolves once it listens: as {@linkcode serveHub}, and
 * with `clientCa` (and `tls`) on `node:tls`, requiring every client's
 * certificate.
 *
 * @throws {TypeError} when `clientCa` comes without `tls`.
 *
 * @example
 * ```ts
 * import { startHub } from "./server.ts";
 *
 * const read = (path: string) => Deno.readTextFile(path);
 * await using server = await startHub({
 *   port: 0,
 *   tls: { cert: await read("certs/hub.pem"), key: await read("certs/hub.key") },
 *   clientCa: await read("certs/ca.pem"),
 *   onListen() {},
 * });
 * ```
 */
export async function startHub(options: HubServerOptions = {}): Promise<HubServer> {
  if (options.clientCa === undefined) return serveHub(options);
  if (!options.tls) throw new TypeError("Cannot require client certificates without TLS: give tls (--cert, --key)");
  const settings = settingsOf(options);
  // Imported only here: node:tls costs every hub about 7 MiB at idle (issue 19).
  const { listenNodeTls } = await import("./_node_tls_listener.ts");
  const listener = await listenNodeTls({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? DEFAULT_HUB_PORT,
    cert: options.tls.cert,
    key: options.tls.key,
    clientCa: options.clientCa,
    logger: options.logger ?? createLogger("channel"),
    handshakeTimeout: settings.helloTimeout,
  });
  return run(listener, settings, options);
}

/** What the accept loop uses of a listener: a `Deno.Listener`, or `_node_tls_listener.ts`'s. */
interface HubListener {
  readonly addr: Deno.Addr;
  accept(): Promise<HubConn>;
  close(): void;
}

/** Checks the options, before listening: a bad option must not leave a listener behind. */
function settingsOf(options: HubServerOptions): Settings {
  return {
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
}

function run(listener: HubListener, settings: Settings, options: HubServerOptions): HubServer {
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

interface Settings extends ConnectionSettings, SweepSettings {
  startupGrace: number;
}

class Server implements ConnectionHost {
  readonly hub: Hub;
  readonly finished: Promise<void>;
  readonly counters = new Counters();
  readonly handshakeFailures: ThrottledLine;
  readonly #listener: HubListener;
  readonly #settings: Settings;
  readonly #logger: Logger;
  readonly #connections = new Set<Connection>();
  readonly #admission: Admission<Connection>;
  readonly #sweeps: Sweeps;
  #historySweep: ReturnType<typeof setInterval> | undefined;
  readonly #grace: Grace;
  #nextId = 1;
  #shuttingDown: Promise<void> | null = null;

  constructor(
    listener: HubListener,
    hub: Hub,
    settings: Settings,
    logger: Logger,
  ) {
    this.#listener = listener;
    this.hub = hub;
    this.#settings = settings;
    this.#logger = logger;
    this.handshakeFailures = new ThrottledLine(logger, "warn", "TLS handshake failed");
    this.#grace = new Grace(settings.startupGrace);
    this.#admission = new Admission(settings.maxConnections);
    this.#sweeps = new Sweeps(this.#connections, settings);
    // Expired history counts against its bounds until trimmed; this frees the memory of subjects nobody publishes to.
    if (hub.keepsHistory) this.#historySweep = setInterval(() => hub.sweepHistory(), HISTORY_SWEEP_INTERVAL);
    this.finished = this.#acceptLoop();
  }

  get accepting(): boolean {
    return this.#shuttingDown === null;
  }

  stats(): HubServerStats {
    const counters = this.counters;
    const hub = this.hub.stats;
    return {
      connections: this.#connections.size,
      publishes: counters.publishes,
      deliveries: counters.deliveries,
      enqueues: counters.enqueues,
      enqueuesRefused: counters.enqueuesRefused,
      disconnects: { ...counters.disconnects },
      subjects: hub.subjects,
      queues: hub.queues,
      queuedMessages: hub.queuedMessages,
      queuedBytes: hub.queuedBytes,
      publishesWaiting: [...this.#connections].reduce((sum, connection) => sum + connection.unacked, 0),
    };
  }

  admit(connection: Connection): boolean {
    return this.#admission.admit(connection);
  }

  shutdown(): Promise<void> {
    if (this.#shuttingDown) return this.#shuttingDown;
    this.#shuttingDown = (async () => {
      this.#sweeps.stop();
      clearInterval(this.#historySweep);
      this.handshakeFailures.close();
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
    const options = { stopping: () => this.#shuttingDown !== null, log: new AcceptLog(this.#logger) };
    while (true) {
      const tcp = await acceptNext(this.#listener, options);
      if (!tcp) break;
      // Accepted by the runtime before shutdown closed the listener, and
      // handed over after: shutdown has ended the connections it knew of,
      // and would wait for this one forever.
      if (this.#shuttingDown) {
        tcp.close();
        continue;
      }
      const connection = new Connection(this.#nextId++, tcp, this, this.#settings, this.#logger, this.#grace);
      this.#admission.waitForHello(connection);
      this.#connections.add(connection);
      const done = connection.serve().finally(() => {
        this.#connections.delete(connection);
        this.#admission.release(connection);
        serving.delete(done);
      });
      serving.add(done);
    }
    await Promise.all(serving);
  }
}
