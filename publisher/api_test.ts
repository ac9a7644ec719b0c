import assert from "node:assert/strict";
import { utf8Length } from "../shared/bytes.ts";
import fc from "fast-check";
import { createPublishHandler, type PublishHandlerOptions } from "./handler.ts";
import { API_METHODS } from "./_api_methods.ts";
import { jsonDepth, readBodyOf } from "./_json_body.ts";
import { PublisherMetrics } from "./metrics.ts";
import { Pusher } from "../pusher/pusher.ts";
import { type FakeSocket, FakeTransport } from "../pusher/fake_transport.ts";
import { newWorkerId, PRESENCE_SUBJECT } from "../shared/address.ts";
import type { Json } from "../shared/json.ts";
import { signJwt } from "../shared/jwt.ts";
import { mulberry32 } from "../shared/testing.ts";
import { createLogger } from "../shared/log.ts";
import { MemoryBroker, type MemoryBrokerOptions } from "../shared/memory_bus.ts";
import { type BatchOutcome, type Bus, type BusBatchItem, publishEach } from "../shared/bus.ts";

// The server API (POST /api/<method>) over a memory broker, against real
// pushers on fake transports: what the handler answers, and what each
// pusher's sockets get.

const SECRET = "api-test-secret";
const BASE = "http://publisher.test";
const silent = createLogger("test", { level: "error", sink: () => {} });

/** A connection on one of the pushers, with its address. */
interface Client {
  socket: FakeSocket;
  worker: string;
  connection: number;
}

interface ClusterOptions extends Partial<Omit<PublishHandlerOptions, "bus">> {
  /** Pushers on the broker. @default {2} */
  pushers?: number;
  /** The broker's message limit. @default {the broker's} */
  maxMessageBytes?: number;
  /** The broker's other options (history, idempotency). @default {{}} */
  broker?: MemoryBrokerOptions;
  /** Wraps the publisher's bus, to watch how it is called. @default {none} */
  wrapBus?: (bus: Bus) => Bus;
}

/** A publisher handler and `pushers` pushers on one memory broker. */
function cluster(options: ClusterOptions = {}) {
  const { pushers: count = 2, maxMessageBytes, broker: brokerOptions, wrapBus, ...handlerOptions } = options;
  const broker = new MemoryBroker({ ...brokerOptions, maxMessageBytes });
  const pushers = Array.from({ length: count }, () => {
    const transport = new FakeTransport();
    const pusher = new Pusher({
      workerId: newWorkerId(),
      bus: broker.connect(),
      transport,
      tokenSecret: SECRET,
      logger: silent,
    });
    return { pusher, transport };
  });
  const bus = wrapBus ? wrapBus(broker.connect()) : broker.connect();
  const handler = createPublishHandler({ bus, logger: silent, ...handlerOptions });
  return {
    broker,
    pushers,
    handler,
    /** Connects user `user` to pusher `index`. */
    async connect(index: number, user: string): Promise<Client> {
      const { pusher, transport } = pushers[index]!;
      const token = signJwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 60 }, SECRET);
      const socket = await transport.connect(pusher.handler, `/?token=${token}`);
      if (socket instanceof Response) throw new Error(`Refused: ${socket.status} ${await socket.text()}`);
      const match = /^workerID:([0-9a-f]{16}) connectionID:(\d+) connected\n$/.exec(socket.sent[0] ?? "");
      assert.ok(match, "a greeting first");
      return { socket, worker: match[1]!, connection: Number(match[2]) };
    },
    /** Calls `method` with `body` (JSON unless a string) and returns the status and the parsed answer. */
    async call(method: string, body: Json | string, headers: Record<string, string> = {}) {
      const response = await handler(
        new Request(`${BASE}/api/${method}`, {
          method: "POST",
          body: typeof body === "string" ? body : JSON.stringify(body),
          headers: { "content-type": "application/json", ...headers },
        }),
      );
      assert.equal(response.headers.get("content-type"), "application/json");
      assert.equal(response.headers.get("access-control-allow-origin"), "*");
      return { status: response.status, body: await response.json(), headers: response.headers };
    },
    async [Symbol.asyncDispose]() {
      for (const { pusher } of pushers) {
        pusher.closeAll();
        pusher.detach();
      }
      await bus.close();
    },
  };
}

/** Lets the bus hand over what was published. */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** What a socket got after its greeting, taking it: the next call sees only newer frames. */
function taken(client: Client): string[] {
  const frames = client.socket.sent.splice(1);
  return frames;
}

function exclusionOf(client: Client): { worker_id: string; connection_id: number } {
  return { worker_id: client.worker, connection_id: client.connection };
}

Deno.test("api publish refuses data holding a number too large for a double, naming where, and publishes nothing", async () => {
  await using c = cluster();
  const client = await c.connect(0, "alice");
  const cases: [string, string][] = [
    ['{"data":1e400}', "data"],
    ['{"data":{"a":[1,-1e999]}}', "data.a[1]"],
    ['{"channel":"news","data":[{"n":null},{"big":' + "9".repeat(400) + "}]}", "data[1].big"],
  ];
  for (const [body, at] of cases) {
    const answer = await c.call("publish", body);
    assert.deepEqual([answer.status, answer.body], [400, {
      error: {
        code: 400,
        message: `Invalid ${at}: a number too large for a double (it would be published as null); send it as a string`,
      },
    }], body.slice(0, 60));
  }
  const batch = await c.call("batch", '{"commands":[{"publish":{"data":1e400}},{"publish":{"data":"fine"}}]}');
  assert.equal(batch.status, 200);
  assert.deepEqual((batch.body as { replies: Json[] }).replies[0], {
    error: {
      code: 400,
      message: "Invalid data: a number too large for a double (it would be published as null); send it as a string",
    },
  });
  // Null, and numbers as large as a double holds, are data like any other.
  const fine = await c.call("publish", '{"data":{"nothing":null,"max":1.7976931348623157e308,"min":-5e-324}}');
  assert.equal(fine.status, 200);
  await settle();
  assert.deepEqual(taken(client), ["fine", '{"nothing":null,"max":1.7976931348623157e+308,"min":-5e-324}']);
});

Deno.test("api publish reaches exactly its target: a channel, a user, one connection, everyone, everyone but one", async () => {
  await using c = cluster();
  const alice0 = await c.connect(0, "alice");
  const alice1 = await c.connect(1, "alice");
  const bob1 = await c.connect(1, "bob");
  const carol0 = await c.connect(0, "carol");
  const all = [alice0, alice1, bob1, carol0];
  for (const client of [alice0, bob1]) {
    assert.equal((await c.call("subscribe", { channel: "news", ...exclusionOf(client) })).status, 200);
  }
  all.forEach(taken);

  let answer = await c.call("publish", { channel: "news", data: { title: "hi" } });
  assert.deepEqual(answer, { status: 200, body: { result: { workers_reached: 2 } }, headers: answer.headers });
  await settle();
  assert.deepEqual(all.map(taken), [['{"channel":"news","data":{"title":"hi"}}'], [], [
    '{"channel":"news","data":{"title":"hi"}}',
  ], []]);

  answer = await c.call("publish", { user: "alice", data: "for alice" });
  assert.deepEqual(answer.body, { result: { workers_reached: 2 } });
  await settle();
  assert.deepEqual(all.map(taken), [["for alice"], ["for alice"], [], []]);

  answer = await c.call("publish", { worker_id: bob1.worker, connection_id: bob1.connection, data: [1, 2] });
  assert.deepEqual(answer.body, { result: { workers_reached: 1 } });
  await settle();
  assert.deepEqual(all.map(taken), [[], [], ["[1,2]"], []]);

  answer = await c.call("publish", { data: { n: 1 } });
  assert.deepEqual(answer.body, { result: { workers_reached: 2 } });
  await settle();
  assert.deepEqual(all.map(taken), [['{"n":1}'], ['{"n":1}'], ['{"n":1}'], ['{"n":1}']]);

  await c.call("publish", { data: "all but carol", exclude: exclusionOf(carol0) });
  await c.call("publish", { channel: "news", data: 2, exclude: exclusionOf(alice0) });
  await c.call("publish", { user: "alice", data: "alice but one", exclude: exclusionOf(alice1) });
  await settle();
  assert.deepEqual(all.map(taken), [
    ["all but carol", "alice but one"],
    ["all but carol"],
    ["all but carol", '{"channel":"news","data":2}'],
    [],
  ]);

  answer = await c.call("publish", { channel: "nobody.here", data: 1 });
  assert.deepEqual(answer.body, { result: { workers_reached: 0 } }, "a channel without members is no error");
});

