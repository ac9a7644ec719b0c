/**
 * `deno task publisher`: runs the HTTP publish API in front of the channel hub.
 *
 * @module
 */

import { createPublishHandler, DEFAULT_MAX_CONTENT_BYTES, type PublishHandler } from "./handler.ts";
import { DEFAULT_MAX_EVENT_STREAMS, DEFAULT_MAX_QUEUED_EVENTS } from "./connection_events.ts";
import {
  DEFAULT_COMMAND_TIMEOUT,
  DEFAULT_MAX_BATCH_COMMANDS,
  DEFAULT_MAX_BATCH_REPLY_BYTES,
  DEFAULT_MAX_HISTORY_LIMIT,
  DEFAULT_MAX_LISTED_CHANNELS,
  DEFAULT_MAX_PRESENCE_USERS,
  DEFAULT_PRESENCE_TIMEOUT,
} from "./api.ts";
import { DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_JSON_DEPTH } from "./_json_body.ts";
import { FORM_OVERHEAD_BYTES } from "./form.ts";
import {
  DEFAULT_BODY_TIMEOUT,
  DEFAULT_HEAD_TIMEOUT,
  DEFAULT_IDLE_TIMEOUT,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_SEND_TIMEOUT,
  type HttpServer,
  serveHttp,
} from "../shared/http_server.ts";
import { openBus, type OpenBusOptions } from "../shared/open_bus.ts";
import type { Bus } from "../shared/bus.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { returnIdleHeap } from "../shared/idle_gc.ts";
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
  type BusTls,
  busTlsField,
  busTlsFlag,
  type CertFiles,
  certFilesFlag,
  certificateFields,
  type CertifiedKey,
  onReloadSignal,
  readServedCertificate,
  SERVE_TLS_FLAGS,
  type ServedCertificate,
} from "../shared/tls.ts";

/**
 * The largest request head by default: 64 KiB, what `Deno.serve` took, so
 * that a GET carries as much content in its URL as before.
 */
const DEFAULT_MAX_HEAD_BYTES = 64 * 1024;

/** The publisher's HTTP port unless `--port` says otherwise. */
export const DEFAULT_PUBLISHER_PORT = 4237;

const DEFAULT_SHUTDOWN_TIMEOUT = 5000;
/** Of the shutdown timeout, at most this much is kept to answer the requests cut off at its end. */
const CUTOFF_RESERVE_MS = 250;

