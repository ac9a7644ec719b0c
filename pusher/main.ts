/**
 * `deno task pusher`: runs N pusher workers (Deno `Worker`s) sharing one
 * WebSocket port, replaces a worker that dies, and drains them on SIGINT or
 * SIGTERM.
 *
 * @module
 */

import { type FromWorker, isServerKind, type ToWorker, type WorkerConfig } from "./_worker_protocol.ts";
import type { CertifiedKey } from "../shared/tls.ts";
import { DEFAULT_MAX_MESSAGE_RATE } from "./rate_limit.ts";
import {
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_HOSTNAME,
  DEFAULT_MAX_BUFFERED_BYTES,
  DEFAULT_MAX_CLIENT_READS,
  DEFAULT_MAX_HEAD_BYTES,
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_PING_INTERVAL,
  DEFAULT_PRESENCE_TIMEOUT,
  DEFAULT_PUSHER_PORT,
  DEFAULT_SLOW_CLIENT_TIMEOUT,
  DEFAULT_WRITE_INTERVAL,
} from "./defaults.ts";
import { createLogger, type Logger, type LogLevel } from "../shared/log.ts";
import { mergeSnapshots, type RegistrySnapshot } from "../shared/metrics.ts";
import { backoffDelay } from "../shared/backoff.ts";
import {
  BUS_HISTORY_FLAGS,
  busFlag,
  busHistoryFlag,
  durationFlag,
  type FlagSpec,
  type FlagValues,
  helpText,
  HUB_FLAGS,
  hubMaxFrameBytesFlag,
  hubTokenFlag,
  intFlag,
  isLoopback,
  LOG_LEVEL_FLAG,
  logLevelFlag,
  MAX_CHANNEL_LENGTH_FLAG,
  maxChannelLengthFlag,
  parseFlags,
  positiveIntFlag,
  shutdownSignal,
  stdinEnded,
  STOP_ON_STDIN_EOF_FLAG,
  stringFlag,
} from "../shared/cli.ts";
import {
  BUS_TLS_FLAGS,
  busTlsField,
  busTlsFlag,
  type CertFiles,
  certFilesFlag,
  certificateFields,
  onReloadSignal,
  readServedCertificate,
  SERVE_TLS_FLAGS,
  type ServedCertificate,
} from "../shared/tls.ts";

export { DEFAULT_PUSHER_PORT } from "./defaults.ts";

/** Workers by default: one worker id each. */
const DEFAULT_WORKERS = 2;
/** WebSocket connections for the whole pusher by default, shared out among its workers. */
const DEFAULT_MAX_CONNECTIONS = 100_000;
/** Milliseconds workers get to close their clients by default. */
const DEFAULT_SHUTDOWN_TIMEOUT = 5000;

