/**
 * Delivery: bus events to the sockets they address. A message for many
 * connections (a broadcast, a channel publication, a user's publish) is
 * framed once and the same bytes go to each; a targeted event to one.
 * Connections not yet greeted get none of them.
 *
 * The original's `{ content }` and `{ to_connection_id, content }` go as
 * plain text, as they always did. A JSON-API publish (`{ data }`) goes as
 * `data` when it is a string, else as its JSON; a channel's event as
 * `{"channel":name,"data":data}` (or `"join"`/`"leave"`).
 *
 * @module
 */

import {
  type ChannelEvent,
  type DataPush,
  type Exclude,
  toChannelEvent,
  toDataPush,
  toPushData,
} from "../shared/address.ts";
import type { Position } from "../shared/bus.ts";
import type { Json } from "../shared/json.ts";
import type { Logger } from "../shared/log.ts";
import type { PusherCounters } from "./pusher_metrics.ts";
import type { Connection, ConnectionRegistry } from "./registry.ts";
import type { PreparedMessage, Transport } from "./transport.ts";

/** Options for {@linkcode Delivery}. */
export interface DeliveryOptions<C extends Connection> {
  /** This worker's id: an `exclude` naming another worker skips no one here. */
  workerId: string;
  /** The worker's connections. */
  connections: ConnectionRegistry<C>;
  /** Members of a channel in this worker. */
  members(channel: string): ReadonlySet<C>;
  /**
   * Whose channel publications wait for now: members whose subscribe is
   * still reading the channel's history (`recovery.ts`). @default {no one's}
   */
  hold?: {
    holding(channel: string): boolean;
    hold(connection: C, channel: string, position: Position | undefined, message: string | PreparedMessage): boolean;
  };
  /** Prepares a message once for many sockets. */
  transport: Transport;
  counters: PusherCounters;
  logger: Logger;
}

/** Hands events from the bus to one worker's connections. */
export class Delivery<C extends Connection = Connection> {
  readonly #workerId: string;
  readonly #connections: ConnectionRegistry<C>;
  readonly #members: (channel: string) => ReadonlySet<C>;
  readonly #hold: DeliveryOptions<C>["hold"];
  readonly #transport: Transport;
  readonly #counters: PusherCounters;
  readonly #logger: Logger;

  constructor(options: DeliveryOptions<C>) {
    this.#workerId = options.workerId;
    this.#connections = options.connections;
    this.#members = options.members;
    this.#hold = options.hold;
    this.#transport = options.transport;
    this.#counters = options.counters;
    this.#logger = options.logger;
  }

  /**
   * An event of the broadcast subject, to every connection: the original's
   * `{ content }`, or a JSON-API `{ data, exclude? }`.
   */
  broadcast(data: Json): void {
    const push = toPushData(data);
    if (push && push.to_connection_id === undefined) {
      const message = this.#transport.prepare(push.content);
      let sent = 0;
      for (const connection of this.#connections.values()) {
        if (!connection.greeted) continue;
        connection.socket.send(message);
        sent++;
      }
      this.#counters.delivered.inc(sent, "broadcast");
      return;
    }
    const json = toDataPush(data);
    if (!json || json.to_connection_id !== undefined) return this.#wrongShape(data, "a broadcast");
    const sent = this.#sendTo(this.#connections.values(), dataText(json.data), json.exclude);
    this.#counters.delivered.inc(sent, "broadcast");
  }

  /**
   * An event of the worker's own subject, to one connection: the original's
   * `{ to_connection_id, content }`, or a JSON-API `{ to_connection_id, data }`.
   * Returns whether that connection was here to send it to.
   */
  target(data: Json): boolean {
    const push = toPushData(data);
    let text: string;
    let id: number;
    if (push && push.to_connection_id !== undefined) {
      text = push.content;
      id = push.to_connection_id;
    } else {
      const json = toDataPush(data);
      if (!json || json.to_connection_id === undefined) {
        this.#wrongShape(data, "a targeted event");
        return false;
      }
      text = dataText(json.data);
      id = json.to_connection_id;
    }
    const connection = this.#connections.get(id);
    if (!connection?.greeted) {
      this.#counters.dropped.inc(1, "no_connection");
      this.#logger.info("no such connection", { connection: id });
      return false;
    }
    connection.socket.send(text);
    this.#counters.delivered.inc(1, "targeted");
    return true;
  }

  /**
   * An event of a channel's subject, to the channel's members here, with its
   * position when the channel keeps history. A member whose subscribe still
   * reads the history gets it later, from the recovery that holds it.
   */
  channel(channel: string, data: Json, position?: Position): void {
    const event = toChannelEvent(data);
    if (!event || event.channel !== channel) return this.#wrongShape(data, "a channel event");
    const exclude = "exclude" in event ? event.exclude : undefined;
    const text = channelFrame(event, position);
    const hold = this.#hold?.holding(channel) ? this.#hold : undefined;
    if (!hold) {
      this.#counters.delivered.inc(this.#sendTo(this.#members(channel), text, exclude), "channel");
      return;
    }
    const skip = exclude?.worker_id === this.#workerId ? exclude.connection_id : 0;
    let message;
    let sent = 0;
    for (const connection of this.#members(channel)) {
      if (connection.id === skip || !connection.greeted) continue;
      message ??= this.#transport.prepare(text);
      if (!hold.hold(connection, channel, position, message)) connection.socket.send(message);
      sent++;
    }
    this.#counters.delivered.inc(sent, "channel");
  }

  /** A publish on a user's subject, to the user's connections here but the excluded one; returns to how many it went. */
  user(user: string, push: DataPush): number {
    const sent = this.#sendTo(this.#connections.ofUser(user), dataText(push.data), push.exclude);
    this.#counters.delivered.inc(sent, "user");
    return sent;
  }

  /** Logs and counts an event that is not of the shape its subject carries. */
  wrongShape(data: Json, what: string): void {
    this.#wrongShape(data, what);
  }

  /** Sends `text`, prepared once, to each of `connections` but the excluded one; returns how many. */
  #sendTo(connections: Iterable<C>, text: string, exclude: Exclude | undefined): number {
    const skip = exclude?.worker_id === this.#workerId ? exclude.connection_id : 0;
    let message;
    let sent = 0;
    for (const connection of connections) {
      if (connection.id === skip || !connection.greeted) continue;
      connection.socket.send(message ??= this.#transport.prepare(text));
      sent++;
    }
    return sent;
  }

  #wrongShape(data: Json, what: string): void {
    this.#counters.dropped.inc(1, "bad_shape");
    this.#logger.warn(`dropped ${what} of the wrong shape`, { type: describe(data) });
  }
}

/** What a browser gets of a JSON-API publish's `data`: a string as is, anything else as JSON. */
export function dataText(data: Json): string {
  return typeof data === "string" ? data : JSON.stringify(data);
}

/**
 * The frame a channel's members get: `{"channel":name,"data":data}`, or
 * `"join"`/`"leave"` in place of `"data"`; with `"offset"` and `"epoch"` when
 * the channel keeps history.
 */
export function channelFrame(event: ChannelEvent, position?: Position): string {
  const at = position ? { offset: position.offset, epoch: position.epoch } : {};
  if ("data" in event) return JSON.stringify({ channel: event.channel, data: event.data, ...at });
  if ("join" in event) return JSON.stringify({ channel: event.channel, join: event.join, ...at });
  return JSON.stringify({ channel: event.channel, leave: event.leave, ...at });
}

function describe(data: Json): string {
  return data === null ? "null" : Array.isArray(data) ? "array" : typeof data;
}
