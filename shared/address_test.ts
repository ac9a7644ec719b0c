import assert from "node:assert/strict";
import {
  BROADCAST_SUBJECT,
  channelNameError,
  channelOfSubject,
  channelSubject,
  commandRoute,
  MAX_CARRIED_CHANNEL_LENGTH,
  MAX_SUBJECT_LENGTH,
  presenceQuery,
  publishRoute,
  routeOf,
  toChannelEvent,
  toChannelList,
  toChannelPresence,
  toCommand,
  toCommandReply,
  toConnectionEvent,
  toDataPush,
  toPresenceQuery,
  toPushData,
  toUserCommandReply,
  toWorkerInfo,
  userOfSubject,
  userSubject,
} from "./address.ts";
import type { Json } from "./json.ts";

const WORKER = "1f3a9c2e7b4d0a55";

Deno.test("routeOf keeps the original's two routes byte for byte", () => {
  assert.deepEqual(routeOf({ kind: "everyone" }, "hi"), { subject: BROADCAST_SUBJECT, data: { content: "hi" } });
  assert.deepEqual(routeOf({ kind: "connection", workerId: WORKER, connectionId: 7 }, "hi"), {
    subject: `worker.${WORKER}`,
    data: { to_connection_id: 7, content: "hi" },
  });
  assert.equal(
    JSON.stringify(routeOf({ kind: "connection", workerId: WORKER, connectionId: 7 }, "hi").data),
    '{"to_connection_id":7,"content":"hi"}',
  );
});

Deno.test("routeOf carries text to a channel as its data and to a user as data", () => {
  assert.deepEqual(routeOf({ kind: "channel", channel: "news" }, "hi"), {
    subject: "channel.news",
    data: { channel: "news", data: "hi" },
  });
  assert.deepEqual(routeOf({ kind: "user", user: "alice" }, "hi"), { subject: "user.alice", data: { data: "hi" } });
});

Deno.test("publishRoute puts data and exclude on the subject of each kind of address", () => {
  const exclude = { worker_id: WORKER, connection_id: 3 };
  assert.deepEqual(publishRoute({ kind: "everyone" }, { a: 1 }, exclude), {
    subject: "broadcast",
    data: { data: { a: 1 }, exclude },
  });
  assert.deepEqual(publishRoute({ kind: "channel", channel: "c" }, [1], exclude), {
    subject: "channel.c",
    data: { channel: "c", data: [1], exclude },
  });
  assert.deepEqual(publishRoute({ kind: "user", user: "u" }, null), { subject: "user.u", data: { data: null } });
  assert.deepEqual(publishRoute({ kind: "connection", workerId: WORKER, connectionId: 2 }, "x", exclude), {
    subject: `worker.${WORKER}`,
    data: { to_connection_id: 2, data: "x" },
  });
});

Deno.test("commandRoute addresses a connection on its worker's subject and a user on the user's", () => {
  assert.deepEqual(commandRoute({ kind: "connection", workerId: WORKER, connectionId: 4 }, { cmd: "disconnect" }), {
    subject: `worker.${WORKER}`,
    data: { cmd: "disconnect", to_connection_id: 4 },
  });
  assert.deepEqual(commandRoute({ kind: "user", user: "bob" }, { cmd: "unsubscribe", channel: "x" }), {
    subject: "user.bob",
    data: { cmd: "unsubscribe", channel: "x" },
  });
  assert.deepEqual(presenceQuery({ q: "info" }), { subject: "presence", data: { q: "info" } });
});

Deno.test("channel and user subjects map back to their names", () => {
  assert.equal(channelSubject("room.1"), "channel.room.1");
  assert.equal(channelOfSubject("channel.room.1"), "room.1");
  assert.equal(channelOfSubject("user.room.1"), null);
  assert.equal(userSubject("alice"), "user.alice");
  assert.equal(userOfSubject("user.alice"), "alice");
  assert.equal(userOfSubject("broadcast"), null);
});

Deno.test("channelNameError accepts the spec's characters and says what is wrong with the rest", () => {
  for (const name of ["news", "room.1", "a-b_c:d@e/f=g", "A9"]) assert.equal(channelNameError(name), null, name);
  assert.equal(channelNameError(""), "Invalid channel name: empty");
  assert.equal(channelNameError("a b"), "Invalid channel name: only letters, digits and _-.:@/= are allowed");
  assert.equal(channelNameError("é"), "Invalid channel name: only letters, digits and _-.:@/= are allowed");
  assert.equal(channelNameError(5), "Invalid channel name: expected a string, got number");
  assert.equal(channelNameError("abcd", 3), "Invalid channel name: 4 characters, over the limit of 3");
});

