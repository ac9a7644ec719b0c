import assert from "node:assert/strict";
import { Pusher, type PusherOptions } from "./pusher.ts";
import { listenTransport, serve as serveHttp, type ServeOptions } from "./server.ts";
import { CloseCode } from "./websocket.ts";
import { until, within } from "../channel/testing.ts";
import { Client } from "./testing.ts";
import { clientFrame, h2cUpgradeRequest, handshakeRequest, httpExchange, Op, RawSocket } from "./ws_testing.ts";
import { concat } from "../shared/bytes.ts";
import { createLogger } from "../shared/log.ts";
import { signJwt } from "../shared/jwt.ts";
import { BROADCAST_SUBJECT, newWorkerId } from "../shared/address.ts";
import { MemoryBroker, type MemoryBus } from "../shared/memory_bus.ts";

// The pusher on its default transport, our server on Deno.listen: what only
// real sockets show (framing, slow readers, pings, request heads). The rest
// of the pusher's behaviour is in pusher_test.ts, on a fake transport.

interface Setup extends AsyncDisposable {
  pusher: Pusher;
  /** A publisher's link to the bus the pusher listens on. */
  bus: MemoryBus;
  port: number;
  logs: string[];
}

function serve(options: Partial<PusherOptions> = {}, transport: ServeOptions = {}): Setup {
  const broker = new MemoryBroker();
  const bus = broker.connect();
  const logs: string[] = [];
  const pusher = new Pusher({
    workerId: newWorkerId(),
    bus: broker.connect(),
    transport: listenTransport,
    logger: createLogger("pusher", { level: "debug", sink: (line) => logs.push(line) }),
    ...options,
  });
  const server = serveHttp({ hostname: "127.0.0.1", port: 0, logger: pusher.logger, ...transport }, pusher.handler);
  return {
    pusher,
    bus,
    port: server.addr.port,
    logs,
    async [Symbol.asyncDispose]() {
      pusher.closeAll();
      await server.shutdown();
    },
  };
}

/**
 * The raw WebSocket handshake request these tests write by hand: RFC 6455's
 * sample key, `Host: x`, and `headers` appended.
 */
function rawHandshake(path: string, headers: Record<string, string> = {}): Uint8Array {
  return new TextEncoder().encode(handshakeRequest({ Host: "x", ...headers }, `GET ${path} HTTP/1.1`));
}

Deno.test("pusher echoes a requested subprotocol so browsers that ask for one connect", async () => {
  await using setup = serve();
  await using client = new Client(setup.port, ["chat", "superchat"]);
  await client.address();
  assert.equal(client.ws.protocol, "chat");
});

Deno.test("pusher keeps a client that is only briefly behind during a burst", async () => {
  await using setup = serve({}, { maxBufferedBytes: 1024 * 1024, slowClientTimeout: 1000 });
  await using client = new Client(setup.port);
  await client.address();
  const chunk = "y".repeat(32 * 1024);
  // One synchronous burst: 64 KiB, as much as one read of the hub link can carry.
  await Promise.all([0, 1].map(() => setup.bus.publish(BROADCAST_SUBJECT, { content: chunk })));
  assert.equal((await client.received(3)).length, 3);
  assert.equal(setup.pusher.connectionCount, 1);
});

