/**
 * The pusher's HTTP/1.1 and WebSocket server on `Deno.listen`. It owns the
 * write path: every socket has one coalescing {@linkcode FrameWriter}, so a
 * burst of messages costs one write syscall per socket instead of one per
 * message, and a broadcast frame is encoded once and shared
 * ({@linkcode PreparedText}).
 *
 * Plain requests go to a fetch-style handler `(req) => Response`, where
 * `req` is a {@linkcode ServerRequest}; the handler accepts a WebSocket with
 * {@linkcode upgradeWebSocket}, as with `Deno.upgradeWebSocket`. Each
 * response to a plain request closes its connection.
 *
 * @module
 */

import type { ClientSocket, SocketHandlers } from "./socket.ts";
import type { PreparedMessage, Transport, TransportRequest } from "./transport.ts";
import {
  acceptKey,
  type ClientEvent,
  CloseCode,
  encodeClose,
  encodePing,
  encodePong,
  encodeText,
  FrameParser,
  isValidKey,
  PreparedText,
  ProtocolError,
} from "./websocket.ts";
import { acceptNext } from "../shared/accept.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { FrameWriter } from "../shared/writer.ts";
import { timerMs } from "../shared/duration.ts";

/** Options for {@linkcode serve}. */
export interface ServeOptions {
  /** Address to listen on. @default {"127.0.0.1"} */
  hostname?: string;
  /** Port; 0 picks a free one. @default {4236} */
  port?: number;
  /** Share the port with other listeners (needs `--unstable-net`). @default {false} */
  reusePort?: boolean;
  /** Aborting it shuts the server down. */
  signal?: AbortSignal;
  /** Called once listening. */
  onListen?: (addr: Deno.NetAddr) => void;
  /** Largest request head; larger gets 431. @default {8192} */
  maxHeadBytes?: number;
  /**
   * Milliseconds a connection gets to send its request head. Checked with
   * stalled writes, every quarter of the smaller of this and
   * `slowClientTimeout`. @default {10000}
   */
  handshakeTimeout?: number;
  /** Largest message a client may send; larger closes with 1009. @default {65536} */
  maxMessageBytes?: number;
  /**
   * Bytes that may wait to be written to one socket; past it the socket is
   * closed with 3008 ("slow"). A burst may take a socket there only if it
   * does not read.
   *
   * @default {1048576}
   */
  maxBufferedBytes?: number;
  /** Milliseconds a write to one socket may stay blocked before it is closed with 3008. @default {2000} */
  slowClientTimeout?: number;
  /** Milliseconds between protocol pings; a socket silent for a whole interval after one is closed. @default {30000} */
  pingInterval?: number;
  /** Milliseconds to wait for the client's close frame after ours. @default {1000} */
  closeTimeout?: number;
  /** Most WebSockets open at once; more get 503. @default {Infinity} */
  maxConnections?: number;
  /** Where log lines go. @default {createLogger("pusher")} */
  logger?: Logger;
  /** Called for each connection the server refuses before the handler sees it; its log line says more. */
  onRefused?: (reason: Refusal) => void;
}

/**
 * Why the server itself refused a connection: `too_many_connections` (503 to
 * a handshake at `maxConnections`), `too_many_handshakes` (closed at once:
 * as many connections are still sending their head), `head_timeout` (no
 * complete head within `handshakeTimeout`), `bad_request` (a 4xx for a bad
 * head or handshake), `shutting_down` (503).
 */
export type Refusal =
  | "too_many_connections"
  | "too_many_handshakes"
  | "head_timeout"
  | "bad_request"
  | "shutting_down";

/** A running server. */
export interface Server extends AsyncDisposable {
  readonly addr: Deno.NetAddr;
  /** Resolves once shut down and every connection is closed. */
  readonly finished: Promise<void>;
  /** WebSockets open now. */
  readonly sockets: number;
  /** Connections still sending their request head: at most `maxConnections`, beyond which new ones are closed at once. */
  readonly handshaking: number;
  /** Stops accepting, closes every WebSocket with 1001, and waits for them. */
  shutdown(): Promise<void>;
}

/**
 * What the handler gets of a request: its method, URL and headers, which is
 * all a WebSocket server reads. A fetch `Request` fits, but the server does
 * not build one: a `Request` and its `Headers` cost about 17 µs and 14 KB of
 * garbage per handshake here, against 2 µs for this.
 */
