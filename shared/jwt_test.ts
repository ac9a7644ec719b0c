import assert from "node:assert/strict";
import { signJwt, verifyJwt } from "./jwt.ts";

const SECRET = "s3cret-for-tests";
const NOW = 1_800_000_000;

Deno.test("jwt verifies a token from jwt.io's HS256 example with its secret", () => {
  // jwt.io's well-known example, signed by an independent implementation:
  // its signature checks out with the right secret and fails with another.
  const token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." +
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ." +
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
  // Signature is right; the token has no exp, so it is refused for that.
  assert.throws(() => verifyJwt(token, "your-256-bit-secret", NOW), { message: "Invalid token: exp is required" });
  assert.throws(() => verifyJwt(token, "another secret", NOW), { message: "Invalid token: bad signature" });
});

Deno.test("jwt round-trips claims and returns the subject", () => {
  const token = signJwt({ sub: "alice", exp: NOW + 60, room: "x" }, SECRET);
  assert.deepEqual(verifyJwt(token, SECRET, NOW), { sub: "alice", exp: NOW + 60, room: "x" });
});

Deno.test("jwt refuses expired, not-yet-valid, subject-less and tampered tokens", () => {
  assert.throws(() => verifyJwt(signJwt({ sub: "a", exp: NOW }, SECRET), SECRET, NOW), { message: "Token expired" });
  assert.throws(() => verifyJwt(signJwt({ sub: "a", exp: NOW + 9, nbf: NOW + 5 }, SECRET), SECRET, NOW), {
    message: "Token not valid yet",
  });
  assert.throws(() => verifyJwt(signJwt({ exp: NOW + 9 }, SECRET), SECRET, NOW), {
    message: "Invalid token: sub is required",
  });
  const [head, , signature] = signJwt({ sub: "a", exp: NOW + 9 }, SECRET).split(".");
  const forged = Buffer.from(JSON.stringify({ sub: "admin", exp: NOW + 9 })).toString("base64url");
  assert.throws(() => verifyJwt(`${head}.${forged}.${signature}`, SECRET, NOW), {
    message: "Invalid token: bad signature",
  });
});

Deno.test("jwt refuses the none algorithm and malformed tokens", () => {
  const none = Buffer.from(JSON.stringify({ alg: "none" })).toString("base64url");
  const body = Buffer.from(JSON.stringify({ sub: "a", exp: NOW + 9 })).toString("base64url");
  assert.throws(() => verifyJwt(`${none}.${body}.`, SECRET, NOW), {
    message: "Invalid token: algorithm must be HS256, not none",
  });
  assert.throws(() => verifyJwt("abc", SECRET, NOW), /three dot-separated parts/);
  assert.throws(() => verifyJwt("!!.!!.!!", SECRET, NOW), /not base64url JSON|not a JSON object/);
});
