import assert from "node:assert/strict";
import { hubBusAddress, openBus, parseBusAddress } from "./open_bus.ts";
import { HubBus } from "../channel/bus.ts";
import { startNats } from "../tests/_nats.ts";
import { quiet, startHub, until } from "../channel/testing.ts";
import { createLogger } from "./log.ts";
import { readServedCertificate } from "./tls.ts";
import { makeTestCertificates } from "../tests/_tls.ts";
import { startRedis } from "../tests/_redis.ts";
import { ROOT } from "./tasks.ts";

Deno.test("parseBusAddress reads channel://HOST:PORT, IPv6 hosts in brackets", () => {
  assert.deepEqual(parseBusAddress("channel://127.0.0.1:2206"), {
    scheme: "channel",
    hostname: "127.0.0.1",
    port: 2206,
  });
  assert.deepEqual(parseBusAddress("channel://hub.internal:1"), {
    scheme: "channel",
    hostname: "hub.internal",
    port: 1,
  });
  assert.deepEqual(parseBusAddress("channel://[::1]:65535"), { scheme: "channel", hostname: "::1", port: 65535 });
  assert.deepEqual(parseBusAddress("channel://h:2206/"), { scheme: "channel", hostname: "h", port: 2206 });
});

Deno.test("parseBusAddress reads redis:// and rediss://, the port 6379 when none is given", () => {
  assert.deepEqual(parseBusAddress("redis://127.0.0.1:6380"), { scheme: "redis", hostname: "127.0.0.1", port: 6380 });
  assert.deepEqual(parseBusAddress("redis://cache.internal"), {
    scheme: "redis",
    hostname: "cache.internal",
    port: 6379,
  });
  assert.deepEqual(parseBusAddress("rediss://[::1]:6390/"), { scheme: "rediss", hostname: "::1", port: 6390 });
  assert.throws(() => parseBusAddress("redis://:secret@cache:6379"), /credentials do not belong in it: pass a token$/);
  assert.throws(
    () => parseBusAddress("redis://cache:6379/2"),
    /expected HOST:PORT with nothing after the port$/,
  );
  assert.throws(() => parseBusAddress("rediss://cache:0"), /expected a port from 1 to 65535$/);
});