Deno.test("channelNameError keeps a channel's subject within what the bus carries", () => {
  assert.equal(channelSubject("x".repeat(MAX_CARRIED_CHANNEL_LENGTH)).length, MAX_SUBJECT_LENGTH);
  assert.equal(channelNameError("x".repeat(MAX_CARRIED_CHANNEL_LENGTH)), null);
  assert.match(channelNameError("x".repeat(MAX_CARRIED_CHANNEL_LENGTH + 1))!, /over the limit of 248/);
});

Deno.test("toPushData still reads the original's two shapes", () => {
  assert.deepEqual(toPushData({ content: "x" }), { content: "x" });
  assert.deepEqual(toPushData({ content: "x", to_connection_id: 2 }), { content: "x", to_connection_id: 2 });
  assert.equal(toPushData({ data: "x" }), null);
});

Deno.test("toDataPush and toChannelEvent check data, exclude and presence members", () => {
  assert.deepEqual(toDataPush({ data: null }), { data: null });
  assert.deepEqual(toDataPush({ data: 1, exclude: { worker_id: WORKER, connection_id: 1 } }), {
    data: 1,
    exclude: { worker_id: WORKER, connection_id: 1 },
  });
  assert.equal(toDataPush({ data: 1, exclude: { worker_id: WORKER, connection_id: 0 } }), null);
  assert.equal(toDataPush({ content: "x" }), null);
  assert.equal(toDataPush({ data: 1, to_connection_id: "2" }), null);
  assert.deepEqual(toChannelEvent({ channel: "c", data: { a: 1 } }), { channel: "c", data: { a: 1 } });
  const member = { user: null, worker_id: WORKER, connection_id: 3 };
  assert.deepEqual(toChannelEvent({ channel: "c", join: member }), { channel: "c", join: member });
  assert.deepEqual(toChannelEvent({ channel: "c", leave: { ...member, user: "a" } }), {
    channel: "c",
    leave: { ...member, user: "a" },
  });
  assert.equal(toChannelEvent({ channel: "c" }), null);
  assert.equal(toChannelEvent({ channel: 1, data: 1 }), null);
  assert.equal(toChannelEvent({ channel: "c", join: { user: 1, worker_id: WORKER, connection_id: 3 } }), null);
});

Deno.test("toCommand reads each command and names what is wrong with a bad one", () => {
  assert.equal(toCommand({ content: "x" }), null);
  assert.deepEqual(toCommand({ cmd: "subscribe", channel: "a", to_connection_id: 3 }), {
    cmd: "subscribe",
    channel: "a",
    to_connection_id: 3,
  });
  assert.deepEqual(toCommand({ cmd: "disconnect" }), { cmd: "disconnect" });
  assert.deepEqual(toCommand({ cmd: "disconnect", code: 4001, reason: "bye" }), {
    cmd: "disconnect",
    code: 4001,
    reason: "bye",
  });
  assert.match(toCommand({ cmd: "disconnect", code: 1001 }) as string, /code must be 1000, 3000-3999 or 4000-4999/);
  assert.match(toCommand({ cmd: "disconnect", reason: "x".repeat(124) }) as string, /reason is over 123 bytes/);
  assert.match(toCommand({ cmd: "subscribe" }) as string, /channel must be a string/);
  assert.match(toCommand({ cmd: "kick" }) as string, /cmd must be/);
  assert.match(toCommand({ cmd: "subscribe", channel: "a", to_connection_id: -1 }) as string, /to_connection_id/);
});

