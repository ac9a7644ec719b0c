/**
 * The server API's methods but `batch` and `broadcast`: each reads its parameters, publishes
 * or asks the pusher workers over the bus, and returns its result, or throws
 * a {@linkcode Rejection} with the status and reason of its error.
 *
 * Messages are built only with `shared/address.ts` ({@linkcode publishRoute},
 * {@linkcode commandRoute}, {@linkcode presenceQuery}), which the pusher
 * reads with the same module.
 *
 * @module
 */

import {
  type ChannelHistory,
  channelSubject,
  type CommandBody,
  commandRoute,
  type ConnectionAddress,
  presenceQuery,
  publishRoute,
  type PushAddress,
  readChannelHistory,
  toCommandReply,
  type UserAddress,
} from "../shared/address.ts";
import {
  type Bus,
  type BusBatchItem,
  BusError,
  publishBatch,
  type PublishOne,
  type PublishResult,
} from "../shared/bus.ts";
import { publishToConnection } from "./_connection_publish.ts";
import type { Json } from "../shared/json.ts";
import type { Logger } from "../shared/log.ts";
import type { PublisherMetrics, PublishTargetKind } from "./metrics.ts";
import {
  type Params,
  readChannel,
  readDisconnect,
  readExclude,
  readIdempotencyKey,
  readLimit,
  readPattern,
  readReverse,
  readSince,
  readTarget,
  type TargetKind,
} from "./_api_params.ts";
import {
  channelList,
  channelPresence,
  type Gathered,
  info,
  type Result,
  userCommand,
  userPresence,
} from "./_api_replies.ts";
import { busRejection, Rejection } from "./_rejection.ts";
import { busName } from "../shared/bus_address.ts";
import { utf8Length } from "../shared/bytes.ts";

/** The methods of `POST /api/<method>`, `batch` included. */
export const API_METHODS = [
  "publish",
  "subscribe",
  "unsubscribe",
  "disconnect",
  "presence",
  "presence_stats",
  "info",
  "channels",
  "history",
  "history_remove",
  "broadcast",
  "batch",
] as const;

/** A method of the server API. */
export type ApiMethod = typeof API_METHODS[number];

/** A method that a `batch` runs: every one but `batch`. */
export type SingleMethod = Exclude<ApiMethod, "batch">;

/** A method of {@linkcode ApiMethods.single}, and of a batch's commands: `broadcast` and `batch` run in `api.ts`. */
export type OwnMethod = Exclude<SingleMethod, "broadcast">;

/** What the methods need: the handler's options, defaults filled in. */
export interface ApiMethodsDeps {
  bus: Bus;
  /** Publishes one item on `bus`, gathered with the turn's others ({@linkcode coalescePublishes}). */
  publishOne: PublishOne;
  logger: Logger;
  metrics: PublisherMetrics;
  now: () => number;
  /** How long a publish waits for the bus to take it, in milliseconds. */
  publishTimeout: number;
  /** How long presence, info and channels wait for the workers' replies, in milliseconds. */
  presenceTimeout: number;
  /** How long a subscribe, unsubscribe or disconnect waits for the workers' replies, in milliseconds. */
  commandTimeout: number;
  /** Largest `data` of a publish, in UTF-8 bytes of its JSON (of the string itself for a string). */
  maxContentBytes: number;
  /** Users a presence answer lists at most. */
  maxPresenceUsers: number;
  /** Channels a `channels` answer lists at most. */
  maxListedChannels: number;
  /** Longest channel name. */
  maxChannelLength: number;
  /** Publications a `history` answer lists at most, and its `limit` when it names none. */
  maxHistoryLimit: number;
}

/** A stale connection address: the same words as the GET API's. */
function staleWorker(workerId: string): Rejection {
  return new Rejection(404, `No pusher worker ${workerId} is connected: the address is stale or wrong`, {
    logReason: "No pusher worker is connected: the address is stale or wrong",
  });
}

/** A history call for a channel whose history the hub does not keep (no `--history` pattern matches it). */
function notKept(channel: string): Rejection {
  return new Rejection(404, `History is not kept for channel ${channel}: the hub's --history does not name it`, {
    logReason: "History is not kept for the channel: the hub's --history does not name it",
  });
}

/** What a publish may go to. */
const PUBLISH_TARGETS: readonly TargetKind[] = ["channel", "user", "connection", "everyone"];

