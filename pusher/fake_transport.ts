/**
 * A {@linkcode Transport} without sockets, for tests: a handshake is a fetch
 * `Request` with `Upgrade: websocket`, and each accepted one becomes a
 * {@linkcode FakeSocket} that records what it was sent and lets the test
 * play the client.
 *
 * @module
 */

import type { ClientSocket, SocketHandlers } from "./socket.ts";
import type { PreparedMessage, Transport, TransportRequest } from "./transport.ts";

/** What {@linkcode FakeTransport.upgrade} returns: the test asks the transport which socket it made. */
const UPGRADED = new Response(null, { status: 200, statusText: "Switching Protocols (fake)" });

/** One client of a {@linkcode FakeTransport}. */
export class FakeSocket implements ClientSocket {
  /** Every text message sent to it, in order. */
  readonly sent: string[] = [];
  /** The close code and reason, once closed. */
  closed: { code: number; reason: string } | null = null;
  readonly origin: string | null;
  /** Not written anywhere: nothing is ever buffered. */
  readonly bufferedAmount = 0;
  readonly #handlers: SocketHandlers;
  /** The client closed it or went away: the close is not the server's. */
  #notByServer = false;

  constructor(handlers: SocketHandlers, origin: string | null) {
    this.#handlers = handlers;
    this.origin = origin;
  }

  send(message: string | PreparedMessage): void {
    if (this.closed) return;
    this.sent.push(typeof message === "string" ? message : message.text);
  }

  /** Closes it as a server does: no more sends, and the owner hears of it, closing (unless not by the server) and then closed. */
  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = { code, reason };
    if (!this.#notByServer) this.#handlers.closing?.(this, code, reason);
    this.#handlers.close(this, code, reason);
  }

  /** The client sends a text message. */
  receive(text: string): void {
    if (!this.closed) this.#handlers.message(this, text);
  }

  /** The client sends a ping (or a pong). */
  ping(): void {
    if (!this.closed) this.#handlers.frame?.(this);
  }

  /** The client closes it with `code` (1005 for a close frame without one): the owner hears only that it closed. */
  closeByClient(code: number, reason = ""): void {
    this.#notByServer = true;
    this.close(code, reason);
  }

  /** The client's network goes away: closed with 1006. */
  drop(): void {
    this.#notByServer = true;
    this.close(1006, "");
  }

  /** @internal */
  open(): void {
    this.#handlers.open(this);
  }
}

/** A transport whose sockets are {@linkcode FakeSocket}s. */
export class FakeTransport implements Transport {
  /** Every socket it made, in order. */
  readonly sockets: FakeSocket[] = [];
  /** Sockets whose upgrade was returned but not yet opened. */
  readonly #pending = new Map<TransportRequest, FakeSocket>();

  isUpgrade(req: TransportRequest): boolean {
    return req.headers.get("upgrade")?.toLowerCase() === "websocket";
  }

  upgrade(req: TransportRequest, handlers: SocketHandlers): Response {
    if (!this.isUpgrade(req)) throw new TypeError("Cannot upgrade: not a WebSocket handshake");
    this.#pending.set(req, new FakeSocket(handlers, req.headers.get("origin")));
    return UPGRADED;
  }

  prepare(text: string): PreparedMessage {
    return { text };
  }

  /**
   * Sends a handshake for `path` through `handler`, as a browser would.
   * Accepted: the socket, opened (the greeting is in `sent`). Refused: the
   * handler's response.
   */
  async connect(
    handler: (req: TransportRequest) => Response | Promise<Response>,
    path = "/",
    headers: Record<string, string> = {},
  ): Promise<FakeSocket | Response> {
    const req = new Request(`http://pusher.test${path}`, { headers: { upgrade: "websocket", ...headers } });
    const response = await handler(req);
    const socket = this.#pending.get(req);
    this.#pending.delete(req);
    if (response !== UPGRADED || !socket) return response;
    this.sockets.push(socket);
    socket.open();
    return socket;
  }
}
