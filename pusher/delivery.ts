/**
 * Delivery: bus events to the sockets they address. A broadcast is framed
 * once and the same bytes go to every connection; a targeted event to one.
 *
 * @module
 */

import { type PushData, toPushData } from "../shared/address.ts";
import type { Json } from "../shared/json.ts";
import type { Logger } from "../shared/log.ts";
import type { PusherCounters } from "./pusher_metrics.ts";
import type { ConnectionRegistry } from "./registry.ts";
import type { Transport } from "./transport.ts";

/** Hands events from the bus to one worker's connections. */
export class Delivery {
  readonly #connections: ConnectionRegistry;
  readonly #transport: Transport;
  readonly #counters: PusherCounters;
  readonly #logger: Logger;

  constructor(connections: ConnectionRegistry, transport: Transport, counters: PusherCounters, logger: Logger) {
    this.#connections = connections;
    this.#transport = transport;
    this.#counters = counters;
    this.#logger = logger;
  }

  /** An event of the broadcast subject: `{ content }` to every connection. */
  broadcast(data: Json): void {
    const push = this.#check(data, "a broadcast", false);
    if (!push) return;
    const message = this.#transport.prepare(push.content);
    for (const connection of this.#connections.values()) connection.socket.send(message);
    this.#counters.delivered.inc(this.#connections.size, "broadcast");
  }

  /** An event of the worker's own subject: `{ to_connection_id, content }` to that connection. */
  target(data: Json): void {
    const push = this.#check(data, "a targeted event", true);
    if (!push) return;
    const connection = this.#connections.get(push.to_connection_id!);
    if (!connection) {
      this.#counters.dropped.inc(1, "no_connection");
      this.#logger.info("no such connection", { connection: push.to_connection_id });
      return;
    }
    connection.socket.send(push.content);
    this.#counters.delivered.inc(1, "targeted");
  }

  /** The event's data if it has the shape its subject needs; else logged, counted and null. */
  #check(data: Json, what: string, targeted: boolean): PushData | null {
    const push = toPushData(data);
    if (push && (push.to_connection_id !== undefined) === targeted) return push;
    this.#counters.dropped.inc(1, "bad_shape");
    this.#logger.warn(`dropped ${what} of the wrong shape`, { type: describe(data) });
    return null;
  }
}

function describe(data: Json): string {
  return data === null ? "null" : Array.isArray(data) ? "array" : typeof data;
}
