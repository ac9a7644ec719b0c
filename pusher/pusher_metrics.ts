/**
 * A pusher worker's metrics, and `/healthz`'s verdict from the metrics of
 * every worker of the pusher.
 *
 * @module
 */

import type { Counter, Registry, RegistrySnapshot } from "../shared/metrics.ts";
import type { BusName } from "../shared/bus_address.ts";
import { CloseCode } from "./websocket.ts";
import {
  CONNECTION_LIMIT,
  ErrorCode,
  INSUFFICIENT_STATE,
  TOKEN_EXPIRED,
  TOO_MANY_BAD_MESSAGES,
} from "./client_protocol.ts";
import type { Refusal } from "./server.ts";
import type { Refused } from "./admission.ts";

/**
 * The kinds of `pusher_deliveries_total`, whose series exist from the start:
 * a broadcast, a targeted send, a channel's or a user's publish.
 */
const DELIVERY_KINDS = ["broadcast", "targeted", "channel", "user"] as const;

/** The counters a pusher worker moves. */
export interface PusherCounters {
  accepted: Counter;
  rejected: Counter;
  disconnects: Counter;
  delivered: Counter;
  dropped: Counter;
  /** Error frames sent to clients for their commands, by error code. */
  clientErrors: Counter;
}

/** What the gauges read, when a scrape asks. */
export interface PusherGauges {
  connections(): number;
  busConnected(): boolean;
  busReconnects(): number;
  /** Distinct channels with at least one member in the worker. */
  channels(): number;
  /** Distinct users with at least one connection to the worker. */
  users(): number;
}

/** Registers a worker's metrics in `registry` and returns its counters. */
export function registerPusherMetrics(registry: Registry, gauges: PusherGauges): PusherCounters {
  const m = registry;
  m.gauge({ name: "pusher_workers", help: "Pusher workers answering" }).set(1);
  m.gauge({ name: "pusher_connections", help: "Open WebSocket connections" }).collect(gauges.connections);
  m.gauge({ name: "pusher_hub_connected", help: "Workers whose hub link is up" })
    .collect(() => gauges.busConnected() ? 1 : 0);
  m.counter({ name: "pusher_hub_reconnects_total", help: "Times a hub link came back" }).collect(gauges.busReconnects);
  // Summed over workers: a channel (a user) with members in two workers counts twice.
  m.gauge({ name: "pusher_channels", help: "Channels with members, summed over workers" }).collect(gauges.channels);
  m.gauge({ name: "pusher_users", help: "Users with connections, summed over workers" }).collect(gauges.users);
  const counters = {
    accepted: m.counter({ name: "pusher_connections_total", help: "WebSocket connections accepted" }),
    rejected: m.counter({ name: "pusher_rejected_total", help: "Connections refused, by reason", labels: ["reason"] }),
    disconnects: m.counter({ name: "pusher_disconnects_total", help: "Connections closed", labels: ["reason"] }),
    delivered: m.counter({ name: "pusher_deliveries_total", help: "Messages handed to sockets", labels: ["kind"] }),
    dropped: m.counter({ name: "pusher_drops_total", help: "Hub events not delivered", labels: ["reason"] }),
    clientErrors: m.counter({
      name: "pusher_client_errors_total",
      help: "Client commands answered with an error, by code",
      labels: ["code"],
    }),
  };
  // Series that exist from the start, so that rates work from the first scrape
  // (the registry starts pusher_connections_total, without labels, itself).
  for (const kind of DELIVERY_KINDS) counters.delivered.inc(0, kind);
  for (const reason of DISCONNECT_REASONS) counters.disconnects.inc(0, reason);
  for (const reason of DROP_REASONS) counters.dropped.inc(0, reason);
  for (const reason of REJECT_REASONS) counters.rejected.inc(0, reason);
  for (const code of new Set(Object.values(ErrorCode))) counters.clientErrors.inc(0, String(code));
  return counters;
}

