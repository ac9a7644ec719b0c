/**
 * The soak's results: the checks that make it PASS or FAIL, the JSON written
 * to `bench/results/` and the table printed.
 *
 * Pure TypeScript: no `Deno.*` calls.
 *
 * @module
 */

import type { Machine } from "./_proc.ts";
import { formatMachine } from "./report.ts";
import type { SoakResult } from "./soak_load.ts";

/** How much a service's RSS may grow from the warm-up sample to the end sample: 10%. */
export const RSS_GROWTH_LIMIT = 0.1;

/** The shape of one soak. */
export interface SoakConfig {
  /** Clients kept connected. */
  clients: number;
  /** Clients replaced per second. */
  churnPerSec: number;
  broadcastsPerSec: number;
  targetedPerSec: number;
  /** Seconds the load runs. */
  durationS: number;
  /** Seconds into the load when the warm-up RSS is sampled. */
  warmupS: number;
  /** Seconds between the last check and the end RSS sample. */
  settleS: number;
}

/** One RSS sample, taken once a second while the load runs and drains. */
export interface RssSample {
  /** Seconds since the load started. */
  t: number;
  /** Clients connected (greeted, not leaving) at the generator's last tick. */
  clients: number;
  /** VmRSS in KiB, one per service, in the order of {@linkcode SoakReport.rss}'s `processes`. */
  kib: number[];
}

/** What a service's RSS did, in KiB. */
export interface ProcessRss {
  name: string;
  /** Before any client connected. */
  idleKiB: number;
  /** Once the first clients were greeted, before the load. */
  connectedKiB: number;
  /** The sample `warmupS` seconds into the load. */
  warmUpKiB: number | null;
  /** The last sample while the load ran. */
  lastLoadedKiB: number | null;
  /** The highest sample, load and drain. */
  peakKiB: number | null;
  /** `settleS` after the checks, the same number of clients still connected. */
  endKiB: number;
  /** end / warm-up. */
  ratio: number | null;
  /** Least-squares slope of the samples from the warm-up to the end of the load, in KiB per minute. */
  trendKiBPerMin: number | null;
  /** end ≤ warm-up × (1 + {@linkcode RSS_GROWTH_LIMIT}). */
  pass: boolean;
}

/** One criterion of the verdict. */
export interface SoakCheck {
  name: string;
  value: number | null;
  op: "=" | ">" | "≤";
  bound: number;
  pass: boolean;
}

/** The JSON file a soak writes. */
export interface SoakReport {
  startedAt: string;
  finishedAt: string;
  machine: Machine;
  quick: boolean;
  config: SoakConfig;
  load: Omit<SoakResult, "type">;
  rss: { processes: ProcessRss[]; samples: RssSample[] };
  checks: SoakCheck[];
  /** Every check passed. */
  pass: boolean;
}

/** What {@linkcode soakReport} is built from. */
export interface SoakMeasurements {
  startedAt: string;
  finishedAt: string;
  machine: Machine;
  quick: boolean;
  config: SoakConfig;
  load: SoakResult;
  /** Service names, in the order of every `kib` array. */
  names: string[];
  idleKiB: number[];
  connectedKiB: number[];
  samples: RssSample[];
  endKiB: number[];
}

/** Puts a soak's measurements together: RSS per service, the checks, the verdict. */
export function soakReport(measured: SoakMeasurements): SoakReport {
  const { config, samples } = measured;
  // Samples fall about a second apart from the start of the load; allow for timer slack.
  const warmUp = samples.find((sample) => sample.t >= config.warmupS - 0.5) ?? null;
  const loaded = samples.filter((sample) => sample.t <= config.durationS + 0.5);
  const lastLoaded = loaded.at(-1) ?? null;
  const trendSamples = warmUp ? loaded.filter((sample) => sample.t >= warmUp.t) : [];
  const processes = measured.names.map((name, i): ProcessRss => {
    const warmUpKiB = warmUp?.kib[i] ?? null;
    const endKiB = measured.endKiB[i]!;
    const ratio = warmUpKiB ? endKiB / warmUpKiB : null;
    return {
      name,
      idleKiB: measured.idleKiB[i]!,
      connectedKiB: measured.connectedKiB[i]!,
      warmUpKiB,
      lastLoadedKiB: lastLoaded?.kib[i] ?? null,
      peakKiB: samples.length > 0 ? Math.max(...samples.map((sample) => sample.kib[i]!)) : null,
      endKiB,
      ratio: ratio === null ? null : round(ratio, 4),
      trendKiBPerMin: slopePerMinute(trendSamples.map((sample) => [sample.t, sample.kib[i]!])),
      pass: ratio !== null && ratio <= 1 + RSS_GROWTH_LIMIT,
    };
  });
  const { type: _, ...load } = measured.load;
  const checks = soakChecks(load, processes);
  return {
    startedAt: measured.startedAt,
    finishedAt: measured.finishedAt,
    machine: measured.machine,
    quick: measured.quick,
    config,
    load,
    rss: { processes, samples },
    checks,
    pass: checks.every((check) => check.pass),
  };
}