export interface ServerRequest {
  /** `GET`, `HEAD`, ... */
  readonly method: string;
  /**
   * The absolute URL: path and query from the request target; host from an
   * absolute-form target, else from the `Host` header (else the listening address).
   */
  readonly url: string;
  /** Header values by case-insensitive name; repeated fields are joined with ", ", as `Headers.get` does. */
  readonly headers: { get(name: string): string | null };
}

/** A fetch-style request handler. */
export type Handler = (req: ServerRequest) => Response | Promise<Response>;

interface Upgrade {
  response: Response;
  handlers: SocketHandlers | null;
}

/**
 * What {@linkcode upgradeWebSocket} returns, the same for every request: the
 * request's entry in `upgrades` says whether it was accepted. One response
 * per handshake was one more object each held while the others went on.
 */
const UPGRADED = new Response(null);

/** Requests being handled that may be upgraded, with their upgrade once accepted. */
const upgrades = new WeakMap<ServerRequest, Upgrade>();

/**
 * Accepts a WebSocket upgrade from inside a {@linkcode serve} handler; return
 * the response it gives. The handshake was validated before the handler was
 * called.
 *
 * @throws {TypeError} when `req` is not a WebSocket upgrade handled by {@linkcode serve}.
 */
export function upgradeWebSocket(req: ServerRequest, handlers: SocketHandlers): Response {
  const upgrade = upgrades.get(req);
  if (!upgrade) throw new TypeError("Cannot upgrade: not a WebSocket handshake served by pusher/server.ts");
  upgrade.handlers = handlers;
  return upgrade.response;
}

/**
 * Whether `req` is a WebSocket handshake, checked by {@linkcode serve}, that
 * the handler may accept with {@linkcode upgradeWebSocket}. Ask this rather
 * than look for an `Upgrade` header: one naming another protocol (`h2c`) is
 * ignored, and the request is a plain one.
 */
export function isWebSocketUpgrade(req: ServerRequest): boolean {
  return upgrades.has(req);
}

/**
 * This server as the pusher's {@linkcode Transport}: upgrades requests that
 * {@linkcode serve} handed to its handler, and frames prepared messages once.
 */
export const listenTransport: Transport = {
  isUpgrade(req: TransportRequest): boolean {
    if (upgrades.has(req as ServerRequest)) return true;
    if (!(req.headers instanceof HeaderFields) && req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      throw new TypeError("Cannot upgrade: the request did not come through pusher/server.ts serve()");
    }
    return false;
  },
  upgrade: (req: TransportRequest, handlers: SocketHandlers): Response =>
    upgradeWebSocket(req as ServerRequest, handlers),
  prepare: (text: string): PreparedText => new PreparedText(text),
};

/**
 * Starts the server.
 *
 * @example
 * ```ts
 * const server = serve({ port: 0 }, (req) =>
 *   upgradeWebSocket(req, { open: (s) => s.send("hi"), message() {}, close() {} }));
 * ```
 */
