/**
 * The pusher's view of one WebSocket client, kept small so that a faster
 * WebSocket implementation can replace Deno's without touching the pusher.
 *
 * @module
 */

/** One connected WebSocket client. */
export interface ClientSocket {
  /** Sends a text message. Does nothing once the socket is closing. */
  send(text: string): void;
  /** Starts the closing handshake with a close code and a reason. */
  close(code: number, reason: string): void;
  /** Bytes accepted by `send` but not yet written to the network. */
  readonly bufferedAmount: number;
  /** The `Origin` header of the handshake, or null. */
  readonly origin: string | null;
}

/** What a transport tells its owner about one socket. */
export interface SocketHandlers {
  /** The handshake finished: the socket can send. */
  open(socket: ClientSocket): void;
  /** A message arrived from the client. */
  message(socket: ClientSocket, data: string | ArrayBuffer): void;
  /** The socket closed, for whatever reason. Called once, and only after `open`. */
  close(socket: ClientSocket, code: number, reason: string): void;
}

/** Options for {@linkcode upgradeWebSocket}. */
export interface UpgradeOptions {
  /**
   * Seconds between protocol pings; a client that does not answer one in that
   * time is closed as dead.
   *
   * @default {30}
   */
  idleTimeout?: number;
}

/**
 * Upgrades a request to a WebSocket on Deno's built-in implementation. A
 * requested subprotocol is echoed (the first one offered), so browsers that
 * ask for one can connect; the original rejected them.
 *
 * @throws {TypeError} when the request is not a valid WebSocket upgrade.
 */
export function upgradeWebSocket(req: Request, handlers: SocketHandlers, options: UpgradeOptions = {}): Response {
  const protocol = req.headers.get("sec-websocket-protocol")?.split(",")[0]?.trim() || undefined;
  // Read before upgrading: the request is consumed by the upgrade.
  const origin = req.headers.get("origin");
  const { socket, response } = Deno.upgradeWebSocket(req, { protocol, idleTimeout: options.idleTimeout ?? 30 });
  const client: ClientSocket = {
    send(text) {
      if (socket.readyState === WebSocket.OPEN) socket.send(text);
    },
    close(code, reason) {
      if (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING) {
        socket.close(code, reason);
      }
    },
    get bufferedAmount() {
      return socket.bufferedAmount;
    },
    origin,
  };
  let opened = false;
  socket.onopen = () => {
    opened = true;
    handlers.open(client);
  };
  socket.onmessage = (event) => handlers.message(client, event.data);
  socket.onclose = (event) => {
    if (opened) handlers.close(client, event.code, event.reason);
  };
  // Errors are followed by a close event; nothing else to do.
  socket.onerror = () => {};
  return response;
}
