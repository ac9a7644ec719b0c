/**
 * The pusher's transport seam: what speaks to sockets is handed to the
 * pusher, not imported by it (nats.js `transport.ts`, centrifuge
 * `transport.go`). The default is our RFC 6455 server on `Deno.listen`
 * (`listenTransport` in `pusher/server.ts`); `--server deno` hands in
 * `denoTransport` (`pusher/deno_transport.ts`), and the tests a fake one.
 *
 * @module
 */

import type { SocketHandlers } from "./socket.ts";

/**
 * What the pusher reads of an HTTP request: its method, absolute URL and
 * headers. A fetch `Request` fits, and so does the lighter request of
 * `pusher/server.ts`.
 */
export interface TransportRequest {
  /** `GET`, `HEAD`, ... */
  readonly method: string;
  /** The absolute URL. */
  readonly url: string;
  /** Header values by case-insensitive name. */
  readonly headers: { get(name: string): string | null };
}

/**
 * A text message encoded once, to be sent to many sockets of the transport
 * that prepared it. Opaque to the pusher.
 */
export interface PreparedMessage {
  /** The message. */
  readonly text: string;
}

/** Something that turns HTTP requests into WebSocket connections. */
export interface Transport {
  /**
   * Whether `req` is a WebSocket handshake this transport can accept with
   * {@linkcode Transport.upgrade}. Ask this rather than look for an
   * `Upgrade` header: the transport has checked the whole handshake.
   *
   * @throws {TypeError} when `req` asks for a WebSocket but did not come
   * through this transport: serving it a page instead would hide the mistake.
   */
  isUpgrade(req: TransportRequest): boolean;
  /**
   * Accepts the WebSocket handshake `req`; return the response it gives from
   * the handler. `handlers` hear of the socket from its `open` on.
   *
   * @throws {TypeError} when {@linkcode Transport.isUpgrade} is false for `req`.
   */
  upgrade(req: TransportRequest, handlers: SocketHandlers): Response;
  /** Encodes `text` once for every socket it is sent to. */
  prepare(text: string): PreparedMessage;
}
