/**
 * TLS to NATS and Redis, as real processes started from their tasks with
 * certificates from a test CA (`tests/_tls.ts`): a bus server that refuses
 * the client's certificate leaves the pusher and the publisher up, saying
 * why, answering 503 and linking once the server accepts them.
 */

import assert from "node:assert/strict";
import { type Service, startService } from "./_service.ts";
import { makeTestCertificates } from "./_tls.ts";
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

/** A service, and whether its process has exited. */
async function start(task: string, args: string[]): Promise<{ service: Service; exited: () => boolean }> {
  const service = await startService(task, ["--port", "0", ...args], { env });
  let exited = false;
  service.process.status.then(() => (exited = true));
  return { service, exited: () => exited };
}

/** A publish through the GET API: its status. */
async function publish(port: number, content: string): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${port}/?content=${content}`);
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
  await using redis = await startRedis({
    password: TOKEN,
    tls: {
      certFile: fromRoot(certs.server.cert),
      keyFile: fromRoot(certs.server.key),
      caFile: fromRoot(certs.ca),
      clientAuth: true,
    },
  });
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

Deno.test("NATS refusing the client's certificate: the pusher and the publisher stay up, say why, answer 503, and link once it accepts them", async () => {
  await using certs = await makeTestCertificates();
  await using nats = await startNats({
    token: TOKEN,
    tls: { certFile: certs.server.cert, keyFile: certs.server.key, caFile: certs.ca },
  });
  const node = nats.nodes[0]!;
  const bus = ["--bus", nats.url, "--bus-ca", certs.ca];
  await refusedThenAccepted({
    pusher: bus,
    publisher: [...bus, "--bus-cert", certs.foreignClient.cert, "--bus-key", certs.foreignClient.key],
  }, {
    name: "NATS",
    refusals: () => node.service?.lines.filter((line) => line.includes("TLS handshake error")).length ?? 0,
    accept: async () => {
      await nats.kill(0);
      await nats.restart(0, { clientAuth: false });
    },
    linked: "connected to NATS",
  });
});
