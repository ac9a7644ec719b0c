/**
 * One WebSocket connection of the pusher server, from its `101` to its
 * close: a coalescing {@linkcode FrameWriter} for what it sends (one write
 * in flight; frames queued meanwhile go out together), a
 * {@linkcode FrameParser} for what it reads, protocol pings, slow-client
 * checks and the closing handshake.
 *
 * @module
 */

import type { ClientSocket, SocketHandlers } from "./socket.ts";
import type { PreparedMessage } from "./transport.ts";
import type { ServerRequest } from "./http_head.ts";
import type { ReadSlots } from "./_read_slots.ts";
import { switchingProtocols } from "./handshake.ts";
import { closeConnection } from "./http_response.ts";
import {
  type ClientEvent,
  CloseCode,
  encodeClose,
  encodePing,
  encodePong,
  encodeText,
  FrameParser,
  PreparedText,
  ProtocolError,
} from "./websocket.ts";
import type { Logger } from "../shared/log.ts";
import { FrameWriter } from "../shared/writer.ts";

/** What a socket reads of the server's settings, resolved from `ServeOptions`. */
export interface SocketSettings {
  /** Largest message a client may send; larger closes with 1009. */
  readonly maxMessageBytes: number;
  /** Bytes that may wait to be written; past it the socket is closed with 3008. */
  readonly maxBufferedBytes: number;
  /** Milliseconds a write may stay blocked before the socket is closed with 3008. */
  readonly slowClientTimeout: number;
  /** Milliseconds to wait for the client's close frame after ours. */
  readonly closeTimeout: number;
  /** Least milliseconds between the starts of two writes (0: no pacing). */
  readonly writeInterval: number;
  /** Where log lines go. */
  readonly logger: Logger;
}

/** What a socket needs of its server. A reference, not closures, to keep idle sockets small. */
export interface SocketOwner {
  /** Where the socket takes its idle read buffer, and gives it back. */
  readonly readSlots: ReadSlots;
  /** Called once the socket has closed. */
  forget(socket: Socket): void;
}

/**
 * A busy socket's read buffer: a read that fills the idle buffer switches to
 * this one until a read leaves it part empty, so a large message takes a few
 * reads, not hundreds.
 */
const BUSY_READ_BYTES = 16 * 1024;

const PING = encodePing();

/**
 * Close codes that blame the client for what it sent (RFC 6455 7.4.1): a
 * frame against the protocol (1002), data it cannot take (1003, 1007), a
 * policy such as the message rate (1008), a message too big (1009). After
 * its close frame with one of them, the server ends its side of the stream
 * and reads what the client still sends without parsing it (RFC 6455
 * 7.1.7), until the client ends or the close timer fires: a client that
 * floods costs a read per buffer, not a parse. Not a hang-up on its bytes,
 * which would answer them with a reset: that can cost the client the close
 * frame (a browser then sees 1006).
 */
const BLAMING_CODES: ReadonlySet<number> = new Set([
  CloseCode.protocolError,
  CloseCode.unsupportedData,
  CloseCode.invalidData,
  CloseCode.policyViolation,
  CloseCode.messageTooBig,
]);

/**
 * One WebSocket connection, made by the server once its handler accepted the
 * handshake; {@linkcode Socket.run} starts it.
 */
export class Socket implements ClientSocket {
  /** The `Origin` header of the handshake, or null. */
  readonly origin: string | null;
  readonly #tcp: Deno.Conn;
  readonly #handlers: SocketHandlers;
  readonly #settings: SocketSettings;
  readonly #writer: FrameWriter;
  /** Made for a read, and dropped once it is at rest: most sockets, idle, hold none. */
  #parser: FrameParser | null = null;
  #state: "open" | "closing" | "closed" = "open";
  #heard = true;
  #closeCode: number = CloseCode.abnormal;
  #closeReason = "";
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #server: SocketOwner;
  /** Set once the client broke the protocol, or we closed it blaming it: what it sends is read and dropped unparsed. */
  #dropping = false;
  #idle: Uint8Array | null = null;