const FLAGS: Record<string, FlagSpec> = {
  hostname: {
    type: "string",
    arg: "HOST",
    help: "address to listen on; 0.0.0.0 for other machines",
    default: "127.0.0.1",
  },
  port: { type: "string", arg: "PORT", help: "HTTP port; 0 picks a free one", default: String(DEFAULT_PUBLISHER_PORT) },
  ...SERVE_TLS_FLAGS,
  ...HUB_FLAGS,
  ...BUS_TLS_FLAGS,
  ...BUS_HISTORY_FLAGS,
  "api-key": {
    type: "string",
    arg: "KEY",
    help: "key every publish must present (or env PUBLISHER_API_KEY)",
  },
  insecure: { type: "boolean", help: "allow a non-loopback address without an API key" },
  "publish-timeout": {
    type: "string",
    arg: "MS",
    help: "how long a publish waits for the hub before the answer is 503",
    default: "5000",
  },
  "max-content-bytes": {
    type: "string",
    arg: "N",
    help: "largest content (and /api/publish data, as JSON), in UTF-8 bytes",
    default: String(DEFAULT_MAX_CONTENT_BYTES),
  },
  "max-body-bytes": {
    type: "string",
    arg: "N",
    help: "largest JSON body of a server-API call (/api/...), a batch's included",
    default: String(DEFAULT_MAX_BODY_BYTES),
  },
  "max-json-depth": {
    type: "string",
    arg: "N",
    help: "deepest nesting of arrays and objects in a server-API body",
    default: String(DEFAULT_MAX_JSON_DEPTH),
  },
  "max-batch-commands": {
    type: "string",
    arg: "N",
    help: "commands one /api/batch may hold, and channels one /api/broadcast may name",
    default: String(DEFAULT_MAX_BATCH_COMMANDS),
  },
  "max-batch-reply-bytes": {
    type: "string",
    arg: "N",
    help: "bytes of history, presence and channels answers one /api/batch holds; reads past them answer 413",
    default: String(DEFAULT_MAX_BATCH_REPLY_BYTES),
  },
  "max-presence-users": {
    type: "string",
    arg: "N",
    help: "users one /api/presence answer lists at most",
    default: String(DEFAULT_MAX_PRESENCE_USERS),
  },
  "max-listed-channels": {
    type: "string",
    arg: "N",
    help: "channels one /api/channels answer lists at most",
    default: String(DEFAULT_MAX_LISTED_CHANNELS),
  },
  "max-event-streams": {
    type: "string",
    arg: "N",
    help: "GET /api/events streams open at once",
    default: String(DEFAULT_MAX_EVENT_STREAMS),
  },
  "max-queued-events": {
    type: "string",
    arg: "N",
    help: "connection events one /api/events stream may hold unread; one more ends it",
    default: String(DEFAULT_MAX_QUEUED_EVENTS),
  },
  "max-history-limit": {
    type: "string",
    arg: "N",
    help: "publications one /api/history answer lists at most, and its limit when the call names none",
    default: String(DEFAULT_MAX_HISTORY_LIMIT),
  },
  "max-channel-length": MAX_CHANNEL_LENGTH_FLAG,
  "presence-timeout": {
    type: "string",
    arg: "MS",
    help: "how long presence, presence_stats, info and channels wait for the pusher workers' replies",
    default: String(DEFAULT_PRESENCE_TIMEOUT),
  },
  "command-timeout": {
    type: "string",
    arg: "MS",
    help: "how long subscribe, unsubscribe and disconnect wait for the pusher workers' replies",
    default: String(DEFAULT_COMMAND_TIMEOUT),
  },
  "max-head-bytes": {
    type: "string",
    arg: "N",
    help: "largest request head (a GET's content is in it); larger gets 431",
    default: String(DEFAULT_MAX_HEAD_BYTES),
  },
  "head-timeout": {
    type: "string",
    arg: "MS",
    help:
      "time a request head gets, from a connection's accept or a later request's first byte (a pipelined one's: from the answers before it); then 408 and close",
    default: String(DEFAULT_HEAD_TIMEOUT),
  },
  "idle-timeout": {
    type: "string",
    arg: "MS",
    help: "time a keep-alive connection may wait for its next request before it is closed",
    default: String(DEFAULT_IDLE_TIMEOUT),
  },
  "body-timeout": {
    type: "string",
    arg: "MS",
    help: "time a request body gets to arrive in full, from its head; then 400 and close",
    default: String(DEFAULT_BODY_TIMEOUT),
  },
  "send-timeout": {
    type: "string",
    arg: "MS",
    help: "time one write to a client may stay blocked (a client that does not read) before it is closed",
    default: String(DEFAULT_SEND_TIMEOUT),
  },
  "max-connections": {
    type: "string",
    arg: "N",
    help: "connections open at once; one more is accepted and closed at once, with one log line per burst",
    default: String(DEFAULT_MAX_CONNECTIONS),
  },
  "shutdown-timeout": {
    type: "string",
    arg: "MS",
    help: "on SIGINT or SIGTERM, how long requests in flight get to finish",
    default: String(DEFAULT_SHUTDOWN_TIMEOUT),
  },
  "log-level": LOG_LEVEL_FLAG,
  "stop-on-stdin-eof": STOP_ON_STDIN_EOF_FLAG,
  help: { type: "boolean", help: "show this help" },
};

