import assert from "node:assert/strict";
import { startService } from "./_service.ts";
import { HubClient } from "../channel/client.ts";
import { quiet, until, within } from "../channel/testing.ts";
import type { Json } from "../shared/wire.ts";

Deno.test("clients reconnect, re-subscribe and get deliveries again after the hub process is killed and restarted", async () => {
  const first = await startService("channel", ["--port", "0"]);
  const port = await first.port();
  const options = { port, logger: quiet, reconnectDelay: 50, maxReconnectDelay: 200, publishTimeout: 10_000 };
  await using subscriber = new HubClient(options);
  await using publisher = new HubClient(options);
  const events: Json[] = [];
  const jobs: Json[] = [];
  subscriber.subscribe("news", (data) => events.push(data));
  subscriber.watch("jobs", (data) => {
    jobs.push(data);
  });
  await subscriber.ready();
  assert.equal(await publisher.publish("news", "before"), 1);

  const status = await first.stop("SIGKILL");
  assert.equal(status.signal, "SIGKILL");
  await until(() => !subscriber.connected && !publisher.connected, 5000, "both clients to notice");
  const during = publisher.publish("news", "during the outage");

  await using second = await startService("channel", ["--port", String(port)]);
  assert.equal(await second.port(), port);
  assert.equal(await within(during, 10_000, "the publish made during the outage"), 1);
  assert.equal(await publisher.publish("news", "after"), 1);
  assert.deepEqual(events, ["before", "during the outage", "after"]);
  assert.equal(await publisher.enqueue("jobs", "job"), 1);
  await until(() => jobs.length === 1, 5000, "the restored queue watch to get the job");
});

Deno.test("hub task prints help and refuses a public address without a token", async () => {
  await using help = await startService("channel", ["--help"]);
  await help.waitForLine(/^Usage: deno task channel/);
  assert.equal((await help.process.status).code, 0);
  await using open = await startService("channel", ["--hostname", "0.0.0.0", "--port", "0"]);
  await open.waitForLine(/Refusing to listen on 0\.0\.0\.0 without a token/);
  assert.equal((await open.process.status).code, 2);
});

Deno.test("hub on SIGTERM stops accepting, closes its clients, and exits 0 within its shutdown grace", async () => {
  await using hub = await startService("channel", ["--port", "0", "--shutdown-grace", "500"]);
  const port = await hub.port();
  await using client = new HubClient({ port, logger: quiet, reconnectDelay: 50 });
  await client.ready();
  const dropped = new Promise((resolve) => client.addEventListener("disconnected", resolve, { once: true }));
  const started = Date.now();
  const status = await hub.stop("SIGTERM");
  assert.equal(status.code, 0);
  assert.ok(Date.now() - started < 3000, "bounded");
  await within(dropped, 5000, "the client to see the hub go");
  assert.ok(hub.lines.some((line) => line.includes('msg="shutting down" signal=SIGTERM')));
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }), "no longer accepting");
});
