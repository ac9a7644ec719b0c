import assert from "node:assert/strict";
import { batchReplies, publishCommand, publishQuery, type PublishTarget } from "./load.ts";

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

Deno.test("a publish addresses everyone, a channel, a user or one connection, in a GET's query and a batch command alike", () => {
  const content = "7:123:___";
  const targets: PublishTarget[] = [
    null,
    { channel: "bench.3" },
    { user: "bench-user-3" },
    { worker: "w1", connection: "42" },
  ];
  assert.deepEqual(targets.map((to) => publishQuery(to, content)), [
    "content=7:123:___",
    "channel=bench.3&content=7:123:___",
    "to_user=bench-user-3&content=7:123:___",
    "to_worker_id=w1&to_connection_id=42&content=7:123:___",
  ]);
  const commands = targets.map((to) => publishCommand(to, content));
  assert.deepEqual(commands.map((command) => JSON.parse(command)), [
    { publish: { data: content } },
    { publish: { channel: "bench.3", data: content } },
    { publish: { user: "bench-user-3", data: content } },
    { publish: { worker_id: "w1", connection_id: 42, data: content } },
  ]);
});
