/**
 * The pusher's HTTP/1.1 and WebSocket server on `Deno.listen`: the accept
 * loop, the limits on connections, the timers, and the step from a request
 * to its handler. The pieces it runs sit beside it: the request head
 * (`http_head.ts`), the handshake checks (`handshake.ts`), the answers to
 * plain requests (`http_response.ts`) and each WebSocket
 * (`server_socket.ts`), which owns the write path: one coalescing writer per
 * socket, so a burst of messages costs one write syscall per socket instead
 * of one per message, and a broadcast frame is encoded once and shared
 * ({@linkcode PreparedText}).
 *
 * Plain requests go to a fetch-style handler `(req) => Response`, where
 * `req` is a {@linkcode ServerRequest}; the handler accepts a WebSocket with
 * {@linkcode upgradeWebSocket}, as with `Deno.upgradeWebSocket`. Each
 * response to a plain request closes its connection.
 *
 * @module
 */

import { ThrottledLine } from "../shared/log_throttle.ts";
import type { SocketHandlers } from "./socket.ts";
import type { Transport, TransportRequest } from "./transport.ts";
import { readHead, type ServerRequest } from "./http_head.ts";
import { asksForWebSocket, checkHandshake } from "./handshake.ts";
import { closeConnection, respond } from "./http_response.ts";
import { text } from "../shared/http.ts";
import { ReadSlots } from "./_read_slots.ts";
import { Socket, type SocketOwner, type SocketSettings } from "./server_socket.ts";
import { CloseCode, PreparedText } from "./websocket.ts";
import { DEFAULT_MAX_MESSAGE_BYTES } from "./defaults.ts";
import { AcceptLog, acceptNext } from "../shared/accept.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { timerMs } from "../shared/duration.ts";
import type { CertifiedKey } from "../shared/tls.ts";

import {
  DEFAULT_CLOSE_TIMEOUT,
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_HOSTNAME,
  DEFAULT_MAX_BUFFERED_BYTES,
  DEFAULT_MAX_HEAD_BYTES,
  DEFAULT_PING_INTERVAL,
  DEFAULT_PUSHER_PORT,
  DEFAULT_SLOW_CLIENT_TIMEOUT,
  DEFAULT_WRITE_INTERVAL,
} from "./defaults.ts";

export type { ServerRequest } from "./http_head.ts";

