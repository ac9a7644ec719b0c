/**
 * The publisher's server API end to end, as real processes started from
 * their tasks: one hub, two pushers (two workers each, tokens on), one
 * publisher, and WebSocket clients of four users spread over both pushers.
 */

import assert from "node:assert/strict";
import { type Service, startPublisherOnHub, startPusherOnHub, startService } from "./_service.ts";
import { Client } from "../pusher/testing.ts";
import { until } from "../channel/testing.ts";
import type { Json } from "../shared/json.ts";
import { signJwt } from "../shared/jwt.ts";

const SECRET = "api-e2e-secret";
const FENCE = "fence";

/** A client of a user on one pusher, with its address. */
interface Member {
  user: string;
  client: Client;
  worker: string;
  connection: number;
}

function tokenPath(user: string): string {
  // The channels claim lets the browser side subscribe itself to news; the backend may add any.
  return `/?token=${signJwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 600, channels: ["news"] }, SECRET)}`;
}

function startPusher(hubPort: number): Promise<{ service: Service; port: number }> {
  return startPusherOnHub(hubPort, { args: ["--token-secret", SECRET] });
}

async function join(port: number, user: string): Promise<Member> {
  const client = new Client(port, undefined, tokenPath(user));
  const { worker, connection } = await client.address();
  return { user, client, worker, connection };
}

