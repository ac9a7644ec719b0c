/**
 * `deno task start` as a user runs it. It serves the original's fixed ports
 * (2206, 4236, 4237): that is its job, so this test cannot use port 0.
 */

import assert from "node:assert/strict";
import { startService } from "./_service.ts";
import { Client } from "../pusher/_testing.ts";

Deno.test("deno task start runs hub, pusher and publisher on the original's ports and Ctrl-C stops all three", async () => {
  await using start = await startService("start");
  await start.waitForLine(/Ctrl-C stops all three/, 20_000);
  for (const line of ["Demo page:        http://127.0.0.1:4236/", 'ws = new WebSocket("ws://127.0.0.1:4236")']) {
    assert.ok(start.lines.some((l) => l.includes(line)), line);
  }
  await using client = new Client(4236);
  const { worker, connection } = await client.address();
  const answer = await fetch(`http://127.0.0.1:4237/?to_worker_id=${worker}&to_connection_id=${connection}&content=hi`);
  assert.equal(await answer.text(), "ok");
  assert.deepEqual((await client.received(2)).slice(1), ["hi"]);

  const status = await start.stop("SIGINT");
  assert.equal(status.code, 0);
  for (const service of ["publisher", "pusher", "channel"]) {
    assert.ok(start.lines.some((l) => l.includes(`svc=${service} msg=stopped`)), `${service} stopped cleanly`);
  }
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: 2206 }), "the hub is gone");
});
