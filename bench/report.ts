/**
 * The benchmark's results: what is measured per scenario and target, the
 * system/baseline ratios, the goals, the JSON written to `bench/results/`
 * and the table printed.
 *
 * Pure TypeScript: no `Deno.*` calls.
 *
 * @module
 */

import type { LoadResult } from "./load.ts";
import type { Machine } from "./_proc.ts";
import { type Comparison, COMPARISONS, GOALS, type MetricKey, type Scenario } from "./scenarios.ts";

/** Everything measured for one scenario against one target. */
export interface Measurement extends Omit<LoadResult, "type"> {
  /** Service CPU time (all service processes, all threads) per delivery, in µs, while publishing. */
  cpuUsPerDelivery: number | null;
  /** Service CPU time while publishing, in ms. */
  serviceCpuMs: number;
  /** The same, each service process by name: where the time goes. */
  serviceCpuMsByProcess: Record<string, number>;
  /** The load generator's own CPU time per delivery, in µs: it should stay well below the servers'. */
  loadGenCpuUsPerDelivery: number | null;
  /**
   * Service CPU time per client while the clients connected and were
   * greeted, in µs: what a handshake costs the servers (a reconnect storm).
   */
  connectCpuUsPerConnection: number | null;
  /** RSS of the processes holding the WebSockets before the clients connected, in KiB. */
  rssBeforeKiB: number;
  /** The same once every client was greeted. */
  rssAfterKiB: number;
  /** (after − before) / clients. */
  rssKiBPerConnection: number | null;
  /**
   * (lowest RSS while the clients sat idle for `--idle-settle` seconds −
   * before) / clients: what they hold once the runtime has collected the
   * handshakes' garbage. Null unless asked for.
   */
  rssKiBPerConnectionSettled: number | null;
  /** Warn and error log lines the services wrote during the scenario. */
  serviceWarnings: { count: number; sample: string[] };
  /** Recovery: the hub's VmRSS once every client had its position, before they left, in KiB. */
  hubRssBeforeKiB?: number | null;
  /** Recovery: the same once every client had recovered, the clients still connected. */
  hubRssAfterKiB?: number | null;
}

/** A goal checked against a run. */
export interface GoalResult {
  metric: MetricKey;
  kind: "ratio" | "original" | "absolute";
  op: ">=" | "<=";
  bound: number;
  /** The ratio (to the baseline or the original) or the system's value; null when it could not be computed (a miss). */
  value: number | null;
  pass: boolean;
}

/** A target between two scenarios of the run, checked on the system's values. */
export interface ComparisonResult extends Comparison {
  /** The system's value in `scenario`, and in `against`; null when that scenario did not run or has none. */
  scenarioValue: number | null;
  againstValue: number | null;
  /** scenarioValue / againstValue; null when either is missing. */
  value: number | null;
  /** Null when it could not be compared (a scenario was not run), and then it is neither PASS nor MISS. */
  pass: boolean | null;
  /** The scenarios of the two that did not run. */
  notRun: string[];
}

/** One scenario, both targets. */
export interface ScenarioReport extends Scenario {
  system: Measurement;
  /** Null for a scenario the baseline does not run ({@linkcode Scenario.baseline}). */
  baseline: Measurement | null;
  /**
   * The PHP original's run: null when it did not run this scenario (or at
   * all); absent in runs from before it could.
   */
  original?: Measurement | null;
  /** system / baseline per metric; null where either is missing or the baseline is 0. */
  ratios: Partial<Record<MetricKey, number | null>>;
  /** system / original per metric, as {@linkcode ratios}; absent when the original did not run it. */
  originalRatios?: Partial<Record<MetricKey, number | null>>;
  /** The targets; those against the original only when it ran the scenario. */
  goals: GoalResult[];
  /** With `--repeat`: every run of the targets, in the order they ran; the fields above are the median run's. */
  runs?: { system: Measurement; baseline: Measurement | null; original?: Measurement | null }[];
}

