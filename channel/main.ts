/**
 * `deno task channel`: runs the hub, and with `--metrics-port` an
 * HTTP server for its counters (`GET /metrics`) and health (`GET /healthz`).
 *
 * @module
 */

import { DEFAULT_MAX_SUBJECTS_PER_PEER } from "./hub.ts";
import {
  DEFAULT_HISTORY_MAX_BYTES,
  DEFAULT_HISTORY_SIZE,
  DEFAULT_HISTORY_TOTAL_BYTES,
  DEFAULT_HISTORY_TTL,
  DEFAULT_MAX_HISTORY_SUBJECTS,
  SUBJECT_BYTES,
} from "../shared/history_log.ts";
import { DEFAULT_IDEMPOTENCY_WINDOW } from "../shared/idempotency.ts";
import { type HubServer, type HubServerOptions, startHub } from "./server.ts";
import { DEFAULT_HUB_PORT, DEFAULT_MAX_FRAME_BYTES } from "../shared/wire.ts";
import { DEFAULT_MAX_PENDING_BYTES } from "../shared/writer.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { returnIdleHeap } from "../shared/idle_gc.ts";
import { PROMETHEUS_CONTENT_TYPE, renderPrometheus } from "../shared/metrics.ts";
import { Router, text } from "../shared/http.ts";
import {
  durationFlag,
  type FlagSpec,
  type FlagValues,
  helpText,
  intFlag,
  isLoopback,
  LOG_LEVEL_FLAG,
  logLevelFlag,
  parseFlags,
  positiveIntFlag,
  shutdownSignal,
  stdinEnded,
  STOP_ON_STDIN_EOF_FLAG,
  stringFlag,
} from "../shared/cli.ts";
import {
  certFilesFlag,
  certificateFields,
  onReloadSignal,
  readCaCertificates,
  readServedCertificate,
  SERVE_TLS_FLAGS,
} from "../shared/tls.ts";

const FLAGS: Record<string, FlagSpec> = {
  hostname: {
    type: "string",
    arg: "HOST",
    help: "address to listen on; 0.0.0.0 for other machines",
    default: "127.0.0.1",
  },
  port: { type: "string", arg: "PORT", help: "TCP port; 0 picks a free one", default: String(DEFAULT_HUB_PORT) },
  token: { type: "string", arg: "TOKEN", help: "token clients must present (or env CHANNEL_TOKEN)" },
  insecure: { type: "boolean", help: "allow a non-loopback address without a token or a client CA" },
  ...SERVE_TLS_FLAGS,
  cert: {
    ...SERVE_TLS_FLAGS.cert!,
    help: "PEM certificate chain to serve TLS with, with --key; read at start only (README: TLS) (default: plain text)",
  },
  "client-ca": {
    type: "string",
    arg: "FILE",
    help:
      "PEM CA certificates: every client must present a certificate they signed (needs --cert and --key); the token is then optional, and with both, both are checked (default: no client certificate)",
  },
  "max-frame-bytes": {
    type: "string",
    arg: "N",
    help: "largest frame from a client, and largest event the hub sends",
    default: String(DEFAULT_MAX_FRAME_BYTES),
  },
  "max-pending-bytes": {
    type: "string",
    arg: "N",
    help: "bytes waiting for one client before it is disconnected as slow",
    default: String(DEFAULT_MAX_PENDING_BYTES),
  },
  "write-timeout": {
    type: "string",
    arg: "MS",
    help: "how long what is sent to one client may wait to be written before it is dropped as slow",
    default: "2000",
  },
  "max-connections": { type: "string", arg: "N", help: "clients connected at once", default: "1024" },
  "max-channels": {
    type: "string",
    arg: "N",
    help: "subjects plus queues per connection",
    default: String(DEFAULT_MAX_SUBJECTS_PER_PEER),
  },
  "max-queue-length": { type: "string", arg: "N", help: "messages one queue holds", default: "10000" },
  "max-queued-bytes": { type: "string", arg: "N", help: "bytes all queues hold together", default: "67108864" },
  history: {
    type: "string",
    arg: "LIST",
    help:
      "subjects that keep history, comma-separated names or prefix* patterns (channel.news,channel.chat.*) (default: none)",
  },
  "history-size": { type: "string", arg: "N", help: "messages kept per history subject", default: "100" },
  "history-ttl": { type: "string", arg: "S", help: "seconds a history message is kept", default: "300" },
  "history-max-bytes": {
    type: "string",
    arg: "N",
    help: "bytes of history kept per subject",
    default: String(DEFAULT_HISTORY_MAX_BYTES),
  },
  "history-total-bytes": {
    type: "string",
    arg: "N",
    help: "bytes of history kept over all subjects; past it the least recently published subject's goes whole",
    default: String(DEFAULT_HISTORY_TOTAL_BYTES),
  },
  "max-history-subjects": {
    type: "string",
    arg: "N",
    help: "subjects with history; past it the least recently published subject's goes whole",
    default: String(DEFAULT_MAX_HISTORY_SUBJECTS),
  },
  "idempotency-window": {
    type: "string",
    arg: "S",
    help: "seconds a publish's idempotency key is remembered (at most 100000 keys; the oldest go first)",
    default: "300",
  },
  "ping-interval": { type: "string", arg: "MS", help: "expected client ping interval", default: "25000" },
  "idle-pings": {
    type: "string",
    arg: "N",
    help: "ping intervals without a whole message before a client is dropped",
    default: "3",
  },
  "hello-timeout": {
    type: "string",
    arg: "MS",
    help: "time a new connection gets to send hello (and its token) before it is dropped",
    default: "10000",
  },
  "startup-grace": {
    type: "string",
    arg: "MS",
    help: "publishes wait this long after start, so restarted clients re-subscribe first",
    default: "1500",
  },
  "shutdown-grace": { type: "string", arg: "MS", help: "time connections get to flush on shutdown", default: "1000" },
  "metrics-port": {
    type: "string",
    arg: "PORT",
    help: "serve GET /metrics (Prometheus) and GET /healthz over HTTP on this port; 0 picks a free one (default: off)",
  },
  "metrics-hostname": { type: "string", arg: "HOST", help: "address of the metrics port", default: "127.0.0.1" },
  "log-level": LOG_LEVEL_FLAG,
  "stop-on-stdin-eof": STOP_ON_STDIN_EOF_FLAG,
  help: { type: "boolean", help: "show this help" },
};

