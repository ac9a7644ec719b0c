/**
 * Tests of the request head (`pusher/http_head.ts`): `parseHead` and
 * `readHead` alone, then through a real server, as a client sends them.
 * Every head the server refuses is also in `server_test.ts`, which checks
 * the refusal's answer, log line and count.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { isHost, isToken, parseHead, readHead } from "./http_head.ts";
import {
  handshakeHeaders,
  handshakeRequest,
  httpExchange,
  parseServerFrame,
  RawSocket,
  SAMPLE_KEY,
  startEcho,
} from "./ws_testing.ts";
import { until, within } from "../channel/testing.ts";
import { concat } from "../shared/bytes.ts";

const LOCAL: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 4236 };

/** `parseHead` of `head` as it arrives, its final blank line included: the parser gets it without. */
function parse(head: string, local: Deno.NetAddr = LOCAL): ReturnType<typeof parseHead> {
  assert.ok(head.endsWith("\r\n\r\n"), "a complete head");
  return parseHead(head.slice(0, -4), local);
}

/** The request of a head that parses; fails the test with the refusal otherwise. */
function parsed(head: string, local: Deno.NetAddr = LOCAL): Exclude<ReturnType<typeof parseHead>, Response> {
  const result = parse(head, local);
  assert.ok(!(result instanceof Response), `refused with ${result instanceof Response ? result.status : ""}`);
  return result;
}

// ---------------------------------------------------------------------------
// parseHead