/** The JSON file a run writes. */
export interface BenchReport {
  startedAt: string;
  finishedAt: string;
  machine: Machine;
  quick: boolean;
  /** Runs per scenario (`--repeat`); above 1 each scenario is its median pair. */
  repeat: number;
  /** Multiplier of the as-fast-as-accepted scenarios' publishes (`--scale`); 1 is the issue's sizes. */
  scale: number;
  /** The pusher's server (`--pusher-server`); absent in runs from before it could be chosen. */
  pusherServer?: "listen" | "deno";
  /**
   * Subjects the system's hub kept history of (`--history`); "" for none.
   * Absent in runs from before it could be chosen. Scenarios with their own
   * `history` ran on a second system started with theirs.
   */
  history?: string;
  scenarios: ScenarioReport[];
  /** Targets between scenarios ({@linkcode COMPARISONS}), whichever of their scenarios ran. */
  comparisons: ComparisonResult[];
  /** Goals and comparisons passed and missed; a comparison that could not be made counts as neither. */
  goals: { pass: number; miss: number };
  /**
   * Whether the PHP original ran (issue 19), and if not, why. Absent in runs
   * from before it could.
   */
  original?: { ran: boolean; reason?: string };
  /** The system's memory against its floor (issue 19); absent in runs from before, or with `--no-memory`. */
  memory?: MemoryReport;
}

/** VmRSS in KiB of hub, pusher and publisher, by name. */
export type ServiceRss = Record<string, number>;

/**
 * The system's memory (issue 19): the floor (a bare Deno process listening
 * on a port per service, with a bare worker per pusher worker, the services'
 * V8 flags), the services idle after start, and idle again after every
 * scenario; VmRSS, per service.
 */
export interface MemoryReport {
  /** Pusher workers, and so bare workers in the pusher's floor. */
  workers: number;
  floorKiB: ServiceRss;
  /** Once the system routed and before any scenario: the lowest total of its samples. */
  idleKiB: ServiceRss;
  /** After every scenario, the clients gone: the lowest total over `settleSeconds`; null when the run stopped before. */
  afterKiB: ServiceRss | null;
  /** Seconds of samples, once a second, after the benchmark. */
  settleSeconds: number;
  goals: MemoryGoalResult[];
}

/** A memory target: `of`'s total over `over`'s, at most `bound`. */
export interface MemoryGoalResult {
  of: "idleKiB" | "afterKiB";
  over: "floorKiB" | "idleKiB";
  op: "<=";
  bound: number;
  value: number | null;
  pass: boolean;
}

/** Issue 19: idle after start within 15% of the floor; after the benchmark, idle again within 20% of that. */
export const MEMORY_GOALS: readonly Pick<MemoryGoalResult, "of" | "over" | "op" | "bound">[] = [
  { of: "idleKiB", over: "floorKiB", op: "<=", bound: 1.15 },
  { of: "afterKiB", over: "idleKiB", op: "<=", bound: 1.2 },
];

/** The sum of a sample's services. */
export function totalKiB(rss: ServiceRss): number {
  return Object.values(rss).reduce((sum, kib) => sum + kib, 0);
}

/** Checks {@linkcode MEMORY_GOALS} on the samples. */
export function memoryReport(fields: Omit<MemoryReport, "goals">): MemoryReport {
  const goals = MEMORY_GOALS.map((goal): MemoryGoalResult => {
    const of = fields[goal.of];
    const over = fields[goal.over];
    const value = of === null || totalKiB(over) === 0 ? null : totalKiB(of) / totalKiB(over);
    return { ...goal, value, pass: value !== null && value <= goal.bound };
  });
  return { ...fields, goals };
}

interface MetricSpec {
  key: MetricKey;
  label: string;
  format: (value: number) => string;
  /** Shown for idle scenarios: `only` for nothing else. */
  idle?: boolean | "only";
  /** A system/baseline ratio means something. @default {true} */
  ratio?: boolean;
  /** Measured only when asked for: no row when neither target has it. */
  optional?: boolean;
  /** Shown only for scenarios of these modes. */
  modes?: readonly Scenario["mode"][];
}

const PUBLISHING: readonly Scenario["mode"][] = ["broadcast", "targeted", "channels", "churn"];
const ALSO_RECOVERY: readonly Scenario["mode"][] = [...PUBLISHING, "recovery"];

