import assert from "node:assert/strict";
import { ChannelMembership, type Member } from "./channels.ts";

function member(id: number): Member {
  return { id, channels: null };
}

Deno.test("membership calls onFirst with a channel's first member and onLast when its last leaves or closes", () => {
  const events: string[] = [];
  const membership = new ChannelMembership({
    onFirst: (c) => events.push(`first ${c}`),
    onLast: (c) => events.push(`last ${c}`),
  });
  const a = member(1);
  const b = member(2);
  assert.equal(membership.join(a, "news"), "joined");
  assert.equal(membership.join(b, "news"), "joined");
  assert.equal(membership.join(a, "news"), "member");
  assert.equal(membership.join(a, "sport"), "joined");
  assert.deepEqual(events, ["first news", "first sport"]);
  assert.deepEqual([...membership.members("news")], [a, b]);
  assert.equal(membership.size, 2);
  assert.equal(membership.leave(a, "news"), true);
  assert.equal(membership.leave(a, "news"), false);
  assert.deepEqual(events, ["first news", "first sport"], "b is still in news");
  assert.deepEqual(membership.leaveAll(a), ["sport"]);
  assert.equal(a.channels, null);
  assert.deepEqual(membership.leaveAll(b), ["news"]);
  assert.deepEqual(events, ["first news", "first sport", "last sport", "last news"]);
  assert.equal(membership.size, 0);
  assert.equal(membership.members("news").size, 0);
});

Deno.test("membership refuses a channel past the connection's limit and a new channel past the worker's", () => {
  const membership = new ChannelMembership({ maxPerConnection: 2, maxPerWorker: 3 });
  const a = member(1);
  const b = member(2);
  assert.equal(membership.join(a, "1"), "joined");
  assert.equal(membership.join(a, "2"), "joined");
  assert.equal(membership.join(a, "3"), "connection_limit");
  assert.equal(membership.join(a, "1"), "member", "a channel it is in is no new one");
  assert.equal(membership.join(b, "3"), "joined");
  assert.equal(membership.join(b, "4"), "worker_limit");
  assert.equal(membership.join(b, "1"), "joined", "a channel the worker has members of is no new one");
  assert.equal(membership.has(b, "1"), true);
  assert.equal(membership.has(b, "4"), false);
});
