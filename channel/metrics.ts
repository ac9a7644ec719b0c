/**
 * What a running hub counts: the counters bumped on the hot path, the stats
 * object a caller reads, and their Prometheus view (`channel_*` metrics).
 *
 * @module
 */

import { Registry, type RegistrySnapshot } from "../shared/metrics.ts";

/** Why the hub let a connection go, as counted in `channel_disconnects_total{reason}`. */
export type DisconnectReason =
  /** Over `maxPendingBytes`, or a write blocked past `writeTimeout`. */
  | "slow_consumer"
  /** No complete frame for `pingInterval` × `idlePings` (or no `hello` within it). */
  | "idle"
  /** A bad frame or message, `hello` missing or sent twice, an unknown protocol version. */
  | "protocol_error"
  /** No token or a wrong one. */
  | "unauthorized"
  /** Refused at `maxConnections`. */
  | "full"
  /** Subscribed or watched past `maxSubjectsPerPeer`. */
  | "limit"
  /** The peer went away: end of stream, or a failed read or write. */
  | "closed"
  /** The hub shut down. */
  | "shutdown";

/** Every {@linkcode DisconnectReason}, in the order metrics list them. */
export const DISCONNECT_REASONS: readonly DisconnectReason[] = [
  "slow_consumer",
  "idle",
  "protocol_error",
  "unauthorized",
  "full",
  "limit",
  "closed",
  "shutdown",
];

/** Counters and gauges of a running hub, from `HubServer.stats()`. */
export interface HubServerStats {
  /** Connections open now, closing ones included. */
  connections: number;
  /** `publish` and `publishLoop` messages handled. */
  publishes: number;
  /** Event frames queued to subscribers (a publish reaching 3 subscribers counts 3). */
  deliveries: number;
  /** `enqueue` messages handled, refused ones included. */
  enqueues: number;
  /** `enqueue` messages refused: a queue or all queues were full, or the message too large once encoded. */
  enqueuesRefused: number;
  /** Connections the hub let go, by reason; each connection counts once. */
  disconnects: Record<DisconnectReason, number>;
  /** Subjects with at least one subscriber (the metric keeps its name, `channel_channels`). */
  subjects: number;
  /** Queues that exist (watched, or holding messages). */
  queues: number;
  /** Messages waiting in queues. */
  queuedMessages: number;
  /** Bytes of the messages waiting in queues. */
  queuedBytes: number;
  /** Publishes waiting for their subscribers' writes before they are acked. */
  publishesWaiting: number;
}

/**
 * The counters, bumped on the hot path: plain number fields, so counting
 * allocates nothing.
 */
export class Counters {
  /** `publish` and `publishLoop` messages handled. */
  publishes = 0;
  /** Event frames queued to subscribers. */
  deliveries = 0;
  /** `enqueue` messages handled. */
  enqueues = 0;
  /** `enqueue` messages refused. */
  enqueuesRefused = 0;
  /** Connections let go, by reason. */
  readonly disconnects: Record<DisconnectReason, number> = {
    slow_consumer: 0,
    idle: 0,
    protocol_error: 0,
    unauthorized: 0,
    full: 0,
    limit: 0,
    closed: 0,
    shutdown: 0,
  };
}

/**
 * Builds the Prometheus view of `stats`; called per scrape, never on the hot
 * path. The metric names are what operators' dashboards read: they stay.
 */
export function metricsOf(stats: HubServerStats): RegistrySnapshot {
  const registry = new Registry();
  const gauge = (name: string, help: string, value: number) => registry.gauge({ name, help }).set(value);
  const counter = (name: string, help: string, value: number) => registry.counter({ name, help }).inc(value);
  gauge("channel_connections", "Connections open now, closing ones included", stats.connections);
  counter("channel_publishes_total", "publish and publishLoop messages handled", stats.publishes);
  counter("channel_deliveries_total", "Event frames queued to subscribers", stats.deliveries);
  counter("channel_enqueues_total", "enqueue messages handled, refused ones included", stats.enqueues);
  counter(
    "channel_enqueues_refused_total",
    "enqueue messages refused by full queues or as too large",
    stats.enqueuesRefused,
  );
  const disconnects = registry.counter({
    name: "channel_disconnects_total",
    help: "Connections the hub let go, by reason",
    labels: ["reason"],
  });
  for (const reason of DISCONNECT_REASONS) disconnects.inc(stats.disconnects[reason], reason);
  gauge("channel_channels", "Subjects with at least one subscriber", stats.subjects);
  gauge("channel_queues", "Queues that exist", stats.queues);
  gauge("channel_queued_messages", "Messages waiting in queues", stats.queuedMessages);
  gauge(
    "channel_queued_bytes",
    "Bytes queues hold: their messages' frames and 640 per queue an enqueue created",
    stats.queuedBytes,
  );
  gauge(
    "channel_publishes_waiting",
    "Publishes waiting for their subscribers' writes to be acked",
    stats.publishesWaiting,
  );
  return registry.snapshot();
}
