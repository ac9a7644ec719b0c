/**
 * Recovery across faults with real processes (issue 17): a hub keeping
 * history (`--history channel.*`), a pusher with two workers and a publisher,
 * started as the README starts them, and 1000 raw WebSocket clients of the
 * channel `news` that reconnect by themselves and subscribe again with
 * `since` their last position.
 *
 * A steady stream of publishes (`data` 1, 2, 3, ..., each retried with its
 * `idempotency_key` until answered ok) runs through each fault in turn: a
 * pusher restart, a pusher worker crash, the clients' own network drop.
 * Every client must end with 1..N in order, exactly once, and with
 * `recovered: true` on its last resubscribe. Then the hub restarts: its
 * history is in memory, so every client must be told that it could not
 * recover (a new epoch on a live frame, or `recovered: false`), and never
 * get a gap or a duplicate inside one epoch.
 *
 * And the history a hub keeps is not pushed out by reads: browsers
 * subscribing to channels nobody published to (each subscribe reads the
 * channel's history) leave a published channel its history.
 *
 * "Up to the history window" is the pusher's `--max-recover-messages` and
 * the hub's `--history-size`, both 100 by default: the publish rate is kept
 * so that an outage of the pusher (about two seconds here) stays well inside
 * those 100 messages.
 */

import assert from "node:assert/strict";
import { type Service, startPublisherOnHub, startPusherOnHub, startService } from "./_service.ts";
import { until } from "../channel/testing.ts";
import { Client } from "../pusher/testing.ts";
import { publisherApi } from "./_publisher_api.ts";
import { assertComplete, caughtUp, markClients, PublishStream, RecoveringClient, sleep } from "./_recovering.ts";

const CLIENTS = 1000;

async function startPusher(hubAddr: string, port = 0): Promise<Service> {
  return (await startPusherOnHub(hubAddr, { port, args: ["--workers", "2"] })).service;
}

