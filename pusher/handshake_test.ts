/**
 * Tests of the WebSocket handshake's HTTP side (`pusher/handshake.ts`):
 * `checkHandshake` and the `101` alone, then through a real server. Every
 * handshake the server refuses is also in `server_test.ts`, which checks the
 * refusal's answer, log line and count.
 */

import assert from "node:assert/strict";
import { asksForWebSocket, checkHandshake, requestedProtocols, switchingProtocols } from "./handshake.ts";
import type { ServerRequest } from "./http_head.ts";
import {
  h2cUpgradeRequest,
  handshakeHeaders,
  handshakeRequest,
  httpExchange,
  RawSocket,
  startEcho,
} from "./ws_testing.ts";

/** A valid handshake request, with extra or replaced headers (a null value drops one). */
function handshake(headers: Record<string, string | null> = {}, method = "GET"): ServerRequest {
  const fields = new Headers(handshakeHeaders(headers));
  return { method, url: "http://127.0.0.1/", headers: fields };
}

// ---------------------------------------------------------------------------
// checkHandshake and the 101

Deno.test("checkHandshake gives RFC 6455's accept value for its example key, with Upgrade and Connection as lists in any case", () => {
  assert.equal(checkHandshake(handshake(), false), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  const listed = handshake({ Upgrade: "h2c, WebSocket", Connection: "keep-alive, upgrade" });
  assert.equal(checkHandshake(listed, false), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
});

Deno.test("checkHandshake takes a request that upgrades to another protocol, or none, as a plain one", () => {
  for (const upgrade of [null, "", "h2c", "websockets", "web socket"]) {
    assert.equal(checkHandshake(handshake({ Upgrade: upgrade }), false), null, String(upgrade));
  }
  assert.equal(asksForWebSocket("h2c, WebSocket"), true);
  assert.equal(asksForWebSocket(" websocket ,h2c"), true);
  assert.equal(asksForWebSocket("h2c"), false);
  assert.equal(asksForWebSocket(null), false);
});

Deno.test("checkHandshake answers each broken handshake with its status, reason and headers", async () => {
  const cases: { req: ServerRequest; http10?: boolean; status: number; body: string; headers?: [string, string] }[] = [
    { req: handshake({}, "POST"), status: 405, body: "WebSocket handshakes must use GET", headers: ["allow", "GET"] },
    { req: handshake(), http10: true, status: 400, body: "Bad handshake: WebSocket needs HTTP/1.1" },
    ...[null, "keep-alive", "upgrades"].map((connection) => ({
      req: handshake({ Connection: connection }),
      status: 400,
      body: "Bad handshake: Connection must include Upgrade",
    })),
    ...[null, "8", "13, 8"].map((version) => ({
      req: handshake({ "Sec-WebSocket-Version": version }),
      status: 426,
      body: "Unsupported WebSocket version: use 13",
      headers: ["sec-websocket-version", "13"] as [string, string],
    })),
    ...[null, "not a key", btoa("x".repeat(20)), "dGhlIHNhbXBsZSBub25jZ-=="].map((key) => ({
      req: handshake({ "Sec-WebSocket-Key": key }),
      status: 400,
      body: "Bad handshake: missing or invalid Sec-WebSocket-Key",
    })),
    ...["bad token/é", "chat, a/b", '"chat"', "chat, sûr", "a;b"].map((protocols) => ({
      req: handshake({ "Sec-WebSocket-Protocol": protocols }),
      status: 400,
      body: "Bad handshake: Sec-WebSocket-Protocol must be a list of tokens",
    })),
  ];
  for (const { req, http10, status, body, headers } of cases) {
    const what = `${req.method} ${JSON.stringify(Object.fromEntries(req.headers as Headers))}`;
    const answer = checkHandshake(req, http10 ?? false);
    assert.ok(answer instanceof Response, `${what} was accepted`);
    assert.equal(answer.status, status, what);
    assert.equal(await answer.text(), `${body}\n`, what);
    if (headers) assert.equal(answer.headers.get(headers[0]), headers[1], what);
  }
});

Deno.test("requestedProtocols lists the subprotocols asked for, in order, without empty elements", () => {
  assert.deepEqual(requestedProtocols(null), []);
  assert.deepEqual(requestedProtocols(""), []);
  assert.deepEqual(requestedProtocols(" ,, "), []);
  assert.deepEqual(requestedProtocols(" ,, chat ,superchat"), ["chat", "superchat"]);
});

Deno.test("switchingProtocols answers 101 with the accept value and the first subprotocol asked for, if any", () => {
  const text = (req: ServerRequest) => new TextDecoder().decode(switchingProtocols(req, "ACCEPT="));
  assert.equal(
    text(handshake()),
    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ACCEPT=\r\n\r\n",
  );
  assert.equal(
    text(handshake({ "Sec-WebSocket-Protocol": ", chat, superchat" })),
    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ACCEPT=\r\n" +
      "sec-websocket-protocol: chat\r\n\r\n",
  );
});

// ---------------------------------------------------------------------------
// Through a real server

Deno.test("server answers a handshake with 101, the RFC's accept value and the first subprotocol", async () => {
  await using echo = startEcho();
  await using socket = await RawSocket.connect(echo.port);
  await socket.write(handshakeRequest({ "Sec-WebSocket-Protocol": "chat, superchat" }));
  const head = await socket.readHead();
  assert.equal(head.status, 101);
  assert.equal(head.headers.get("upgrade")?.toLowerCase(), "websocket");
  assert.equal(head.headers.get("connection")?.toLowerCase(), "upgrade");
  assert.equal(head.headers.get("sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  assert.equal(head.headers.get("sec-websocket-protocol"), "chat");
  await using plain = await RawSocket.connect(echo.port);
  await plain.write(handshakeRequest());
  assert.equal((await plain.readHead()).headers.get("sec-websocket-protocol"), null);
});

Deno.test("server ignores an Upgrade to another protocol (h2c) and answers the request itself", async () => {
  await using echo = startEcho();
  // What curl --http2 sends to an http:// URL; RFC 9110 7.8 lets a server ignore an Upgrade it does not support.
  const h2c = await httpExchange(
    echo.port,
    h2cUpgradeRequest("/"),
  );
  assert.equal(h2c.status, 200, h2c.head);
  assert.equal(h2c.headers.get("content-type"), "text/html;charset=utf-8");
  // A handshake's other headers do not make it a WebSocket upgrade either.
  assert.equal((await httpExchange(echo.port, handshakeRequest({ Upgrade: "h2c" }))).status, 200);
  assert.equal(echo.opens.length, 0);
});

Deno.test("server skips empty elements of the Sec-WebSocket-Protocol list and echoes the first protocol", async () => {
  await using echo = startEcho();
  // RFC 9110 5.6.1: a recipient accepts empty list elements and does not count them.
  const cases: [string, string | null][] = [[", chat", "chat"], [" ,, chat ,superchat", "chat"], [",", null], [
    "",
    null,
  ]];
  for (const [requested, echoed] of cases) {
    await using socket = await RawSocket.connect(echo.port);
    await socket.write(handshakeRequest({ "Sec-WebSocket-Protocol": requested }));
    const head = await socket.readHead();
    assert.equal(head.status, 101, requested);
    assert.equal(head.headers.get("sec-websocket-protocol"), echoed, requested);
  }
});