const FLAGS: Record<string, FlagSpec> = {
  hostname: {
    type: "string",
    arg: "HOST",
    help: "address to listen on; 0.0.0.0 for other machines",
    default: DEFAULT_HOSTNAME,
  },
  port: {
    type: "string",
    arg: "PORT",
    help: "WebSocket and demo page port; 0 picks a free one",
    default: String(DEFAULT_PUSHER_PORT),
  },
  workers: { type: "string", arg: "N", help: "worker count, one worker id each", default: String(DEFAULT_WORKERS) },
  server: {
    type: "string",
    arg: "KIND",
    help: "listen: our own WebSocket server on Deno.listen; deno: Deno.serve (README: what differs)",
    default: "listen",
  },
  ...SERVE_TLS_FLAGS,
  ...HUB_FLAGS,
  ...BUS_TLS_FLAGS,
  ...BUS_HISTORY_FLAGS,
  "publisher-url": {
    type: "string",
    arg: "URL",
    help: "publisher the demo page calls",
    default: "this page's host, port 4237",
  },
  "idle-timeout": {
    type: "string",
    arg: "S",
    help: "seconds between pings to each client; silent ones close",
    default: String(DEFAULT_PING_INTERVAL / 1000),
  },
  "max-buffered-bytes": {
    type: "string",
    arg: "N",
    help: "bytes waiting for one client before it is closed with 3008",
    default: String(DEFAULT_MAX_BUFFERED_BYTES),
  },
  "slow-client-timeout": {
    type: "string",
    arg: "MS",
    help: "time a write to one client may stay blocked before it is closed with 3008",
    default: String(DEFAULT_SLOW_CLIENT_TIMEOUT),
  },
  "write-interval": {
    type: "string",
    arg: "MS",
    help:
      "least time between two writes to one client: frames for a client written to sooner wait and go together (0: none)",
    default: String(DEFAULT_WRITE_INTERVAL),
  },
  "allowed-origins": {
    type: "string",
    arg: "LIST",
    help: "comma-separated origins browsers may connect from, * wildcards (https://*.example.com)",
    default: "any",
  },
  "token-secret": {
    type: "string",
    arg: "SECRET",
    help: "HS256 secret: clients must connect with ?token=JWT (or env PUSHER_TOKEN_SECRET)",
  },
  "max-message-bytes": {
    type: "string",
    arg: "N",
    help: "largest message a client may send (1009 past it)",
    default: String(DEFAULT_MAX_MESSAGE_BYTES),
  },
  "max-head-bytes": {
    type: "string",
    arg: "N",
    help: "largest request head (431 past it)",
    default: String(DEFAULT_MAX_HEAD_BYTES),
  },
  "handshake-timeout": {
    type: "string",
    arg: "MS",
    help: "time a connection gets to send its request head",
    default: String(DEFAULT_HANDSHAKE_TIMEOUT),
  },
  "max-message-rate": {
    type: "string",
    arg: "N",
    help: "frames per second a client may send: messages, their fragments, pings and pongs",
    default: String(DEFAULT_MAX_MESSAGE_RATE),
  },
  "max-connections": {
    type: "string",
    arg: "N",
    help: "WebSocket connections for the whole pusher",
    default: String(DEFAULT_MAX_CONNECTIONS),
  },
  "max-connections-per-user": {
    type: "string",
    arg: "N",
    help:
      "connections one user (a token's sub) may have open on every pusher of the bus together; the next is closed with 3504 (needs --token-secret; 0: no limit)",
    default: "0",
  },
  "shutdown-timeout": {
    type: "string",
    arg: "MS",
    help: "time workers get to close their clients",
    default: String(DEFAULT_SHUTDOWN_TIMEOUT),
  },
  "max-channels-per-connection": {
    type: "string",
    arg: "N",
    help: "channels one connection may be a member of (429 past it)",
    default: "128",
  },
  "max-channels-per-worker": {
    type: "string",
    arg: "N",
    help: "distinct channels each worker may have members of (429 past it)",
    default: "100000",
  },
  "max-channel-length": MAX_CHANNEL_LENGTH_FLAG,
  "max-presence-users": {
    type: "string",
    arg: "N",
    help: "users each worker lists when asked who is in a channel",
    default: "1000",
  },
  "presence-timeout": {
    type: "string",
    arg: "MS",
    help: "how long a client's presence call waits for every worker (then it answers what arrived, partial)",
    default: String(DEFAULT_PRESENCE_TIMEOUT),
  },
  "max-client-reads": {
    type: "string",
    arg: "N",
    help: "history and presence calls of one worker's clients in flight at once (429 past it; 8 per connection)",
    default: String(DEFAULT_MAX_CLIENT_READS),
  },
  "max-recover-messages": {
    type: "string",
    arg: "N",
    help:
      "publications a subscribe with since may recover from a channel's history (and live ones held meanwhile), and a client's history call may read",
    default: "100",
  },
  "presence-channels": {
    type: "string",
    arg: "LIST",
    help: "comma-separated channels whose members hear joins and leaves, prefix* patterns (room.*)",
    default: "none",
  },
  "connection-events": {
    type: "boolean",
    help: "tell each connection's greeting and end on the bus subject connections (publisher: GET /api/events)",
  },
  "log-level": LOG_LEVEL_FLAG,
  "stop-on-stdin-eof": STOP_ON_STDIN_EOF_FLAG,
  help: { type: "boolean", help: "show this help" },
};

