import assert from "node:assert/strict";
import { Presence, type PresenceConnection } from "./presence.ts";

/** A worker's presence over `channels`, each with `members(name)` members. */
function presenceOf(channels: readonly string[], members: (name: string) => number) {
  const sets = new Map(channels.map((name) => [
    name,
    new Set<PresenceConnection>(Array.from({ length: members(name) }, (_, id) => ({ id, user: null }))),
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