/**
 * A publish's `ack`: false when absent. Only a user's or a connection's
 * publish can be acknowledged (their workers count what they delivered), and
 * not with an idempotency key, which a request to the workers cannot carry.
 *
 * @throws {Rejection} 400 otherwise.
 */
function readAck(params: Params, address: PushAddress, idempotencyKey: string | undefined): boolean {
  const ack = params.ack;
  if (ack === undefined || ack === false) return false;
  if (ack !== true) throw new Rejection(400, "Invalid ack: expected true or false");
  if (address.kind !== "user" && address.kind !== "connection") {
    throw new Rejection(400, "Invalid ack: only a publish to a user or to worker_id + connection_id is acknowledged");
  }
  if (idempotencyKey !== undefined) throw new Rejection(400, "Invalid ack: it cannot go with an idempotency_key");
  return true;
}

/** A publish whose parameters were read, ready for the bus. */
export interface PreparedPublish {
  /** When it was read, by the `now` of the deps: its latency counts from here. */
  readonly started: number;
  /** Where it goes. */
  readonly address: PushAddress;
  /** What goes to the bus. */
  readonly item: BusBatchItem & { readonly data: Json };
  /** False when it must go alone (to a connection on a bus that cannot count, or with `ack`). */
  readonly batchable: boolean;
  /** Whether the workers are asked to say to how many connections it went (`ack`). */
  readonly ack: boolean;
}

/** The methods of {@linkcode apiMethods}: each method but `batch`, and the pieces a batch uses to publish together. */
export interface ApiMethods {
  /** Each method but `batch` and `broadcast`, by name: parameters in, result out. */
  readonly single: Record<OwnMethod, (params: Params) => Promise<Result>>;
  /** Reads a publish's parameters, read at `started` (default: now). @throws {Rejection} as `publish` would. */
  readonly preparePublish: (params: Params, started?: number) => PreparedPublish;
  /** Publishes prepared publishes together; each answer as `publish` would give it, or its refusal. */
  readonly publishMany: (batch: readonly PreparedPublish[]) => Promise<(Result | Error)[]>;
}