/** Runs the pusher until SIGINT or SIGTERM; returns the exit code. */
export async function main(args: string[] = Deno.args): Promise<number> {
  const signalled = shutdownSignal();
  let logger = createLogger("pusher");
  try {
    const flags = parseFlags(args, FLAGS);
    if (flags.help) {
      console.log(
        helpText("deno task pusher [options]", "Pusher: WebSocket servers, one Deno worker per worker id.", FLAGS),
      );
      return 0;
    }
    const logLevel = logLevelFlag(flags);
    // Before the other flags: a bad one is reported at the asked level.
    logger = createLogger("pusher", { level: logLevel });
    const stopped = Promise.race([signalled, stdinEnded(flags["stop-on-stdin-eof"] === true, logger)]);
    return await run(await pusherSettings(flags, logLevel), logger, stopped);
  } catch (error) {
    logger.error((error as Error).message);
    return 2;
  }
}

/** What the flags ask of the pusher. */
interface PusherSettings {
  /** Every worker's config but its slot; `maxConnections` is for all of them together. */
  worker: Omit<WorkerConfig, "slot">;
  /** Workers. */
  workers: number;
  /** Milliseconds the workers get to close their clients. */
  shutdownTimeout: number;
  /** Where the served certificate is read from again on SIGHUP; undefined without TLS. */
  certFiles: CertFiles | undefined;
  /** The served certificate as read at start. */
  served: ServedCertificate | undefined;
}

/**
 * Reads the flags (and `PUSHER_TOKEN_SECRET`) into the pusher's settings,
 * and the certificate files they name.
 *
 * @throws {TypeError} on a flag with a bad value, or a certificate file that
 * cannot be read or is not what it should be.
 */
async function pusherSettings(flags: FlagValues, logLevel: LogLevel): Promise<PusherSettings> {
  const tokenSecret = stringFlag(flags, "token-secret") ?? (Deno.env.get("PUSHER_TOKEN_SECRET") || null);
  // An empty value is no secret: anyone could sign tokens with it.
  if (tokenSecret === "") {
    throw new TypeError("Invalid --token-secret: empty (leave it out to take connections without a token)");
  }
  const workers = intFlag(flags, "workers", DEFAULT_WORKERS);
  if (workers < 1) throw new TypeError("Invalid --workers: at least 1");
  const maxConnections = intFlag(flags, "max-connections", DEFAULT_MAX_CONNECTIONS);
  // Each worker takes a share: one with none would refuse everyone who reaches it, /healthz too.
  if (maxConnections < workers) {
    throw new TypeError(`Invalid --max-connections: at least one per worker (${workers}), got ${maxConnections}`);
  }
  const maxConnectionsPerUser = intFlag(flags, "max-connections-per-user", 0);
  if (maxConnectionsPerUser > 0 && tokenSecret === null) {
    throw new TypeError("Invalid --max-connections-per-user: it needs --token-secret (users are the tokens' sub)");
  }
  const server = stringFlag(flags, "server") ?? "listen";
  if (!isServerKind(server)) throw new TypeError(`Invalid --server: listen or deno, got ${server}`);
  const certFiles = certFilesFlag(flags);
  const served = certFiles && await readServedCertificate(certFiles);
  const bus = busFlag(flags);
  const worker: Omit<WorkerConfig, "slot"> = {
    server,
    hostname: stringFlag(flags, "hostname") ?? DEFAULT_HOSTNAME,
    port: intFlag(flags, "port", DEFAULT_PUSHER_PORT),
    bus,
    busHistory: busHistoryFlag(flags, bus),
    hubToken: hubTokenFlag(flags),
    hubMaxFrameBytes: hubMaxFrameBytesFlag(flags),
    busTls: await busTlsFlag(flags),
    tls: served && { cert: served.cert, key: served.key },
    idleTimeout: durationFlag(flags, "idle-timeout", DEFAULT_PING_INTERVAL / 1000, { unit: "s", min: 1 }),
    maxBufferedBytes: intFlag(flags, "max-buffered-bytes", DEFAULT_MAX_BUFFERED_BYTES),
    slowClientTimeout: durationFlag(flags, "slow-client-timeout", DEFAULT_SLOW_CLIENT_TIMEOUT, { min: 1 }),
    writeInterval: durationFlag(flags, "write-interval", DEFAULT_WRITE_INTERVAL),
    publisherUrl: stringFlag(flags, "publisher-url") ?? null,
    allowedOrigins: stringFlag(flags, "allowed-origins")?.split(",").map((o) => o.trim()).filter(Boolean) ?? null,
    tokenSecret,
    maxMessageRate: intFlag(flags, "max-message-rate", DEFAULT_MAX_MESSAGE_RATE),
    maxMessageBytes: intFlag(flags, "max-message-bytes", DEFAULT_MAX_MESSAGE_BYTES),
    maxHeadBytes: intFlag(flags, "max-head-bytes", DEFAULT_MAX_HEAD_BYTES),
    handshakeTimeout: durationFlag(flags, "handshake-timeout", DEFAULT_HANDSHAKE_TIMEOUT, { min: 1 }),
    // For all workers together; each takes its share (WorkerPool).
    maxConnections,
    maxConnectionsPerUser,
    maxChannelsPerConnection: positiveIntFlag(flags, "max-channels-per-connection", 128),
    maxChannelsPerWorker: positiveIntFlag(flags, "max-channels-per-worker", 100_000),
    maxChannelLength: maxChannelLengthFlag(flags),
    maxPresenceUsers: intFlag(flags, "max-presence-users", 1000),
    presenceTimeout: durationFlag(flags, "presence-timeout", DEFAULT_PRESENCE_TIMEOUT, { min: 1 }),
    maxClientReads: positiveIntFlag(flags, "max-client-reads", DEFAULT_MAX_CLIENT_READS),
    maxRecoverMessages: intFlag(flags, "max-recover-messages", 100),
    presenceChannels: stringFlag(flags, "presence-channels")?.split(",").map((c) => c.trim()).filter(Boolean) ?? [],
    connectionEvents: flags["connection-events"] === true,
    logLevel,
  };
  const shutdownTimeout = durationFlag(flags, "shutdown-timeout", DEFAULT_SHUTDOWN_TIMEOUT);
  return { worker, workers, shutdownTimeout, certFiles, served };
}