const METRICS: readonly MetricSpec[] = [
  { key: "deliveriesPerSec", label: "deliveries/s", format: count, modes: ALSO_RECOVERY },
  { key: "recoveryMs", label: "time to full recovery (ms)", format: milliseconds, modes: ["recovery"] },
  { key: "reconnectMs", label: "time to reconnect, all greeted (ms)", format: milliseconds, modes: ["recovery"] },
  { key: "hubRssBeforeKiB", label: "hub RSS before (MiB)", format: mebibytes, modes: ["recovery"] },
  { key: "hubRssAfterKiB", label: "hub RSS after recovery (MiB)", format: mebibytes, modes: ["recovery"] },
  { key: "publishesPerSec", label: "publish requests/s", format: count },
  {
    key: "deliveriesPerSecPerConnection",
    label: "deliveries/s per delivered connection",
    format: count,
    modes: ["broadcast", "channels"],
  },
  { key: "commandsPerSec", label: "commands/s (subscribe+unsubscribe)", format: count, modes: ["churn"] },
  { key: "commandLatencyP50Ms", label: "command reply p50 (ms)", format: milliseconds, modes: ["churn"] },
  { key: "commandLatencyP99Ms", label: "command reply p99 (ms)", format: milliseconds, modes: ["churn"] },
  { key: "latencyP50Ms", label: "latency p50 (ms)", format: milliseconds },
  { key: "latencyP99Ms", label: "latency p99 (ms)", format: milliseconds },
  { key: "latencyMaxMs", label: "latency max (ms)", format: milliseconds },
  { key: "cpuUsPerDelivery", label: "server CPU µs/delivery", format: (v) => v.toFixed(2) },
  { key: "loadGenCpuUsPerDelivery", label: "load-gen CPU µs/delivery", format: (v) => v.toFixed(2), ratio: false },
  {
    key: "connectCpuUsPerConnection",
    label: "server CPU µs/connection",
    format: (v) => v.toFixed(0),
    // Only 10,000 connections make enough CPU ticks to count.
    idle: "only",
  },
  {
    key: "rssKiBPerConnection",
    label: "RSS KiB/connection",
    format: (v) => v.toFixed(1),
    // Elsewhere it is noise: the idle scenario runs first and leaves freed
    // heap behind that later connections reuse (it even comes out negative).
    idle: "only",
  },
  {
    key: "rssKiBPerConnectionSettled",
    label: "RSS KiB/connection, settled",
    format: (v) => v.toFixed(1),
    idle: "only",
    optional: true,
  },
  { key: "lost", label: "messages lost", format: count, modes: ALSO_RECOVERY },
  { key: "failedPublishes", label: "failed publishes", format: count, modes: ALSO_RECOVERY },
  { key: "failedCommands", label: "failed commands", format: count, modes: ["channels", "churn"] },
  { key: "failedCommands", label: "subscribes not recovered", format: count, modes: ["recovery"] },
];

/** A metric's value in a measurement; null when it does not apply. */
export function metricValue(measurement: Measurement, key: MetricKey): number | null {
  switch (key) {
    case "latencyP50Ms":
      return measurement.latencyUs ? measurement.latencyUs.p50 / 1000 : null;
    case "latencyP99Ms":
      return measurement.latencyUs ? measurement.latencyUs.p99 / 1000 : null;
    case "latencyMaxMs":
      return measurement.latencyUs ? measurement.latencyUs.max / 1000 : null;
    case "commandLatencyP50Ms":
      return measurement.commandLatencyUs ? measurement.commandLatencyUs.p50 / 1000 : null;
    case "commandLatencyP99Ms":
      return measurement.commandLatencyUs ? measurement.commandLatencyUs.p99 / 1000 : null;
    default:
      return measurement[key] ?? null;
  }
}

/**
 * Puts a scenario's measurements together: ratios and goals. The goals
 * against the original count only when it ran (`original` given, not null).
 */