Deno.test("presence queries and every reply shape are checked", () => {
  assert.deepEqual(toPresenceQuery({ q: "channel", channel: "a" }), { q: "channel", channel: "a" });
  assert.deepEqual(toPresenceQuery({ q: "user", user: "u" }), { q: "user", user: "u" });
  const before = { at: 1_700_000_000_000, worker_id: "0123456789abcdef", connection_id: 7 };
  assert.deepEqual(toPresenceQuery({ q: "user", user: "u", before: { ...before, extra: 1 } }), {
    q: "user",
    user: "u",
    before,
  });
  for (
    const bad of [null, 5, { ...before, at: "now" }, { ...before, worker_id: 1 }, { ...before, connection_id: -1 }]
  ) {
    assert.match(toPresenceQuery({ q: "user", user: "u", before: bad }) as string, /before must be \{at, worker_id/);
  }
  assert.deepEqual(toPresenceQuery({ q: "info" }), { q: "info" });
  assert.deepEqual(toPresenceQuery({ q: "info", counters: true }), { q: "info", counters: true });
  assert.deepEqual(toPresenceQuery({ q: "info", counters: "yes" }), { q: "info" });
  assert.deepEqual(toPresenceQuery({ q: "channels", pattern: "room.*", limit: 10 }), {
    q: "channels",
    pattern: "room.*",
    limit: 10,
  });
  const badQueries: Json[] = [{ pattern: "*" }, { pattern: "*", limit: 0 }, { pattern: 1, limit: 10 }, { limit: 10 }];
  for (const bad of badQueries as { [key: string]: Json }[]) {
    assert.match(
      toPresenceQuery({ q: "channels", ...bad }) as string,
      /channels needs a pattern string and a positive/,
    );
  }
  assert.match(toPresenceQuery({ q: "who" }) as string, /q must be channel, user, info or channels/);
  assert.match(toPresenceQuery("info") as string, /expected an object/);
  assert.deepEqual(toCommandReply({ ok: true }), { ok: true });
  assert.deepEqual(toCommandReply({ ok: false, error: "no such connection" }), {
    ok: false,
    error: "no such connection",
  });
  assert.equal(toCommandReply({ ok: false }), null);
  assert.deepEqual(toUserCommandReply({ connections: 2 }), { connections: 2 });
  assert.equal(toUserCommandReply({ connections: -1 }), null);
  assert.deepEqual(toChannelPresence({ clients: 2, users: ["a"] }), { clients: 2, users: ["a"] });
  assert.deepEqual(toChannelPresence({ clients: 2, users: ["a"], truncated: true }), {
    clients: 2,
    users: ["a"],
    truncated: true,
  });
  assert.equal(toChannelPresence({ clients: 2, users: [1] }), null);
  assert.deepEqual(toChannelList({ channels: [["a", 2]] }), { channels: [["a", 2]] });
  assert.deepEqual(toChannelList({ channels: [], truncated: true }), { channels: [], truncated: true });
  const badLists: Json[] = [{}, { channels: [["a"]] }, { channels: [["a", -1]] }, { channels: [[1, 2]] }, {
    channels: "a",
  }];
  for (const bad of badLists) {
    assert.equal(toChannelList(bad), null, JSON.stringify(bad));
  }
  const info = { worker_id: WORKER, connections: 3, users: 1, channels: 2 };
  assert.deepEqual(toWorkerInfo(info), info);
  assert.equal(toWorkerInfo({ ...info, channels: "2" }), null);
  assert.deepEqual(toWorkerInfo({ ...info, deliveries: 7, slow_closes: 1 }), {
    ...info,
    deliveries: 7,
    slow_closes: 1,
  });
  assert.deepEqual(toWorkerInfo({ ...info, deliveries: -1, slow_closes: "1" }), info, "bad counters are left out");
});

Deno.test("toConnectionEvent passes the pusher's connection events and nothing else", () => {
  const info = { worker_id: "1f3a9c2e7b4d0a55", connection_id: 7, user: "alice" };
  assert.deepEqual(toConnectionEvent({ connect: info }), { connect: info });
  assert.deepEqual(toConnectionEvent({ connect: { ...info, user: null } }), { connect: { ...info, user: null } });
  const ended = { ...info, code: 4401, reason: "expired" };
  assert.deepEqual(toConnectionEvent({ disconnect: ended }), { disconnect: ended });
  const refused: Json[] = [
    null,
    "connect",
    { connect: info, disconnect: ended },
    { join: info },
    { connect: { ...info, worker_id: "W" } },
    { connect: { ...info, connection_id: 0 } },
    { connect: { ...info, user: 7 } },
    { connect: { ...info, user: "u".repeat(300) } },
    { disconnect: info },
    { disconnect: { ...ended, reason: "r".repeat(65) } },
  ];
  for (const data of refused) assert.equal(toConnectionEvent(data), null, JSON.stringify(data));
});
