/**
 * The pusher's view of one WebSocket client, kept small so that the
 * transport under it (`pusher/transport.ts`) can change without touching
 * the pusher.
 *
 * @module
 */

import type { PreparedMessage } from "./transport.ts";

/** One connected WebSocket client. */
export interface ClientSocket {
  /**
   * Sends a text message. A {@linkcode PreparedMessage} from the socket's own
   * transport was encoded once and is shared by every socket it is sent to.
   * Does nothing once closing.
   */
  send(message: string | PreparedMessage): void;
  /** Starts the closing handshake, after what was sent before. */
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
  message(socket: ClientSocket, data: string | Uint8Array): void;
  /**
   * A frame arrived that is not a whole message: a ping, a pong, or a
   * fragment of a message before its last. The transport answers pings and
   * gathers fragments itself; this lets the owner count them, since a flood
   * of them costs as much as one of messages.
   */
  frame?(socket: ClientSocket): void;
  /**
   * The server started closing the socket (the owner's `close`, a limit, a
   * slow client, shutdown): nothing more is sent to it, though its closing
   * handshake may take up to the close timeout. At most once, after `open`
   * and before `close`; not when the client started the close.
   */
  closing?(socket: ClientSocket, code: number, reason: string): void;
  /**
   * The socket closed, for whatever reason; called once, after `open`.
   * After `closing`, `code` is the server's; without it, the server did not
   * start the close, and `code` is the client's own (1005 when its close
   * frame had none), or 1006 when the connection ended without a closing
   * handshake.
   */
  close(socket: ClientSocket, code: number, reason: string): void;
}
