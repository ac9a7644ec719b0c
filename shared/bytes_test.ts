import assert from "node:assert/strict";
import { concat, utf8Length } from "./bytes.ts";

Deno.test("concat joins chunks in order into a fresh array, with or without the total given", () => {
  const a = new Uint8Array([1, 2]);
  const b = new Uint8Array([]);
  const c = new Uint8Array([3, 4, 5]);
  const expected = new Uint8Array([1, 2, 3, 4, 5]);
  assert.deepEqual(concat([a, b, c]), expected);
  assert.deepEqual(concat([a, b, c], 5), expected);
  const joined = concat([a, c]);
  joined[0] = 9;
  assert.equal(a[0], 1, "the chunks are copied, not shared");
});

Deno.test("concat returns a single chunk itself, without copying", () => {
  const only = new Uint8Array([1, 2, 3]).subarray(1);
  assert.equal(concat([only]), only);
  assert.equal(concat([only], only.length), only);
});

Deno.test("concat of no chunks is an empty array", () => {
  assert.deepEqual(concat([]), new Uint8Array(0));
  assert.deepEqual(concat([], 0), new Uint8Array(0));
});

Deno.test("utf8Length counts what TextEncoder would encode, lone surrogates included", () => {
  const encoder = new TextEncoder();
  for (
    const text of [
      "",
      "ascii",
      "é",
      "€",
      "😀",
      "a€😀",
      "\ud800",
      "\udc00x",
      "\ud800\ud800",
      "x\udbff\udfff",
      "\u07ff\u0800",
    ]
  ) {
    assert.equal(utf8Length(text), encoder.encode(text).length, JSON.stringify(text));
  }
});
