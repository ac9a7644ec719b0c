/**
 * TLS to NATS and Redis, as real processes started from their tasks with
 * certificates from a test CA (`tests/_tls.ts`): a bus server that refuses
 * the client's certificate leaves the pusher and the publisher up, saying
 * why, answering 503 and linking once the server accepts them; and the TLS
 * flags (`--bus-ca`, `--bus-cert`, `--bus-key`) turn TLS on with `nats://`
 * and `redis://` as they do with the hub's `channel://`.
 */

import assert from "node:assert/strict";
import { type Service, startService } from "./_service.ts";
import { makeTestCertificates, type TestCertificates } from "./_tls.ts";
import { startNats } from "./_nats.ts";
import { startRedis } from "./_redis.ts";
import { Client } from "../pusher/testing.ts";
import { until } from "../channel/testing.ts";
import { ROOT } from "../shared/tasks.ts";

const TOKEN = "bus-tls-secret";
const env = { CHANNEL_TOKEN: TOKEN };

/** A path from the repository root made absolute: redis-server runs in a directory of its own. */
function fromRoot(path: string): string {
  return new URL(path, ROOT).pathname;
}

/** A Redis over TLS, with the test token as its password, that asks clients for a certificate the test CA signed. */
function startTlsRedis(certs: TestCertificates) {
  return startRedis({
    password: TOKEN,
    tls: {
      certFile: fromRoot(certs.server.cert),
      keyFile: fromRoot(certs.server.key),
      caFile: fromRoot(certs.ca),
      clientAuth: true,
    },
  });
}

/** A service, and whether its process has exited. */
async function start(task: string, args: string[]): Promise<{ service: Service; exited: () => boolean }> {
  const service = await startService(task, ["--port", "0", ...args], { env });
  let exited = false;
  service.process.status.then(() => (exited = true));
  return { service, exited: () => exited };
}

/** A publish through the GET API: its status. */
async function publish(port: number, content: string): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${port}/?content=${content}`).catch((error: Error) => {
    throw new Error(`The publisher on port ${port} did not answer (did it exit?): ${error.message}`);
  });
  await response.body?.cancel();
  return response.status;
}

/**
 * What a user sees while the bus server refuses the services' certificates,
 * and once it accepts them: `refusals()` counts the server's refused
 * handshakes, `accept()` restarts it without asking for a certificate.
 */
async function refusedThenAccepted(
  services: { pusher: string[]; publisher: string[] },
  server: { refusals: () => number; accept: () => Promise<void>; linked: string; name: string },
): Promise<void> {
  const pusher = await start("pusher", [...services.pusher, "--workers", "1"]);
  await using _pusher = pusher.service;
  const publisher = await start("publisher", [...services.publisher, "--publish-timeout", "500"]);
  await using _publisher = publisher.service;
  const [pusherPort, publisherPort] = await Promise.all([pusher.service.port(), publisher.service.port()]);
  await using client = new Client(pusherPort);
  await client.received(1);

  // Both say why, as warnings, and keep retrying: the server refuses them again and again.
  for (const { service } of [pusher, publisher]) {
    const line = await service.waitForLine(/level=warn .*received fatal alert: /, 20_000);
    assert.match(line, /BadCertificate|CertificateRequired|UnknownCA/);
  }
  await until(() => server.refusals() >= 8, 30_000, `${server.name} to refuse the services' handshakes 8 times`);
  assert.ok(!publisher.exited(), `the publisher exited:\n${publisher.service.lines.join("\n")}`);
  assert.ok(!pusher.exited(), `the pusher exited:\n${pusher.service.lines.join("\n")}`);
  assert.ok(
    !pusher.service.lines.some((line) => line.includes('msg="worker died"')),
    pusher.service.lines.join("\n"),
  );
  assert.equal(client.ws.readyState, WebSocket.OPEN, "the client's WebSocket stays open");
  assert.equal(await publish(publisherPort, "refused"), 503);
  const health = await fetch(`http://127.0.0.1:${publisherPort}/healthz`);
  assert.equal(health.status, 503, await health.text());

  await server.accept();
  await pusher.service.waitForLine(new RegExp(`msg="${server.linked}"`), 20_000);
  // On NATS a worker says it is linked a moment before its subscriptions reach the server: publish until one arrives.
  await until(
    async () => await publish(publisherPort, "accepted") === 200 && client.messages.includes("accepted"),
    20_000,
    `a publish answered 200, and on the client's WebSocket, once ${server.name} accepts the services`,
  );
  assert.ok(!client.messages.includes("refused"));
}

Deno.test("Redis refusing the client's certificate: the pusher and the publisher stay up, say why, answer 503, and link once it accepts them", async () => {
  await using certs = await makeTestCertificates();
  await using redis = await startTlsRedis(certs);
  const bus = ["--bus", redis.address, "--bus-ca", certs.ca];
  await refusedThenAccepted({
    // None, and one from another CA.
    pusher: bus,
    publisher: [...bus, "--bus-cert", certs.foreignClient.cert, "--bus-key", certs.foreignClient.key],
  }, {
    name: "Redis",
    refusals: () => redis.lines.filter((line) => line.includes("Error accepting a client connection")).length,
    accept: async () => {
      await redis.stop();
      await redis.start({ clientAuth: false });
    },
    linked: "connected to redis",
  });
});

/** A NATS server over TLS that asks clients for a certificate the test CA signed; `refusals()` counts the handshakes it refused. */
async function startTlsNats(certs: TestCertificates) {
  const nats = await startNats({
    token: TOKEN,
    tls: { certFile: certs.server.cert, keyFile: certs.server.key, caFile: certs.ca },
  });
  const refusals = () =>
    nats.nodes[0]!.service?.lines.filter((line) => line.includes("TLS handshake error")).length ?? 0;
  return { nats, refusals };
}