Deno.test("pusher closes a client that stops reading with 3008 and keeps serving the others", async () => {
  await using setup = serve({}, { maxBufferedBytes: 256 * 1024, slowClientTimeout: 100, closeTimeout: 20_000 });
  await using reader = new Client(setup.port);
  await reader.address();
  // A client that completes the handshake, then never reads.
  const stalled = await Deno.connect({ hostname: "127.0.0.1", port: setup.port });
  try {
    await stalled.write(rawHandshake("/"));
    await until(() => setup.pusher.connectionCount === 2, 5000, "the stalled client's handshake");
    const chunk = "x".repeat(64 * 1024);
    let sent = 0;
    const kicked = () => setup.logs.some((line) => line.includes('msg="closing a slow client"'));
    while (!kicked() && sent < 1000) {
      await setup.bus.publish(BROADCAST_SUBJECT, { content: chunk });
      sent++;
      // Let the writes progress so the kernel buffers fill and writes block.
      if (sent % 2 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.ok(kicked(), `the stalled client was not closed after ${sent} broadcasts`);
    await setup.bus.publish(BROADCAST_SUBJECT, { content: "after" });
    const messages = await reader.received(sent + 2, 20_000);
    assert.equal(messages.at(-1), "after");
    // Drain the stalled client: the stream ends with a close frame carrying 3008.
    assert.equal(await closeCodeAtEnd(stalled), CloseCode.slow);
    stalled.close();
    await until(() => setup.pusher.connectionCount === 1, 5000, "the stalled client to be forgotten");
  } finally {
    try {
      stalled.close();
    } catch { /* closed above */ }
  }
});

/** Reads a raw WebSocket stream to its end and returns the close frame's code. */
async function closeCodeAtEnd(conn: Deno.Conn): Promise<number | null> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(1 << 16);
  const reading = (async () => {
    let total = 0;
    for (let n; (n = await conn.read(buffer)) !== null;) {
      chunks.push(buffer.slice(0, n));
      total += n;
      if (findClose(concat(chunks, total)) !== undefined) break;
    }
    return findClose(concat(chunks, total)) ?? null;
  })();
  return await within(reading, 10_000, "the close frame");
}

/** Skips the HTTP response head, then walks frames; returns a close frame's code. */
function findClose(bytes: Uint8Array): number | undefined {
  const text = new TextDecoder("latin1").decode(bytes.subarray(0, Math.min(bytes.length, 4096)));
  const head = text.indexOf("\r\n\r\n");
  if (head < 0) return undefined;
  let offset = head + 4;
  while (offset + 2 <= bytes.length) {
    const opcode = bytes[offset]! & 0x0f;
    let length = bytes[offset + 1]! & 0x7f;
    let start = offset + 2;
    if (length === 126) {
      if (start + 2 > bytes.length) return undefined;
      length = (bytes[start]! << 8) | bytes[start + 1]!;
      start += 2;
    } else if (length === 127) {
      if (start + 8 > bytes.length) return undefined;
      length = Number(new DataView(bytes.buffer, bytes.byteOffset + start, 8).getBigUint64(0));
      start += 8;
    }
    if (start + length > bytes.length) return undefined;
    if (opcode === 0x8) return (bytes[start]! << 8) | bytes[start + 1]!;
    offset = start + length;
  }
  return undefined;
}

Deno.test("pusher closes a client that stops answering protocol pings", async () => {
  await using setup = serve({}, { pingInterval: 500 });
  // Completes the handshake and never answers a ping.
  const silent = await Deno.connect({ hostname: "127.0.0.1", port: setup.port });
  try {
    await silent.write(rawHandshake("/"));
    await until(() => setup.pusher.connectionCount === 1, 5000, "the handshake");
    await until(() => setup.pusher.connectionCount === 0, 5000, "the silent client to be closed");
  } finally {
    silent.close();
  }
});

/** Sends a raw WebSocket handshake and returns the response's status line and body. */
async function handshake(port: number, path: string, headers: Record<string, string> = {}): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(rawHandshake(path, headers));
    const buffer = new Uint8Array(4096);
    let response = "";
    while (!response.includes("\r\n\r\n")) {
      const n = await within(conn.read(buffer), 5000, "the handshake response");
      if (n === null) break;
      response += new TextDecoder().decode(buffer.subarray(0, n));
    }
    const [head, body = ""] = response.split("\r\n\r\n");
    return `${head!.split("\r\n")[0]} ${body}`.trim();
  } finally {
    conn.close();
  }
}

Deno.test("pusher answers 400 to a Host header that is not host[:port]: it chooses neither the path nor the token", async () => {
  const secret = "pusher-secret";
  await using setup = serve({ tokenSecret: secret });
  // The Host used to be pasted in front of the request target: these served /healthz, and accepted a token.
  const path = await httpExchange(setup.port, "GET / HTTP/1.1\r\nHost: a/healthz#\r\n\r\n");
  assert.deepEqual([path.status, path.body], [400, "Bad Host header\n"]);
  const token = signJwt({ sub: "mallory", exp: Math.floor(Date.now() / 1000) + 60 }, secret);
  const smuggled = await httpExchange(setup.port, handshakeRequest({ Host: `127.0.0.1/?token=${token}#` }));
  assert.deepEqual([smuggled.status, smuggled.body], [400, "Bad Host header\n"]);
  assert.equal(setup.pusher.connectionCount, 0);
  // The same token in the request target is accepted.
  assert.match(await handshake(setup.port, `/?token=${token}`), /^HTTP\/1\.1 101 /);
});

