/**
 * `deno task bench --quick --buses channel,nats,redis` as a user runs it, on
 * free ports: the chosen scenarios run on the hub and, with pusher and
 * publisher on a real nats-server and redis-server the bench starts itself,
 * on each bus; nothing is lost there either, the buses' table and the JSON's
 * `buses` hold every bus against the hub. Ratios are not asserted: too noisy
 * for CI.
 */

import assert from "node:assert/strict";
import { ROOT } from "../shared/tasks.ts";
import { lastLines, runTask } from "../bench/_child.ts";
import type { BenchReport } from "../bench/report.ts";
import type { BusesReport } from "../bench/bus_report.ts";

const DEADLINE_MS = 90_000;

Deno.test("deno task bench --buses runs (d) and (j) on the hub, NATS and Redis, loses nothing and prints each against the hub", async () => {
  const out = `bench/results/bench-buses-test-${crypto.randomUUID()}.json`;
  try {
    const { status, stdout, stderr } = await runTask("bench", [
      "--quick",
      ...["--scenarios", "d,j", "--buses", "channel,nats,redis", "--out", out],
      ...["--hub-port", "0", "--pusher-port", "0", "--publisher-port", "0", "--baseline-port", "0"],
    ], { timeout: DEADLINE_MS, what: "deno task bench --quick --buses to finish" });
    assert.equal(status.code, 0, `exit code; the end of stderr:\n${lastLines(stderr)}`);
    assert.match(stdout, /^Buses: the same scenarios with pusher and publisher on nats, redis instead of the hub/m);
    assert.match(stdout, /^ +hub +nats +÷hub +redis +÷hub$/m);
    assert.match(stdout, /^ {2}publish requests\/s +[\d,]+ +[\d,]+ +[\d.]+x +[\d,]+ +[\d.]+x$/m);

    const report: BenchReport & { buses?: BusesReport } = JSON.parse(await Deno.readTextFile(new URL(out, ROOT)));
    assert.ok(report.buses, "the JSON has the buses");
    assert.deepEqual(report.buses.buses, ["nats", "redis"]);
    assert.deepEqual(report.buses.scenarios.map((s) => s.id), ["d", "j"]);
    for (const scenario of report.buses.scenarios) {
      const hub = report.scenarios.find((s) => s.id === scenario.id)!;
      for (const kind of ["nats", "redis"] as const) {
        const figures = scenario.buses[kind];
        const where = `(${scenario.id}) ${kind}`;
        assert.ok(figures, `${where} ran`);
        assert.deepEqual(figures.hub, hub.system, `${where}: against the hub's run`);
        const run = figures.bus;
        assert.equal(run.publishes, hub.system.publishes, `${where}: the same load`);
        assert.equal(run.clients, scenario.id === "d" ? 20 : 40, `${where}: every client connected`);
        assert.equal(run.failedPublishes, 0, `${where}: failed publishes ${JSON.stringify(run.failures)}`);
        assert.equal(run.lost, 0, `${where}: messages lost`);
        assert.equal(run.misdirected, 0, `${where}: misdirected`);
        assert.equal(run.reordered, 0, `${where}: reordered`);
        assert.equal(run.deliveries, run.expectedDeliveries, `${where}: deliveries`);
        assert.ok((figures.ratios.publishesPerSec ?? 0) > 0, `${where}: a ratio to the hub`);
        assert.ok(kind in run.serviceCpuMsByProcess, `${where}: the bus server's CPU counts`);
      }
    }
  } finally {
    await Deno.remove(new URL(out, ROOT)).catch(() => {});
  }
});

Deno.test("deno task bench refuses an unknown bus before starting anything", async () => {
  const { status, stderr } = await runTask("bench", ["--buses", "nats,kafka"], {
    timeout: 30_000,
    what: "deno task bench --buses nats,kafka to exit",
  });
  assert.equal(status.code, 2);
  assert.match(stderr, /Invalid --buses: no bus kafka; pick from channel,nats,redis/);
});