/** Options for {@linkcode serve}. */
export interface ServeOptions {
  /** Address to listen on. @default {"127.0.0.1"} */
  hostname?: string;
  /** Port; 0 picks a free one. @default {4236} */
  port?: number;
  /** Share the port with other listeners (needs `--unstable-net`). @default {false} */
  reusePort?: boolean;
  /**
   * Serve TLS (`wss://`, `https://`) with this certificate chain and key
   * (PEM); {@linkcode Server.reloadCertificate} swaps them, which needs
   * `reusePort`. @default {plain text}
   */
  tls?: CertifiedKey;
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
  /**
   * Least milliseconds between the starts of two writes to one socket (0:
   * none). Frames for a socket written to less than this ago wait, for at
   * most this long, and go out together: a socket in busy channels, whose
   * frames come a few per hub read, then costs one write per interval
   * instead of one per read. A socket not written to in the last interval
   * gets its frame at once, so streams slower than one message per interval
   * and lone messages wait for nothing. @default {0}
   */
  writeInterval?: number;
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
  /** The address it listens on: read the port back from here after `port: 0`. */
  readonly addr: Deno.NetAddr;
  /** Resolves once shut down and every connection is closed. */
  readonly finished: Promise<void>;
  /** WebSockets open now. */
  readonly sockets: number;
  /** Connections still sending their request head: at most `maxConnections`, beyond which new ones are closed at once. */
  readonly handshaking: number;
  /** Stops accepting, closes every WebSocket with 1001, and waits for them. */
  shutdown(): Promise<void>;
  /**
   * Serves new connections with `tls` from now on; open connections keep
   * theirs. A new listener opens on the same port beside the old one
   * (`reusePort`), then the old one closes: connections the kernel had
   * queued on the old one and not yet handed over are reset, and their
   * clients reconnect.
   *
   * @throws {TypeError} when the server does not serve TLS, or not with `reusePort`.
   * @throws {Error} when the new listener cannot open (a bad key, say): the old one stays.
   */
  reloadCertificate(tls: CertifiedKey): Promise<void>;
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
    // serve() hands its handler no request that asks for a WebSocket without
    // registering it above: it refuses the bad handshakes itself. So one that
    // asks came from elsewhere (a fetch Request from Deno.serve, a copy of
    // ours), and answering it as a plain request would hide the mistake.
    if (asksForWebSocket(req.headers.get("upgrade"))) {
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
    maxHeadBytes: options.maxHeadBytes ?? DEFAULT_MAX_HEAD_BYTES,
    handshakeTimeout: timerMs("handshakeTimeout", options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT, 1),
    maxMessageBytes: options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    maxBufferedBytes: options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES,
    slowClientTimeout: timerMs("slowClientTimeout", options.slowClientTimeout ?? DEFAULT_SLOW_CLIENT_TIMEOUT, 1),
    pingInterval: timerMs("pingInterval", options.pingInterval ?? DEFAULT_PING_INTERVAL, 1),
    closeTimeout: timerMs("closeTimeout", options.closeTimeout ?? DEFAULT_CLOSE_TIMEOUT),
    writeInterval: timerMs("writeInterval", options.writeInterval ?? DEFAULT_WRITE_INTERVAL),
    maxConnections: options.maxConnections ?? Infinity,
    logger: options.logger ?? createLogger("pusher"),
    onRefused: options.onRefused ?? (() => {}),
  };
  const at = {
    hostname: options.hostname ?? DEFAULT_HOSTNAME,
    port: options.port ?? DEFAULT_PUSHER_PORT,
    ...(options.reusePort ? { reusePort: true } : {}),
  } as Deno.TcpListenOptions;
  const listen = (port: number, tls: CertifiedKey | undefined): Deno.Listener<Deno.Conn, Deno.NetAddr> =>
    tls ? Deno.listenTls({ ...at, port, cert: tls.cert, key: tls.key }) : Deno.listen({ ...at, port });
  const server = new ServerImpl(listen(at.port!, options.tls), handler, settings);
  // A listener that cannot open rejects: it must not throw into the caller's message handler.
  const reloadCertificate = (tls: CertifiedKey): Promise<void> => {
    try {
      if (!options.tls) throw new TypeError("Cannot reload the certificate: the server is not serving TLS");
      if (!options.reusePort) throw new TypeError("Cannot reload the certificate: it needs reusePort");
      server.replaceListener(listen(server.addr.port, tls));
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  };
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
    reloadCertificate,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** `ServeOptions` with their defaults: what the server and each socket read. */
interface Settings extends SocketSettings {
  maxHeadBytes: number;
  handshakeTimeout: number;
  pingInterval: number;
  maxConnections: number;
  onRefused: (reason: Refusal) => void;
}

class ServerImpl implements SocketOwner {
  readonly addr: Deno.NetAddr;
  readonly readSlots = new ReadSlots();
  readonly finished: Promise<void>;
  readonly sockets = new Set<Socket>();
  /** The listener taking new connections; a replaced one's loop ends once it is closed. */
  #listener: Deno.Listener<Deno.Conn, Deno.NetAddr>;
  /** The accept loops still running: the current listener's, and a replaced one's until it ends. */
  readonly #accepting = new Set<Promise<void>>();
  #stopped!: () => void;
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
  readonly #handshaking = new Map<Deno.Conn, number>();
  /** Failed TLS handshakes, a line a second at most: any client can cause them. */
  readonly #handshakeFailures: ThrottledLine;
  readonly #pinger: ReturnType<typeof setInterval>;
  readonly #watchdog: ReturnType<typeof setInterval>;
  #stopping: Promise<void> | null = null;
  #allClosed: (() => void) | null = null;

  constructor(listener: Deno.Listener<Deno.Conn, Deno.NetAddr>, handler: Handler, settings: Settings) {
    this.#listener = listener;
    this.addr = listener.addr;
    this.#handler = handler;
    this.#settings = settings;
    this.#handshakeFailures = new ThrottledLine(settings.logger, "warn", "TLS handshake failed");
    this.#pinger = setInterval(() => this.#ping(), settings.pingInterval);
    const tick = Math.min(settings.slowClientTimeout, settings.handshakeTimeout) / 4;
    this.#watchdog = setInterval(() => this.#watch(), Math.max(10, tick));
    this.#track(listener);
    this.finished = this.#finish();
  }

  get handshaking(): number {
    return this.#handshaking.size;
  }

  /** Takes new connections on `next` from now on, and closes the listener it replaces. */
  replaceListener(next: Deno.Listener<Deno.Conn, Deno.NetAddr>): void {
    if (this.#stopping) {
      next.close();
      return;
    }
    const old = this.#listener;
    this.#listener = next;
    this.#track(next);
    old.close();
  }

  shutdown(): Promise<void> {
    this.#stopping ??= (async () => {
      try {
        this.#listener.close();
      } catch { /* closed */ }
      this.#stopped();
      for (const tcp of this.#handshaking.keys()) closeConnection(tcp);
      const closed = new Promise<void>((resolve) => (this.#allClosed = resolve));
      for (const socket of this.sockets) socket.close(CloseCode.goingAway, "going away");
      await this.finished;
      if (this.sockets.size > 0) await closed;
      clearInterval(this.#pinger);
      clearInterval(this.#watchdog);
      this.#handshakeFailures.close();
    })();
    return this.#stopping;
  }

  /** Runs the accept loop of `listener`, kept in `#accepting` until it ends. */
  #track(listener: Deno.Listener<Deno.Conn, Deno.NetAddr>): void {
    const loop: Promise<void> = this.#accept(listener).finally(() => this.#accepting.delete(loop));
    this.#accepting.add(loop);
  }

  /** Resolves once shut down, every accept loop ended and every connection upgraded or answered. */
  async #finish(): Promise<void> {
    await new Promise<void>((resolve) => (this.#stopped = resolve));
    await Promise.all(this.#accepting);
    if (this.#serving > 0) await new Promise<void>((resolve) => (this.#allServed = resolve));
  }

  async #accept(listener: Deno.Listener<Deno.Conn, Deno.NetAddr>): Promise<void> {
    const options = {
      stopping: () => this.#stopping !== null || listener !== this.#listener,
      log: new AcceptLog(this.#settings.logger),
    };
    while (true) {
      const tcp = await acceptNext(listener, options);
      if (!tcp) break;
      // Accepted by the runtime before shutdown closed the listener, and
      // handed over after: shutdown has closed the handshakes it knew of,
      // and would wait for this one's head until its timeout.
      if (this.#stopping) {
        closeConnection(tcp);
        continue;
      }
      this.#serving++;
      this.#serve(tcp).then(this.#served, this.#failed);
    }
  }

  /**
   * Reads the request head and answers it or upgrades the connection. What a
   * handshake holds while it waits for the client (its timer, its promises,
   * their callbacks) is kept to the least: in a burst of connections the
   * others' allocations trigger V8's young-generation collections meanwhile,
   * and what survives two of them moves to the old generation, where it stays
   * after the handshake until a full collection, which an idle server may
   * not run for a long time: a timer and a promise chain fewer per handshake
   * shows in a pusher's memory per idle connection after a burst
   * (`deno task bench --scenarios g`).
   */
  async #serve(tcp: Deno.Conn): Promise<void> {
    // Each connection still sending its head holds a buffer and a timer:
    // no more of them than there may be sockets.
    if (this.#handshaking.size >= this.#settings.maxConnections) {
      this.#settings.logger.warn("refusing a connection", {
        reason: `${this.#handshaking.size} connections are still sending their request head`,
      });
      this.#settings.onRefused("too_many_handshakes");
      return closeConnection(tcp);
    }
    // A TLS connection has no such switch in Deno.
    if ("setNoDelay" in tcp) (tcp as Deno.TcpConn).setNoDelay(true);
    // Tracked for the watchdog's deadline, and so that shutdown does not wait it out.
    this.#handshaking.set(tcp, performance.now() + this.#settings.handshakeTimeout);
    let head;
    try {
      if ("handshake" in tcp && !await this.#tlsHandshake(tcp as Deno.TlsConn)) return closeConnection(tcp);
      head = await readHead(tcp, this.#settings.maxHeadBytes);
    } finally {
      this.#handshaking.delete(tcp);
    }
    if (!head) return closeConnection(tcp);
    if ("error" in head) return this.#reject(tcp, head.error, "bad_request");
    const { req, rest, http10 } = head;
    const handshake = checkHandshake(req, http10);
    if (handshake instanceof Response) return this.#reject(tcp, handshake, "bad_request");
    // Counting the handshakes in the handler too: heads that complete in one
    // turn of the event loop would otherwise all find the same room.
    if (handshake && this.sockets.size + this.#upgrading >= this.#settings.maxConnections) {
      return this.#reject(
        tcp,
        text(503, `Too many connections: ${this.#settings.maxConnections}\n`),
        "too_many_connections",
      );
    }
    if (this.#stopping) return this.#reject(tcp, text(503, "Shutting down\n"), "shutting_down");
    const upgrade: Upgrade = { response: UPGRADED, handlers: null };
    if (handshake) upgrades.set(req, upgrade);
    let response: Response;
    if (handshake) this.#upgrading++;
    try {
      response = await this.#handler(req);
    } catch (error) {
      this.#settings.logger.error("handler threw", { error: String(error) });
      response = text(500, "Internal error\n");
    } finally {
      if (handshake) this.#upgrading--;
    }
    if (response !== upgrade.response || !upgrade.handlers) return respond(tcp, response, req.method === "HEAD");
    // Shutdown has already said goodbye to the sockets it found, and waits for them alone.
    if (this.#stopping) return this.#reject(tcp, text(503, "Shutting down\n"), "shutting_down");
    const socket = new Socket(tcp, req, handshake as string, upgrade.handlers, this.#settings, this);
    this.sockets.add(socket);
    // Not awaited: an open socket keeps no frame of this function alive.
    socket.run(rest);
  }

  /**
   * Runs a TLS handshake to its end; false, with a log line, when it failed:
   * a plain-text client, or one that refuses the certificate. Within the
   * head's deadline, which closes a handshake that stalls (without a line here).
   */
  async #tlsHandshake(tls: Deno.TlsConn): Promise<boolean> {
    try {
      await tls.handshake();
      return true;
    } catch (error) {
      if (this.#handshaking.has(tls)) {
        const remote = tls.remoteAddr as Deno.NetAddr;
        this.#handshakeFailures.log({
          remote: `${remote.hostname}:${remote.port}`,
          error: (error as Error).message,
        });
      }
      return false;
    }
  }

  /** Called by a socket once it has closed. */
  forget(socket: Socket): void {
    this.sockets.delete(socket);
    if (this.sockets.size === 0) this.#allClosed?.();
  }

  /** Answers a request the server itself refuses (bad head, bad handshake, no room), with a log line. */
  async #reject(tcp: Deno.Conn, response: Response, refusal: Refusal): Promise<void> {
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
      closeConnection(tcp);
    }
  }
}