Deno.test("NATS refusing the client's certificate: the pusher and the publisher stay up, say why, answer 503, and link once it accepts them", async () => {
  await using certs = await makeTestCertificates();
  const { nats: cluster, refusals } = await startTlsNats(certs);
  await using nats = cluster;
  const bus = ["--bus", nats.url, "--bus-ca", certs.ca];
  await refusedThenAccepted({
    pusher: bus,
    publisher: [...bus, "--bus-cert", certs.foreignClient.cert, "--bus-key", certs.foreignClient.key],
  }, {
    name: "NATS",
    refusals,
    accept: async () => {
      await nats.kill(0);
      await nats.restart(0, { clientAuth: false });
    },
    linked: "connected to NATS",
  });
});

Deno.test("NATS that starts refusing a linked publisher's certificate: one 'link lost' and one 'link back' per outage, however many refusals", async () => {
  await using certs = await makeTestCertificates();
  const { nats: cluster, refusals } = await startTlsNats(certs);
  await using nats = cluster;
  await nats.kill(0);
  await nats.restart(0, { clientAuth: false });
  const publisher = await start("publisher", ["--bus", nats.url, "--bus-ca", certs.ca, "--publish-timeout", "500"]);
  await using _publisher = publisher.service;
  const port = await publisher.service.port();
  await publisher.service.waitForLine(/msg="connected to NATS"/, 20_000);
  const count = (fragment: string) => publisher.service.lines.filter((line) => line.includes(fragment)).length;

  // The server comes back asking for a certificate the publisher does not have, and refuses it again and again.
  await nats.kill(0);
  await nats.restart(0, { clientAuth: true });
  await until(() => refusals() >= 6, 30_000, "NATS to refuse the publisher's handshakes 6 times");
  assert.equal(count('msg="NATS link lost"'), 1, publisher.service.lines.join("\n"));

  await nats.kill(0);
  await nats.restart(0, { clientAuth: false });
  await until(async () => await publish(port, "back") === 200, 20_000, "a publish answered 200 once NATS accepts it");
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  assert.match(metrics, /^publisher_hub_reconnects_total 1$/m, "one outage, one reconnect");
  assert.equal(count('msg="NATS link back"'), 1, publisher.service.lines.join("\n"));
});

Deno.test("--bus-ca turns TLS on with nats:// and redis://: a plain-text server is refused, a TLS one verified and shown the client certificate", async (t) => {
  await using certs = await makeTestCertificates();
  const ca = ["--bus-ca", certs.ca];
  const clientCert = ["--bus-cert", certs.client.cert, "--bus-key", certs.client.key];

  /** Starts a publisher with `args`; resolves with it, its port, and its `listening` line. */
  const publisher = async (args: string[]) => {
    const { service } = await start("publisher", [...args, "--publish-timeout", "500"]);
    const port = await service.port();
    return { service, port, listening: await service.waitForLine(/msg=listening /) };
  };

  await t.step("nats:// to a plain-text NATS: refused before the token is sent", async () => {
    await using nats = await startNats({ token: TOKEN });
    const { service, port, listening } = await publisher(["--bus", nats.url.replace("tls://", "nats://"), ...ca]);
    await using _service = service;
    assert.match(listening, /busTls=on/);
    await service.waitForLine(/level=warn .*msg="cannot connect to NATS yet" .*server does not support 'tls'/);
    assert.equal(await publish(port, "plain"), 503);
  });

  await t.step(
    "nats:// to a TLS NATS that asks for a certificate: verified with --bus-ca, shown --bus-cert",
    async () => {
      await using nats = await startNats({
        token: TOKEN,
        tls: { certFile: certs.server.cert, keyFile: certs.server.key, caFile: certs.ca },
      });
      const address = nats.url.replace("tls://", "nats://");
      const { service, port, listening } = await publisher(["--bus", address, ...ca, ...clientCert]);
      await using _service = service;
      assert.match(listening, /busTls="on, client certificate"/);
      await service.waitForLine(/msg="connected to NATS"/);
      assert.equal(await publish(port, "tls"), 200);
    },
  );

  await t.step("redis:// to a plain-text Redis: refused before the password is sent", async () => {
    await using redis = await startRedis({ password: TOKEN });
    const { service, port, listening } = await publisher(["--bus", redis.address, ...ca]);
    await using _service = service;
    assert.match(listening, /busTls=on/);
    await service.waitForLine(/level=warn .*msg="cannot reach redis"/);
    assert.equal(await publish(port, "plain"), 503);
    // Only redis-cli's own AUTH, just now: nothing of the publisher's, its password least of all, reached Redis.
    const stats = await redis.cli("INFO", "commandstats");
    const commands = stats.split("\n").filter((line) => line.startsWith("cmdstat_"));
    assert.deepEqual(commands.map((line) => line.split(",")[0]), ["cmdstat_auth:calls=1"], stats);
  });

  await t.step(
    "redis:// to a TLS Redis that asks for a certificate: verified with --bus-ca, shown --bus-cert",
    async () => {
      await using redis = await startTlsRedis(certs);
      const address = `redis://127.0.0.1:${redis.port}`;
      const { service, port, listening } = await publisher(["--bus", address, ...ca, ...clientCert]);
      await using _service = service;
      assert.match(listening, /busTls="on, client certificate"/);
      await service.waitForLine(/msg="connected to redis"/);
      await until(async () => await publish(port, "tls") === 200, 10_000, "a publish over TLS answered 200");
    },
  );
});