Deno.test("recovery (issue 17): 1000 clients miss nothing across a pusher restart, a worker crash and a network drop; a hub restart is told, never hidden", async (t) => {
  const started = performance.now();
  let hub = await startService("channel", ["--port", "0", "--history", "channel.*"]);
  const hubPort = await hub.port();
  const hubAddr = `127.0.0.1:${hubPort}`;
  let pusher = await startPusher(hubAddr);
  const pusherPort = await pusher.port();
  await using publisher = await startService("publisher", ["--port", "0", "--hub", hubAddr]);
  const publisherPort = await publisher.port();
  const clients: RecoveringClient[] = [];
  let stream = null as PublishStream | null;
  const timings: string[] = [];
  const mark = (what: string) => timings.push(`${what} ${Math.round(performance.now() - started)} ms`);
  try {
    await until(
      async () => (await fetch(`http://127.0.0.1:${publisherPort}/healthz`).then((r) => r.text())) === "ok",
      10_000,
      "the publisher's hub link",
    );
    for (let i = 0; i < CLIENTS; i += 100) {
      const batch = Array.from({ length: 100 }, () => new RecoveringClient(pusherPort));
      clients.push(...batch);
      await until(() => batch.every((c) => c.subscribed), 10_000, "a batch of 100 clients subscribed");
    }
    assert.ok(clients.every((c) => c.position !== null), "every first subscribe gives a position");
    mark("setup");

    /**
     * Runs the stream through `inject`, waits for the clients it cut off
     * to subscribe again, then stops the stream and checks every client.
     */
    const throughFault = async (name: string, inject: () => Promise<void>, minAffected: number) => {
      const connectionsBefore = clients.map((c) => c.connections);
      const marks = markClients(clients);
      for (const client of clients) client.largestRecovery = 0;
      const first = (stream?.confirmed ?? 0) + 1;
      stream = new PublishStream(() => publisherPort, name, first - 1);
      await stream.more(20, `before the ${name}`);
      await inject();
      const affected = () => clients.filter((c, i) => c.connections > connectionsBefore[i]!);
      await until(
        () => clients.every((c) => c.subscribed) && affected().length >= minAffected,
        20_000,
        `every client subscribed again after the ${name}, at least ${minAffected} of them on a new connection`,
      ).catch((error) => {
        throw new Error(
          `${error.message}: ${
            clients.filter((c) => !c.subscribed).length
          } not subscribed, ${affected().length} reconnected`,
        );
      });
      await stream.more(20, `after the ${name}`);
      await stream.stop();
      await caughtUp(clients, stream.position!, 10_000);
      assertComplete(clients, marks, first, stream.confirmed);
      const reconnected = affected();
      for (const [i, client] of reconnected.entries()) {
        assert.equal(client.lastRecovered, true, `reconnected client ${i}: its last resubscribe recovered`);
      }
      const largest = Math.max(...reconnected.map((c) => c.largestRecovery));
      mark(
        `${name}: ${reconnected.length} reconnected, ${stream.confirmed} published, ${stream.retries} retries, ` +
          `at most ${largest} publications recovered at once`,
      );
    };

    await t.step("a pusher restart (SIGTERM, and again on the same port)", async () => {
      await throughFault("pusher restart", async () => {
        assert.equal((await pusher.stop("SIGTERM")).code, 0);
        pusher = await startPusher(hubAddr, pusherPort);
      }, CLIENTS);
    });

    await t.step("a pusher worker crash (SIGUSR2)", async () => {
      const restarts = pusher.lines.length;
      await throughFault("worker crash", async () => {
        pusher.process.kill("SIGUSR2");
        await until(
          () => pusher.lines.slice(restarts).filter((line) => line.includes('msg="connected to hub"')).length >= 1,
          10_000,
          "the replacement worker's hub link",
        );
      }, 1);
    });

    await t.step("the clients' own network drop (a third of them, 500 ms away)", async () => {
      await throughFault("network drop", () => {
        for (const [i, client] of clients.entries()) if (i % 3 === 0) client.drop(500);
        return Promise.resolve();
      }, Math.ceil(CLIENTS / 3));
    });

    await t.step(
      "a hub restart: every client is told it could not recover, never handed a wrong sequence",
      async () => {
        const oldEpoch = clients[0]!.position!.epoch;
        assert.ok(clients.every((c) => c.position?.epoch === oldEpoch), "one epoch before the restart");
        const toldBefore = clients.map((c) => c.notRecovered);
        const marks = markClients(clients);
        const subscribesBefore = clients.map((c) => c.subscribes);
        const linksBefore = pusher.lines.filter((line) => line.includes('msg="connected to hub"')).length;
        stream = new PublishStream(() => publisherPort, "hub restart", stream?.confirmed ?? 0);
        await stream.more(20, "before the hub restart");
        assert.equal((await hub.stop("SIGKILL")).signal, "SIGKILL");
        // A third of the clients come back while the hub is away: their resubscribe cannot recover.
        for (const [i, client] of clients.entries()) if (i % 3 === 1) client.drop(100);
        await sleep(500); // the outage
        hub = await startService("channel", ["--port", String(hubPort), "--history", "channel.*"]);
        await hub.port();
        await until(
          () => pusher.lines.filter((line) => line.includes('msg="connected to hub"')).length >= linksBefore + 2,
          10_000,
          "both pusher workers' hub links back",
        );
        await until(() => stream!.position?.epoch !== oldEpoch, 15_000, "a publish answered ok in the new epoch");
        await stream.more(20, "after the hub restart");
        await stream.stop();
        const top = stream.position!;
        assert.notEqual(top.epoch, oldEpoch, "the restarted hub has another epoch");
        await caughtUp(clients, top, 10_000);
        for (const [i, client] of clients.entries()) {
          assert.deepEqual(
            client.violations.slice(marks[i]!.violations),
            [],
            `client ${i}: no gap or duplicate inside an epoch`,
          );
          assert.ok(client.notRecovered > toldBefore[i]!, `client ${i}: told it could not recover`);
          if (client.subscribes > subscribesBefore[i]!) {
            assert.equal(
              client.lastRecovered,
              false,
              `client ${i}: its resubscribe across the restart did not recover`,
            );
          }
        }
        const byFrame = clients.filter((c, i) => c.newEpochFrames > 0 && c.notRecovered > toldBefore[i]!).length;
        mark(
          `hub restart: ${stream.retries} retries, new epoch to offset ${top.offset}, ${byFrame} told by a new epoch frame`,
        );
      },
    );
  } finally {
    await stream?.stop().catch(() => {});
    await Promise.all(clients.map((c) => c[Symbol.asyncDispose]()));
    await pusher.stop();
    await hub.stop();
    console.log(timings.join("\n"));
  }
});

Deno.test("browsers subscribing to channels nobody published to do not cost another channel its history", async () => {
  // Room for two subjects' history: reading three more must not push out the one published to.
  await using hub = await startService("channel", [
    "--port",
    "0",
    "--history",
    "channel.*",
    "--max-history-subjects",
    "2",
  ]);
  const hubPort = await hub.port();
  await using pusher = (await startPusherOnHub(hubPort)).service;
  const pusherPort = await pusher.port();
  await using publisher = await startPublisherOnHub(hubPort);
  const { result } = publisherApi(`http://127.0.0.1:${await publisher.port()}`);
  const { offset, epoch } = await result("publish", { channel: "real", data: "important" });
  assert.equal(offset, 1);
  await using browser = new Client(pusherPort);
  await browser.address();
  for (let id = 1; id <= 3; id++) {
    // Each subscribe reads the channel's history at the hub, for the position it answers.
    const answer = await browser.ask({ id, subscribe: { channel: `nobody-publishes-${id}` } }) as { result?: object };
    assert.ok(answer.result && "epoch" in answer.result, `subscribe ${id}: ${JSON.stringify(answer)}`);
  }
  await using late = new Client(pusherPort);
  await late.address();
  const reply = await late.ask({ id: 1, subscribe: { channel: "real", since: { offset: 0, epoch } } });
  assert.deepEqual(reply, { id: 1, result: { recovered: true, offset: 1, epoch } });
  await late.received(3);
  assert.equal(late.messages[2], JSON.stringify({ channel: "real", data: "important", offset: 1, epoch }));
});