export function scenarioReport(
  scenario: Scenario,
  { system, baseline, original = null }: {
    system: Measurement;
    baseline: Measurement | null;
    original?: Measurement | null;
  },
): ScenarioReport {
  const ratiosTo = (other: Measurement | null) => {
    const ratios: Partial<Record<MetricKey, number | null>> = {};
    for (const { key, ratio } of METRICS) {
      if (key === "lost" || key === "failedPublishes" || key === "failedCommands" || ratio === false) continue;
      const ours = metricValue(system, key);
      const theirs = other === null ? null : metricValue(other, key);
      ratios[key] = ours === null || theirs === null || theirs === 0 ? null : ours / theirs;
    }
    return ratios;
  };
  const ratios = ratiosTo(baseline);
  const originalRatios = original === null ? undefined : ratiosTo(original);
  const goals = GOALS.filter((goal) => goal.scenario === scenario.id && (goal.kind !== "original" || originalRatios))
    .map((goal): GoalResult => {
      const value = goal.kind === "ratio"
        ? ratios[goal.metric] ?? null
        : goal.kind === "original"
        ? originalRatios![goal.metric] ?? null
        : metricValue(system, goal.metric);
      const pass = value !== null && (goal.op === ">=" ? value >= goal.bound : value <= goal.bound);
      return { metric: goal.metric, kind: goal.kind, op: goal.op, bound: goal.bound, value, pass };
    });
  return {
    ...scenario,
    system,
    baseline,
    ...(original === null ? {} : { original, originalRatios }),
    ratios,
    goals,
  };
}

/**
 * Several back-to-back runs of one scenario, system then baseline each time,
 * reduced to the median pair: ranked by the scenario's first goal (its
 * deliveries/s ratio when it has none, commands/s for churn) from best to worst, the middle one,
 * or the worse of the two middle ones. Ratios stay within one pair. Losses
 * and failed publishes are the worst of any run, so a loss anywhere is a miss.
 */
export function medianPair(pairs: readonly ScenarioReport[]): ScenarioReport {
  if (pairs.length === 0) throw new RangeError("medianPair needs at least one run");
  const first = pairs[0]!;
  const goal = first.goals.find((g) => !(COUNTS as readonly MetricKey[]).includes(g.metric));
  const fallback = first.mode === "churn" ? "commandsPerSec" : "deliveriesPerSec";
  const rank = (pair: ScenarioReport) => {
    // Without a baseline there is no ratio: the system's time to full recovery, lowest first.
    if (pair.baseline === null) return pair.system.recoveryMs ?? Infinity;
    const value = goal ? pair.goals.find((g) => g.metric === goal.metric)!.value : pair.ratios[fallback];
    // Best first: a missing value ranks last.
    if (value === null || value === undefined) return Infinity;
    return goal?.op === "<=" ? value : -value;
  };
  const ranked = [...pairs].sort((a, b) => rank(a) - rank(b));
  const median = ranked[Math.floor(ranked.length / 2)]!;
  type Which = "system" | "baseline" | "original";
  const worst = (target: Which, key: typeof COUNTS[number]) =>
    Math.max(...pairs.map((pair) => pair[target]?.[key] ?? 0));
  const withWorst = (target: Which) => ({
    ...median[target]!,
    lost: worst(target, "lost"),
    failedPublishes: worst(target, "failedPublishes"),
    failedCommands: worst(target, "failedCommands"),
  });
  const {
    system: _system,
    baseline: _baseline,
    original: _original,
    ratios: _ratios,
    originalRatios: _originalRatios,
    goals: _goals,
    runs: _runs,
    ...scenario
  } = first;
  const withOriginal = median.original !== undefined && median.original !== null;
  return {
    ...scenarioReport(scenario, {
      system: withWorst("system"),
      baseline: median.baseline === null ? null : withWorst("baseline"),
      original: withOriginal ? withWorst("original") : null,
    }),
    runs: pairs.map(({ system, baseline, original }) =>
      original === undefined || original === null ? { system, baseline } : { system, baseline, original }
    ),
  };
}

/** The failures a scenario must not have: the worst run's count, under `--repeat`. */
const COUNTS = ["lost", "failedPublishes", "failedCommands"] as const satisfies readonly MetricKey[];

/**
 * Checks the targets between scenarios ({@linkcode COMPARISONS}) on the
 * system's values, for every comparison one of whose scenarios ran.
 */