Deno.test("parseHead takes the method, and the URL from the Host header and the origin-form target", () => {
  const { req, http10 } = parsed("POST /a/b?c=1&d HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
  assert.equal(req.method, "POST");
  assert.equal(req.url, "http://example.com:8080/a/b?c=1&d");
  assert.equal(http10, false);
});

Deno.test("parseHead takes the host of an absolute-form target over the Host header's (RFC 9112 3.2.2)", () => {
  const cases: [string, string][] = [
    ["http://127.0.0.1:4236/", "http://127.0.0.1:4236/"],
    ["HTTP://example.com", "http://example.com/"],
    ["http://example.com?x=1", "http://example.com/?x=1"],
    ["https://[::1]:1/p?q", "http://[::1]:1/p?q"],
  ];
  for (const [target, url] of cases) {
    assert.equal(parsed(`GET ${target} HTTP/1.1\r\nHost: other.example\r\n\r\n`).req.url, url, target);
  }
});

Deno.test("parseHead takes the listening address for an HTTP/1.0 request without Host, an IPv6 one in brackets", () => {
  const v4 = parsed("GET /x HTTP/1.0\r\n\r\n");
  assert.equal(v4.req.url, "http://127.0.0.1:4236/x");
  assert.equal(v4.http10, true);
  const v6 = parsed("GET /x HTTP/1.0\r\n\r\n", { transport: "tcp", hostname: "::1", port: 80 });
  assert.equal(v6.req.url, "http://[::1]:80/x");
});

Deno.test("parseHead reads header names in any case and joins a repeated field with a comma, as Headers does", () => {
  const { req } = parsed(
    "GET / HTTP/1.1\r\nHost: x\r\nX-List: a\r\nx-list: b ,c\r\nX-Empty:\r\nX-Spaced:   v  \r\n\r\n",
  );
  assert.equal(req.headers.get("x-list"), "a, b ,c");
  assert.equal(req.headers.get("X-LIST"), "a, b ,c");
  assert.equal(req.headers.get("x-empty"), "");
  assert.equal(req.headers.get("x-spaced"), "v");
  // Only spaces and tabs are whitespace around a value (RFC 9110 5.6.3).
  const { req: other } = parsed("GET / HTTP/1.1\r\nHost: x\r\nX-Tabbed:\t v\t\r\nX-Nbsp: \u00a0v\u00a0\r\n\r\n");
  assert.equal(other.headers.get("x-tabbed"), "v");
  assert.equal(other.headers.get("x-nbsp"), "\u00a0v\u00a0");
  assert.equal(req.headers.get("x-missing"), null);
});

Deno.test("parseHead answers 400 with its reason to each head it cannot take", async () => {
  const cases: [string, string][] = [
    ["GARBAGE\r\n\r\n", "Bad request line"],
    ["get / HTTP/1.1\r\nHost: x\r\n\r\n", "Bad request line"],
    [handshakeRequest({}, "GET / HTTP/2.0"), "Bad request line"],
    [handshakeRequest({}, "GET  / HTTP/1.1"), "Bad request line"],
    [handshakeRequest({}, "GET chat HTTP/1.1"), "Bad request target"],
    ...["http://user@a/", "http:///x", "ftp://a/", "http:/a/", "http://a#b/", "http://a/#b"].map((
      target,
    ): [string, string] => [handshakeRequest({}, `GET ${target} HTTP/1.1`), "Bad request target"]),
    ["GET / HTTP/1.1\r\nHost: x\r\nNo-Colon-Here\r\n\r\n", "Bad header line"],
    ["GET / HTTP/1.1\r\nHost: x\r\n: no name\r\n\r\n", "Bad header line"],
    [handshakeRequest({ "Origin ": "x" }), "Bad header line"],
    [handshakeRequest({ "Bad/Name": "x" }), "Bad header line"],
    [handshakeRequest().replace("\r\n\r\n", "\r\n X-Folded: y\r\n\r\n"), "Bad header line"],
    [handshakeRequest({ "X-Note": "a\0b" }), "Bad header value"],
    // String.trim() would have taken these for whitespace, and the value for "v".
    ...["\vv", "v\f", "\x7fv", "\x1bv"].map((value): [string, string] => [
      handshakeRequest({ "X-Note": value }),
      "Bad header value",
    ]),
    [handshakeRequest({ Host: null }), "Missing Host header"],
    [handshakeRequest({ Host: "exa mple" }), "Bad Host header"],
    [handshakeRequest({ Host: "" }, "GET /x HTTP/1.1"), "Bad Host header"],
    ...["a/b", "a?b", "a#b", "user@a", "a:b", "a\\b", "[::1", "a:99999", "a%zz", "a, b"].map((
      host,
    ): [string, string] => [handshakeRequest({ Host: host }), "Bad Host header"]),
  ];
  for (const [head, reason] of cases) {
    const result = parse(head);
    assert.ok(result instanceof Response, `${JSON.stringify(head)} was taken`);
    assert.equal(result.status, 400, head);
    assert.equal(await result.text(), `${reason}\n`, head);
  }
});

Deno.test("isHost takes host[:port] and nothing else; isToken takes RFC 9110 tokens", () => {
  for (const host of ["example.com", "EXAMPLE.com:80", "127.0.0.1:4236", "[::1]", "[::1]:4236", "a%41b", "x:"]) {
    assert.equal(isHost(host), true, host);
  }
  for (const host of ["", "a/b", "a?b", "a#b", "user@a", "a b", "[::1", "[::g]", "a:99999", "a:b"]) {
    assert.equal(isHost(host), false, host);
  }
  for (const token of ["chat", "x-y.z", "!#$%&'*+.^_`|~09"]) assert.equal(isToken(token), true, token);
  for (const token of ["", "a b", "a/b", '"a"', "a;b", "é", "a,b"]) assert.equal(isToken(token), false, token);
});

// ---------------------------------------------------------------------------
// readHead, on a real connection

/** A connected pair on loopback: the server's end, and the client's. */
async function connectedPair(): Promise<{ server: Deno.TcpConn; client: Deno.TcpConn } & Disposable> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [server, client] = await Promise.all([
    listener.accept(),
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
  ]);
  return {
    server,
    client,
    [Symbol.dispose]() {
      for (const conn of [server, client]) {
        try {
          conn.close();
        } catch { /* closed */ }
      }
    },
  };
}

Deno.test("readHead reads a head sent a byte at a time", async () => {
  using pair = await connectedPair();
  pair.client.setNoDelay(true);
  const reading = readHead(pair.server, 8192);
  for (const byte of new TextEncoder().encode(handshakeRequest())) await pair.client.write(Uint8Array.of(byte));
  const head = await within(reading, 5000, "the head");
  assert.ok(head && !("error" in head), "a request");
  assert.equal(head.req.url, "http://127.0.0.1/");
  assert.equal(head.req.headers.get("upgrade"), "websocket");
  assert.equal(head.rest, null);
});

Deno.test("readHead gives a target's raw UTF-8 bytes as their percent-encoding, not each byte's UTF-8", async () => {
  using pair = await connectedPair();
  await pair.client.write(new TextEncoder().encode(handshakeRequest({}, "GET /?token=€日本éà你 HTTP/1.1")));
  const head = await within(readHead(pair.server, 8192), 5000, "the head");
  assert.ok(head && !("error" in head), "a request");
  assert.equal(new URL(head.req.url).searchParams.get("token"), "€日本éà你");
});

Deno.test("readHead keeps the bytes read after the head: the client's first frames", async () => {
  using pair = await connectedPair();
  await pair.client.write(new TextEncoder().encode(`${handshakeRequest()}after`));
  const head = await within(readHead(pair.server, 8192), 5000, "the head");
  assert.ok(head && !("error" in head), "a request");
  assert.deepEqual(head.rest, new TextEncoder().encode("after"));
});

