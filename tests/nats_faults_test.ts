/**
 * A NATS node killed under load (issue 18): a 3-node cluster, two pushers of
 * two workers and a publisher started from their tasks with `--bus` naming
 * only the node that leads the history stream (they learn the others from
 * it), 1000 raw WebSocket clients of the history channel `news`, and a
 * steady stream of publishes each retried with its idempotency key until
 * answered ok. Then `kill -9` of that node.
 *
 * The guarantee tested, exactly: every publish to a history channel that was
 * answered ok reaches every client, once and in order, without the client
 * reconnecting: the pushers' and the publisher's links move to a live node
 * by themselves, the stream elects a new leader, and a pusher worker reads
 * what it missed while it moved from the stream (the bus fills the gap)
 * before it delivers anything newer. Publishes made while JetStream has no
 * leader are answered 503 (never a false ok) and retried.
 */

import assert from "node:assert/strict";
import { type Service, startService } from "./_service.ts";
import { startNats } from "./_nats.ts";
import { until } from "../channel/testing.ts";
import { NatsBus } from "../shared/nats_bus.ts";
import { quiet } from "../channel/testing.ts";
import { assertComplete, caughtUp, markClients, PublishStream, RecoveringClient } from "./_recovering.ts";

const CLIENTS = 1000;
const HISTORY = ["--history", "channel.*"];

async function startPusher(bus: string): Promise<Service> {
  const pusher = await startService("pusher", ["--port", "0", "--bus", bus, ...HISTORY, "--workers", "2"]);
  await pusher.port();
  await until(
    () => pusher.lines.filter((line) => line.includes('msg="connected to NATS"')).length >= 2,
    10_000,
    "both pusher workers' NATS links",
  );
  return pusher;
}

Deno.test("NATS fault (issue 18): kill -9 of the node leading the history stream under 1000 clients loses no publish answered ok, and no client reconnects", async () => {
  await using nats = await startNats({ nodes: 3 });
  // The stream exists before the services start, so its leader is known and they can be put on it.
  {
    await using setup = new NatsBus({
      servers: nats.servers,
      history: { subjects: ["channel.*"], size: 100, ttlMs: 300_000 },
      logger: quiet,
    });
    await setup.history("channel.setup", { timeout: 10_000 });
  }
  const leader = await nats.streamLeader("CHANNEL_HISTORY");
  const dying = nats.nodes.findIndex((node) => node.name === leader);
  const bus = `nats://127.0.0.1:${nats.nodes[dying]!.port}`;
  await using pusherA = await startPusher(bus);
  await using pusherB = await startPusher(bus);
  await using publisher = await startService("publisher", ["--port", "0", "--bus", bus, ...HISTORY]);
  const publisherPort = await publisher.port();
  const ports = [await pusherA.port(), await pusherB.port()];
  const clients: RecoveringClient[] = [];
  let stream: PublishStream | null = null;
  try {
    await until(
      async () => (await fetch(`http://127.0.0.1:${publisherPort}/healthz`).then((r) => r.text())) === "ok",
      10_000,
      "the publisher's NATS link",
    );
    for (let i = 0; i < CLIENTS; i += 100) {
      const batch = Array.from({ length: 100 }, (_, j) => new RecoveringClient(ports[(i + j) % 2]!));
      clients.push(...batch);
      await until(() => batch.every((c) => c.subscribed), 10_000, "a batch of 100 clients subscribed");
    }
    const marks = markClients(clients);
    stream = new PublishStream(() => publisherPort, "nats-kill", 0);
    await stream.more(20, "before the kill");
    const linksBefore = [pusherA, pusherB, publisher].map((s) => s.lines.length);
    await nats.kill(dying);
    // Every link was on the dead node: each must come back on another by itself.
    await until(
      () =>
        [pusherA, pusherB].every((s, i) =>
          s.lines.slice(linksBefore[i]).filter((line) => line.includes('msg="NATS link back"')).length >= 2
        ) && publisher.lines.slice(linksBefore[2]).some((line) => line.includes('msg="NATS link back"')),
      15_000,
      "every pusher worker's and the publisher's link back on a live node",
    );
    await stream.more(40, "after the kill");
    await stream.stop();
    await caughtUp(clients, stream.position!, 20_000);
    assertComplete(clients, marks, 1, stream.confirmed);
    for (const [i, client] of clients.entries()) {
      assert.equal(client.connections, 1, `client ${i} kept its WebSocket (${client.lastEnd})`);
    }
    console.log(
      `NATS kill -9 of ${leader}: ${stream.confirmed} published, ${stream.retries} answers other than ok retried`,
    );
  } finally {
    await stream?.stop().catch(() => {});
    await Promise.all(clients.map((c) => c[Symbol.asyncDispose]()));
    await pusherA.stop();
    await pusherB.stop();
    await publisher.stop();
  }
});
