import assert from "node:assert/strict";
import {
  type BenchReport,
  compareScenarios,
  formatCpuByProcess,
  formatTable,
  goalSummary,
  type Measurement,
  medianPair,
  memoryReport,
  type ScenarioReport,
  scenarioReport,
} from "./report.ts";
import { type Scenario, scenarios } from "./scenarios.ts";

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
    misdirected: 0,
    reordered: 0,
    foreign: 0,
    unexpectedCloses: {},
    deliveriesPerSec: 100_000,
    publishesPerSec: 500,
    deliveriesPerSecPerConnection: 100,
    commands: 0,
    failedCommands: 0,
    commandsPerSec: null,
    commandLatencyUs: null,
    latencyUs: { p50: 1000, p99: 2000, max: 3000 },
    publishMs: 2000,
    stalled: false,
    cpuUsPerDelivery: 10,
    serviceCpuMs: 2000,
    serviceCpuMsByProcess: { baseline: 2000 },
    loadGenCpuUsPerDelivery: 1,
    rssBeforeKiB: 1000,
    rssAfterKiB: 2000,
    connectCpuUsPerConnection: 1,
    rssKiBPerConnection: 1,
    rssKiBPerConnectionSettled: null,
    serviceWarnings: { count: 0, sample: [] },
    ...fields,
  };
}

const [a, b, c, d, , , g] = scenarios();

/** A run of these scenario reports, one run each at the issue's sizes unless `fields` say otherwise. */
function reportOf(scenarioReports: ScenarioReport[], fields: Partial<BenchReport> = {}): BenchReport {
  const comparisons = compareScenarios(scenarioReports);
  return {
    startedAt: "",
    finishedAt: "",
    machine: { cpu: "Test CPU", cores: 2, deno: "2.9.6", kernel: "Linux version 6.1" },
    quick: false,
    repeat: 1,
    scale: 1,
    scenarios: scenarioReports,
    comparisons,
    goals: goalSummary(scenarioReports, comparisons),
    ...fields,
  };
}

/** The table a run of these scenario reports prints. */
function tableOf(scenarioReports: ScenarioReport[], repeat = 1, scale = 1): string {
  return formatTable(reportOf(scenarioReports, { repeat, scale }));
}

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
    scenarioReport(g!, {
      system: measurement({ rssKiBPerConnection: 4, connectCpuUsPerConnection: 80 }),
      baseline: measurement({ connectCpuUsPerConnection: 160 }),
    }),
  ];
  const table = tableOf(scenarioReports);
  assert.match(table, /^machine: Test CPU, 2 cores, Deno 2\.9\.6, Linux version 6\.1$/m);
  assert.match(table, /^ {2}deliveries\/s +300,000 +100,000 +3\.00x +≥ 4x +MISS$/m);
  assert.match(table, /^ {2}messages lost +0 +0 +- += 0 +PASS$/m);
  assert.equal(table.match(/RSS KiB\/connection +\d/g)?.length, 1, "one RSS row, the idle scenario's");
  assert.match(table, /^ {2}RSS KiB\/connection +4\.0 +1\.0 +4\.00x +≤ 6 KiB +PASS$/m);
  assert.equal(table.match(/server CPU µs\/connection/g)?.length, 1, "one handshake CPU row, the idle scenario's");
  assert.match(table, /^ {2}server CPU µs\/connection +80 +160 +0\.50x$/m);
  assert.doesNotMatch(table, /settled/, "no settled row unless --idle-settle measured it");
});

Deno.test("the table shows the settled RSS per connection when it was measured", () => {
  const idle = scenarioReport(g!, {
    system: measurement({ rssKiBPerConnection: 9, rssKiBPerConnectionSettled: 6.5 }),
    baseline: measurement({ rssKiBPerConnection: 20, rssKiBPerConnectionSettled: 17 }),
  });
  const table = tableOf([idle]);
  assert.match(table, /^ {2}RSS KiB\/connection, settled +6\.5 +17\.0 +0\.38x$/m);
  assert.match(
    table,
    /^ {2}RSS KiB\/connection +9\.0 +20\.0 +0\.45x +≤ 6 KiB +MISS$/m,
    "the goal stays on the first sample",
  );
  assert.doesNotMatch(table, /median pair/, "one run, no median");
});

