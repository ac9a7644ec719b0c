/**
 * TLS on every link (issue 18), as real processes started from their tasks
 * with certificates from a test CA (`tests/_tls.ts`): the hub over TLS with
 * the pusher and the publisher verifying it, HTTPS in and `wss://` out, the
 * refusals a user meets (another CA, an expired certificate, plain text)
 * with the log line that says why, and a certificate reloaded on SIGHUP
 * under an open connection.
 */

import assert from "node:assert/strict";
import { type Service, startService } from "./_service.ts";
import { makeTestCertificates, type TestPair } from "./_tls.ts";
import { Op, RawSocket } from "../pusher/ws_testing.ts";
import { until, within } from "../channel/testing.ts";
import { ROOT } from "../shared/tasks.ts";

const text = new TextDecoder();

/** The hub over TLS with `pair`; resolves once it listens. */
async function startTlsHub(pair: TestPair, args: string[] = []): Promise<{ hub: Service; port: number }> {
  const hub = await startService("channel", ["--port", "0", "--cert", pair.cert, "--key", pair.key, ...args]);
  return { hub, port: await hub.port() };
}

/** Waits until `service` logged `count` lines containing `fragment`. */
async function linesWith(service: Service, fragment: string, count = 1): Promise<void> {
  await until(
    () => service.lines.filter((line) => line.includes(fragment)).length >= count,
    10_000,
    `${count} log line(s) with ${fragment}; got:\n${service.lines.join("\n")}`,
  );
}

/** An HTTP client that verifies servers with `caPem`. */
function httpsClient(caPem: string): Deno.HttpClient {
  return Deno.createHttpClient({ caCerts: [caPem] });
}

/** A publish through the GET API; the answer's status and body. */
async function publish(url: string, client?: Deno.HttpClient): Promise<{ status: number; body: string }> {
  const response = await fetch(url, client ? { client } : {});
  return { status: response.status, body: await response.text() };
}

/** Opens a WebSocket over TLS, verified with `caPem`, and reads its greeting. */
async function openWss(port: number, caPem: string): Promise<{ socket: RawSocket; greeting: string }> {
  const socket = await RawSocket.open(port, {}, { caCerts: [caPem] });
  const frame = await socket.next(5000, "the greeting");
  assert.equal(frame?.opcode, Op.text);
  return { socket, greeting: text.decode(frame.payload) };
}

/** The next text message on `socket`, skipping pings. */
async function nextText(socket: RawSocket, what: string): Promise<string> {
  while (true) {
    const frame = await socket.next(5000, what);
    assert.ok(frame, `the connection ended before ${what}`);
    if (frame.opcode === Op.text) return text.decode(frame.payload);
  }
}

/** Writes `request` in plain text to 127.0.0.1:`port` and reads what comes back until the server ends the connection. */
async function plainExchange(port: number, request: string): Promise<string> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(request));
  const chunks: Uint8Array[] = [];
  await within(
    (async () => {
      const buffer = new Uint8Array(1024);
      while (true) {
        const n = await conn.read(buffer).catch(() => null);
        if (n === null) return;
        chunks.push(buffer.slice(0, n));
      }
    })(),
    5000,
    "the server to end the plain-text connection",
  );
  return new TextDecoder("latin1").decode(new Uint8Array(chunks.flatMap((chunk) => [...chunk])));
}

/** Whether a TLS handshake with 127.0.0.1:`port`, verifying with `caPem`, succeeds; the error otherwise. */
async function handshake(port: number, caPem: string): Promise<true | string> {
  let conn: Deno.TlsConn | undefined;
  try {
    conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts: [caPem] });
    await within(conn.handshake(), 5000, "a TLS handshake");
    return true;
  } catch (error) {
    return (error as Error).message;
  } finally {
    conn?.close();
  }
}

