import assert from "node:assert/strict";
import { Presence, type PresenceConnection } from "./presence.ts";

/** A worker's presence over `channels`, each with `members(name)` members. */
function presenceOf(channels: readonly string[], members: (name: string) => number) {
  const sets = new Map(channels.map((name) => [
    name,
    new Set<PresenceConnection>(Array.from({ length: members(name) }, (_, id) => ({ id, user: null, opened: 0 }))),
  ]));
  const none = new Set<PresenceConnection>();
  return new Presence<PresenceConnection>({
    workerId: "0123456789abcdef",
    members: (channel) => sets.get(channel) ?? none,
    channels: () => sets.keys(),
    ofUser: () => none,
    counts: () => ({ connections: 0, users: 0, channels: sets.size }),
  });
}

Deno.test("presence lists the first channels by name that match, as a full sort would, for any limit", () => {
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let round = 0; round < 200; round++) {
    const names = new Set<string>();
    const count = Math.floor(random() * 60);
    while (names.size < count) {
      const prefix = random() < 0.5 ? "room." : "chat.";
      names.add(prefix + Math.floor(random() * 1000).toString(36));
    }
    const channels = [...names];
    const limit = 1 + Math.floor(random() * 40);
    const pattern = random() < 0.5 ? "*" : "room.*";
    const matching = channels.filter((name) => pattern === "*" || name.startsWith("room.")).sort();
    const expected = {
      channels: matching.slice(0, limit).map((name) => [name, name.length]),
      ...(matching.length > limit ? { truncated: true } : {}),
    };
    const presence = presenceOf(channels, (name) => name.length);
    assert.deepEqual(presence.answer({ q: "channels", pattern, limit }), expected, `round ${round}`);
  }
});

Deno.test("presence counts a user's connections here, or those opened before a given one, by time, worker, then id", () => {
  const worker = "0123456789abcdef";
  const alice = new Set<PresenceConnection>([
    { id: 1, user: "alice", opened: 1000 },
    { id: 2, user: "alice", opened: 2000 },
    { id: 3, user: "alice", opened: 2000 },
  ]);
  const presence = new Presence<PresenceConnection>({
    workerId: worker,
    members: () => new Set(),
    channels: () => [],
    ofUser: (user) => user === "alice" ? alice : new Set(),
    counts: () => ({ connections: 3, users: 1, channels: 0 }),
  });
  const before = (at: number, worker_id: string, connection_id: number) =>
    presence.answer({ q: "user", user: "alice", before: { at, worker_id, connection_id } });
  assert.deepEqual(presence.answer({ q: "user", user: "alice" }), { connections: 3 });
  assert.deepEqual(presence.answer({ q: "user", user: "bob" }), { connections: 0 });
  assert.deepEqual(before(999, worker, 9), { connections: 0 });
  assert.deepEqual(before(1000, worker, 1), { connections: 0 }, "not itself");
  assert.deepEqual(before(2000, worker, 3), { connections: 2 }, "the same time: the lower id first");
  assert.deepEqual(before(2000, "ffffffffffffffff", 0), { connections: 3 }, "the same time: the lower worker first");
  assert.deepEqual(before(2000, "0000000000000000", 99), { connections: 1 });
  assert.deepEqual(before(5000, worker, 99), { connections: 3 });
});