Deno.test("server API end to end: every target, backend subscriptions, presence, and a crashed pusher worker", async (t) => {
  // No startup grace: every pusher is up before the first call, and a request's publish waits no longer than its replies.
  const hub = await startService("channel", ["--port", "0", "--startup-grace", "0"]);
  const hubPort = await hub.port();
  const pusherA = await startPusher(hubPort);
  const pusherB = await startPusher(hubPort);
  await using publisher = await startPublisherOnHub(hubPort);
  const publisherPort = await publisher.port();
  const members: Member[] = [];

  async function api(
    method: string,
    body: Json,
    contentType = "application/json",
  ): Promise<{ status: number; body: Json }> {
    const response = await fetch(`http://127.0.0.1:${publisherPort}/api/${method}`, {
      method: "POST",
      body: JSON.stringify(body),
      headers: { "content-type": contentType },
    });
    return { status: response.status, body: await response.json() };
  }
  async function result(method: string, body: Json): Promise<Json> {
    const answer = await api(method, body);
    assert.equal(answer.status, 200, `${method} ${JSON.stringify(body)}: ${JSON.stringify(answer.body)}`);
    return (answer.body as { result: Json }).result;
  }
  /**
   * What each open member got since the last call, in `members` order: a
   * broadcast fence, once every open client has it, shows nothing else is on its way.
   */
  let seen = new Map<Client, number>();
  async function received(): Promise<string[][]> {
    await result("publish", { data: FENCE });
    const open = members.filter((m) => m.client.ws.readyState === WebSocket.OPEN);
    for (const { client } of open) {
      await until(() => client.messages.slice(seen.get(client) ?? 1).includes(FENCE), 5000, "the fence");
    }
    const frames = members.map(({ client }) => {
      const from = seen.get(client) ?? 1;
      const got = client.messages.slice(from);
      seen.set(client, client.messages.length);
      return got.filter((frame) => frame !== FENCE);
    });
    return frames;
  }
  const who = (frames: string[][], expected: string) =>
    members.filter((_, i) => frames[i]!.includes(expected)).map((m) => `${m.user}@${m.worker}/${m.connection}`);
  const named = (filter: (m: Member) => boolean) =>
    members.filter(filter).map((m) => `${m.user}@${m.worker}/${m.connection}`);
  const address = (m: Member) => ({ worker_id: m.worker, connection_id: m.connection });

  try {
    for (const user of ["alice", "bob", "carol", "dave"]) {
      members.push(await join(pusherA.port, user), await join(pusherB.port, user));
    }
    seen = new Map(members.map(({ client }) => [client, 1]));

    await t.step("each publish target reaches exactly its connections across both pushers", async () => {
      assert.deepEqual(await result("subscribe", { channel: "news", user: "alice" }), {
        connections: 2,
        workers_reached: 2,
      });
      let frames = await received();
      assert.deepEqual(who(frames, '{"subscribed":{"channel":"news"}}'), named((m) => m.user === "alice"));

      await result("publish", { channel: "news", data: { title: "hi" } });
      frames = await received();
      assert.deepEqual(who(frames, '{"channel":"news","data":{"title":"hi"}}'), named((m) => m.user === "alice"));
      assert.deepEqual(frames.flat().length, 2, "nothing else arrived");

      await result("publish", { user: "bob", data: "for bob" });
      frames = await received();
      assert.deepEqual(who(frames, "for bob"), named((m) => m.user === "bob"));
      assert.deepEqual(frames.flat().length, 2);

      const carolB = members[5]!;
      assert.deepEqual(await result("publish", { ...address(carolB), data: { to: "carol" } }), { workers_reached: 1 });
      frames = await received();
      assert.deepEqual(who(frames, '{"to":"carol"}'), named((m) => m === carolB));
      assert.deepEqual(frames.flat().length, 1);

      const daveA = members[6]!;
      assert.deepEqual(await result("publish", { data: "all but one", exclude: address(daveA) }), {
        workers_reached: 4,
      });
      frames = await received();
      assert.deepEqual(who(frames, "all but one"), named((m) => m !== daveA));
    });

    await t.step("a broadcast reaches the members of each of its channels across both pushers", async () => {
      await result("subscribe", { channel: "sport", user: "bob" });
      await received();
      assert.deepEqual(await result("broadcast", { channels: ["news", "sport"], data: "both" }), {
        responses: [{ result: { workers_reached: 2 } }, { result: { workers_reached: 2 } }],
      });
      const frames = await received();
      assert.deepEqual(who(frames, '{"channel":"news","data":"both"}'), named((m) => m.user === "alice"));
      assert.deepEqual(who(frames, '{"channel":"sport","data":"both"}'), named((m) => m.user === "bob"));
      assert.deepEqual(frames.flat().length, 4, "nothing else arrived");
      await result("unsubscribe", { channel: "sport", user: "bob" });
      await received();
    });

    await t.step("channels lists the channels with members, summed across both pushers", async () => {
      await result("subscribe", { channel: "room.x", user: "bob" });
      await result("subscribe", { channel: "room.y", ...address(members[6]!) });
      assert.deepEqual(await result("channels", { pattern: "room.*" }), {
        channels: { "room.x": { num_clients: 2 }, "room.y": { num_clients: 1 } },
        workers_reached: 4,
      });
      await result("unsubscribe", { channel: "room.x", user: "bob" });
      await result("unsubscribe", { channel: "room.y", ...address(members[6]!) });
      assert.deepEqual(await result("channels", { pattern: "room.*" }), { channels: {}, workers_reached: 4 });
      await received();
    });

    await t.step(
      "a call made as Centrifugo's documentation makes it, curl --data's form type, is read as JSON",
      async () => {
        const answer = await api(
          "publish",
          { user: "carol", data: "as curl sends it" },
          "application/x-www-form-urlencoded",
        );
        assert.deepEqual(answer, { status: 200, body: { result: { workers_reached: 2 } } });
        assert.deepEqual(who(await received(), "as curl sends it"), named((m) => m.user === "carol"));
      },
    );

    await t.step("a publish with ack says to how many connections it went, across both pushers", async () => {
      assert.deepEqual(await result("publish", { user: "bob", data: "acked", ack: true }), {
        connections: 2,
        workers_reached: 2,
      });
      // The answer came after both workers had sent it: it is in the clients' messages by the fence.
      assert.deepEqual(who(await received(), "acked"), named((m) => m.user === "bob"));
      const carolA = members[4]!;
      assert.deepEqual(await result("publish", { ...address(carolA), data: "one", ack: true }), {
        connections: 1,
        workers_reached: 1,
      });
      const gone = { worker_id: carolA.worker, connection_id: carolA.connection + 1000 };
      const answer = await api("publish", { ...gone, data: "none", ack: true });
      assert.equal(answer.status, 404, JSON.stringify(answer.body));
      assert.deepEqual(who(await received(), "one"), named((m) => m === carolA));
    });

    await t.step("backend subscribe and unsubscribe take effect on every pusher", async () => {
      const [daveA, daveB] = [members[6]!, members[7]!];
      assert.deepEqual(await result("subscribe", { channel: "room.1", user: "dave" }), {
        connections: 2,
        workers_reached: 2,
      });
      await received();
      await result("publish", { channel: "room.1", data: 1 });
      assert.deepEqual(who(await received(), '{"channel":"room.1","data":1}'), named((m) => m.user === "dave"));

      assert.deepEqual(await result("unsubscribe", { channel: "room.1", ...address(daveA) }), {
        connections: 1,
        workers_reached: 1,
      });
      let frames = await received();
      assert.deepEqual(who(frames, '{"unsubscribed":{"channel":"room.1"}}'), named((m) => m === daveA));
      await result("publish", { channel: "room.1", data: 2 });
      frames = await received();
      assert.deepEqual(who(frames, '{"channel":"room.1","data":2}'), named((m) => m === daveB));
      assert.deepEqual(frames.flat().length, 1);
    });

    await t.step("presence counts are right after joins, leaves and disconnects", async () => {
      assert.deepEqual(await result("presence", { channel: "news" }), {
        num_clients: 2,
        num_users: 1,
        users: ["alice"],
        workers_reached: 4,
      });
      // Bob joins news himself, from the browser side.
      const bobA = members[2]!;
      bobA.client.ws.send(JSON.stringify({ id: 1, subscribe: { channel: "news" } }));
      await until(() => bobA.client.messages.includes('{"id":1,"result":{}}'), 5000, "bob's subscription");
      assert.deepEqual(await result("presence", { channel: "news" }), {
        num_clients: 3,
        num_users: 2,
        users: ["alice", "bob"],
        workers_reached: 4,
      });
      assert.deepEqual(await result("presence", { user: "alice" }), {
        online: true,
        connections: 2,
        workers_reached: 4,
      });
      // Bob leaves by closing his tab.
      await bobA.client[Symbol.asyncDispose]();
      await until(
        async () =>
          ((await result("presence_stats", { channel: "news" })) as { num_clients: number }).num_clients === 2,
        5000,
        "bob's leave to count",
      );
      assert.deepEqual(await result("disconnect", { user: "alice", reason: "bye" }), {
        connections: 2,
        workers_reached: 2,
      });
      for (const m of members.filter((m) => m.user === "alice")) {
        const closed = await m.client.closed;
        assert.deepEqual([closed.code, closed.reason], [4000, "bye"]);
      }
      assert.deepEqual(await result("presence_stats", { channel: "news" }), {
        num_clients: 0,
        num_users: 0,
        workers_reached: 4,
      });
      assert.deepEqual(await result("presence", { user: "alice" }), {
        online: false,
        connections: 0,
        workers_reached: 4,
      });
      const info = await result("info", {}) as { workers: unknown[]; connections: number };
      assert.equal(info.workers.length, 4);
      assert.equal(info.connections, 5);
    });

    await t.step("after a pusher worker crashes, presence counts only the connections left", async () => {
      // Enough open clients on pusher A that both its workers have some.
      const open = () => members.filter((m) => m.client.ws.readyState === WebSocket.OPEN);
      const workersOfA = () => new Set(open().filter((m) => m.client.port === pusherA.port).map((m) => m.worker));
      for (let i = 0; i < 40 && workersOfA().size < 2; i++) members.push(await join(pusherA.port, `extra${i}`));
      assert.equal(workersOfA().size, 2, "both workers of pusher A have clients");
      for (const m of open()) await result("subscribe", { channel: "lobby", ...address(m) });
      const openBefore = open();
      const before = openBefore.length;
      assert.deepEqual(await result("presence_stats", { channel: "lobby" }), {
        num_clients: before,
        num_users: new Set(open().map((m) => m.user)).size,
        workers_reached: 4,
      });

      pusherA.service.process.kill("SIGUSR2");
      await until(() => open().length < before, 10_000, "the crashed worker's clients to be cut off");
      const crashed = new Set(
        openBefore.filter((m) => m.client.ws.readyState !== WebSocket.OPEN).map((m) => m.worker),
      );
      assert.equal(crashed.size, 1, "one worker crashed");
      // The replacement takes a new worker id; until it is up, answers may be partial.
      let stats: Json = null;
      await until(
        async () => {
          stats = await result("presence_stats", { channel: "lobby" });
          const live = open();
          return JSON.stringify(stats) === JSON.stringify({
            num_clients: live.length,
            num_users: new Set(live.map((m) => m.user)).size,
            workers_reached: 4,
          });
        },
        15_000,
        `presence to count the clients left (last: ${JSON.stringify(stats)})`,
      );
      const info = await result("info", {}) as { workers: { worker_id: string }[]; connections: number };
      assert.equal(info.connections, open().length);
      assert.equal(info.workers.filter((w) => crashed.has(w.worker_id)).length, 0, "the crashed worker is gone");
      const gone = members.find((m) => crashed.has(m.worker))!;
      const answer = await api("publish", { ...address(gone), data: "too late" });
      assert.equal(answer.status, 404);
    });
  } finally {
    await Promise.all(members.map(({ client }) => client[Symbol.asyncDispose]()));
    await pusherA.service.stop();
    await pusherB.service.stop();
    await hub.stop();
  }
});

