import assert from "node:assert/strict";
import { connect, HubClient, type HubClientOptions, HubError } from "./client.ts";
import { freePort, quiet, startHub, until, within } from "./testing.ts";
import { encodeMessage, type Json, MessageDecoder, toClientMessage } from "../shared/wire.ts";

function client(port: number, options: HubClientOptions = {}): HubClient {
  return new HubClient({ port, logger: quiet, reconnectDelay: 20, maxReconnectDelay: 100, ...options });
}

function nextEvent(target: EventTarget, type: string, ms = 5000): Promise<Event> {
  return within(new Promise((resolve) => target.addEventListener(type, resolve, { once: true })), ms, type);
}

Deno.test("client calls every handler of a subject, and unsubscribe removes one", async () => {
  await using hub = startHub();
  await using c = client(hub.port);
  const calls: string[] = [];
  const first = (data: Json) => calls.push(`first:${data}`);
  c.subscribe("news", first);
  c.subscribe("news", (data) => calls.push(`second:${data}`));
  assert.equal(await c.publish("news", 1), 1);
  c.unsubscribe("news", first);
  assert.equal(await c.publish("news", 2), 1, "still subscribed while a handler is left");
  assert.deepEqual(calls, ["first:1", "second:1", "second:2"]);
});

Deno.test("client keeps delivering when a handler throws", async () => {
  await using hub = startHub();
  await using c = client(hub.port);
  const got: Json[] = [];
  c.subscribe("news", () => {
    throw new Error("handler bug");
  });
  c.subscribe("news", (data) => got.push(data));
  await c.publish("news", "a");
  await c.publish("news", "b");
  assert.deepEqual(got, ["a", "b"]);
});

Deno.test("client re-subscribes and re-watches after the hub restarts, before waiting publishes go out", async () => {
  const port = freePort();
  let hub = startHub({ port });
  await using c = client(port);
  const events: Json[] = [];
  const jobs: Json[] = [];
  c.subscribe("news", (data) => events.push(data));
  c.watch("jobs", (data) => {
    jobs.push(data);
  });
  await c.ready();
  assert.equal(await c.publish("news", "before"), 1);

  const disconnected = nextEvent(c, "disconnected");
  await hub.server.shutdown();
  await disconnected;
  assert.equal(c.connected, false);
  // Made while the hub is down: it waits for the connection.
  const during = c.publish("news", "during");
  const connected = nextEvent(c, "connected");
  hub = startHub({ port });
  try {
    await connected;
    assert.equal(c.reconnects, 1);
    // The original sends waiting publishes before re-subscribing, so its own
    // subscription misses them. Here it reaches the re-subscribed handler.
    assert.equal(await within(during, 5000, "the waiting publish"), 1);
    assert.deepEqual(events, ["before", "during"]);
    await using producer = client(port);
    assert.equal(await producer.enqueue("jobs", "after restart"), 1);
    await until(() => jobs.length === 1, 2000, "the queue watch to be restored");
    assert.deepEqual(jobs, ["after restart"]);
  } finally {
    await hub.server.shutdown();
  }
});

Deno.test("client rejects a publish that waits for an unreachable hub past its timeout", async () => {
  await using c = client(freePort(), { publishTimeout: 150 });
  const started = Date.now();
  await assert.rejects(c.publish("news", 1), (error: HubError) => {
    assert.equal(error.code, "timeout");
    assert.match(
      error.message,
      /^Cannot publish: no acknowledgement within 150 ms; the hub at 127\.0\.0\.1:\d+ is unreachable$/,
    );
    return true;
  });
  assert.ok(Date.now() - started >= 140);
  await assert.rejects(c.publish("news", 1, { timeout: 20 }), { code: "timeout" });
});

Deno.test("client refuses publishes past its waiting limit at once", async () => {
  await using c = client(freePort(), { maxWaitingPublishes: 2, publishTimeout: 100 });
  const waiting = [c.publish("a", 1), c.publish("a", 2)];
  await assert.rejects(c.publish("a", 3), {
    code: "overloaded",
    message: "Cannot publish: 2 requests already wait for the hub",
  });
  for (const p of waiting) await assert.rejects(p, { code: "timeout" });
});