Deno.test("repeated runs report the median pair by the first goal, the worse middle one when even", () => {
  const pair = (p99: number, baselineP99 = 10) =>
    scenarioReport(c!, {
      system: measurement({ latencyUs: { p50: 1000, p99: p99 * 1000, max: 30_000 } }),
      baseline: measurement({ latencyUs: { p50: 1000, p99: baselineP99 * 1000, max: 30_000 } }),
    });
  // p99 ratios 1.2, 0.8, 1.0: the median is 1.0, and it is one pair's ratio.
  const odd = medianPair([pair(12), pair(8), pair(20, 20)]);
  assert.equal(odd.ratios.latencyP99Ms, 1);
  assert.equal(odd.system.latencyUs!.p99, 20_000);
  assert.equal(odd.goals.find((goal) => goal.metric === "latencyP99Ms")!.pass, true);
  assert.equal(odd.runs!.length, 3);
  assert.deepEqual(odd.runs!.map((run) => run.system.latencyUs!.p99), [12_000, 8_000, 20_000], "in the order run");
  // For "at most" goals the worse of the two middle ones is the larger ratio.
  const even = medianPair([pair(8), pair(9), pair(11), pair(12)]);
  assert.equal(even.ratios.latencyP99Ms, 1.1);
  assert.equal(even.goals.find((goal) => goal.metric === "latencyP99Ms")!.pass, false);
  // For "at least" goals the worse is the smaller: deliveries/s ratios 5, 3, 4, 6 give 4.
  const rates = [5, 3, 4, 6].map((ratio) =>
    scenarioReport(b!, {
      system: measurement({ deliveriesPerSec: ratio * 100_000 }),
      baseline: measurement({ deliveriesPerSec: 100_000 }),
    })
  );
  assert.equal(medianPair(rates).ratios.deliveriesPerSec, 4);
  // A scenario without goals ranks by deliveries/s.
  const plain = [2, 7, 5].map((ratio) =>
    scenarioReport(a!, {
      system: measurement({ deliveriesPerSec: ratio * 100_000 }),
      baseline: measurement({ deliveriesPerSec: 100_000 }),
    })
  );
  assert.equal(medianPair(plain).ratios.deliveriesPerSec, 5);
  const table = tableOf([odd], 3);
  assert.match(table, /^Each scenario ran 3 times, system then baseline; shown is the median pair/m);
  assert.match(table, /^ {2}latency p99 \(ms\) +20\.0 +20\.0 +1\.00x +≤ 1x +PASS$/m);
});

Deno.test("repeated runs: a loss or failed publish in any run is a miss of the median pair", () => {
  const runs = [0, 2, 0].map((lost) =>
    scenarioReport(b!, {
      system: measurement({ lost, deliveriesPerSec: (lost + 4) * 100_000 }),
      baseline: measurement({ failedPublishes: lost === 2 ? 1 : 0 }),
    })
  );
  const median = medianPair(runs);
  assert.equal(median.system.deliveriesPerSec, 400_000, "the median pair is a lossless one");
  assert.equal(median.system.lost, 2);
  assert.equal(median.baseline!.failedPublishes, 1);
  assert.equal(median.goals.find((goal) => goal.metric === "lost")!.pass, false);
});