export function compareScenarios(scenarios: readonly ScenarioReport[]): ComparisonResult[] {
  const value = (id: string, metric: MetricKey, original = false) => {
    const scenario = scenarios.find((s) => s.id === id);
    const measured = original ? scenario?.original : scenario?.system;
    return measured ? metricValue(measured, metric) : null;
  };
  // Targets against the original only in a run where it ran.
  const originalRan = scenarios.some((s) => s.original !== undefined && s.original !== null);
  const wanted = COMPARISONS.filter((c) =>
    scenarios.some((s) => s.id === c.scenario || s.id === c.against) && (originalRan || !c.againstOriginal)
  );
  return wanted.map((c) => {
    const scenarioValue = value(c.scenario, c.metric);
    const againstValue = value(c.against, c.againstMetric ?? c.metric, c.againstOriginal);
    const ratio = scenarioValue === null || againstValue === null || againstValue === 0
      ? null
      : scenarioValue / againstValue;
    const notRun = [c.scenario, c.against].filter((id) => !scenarios.some((s) => s.id === id));
    // Against the original, a target only when the original ran the scenario.
    const originalMissing = c.againstOriginal === true && notRun.length === 0 && !hasOriginal(scenarios, c.against);
    if (originalMissing) notRun.push(`${c.against} on the original`);
    const pass = notRun.length > 0 ? null : ratio !== null && (c.op === ">=" ? ratio >= c.bound : ratio <= c.bound);
    return { ...c, scenarioValue, againstValue, value: ratio, pass, notRun };
  });
}

function hasOriginal(scenarios: readonly ScenarioReport[], id: string): boolean {
  const original = scenarios.find((s) => s.id === id)?.original;
  return original !== undefined && original !== null;
}

/** Counts passed and missed goals, and comparisons that could be made. */
export function goalSummary(
  scenarios: readonly ScenarioReport[],
  comparisons: readonly ComparisonResult[] = [],
  memory?: MemoryReport,
): { pass: number; miss: number } {
  const all = [...scenarios.flatMap((scenario) => scenario.goals), ...comparisons, ...(memory?.goals ?? [])].filter((
    g,
  ) => g.pass !== null);
  const pass = all.filter((goal) => goal.pass).length;
  return { pass, miss: all.length - pass };
}

/** The machine line: CPU, cores, Deno, kernel. */
export function formatMachine(machine: Machine): string {
  return `machine: ${machine.cpu}, ${machine.cores} cores, Deno ${machine.deno}, ${machine.kernel}`;
}

/**
 * The table: per scenario, per metric, the system's value, the baseline's,
 * their ratio, and the goal with PASS or MISS where there is one.
 */