Deno.test("client refuses publishes past its waiting bytes at once, and takes them again as those waiting go", async () => {
  await using c = client(freePort(), { maxWaitingBytes: 100_000, maxFrameBytes: 50_000, publishTimeout: 100 });
  const waiting = [c.publish("a", "x".repeat(40_000)), c.publish("a", "x".repeat(40_000))];
  await assert.rejects(c.publish("a", "x".repeat(40_000)), {
    code: "overloaded",
    message: "Cannot publish: 100000 bytes already wait for the hub",
  });
  for (const p of waiting) await assert.rejects(p, { code: "timeout" });
  // Those timed out no longer count.
  await assert.rejects(c.publish("a", "x".repeat(40_000)), { code: "timeout" });
});

Deno.test("client always has room for one publish of its largest frame, whatever maxWaitingBytes says", async () => {
  await using c = client(freePort(), { maxWaitingBytes: 1000, maxFrameBytes: 100_000, publishTimeout: 100 });
  await assert.rejects(c.publish("a", "x".repeat(90_000)), { code: "timeout" });
});

Deno.test("client refuses a publish over the frame limit at once and keeps its link for the others", async () => {
  await using hub = startHub({ maxFrameBytes: 65536 });
  await using c = client(hub.port, { maxFrameBytes: 65536 });
  await c.ready();
  let drops = 0;
  c.addEventListener("disconnected", () => drops++);
  const big = c.publish("news", "b".repeat(70_000));
  const small = c.publish("news", "s");
  await assert.rejects(big, {
    code: "too_large",
    message: /^Cannot publish: the message encodes to a \d+-byte frame, over the 65536-byte limit$/,
  });
  assert.equal(await small, 0);
  assert.equal(drops, 0);
});

Deno.test("client sends the publishes that waited out an outage as its link drains, in order, past its pending-bytes cap", async () => {
  const port = freePort();
  // 50 publishes of 8 KB wait: six times what may be queued to be written at once.
  await using c = client(port, { maxPendingBytes: 64 * 1024, publishTimeout: 10_000 });
  const got: Json[] = [];
  c.subscribe("news", (data) => got.push((data as string).slice(0, 2)));
  const sent = Array.from({ length: 50 }, (_, i) => `${i}`.padStart(2, "0"));
  const outcomes = sent.map((n) => c.publish("news", n.repeat(4000)).then((count) => count, (error) => error.code));
  await using _hub = startHub({ port });
  assert.deepEqual(await within(Promise.all(outcomes), 5000, "every outcome"), sent.map(() => 1));
  assert.deepEqual(got, sent, "delivered once each, in the order they were made");
});

Deno.test("client on a backed-up link holds publishes until it drains, and keeps the link for a subscribe meanwhile", async () => {
  await using hub = startHub();
  await using c = client(hub.port, { maxPendingBytes: 64 * 1024 });
  await c.ready();
  let drops = 0;
  c.addEventListener("disconnected", () => drops++);
  const got: Json[] = [];
  // In one turn, before anything is written: 20 publishes of 8 KB, past the cap, then a subscribe.
  const outcomes = Array.from({ length: 20 }, (_, i) => c.publish("x", `${i}`.repeat(8000)).catch((e) => e.code));
  c.subscribe("news", (data) => got.push(data));
  assert.deepEqual(await within(Promise.all(outcomes), 5000, "every outcome"), outcomes.map(() => 0));
  await using other = client(hub.port);
  assert.equal(await other.publish("news", "after"), 1, "the subscription is in effect");
  await within(c.flush(), 5000, "the subscriber's flush");
  assert.deepEqual([got, drops], [["after"], 0]);
});

Deno.test("client restores every subscription after a hub restart, though their frames pass its pending-bytes cap", async () => {
  const port = freePort();
  let hub = startHub({ port });
  const limits = { maxPendingBytes: 64 * 1024, maxFrameBytes: 64 * 1024 };
  await using c = client(port, limits);
  try {
    await c.ready();
    // 2000 subjects of 250 characters: eight times the cap in subscribe frames.
    const names = Array.from({ length: 2000 }, (_, i) => `${i}:`.padEnd(250, "x"));
    for (const [i, name] of names.entries()) {
      c.subscribe(name, () => {});
      if (i % 100 === 99) await c.flush();
    }
    assert.equal(hub.server.hub.stats.subjects, 2000);
    await hub.server.shutdown();
    hub = startHub({ port });
    await within(c.ready(), 5000, "the client to reconnect");
    // Behind everything the restore queued.
    await within(c.flush(), 5000, "the restored subscriptions");
    assert.equal(hub.server.hub.stats.subjects, 2000, "every subscription restored");
    await using publisher = client(port);
    assert.equal(await publisher.publish(names.at(-1)!, "after"), 1, "the last subject subscribed reaches it");
  } finally {
    await hub.server.shutdown();
  }
});

