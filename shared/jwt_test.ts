import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
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
  assert.throws(() => verifyJwt("!!.!!.!!", SECRET, NOW), { message: "Invalid token: header is not base64url" });
  assert.throws(() => verifyJwt("e30.e30.", SECRET, NOW), /algorithm must be HS256/);
  assert.throws(() => verifyJwt("bm90IGpzb24.e30.", SECRET, NOW), {
    message: "Invalid token: header is not base64url JSON",
  });
});

Deno.test("jwt answers a header whose alg is not a string with a TokenError, never anything else", () => {
  const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = b64({ sub: "a", exp: NOW + 9 });
  // String() of this object throws a TypeError, which the pusher would answer with 500.
  for (const [alg, named] of [[{ toString: 1 }, "object"], [["HS256"], "object"], [256, "number"], [null, "object"]]) {
    assert.throws(() => verifyJwt(`${b64({ alg })}.${body}.`, SECRET, NOW), {
      name: "TokenError",
      message: `Invalid token: algorithm must be HS256, not ${named}`,
    });
  }
});

Deno.test("jwt refuses an exp that never comes, and an empty secret on either side", () => {
  // 1e999 is valid JSON and parses as Infinity.
  const head = Buffer.from(JSON.stringify({ alg: "HS256", typ: "JWT" })).toString("base64url");
  const body = Buffer.from('{"sub":"a","exp":1e999}').toString("base64url");
  const signature = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  assert.throws(() => verifyJwt(`${head}.${body}.${signature}`, SECRET, NOW), {
    name: "TokenError",
    message: "Invalid token: exp must be a finite number of seconds",
  });
  // With an empty secret anyone can sign: refused, not taken as a secret.
  const admin = `${head}.${Buffer.from('{"sub":"admin","exp":1900000000}').toString("base64url")}`;
  const forged = `${admin}.${createHmac("sha256", "").update(admin).digest("base64url")}`;
  assert.throws(() => verifyJwt(forged, "", NOW), RangeError);
  assert.throws(() => signJwt({ sub: "a", exp: NOW + 9 }, ""), RangeError);
});

Deno.test("jwt refuses a valid token with characters added to or changed in a part: each part is strict base64url", () => {
  const token = signJwt({ sub: "a", exp: NOW + 9 }, SECRET);
  const [head, body, signature] = token.split(".") as [string, string, string];
  // Buffer's base64url decoder skips what it does not know and stops at "=": all of these decoded to the right bytes.
  for (const suffix of ["=", "==", "!!", " ", "+", "/", "%3D"]) {
    assert.throws(() => verifyJwt(`${token}${suffix}`, SECRET, NOW), {
      message: "Invalid token: signature is not base64url",
    });
  }
  assert.throws(() => verifyJwt(`${head}=.${body}.${signature}`, SECRET, NOW), {
    message: "Invalid token: header is not base64url",
  });
  assert.throws(() => verifyJwt(`${head}.${body}!.${signature}`, SECRET, NOW), {
    message: "Invalid token: payload is not base64url",
  });
  // Standard base64's + and / for base64url's - and _.
  const standard = signature.replaceAll("-", "+").replaceAll("_", "/");
  if (standard !== signature) {
    assert.throws(() => verifyJwt(`${head}.${body}.${standard}`, SECRET, NOW), {
      message: "Invalid token: signature is not base64url",
    });
  }
  assert.throws(() => verifyJwt(`.${body}.${signature}`, SECRET, NOW), {
    message: "Invalid token: header is not base64url",
  });
  assert.throws(() => verifyJwt(`${head}..${signature}`, SECRET, NOW), {
    message: "Invalid token: payload is not base64url",
  });
  assert.equal(verifyJwt(token, SECRET, NOW).sub, "a");
});

Deno.test("jwt refuses a signature in a non-canonical encoding of the right bytes", () => {
  const token = signJwt({ sub: "a", exp: NOW + 9 }, SECRET);
  // 32 bytes are 43 characters whose last one carries 2 unused bits: 3 other characters decode to the same bytes.
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const last = alphabet.indexOf(token.at(-1)!);
  for (let unused = 1; unused < 4; unused++) {
    const twin = `${token.slice(0, -1)}${alphabet[(last & ~3) | ((last + unused) & 3)]}`;
    assert.deepEqual(Buffer.from(twin.split(".")[2]!, "base64url"), Buffer.from(token.split(".")[2]!, "base64url"));
    assert.throws(() => verifyJwt(twin, SECRET, NOW), { message: "Invalid token: bad signature" });
  }
});