Deno.test("over TLS: the pusher and the publisher verify the hub, and a publish over HTTPS reaches wss:// clients of both servers", async () => {
  await using certs = await makeTestCertificates();
  const { hub, port: hubPort } = await startTlsHub(certs.server);
  await using _hub = hub;
  await linesWith(hub, "tls=on");
  const busArgs = ["--hub", `127.0.0.1:${hubPort}`, "--bus-ca", certs.ca];
  const serveArgs = ["--port", "0", "--cert", certs.server.cert, "--key", certs.server.key];
  await using pusher = await startService("pusher", [...serveArgs, ...busArgs, "--workers", "2"]);
  await using denoPusher = await startService("pusher", [
    ...serveArgs,
    "--hub-ca",
    certs.ca,
    "--server",
    "deno",
    "--workers",
    "1",
    "--hub",
    `127.0.0.1:${hubPort}`,
  ]);
  // A client certificate too: Deno presents it; the hub cannot ask for it (README: TLS), so it connects as without.
  const clientCert = ["--bus-cert", certs.client.cert, "--bus-key", certs.client.key];
  await using publisher = await startService("publisher", [...serveArgs, ...busArgs, ...clientCert]);
  const [pusherPort, denoPort, publisherPort] = await Promise.all([pusher.port(), denoPusher.port(), publisher.port()]);
  await Promise.all([
    linesWith(pusher, 'msg="connected to hub"', 2),
    linesWith(denoPusher, 'msg="connected to hub"'),
    linesWith(publisher, 'msg="connected to hub"'),
  ]);
  for (const service of [pusher, denoPusher, publisher]) {
    assert.ok(service.lines.some((line) => /msg=listening .*tls=on .*busTls="?on/.test(line)), "says it serves TLS");
  }
  assert.ok(
    publisher.lines.some((line) => line.includes('busTls="on, client certificate"')),
    publisher.lines.join("\n"),
  );

  const clients = [await openWss(pusherPort, certs.caPem), await openWss(denoPort, certs.caPem)];
  try {
    for (const { greeting } of clients) assert.match(greeting, /^workerID:[0-9a-f]{16} connectionID:\d+ connected\n$/);
    using http = httpsClient(certs.caPem);
    const answer = await publish(`https://127.0.0.1:${publisherPort}/?content=over+tls`, http);
    assert.deepEqual(answer, { status: 200, body: "ok" });
    for (const { socket } of clients) assert.equal(await nextText(socket, "the publish"), "over tls");
  } finally {
    for (const { socket } of clients) socket.close();
  }
});

Deno.test("the hub's clients refuse a certificate from another CA and an expired one, saying so, and publishes answer 503", async (t) => {
  await using certs = await makeTestCertificates();
  const cases: [string, TestPair, RegExp][] = [
    ["from another CA", certs.foreign, /UnknownIssuer/],
    ["expired", certs.expired, /Expired/],
  ];
  for (const [name, pair, reason] of cases) {
    await t.step(`a hub certificate ${name}`, async () => {
      const { hub, port: hubPort } = await startTlsHub(pair);
      await using _hub = hub;
      await using publisher = await startService("publisher", [
        "--port",
        "0",
        "--hub",
        `127.0.0.1:${hubPort}`,
        "--bus-ca",
        certs.ca,
        "--publish-timeout",
        "500",
      ]);
      const port = await publisher.port();
      const line = await publisher.waitForLine(/msg="hub TLS handshake failed"/);
      assert.match(line, /level=warn/);
      assert.match(line, reason);
      // The hub hears the client's alert: its side of the same refusal.
      await hub.waitForLine(/msg="TLS handshake failed"/);
      const answer = await publish(`http://127.0.0.1:${port}/?content=hi`);
      assert.equal(answer.status, 503);
      assert.ok(!publisher.lines.some((l) => l.includes('msg="connected to hub"')), "never connected");
    });
  }
});

Deno.test("plain text meets TLS: the hub and the wss:// pusher refuse it with a log line; the HTTPS publisher does not answer it", async () => {
  await using certs = await makeTestCertificates();
  const { hub, port: hubPort } = await startTlsHub(certs.server);
  await using _hub = hub;
  // A plain-text hub client: a publisher not told to use TLS.
  await using plain = await startService("publisher", ["--port", "0", "--hub", `127.0.0.1:${hubPort}`]);
  await plain.port();
  const refused = await hub.waitForLine(/msg="TLS handshake failed"/);
  assert.match(refused, /level=warn .*remote=127\.0\.0\.1:\d+ .*corrupt message/);
  // It retries, and says why once: the bytes it got are a TLS record.
  const failures = () =>
    hub.lines.filter((line) => line.includes('msg="TLS handshake failed"'))
      .reduce((sum, line) => sum + 1 + Number(/ unlogged=(\d+)/.exec(line)?.[1] ?? 0), 0);
  await until(() => failures() >= 4, 20_000, "the plain-text publisher to try 4 times");
  const drops = plain.lines.filter((line) => line.includes('msg="disconnected from hub"'));
  assert.equal(drops.length, 1, plain.lines.join("\n"));
  assert.match(drops[0]!, /level=warn .*the bytes are a TLS record/);
  // An operator reloading every service's certificate: the hub says it does not, and keeps running.
  hub.process.kill("SIGHUP");
  await hub.waitForLine(/level=warn .*SIGHUP: the hub does not reload its certificate/);

  const serveArgs = ["--port", "0", "--cert", certs.server.cert, "--key", certs.server.key];
  await using pusher = await startService("pusher", [
    ...serveArgs,
    "--hub",
    `127.0.0.1:${hubPort}`,
    "--hub-ca",
    certs.ca,
  ]);
  const pusherPort = await pusher.port();
  const answer = await plainExchange(pusherPort, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  assert.ok(!answer.startsWith("HTTP/"), `no HTTP answer to plain text, got ${JSON.stringify(answer)}`);
  const line = await pusher.waitForLine(/msg="TLS handshake failed"/);
  assert.match(line, /level=warn/);

  await using publisher = await startService("publisher", [
    ...serveArgs,
    "--hub",
    `127.0.0.1:${hubPort}`,
    "--hub-ca",
    certs.ca,
  ]);
  const publisherPort = await publisher.port();
  await assert.rejects(fetch(`http://127.0.0.1:${publisherPort}/?content=hi`), "no HTTP answer on the HTTPS port");
});

/**
 * Sends `count` plain-text requests to the TLS port `port`, then one more
 * at a time until `service` writes a further "TLS handshake failed" line,
 * and checks that its lines account for every one: each line is one
 * failure plus the `unlogged` it left out, and there are at most two a
 * second (and one to start).
 */
async function floodAccounted(service: Service, port: number, count: number): Promise<void> {
  const failedLines = () => service.lines.filter((line) => line.includes('msg="TLS handshake failed"'));
  const started = performance.now();
  const request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  for (let i = 0; i < count; i += 25) {
    await Promise.all(Array.from({ length: Math.min(25, count - i) }, () => plainExchange(port, request)));
  }
  let sent = count;
  const before = failedLines().length;
  // The failures after the last line written are told by the next one: one more, until it comes.
  await until(
    async () => {
      if (failedLines().length > before) return true;
      await plainExchange(port, request);
      sent++;
      return failedLines().length > before;
    },
    10_000,
    "a line after the flood",
  );
  await until(
    () => {
      const told = failedLines().reduce((sum, line) => sum + 1 + Number(/ unlogged=(\d+)/.exec(line)?.[1] ?? 0), 0);
      return told === sent;
    },
    5000,
    `lines that account for ${sent} failures; got:\n${failedLines().join("\n")}`,
  );
  const seconds = (performance.now() - started) / 1000;
  // A line as a second begins, and one for those it left out once it has passed.
  const most = 2 * Math.ceil(seconds) + 1;
  assert.ok(failedLines().length <= most, `${failedLines().length} lines in ${seconds.toFixed(1)} s`);
}

Deno.test("a flood of plain text at the TLS hub and wss:// pusher costs a line a second, and the lines count every failure", async () => {
  await using certs = await makeTestCertificates();
  const { hub, port: hubPort } = await startTlsHub(certs.server);
  await using _hub = hub;
  await floodAccounted(hub, hubPort, 200);
  await using pusher = await startService("pusher", [
    "--port",
    "0",
    "--cert",
    certs.server.cert,
    "--key",
    certs.server.key,
    "--workers",
    "1",
    "--hub",
    `127.0.0.1:${hubPort}`,
    "--hub-ca",
    certs.ca,
  ]);
  await floodAccounted(pusher, await pusher.port(), 200);
});

Deno.test("a TLS hub shutting down ends its links with close_notify: its clients see the hub close, not a truncation", async () => {
  await using certs = await makeTestCertificates();
  const { hub, port } = await startTlsHub(certs.server);
  await using _hub = hub;
  await using publisher = await startService("publisher", [
    "--port",
    "0",
    "--hub",
    `127.0.0.1:${port}`,
    "--hub-ca",
    certs.ca,
  ]);
  await publisher.waitForLine(/msg="connected to hub"/);
  assert.equal((await hub.stop("SIGTERM")).code, 0);
  const line = await publisher.waitForLine(/msg="disconnected from hub"/);
  assert.match(line, /reason="the hub closed the connection"/);
  assert.doesNotMatch(line, /close_notify/);
});

Deno.test("SIGHUP reloads the certificate: open wss:// connections stay, new connections and requests get the new one", async () => {
  await using certs = await makeTestCertificates();
  // The services read these paths again on SIGHUP: the test swaps what is in them.
  const live = { cert: `${certs.server.cert}.live`, key: `${certs.server.key}.live` };
  const swap = async (pair: TestPair) => {
    await Deno.copyFile(new URL(pair.cert, ROOT), new URL(live.cert, ROOT));
    await Deno.copyFile(new URL(pair.key, ROOT), new URL(live.key, ROOT));
  };
  await swap(certs.server);
  await using hub = await startService("channel", ["--port", "0"]);
  const hubArgs = ["--hub", `127.0.0.1:${await hub.port()}`];
  const serveArgs = ["--port", "0", "--cert", live.cert, "--key", live.key];
  await using pusher = await startService("pusher", [...serveArgs, ...hubArgs, "--workers", "2"]);
  await using publisher = await startService("publisher", [...serveArgs, ...hubArgs]);
  const [pusherPort, publisherPort] = await Promise.all([pusher.port(), publisher.port()]);
  await linesWith(pusher, 'msg="connected to hub"', 2);
  await linesWith(publisher, 'msg="connected to hub"');

  const before = await openWss(pusherPort, certs.caPem);
  try {
    // Another CA's certificate: a client can tell which one it was served.
    await swap(certs.foreign);
    pusher.process.kill("SIGHUP");
    publisher.process.kill("SIGHUP");
    await linesWith(pusher, 'msg="worker reloaded its certificate"', 2);
    await linesWith(publisher, 'msg="reloaded the certificate"');

    for (const port of [pusherPort, publisherPort]) {
      for (let i = 0; i < 4; i++) {
        assert.equal(await handshake(port, certs.otherCaPem), true, "a new connection is served the new certificate");
        assert.match(String(await handshake(port, certs.caPem)), /UnknownIssuer/, "and never the old one");
      }
    }
    const after = await openWss(pusherPort, certs.otherCaPem);
    try {
      using http = httpsClient(certs.otherCaPem);
      const answer = await publish(`https://127.0.0.1:${publisherPort}/?content=after+reload`, http);
      assert.deepEqual(answer, { status: 200, body: "ok" });
      assert.equal(
        await nextText(before.socket, "the publish on the connection opened before the reload"),
        "after reload",
      );
      assert.equal(await nextText(after.socket, "the publish on a connection opened after the reload"), "after reload");
    } finally {
      after.socket.close();
    }

    // A bad file keeps the old certificate, and says why.
    await Deno.writeTextFile(new URL(live.key, ROOT), "not a key");
    pusher.process.kill("SIGHUP");
    const failed = await pusher.waitForLine(/msg="reload failed"/);
    assert.match(failed, /Invalid --key .*no PEM private key/);
    assert.equal(await handshake(pusherPort, certs.otherCaPem), true);
  } finally {
    before.socket.close();
  }
});

Deno.test("--server deno cannot reload its certificate: SIGHUP says so and keeps every connection", async () => {
  await using certs = await makeTestCertificates();
  await using hub = await startService("channel", ["--port", "0"]);
  await using pusher = await startService("pusher", [
    "--port",
    "0",
    "--cert",
    certs.server.cert,
    "--key",
    certs.server.key,
    "--server",
    "deno",
    "--workers",
    "1",
    "--hub",
    `127.0.0.1:${await hub.port()}`,
  ]);
  const port = await pusher.port();
  await linesWith(pusher, 'msg="connected to hub"');
  const { socket } = await openWss(port, certs.caPem);
  try {
    pusher.process.kill("SIGHUP");
    const line = await pusher.waitForLine(/msg="worker kept its old certificate"/);
    assert.match(line, /Cannot reload the certificate on --server deno/);
    await socket.send(Op.ping, "still here");
    const pong = await socket.next(5000, "a pong on the open connection");
    assert.equal(pong?.opcode, Op.pong);
  } finally {
    socket.close();
  }
});

Deno.test("TLS flags: a missing, malformed or mismatched file stops the service with one line; no TLS off loopback warns", async (t) => {
  await using certs = await makeTestCertificates();
  const cases: [string, string, string[], RegExp][] = [
    [
      "channel",
      "a missing --cert",
      ["--cert", "certs/missing.pem", "--key", certs.server.key],
      /Cannot read --cert certs\/missing\.pem: /,
    ],
    [
      "pusher",
      "a --key of another certificate",
      ["--cert", certs.server.cert, "--key", certs.foreign.key],
      /Invalid --key .*not the key of the first certificate/,
    ],
    [
      "publisher",
      "a --bus-ca with no certificate in it",
      ["--bus-ca", certs.server.key],
      /Invalid --bus-ca .*no PEM certificate/,
    ],
    ["publisher", "--cert without --key", ["--cert", certs.server.cert], /Invalid --cert: give --key with it/],
    [
      "pusher",
      "--bus-cert without --bus-ca",
      ["--bus-cert", certs.client.cert, "--bus-key", certs.client.key],
      /Invalid --bus-cert: give --bus-ca/,
    ],
    [
      "channel",
      "a --cert outside what the task may read",
      ["--cert", "/etc/hostname", "--key", certs.server.key],
      /Cannot read --cert \/etc\/hostname: .*README: TLS/,
    ],
  ];
  for (const [task, what, args, message] of cases) {
    await t.step(`${task}: ${what}`, async () => {
      await using service = await startService(task, ["--port", "0", ...args]);
      const status = await within(service.process.status, 10_000, `${task} to exit`);
      await service.stop();
      assert.equal(status.code, 2, service.lines.join("\n"));
      const errors = service.lines.filter((line) => line.includes("level=error"));
      assert.equal(errors.length, 1, service.lines.join("\n"));
      assert.match(errors[0]!, message);
    });
  }
  const exposed: [string, string[]][] = [
    ["channel", ["--token", "s3cret"]],
    ["pusher", ["--workers", "1"]],
    ["publisher", ["--api-key", "s3cret"]],
  ];
  for (const [task, secret] of exposed) {
    await t.step(`${task} on 0.0.0.0 without TLS warns`, async () => {
      await using service = await startService(task, ["--port", "0", "--hostname", "0.0.0.0", ...secret]);
      await service.port();
      const line = service.lines.find((line) => line.includes("without TLS"));
      assert.match(line ?? service.lines.join("\n"), /level=warn .*non-loopback address without TLS/);
    });
  }
});
