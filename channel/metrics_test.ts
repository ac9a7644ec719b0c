import assert from "node:assert/strict";
import { HubClient } from "./client.ts";
import { metricsHandler } from "./main.ts";
import { DISCONNECT_REASONS, type DisconnectReason, type HubServerOptions, type HubServerStats } from "./server.ts";
import { quiet, RawPeer, startHub, type TestHub, until, within } from "./testing.ts";
import { startService } from "../tests/_service.ts";
import { encodeLengthPrefixed, encodeMessage } from "../shared/wire.ts";
import { PROMETHEUS_CONTENT_TYPE } from "../shared/metrics.ts";

function client(port: number, options: ConstructorParameters<typeof HubClient>[0] = {}): HubClient {
  return new HubClient({ port, logger: quiet, ...options });
}

/** What moved between two stats, counters only. */
function delta(before: HubServerStats, after: HubServerStats) {
  return {
    publishes: after.publishes - before.publishes,
    deliveries: after.deliveries - before.deliveries,
    enqueues: after.enqueues - before.enqueues,
    enqueuesRefused: after.enqueuesRefused - before.enqueuesRefused,
  };
}

/** Disconnect counts with every reason at 0 except those given. */
function disconnects(counts: Partial<Record<DisconnectReason, number>>): Record<DisconnectReason, number> {
  return Object.fromEntries(DISCONNECT_REASONS.map((reason) => [reason, counts[reason] ?? 0])) as Record<
    DisconnectReason,
    number
  >;
}

Deno.test("hub counts publishes, deliveries, enqueues and its gauges", async () => {
  await using hub = startHub({ maxQueueLength: 1 });
  await using a = client(hub.port);
  await using b = client(hub.port);
  a.subscribe("news", () => {});
  b.subscribe("news", () => {});
  // Each subscriber's round trip puts its subscribe before what follows.
  await a.publish("sync", null);
  await b.publish("sync", null);
  await using publisher = client(hub.port);
  await publisher.ready();
  const before = hub.server.stats();

  for (let i = 0; i < 3; i++) assert.equal(await publisher.publish("news", i), 2);
  assert.equal(await publisher.publishLoop("news", "one of you"), 1);
  assert.equal(await publisher.publish("nobody", "lost"), 0);
  assert.equal(await publisher.enqueue("q", "job"), 1);
  await assert.rejects(publisher.enqueue("q", "one too many"), { code: "refused" });

  const after = hub.server.stats();
  assert.deepEqual(delta(before, after), { publishes: 5, deliveries: 7, enqueues: 2, enqueuesRefused: 1 });
  assert.equal(after.connections, 3);
  assert.equal(after.subjects, 1);
  assert.equal(after.queues, 1);
  assert.equal(after.queuedMessages, 1);
  // The message's frame, and what the queue itself costs.
  assert.equal(after.queuedBytes, encodeMessage({ type: "queue", queue: "q", data: "job" }).length + 640);
  assert.deepEqual(after.disconnects, disconnects({}));
});

Deno.test("hub counts a slow consumer's disconnect once, under slow_consumer", async () => {
  const cap = 64 * 1024;
  await using hub = startHub({ maxPendingBytes: cap, closeGrace: 5000 });
  await using slow = await RawPeer.connect(hub.port);
  await slow.send({ type: "subscribe", subjects: ["burst"] });
  await using publisher = client(hub.port);
  await until(() => hub.server.hub.stats.peers === 2, 2000, "two peers");
  const counts = await Promise.all(
    Array.from({ length: 400 }, () => publisher.publish("burst", "y".repeat(8 * 1024))),
  );
  const stats = hub.server.stats();
  assert.equal(stats.disconnects.slow_consumer, 1);
  assert.equal(stats.publishes, 400);
  // Delivered means queued: an event queued and then dropped with its subscriber counts, but not in the ack.
  assert.ok(stats.deliveries >= counts.filter((count) => count === 1).length);
  assert.ok(stats.deliveries < 400, "publishes after the disconnect were delivered to nobody");
  assert.equal((await slow.readToEnd(10_000)).at(-1)?.type, "error");
  slow.close();
  // The socket closing afterwards does not count a second time.
  await until(() => hub.server.stats().connections === 1, 2000, "the slow consumer's socket to close");
  assert.deepEqual(hub.server.stats().disconnects, disconnects({ slow_consumer: 1 }));
});

/** How each disconnect reason is provoked, on a hub started with `options`. */
const REASONS: [DisconnectReason, HubServerOptions, (hub: TestHub) => Promise<void>][] = [
  ["protocol_error", {}, async (hub) => {
    await using raw = await RawPeer.connect(hub.port);
    await raw.write(encodeLengthPrefixed(new TextEncoder().encode("{nope")));
    await raw.readToEnd();
  }],
  ["unauthorized", { token: "s3cret" }, async (hub) => {
    await using raw = await RawPeer.connect(hub.port, { token: "guess" });
    await raw.readToEnd();
  }],
  ["full", { maxConnections: 1 }, async (hub) => {
    await using first = await RawPeer.connect(hub.port);
    await first.send({ type: "ping" });
    await first.next();
    await using second = await RawPeer.connect(hub.port, { hello: false });
    await second.readToEnd();
    first.close();
    // The first one leaves as the peer that went away.
    await until(() => hub.server.stats().disconnects.closed === 1, 2000, "the first connection to close");
  }],
  ["limit", { maxSubjectsPerPeer: 1 }, async (hub) => {
    await using raw = await RawPeer.connect(hub.port);
    await raw.send({ type: "subscribe", subjects: ["a", "b"] });
    await raw.readToEnd();
  }],
  ["idle", { pingInterval: 30, idlePings: 2 }, async (hub) => {
    await using raw = await RawPeer.connect(hub.port);
    await raw.readToEnd(3000);
  }],
  ["closed", {}, async (hub) => {
    const raw = await RawPeer.connect(hub.port);
    await raw.send({ type: "ping" });
    await raw.next();
    raw.close();
    await until(() => hub.server.stats().connections === 0, 2000, "the hub to see the peer go");
  }],
  ["shutdown", {}, async (hub) => {
    await using raw = await RawPeer.connect(hub.port);
    await raw.send({ type: "ping" });
    await raw.next();
    await hub.server.shutdown();
    await raw.readToEnd();
  }],
];

