import assert from "node:assert/strict";
import { busMetricValue, type BusRun, busScenarioReport, formatBusTable, rankingMetric } from "./bus_report.ts";
import type { Measurement } from "./report.ts";
import { scenarios } from "./scenarios.ts";

function measurement(fields: Partial<Measurement> = {}): Measurement {
  return {
    clients: 100,
    connectMs: 10,
    publishes: 5000,
    okPublishes: 5000,
    failedPublishes: 0,
    failures: {},
    expectedDeliveries: 5000,
    deliveries: 5000,
    lost: 0,
    duplicates: 0,
    misdirected: 0,
    reordered: 0,
    foreign: 0,
    unexpectedCloses: {},
    deliveriesPerSec: 20_000,
    publishesPerSec: 20_000,
    deliveriesPerSecPerConnection: null,
    commands: 0,
    failedCommands: 0,
    commandsPerSec: null,
    commandLatencyUs: null,
    latencyUs: { p50: 1000, p99: 2000, max: 3000 },
    publishMs: 250,
    stalled: false,
    cpuUsPerDelivery: 50,
    serviceCpuMs: 250,
    serviceCpuMsByProcess: { hub: 50, pusher: 100, publisher: 100 },
    loadGenCpuUsPerDelivery: 10,
    rssBeforeKiB: 1000,
    rssAfterKiB: 2000,
    connectCpuUsPerConnection: 1,
    rssKiBPerConnection: 1,
    rssKiBPerConnectionSettled: null,
    serviceWarnings: { count: 0, sample: [] },
    ...fields,
  };
}

const all = scenarios();
const [targeted, fixedRate] = [all.find((s) => s.id === "d")!, all.find((s) => s.id === "e")!];

Deno.test("bus report: each bus against the hub of the same run, the bus server's share of CPU by its process name", () => {
  const hub = measurement();
  const nats = measurement({
    publishesPerSec: 5000,
    cpuUsPerDelivery: 150,
    serviceCpuMs: 750,
    serviceCpuMsByProcess: { nats: 150, pusher: 300, publisher: 300 },
  });
  const redis = measurement({
    publishesPerSec: 15_000,
    serviceCpuMsByProcess: { redis: 25, pusher: 100, publisher: 125 },
  });
  const report = busScenarioReport(targeted, [{ hub, buses: { nats, redis } }]);
  assert.equal(report.buses.nats?.ratios.publishesPerSec, 0.25);
  assert.equal(report.buses.nats?.ratios.cpuUsPerDelivery, 3);
  assert.equal(report.buses.redis?.ratios.publishesPerSec, 0.75);
  assert.equal(busMetricValue(hub, "busServerCpuShare"), 0.2);
  assert.equal(busMetricValue(nats, "busServerCpuShare"), 0.2);
  assert.equal(busMetricValue(redis, "busServerCpuShare"), 0.1);
  assert.equal(report.buses.nats?.ratios.busServerCpuShare, undefined, "a share of another total has no ratio");
  assert.equal(report.runs, undefined, "one run: no runs list");

  const table = formatBusTable({ buses: ["nats", "redis"], scenarios: [report] });
  assert.match(table, /^ +hub +nats +÷hub +redis +÷hub$/m);
  assert.match(table, /^\(d\) 100 clients × 5000 targeted sends/m);
  assert.match(table, /^ {2}publish requests\/s +20,000 +5,000 +0\.25x +15,000 +0\.75x$/m);
  assert.match(table, /^ {2}server CPU µs\/delivery +50\.00 +150\.00 +3\.00x +50\.00 +1\.00x$/m);
  assert.match(table, /^ {2}of which the bus server \(hub, nats, redis\) +20% +20% +10%$/m);
  assert.match(table, /^ {2}messages lost +0 +0 +0$/m);
  assert.doesNotMatch(table, /deliveries\/s per delivered connection|commands\/s/);
});

Deno.test("bus report under --repeat: each bus's median run by its ratio to that run's hub, losses the worst run's", () => {
  const p99 = (ms: number, fields: Partial<Measurement> = {}) =>
    measurement({ latencyUs: { p50: 500, p99: ms * 1000, max: ms * 1000 }, ...fields });
  assert.deepEqual(rankingMetric(fixedRate), { key: "latencyP99Ms", higher: false });
  assert.deepEqual(rankingMetric(targeted), { key: "publishesPerSec", higher: true });
  // nats / hub per run: 10, 2, 4 → median 4 (run 2); redis: 1, 3, 2 → median 2 (run 2).
  const runs: BusRun[] = [
    { hub: p99(1), buses: { nats: p99(10), redis: p99(1, { lost: 3 }) } },
    { hub: p99(5), buses: { nats: p99(10), redis: p99(15) } },
    { hub: p99(2), buses: { nats: p99(8), redis: p99(4) } },
  ];
  const report = busScenarioReport(fixedRate, runs);
  assert.equal(report.buses.nats?.run, 2);
  assert.equal(report.buses.nats?.ratios.latencyP99Ms, 4);
  assert.equal(report.buses.redis?.run, 2);
  assert.equal(report.buses.redis?.bus.lost, 3, "a loss in any run counts");
  assert.equal(report.runs?.length, 3);
  // Both buses' figures come from run 2: one hub column.
  assert.match(formatBusTable({ buses: ["nats", "redis"], scenarios: [report] }), /^ +hub +nats +÷hub +redis +÷hub$/m);

  // Two runs: the worse of the two middle ones, and each bus its own hub column when their runs differ.
  const split = busScenarioReport(fixedRate, [
    { hub: p99(1), buses: { nats: p99(2), redis: p99(3) } },
    { hub: p99(1), buses: { nats: p99(3), redis: p99(2) } },
  ]);
  assert.equal(split.buses.nats?.run, 1);
  assert.equal(split.buses.redis?.run, 0);
  const table = formatBusTable({ buses: ["nats", "redis"], scenarios: [split] });
  assert.match(table, /^ +hub +nats +÷hub +hub +redis +÷hub$/m);
  assert.match(table, /median run by its ratio to the hub/);
});
