import assert from "node:assert/strict";
import { HubBus, type HubBusOptions } from "./bus.ts";
import { HubError } from "./client.ts";
import { freePort, quiet, startHub, until, within } from "./testing.ts";
import { BusError, type BusMessage, type Json } from "../shared/bus.ts";
import { encodeMessage, MessageDecoder, toClientMessage } from "../shared/wire.ts";

function bus(port: number, options: HubBusOptions = {}): HubBus {
  return new HubBus({ port, logger: quiet, reconnectDelay: 20, maxReconnectDelay: 100, ...options });
}

/** Asserts that `promise` rejects with a BusError of `code` whose cause is a HubError of `cause`. */
async function assertBusError(promise: Promise<unknown>, code: string, cause: string, what: string): Promise<void> {
  const error = await within(promise.then(() => null, (e) => e), 5000, what);
  assert.ok(error instanceof BusError, `${what}: expected a BusError, got ${error}`);
  assert.equal(error.code, code);
  assert.ok(error.cause instanceof HubError, `${what}: the cause is the hub client's error`);
  assert.equal(error.cause.code, cause);
  assert.equal(error.message, error.cause.message, `${what}: the message is kept`);
}

Deno.test("hub bus publishes to a subscriber and reports how many it reached", async () => {
  await using hub = startHub();
  await using subscriber = bus(hub.port);
  await using publisher = bus(hub.port);
  const got: [Json, BusMessage][] = [];
  subscriber.subscribe("news", (data, message) => got.push([data, message]));
  await until(() => hub.server.hub.stats.subjects === 1, 2000, "the subscription");
  assert.deepEqual(await publisher.publish("news", { title: "hi" }), { reached: 1 });
  assert.deepEqual(await publisher.publish("nobody", 1), { reached: 0 });
  await until(() => got.length === 1, 2000, "the event");
  assert.deepEqual(got, [[{ title: "hi" }, { subject: "news" }]]);
  assert.equal(publisher.address, `channel://127.0.0.1:${hub.port}`);
  assert.ok(publisher.connected);
});

Deno.test("hub bus subscribing again replaces the handler, and unsubscribe stops it", async () => {
  await using hub = startHub();
  await using subscriber = bus(hub.port);
  await using publisher = bus(hub.port);
  const got: string[] = [];
  subscriber.subscribe("news", () => got.push("first"));
  subscriber.subscribe("news", (data) => got.push(`second:${data}`));
  await until(() => hub.server.hub.stats.subjects === 1, 2000, "the subscription");
  assert.deepEqual(await publisher.publish("news", 1), { reached: 1 });
  await until(() => got.length === 1, 2000, "the event");
  assert.deepEqual(got, ["second:1"]);
  subscriber.unsubscribe("news");
  await until(() => hub.server.hub.stats.subjects === 0, 2000, "the unsubscription");
  assert.deepEqual(await publisher.publish("news", 2), { reached: 0 });
});

Deno.test("hub bus request gathers one reply per subscriber", async () => {
  await using hub = startHub();
  await using a = bus(hub.port);
  await using b = bus(hub.port);
  await using requester = bus(hub.port);
  for (const [name, responder] of [["a", a], ["b", b]] as const) {
    responder.subscribe("time", (data, { replyTo }) => {
      assert.ok(replyTo, "a request carries its inbox");
      responder.publish(replyTo, { from: name, asked: data });
    });
  }
  await until(() => hub.server.hub.stats.subjects === 1, 2000, "both subscriptions");
  const result = await within(requester.request("time", "now?", { timeout: 5000 }), 5000, "the replies");
  assert.equal(result.expected, 2);
  assert.deepEqual(
    result.replies.map((reply) => (reply as { from: string }).from).sort(),
    ["a", "b"],
  );
  assert.deepEqual((result.replies[0] as { asked: Json }).asked, "now?");
  await until(() => hub.server.hub.stats.subjects === 1, 2000, "the inbox to be unsubscribed");
});

Deno.test("hub bus request to a subject nobody subscribes to fails with no_responders", async () => {
  await using hub = startHub();
  await using requester = bus(hub.port);
  const error = await within(requester.request("void", 1, { timeout: 2000 }).then(() => null, (e) => e), 5000, "it");
  assert.ok(error instanceof BusError);
  assert.equal(error.code, "no_responders");
  assert.match(error.message, /^Cannot request on void: nobody subscribes to it$/);
});

Deno.test("hub bus publish while the hub is down past its timeout is unavailable", async () => {
  await using down = bus(freePort());
  await assertBusError(down.publish("news", 1, { timeout: 100 }), "unavailable", "timeout", "the publish to time out");
});

/** Runs `script` in a process of its own with `--expose-gc`, and answers the JSON it printed. */
async function heapProcess<T>(script: string): Promise<T> {
  const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--v8-flags=--expose-gc", script],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  assert.ok(success, new TextDecoder().decode(stderr));
  return JSON.parse(new TextDecoder().decode(stdout));
}

