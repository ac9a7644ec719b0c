import assert from "node:assert/strict";
import fc from "fast-check";
import { addressOf, gatedPusher, setUp } from "./_fake_setup.ts";
import { MAX_EARLY_MESSAGES, MAX_READS_IN_FLIGHT, Pusher, type PusherOptions } from "./pusher.ts";
import { type FakeSocket, FakeTransport } from "./fake_transport.ts";
import { createLogger } from "../shared/log.ts";
import { MemoryBroker } from "../shared/memory_bus.ts";
import { BusError } from "../shared/bus.ts";
import {
  BROADCAST_SUBJECT,
  channelSubject,
  commandRoute,
  CONNECTIONS_SUBJECT,
  newWorkerId,
  PRESENCE_SUBJECT,
  presenceQuery,
  publishRoute,
  routeOf,
  userSubject,
  workerSubject,
} from "../shared/address.ts";
import { signJwt } from "../shared/jwt.ts";
import { until } from "../channel/testing.ts";
import type { Json } from "../shared/json.ts";

// Channels, users and presence on the pusher (issue 16), on a fake transport
// and an in-memory bus.

const SECRET = "pusher-secret";

function token(sub: string, claims: Record<string, unknown> = {}): string {
  return `/?token=${jwt(sub, claims)}`;
}

/** A token of `sub`'s, valid for a minute unless `claims` says otherwise. */
function jwt(sub: string, claims: Record<string, unknown> = {}, secret = SECRET): string {
  return signJwt({ sub, exp: Math.floor(Date.now() / 1000) + 60, ...claims }, secret);
}

/** Lets the bus hand over what was published, and the pusher's own publishes (replies, presence events) too. */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Sends a client command and returns the frames it got back. */
async function send(socket: FakeSocket, command: Json | string): Promise<string[]> {
  const before = socket.sent.length;
  socket.receive(typeof command === "string" ? command : JSON.stringify(command));
  await settle();
  return socket.sent.slice(before);
}

async function subscribe(socket: FakeSocket, channel: string, id = 1): Promise<void> {
  // A presence channel's join event may follow the reply.
  assert.deepEqual((await send(socket, { id, subscribe: { channel } }))[0], `{"id":${id},"result":{}}`);
}