for (const [reason, options, provoke] of REASONS) {
  Deno.test(`hub counts a disconnect under ${reason}, once`, async () => {
    await using hub = startHub(options);
    await provoke(hub);
    await until(() => hub.server.stats().connections === 0, 2000, "every connection to close");
    const expected = reason === "full" ? { full: 1, closed: 1 } : { [reason]: 1 };
    assert.deepEqual(hub.server.stats().disconnects, disconnects(expected));
  });
}

Deno.test("metrics handler serves Prometheus text, healthz, and refuses other paths and methods", async () => {
  await using hub = startHub();
  await using c = client(hub.port);
  c.subscribe("news", () => {});
  assert.equal(await c.publish("news", 1), 1);
  const handle = metricsHandler(hub.server);
  const url = (path: string) => `http://127.0.0.1/${path}`;

  const metrics = handle(new Request(url("metrics")));
  assert.equal(metrics.status, 200);
  assert.equal(metrics.headers.get("content-type"), PROMETHEUS_CONTENT_TYPE);
  const text = await metrics.text();
  for (
    const line of [
      "# TYPE channel_publishes_total counter",
      "channel_publishes_total 1",
      "channel_deliveries_total 1",
      "channel_enqueues_total 0",
      "# TYPE channel_connections gauge",
      "channel_connections 1",
      "channel_channels 1",
      "channel_queued_messages 0",
      "channel_queued_bytes 0",
      "channel_publishes_waiting 0",
      'channel_disconnects_total{reason="slow_consumer"} 0',
      'channel_disconnects_total{reason="closed"} 0',
    ]
  ) {
    assert.ok(text.split("\n").includes(line), `${line} in:\n${text}`);
  }

  const health = handle(new Request(url("healthz")));
  assert.equal(health.status, 200);
  assert.equal(await health.text(), "ok");
  const head = handle(new Request(url("metrics"), { method: "HEAD" }));
  assert.equal(head.status, 200);
  assert.equal(head.body, null);
  const post = handle(new Request(url("metrics"), { method: "POST" }));
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, HEAD");
  await post.body?.cancel();
  const missing = handle(new Request(url("nope")));
  assert.equal(missing.status, 404);
  await missing.body?.cancel();

  await c.close();
  await hub.server.shutdown();
  const down = handle(new Request(url("healthz")));
  assert.equal(down.status, 503);
  await down.body?.cancel();
});

Deno.test("hub task serves /metrics and /healthz on --metrics-port, and only when asked", async () => {
  await using hub = await startService("channel", ["--port", "0", "--metrics-port", "0"]);
  const port = await hub.port();
  const metricsPort = await hub.port("metrics-listening");
  assert.notEqual(metricsPort, port);
  await using c = client(port);
  c.subscribe("news", () => {});
  assert.equal(await c.publish("news", "hi"), 1);

  const base = `http://127.0.0.1:${metricsPort}`;
  const health = await within(fetch(`${base}/healthz`), 5000, "GET /healthz");
  assert.equal(health.status, 200);
  assert.equal(await health.text(), "ok");
  const metrics = await within(fetch(`${base}/metrics`), 5000, "GET /metrics");
  assert.equal(metrics.status, 200);
  assert.equal(metrics.headers.get("content-type"), PROMETHEUS_CONTENT_TYPE);
  const text = await metrics.text();
  assert.match(text, /^channel_publishes_total 1$/m);
  assert.match(text, /^channel_deliveries_total 1$/m);
  assert.match(text, /^channel_connections 1$/m);

  await c.close();
  const status = await hub.stop("SIGTERM");
  assert.equal(status.code, 0);
  await assert.rejects(fetch(`${base}/healthz`), "the metrics port closes with the hub");

  await using plain = await startService("channel", ["--port", "0"]);
  await plain.port();
  assert.ok(!plain.lines.some((line) => line.includes("metrics-listening")), "no metrics port by default");

  await using help = await startService("channel", ["--help"]);
  await help.waitForLine(/--metrics-port PORT .*\/metrics.*\/healthz/);
  await help.waitForLine(/--metrics-hostname HOST .*default: 127\.0\.0\.1/);
});

Deno.test("hub task exits 2, and does not keep the hub up, when its metrics port is taken", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const args = ["--port", "0", "--metrics-port", String(taken.addr.port)];
  await using hub = await startService("channel", args);
  await hub.waitForLine(/Cannot serve metrics on 127\.0\.0\.1:\d+/);
  assert.equal((await hub.process.status).code, 2);
});