export function formatTable(report: BenchReport): string {
  // The original's columns only when it ran: without it the table is as it was.
  const withOriginal = report.scenarios.some((scenario) => scenario.originalRatios !== undefined);
  const header = [
    "",
    "system",
    "baseline",
    "ratio",
    "target",
    "result",
    ...(withOriginal ? ["original", "÷original", "target", "result"] : []),
  ];
  const rows: (string[] | string)[] = [];
  for (const scenario of report.scenarios) {
    rows.push(`(${scenario.id}) ${scenario.title}`);
    for (const metric of METRICS) {
      if (scenario.mode === "idle" ? !metric.idle : metric.idle === "only") continue;
      if (!(metric.modes ?? PUBLISHING).includes(scenario.mode) && scenario.mode !== "idle") continue;
      const measured = [scenario.system, scenario.baseline, scenario.original ?? null].some((m) =>
        m !== null && metricValue(m, metric.key) !== null
      );
      if (metric.optional && !measured) continue;
      const show = (value: number | null) => (value === null ? "-" : metric.format(value));
      const times = (
        ratio: number | null | undefined,
      ) => (ratio === undefined || ratio === null ? "-" : `${ratio.toFixed(2)}x`);
      const goal = scenario.goals.find((g) => g.metric === metric.key && g.kind !== "original");
      const originalGoal = scenario.goals.find((g) => g.metric === metric.key && g.kind === "original");
      const original = scenario.original ?? null;
      rows.push([
        `  ${metric.label}`,
        show(metricValue(scenario.system, metric.key)),
        scenario.baseline === null ? "not run" : show(metricValue(scenario.baseline, metric.key)),
        times(scenario.ratios[metric.key]),
        goal ? goalText(goal) : "",
        goal ? (goal.pass ? "PASS" : "MISS") : "",
        ...(withOriginal
          ? [
            original === null ? "not run" : show(metricValue(original, metric.key)),
            times(scenario.originalRatios?.[metric.key]),
            originalGoal ? goalText(originalGoal) : "",
            originalGoal ? (originalGoal.pass ? "PASS" : "MISS") : "",
          ]
          : []),
      ]);
    }
  }
  for (const comparison of report.comparisons) rows.push(...comparisonRows(comparison));
  if (report.memory) rows.push(...memoryRows(report.memory));
  const cells = (row: string[]) => [...row, ...Array(Math.max(0, header.length - row.length)).fill("")];
  const table = [header, ...rows.filter((row): row is string[] => typeof row !== "string").map(cells)];
  const line = aligned(table);
  const { pass, miss } = report.goals;
  return [
    formatMachine(report.machine),
    "",
    line(header),
    ...rows.map((row) => (typeof row === "string" ? row : line(cells(row)))),
    "",
    `targets: ${pass} PASS, ${miss} MISS (a MISS does not fail the run)`,
    ...(report.repeat > 1
      ? [
        `Each scenario ran ${report.repeat} times, system then baseline; shown is the median pair by its first target ` +
        "(the idle scenario ran once). Losses are the worst run's.",
      ]
      : []),
    ...(report.scale > 1
      ? [
        `Scenarios a, b, d, f, h, j, l, m, n and o ran ${report.scale} times the publishes of the issue's sizes (--scale ${report.scale}).`,
      ]
      : []),
    ...(report.pusherServer === "deno" ? ["The pusher ran on Deno.serve (--pusher-server deno)."] : []),
    ...systemNotes(report),
    ...originalNotes(report),
    "RSS KiB/connection is shown for the idle scenario only (elsewhere it is heap-reuse noise); the JSON has every value.",
  ].join("\n");
}

/** The services' roles, in the order {@linkcode formatCpuByProcess} shows them. */
const ROLES = ["hub", "pusher", "publisher"];

/**
 * A measurement's service CPU per delivery, in µs, summed by role: the first
 * word of a process's name, so that the original's masters and workers
 * count to their service. Null when nothing was delivered.
 */
export function cpuUsPerDeliveryByRole(measurement: Measurement): Record<string, number> | null {
  if (measurement.deliveries === 0) return null;
  const roles: Record<string, number> = {};
  for (const [name, ms] of Object.entries(measurement.serviceCpuMsByProcess)) {
    const role = name.split(" ", 1)[0]!;
    roles[role] = (roles[role] ?? 0) + (ms * 1000) / measurement.deliveries;
  }
  return roles;
}

/**
 * Where the server CPU went, service by service: for each scenario that
 * delivered, the system's CPU per delivery in each of its processes, the
 * original's beside it where it ran the scenario, their ratios, and the load
 * generator's, which shares the cores. What a CPU or rate target against the
 * original is made of (issue 19); "" when no scenario delivered.
 */
