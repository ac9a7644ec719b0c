import assert from "node:assert/strict";
import { busName } from "./bus_address.ts";

Deno.test("busName names the bus of each scheme as answers write it", () => {
  assert.deepEqual(
    [
      "channel://127.0.0.1:2206",
      "nats://n1:4222,n2",
      "TLS://n1",
      "redis://127.0.0.1:6379",
      "rediss://r:6380",
    ].map(busName),
    ["hub", "NATS", "NATS", "Redis", "Redis"],
  );
});