export function serve(options: ServeOptions, handler: Handler): Server {
  // Checked before listening: a bad option must not leave a listener behind.
  const settings: Settings = {
    maxHeadBytes: options.maxHeadBytes ?? 8192,
    handshakeTimeout: timerMs("handshakeTimeout", options.handshakeTimeout ?? 10_000, 1),
    maxMessageBytes: options.maxMessageBytes ?? 65536,
    maxBufferedBytes: options.maxBufferedBytes ?? 1024 * 1024,
    slowClientTimeout: timerMs("slowClientTimeout", options.slowClientTimeout ?? 2000, 1),
    pingInterval: timerMs("pingInterval", options.pingInterval ?? 30_000, 1),
    closeTimeout: timerMs("closeTimeout", options.closeTimeout ?? 1000),
    maxConnections: options.maxConnections ?? Infinity,
    logger: options.logger ?? createLogger("pusher"),
    onRefused: options.onRefused ?? (() => {}),
  };
  const listener = Deno.listen({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 4236,
    ...(options.reusePort ? { reusePort: true } : {}),
  } as Deno.TcpListenOptions);
  const server = new ServerImpl(listener, handler, settings);
  options.signal?.addEventListener("abort", () => server.shutdown(), { once: true });
  options.onListen?.(server.addr);
  return {
    addr: server.addr,
    finished: server.finished,
    get sockets() {
      return server.sockets.size;
    },
    get handshaking() {
      return server.handshaking;
    },
    shutdown: () => server.shutdown(),
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

interface Settings {
  maxHeadBytes: number;
  handshakeTimeout: number;
  maxMessageBytes: number;
  maxBufferedBytes: number;
  slowClientTimeout: number;
  pingInterval: number;
  closeTimeout: number;
  maxConnections: number;
  logger: Logger;
  onRefused: (reason: Refusal) => void;
}

/**
 * An idle socket's read buffer: small, because every open socket holds one
 * in its pending read, and clients of a push system send little (pongs,
 * close frames).
 */
const IDLE_READ_BYTES = 128;
/**
 * A busy socket's: a read that fills the idle buffer switches to this one
 * until a read leaves it part empty, so a large message takes a few reads,
 * not hundreds.
 */
const BUSY_READ_BYTES = 16 * 1024;
/** The request head's first read buffer: most heads are well under 1 KiB. */
const HEAD_READ_BYTES = 1024;
/** Idle read buffers cut from one slab. */
const SLOTS_PER_SLAB = 256;

/**
 * Idle sockets' read buffers, cut from shared slabs. Every open socket keeps
 * a read pending into its buffer, so the buffer's cost is paid per
 * connection: a buffer of its own costs an `ArrayBuffer` and its backing
 * store besides the view, about 330 bytes for 128; a slot costs the view and
 * 128 bytes. A socket gives its slot back once its last read has settled, so
 * no two pending reads ever share one. Slabs are kept for the next sockets:
 * after a peak, about 230 bytes per connection of the peak stay allocated.
 */
class ReadSlots {
  readonly #free: Uint8Array[] = [];

  take(): Uint8Array {
    if (this.#free.length === 0) {
      const slab = new ArrayBuffer(IDLE_READ_BYTES * SLOTS_PER_SLAB);
      for (let i = SLOTS_PER_SLAB - 1; i >= 0; i--) {
        this.#free.push(new Uint8Array(slab, i * IDLE_READ_BYTES, IDLE_READ_BYTES));
      }
    }
    return this.#free.pop()!;
  }

  give(slot: Uint8Array): void {
    this.#free.push(slot);
  }
}

/** What a socket needs of its server. A reference, not closures, to keep idle sockets small. */
interface SocketOwner {
  readonly readSlots: ReadSlots;
  /** Called once the socket has closed. */
  forget(socket: Socket): void;
}

class ServerImpl implements SocketOwner {
  readonly addr: Deno.NetAddr;
  readonly readSlots = new ReadSlots();
  readonly finished: Promise<void>;
  readonly sockets = new Set<Socket>();
  readonly #listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>;
  readonly #handler: Handler;
  readonly #settings: Settings;
  /**
   * Connections between accept and their upgrade or answer. A count, and
   * shared callbacks, rather than a set of their promises: see #serve.
   */
  #serving = 0;
  /** Handshakes in the handler: each may become a socket, so they count against `maxConnections`. */
  #upgrading = 0;
  #allServed: (() => void) | null = null;
  readonly #served = (): void => {
    if (--this.#serving === 0) this.#allServed?.();
  };
  readonly #failed = (error: unknown): void => {
    this.#settings.logger.error("connection failed", { error: String(error) });
    this.#served();
  };
  /** Connections still sending their request head, in the order they came, with their deadlines (`performance.now()`). */
  readonly #handshaking = new Map<Deno.TcpConn, number>();
  readonly #pinger: ReturnType<typeof setInterval>;
  readonly #watchdog: ReturnType<typeof setInterval>;
  #stopping: Promise<void> | null = null;
  #allClosed: (() => void) | null = null;

  constructor(listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>, handler: Handler, settings: Settings) {
    this.#listener = listener;
    this.addr = listener.addr;
    this.#handler = handler;
    this.#settings = settings;
    this.#pinger = setInterval(() => this.#ping(), settings.pingInterval);
    const tick = Math.min(settings.slowClientTimeout, settings.handshakeTimeout) / 4;
    this.#watchdog = setInterval(() => this.#watch(), Math.max(10, tick));
    this.finished = this.#accept();
  }

  get handshaking(): number {
    return this.#handshaking.size;
  }

  shutdown(): Promise<void> {
    this.#stopping ??= (async () => {
      try {
        this.#listener.close();
      } catch { /* closed */ }
      for (const tcp of this.#handshaking.keys()) close(tcp);
      const closed = new Promise<void>((resolve) => (this.#allClosed = resolve));
      for (const socket of this.sockets) socket.close(CloseCode.goingAway, "going away");
      await this.finished;
      if (this.sockets.size > 0) await closed;
      clearInterval(this.#pinger);
      clearInterval(this.#watchdog);
    })();
    return this.#stopping;
  }

  async #accept(): Promise<void> {
    const options = { stopping: () => this.#stopping !== null, logger: this.#settings.logger };
    while (true) {
      const tcp = await acceptNext(this.#listener, options);
      if (!tcp) break;
      this.#serving++;
      this.#serve(tcp).then(this.#served, this.#failed);
    }
    if (this.#serving > 0) await new Promise<void>((resolve) => (this.#allServed = resolve));
  }

  /**
   * Reads the request head and answers it or upgrades the connection. What a
   * handshake holds while it waits for the client (its timer, its promises,
   * their callbacks) is kept to the least: in a burst of connections the
   * others' allocations trigger V8's young-generation collections meanwhile,
   * and what survives two of them moves to the old generation, where it stays
   * after the handshake until a full collection, which an idle server may
   * not run for a long time. A timer and a promise chain fewer per handshake
   * took a pusher's memory per idle connection, read 250 ms after a burst of
   * 10,000, from 7.0-7.6 KiB to 5.2-5.7 (`deno task bench --scenarios g`).
   */
  async #serve(tcp: Deno.TcpConn): Promise<void> {
    // Each connection still sending its head holds a buffer and a timer:
    // no more of them than there may be sockets.
    if (this.#handshaking.size >= this.#settings.maxConnections) {
      this.#settings.logger.warn("refusing a connection", {
        reason: `${this.#handshaking.size} connections are still sending their request head`,
      });
      this.#settings.onRefused("too_many_handshakes");
      return close(tcp);
    }
    tcp.setNoDelay(true);
    // Tracked for the watchdog's deadline, and so that shutdown does not wait it out.
    this.#handshaking.set(tcp, performance.now() + this.#settings.handshakeTimeout);
    let head;
    try {
      head = await readHead(tcp, this.#settings);
    } finally {
      this.#handshaking.delete(tcp);
    }
    if (!head) return close(tcp);
    if ("error" in head) return this.#reject(tcp, head.error, "bad_request");
    const { req, rest, http10 } = head;
    const handshake = checkHandshake(req, http10);
    if (handshake instanceof Response) return this.#reject(tcp, handshake, "bad_request");
    // Counting the handshakes in the handler too: heads that complete in one
    // turn of the event loop would otherwise all find the same room.
    if (handshake && this.sockets.size + this.#upgrading >= this.#settings.maxConnections) {
      return this.#reject(
        tcp,
        text(503, `Too many connections: ${this.#settings.maxConnections}`),
        "too_many_connections",
      );
    }
    if (this.#stopping) return this.#reject(tcp, text(503, "Shutting down"), "shutting_down");
    const upgrade: Upgrade = { response: UPGRADED, handlers: null };
    if (handshake) upgrades.set(req, upgrade);
    let response: Response;
    if (handshake) this.#upgrading++;
    try {
      response = await this.#handler(req);
    } catch (error) {
      this.#settings.logger.error("handler threw", { error: String(error) });
      response = text(500, "Internal error");
    } finally {
      if (handshake) this.#upgrading--;
    }
    if (response !== upgrade.response || !upgrade.handlers) return respond(tcp, response, req.method === "HEAD");
    // Shutdown has already said goodbye to the sockets it found, and waits for them alone.
    if (this.#stopping) return this.#reject(tcp, text(503, "Shutting down"), "shutting_down");
    const socket = new Socket(tcp, req, handshake as string, upgrade.handlers, this.#settings, this);
    this.sockets.add(socket);
    // Not awaited: an open socket keeps no frame of this function alive.
    socket.run(rest);
  }

  /** Called by a socket once it has closed. */
  forget(socket: Socket): void {
    this.sockets.delete(socket);
    if (this.sockets.size === 0) this.#allClosed?.();
  }

  /** Answers a request the server itself refuses (bad head, bad handshake, no room), with a log line. */
  async #reject(tcp: Deno.TcpConn, response: Response, refusal: Refusal): Promise<void> {
    this.#settings.onRefused(refusal);
    const reason = (await response.clone().text()).trim();
    this.#settings.logger.info("rejected a request", { status: response.status, reason });
    return respond(tcp, response, false);
  }

  #ping(): void {
    for (const socket of this.sockets) socket.ping();
  }

  /** Closes sockets whose writes stay blocked, and connections past their deadline for a request head. */
  #watch(): void {
    const now = performance.now();
    for (const socket of this.sockets) socket.checkStall(now);
    // In the order they came, so in the order of their deadlines.
    for (const [tcp, deadline] of this.#handshaking) {
      if (now < deadline) break;
      this.#handshaking.delete(tcp);
      this.#settings.logger.info("closing a connection that did not send its request head in time", {
        timeout: this.#settings.handshakeTimeout,
      });
      this.#settings.onRefused("head_timeout");
      close(tcp);
    }
  }
}

/** One WebSocket connection. */
class Socket implements ClientSocket {
  readonly origin: string | null;
  readonly #tcp: Deno.TcpConn;
  readonly #handlers: SocketHandlers;
  readonly #settings: Settings;
  readonly #writer: FrameWriter;
  readonly #parser: FrameParser;
  #state: "open" | "closing" | "closed" = "open";
  #heard = true;
  #closeCode: number = CloseCode.abnormal;
  #closeReason = "";
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #server: SocketOwner;
  #violation: ProtocolError | null = null;
  #idle: Uint8Array | null = null;

  constructor(
    tcp: Deno.TcpConn,
    req: ServerRequest,
    accept: string,
    handlers: SocketHandlers,
    settings: Settings,
    server: SocketOwner,
  ) {
    this.#tcp = tcp;
    this.#server = server;
    this.origin = req.headers.get("origin");
    this.#handlers = handlers;
    this.#settings = settings;
    this.#writer = new FrameWriter(tcp, {
      maxPendingBytes: settings.maxBufferedBytes,
      onError: () => this.#terminate(),
    });
    this.#parser = new FrameParser({ maxMessageBytes: settings.maxMessageBytes });
    const protocol = requestedProtocols(req.headers.get("sec-websocket-protocol"))[0];
    this.#writer.enqueue(new TextEncoder().encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${accept}\r\n` + (protocol ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : "") + "\r\n",
    ));
  }

  get bufferedAmount(): number {
    return this.#writer.pendingBytes;
  }

  send(message: string | PreparedMessage): void {
    if (this.#state !== "open") return;
    const frame = message instanceof PreparedText
      ? message.frame
      : encodeText(typeof message === "string" ? message : message.text);
    if (!this.#writer.enqueue(frame)) this.#closeSlow(`over ${this.#settings.maxBufferedBytes} bytes buffered`);
  }

  close(code: number, reason: string): void {
    this.#sendClose(code, reason, false);
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
   * async loop: its suspended frame (generator, registers, contexts) cost
   * every idle socket about 350 bytes more.
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
    // A closing socket still reads, for the client's close frame.
    let events: ClientEvent[];
    let violation: ProtocolError | null = null;
    try {
      events = this.#parser.push(chunk);
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error;
      // Bytes after the violation (the rest of an oversized message, the
      // client's close answer) are not processed (RFC 6455 7.1.7), but read
      // and dropped until the client ends or the close timer does.
      if (this.#violation) return;
      // What the client sent before the violation is handled first.
      violation = this.#violation = error;
      events = error.events;
    }
    this.#handle(events);
    if (!violation || this.#state === "closed") return;
    this.#settings.logger.info("closing a client that broke the protocol", {
      code: violation.code,
      reason: violation.message,
    });
    // The close frame, then our end of the stream. Closing the socket while
    // the client still sends would answer it with a reset, which can cost it
    // the close frame (a browser then sees 1006): what it sends is drained.
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
          this.#handlers.control?.(this);
          break;
        case "pong":
          if (this.#state === "open") this.#handlers.control?.(this);
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
      this.#writer.finish(encodeClose(code === CloseCode.abnormal ? CloseCode.normal : code)).then(() =>
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
    // A slow client is not reading: drop what it has not taken, tell it why.
    this.#writer.end(encodeClose(CloseCode.slow, "slow"));
    this.#awaitPeerClose();
  }

  #terminate(): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    clearTimeout(this.#closeTimer);
    this.#writer.close();
    close(this.#tcp);
  }
}

const PING = encodePing();

/** Reads the request head; null when the connection ended first (or was closed by the watchdog). */
async function readHead(
  tcp: Deno.TcpConn,
  settings: Settings,
): Promise<{ req: ServerRequest; http10: boolean; rest: Uint8Array | null } | { error: Response } | null> {
  // Starts small and grows only for a large head.
  let buffer = new Uint8Array(HEAD_READ_BYTES);
  let filled = 0;
  while (true) {
    if (filled === buffer.length) {
      const grown = new Uint8Array(Math.min(buffer.length * 2, settings.maxHeadBytes + HEAD_READ_BYTES));
      grown.set(buffer);
      buffer = grown;
    }
    let n: number | null;
    try {
      n = await tcp.read(buffer.subarray(filled));
    } catch {
      return null;
    }
    if (n === null) return null;
    const start = Math.max(0, filled - 3);
    filled += n;
    const end = indexOfHeadEnd(buffer, start, filled);
    if (end >= 0) {
      // One read may bring more than the limit at once: the limit is on the head, not on the reads.
      if (end + 4 > settings.maxHeadBytes) return { error: text(431, "Request head too large") };
      const parsed = parseHead(latin1.decode(buffer.subarray(0, end)), tcp.localAddr as Deno.NetAddr);
      if (parsed instanceof Response) return { error: parsed };
      return { ...parsed, rest: filled > end + 4 ? buffer.slice(end + 4, filled) : null };
    }
    if (filled >= settings.maxHeadBytes) return { error: text(431, "Request head too large") };
  }
}

function indexOfHeadEnd(bytes: Uint8Array, from: number, to: number): number {
  for (let i = from; i + 3 < to; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}

const latin1 = new TextDecoder("latin1");

/** Header fields by lower-case name. */
class HeaderFields {
  readonly #fields = new Map<string, string>();

  add(name: string, value: string): void {
    const key = name.toLowerCase();
    const previous = this.#fields.get(key);
    this.#fields.set(key, previous === undefined ? value : `${previous}, ${value}`);
  }

  get(name: string): string | null {
    return this.#fields.get(name.toLowerCase()) ?? null;
  }
}

/** Parses a request head, or answers why it cannot. */
function parseHead(head: string, local: Deno.NetAddr): { req: ServerRequest; http10: boolean } | Response {
  const lines = head.split("\r\n");
  const match = /^([A-Z]+) (\S+) HTTP\/1\.([01])$/.exec(lines[0]!);
  if (!match) return text(400, "Bad request line");
  // Origin form (/path?query), or absolute form (http://host/path?query),
  // which a server must accept (RFC 9112 3.2.2).
  let target = match[2]!;
  let authority: string | null = null;
  if (!target.startsWith("/")) {
    const absolute = /^https?:\/\/([^/?#]*)([^#]*)$/i.exec(target);
    if (!absolute || !isHost(absolute[1]!)) return text(400, "Bad request target");
    authority = absolute[1]!;
    target = absolute[2]!.startsWith("/") ? absolute[2]! : `/${absolute[2]}`;
  }
  const headers = new HeaderFields();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    // Not trimmed: whitespace before the colon, or a folded line, is a 400 (RFC 9112 5.1, 5.2).
    const name = line.slice(0, colon);
    if (colon <= 0 || !TOKEN.test(name)) return text(400, "Bad header line");
    const value = line.slice(colon + 1).trim();
    // What the Fetch standard forbids in a header value (the lines are already split on CRLF).
    if (/[\0\r\n]/.test(value)) return text(400, "Bad header value");
    headers.add(name, value);
  }
  const host = headers.get("host");
  // HTTP/1.0 had no Host header; an HTTP/1.1 request without one is a 400 (RFC 9112 3.2).
  if (host === null && match[3] === "1") return text(400, "Missing Host header");
  // Pasted before the target, a Host with a path, query or fragment would choose the path or the query.
  if (host !== null && !isHost(host)) return text(400, "Bad Host header");
  // The absolute form's host wins over the Host header's (RFC 9112 3.2.2).
  const url = `http://${authority ?? host ?? authorityOf(local)}${target}`;
  if (!URL.canParse(url)) return text(400, "Bad request target");
  return { req: { method: match[1]!, url, headers }, http10: match[3] === "0" };
}

/**
 * `host[:port]` (RFC 9110 7.2, RFC 3986 3.2.2): a name or IPv4 address, or
 * an IP literal in brackets, and an optional port; nothing else. One
 * character class or one `%XX` at a time: no backtracking.
 */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+)(?::[0-9]*)?$/;

function isHost(value: string): boolean {
  // The URL parser has the last word on what the pattern lets through (a port over 65535, a bad IPv6 address).
  return HOST.test(value) && URL.canParse(`http://${value}/`);
}

function authorityOf(addr: Deno.NetAddr): string {
  return addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`;
}

/**
 * Checks a WebSocket handshake. Returns its `Sec-WebSocket-Accept`, null when
 * the request is not a WebSocket upgrade, or an error response.
 */
function checkHandshake(req: ServerRequest, http10: boolean): string | null | Response {
  // An upgrade to anything else (h2c, from curl --http2) is ignored: the
  // request is answered as it is (RFC 9110 7.8).
  if (!/(^|,)\s*websocket\s*(,|$)/i.test(req.headers.get("upgrade") ?? "")) return null;
  if (req.method !== "GET") return text(405, "WebSocket handshakes must use GET", { Allow: "GET" });
  // RFC 6455 4.1: HTTP/1.1 or higher; HTTP/1.0 has no Upgrade.
  if (http10) return text(400, "Bad handshake: WebSocket needs HTTP/1.1");
  if (!/(^|,)\s*upgrade\s*(,|$)/i.test(req.headers.get("connection") ?? "")) {
    return text(400, "Bad handshake: Connection must include Upgrade");
  }
  if (req.headers.get("sec-websocket-version") !== "13") {
    return text(426, "Unsupported WebSocket version: use 13", { "Sec-WebSocket-Version": "13" });
  }
  const key = req.headers.get("sec-websocket-key");
  if (key === null || !isValidKey(key)) return text(400, "Bad handshake: missing or invalid Sec-WebSocket-Key");
  // Refused rather than ignored: the client broke a MUST (RFC 6455 4.1), no
  // browser can send this (its WebSocket constructor throws), and a client
  // that asked for a protocol should hear why it did not get one.
  if (!requestedProtocols(req.headers.get("sec-websocket-protocol")).every((p) => TOKEN.test(p))) {
    return text(400, "Bad handshake: Sec-WebSocket-Protocol must be a list of tokens");
  }
  return acceptKey(key);
}

/** An HTTP token (RFC 9110 5.6.2): what a header name and a subprotocol are made of. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** The subprotocols a handshake asks for, in order; empty list elements do not count (RFC 9110 5.6.1). */
function requestedProtocols(header: string | null): string[] {
  if (header === null) return [];
  return header.split(",").map((element) => element.trim()).filter((element) => element !== "");
}

function text(status: number, body: string, headers: Record<string, string> = {}): Response {
  return new Response(`${body}\n`, { status, headers: { "content-type": "text/plain;charset=utf-8", ...headers } });
}

const STATUS_TEXT: Record<number, string> = {
  200: "OK",
  204: "No Content",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  426: "Upgrade Required",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/** Writes a response and closes the connection. */
async function respond(tcp: Deno.TcpConn, response: Response, headOnly: boolean): Promise<void> {
  try {
    const body = headOnly || response.body === null ? new Uint8Array(0) : new Uint8Array(await response.arrayBuffer());
    let head = `HTTP/1.1 ${response.status} ${response.statusText || STATUS_TEXT[response.status] || ""}\r\n`;
    response.headers.forEach((value, name) => {
      if (name !== "content-length" && name !== "connection") head += `${name}: ${value}\r\n`;
    });
    head += `content-length: ${body.length}\r\nconnection: close\r\n\r\n`;
    const headBytes = new TextEncoder().encode(head);
    const bytes = new Uint8Array(headBytes.length + body.length);
    bytes.set(headBytes);
    bytes.set(body, headBytes.length);
    let offset = 0;
    while (offset < bytes.length) offset += await tcp.write(bytes.subarray(offset));
  } catch {
    // The client went away; nothing to answer.
  } finally {
    close(tcp);
  }
}

function close(tcp: Deno.TcpConn): void {
  try {
    tcp.close();
  } catch { /* already closed */ }
}