Deno.test("readHead answers 431 to a head over its limit, complete or not, and null to a connection that ends first", async () => {
  for (
    const request of [handshakeRequest({ "X-Padding": "p".repeat(1500) }), `GET / HTTP/1.1\r\nX: ${"p".repeat(1500)}`]
  ) {
    using pair = await connectedPair();
    await pair.client.write(new TextEncoder().encode(request));
    const head = await within(readHead(pair.server, 1024), 5000, "the head");
    assert.ok(head && "error" in head, "an error");
    assert.equal(head.error.status, 431);
    assert.equal(await head.error.text(), "Request head too large\n");
  }
  using pair = await connectedPair();
  await pair.client.write(new TextEncoder().encode("GET / HTTP/1.1\r\n"));
  pair.client.closeWrite();
  assert.equal(await within(readHead(pair.server, 1024), 5000, "the head"), null);
});

// ---------------------------------------------------------------------------
// Through a real server

Deno.test("server answers an HTTP/1.0 request without Host, which that version did not require", async () => {
  await using echo = startEcho();
  const page = await httpExchange(echo.port, "GET / HTTP/1.0\r\n\r\n");
  assert.equal(page.status, 200);
  assert.equal(page.headers.get("content-type"), "text/html;charset=utf-8");
});

Deno.test("server accepts a Host that is a name, an IPv4 address or an IPv6 literal, with or without a port", async () => {
  await using echo = startEcho();
  for (
    const host of ["example.com", "EXAMPLE.com:80", "127.0.0.1:4236", "[::1]", "[::1]:4236", "xn--bcher-kva.example:"]
  ) {
    await using socket = await RawSocket.connect(echo.port);
    await socket.write(handshakeRequest({ Host: host }));
    assert.equal((await socket.readHead()).status, 101, host);
  }
});