Deno.test("api publish with ack says to how many of a user's connections it went, and whether one connection got it", async () => {
  await using c = cluster();
  const alice0 = await c.connect(0, "alice");
  const alice1 = await c.connect(1, "alice");
  const bob = await c.connect(1, "bob");
  let answer = await c.call("publish", { user: "alice", data: "for alice", ack: true });
  assert.deepEqual(answer.body, { result: { connections: 2, workers_reached: 2 } });
  answer = await c.call("publish", { user: "alice", data: "but one", exclude: exclusionOf(alice0), ack: true });
  assert.deepEqual(answer.body, { result: { connections: 1, workers_reached: 2 } });
  answer = await c.call("publish", { user: "nobody", data: 1, ack: true });
  assert.deepEqual(answer.body, { result: { connections: 0, workers_reached: 0 } });
  answer = await c.call("publish", { ...exclusionOf(bob), data: "for bob", ack: true });
  assert.deepEqual(answer.body, { result: { connections: 1, workers_reached: 1 } });
  assert.deepEqual([alice0, alice1, bob].map(taken), [["for alice"], ["for alice", "but one"], ["for bob"]]);

  const gone = { worker_id: bob.worker, connection_id: bob.connection + 100 };
  answer = await c.call("publish", { ...gone, data: 1, ack: true });
  assert.deepEqual(answer.body, {
    error: { code: 404, message: `No connection ${gone.connection_id} on pusher worker ${bob.worker}: it is gone` },
  });
  answer = await c.call("publish", { ...gone, data: 1 });
  assert.deepEqual(
    answer.body,
    { result: { workers_reached: 1 } },
    "without ack, the worker is reached and that is all",
  );

  answer = await c.call("batch", {
    commands: [
      { publish: { user: "alice", data: 2, ack: true } },
      { publish: { channel: "news", data: 3 } },
      { publish: { ...gone, data: 4, ack: true } },
    ],
  });
  assert.deepEqual(answer.body, {
    replies: [
      { result: { connections: 2, workers_reached: 2 } },
      { result: { workers_reached: 0 } },
      {
        error: { code: 404, message: `No connection ${gone.connection_id} on pusher worker ${bob.worker}: it is gone` },
      },
    ],
  });

  const refusals: [Json, string][] = [
    [
      { channel: "news", data: 1, ack: true },
      "Invalid ack: only a publish to a user or to worker_id + connection_id is acknowledged",
    ],
    [{ data: 1, ack: true }, "Invalid ack: only a publish to a user or to worker_id + connection_id is acknowledged"],
    [{ user: "alice", data: 1, ack: "yes" }, "Invalid ack: expected true or false"],
    [{ user: "alice", data: 1, ack: true, idempotency_key: "k" }, "Invalid ack: it cannot go with an idempotency_key"],
  ];
  for (const [params, message] of refusals) {
    assert.deepEqual((await c.call("publish", params)).body, { error: { code: 400, message } }, JSON.stringify(params));
  }
});

Deno.test("api subscribe and unsubscribe by user and by connection take effect, and say to how many connections", async () => {
  await using c = cluster();
  const alice0 = await c.connect(0, "alice");
  const alice1 = await c.connect(1, "alice");
  const bob0 = await c.connect(0, "bob");
  const all = [alice0, alice1, bob0];

  let answer = await c.call("subscribe", { channel: "news", user: "alice" });
  assert.deepEqual(answer.body, { result: { connections: 2, workers_reached: 2 } });
  answer = await c.call("subscribe", { channel: "news", worker_id: bob0.worker, connection_id: bob0.connection });
  assert.deepEqual(answer.body, { result: { connections: 1, workers_reached: 1 } });
  assert.deepEqual(all.map(taken), Array(3).fill(['{"subscribed":{"channel":"news"}}']));

  await c.call("publish", { channel: "news", data: "one" });
  await settle();
  assert.deepEqual(all.map(taken), Array(3).fill(['{"channel":"news","data":"one"}']));

  answer = await c.call("unsubscribe", { channel: "news", worker_id: alice1.worker, connection_id: alice1.connection });
  assert.deepEqual(answer.body, { result: { connections: 1, workers_reached: 1 } });
  answer = await c.call("unsubscribe", { channel: "news", user: "bob" });
  assert.deepEqual(answer.body, { result: { connections: 1, workers_reached: 1 } });
  assert.deepEqual(all.map(taken), [[], ['{"unsubscribed":{"channel":"news"}}'], [
    '{"unsubscribed":{"channel":"news"}}',
  ]]);
  await c.call("publish", { channel: "news", data: "two" });
  await settle();
  assert.deepEqual(all.map(taken), [['{"channel":"news","data":"two"}'], [], []]);

  answer = await c.call("subscribe", { channel: "news", user: "nobody" });
  assert.deepEqual(answer.body, { result: { connections: 0, workers_reached: 0 } }, "a user offline is no error");
});

Deno.test("api disconnect closes one connection or every connection of a user, with the code and reason given", async () => {
  await using c = cluster();
  const alice0 = await c.connect(0, "alice");
  const alice1 = await c.connect(1, "alice");
  const bob0 = await c.connect(0, "bob");
  let answer = await c.call("disconnect", { worker_id: bob0.worker, connection_id: bob0.connection });
  assert.deepEqual(answer.body, { result: { connections: 1, workers_reached: 1 } });
  assert.deepEqual(bob0.socket.closed, { code: 4000, reason: "disconnected by the server" });
  assert.equal(alice0.socket.closed, null);

  answer = await c.call("disconnect", { user: "alice", code: 4001, reason: "banned" });
  assert.deepEqual(answer.body, { result: { connections: 2, workers_reached: 2 } });
  assert.deepEqual([alice0.socket.closed, alice1.socket.closed], Array(2).fill({ code: 4001, reason: "banned" }));

  answer = await c.call("disconnect", { user: "alice" });
  assert.deepEqual(answer.body, { result: { connections: 0, workers_reached: 0 } });
  answer = await c.call("disconnect", { user: "x", code: 1001 });
  assert.deepEqual(answer.status, 400);
  assert.match(answer.body.error.message, /^Invalid code: /);

  // As Centrifugo sends them: in a disconnect object.
  const carol = await c.connect(1, "carol");
  answer = await c.call("disconnect", { user: "carol", disconnect: { code: 4002, reason: "moved" } });
  assert.deepEqual(answer.body, { result: { connections: 1, workers_reached: 1 } });
  assert.deepEqual(carol.socket.closed, { code: 4002, reason: "moved" });
  for (
    const [params, message] of [
      [{ disconnect: 4002 }, 'Invalid disconnect: expected an object {"code": N, "reason": "..."}'],
      [
        { disconnect: { code: 4002 }, reason: "r" },
        "Ambiguous disconnect: pass code and reason, or a disconnect object, not both",
      ],
      [{ disconnect: { code: 1001 } }, "Invalid code: expected 1000, 3000-3999 or 4000-4999"],
    ] as const
  ) {
    answer = await c.call("disconnect", { user: "x", ...params });
    assert.deepEqual(answer.body, { error: { code: 400, message } });
  }
});

