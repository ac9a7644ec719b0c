import assert from "node:assert/strict";
import { Pusher } from "./pusher.ts";
import { FakeTransport } from "./fake_transport.ts";
import { addressOf, setUp } from "./_fake_setup.ts";
import { signJwt } from "../shared/jwt.ts";
import { BROADCAST_SUBJECT, newWorkerId, workerSubject } from "../shared/address.ts";
import type { Json } from "../shared/json.ts";
import { MemoryBroker } from "../shared/memory_bus.ts";

// The pusher's own behaviour, on a fake transport and an in-memory bus: no
// sockets, no hub. What needs real sockets is in pusher_listen_test.ts.

Deno.test("pusher greets each connection with its worker id and a fresh connection id", async () => {
  await using setup = setUp();
  const a = addressOf(await setup.connect());
  const b = addressOf(await setup.connect());
  assert.equal(a.worker, setup.pusher.workerId);
  assert.equal(b.worker, setup.pusher.workerId);
  assert.deepEqual([a.connection, b.connection], [1, 2]);
});

Deno.test("pusher never reuses a connection id after a connection closes", async () => {
  await using setup = setUp();
  const first = await setup.connect();
  first.drop();
  const second = await setup.connect();
  assert.equal(addressOf(second).connection, 2);
  assert.equal(setup.pusher.connectionCount, 1);
});

Deno.test("pusher sends a broadcast to every connection and a targeted event to one", async () => {
  await using setup = setUp();
  const a = await setup.connect();
  const b = await setup.connect();
  await setup.publish(BROADCAST_SUBJECT, { content: "to all" });
  await setup.publish(workerSubject(setup.pusher.workerId), {
    to_connection_id: addressOf(a).connection,
    content: "to a",
  });
  await setup.publish(BROADCAST_SUBJECT, { content: "end" });
  assert.deepEqual(a.sent.slice(1), ["to all", "to a", "end"]);
  assert.deepEqual(b.sent.slice(1), ["to all", "end"]);
});

Deno.test("pusher's subjects on the bus are the broadcast and its own worker subject, until detached", async () => {
  await using setup = setUp();
  assert.equal((await setup.bus.publish(BROADCAST_SUBJECT, { content: "x" })).reached, 1);
  assert.equal((await setup.bus.publish(workerSubject(setup.pusher.workerId), { content: "x" })).reached, 1);
  assert.equal((await setup.bus.publish(workerSubject(newWorkerId()), { content: "x" })).reached, 0);
  setup.pusher.detach();
  assert.equal((await setup.bus.publish(BROADCAST_SUBJECT, { content: "x" })).reached, 0);
});

Deno.test("pusher logs and ignores events of the wrong shape or for unknown connections", async () => {
  await using setup = setUp();
  const client = await setup.connect();
  const subject = workerSubject(setup.pusher.workerId);
  for (const data of ["a string", 42, null, [1], { content: 5 }, { to_connection_id: 1, content: "x" }] as Json[]) {
    await setup.publish(BROADCAST_SUBJECT, data);
  }
  for (const data of ["a string", { content: "no target" }, { to_connection_id: "1", content: "x" }] as Json[]) {
    await setup.publish(subject, data);
  }
  await setup.publish(subject, { to_connection_id: 999, content: "nobody" });
  await setup.publish(BROADCAST_SUBJECT, { content: "still alive" });
  assert.deepEqual(client.sent.slice(1), ["still alive"]);
  assert.equal(setup.logs.filter((line) => line.includes("wrong shape")).length, 9);
  assert.ok(setup.logs.some((line) => line.includes('msg="no such connection" connection=999')));
});

Deno.test("pusher serves the demo page on GET /, 404 elsewhere and 405 to other methods", async () => {
  await using setup = setUp({ publisherUrl: "http://127.0.0.1:9999" });
  const page = await setup.get("/");
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type")!, /^text\/html/);
  const html = await page.text();
  assert.match(html, /import { PushClient } from "\/client.js";/);
  assert.match(html, /"http:\/\/127\.0\.0\.1:9999"/);
  const missing = await setup.get("/nope");
  assert.deepEqual([missing.status, await missing.text()], [404, "Not found: /nope\n"]);
  const post = await setup.get("/", "POST");
  assert.deepEqual([post.status, await post.text()], [405, "Method POST not allowed: use GET\n"]);
  assert.equal(post.headers.get("allow"), "GET, HEAD");
});

