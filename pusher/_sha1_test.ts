import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { sha1 } from "./_sha1.ts";

const hex = (bytes: Uint8Array) => Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");

Deno.test("sha1 gives FIPS 180's digests of the standard's examples", () => {
  const text = (s: string) => new TextEncoder().encode(s);
  assert.equal(hex(sha1(text("abc"))), "a9993e364706816aba3e25717850c26c9cd0d89d");
  assert.equal(hex(sha1(text(""))), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  assert.equal(
    hex(sha1(text("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))),
    "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
  );
  assert.equal(hex(sha1(new Uint8Array(1_000_000).fill(0x61))), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
});

Deno.test("sha1 agrees with node:crypto on every length across three blocks, and on random bytes", () => {
  // Lengths around 55, 56 and 64 bytes move the padding into a block of its own.
  for (let length = 0; length <= 200; length++) {
    const bytes = crypto.getRandomValues(new Uint8Array(length));
    assert.equal(hex(sha1(bytes)), createHash("sha1").update(bytes).digest("hex"), `length ${length}`);
  }
  for (let i = 0; i < 200; i++) {
    const bytes = crypto.getRandomValues(new Uint8Array(Math.floor(Math.random() * 5000)));
    assert.equal(hex(sha1(bytes)), createHash("sha1").update(bytes).digest("hex"), `length ${bytes.length}`);
  }
});