/** What the flags and environment ask of the publisher. */
interface PublisherConfig {
  hostname: string;
  port: number;
  /** Held here and handed to the handler only: no log line carries it. */
  apiKey: string | undefined;
  /** The bus address (`channel://host:port`, `nats://...`). */
  bus: string;
  /** History the bus keeps itself (NATS), from `--history*`; undefined for the hub. */
  busHistory: OpenBusOptions["history"];
  token: string | undefined;
  /** TLS to the bus (PEM contents), or undefined for plain text. */
  busTls: BusTls | undefined;
  /** Where the served certificate is read from (again on SIGHUP); undefined for plain HTTP. */
  certFiles: CertFiles | undefined;
  /** The served certificate as read at start. */
  served: ServedCertificate | undefined;
  publishTimeout: number;
  maxContentBytes: number;
  maxFrameBytes: number;
  shutdownTimeout: number;
  /** The HTTP server's bounds on connections. */
  http: {
    maxHeadBytes: number;
    headTimeout: number;
    idleTimeout: number;
    bodyTimeout: number;
    sendTimeout: number;
    maxConnections: number;
  };
  /** The server API's limits, handed to the handler as they are. */
  api: {
    maxBodyBytes: number;
    maxJsonDepth: number;
    maxBatchCommands: number;
    maxBatchReplyBytes: number;
    maxPresenceUsers: number;
    maxListedChannels: number;
    maxChannelLength: number;
    maxHistoryLimit: number;
    presenceTimeout: number;
    commandTimeout: number;
  };
  /** The limits of `GET /api/events`. */
  events: { maxStreams: number; maxQueued: number };
}

/** Serves the publish API until SIGINT or SIGTERM; returns the exit code. */
export async function main(args: string[] = Deno.args): Promise<number> {
  let signalled = shutdownSignal();
  // At the default level until --log-level is read, then at that one.
  let logger = createLogger("publisher");
  let bus: Bus | undefined;
  let config: PublisherConfig;
  let server: HttpServer;
  let stopReloading: (() => void) | undefined;
  // Ends the dashboard's event streams, which would otherwise keep the drain waiting for open pages.
  const shuttingDown = new AbortController();
  try {
    const flags = parseFlags(args, FLAGS);
    if (flags.help) {
      console.log(helpText("deno task publisher [options]", "Publisher: the HTTP publish API.", FLAGS));
      return 0;
    }
    logger = createLogger("publisher", { level: logLevelFlag(flags) });
    signalled = Promise.race([signalled, stdinEnded(flags["stop-on-stdin-eof"] === true, logger)]);
    config = await readConfig(flags);
    bus = openPublisherBus(config, logger);
    const { publishTimeout, maxContentBytes, apiKey, api, events } = config;
    const handler = createPublishHandler({
      bus,
      publishTimeout,
      maxContentBytes,
      apiKey,
      logger,
      ...api,
      events,
      signal: shuttingDown.signal,
    });
    // Listened for before the publisher says it is up: SIGHUP's default ends the process.
    const { certFiles } = config;
    stopReloading = onReloadSignal(async () => {
      if (!certFiles) return logger.warn("SIGHUP: nothing to reload without --cert and --key");
      const next = await readServedCertificate(certFiles);
      const { hostname } = config;
      server.replaceListener(openListener(hostname, server.addr.port, { cert: next.cert, key: next.key }));
      logger.info("reloaded the certificate", certificateFields(next));
    }, logger);
    server = listen(config, handler, logger);
  } catch (error) {
    stopReloading?.();
    logger.error((error as Error).message);
    await bus?.close();
    return 2;
  }
  using _idle = returnIdleHeap(logger);
  const signal = await signalled;
  stopReloading();
  logger.info("shutting down", { signal, timeout: config.shutdownTimeout });
  shuttingDown.abort();
  await stop(server, bus, config.shutdownTimeout, logger);
  logger.info("stopped");
  return 0;
}

/**
 * Reads every flag but `--help` and `--log-level`, in the order their
 * errors are reported.
 *
 * @throws {TypeError} for a bad value or certificate file, or a
 * non-loopback address without an API key and without `--insecure`.
 */
/**
 * What an API key may hold: visible ASCII. A header carries bytes that the
 * server reads as Latin-1, so a key with "é" sent as UTF-8 would never
 * match, and `Bearer` takes no space.
 */
