/**
 * Summing the pusher workers' replies to a request (presence, info, a
 * command for a user) into one server-API result, and saying when some
 * workers did not answer in time. Pure: no bus, no clock.
 *
 * @module
 */

import {
  mergeChannelPresence,
  toChannelList,
  toUserCommandReply,
  toWorkerInfo,
  type WorkerInfo,
} from "../shared/address.ts";
import type { Json } from "../shared/json.ts";

/** A result object of the server API. */
export type Result = { [key: string]: Json };

/** The replies a request gathered, and how many workers it reached (null when the bus cannot count). */
export interface Gathered {
  readonly replies: readonly Json[];
  readonly expected: number | null;
}

/**
 * `workers_reached` (the workers that answered), and when fewer answered
 * than the request reached, `partial: true` with `workers_answered` and
 * `workers_expected`.
 */
export function reachOf(gathered: Gathered): Result {
  const answered = gathered.replies.length;
  const { expected } = gathered;
  if (expected === null || answered >= expected) return { workers_reached: answered };
  return { workers_reached: answered, partial: true, workers_answered: answered, workers_expected: expected };
}

/**
 * A channel's presence over the workers' replies ({@linkcode mergeChannelPresence}),
 * with how many workers answered.
 */
export function channelPresence(gathered: Gathered, maxUsers: number, listUsers: boolean): Result {
  return { ...mergeChannelPresence(gathered.replies, maxUsers, listUsers), ...reachOf(gathered) };
}

/** A user's presence: `online` and its `connections` summed over the workers. */
export function userPresence(gathered: Gathered): Result {
  const connections = sumConnections(gathered);
  return { online: connections > 0, connections, ...reachOf(gathered) };
}

/**
 * How many of a user's connections are as a command asked once it is done,
 * summed over the workers: in the channel after a subscribe, out of it after
 * an unsubscribe (those already so included), closed by a disconnect.
 */
export function userCommand(gathered: Gathered): Result {
  return { connections: sumConnections(gathered), ...reachOf(gathered) };
}

/**
 * Every worker's counts, sorted by worker id, and their totals. A user or a
 * channel on two workers counts in each, so the totals of `users` and
 * `channels` are sums over the workers, not distinct counts.
 */
export function info(gathered: Gathered): Result {
  const workers: WorkerInfo[] = [];
  for (const reply of gathered.replies) {
    const worker = toWorkerInfo(reply);
    if (worker) workers.push(worker);
  }
  workers.sort((a, b) => a.worker_id < b.worker_id ? -1 : a.worker_id > b.worker_id ? 1 : 0);
  const total = (field: "connections" | "users" | "channels") => workers.reduce((sum, w) => sum + w[field], 0);
  return {
    workers,
    connections: total("connections"),
    users: total("users"),
    channels: total("channels"),
    ...reachOf(gathered),
  };
}

function sumConnections(gathered: Gathered): number {
  let connections = 0;
  for (const reply of gathered.replies) connections += toUserCommandReply(reply)?.connections ?? 0;
  return connections;
}

/**
 * The channels of a `channels` query: each with `num_clients` summed over
 * the workers, the first `limit` by name, and `channels_truncated: true`
 * when more matched. Each worker lists its own first `limit` by name, so
 * every channel listed here has every worker's count.
 */
export function channelList(gathered: Gathered, limit: number): Result {
  const clients = new Map<string, number>();
  let truncated = false;
  for (const reply of gathered.replies) {
    const list = toChannelList(reply);
    if (!list) continue;
    if (list.truncated) truncated = true;
    for (const [channel, count] of list.channels) clients.set(channel, (clients.get(channel) ?? 0) + count);
  }
  const names = [...clients.keys()].sort();
  if (names.length > limit) truncated = true;
  // No prototype: "__proto__" is a channel name too.
  const channels: Result = Object.create(null);
  for (const name of names.slice(0, limit)) channels[name] = { num_clients: clients.get(name)! };
  const result: Result = { channels };
  if (truncated) result.channels_truncated = true;
  return { ...result, ...reachOf(gathered) };
}