/**
 * A worker's counters that the publisher's dashboard shows, from its
 * registry: messages handed to sockets (`pusher_deliveries_total`, every
 * kind) and slow-consumer closes (`pusher_disconnects_total{reason="slow"}`).
 */
export function workerCounters(snapshot: RegistrySnapshot): { deliveries: number; slow_closes: number } {
  let deliveries = 0;
  let slowCloses = 0;
  for (const metric of snapshot) {
    if (metric.name === "pusher_deliveries_total") {
      for (const [value] of Object.values(metric.series)) deliveries += value!;
    } else if (metric.name === "pusher_disconnects_total") {
      slowCloses += metric.series["slow"]?.[0] ?? 0;
    }
  }
  return { deliveries, slow_closes: slowCloses };
}

/** `/healthz`'s answer: every worker answering, every hub link up. */
export interface Health {
  readonly ok: boolean;
  /** `ok`, or why not. */
  readonly reason: string;
}

/** Judges the merged metrics of every worker of a pusher; `bus` names its bus in the reason. */
export function healthOf(snapshot: RegistrySnapshot, bus: BusName = "hub"): Health {
  const total = (name: string) =>
    Object.values(snapshot.find((m) => m.name === name)?.series ?? {}).reduce((sum, v) => sum + v[0]!, 0);
  const expected = total("pusher_workers_expected") || 1;
  const answering = total("pusher_workers");
  const linked = total("pusher_hub_connected");
  if (answering === expected && linked === expected) return { ok: true, reason: "ok" };
  if (answering < expected) {
    return { ok: false, reason: `${expected - answering} of ${expected} workers not answering` };
  }
  return { ok: false, reason: `${bus} link down in ${expected - linked} of ${expected} workers` };
}

/**
 * Why a connection closed when the client closed it, for
 * `pusher_disconnects_total`: whatever its code, which is the client's to
 * choose and says nothing of the server's reasons.
 */
export const CLIENT_CLOSED = "client_closed";

/** Why the server closed a connection, by the code it closed with; another code's reason is `closed`. */
const REASON_OF_CODE: ReadonlyMap<number, string> = new Map([
  [CloseCode.slow, "slow"],
  [CloseCode.abnormal, "dropped"],
  [CloseCode.policyViolation, "policy"],
  [CloseCode.protocolError, "protocol_error"],
  [CloseCode.invalidData, "protocol_error"],
  [CloseCode.messageTooBig, "protocol_error"],
  [CloseCode.goingAway, "going_away"],
  [TOO_MANY_BAD_MESSAGES, "bad_messages"],
  [TOKEN_EXPIRED, "expired"],
  [CONNECTION_LIMIT, "user_limit"],
  [INSUFFICIENT_STATE, "insufficient_state"],
]);

/**
 * Why the server closed a connection, from the code it closed with, for
 * `pusher_disconnects_total`; 1006 (`dropped`) when it was lost.
 */
export function closeReason(code: number): string {
  return REASON_OF_CODE.get(code) ?? "closed";
}

/** Every reason of `pusher_disconnects_total`, whose series exist from the start. */
export const DISCONNECT_REASONS: readonly string[] = [
  ...new Set([CLIENT_CLOSED, ...REASON_OF_CODE.values(), "closed"]),
];

/**
 * Every reason of `pusher_rejected_total`: the pusher's own refusals (its
 * origins, a token), and those of the server before the handshake reaches it.
 */
const REJECT_REASONS = [
  "origin",
  "token",
  "too_many_connections",
  "too_many_handshakes",
  "head_timeout",
  "bad_request",
  "shutting_down",
] as const satisfies readonly (Refused["reason"] | Refusal)[];
// A reason added to either type and not here fails to compile.
const _everyRejectReason: [Exclude<Refused["reason"] | Refusal, typeof REJECT_REASONS[number]>] extends [never] ? true
  : never = true;

/** Every reason of `pusher_drops_total`: an event of the wrong shape, a targeted send to a connection not here. */
const DROP_REASONS = ["bad_shape", "no_connection"] as const;
