import assert from "node:assert/strict";
import { batchReplies } from "./load.ts";

Deno.test("a batch answer's replies say which publishes went and why the others did not, in order", () => {
  const body = JSON.stringify({
    replies: [{ result: { workers_reached: 1 } }, { error: { code: 404, message: "No such connection" } }],
  });
  assert.deepEqual(batchReplies(body, 3), [
    null,
    "404 No such connection",
    "200 batch answer: no reply for this command",
  ]);
  assert.deepEqual(batchReplies("not json", 2), Array(2).fill("200 batch answer without replies"));
});