/**
 * Why `port` cannot be ours, or null when it is free (or 0, any port). The
 * workers bind it with `reusePort`, which another pusher's workers would let
 * them share without a word, each taking part of the other's connections; a
 * bind without it fails on any port already bound, so it is tried first.
 */
function portTaken(hostname: string, port: number): string | null {
  if (port === 0) return null;
  try {
    Deno.listen({ hostname, port }).close();
    return null;
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) return "the address is already in use";
    throw error;
  }
}

/**
 * Starts the workers, then waits for a shutdown signal (exit code 0) or for
 * the pool to give up (1), and stops them.
 */
async function run(settings: PusherSettings, logger: Logger, signalled: Promise<Deno.Signal>): Promise<number> {
  const { worker: config, workers, shutdownTimeout, certFiles, served } = settings;
  const taken = portTaken(config.hostname, config.port);
  if (taken) {
    logger.error(`Cannot listen on ${config.hostname}:${config.port}: ${taken}`, {
      hint:
        "another pusher (or another program) listens there; the workers share their port, and would share it with it",
    });
    return 1;
  }
  let fatal!: (error: Error) => void;
  const failed = new Promise<Error>((resolve) => (fatal = resolve));
  const pool = new WorkerPool(config, { size: workers, logger, onFatal: fatal });
  // Fault drill: workers are threads, out of reach of kill -9. SIGUSR2 ends
  // one abruptly, as a crash would, and the pool replaces it. Listened for
  // before anything says the pusher is up: SIGUSR2's default ends the process.
  Deno.addSignalListener("SIGUSR2", () => pool.crash(0));
  // SIGHUP too: its default ends the process.
  const stopReloading = onReloadSignal(async () => {
    if (!certFiles) return logger.warn("SIGHUP: nothing to reload without --cert and --key");
    const next = await readServedCertificate(certFiles);
    logger.info("reloading the certificate", certificateFields(next));
    await pool.reload({ cert: next.cert, key: next.key });
  }, logger);
  if (!served && !isLoopback(config.hostname)) {
    logger.warn("listening on a non-loopback address without TLS: tokens and messages cross the network readable", {
      hostname: config.hostname,
      hint: "--cert and --key (README: TLS)",
    });
  }
  const port = await pool.start();
  logger.info("listening", {
    addr: `${config.hostname}:${port}`,
    workers,
    server: config.server,
    bus: config.bus,
    auth: config.tokenSecret ? "token" : "none",
    tls: served ? "on" : "off",
    busTls: busTlsField(config.bus, config.busTls),
    ...(served && certificateFields(served)),
  });
  const outcome = await Promise.race([signalled, failed]);
  stopReloading();
  if (outcome instanceof Error) {
    logger.error(outcome.message);
    await pool.stop(shutdownTimeout);
    return 1;
  }
  logger.info("shutting down", { signal: outcome });
  await pool.stop(shutdownTimeout);
  logger.info("stopped");
  return 0;
}