Deno.test("--scale multiplies the publishes of the as-fast-as-accepted scenarios only, and the table says so", () => {
  const sizes = (list: Scenario[]) => Object.fromEntries(list.map((s) => [s.id, s.messages]));
  assert.deepEqual(sizes(scenarios(false, 20)), {
    a: 10_000,
    b: 4000,
    c: 250,
    d: 100_000,
    e: 5000,
    f: 400,
    g: 0,
    h: 40_000,
    i: 300_000, // a cap: the churn's stream runs on its timer until the churn is done
    j: 40_000,
    k: 100, // missed by each client: the storm's size is the issue's, whatever the scale
    l: 1_000_000,
    m: 1_000_000,
    n: 40_000,
    o: 1_000_000,
  });
  assert.deepEqual(sizes(scenarios(true, 2)), {
    a: 40,
    b: 40,
    c: 50,
    d: 400,
    e: 200,
    f: 20,
    g: 0,
    h: 160,
    i: 30_000,
    j: 160,
    k: 20,
    l: 800,
    m: 800,
    n: 160,
    o: 800,
  });
  const [, , , scaled] = scenarios(false, 20);
  assert.equal(scaled!.title, "100 clients × 100000 targeted sends, as fast as accepted");

  const report = scenarioReport(scaled!, { system: measurement(), baseline: measurement() });
  assert.match(
    tableOf([report], 1, 20),
    /^Scenarios a, b, d, f, h, j, l, m, n and o ran 20 times the publishes of the issue's sizes/m,
  );
  assert.doesNotMatch(tableOf([report]), /times the publishes/, "not at the issue's sizes");
});

Deno.test("(h) is held to (b)'s deliveries/s from the same run, and the table says when (b) did not run", () => {
  const [, bScenario, , , , , , h] = scenarios();
  const broadcast = scenarioReport(bScenario!, {
    system: measurement({ deliveriesPerSec: 2000 }),
    baseline: measurement({ deliveriesPerSec: 100 }),
  });
  const channel = (deliveries: number) =>
    scenarioReport(h!, {
      system: measurement({ deliveriesPerSec: deliveries }),
      baseline: measurement({ deliveriesPerSec: 500 }),
    });
  const pass = tableOf([broadcast, channel(1900)]);
  assert.match(pass, /^\(h\) vs \(b\): channel fan-out against broadcast, system; columns: \(h\), \(b\), ratio$/m);
  assert.match(pass, /^ {2}deliveries\/s +1,900 +2,000 +0\.95x +≥ 0\.9x +PASS$/m);
  assert.match(pass, /^targets: 6 PASS, 1 MISS/m, "the comparison counts as a target");
  const miss = compareScenarios([broadcast, channel(1700)]);
  assert.deepEqual(miss.map((c) => [c.scenario, c.value, c.pass]), [
    ["h", 0.85, false],
    ["n", null, null],
    ["j", null, null],
  ]);

  const alone = tableOf([channel(1900)]);
  assert.match(alone, /^ {2}deliveries\/s: not compared, \(b\) not run$/m);
  assert.match(alone, /^targets: \d+ PASS, 0 MISS/m, "not compared is neither PASS nor MISS");
});

Deno.test("(j) is held to (h)'s deliveries/s from the same run at 0.85, and says when (j) did not run", () => {
  const all = scenarios();
  const h = all.find((s) => s.id === "h")!;
  const j = all.find((s) => s.id === "j")!;
  assert.equal(j.history, "channel.*");
  assert.deepEqual([j.clients, j.channels, j.messages], [h.clients, h.channels, h.messages], "(j) is (h)'s load");
  const run = (scenario: Scenario, deliveries: number) =>
    scenarioReport(scenario, {
      system: measurement({ deliveriesPerSec: deliveries }),
      baseline: measurement({ deliveriesPerSec: 500 }),
    });
  const pass = tableOf([run(h, 2000), run(j, 1800)]);
  assert.match(
    pass,
    /^\(j\) vs \(h\): channel fan-out with history against without, system; columns: \(j\), \(h\), ratio$/m,
  );
  assert.match(pass, /^ {2}deliveries\/s +1,800 +2,000 +0\.90x +≥ 0\.85x +PASS$/m);
  assert.match(pass, /^\(j\) ran on a second system, started for them, whose hub kept history of channel\.\*\.$/m);
  const miss = compareScenarios([run(h, 2000), run(j, 1600)]).find((c) => c.scenario === "j")!;
  assert.deepEqual([miss.value, miss.pass], [0.8, false]);
  assert.match(tableOf([run(h, 2000)]), /^ {2}deliveries\/s: not compared, \(j\) not run$/m);
});

