/**
 * The system on a NATS bus, end to end, as real processes started from
 * their tasks the way the README starts them: a 3-node NATS cluster
 * (JetStream on), two pushers of two workers each and a publisher, all with
 * `--bus nats://...` and `--history channel.*`, and WebSocket clients on
 * both pushers.
 */

import assert from "node:assert/strict";
import { type Service, startCommand, startService } from "./_service.ts";
import { startNats } from "./_nats.ts";
import { Client } from "../pusher/testing.ts";
import { until } from "../channel/testing.ts";
import { publisherApi } from "./_publisher_api.ts";
import { signJwt } from "../shared/jwt.ts";
import { taskCommand } from "../shared/tasks.ts";

const FENCE = "fence";
/** What the start publishes until every client has it. */
const WARM = "warm";
const SECRET = "nats-e2e-secret";

function tokenPath(user: string): string {
  return `/?token=${signJwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 600, channels: ["news"] }, SECRET)}`;
}

async function startPusher(bus: string): Promise<{ service: Service; port: number }> {
  const service = await startService("pusher", [
    "--port",
    "0",
    "--bus",
    bus,
    "--history",
    "channel.*",
    "--token-secret",
    SECRET,
    "--presence-channels",
    "lobby",
  ]);
  const port = await service.port();
  await until(
    () => service.lines.filter((line) => line.includes('msg="connected to NATS"')).length >= 2,
    10_000,
    "two worker NATS links",
  );
  return { service, port };
}

