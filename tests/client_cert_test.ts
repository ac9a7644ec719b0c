/**
 * Client certificates on the hub (issue 18, `--client-ca`), as real
 * processes started from their tasks with certificates from a test CA
 * (`tests/_tls.ts`): a hub that requires them lets in a pusher and a
 * publisher presenting one, with no token, and a publish reaches a
 * WebSocket client; it refuses one without a certificate, one from another
 * CA and an expired one, saying why on both sides; with a token as well,
 * both are checked.
 */

import assert from "node:assert/strict";
import { type Service, startService } from "./_service.ts";
import { makeTestCertificates, type TestCertificates, type TestPair } from "./_tls.ts";
import { Op, RawSocket } from "../pusher/ws_testing.ts";
import { until, within } from "../channel/testing.ts";
import { closedByServer, openDescriptors, openStalled, STALLS } from "./_stalled_tls.ts";

const text = new TextDecoder();

/** A hub over TLS requiring client certificates signed by the test CA; resolves once it listens. */
async function startClientCertHub(
  certs: TestCertificates,
  args: string[] = [],
): Promise<{ hub: Service; port: number }> {
  const hub = await startService("channel", [
    "--port",
    "0",
    "--cert",
    certs.server.cert,
    "--key",
    certs.server.key,
    "--client-ca",
    certs.ca,
    ...args,
  ]);
  return { hub, port: await hub.port() };
}

/** The flags that take a pusher or publisher to the hub on `port`, presenting `pair` when given. */
function busArgs(certs: TestCertificates, port: number, pair?: TestPair): string[] {
  const args = ["--hub", `127.0.0.1:${port}`, "--hub-ca", certs.ca];
  return pair ? [...args, "--bus-cert", pair.cert, "--bus-key", pair.key] : args;
}

/** Waits until `service` logged `count` lines containing `fragment`. */
async function linesWith(service: Service, fragment: string, count = 1): Promise<void> {
  await until(
    () => service.lines.filter((line) => line.includes(fragment)).length >= count,
    10_000,
    `${count} log line(s) with ${fragment}; got:\n${service.lines.join("\n")}`,
  );
}

/** The next text message on `socket`, skipping pings. */
async function nextText(socket: RawSocket, what: string): Promise<string> {
  while (true) {
    const frame = await socket.next(5000, what);
    assert.ok(frame, `the connection ended before ${what}`);
    if (frame.opcode === Op.text) return text.decode(frame.payload);
  }
}

Deno.test("a hub with --client-ca and no token lets in a pusher and a publisher with a client certificate, and a publish reaches a WebSocket client", async () => {
  await using certs = await makeTestCertificates();
  const { hub, port } = await startClientCertHub(certs);
  await using _hub = hub;
  assert.match(hub.lines.join("\n"), /msg=listening .*auth=client-certificate tls=on/);
  await using pusher = await startService("pusher", [
    "--port",
    "0",
    "--workers",
    "1",
    ...busArgs(certs, port, certs.client),
  ]);
  await using publisher = await startService("publisher", ["--port", "0", ...busArgs(certs, port, certs.client)]);
  const [pusherPort, publisherPort] = await Promise.all([pusher.port(), publisher.port()]);
  await Promise.all([linesWith(pusher, 'msg="connected to hub"'), linesWith(publisher, 'msg="connected to hub"')]);

  const socket = await RawSocket.open(pusherPort);
  try {
    const greeting = await socket.next(5000, "the greeting");
    assert.equal(greeting?.opcode, Op.text);
    const response = await fetch(`http://127.0.0.1:${publisherPort}/?content=signed`);
    assert.deepEqual({ status: response.status, body: await response.text() }, { status: 200, body: "ok" });
    assert.equal(await nextText(socket, "the publish"), "signed");
  } finally {
    socket.close();
  }
  for (const service of [hub, pusher, publisher]) {
    assert.ok(!service.lines.some((line) => /level=(warn|error)/.test(line)), service.lines.join("\n"));
  }
});