/**
 * The verdict's criteria: nothing lost, duplicated or misdirected, every
 * publish answered `200`, no client dropped or refused by the server, some
 * deliveries actually checked, and each service's RSS at the end within
 * {@linkcode RSS_GROWTH_LIMIT} of the warm-up sample.
 */
export function soakChecks(load: Omit<SoakResult, "type">, processes: readonly ProcessRss[]): SoakCheck[] {
  const zero = (name: string, value: number): SoakCheck => ({ name, value, op: "=", bound: 0, pass: value === 0 });
  const checked = load.checkedBroadcastDeliveries + load.checkedTargetedDeliveries;
  const closes = Object.values(load.unexpectedCloses).reduce((sum, n) => sum + n, 0);
  return [
    zero("failed publishes", load.failedPublishes),
    { name: "deliveries checked", value: checked, op: ">", bound: 0, pass: checked > 0 },
    zero("lost", load.lost),
    zero("duplicates", load.duplicates),
    zero("misdirected", load.misdirected),
    zero("clients closed by the server", closes),
    zero("failed connections", load.connectFailures),
    ...processes.map((process): SoakCheck => ({
      name: `RSS ${process.name} end/warm-up`,
      value: process.ratio,
      op: "≤",
      bound: 1 + RSS_GROWTH_LIMIT,
      pass: process.pass,
    })),
  ];
}

/** The table: the run's shape, delivery counts and checks, RSS per service, the verdict. */
export function formatSoakTable(report: SoakReport): string {
  const { config, load } = report;
  const check = (name: string) => report.checks.find((c) => c.name === name)!;
  const verdict = (c: SoakCheck) => [`${c.op} ${c.bound}`, c.pass ? "PASS" : "FAIL"];
  const closes = Object.entries(load.unexpectedCloses).map(([reason, n]) => `${n}× ${reason}`).join(", ");
  const latency = load.latencyUs
    ? [load.latencyUs.p50, load.latencyUs.p99, load.latencyUs.max].map((us) => milliseconds(us / 1000)).join(" / ")
    : "-";
  const lost = load.lost === 0
    ? "0"
    : `${count(load.lost)} (${count(load.lostBroadcast)} broadcast + ${count(load.lostTargeted)} targeted)`;
  const delivery: string[][] = [
    ["delivery", "value", "target", "result"],
    ["  clients at the end (min-max during the load)", `${load.clients} (${load.minClients}-${load.maxClients})`],
    ["  clients joined / left during the load", `${count(load.joined)} / ${count(load.left)}`],
    ["  broadcasts answered 200 / scheduled", `${count(load.broadcasts.ok)} / ${count(load.broadcasts.scheduled)}`],
    ["  targeted sends answered 200 / scheduled", `${count(load.targeted.ok)} / ${count(load.targeted.scheduled)}`],
    ["  failed publishes", count(load.failedPublishes), ...verdict(check("failed publishes"))],
    ["  clients checked", count(load.checkedClients)],
    [
      "  deliveries checked (broadcast + targeted)",
      `${count(load.checkedBroadcastDeliveries)} + ${count(load.checkedTargetedDeliveries)}`,
      ...verdict(check("deliveries checked")),
    ],
    ["  lost", lost, ...verdict(check("lost"))],
    ["  duplicates", count(load.duplicates), ...verdict(check("duplicates"))],
    ["  misdirected", count(load.misdirected), ...verdict(check("misdirected"))],
    [
      "  clients closed by the server",
      closes || "0",
      ...verdict(check("clients closed by the server")),
    ],
    ["  failed connections", count(load.connectFailures), ...verdict(check("failed connections"))],
    ["  deliveries (all, owed or not)", count(load.deliveries)],
    ["  latency p50 / p99 / max (ms)", latency],
  ];
  const rss: string[][] = [
    [
      "RSS (MiB)",
      "idle",
      "connected",
      "warm-up",
      "last loaded",
      "peak",
      "end",
      "end/warm-up",
      "trend/min",
      "target",
      "result",
    ],
    ...report.rss.processes.map((p) => [
      `  ${p.name}`,
      mib(p.idleKiB),
      mib(p.connectedKiB),
      mib(p.warmUpKiB),
      mib(p.lastLoadedKiB),
      mib(p.peakKiB),
      mib(p.endKiB),
      p.ratio === null ? "-" : p.ratio.toFixed(3),
      p.trendKiBPerMin === null ? "-" : `${p.trendKiBPerMin >= 0 ? "+" : ""}${mib(p.trendKiBPerMin)}`,
      `≤ ${(1 + RSS_GROWTH_LIMIT).toFixed(2)}`,
      p.pass ? "PASS" : "FAIL",
    ]),
  ];
  const failed = report.checks.filter((c) => !c.pass).map((c) => c.name);
  return [
    formatMachine(report.machine),
    `soak: ${describeConfig(config)}`,
    "",
    ...columns(delivery),
    "",
    ...columns(rss),
    "",
    `warm-up: the sample ${config.warmupS} s into the load; end: ${config.settleS} s after every delivery was ` +
    `checked, the load stopped and ${load.clients} clients still connected.`,
    report.pass ? "soak: PASS" : `soak: FAIL (${failed.join("; ")})`,
  ].join("\n");
}