/** Each method but `batch` and `broadcast`, by name, and the batch's way to publish many at once. */
export function apiMethods(deps: ApiMethodsDeps): ApiMethods {
  const { bus, logger, metrics, now, maxChannelLength } = deps;
  const thisBus = busName(bus.address);
  /** A bus failure as the answer to give, naming this bus. */
  const refusal = (error: unknown) => busRejection(error, thisBus);

  /** Asks the workers on `subject`; nobody there is no error but no replies. */
  async function gather(subject: string, data: Json, timeout: number, maxReplies?: number): Promise<Gathered> {
    try {
      const gathered = await bus.request(subject, data, {
        timeout,
        ...(maxReplies === undefined ? {} : { maxReplies }),
      });
      if (gathered.expected !== null && gathered.replies.length < gathered.expected) {
        logger.info("some pusher workers did not answer in time", {
          subject,
          answered: gathered.replies.length,
          expected: gathered.expected,
          timeout,
        });
      }
      return gathered;
    } catch (error) {
      if (error instanceof BusError && error.code === "no_responders") return { replies: [], expected: 0 };
      throw refusal(error);
    }
  }

  /**
   * Reads a publish's parameters: what to publish where, or a
   * {@linkcode Rejection}. `started`: when it was read (a batch reads all
   * its publishes at one time).
   */
  function preparePublish(params: Params, started: number = now()): PreparedPublish {
    const address = readTarget(params, PUBLISH_TARGETS, maxChannelLength);
    if (!("data" in params)) throw new Rejection(400, "Missing data: pass data, any JSON value");
    const data = params.data!;
    const text = typeof data === "string" ? data : JSON.stringify(data);
    // JSON.parse reads a number past a double's range as ±Infinity, which JSON.stringify writes as null: a
    // text without null has none, so most data need no walk.
    if (typeof data !== "string" && text.includes("null")) {
      const at = nonFinitePath(data, "data");
      if (at !== null) {
        throw new Rejection(
          400,
          `Invalid ${at}: a number too large for a double (it would be published as null); send it as a string`,
        );
      }
    }
    // UTF-8 takes at most 3 bytes per UTF-16 unit: most data need no count.
    if (text.length * 3 > deps.maxContentBytes) {
      const bytes = utf8Length(text);
      if (bytes > deps.maxContentBytes) {
        throw new Rejection(413, `Data too large: ${bytes} bytes, the limit is ${deps.maxContentBytes}`);
      }
    }
    const route = publishRoute(address, data, readExclude(params));
    const idempotencyKey = readIdempotencyKey(params);
    const ack = readAck(params, address, idempotencyKey);
    const item: PreparedPublish["item"] = idempotencyKey === undefined
      ? { subject: route.subject, data: route.data }
      : { subject: route.subject, data: route.data, idempotencyKey };
    // A bus that cannot count asks the connection's worker instead: no batch for that one.
    const batchable = !ack && !(address.kind === "connection" && bus.countsReached === false);
    return { started, address, item, batchable, ack };
  }

  /**
   * A publish with `ack`: sent as a request to the user's workers (or the
   * connection's), each of which answers to how many connections it went,
   * within `--command-timeout`; a connection that is gone is a 404.
   */
  async function acknowledged({ started, address, item }: PreparedPublish): Promise<Result> {
    const gathered = await gather(
      item.subject,
      item.data,
      deps.commandTimeout,
      address.kind === "user" ? undefined : 1,
    );
    const result = address.kind === "user"
      ? userCommand(gathered)
      : oneConnection(address as ConnectionAddress, gathered);
    metrics.countPublish(address.kind === "user" ? "user" : "connection", gathered.expected, (now() - started) / 1000);
    return result;
  }

  /** A publish's result from what the bus answered at `finished`, as `publish` returns it. */
  function finishPublish(
    { started, address }: Pick<PreparedPublish, "started" | "address">,
    published: PublishResult,
    finished = now(),
  ): Result {
    const { reached, position } = published;
    if (reached === 0 && address.kind === "connection") throw staleWorker(address.workerId);
    const target: PublishTargetKind = address.kind === "everyone" ? "broadcast" : address.kind;
    metrics.countPublish(target, reached, (finished - started) / 1000);
    // Only a subject that keeps history has positions: the others' results keep their shape.
    if (position === undefined) return { workers_reached: reached };
    return { workers_reached: reached, offset: position.offset, epoch: position.epoch };
  }

  async function publish(params: Params): Promise<Result> {
    const prepared = preparePublish(params);
    if (prepared.ack) return await acknowledged(prepared);
    const { subject, data } = prepared.item;
    let published: PublishResult;
    try {
      published = prepared.batchable
        ? await deps.publishOne(prepared.item)
        : await publishToConnection(bus, subject, data, { timeout: deps.publishTimeout });
    } catch (error) {
      throw refusal(error);
    }
    return finishPublish(prepared, published);
  }

  /**
   * The publishes of a batch, together: each item's answer as `publish`
   * would give it alone, a {@linkcode Rejection} for those refused. Items
   * go to the bus in one {@linkcode publishBatch} call.
   */
  function publishMany(batch: readonly PreparedPublish[]): Promise<(Result | Error)[]> {
    // What the answers need, without the items: their data goes as soon as
    // it is written to the bus, not after the collections that the wait for
    // its answer spans (which would move it to the old generation).
    const answers = batch.map(({ started, address }) => ({ started, address }));
    return publishBatch(bus, batch.map(({ item }) => item), { timeout: deps.publishTimeout }).then(
      (outcomes) => {
        const finished = now();
        return outcomes.map((outcome, i) => {
          try {
            if (outcome instanceof BusError) throw refusal(outcome);
            return finishPublish(answers[i]!, outcome, finished);
          } catch (error) {
            return error as Error;
          }
        });
      },
      (error) => {
        const rejection = refusal(error) as Error;
        return answers.map(() => rejection);
      },
    );
  }

  async function history(params: Params): Promise<Result> {
    const channel = readChannel(params, maxChannelLength);
    const since = readSince(params);
    const limit = readLimit(params, deps.maxHistoryLimit);
    const reverse = readReverse(params);
    let kept: ChannelHistory | null;
    try {
      kept = await readChannelHistory(bus, channel, {
        limit,
        reverse,
        timeout: deps.publishTimeout,
        ...(since === undefined ? {} : { since }),
      });
    } catch (error) {
      throw refusal(error);
    }
    if (kept === null) throw notKept(channel);
    return kept;
  }

  async function historyRemove(params: Params): Promise<Result> {
    const channel = readChannel(params, maxChannelLength);
    try {
      await bus.removeHistory(channelSubject(channel));
    } catch (error) {
      throw refusal(error);
    }
    return {};
  }

  /**
   * Sends `command` to a user's connections or to one connection, and says
   * how many are as it asked once it is done (see {@linkcode userCommand}).
   */
  async function command(params: Params, body: CommandBody): Promise<Result> {
    const address = readTarget(params, ["user", "connection"], maxChannelLength) as UserAddress | ConnectionAddress;
    const route = commandRoute(address, body);
    // A worker's subject has one subscriber: its reply is all there is to wait for.
    const gathered = await gather(
      route.subject,
      { ...route.data },
      deps.commandTimeout,
      address.kind === "user" ? undefined : 1,
    );
    if (address.kind === "user") return userCommand(gathered);
    return oneConnection(address, gathered);
  }

  function oneConnection(address: ConnectionAddress, gathered: Gathered): Result {
    const { workerId, connectionId } = address;
    if (gathered.expected === 0) throw staleWorker(workerId);
    const first = gathered.replies[0];
    if (first === undefined) {
      throw new Rejection(504, `Pusher worker ${workerId} did not answer within ${deps.commandTimeout} ms`);
    }
    const reply = toCommandReply(first);
    if (reply === null) throw new Rejection(502, `Pusher worker ${workerId} answered with an unknown reply`);
    if (reply.ok) return { connections: 1, workers_reached: 1 };
    if (reply.error === "no such connection") {
      throw new Rejection(404, `No connection ${connectionId} on pusher worker ${workerId}: it is gone`, {
        logReason: "No such connection on its pusher worker: it is gone",
      });
    }
    // The worker's own limits, per connection or per worker.
    if (reply.error.startsWith("Too many channels")) throw new Rejection(429, reply.error);
    throw new Rejection(422, reply.error);
  }

  const single: Record<OwnMethod, (params: Params) => Promise<Result>> = {
    publish,
    subscribe: (params) => command(params, { cmd: "subscribe", channel: readChannel(params, maxChannelLength) }),
    unsubscribe: (params) => command(params, { cmd: "unsubscribe", channel: readChannel(params, maxChannelLength) }),
    disconnect: (params) => command(params, { cmd: "disconnect", ...readDisconnect(params) }),
    async presence(params) {
      const address = readTarget(params, ["channel", "user"], maxChannelLength);
      if (address.kind === "channel") {
        const query = presenceQuery({ q: "channel", channel: address.channel });
        const gathered = await gather(query.subject, { ...query.data }, deps.presenceTimeout);
        return channelPresence(gathered, deps.maxPresenceUsers, true);
      }
      const query = presenceQuery({ q: "user", user: (address as UserAddress).user });
      return userPresence(await gather(query.subject, { ...query.data }, deps.presenceTimeout));
    },
    async presence_stats(params) {
      const query = presenceQuery({ q: "channel", channel: readChannel(params, maxChannelLength) });
      const gathered = await gather(query.subject, { ...query.data }, deps.presenceTimeout);
      return channelPresence(gathered, deps.maxPresenceUsers, false);
    },
    async info() {
      const query = presenceQuery({ q: "info" });
      return info(await gather(query.subject, { ...query.data }, deps.presenceTimeout));
    },
    async channels(params) {
      const limit = deps.maxListedChannels;
      const query = presenceQuery({ q: "channels", pattern: readPattern(params, maxChannelLength), limit });
      return channelList(await gather(query.subject, { ...query.data }, deps.presenceTimeout), limit);
    },
    history,
    history_remove: historyRemove,
  };
  return { single, preparePublish, publishMany };
}

/**
 * Where `value` holds a number that is not finite (`data.a[1]`), `path`
 * being its own; null when it holds none. Its depth is bounded by the
 * body's (`--max-json-depth`).
 */
function nonFinitePath(value: Json, path: string): string | null {
  if (typeof value === "number") return Number.isFinite(value) ? null : path;
  if (typeof value !== "object" || value === null) return null;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = nonFinitePath(value[i]!, `${path}[${i}]`);
      if (found !== null) return found;
    }
    return null;
  }
  for (const key in value) {
    const found = nonFinitePath(value[key]!, `${path}.${key}`);
    if (found !== null) return found;
  }
  return null;
}