Deno.test("a hub with --client-ca refuses a pusher without a certificate, with another CA's, a server certificate and an expired one, and both sides log why", async (t) => {
  await using certs = await makeTestCertificates();
  const { hub, port } = await startClientCertHub(certs);
  await using _hub = hub;
  const cases: [string, TestPair | undefined, string, RegExp][] = [
    [
      "no certificate",
      undefined,
      'reason="no certificate" code=ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE',
      /CertificateRequired|close_notify/,
    ],
    ["another CA's certificate", certs.foreignClient, 'reason="not trusted"', /close_notify/],
    // The mistake of giving the pusher the hub's own certificate: the right CA, but for server use only.
    ["a server certificate", certs.server, 'reason="not trusted"', /close_notify/],
    ["an expired certificate", certs.expiredClient, "reason=expired code=CERT_HAS_EXPIRED", /close_notify/],
  ];
  for (const [name, pair, hubSays, clientSays] of cases) {
    await t.step(name, async () => {
      const before = hub.lines.filter((line) => line.includes(hubSays)).length;
      await using pusher = await startService("pusher", [
        "--port",
        "0",
        "--workers",
        "1",
        ...busArgs(certs, port, pair),
      ]);
      await pusher.port();
      await linesWith(hub, hubSays, before + 1);
      const refused = hub.lines.filter((line) => line.includes(hubSays)).at(-1)!;
      assert.match(refused, /level=warn .*msg="client certificate refused" remote=127\.0\.0\.1:\d+ /);
      if (hubSays.includes("not trusted")) {
        assert.match(refused, /hint="signed by a CA other than --client-ca's, or not a client certificate/);
      }
      // TLS 1.3: the client's handshake is over before the hub checks its certificate, so it hears on its first read.
      const line = await pusher.waitForLine(/msg="disconnected from hub"/);
      assert.match(line, /level=warn/);
      assert.match(line, clientSays);
      assert.match(line, /hint="the hub closed the link before its first reply: it may require a client certificate/);
    });
  }
  // The hub did not count any of them as a client.
  assert.ok(!hub.lines.some((line) => line.includes('msg="closing connection"')), hub.lines.join("\n"));
});

Deno.test("a hub with --client-ca and --token checks both: a right certificate with a wrong token is refused, with both it is let in", async () => {
  await using certs = await makeTestCertificates();
  const { hub, port } = await startClientCertHub(certs, ["--token", "s3cret"]);
  await using _hub = hub;
  assert.match(hub.lines.join("\n"), /msg=listening .*auth=client-certificate\+token tls=on/);
  await using wrong = await startService("publisher", [
    "--port",
    "0",
    "--publish-timeout",
    "500",
    "--hub-token",
    "wrong",
    ...busArgs(certs, port, certs.client),
  ]);
  const wrongPort = await wrong.port();
  await hub.waitForLine(/msg="closing connection" .*Unauthorized: wrong token/);
  await wrong.waitForLine(/msg="hub reported an error" .*Unauthorized: wrong token/);
  const refused = await fetch(`http://127.0.0.1:${wrongPort}/?content=hi`);
  await refused.body?.cancel();
  assert.equal(refused.status, 503);

  await using right = await startService("publisher", [
    "--port",
    "0",
    "--hub-token",
    "s3cret",
    ...busArgs(certs, port, certs.client),
  ]);
  const rightPort = await right.port();
  await linesWith(right, 'msg="connected to hub"');
  const answer = await fetch(`http://127.0.0.1:${rightPort}/?content=hi`);
  assert.deepEqual({ status: answer.status, body: await answer.text() }, { status: 200, body: "ok" });
  assert.ok(!right.lines.some((line) => line.includes("Unauthorized")), right.lines.join("\n"));
});

Deno.test("a hub with --client-ca closes the sockets of clients that stall their TLS handshake, at --hello-timeout", async (t) => {
  await using certs = await makeTestCertificates();
  const { hub, port } = await startClientCertHub(certs, ["--hello-timeout", "1000"]);
  await using _hub = hub;
  const idle = await openDescriptors(hub.process.pid);
  for (const stall of STALLS) {
    await t.step(stall, async () => {
      const conns = await openStalled(port, 30, stall);
      // The hello timeout, plus a margin for a loaded machine.
      await closedByServer(conns, 1000 + 4000, `connections that stalled at ${stall}`);
      await until(
        async () => await openDescriptors(hub.process.pid) <= idle,
        5000,
        `the hub's descriptors back to ${idle}`,
      );
    });
  }
  assert.match(
    hub.lines.join("\n"),
    /msg="TLS handshake failed" remote=127\.0\.0\.1:\d+ error="TLS handshake timeout"/,
  );
  // The hub still lets a client in.
  await using pusher = await startService("pusher", [
    "--port",
    "0",
    "--workers",
    "1",
    ...busArgs(certs, port, certs.client),
  ]);
  await linesWith(pusher, 'msg="connected to hub"');
});

Deno.test("a hub with --client-ca logs a flood of clients without a certificate in a line or two a second, counting each", async () => {
  await using certs = await makeTestCertificates();
  const { hub, port } = await startClientCertHub(certs);
  await using _hub = hub;
  const refusedLines = () => hub.lines.filter((line) => line.includes('msg="client certificate refused"'));
  const started = performance.now();
  const count = 60;
  await Promise.all(Array.from({ length: count }, async () => {
    // TLS 1.3: the client's side of the handshake ends before the hub refuses it; the refusal comes on the first read.
    const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [certs.caPem] }).catch(() => null);
    if (conn === null) return;
    await within(conn.read(new Uint8Array(64)).catch(() => null), 5000, "the hub's refusal");
    conn.close();
  }));
  const told = () => refusedLines().reduce((sum, line) => sum + 1 + Number(/ unlogged=(\d+)/.exec(line)?.[1] ?? 0), 0);
  await until(
    () => told() === count,
    5000,
    `lines that account for ${count} refusals; got:\n${refusedLines().join("\n")}`,
  );
  const seconds = (performance.now() - started) / 1000;
  assert.ok(refusedLines().length <= 2 * Math.ceil(seconds) + 1, `${refusedLines().length} lines in ${seconds} s`);
  assert.match(refusedLines()[0]!, /level=warn .*reason="no certificate"/);
});

