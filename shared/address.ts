/**
 * Push addressing: who a push goes to, and where on the bus that is. Today
 * everyone, or one connection named by the original's pair
 * `(to_worker_id, to_connection_id)`.
 *
 * A pusher worker subscribes to {@linkcode BROADCAST_SUBJECT} and to its own
 * {@linkcode workerSubject}; a publisher turns an address into a subject and
 * event data with {@linkcode routeOf}. Pure TypeScript: no `Deno.*` calls.
 *
 * @module
 */

import type { Json } from "./json.ts";

/** Who a push goes to. */
export type PushAddress =
  /** Every connection on every pusher: the original's `?content=`. */
  | { readonly kind: "everyone" }
  /** One connection: the original's `?to_worker_id=&to_connection_id=`. */
  | { readonly kind: "connection"; readonly workerId: string; readonly connectionId: number };

/** Subject every pusher worker subscribes to; its events go to every connection. */
export const BROADCAST_SUBJECT = "broadcast";

/**
 * A worker id: 16 lowercase hex characters (64 random bits), drawn anew each
 * time a pusher worker starts. Ids are never coordinated, never reused, and
 * collide with negligible probability, so an address `(workerId,
 * connectionId)` names one connection in the whole system, across machines
 * and restarts.
 */
export const WORKER_ID_PATTERN = /^[0-9a-f]{16}$/;

/**
 * A connection id within one worker: a decimal integer from 1, at most 15
 * digits, so that it stays below `Number.MAX_SAFE_INTEGER` in JSON.
 */
export const CONNECTION_ID_PATTERN = /^[1-9][0-9]{0,14}$/;

/** Draws a fresh worker id. */
export function newWorkerId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The subject a worker subscribes to for sends addressed to its connections. */
export function workerSubject(workerId: string): string {
  return `worker.${workerId}`;
}

/**
 * Data of a push event. On the broadcast subject: `{ content }`. On a
 * worker's subject: `{ to_connection_id, content }` (the original's field
 * names).
 */
export interface PushData {
  content: string;
  to_connection_id?: number;
}

/** Where on the bus a push goes: a subject and the event's data. */
export interface Route {
  readonly subject: string;
  readonly data: PushData;
}

/**
 * The subject and data that carry `content` to `address`.
 *
 * @example
 * ```ts
 * import { routeOf } from "./address.ts";
 *
 * const route = routeOf({ kind: "connection", workerId: "1f3a9c2e7b4d0a55", connectionId: 7 }, "hi");
 * // { subject: "worker.1f3a9c2e7b4d0a55", data: { to_connection_id: 7, content: "hi" } }
 * ```
 */
export function routeOf(address: PushAddress, content: string): Route {
  switch (address.kind) {
    case "everyone":
      return { subject: BROADCAST_SUBJECT, data: { content } };
    case "connection":
      return { subject: workerSubject(address.workerId), data: { to_connection_id: address.connectionId, content } };
  }
}

/**
 * Checks event data received by a pusher. Returns null when it does not have
 * the shape of {@linkcode PushData}: such events are logged and dropped.
 */
export function toPushData(data: Json): PushData | null {
  if (typeof data !== "object" || data === null || Array.isArray(data)) return null;
  if (typeof data.content !== "string") return null;
  const target = data.to_connection_id;
  if (target === undefined) return { content: data.content };
  if (typeof target !== "number" || !Number.isSafeInteger(target) || target < 1) return null;
  return { content: data.content, to_connection_id: target };
}