/** One line for the run's shape. */
export function describeConfig(config: SoakConfig): string {
  return `${
    count(config.clients)
  } clients, ${config.churnPerSec} replaced/s, ${config.broadcastsPerSec} broadcasts/s + ` +
    `${config.targetedPerSec} targeted sends/s for ${config.durationS} s (RSS warm-up at ${config.warmupS} s)`;
}

/** Lost deliveries worth a look, and the failures, one line each; empty when there are none. */
export function formatSoakDetails(report: SoakReport): string {
  const { load } = report;
  const parts: string[] = [];
  for (const [failure, n] of Object.entries(load.failures)) parts.push(`failed publishes: ${n}× ${failure}`);
  for (const reason of load.connectFailureSample) parts.push(`failed connection: ${reason}`);
  for (const lost of load.lostSample) {
    parts.push(
      `lost: ${lost.kind} #${lost.seq} to client ${lost.client} (worker ${lost.worker}, connection ` +
        `${lost.connection}): joined ${lost.joinedMs} ms, sent ${lost.sentMs} ms, answered ${lost.answeredMs} ms, ` +
        `${lost.leftMs === null ? "stayed to the end" : `left ${lost.leftMs} ms`}`,
    );
  }
  if (load.stalled) parts.push("the drain ended on silence: nothing arrived for a while");
  return parts.join("\n");
}

/** Least-squares slope of `[seconds, KiB]` points, in KiB per minute; null for fewer than 3 points. */
export function slopePerMinute(points: readonly (readonly [number, number])[]): number | null {
  if (points.length < 3) return null;
  const n = points.length;
  const meanT = points.reduce((sum, [t]) => sum + t, 0) / n;
  const meanV = points.reduce((sum, [, v]) => sum + v, 0) / n;
  let num = 0;
  let den = 0;
  for (const [t, v] of points) {
    num += (t - meanT) * (v - meanV);
    den += (t - meanT) ** 2;
  }
  return den === 0 ? null : round((num / den) * 60, 1);
}

/** Rows as columns: the first left-aligned, the rest right-aligned. */
function columns(rows: string[][]): string[] {
  const width = Math.max(...rows.map((row) => row.length));
  const widths = Array.from({ length: width }, (_, i) => Math.max(...rows.map((row) => row[i]?.length ?? 0)));
  return rows.map((row) =>
    row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ").trimEnd()
  );
}

function mib(kib: number | null): string {
  return kib === null ? "-" : (kib / 1024).toFixed(1);
}

function count(value: number): string {
  return Math.round(value).toLocaleString("en-US");
}

function milliseconds(value: number): string {
  return value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0);
}

function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}