/** What a path of the metrics port answers, from the hub's state. */
type Answer = (server: HubServer) => Response;

const READ = { methods: ["GET", "HEAD"], hint: "use GET" };

const ROUTES = new Router<Answer>({
  "/metrics": {
    ...READ,
    handler: (server) =>
      new Response(renderPrometheus(server.metrics()), { headers: { "content-type": PROMETHEUS_CONTENT_TYPE } }),
  },
  "/healthz": {
    ...READ,
    handler: (server) => server.accepting ? text(200, "ok") : text(503, "shutting down"),
  },
});

/**
 * The metrics port's handler: `GET /metrics` answers the hub's counters in
 * the Prometheus text format, `GET /healthz` answers `ok` while the hub takes
 * connections and 503 once it shuts down. `HEAD` works too; other methods get
 * 405, other paths 404.
 *
 * @example
 * ```ts
 * import { metricsHandler } from "./main.ts";
 * import { serveHub } from "./server.ts";
 *
 * const hub = serveHub({ port: 2206 });
 * Deno.serve({ hostname: "127.0.0.1", port: 9206 }, metricsHandler(hub));
 * // curl http://127.0.0.1:9206/metrics
 * ```
 */
export function metricsHandler(server: HubServer): (request: Request) => Response {
  return ROUTES.handler((route, request: Request) => {
    const response = route.handler(server);
    return request.method === "HEAD" ? new Response(null, response) : response;
  });
}

/** What the command line asks for: the hub's options and, when asked, where to serve metrics. */
interface Config {
  hub: HubServerOptions;
  log: Logger;
  metrics: { hostname: string; port: number } | undefined;
}

/**
 * Turns parsed flags into the hub's options, reading `--cert`, `--key` and `--client-ca`.
 *
 * @throws {TypeError} on a bad flag or certificate file, `--client-ca`
 * without `--cert`, or a non-loopback address with neither a token, a
 * client CA nor `--insecure`.
 */
