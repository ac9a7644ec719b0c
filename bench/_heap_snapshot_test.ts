import assert from "node:assert/strict";
import { type HeapSnapshot, perConnection, summarize } from "./_heap_snapshot.ts";

/** A snapshot in V8's layout: [type, name, self_size] per node. */
function snapshot(nodes: [string, string, number][]): HeapSnapshot {
  const types = ["hidden", "object", "closure", "string", "number"];
  const strings: string[] = [];
  const index = (text: string) => (strings.includes(text) ? strings.indexOf(text) : strings.push(text) - 1);
  return {
    snapshot: { meta: { node_fields: ["type", "name", "self_size"], node_types: [types] } },
    nodes: nodes.flatMap(([type, name, size]) => [types.indexOf(type), index(name), size]),
    strings,
  };
}

Deno.test("heap snapshot rows sum by kind; scopes are one kind, strings one whatever their text", () => {
  const rows = summarize(snapshot([
    ["object", "Socket", 136],
    ["object", "Socket", 136],
    ["object", "system / Context / scope @12", 40],
    ["object", "system / Context / scope @99", 48],
    ["string", "hello", 32],
    ["string", "world", 24],
  ]));
  assert.deepEqual(rows.get("object Socket"), { kind: "object Socket", count: 2, bytes: 272 });
  assert.deepEqual(rows.get("object system / Context / scope"), {
    kind: "object system / Context / scope",
    count: 2,
    bytes: 88,
  });
  assert.deepEqual(rows.get("string"), { kind: "string", count: 2, bytes: 56 });
});

Deno.test("heap per connection: what was added between two snapshots, per connection, largest first", () => {
  const before = summarize(snapshot([["object", "Socket", 136], ["closure", "gone", 56], ["object", "Kept", 10]]));
  const after = summarize(snapshot([
    ["object", "Socket", 136],
    ["object", "Socket", 136],
    ["object", "Socket", 136],
    ["object", "FrameWriter", 160],
    ["object", "FrameWriter", 160],
    ["object", "Kept", 10],
  ]));
  assert.deepEqual(perConnection(before, after, 2), [
    { kind: "object FrameWriter", count: 1, bytes: 160 },
    { kind: "object Socket", count: 1, bytes: 136 },
    { kind: "closure gone", count: -0.5, bytes: -28 },
  ]);
});
