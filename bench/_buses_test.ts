import assert from "node:assert/strict";
import { parseBuses } from "./_buses.ts";

Deno.test("--buses: the hub always runs, so channel adds nothing; the others in order, once each", () => {
  assert.deepEqual(parseBuses(undefined), []);
  assert.deepEqual(parseBuses("channel"), []);
  assert.deepEqual(parseBuses("channel,nats,redis"), ["nats", "redis"]);
  assert.deepEqual(parseBuses(" redis , nats,redis"), ["redis", "nats"]);
  assert.throws(() => parseBuses("nats,kafka"), {
    name: "TypeError",
    message: "Invalid --buses: no bus kafka; pick from channel,nats,redis",
  });
});