/** A signal whose listeners can be counted: a settled wait must leave none behind. */
function countedSignal(): { controller: AbortController; listeners: () => number } {
  const controller = new AbortController();
  const signal = controller.signal;
  /** Each listener added and not removed, and whether it goes once called. */
  const added = new Map<EventListenerOrEventListenerObject, boolean>();
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  add("abort", () => {
    for (const [listener, once] of added) if (once) added.delete(listener);
  });
  Object.assign(signal, {
    addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: AddEventListenerOptions) {
      added.set(listener, options?.once === true);
      add(type, listener, options);
    },
    removeEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: EventListenerOptions) {
      added.delete(listener);
      remove(type, listener, options);
    },
  });
  return { controller, listeners: () => added.size };
}

Deno.test("client flush waiting out a hub outage rejects with its signal's reason when aborted, and is withdrawn", async () => {
  const port = freePort();
  await using c = client(port);
  const aborted = countedSignal();
  const flushed = c.flush({ signal: aborted.controller.signal });
  const kept = countedSignal();
  const waits = c.flush({ signal: kept.controller.signal });
  await new Promise((resolve) => setTimeout(resolve, 50));
  aborted.controller.abort(new Error("the caller gave up"));
  await assert.rejects(within(flushed, 1000, "the aborted flush"), { message: "the caller gave up" });
  await assert.rejects(c.flush({ signal: AbortSignal.abort(new Error("too late")) }), { message: "too late" });
  // The other one still waits for the hub, and leaves its signal as it found it once answered.
  await using _hub = startHub({ port });
  await within(waits, 5000, "the flush whose signal did not abort");
  assert.deepEqual([aborted.listeners(), kept.listeners()], [0, 0]);
});

Deno.test("client close rejects waiting publishes and is safe to call twice", async () => {
  const c = client(freePort());
  const waiting = assert.rejects(c.publish("a", 1), { code: "closed" });
  await c.close();
  await waiting;
  await c.close();
  await assert.rejects(c.publish("a", 1), { code: "closed" });
});

Deno.test("connect rejects when the hub cannot be reached in time", async () => {
  await assert.rejects(connect({ port: freePort(), connectTimeout: 100, logger: quiet }), {
    name: "HubError",
    code: "timeout",
  });
});

Deno.test("client treats a hub that stops answering pings as dead and reconnects", async () => {
  // A hub that accepts and reads but never answers.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.TcpConn[] = [];
  const received: string[] = [];
  const serving = (async () => {
    for await (const conn of listener) {
      accepted.push(conn);
      (async () => {
        const decoder = new MessageDecoder(toClientMessage);
        const buffer = new Uint8Array(4096);
        try {
          for (let n; (n = await conn.read(buffer)) !== null;) {
            for (const m of decoder.push(buffer.subarray(0, n))) received.push(m.type);
          }
        } catch { /* closed */ }
      })();
    }
  })();
  const port = (listener.addr as Deno.NetAddr).port;
  const c = client(port, { pingInterval: 30, maxMissedPongs: 2 });
  let connects = 0;
  c.addEventListener("connected", () => connects++);
  try {
    const dropped = await nextEvent(c, "disconnected", 3000) as CustomEvent<{ reason: string }>;
    assert.ok(dropped.detail.reason.length > 0);
    await until(() => accepted.length >= 2, 3000, "a second connection");
    assert.ok(received.includes("ping"), "the client pinged");
    assert.equal(received[0], "hello");
    // A TCP connection that nothing answers on is no link to the hub: health checks read this.
    assert.equal(c.connected, false);
    assert.equal(connects, 0, "never connected");
    assert.equal(c.reconnects, 0);
  } finally {
    await c.close();
    listener.close();
    for (const conn of accepted) {
      try {
        conn.close();
      } catch { /* closed by the client already */ }
    }
    await serving.catch(() => {});
  }
});

