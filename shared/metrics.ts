/**
 * Counters, gauges and histograms, rendered in the Prometheus text format.
 * A registry's state can be taken as a plain snapshot and snapshots merged,
 * so the pusher's workers can answer `/metrics` for all of them.
 *
 * @module
 */

/** Label values of one series, in the order of the metric's label names. */
type LabelValues = readonly string[];

interface MetricSpec {
  name: string;
  help: string;
  labels?: readonly string[];
}

/** A metric's state: series keyed by their joined label values. */
export interface MetricSnapshot {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  labels: string[];
  /** Counter and gauge values, or histogram bucket counts then sum then count. */
  series: Record<string, number[]>;
  buckets?: number[];
}

/** A registry's state: one entry per metric. */
export type RegistrySnapshot = MetricSnapshot[];

const SEPARATOR = "\u0000";

abstract class Metric {
  readonly name: string;
  readonly help: string;
  readonly labels: readonly string[];
  protected readonly series = new Map<string, number[]>();

  constructor(spec: MetricSpec) {
    this.name = spec.name;
    this.help = spec.help;
    this.labels = spec.labels ?? [];
  }

  abstract snapshot(): MetricSnapshot;

  protected values(labelValues: LabelValues, size: number): number[] {
    if (labelValues.length !== this.labels.length) {
      throw new RangeError(`Metric ${this.name} takes ${this.labels.length} label values, got ${labelValues.length}`);
    }
    // One label's value is its own key: no string to join on every count.
    const key = labelValues.length === 1 ? labelValues[0]! : labelValues.join(SEPARATOR);
    let values = this.series.get(key);
    if (!values) {
      values = new Array(size).fill(0);
      this.series.set(key, values);
    }
    return values;
  }

  protected copySeries(): Record<string, number[]> {
    return Object.fromEntries([...this.series].map(([key, values]) => [key, [...values]]));
  }
}

/**
 * A value that only goes up, counted here or read when collected. Without
 * labels, its one series is there from the start, at 0: a dashboard's rate
 * of it shows 0 before the first count, not "no data".
 */
export class Counter extends Metric {
  #collect: (() => number) | null = null;

  constructor(spec: MetricSpec) {
    super(spec);
    if (this.labels.length === 0) this.values([], 1);
  }

  /** Adds `by` (default 1) to the series of `labelValues`. */
  inc(by = 1, ...labelValues: string[]): void {
    this.values(labelValues, 1)[0]! += by;
  }

  /**
   * Reads the (label-less) total from `read` at each snapshot, for a count
   * kept elsewhere (a bus's reconnects, say); `read` must never go down.
   */
  collect(read: () => number): this {
    this.#collect = read;
    return this;
  }

  snapshot(): MetricSnapshot {
    if (this.#collect) this.values([], 1)[0] = this.#collect();
    return { name: this.name, help: this.help, type: "counter", labels: [...this.labels], series: this.copySeries() };
  }
}

/** A value that goes up and down, set directly or read when collected. */
export class Gauge extends Metric {
  #collect: (() => number) | null = null;

  /** Sets the series of `labelValues`. */
  set(value: number, ...labelValues: string[]): void {
    this.values(labelValues, 1)[0] = value;
  }

  /** Reads the (label-less) value from `read` at each snapshot. */
  collect(read: () => number): this {
    this.#collect = read;
    return this;
  }

  snapshot(): MetricSnapshot {
    if (this.#collect) this.set(this.#collect());
    return { name: this.name, help: this.help, type: "gauge", labels: [...this.labels], series: this.copySeries() };
  }
}

/** Counts observations into cumulative buckets; without labels, from 0, as a counter. */
export class Histogram extends Metric {
  readonly buckets: readonly number[];

  constructor(spec: MetricSpec & { buckets: readonly number[] }) {
    super(spec);
    this.buckets = [...spec.buckets].sort((a, b) => a - b);
    if (this.labels.length === 0) this.values([], this.buckets.length + 2);
  }

  /** Records one observation. */
  observe(value: number, ...labelValues: string[]): void {
    const values = this.values(labelValues, this.buckets.length + 2);
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) values[i]!++;
    values[this.buckets.length]! += value;
    values[this.buckets.length + 1]!++;
  }

  snapshot(): MetricSnapshot {
    return {
      name: this.name,
      help: this.help,
      type: "histogram",
      labels: [...this.labels],
      series: this.copySeries(),
      buckets: [...this.buckets],
    };
  }
}

/**
 * A set of metrics.
 *
 * @example
 * ```ts
 * import { Registry, renderPrometheus } from "./metrics.ts";
 *
 * const metrics = new Registry();
 * const requests = metrics.counter({ name: "publisher_requests_total", help: "Requests", labels: ["status"] });
 * requests.inc(1, "200");
 * console.log(renderPrometheus(metrics.snapshot()));
 * ```
 */
export class Registry {
  readonly #metrics: Metric[] = [];

  counter(spec: MetricSpec): Counter {
    return this.#add(new Counter(spec));
  }

  gauge(spec: MetricSpec): Gauge {
    return this.#add(new Gauge(spec));
  }

  histogram(spec: MetricSpec & { buckets: readonly number[] }): Histogram {
    return this.#add(new Histogram(spec));
  }

  /** The state of every metric. */
  snapshot(): RegistrySnapshot {
    return this.#metrics.map((metric) => metric.snapshot());
  }

  #add<T extends Metric>(metric: T): T {
    this.#metrics.push(metric);
    return metric;
  }
}

/** Adds snapshots together (counters, gauges and histogram buckets are summed). */
export function mergeSnapshots(snapshots: RegistrySnapshot[]): RegistrySnapshot {
  const merged = new Map<string, MetricSnapshot>();
  for (const snapshot of snapshots) {
    for (const metric of snapshot) {
      const into = merged.get(metric.name);
      if (!into) {
        merged.set(metric.name, structuredClone(metric));
        continue;
      }
      for (const [key, values] of Object.entries(metric.series)) {
        const target = into.series[key];
        if (!target) into.series[key] = [...values];
        else values.forEach((value, i) => (target[i]! += value));
      }
    }
  }
  return [...merged.values()];
}

/** Renders snapshots in the Prometheus text exposition format (0.0.4). */
export function renderPrometheus(snapshot: RegistrySnapshot): string {
  let out = "";
  for (const metric of snapshot) {
    out += `# HELP ${metric.name} ${metric.help}\n# TYPE ${metric.name} ${metric.type}\n`;
    for (const [key, values] of Object.entries(metric.series)) {
      const labelValues = metric.labels.length === 0 ? [] : key.split(SEPARATOR);
      const labels = metric.labels.map((label, i) => `${label}="${escapeLabel(labelValues[i] ?? "")}"`);
      if (metric.type !== "histogram") {
        out += `${metric.name}${braces(labels)} ${values[0]}\n`;
        continue;
      }
      const buckets = metric.buckets!;
      buckets.forEach((bound, i) => {
        out += `${metric.name}_bucket${braces([...labels, `le="${bound}"`])} ${values[i]}\n`;
      });
      const count = values[buckets.length + 1]!;
      out += `${metric.name}_bucket${braces([...labels, 'le="+Inf"'])} ${count}\n`;
      out += `${metric.name}_sum${braces(labels)} ${values[buckets.length]}\n`;
      out += `${metric.name}_count${braces(labels)} ${count}\n`;
    }
  }
  return out;
}

/** The Content-Type of {@linkcode renderPrometheus}'s output. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

function braces(labels: string[]): string {
  return labels.length === 0 ? "" : `{${labels.join(",")}}`;
}

function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}