Deno.test("pusher serves the client library at /client.js and its types at /client.d.ts, cacheable and revalidated", async () => {
  await using setup = setUp();
  const module = await setup.get("/client.js");
  assert.equal(module.status, 200);
  assert.equal(module.headers.get("content-type"), "text/javascript;charset=utf-8");
  assert.equal(module.headers.get("access-control-allow-origin"), "*");
  assert.equal(module.headers.get("x-typescript-types"), "/client.d.ts");
  assert.match(module.headers.get("cache-control")!, /max-age=\d+/);
  const source = await module.text();
  assert.equal(source, await Deno.readTextFile(new URL("./client.js", import.meta.url)));
  assert.match(source, /^export class PushClient extends EventTarget/m);

  const etag = module.headers.get("etag")!;
  assert.match(etag, /^"[0-9a-f]+"$/);
  const again = await setup.pusher.handler(
    new Request("http://pusher.test/client.js", { headers: { "if-none-match": `W/"other", ${etag}` } }),
  );
  assert.deepEqual([again.status, await again.text()], [304, ""]);

  const types = await setup.get("/client.d.ts");
  assert.equal(types.status, 200);
  assert.match(types.headers.get("content-type")!, /^application\/typescript/);
  assert.match(await types.text(), /export class PushClient/);
  assert.notEqual(types.headers.get("etag"), etag);
});

Deno.test("pusher closes every connection with 1001 going away on closeAll, and refuses new ones with 503", async () => {
  await using setup = setUp();
  const a = await setup.connect();
  const b = await setup.connect();
  setup.pusher.closeAll();
  assert.deepEqual([a.closed, b.closed], [{ code: 1001, reason: "going away" }, { code: 1001, reason: "going away" }]);
  assert.equal(setup.pusher.connectionCount, 0);
  assert.deepEqual(await setup.refused(), [503, "Shutting down\n"]);
});

Deno.test("pusher refuses browsers from origins not on its list with 403", async () => {
  await using setup = setUp({ allowedOrigins: ["https://app.example.com", "https://*.example.org"] });
  assert.deepEqual(await setup.refused("/", { Origin: "https://evil.example.net" }), [
    403,
    "Origin not allowed: https://evil.example.net\n",
  ]);
  assert.ok(setup.logs.some((l) => l.includes("Origin not allowed: https://evil.example.net")));
  for (const origin of ["https://app.example.com", "https://eu.example.org"]) {
    addressOf(await setup.connect("/", { Origin: origin }));
  }
  addressOf(await setup.connect("/")); // no Origin: not a browser, not checked
  const metrics = await (await setup.get("/metrics")).text();
  assert.match(metrics, /^pusher_rejected_total\{reason="origin"\} 1$/m);
});

Deno.test("pusher answers a long hostile Origin against many-wildcard patterns at once, and still matches the right ones", async () => {
  await using setup = setUp({ allowedOrigins: ["https://*.*.*.example.org", "https://*-*.example.com"] });
  // A backtracking match of this against the first pattern took seconds, during which the worker served no one.
  const hostile = `https://${"a.".repeat(2000)}`;
  const started = performance.now();
  assert.equal((await setup.refused("/", { Origin: hostile }))[0], 403);
  const took = performance.now() - started;
  assert.ok(took < 1000, `answered after ${Math.round(took)} ms`);
  for (const origin of ["https://a.b.c.example.org", "https://A.B.C.EXAMPLE.ORG", "https://x-y.example.com"]) {
    addressOf(await setup.connect("/", { Origin: origin }));
  }
  for (const origin of ["https://a.b.example.org", "https://a/b.c.d.example.org", "https://xy.example.com"]) {
    assert.equal((await setup.refused("/", { Origin: origin }))[0], 403, origin);
  }
});

Deno.test("pusher with a token secret requires a valid, unexpired token and keeps its subject", async () => {
  const secret = "pusher-secret";
  await using setup = setUp({ tokenSecret: secret });
  const exp = Math.floor(Date.now() / 1000) + 60;
  assert.deepEqual(await setup.refused("/"), [401, "Unauthorized: this pusher needs a token (?token=JWT)\n"]);
  assert.match((await setup.refused(`/?token=${signJwt({ sub: "a", exp }, "other")}`))[1], /bad signature/);
  // Well signed and expired: let in to be closed with 4401, which a browser can read (a 401 it sees as 1006).
  const expired = await setup.connect(`/?token=${signJwt({ sub: "a", exp: exp - 120 }, secret)}`);
  assert.deepEqual(expired.closed, { code: 4401, reason: "token expired" });
  assert.deepEqual(expired.sent, [], "no greeting: it never was a connection");
  const token = signJwt({ sub: "alice", exp }, secret);
  const { connection } = addressOf(await setup.connect(`/?token=${token}`));
  assert.ok(setup.logs.some((l) => l.includes(`msg=connected connection=${connection} user=alice`)));
  assert.ok(!setup.logs.some((l) => l.includes(token)), "the token is never logged");
  const metrics = await (await setup.get("/metrics")).text();
  assert.match(metrics, /^pusher_rejected_total\{reason="token"\} 3$/m);
});