Deno.test("api presence counts clients and users across pushers after joins, leaves and disconnects", async () => {
  await using c = cluster();
  const alice0 = await c.connect(0, "alice");
  const alice1 = await c.connect(1, "alice");
  const bob1 = await c.connect(1, "bob");
  await c.connect(0, "carol");
  const presence = async (params: Json) => (await c.call("presence", params)).body;
  const stats = async (channel: string) => (await c.call("presence_stats", { channel })).body;

  assert.deepEqual(await presence({ channel: "room" }), {
    result: { num_clients: 0, num_users: 0, users: [], workers_reached: 2 },
  });
  for (const client of [alice0, alice1, bob1]) {
    await c.call("subscribe", { channel: "room", worker_id: client.worker, connection_id: client.connection });
  }
  assert.deepEqual(await presence({ channel: "room" }), {
    result: { num_clients: 3, num_users: 2, users: ["alice", "bob"], workers_reached: 2 },
  });
  assert.deepEqual(await stats("room"), { result: { num_clients: 3, num_users: 2, workers_reached: 2 } });
  assert.deepEqual(await presence({ user: "alice" }), {
    result: { online: true, connections: 2, workers_reached: 2 },
  });

  await c.call("unsubscribe", { channel: "room", user: "alice" });
  assert.deepEqual(await stats("room"), { result: { num_clients: 1, num_users: 1, workers_reached: 2 } });
  bob1.socket.drop();
  assert.deepEqual(await stats("room"), { result: { num_clients: 0, num_users: 0, workers_reached: 2 } });
  await c.call("disconnect", { user: "alice" });
  assert.deepEqual(await presence({ user: "alice" }), {
    result: { online: false, connections: 0, workers_reached: 2 },
  });

  const info = (await c.call("info", {})).body.result;
  assert.equal(info.workers.length, 2);
  assert.deepEqual(
    info.workers.map((w: { worker_id: string }) => w.worker_id).sort(),
    info.workers.map((
      w: { worker_id: string },
    ) => w.worker_id),
  );
  assert.deepEqual({ ...info, workers: undefined }, {
    workers: undefined,
    connections: 1,
    users: 1,
    channels: 0,
    workers_reached: 2,
  });
});

Deno.test("api channels lists the channels with members across pushers, summed, by name, matching a pattern, bounded", async () => {
  await using c = cluster({ maxListedChannels: 3 });
  const alice0 = await c.connect(0, "alice");
  const alice1 = await c.connect(1, "alice");
  const bob1 = await c.connect(1, "bob");
  for (const [client, channel] of [[alice0, "news"], [alice1, "news"], [bob1, "news"], [bob1, "room.2"]] as const) {
    await c.call("subscribe", { channel, ...exclusionOf(client) });
  }
  await c.call("subscribe", { channel: "room.1", user: "alice" });
  await c.call("subscribe", { channel: "__proto__", user: "bob" });

  assert.deepEqual((await c.call("channels", { pattern: "room.*" })).body, {
    result: { channels: { "room.1": { num_clients: 2 }, "room.2": { num_clients: 1 } }, workers_reached: 2 },
  });
  assert.deepEqual((await c.call("channels", { pattern: "news" })).body, {
    result: { channels: { news: { num_clients: 3 } }, workers_reached: 2 },
  });
  // Four channels, three listed: the first by name, each with every worker's count, and a word that one was left out.
  const all = await c.call("channels", {});
  assert.deepEqual(all.body, {
    result: {
      // A computed key: a literal __proto__ would set the prototype, not a key.
      channels: { ["__proto__"]: { num_clients: 1 }, news: { num_clients: 3 }, "room.1": { num_clients: 2 } },
      channels_truncated: true,
      workers_reached: 2,
    },
  });
  assert.deepEqual(Object.keys(all.body.result.channels), ["__proto__", "news", "room.1"]);
  assert.deepEqual((await c.call("channels", { pattern: "nothing.*" })).body, {
    result: { channels: {}, workers_reached: 2 },
  });
  for (const pattern of ["", "**", "a b*", 7, "x".repeat(300)]) {
    const answer = await c.call("channels", { pattern });
    assert.equal(answer.status, 422, String(pattern));
    assert.equal(
      answer.body.error.message,
      'Invalid pattern: expected a channel name, or its first characters and "*"',
    );
  }
});

Deno.test("api presence lists at most maxPresenceUsers users and says it left some out", async () => {
  await using c = cluster({ maxPresenceUsers: 2 });
  for (const [i, user] of ["dave", "carol", "bob", "alice"].entries()) {
    const client = await c.connect(i % 2, user);
    await c.call("subscribe", { channel: "room", worker_id: client.worker, connection_id: client.connection });
  }
  assert.deepEqual((await c.call("presence", { channel: "room" })).body, {
    result: { num_clients: 4, num_users: 4, users: ["alice", "bob"], users_truncated: true, workers_reached: 2 },
  });
});

Deno.test("api presence with a silent worker answers within the timeout and says it is partial", async () => {
  await using c = cluster({ presenceTimeout: 50 });
  const alice = await c.connect(0, "alice");
  await c.call("subscribe", { channel: "room", user: "alice" });
  // A worker that takes presence requests and never answers: hung, or too busy.
  c.broker.connect().subscribe(PRESENCE_SUBJECT, () => {});
  const started = performance.now();
  const answer = await c.call("presence_stats", { channel: "room" });
  assert.ok(performance.now() - started < 1000, "answered within the bound");
  assert.deepEqual(answer.body, {
    result: {
      num_clients: 1,
      num_users: 1,
      workers_reached: 2,
      partial: true,
      workers_answered: 2,
      workers_expected: 3,
    },
  });
  assert.equal(alice.socket.closed, null);
  const info = (await c.call("info", {})).body.result;
  assert.equal(info.partial, true);
  assert.equal(info.workers.length, 2);
});

Deno.test("api answers a send to a gone connection or a gone worker with 404", async () => {
  await using c = cluster();
  const alice = await c.connect(0, "alice");
  const gone = { worker_id: alice.worker, connection_id: alice.connection + 100 };
  const staleWorker = { worker_id: "00000000deadbeef", connection_id: 1 };

  let answer = await c.call("subscribe", { channel: "news", ...gone });
  assert.deepEqual(answer.status, 404);
  assert.deepEqual(answer.body, {
    error: { code: 404, message: `No connection ${gone.connection_id} on pusher worker ${alice.worker}: it is gone` },
  });
  for (const method of ["subscribe", "unsubscribe", "disconnect", "publish"]) {
    answer = await c.call(method, { ...(method === "publish" ? { data: 1 } : { channel: "news" }), ...staleWorker });
    assert.deepEqual(answer.body, {
      error: { code: 404, message: "No pusher worker 00000000deadbeef is connected: the address is stale or wrong" },
    }, method);
  }
});

