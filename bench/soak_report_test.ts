import assert from "node:assert/strict";
import type { SoakResult } from "./soak_load.ts";
import { formatSoakTable, type RssSample, slopePerMinute, type SoakMeasurements, soakReport } from "./soak_report.ts";

function load(overrides: Partial<SoakResult> = {}): SoakResult {
  return {
    type: "result",
    clients: 100,
    connectMs: 50,
    joined: 40,
    left: 40,
    minClients: 99,
    maxClients: 100,
    connectFailures: 0,
    connectFailureSample: [],
    broadcasts: { scheduled: 80, sent: 80, ok: 80, failed: 0 },
    targeted: { scheduled: 400, sent: 400, ok: 400, failed: 0 },
    failedPublishes: 0,
    failures: {},
    checkedClients: 140,
    checkedBroadcastDeliveries: 9000,
    checkedTargetedDeliveries: 390,
    lost: 0,
    lostBroadcast: 0,
    lostTargeted: 0,
    lostSample: [],
    duplicates: 0,
    misdirected: 0,
    deliveries: 9500,
    foreign: 0,
    unexpectedCloses: {},
    latencyUs: { p50: 500, p99: 2000, max: 9000 },
    loadMs: 8000,
    drainMs: 100,
    stalled: false,
    ...overrides,
  };
}

/** One sample a second for 8 s: the hub flat at 100 MiB, the pusher from 200 MiB up by `growth` KiB a second. */
function samples(growth: number): RssSample[] {
  return Array.from({ length: 8 }, (_, i) => ({ t: i + 1, clients: 100, kib: [102_400, 204_800 + growth * i] }));
}

function measurements(overrides: Partial<SoakMeasurements> = {}): SoakMeasurements {
  return {
    startedAt: "2026-01-01T00:00:00.000Z",
    finishedAt: "2026-01-01T00:00:10.000Z",
    machine: { cpu: "test", cores: 2, deno: "2.9.6", kernel: "Linux version 6" },
    quick: true,
    config: {
      clients: 100,
      churnPerSec: 5,
      broadcastsPerSec: 10,
      targetedPerSec: 50,
      durationS: 8,
      warmupS: 3,
      settleS: 1,
    },
    load: load(),
    names: ["hub", "pusher"],
    idleKiB: [50_000, 100_000],
    connectedKiB: [50_000, 150_000],
    samples: samples(0),
    endKiB: [102_400, 204_800],
    ...overrides,
  };
}

Deno.test("a soak with nothing lost and flat memory passes", () => {
  const report = soakReport(measurements());
  assert.equal(report.pass, true);
  assert.deepEqual(report.rss.processes.map((p) => [p.name, p.warmUpKiB, p.ratio, p.pass]), [
    ["hub", 102_400, 1, true],
    ["pusher", 204_800, 1, true],
  ]);
  assert.match(formatSoakTable(report), /^soak: PASS$/m);
});

Deno.test("RSS is compared between the sample at the end of the warm-up and the end sample, 10% allowed", () => {
  // Warm-up sample: t = 3 s, the third one: 204_800 + 2 × 1000 KiB for the pusher.
  const warmUp = 204_800 + 2000;
  const within = soakReport(measurements({ samples: samples(1000), endKiB: [102_400, Math.floor(warmUp * 1.1)] }));
  assert.equal(within.rss.processes[1]!.warmUpKiB, warmUp);
  assert.equal(within.pass, true);
  const over = soakReport(measurements({ samples: samples(1000), endKiB: [102_400, Math.ceil(warmUp * 1.1) + 1] }));
  assert.equal(over.pass, false);
  assert.deepEqual(over.checks.filter((c) => !c.pass).map((c) => c.name), ["RSS pusher end/warm-up"]);
  assert.match(formatSoakTable(over), /^soak: FAIL \(RSS pusher end\/warm-up\)$/m);
});

Deno.test("a soak that lost a delivery, or failed a publish, fails", () => {
  const lost = soakReport(measurements({ load: load({ lost: 1, lostTargeted: 1 }) }));
  assert.deepEqual(lost.checks.filter((c) => !c.pass).map((c) => c.name), ["lost"]);
  const failed = soakReport(measurements({ load: load({ failedPublishes: 2, failures: { "503 x": 2 } }) }));
  assert.deepEqual(failed.checks.filter((c) => !c.pass).map((c) => c.name), ["failed publishes"]);
});

Deno.test("a soak that checked nothing fails", () => {
  const report = soakReport(
    measurements({ load: load({ checkedBroadcastDeliveries: 0, checkedTargetedDeliveries: 0 }) }),
  );
  assert.deepEqual(report.checks.filter((c) => !c.pass).map((c) => c.name), ["deliveries checked"]);
});

Deno.test("a soak without a warm-up sample fails its RSS checks", () => {
  const report = soakReport(measurements({ samples: [] }));
  assert.equal(report.pass, false);
  assert.ok(report.rss.processes.every((p) => p.warmUpKiB === null && !p.pass));
});

Deno.test("the RSS trend is a least-squares slope per minute", () => {
  assert.equal(slopePerMinute([[0, 100], [1, 110], [2, 120]]), 600);
  assert.equal(slopePerMinute([[0, 100], [1, 100]]), null);
});
