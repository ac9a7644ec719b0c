/**
 * `deno task bench --buses`: the scenarios' figures on each bus beside the
 * hub's from the same run, their ratios (bus / hub), the JSON's `buses` and
 * the table printed after the main one.
 *
 * Pure TypeScript: no `Deno.*` calls.
 *
 * @module
 */

import type { BusKind } from "./_buses.ts";
import { type Measurement, metricValue } from "./report.ts";
import type { MetricKey, Scenario } from "./scenarios.ts";

/** One run of a scenario: the hub's measurement and each bus's, one after the other. */
export interface BusRun {
  hub: Measurement;
  buses: Partial<Record<BusKind, Measurement>>;
}

/** One bus in one scenario: its run and the hub's from the same run, and their ratios. */
export interface BusFigures {
  hub: Measurement;
  bus: Measurement;
  /** bus / hub per metric shown; null where either is missing or the hub's is 0. */
  ratios: Partial<Record<MetricKey | "busServerCpuShare", number | null>>;
  /** Which of the runs this is (0 with one run): the median by {@linkcode rankingMetric}. */
  run: number;
}

/** One scenario on every bus. */
export interface BusScenarioReport {
  id: string;
  title: string;
  mode: Scenario["mode"];
  buses: Partial<Record<BusKind, BusFigures>>;
  /** With `--repeat`: every run, in order. */
  runs?: BusRun[];
}

/** The JSON's `buses`: which ran, and each scenario on each. */
export interface BusesReport {
  /** Besides the hub, in `--buses` order. */
  buses: BusKind[];
  scenarios: BusScenarioReport[];
}

/** The row the table shows, and how it is read. */
interface Row {
  key: MetricKey | "busServerCpuShare";
  label: string;
  format: (value: number) => string;
  modes: readonly Scenario["mode"][];
  /** A count that must be 0: no ratio, and the worst run's under `--repeat`. */
  count?: boolean;
  /** A bus / hub ratio means something. @default {true} */
  ratio?: boolean;
}

const PUBLISHING: readonly Scenario["mode"][] = ["broadcast", "targeted", "channels", "churn"];

const ROWS: readonly Row[] = [
  { key: "deliveriesPerSec", label: "deliveries/s", format: count, modes: [...PUBLISHING, "recovery"] },
  { key: "publishesPerSec", label: "publish requests/s", format: count, modes: PUBLISHING },
  { key: "commandsPerSec", label: "commands/s (subscribe+unsubscribe)", format: count, modes: ["churn"] },
  { key: "commandLatencyP99Ms", label: "command reply p99 (ms)", format: milliseconds, modes: ["churn"] },
  { key: "latencyP50Ms", label: "latency p50 (ms)", format: milliseconds, modes: PUBLISHING },
  { key: "latencyP99Ms", label: "latency p99 (ms)", format: milliseconds, modes: PUBLISHING },
  { key: "recoveryMs", label: "time to full recovery (ms)", format: milliseconds, modes: ["recovery"] },
  { key: "cpuUsPerDelivery", label: "server CPU µs/delivery", format: (v) => v.toFixed(2), modes: PUBLISHING },
  {
    key: "busServerCpuShare",
    label: "of which the bus server (hub, nats, redis)",
    format: (v) => `${Math.round(v * 100)}%`,
    modes: PUBLISHING,
    // A share of another total: where the time goes, not more or less of it.
    ratio: false,
  },
  {
    key: "rssKiBPerConnection",
    label: "RSS KiB/connection",
    format: (v) => v.toFixed(1),
    modes: ["idle"],
  },
  { key: "lost", label: "messages lost", format: count, modes: [...PUBLISHING, "recovery"], count: true },
  { key: "failedPublishes", label: "failed publishes", format: count, modes: [...PUBLISHING, "recovery"], count: true },
  { key: "failedCommands", label: "failed commands", format: count, modes: ["channels", "churn"], count: true },
  { key: "failedCommands", label: "subscribes not recovered", format: count, modes: ["recovery"], count: true },
];

const COUNT_KEYS = ["lost", "failedPublishes", "failedCommands"] as const satisfies readonly MetricKey[];

/** The processes that carry the messages: the hub, or the bus's server. */
const BUS_SERVERS = ["hub", "nats", "redis"];

/** A row's value in a measurement; null when it does not apply. */
export function busMetricValue(measurement: Measurement, key: Row["key"]): number | null {
  if (key !== "busServerCpuShare") return metricValue(measurement, key);
  const byProcess = Object.entries(measurement.serviceCpuMsByProcess ?? {});
  const server = byProcess.find(([name]) => BUS_SERVERS.includes(name));
  return server === undefined || measurement.serviceCpuMs === 0 ? null : server[1] / measurement.serviceCpuMs;
}

/**
 * The metric that picks the median run of a bus under `--repeat`, and
 * whether higher is better: what the scenario is about (deliveries/s for
 * fan-out, publish requests/s for saturating targeted sends, p99 for the
 * fixed-rate ones, commands/s for churn, time to recover, memory).
 */
export function rankingMetric(scenario: Pick<Scenario, "mode" | "rate">): { key: MetricKey; higher: boolean } {
  switch (scenario.mode) {
    case "idle":
      return { key: "rssKiBPerConnection", higher: false };
    case "recovery":
      return { key: "recoveryMs", higher: false };
    case "churn":
      return { key: "commandsPerSec", higher: true };
    case "targeted":
      return scenario.rate === null ? { key: "publishesPerSec", higher: true } : { key: "latencyP99Ms", higher: false };
    default:
      return scenario.rate === null
        ? { key: "deliveriesPerSec", higher: true }
        : { key: "latencyP99Ms", higher: false };
  }
}

