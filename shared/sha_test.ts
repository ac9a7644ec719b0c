import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import fc from "fast-check";
import { hmacSha256, sha1, sha256 } from "./sha.ts";

const utf8 = new TextEncoder();
const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

Deno.test("sha1 and sha256 give FIPS 180's digests of its examples", () => {
  assert.equal(hex(sha1(utf8.encode("abc"))), "a9993e364706816aba3e25717850c26c9cd0d89d");
  assert.equal(hex(sha1(new Uint8Array(0))), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  assert.equal(
    hex(sha256(utf8.encode("abc"))),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  assert.equal(
    hex(sha256(utf8.encode("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
});

Deno.test("hmacSha256 gives RFC 4231's MACs, a key longer than a block included", () => {
  assert.equal(
    hex(hmacSha256(new Uint8Array(20).fill(0x0b), utf8.encode("Hi There"))),
    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
  );
  assert.equal(
    hex(
      hmacSha256(new Uint8Array(131).fill(0xaa), utf8.encode("Test Using Larger Than Block-Size Key - Hash Key First")),
    ),
    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
  );
});

Deno.test("sha1, sha256 and hmacSha256 agree with node:crypto on random inputs of every length around the block edges", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.uint8Array({ maxLength: 150 }), (message, key) => {
      assert.equal(hex(sha1(message)), createHash("sha1").update(message).digest("hex"));
      assert.equal(hex(sha256(message)), createHash("sha256").update(message).digest("hex"));
      assert.equal(hex(hmacSha256(key, message)), createHmac("sha256", key).update(message).digest("hex"));
    }),
    { numRuns: 500 },
  );
});
