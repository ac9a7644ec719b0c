import assert from "node:assert/strict";
import { publishToConnection } from "./_connection_publish.ts";
import type { Bus } from "../shared/bus.ts";
import { MemoryBroker } from "../shared/memory_bus.ts";

/** A memory bus link that says it cannot count, as NATS does: publishes answer `reached: null`. */
function uncounting(link: Bus): Bus {
  return {
    countsReached: false,
    address: link.address,
    get connected() {
      return link.connected;
    },
    reconnects: 0,
    subscribe: (subject, handler) => link.subscribe(subject, handler),
    unsubscribe: (subject) => link.unsubscribe(subject),
    publish: async (subject, data, options) => ({ ...(await link.publish(subject, data, options)), reached: null }),
    request: (subject, data, options) => link.request(subject, data, options),
    history: (subject, options) => link.history(subject, options),
    removeHistory: (subject) => link.removeHistory(subject),
    close: () => link.close(),
    [Symbol.asyncDispose]: () => link.close(),
  };
}

Deno.test("a send to one connection on a bus that cannot count is answered by its worker, or reaches nobody", async () => {
  const broker = new MemoryBroker();
  await using worker = broker.connect();
  await using publisher = uncounting(broker.connect());
  const got: unknown[] = [];
  await worker.subscribe("worker.a", (data, { replyTo }) => {
    got.push(data);
    if (replyTo) void worker.publish(replyTo, { ok: true });
  });
  assert.deepEqual(await publishToConnection(publisher, "worker.a", { content: "hi" }, { timeout: 1000 }), {
    reached: 1,
  });
  assert.deepEqual(got, [{ content: "hi" }]);
  assert.deepEqual(await publishToConnection(publisher, "worker.gone", 1, { timeout: 1000 }), { reached: 0 });
  await worker.subscribe("worker.silent", () => {});
  await assert.rejects(publishToConnection(publisher, "worker.silent", 1, { timeout: 50 }), {
    name: "BusError",
    code: "unavailable",
    message: "Cannot publish to worker.silent: its pusher worker did not answer within 50 ms",
  });
});

Deno.test("a send to one connection on a bus that counts is a plain publish with its count", async () => {
  const broker = new MemoryBroker();
  await using worker = broker.connect();
  await using publisher = broker.connect();
  await worker.subscribe("worker.a", () => {});
  assert.deepEqual(await publishToConnection(publisher, "worker.a", 1, { timeout: 1000, idempotencyKey: "k" }), {
    reached: 1,
  });
  assert.deepEqual(await publishToConnection(publisher, "worker.gone", 1, { timeout: 1000 }), { reached: 0 });
});