Deno.test("(k) is the system's alone: recovery time and the hub's RSS, no baseline, no ratio", () => {
  const k = scenarios().find((s) => s.id === "k")!;
  assert.equal(k.withBaseline, false);
  const report = scenarioReport(k, {
    system: measurement({
      deliveriesPerSec: 500_000,
      recoveryMs: 200,
      reconnectMs: 120,
      hubRssBeforeKiB: 51_200,
      hubRssAfterKiB: 56_320,
    }),
    baseline: null,
  });
  assert.deepEqual(report.ratios.recoveryMs, null);
  const table = tableOf([report]);
  assert.match(table, /^ {2}time to full recovery \(ms\) +200 +not run +-$/m);
  assert.match(table, /^ {2}hub RSS before \(MiB\) +50\.0 +not run +-$/m);
  assert.match(table, /^ {2}hub RSS after recovery \(MiB\) +55\.0 +not run +-$/m);
  assert.match(table, /^ {2}subscribes not recovered +0 +not run +- += 0 +PASS$/m);
  assert.match(table, /^\(k\): the system only; the baseline keeps no history to recover from, so no ratio\.$/m);
  const median = medianPair([
    scenarioReport(k, { system: measurement({ recoveryMs: 300 }), baseline: null }),
    scenarioReport(k, { system: measurement({ recoveryMs: 100, lost: 2 }), baseline: null }),
    scenarioReport(k, { system: measurement({ recoveryMs: 200 }), baseline: null }),
  ]);
  assert.equal(median.system.recoveryMs, 200, "the median by time to full recovery");
  assert.equal(median.system.lost, 2, "a loss in any run counts");
  assert.equal(median.baseline, null);
});

Deno.test("(o) is (l)'s load to users on a system with a token secret: no baseline, and the table says why", () => {
  const all = scenarios();
  const l = all.find((s) => s.id === "l")!;
  const o = all.find((s) => s.id === "o")!;
  assert.deepEqual([o.users, o.withBaseline, o.withOriginal], [true, false, false]);
  assert.equal(l.users, undefined, "(l)'s clients are anonymous");
  assert.deepEqual([o.mode, o.clients, o.messages, o.batch], [l.mode, l.clients, l.messages, l.batch]);
  const table = tableOf([
    scenarioReport(o, { system: measurement({ deliveriesPerSec: 200_000 }), baseline: null }),
  ]);
  assert.match(
    table,
    /^\(o\) 100 clients, each its own user, × 50000 user publications, 100 per \/api\/batch request$/m,
  );
  assert.match(table, /^ {2}deliveries\/s +200,000 +not run +-$/m);
  assert.match(
    table,
    /^\(o\) ran on a second system, started for them, whose pusher let in clients with a token only \(--token-secret\), each client its own user\.$/m,
  );
  assert.match(table, /^\(o\): the system only; the baseline has no users, so no ratio\.$/m);
  assert.doesNotMatch(table, /keeps no history/, "the baseline's reason for (k) is not (o)'s");
});