Deno.test("client sends the token in hello and reports a refusal", async () => {
  await using hub = startHub({ token: "right" });
  // The timeout only bounds the test: the refusal is what the error must name, however loaded the machine.
  await using wrong = client(hub.port, { token: "wrong", publishTimeout: 2000 });
  await until(() => hub.logs.some((line) => line.includes("Unauthorized: wrong token")), 5000, "the hub's refusal");
  assert.equal(wrong.connected, false, "a refused link is not up");
  await assert.rejects(wrong.publish("x", 1), (error: HubError) => {
    assert.equal(error.code, "timeout");
    assert.match(error.message, /refused the connection: Unauthorized: wrong token$/);
    return true;
  });
  assert.ok(hub.logs.some((line) => line.includes("Unauthorized: wrong token")));
  await using right = client(hub.port, { token: "right" });
  assert.equal(await right.publish("x", 1), 0);
});

Deno.test("client dispatches connected and disconnected lifecycle events", async () => {
  const port = freePort();
  const hub = startHub({ port });
  await using c = client(port);
  await nextEvent(c, "connected");
  assert.equal(c.connected, true);
  const dropped = nextEvent(c, "disconnected");
  await hub.server.shutdown();
  await dropped;
  assert.equal(c.connected, false);
});

Deno.test("client resends an unacknowledged publish after a reconnect", async () => {
  // A hub that swallows the first connection's publish, then dies.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  await using c = client(port);
  const publishing = c.publish("news", "once");
  const first = await listener.accept();
  const decoder = new MessageDecoder(toClientMessage);
  const buffer = new Uint8Array(4096);
  const seen: string[] = [];
  while (!seen.includes("publish")) {
    const n = await first.read(buffer);
    assert.ok(n !== null);
    for (const m of decoder.push(buffer.subarray(0, n))) seen.push(m.type);
  }
  first.close();
  listener.close();
  // The real hub comes back on the same port and gets the publish again.
  await using _hub = startHub({ port });
  await using subscriber = client(port);
  const got: Json[] = [];
  subscriber.subscribe("news", (data) => got.push(data));
  await subscriber.publish("sync", null);
  assert.equal(await within(publishing, 5000, "the resent publish"), 1);
  assert.deepEqual(got, ["once"]);
});

Deno.test("client closes when its signal aborts", async () => {
  await using hub = startHub();
  const controller = new AbortController();
  const c = client(hub.port, { signal: controller.signal });
  await c.ready();
  const waiting = assert.rejects(c.publish("x", 1, { timeout: 5000 }), { code: "closed" });
  controller.abort();
  await waiting;
  await until(() => hub.server.hub.stats.peers === 0, 2000, "the hub to see the client leave");
  await c.close();
});

Deno.test("client close() between the dial and the session closes the new socket and opens no session", async () => {
  await using hub = startHub();
  const realConnect = Deno.connect;
  let c!: HubClient;
  let closing: Promise<void> | undefined;
  // Runs close() in the microtask checkpoint in which the dial completes, as
  // any other continuation that happens to run there could.
  Deno.connect = ((options: Deno.ConnectOptions) => {
    const dialing = realConnect(options);
    dialing.then(() => queueMicrotask(() => (closing = c.close())));
    return dialing;
  }) as typeof Deno.connect;
  try {
    c = client(hub.port);
    let connected = false;
    c.addEventListener("connected", () => (connected = true));
    await until(() => closing !== undefined, 5000, "close() to be called");
    await within(closing!, 5000, "close() to finish");
    assert.equal(connected, false, "no session after close()");
  } finally {
    Deno.connect = realConnect;
    // A session opened after close() would keep close() waiting until the hub goes.
    await hub.server.shutdown();
    await closing;
  }
});

