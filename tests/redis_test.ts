/**
 * The push system on Redis (issue 18), as real processes started from their
 * tasks with `--bus redis://...`: a real `redis-server`, two pushers (two
 * workers each, tokens on) and a publisher, with history on `channel.*` in
 * Redis Streams. What a client and an API caller see: the original's three
 * operations, channels, users, presence, a stale address refused by the
 * count, history and recovery; then Redis restarts: publishes meanwhile are
 * refused (503), never a false ok, and the links come back by themselves
 * with every client still on its WebSocket.
 */

import assert from "node:assert/strict";
import { type Service, startService } from "./_service.ts";
import { startRedis } from "./_redis.ts";
import { Client } from "../pusher/testing.ts";
import { until } from "../channel/testing.ts";
import { publisherApi } from "./_publisher_api.ts";
import type { Json } from "../shared/json.ts";
import { signJwt } from "../shared/jwt.ts";

const SECRET = "redis-e2e-secret";
const HISTORY = ["--history", "channel.*"];

function tokenPath(user: string): string {
  return `/?token=${signJwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 600, channels: ["news"] }, SECRET)}`;
}

async function startPusher(bus: string): Promise<{ service: Service; port: number }> {
  const service = await startService("pusher", [
    "--port",
    "0",
    "--bus",
    bus,
    ...HISTORY,
    "--token-secret",
    SECRET,
    "--presence-channels",
    "lobby",
  ]);
  const port = await service.port();
  await until(
    () => service.lines.filter((line) => line.includes('msg="connected to redis"')).length >= 2,
    10_000,
    "both workers' Redis links",
  );
  return { service, port };
}

/** A client's frames on `channel`, parsed. */
function channelFrames(client: Client, channel: string): { data: Json; offset?: number; epoch?: string }[] {
  return client.messages.filter((m) => m.startsWith(`{"channel":"${channel}"`)).map((m) => JSON.parse(m));
}