Deno.test("on a 3-node NATS cluster: broadcast, targeted and stale sends, channels, users, presence and history recovery", async (t) => {
  await using nats = await startNats({ nodes: 3 });
  const pusherA = await startPusher(nats.url);
  await using _a = pusherA.service;
  const pusherB = await startPusher(nats.url);
  await using _b = pusherB.service;
  // A long presence timeout: answers must come when every worker replied, not when it runs out.
  await using publisher = await startService("publisher", [
    "--port",
    "0",
    "--bus",
    nats.url,
    "--history",
    "channel.*",
    "--presence-timeout",
    "10000",
  ]);
  const publisherPort = await publisher.port();
  const base = `http://127.0.0.1:${publisherPort}`;
  const { get, api, result } = publisherApi(base);
  await until(async () => (await fetch(`${base}/healthz`).then((r) => r.text())) === "ok", 10_000, "the NATS link");

  const clients: Client[] = [];
  const addresses: { worker: string; connection: number }[] = [];
  try {
    // Enough clients that every worker of both pushers has some.
    for (let i = 0; clients.length < 4 || new Set(addresses.map((a) => a.worker)).size < 4; i++) {
      assert.ok(i < 64, "every worker got a client");
      // Users u0 and u1, each on both pushers.
      const client = new Client(i % 2 ? pusherB.port : pusherA.port, undefined, tokenPath(`u${Math.floor(i / 2) % 2}`));
      clients.push(client);
      addresses.push(await client.address());
    }
    // A worker's subscription reaches the cluster's other nodes a moment after the worker made it, and a
    // publish through a node that does not know of it yet goes nowhere (NATS's own pub/sub, at most once):
    // the steps start once a broadcast has reached every client.
    await until(
      async () => {
        await get(`content=${WARM}`);
        return clients.every((client) => client.messages.includes(WARM));
      },
      10_000,
      "the cluster to route a broadcast to every worker",
    );
    const seen = new Map(clients.map((client) => [client, client.messages.length]));
    /** What each client got since the last call, once a broadcast fence reached all of them. */
    const received = async (): Promise<string[][]> => {
      assert.equal((await get(`content=${FENCE}`)).text, "ok");
      for (const client of clients) {
        await until(() => client.messages.slice(seen.get(client)).includes(FENCE), 5000, "the fence");
      }
      return clients.map((client) => {
        const got = client.messages.slice(seen.get(client)).filter((m) => m !== FENCE && m !== WARM);
        seen.set(client, client.messages.length);
        return got;
      });
    };

    await t.step("a broadcast reaches every client and says no count", async () => {
      assert.deepEqual(await get("content=hello"), { status: 200, text: "ok", reached: null });
      assert.ok((await received()).every((got) => JSON.stringify(got) === '["hello"]'));
    });

    await t.step("a targeted send reaches its client only; a stale worker id is refused with 404", async () => {
      const target = addresses[3]!;
      const sent = await get(`content=just-you&to_worker_id=${target.worker}&to_connection_id=${target.connection}`);
      assert.deepEqual(sent, { status: 200, text: "ok", reached: "1" });
      const frames = await received();
      assert.deepEqual(frames.map((got) => got.includes("just-you")), clients.map((_, i) => i === 3));
      const started = Date.now();
      const stale = await get("content=x&to_worker_id=0123456789abcdef&to_connection_id=1");
      assert.equal(stale.status, 404);
      assert.match(stale.text, /^No pusher worker 0123456789abcdef is connected: the address is stale or wrong\n$/);
      assert.ok(Date.now() - started < 1000, "no responders is known at once");
      const apiStale = await api("publish", { worker_id: "0123456789abcdef", connection_id: 1, data: 1 });
      assert.equal(apiStale.status, 404);
      assert.deepEqual(
        await result("publish", { worker_id: target.worker, connection_id: target.connection, data: 2 }),
        {
          workers_reached: 1,
        },
      );
    });

    await t.step(
      "channel, user and presence: members only, and presence answers once every worker replied",
      async () => {
        for (const [i, address] of addresses.entries()) {
          if (i % 2 === 0) {
            await result("subscribe", {
              channel: "room",
              worker_id: address.worker,
              connection_id: address.connection,
            });
          }
        }
        const published = await result("publish", { channel: "room", data: "to the room" });
        assert.equal(published.workers_reached, null);
        assert.equal(published.offset, 1);
        let frames = await received();
        assert.deepEqual(
          frames.map((got) => got.some((m) => m.startsWith('{"channel":"room","data":"to the room","offset":1'))),
          clients.map((_, i) => i % 2 === 0),
        );
        const started = Date.now();
        const presence = await result("presence_stats", { channel: "room" });
        assert.ok(Date.now() - started < 5000, `presence took ${Date.now() - started} ms of its 10 s timeout`);
        const userOf = (i: number) => `u${Math.floor(i / 2) % 2}`;
        const inRoom = clients.map((_, i) => i).filter((i) => i % 2 === 0);
        assert.deepEqual(presence, {
          num_clients: inRoom.length,
          num_users: new Set(inRoom.map(userOf)).size,
          workers_reached: 4,
        });
        const ofU1 = clients.map((_, i) => userOf(i) === "u1");
        assert.deepEqual(await result("publish", { user: "u1", data: "for u1" }), { workers_reached: null });
        frames = await received();
        assert.deepEqual(frames.map((got) => got.includes("for u1")), ofU1);
        assert.deepEqual(await result("presence", { user: "u1" }), {
          online: true,
          connections: ofU1.filter(Boolean).length,
          workers_reached: 4,
        });
        const joined = await result("subscribe", { channel: "u1.room", user: "u1" });
        assert.equal(joined.connections, ofU1.filter(Boolean).length);
        frames = await received();
        assert.deepEqual(frames.map((got) => got.includes('{"subscribed":{"channel":"u1.room"}}')), ofU1);
        const info = await result("info", {}) as { workers: unknown[]; connections: number };
        assert.equal(info.workers.length, 4);
        assert.equal(info.connections, clients.length);
        assert.deepEqual(await result("publish", { user: "nobody", data: 1 }), { workers_reached: null });
        frames = await received();
        assert.ok(frames.every((got) => got.length === 0), "a user without connections gets nothing");
      },
    );

    await t.step("a client that comes back with since recovers what it missed, from JetStream", async () => {
      const first = await result("publish", { channel: "news", data: "n1" });
      const epoch = first.epoch as string;
      await result("publish", { channel: "news", data: "n2" });
      await result("publish", { channel: "news", data: "n3" });
      const late = new Client(pusherB.port, undefined, tokenPath("late"));
      clients.push(late);
      await late.address();
      late.ws.send(JSON.stringify({ id: 1, subscribe: { channel: "news", since: { offset: 1, epoch } } }));
      await late.received(4);
      assert.deepEqual(late.messages.slice(1, 4), [
        JSON.stringify({ id: 1, result: { recovered: true, offset: 3, epoch } }),
        JSON.stringify({ channel: "news", data: "n2", offset: 2, epoch }),
        JSON.stringify({ channel: "news", data: "n3", offset: 3, epoch }),
      ]);
      await result("publish", { channel: "news", data: "n4" });
      await late.received(5);
      assert.equal(late.messages[4], JSON.stringify({ channel: "news", data: "n4", offset: 4, epoch }));
      const history = await result("history", { channel: "news", since: { offset: 2, epoch } });
      assert.deepEqual(history, {
        publications: [{ data: "n3", offset: 3 }, { data: "n4", offset: 4 }],
        offset: 4,
        epoch,
        recovered: true,
      });
      assert.deepEqual(await result("history", { channel: "news", reverse: true, limit: 3 }), {
        publications: [{ data: "n4", offset: 4 }, { data: "n3", offset: 3 }, { data: "n2", offset: 2 }],
        offset: 4,
        epoch,
        recovered: true,
      });
    });

    await t.step("a member of a presence channel asks who is in it, over every worker of both pushers", async () => {
      const joined = await result("subscribe", { channel: "lobby", user: "u0" });
      assert.deepEqual(await clients[0]!.ask({ id: 9, presence: { channel: "lobby" } }), {
        id: 9,
        result: { num_clients: joined.connections, num_users: 1, users: ["u0"] },
      });
      assert.deepEqual(await clients[0]!.ask({ id: 10, presence_stats: { channel: "lobby" } }), {
        id: 10,
        result: { num_clients: joined.connections, num_users: 1 },
      });
    });
  } finally {
    await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
    await pusherA.service.stop();
    await pusherB.service.stop();
    await publisher.stop();
  }
});

Deno.test("a publisher granted only the NATS host:port it names (--allow-net=localhost:PORT) reaches NATS by that name", async () => {
  await using nats = await startNats();
  const { port } = nats.servers[0]!;
  // The README's grant for a bus on another machine: its host and port, nothing else (127.0.0.1 is the listen address).
  const command = (await taskCommand("publisher")).map((word) =>
    word.startsWith("--allow-net=") ? `--allow-net=127.0.0.1,localhost:${port}` : word
  );
  await using publisher = startCommand("publisher", [...command, "--port", "0", "--bus", `nats://localhost:${port}`]);
  await publisher.waitForLine(/msg="connected to NATS" server=localhost:/);
});
