/**
 * `deno task bench --quick` as a user runs it, on free ports: every scenario
 * runs against the system and the baseline, nothing is lost, the JSON is
 * written. Performance ratios are not asserted: too noisy for CI.
 */

import assert from "node:assert/strict";
import { ROOT, taskCommand } from "../shared/tasks.ts";
import { within } from "../channel/_testing.ts";
import type { BenchReport } from "../bench/report.ts";

const DEADLINE_MS = 60_000;

Deno.test("deno task bench --quick runs every scenario against system and baseline, loses nothing and writes its JSON", async () => {
  const out = `bench/results/bench-test-${crypto.randomUUID()}.json`;
  const [exe, ...args] = await taskCommand("bench");
  const process = new Deno.Command(exe!, {
    args: [
      ...args,
      "--quick",
      "--out",
      out,
      ...["--hub-port", "0", "--pusher-port", "0", "--publisher-port", "0", "--baseline-port", "0"],
    ],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Response(process.stdout).text();
  const stderr = new Response(process.stderr).text();
  try {
    let status: Deno.CommandStatus;
    try {
      status = await within(process.status, DEADLINE_MS, "deno task bench --quick to finish");
    } catch (error) {
      // SIGTERM: the bench stops the services it started before it exits.
      process.kill("SIGTERM");
      await process.status;
      throw error;
    } finally {
      await Promise.all([stdout, stderr]);
    }
    assert.equal(status.code, 0, `exit code; stderr:\n${await stderr}`);
    assert.match(await stdout, /^machine: .+, \d+ cores, Deno \d/m);
    assert.match(await stdout, /targets: \d+ PASS, \d+ MISS/);

    const report: BenchReport = JSON.parse(await Deno.readTextFile(new URL(out, ROOT)));
    assert.deepEqual(report.scenarios.map((s) => s.id), ["a", "b", "c", "d", "e", "f", "g"]);
    for (const scenario of report.scenarios) {
      for (const target of ["system", "baseline"] as const) {
        const run = scenario[target];
        const where = `(${scenario.id}) ${target}`;
        assert.ok(run, `${where} is present`);
        assert.equal(run.clients, scenario.clients, `${where}: every client connected`);
        assert.equal(run.lost, 0, `${where}: messages lost`);
        assert.equal(run.failedPublishes, 0, `${where}: failed publishes ${JSON.stringify(run.failures)}`);
        if (scenario.mode === "idle") {
          assert.equal(typeof run.rssKiBPerConnection, "number", `${where}: RSS per connection`);
          continue;
        }
        assert.equal(run.deliveries, run.expectedDeliveries, `${where}: deliveries`);
        assert.ok((run.deliveriesPerSec ?? 0) > 0, `${where}: deliveries/s`);
        assert.ok((run.publishesPerSec ?? 0) > 0, `${where}: publishes/s`);
        assert.ok(run.latencyUs && run.latencyUs.p50 > 0, `${where}: latency`);
      }
    }
  } finally {
    await Deno.remove(new URL(out, ROOT)).catch(() => {});
  }
});