export function formatCpuByProcess(report: BenchReport): string {
  const shown = report.scenarios.filter((scenario) => cpuUsPerDeliveryByRole(scenario.system) !== null);
  if (shown.length === 0) return "";
  const measured = shown.flatMap((scenario) => [scenario.system, scenario.original ?? null])
    .filter((m): m is Measurement => m !== null);
  const found = new Set(measured.flatMap((m) => Object.keys(cpuUsPerDeliveryByRole(m) ?? {})));
  const roles = [...ROLES.filter((role) => found.has(role)), ...[...found].filter((role) => !ROLES.includes(role))];
  const header = ["", ...roles, "total", "load generator"];
  const rows: string[][] = [];
  const us = (value: number) => value < 10 ? value.toFixed(2) : value.toFixed(1);
  const values = (m: Measurement) => {
    const byRole = cpuUsPerDeliveryByRole(m)!;
    return [...roles.map((role) => byRole[role] ?? null), Object.values(byRole).reduce((sum, v) => sum + v, 0)];
  };
  for (const scenario of shown) {
    const system = values(scenario.system);
    rows.push([
      `(${scenario.id}) system`,
      ...system.map((v) => v === null ? "-" : us(v)),
      scenario.system.loadGenCpuUsPerDelivery === null ? "-" : us(scenario.system.loadGenCpuUsPerDelivery),
    ]);
    const original = scenario.original ?? null;
    if (original === null || cpuUsPerDeliveryByRole(original) === null) continue;
    const theirs = values(original);
    rows.push([
      "    original",
      ...theirs.map((v) => v === null ? "-" : us(v)),
      original.loadGenCpuUsPerDelivery === null ? "-" : us(original.loadGenCpuUsPerDelivery),
    ]);
    rows.push([
      "    ÷original",
      // A 0 is under one clock tick: no ratio with it.
      ...system.map((v, i) => !v || !theirs[i] ? "-" : `${(v / theirs[i]!).toFixed(2)}x`),
      "",
    ]);
  }
  const line = aligned([header, ...rows]);
  return [
    "server CPU per delivery, µs, by service (each process's CPU time while publishing, from /proc, over the " +
    "deliveries, 0 under one clock tick; the original's master and workers summed per service); the load generator " +
    "shares the cores",
    line(header),
    ...rows.map(line),
  ].join("\n");
}

/** Lays out a row of `table` in its columns: the first left-aligned, the others right-aligned, two spaces apart. */
function aligned(table: readonly string[][]): (row: string[]) => string {
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  return (row) =>
    row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join("  ").trimEnd();
}

/** Service warnings worth a look, one paragraph per scenario and target that had any. */
export function formatWarnings(report: BenchReport): string {
  const parts: string[] = [];
  for (const scenario of report.scenarios) {
    for (const target of ["system", "baseline", "original"] as const) {
      const measurement = scenario[target];
      if (measurement === null || measurement === undefined) continue;
      const { count, sample } = measurement.serviceWarnings;
      const closes = Object.entries(measurement.unexpectedCloses);
      if (count > 0) {
        parts.push(
          `(${scenario.id}) ${target}: ${count} warning lines, first:\n${sample.map((l) => `  ${l}`).join("\n")}`,
        );
      }
      if (closes.length > 0) {
        parts.push(
          `(${scenario.id}) ${target}: clients closed by the server: ${
            closes.map(([r, n]) => `${n}× ${r}`).join(", ")
          }`,
        );
      }
    }
  }
  return parts.join("\n");
}

/** The memory section: floor, idle after start, idle after the benchmark, per service, and the targets. */
function memoryRows(memory: MemoryReport): (string[] | string)[] {
  const names = Object.keys(memory.floorKiB);
  const mib = (kib: number) => (kib / 1024).toFixed(1);
  const row = (label: string, rss: ServiceRss | null, goal?: MemoryGoalResult) => [
    `  ${label}`,
    rss === null ? "-" : mib(totalKiB(rss)),
    rss === null ? "" : names.map((name) => mib(rss[name] ?? 0)).join(" / "),
    goal?.value === null || goal === undefined ? "" : `${goal.value.toFixed(2)}x`,
    goal ? `≤ ${goal.bound}x` : "",
    goal ? (goal.pass ? "PASS" : "MISS") : "",
  ];
  const [idle, after] = memory.goals;
  return [
    `memory: VmRSS of the system (MiB); columns: total, ${names.join(" / ")}, ratio`,
    row(`floor (bare; pusher: ${memory.workers} workers)`, memory.floorKiB),
    row("idle after start ÷ floor", memory.idleKiB, idle),
    row("idle after the run ÷ idle after start", memory.afterKiB, after),
  ];
}

