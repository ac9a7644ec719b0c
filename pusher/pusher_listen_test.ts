import assert from "node:assert/strict";
import { Pusher, type PusherOptions } from "./pusher.ts";
import { type Handler, listenTransport, serve as serveHttp, type ServeOptions, type Server } from "./server.ts";
import { type DenoServeOptions, denoTransport, serveDeno } from "./deno_transport.ts";
import type { Transport } from "./transport.ts";
import { CloseCode } from "./websocket.ts";
import { until, within } from "../channel/testing.ts";
import { Client } from "./testing.ts";
import {
  clientFrame,
  closePayload,
  h2cUpgradeRequest,
  handshakeRequest,
  httpExchange,
  Op,
  RawSocket,
} from "./ws_testing.ts";
import { concat } from "../shared/bytes.ts";
import { createLogger } from "../shared/log.ts";
import { signJwt } from "../shared/jwt.ts";
import {
  BROADCAST_SUBJECT,
  type ConnectionEvent,
  CONNECTIONS_SUBJECT,
  newWorkerId,
  presenceQuery,
  workerSubject,
} from "../shared/address.ts";
import { MemoryBroker, type MemoryBus } from "../shared/memory_bus.ts";

// The pusher over real sockets, on each of its two servers: our own on
// Deno.listen (pusher/server.ts, the default) and Deno.serve
// (pusher/deno_transport.ts, --server deno). What only real sockets show
// (framing, slow readers, pings, request heads) is here; the rest of the
// pusher's behaviour is in pusher_test.ts, on a fake transport. Each test
// that holds for both runs once per server and says which in its name; those
// that test our own server's HTTP parsing or control frames run on it alone.

/** Options for either server; each takes those it knows. */
type ServerOptions = ServeOptions & DenoServeOptions;

/** One of the pusher's real servers, with the transport that goes with it. */
interface ServerKind {
  name: "listen" | "deno";
  transport: Transport;
  serve(options: ServerOptions, handler: (req: Request) => Response | Promise<Response>): Server;
}

const LISTEN: ServerKind = {
  name: "listen",
  transport: listenTransport,
  serve: (options, handler) => serveHttp(options, handler as Handler),
};

const DENO: ServerKind = { name: "deno", transport: denoTransport, serve: serveDeno };

const SERVERS = [LISTEN, DENO];

interface Setup extends AsyncDisposable {
  pusher: Pusher;
  server: Server;
  /** A publisher's link to the bus the pusher listens on. */
  bus: MemoryBus;
  port: number;
  logs: string[];
}