Deno.test("against the original: a column, the system/original ratio and issue 19's targets, only when it ran", () => {
  const original = measurement({ deliveriesPerSec: 20_000, publishesPerSec: 100, cpuUsPerDelivery: 20 });
  const broadcast = scenarioReport(b!, {
    system: measurement({ deliveriesPerSec: 150_000 }),
    baseline: measurement(),
    original,
  });
  assert.equal(broadcast.originalRatios?.deliveriesPerSec, 7.5);
  assert.deepEqual(
    broadcast.goals.filter((goal) => goal.kind === "original").map((goal) => [goal.metric, goal.bound, goal.pass]),
    [["deliveriesPerSec", 6, true]],
  );
  const targeted = scenarioReport(d!, {
    system: measurement({ publishesPerSec: 140, cpuUsPerDelivery: 15 }),
    baseline: measurement(),
    original,
  });
  assert.deepEqual(
    targeted.goals.filter((goal) => goal.kind === "original").map((
      goal,
    ) => [goal.metric, goal.op, goal.bound, goal.pass]),
    [["publishesPerSec", ">=", 1.5, false], ["cpuUsPerDelivery", "<=", 0.7, false]],
  );
  // Not run: no original goals at all, so they count neither way.
  const without = scenarioReport(d!, { system: measurement(), baseline: measurement() });
  assert.equal(without.goals.some((goal) => goal.kind === "original"), false);
  assert.equal(without.original, undefined);

  const table = tableOf([broadcast, targeted]);
  assert.match(table, /^ +system +baseline +ratio +target +result +original +÷original +target +result$/m);
  assert.match(table, /^ {2}deliveries\/s +150,000 +100,000 +1\.50x +≥ 4x +MISS +20,000 +7\.50x +≥ 6x +PASS$/m);
  assert.match(table, /^ {2}publish requests\/s +140 +500 +0\.28x +≥ 1x +MISS +100 +1\.40x +≥ 1\.5x +MISS$/m);
  assert.match(table, /^original: the PHP original/m);
  assert.doesNotMatch(tableOf([without]), /original/);
});

Deno.test("the table says why the original did not run, and its median pair keeps it under --repeat", () => {
  const report = reportOf([scenarioReport(d!, { system: measurement(), baseline: measurement() })], {
    original: { ran: false, reason: "/nonexistent/workerman/src/Worker.php is missing" },
  });
  assert.match(formatTable(report), /^original not run: \/nonexistent\/workerman\/src\/Worker\.php is missing;/m);
  const runs = [3000, 1000, 2000].map((p99) =>
    scenarioReport(c!, {
      system: measurement({ latencyUs: { p50: 1, p99, max: p99 } }),
      baseline: measurement(),
      original: measurement({ lost: p99 === 1000 ? 1 : 0 }),
    })
  );
  const median = medianPair(runs);
  assert.equal(median.system.latencyUs?.p99, 2000);
  assert.equal(median.original?.lost, 1, "the worst run's loss");
  assert.equal(median.runs?.length, 3);
  assert.ok(median.goals.some((goal) => goal.kind === "original" && goal.metric === "latencyP99Ms"));
});

Deno.test("issue 19's targets across scenarios read the original's run: (h) per connection against its (b), (l), (m) and (o) against its (d)", () => {
  const all = scenarios();
  const byId = (id: string) => all.find((s) => s.id === id)!;
  const original = measurement({
    deliveriesPerSec: 150_000,
    deliveriesPerSecPerConnection: 150,
    publishesPerSec: 20_000,
  });
  const reports = [
    scenarioReport(byId("b"), {
      system: measurement({ deliveriesPerSec: 1_000_000 }),
      baseline: measurement(),
      original,
    }),
    scenarioReport(byId("d"), { system: measurement(), baseline: measurement(), original }),
    scenarioReport(byId("h"), {
      system: measurement({ deliveriesPerSec: 900_000, deliveriesPerSecPerConnection: 9000 }),
      baseline: measurement(),
    }),
    scenarioReport(byId("l"), { system: measurement({ deliveriesPerSec: 250_000 }), baseline: measurement() }),
    scenarioReport(byId("m"), { system: measurement({ deliveriesPerSec: 150_000 }), baseline: measurement() }),
    scenarioReport(byId("o"), { system: measurement({ deliveriesPerSec: 200_000 }), baseline: null }),
  ];
  const compared = compareScenarios(reports).filter((c) => c.againstOriginal);
  assert.deepEqual(compared.map((c) => [c.scenario, c.against, c.value, c.pass]), [
    ["h", "b", 60, true],
    ["l", "d", 12.5, true],
    ["m", "d", 7.5, false],
    ["o", "d", 10, true],
  ]);
  const table = tableOf(reports);
  assert.match(table, /^\(l\) vs \(d\) original: 100 per \/api\/batch/m);
  assert.match(
    table,
    /^ {2}deliveries\/s over \(d\) original's publish requests\/s +250,000 +20,000 +12\.50x +≥ 10x +PASS$/m,
  );
  // Without the original, these targets are not shown and count neither way.
  const without = reports.map((r) =>
    scenarioReport(all.find((s) => s.id === r.id)!, { system: r.system, baseline: r.baseline })
  );
  assert.equal(compareScenarios(without).some((c) => c.againstOriginal), false);
});