const API_KEY = /^[\x21-\x7e]+$/;

async function readConfig(flags: FlagValues): Promise<PublisherConfig> {
  const hostname = stringFlag(flags, "hostname") ?? "127.0.0.1";
  const apiKey = (stringFlag(flags, "api-key") ?? Deno.env.get("PUBLISHER_API_KEY")) || undefined;
  if (apiKey !== undefined && !API_KEY.test(apiKey)) {
    throw new TypeError(
      "Invalid API key: use visible ASCII without spaces, as it travels in an HTTP header (openssl rand -hex 32 makes one)",
    );
  }
  if (!apiKey && !isLoopback(hostname) && !flags.insecure) {
    throw new TypeError(
      `Refusing to listen on ${hostname} without an API key: set --api-key or PUBLISHER_API_KEY, or pass --insecure`,
    );
  }
  const certFiles = certFilesFlag(flags);
  const bus = busFlag(flags);
  return {
    hostname,
    apiKey,
    port: intFlag(flags, "port", DEFAULT_PUBLISHER_PORT),
    certFiles,
    served: certFiles && await readServedCertificate(certFiles),
    bus,
    busHistory: busHistoryFlag(flags, bus),
    token: hubTokenFlag(flags),
    busTls: await busTlsFlag(flags),
    publishTimeout: durationFlag(flags, "publish-timeout", 5000, { min: 1 }),
    maxContentBytes: positiveIntFlag(flags, "max-content-bytes", DEFAULT_MAX_CONTENT_BYTES),
    shutdownTimeout: durationFlag(flags, "shutdown-timeout", DEFAULT_SHUTDOWN_TIMEOUT),
    maxFrameBytes: hubMaxFrameBytesFlag(flags),
    http: {
      maxHeadBytes: positiveIntFlag(flags, "max-head-bytes", DEFAULT_MAX_HEAD_BYTES),
      headTimeout: durationFlag(flags, "head-timeout", DEFAULT_HEAD_TIMEOUT, { min: 1 }),
      idleTimeout: durationFlag(flags, "idle-timeout", DEFAULT_IDLE_TIMEOUT, { min: 1 }),
      bodyTimeout: durationFlag(flags, "body-timeout", DEFAULT_BODY_TIMEOUT, { min: 1 }),
      sendTimeout: durationFlag(flags, "send-timeout", DEFAULT_SEND_TIMEOUT, { min: 1 }),
      maxConnections: positiveIntFlag(flags, "max-connections", DEFAULT_MAX_CONNECTIONS),
    },
    api: {
      maxBodyBytes: positiveIntFlag(flags, "max-body-bytes", DEFAULT_MAX_BODY_BYTES),
      maxJsonDepth: positiveIntFlag(flags, "max-json-depth", DEFAULT_MAX_JSON_DEPTH),
      maxBatchCommands: positiveIntFlag(flags, "max-batch-commands", DEFAULT_MAX_BATCH_COMMANDS),
      maxBatchReplyBytes: positiveIntFlag(flags, "max-batch-reply-bytes", DEFAULT_MAX_BATCH_REPLY_BYTES),
      maxPresenceUsers: positiveIntFlag(flags, "max-presence-users", DEFAULT_MAX_PRESENCE_USERS),
      maxListedChannels: positiveIntFlag(flags, "max-listed-channels", DEFAULT_MAX_LISTED_CHANNELS),
      maxChannelLength: maxChannelLengthFlag(flags),
      maxHistoryLimit: positiveIntFlag(flags, "max-history-limit", DEFAULT_MAX_HISTORY_LIMIT),
      presenceTimeout: durationFlag(flags, "presence-timeout", DEFAULT_PRESENCE_TIMEOUT, { min: 1 }),
      commandTimeout: durationFlag(flags, "command-timeout", DEFAULT_COMMAND_TIMEOUT, { min: 1 }),
    },
    events: {
      maxStreams: positiveIntFlag(flags, "max-event-streams", DEFAULT_MAX_EVENT_STREAMS),
      maxQueued: positiveIntFlag(flags, "max-queued-events", DEFAULT_MAX_QUEUED_EVENTS),
    },
  };
}

