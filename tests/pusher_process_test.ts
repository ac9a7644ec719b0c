import assert from "node:assert/strict";
import { startService } from "./_service.ts";
import { Client } from "../pusher/_testing.ts";

Deno.test("pusher task prints help, and refuses bad flags with exit code 2", async () => {
  await using help = await startService("pusher", ["--help"]);
  await help.waitForLine(/^Usage: deno task pusher/);
  assert.equal((await help.process.status).code, 0);
  await using bad = await startService("pusher", ["--workers", "two"]);
  await bad.waitForLine(/Invalid --workers/);
  assert.equal((await bad.process.status).code, 2);
});

Deno.test("pusher workers share one port, each with its own worker id, and SIGTERM closes clients with 1001", async () => {
  await using hub = await startService("channel", ["--port", "0"]);
  await using pusher = await startService("pusher", [
    "--port",
    "0",
    "--workers",
    "3",
    "--hub",
    `127.0.0.1:${await hub.port()}`,
  ]);
  const port = await pusher.port();
  assert.equal(pusher.lines.filter((line) => line.includes('msg="worker started"')).length, 3);
  const clients = Array.from({ length: 30 }, () => new Client(port));
  try {
    const workers = new Set((await Promise.all(clients.map((c) => c.address()))).map((a) => a.worker));
    assert.ok(workers.size >= 2, `30 connections all landed on one worker of 3`);
    const closing = clients.map((client) => client.closed);
    assert.equal((await pusher.stop("SIGTERM")).code, 0);
    for (const event of await Promise.all(closing)) assert.equal(event.code, 1001);
  } finally {
    await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
  }
});
