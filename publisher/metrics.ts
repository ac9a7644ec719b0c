/**
 * The publisher's Prometheus metrics: requests by status, server-API calls
 * by method and status, publishes by target, deliveries, publish latency,
 * and the state of the hub link.
 *
 * @module
 */

import type { Bus } from "../shared/bus.ts";
import { type Counter, type Histogram, Registry, type RegistrySnapshot, renderPrometheus } from "../shared/metrics.ts";

/** What the metrics and `/healthz` read of the bus link: whether it is up, and how often it came back. */
export type HubLink = Pick<Bus, "connected" | "reconnects">;

/** Where a publish went: every pusher, one connection, a channel's members, or a user's connections. */
export type PublishTargetKind = "broadcast" | "connection" | "channel" | "user";

/** The series of `publisher_publishes_total` that exist from the start. */
const PUBLISH_TARGETS: readonly PublishTargetKind[] = ["broadcast", "connection", "channel", "user"];

/** Buckets of `publisher_publish_duration_seconds`, in seconds. */
export const PUBLISH_DURATION_BUCKETS: readonly number[] = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
];

/** Options for {@linkcode PublisherMetrics}. */
export interface PublisherMetricsOptions {
  /** Registry the metrics are added to, for a caller that serves more metrics with them. @default {new Registry()} */
  registry?: Registry;
}

/**
 * The publisher's metrics, kept in a {@linkcode Registry}. The handler counts
 * requests and publishes; the bus link's gauges are read at each render.
 *
 * @example
 * ```ts
 * import { MemoryBroker } from "../shared/memory_bus.ts";
 * import { createPublishHandler } from "./handler.ts";
 * import { PublisherMetrics } from "./metrics.ts";
 *
 * const bus = new MemoryBroker().connect();
 * const metrics = new PublisherMetrics(bus);
 * Deno.serve({ port: 4237 }, createPublishHandler({ bus, metrics }));
 * // curl http://127.0.0.1:4237/metrics
 * ```
 */
export class PublisherMetrics {
  readonly #hub: HubLink;
  readonly #registry: Registry;
  readonly #requests: Counter;
  readonly #publishes: Counter;
  readonly #apiCalls: Counter;
  readonly #deliveries: Counter;
  readonly #duration: Histogram;

  constructor(hub: HubLink, options: PublisherMetricsOptions = {}) {
    this.#hub = hub;
    this.#registry = options.registry ?? new Registry();
    const registry = this.#registry;
    this.#requests = registry.counter({
      name: "publisher_requests_total",
      help: "HTTP requests answered, by status code",
      labels: ["status"],
    });
    this.#publishes = registry.counter({
      name: "publisher_publishes_total",
      help: "Publishes the hub acknowledged and answered 200, by target",
      labels: ["target"],
    });
    this.#apiCalls = registry.counter({
      name: "publisher_api_calls_total",
      help: "Server-API calls (POST /api/<method>, and each command of a batch), by method and status code",
      labels: ["method", "code"],
    });
    this.#deliveries = registry.counter({
      name: "publisher_deliveries_total",
      help: "Pusher workers reached by successful publishes (the sum of X-Pushers-Reached)",
    });
    this.#duration = registry.histogram({
      name: "publisher_publish_duration_seconds",
      help: "Time from the start of a successful publish request to the hub's acknowledgement",
      buckets: PUBLISH_DURATION_BUCKETS,
    });
    registry.gauge({ name: "publisher_hub_connected", help: "1 while the link to the hub is up, else 0" })
      .collect(() => this.#hub.connected ? 1 : 0);
    // The bus counts reconnects itself.
    registry.counter({
      name: "publisher_hub_reconnects_total",
      help: "Times the link to the hub came back after it was up once",
    }).collect(() => this.#hub.reconnects);
    // Series that exist from the start, so that rates work from the first scrape
    // (the registry starts those without labels itself).
    for (const target of PUBLISH_TARGETS) this.#publishes.inc(0, target);
  }

  /** Counts one answered request. */
  countRequest(status: number): void {
    this.#requests.inc(1, String(status));
  }

  /**
   * Counts one server-API call of `method` answered with `code` (200, or
   * its error's code), `calls` times; a batch counts once as `batch` and
   * once per command.
   */
  countApiCall(method: string, code: number, calls = 1): void {
    this.#apiCalls.inc(calls, method, String(code));
  }

  /**
   * Counts one successful publish that reached `reached` pusher workers in
   * `seconds`; a null `reached` (a bus that cannot count) adds no deliveries.
   */
  countPublish(target: PublishTargetKind, reached: number | null, seconds: number): void {
    this.#publishes.inc(1, target);
    if (reached !== null) this.#deliveries.inc(reached);
    this.#duration.observe(seconds);
  }

  /** Every metric of the registry in the Prometheus text format. */
  render(): string {
    return renderPrometheus(this.snapshot());
  }

  /** The state of every metric, as `/metrics` would render it now: for the dashboard, which reads the numbers. */
  snapshot(): RegistrySnapshot {
    return this.#registry.snapshot();
  }
}