async function configFrom(flags: FlagValues): Promise<Config> {
  const log = createLogger("channel", { level: logLevelFlag(flags) });
  const hostname = stringFlag(flags, "hostname") ?? "127.0.0.1";
  const token = stringFlag(flags, "token") ?? Deno.env.get("CHANNEL_TOKEN") ?? undefined;
  const clientCaFile = stringFlag(flags, "client-ca");
  if (!token && clientCaFile === undefined && !isLoopback(hostname) && !flags.insecure) {
    throw new TypeError(
      `Refusing to listen on ${hostname} without a token: set --token or CHANNEL_TOKEN, or --client-ca, or pass --insecure`,
    );
  }
  const certFiles = certFilesFlag(flags);
  if (clientCaFile !== undefined && !certFiles) {
    throw new TypeError(
      "Invalid --client-ca: give --cert and --key with it (client certificates are asked for over TLS)",
    );
  }
  const served = certFiles && await readServedCertificate(certFiles);
  const clientCa = clientCaFile === undefined ? undefined : await readCaCertificates("--client-ca", clientCaFile);
  if (!served && !isLoopback(hostname)) {
    log.warn("listening on a non-loopback address without TLS: tokens and messages cross the network readable", {
      hostname,
      hint: "--cert and --key (README: TLS)",
    });
  }
  const metricsHostname = stringFlag(flags, "metrics-hostname") ?? "127.0.0.1";
  const metricsPort = flags["metrics-port"] === undefined ? undefined : intFlag(flags, "metrics-port", 0);
  const hub: HubServerOptions = {
    hostname,
    port: intFlag(flags, "port", DEFAULT_HUB_PORT),
    token: token || undefined,
    tls: served && { cert: served.cert, key: served.key },
    clientCa,
    maxFrameBytes: intFlag(flags, "max-frame-bytes", DEFAULT_MAX_FRAME_BYTES),
    maxPendingBytes: intFlag(flags, "max-pending-bytes", DEFAULT_MAX_PENDING_BYTES),
    maxConnections: intFlag(flags, "max-connections", 1024),
    writeTimeout: durationFlag(flags, "write-timeout", 2000),
    maxSubjectsPerPeer: intFlag(flags, "max-channels", DEFAULT_MAX_SUBJECTS_PER_PEER),
    maxQueueLength: intFlag(flags, "max-queue-length", 10_000),
    maxQueuedBytes: intFlag(flags, "max-queued-bytes", 64 * 1024 * 1024),
    historySubjects: (stringFlag(flags, "history") ?? "").split(",").map((s) => s.trim()).filter((s) => s !== ""),
    historySize: positiveIntFlag(flags, "history-size", DEFAULT_HISTORY_SIZE),
    historyTtl: durationFlag(flags, "history-ttl", DEFAULT_HISTORY_TTL / 1000, { unit: "s", min: 1 }) * 1000,
    historyMaxBytes: positiveIntFlag(flags, "history-max-bytes", DEFAULT_HISTORY_MAX_BYTES),
    historyTotalBytes: positiveIntFlag(flags, "history-total-bytes", DEFAULT_HISTORY_TOTAL_BYTES),
    maxHistorySubjects: positiveIntFlag(flags, "max-history-subjects", DEFAULT_MAX_HISTORY_SUBJECTS),
    idempotencyWindow: durationFlag(flags, "idempotency-window", DEFAULT_IDEMPOTENCY_WINDOW / 1000, { unit: "s" }) *
      1000,
    pingInterval: durationFlag(flags, "ping-interval", 25_000, { min: 1 }),
    idlePings: intFlag(flags, "idle-pings", 3),
    helloTimeout: durationFlag(flags, "hello-timeout", 10_000, { min: 1 }),
    closeGrace: durationFlag(flags, "shutdown-grace", 1000),
    startupGrace: durationFlag(flags, "startup-grace", 1500),
    logger: log,
    onListen: (addr) =>
      log.info("listening", {
        addr: `${addr.hostname}:${addr.port}`,
        auth: [clientCa && "client-certificate", token && "token"].filter(Boolean).join("+") || "none",
        tls: served ? "on" : "off",
        ...(served && certificateFields(served)),
      }),
  };
  if (hub.historyMaxBytes! + SUBJECT_BYTES > hub.historyTotalBytes!) {
    throw new TypeError(
      `Invalid --history-max-bytes: ${hub.historyMaxBytes} plus ${SUBJECT_BYTES} per subject is over --history-total-bytes ${hub.historyTotalBytes}`,
    );
  }
  const metrics = metricsPort === undefined ? undefined : { hostname: metricsHostname, port: metricsPort };
  return { hub, log, metrics };
}

/**
 * Serves {@linkcode metricsHandler} for `server`.
 *
 * @throws {Error} naming the address when it cannot listen there.
 */
function serveMetrics(server: HubServer, at: { hostname: string; port: number }, log: Logger): Deno.HttpServer {
  try {
    return Deno.serve({
      hostname: at.hostname,
      port: at.port,
      handler: metricsHandler(server),
      onListen: (addr) => log.info("metrics-listening", { addr: `${addr.hostname}:${addr.port}` }),
    });
  } catch (error) {
    throw new Error(`Cannot serve metrics on ${at.hostname}:${at.port}: ${(error as Error).message}`);
  }
}

/** Runs the hub until SIGINT or SIGTERM; returns the exit code. */
export async function main(args: string[] = Deno.args): Promise<number> {
  let signalled = shutdownSignal();
  let server: HubServer | undefined;
  let http: Deno.HttpServer | undefined;
  const logger = createLogger("channel");
  try {
    const flags = parseFlags(args, FLAGS);
    if (flags.help) {
      console.log(helpText("deno task channel [options]", "Hub: TCP pub/sub and work queues.", FLAGS));
      return 0;
    }
    signalled = Promise.race([signalled, stdinEnded(flags["stop-on-stdin-eof"] === true, logger)]);
    const config = await configFrom(flags);
    server = await startHub(config.hub);
    if (config.metrics) http = serveMetrics(server, config.metrics, config.log);
  } catch (error) {
    logger.error((error as Error).message);
    await server?.shutdown();
    return 2;
  }
  const running = server;
  using _idle = returnIdleHeap(logger);
  // SIGHUP's default would end the hub: an operator reloading every service's certificate must not.
  const stopReloading = onReloadSignal(() => {
    logger.warn("SIGHUP: the hub does not reload its certificate; restart it to take a new one (README: TLS)");
    return Promise.resolve();
  }, logger);
  signalled.then((signal) => {
    stopReloading();
    logger.info("shutting down", { signal });
    running.shutdown();
  });
  await running.finished;
  // Until the hub is down, /healthz answered 503 to say so.
  await http?.shutdown();
  logger.info("stopped");
  return 0;
}

if (import.meta.main) Deno.exit(await main());