Deno.test("memory: idle after start is held to the floor, and idle after the run to idle after start, per service and in total", () => {
  const memory = memoryReport({
    workers: 2,
    floorKiB: { hub: 36_000, pusher: 56_000, publisher: 36_000 },
    idleKiB: { hub: 40_000, pusher: 64_000, publisher: 40_000 },
    afterKiB: { hub: 60_000, pusher: 70_000, publisher: 45_000 },
    settleSeconds: 30,
  });
  assert.deepEqual(memory.goals.map((g) => [g.of, g.over, g.value?.toFixed(3), g.pass]), [
    ["idleKiB", "floorKiB", "1.125", true],
    ["afterKiB", "idleKiB", "1.215", false],
  ]);
  assert.deepEqual(goalSummary([], [], memory), { pass: 1, miss: 1 });
  const table = formatTable({
    startedAt: "",
    finishedAt: "",
    machine: { cpu: "Test CPU", cores: 2, deno: "2.9.6", kernel: "Linux version 6.1" },
    quick: false,
    repeat: 1,
    scale: 1,
    scenarios: [],
    comparisons: [],
    goals: goalSummary([], [], memory),
    memory,
  });
  assert.match(table, /^memory: VmRSS of the system \(MiB\); columns: total, hub \/ pusher \/ publisher, ratio$/m);
  assert.match(table, /^ {2}idle after start ÷ floor +140\.6 +39\.1 \/ 62\.5 \/ 39\.1 +1\.13x +≤ 1\.15x +PASS$/m);
  assert.match(table, /^ {2}idle after the run ÷ idle after start +170\.9 .* +1\.22x +≤ 1\.2x +MISS$/m);
});

Deno.test("CPU per delivery by service: the system's processes, the original's masters and workers summed, ratios", () => {
  const targeted = scenarioReport(d!, {
    system: measurement({
      deliveries: 5000,
      serviceCpuMsByProcess: { hub: 50, pusher: 110, publisher: 250 },
      loadGenCpuUsPerDelivery: 40,
    }),
    baseline: measurement(),
    original: measurement({
      deliveries: 5000,
      serviceCpuMsByProcess: {
        "hub master": 0,
        "hub worker 0": 110,
        "publisher master": 0,
        "publisher worker 0": 210,
        "pusher master": 0,
        "pusher worker 0": 50,
        "pusher worker 1": 80,
      },
      loadGenCpuUsPerDelivery: 50,
    }),
  });
  const broadcast = scenarioReport(b!, {
    system: measurement({ serviceCpuMsByProcess: { hub: 0, pusher: 60, publisher: 20 } }),
    baseline: measurement(),
  });
  const idle = scenarioReport(g!, { system: measurement({ deliveries: 0 }), baseline: measurement() });
  const report = reportOf([idle, broadcast, targeted]);
  const table = formatCpuByProcess(report);
  assert.match(table, /^ +hub +pusher +publisher +total +load generator$/m);
  assert.match(table, /^\(d\) system +10\.0 +22\.0 +50\.0 +82\.0 +40\.0$/m);
  assert.match(table, /^ {4}original +22\.0 +26\.0 +42\.0 +90\.0 +50\.0$/m);
  assert.match(table, /^ {4}÷original +0\.45x +0\.85x +1\.19x +0\.91x$/m);
  // 200,000 deliveries; the hub's 0 ms is under a tick, and without the original there is no ratio row.
  assert.match(table, /^\(b\) system +0\.00 +0\.30 +0\.10 +0\.40 +1\.00$/m);
  assert.doesNotMatch(table, /^\(g\)/m);
  assert.equal(table.match(/÷original/g)?.length, 1);
  assert.equal(formatCpuByProcess({ ...report, scenarios: [idle] }), "");
});