/**
 * Reads an integer flag that must be at least 1.
 *
 * @throws {TypeError} otherwise.
 */

/** A worker slot that fails to start this many times in a row is given up. */
const MAX_START_FAILURES = 5;

/** Options for {@linkcode WorkerPool}. */
interface WorkerPoolOptions {
  /** Workers. */
  size: number;
  logger: Logger;
  /** Called once no worker is left and none can be started. */
  onFatal(error: Error): void;
}

/**
 * The workers: started one after another on one port, each with its share of
 * `maxConnections`, replaced when they die (backing off while a replacement
 * cannot start), merging their metrics.
 */
class WorkerPool {
  #config: Omit<WorkerConfig, "slot">;
  readonly #size: number;
  readonly #logger: Logger;
  readonly #onFatal: (error: Error) => void;
  readonly #workers = new Map<number, Worker>();
  /** Replacements waiting for their delay, by slot. */
  readonly #pending = new Map<number, ReturnType<typeof setTimeout>>();
  /** Starts that failed in a row, by slot. */
  readonly #failures = new Map<number, number>();
  /** Each live worker's metrics as last gathered. */
  readonly #lastSnapshot = new Map<Worker, RegistrySnapshot>();
  /** The counters and histograms of workers gone, so that totals never go back. */
  #retired: RegistrySnapshot = [];
  #port = 0;
  #stopping = false;
  #nextSnapshot = 1;
  #nextReload = 1;

  constructor(config: Omit<WorkerConfig, "slot">, options: WorkerPoolOptions) {
    this.#config = config;
    this.#size = options.size;
    this.#logger = options.logger;
    this.#onFatal = options.onFatal;
  }

