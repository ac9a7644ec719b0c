/**
 * The HTTP side of the WebSocket opening handshake (RFC 6455 4.2): whether a
 * request asks for a WebSocket, whether it asks correctly, and the `101`
 * that accepts it. The key's hash itself is protocol, in `pusher/websocket.ts`.
 *
 * @module
 */

import { isToken, type ServerRequest } from "./http_head.ts";
import { text } from "../shared/http.ts";
import { acceptKey, isValidKey } from "./websocket.ts";

/**
 * True when an `Upgrade` header value lists `websocket`, in any case. An
 * upgrade to anything else alone (h2c, from curl --http2) is not one.
 */
export function asksForWebSocket(upgrade: string | null): boolean {
  return upgrade !== null && /(^|,)\s*websocket\s*(,|$)/i.test(upgrade);
}

/**
 * Checks a WebSocket handshake. Returns its `Sec-WebSocket-Accept`, null when
 * the request is not a WebSocket upgrade, or an error response.
 *
 * @example
 * ```ts
 * import { checkHandshake } from "./handshake.ts";
 * import { parseHead } from "./http_head.ts";
 *
 * const head = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
 *   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13";
 * const parsed = parseHead(head, { transport: "tcp", hostname: "127.0.0.1", port: 4236 });
 * if (!(parsed instanceof Response)) {
 *   const accept = checkHandshake(parsed.req, parsed.http10); // "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
 * }
 * ```
 */
export function checkHandshake(req: ServerRequest, http10: boolean): string | null | Response {
  // An upgrade to anything else (h2c, from curl --http2) is ignored: the
  // request is answered as it is (RFC 9110 7.8).
  if (!asksForWebSocket(req.headers.get("upgrade"))) return null;
  if (req.method !== "GET") return text(405, "WebSocket handshakes must use GET\n", { allow: "GET" });
  // RFC 6455 4.1: HTTP/1.1 or higher; HTTP/1.0 has no Upgrade.
  if (http10) return text(400, "Bad handshake: WebSocket needs HTTP/1.1\n");
  if (!/(^|,)\s*upgrade\s*(,|$)/i.test(req.headers.get("connection") ?? "")) {
    return text(400, "Bad handshake: Connection must include Upgrade\n");
  }
  if (req.headers.get("sec-websocket-version") !== "13") {
    // A 426 names the protocol to upgrade to, and lists the upgrade option (RFC 9110 15.5.22 and 7.8).
    return text(426, "Unsupported WebSocket version: use 13\n", {
      "sec-websocket-version": "13",
      upgrade: "websocket",
      connection: "Upgrade",
    });
  }
  const key = req.headers.get("sec-websocket-key");
  if (key === null || !isValidKey(key)) {
    return text(400, "Bad handshake: missing or invalid Sec-WebSocket-Key\n");
  }
  // Refused rather than ignored: the client broke a MUST (RFC 6455 4.1), no
  // browser can send this (its WebSocket constructor throws), and a client
  // that asked for a protocol should hear why it did not get one.
  if (!requestedProtocols(req.headers.get("sec-websocket-protocol")).every(isToken)) {
    return text(400, "Bad handshake: Sec-WebSocket-Protocol must be a list of tokens\n");
  }
  return acceptKey(key);
}

/** The subprotocols a handshake asks for, in order; empty list elements do not count (RFC 9110 5.6.1). */
export function requestedProtocols(header: string | null): string[] {
  if (header === null) return [];
  return header.split(",").map((element) => element.trim()).filter((element) => element !== "");
}

const utf8 = new TextEncoder();

/**
 * The `101 Switching Protocols` head accepting the handshake `req`, whose
 * {@linkcode checkHandshake} gave `accept`, agreeing to the first
 * subprotocol asked for, if any.
 */
export function switchingProtocols(req: ServerRequest, accept: string): Uint8Array {
  const protocol = requestedProtocols(req.headers.get("sec-websocket-protocol"))[0];
  return utf8.encode(
    // Header names in lower case, like every other answer of every service.
    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n" +
      `sec-websocket-accept: ${accept}\r\n` + (protocol ? `sec-websocket-protocol: ${protocol}\r\n` : "") + "\r\n",
  );
}