/**
 * Opens the link to the bus. It does not wait for the link: the publisher
 * starts, and answers 503, while the hub is down.
 */
function openPublisherBus(config: PublisherConfig, logger: Logger): Bus {
  const { token, publishTimeout, maxFrameBytes, busTls, busHistory } = config;
  return openBus(config.bus, {
    token,
    publishTimeout,
    maxFrameBytes,
    tls: busTls,
    logger,
    ...(busHistory ? { history: busHistory } : {}),
  });
}

/**
 * Serves `handler` on the configured address, under the configured bounds.
 * Its largest body is the larger of the two the handler reads: a server-API
 * call's JSON, and a publish form.
 *
 * @throws {Error} when it cannot listen (the port is taken, say).
 */
function listen(config: PublisherConfig, handler: PublishHandler, logger: Logger): HttpServer {
  const { hostname, port, apiKey, served } = config;
  if (!served && !isLoopback(hostname)) {
    logger.warn(
      "listening on a non-loopback address without TLS: the API key and messages cross the network readable",
      { hostname, hint: "--cert and --key (README: TLS)" },
    );
  }
  const onListen = (addr: Deno.NetAddr) =>
    logger.info("listening", {
      addr: `${addr.hostname}:${addr.port}`,
      auth: apiKey ? "api-key" : "none",
      tls: served ? "on" : "off",
      busTls: busTlsField(config.bus, config.busTls),
      ...(served && certificateFields(served)),
    });
  const maxBodyBytes = Math.max(config.api.maxBodyBytes, config.maxContentBytes * 3 + FORM_OVERHEAD_BYTES);
  let listener: Deno.Listener<Deno.Conn, Deno.NetAddr>;
  try {
    listener = openListener(hostname, port, served);
  } catch (error) {
    throw new Error(`Cannot listen on ${hostname}:${port}: ${(error as Error).message}`);
  }
  return serveHttp({
    listener,
    onListen,
    logger,
    maxBodyBytes,
    fastPath: handler.fast,
    refusal: handler.refusal,
    ...config.http,
  }, handler);
}

/**
 * Stops taking requests, lets those in flight finish (their publishes get
 * acknowledged or time out), then closes the hub link, all within `timeout`
 * ms: a request that never ends (a body that never comes, a publish timeout
 * longer than the bound) must not keep the process up. Requests still in
 * flight near the bound are cut off: closing the bus rejects their
 * publishes, so they answer 503, and the last moments let those answers out.
 */
async function stop(server: HttpServer, bus: Bus, timeout: number, logger: Logger): Promise<void> {
  const deadline = performance.now() + timeout;
  const left = () => Math.max(0, deadline - performance.now());
  const draining = server.shutdown();
  const drained = await settlesWithin(draining, timeout - Math.min(CUTOFF_RESERVE_MS, timeout / 5));
  if (!drained) logger.warn("shutdown timeout: cutting off the requests in flight", { timeout });
  // Closing rejects at once the publishes still waiting; its wait for the link may hang on a dead host.
  const closing = bus.close();
  if (!drained) await settlesWithin(draining, left());
  await settlesWithin(closing, left());
}

/**
 * Listens on `hostname:port`, over TLS with `tls` (PEM contents). A TLS
 * port is shared (`reusePort`), so that a listener with a reloaded
 * certificate opens beside the old one before it closes.
 */
function openListener(
  hostname: string,
  port: number,
  tls: CertifiedKey | undefined,
): Deno.Listener<Deno.Conn, Deno.NetAddr> {
  if (!tls) return Deno.listen({ hostname, port });
  return Deno.listenTls({ hostname, port, cert: tls.cert, key: tls.key, reusePort: true });
}

/** Waits for `promise` up to `ms`; true if it settled in time. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Reads an integer flag that must be at least 1.
 *
 * @throws {TypeError} otherwise.
 */

if (import.meta.main) Deno.exit(await main());