  /** Starts every worker; resolves with the port they share. */
  async start(): Promise<number> {
    // The first worker binds the asked port (0 picks one); the others join it.
    this.#port = this.#config.port;
    for (let slot = 0; slot < this.#size; slot++) this.#port = await this.#spawn(slot);
    return this.#port;
  }

  /** Asks every worker to close its clients (1001) and stop, then ends them. */
  async stop(timeout: number): Promise<void> {
    this.#stopping = true;
    for (const timer of this.#pending.values()) clearTimeout(timer);
    this.#pending.clear();
    await Promise.all([...this.#workers.values()].map((worker) => {
      const done = new Promise<void>((resolve) => {
        worker.addEventListener("message", (event: MessageEvent<FromWorker>) => {
          if (event.data.type === "stopped") resolve();
        });
        setTimeout(resolve, timeout + 1000);
      });
      worker.postMessage({ type: "stop", timeout } satisfies ToWorker);
      return done.then(() => worker.terminate());
    }));
  }

  /**
   * Hands every worker a new certificate for its new connections, and keeps
   * it for the workers started from now on; resolves once each has answered,
   * with one log line each.
   */
  async reload(tls: CertifiedKey): Promise<void> {
    this.#config = { ...this.#config, tls };
    const id = this.#nextReload++;
    await Promise.all([...this.#workers].map(([slot, worker]) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => done("no answer within 5 s"), 5000);
        const onMessage = (event: MessageEvent<FromWorker>) => {
          if (event.data.type === "reloaded" && event.data.id === id) done(event.data.error);
        };
        const done = (error: string | null) => {
          clearTimeout(timer);
          worker.removeEventListener("message", onMessage);
          if (error === null) this.#logger.info("worker reloaded its certificate", { slot });
          else this.#logger.error("worker kept its old certificate", { slot, error });
          resolve();
        };
        worker.addEventListener("message", onMessage);
        worker.postMessage({ type: "reload", id, tls } satisfies ToWorker);
      })
    ));
  }

  /** Ends a worker at once, without cleanup, and starts a replacement. */
  crash(slot: number): void {
    const worker = this.#workers.get(slot);
    if (!worker || this.#stopping) return;
    this.#logger.warn("fault drill: terminating a worker", { slot });
    worker.terminate();
    this.#replace(slot, worker);
  }

  #spawn(slot: number): Promise<number> {
    const worker = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module", name: `pusher-${slot}` });
    this.#workers.set(slot, worker);
    this.#lastSnapshot.set(worker, []);
    let listening = false;
    return new Promise((resolve, reject) => {
      worker.addEventListener("message", (event: MessageEvent<FromWorker>) => {
        const message = event.data;
        if (message.type === "listening") {
          listening = true;
          this.#failures.delete(slot);
          this.#logger.info("worker started", { slot, worker: message.workerId, port: message.port });
          resolve(message.port);
        } else if (message.type === "gather") {
          this.#gather().then((snapshot) => {
            worker.postMessage({ type: "gathered", id: message.id, snapshot } satisfies ToWorker);
          });
        }
      });
      worker.addEventListener("error", (event) => {
        event.preventDefault();
        worker.terminate();
        this.#logger.error("worker died", { slot, error: event.message });
        if (!listening) this.#failures.set(slot, (this.#failures.get(slot) ?? 0) + 1);
        reject(new Error(`Pusher worker ${slot} failed: ${event.message}`));
        this.#replace(slot, worker);
      });
      const total = this.#config.maxConnections;
      const share = Math.floor(total / this.#size) + (slot < total % this.#size ? 1 : 0);
      const config = { ...this.#config, port: this.#port, slot, maxConnections: share };
      worker.postMessage({ type: "start", config } satisfies ToWorker);
    });
  }

  #replace(slot: number, dead: Worker): void {
    if (this.#stopping || this.#workers.get(slot) !== dead) return;
    this.#workers.delete(slot);
    this.#retire(dead);
    const failures = this.#failures.get(slot) ?? 0;
    if (failures >= MAX_START_FAILURES) {
      this.#logger.error("giving up on a worker slot", { slot, failures });
      if (this.#workers.size === 0 && this.#pending.size === 0) {
        this.#onFatal(new Error(`No pusher worker is left: slot ${slot} failed to start ${failures} times in a row`));
      }
      return;
    }
    // The replacement draws a new worker id: old addresses miss instead of
    // reaching someone else. One that keeps failing to start backs off.
    const delay = failures === 0 ? 100 : backoffDelay(failures, { initialDelay: 200, maxDelay: 5000 });
    this.#pending.set(
      slot,
      setTimeout(() => {
        this.#pending.delete(slot);
        if (!this.#stopping) this.#spawn(slot).catch(() => {});
      }, delay),
    );
  }

  /** Keeps a dead worker's counters and histograms, as last gathered, in every later answer. */
  #retire(dead: Worker): void {
    const last = this.#lastSnapshot.get(dead);
    this.#lastSnapshot.delete(dead);
    if (last) this.#retired = mergeSnapshots([this.#retired, last.filter((metric) => metric.type !== "gauge")]);
  }

  /** Every worker's metrics, merged; a worker that does not answer in time is left out. */
  async #gather(): Promise<RegistrySnapshot> {
    const id = this.#nextSnapshot++;
    const workers = [...this.#workers.values()];
    const snapshots = await Promise.all(
      workers.map((worker) =>
        new Promise<RegistrySnapshot>((resolve) => {
          const timer = setTimeout(() => done([]), 1000);
          const onMessage = (event: MessageEvent<FromWorker>) => {
            if (event.data.type !== "snapshot" || event.data.id !== id) return;
            // Kept for when it dies, unless it already has.
            if (this.#lastSnapshot.has(worker)) this.#lastSnapshot.set(worker, event.data.snapshot);
            done(event.data.snapshot);
          };
          function done(snapshot: RegistrySnapshot) {
            clearTimeout(timer);
            worker.removeEventListener("message", onMessage);
            resolve(snapshot);
          }
          worker.addEventListener("message", onMessage);
          worker.postMessage({ type: "snapshot", id } satisfies ToWorker);
        })
      ),
    );
    const expected: RegistrySnapshot = [{
      name: "pusher_workers_expected",
      help: "Pusher workers configured",
      type: "gauge",
      labels: [],
      series: { "": [this.#size] },
    }];
    // A worker that died while others answered is in #retired already.
    const live = snapshots.filter((_, i) => this.#lastSnapshot.has(workers[i]!));
    return mergeSnapshots([expected, this.#retired, ...live]);
  }
}

if (import.meta.main) Deno.exit(await main());
