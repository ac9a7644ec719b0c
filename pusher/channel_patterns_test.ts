import assert from "node:assert/strict";
import { channelMatcher, channelsClaim } from "./channel_patterns.ts";

Deno.test("channel patterns match exact names and prefix* patterns only", () => {
  const allowed = channelMatcher(["news", "room.*"]);
  assert.equal(allowed("news"), true);
  assert.equal(allowed("room.1"), true);
  assert.equal(allowed("room."), true);
  assert.equal(allowed("newsletter"), false);
  assert.equal(allowed("room"), false);
  assert.equal(channelMatcher([])("news"), false);
  assert.equal(channelMatcher(["*"])("anything"), true);
  assert.equal(channelMatcher(["a*b"])("axb"), false, "a star inside a pattern is an ordinary character");
  assert.equal(channelMatcher(["a*b"])("a*b"), true);
});

Deno.test("a token's channels claim is an array of strings, absent meaning none", () => {
  assert.deepEqual(channelsClaim(undefined), []);
  assert.deepEqual(channelsClaim(["a", "b*"]), ["a", "b*"]);
  assert.equal(channelsClaim("a"), "Invalid token: channels must be an array of strings");
  assert.equal(channelsClaim(["a", 1]), "Invalid token: channels must be an array of strings");
});
