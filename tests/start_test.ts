/**
 * `deno task start` as a user runs it. It serves the original's fixed ports
 * (2206, 4236, 4237): that is its job, so this test cannot use port 0.
 */

import assert from "node:assert/strict";
import { type Service, startCommand, startService } from "./_service.ts";
import { Client } from "../pusher/testing.ts";
import { RawSocket } from "../pusher/ws_testing.ts";
import { within } from "../channel/testing.ts";
import { taskCommand } from "../shared/tasks.ts";

Deno.test("deno task start runs hub, pusher and publisher on the original's ports and Ctrl-C stops all three", async () => {
  await using start = await startService("start");
  await start.waitForLine(/Ctrl-C stops all three/, 20_000);
  for (const line of ["Demo page:        http://127.0.0.1:4236/", 'ws = new WebSocket("ws://127.0.0.1:4236")']) {
    assert.ok(start.lines.some((l) => l.includes(line)), line);
  }
  assert.ok(start.lines.some((l) => l.includes("Dashboard:        http://127.0.0.1:4237/dashboard")), "dashboard");
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

/** `deno task start` as a terminal runs it: the leader of a process group of its own, which Ctrl-C signals whole. */
async function startInTerminal(): Promise<Service> {
  const start = startCommand("start", ["setsid", ...await taskCommand("start")]);
  await start.waitForLine(/Ctrl-C stops all three/, 20_000);
  return start;
}

function signalGroup(pgid: number, signal: Deno.Signal): Promise<Deno.CommandOutput> {
  return new Deno.Command("kill", { args: [`-${signal}`, "--", `-${pgid}`] }).output();
}

Deno.test("Ctrl-C on deno task start drains every service, though the terminal signals the whole group", async () => {
  await using start = await startInTerminal();
  // A client that does not answer the pusher's 1001 keeps its drain going for a second.
  await using _silent = await RawSocket.open(4236);
  await signalGroup(start.process.pid, "SIGINT");
  assert.equal((await within(start.process.status, 20_000, "deno task start to stop")).code, 0);
  await start.stop();
  for (const service of ["publisher", "pusher", "channel"]) {
    assert.ok(start.lines.some((l) => l.includes(`svc=${service} msg=stopped`)), `${service} drained`);
  }
});

Deno.test("a second signal to deno task start ends every service at once, leaving none behind", async () => {
  await using start = await startInTerminal();
  await using _silent = await RawSocket.open(4236);
  start.process.kill("SIGTERM");
  await start.waitForLine(/svc=publisher msg=stopped/);
  start.process.kill("SIGTERM"); // the pusher is still draining
  assert.equal((await within(start.process.status, 20_000, "deno task start to stop")).code, 1);
  await start.stop();
  for (const port of [2206, 4236, 4237]) {
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }), `nothing listens on ${port}`);
  }
});

Deno.test("a terminal hangup (SIGHUP to the group) drains every service under deno task start", async () => {
  await using start = await startInTerminal();
  await signalGroup(start.process.pid, "SIGHUP");
  assert.equal((await within(start.process.status, 20_000, "deno task start to stop")).code, 0);
  await start.stop();
  for (const service of ["publisher", "pusher", "channel"]) {
    assert.ok(start.lines.some((l) => l.includes(`svc=${service} msg=stopped`)), `${service} drained`);
  }
});