/**
 * One scenario's runs on the buses, each bus reduced to its median run by
 * its ratio to the hub in that run ({@linkcode rankingMetric}; the worse of
 * the two middle ones when there are an even number). Ratios stay within
 * one run; losses and failures are the worst of any run.
 *
 * @throws {RangeError} without runs.
 */
export function busScenarioReport(
  scenario: Pick<Scenario, "id" | "title" | "mode" | "rate">,
  runs: readonly BusRun[],
): BusScenarioReport {
  if (runs.length === 0) throw new RangeError("busScenarioReport needs at least one run");
  const { key, higher } = rankingMetric(scenario);
  const buses: Partial<Record<BusKind, BusFigures>> = {};
  for (const kind of Object.keys(runs[0]!.buses) as BusKind[]) {
    const ranked = runs.map((run, index) => ({ run, index })).filter(({ run }) => run.buses[kind] !== undefined)
      .map(({ run, index }) => ({ index, ratio: ratio(run.buses[kind]!, run.hub, key) }))
      // Best first; a missing ratio ranks last.
      .sort((a, b) => rank(a.ratio, higher) - rank(b.ratio, higher));
    const median = ranked[Math.floor(ranked.length / 2)]!.index;
    const worst = (target: (run: BusRun) => Measurement | undefined, count: typeof COUNT_KEYS[number]) =>
      Math.max(...runs.map((run) => target(run)?.[count] ?? 0));
    const withWorst = (target: (run: BusRun) => Measurement | undefined): Measurement => ({
      ...target(runs[median]!)!,
      lost: worst(target, "lost"),
      failedPublishes: worst(target, "failedPublishes"),
      failedCommands: worst(target, "failedCommands"),
    });
    const hub = withWorst((run) => run.hub);
    const bus = withWorst((run) => run.buses[kind]);
    const ratios: BusFigures["ratios"] = {};
    for (const row of ROWS) {
      if (!row.count && row.ratio !== false && row.modes.includes(scenario.mode)) {
        ratios[row.key] = ratio(bus, hub, row.key);
      }
    }
    buses[kind] = { hub, bus, ratios, run: median };
  }
  return {
    id: scenario.id,
    title: scenario.title,
    mode: scenario.mode,
    buses,
    ...(runs.length > 1 ? { runs: [...runs] } : {}),
  };
}

function ratio(bus: Measurement, hub: Measurement, key: Row["key"]): number | null {
  const ours = busMetricValue(bus, key);
  const theirs = busMetricValue(hub, key);
  return ours === null || theirs === null || theirs === 0 ? null : ours / theirs;
}

function rank(value: number | null, higher: boolean): number {
  if (value === null) return Infinity;
  return higher ? -value : value;
}

/**
 * The buses' table: per scenario, the hub's figure, then each bus's and
 * its ratio to the hub. One hub column when every bus's figures come from
 * the same run (always with one run); otherwise each bus has its own.
 */
export function formatBusTable(report: BusesReport): string {
  const shared = report.scenarios.every((scenario) => {
    const runs = report.buses.map((kind) => scenario.buses[kind]?.run);
    return runs.every((run) => run === runs[0]);
  });
  const header = [
    "",
    ...(shared ? ["hub"] : []),
    ...report.buses.flatMap((kind) => [...(shared ? [] : ["hub"]), kind, "÷hub"]),
  ];
  const rows: (string[] | string)[] = [];
  for (const scenario of report.scenarios) {
    rows.push(`(${scenario.id}) ${scenario.title}`);
    for (const row of ROWS) {
      if (!row.modes.includes(scenario.mode)) continue;
      const show = (m: Measurement | undefined) => {
        const value = m === undefined ? null : busMetricValue(m, row.key);
        return value === null ? "-" : row.format(value);
      };
      const times = (figures: BusFigures | undefined) => {
        const value = figures?.ratios[row.key];
        return row.count || row.ratio === false || value === undefined || value === null ? "" : `${value.toFixed(2)}x`;
      };
      const first = report.buses.map((kind) => scenario.buses[kind]).find(Boolean);
      rows.push([
        `  ${row.label}`,
        ...(shared ? [show(first?.hub)] : []),
        ...report.buses.flatMap((kind) => {
          const figures = scenario.buses[kind];
          return [...(shared ? [] : [show(figures?.hub)]), show(figures?.bus), times(figures)];
        }),
      ]);
    }
  }
  const table = [header, ...rows.filter((row): row is string[] => typeof row !== "string")];
  const widths = header.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  const line = (row: string[]) =>
    row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ").trimEnd();
  const repeated = report.scenarios.some((scenario) => scenario.runs !== undefined);
  return [
    `Buses: the same scenarios with pusher and publisher on ${report.buses.join(", ")} instead of the hub; ` +
    "÷hub = bus / hub, measured in the same run.",
    "",
    line(header),
    ...rows.map((row) => (typeof row === "string" ? row : line(row))),
    "",
    "Server CPU counts the bus server with the pusher and the publisher (nats-server or redis-server in place of " +
    "the hub); one nats-server node with JetStream, one redis-server without persistence, both on loopback.",
    ...(repeated
      ? [
        "Each bus shows its median run by its ratio to the hub in that run (deliveries/s, publish requests/s for " +
        "saturating targeted sends, p99 for the fixed-rate ones); losses are the worst run's.",
      ]
      : []),
  ].join("\n");
}

function count(value: number): string {
  return Math.round(value).toLocaleString("en-US");
}

function milliseconds(value: number): string {
  return value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0);
}