function serve(options: Partial<PusherOptions> = {}, transport: ServerOptions = {}, kind = LISTEN): Setup {
  const broker = new MemoryBroker();
  const bus = broker.connect();
  const logs: string[] = [];
  const pusher = new Pusher({
    workerId: newWorkerId(),
    bus: broker.connect(),
    transport: kind.transport,
    logger: createLogger("pusher", { level: "debug", sink: (line) => logs.push(line) }),
    ...options,
  });
  const server = kind.serve({
    hostname: "127.0.0.1",
    port: 0,
    logger: pusher.logger,
    onRefused: (reason) => pusher.countRefusal(reason),
    ...transport,
  }, pusher.handler);
  return {
    pusher,
    server,
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
 * Sends a handshake for `path` that the pusher refuses, and reads the answer.
 * `Connection: close` too: Deno.serve keeps a refused connection open otherwise.
 */
function refusedHandshake(port: number, path: string, headers: Record<string, string> = {}) {
  return httpExchange(port, handshakeRequest({ Connection: "Upgrade, close", ...headers }, `GET ${path} HTTP/1.1`));
}

/**
 * The raw WebSocket handshake request these tests write by hand: RFC 6455's
 * sample key, `Host: x`, and `headers` appended.
 */
function rawHandshake(path: string, headers: Record<string, string> = {}): Uint8Array {
  return new TextEncoder().encode(handshakeRequest({ Host: "x", ...headers }, `GET ${path} HTTP/1.1`));
}

for (const kind of SERVERS) {
  const on = `pusher on ${kind.name}:`;

  Deno.test(`${on} greets a client with its address and echoes a requested subprotocol so browsers that ask for one connect`, async () => {
    await using setup = serve({}, {}, kind);
    await using client = new Client(setup.port, ["chat", "superchat"]);
    const address = await client.address();
    assert.equal(address.worker, setup.pusher.workerId);
    assert.equal(client.ws.protocol, "chat");
    assert.equal(setup.server.sockets, 1);
  });

  Deno.test(`${on} a broadcast reaches every client and a targeted send only its connection`, async () => {
    await using setup = serve({}, {}, kind);
    await using a = new Client(setup.port);
    await using b = new Client(setup.port);
    await a.address();
    const { connection } = await b.address();
    assert.equal((await setup.bus.publish(BROADCAST_SUBJECT, { content: "to all" })).reached, 1);
    await setup.bus.publish(workerSubject(setup.pusher.workerId), { to_connection_id: connection, content: "to b" });
    await setup.bus.publish(BROADCAST_SUBJECT, { content: "marker" });
    assert.deepEqual((await a.received(3)).slice(1), ["to all", "marker"]);
    assert.deepEqual((await b.received(4)).slice(1), ["to all", "to b", "marker"]);
  });

  Deno.test(`${on} a handshake from an origin not allowed gets 403, and one from an allowed origin connects`, async () => {
    await using setup = serve({ allowedOrigins: ["https://good.example"] }, {}, kind);
    const refused = await refusedHandshake(setup.port, "/", { Origin: "https://evil.example" });
    assert.deepEqual([refused.status, refused.body], [403, "Origin not allowed: https://evil.example\n"]);
    await using raw = await RawSocket.open(setup.port, { Origin: "https://good.example" });
    assert.match(new TextDecoder().decode((await raw.next())!.payload), /^workerID:/);
    assert.equal(setup.pusher.connectionCount, 1);
  });

  Deno.test(`${on} a handshake without a valid token gets 401, and one with a token connects`, async () => {
    const secret = "pusher-secret";
    await using setup = serve({ tokenSecret: secret }, {}, kind);
    const refused = await refusedHandshake(setup.port, "/");
    assert.equal(refused.status, 401);
    assert.match(refused.body, /^Unauthorized: /);
    const forged = signJwt({ sub: "mallory", exp: Math.floor(Date.now() / 1000) + 60 }, "another secret");
    assert.equal((await refusedHandshake(setup.port, `/?token=${forged}`)).status, 401);
    const token = signJwt({ sub: "alice", exp: Math.floor(Date.now() / 1000) + 60 }, secret);
    await using client = new Client(setup.port, undefined, `/?token=${token}`);
    await client.address();
    assert.ok(setup.logs.some((line) => line.includes("msg=connected") && line.includes("user=alice")));
  });

  Deno.test(`${on} closeAll closes every client with 1001 and refuses new ones with 503`, async () => {
    await using setup = serve({}, {}, kind);
    const clients = [new Client(setup.port), new Client(setup.port)];
    try {
      await Promise.all(clients.map((client) => client.address()));
      setup.pusher.closeAll();
      for (const event of await within(Promise.all(clients.map((c) => c.closed)), 5000, "the 1001 closes")) {
        assert.deepEqual([event.code, event.reason], [1001, "going away"]);
      }
      const refused = await refusedHandshake(setup.port, "/");
      assert.deepEqual([refused.status, refused.body], [503, "Shutting down\n"]);
    } finally {
      await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
    }
  });

  Deno.test(`${on} shutdown closes clients with 1001 after what they were sent, and finishes`, async () => {
    const setup = serve({}, {}, kind);
    await using client = new Client(setup.port);
    try {
      await client.address();
      const chunk = "z".repeat(16 * 1024);
      for (let i = 0; i < 20; i++) setup.bus.publish(BROADCAST_SUBJECT, { content: `${i} ${chunk}` });
      await until(() => client.messages.length >= 2, 5000, "the first broadcast");
      await within(setup.server.shutdown(), 5000, "the shutdown");
      const closed = await within(client.closed, 5000, "the 1001 close");
      assert.deepEqual([closed.code, closed.reason], [1001, "going away"]);
      assert.equal(client.messages.length, 21, "every broadcast before the close");
      await within(setup.server.finished, 5000, "the server to finish");
      assert.equal(setup.server.sockets, 0);
    } finally {
      await setup[Symbol.asyncDispose]();
    }
  });

  Deno.test(`${on} keeps a client that is only briefly behind during a burst`, async () => {
    await using setup = serve({}, { maxBufferedBytes: 1024 * 1024, slowClientTimeout: 1000 }, kind);
    await using client = new Client(setup.port);
    await client.address();
    const chunk = "y".repeat(32 * 1024);
    // One synchronous burst: 64 KiB, as much as one read of the hub link can carry.
    await Promise.all([0, 1].map(() => setup.bus.publish(BROADCAST_SUBJECT, { content: chunk })));
    assert.equal((await client.received(3)).length, 3);
    assert.equal(setup.pusher.connectionCount, 1);
  });

  Deno.test(`${on} closes a client that stops reading with 3008 and keeps serving the others`, async () => {
    await using setup = serve(
      {},
      { maxBufferedBytes: 256 * 1024, slowClientTimeout: 100, closeTimeout: 20_000 },
      kind,
    );
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
      // Forgotten as the close starts, though its closing handshake has 20 s to finish.
      assert.equal(setup.pusher.connectionCount, 1);
      await setup.bus.publish(BROADCAST_SUBJECT, { content: "after" });
      const messages = await reader.received(sent + 2, 20_000);
      assert.equal(messages.at(-1), "after");
      // Drain the stalled client: the stream ends with a close frame carrying 3008.
      assert.equal(await closeCodeAtEnd(stalled), CloseCode.slow);
      stalled.close();
      await until(() => setup.pusher.connectionCount === 1, 5000, "the stalled client to be forgotten");
      const metrics = await (await fetch(`http://127.0.0.1:${setup.port}/metrics`)).text();
      assert.match(metrics, /^pusher_disconnects_total\{reason="slow"\} 1$/m);
    } finally {
      try {
        stalled.close();
      } catch { /* closed above */ }
    }
  });

  Deno.test(`${on} closes a client that sends messages faster than its rate with 1008`, async () => {
    await using setup = serve({ maxMessageRate: 5 }, {}, kind);
    await using client = new Client(setup.port);
    await client.address();
    for (let i = 1; i <= 20; i++) client.ws.send(`{"id":${i},"subscribe":{"channel":"c${i}"}}`);
    const closed = await within(client.closed, 5000, "the 1008 close");
    // Deno ends the connection when a message follows its close frame, and
    // this client is still sending: it may see the connection drop instead.
    if (kind === LISTEN) assert.deepEqual([closed.code, closed.reason], [1008, "message rate exceeded"]);
    const replies = client.messages.slice(1);
    assert.ok(replies.length >= 1 && replies.length <= 5, `the allowance of 5, got ${replies.length} replies`);
    const metrics = await (await fetch(`http://127.0.0.1:${setup.port}/metrics`)).text();
    assert.match(metrics, /^pusher_disconnects_total\{reason="policy"\} 1$/m);
  });

  Deno.test(`${on} counts a client's close as client_closed whatever its code, and tells the code it sent`, async () => {
    await using setup = serve({ connectionEvents: true }, {}, kind);
    const told: ConnectionEvent[] = [];
    await setup.bus.subscribe(CONNECTIONS_SUBJECT, (event) => void told.push(event as unknown as ConnectionEvent));
    // The codes of the server's own reasons (slow, bad_messages, expired, user_limit, protocol_error,
    // going_away), then a close frame without a code, then a connection lost without a close.
    const codes = [3008, 4400, 4401, 3504, 1002, 1001, null, "drop"] as const;
    for (const code of codes) {
      await using client = await RawSocket.open(setup.port);
      assert.ok(await client.next(), "the greeting");
      if (code === "drop") continue;
      await client.send(Op.close, code === null ? "" : closePayload(code, "bye"));
      assert.equal((await client.next())?.opcode, Op.close, "the server's answer to the close");
    }
    await until(() => told.length === 2 * codes.length, 5000, "a connect and a disconnect for each client");
    const disconnects = told.flatMap((event) => "disconnect" in event ? [event.disconnect] : [])
      .sort((a, b) => a.connection_id - b.connection_id);
    assert.deepEqual(
      disconnects.map(({ code, reason }) => [code, reason]),
      [
        ...[3008, 4400, 4401, 3504, 1002, 1001, 1005].map((code) => [code, "client_closed"]),
        [1006, "dropped"],
      ],
    );
    const metrics = await (await fetch(`http://127.0.0.1:${setup.port}/metrics`)).text();
    assert.deepEqual(metrics.match(/^pusher_disconnects_total.* [1-9]\d*$/gm)?.sort(), [
      'pusher_disconnects_total{reason="client_closed"} 7',
      'pusher_disconnects_total{reason="dropped"} 1',
    ]);
  });

  Deno.test(`${on} answers HEAD with the head of a GET, its content-length included, and a 304 with none (RFC 9110 8.6)`, async () => {
    await using setup = serve({}, {}, kind);
    for (const path of ["/client.js", "/", "/healthz"]) {
      const request = (method: string) => `${method} ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;
      const get = await httpExchange(setup.port, request("GET"));
      const head = await httpExchange(setup.port, request("HEAD"));
      assert.equal(get.status, 200, path);
      assert.equal(get.headers.get("content-length"), String(new TextEncoder().encode(get.body).length), path);
      assert.deepEqual([head.status, head.headers.get("content-length"), head.body], [
        200,
        get.headers.get("content-length"),
        "",
      ], path);
    }
    // A 304 has no content, and a content-length only if it is the 200's: none here.
    const etag = (await httpExchange(setup.port, "HEAD /client.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
      .headers.get("etag");
    const cached = await httpExchange(
      setup.port,
      `GET /client.js HTTP/1.1\r\nHost: x\r\nIf-None-Match: ${etag}\r\nConnection: close\r\n\r\n`,
    );
    assert.deepEqual([cached.status, cached.headers.get("content-length"), cached.body], [304, null, ""]);
  });

  Deno.test(`${on} answers a handshake of another WebSocket version 426 with the Upgrade it needs (RFC 9110 15.5.22)`, async () => {
    await using setup = serve({}, {}, kind);
    const answer = await refusedHandshake(setup.port, "/", { "Sec-WebSocket-Version": "8" });
    assert.equal(answer.status, 426);
    assert.equal(answer.headers.get("sec-websocket-version"), "13");
    assert.equal(answer.headers.get("upgrade"), "websocket");
    assert.match(answer.headers.get("connection") ?? "", /^upgrade\b/i);
  });

  Deno.test(`${on} message rate runs on a monotonic clock: a step back of the wall clock closes nobody`, async () => {
    await using setup = serve({ maxMessageRate: 20 }, {}, kind);
    await using client = new Client(setup.port);
    await client.address();
    const realNow = Date.now;
    try {
      Date.now = () => realNow() - 3_600_000; // NTP steps the clock back an hour
      client.ws.send('{"id":1,"subscribe":{"channel":"news"}}');
      client.ws.send('{"id":2,"unsubscribe":{"channel":"news"}}');
      assert.deepEqual((await client.received(3)).slice(1), ['{"id":1,"result":{}}', '{"id":2,"result":{}}']);
    } finally {
      Date.now = realNow;
    }
  });

  Deno.test(`${on} closes a client whose message is over the limit with 1009`, async () => {
    await using setup = serve({}, { maxMessageBytes: 1024 }, kind);
    await using client = new Client(setup.port);
    await client.address();
    client.ws.send("€".repeat(342)); // 1026 bytes in UTF-8, 342 characters
    const closed = await within(client.closed, 5000, "the 1009 close");
    assert.equal(closed.code, 1009);
  });

  Deno.test(`${on} refuses a handshake past maxConnections with 503, counted in /metrics`, async () => {
    await using setup = serve({}, { maxConnections: 1 }, kind);
    await using client = new Client(setup.port);
    await client.address();
    const full = await refusedHandshake(setup.port, "/");
    assert.deepEqual([full.status, full.body], [503, "Too many connections: 1\n"]);
    const metrics = await (await fetch(`http://127.0.0.1:${setup.port}/metrics`)).text();
    assert.match(metrics, /^pusher_rejected_total\{reason="too_many_connections"\} 1$/m);
    assert.match(metrics, /^pusher_connections 1$/m);
  });

  Deno.test(`${on} serves /healthz, the demo page and /metrics beside its WebSockets`, async () => {
    await using setup = serve({ allowedOrigins: ["https://good.example"] }, {}, kind);
    await using client = new Client(setup.port);
    await client.address();
    assert.equal((await refusedHandshake(setup.port, "/", { Origin: "https://evil.example" })).status, 403);
    const health = await fetch(`http://127.0.0.1:${setup.port}/healthz`);
    assert.deepEqual([health.status, await health.text()], [200, "ok\n"]);
    const page = await fetch(`http://127.0.0.1:${setup.port}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<html/i);
    const metrics = await (await fetch(`http://127.0.0.1:${setup.port}/metrics`)).text();
    assert.match(metrics, /^pusher_connections 1$/m);
    assert.match(metrics, /^pusher_connections_total 1$/m);
    assert.match(metrics, /^pusher_rejected_total\{reason="origin"\} 1$/m);
  });

  Deno.test(`${on} closes a client that goes silent`, async () => {
    // Ours pings each interval and closes a socket that did not answer the
    // last; Deno pings after half its idle timeout of silence.
    await using setup = serve({}, { pingInterval: 500, idleTimeout: 1000 }, kind);
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

  Deno.test(`${on} a connection the backend disconnects is gone from presence at once, though it never answers the close`, async () => {
    await using setup = serve({}, {}, kind);
    await using client = await RawSocket.open(setup.port);
    const greeting = new TextDecoder().decode((await client.next())!.payload);
    const connection = Number(/connectionID:(\d+)/.exec(greeting)![1]);
    await client.send(Op.text, '{"id":1,"subscribe":{"channel":"news"}}');
    assert.equal(new TextDecoder().decode((await client.next())!.payload), '{"id":1,"result":{}}');
    const presence = async () => {
      const route = presenceQuery({ q: "channel", channel: "news" });
      return ((await setup.bus.request(route.subject, route.data)).replies[0] as { clients: number }).clients;
    };
    assert.equal(await presence(), 1);
    const command = { cmd: "disconnect", code: 4001, reason: "kicked", to_connection_id: connection };
    assert.deepEqual((await setup.bus.request(workerSubject(setup.pusher.workerId), command)).replies, [{ ok: true }]);
    // The client has the close frame and has not answered it: the server is still waiting for its answer.
    assert.deepEqual((await client.next())!.payload, closePayload(4001, "kicked"));
    assert.equal(await presence(), 0);
    assert.equal(setup.pusher.connectionCount, 0);
  });

  Deno.test(`${on} a client subscribes, gets a channel publication as one text frame, and is closed with 4400 after bad messages`, async () => {
    await using setup = serve({ maxBadMessages: 2 }, {}, kind);
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
}

Deno.test("pusher on listen: refuses loudly a handshake that came from elsewhere (a Deno.serve Request)", async () => {
  await using setup = serve();
  const req = new Request("http://127.0.0.1/", { headers: { upgrade: "websocket", connection: "Upgrade" } });
  await assert.rejects(async () => await setup.pusher.handler(req), TypeError);
  const page = await setup.pusher.handler(new Request("http://127.0.0.1/"));
  assert.equal(page.status, 200, "a plain request from elsewhere is still served");
});

Deno.test("pusher on deno: refuses loudly a handshake that is not a fetch Request (one from pusher/server.ts)", async () => {
  await using setup = serve({}, {}, DENO);
  const headers = new Headers({ upgrade: "websocket", connection: "Upgrade" });
  const req = { method: "GET", url: "http://127.0.0.1/", headers };
  await assert.rejects(async () => await setup.pusher.handler(req), TypeError);
  const page = await setup.pusher.handler({ ...req, headers: new Headers() });
  assert.equal(page.status, 200, "a plain request from elsewhere is still served");
});

// Our own server alone from here: its request heads (Host, absolute-form
// targets, h2c) and control frames. Deno.serve parses heads itself and does
// not show the pusher pings or pongs.

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

Deno.test("pusher on listen: answers 400 to a Host header that is not host[:port]: it chooses neither the path nor the token", async () => {
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

Deno.test("pusher on listen: counts pings and pongs toward the message rate: a ping flood is closed with 1008", async () => {
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

Deno.test("pusher on listen: a client closed over its message rate that keeps sending gets the close frame and the end of the stream, and is counted once", async () => {
  await using setup = serve({ maxMessageRate: 5 }, { closeTimeout: 60_000 });
  await using flood = await RawSocket.open(setup.port);
  assert.ok(await flood.next(), "the greeting");
  const commands = (from: number) =>
    concat(Array.from({ length: 50 }, (_, i) => clientFrame(Op.text, `{"id":${from + i},"ping":{}}`)));
  await flood.write(commands(1));
  // It keeps sending after the close, a batch per turn of the event loop
  // (in this process, a write that never blocks would starve the reads),
  // until the pusher ends its side of the connection.
  const sending = (async () => {
    try {
      for (let from = 51; !flood.ended; from += 50) {
        await flood.write(commands(from));
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    } catch { /* the connection was closed */ }
  })();
  const { close, before } = await flood.readUntilClose();
  assert.deepEqual(close, { code: 1008, reason: "message rate exceeded" });
  assert.ok(before.length <= 5, `at most the allowance of 5 answers, got ${before.length}`);
  // The pusher's end of the stream follows its close frame while the client still sends.
  assert.deepEqual(await flood.readToEnd(5000), [], "frames after the close");
  await within(sending, 5000, "the client to stop sending");
  // The close timeout is a minute: the end comes from the client's.
  await flood.conn.closeWrite();
  await until(() => setup.server.sockets === 0, 5000, "the server to let the socket go");
  const metrics = await (await fetch(`http://127.0.0.1:${setup.port}/metrics`)).text();
  assert.match(metrics, /^pusher_disconnects_total\{reason="policy"\} 1$/m);
  assert.doesNotMatch(metrics, /(client_closed|dropped)"\} [1-9]/);
});

Deno.test("pusher on listen: counts each fragment toward the message rate: a flood of continuation frames is closed with 1008", async () => {
  await using setup = serve({ maxMessageRate: 20 });
  await using flood = await RawSocket.open(setup.port);
  assert.ok(await flood.next(), "the greeting");
  // A message begun and never ended: nothing but fragments, each one a frame.
  const fragment = clientFrame(Op.continuation, "", { fin: false });
  await flood.write(concat([clientFrame(Op.text, "{", { fin: false }), ...Array(100).fill(fragment)]));
  const { close } = await flood.readUntilClose();
  assert.deepEqual(close, { code: 1008, reason: "message rate exceeded" });
});

Deno.test("pusher on listen: a command in fragments costs a frame each toward the message rate", async () => {
  await using setup = serve({ maxMessageRate: 5 });
  await using client = await RawSocket.open(setup.port);
  assert.ok(await client.next(), "the greeting");
  /** A command in five frames: its first, three continuations and its last. */
  const inFive = (text: string) =>
    [0, 4, 8, 12, 16].map((at, i) =>
      clientFrame(i === 0 ? Op.text : Op.continuation, text.slice(at, i === 4 ? undefined : at + 4), { fin: i === 4 })
    );
  // In one write, so that the allowance of 5 cannot refill between them: the first takes it all.
  await client.write(concat([...inFive('{"id":1,"ping":{}}'), ...inFive('{"id":2,"ping":{}}')]));
  const { close, before } = await client.readUntilClose();
  assert.deepEqual(before.map((frame) => new TextDecoder().decode(frame.payload)), ['{"id":1,"result":{}}']);
  assert.deepEqual(close, { code: 1008, reason: "message rate exceeded" });
});

Deno.test("pusher on listen: serves /healthz and takes a token from an absolute-form request target, as a server must (RFC 9112 3.2.2)", async () => {
  const secret = "pusher-secret";
  await using setup = serve({ tokenSecret: secret });
  const health = await httpExchange(setup.port, "GET http://127.0.0.1/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  assert.deepEqual([health.status, health.body], [200, "ok\n"]);
  const token = signJwt({ sub: "alice", exp: Math.floor(Date.now() / 1000) + 60 }, secret);
  await using socket = await RawSocket.connect(setup.port);
  await socket.write(handshakeRequest({}, `GET http://127.0.0.1/?token=${token} HTTP/1.1`));
  assert.equal((await socket.readHead()).status, 101);
});

Deno.test("pusher on listen: answers /healthz to a request that offers an h2c upgrade (curl --http2)", async () => {
  await using setup = serve();
  const health = await httpExchange(
    setup.port,
    h2cUpgradeRequest("/healthz"),
  );
  assert.deepEqual([health.status, health.body], [200, "ok\n"]);
});