Deno.test("hub bus requests that failed while the hub was down leave no memory behind", async () => {
  // In a process of its own, whose heap is measured after full collections (--expose-gc).
  const script = `
    import { HubBus } from ${JSON.stringify(new URL("./bus.ts", import.meta.url).href)};
    import { freePort, quiet } from ${JSON.stringify(new URL("./testing.ts", import.meta.url).href)};
    const bus = new HubBus({ port: freePort(), logger: quiet, connectTimeout: 100 });
    let failed = 0;
    const round = () =>
      Promise.all(Array.from({ length: 5000 }, () => bus.request("svc", 1, { timeout: 1 }).catch(() => failed++)));
    await round(); // the code and the client's maps are warm
    const heap = () => (gc(), gc(), Deno.memoryUsage().heapUsed);
    const before = heap();
    for (let i = 0; i < 4; i++) await round();
    console.log(JSON.stringify({ failed, perRequest: (heap() - before) / 20000 }));
    await bus.close();
  `;
  const { failed, perRequest } = await heapProcess<{ failed: number; perRequest: number }>(script);
  assert.equal(failed, 25_000, "every request failed: the hub is down");
  // A failed request kept about 230 bytes until the hub came back: memory grew with the outage.
  assert.ok(perRequest < 20, `each failed request left ${perRequest.toFixed(1)} bytes on the heap`);
});

Deno.test("hub bus subscribe waiting out a hub outage resolves when its subject is unsubscribed, and the others still wait", async () => {
  const port = freePort();
  await using b = bus(port);
  let kept = false;
  const gone = b.subscribe("gone", () => {});
  const news = b.subscribe("news", () => {}).then(() => (kept = true));
  await new Promise((resolve) => setTimeout(resolve, 50));
  b.unsubscribe("gone");
  await within(gone, 1000, "the unsubscribed subject's subscribe");
  assert.equal(kept, false, "a subscribe of another subject still waits for the hub");
  await using _hub = startHub({ port });
  await within(news, 5000, "the subscribe of the subject still subscribed");
});

Deno.test("hub bus subjects subscribed and unsubscribed while the hub is down leave no memory behind", async () => {
  // In a process of its own, whose heap is measured after full collections (--expose-gc).
  const script = `
    import { HubBus } from ${JSON.stringify(new URL("./bus.ts", import.meta.url).href)};
    import { freePort, quiet } from ${JSON.stringify(new URL("./testing.ts", import.meta.url).href)};
    const bus = new HubBus({ port: freePort(), logger: quiet, connectTimeout: 100 });
    // As the pusher does for a user's subject: what runs once it is in effect holds the connection.
    const round = (n) => {
      for (let i = 0; i < 5000; i++) {
        const connection = { id: n * 5000 + i, frames: new Array(8).fill(0) };
        void bus.subscribe("user." + i, () => {}).then(() => connection.frames.length);
        bus.unsubscribe("user." + i);
      }
      return new Promise((resolve) => setTimeout(resolve, 0));
    };
    await round(0); // the code and the maps are warm
    const heap = () => (gc(), gc(), Deno.memoryUsage().heapUsed);
    const before = heap();
    for (let n = 1; n <= 4; n++) await round(n);
    console.log(JSON.stringify({ perSubscribe: (heap() - before) / 20000 }));
    await bus.close();
  `;
  const { perSubscribe } = await heapProcess<{ perSubscribe: number }>(script);
  assert.ok(perSubscribe < 20, `each subscribe undone left ${perSubscribe.toFixed(1)} bytes on the heap`);
});

Deno.test("hub bus publish after close is unavailable", async () => {
  await using hub = startHub();
  const closed = bus(hub.port);
  await closed.close();
  await closed.close();
  await assertBusError(closed.publish("news", 1), "unavailable", "closed", "the publish on a closed bus");
});

Deno.test("hub bus publish over the frame limit is too_large", async () => {
  await using hub = startHub();
  await using small = bus(hub.port, { maxFrameBytes: 1024 });
  await assertBusError(small.publish("news", "x".repeat(2000)), "too_large", "too_large", "the oversized publish");
});

Deno.test("hub bus maps a hub refusal to refused", async () => {
  // A stand-in hub that refuses every publish, as the hub does one whose event would pass its frame limit.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    const conn = await listener.accept().catch(() => null);
    if (!conn) return;
    const decoder = new MessageDecoder(toClientMessage);
    const buffer = new Uint8Array(4096);
    try {
      for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
        for (const message of decoder.push(buffer.subarray(0, n))) {
          if (message.type !== "publish") continue;
          await conn.write(encodeMessage({ type: "error", id: message.id, reason: "Cannot route: too large" }));
        }
      }
    } catch { /* the bus closed the link */ }
    conn.close();
  })();
  try {
    await using refused = bus((listener.addr as Deno.NetAddr).port);
    await assertBusError(refused.publish("news", 1), "refused", "refused", "the refused publish");
  } finally {
    listener.close();
    await serving;
  }
});

Deno.test("hub bus address puts an IPv6 host in brackets", async () => {
  await using v6 = bus(freePort(), { hostname: "::1", connectTimeout: 100 });
  assert.match(v6.address, /^channel:\/\/\[::1\]:\d+$/);
});
