/**
 * A network blip between a pusher and its bus, on each bus, with real
 * processes started as the README starts them: what the publisher answered
 * ok while the pusher's link was down reaches the pusher's clients, in
 * order and once, both when the channel goes on (it comes before the next
 * publication) and when it stays quiet (it comes once the pusher sees its
 * link came back). The hub and Redis keep nothing for a link that is down;
 * the pusher reads it from the channel's history (`pusher/catch_up.ts`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { startService } from "./_service.ts";
import { startRedis } from "./_redis.ts";
import { startNats } from "./_nats.ts";
import { LinkCutter } from "./_link_cutter.ts";
import { CHANNEL, RecoveringClient } from "./_recovering.ts";
import { until } from "../channel/testing.ts";

const HISTORY = ["--history", "channel.*"];

async function publish(port: number, from: number, to: number): Promise<void> {
  for (let data = from; data <= to; data++) {
    const response = await fetch(`http://127.0.0.1:${port}/api/publish`, {
      method: "POST",
      body: JSON.stringify({ channel: CHANNEL, data }),
    });
    assert.equal(response.status, 200, `publish ${data}: ${await response.text()}`);
  }
}

async function healthy(port: number): Promise<boolean> {
  const response = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => null);
  await response?.body?.cancel();
  return response?.status === 200;
}

/** Cuts the pusher's link, waits until the pusher sees it down, runs `meanwhile` (publishes it misses), and restores it. */
async function whileCut(cutter: LinkCutter, pusherPort: number, meanwhile: () => Promise<void>): Promise<void> {
  cutter.cut();
  await until(async () => !await healthy(pusherPort), 10_000, "the pusher to see its link down");
  await meanwhile();
  cutter.restore();
}

/** Runs the blip against a pusher whose bus is reached through `cutter`, and a publisher on the bus itself. */
async function blip(cutter: LinkCutter, pusherArgs: string[], publisherArgs: string[]): Promise<void> {
  await using pusher = await startService("pusher", ["--port", "0", "--workers", "1", ...pusherArgs]);
  await using publisher = await startService("publisher", ["--port", "0", ...publisherArgs]);
  const [pusherPort, publisherPort] = [await pusher.port(), await publisher.port()];
  await until(() => healthy(pusherPort), 10_000, "the pusher's bus link");
  await until(() => healthy(publisherPort), 10_000, "the publisher's bus link");
  await using client = new RecoveringClient(pusherPort);
  await until(() => client.subscribed, 10_000, "the client's subscribe");
  await publish(publisherPort, 1, 10);
  await until(() => client.data.length === 10, 10_000, "the first ten");

  // The channel goes on after the blip: what was missed comes before the next publication.
  await whileCut(cutter, pusherPort, () => publish(publisherPort, 11, 20));
  await until(() => healthy(pusherPort), 10_000, "the pusher's link back");
  await publish(publisherPort, 21, 30);
  await until(() => client.data.length >= 30, 10_000, "11 to 30").catch((error) => {
    throw new Error(`${error.message}; got ${client.data}; ${client.violations}`);
  });

  // The channel stays quiet after the blip: what was missed comes all the same.
  await whileCut(cutter, pusherPort, () => publish(publisherPort, 31, 40));
  await until(() => client.data.length >= 40, 10_000, "31 to 40 with nothing published after them").catch(
    (error) => {
      throw new Error(`${error.message}; got ${client.data}; ${client.violations}`);
    },
  );
  assert.deepEqual(client.violations, [], "no gap, duplicate or disorder");
  assert.deepEqual(client.data, Array.from({ length: 40 }, (_, i) => i + 1));
  assert.equal(client.connections, 1, "the client's own connection stayed up");
}

Deno.test("a pusher's link to the hub drops and comes back: its clients get everything published meanwhile, in order, once", async () => {
  await using hub = await startService("channel", ["--port", "0", ...HISTORY]);
  const hubPort = await hub.port();
  await using cutter = new LinkCutter(hubPort);
  await blip(cutter, ["--hub", `127.0.0.1:${cutter.port}`], ["--hub", `127.0.0.1:${hubPort}`]);
});

Deno.test("a pusher's link to Redis drops and comes back: its clients get everything published meanwhile, in order, once", async () => {
  await using redis = await startRedis();
  await using cutter = new LinkCutter(redis.port);
  await blip(cutter, ["--bus", `redis://127.0.0.1:${cutter.port}`, ...HISTORY], ["--bus", redis.address, ...HISTORY]);
});

Deno.test("a pusher's link to NATS drops and comes back: its clients get everything published meanwhile, in order, once", async () => {
  await using nats = await startNats();
  const port = nats.servers[0]!.port;
  await using cutter = new LinkCutter(port);
  await blip(cutter, ["--bus", `nats://127.0.0.1:${cutter.port}`, ...HISTORY], [
    "--bus",
    `nats://127.0.0.1:${port}`,
    ...HISTORY,
  ]);
});

Deno.test("a pusher whose link's drop missed more than a channel's history keeps closes its clients with 3010, and they are told recovered: false", async () => {
  await using hub = await startService("channel", ["--port", "0", ...HISTORY, "--history-size", "5"]);
  const hubPort = await hub.port();
  await using cutter = new LinkCutter(hubPort);
  await using pusher = await startService("pusher", [
    "--port",
    "0",
    "--workers",
    "1",
    "--hub",
    `127.0.0.1:${cutter.port}`,
  ]);
  await using publisher = await startService("publisher", ["--port", "0", "--hub", `127.0.0.1:${hubPort}`]);
  const [pusherPort, publisherPort] = [await pusher.port(), await publisher.port()];
  await until(() => healthy(pusherPort), 10_000, "the pusher's bus link");
  await using client = new RecoveringClient(pusherPort);
  await until(() => client.subscribed, 10_000, "the client's subscribe");
  await publish(publisherPort, 1, 3);
  await until(() => client.data.length === 3, 10_000, "the first three");
  // 17 missed, and the hub keeps 5 of them.
  await whileCut(cutter, pusherPort, () => publish(publisherPort, 4, 20));
  await until(() => healthy(pusherPort), 10_000, "the pusher's link back");
  await publish(publisherPort, 21, 21);
  await until(() => client.notRecovered === 1 && client.subscribed, 10_000, "the client told it did not recover");
  assert.match(client.lastEnd, /closed by the server \(3010\)/);
  assert.equal(client.connections, 2);
  assert.deepEqual(client.data, [1, 2, 3], "nothing past the gap on the first connection");
  await publish(publisherPort, 22, 22);
  await until(() => client.data.at(-1) === 22, 10_000, "the channel going on");
  assert.deepEqual(client.violations, []);
});