Deno.test("api refuses what it cannot take, each with its status and a JSON reason", async () => {
  await using c = cluster({ apiKey: "k3y", maxBodyBytes: 200, maxBatchCommands: 2, maxContentBytes: 10 });
  const key: Record<string, string> = { authorization: "Bearer k3y" };
  const refused = async (status: number, message: RegExp, method: string, body: Json | string, headers = key) => {
    const answer = await c.call(method, body, headers);
    assert.equal(answer.status, status, `${method} ${JSON.stringify(body)}`);
    assert.equal(answer.body.error.code, status);
    assert.match(answer.body.error.message, message);
    return answer;
  };
  const unauthorized = await refused(401, /^Unauthorized: this publisher needs an API key/, "info", {}, {});
  assert.equal(unauthorized.headers.get("www-authenticate"), "Bearer");
  await refused(401, /^Unauthorized: wrong API key$/, "info", {}, { authorization: "Bearer nope" });
  await refused(400, /^Invalid JSON: /, "publish", "{nope");
  await refused(400, /^Invalid JSON: the body must be an object$/, "publish", "[]");
  await refused(400, /^Invalid JSON: nested 33 levels deep, the limit is 32$/, "publish", "[".repeat(33));
  await refused(413, /^Body too large: over the 200-byte limit$/, "publish", { data: "x".repeat(300) });
  await refused(404, /^Unknown method: nope; use one of publish, /, "nope", {});
  await refused(422, /^Invalid channel name: only letters/, "publish", { channel: "a b", data: 1 });
  await refused(422, /^Invalid channel name: empty$/, "subscribe", { channel: "", user: "alice" });
  await refused(400, /^Missing channel: /, "presence_stats", {});
  await refused(400, /^Missing data: /, "publish", { channel: "news" });
  await refused(413, /^Data too large: 12 bytes, the limit is 10$/, "publish", { data: "x".repeat(12) });
  // Counted in UTF-8: six 2-byte characters are over, five and three 3-byte ones are not.
  await refused(413, /^Data too large: 12 bytes, the limit is 10$/, "publish", { data: "é".repeat(6) });
  await refused(413, /^Data too large: 12 bytes, the limit is 10$/, "publish", { data: "€".repeat(4) });
  for (const data of ["é".repeat(5), "€".repeat(3), "x".repeat(10)]) {
    assert.equal((await c.call("publish", { data }, key)).status, 200, data);
  }
  await refused(
    400,
    /^Ambiguous target: pass one of channel, user, worker_id with connection_id or nothing \(everyone\)$/,
    "publish",
    { channel: "news", user: "alice", data: 1 },
  );
  await refused(400, /^Missing target: pass user or worker_id with connection_id$/, "disconnect", {});
  await refused(400, /^Incomplete address: /, "publish", { worker_id: "0123456789abcdef", data: 1 });
  await refused(400, /^Invalid exclude worker_id: /, "publish", {
    data: 1,
    exclude: { worker_id: 1, connection_id: 1 },
  });
  await refused(413, /^Too many commands: 3, the limit is 2$/, "batch", { commands: [{}, {}, {}] });
  await refused(400, /^Invalid commands: /, "batch", { commands: {} });

  // Read as JSON under the types clients send JSON text with; a failure says which type it came as.
  const form = { "content-type": "application/x-www-form-urlencoded" };
  await refused(400, /^Invalid JSON \(sent as text\/plain\): /, "publish", "data=1", {
    ...key,
    "content-type": "text/plain;charset=UTF-8",
  });
  await refused(400, /^Invalid JSON \(sent as application\/x-www-form-urlencoded\): /, "publish", "data=1", {
    ...key,
    ...form,
  });
  await refused(415, /^Unsupported content type: multipart\/form-data; send application\/json$/, "publish", "{}", {
    ...key,
    "content-type": "multipart/form-data; boundary=x",
  });

  const get = await c.handler(new Request(`${BASE}/api/info`));
  assert.equal(get.status, 405);
  assert.equal(get.headers.get("allow"), "POST, OPTIONS");
  assert.deepEqual(await get.json(), {
    error: { code: 405, message: "Method GET not allowed: use POST with a JSON body" },
  });

  const preflight = await c.handler(new Request(`${BASE}/api/publish`, { method: "OPTIONS" }));
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get("access-control-allow-headers"), "Authorization, Content-Type, X-API-Key");
});

Deno.test("api reads a JSON body sent without application/json: curl --data's form type (Centrifugo's documented call), text/plain, no type, +json", async () => {
  await using c = cluster();
  const client = await c.connect(0, "alice");
  taken(client);
  const types = [
    "application/x-www-form-urlencoded",
    "text/plain;charset=UTF-8",
    "",
    "application/vnd.api+json",
    "Application/JSON; charset=utf-8",
  ];
  for (const type of types) {
    const answer = await c.call("publish", { data: `as ${type || "none"}` }, { "content-type": type });
    assert.deepEqual(answer.body, { result: { workers_reached: 2 } }, type);
  }
  await settle();
  assert.deepEqual(taken(client), types.map((type) => `as ${type || "none"}`));
});

Deno.test("api maps bus errors as the GET API does: 503 with retry-after while the bus is down, 413 over its limit", async () => {
  await using c = cluster();
  c.broker.down = true;
  for (const [method, body] of [["publish", { data: 1 }], ["presence", { channel: "news" }]] as const) {
    const answer = await c.call(method, body);
    assert.equal(answer.status, 503);
    assert.equal(answer.headers.get("retry-after"), "1");
    assert.match(answer.body.error.message, /^Hub unavailable: /);
  }
  c.broker.down = false;
  await using small = cluster({ maxMessageBytes: 100 });
  const big = await small.call("publish", { data: "x".repeat(200) });
  assert.equal(big.status, 413);
  assert.match(big.body.error.message, /^Content too large for the hub: /);
});