Deno.test("server API end to end: a publish retried with its idempotency key is delivered once, and history lists it in order", async () => {
  await using hub = await startService("channel", ["--port", "0", "--startup-grace", "0", "--history", "channel.*"]);
  const hubPort = await hub.port();
  const pusher = await startPusher(hubPort);
  await using _pusher = pusher.service;
  await using publisher = await startPublisherOnHub(hubPort);
  const publisherPort = await publisher.port();
  async function result(method: string, body: Json): Promise<{ [key: string]: Json }> {
    const response = await fetch(`http://127.0.0.1:${publisherPort}/api/${method}`, {
      method: "POST",
      body: JSON.stringify(body),
      headers: { "content-type": "application/json" },
    });
    const answer = await response.json();
    assert.equal(response.status, 200, `${method} ${JSON.stringify(body)}: ${JSON.stringify(answer)}`);
    return answer.result;
  }
  const alice = await join(pusher.port, "alice");
  try {
    await result("subscribe", { channel: "news", user: "alice" });
    const first = await result("publish", { channel: "news", data: "once", idempotency_key: "order-17" });
    assert.equal(first.offset, 1);
    const epoch = first.epoch as string;
    assert.match(epoch, /^[0-9a-f]{8}$/);
    assert.deepEqual(await result("publish", { channel: "news", data: "once", idempotency_key: "order-17" }), first);
    const get = await fetch(`http://127.0.0.1:${publisherPort}/?content=twice&channel=news&idempotency_key=get-1`);
    assert.equal(await get.text(), "ok");
    await (await fetch(`http://127.0.0.1:${publisherPort}/?content=twice&channel=news&idempotency_key=get-1`)).text();
    await result("publish", { channel: "news", data: FENCE });

    const data = () =>
      alice.client.messages.filter((m) => m.startsWith('{"channel":"news"')).map((m) => JSON.parse(m).data);
    await until(() => data().includes(FENCE), 5000, "the fence on news");
    assert.deepEqual(data(), ["once", "twice", FENCE], "each publish once, in order");

    const history = await result("history", { channel: "news" });
    assert.deepEqual(history, {
      publications: [{ data: "once", offset: 1 }, { data: "twice", offset: 2 }, { data: FENCE, offset: 3 }],
      offset: 3,
      epoch,
      recovered: false,
    });
    const since = await result("history", { channel: "news", since: { offset: 1, epoch } });
    assert.deepEqual([since.publications, since.recovered], [[{ data: "twice", offset: 2 }, {
      data: FENCE,
      offset: 3,
    }], true]);
    assert.deepEqual(await result("history_remove", { channel: "news" }), {});
    const removed = await result("history", { channel: "news" });
    assert.deepEqual(removed.publications, []);
    assert.notEqual(removed.epoch, epoch);
  } finally {
    await alice.client[Symbol.asyncDispose]();
  }
});