Deno.test("client drops a link whose backlog is too full for a subscribe, and restores every subscription on the next before its waiting publishes", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const c = client(listener.addr.port, { maxPendingBytes: 64 * 1024, publishTimeout: 10_000 });
  const first = await listener.accept(); // a hub that reads nothing
  const publishes: Promise<unknown>[] = [];
  let second: Deno.TcpConn | undefined;
  try {
    // It answers once, so the link is up.
    await first.write(encodeMessage({ type: "pong" }));
    await c.ready();
    for (let i = 0; i < 3; i++) publishes.push(c.publish("x", i).catch(() => {}));
    // In one turn, before anything is written: 1000 subscribe frames of 230 bytes are past twice the cap.
    const names = Array.from({ length: 1000 }, (_, i) => `${i}:`.padEnd(200, "n"));
    for (const name of names) c.subscribe(name, () => {});
    const next = await within(listener.accept(), 5000, "the client to reconnect");
    second = next;
    const decoder = new MessageDecoder(toClientMessage, { maxFrameBytes: 1 << 20 });
    const buffer = new Uint8Array(1 << 16);
    const seen: string[] = [];
    const subscribed: string[] = [];
    while (seen.filter((type) => type === "publish").length < 3) {
      const n = await within(next.read(buffer), 5000, "the restored subscriptions and the waiting publishes");
      assert.ok(n !== null);
      for (const message of decoder.push(buffer.subarray(0, n))) {
        seen.push(message.type);
        if (message.type === "subscribe") subscribed.push(...message.subjects);
      }
    }
    assert.deepEqual(subscribed, names);
    // The ping asks the hub to answer, which says the link is up.
    assert.deepEqual([...new Set(seen)], ["hello", "subscribe", "ping", "publish"], "in that order");
  } finally {
    await c.close();
    first.close();
    second?.close();
    await Promise.all(publishes);
  }
});

Deno.test("client drops a silent hub within a quarter interval after its two silent intervals", async () => {
  const interval = 400;
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const c = client(listener.addr.port, { pingInterval: interval, maxMissedPongs: 2 });
  const conn = await listener.accept();
  // The hub answers one ping, a round trip later, and then its machine is gone.
  const decoder = new MessageDecoder(toClientMessage);
  const buffer = new Uint8Array(1 << 16);
  let lastWord = 0;
  const dropped = new Promise((resolve) => c.addEventListener("disconnected", resolve, { once: true }));
  try {
    answering: while (true) {
      const n = await within(conn.read(buffer), 5000, "a ping");
      assert.ok(n !== null);
      for (const message of decoder.push(buffer.subarray(0, n))) {
        if (message.type !== "ping") continue;
        await new Promise((resolve) => setTimeout(resolve, 20));
        await conn.write(encodeMessage({ type: "pong" }));
        lastWord = performance.now();
        break answering;
      }
    }
    await within(dropped, 10 * interval, "the client to drop the silent hub");
    const silence = performance.now() - lastWord;
    // It was three intervals less a round trip, the limit checked only once an interval.
    assert.ok(silence <= 2.5 * interval, `dropped after ${Math.round(silence)} ms of silence`);
  } finally {
    await c.close();
    conn.close();
  }
});

Deno.test("client publish timeouts run on a monotonic clock: a step back of the wall clock does not hold them", async () => {
  const c = client(freePort(), { publishTimeout: 200 });
  const realNow = Date.now;
  try {
    const publishing = c.publish("x", 1);
    Date.now = () => realNow() - 3_600_000; // NTP steps the clock back an hour
    await assert.rejects(within(publishing, 5000, "the publish to time out"), { code: "timeout" });
  } finally {
    Date.now = realNow;
    await c.close();
  }
});

Deno.test("client restores subscriptions in frames under the frame limit, however many it has", async () => {
  const port = freePort();
  const limits = { maxFrameBytes: 64 * 1024 };
  let hub = startHub({ port, ...limits });
  await using c = client(port, limits);
  try {
    await c.ready();
    // Each subscribe was its own small frame; all 300 names in one would be 76 KB.
    const names = Array.from({ length: 300 }, (_, i) => `${i}:`.padEnd(250, "x"));
    for (const name of names) c.subscribe(name, () => {});
    assert.equal(await c.publish(names[299]!, "before"), 1);
    await hub.server.shutdown();
    hub = startHub({ port, ...limits });
    assert.equal(await c.publish(names[299]!, "after", { timeout: 5000 }), 1);
    assert.equal(await c.publish(names[0]!, "after"), 1);
    assert.equal(hub.server.stats().disconnects.protocol_error, 0);
  } finally {
    await hub.server.shutdown();
  }
});