/** What a socket got after its greeting and the replies to its own commands. */
function pushes(socket: FakeSocket): string[] {
  return socket.sent.slice(1).filter((frame) => !/^\{"id":\d+,"(result|error)"/.test(frame));
}

Deno.test("pusher delivers a channel publication to the channel's members only, as one JSON frame", async () => {
  await using setup = setUp();
  const a = await setup.connect();
  const b = await setup.connect();
  const c = await setup.connect();
  await subscribe(a, "news");
  await subscribe(b, "news");
  await subscribe(c, "sport");
  const route = publishRoute({ kind: "channel", channel: "news" }, { title: "hi", n: [1, 2] });
  await setup.publish(route.subject, route.data);
  const text = routeOf({ kind: "channel", channel: "sport" }, "goal");
  await setup.publish(text.subject, text.data);
  assert.deepEqual(pushes(a), ['{"channel":"news","data":{"title":"hi","n":[1,2]}}']);
  assert.deepEqual(pushes(b), ['{"channel":"news","data":{"title":"hi","n":[1,2]}}']);
  assert.deepEqual(pushes(c), ['{"channel":"sport","data":"goal"}']);
});

Deno.test("pusher prepares a channel frame once for all its members", async () => {
  await using setup = setUp();
  let prepared = 0;
  const prepare = setup.transport.prepare.bind(setup.transport);
  setup.transport.prepare = (text) => (prepared++, prepare(text));
  for (let i = 0; i < 5; i++) await subscribe(await setup.connect(), "news");
  await setup.publish(channelSubject("news"), { channel: "news", data: 1 });
  assert.equal(prepared, 1);
});

Deno.test("pusher subscribes to a channel's subject with its first local member and drops it with the last", async () => {
  await using setup = setUp();
  const reached = async (subject: string) => (await setup.bus.publish(subject, { channel: "x", data: 1 })).reached;
  assert.equal(await reached(channelSubject("news")), 0);
  const a = await setup.connect();
  const b = await setup.connect();
  await subscribe(a, "news");
  await subscribe(b, "news");
  assert.equal(await reached(channelSubject("news")), 1, "one subscription for the worker, not one per member");
  await send(a, { id: 2, unsubscribe: { channel: "news" } });
  assert.equal(await reached(channelSubject("news")), 1, "b is still a member");
  b.drop();
  assert.equal(await reached(channelSubject("news")), 0, "the last member closed");
  await subscribe(a, "news", 3);
  assert.equal(await reached(channelSubject("news")), 1);
  setup.pusher.detach();
  assert.equal(await reached(channelSubject("news")), 0, "detach drops channel subjects too");
});

Deno.test("pusher's bus link lists exactly the subjects of its interest", async () => {
  await using setup = setUp({ tokenSecret: SECRET });
  const link = setup.pusherBus;
  const base = [BROADCAST_SUBJECT, workerSubject(setup.pusher.workerId), PRESENCE_SUBJECT];
  assert.deepEqual(link.subjects.sort(), [...base].sort());
  const alice1 = await setup.connect(token("alice", { channels: ["news"] }));
  const alice2 = await setup.connect(token("alice", { channels: ["news"] }));
  await subscribe(alice1, "news");
  assert.deepEqual(link.subjects.sort(), [...base, channelSubject("news"), userSubject("alice")].sort());
  alice1.drop();
  assert.deepEqual(link.subjects.sort(), [...base, userSubject("alice")].sort());
  alice2.close(1000, "bye");
  assert.deepEqual(link.subjects.sort(), [...base].sort());
});

Deno.test("pusher delivers a user's publish to every connection of that user and no one else", async () => {
  await using setup = setUp({ tokenSecret: SECRET });
  const alice1 = await setup.connect(token("alice"));
  const alice2 = await setup.connect(token("alice"));
  const bob = await setup.connect(token("bob"));
  const route = publishRoute({ kind: "user", user: "alice" }, { hello: "alice" });
  await setup.publish(route.subject, route.data);
  const text = routeOf({ kind: "user", user: "bob" }, "plain text");
  await setup.publish(text.subject, text.data);
  assert.deepEqual(pushes(alice1), ['{"hello":"alice"}']);
  assert.deepEqual(pushes(alice2), ['{"hello":"alice"}']);
  assert.deepEqual(pushes(bob), ["plain text"]);
});

Deno.test("pusher delivers a JSON broadcast to everyone and a JSON send to one connection", async () => {
  await using setup = setUp();
  const a = await setup.connect();
  const b = await setup.connect();
  const all = publishRoute({ kind: "everyone" }, { n: 1 });
  await setup.publish(all.subject, all.data);
  const one = publishRoute(
    { kind: "connection", workerId: setup.pusher.workerId, connectionId: addressOf(b).connection },
    "just b",
  );
  await setup.publish(one.subject, one.data);
  assert.deepEqual(pushes(a), ['{"n":1}']);
  assert.deepEqual(pushes(b), ['{"n":1}', "just b"]);
});

Deno.test("pusher skips the excluded connection on its own worker only", async () => {
  await using setup = setUp({ tokenSecret: SECRET });
  const a = await setup.connect(token("alice", { channels: ["*"] }));
  const b = await setup.connect(token("alice", { channels: ["*"] }));
  await subscribe(a, "news");
  await subscribe(b, "news");
  const exclude = { worker_id: setup.pusher.workerId, connection_id: addressOf(a).connection };
  const elsewhere = { worker_id: "0000000000000000", connection_id: addressOf(a).connection };
  for (const target of [{ kind: "everyone" }, { kind: "channel", channel: "news" }, { kind: "user", user: "alice" }]) {
    const route = publishRoute(target as never, "x", exclude);
    await setup.publish(route.subject, route.data);
  }
  const other = publishRoute({ kind: "everyone" }, "y", elsewhere);
  await setup.publish(other.subject, other.data);
  assert.deepEqual(pushes(a), ["y"]);
  assert.deepEqual(pushes(b), ["x", '{"channel":"news","data":"x"}', "x", "y"]);
});

Deno.test("pusher keeps the original's text broadcast and targeted send byte for byte beside channels", async () => {
  await using setup = setUp();
  const a = await setup.connect();
  await subscribe(a, "news");
  await setup.publish(BROADCAST_SUBJECT, { content: '{"looks":"like json"}' });
  await setup.publish(workerSubject(setup.pusher.workerId), {
    to_connection_id: addressOf(a).connection,
    content: "plain",
  });
  assert.deepEqual(pushes(a), ['{"looks":"like json"}', "plain"]);
});

Deno.test("pusher answers each client command with its id: subscribe and unsubscribe are idempotent", async () => {
  await using setup = setUp();
  const a = await setup.connect();
  assert.deepEqual(await send(a, { id: 1, subscribe: { channel: "news" } }), ['{"id":1,"result":{}}']);
  assert.deepEqual(await send(a, { id: 2, subscribe: { channel: "news" } }), ['{"id":2,"result":{}}']);
  assert.deepEqual(await send(a, { id: 3, unsubscribe: { channel: "news" } }), ['{"id":3,"result":{}}']);
  assert.deepEqual(await send(a, { id: 4, unsubscribe: { channel: "news" } }), ['{"id":4,"result":{}}']);
  await setup.publish(channelSubject("news"), { channel: "news", data: 1 });
  assert.deepEqual(pushes(a), []);
});

Deno.test("pusher answers a ping at once, and a ping ends a run of malformed messages", async () => {
  await using setup = setUp({ maxBadMessages: 2 });
  const a = await setup.connect();
  assert.deepEqual(await send(a, { id: 1, ping: {} }), ['{"id":1,"result":{}}']);
  assert.deepEqual(await send(a, { id: 2, ping: "now" }), [
    '{"id":2,"error":{"code":400,"message":"Malformed message: ping must be an object"}}',
  ]);
  // A second malformed message in a row would close it; the ping between keeps it.
  assert.deepEqual(await send(a, { id: 3, ping: {} }), ['{"id":3,"result":{}}']);
  assert.deepEqual(await send(a, "not json"), ['{"error":{"code":400,"message":"Malformed message: not JSON"}}']);
  assert.equal(a.closed, null);
});

Deno.test("pusher answers malformed messages, bad names and large messages with their error codes", async () => {
  await using setup = setUp({ maxCommandBytes: 100, maxChannelLength: 10 });
  const a = await setup.connect();
  assert.deepEqual(await send(a, "hello"), ['{"error":{"code":400,"message":"Malformed message: not JSON"}}']);
  assert.deepEqual(await send(a, { id: 1, publish: {} }), [
    '{"id":1,"error":{"code":400,"message":"Malformed message: expected one command, subscribe, unsubscribe, history, presence, presence_stats, refresh or ping"}}',
  ]);
  assert.deepEqual(await send(a, { id: 2, subscribe: { channel: "a b" } }), [
    '{"id":2,"error":{"code":422,"message":"Invalid channel name: only letters, digits and _-.:@/= are allowed"}}',
  ]);
  assert.deepEqual(await send(a, { id: 3, subscribe: { channel: "abcdefghijk" } }), [
    '{"id":3,"error":{"code":422,"message":"Invalid channel name: 11 characters, over the limit of 10"}}',
  ]);
  assert.deepEqual(await send(a, "x".repeat(101)), [
    '{"error":{"code":413,"message":"Message too large: over 100 bytes"}}',
  ]);
  a.receive(new Uint8Array([1, 2, 3]) as unknown as string);
  assert.match(a.sent.at(-1)!, /"code":400,"message":"Malformed message: commands are JSON in text frames"/);
  assert.equal(a.closed, null);
  const metrics = await (await setup.get("/metrics")).text();
  assert.match(metrics, /^pusher_client_errors_total\{code="400"\} 3$/m);
  assert.match(metrics, /^pusher_client_errors_total\{code="422"\} 2$/m);
  assert.match(metrics, /^pusher_client_errors_total\{code="413"\} 1$/m);
});

Deno.test("pusher closes a client with 4400 after maxBadMessages malformed messages in a row, and only then", async () => {
  await using setup = setUp({ maxBadMessages: 3 });
  const patient = await setup.connect();
  const hostile = await setup.connect();
  for (let i = 0; i < 10; i++) {
    patient.receive("bad");
    patient.receive("bad");
    patient.receive(JSON.stringify({ id: i + 1, subscribe: { channel: "news" } }));
  }
  assert.equal(patient.closed, null, "a good message in between resets the count");
  // An app's bad argument is no broken client: answered 400, and not counted toward the close.
  for (let i = 0; i < 10; i++) patient.receive(JSON.stringify({ id: 100 + i, history: { channel: "news", limit: 0 } }));
  assert.equal(patient.closed, null, "bad parameters do not count");
  assert.match(patient.sent.at(-1)!, /^\{"id":109,"error":\{"code":400,"message":"Invalid parameter: history\.limit/);
  hostile.receive("bad");
  hostile.receive("[]");
  assert.equal(hostile.closed, null);
  hostile.receive("{}");
  assert.deepEqual(hostile.closed, { code: 4400, reason: "too many bad messages" });
  assert.match(hostile.sent.at(-1)!, /"code":400/, "the last error frame goes out before the close");
  const metrics = await (await setup.get("/metrics")).text();
  assert.match(metrics, /^pusher_disconnects_total\{reason="bad_messages"\} 1$/m);
});

Deno.test("pusher lets a token subscribe to the channels of its claim, names and prefix* patterns, and refuses others with 403", async () => {
  await using setup = setUp({ tokenSecret: SECRET });
  const a = await setup.connect(token("alice", { channels: ["news", "room.*"] }));
  await subscribe(a, "news", 1);
  await subscribe(a, "room.7", 2);
  assert.deepEqual(await send(a, { id: 3, subscribe: { channel: "secret" } }), [
    '{"id":3,"error":{"code":403,"message":"Not allowed to subscribe: the token does not grant channel secret"}}',
  ]);
  const none = await setup.connect(token("bob"));
  assert.match((await send(none, { id: 1, subscribe: { channel: "news" } }))[0]!, /"code":403/);
  assert.deepEqual(await setup.refused(token("carol", { channels: "news" })), [
    401,
    "Unauthorized: Invalid token: channels must be an array of strings\n",
  ]);
});

Deno.test("pusher without a token secret lets anyone subscribe to any channel", async () => {
  await using setup = setUp();
  const a = await setup.connect();
  await subscribe(a, "anything:at/all=1");
});

Deno.test("pusher lets the backend subscribe a connection to a channel its token does not grant", async () => {
  await using setup = setUp({ tokenSecret: SECRET });
  const a = await setup.connect(token("alice"));
  const route = commandRoute(
    { kind: "connection", workerId: setup.pusher.workerId, connectionId: addressOf(a).connection },
    { cmd: "subscribe", channel: "vip" },
  );
  const { replies } = await setup.bus.request(route.subject, route.data);
  assert.deepEqual(replies, [{ ok: true }]);
  assert.deepEqual(pushes(a), ['{"subscribed":{"channel":"vip"}}']);
  assert.deepEqual(await send(a, { id: 1, subscribe: { channel: "vip" } }), ['{"id":1,"result":{}}']);
  await setup.publish(channelSubject("vip"), { channel: "vip", data: "welcome" });
  assert.deepEqual(pushes(a).at(-1), '{"channel":"vip","data":"welcome"}');
});

Deno.test("pusher applies commands to one connection and replies ok, or no such connection", async () => {
  await using setup = setUp();
  const a = await setup.connect();
  const address = { kind: "connection" as const, workerId: setup.pusher.workerId, connectionId: 1 };
  const ask = async (command: Parameters<typeof commandRoute>[1], connectionId = 1) => {
    const route = commandRoute({ ...address, connectionId }, command);
    return (await setup.bus.request(route.subject, route.data)).replies;
  };
  assert.deepEqual(await ask({ cmd: "subscribe", channel: "news" }), [{ ok: true }]);
  assert.deepEqual(await ask({ cmd: "subscribe", channel: "news" }), [{ ok: true }]);
  assert.deepEqual(await ask({ cmd: "unsubscribe", channel: "news" }), [{ ok: true }]);
  assert.deepEqual(await ask({ cmd: "subscribe", channel: "bad name" }), [{
    ok: false,
    error: "Invalid channel name: only letters, digits and _-.:@/= are allowed",
  }]);
  assert.deepEqual(await ask({ cmd: "subscribe", channel: "news" }, 99), [{ ok: false, error: "no such connection" }]);
  assert.deepEqual(pushes(a), ['{"subscribed":{"channel":"news"}}', '{"unsubscribed":{"channel":"news"}}']);
  assert.deepEqual(await ask({ cmd: "disconnect", code: 4001, reason: "kicked" }), [{ ok: true }]);
  assert.deepEqual(a.closed, { code: 4001, reason: "kicked" });
  const b = await setup.connect();
  assert.deepEqual(await ask({ cmd: "disconnect" }, addressOf(b).connection), [{ ok: true }]);
  assert.deepEqual(b.closed, { code: 4000, reason: "disconnected by the server" });
  const { replies } = await setup.bus.request(workerSubject(setup.pusher.workerId), { cmd: "disconnect", code: 1001 });
  assert.deepEqual(replies, [{
    ok: false,
    error: "Invalid disconnect command: code must be 1000, 3000-3999 or 4000-4999",
  }]);
  const missing = await setup.bus.request(workerSubject(setup.pusher.workerId), { cmd: "disconnect" });
  assert.deepEqual(missing.replies, [{
    ok: false,
    error: "Invalid command: to_connection_id is required on a worker's subject",
  }]);
});

Deno.test("pusher applies a command to every connection of a user and replies how many", async () => {
  await using setup = setUp({ tokenSecret: SECRET, maxChannelsPerConnection: 1 });
  const alice1 = await setup.connect(token("alice", { channels: ["*"] }));
  const alice2 = await setup.connect(token("alice", { channels: ["*"] }));
  const bob = await setup.connect(token("bob"));
  await subscribe(alice2, "other");
  const ask = async (command: Parameters<typeof commandRoute>[1]) => {
    const route = commandRoute({ kind: "user", user: "alice" }, command);
    return (await setup.bus.request(route.subject, route.data)).replies;
  };
  assert.deepEqual(await ask({ cmd: "subscribe", channel: "news" }), [{ connections: 1 }], "alice2 is at its limit");
  assert.deepEqual(pushes(alice1), ['{"subscribed":{"channel":"news"}}']);
  assert.deepEqual(pushes(alice2), []);
  assert.deepEqual(await ask({ cmd: "disconnect", reason: "bye" }), [{ connections: 2 }]);
  assert.deepEqual([alice1.closed?.code, alice2.closed?.code, bob.closed], [4000, 4000, null]);
  await assert.rejects(() => setup.bus.request(userSubject("alice"), { cmd: "disconnect" }), /nobody subscribes/);
});

Deno.test("pusher's reply to a user's subscribe counts the user's connections in the channel afterwards, and to an unsubscribe those out of it", async () => {
  await using setup = setUp({ tokenSecret: SECRET });
  const alice1 = await setup.connect(token("alice", { channels: ["*"] }));
  const alice2 = await setup.connect(token("alice", { channels: ["*"] }));
  await subscribe(alice1, "news");
  const ask = async (command: Parameters<typeof commandRoute>[1]) => {
    const route = commandRoute({ kind: "user", user: "alice" }, command);
    return (await setup.bus.request(route.subject, route.data)).replies;
  };
  assert.deepEqual(await ask({ cmd: "subscribe", channel: "news" }), [{ connections: 2 }], "one was in it already");
  assert.deepEqual([pushes(alice1), pushes(alice2)], [[], ['{"subscribed":{"channel":"news"}}']]);
  assert.deepEqual(await ask({ cmd: "subscribe", channel: "news" }), [{ connections: 2 }], "both were");
  const { worker, connection } = addressOf(alice1);
  const route = commandRoute(
    { kind: "connection", workerId: worker, connectionId: connection },
    { cmd: "unsubscribe", channel: "news" },
  );
  await setup.bus.request(route.subject, route.data);
  assert.deepEqual(
    await ask({ cmd: "unsubscribe", channel: "news" }),
    [{ connections: 2 }],
    "one was out of it already",
  );
});

Deno.test("pusher answers presence: a channel's clients and distinct users, a user's connections, its counts", async () => {
  await using setup = setUp({ tokenSecret: SECRET });
  const grant = { channels: ["*"] };
  const alice1 = await setup.connect(token("alice", grant));
  const alice2 = await setup.connect(token("alice", grant));
  const bob = await setup.connect(token("bob", grant));
  await setup.connect(token("carol", grant));
  for (const socket of [alice1, alice2, bob]) await subscribe(socket, "news");
  await subscribe(bob, "sport", 2);
  const ask = async (query: Parameters<typeof presenceQuery>[0]) => {
    const route = presenceQuery(query);
    return (await setup.bus.request(route.subject, route.data)).replies;
  };
  const [channel] = await ask({ q: "channel", channel: "news" }) as [{ clients: number; users: string[] }];
  assert.equal(channel.clients, 3);
  assert.deepEqual(channel.users.sort(), ["alice", "bob"]);
  assert.deepEqual(await ask({ q: "channel", channel: "nobody" }), [{ clients: 0, users: [] }]);
  assert.deepEqual(await ask({ q: "user", user: "alice" }), [{ connections: 2 }]);
  assert.deepEqual(await ask({ q: "user", user: "dave" }), [{ connections: 0 }]);
  assert.deepEqual(await ask({ q: "info" }), [{
    worker_id: setup.pusher.workerId,
    connections: 4,
    users: 3,
    channels: 2,
  }]);
  assert.deepEqual(await ask({ q: "channels", pattern: "*", limit: 10 }), [{ channels: [["news", 3], ["sport", 1]] }]);
  assert.deepEqual(await ask({ q: "channels", pattern: "sp*", limit: 10 }), [{ channels: [["sport", 1]] }]);
  assert.deepEqual(await ask({ q: "channels", pattern: "news", limit: 10 }), [{ channels: [["news", 3]] }]);
  // The first by name, and a word that more matched.
  assert.deepEqual(await ask({ q: "channels", pattern: "*", limit: 1 }), [{
    channels: [["news", 3]],
    truncated: true,
  }]);
  const { replies } = await setup.bus.request(PRESENCE_SUBJECT, { q: "everything" });
  assert.deepEqual(replies, [{ error: "Invalid presence query: q must be channel, user, info or channels" }]);
  const { replies: noLimit } = await setup.bus.request(PRESENCE_SUBJECT, { q: "channels", pattern: "*" });
  assert.deepEqual(noLimit, [{
    error: "Invalid presence query: channels needs a pattern string and a positive limit",
  }]);
});

Deno.test("pusher lists at most maxPresenceUsers users of a channel, and says it cut the list", async () => {
  await using setup = setUp({ tokenSecret: SECRET, maxPresenceUsers: 2 });
  for (const user of ["a", "b", "c", "d"]) await subscribe(await setup.connect(token(user, { channels: ["*"] })), "x");
  const { replies } = await setup.bus.request(PRESENCE_SUBJECT, { q: "channel", channel: "x" });
  assert.deepEqual(replies, [{ clients: 4, users: ["a", "b"], truncated: true }]);
});

Deno.test("pusher tells the members of a presence channel who joins and leaves, and no one elsewhere", async () => {
  await using setup = setUp({ tokenSecret: SECRET, presenceChannels: ["room.*"] });
  const grant = { channels: ["*"] };
  const alice = await setup.connect(token("alice", grant));
  const bob = await setup.connect(token("bob", grant));
  const worker = setup.pusher.workerId;
  await subscribe(alice, "room.1");
  await subscribe(alice, "lobby", 2);
  await subscribe(bob, "room.1");
  await subscribe(bob, "lobby", 2);
  await send(bob, { id: 3, unsubscribe: { channel: "room.1" } });
  await subscribe(bob, "room.1", 4);
  alice.drop();
  await settle();
  const join = (user: string, id: number) =>
    JSON.stringify({ channel: "room.1", join: { user, worker_id: worker, connection_id: id } });
  const leave = (user: string, id: number) =>
    JSON.stringify({ channel: "room.1", leave: { user, worker_id: worker, connection_id: id } });
  assert.deepEqual(pushes(alice), [join("alice", 1), join("bob", 2), leave("bob", 2), join("bob", 2)]);
  assert.deepEqual(pushes(bob), [join("bob", 2), join("bob", 2), leave("alice", 1)]);
});

Deno.test("pusher tells a member's joins and leaves in turn: one that left while its subscribe was answered is told neither or both", async () => {
  // A second worker's member hears the channel on the bus, as members on other pushers do.
  const { broker, gated, transport, pusher } = gatedPusher({ tokenSecret: SECRET, presenceChannels: ["room.*"] });
  const observer = broker.connect();
  const heard: string[] = [];
  await observer.subscribe(channelSubject("room.1"), (data) => heard.push(JSON.stringify(data)));
  try {
    const grant = { channels: ["*"] };
    const greeted = transport.connect(pusher.handler, token("alice", grant));
    gated.release();
    const alice = await greeted as FakeSocket;
    await settle();
    gated.release();
    // Its subscribe waits for the bus (the channel's subject, then its history); it leaves meanwhile, by itself,
    // then from the backend after a second subscribe, then by closing after a third.
    for (const [id, leave] of [[1, "unsubscribe"], [3, "backend"], [5, "close"]] as const) {
      alice.receive(JSON.stringify({ id, subscribe: { channel: "room.1" } }));
      await settle();
      if (leave === "unsubscribe") alice.receive(JSON.stringify({ id: id + 1, unsubscribe: { channel: "room.1" } }));
      if (leave === "backend") {
        const route = commandRoute(
          { kind: "connection", workerId: pusher.workerId, connectionId: addressOf(alice).connection },
          { cmd: "unsubscribe", channel: "room.1" },
        );
        await observer.request(route.subject, route.data);
      }
      if (leave === "close") alice.drop();
      for (let round = 0; round < 5; round++) {
        gated.release();
        await settle();
      }
    }
    // What was told of alice is joins and leaves in turn, each leave after a join it ends, the last a leave.
    const told = heard.filter((event) => event.includes('"alice"')).map((event) =>
      JSON.parse(event).join ? "join" : "leave"
    );
    assert.ok(told.every((kind, i) => kind === (i % 2 === 0 ? "join" : "leave")), `heard: ${heard.join(" ")}`);
    assert.equal(told.length % 2, 0, `heard: ${heard.join(" ")}`);
  } finally {
    pusher.closeAll();
    pusher.detach();
    await observer.close();
  }
});

Deno.test("pusher refuses channels past its limits with 429 and leaves other connections alone", async () => {
  await using setup = setUp({ maxChannelsPerConnection: 2, maxChannelsPerWorker: 3 });
  const a = await setup.connect();
  const b = await setup.connect();
  await subscribe(a, "1", 1);
  await subscribe(a, "2", 2);
  assert.deepEqual(await send(a, { id: 3, subscribe: { channel: "3" } }), [
    '{"id":3,"error":{"code":429,"message":"Too many channels for this connection: the limit is 2"}}',
  ]);
  await subscribe(b, "3", 1);
  assert.deepEqual(await send(b, { id: 2, subscribe: { channel: "4" } }), [
    '{"id":2,"error":{"code":429,"message":"Too many channels for this worker: the limit is 3"}}',
  ]);
  await subscribe(b, "1", 3);
  const route = commandRoute(
    { kind: "connection", workerId: setup.pusher.workerId, connectionId: addressOf(b).connection },
    { cmd: "subscribe", channel: "5" },
  );
  assert.deepEqual((await setup.bus.request(route.subject, route.data)).replies, [{
    ok: false,
    error: "Too many channels for this connection: the limit is 2",
  }]);
  assert.equal(a.closed, null);
  assert.equal(b.closed, null);
  await setup.publish(channelSubject("1"), { channel: "1", data: "still here" });
  assert.deepEqual([pushes(a), pushes(b)], [['{"channel":"1","data":"still here"}'], [
    '{"channel":"1","data":"still here"}',
  ]]);
});

Deno.test("pusher drops channel and user events of the wrong shape, and keeps going", async () => {
  await using setup = setUp({ tokenSecret: SECRET });
  const a = await setup.connect(token("alice", { channels: ["*"] }));
  await subscribe(a, "news");
  for (const data of [{ channel: "sport", data: 1 }, { data: 1 }, "x", { channel: "news" }] as Json[]) {
    await setup.publish(channelSubject("news"), data);
  }
  for (const data of [{ content: "x" }, "x", { data: 1, to_connection_id: 1 }] as Json[]) {
    await setup.publish(userSubject("alice"), data);
  }
  await setup.publish(channelSubject("news"), { channel: "news", data: "ok" });
  assert.deepEqual(pushes(a), ['{"channel":"news","data":"ok"}']);
  assert.equal(setup.logs.filter((line) => line.includes("wrong shape")).length, 7);
});

Deno.test("pusher counts channels and users in its metrics", async () => {
  await using setup = setUp({ tokenSecret: SECRET });
  const a = await setup.connect(token("alice", { channels: ["*"] }));
  await setup.connect(token("bob"));
  await subscribe(a, "news");
  await subscribe(a, "sport", 2);
  await setup.publish(channelSubject("news"), { channel: "news", data: 1 });
  const metrics = await (await setup.get("/metrics")).text();
  assert.match(metrics, /^pusher_channels 2$/m);
  assert.match(metrics, /^pusher_users 2$/m);
  assert.match(metrics, /^pusher_deliveries_total\{kind="channel"\} 1$/m);
});

Deno.test("pusher adds its deliveries and slow closes to info when asked for counters, and only then", async () => {
  await using setup = setUp({ tokenSecret: SECRET });
  await setup.connect(token("alice"));
  await setup.connect(token("bob"));
  const text = publishRoute({ kind: "everyone" }, "hello");
  await setup.publish(text.subject, text.data);
  const ask = async (query: Parameters<typeof presenceQuery>[0]) =>
    (await setup.bus.request(PRESENCE_SUBJECT, presenceQuery(query).data)).replies;
  const [plain] = await ask({ q: "info" }) as [Record<string, unknown>];
  assert.deepEqual(Object.keys(plain).sort(), ["channels", "connections", "users", "worker_id"]);
  const [counted] = await ask({ q: "info", counters: true }) as [Record<string, unknown>];
  assert.deepEqual(counted, { ...plain, deliveries: 2, slow_closes: 0 });
});

/** A wall clock a test moves, for tokens' expiry, starting now. */
function wallClock(): { now: number; at(expSeconds: number): void } {
  return {
    now: Date.now(),
    at(expSeconds) {
      this.now = expSeconds * 1000;
    },
  };
}

Deno.test("pusher closes a connection with 4401 once its token expires, and no other", async () => {
  const wall = wallClock();
  await using setup = setUp({ tokenSecret: SECRET, clock: () => wall.now });
  const exp = Math.floor(wall.now / 1000) + 60;
  const alice = await setup.connect(token("alice", { exp }));
  const bob = await setup.connect(token("bob", { exp: exp + 60 }));
  assert.equal(setup.pusher.closeExpired(), 0);
  wall.at(exp - 0.001);
  assert.equal(setup.pusher.closeExpired(), 0, "not before its exp");
  wall.at(exp);
  assert.equal(setup.pusher.closeExpired(), 1);
  assert.deepEqual(alice.closed, { code: 4401, reason: "token expired" });
  assert.equal(bob.closed, null);
  assert.equal(setup.pusher.connectionCount, 1);
  assert.deepEqual(setup.pusherBus.subjects.includes(userSubject("alice")), false, "alice's subject went with her");
  const metrics = await (await setup.get("/metrics")).text();
  assert.match(metrics, /^pusher_disconnects_total\{reason="expired"\} 1$/m);
});

Deno.test("pusher takes a refresh's token: the connection lives to its exp, and may join the channels of its claim", async () => {
  const wall = wallClock();
  await using setup = setUp({ tokenSecret: SECRET, clock: () => wall.now });
  const exp = Math.floor(wall.now / 1000) + 60;
  const alice = await setup.connect(token("alice", { exp, channels: ["news"] }));
  await subscribe(alice, "news");
  assert.match((await send(alice, { id: 2, subscribe: { channel: "vip" } }))[0]!, /"code":403/);
  const renewed = jwt("alice", { exp: exp + 600, channels: ["vip"] });
  assert.deepEqual(await send(alice, { id: 3, refresh: { token: renewed } }), ['{"id":3,"result":{}}']);
  wall.at(exp + 1);
  assert.equal(setup.pusher.closeExpired(), 0);
  assert.equal(alice.closed, null, "the first token's exp has passed: the second's counts");
  await subscribe(alice, "vip", 4);
  await setup.publish(channelSubject("news"), { channel: "news", data: "still in" });
  assert.deepEqual(pushes(alice), ['{"channel":"news","data":"still in"}'], "a channel joined before stays");
  wall.at(exp + 600);
  assert.equal(setup.pusher.closeExpired(), 1);
  assert.deepEqual(alice.closed, { code: 4401, reason: "token expired" });
});

Deno.test("pusher refuses a bad refresh with 401, another user's with 403, and the connection stays as it was", async () => {
  const wall = wallClock();
  await using setup = setUp({ tokenSecret: SECRET, clock: () => wall.now });
  const exp = Math.floor(wall.now / 1000) + 60;
  const alice = await setup.connect(token("alice", { exp }));
  const refusals: [string, string][] = [
    [
      jwt("alice", { exp: exp + 600 }, "another-secret"),
      '{"code":401,"message":"Unauthorized: Invalid token: bad signature"}',
    ],
    [jwt("alice", { exp: exp - 120 }), '{"code":401,"message":"Unauthorized: Token expired"}'],
    [jwt("bob", { exp: exp + 600 }), `{"code":403,"message":"Cannot refresh: the token is another user's"}`],
  ];
  for (const [i, [refused, error]] of refusals.entries()) {
    assert.deepEqual(await send(alice, { id: i + 1, refresh: { token: refused } }), [
      `{"id":${i + 1},"error":${error}}`,
    ]);
  }
  assert.equal(alice.closed, null);
  wall.at(exp);
  assert.equal(setup.pusher.closeExpired(), 1, "none of them moved its expiry");
  assert.deepEqual(alice.closed, { code: 4401, reason: "token expired" });

  await using open = setUp();
  const anyone = await open.connect();
  assert.deepEqual(await send(anyone, { id: 1, refresh: { token: jwt("alice") } }), [
    `{"id":1,"error":{"code":403,"message":"Cannot refresh: this connection has no token"}}`,
  ]);
  assert.equal(anyone.closed, null);
});

Deno.test("pusher looks for expired tokens by itself, and stops looking once no connection has a token", async () => {
  const wall = wallClock();
  // The interval is cleared with the last connection that has a token: the test's timer check would fail otherwise.
  await using setup = setUp({ tokenSecret: SECRET, clock: () => wall.now, expiryCheckInterval: 5 });
  const exp = Math.floor(wall.now / 1000) + 60;
  const alice = await setup.connect(token("alice", { exp }));
  wall.at(exp);
  await until(() => alice.closed !== null, 5000, "the expired connection to be closed");
  assert.deepEqual(alice.closed, { code: 4401, reason: "token expired" });
});

Deno.test("pusher with connectionEvents tells each greeted connection's start and end on the connections subject", async () => {
  const wall = wallClock();
  const exp = Math.floor(wall.now / 1000) + 60;
  await using setup = setUp({ tokenSecret: SECRET, clock: () => wall.now, connectionEvents: true });
  const told: Json[] = [];
  await setup.bus.subscribe(CONNECTIONS_SUBJECT, (data) => void told.push(data));
  const alice = await setup.connect(token("alice", { exp: exp + 60 }));
  const bob = await setup.connect(token("bob", { exp }));
  await settle();
  const worker_id = setup.pusher.workerId;
  const [a, b] = [addressOf(alice).connection, addressOf(bob).connection];
  assert.deepEqual(told, [
    { connect: { worker_id, connection_id: a, user: "alice" } },
    { connect: { worker_id, connection_id: b, user: "bob" } },
  ]);
  alice.closeByClient(1000, "bye");
  wall.at(exp);
  setup.pusher.closeExpired();
  await settle();
  assert.deepEqual(told.slice(2), [
    { disconnect: { worker_id, connection_id: a, user: "alice", code: 1000, reason: "client_closed" } },
    { disconnect: { worker_id, connection_id: b, user: "bob", code: 4401, reason: "expired" } },
  ]);
});

Deno.test("pusher tells no connection events unless asked to", async () => {
  await using setup = setUp();
  const told: Json[] = [];
  await setup.bus.subscribe(CONNECTIONS_SUBJECT, (data) => void told.push(data));
  (await setup.connect()).close(1000, "bye");
  await settle();
  assert.deepEqual(told, []);
});

/** Sends a client command and waits for the frame that answers its id. */
async function ask(socket: FakeSocket, command: { id: number } & Record<string, Json>): Promise<Json> {
  socket.receive(JSON.stringify(command));
  const answer = () => socket.sent.find((frame) => frame.startsWith(`{"id":${command.id},`));
  await until(() => answer() !== undefined, 2000, `the answer to command ${command.id}`);
  return JSON.parse(answer()!);
}

/** Another worker on the bus: answers presence requests with `reply`, or never when it is null. */
function otherWorker(setup: ReturnType<typeof setUp>, reply: Json | null): void {
  setup.bus.subscribe(PRESENCE_SUBJECT, (_data, { replyTo }) => {
    if (replyTo && reply !== null) void setup.bus.publish(replyTo, reply);
  });
}

Deno.test("pusher answers a member's presence and presence_stats of a presence channel, over every worker", async () => {
  await using setup = setUp({ tokenSecret: SECRET, presenceChannels: ["room.*"] });
  const grant = { channels: ["*"] };
  const alice1 = await setup.connect(token("alice", grant));
  const alice2 = await setup.connect(token("alice", grant));
  const bob = await setup.connect(token("bob", grant));
  for (const socket of [alice1, alice2, bob]) await subscribe(socket, "room.1");
  otherWorker(setup, { clients: 2, users: ["zoe", "bob"] });
  assert.deepEqual(await ask(alice1, { id: 2, presence: { channel: "room.1" } }), {
    id: 2,
    result: { num_clients: 5, num_users: 3, users: ["alice", "bob", "zoe"] },
  });
  assert.deepEqual(await ask(bob, { id: 2, presence_stats: { channel: "room.1" } }), {
    id: 2,
    result: { num_clients: 5, num_users: 3 },
  });
});

Deno.test("pusher refuses presence to a non-member and on a channel that is not a presence channel, and the connection stays", async () => {
  await using setup = setUp({ tokenSecret: SECRET, presenceChannels: ["room.*"] });
  const grant = { channels: ["*"] };
  const alice = await setup.connect(token("alice", grant));
  const bob = await setup.connect(token("bob", grant));
  await subscribe(alice, "room.1");
  await subscribe(bob, "lobby");
  assert.deepEqual(await ask(bob, { id: 2, presence: { channel: "room.1" } }), {
    id: 2,
    error: { code: 403, message: "Not subscribed to channel room.1: presence is for its members" },
  });
  assert.deepEqual(await ask(bob, { id: 3, presence_stats: { channel: "lobby" } }), {
    id: 3,
    error: { code: 403, message: "Presence is not open on channel lobby: it is not a presence channel" },
  });
  assert.deepEqual(await ask(bob, { id: 4, presence: { channel: "a b" } }), {
    id: 4,
    error: { code: 422, message: "Invalid channel name: only letters, digits and _-.:@/= are allowed" },
  });
  assert.equal(bob.closed, null);
  assert.deepEqual(await ask(alice, { id: 2, presence_stats: { channel: "room.1" } }), {
    id: 2,
    result: { num_clients: 1, num_users: 1 },
  });
});

Deno.test("pusher answers presence with what arrived and partial: true when a worker is silent past presenceTimeout", async () => {
  await using setup = setUp({ tokenSecret: SECRET, presenceChannels: ["room.*"], presenceTimeout: 50 });
  const alice = await setup.connect(token("alice", { channels: ["*"] }));
  await subscribe(alice, "room.1");
  otherWorker(setup, null);
  const started = performance.now();
  assert.deepEqual(await ask(alice, { id: 2, presence: { channel: "room.1" } }), {
    id: 2,
    result: { num_clients: 1, num_users: 1, users: ["alice"], partial: true },
  });
  const waited = performance.now() - started;
  assert.ok(waited >= 45 && waited < 1000, `answered after ${waited} ms, the timeout is 50`);
});

Deno.test("pusher lets a connection have at most MAX_READS_IN_FLIGHT history and presence reads at once: 429 past it", async () => {
  await using setup = setUp({ presenceChannels: ["room.*"], presenceTimeout: 100 }, {
    history: { subjects: ["channel.room.1"] },
  });
  const alice = await setup.connect();
  const other = await setup.connect();
  // A history channel's subscribe answers with its position.
  await ask(alice, { id: 1, subscribe: { channel: "room.1" } });
  await ask(other, { id: 1, subscribe: { channel: "room.1" } });
  otherWorker(setup, null);
  for (let id = 2; id < 2 + MAX_READS_IN_FLIGHT; id++) {
    alice.receive(JSON.stringify({ id, presence: { channel: "room.1" } }));
  }
  const over = 2 + MAX_READS_IN_FLIGHT;
  assert.deepEqual(await ask(alice, { id: over, history: { channel: "room.1" } }), {
    id: over,
    error: {
      code: 429,
      message: `Too many reads in flight: at most ${MAX_READS_IN_FLIGHT} history and presence calls at once`,
    },
  });
  assert.equal(alice.sent.filter((frame) => /"result":\{"num_clients"/.test(frame)).length, 0, "all still waiting");
  // Another connection's reads are its own.
  assert.match(JSON.stringify(await ask(other, { id: 2, presence_stats: { channel: "room.1" } })), /"partial":true/);
  await until(
    () => alice.sent.filter((frame) => /"partial":true/.test(frame)).length === MAX_READS_IN_FLIGHT,
    2000,
    "the reads in flight to answer",
  );
  // Answered, they make room again.
  assert.match(
    JSON.stringify(await ask(alice, { id: over + 1, history: { channel: "room.1" } })),
    /"publications":\[\]/,
  );
  assert.equal(alice.closed, null);
});

Deno.test("pusher bounds its clients' history and presence reads in flight together: 429 past maxClientReads", async () => {
  await using setup = setUp({ presenceChannels: ["room.*"], presenceTimeout: 100, maxClientReads: 3 });
  const [a, b] = [await setup.connect(), await setup.connect()];
  await subscribe(a, "room.1");
  await subscribe(b, "room.1");
  otherWorker(setup, null);
  a.receive(JSON.stringify({ id: 2, presence: { channel: "room.1" } }));
  a.receive(JSON.stringify({ id: 3, presence: { channel: "room.1" } }));
  b.receive(JSON.stringify({ id: 2, presence: { channel: "room.1" } }));
  assert.deepEqual(await ask(b, { id: 3, presence_stats: { channel: "room.1" } }), {
    id: 3,
    error: { code: 429, message: "Too many reads in flight on this pusher worker: at most 3; try again later" },
  });
  await until(() => [a, b].every((s) => s.sent.some((f) => f.startsWith('{"id":2,"result"'))), 2000, "the reads");
  assert.match(JSON.stringify(await ask(b, { id: 4, presence_stats: { channel: "room.1" } })), /"num_clients":2/);
  assert.equal(b.closed, null);
});

Deno.test("pusher tells each member's joins and leaves of a presence channel in turn, and at the end exactly its members as joined, after any interleaving of subscribes, unsubscribes, drops and late bus confirmations", async () => {
  type Step =
    | { slot: number; op: "subscribe" | "unsubscribe" | "backend subscribe" | "backend unsubscribe" | "drop" }
    | { release: true };
  const step: fc.Arbitrary<Step> = fc.oneof(
    // Mostly steps while the bus has not confirmed: a release lets every confirmation so far through.
    {
      weight: 4,
      arbitrary: fc.record({
        slot: fc.nat({ max: 1 }),
        op: fc.constantFrom(
          "subscribe" as const,
          "unsubscribe" as const,
          "backend subscribe" as const,
          "backend unsubscribe" as const,
          "drop" as const,
        ),
      }),
    },
    { weight: 1, arbitrary: fc.constant({ release: true as const }) },
  );
  await fc.assert(
    fc.asyncProperty(fc.array(step, { maxLength: 30 }), async (steps) => {
      const { broker, gated, transport, pusher } = gatedPusher({ tokenSecret: SECRET, presenceChannels: ["room.*"] });
      const observer = broker.connect();
      /** Each connection's joins and leaves as the others hear them, by connection id. */
      const told = new Map<number, ("join" | "leave")[]>();
      await observer.subscribe(channelSubject("room.1"), (data) => {
        const event = data as { join?: { connection_id: number }; leave?: { connection_id: number } };
        const kind = event.join ? "join" : "leave";
        const id = (event.join ?? event.leave)!.connection_id;
        told.set(id, [...told.get(id) ?? [], kind]);
      });
      const quiet = async () => {
        while (gated.waiting() > 0) {
          gated.release();
          await settle();
        }
        await settle();
      };
      const connect = async (user: string) => {
        const socket = await transport.connect(pusher.handler, token(user, { channels: ["*"] })) as FakeSocket;
        // Greeted once the worker holds the user's subject.
        await quiet();
        return socket;
      };
      const slots: (FakeSocket | null)[] = [await connect("alice"), await connect("bob")];
      let id = 0;
      try {
        for (const s of steps) {
          if ("release" in s) {
            gated.release();
          } else {
            const socket = slots[s.slot] ??= await connect(s.slot === 0 ? "alice" : "bob");
            if (s.op === "drop") {
              socket.drop();
              slots[s.slot] = null;
            } else if (s.op === "subscribe" || s.op === "unsubscribe") {
              socket.receive(JSON.stringify({ id: ++id, [s.op]: { channel: "room.1" } }));
            } else {
              const route = commandRoute(
                { kind: "connection", workerId: pusher.workerId, connectionId: addressOf(socket).connection },
                { cmd: s.op === "backend subscribe" ? "subscribe" : "unsubscribe", channel: "room.1" },
              );
              void observer.request(route.subject, route.data).catch(() => {});
            }
          }
          await settle();
        }
        await quiet();
        for (const [connection, kinds] of told) {
          const alternate = kinds.every((kind, i) => kind === (i % 2 === 0 ? "join" : "leave"));
          assert.ok(alternate, `connection ${connection} told ${kinds.join(", ")} after ${JSON.stringify(steps)}`);
        }
        const joined = [...told].filter(([, kinds]) => kinds.at(-1) === "join").map(([connection]) => connection);
        const query = presenceQuery({ q: "channel", channel: "room.1" });
        const [answer] = (await observer.request(query.subject, query.data)).replies as [{ clients: number }];
        assert.equal(joined.length, answer.clients, `told as joined: ${joined} after ${JSON.stringify(steps)}`);
        for (const connection of joined) {
          const member = slots.some((socket) => socket !== null && addressOf(socket).connection === connection);
          assert.ok(member, `connection ${connection} told joined but gone, after ${JSON.stringify(steps)}`);
        }
      } finally {
        pusher.closeAll();
        pusher.detach();
        await observer.close();
      }
    }),
    { seed: 1916, numRuns: 200 },
  );
});

/** Two workers on one bus, each with `options`: the second on a transport of its own. */
function twoWorkers(options: Partial<PusherOptions>) {
  const setup = setUp(options);
  const transport = new FakeTransport();
  const second = new Pusher({
    workerId: newWorkerId(),
    bus: setup.broker.connect(),
    transport,
    logger: createLogger("pusher", { level: "error", sink: () => {} }),
    ...options,
  });
  /** Opens a connection of `user` on worker 0 or 1; resolves once it is greeted or closed. */
  const open = async (worker: 0 | 1, user: string) => {
    const socket = await (worker === 0 ? setup.transport : transport).connect(
      (worker === 0 ? setup.pusher : second).handler,
      token(user),
    ) as FakeSocket;
    await until(() => socket.sent.length > 0 || socket.closed !== null, 2000, "a greeting or a close");
    return socket;
  };
  return {
    setup,
    open,
    [Symbol.asyncDispose]: async () => {
      second.closeAll();
      second.detach();
      await setup[Symbol.asyncDispose]();
    },
  };
}

const greeted = (socket: FakeSocket) => socket.closed === null && /connected\n$/.test(socket.sent[0] ?? "");

Deno.test("pusher closes a user's connection past maxConnectionsPerUser on every worker with 3504 before its greeting, and lets one in again once another closed", async () => {
  await using workers = twoWorkers({ tokenSecret: SECRET, maxConnectionsPerUser: 2 });
  const alice1 = await workers.open(0, "alice");
  const alice2 = await workers.open(1, "alice");
  const alice3 = await workers.open(0, "alice");
  const alice4 = await workers.open(1, "alice");
  const bob = await workers.open(0, "bob");
  assert.deepEqual([alice1, alice2, bob].map(greeted), [true, true, true]);
  for (const over of [alice3, alice4]) {
    assert.deepEqual(over.closed, { code: 3504, reason: "connection limit" });
    assert.deepEqual(over.sent, [], "no greeting");
  }
  // A publish to alice reaches her two connections.
  await workers.setup.publish(userSubject("alice"), { data: "hi" });
  assert.deepEqual([alice1, alice2].map((socket) => socket.sent.at(-1)), ["hi", "hi"]);
  assert.ok(workers.setup.logs.some((line) => line.includes("connection limit")));
  // Counted as a disconnect for that reason: alice's third was on this worker, her fourth on the other.
  const metrics = await (await workers.setup.get("/metrics")).text();
  assert.match(metrics, /^pusher_disconnects_total\{reason="user_limit"\} 1$/m);
  alice1.drop();
  await settle();
  assert.ok(greeted(await workers.open(1, "alice")), "a place was free again");
});

Deno.test("pusher answers what a connection sent before its greeting only after it, and nothing to one refused at its user's limit", async () => {
  await using setup = setUp({ tokenSecret: SECRET, maxConnectionsPerUser: 1 });
  const raw = (user: string) =>
    setup.transport.connect(setup.pusher.handler, token(user, { channels: ["news"] })) as Promise<FakeSocket>;
  // A client that does not wait for its greeting, which waits for the user's count.
  const erin = await raw("erin");
  erin.receive(JSON.stringify({ id: 1, ping: {} }));
  erin.receive(JSON.stringify({ id: 2, subscribe: { channel: "news" } }));
  await until(() => erin.sent.length === 3, 2000, "the greeting and both replies");
  assert.match(erin.sent[0]!, /^workerID:\S+ connectionID:\d+ connected\n$/);
  assert.deepEqual(erin.sent.slice(1).map((frame) => JSON.parse(frame)), [{ id: 1, result: {} }, {
    id: 2,
    result: {},
  }]);
  // Erin's second is over her limit: closed without a greeting, and what it asked for is not answered.
  const over = await raw("erin");
  over.receive(JSON.stringify({ id: 1, subscribe: { channel: "news" } }));
  over.receive(JSON.stringify({ id: 2, ping: {} }));
  await until(() => over.closed !== null, 2000, "the close");
  assert.deepEqual(over.closed, { code: 3504, reason: "connection limit" });
  assert.deepEqual(over.sent, []);
  await setup.publish(channelSubject("news"), { channel: "news", data: "for members" });
  assert.equal(erin.sent.at(-1), JSON.stringify({ channel: "news", data: "for members" }));
  assert.deepEqual(over.sent, []);
  // What waits for a greeting is bounded.
  const eager = await raw("frank");
  for (let id = 1; id <= MAX_EARLY_MESSAGES + 1; id++) eager.receive(JSON.stringify({ id, ping: {} }));
  assert.deepEqual(eager.closed, { code: 1008, reason: "too many messages before the greeting" });
});

Deno.test("pusher lets in exactly the first maxConnectionsPerUser of a user's connections opened at once on two workers", async () => {
  await using workers = twoWorkers({ tokenSecret: SECRET, maxConnectionsPerUser: 3 });
  const opened = await Promise.all(Array.from({ length: 10 }, (_, i) => workers.open(i % 2 === 0 ? 0 : 1, "carol")));
  assert.equal(opened.filter(greeted).length, 3, opened.map((s) => JSON.stringify(s.closed)).join(" "));
  assert.ok(opened.every((socket) => greeted(socket) || socket.closed?.code === 3504));
});

Deno.test("pusher without maxConnectionsPerUser lets a user have any number of connections", async () => {
  await using workers = twoWorkers({ tokenSecret: SECRET });
  const opened = await Promise.all(Array.from({ length: 20 }, (_, i) => workers.open(i % 2 === 0 ? 0 : 1, "dave")));
  assert.ok(opened.every(greeted));
});

Deno.test("pusher counts a user's connections on its own worker when the bus cannot ask the others, and says so", async () => {
  const broker = new MemoryBroker();
  const link = broker.connect();
  // A bus that carries subscriptions but fails every request.
  const bus = new Proxy(link, {
    get(target, property) {
      if (property === "request") return () => Promise.reject(new BusError("unavailable", "the bus is down"));
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const logs: string[] = [];
  const transport = new FakeTransport();
  const pusher = new Pusher({
    workerId: newWorkerId(),
    bus,
    transport,
    logger: createLogger("pusher", { level: "info", sink: (line) => logs.push(line) }),
    tokenSecret: SECRET,
    maxConnectionsPerUser: 1,
  });
  try {
    const open = async (user: string) => {
      const socket = await transport.connect(pusher.handler, token(user)) as FakeSocket;
      await until(() => socket.sent.length > 0 || socket.closed !== null, 2000, "a greeting or a close");
      return socket;
    };
    const alice = await open("alice");
    const again = await open("alice");
    const bob = await open("bob");
    assert.deepEqual([greeted(alice), greeted(bob)], [true, true]);
    assert.deepEqual(again.closed, { code: 3504, reason: "connection limit" });
    assert.ok(logs.some((line) => line.includes("could not count a user's connections on the other workers")));
  } finally {
    pusher.closeAll();
    pusher.detach();
    await link.close();
  }
});

Deno.test("pusher sends a connection nothing before its greeting: a broadcast, a user's publish or a backend command while its user's subject waits for the bus does not reach it", async () => {
  const { broker, gated, transport, pusher } = gatedPusher({ tokenSecret: SECRET });
  const backend = broker.connect();
  try {
    const connecting = transport.connect(pusher.handler, token("alice", { channels: ["*"] }));
    const alice = await connecting as FakeSocket;
    await settle();
    assert.deepEqual(alice.sent, [], "not greeted while the bus has not confirmed alice's subject");
    await backend.publish(BROADCAST_SUBJECT, { content: "to everyone" });
    await backend.publish(BROADCAST_SUBJECT, { data: "json to everyone" });
    await backend.publish(userSubject("alice"), { data: "to alice" });
    const subscribe = commandRoute({ kind: "user", user: "alice" }, { cmd: "subscribe", channel: "news" });
    await backend.request(subscribe.subject, subscribe.data).catch(() => {});
    await settle();
    assert.deepEqual(alice.sent, [], "nothing before the greeting");
    while (gated.waiting() > 0) {
      gated.release();
      await settle();
    }
    assert.match(alice.sent[0] ?? "", /^workerID:\S+ connectionID:\d+ connected\n$/);
    await backend.publish(BROADCAST_SUBJECT, { content: "after" });
    await settle();
    assert.deepEqual(alice.sent.slice(1), ["after"]);
  } finally {
    pusher.closeAll();
    pusher.detach();
    await backend.close();
  }
});

Deno.test("pusher: whatever comes while connections wait for their greeting (broadcasts, users' publishes, backend commands, late bus confirmations), each connection's first message is its greeting, and no user has more greeted than maxConnectionsPerUser", async () => {
  type Step =
    | { connect: "alice" | "bob" }
    | { drop: number }
    | { broadcast: true }
    | { publish: "alice" | "bob" }
    | { subscribe: "alice" | "bob" }
    | { release: true };
  const user = fc.constantFrom("alice" as const, "bob" as const);
  const step: fc.Arbitrary<Step> = fc.oneof(
    { weight: 3, arbitrary: fc.record({ connect: user }) },
    { weight: 1, arbitrary: fc.record({ drop: fc.nat({ max: 9 }) }) },
    { weight: 2, arbitrary: fc.record({ broadcast: fc.constant(true as const) }) },
    { weight: 2, arbitrary: fc.record({ publish: user }) },
    { weight: 1, arbitrary: fc.record({ subscribe: user }) },
    { weight: 2, arbitrary: fc.record({ release: fc.constant(true as const) }) },
  );
  await fc.assert(
    fc.asyncProperty(fc.array(step, { maxLength: 25 }), fc.constantFrom(0, 1, 2), async (steps, limit) => {
      const { broker, gated, transport, pusher } = gatedPusher({ tokenSecret: SECRET, maxConnectionsPerUser: limit });
      const backend = broker.connect();
      const sockets: { user: string; socket: FakeSocket }[] = [];
      const what = () => `limit ${limit} after ${JSON.stringify(steps)}`;
      try {
        for (const s of steps) {
          if ("connect" in s) {
            const socket = await transport.connect(pusher.handler, token(s.connect)) as FakeSocket;
            sockets.push({ user: s.connect, socket });
          } else if ("drop" in s) {
            sockets[s.drop]?.socket.drop();
          } else if ("broadcast" in s) {
            await backend.publish(BROADCAST_SUBJECT, { content: "everyone" });
          } else if ("publish" in s) {
            await backend.publish(userSubject(s.publish), { data: `to ${s.publish}` });
          } else if ("subscribe" in s) {
            const route = commandRoute({ kind: "user", user: s.subscribe }, { cmd: "subscribe", channel: "news" });
            void backend.request(route.subject, route.data).catch(() => {});
          } else {
            gated.release();
          }
          await settle();
        }
        while (gated.waiting() > 0) {
          gated.release();
          await settle();
        }
        await settle();
        for (const { socket } of sockets) {
          if (socket.sent.length > 0) {
            assert.match(socket.sent[0]!, /^workerID:\S+ connectionID:\d+ connected\n$/, what());
          }
          const refused = socket.closed?.code === 3504;
          assert.ok(socket.closed !== null || socket.sent.length > 0, `an open connection is greeted, ${what()}`);
          if (refused) assert.deepEqual(socket.sent, [], `a refused one got nothing, ${what()}`);
        }
        if (limit > 0) {
          for (const name of ["alice", "bob"]) {
            const open = sockets.filter(({ user, socket }) => user === name && socket.closed === null);
            assert.ok(open.length <= limit, `${name} has ${open.length} open, ${what()}`);
          }
        }
      } finally {
        pusher.closeAll();
        pusher.detach();
        await backend.close();
      }
    }),
    { seed: 2026, numRuns: 200 },
  );
});