/** A comparison's title line and its row: the system's value in one scenario and the other, their ratio, the target. */
function comparisonRows(comparison: ComparisonResult): (string[] | string)[] {
  const metric = METRICS.find((m) => m.key === comparison.metric)!;
  const show = (value: number | null) => (value === null ? "-" : metric.format(value));
  const against = `(${comparison.against})${comparison.againstOriginal ? " original" : ""}`;
  const againstLabel = comparison.againstMetric && comparison.againstMetric !== comparison.metric
    ? ` over ${against}'s ${METRICS.find((m) => m.key === comparison.againstMetric)!.label}`
    : "";
  const title = `(${comparison.scenario}) vs ${against}: ${comparison.title}; ` +
    `columns: (${comparison.scenario}), ${against}, ratio`;
  if (comparison.pass === null) {
    return [title, `  ${metric.label}: not compared, (${comparison.notRun.join(") and (")}) not run`];
  }
  return [title, [
    `  ${metric.label}${againstLabel}`,
    show(comparison.scenarioValue),
    show(comparison.againstValue),
    comparison.value === null ? "-" : `${comparison.value.toFixed(2)}x`,
    goalText({ ...comparison, kind: "ratio", pass: comparison.pass }),
    comparison.pass ? "PASS" : "MISS",
  ]];
}

/** Whether the PHP original ran, why not, and which scenarios it could not run. */
function originalNotes(report: BenchReport): string[] {
  if (report.original?.ran === false) {
    return [`original not run: ${report.original.reason ?? "no reason given"}; its columns and targets are left out.`];
  }
  if (!report.scenarios.some((s) => s.originalRatios !== undefined)) return [];
  const skipped = report.scenarios.filter((s) => s.original === null || s.original === undefined).map((s) =>
    `(${s.id})`
  );
  return [
    "original: the PHP original (Workerman + Channel, ../shared/peers/workerman, 2 pusher processes), " +
    "÷original = system / original; its targets are issue 19's.",
    ...(skipped.length > 0
      ? [`${skipped.join(", ")}: not run on the original, which has no channels, users, history or JSON protocol.`]
      : []),
  ];
}

/**
 * Which hub kept history for which scenarios, which ran with users, and the
 * scenarios the baseline did not run.
 */
function systemNotes(report: BenchReport): string[] {
  const notes: string[] = [];
  const history = report.history ?? "";
  notes.push(
    history === ""
      ? "The system's hub kept no history (--history not given)."
      : `The system's hub kept history of ${history} (--history ${history}).`,
  );
  const own = report.scenarios.filter((s) => s.history !== undefined && s.history !== history);
  for (const subjects of new Set(own.map((s) => s.history!))) {
    const ids = own.filter((s) => s.history === subjects).map((s) => `(${s.id})`).join(", ");
    notes.push(`${ids} ran on a second system, started for them, whose hub kept history of ${subjects}.`);
  }
  const listed = (scenarios: readonly ScenarioReport[]) => scenarios.map((s) => `(${s.id})`).join(", ");
  const users = report.scenarios.filter((s) => s.users);
  if (users.length > 0) {
    notes.push(
      `${listed(users)} ran on a second system, started for them, whose pusher let in clients with a token only ` +
        "(--token-secret), each client its own user.",
    );
  }
  const alone = report.scenarios.filter((s) => s.baseline === null);
  const noHistory = alone.filter((s) => !s.users);
  if (noHistory.length > 0) {
    notes.push(`${listed(noHistory)}: the system only; the baseline keeps no history to recover from, so no ratio.`);
  }
  const noUsers = alone.filter((s) => s.users);
  if (noUsers.length > 0) notes.push(`${listed(noUsers)}: the system only; the baseline has no users, so no ratio.`);
  return notes;
}

function goalText(goal: GoalResult): string {
  const op = goal.op === ">=" ? "≥" : "≤";
  if (goal.kind !== "absolute") return `${op} ${goal.bound}x`;
  if (goal.bound === 0 && goal.op === "<=") return "= 0";
  return `${op} ${goal.bound}${goal.metric.startsWith("rssKiB") ? " KiB" : ""}`;
}

function count(value: number): string {
  return Math.round(value).toLocaleString("en-US");
}

function mebibytes(kib: number): string {
  return (kib / 1024).toFixed(1);
}

function milliseconds(value: number): string {
  return value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0);
}