Deno.test("api batch sends its publishes to the bus in one publishBatch, each answered as a single publish", async () => {
  const calls = { publish: 0, publishBatch: [] as number[] };
  const wrapBus = (bus: Bus): Bus => {
    const overrides: Partial<Bus> = {
      publish: (...args: Parameters<Bus["publish"]>) => {
        calls.publish++;
        return bus.publish(...args);
      },
      publishBatch: (items: readonly BusBatchItem[]): Promise<BatchOutcome[]> => {
        calls.publishBatch.push(items.length);
        return publishEach(bus, items);
      },
    };
    return new Proxy(bus, {
      get(target, property) {
        if (property in overrides) return overrides[property as keyof Bus];
        const value = Reflect.get(target, property, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  };
  await using c = cluster({ wrapBus, maxMessageBytes: 400, broker: { history: { subjects: ["channel.kept"] } } });
  const alice = await c.connect(0, "alice");
  const bob = await c.connect(1, "bob");
  await c.call("subscribe", { channel: "kept", user: "alice" });
  const publishes: Json[] = [
    { user: "alice", data: "to alice" },
    { connection: { worker_id: bob.worker, connection_id: bob.connection }, data: "to bob" },
    { connection: { worker_id: bob.worker, connection_id: bob.connection + 1 }, data: "gone" },
    { channel: "kept", data: "kept 1" },
    { channel: "empty", data: 1 },
    { user: "carol", data: "x".repeat(500) },
    { channel: "bad name", data: 1 },
    { everyone: true, data: "all" },
    { channel: "kept", data: "kept 2", idempotency_key: "k" },
    { channel: "kept", data: "kept 2", idempotency_key: "k" },
  ];
  const batch = await c.call("batch", {
    commands: [...publishes.map((publish) => ({ publish })), { presence_stats: { channel: "kept" } }],
  });
  assert.equal(batch.status, 200);
  assert.deepEqual(calls, { publish: 0, publishBatch: [9] }, "the valid publishes in one call");
  const replies = batch.body.replies;
  const epoch = replies[3].result.epoch;
  assert.deepEqual(replies[3], { result: { workers_reached: 1, offset: 1, epoch } });
  assert.deepEqual(replies[8], { result: { workers_reached: 1, offset: 2, epoch } });
  assert.deepEqual(replies[9], replies[8], "the retry is answered as the first");
  assert.deepEqual(replies[6], {
    error: { code: 422, message: "Invalid channel name: only letters, digits and _-.:@/= are allowed" },
  });
  assert.deepEqual(replies[10], { result: { num_clients: 1, num_users: 1, workers_reached: 2 } });
  assert.equal(replies[5].error.code, 413);
  assert.match(replies[5].error.message, /^Content too large for the hub: /);
  // The same publishes one call each are answered alike (but for the positions, which move on).
  for (const [i, publish] of publishes.entries()) {
    if (i === 3 || i === 8 || i === 9) continue;
    const single = await c.call("publish", publish);
    assert.deepEqual(single.body, replies[i], JSON.stringify(publish));
  }
  assert.ok(alice.socket.sent.some((m) => m.includes("to alice")), "the user's send is delivered");
  assert.equal(alice.socket.sent.filter((m) => m.includes("kept 2")).length, 1, "the keyed retry is not delivered");
});

Deno.test("api batch answers each command in order, results and errors mixed, and runs them all", async () => {
  await using c = cluster({ maxBatchCommands: 10 });
  const alice = await c.connect(0, "alice");
  // Commands of a batch run concurrently: one that needs another's effect goes in an earlier call.
  await c.call("subscribe", { channel: "news", user: "alice" });
  const answer = await c.call("batch", {
    commands: [
      { unsubscribe: { channel: "sport", user: "alice" } },
      { publish: { channel: "bad name", data: 1 } },
      { publish: { channel: "news", data: "first" } },
      { nope: {} },
      { batch: { commands: [] } },
      { presence_stats: { channel: "news" } },
      { publish: "not an object" },
      { publish: { user: "alice", data: "second" }, extra: 1 },
      { disconnect: { worker_id: alice.worker, connection_id: alice.connection + 1 } },
    ],
  });
  assert.equal(answer.status, 200);
  assert.deepEqual(answer.body.replies, [
    { result: { connections: 1, workers_reached: 1 } },
    { error: { code: 422, message: "Invalid channel name: only letters, digits and _-.:@/= are allowed" } },
    { result: { workers_reached: 1 } },
    {
      error: {
        code: 404,
        message: "Unknown method: nope; use one of publish, subscribe, unsubscribe, disconnect, presence, " +
          "presence_stats, info, channels, history, history_remove",
      },
    },
    {
      error: {
        code: 404,
        message: "Unknown method: batch; use one of publish, subscribe, unsubscribe, disconnect, presence, " +
          "presence_stats, info, channels, history, history_remove",
      },
    },
    { result: { num_clients: 1, num_users: 1, workers_reached: 2 } },
    { error: { code: 400, message: "Invalid publish parameters: expected an object" } },
    { error: { code: 400, message: "Invalid command: expected one method, got 2 keys" } },
    {
      error: {
        code: 404,
        message: `No connection ${alice.connection + 1} on pusher worker ${alice.worker}: it is gone`,
      },
    },
  ]);
  await settle();
  assert.deepEqual(taken(alice), ['{"subscribed":{"channel":"news"}}', '{"channel":"news","data":"first"}']);
});

Deno.test("api broadcast publishes the same data to each of its channels, answering each as publish would, in order", async () => {
  await using c = cluster({ maxBatchCommands: 4, maxBodyBytes: 1000 });
  const alice = await c.connect(0, "alice");
  const bob = await c.connect(1, "bob");
  const carol = await c.connect(1, "carol");
  await c.call("subscribe", { channel: "news", user: "alice" });
  await c.call("subscribe", { channel: "sport", user: "bob" });
  await c.call("subscribe", { channel: "sport", user: "carol" });
  [alice, bob, carol].forEach(taken);

  const answer = await c.call("broadcast", {
    channels: ["news", "sport", "bad name", "weather"],
    data: { score: 1 },
    exclude: exclusionOf(carol),
  });
  assert.deepEqual(answer.body, {
    result: {
      responses: [
        { result: { workers_reached: 1 } },
        { result: { workers_reached: 1 } },
        { error: { code: 422, message: "Invalid channel name: only letters, digits and _-.:@/= are allowed" } },
        { result: { workers_reached: 0 } },
      ],
    },
  });
  await settle();
  assert.deepEqual([alice, bob, carol].map(taken), [
    ['{"channel":"news","data":{"score":1}}'],
    ['{"channel":"sport","data":{"score":1}}'],
    [],
  ]);

  // Not in a batch, where the batch's commands would multiply it again.
  const batched = await c.call("batch", { commands: [{ broadcast: { channels: ["news"], data: 2 } }] });
  assert.deepEqual(batched.body, {
    replies: [{
      error: { code: 400, message: "Invalid command: broadcast runs on its own (POST /api/broadcast), not in a batch" },
    }],
  });

  const refused = async (status: number, message: string, body: Json) => {
    const answer = await c.call("broadcast", body);
    assert.deepEqual(answer, { status, body: { error: { code: status, message } }, headers: answer.headers });
  };
  const notChannels = "Invalid channels: expected a non-empty array of channel names";
  await refused(400, notChannels, { data: 1 });
  await refused(400, notChannels, { channels: [], data: 1 });
  await refused(400, notChannels, { channels: "news", data: 1 });
  await refused(413, "Too many channels: 5, the limit is 4", { channels: ["a", "b", "c", "d", "e"], data: 1 });
  await refused(
    413,
    "Broadcast too large: 4 channels × 300 bytes of data is over the 1000-byte body limit; send fewer channels a call",
    { channels: ["a", "b", "c", "d"], data: "é".repeat(150) },
  );
  await refused(400, "Ambiguous target: a broadcast takes channels, not channel", {
    channels: ["news"],
    channel: "sport",
    data: 1,
  });
  const missing = await c.call("broadcast", { channels: ["news"] });
  assert.deepEqual(missing.body.result.responses, [{
    error: { code: 400, message: "Missing data: pass data, any JSON value" },
  }]);
  await settle();
  assert.deepEqual([alice, bob, carol].map(taken), [[], [], []]);
});

Deno.test("GET and form publishes take channel= and to_user=, one address at a time", async () => {
  await using c = cluster();
  const alice0 = await c.connect(0, "alice");
  const bob1 = await c.connect(1, "bob");
  await c.call("subscribe", { channel: "news", user: "bob" });
  taken(bob1);
  let response = await c.handler(new Request(`${BASE}/?content=hello&channel=news`));
  assert.equal(await response.text(), "ok");
  assert.equal(response.headers.get("x-pushers-reached"), "1");
  response = await c.handler(
    new Request(`${BASE}/`, {
      method: "POST",
      body: "content=hi+alice&to_user=alice",
      headers: { "content-type": "application/x-www-form-urlencoded" },
    }),
  );
  assert.equal(await response.text(), "ok");
  await settle();
  assert.deepEqual([taken(alice0), taken(bob1)], [["hi alice"], ['{"channel":"news","data":"hello"}']]);

  response = await c.handler(new Request(`${BASE}/?content=x&channel=news&to_user=alice`));
  assert.equal(response.status, 400);
  assert.equal(
    await response.text(),
    "Ambiguous address: pass one of channel, to_user, or to_worker_id with to_connection_id (none to broadcast)\n",
  );
  response = await c.handler(new Request(`${BASE}/?content=x&channel=a%20b`));
  assert.equal(response.status, 422);
  assert.equal(await response.text(), "Invalid channel name: only letters, digits and _-.:@/= are allowed\n");
  response = await c.handler(new Request(`${BASE}/?content=x&to_user=nobody`));
  assert.equal(await response.text(), "ok", "a user offline is no error");
  assert.equal(response.headers.get("x-pushers-reached"), "0");
});

Deno.test("api calls are counted in /metrics by method and code, each batch command too", async () => {
  const metrics = new PublisherMetrics({ connected: true, reconnects: 0 });
  await using c = cluster({ metrics });
  await c.call("publish", { data: 1 });
  await c.call("publish", { channel: "a b", data: 1 });
  await c.call("batch", { commands: [{ info: {} }, { presence: {} }, { presence: "news" }] });
  await c.call("batch", {
    commands: [{ publish: { data: 2 } }, { publish: { channel: "a b", data: 2 } }, { publish: { data: 3 } }],
  });
  const text = metrics.render();
  for (
    const line of [
      'publisher_api_calls_total{method="publish",code="200"} 3',
      'publisher_api_calls_total{method="publish",code="422"} 2',
      'publisher_api_calls_total{method="batch",code="200"} 2',
      'publisher_api_calls_total{method="info",code="200"} 1',
      // Its parameters not an object: refused before they are read, counted all the same.
      'publisher_api_calls_total{method="presence",code="400"} 2',
      'publisher_publishes_total{target="broadcast"} 3',
    ]
  ) assert.ok(text.includes(line), `${line} in\n${text}`);
});

Deno.test("jsonDepth counts nesting outside strings only", () => {
  assert.equal(jsonDepth("1"), 0);
  assert.equal(jsonDepth('{"a":[1,{"b":"[[{{"}]}'), 3);
  assert.equal(jsonDepth('["\\"[[["]'), 1);
  assert.equal(
    jsonDepth('["\\\\",[["\\\\\\"]"]]]'),
    3,
    "an even run of backslashes ends the string, an odd one does not",
  );
});

Deno.test("jsonDepth agrees with a character-by-character reading on random JSON-like text", () => {
  /** The reading jsonDepth speeds up: every character, strings tracked with their escapes. */
  function reference(text: string): number {
    let depth = 0;
    let deepest = 0;
    let inString = false;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (inString) {
        if (c === "\\") i++;
        else if (c === '"') inString = false;
      } else if (c === '"') inString = true;
      else if (c === "[" || c === "{") deepest = Math.max(deepest, ++depth);
      else if (c === "]" || c === "}") depth--;
    }
    return deepest;
  }
  const random = mulberry32(19);
  const pieces = ['"', "\\", "[", "]", "{", "}", "a", ",", ":", "\\\\", '\\"'];
  for (let n = 0; n < 5000; n++) {
    let text = "";
    for (let k = Math.floor(random() * 40); k > 0; k--) text += pieces[Math.floor(random() * pieces.length)];
    assert.equal(jsonDepth(text), reference(text), JSON.stringify(text));
  }
});

// History and idempotency: the hub's, played by the memory broker with history on for channel.*.
const KEEP_CHANNELS: MemoryBrokerOptions = { history: { subjects: ["channel.*"] } };

/** The frames of a socket after its greeting, taken, as the channel publications' `data`. */
function publications(client: Client): Json[] {
  return taken(client).map((frame) => JSON.parse(frame).data);
}

Deno.test("api publish to a history channel answers its position, one offset more each time; other targets keep their shape", async () => {
  await using c = cluster({ broker: KEEP_CHANNELS });
  const first = await c.call("publish", { channel: "news", data: 1 });
  assert.equal(first.status, 200);
  const { epoch } = first.body.result;
  assert.match(epoch, /^[0-9a-f]{8}$/);
  assert.deepEqual(first.body.result, { workers_reached: 0, offset: 1, epoch });
  for (const offset of [2, 3]) {
    assert.deepEqual((await c.call("publish", { channel: "news", data: offset })).body.result, {
      workers_reached: 0,
      offset,
      epoch,
    });
  }
  const other = (await c.call("publish", { channel: "sport", data: 1 })).body.result;
  assert.equal(other.offset, 1, "each channel counts its own");
  assert.deepEqual((await c.call("publish", { user: "alice", data: 1 })).body, { result: { workers_reached: 0 } });
  assert.deepEqual((await c.call("publish", { data: 1 })).body, { result: { workers_reached: 2 } });
});

Deno.test("api publish retried with its idempotency_key is delivered once and answered with the first one's position", async () => {
  await using c = cluster({ broker: KEEP_CHANNELS });
  const alice = await c.connect(0, "alice");
  await c.call("subscribe", { channel: "news", user: "alice" });
  taken(alice);

  const publish = { channel: "news", data: "once", idempotency_key: "order-17" };
  const first = await c.call("publish", publish);
  const retry = await c.call("publish", publish);
  assert.equal(retry.status, 200);
  assert.deepEqual(retry.body, first.body, "the same answer, the same position");
  assert.equal(first.body.result.offset, 1);
  const other = await c.call("publish", { ...publish, data: "again", idempotency_key: "order-18" });
  assert.equal(other.body.result.offset, 2, "another key is another publish");
  await settle();
  assert.deepEqual(publications(alice), ["once", "again"]);
  const history = await c.call("history", { channel: "news" });
  assert.deepEqual(history.body.result.publications, [{ data: "once", offset: 1 }, { data: "again", offset: 2 }]);

  // The GET and form API take the key too.
  for (let i = 0; i < 2; i++) {
    const response = await c.handler(new Request(`${BASE}/?content=hello&channel=news&idempotency_key=get-1`));
    assert.equal(await response.text(), "ok");
  }
  for (let i = 0; i < 2; i++) {
    const response = await c.handler(
      new Request(`${BASE}/`, {
        method: "POST",
        body: "content=form&channel=news&idempotency_key=form-1",
        headers: { "content-type": "application/x-www-form-urlencoded" },
      }),
    );
    assert.equal(await response.text(), "ok");
  }
  await settle();
  assert.deepEqual(publications(alice), ["hello", "form"]);
});

Deno.test("api history lists publications oldest first, after since, up to limit, and says whether it recovered", async () => {
  await using c = cluster({ broker: KEEP_CHANNELS });
  const history = async (params: Json) => {
    const answer = await c.call("history", params);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return answer.body.result;
  };
  const empty = await history({ channel: "news" });
  assert.deepEqual(empty, { publications: [], offset: 0, epoch: empty.epoch, recovered: false });
  for (const n of [1, 2, 3, 4, 5]) await c.call("publish", { channel: "news", data: { n } });
  const all = await history({ channel: "news" });
  const { epoch } = all;
  assert.deepEqual(all, {
    publications: [1, 2, 3, 4, 5].map((n) => ({ data: { n }, offset: n })),
    offset: 5,
    epoch,
    recovered: false,
  });
  assert.deepEqual(await history({ channel: "news", since: { offset: 2, epoch } }), {
    publications: [3, 4, 5].map((n) => ({ data: { n }, offset: n })),
    offset: 5,
    epoch,
    recovered: true,
  });
  assert.deepEqual(await history({ channel: "news", since: { offset: 5, epoch } }), {
    publications: [],
    offset: 5,
    epoch,
    recovered: true,
  }, "nothing missed is a recovery");
  const cut = await history({ channel: "news", since: { offset: 2, epoch }, limit: 2 });
  assert.deepEqual(cut.publications, [{ data: { n: 3 }, offset: 3 }, { data: { n: 4 }, offset: 4 }]);
  assert.equal(cut.recovered, false, "cut by limit: not all that followed");
  const future = await history({ channel: "news", since: { offset: 9, epoch } });
  assert.deepEqual([future.publications, future.recovered], [[], false], "a future offset recovers nothing");
  const stale = await history({ channel: "news", since: { offset: 2, epoch: "00000000" } });
  assert.equal(stale.recovered, false, "another epoch never recovers");
  assert.equal(stale.epoch, epoch);
});

Deno.test("api history does not recover across what the hub trimmed", async () => {
  await using c = cluster({ broker: { history: { subjects: ["channel.*"], size: 3 } } });
  for (const n of [1, 2, 3, 4, 5]) await c.call("publish", { channel: "news", data: n });
  const all = (await c.call("history", { channel: "news" })).body.result;
  assert.deepEqual(all.publications, [{ data: 3, offset: 3 }, { data: 4, offset: 4 }, { data: 5, offset: 5 }]);
  const since1 = (await c.call("history", { channel: "news", since: { offset: 1, epoch: all.epoch } })).body.result;
  assert.equal(since1.recovered, false, "offset 2 is gone");
  const since2 = (await c.call("history", { channel: "news", since: { offset: 2, epoch: all.epoch } })).body.result;
  assert.equal(since2.recovered, true, "3 onwards is all there");
});

Deno.test("api history with reverse lists the last publications newest first, at the top it read, and says when some were trimmed", async () => {
  await using c = cluster({ broker: { history: { subjects: ["channel.news"], size: 4 } } });
  const history = async (params: Json) => {
    const answer = await c.call("history", params);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return answer.body.result;
  };
  const empty = await history({ channel: "news", reverse: true });
  assert.deepEqual(empty, { publications: [], offset: 0, epoch: empty.epoch, recovered: true });
  for (const n of [1, 2, 3, 4, 5, 6]) await c.call("publish", { channel: "news", data: n });
  const { epoch } = empty;
  assert.deepEqual(await history({ channel: "news", reverse: true, limit: 2 }), {
    publications: [{ data: 6, offset: 6 }, { data: 5, offset: 5 }],
    offset: 6,
    epoch,
    recovered: true,
  });
  // The last 4 are all kept; the last 5 reach back past what the hub trimmed (it keeps 4).
  const four = await history({ channel: "news", reverse: true, limit: 4 });
  assert.deepEqual([four.publications.map((p: { data: number }) => p.data), four.recovered], [[6, 5, 4, 3], true]);
  const five = await history({ channel: "news", reverse: true, limit: 5 });
  assert.deepEqual([five.publications.map((p: { data: number }) => p.data), five.recovered], [[6, 5, 4, 3], false]);
  // Forward from the offset it answered misses nothing.
  await c.call("publish", { channel: "news", data: 7 });
  assert.deepEqual((await history({ channel: "news", since: { offset: four.offset, epoch } })).publications, [
    { data: 7, offset: 7 },
  ]);
  for (
    const [params, message] of [
      [{ reverse: "yes" }, "Invalid reverse: expected true or false"],
      [
        { reverse: true, since: { offset: 1, epoch } },
        "Invalid reverse: it reads the newest publications, not forward from since",
      ],
    ] as const
  ) {
    const answer = await c.call("history", { channel: "news", ...params });
    assert.deepEqual(answer.body, { error: { code: 400, message } });
  }
  assert.equal((await c.call("history", { channel: "other", reverse: true })).status, 404, "a channel without history");
});

Deno.test("api history_remove empties a channel's history and gives it a new epoch", async () => {
  await using c = cluster({ broker: KEEP_CHANNELS });
  for (const n of [1, 2]) await c.call("publish", { channel: "news", data: n });
  const before = (await c.call("history", { channel: "news" })).body.result;
  assert.deepEqual((await c.call("history_remove", { channel: "news" })).body, { result: {} });
  const after = (await c.call("history", { channel: "news", since: { offset: 2, epoch: before.epoch } })).body.result;
  assert.deepEqual(after.publications, []);
  assert.equal(after.recovered, false);
  assert.notEqual(after.epoch, before.epoch);
  const next = (await c.call("publish", { channel: "news", data: 3 })).body.result;
  assert.equal(next.epoch, after.epoch);
});

Deno.test("api history of a channel the hub keeps none of answers 404; history_remove of one is no error", async () => {
  await using c = cluster({ broker: { history: { subjects: ["channel.news"] } } });
  await using plain = cluster();
  for (const [cl, channel] of [[c, "sport"], [plain, "news"]] as const) {
    const answer = await cl.call("history", { channel });
    assert.deepEqual(answer.body, {
      error: { code: 404, message: `History is not kept for channel ${channel}: the hub's --history does not name it` },
    });
    assert.deepEqual((await cl.call("history_remove", { channel })).body, { result: {} });
  }
});

Deno.test("api history and history_remove run in a batch", async () => {
  await using c = cluster({ broker: KEEP_CHANNELS });
  await c.call("publish", { channel: "news", data: "x", idempotency_key: "k" });
  const answer = await c.call("batch", {
    commands: [
      { history: { channel: "news" } },
      { history: { channel: "news", limit: 0 } },
      { history_remove: { channel: "sport" } },
      { publish: { channel: "news", data: "x", idempotency_key: "k" } },
    ],
  });
  const epoch = answer.body.replies[0].result.epoch;
  assert.deepEqual(answer.body.replies, [
    { result: { publications: [{ data: "x", offset: 1 }], offset: 1, epoch, recovered: false } },
    { error: { code: 400, message: "Invalid limit: expected an integer from 1 to 100" } },
    { result: {} },
    { result: { workers_reached: 0, offset: 1, epoch } },
  ]);
});

Deno.test("api refuses bad history, history_remove and idempotency parameters with 400", async () => {
  await using c = cluster({ broker: KEEP_CHANNELS, maxHistoryLimit: 10 });
  const refused = async (status: number, message: string, method: string, body: Json) => {
    const answer = await c.call(method, body);
    assert.deepEqual(answer.body, { error: { code: status, message } }, `${method} ${JSON.stringify(body)}`);
    assert.equal(answer.status, status);
  };
  const since = 'Invalid since: expected a position, {"offset": N, "epoch": "..."}';
  const offset = "Invalid since.offset: expected a non-negative integer";
  const epoch = "Invalid since.epoch: expected a string of at most 32 characters";
  const limit = "Invalid limit: expected an integer from 1 to 10";
  const key = "Invalid idempotency_key: expected a string of 1 to 128 characters";
  await refused(400, "Missing channel: pass a channel name", "history", {});
  await refused(400, "Missing channel: pass a channel name", "history_remove", {});
  await refused(422, "Invalid channel name: only letters, digits and _-.:@/= are allowed", "history", {
    channel: "a b",
  });
  for (const bad of [1, "x", null, [1, "e"]]) await refused(400, since, "history", { channel: "news", since: bad });
  for (const bad of [-1, 1.5, "1", null, undefined]) {
    await refused(400, offset, "history", { channel: "news", since: { offset: bad ?? null, epoch: "e" } });
  }
  await refused(400, offset, "history", { channel: "news", since: { epoch: "e" } });
  for (const bad of [1, null, "e".repeat(33)]) {
    await refused(400, epoch, "history", { channel: "news", since: { offset: 1, epoch: bad } });
  }
  await refused(400, epoch, "history", { channel: "news", since: { offset: 1 } });
  for (const bad of [0, -1, 11, 1.5, "5", null]) await refused(400, limit, "history", { channel: "news", limit: bad });
  for (const bad of ["", "k".repeat(129), 7, null, ["k"]]) {
    await refused(400, key, "publish", { channel: "news", data: 1, idempotency_key: bad });
  }
  assert.equal((await c.call("publish", { data: 1, idempotency_key: "k".repeat(128) })).status, 200);
  assert.equal((await c.call("history", { channel: "news", limit: 10 })).status, 200);

  for (const query of ["idempotency_key=", `idempotency_key=${"k".repeat(129)}`]) {
    const response = await c.handler(new Request(`${BASE}/?content=x&channel=news&${query}`));
    assert.equal(response.status, 400);
    assert.equal(await response.text(), `${key}\n`);
  }
});

Deno.test("api history maps bus errors as publish does: 503 with retry-after while the bus is down", async () => {
  await using c = cluster({ broker: KEEP_CHANNELS });
  c.broker.down = true;
  for (const method of ["history", "history_remove"]) {
    const answer = await c.call(method, { channel: "news" });
    assert.equal(answer.status, 503, method);
    assert.equal(answer.headers.get("retry-after"), "1");
    assert.match(answer.body.error.message, /^Hub unavailable: /);
  }
  c.broker.down = false;
});

Deno.test("a body the server read whole is read once: its text is not kept after", () => {
  const read = readBodyOf(new TextEncoder().encode('{"a":1}'));
  assert.equal(read(1024), '{"a":1}');
  assert.throws(() => read(1024), { name: "TypeError", message: "Body already read" });
  assert.throws(() => readBodyOf(new TextEncoder().encode("{}"))(1), {
    message: "Body too large: over the 1-byte limit",
  });
});

Deno.test("api: any body a backend sends to any method is answered with a result or a 400, 404, 413, 422 or 429 reason", async () => {
  await using c = cluster();
  const clients = [await c.connect(0, "alice"), await c.connect(1, "bob")];
  const any = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.string({ maxLength: 20 }), fc.integer());
  const channel = fc.oneof({ weight: 4, arbitrary: fc.constantFrom("news", "room.1", "a:b") }, any);
  const worker = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...clients.map((c) => c.worker)) }, any);
  const connection = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...clients.map((c) => c.connection)) }, any);
  // A target (one, none, or sometimes two), and each other parameter mostly
  // of its own type, sometimes anything: most calls get past the first checks.
  const target = fc.oneof(
    fc.record({ channel }),
    fc.record({ user: fc.oneof({ weight: 4, arbitrary: fc.constantFrom("alice", "bob", "carol") }, any) }),
    fc.record({ worker_id: worker, connection_id: connection }, { requiredKeys: [] }),
    fc.record({ channels: fc.oneof({ weight: 4, arbitrary: fc.array(channel, { maxLength: 4 }) }, any) }),
    fc.constant({}),
    fc.record({ channel, user: any }),
  );
  const typed = <T>(arbitrary: fc.Arbitrary<T>) => fc.oneof({ weight: 4, arbitrary }, any);
  const others = fc.record({
    data: any,
    exclude: typed(fc.record({ worker_id: worker, connection_id: connection })),
    code: typed(fc.integer({ min: 2990, max: 5010 })),
    reason: typed(fc.string({ maxLength: 20 })),
    limit: typed(fc.integer({ min: -1, max: 2000 })),
    since: typed(fc.record({ offset: typed(fc.nat()), epoch: typed(fc.string({ maxLength: 8 })) })),
    reverse: typed(fc.boolean()),
    pattern: typed(fc.constantFrom("*", "room.*", "news")),
    idempotency_key: typed(fc.string({ maxLength: 10 })),
  }, { requiredKeys: [] });
  const params = fc.tuple(target, others).map(([t, o]) => ({ ...o, ...t }));
  const method = fc.constantFrom(...API_METHODS.filter((m) => m !== "batch"), "nope");
  const command = fc.oneof(
    { weight: 4, arbitrary: fc.tuple(method, params).map(([m, p]) => ({ [m]: p })) },
    any,
  );
  const call = fc.oneof(
    { weight: 6, arbitrary: fc.tuple(method, fc.oneof({ weight: 4, arbitrary: params }, any)) },
    fc.tuple(fc.constant("batch"), fc.record({ commands: fc.oneof(fc.array(command, { maxLength: 5 }), any) })),
  );
  await fc.assert(
    fc.asyncProperty(call, async ([name, body]) => {
      const answer = await c.call(name, body as Json);
      if (answer.status === 200) {
        assert.ok("result" in answer.body || "replies" in answer.body || "responses" in answer.body, "a result");
        return;
      }
      assert.ok([400, 404, 413, 422, 429].includes(answer.status), `${answer.status} ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.error.code, answer.status);
      assert.match(answer.body.error.message, /^[^\n]+$/, "a one-line reason");
    }),
    { seed: 16, numRuns: 1500 },
  );
  // Whatever the calls did, both pushers still take connections and deliver.
  const fresh = [await c.connect(0, "dave"), await c.connect(1, "dave")];
  assert.equal((await c.call("publish", { user: "dave", data: "still" })).status, 200);
  await settle();
  assert.deepEqual(fresh.map(taken), [["still"], ["still"]]);
});

Deno.test("api batch of publishes answers and delivers as the same publishes one by one, for any targets, data and refusals", async () => {
  type Target =
    | { everyone: true }
    | { channel: string }
    | { user: string }
    | { connection: number | "stale" };
  const target: fc.Arbitrary<Target> = fc.oneof(
    fc.constant({ everyone: true as const }),
    fc.record({ channel: fc.constantFrom("news", "sport", "nobody", "bad name") }),
    fc.record({ user: fc.constantFrom("alice", "bob", "nobody") }),
    fc.record({ connection: fc.oneof(fc.nat({ max: 3 }), fc.constant("stale" as const)) }),
  );
  const publish = fc.record({
    target,
    data: fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constant(undefined), fc.string({ minLength: 70, maxLength: 90 })),
    exclude: fc.option(fc.nat({ max: 3 }), { freq: 4 }),
  });
  await fc.assert(
    fc.asyncProperty(fc.array(publish, { minLength: 1, maxLength: 12 }), async (publishes) => {
      // Two clusters alike: each client subscribed and named the same, at its own (random) worker ids.
      const sides = await Promise.all([0, 1].map(async () => {
        const c = cluster({ maxContentBytes: 80 });
        const clients = [
          await c.connect(0, "alice"),
          await c.connect(1, "alice"),
          await c.connect(1, "bob"),
          await c.connect(0, "carol"),
        ];
        for (const [i, channel] of [[0, "news"], [2, "news"], [3, "sport"]] as const) {
          assert.equal((await c.call("subscribe", { channel, ...exclusionOf(clients[i]!) })).status, 200);
        }
        await settle();
        clients.forEach(taken);
        return { c, clients };
      }));
      const params = ({ clients }: typeof sides[number], p: typeof publishes[number]): Json => {
        const t = p.target;
        const address = "everyone" in t
          ? {}
          : "connection" in t
          ? t.connection === "stale"
            ? { worker_id: "0123456789abcdef", connection_id: 1 }
            : exclusionOf(clients[t.connection]!)
          : t;
        return {
          ...address,
          ...(p.data === undefined ? {} : { data: p.data }),
          ...(p.exclude === null ? {} : { exclude: exclusionOf(clients[p.exclude]!) }),
        } as Json;
      };
      try {
        const [one, batch] = sides;
        const single: Json[] = [];
        for (const p of publishes) {
          const answer = await one!.c.call("publish", params(one!, p));
          single.push(answer.body);
        }
        const batched = await batch!.c.call("batch", {
          commands: publishes.map((p) => ({ publish: params(batch!, p) })),
        });
        assert.equal(batched.status, 200);
        assert.deepEqual(batched.body.replies, single, "each command answered as alone");
        await settle();
        assert.deepEqual(batch!.clients.map(taken), one!.clients.map(taken), "each client got the same, in order");
      } finally {
        for (const { c } of sides) await c[Symbol.asyncDispose]();
      }
    }),
    { seed: 4237, numRuns: 150 },
  );
});

Deno.test("api batch answers reads up to --max-batch-reply-bytes, and 413 for each past it, the other commands as usual", async () => {
  const budget = 10_000;
  await using c = cluster({ broker: KEEP_CHANNELS, maxBatchReplyBytes: budget });
  // "€" is one UTF-16 unit and three bytes: the budget counts bytes.
  for (let i = 0; i < 10; i++) await c.call("publish", { channel: "news", data: "€".repeat(100) });
  // On its own, a read has no batch budget.
  const alone = await c.call("history", { channel: "news" });
  assert.equal(alone.status, 200);
  const fit = Math.floor(budget / utf8Length(JSON.stringify(alone.body.result)));
  assert.ok(fit >= 2 && fit < 6, `${fit} answers fit`);
  const commands: Json[] = [
    ...Array.from({ length: 6 }, () => ({ history: { channel: "news" } })),
    { publish: { channel: "other", data: "after" } },
    { info: {} },
  ];
  const { status, body } = await c.call("batch", { commands });
  assert.equal(status, 200);
  const replies = body.replies as {
    result?: { publications?: unknown[] };
    error?: { code: number; message: string };
  }[];
  const answered = replies.slice(0, 6).filter((reply) => reply.result?.publications?.length === 10).length;
  assert.equal(answered, fit, JSON.stringify(replies.map((reply) => reply.error?.code ?? "ok")));
  for (const reply of replies.slice(0, 6).filter((reply) => reply.error)) {
    assert.equal(reply.error!.code, 413);
    assert.match(reply.error!.message, /^Batch reply too large: .*passed 10000 bytes \(--max-batch-reply-bytes\)/);
  }
  assert.ok(replies[6]!.result && replies[7]!.result, "a publish and an info past the budget are answered");
});
