/**
 * A pusher worker, run in a Deno `Worker` by `pusher/main.ts`: its own hub
 * link, its own worker id, and a listener (`pusher/server.ts`) sharing the
 * port with the other workers (`reusePort`).
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { ChannelClient } from "../channel/client.ts";
import { Pusher } from "./pusher.ts";
import { serve } from "./server.ts";
import { createLogger, type LogLevel } from "../shared/log.ts";
import { newWorkerId } from "../shared/wire.ts";
import type { HostPort } from "../shared/cli.ts";

/** What `main.ts` tells a worker at start. */
export interface WorkerConfig {
  slot: number;
  hostname: string;
  port: number;
  hub: HostPort;
  hubToken: string | undefined;
  idleTimeout: number;
  maxBufferedBytes: number;
  slowClientTimeout: number;
  publisherUrl: string | null;
  logLevel: LogLevel;
}

/** Messages from `main.ts` to a worker. */
export type ToWorker = { type: "start"; config: WorkerConfig } | { type: "stop"; timeout: number };

/** Messages from a worker to `main.ts`. */
export type FromWorker =
  | { type: "listening"; port: number; workerId: string }
  | { type: "stopped" };

let stop: ((timeout: number) => Promise<void>) | null = null;

self.onmessage = async (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  if (message.type === "start" && !stop) stop = start(message.config);
  if (message.type === "stop" && stop) {
    await stop(message.timeout);
    post({ type: "stopped" });
  }
};

function post(message: FromWorker): void {
  self.postMessage(message);
}

function start(config: WorkerConfig): (timeout: number) => Promise<void> {
  const workerId = newWorkerId();
  const logger = createLogger("pusher", { level: config.logLevel, fields: { worker: workerId } });
  const client = new ChannelClient({ ...config.hub, token: config.hubToken, logger });
  const pusher = new Pusher({ workerId, hub: client, publisherUrl: config.publisherUrl, logger });
  const server = serve({
    hostname: config.hostname,
    port: config.port,
    reusePort: true,
    pingInterval: config.idleTimeout * 1000,
    maxBufferedBytes: config.maxBufferedBytes,
    slowClientTimeout: config.slowClientTimeout,
    logger,
    onListen: (addr) => post({ type: "listening", port: addr.port, workerId }),
  }, pusher.handler);

  return async (timeout) => {
    // Closes every client with 1001 after what it was sent, then waits.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      server.shutdown(),
      new Promise((resolve) => (timer = setTimeout(resolve, timeout))),
    ]);
    clearTimeout(timer);
    pusher.detach();
    await client.close();
  };
}
