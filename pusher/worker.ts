/**
 * A pusher worker, run in a Deno `Worker` by `pusher/main.ts`: its own hub
 * link, its own worker id, and a server sharing the port with the other
 * workers (`reusePort`): ours on `Deno.listen` (`pusher/server.ts`), or
 * `Deno.serve` (`pusher/deno_transport.ts`) with `--server deno`.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { Pusher } from "./pusher.ts";
import { listenTransport, type Refusal, serve } from "./server.ts";
import { denoTransport, serveDeno } from "./deno_transport.ts";
import { openBus } from "../shared/open_bus.ts";
import { createLogger } from "../shared/log.ts";
import { newWorkerId } from "../shared/address.ts";
import type { RegistrySnapshot } from "../shared/metrics.ts";
import type { CertifiedKey } from "../shared/tls.ts";
import { returnIdleHeap } from "../shared/idle_gc.ts";

import type { FromWorker, ToWorker, WorkerConfig } from "./_worker_protocol.ts";

export { isServerKind } from "./_worker_protocol.ts";
export type { FromWorker, ServerKind, ToWorker, WorkerConfig } from "./_worker_protocol.ts";

interface Running {
  stop: (timeout: number) => Promise<void>;
  reload: (tls: CertifiedKey) => Promise<void>;
  pusher: Pusher;
}

let running: Running | null = null;
const gathering = new Map<number, (snapshot: RegistrySnapshot) => void>();
let nextGather = 1;

self.onmessage = async (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  switch (message.type) {
    case "start":
      running ??= start(message.config);
      break;
    case "stop":
      if (!running) break;
      await running.stop(message.timeout);
      post({ type: "stopped" });
      break;
    case "snapshot":
      if (running) post({ type: "snapshot", id: message.id, snapshot: running.pusher.metrics.snapshot() });
      break;
    case "gathered":
      gathering.get(message.id)?.(message.snapshot);
      gathering.delete(message.id);
      break;
    case "reload": {
      if (!running) break;
      const error = await running.reload(message.tls).then(() => null, (error: Error) => error.message);
      post({ type: "reloaded", id: message.id, error });
      break;
    }
  }
};

/** Every worker's metrics, merged by `main.ts`. */
function gather(): Promise<RegistrySnapshot> {
  const id = nextGather++;
  post({ type: "gather", id });
  return new Promise((resolve) => gathering.set(id, resolve));
}

function post(message: FromWorker): void {
  self.postMessage(message);
}

function start(config: WorkerConfig): Running {
  const workerId = newWorkerId();
  const logger = createLogger("pusher", { level: config.logLevel, fields: { worker: workerId } });
  const bus = openBus(config.bus, {
    token: config.hubToken,
    maxFrameBytes: config.hubMaxFrameBytes,
    tls: config.busTls,
    logger,
    ...(config.busHistory ? { history: config.busHistory } : {}),
  });
  const pusher = new Pusher({
    workerId,
    bus,
    transport: config.server === "deno" ? denoTransport : listenTransport,
    publisherUrl: config.publisherUrl,
    allowedOrigins: config.allowedOrigins,
    tokenSecret: config.tokenSecret,
    maxMessageRate: config.maxMessageRate,
    maxChannelsPerConnection: config.maxChannelsPerConnection,
    maxChannelsPerWorker: config.maxChannelsPerWorker,
    maxChannelLength: config.maxChannelLength,
    maxPresenceUsers: config.maxPresenceUsers,
    presenceTimeout: config.presenceTimeout,
    maxClientReads: config.maxClientReads,
    maxConnectionsPerUser: config.maxConnectionsPerUser,
    maxRecoverMessages: config.maxRecoverMessages,
    presenceChannels: config.presenceChannels,
    connectionEvents: config.connectionEvents,
    gather,
    logger,
  });
  const common = {
    hostname: config.hostname,
    port: config.port,
    reusePort: true,
    tls: config.tls,
    maxBufferedBytes: config.maxBufferedBytes,
    maxConnections: config.maxConnections,
    maxMessageBytes: config.maxMessageBytes,
    logger,
    onRefused: (reason: Refusal) => pusher.countRefusal(reason),
    onListen: (addr: Deno.NetAddr) => post({ type: "listening", port: addr.port, workerId }),
  };
  const server = config.server === "deno"
    // Deno pings after half its idle timeout of silence: a ping each
    // --idle-timeout seconds, as ours sends, and a close a ping later.
    // --max-head-bytes, --handshake-timeout and --slow-client-timeout are
    // our server's alone.
    ? serveDeno({ ...common, idleTimeout: config.idleTimeout * 2000 }, pusher.handler)
    : serve({
      ...common,
      pingInterval: config.idleTimeout * 1000,
      slowClientTimeout: config.slowClientTimeout,
      writeInterval: config.writeInterval,
      maxHeadBytes: config.maxHeadBytes,
      handshakeTimeout: config.handshakeTimeout,
    }, pusher.handler);

  const idle = returnIdleHeap(logger);
  const stop = async (timeout: number) => {
    idle[Symbol.dispose]();
    // Closes every client with 1001 after what it was sent, then waits.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      server.shutdown(),
      new Promise((resolve) => (timer = setTimeout(resolve, timeout))),
    ]);
    clearTimeout(timer);
    pusher.detach();
    await bus.close();
  };
  return { stop, reload: (tls) => server.reloadCertificate(tls), pusher };
}
