/**
 * `deno task soak --quick` as a user runs it, on free ports: clients come and
 * go under mixed traffic, nothing owed to a connected client is lost, every
 * publish is answered 200, the JSON is written. RSS is not asserted: at smoke
 * sizes a few MiB of heap growth is more than 10%, and that says nothing.
 */

import assert from "node:assert/strict";
import { ROOT } from "../shared/tasks.ts";
import { runTask } from "../bench/_child.ts";
import type { SoakReport } from "../bench/soak_report.ts";

const DEADLINE_MS = 30_000;

Deno.test("deno task soak --quick loses nothing for connected clients and fails no publish", async () => {
  const out = `bench/results/soak-test-${crypto.randomUUID()}.json`;
  try {
    const { status, stdout, stderr } = await runTask(
      "soak",
      ["--quick", "--out", out, ...["--hub-port", "0", "--pusher-port", "0", "--publisher-port", "0"]],
      { timeout: DEADLINE_MS, what: "deno task soak --quick to finish" },
    );
    // 0 PASS, 1 FAIL: either way the soak ran to the end; RSS alone may fail it here.
    assert.ok(status.code === 0 || status.code === 1, `exit code ${status.code}; stderr:\n${stderr}`);
    assert.match(stdout, /^soak: (PASS|FAIL)/m);

    const report: SoakReport = JSON.parse(await Deno.readTextFile(new URL(out, ROOT)));
    const { load } = report;
    assert.equal(load.lost, 0, `lost: ${JSON.stringify(load.lostSample)}`);
    assert.equal(load.failedPublishes, 0, `failed publishes: ${JSON.stringify(load.failures)}`);
    assert.ok(load.left > 0 && load.joined > 0, `clients left (${load.left}) and joined (${load.joined})`);
    assert.ok(load.checkedBroadcastDeliveries > 0, "broadcast deliveries checked");
    assert.ok(load.checkedTargetedDeliveries > 0, "targeted deliveries checked");
  } finally {
    await Deno.remove(new URL(out, ROOT)).catch(() => {});
  }
});