Deno.test("parseBusAddress refuses other addresses with a message that says why", () => {
  const cases: [string, RegExp][] = [
    [
      "amqp://127.0.0.1:5672",
      /^Invalid bus address: "amqp:\/\/127.0.0.1:5672": unknown scheme "amqp" \(schemes: channel:\/\/, nats:\/\/, tls:\/\/, redis:\/\/, rediss:\/\/\)$/,
    ],
    ["127.0.0.1:2206", /^Invalid bus address: "127.0.0.1:2206": .*schemes: channel:\/\//],
    [
      "",
      /^Invalid bus address: "": expected a URL such as channel:\/\/127.0.0.1:2206 \(schemes: channel:\/\/, nats:\/\/, tls:\/\/, redis:\/\/, rediss:\/\/\)$/,
    ],
    ["nats://", /^Invalid bus address: "nats:\/\/": expected nats:\/\/HOST:PORT,HOST:PORT,...$/],
    ["nats://a:1,", /^Invalid bus address: "nats:\/\/a:1,": the host is missing$/],
    ["nats://a:0", /expected a port from 1 to 65535$/],
    ["tls://u:p@a:4222", /credentials do not belong in it: pass a token$/],
    ["nats://a:4222/x", /expected HOST:PORT with nothing after the port$/],
    ["channel://hub", /expected a port from 1 to 65535$/],
    ["channel://hub:0", /expected a port from 1 to 65535$/],
    ["channel://hub:70000", /^Invalid bus address: "channel:\/\/hub:70000": /],
    ["channel://:2206", /^Invalid bus address: "channel:\/\/:2206": /],
    ["channel://user:secret@hub:2206", /credentials do not belong in it: pass a token$/],
    ["channel://hub:2206/path", /nothing after the port$/],
    ["channel://hub:2206?x=1", /nothing after the port$/],
  ];
  for (const [address, message] of cases) {
    assert.throws(() => parseBusAddress(address), (error: Error) => {
      assert.ok(error instanceof TypeError, `${address}: a TypeError`);
      assert.match(error.message, message);
      return true;
    });
  }
});

Deno.test("parseBusAddress reads nats:// and tls:// server lists, the port 4222 by default", () => {
  assert.deepEqual(parseBusAddress("nats://10.0.0.1:4222,n2.internal,[::1]:5222"), {
    scheme: "nats",
    servers: [
      { hostname: "10.0.0.1", port: 4222 },
      { hostname: "n2.internal", port: 4222 },
      { hostname: "::1", port: 5222 },
    ],
  });
  assert.deepEqual(parseBusAddress("tls://nats.internal:4443"), {
    scheme: "tls",
    servers: [{ hostname: "nats.internal", port: 4443 }],
  });
});

Deno.test("openBus opens a NATS cluster for nats://, with the token and history", async () => {
  await using nats = await startNats({ token: "s3cret" });
  await using bus = openBus(nats.url, {
    token: "s3cret",
    logger: quiet,
    history: { subjects: ["channel.*"], size: 10, ttlMs: 60_000 },
  });
  assert.equal(bus.countsReached, false, "NATS does not count subscribers");
  assert.equal(bus.address, nats.url);
  assert.deepEqual(await bus.publish("news", 1), { reached: null });
  assert.equal((await bus.publish("channel.news", 1)).position?.offset, 1);
  await using wrongToken = openBus(nats.url, { token: "wrong", logger: quiet });
  await assert.rejects(wrongToken.publish("news", 1, { timeout: 500 }), { name: "BusError", code: "unavailable" });
});

Deno.test("hubBusAddress maps --hub's HOST:PORT to channel://HOST:PORT", () => {
  assert.equal(hubBusAddress("127.0.0.1:2206"), "channel://127.0.0.1:2206");
  assert.equal(hubBusAddress("[::1]:2206"), "channel://[::1]:2206");
  assert.throws(() => hubBusAddress("127.0.0.1"), /^TypeError: Invalid bus address: "channel:\/\/127.0.0.1": /);
});

Deno.test("openBus opens the hub for channel:// and refuses an unknown scheme", async () => {
  await using hub = startHub();
  await using bus = openBus(`channel://127.0.0.1:${hub.port}`, { logger: quiet, publishTimeout: 2000 });
  assert.ok(bus instanceof HubBus);
  assert.equal(bus.address, `channel://127.0.0.1:${hub.port}`);
  await until(() => bus.connected, 2000, "the bus to connect");
  assert.deepEqual(await bus.publish("news", 1), { reached: 0 });
  assert.throws(() => openBus("amqp://127.0.0.1:5672"), {
    name: "TypeError",
    message:
      'Invalid bus address: "amqp://127.0.0.1:5672": unknown scheme "amqp" (schemes: channel://, nats://, tls://, redis://, rediss://)',
  });
});

Deno.test("openBus passes the token to the hub", async () => {
  await using hub = startHub({ token: "s3cret" });
  await using bus = openBus(`channel://127.0.0.1:${hub.port}`, { token: "s3cret", logger: quiet });
  await until(() => bus.connected, 2000, "the bus to connect");
  assert.deepEqual(await bus.publish("news", 1, { timeout: 2000 }), { reached: 0 });
});

Deno.test("openBus speaks TLS to a hub that serves it when given its CA, with or without a client certificate", async () => {
  await using certs = await makeTestCertificates();
  await using hub = startHub({ tls: await readServedCertificate(certs.server) });
  const client = await readServedCertificate(certs.client);
  for (const tls of [{ caCerts: [certs.caPem] }, { caCerts: [certs.caPem], cert: client.cert, key: client.key }]) {
    await using bus = openBus(`channel://127.0.0.1:${hub.port}`, { tls, logger: quiet });
    await until(() => bus.connected, 5000, "the bus to connect over TLS");
    assert.deepEqual(await bus.publish("news", 1, { timeout: 2000 }), { reached: 0 });
  }
});

Deno.test("openBus over TLS refuses a hub certificate from another CA, saying why once, and publishes time out", async () => {
  await using certs = await makeTestCertificates();
  await using hub = startHub({ tls: await readServedCertificate(certs.foreign) });
  const logs: string[] = [];
  const logger = createLogger("test", { level: "warn", sink: (line) => logs.push(line) });
  await using bus = openBus(`channel://127.0.0.1:${hub.port}`, { tls: { caCerts: [certs.caPem] }, logger });
  await until(
    () => hub.logs.filter((line) => line.includes('msg="TLS handshake failed"')).length >= 3,
    10_000,
    "three refused handshakes",
  );
  assert.equal(bus.connected, false);
  const warnings = logs.filter((line) => line.includes("hub TLS handshake failed"));
  assert.equal(warnings.length, 1, logs.join("\n"));
  assert.match(warnings[0]!, /error="invalid peer certificate: UnknownIssuer"/);
  await assert.rejects(bus.publish("news", 1, { timeout: 200 }), { name: "BusError" });
});

Deno.test("openBus refuses a client certificate on channel:// without the CA that turns TLS on", () => {
  assert.throws(
    () => openBus("channel://127.0.0.1:2206", { tls: { cert: "x", key: "y" } }),
    /^TypeError: Invalid TLS for channel:\/\/127.0.0.1:2206: a client certificate needs TLS/,
  );
});

Deno.test("openBus opens Redis for redis://, with the token as its password and history on Streams", async () => {
  await using redis = await startRedis({ password: "s3cret" });
  await using bus = openBus(redis.address, {
    token: "s3cret",
    logger: quiet,
    publishTimeout: 2000,
    history: { subjects: ["news"], size: 10, ttlMs: 60_000 },
  });
  assert.equal(bus.countsReached, true, "Redis counts them");
  assert.equal(bus.address, redis.address);
  await bus.subscribe("news", () => {});
  const { reached, position } = await bus.publish("news", 1);
  assert.equal(reached, 1);
  assert.equal(position?.offset, 1);
});

Deno.test("openBus speaks TLS for rediss://, verifying Redis with the CA it is given", async () => {
  await using certs = await makeTestCertificates();
  await using redis = await startRedis({
    tls: { certFile: fromRoot(certs.server.cert), keyFile: fromRoot(certs.server.key), caFile: fromRoot(certs.ca) },
  });
  await using bus = openBus(redis.address, {
    logger: quiet,
    publishTimeout: 5000,
    tls: { caCerts: [certs.caPem] },
  });
  assert.equal(bus.address, redis.address);
  assert.deepEqual(await bus.publish("news", 1), { reached: 0 });
  await using untrusting = openBus(redis.address, { logger: quiet, publishTimeout: 300 });
  await assert.rejects(untrusting.publish("news", 1), { name: "BusError", code: "unavailable" });
});

Deno.test("openBus presents a client certificate on rediss:// to a Redis that asks for one, and one without is refused", async () => {
  await using certs = await makeTestCertificates();
  await using redis = await startRedis({
    tls: {
      certFile: fromRoot(certs.server.cert),
      keyFile: fromRoot(certs.server.key),
      caFile: fromRoot(certs.ca),
      clientAuth: true,
    },
  });
  const { cert, key } = await readServedCertificate(certs.client);
  await using bus = openBus(redis.address, {
    logger: quiet,
    publishTimeout: 5000,
    tls: { caCerts: [certs.caPem], cert, key },
  });
  assert.deepEqual(await bus.publish("news", 1), { reached: 0 });
  // A client without one is refused at each retry, and says why once. Deno
  // 2.9's node:tls often throws the refusal uncaught, out of node-redis's
  // reach: _tls_alerts.ts keeps it from ending this process.
  const logs: string[] = [];
  const logger = createLogger("test", { level: "warn", sink: (line) => logs.push(line) });
  await using refused = openBus(redis.address, { logger, publishTimeout: 300, tls: { caCerts: [certs.caPem] } });
  await until(
    () => redis.lines.filter((line) => line.includes("peer did not return a certificate")).length >= 6,
    10_000,
    "six refused handshakes",
  );
  await assert.rejects(refused.publish("news", 1), { name: "BusError", code: "unavailable" });
  const warnings = logs.filter((line) => line.includes("CertificateRequired"));
  assert.equal(warnings.length, 1, logs.join("\n"));
  assert.match(warnings[0]!, /level=warn .*msg="Redis TLS handshake refused" .*hint="the server may require/);
});

/** A path from the repository root made absolute: redis-server runs in a directory of its own. */
function fromRoot(path: string): string {
  return new URL(path, ROOT).pathname;
}

Deno.test("openBus loads the NATS and Redis clients only for their addresses: a process on the hub saves their memory", async () => {
  // Fresh processes (this one imported them for the tests above): one opens
  // the hub, the other also imports the NATS client; each prints its VmRSS.
  const rss = async (extra: string) => {
    const script = [
      'import { openBus } from "./shared/open_bus.ts";',
      extra,
      'await using bus = openBus("channel://127.0.0.1:1", { publishTimeout: 1 });',
      'console.log(/VmRSS:\\s+(\\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]);',
    ].join("\n");
    const { stdout, success } = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", script],
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "null",
    }).output();
    assert.ok(success, "the script ran");
    return Number(new TextDecoder().decode(stdout)) / 1024;
  };
  const hubOnly = await rss("");
  const withClients = await rss('await import("./shared/nats_bus.ts"); await import("./shared/redis_bus.ts");');
  // 20 to 29 MiB measured: Deno's Node layer and the two npm clients.
  assert.ok(
    withClients - hubOnly > 12,
    `hub only ${hubOnly.toFixed(1)} MiB, with the NATS and Redis clients ${withClients.toFixed(1)} MiB`,
  );
});