Deno.test("pusher counts pings and pongs toward the message rate: a ping flood is closed with 1008", async () => {
  await using setup = serve({ maxMessageRate: 20 });
  await using flood = await RawSocket.open(setup.port);
  const greeting = await flood.next();
  assert.match(new TextDecoder().decode(greeting!.payload), /^workerID:\w+ connectionID:\d+ connected/);
  await flood.write(concat(Array.from({ length: 100 }, (_, i) => clientFrame(i % 2 ? Op.ping : Op.pong, "x"))));
  const { close, before } = await flood.readUntilClose();
  assert.deepEqual(close, { code: 1008, reason: "message rate exceeded" });
  assert.ok(before.length <= 20, `at most the allowance of 20 pongs before the close, got ${before.length}`);
  assert.ok(before.every((frame) => frame.opcode === Op.pong));
});

Deno.test("pusher's message rate runs on a monotonic clock: a step back of the wall clock closes nobody", async () => {
  await using setup = serve({ maxMessageRate: 20 });
  await using client = await RawSocket.open(setup.port);
  await client.next(); // the greeting
  const realNow = Date.now;
  try {
    Date.now = () => realNow() - 3_600_000; // NTP steps the clock back an hour
    // Frames are handled in order: the reply, then the pong, say the message before it passed.
    const command = '{"id":1,"subscribe":{"channel":"news"}}';
    await client.write(concat([clientFrame(Op.text, command), clientFrame(Op.ping, "after")]));
    const reply = await client.next();
    assert.deepEqual([reply?.opcode, new TextDecoder().decode(reply?.payload)], [Op.text, '{"id":1,"result":{}}']);
    const answer = await client.next();
    assert.deepEqual([answer?.opcode, new TextDecoder().decode(answer?.payload)], [Op.pong, "after"]);
  } finally {
    Date.now = realNow;
  }
});

Deno.test("pusher serves /healthz and takes a token from an absolute-form request target, as a server must (RFC 9112 3.2.2)", async () => {
  const secret = "pusher-secret";
  await using setup = serve({ tokenSecret: secret });
  const health = await httpExchange(setup.port, "GET http://127.0.0.1/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  assert.deepEqual([health.status, health.body], [200, "ok\n"]);
  const token = signJwt({ sub: "alice", exp: Math.floor(Date.now() / 1000) + 60 }, secret);
  await using socket = await RawSocket.connect(setup.port);
  await socket.write(handshakeRequest({}, `GET http://127.0.0.1/?token=${token} HTTP/1.1`));
  assert.equal((await socket.readHead()).status, 101);
});

Deno.test("pusher answers /healthz to a request that offers an h2c upgrade (curl --http2)", async () => {
  await using setup = serve();
  const health = await httpExchange(
    setup.port,
    h2cUpgradeRequest("/healthz"),
  );
  assert.deepEqual([health.status, health.body], [200, "ok\n"]);
});

Deno.test("pusher on its own server refuses loudly a handshake that came from elsewhere (a Deno.serve Request)", async () => {
  await using setup = serve();
  const req = new Request("http://127.0.0.1/", { headers: { upgrade: "websocket", connection: "Upgrade" } });
  await assert.rejects(async () => await setup.pusher.handler(req), TypeError);
  const page = await setup.pusher.handler(new Request("http://127.0.0.1/"));
  assert.equal(page.status, 200, "a plain request from elsewhere is still served");
});

Deno.test("pusher on real sockets: a client subscribes, gets a channel publication as one text frame, and is closed with 4400 after bad messages", async () => {
  await using setup = serve({ maxBadMessages: 2 });
  await using a = new Client(setup.port);
  await using b = new Client(setup.port);
  await a.address();
  await b.address();
  a.ws.send('{"id":1,"subscribe":{"channel":"news"}}');
  b.ws.send('{"id":1,"subscribe":{"channel":"news"}}');
  await a.received(2);
  await b.received(2);
  assert.deepEqual([a.messages[1], b.messages[1]], ['{"id":1,"result":{}}', '{"id":1,"result":{}}']);
  await setup.bus.publish("channel.news", { channel: "news", data: { text: "€ and 🙂" } });
  const expected = '{"channel":"news","data":{"text":"€ and 🙂"}}';
  assert.equal((await a.received(3))[2], expected);
  assert.equal((await b.received(3))[2], expected);
  a.ws.send("not json");
  a.ws.send("not json either");
  const closed = await within(a.closed, 5000, "the 4400 close");
  assert.deepEqual([closed.code, closed.reason], [4400, "too many bad messages"]);
  assert.match(a.messages.at(-1)!, /"code":400/);
});
