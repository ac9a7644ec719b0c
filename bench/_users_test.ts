import assert from "node:assert/strict";
import { verifyJwt } from "../shared/jwt.ts";
import { benchUser, TOKEN_SECONDS, tokenPath } from "./_users.ts";

Deno.test("client i connects as user bench-user-<i> with a token the pusher's secret verifies, valid an hour", () => {
  const now = 1_800_000_000;
  const path = tokenPath(benchUser(7), "bench secret", now + 0.75);
  const token = /^\/\?token=([A-Za-z0-9_.-]+)$/.exec(path)?.[1];
  assert.ok(token, `a query-safe token in ${path}`);
  const claims = verifyJwt(token, "bench secret", now);
  assert.equal(claims.sub, benchUser(7));
  assert.equal(claims.sub, "bench-user-7");
  assert.equal(claims.exp, now + TOKEN_SECONDS);
  assert.throws(() => verifyJwt(token, "another secret", now), { message: "Invalid token: bad signature" });
  assert.throws(() => verifyJwt(token, "bench secret", now + TOKEN_SECONDS), { message: "Token expired" });
});