Deno.test("pusher refuses an empty token secret, with which anyone could sign tokens", () => {
  const broker = new MemoryBroker();
  assert.throws(
    () =>
      new Pusher({ workerId: newWorkerId(), bus: broker.connect(), transport: new FakeTransport(), tokenSecret: "" }),
    RangeError,
  );
});

Deno.test("pusher closes a client that sends faster than its message rate with 1008, and refills its allowance", async () => {
  await using setup = setUp({ maxMessageRate: 20 });
  const calm = await setup.connect();
  const flood = await setup.connect();
  // Well-formed commands: ten malformed messages in a row would close the client with 4400 before any rate.
  const command = (id: number) => JSON.stringify({ id, subscribe: { channel: "news" } });
  for (let i = 1; i <= 20; i++) calm.receive(command(i));
  assert.equal(calm.closed, null, "a burst of the rate is allowed");
  setup.clock.now += 1000;
  for (let i = 21; i <= 40; i++) calm.receive(command(i));
  assert.equal(calm.closed, null, "a second later the allowance is back");
  for (let i = 1; i <= 21; i++) flood.receive(command(i));
  assert.deepEqual(flood.closed, { code: 1008, reason: "message rate exceeded" });
  await setup.publish(BROADCAST_SUBJECT, { content: "calm is fine" });
  // The replies wait for the channel's history request (recovery.ts), so the broadcast may come among them.
  assert.equal(calm.sent.length, 42, "the greeting, 40 replies and the broadcast");
  assert.deepEqual(calm.sent.slice(1).filter((frame) => !frame.startsWith('{"id":')), ["calm is fine"]);
  assert.ok(setup.logs.some((l) => l.includes('msg="closing a client over its message rate" connection=2 rate=20')));
});

Deno.test("pusher counts pings and pongs toward the message rate", async () => {
  await using setup = setUp({ maxMessageRate: 20 });
  const flood = await setup.connect();
  for (let i = 0; i < 20; i++) flood.ping();
  assert.equal(flood.closed, null);
  flood.ping();
  assert.deepEqual(flood.closed, { code: 1008, reason: "message rate exceeded" });
  const metrics = await (await setup.get("/metrics")).text();
  assert.match(metrics, /^pusher_disconnects_total\{reason="policy"\} 1$/m);
});

Deno.test("pusher /metrics counts 0 connections and deliveries of each kind before the first", async () => {
  await using setup = setUp();
  const body = await (await setup.get("/metrics")).text();
  for (
    const line of [
      "pusher_connections_total 0",
      ...["broadcast", "targeted", "channel", "user"].map((kind) => `pusher_deliveries_total{kind="${kind}"} 0`),
    ]
  ) assert.match(body, new RegExp(`^${line.replace(/[{}]/g, "\\$&")}$`, "m"), line);
});

Deno.test("pusher answers /healthz from its bus link and /metrics in Prometheus format", async () => {
  await using setup = setUp();
  await setup.connect();
  await setup.publish(BROADCAST_SUBJECT, { content: "x" });
  await setup.publish(workerSubject(setup.pusher.workerId), { to_connection_id: 999, content: "nobody" });
  const health = await setup.get("/healthz");
  assert.deepEqual([health.status, await health.text()], [200, "ok\n"]);
  const metrics = await setup.get("/metrics");
  assert.match(metrics.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
  const body = await metrics.text();
  for (
    const line of [
      "pusher_connections 1",
      'pusher_deliveries_total{kind="broadcast"} 1',
      'pusher_drops_total{reason="no_connection"} 1',
      "pusher_hub_connected 1",
    ]
  ) assert.match(body, new RegExp(`^${line.replace(/[{}]/g, "\\$&")}$`, "m"), line);
  setup.broker.down = true;
  const down = await setup.get("/healthz");
  assert.deepEqual([down.status, await down.text()], [503, "hub link down in 1 of 1 workers\n"]);
});

Deno.test("pusher counts why connections closed: the server's reason, lost, or the client's close whatever its code", async () => {
  await using setup = setUp();
  (await setup.connect()).drop();
  (await setup.connect()).close(4000, "disconnected by the server");
  (await setup.connect()).close(3008, "slow");
  for (const code of [1000, 1001, 3008, 1005]) (await setup.connect()).closeByClient(code);
  const body = await (await setup.get("/metrics")).text();
  // Every other reason is there at 0 (tests/metric_names_test.ts).
  assert.deepEqual(body.match(/^pusher_disconnects_total.* [1-9]\d*$/gm)?.sort(), [
    'pusher_disconnects_total{reason="client_closed"} 4',
    'pusher_disconnects_total{reason="closed"} 1',
    'pusher_disconnects_total{reason="dropped"} 1',
    'pusher_disconnects_total{reason="slow"} 1',
  ]);
  assert.match(body, /^pusher_connections_total 7$/m);
});
