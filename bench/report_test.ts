import assert from "node:assert/strict";
import { type BenchReport, formatTable, goalSummary, type Measurement, scenarioReport } from "./report.ts";
import { scenarios } from "./scenarios.ts";

function measurement(fields: Partial<Measurement> = {}): Measurement {
  return {
    clients: 1000,
    connectMs: 100,
    publishes: 200,
    okPublishes: 200,
    failedPublishes: 0,
    failures: {},
    expectedDeliveries: 200_000,
    deliveries: 200_000,
    lost: 0,
    duplicates: 0,
    foreign: 0,
    unexpectedCloses: {},
    deliveriesPerSec: 100_000,
    publishesPerSec: 500,
    latencyUs: { p50: 1000, p99: 2000, max: 3000 },
    publishMs: 2000,
    stalled: false,
    cpuUsPerDelivery: 10,
    serviceCpuMs: 2000,
    serviceCpuMsByProcess: { baseline: 2000 },
    loadGenCpuUsPerDelivery: 1,
    rssBeforeKiB: 1000,
    rssAfterKiB: 2000,
    rssKiBPerConnection: 1,
    rssKiBPerConnectionSettled: null,
    serviceWarnings: { count: 0, sample: [] },
    ...fields,
  };
}

const [, b, , d, , , g] = scenarios();

Deno.test("goals compare system/baseline ratios, or the system's own value, and a loss is a miss", () => {
  const report = scenarioReport(b!, {
    system: measurement({ deliveriesPerSec: 500_000, cpuUsPerDelivery: 2, lost: 1 }),
    baseline: measurement(),
  });
  assert.equal(report.ratios.deliveriesPerSec, 5);
  assert.equal(report.ratios.cpuUsPerDelivery, 0.2);
  const goal = (metric: string) => report.goals.find((g) => g.metric === metric)!;
  assert.deepEqual([goal("deliveriesPerSec").pass, goal("cpuUsPerDelivery").pass], [true, true]);
  assert.deepEqual([goal("lost").value, goal("lost").pass], [1, false]);
  assert.equal(goal("failedPublishes").pass, true);

  const idle = scenarioReport(g!, {
    system: measurement({ rssKiBPerConnection: 6.5 }),
    baseline: measurement({ rssKiBPerConnection: 5 }),
  });
  assert.deepEqual(idle.goals.map((g) => [g.metric, g.kind, g.pass]), [["rssKiBPerConnection", "absolute", false]]);
  assert.deepEqual(goalSummary([report, idle]), { pass: 3, miss: 2 });
});

Deno.test("a ratio against a baseline of 0 or a missing value is none, and its goal a miss", () => {
  const report = scenarioReport(d!, {
    system: measurement({ publishesPerSec: 10 }),
    baseline: measurement({ publishesPerSec: null }),
  });
  assert.equal(report.ratios.publishesPerSec, null);
  assert.equal(report.goals.find((g) => g.metric === "publishesPerSec")!.pass, false);
});

Deno.test("the table shows system, baseline, ratio and PASS or MISS, and RSS only for the idle scenario", () => {
  const scenarioReports = [
    scenarioReport(b!, { system: measurement({ deliveriesPerSec: 300_000 }), baseline: measurement() }),
    scenarioReport(g!, { system: measurement({ rssKiBPerConnection: 4 }), baseline: measurement() }),
  ];
  const report: BenchReport = {
    startedAt: "",
    finishedAt: "",
    machine: { cpu: "Test CPU", cores: 2, deno: "2.9.6", kernel: "Linux version 6.1" },
    quick: false,
    scenarios: scenarioReports,
    goals: goalSummary(scenarioReports),
  };
  const table = formatTable(report);
  assert.match(table, /^machine: Test CPU, 2 cores, Deno 2\.9\.6, Linux version 6\.1$/m);
  assert.match(table, /^ {2}deliveries\/s +300,000 +100,000 +3\.00x +≥ 4x +MISS$/m);
  assert.match(table, /^ {2}messages lost +0 +0 +- += 0 +PASS$/m);
  assert.equal(table.match(/RSS KiB\/connection +\d/g)?.length, 1, "one RSS row, the idle scenario's");
  assert.match(table, /^ {2}RSS KiB\/connection +4\.0 +1\.0 +4\.00x +≤ 6 KiB +PASS$/m);
  assert.doesNotMatch(table, /settled/, "no settled row unless --idle-settle measured it");
});

Deno.test("the table shows the settled RSS per connection when it was measured", () => {
  const idle = scenarioReport(g!, {
    system: measurement({ rssKiBPerConnection: 9, rssKiBPerConnectionSettled: 6.5 }),
    baseline: measurement({ rssKiBPerConnection: 20, rssKiBPerConnectionSettled: 17 }),
  });
  const table = formatTable({
    startedAt: "",
    finishedAt: "",
    machine: { cpu: "Test CPU", cores: 2, deno: "2.9.6", kernel: "Linux version 6.1" },
    quick: false,
    scenarios: [idle],
    goals: goalSummary([idle]),
  });
  assert.match(table, /^ {2}RSS KiB\/connection, settled +6\.5 +17\.0 +0\.38x$/m);
  assert.match(
    table,
    /^ {2}RSS KiB\/connection +9\.0 +20\.0 +0\.45x +≤ 6 KiB +MISS$/m,
    "the goal stays on the first sample",
  );
});
