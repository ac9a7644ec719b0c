/**
 * What \`main.ts\` and its workers (\`worker.ts\`) say to each other, apart
 * from the worker's code: the supervisor's isolate imports only this, and
 * so loads neither the server nor node:crypto (issue 19).
 *
 * @module
 */

import type { OpenBusOptions } from "../shared/open_bus.ts";
import type { LogLevel } from "../shared/log.ts";
import type { RegistrySnapshot } from "../shared/metrics.ts";
import type { BusTls, CertifiedKey } from "../shared/tls.ts";

/**
 * Which server a worker runs: `listen`, our own on `Deno.listen`
 * (`pusher/server.ts`, the default), or `deno`, `Deno.serve`
 * (`pusher/deno_transport.ts`).
 */
export type ServerKind = "listen" | "deno";

/** Whether `value` names a {@linkcode ServerKind}. */
export function isServerKind(value: string): value is ServerKind {
  return value === "listen" || value === "deno";
}

/** What `main.ts` tells a worker at start. */
export interface WorkerConfig {
  slot: number;
  server: ServerKind;
  hostname: string;
  port: number;
  /** The bus address (`channel://host:port`, `nats://...`). */
  bus: string;
  /** History the bus keeps itself (NATS), from `--history*`; undefined for the hub. */
  busHistory: OpenBusOptions["history"];
  hubToken: string | undefined;
  hubMaxFrameBytes: number;
  /** TLS to the bus (PEM contents), or undefined for plain text. */
  busTls: BusTls | undefined;
  /** The certificate and key to serve `wss://` with (PEM contents), or undefined for `ws://`. */
  tls: CertifiedKey | undefined;
  idleTimeout: number;
  maxBufferedBytes: number;
  slowClientTimeout: number;
  /** Least milliseconds between two writes to one client (our server's `writeInterval`). */
  writeInterval: number;
  publisherUrl: string | null;
  allowedOrigins: string[] | null;
  tokenSecret: string | null;
  maxMessageRate: number;
  maxMessageBytes: number;
  maxHeadBytes: number;
  handshakeTimeout: number;
  maxConnections: number;
  maxConnectionsPerUser: number;
  maxChannelsPerConnection: number;
  maxChannelsPerWorker: number;
  maxChannelLength: number;
  maxPresenceUsers: number;
  presenceTimeout: number;
  maxClientReads: number;
  maxRecoverMessages: number;
  presenceChannels: string[];
  connectionEvents: boolean;
  logLevel: LogLevel;
}

/** Messages from `main.ts` to a worker. */
export type ToWorker =
  | { type: "start"; config: WorkerConfig }
  | { type: "stop"; timeout: number }
  /** Asks for this worker's metrics, to merge with its siblings'. */
  | { type: "snapshot"; id: number }
  /** Every worker's metrics, merged, answering this worker's `gather`. */
  | { type: "gathered"; id: number; snapshot: RegistrySnapshot }
  /** Serve new connections with this certificate (SIGHUP); open ones keep theirs. */
  | { type: "reload"; id: number; tls: CertifiedKey };

/** Messages from a worker to `main.ts`. */
export type FromWorker =
  | { type: "listening"; port: number; workerId: string }
  | { type: "stopped" }
  | { type: "snapshot"; id: number; snapshot: RegistrySnapshot }
  /** Asks for every worker's metrics, merged. */
  | { type: "gather"; id: number }
  /** Answers a `reload`: null once new connections get the new certificate, else why not. */
  | { type: "reloaded"; id: number; error: string | null };