  /**
   * Takes over `tcp` after the handshake `req`, whose `Sec-WebSocket-Accept`
   * is `accept`, and queues the `101`; nothing is read before `run`.
   */
  constructor(
    tcp: Deno.Conn,
    req: ServerRequest,
    accept: string,
    handlers: SocketHandlers,
    settings: SocketSettings,
    server: SocketOwner,
  ) {
    this.#tcp = tcp;
    this.#server = server;
    this.origin = req.headers.get("origin");
    this.#handlers = handlers;
    this.#settings = settings;
    this.#writer = new FrameWriter(tcp, {
      maxPendingBytes: settings.maxBufferedBytes,
      minWriteIntervalMs: settings.writeInterval,
      onError: () => this.#terminate(),
    });
    this.#writer.enqueue(switchingProtocols(req, accept));
  }

  /** Bytes accepted by `send` but not yet written to the network. */
  get bufferedAmount(): number {
    return this.#writer.pendingBytes;
  }

  /**
   * Queues a text message; a {@linkcode PreparedText} goes as the frame it
   * holds, any other message is framed here. Over `maxBufferedBytes`, closes
   * the socket as slow instead.
   */
  send(message: string | PreparedMessage): void {
    if (this.#state !== "open") return;
    const frame = message instanceof PreparedText
      ? message.frame
      : encodeText(typeof message === "string" ? message : message.text);
    if (!this.#writer.enqueue(frame)) this.#closeSlow(`over ${this.#settings.maxBufferedBytes} bytes buffered`);
  }

  /**
   * Starts the closing handshake, after what was sent before. With a code
   * that blames the client (1002, 1003, 1007, 1008, 1009), ends our side of
   * the stream after the close frame and drops what the client sends
   * unparsed; otherwise its data frames are skipped until its close frame.
   */
  close(code: number, reason: string): void {
    const blaming = BLAMING_CODES.has(code);
    if (blaming && this.#state === "open") this.#dropping = true;
    this.#sendClose(code, reason, blaming);
  }

  /**
   * Everything sent before goes out first, then the close frame, then (with
   * `endStream`) our end of the stream; then the close timer waits for the
   * client's answer.
   */
  #sendClose(code: number, reason: string, endStream: boolean): void {
    if (this.#state !== "open") return;
    this.#state = "closing";
    this.#closeCode = code;
    this.#closeReason = reason;
    this.#guard(() => this.#handlers.closing?.(this, code, reason));
    this.#writer.finish(encodeClose(code, reason)).then(() => {
      if (endStream) this.#tcp.closeWrite().catch(() => {});
      this.#awaitPeerClose();
    });
  }

  /** Sends a protocol ping; a socket that did not answer the previous one is dead. */
  ping(): void {
    if (this.#state !== "open") return;
    if (!this.#heard) {
      this.#settings.logger.info("closing a dead client", { reason: "no pong" });
      this.#closeCode = CloseCode.abnormal;
      this.#terminate();
      return;
    }
    this.#heard = false;
    this.#writer.enqueue(PING);
  }

  /** Closes the socket as slow when a write has been blocked past `slowClientTimeout` at `now` (`performance.now()`). */
  checkStall(now: number): void {
    if (this.#state === "closed") return;
    const stalled = this.#writer.stalledFor(now);
    if (stalled <= this.#settings.slowClientTimeout) return;
    if (this.#state === "open") return this.#closeSlow(`a write blocked for ${stalled} ms`);
    // Closing, with our close frame queued behind a write the client does not
    // take: the close timer starts only once that frame is out, so without
    // this the connection would stay open for as long as the client wants.
    // A socket closed as slow has its timer already, and its close frame is
    // given until then.
    if (this.#closeTimer !== undefined) return;
    this.#settings.logger.warn("closing a slow client", {
      reason: `a write blocked for ${stalled} ms while closing`,
      buffered: this.#writer.pendingBytes,
    });
    this.#terminate();
  }

  /** Runs the socket until it closes; `rest` is what the client sent after its request head. */
  run(rest: Uint8Array | null): void {
    this.#start(rest);
    this.#idle = this.#server.readSlots.take();
    this.#read(this.#idle);
  }

  /**
   * Reads once; the callback handles what came and reads again. Not an
   * async loop: its suspended frame (generator, registers, contexts) would
   * be held by every idle socket.
   */
  #read(buffer: Uint8Array): void {
    if (this.#state === "closed") return this.#ended();
    this.#tcp.read(buffer).then((n) => this.#received(buffer, n), () => this.#ended());
  }

  #received(buffer: Uint8Array, n: number | null): void {
    if (n === null) return this.#ended();
    this.#heard = true;
    this.#guard(() => this.#receive(buffer.subarray(0, n)));
    // The parser copies what it keeps, so the buffer can be swapped or reused.
    const idle = this.#idle!;
    if (n < buffer.length) return this.#read(idle);
    this.#read(buffer === idle ? new Uint8Array(BUSY_READ_BYTES) : buffer);
  }

  /** Called once the last read has settled (the end of the stream, a reset, or our close). */
  #ended(): void {
    this.#terminate();
    // Nothing writes into the slot any more.
    this.#server.readSlots.give(this.#idle!);
    this.#server.forget(this);
    this.#guard(() => this.#handlers.close(this, this.#closeCode, this.#closeReason));
  }

  /** Opens the socket, then handles what came with the head; a method, so that `rest` is not kept alive by the read loop. */
  #start(rest: Uint8Array | null): void {
    this.#guard(() => {
      this.#handlers.open(this);
      if (rest) this.#receive(rest);
    });
  }

  /** Runs handler code; if it throws, logs it and closes this socket with 1011. */
  #guard(run: () => void): void {
    try {
      run();
    } catch (error) {
      this.#settings.logger.error("socket handler threw", { error: String(error) });
      this.close(CloseCode.internalError, "internal error");
    }
  }

  #receive(chunk: Uint8Array): void {
    // Bytes after a violation (the rest of an oversized message, the
    // client's close answer) or after a close that blames the client are not
    // processed (RFC 6455 7.1.7), only read and dropped until the client
    // ends or the close timer fires.
    if (this.#dropping) return;
    let events: ClientEvent[];
    let violation: ProtocolError | null = null;
    const parser = this.#parser ?? new FrameParser({ maxMessageBytes: this.#settings.maxMessageBytes });
    // A closing socket still reads, for the client's close frame; its data
    // frames go to no one, so they are skipped unread.
    if (this.#state !== "open") parser.discardData();
    try {
      events = parser.push(chunk);
      this.#parser = parser.atRest ? null : parser;
    } catch (error) {
      this.#parser = parser;
      if (!(error instanceof ProtocolError)) throw error;
      // What the client sent before the violation is handled first.
      this.#dropping = true;
      violation = error;
      events = error.events;
    }
    this.#handle(events);
    if (!violation || this.#state === "closed") return;
    this.#settings.logger.info("closing a client that broke the protocol", {
      code: violation.code,
      reason: violation.message,
    });
    // The close frame, then our end of the stream, and what the client still
    // sends is drained unparsed until it ends or the close timer does.
    this.#sendClose(violation.code, violation.message, true);
  }

  #handle(events: ClientEvent[]): void {
    for (const event of events) {
      if (this.#state === "closed") return;
      switch (event.type) {
        case "text":
        case "binary":
          if (this.#state === "open") this.#handlers.message(this, event.data);
          break;
        case "ping":
          if (this.#state !== "open") break;
          this.#writer.enqueue(encodePong(event.data));
          this.#handlers.frame?.(this);
          break;
        case "pong":
        case "fragment":
          if (this.#state === "open") this.#handlers.frame?.(this);
          break;
        case "close":
          this.#peerClosed(event.code, event.reason);
          break;
      }
    }
  }

  #peerClosed(code: number, reason: string): void {
    if (this.#state === "open") {
      this.#state = "closing";
      this.#closeCode = code;
      this.#closeReason = reason;
      // 1005 is the absence of a code, which a close frame cannot carry: answered as a normal close.
      this.#writer.finish(encodeClose(code === CloseCode.noStatus ? CloseCode.normal : code)).then(() =>
        this.#terminate()
      );
      return;
    }
    // The answer to our close frame: the handshake is complete.
    this.#terminate();
  }

  #awaitPeerClose(): void {
    if (this.#state === "closed") return;
    this.#closeTimer = setTimeout(() => this.#terminate(), this.#settings.closeTimeout);
  }

  #closeSlow(why: string): void {
    if (this.#state !== "open") return;
    this.#settings.logger.warn("closing a slow client", { reason: why, buffered: this.#writer.pendingBytes });
    this.#state = "closing";
    this.#closeCode = CloseCode.slow;
    this.#closeReason = "slow";
    this.#guard(() => this.#handlers.closing?.(this, CloseCode.slow, "slow"));
    // A slow client is not reading: drop what it has not taken, tell it why.
    this.#writer.end(encodeClose(CloseCode.slow, "slow"));
    this.#awaitPeerClose();
  }

  #terminate(): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    clearTimeout(this.#closeTimer);
    this.#writer.close();
    closeConnection(this.#tcp);
  }
}