Deno.test("--client-ca flags: without --cert the hub stops with one line; off loopback it stands in for the token", async (t) => {
  await using certs = await makeTestCertificates();
  await t.step("--client-ca without --cert", async () => {
    await using hub = await startService("channel", ["--port", "0", "--client-ca", certs.ca]);
    const status = await within(hub.process.status, 10_000, "the hub to exit");
    await hub.stop();
    assert.equal(status.code, 2, hub.lines.join("\n"));
    const errors = hub.lines.filter((line) => line.includes("level=error"));
    assert.equal(errors.length, 1, hub.lines.join("\n"));
    assert.match(errors[0]!, /Invalid --client-ca: give --cert and --key with it/);
  });
  await t.step("a --client-ca with no certificate in it", async () => {
    await using hub = await startService("channel", [
      "--port",
      "0",
      "--cert",
      certs.server.cert,
      "--key",
      certs.server.key,
      "--client-ca",
      certs.server.key,
    ]);
    const status = await within(hub.process.status, 10_000, "the hub to exit");
    await hub.stop();
    assert.equal(status.code, 2, hub.lines.join("\n"));
    assert.match(hub.lines.join("\n"), /level=error .*Invalid --client-ca .*no PEM certificate/);
  });
  await t.step("on 0.0.0.0 with --client-ca and no token", async () => {
    await using hub = await startService("channel", [
      "--port",
      "0",
      "--hostname",
      "0.0.0.0",
      "--cert",
      certs.server.cert,
      "--key",
      certs.server.key,
      "--client-ca",
      certs.ca,
    ]);
    await hub.port();
    assert.ok(!hub.lines.some((line) => /level=(warn|error)/.test(line)), hub.lines.join("\n"));
  });
});