Deno.test("push system on Redis: every target, a stale address, presence, history and recovery, and a Redis restart", async (t) => {
  await using redis = await startRedis();
  const pusherA = await startPusher(redis.address);
  await using _a = pusherA.service;
  const pusherB = await startPusher(redis.address);
  await using _b = pusherB.service;
  await using publisher = await startService("publisher", [
    "--port",
    "0",
    "--bus",
    redis.address,
    ...HISTORY,
    // Longer than the 2.5 s a publisher holds publishes after Redis is back.
    "--publish-timeout",
    "3000",
  ]);
  const base = `http://127.0.0.1:${await publisher.port()}`;
  const { get, result } = publisherApi(base);
  await until(
    async () => (await fetch(`${base}/healthz`).then((r) => r.text())) === "ok",
    10_000,
    "the publisher's link",
  );

  const clients: Client[] = [];
  const join = async (port: number, user: string) => {
    const client = new Client(port, undefined, tokenPath(user));
    clients.push(client);
    return { client, ...await client.address() };
  };
  try {
    const aliceA = await join(pusherA.port, "alice");
    const aliceB = await join(pusherB.port, "alice");
    const bob = await join(pusherB.port, "bob");

    await t.step("a broadcast reaches every client; X-Pushers-Reached counts the four workers", async () => {
      assert.deepEqual(await get("content=hello"), { status: 200, text: "ok", reached: "4" });
      for (const { client } of [aliceA, aliceB, bob]) {
        await until(() => client.messages.includes("hello"), 5000, "the broadcast");
      }
    });

    await t.step("a targeted send reaches its connection only, and a stale address is refused with 404", async () => {
      const sent = await get(`content=just-bob&to_worker_id=${bob.worker}&to_connection_id=${bob.connection}`);
      assert.deepEqual(sent, { status: 200, text: "ok", reached: "1" });
      await until(() => bob.client.messages.includes("just-bob"), 5000, "bob's message");
      const stale = await get(`content=nobody&to_worker_id=0000000000000000&to_connection_id=1`);
      assert.equal(stale.status, 404);
      assert.match(stale.text, /the address is stale or wrong/);
      assert.deepEqual(await get("content=fence"), { status: 200, text: "ok", reached: "4" });
      for (const { client } of [aliceA, aliceB]) {
        await until(() => client.messages.includes("fence"), 5000, "the fence");
        assert.ok(!client.messages.includes("just-bob"), "alice did not get bob's message");
      }
    });

    await t.step(
      "channels and users: a backend subscribe, a channel publish with its position, a user publish",
      async () => {
        assert.deepEqual(await result("subscribe", { channel: "news", user: "alice" }), {
          connections: 2,
          workers_reached: 2,
        });
        const first = await result("publish", { channel: "news", data: { n: 1 } });
        assert.equal(first.offset, 1);
        assert.match(first.epoch as string, /^[0-9a-f]{8}$/);
        for (const { client } of [aliceA, aliceB]) {
          await until(() => channelFrames(client, "news").length === 1, 5000, "the channel message");
          assert.deepEqual(channelFrames(client, "news"), [{
            channel: "news",
            data: { n: 1 },
            offset: 1,
            epoch: first.epoch,
          }]);
        }
        await result("publish", { user: "bob", data: "for bob" });
        await until(() => bob.client.messages.some((m) => m.includes("for bob")), 5000, "bob's user message");
        assert.ok(!aliceA.client.messages.some((m) => m.includes("for bob")));
      },
    );

    await t.step("presence and info gather every worker's answer promptly", async () => {
      const started = Date.now();
      assert.deepEqual(await result("presence", { channel: "news" }), {
        num_clients: 2,
        num_users: 1,
        users: ["alice"],
        workers_reached: 4,
      });
      assert.deepEqual(await result("presence", { user: "bob" }), { online: true, connections: 1, workers_reached: 4 });
      const info = await result("info", {}) as { workers: unknown[]; connections: number };
      assert.equal(info.workers.length, 4);
      assert.equal(info.connections, 3);
      assert.ok(Date.now() - started < 2000, "no answer waited for a timeout");
    });

    await t.step("a member of a presence channel asks who is in it, over every worker of both pushers", async () => {
      assert.deepEqual(await result("subscribe", { channel: "lobby", user: "alice" }), {
        connections: 2,
        workers_reached: 2,
      });
      assert.deepEqual(await aliceA.client.ask({ id: 9, presence: { channel: "lobby" } }), {
        id: 9,
        result: { num_clients: 2, num_users: 1, users: ["alice"] },
      });
    });

    await t.step(
      "history lists a channel's publications from Redis, and a client recovers what it missed",
      async () => {
        const history = await result("history", { channel: "news" });
        const epoch = history.epoch as string;
        assert.deepEqual([history.publications, history.offset], [[{ data: { n: 1 }, offset: 1 }], 1]);
        // Alice's tab on pusher A goes away, two messages are published, and it comes back asking from offset 1.
        const gone = aliceA.client;
        await gone[Symbol.asyncDispose]();
        await until(
          async () => ((await result("presence_stats", { channel: "news" })).num_clients as number) === 1,
          5000,
          "alice's tab to leave",
        );
        await result("publish", { channel: "news", data: { n: 2 } });
        await result("publish", { channel: "news", data: { n: 3 } });
        const back = await join(pusherA.port, "alice-again");
        back.client.ws.send(JSON.stringify({ id: 7, subscribe: { channel: "news", since: { offset: 1, epoch } } }));
        await until(() => channelFrames(back.client, "news").length === 2, 5000, "the recovered publications");
        assert.deepEqual(channelFrames(back.client, "news").map((f) => [f.data, f.offset]), [[{ n: 2 }, 2], [
          { n: 3 },
          3,
        ]]);
        const reply = back.client.messages.find((m) => m.startsWith('{"id":7,'));
        assert.deepEqual(JSON.parse(reply!), { id: 7, result: { recovered: true, offset: 3, epoch } });
        assert.deepEqual(await result("history", { channel: "news", reverse: true, limit: 2 }), {
          publications: [{ data: { n: 3 }, offset: 3 }, { data: { n: 2 }, offset: 2 }],
          offset: 3,
          epoch,
          recovered: true,
        });
        assert.deepEqual(await result("history_remove", { channel: "news" }), {});
        assert.notEqual((await result("history", { channel: "news" })).epoch, epoch);
      },
    );

    await t.step(
      "Redis restarts: publishes meanwhile get 503, never ok; the links come back and clients keep their sockets",
      async () => {
        const linksBack = (service: Service) =>
          service.lines.filter((line) => line.includes('msg="redis link back"') && line.includes("link=subscriptions"))
            .length;
        const before = await result("publish", { channel: "news", data: "before the restart" });
        // Delivered before Redis is killed: an ok is Redis's answer, and what it
        // queued for subscribers in the same instant can die with it (see the next step).
        await until(
          () => channelFrames(aliceB.client, "news").some((f) => f.data === "before the restart"),
          5000,
          "the channel message before the restart",
        );
        await redis.stop();
        const during = await get("content=during");
        assert.equal(during.status, 503, `a publish during the outage: ${JSON.stringify(during)}`);
        assert.match(during.text, /^Redis unavailable: /);
        const health = await fetch(`${base}/healthz`);
        assert.deepEqual([health.status, await health.text()], [503, "Redis link down\n"]);
        await redis.start();
        await until(
          () => linksBack(pusherA.service) >= 2 && linksBack(pusherB.service) >= 2,
          10_000,
          "every worker to resubscribe",
        );
        await until(
          async () => (await fetch(`${base}/healthz`).then((r) => r.text())) === "ok",
          10_000,
          "the publisher",
        );
        assert.deepEqual(await get("content=after"), { status: 200, text: "ok", reached: "4" });
        for (const { client } of [aliceB, bob]) {
          await until(() => client.messages.includes("after"), 5000, "the broadcast after the restart");
          assert.equal(client.ws.readyState, WebSocket.OPEN, "the client kept its WebSocket");
          assert.ok(!client.messages.includes("during"), "the refused publish was not delivered");
        }
        // The restarted Redis kept no history: the channel starts again on a new epoch, and its members see it.
        const after = await result("publish", { channel: "news", data: "after the restart" });
        assert.equal(after.offset, 1);
        assert.notEqual(after.epoch, before.epoch);
        await until(
          () => channelFrames(aliceB.client, "news").some((f) => f.data === "after the restart"),
          5000,
          "the channel message after the restart",
        );
        assert.deepEqual(channelFrames(aliceB.client, "news").slice(-2).map((f) => [f.data, f.offset, f.epoch]), [
          ["before the restart", before.offset, before.epoch],
          ["after the restart", 1, after.epoch],
        ]);
      },
    );

    await t.step(
      "a stream of publishes through a Redis restart: each is ok or 503, and every ok is delivered",
      async () => {
        const answers: { i: number; status: number; reached: string | null }[] = [];
        let streaming = true;
        const stream = (async () => {
          for (let i = 0; streaming; i++) {
            const { status, reached } = await get(`content=s${i}`);
            answers.push({ i, status, reached });
          }
        })();
        const delivered = (some: typeof answers) =>
          [aliceB, bob].every(({ client }) =>
            some.every((a) => a.status !== 200 || client.messages.includes(`s${a.i}`))
          );
        // Redis pub/sub delivers at most once: PUBLISH is answered as its
        // messages are queued for the subscribers, and a crash in that instant
        // (or the reset it sends a subscriber whose bytes it had not read)
        // loses them, though the publish was ok. So the publishes answered
        // while Redis is being killed are checked for ok or 503 only; those
        // before, all delivered first, and those after it is back, must arrive.
        let checked = 0;
        let refused = 0;
        try {
          await until(() => answers.length >= 10, 10_000, "publishes before the restart");
          checked = answers.length;
          await until(() => delivered(answers.slice(0, checked)), 5000, "the publishes before the restart");
          await redis.stop();
          await until(() => answers.some((a) => a.status === 503), 10_000, "a 503 during the outage");
          refused = answers.length;
          await redis.start();
          await until(
            () => answers.slice(refused).filter((a) => a.status === 200).length >= 10,
            15_000,
            "publishes to succeed again",
          );
        } finally {
          streaming = false;
          await stream;
        }
        const statuses = new Set(answers.map((a) => a.status));
        assert.deepEqual([...statuses].filter((s) => s !== 200 && s !== 503), [], "only ok and 503");
        const ok = answers.filter((a) => a.status === 200);
        assert.deepEqual(ok.filter((a) => a.reached !== "4"), [], "every ok reached the four workers");
        const owed = [...answers.slice(0, checked), ...answers.slice(refused)].filter((a) => a.status === 200);
        assert.ok(owed.length >= checked + 10, "oks before and after the outage");
        for (const { client } of [aliceB, bob]) {
          await until(
            () => owed.every((a) => client.messages.includes(`s${a.i}`)),
            5000,
            `every ok publish at the client (missing: ${
              owed.filter((a) => !client.messages.includes(`s${a.i}`)).map((a) => a.i)
            })`,
          );
          assert.equal(client.ws.readyState, WebSocket.OPEN, "the client kept its WebSocket");
        }
      },
    );

    await t.step("a channel whose only member leaves and joins again at once keeps getting publications", async () => {
      // Its worker unsubscribes the channel's subject and subscribes it again back to back.
      const token = signJwt({ sub: "dora", exp: Math.floor(Date.now() / 1000) + 600, channels: ["solo"] }, SECRET);
      const dora = new Client(pusherA.port, undefined, `/?token=${token}`);
      clients.push(dora);
      await dora.address();
      const subscribed = (answer: unknown) =>
        assert.ok(typeof answer === "object" && answer !== null && "result" in answer);
      subscribed(await dora.ask({ id: 1, subscribe: { channel: "solo" } }));
      dora.ws.send(JSON.stringify({ id: 2, unsubscribe: { channel: "solo" } }));
      subscribed(await dora.ask({ id: 3, subscribe: { channel: "solo" } }));
      assert.equal((await result("publish", { channel: "solo", data: "still here" })).workers_reached, 1);
      await until(() => channelFrames(dora, "solo").length === 1, 5000, "the publication");
    });

    await t.step("a stopped pusher's addresses are stale: a send to one is refused with 404", async () => {
      await pusherB.service.stop();
      const stale = await get(`content=too-late&to_worker_id=${bob.worker}&to_connection_id=${bob.connection}`);
      assert.equal(stale.status, 404, JSON.stringify(stale));
      assert.deepEqual(await get("content=left"), { status: 200, text: "ok", reached: "2" });
    });
  } finally {
    await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
    await pusherA.service.stop();
    await pusherB.service.stop();
  }
});