Deno.test("server accepts an absolute-form request target and takes the path, query and host from it", async () => {
  await using echo = startEcho();
  // RFC 9112 3.2.2: a server MUST accept the absolute form, and use its host instead of the Host header's.
  for (
    const target of [
      `http://127.0.0.1:${echo.port}/`,
      "HTTP://example.com",
      "http://example.com?x=1",
      "https://[::1]:1/",
    ]
  ) {
    const page = await httpExchange(echo.port, `GET ${target} HTTP/1.1\r\nHost: other.example\r\n\r\n`);
    assert.equal(page.status, 200, target);
    assert.equal(page.headers.get("content-type"), "text/html;charset=utf-8");
  }
  const missing = await httpExchange(echo.port, "GET http://127.0.0.1/nope?x=/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
  assert.equal(missing.status, 404);
  await using socket = await RawSocket.connect(echo.port);
  await socket.write(handshakeRequest({}, "GET http://127.0.0.1/ HTTP/1.1"));
  assert.equal((await socket.readHead()).status, 101);
});

Deno.test("server reads a header sent on several lines, in any case, as one list", async () => {
  await using echo = startEcho();
  await using socket = await RawSocket.connect(echo.port);
  await socket.write(
    handshakeRequest({ Connection: "keep-alive" }).replace(
      "\r\n\r\n",
      "\r\nconnection: Upgrade\r\nsec-websocket-protocol: chat\r\nSEC-WEBSOCKET-PROTOCOL: superchat\r\n\r\n",
    ),
  );
  const head = await socket.readHead();
  assert.equal(head.status, 101);
  assert.equal(head.headers.get("sec-websocket-protocol"), "chat");
  assert.deepEqual(echo.opens.map((open) => open.protocols), ["chat, superchat"]);
});

Deno.test("server accepts a request head of exactly maxHeadBytes", async () => {
  await using echo = startEcho({ maxHeadBytes: 1024 });
  const base = handshakeRequest({ "X-Padding": "" });
  const request = handshakeRequest({ "X-Padding": "p".repeat(1024 - base.length) });
  assert.equal(request.length, 1024);
  await using socket = await RawSocket.connect(echo.port);
  await socket.write(request);
  assert.equal((await socket.readHead()).status, 101);
});

// ---------------------------------------------------------------------------
// Fuzz

/** What a handshake's fields may be: each one kept, dropped, or given another value. */
const fieldValue = fc.oneof(
  { weight: 6, arbitrary: fc.constant(undefined) },
  fc.constant(null),
  fc.constantFrom("", "websocket", "Upgrade", "keep-alive, Upgrade", "13", "8", SAMPLE_KEY, "AAAA", "a b", "h2c"),
  fc.string({ maxLength: 30 }),
);
const fuzzHead = fc.record({
  line: fc.oneof(
    { weight: 6, arbitrary: fc.constant("GET / HTTP/1.1") },
    fc.constantFrom("POST / HTTP/1.1", "GET /client.js HTTP/1.1", "GET /?token=x HTTP/1.1", "GET / HTTP/1.0"),
    fc.constantFrom("GET / HTTP/2.0", "GET  / HTTP/1.1", "GET", "GET http://a/ HTTP/1.1", "OPTIONS * HTTP/1.1"),
    fc.string({ maxLength: 30 }),
  ),
  host: fieldValue,
  upgrade: fieldValue,
  connection: fieldValue,
  key: fieldValue,
  version: fieldValue,
  extra: fc.array(fc.tuple(fc.string({ maxLength: 10 }), fc.string({ maxLength: 20 })), { maxLength: 3 }),
  eol: fc.oneof({ weight: 8, arbitrary: fc.constant("\r\n") }, fc.constant("\n")),
  at: fc.nat(),
  byte: fc.nat({ max: 255 }),
}).map(({ line, host, upgrade, connection, key, version, extra, eol, at, byte }) => {
  const fields = handshakeHeaders({
    Host: host === undefined ? "127.0.0.1" : host,
    Upgrade: upgrade === undefined ? "websocket" : upgrade,
    Connection: connection === undefined ? "Upgrade" : connection,
    "Sec-WebSocket-Key": key === undefined ? SAMPLE_KEY : key,
    "Sec-WebSocket-Version": version === undefined ? "13" : version,
  });
  const head = [line, ...[...fields, ...extra].map(([name, value]) => `${name}: ${value}`)].join(eol) + eol + eol;
  const bytes = new TextEncoder().encode(head);
  // One byte in three heads changed.
  if (at % 3 === 0) bytes[at % bytes.length] = byte;
  return bytes;
});

/** The statuses the echo server answers a head with: its page, a switch, a 404, or a refusal. */
const HEAD_STATUSES = new Set([101, 200, 400, 404, 405, 426, 431]);

Deno.test("fuzz: handshakes with fields dropped, changed or added, and bytes changed, get one answer each, and never break the server", async () => {
  await using echo = startEcho();
  const seen = new Set<number>();
  await fc.assert(
    fc.asyncProperty(fuzzHead, async (bytes) => {
      await using socket = await RawSocket.connect(echo.port);
      try {
        await socket.write(bytes);
        await socket.conn.closeWrite();
      } catch {
        // The server may have answered and closed already.
      }
      // A head ends at its first blank line; without one, the client's end of input ends it unanswered.
      const complete = new TextDecoder("latin1").decode(bytes).includes("\r\n\r\n");
      if (!complete) {
        const read = await within(socket.conn.read(new Uint8Array(1)).catch(() => null), 5000, "the server to close");
        assert.equal(read, null, "closed, unanswered");
        return;
      }
      const head = await socket.readHead();
      assert.ok(HEAD_STATUSES.has(head.status), head.head);
      seen.add(head.status);
      const rest: Uint8Array[] = [socket.takeBuffered()];
      await within(
        (async () => {
          const chunk = new Uint8Array(4096);
          for (let n; (n = await socket.conn.read(chunk).catch(() => null)) !== null;) rest.push(chunk.slice(0, n));
        })(),
        5000,
        "the server to close",
      );
      const after = concat(rest);
      if (head.status === 101) {
        // Whatever follows is whole WebSocket frames: the close the client's end of input brings.
        for (let offset = 0; offset < after.length;) {
          const parsed = parseServerFrame(after.subarray(offset));
          assert.ok(parsed, "whole frames after the switch");
          offset += parsed.size;
        }
        return;
      }
      // Closed after any answer but a switch; a 426 lists its Upgrade option first.
      assert.equal(head.headers.get("connection"), head.status === 426 ? "Upgrade, close" : "close");
      assert.equal(after.length, Number(head.headers.get("content-length")), "one answer, and nothing after it");
    }),
    { seed: 6455, numRuns: 300 },
  );
  assert.ok(seen.has(101) && seen.has(400) && seen.has(426), `switches and refusals both: ${[...seen]}`);
  await until(() => echo.server.sockets === 0, 5000, "every fuzzed socket to be closed");
  assert.equal(echo.finishedEarly, false, "the server still runs");
  // A valid handshake still gets its switch (RawSocket.open checks the 101 and its accept key).
  await using _client = await RawSocket.open(echo.port);
});
