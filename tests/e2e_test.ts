/**
 * The seed's push system end to end, as real processes started from their
 * tasks: one hub, two pushers on different ports (standing in for two
 * machines), one publisher, and 20 WebSocket clients.
 */

import assert from "node:assert/strict";
import { type Service, startPusherOnHub, startService } from "./_service.ts";
import { Client } from "../pusher/testing.ts";
import { until } from "../channel/testing.ts";

interface Address {
  worker: string;
  connection: number;
}

async function publish(publisherPort: number, params: Record<string, string>, method = "GET") {
  const query = new URLSearchParams(params).toString();
  const response = method === "GET"
    ? await fetch(`http://127.0.0.1:${publisherPort}/?${query}`)
    : await fetch(`http://127.0.0.1:${publisherPort}/`, {
      method,
      body: query,
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
  return { status: response.status, body: await response.text(), reached: response.headers.get("x-pushers-reached") };
}

function startPusher(hubPort: number, port = 0): Promise<{ service: Service; port: number }> {
  return startPusherOnHub(hubPort, { port });
}

Deno.test("push system end to end: greetings, broadcast, targeted sends, restarts and a hub outage", async (t) => {
  let hub = await startService("channel", ["--port", "0"]);
  const hubPort = await hub.port();
  const pusherA = await startPusher(hubPort);
  let pusherB = await startPusher(hubPort);
  await using publisher = await startService("publisher", [
    "--port",
    "0",
    "--hub",
    `127.0.0.1:${hubPort}`,
    "--publish-timeout",
    "2000",
  ]);
  const publisherPort = await publisher.port();
  let clients: Client[] = [];
  try {
    clients = Array.from({ length: 20 }, (_, i) => new Client(i % 2 === 0 ? pusherA.port : pusherB.port));
    const addresses: Address[] = await Promise.all(clients.map((client) => client.address()));
    /** The one client that gets a targeted send. */
    const target = 7;

    await t.step("every greeting has the right form and every address is unique", () => {
      for (const client of clients) {
        assert.match(client.messages[0]!, /^workerID:[0-9a-f]{16} connectionID:\d+ connected\n$/);
      }
      const keys = new Set(addresses.map((a) => `${a.worker}/${a.connection}`));
      assert.equal(keys.size, 20);
      const workersA = new Set(addresses.filter((_, i) => i % 2 === 0).map((a) => a.worker));
      const workersB = new Set(addresses.filter((_, i) => i % 2 === 1).map((a) => a.worker));
      assert.equal([...workersA].filter((w) => workersB.has(w)).length, 0, "the two pushers share no worker id");
    });

    await t.step("a broadcast reaches all 20 exactly once", async () => {
      const answer = await publish(publisherPort, { content: "hello all" });
      assert.equal(answer.status, 200);
      assert.equal(answer.body, "ok");
      assert.equal(answer.reached, "4", "two pushers with two workers each");
      for (const client of clients) assert.deepEqual((await client.received(2)).slice(1), ["hello all"]);
    });

    await t.step("a targeted send reaches exactly its connection and nobody else", async () => {
      const { worker, connection } = addresses[target]!;
      const answer = await publish(publisherPort, {
        to_worker_id: worker,
        to_connection_id: String(connection),
        content: "just you",
      }, "POST");
      assert.equal(answer.status, 200);
      assert.equal(answer.body, "ok");
      // A broadcast after it: each worker handles its hub link in order, so
      // had anyone else got the targeted message, it would be there first.
      assert.equal((await publish(publisherPort, { content: "fence" })).status, 200);
      for (const [i, client] of clients.entries()) {
        const expected = i === target ? ["hello all", "just you", "fence"] : ["hello all", "fence"];
        assert.deepEqual((await client.received(expected.length + 1)).slice(1), expected, `client ${i}`);
      }
    });

    await t.step("bad requests get their 4xx with a reason", async () => {
      const { worker } = addresses[0]!;
      const cases: [Record<string, string>, number, RegExp][] = [
        [{}, 400, /^Missing content/],
        [{ content: "" }, 400, /^Missing content/],
        [{ to_worker_id: worker, content: "x" }, 400, /to_connection_id/],
        [{ to_connection_id: "1", content: "x" }, 400, /to_worker_id/],
        [{ to_worker_id: "1", to_connection_id: "1", content: "x" }, 400, /to_worker_id/],
      ];
      for (const [params, status, reason] of cases) {
        const answer = await publish(publisherPort, params);
        assert.equal(answer.status, status, JSON.stringify(params));
        assert.match(answer.body, reason);
        assert.equal(answer.body.split("\n").length, 2, "one line");
      }
      assert.equal((await publish(publisherPort, { content: "0" })).status, 200, "content=0 is content");
      // Every client already holds its greeting, "hello all" and "fence"; the
      // targeted one also holds "just you".
      for (const [i, client] of clients.entries()) {
        const before = i === target ? 4 : 3;
        assert.equal((await client.received(before + 1))[before], "0", `client ${i}`);
      }
    });

    await t.step("after a pusher restarts, its old addresses reach nobody and the publisher says so", async () => {
      const oldB = addresses.filter((_, i) => i % 2 === 1);
      const closing = clients.filter((_, i) => i % 2 === 1).map((client) => client.closed);
      assert.equal((await pusherB.service.stop("SIGTERM")).code, 0);
      for (const event of await Promise.all(closing)) assert.equal(event.code, 1001);
      pusherB = await startPusher(hubPort, pusherB.port);
      const fresh = new Client(pusherB.port);
      clients.push(fresh);
      const freshAddress = await fresh.address();
      assert.ok(!oldB.some((a) => a.worker === freshAddress.worker), "a restarted worker draws a new id");
      const stale = oldB[0]!;
      const answer = await publish(publisherPort, {
        to_worker_id: stale.worker,
        to_connection_id: String(stale.connection),
        content: "stale",
      });
      assert.equal(answer.status, 404);
      assert.match(answer.body, new RegExp(`^No pusher worker ${stale.worker} is connected`));
      assert.equal((await publish(publisherPort, { content: "after restart" })).status, 200);
      assert.deepEqual((await fresh.received(2)).slice(1), ["after restart"], "the stale send reached nobody here");
    });

    await t.step("with the hub stopped publishes get 503, and after it returns everything works again", async () => {
      await hub.stop("SIGKILL");
      const started = Date.now();
      const answer = await publish(publisherPort, { content: "into the void" });
      assert.equal(answer.status, 503);
      assert.match(answer.body, /^Hub unavailable: /);
      assert.ok(Date.now() - started < 5000);
      hub = await startService("channel", ["--port", String(hubPort)]);
      await hub.port();
      let back = await publish(publisherPort, { content: "we are back" });
      const deadline = Date.now() + 10_000;
      while (back.status !== 200 && Date.now() < deadline) {
        back = await publish(publisherPort, { content: "we are back" });
      }
      assert.equal(back.status, 200);
      assert.equal(back.reached, "4", "every worker re-subscribed");
      const live = clients.filter((client) => client.ws.readyState === WebSocket.OPEN);
      assert.equal(live.length, 11);
      for (const client of live) {
        await until(() => client.messages.includes("we are back"), 5000, "the broadcast after the hub returned");
      }
    });
  } finally {
    await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
    await pusherA.service.stop();
    await pusherB.service.stop();
    await hub.stop();
  }
});