/** A queue handler that records how many of each queue's messages run at once, and holds those it is told to. */
class Jobs {
  readonly done: string[] = [];
  readonly most = new Map<string, number>();
  readonly #running = new Map<string, number>();
  readonly #held = new Map<string, () => void>();

  constructor(readonly hold: (data: string) => boolean) {}

  readonly handler = async (data: Json, queue: string): Promise<void> => {
    const running = (this.#running.get(queue) ?? 0) + 1;
    this.#running.set(queue, running);
    this.most.set(queue, Math.max(this.most.get(queue) ?? 0, running));
    if (this.hold(data as string)) await new Promise<void>((resolve) => this.#held.set(data as string, resolve));
    this.#running.set(queue, running - 1);
    this.done.push(data as string);
  };

  started(data: string): boolean {
    return this.#held.has(data);
  }

  release(data: string): void {
    this.#held.get(data)!();
  }
}

Deno.test("client queue watch of two queues runs one message of each queue at a time", async () => {
  await using hub = startHub();
  await using consumer = client(hub.port);
  await using producer = client(hub.port);
  const jobs = new Jobs((data) => data === "b1");
  consumer.watch(["a", "b"], jobs.handler);
  await consumer.ready();
  await producer.enqueue("b", "b1");
  await producer.enqueue("b", "b2");
  await until(() => jobs.started("b1"), 2000, "b1 to start");
  // a's handler finishing asks a for its next message, and only a: b2 waits for b1.
  await producer.enqueue("a", "a1");
  await producer.enqueue("a", "a2");
  await until(() => jobs.done.includes("a2"), 2000, "a1 and a2 to be handled");
  assert.deepEqual(jobs.done, ["a1", "a2"]);
  jobs.release("b1");
  await until(() => jobs.done.includes("b2"), 2000, "b2 after b1");
  assert.deepEqual([jobs.most.get("a"), jobs.most.get("b")], [1, 1]);
});

Deno.test("client queue watch does not start a second message while the first one's handler outlives a reconnect", async () => {
  const port = freePort();
  let hub = startHub({ port });
  await using consumer = client(port);
  const jobs = new Jobs((data) => data === "q1");
  consumer.watch(["q", "fence"], jobs.handler);
  await consumer.ready();
  try {
    {
      await using producer = client(port);
      await producer.enqueue("q", "q1");
    }
    await until(() => jobs.started("q1"), 2000, "q1 to start");
    const connected = nextEvent(consumer, "connected");
    await hub.server.shutdown();
    hub = startHub({ port });
    await within(connected, 5000, "the consumer to reconnect");
    await using producer = client(port);
    await producer.enqueue("q", "q2");
    // Had the reconnect asked q for a message, q2 would have gone out before the fence.
    await producer.enqueue("fence", "f");
    await until(() => jobs.done.includes("f"), 2000, "the fence");
    assert.deepEqual(jobs.done, ["f"]);
    jobs.release("q1");
    await until(() => jobs.done.includes("q2"), 2000, "q2 after q1");
    assert.equal(jobs.most.get("q"), 1);
  } finally {
    await hub.server.shutdown();
  }
});

Deno.test("client refuses a ping interval a timer cannot wait, before it dials", () => {
  assert.throws(() => new HubClient({ port: 1, pingInterval: Infinity }), /^RangeError: Invalid pingInterval/);
});

Deno.test("client publishes with a reply subject, and a subscriber's handler gets it as its third argument", async () => {
  await using hub = startHub();
  await using subscriber = client(hub.port);
  await using publisher = client(hub.port);
  const got: [Json, string, string | undefined][] = [];
  subscriber.subscribe("news", (data, subject, reply) => got.push([data, subject, reply]));
  await subscriber.ready(AbortSignal.timeout(5000));
  await until(() => hub.server.hub.stats.subjects === 1, 2000, "the subscription");
  assert.equal(await publisher.publish("news", "asked", { reply: "_inbox.7" }), 1);
  assert.equal(await publisher.publish("news", "told"), 1);
  await until(() => got.length === 2, 2000, "both events");
  assert.deepEqual(got, [["asked", "news", "_inbox.7"], ["told", "news", undefined]]);
});
