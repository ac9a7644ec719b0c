/**
 * The pusher on Deno's own HTTP server: `Deno.serve` and
 * `Deno.upgradeWebSocket`, chosen with `--server deno`. The default is our
 * RFC 6455 server on `Deno.listen` (`pusher/server.ts`), which owns its write
 * path and is faster; this one is the runtime's, kept as a choice and as a
 * second real {@linkcode Transport}.
 *
 * {@linkcode serveDeno} puts the same limits around `Deno.serve` as
 * `serve()` does around its own server, where Deno allows; what differs:
 *
 * - Pings and pongs never reach the pusher (Deno answers pings itself and
 *   does not tell), so only messages count toward the message rate.
 * - A message over `maxMessageBytes` closes the socket with 1009 once Deno
 *   has received it whole: Deno buffers every message before handing it
 *   over, and drops the connection past its own 64 MiB.
 * - A slow consumer is found on send: `bufferedAmount` over
 *   `maxBufferedBytes` closes it with 3008. There is no timer on a blocked
 *   write, and what it had not taken is not dropped: Deno writes it first.
 * - A client that goes on sending after our close frame may not get it:
 *   Deno ends the connection when a message follows its close frame (the
 *   client sees 1006), where our server reads and drops what follows.
 * - Deno's WebSocket cannot be aborted. A client that does not answer our
 *   close frame within `closeTimeout` is forgotten by the pusher, but its
 *   connection stays, and counts toward `maxConnections`, until the client
 *   goes or the server shuts down.
 * - Dead clients: Deno pings after half of `idleTimeout` of silence and
 *   closes with 1001 ("No response from ping frame.") if nothing came back
 *   by the end of it; the pusher hears 1006, a connection lost, as from our
 *   server.
 * - Request heads: Deno's limits, a 400 past about 64 KiB of head, and no
 *   time limit on sending one that we found (a partial head was still open
 *   after 100 s): the handshake timeout is Deno's, and it has none to set.
 * - A broadcast is encoded by Deno once per socket; nothing is shared.
 *
 * @module
 */

import type { CertifiedKey } from "../shared/tls.ts";
import type { ClientSocket, SocketHandlers } from "./socket.ts";
import type { PreparedMessage, Transport, TransportRequest } from "./transport.ts";
import type { Refusal, Server } from "./server.ts";
import {
  DEFAULT_CLOSE_TIMEOUT,
  DEFAULT_HOSTNAME,
  DEFAULT_MAX_BUFFERED_BYTES,
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_PING_INTERVAL,
  DEFAULT_PUSHER_PORT,
} from "./defaults.ts";
import { asksForWebSocket, checkHandshake, requestedProtocols } from "./handshake.ts";
import { CloseCode } from "./websocket.ts";
import { text } from "../shared/http.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { timerMs } from "../shared/duration.ts";

/**
 * Milliseconds of silence after which a client is closed by default: 60 s,
 * twice `serve()`'s ping interval, since Deno pings at half of it.
 */
export const DEFAULT_IDLE_TIMEOUT = 2 * DEFAULT_PING_INTERVAL;

/** Options for {@linkcode serveDeno}. */
export interface DenoServeOptions {
  /** Address to listen on. @default {"127.0.0.1"} */
  hostname?: string;
  /** Port; 0 picks a free one. @default {4236} */
  port?: number;
  /** Share the port with other listeners (needs `--unstable-net`). @default {false} */
  reusePort?: boolean;
  /**
   * Serve TLS (`wss://`, `https://`) with this certificate chain and key
   * (PEM). Not reloadable: `Deno.serve`'s shutdown ends the WebSockets it
   * upgraded, so a new certificate takes a restart. @default {plain text}
   */
  tls?: CertifiedKey;
  /** Aborting it shuts the server down. */
  signal?: AbortSignal;
  /** Called once listening. */
  onListen?: (addr: Deno.NetAddr) => void;
  /**
   * Largest message a client may send; larger closes with 1009, once Deno
   * has received all of it. @default {65536}
   */
  maxMessageBytes?: number;
  /** Bytes that may wait to be written to one socket, checked on each send; past it, closed with 3008 ("slow"). @default {1048576} */
  maxBufferedBytes?: number;
  /**
   * Milliseconds of silence after which a client is closed (Deno's
   * `idleTimeout`, which pings at half of it); 0 never. Whole seconds are
   * what Deno documents; less works. @default {60000}
   */
  idleTimeout?: number;
  /** Milliseconds to wait for the client's close frame after ours before the pusher forgets the socket. @default {1000} */
  closeTimeout?: number;
  /** Most WebSockets held at once, closing ones included; more get 503. @default {Infinity} */
  maxConnections?: number;
  /** Where log lines go. @default {createLogger("pusher")} */
  logger?: Logger;
  /**
   * Called for each handshake the server refuses before the handler sees it:
   * `too_many_connections`, `bad_request` or `shutting_down`.
   */
  onRefused?: (reason: Refusal) => void;
}

/** A fetch handler, as `Deno.serve` takes. */
export type DenoHandler = (req: Request) => Response | Promise<Response>;

/** What each socket reads of its server's options, resolved. */
interface SocketSettings {
  maxMessageBytes: number;
  maxBufferedBytes: number;
  /** Seconds, as Deno takes it. */
  idleTimeout: number;
  closeTimeout: number;
  logger: Logger;
}

/** What a socket needs of the server it came through. */
interface SocketOwner {
  readonly settings: SocketSettings;
  readonly stopping: boolean;
  hold(socket: DenoSocket): void;
  forget(socket: DenoSocket): void;
}

const DEFAULT_SETTINGS: SocketSettings = {
  maxMessageBytes: DEFAULT_MAX_MESSAGE_BYTES,
  maxBufferedBytes: DEFAULT_MAX_BUFFERED_BYTES,
  idleTimeout: DEFAULT_IDLE_TIMEOUT / 1000,
  closeTimeout: DEFAULT_CLOSE_TIMEOUT,
  logger: createLogger("pusher"),
};

/** Handshakes that came through {@linkcode serveDeno}, with the server they came through. */
const served = new WeakMap<Request, SocketOwner>();

/**
 * `Deno.serve` as the pusher's {@linkcode Transport}: upgrades fetch
 * `Request`s with `Deno.upgradeWebSocket`. Through {@linkcode serveDeno} a
 * socket has that server's limits; through a bare `Deno.serve`, the
 * defaults.
 */
export const denoTransport: Transport = {
  isUpgrade(req: TransportRequest): boolean {
    if (!asksForWebSocket(req.headers.get("upgrade"))) return false;
    // serve()'s light request (pusher/server.ts) is not one Deno can
    // upgrade; answering it as a plain request would hide the mistake.
    if (!(req instanceof Request)) {
      throw new TypeError("Cannot upgrade: the request is not a fetch Request from Deno.serve");
    }
    return true;
  },
  upgrade(req: TransportRequest, handlers: SocketHandlers): Response {
    if (!denoTransport.isUpgrade(req)) throw new TypeError("Cannot upgrade: not a WebSocket handshake");
    const request = req as Request;
    const owner = served.get(request) ?? null;
    const settings = owner?.settings ?? DEFAULT_SETTINGS;
    // Deno answers no subprotocol unless told one, and a browser that asked
    // for one then fails the connection: the first asked for is echoed, as
    // serve() does.
    const protocol = requestedProtocols(request.headers.get("sec-websocket-protocol"))[0];
    // Read first: once upgraded, the request's headers are gone.
    const origin = request.headers.get("origin");
    const { socket, response } = Deno.upgradeWebSocket(request, {
      idleTimeout: settings.idleTimeout,
      ...(protocol ? { protocol } : {}),
    });
    const client = new DenoSocket(socket, origin, handlers, settings, owner);
    owner?.hold(client);
    return response;
  },
  // Deno frames each send itself: there is nothing to share but the text.
  prepare: (text: string): PreparedMessage => ({ text }),
};

/** Counts the UTF-8 bytes of `text`, stopping early once past `limit`. */
function utf8Over(text: string, limit: number): boolean {
  // A UTF-16 code unit takes 1 to 3 UTF-8 bytes; a surrogate pair (2 units) takes 4.
  if (text.length > limit) return true;
  if (text.length * 3 <= limit) return false;
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    bytes += unit < 0x80 ? 1 : unit < 0x800 || (unit >= 0xd800 && unit < 0xe000) ? 2 : 3;
    if (bytes > limit) return true;
  }
  return false;
}

/** One client of {@linkcode denoTransport}: a Deno `WebSocket` as the pusher's {@linkcode ClientSocket}. */
class DenoSocket implements ClientSocket {
  readonly origin: string | null;
  readonly #ws: WebSocket;
  readonly #handlers: SocketHandlers;
  readonly #settings: SocketSettings;
  readonly #owner: SocketOwner | null;
  #state: "connecting" | "open" | "closing" | "closed" = "connecting";
  /** Whether the handlers heard of the close (they hear once, after open). */
  #told = false;
  #closeCode: number = CloseCode.abnormal;
  #closeReason = "";
  #closeTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    ws: WebSocket,
    origin: string | null,
    handlers: SocketHandlers,
    settings: SocketSettings,
    owner: SocketOwner | null,
  ) {
    this.#ws = ws;
    this.origin = origin;
    this.#handlers = handlers;
    this.#settings = settings;
    this.#owner = owner;
    // Binary messages as bytes at once, not as a Blob to read later.
    ws.binaryType = "arraybuffer";
    ws.onopen = () => this.#opened();
    ws.onmessage = (event) => this.#received(event.data);
    // Not clean: the connection was lost (Deno says 0) or Deno closed it as
    // idle (1001, unanswered by the client); neither is the client's code.
    ws.onclose = (event) => this.#ended(event.wasClean ? event.code : CloseCode.abnormal, event.reason);
    // The close event follows with the details.
    ws.onerror = () => {};
  }

  get bufferedAmount(): number {
    return this.#state === "closed" ? 0 : this.#ws.bufferedAmount;
  }

  /** Sends a text message; past `maxBufferedBytes` waiting, closes the socket as slow instead. */
  send(message: string | PreparedMessage): void {
    // Deno's own idle close leaves us open until its close event, and its
    // send throws once closing: one throw would end a broadcast loop.
    if (this.#state !== "open" || this.#ws.readyState !== WebSocket.OPEN) return;
    this.#ws.send(typeof message === "string" ? message : message.text);
    const buffered = this.#ws.bufferedAmount;
    if (buffered <= this.#settings.maxBufferedBytes) return;
    this.#settings.logger.warn("closing a slow client", {
      reason: `over ${this.#settings.maxBufferedBytes} bytes buffered`,
      buffered,
    });
    this.close(CloseCode.slow, "slow");
  }

  /** Starts the closing handshake after what was sent; the pusher hears of the close within `closeTimeout`. */
  close(code: number, reason: string): void {
    if (this.#state !== "open") return;
    this.#state = "closing";
    this.#closeCode = code;
    this.#closeReason = reason;
    this.#guard(() => this.#handlers.closing?.(this, code, reason));
    try {
      this.#ws.close(code, reason);
    } catch (error) {
      // A code or reason Deno refuses is the caller's mistake: still closed.
      this.#settings.logger.error("could not close a socket", { code, error: String(error) });
      this.#ws.close(CloseCode.internalError, "internal error");
    }
    // Deno waits for the client's answer for as long as the client wants.
    this.#closeTimer = setTimeout(() => this.#tell(), this.#settings.closeTimeout);
  }

  #opened(): void {
    if (this.#state !== "connecting" || this.#owner?.stopping) {
      // Shut down between the 101 and now.
      this.#state = "closing";
      this.#ws.close(CloseCode.goingAway, "going away");
      return;
    }
    this.#state = "open";
    this.#guard(() => this.#handlers.open(this));
  }

  #received(data: string | ArrayBuffer): void {
    if (this.#state !== "open") return;
    const limit = this.#settings.maxMessageBytes;
    if (typeof data === "string" ? utf8Over(data, limit) : data.byteLength > limit) {
      this.#settings.logger.info("closing a client that broke the protocol", {
        code: CloseCode.messageTooBig,
        reason: `Message over ${limit} bytes`,
      });
      this.close(CloseCode.messageTooBig, `Message over ${limit} bytes`);
      return;
    }
    this.#guard(() => this.#handlers.message(this, typeof data === "string" ? data : new Uint8Array(data)));
  }

  #ended(code: number, reason: string): void {
    if (this.#state === "closed") return;
    const initiated = this.#state === "closing";
    this.#state = "closed";
    if (!initiated) {
      this.#closeCode = code;
      this.#closeReason = reason;
    }
    this.#owner?.forget(this);
    this.#tell();
  }

  /** Tells the handlers the socket closed, once, if they heard it open. */
  #tell(): void {
    clearTimeout(this.#closeTimer);
    if (this.#told) return;
    this.#told = true;
    this.#guard(() => this.#handlers.close(this, this.#closeCode, this.#closeReason));
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
}

/**
 * Serves `handler` on `Deno.serve`, with the pusher's limits around it where
 * Deno allows (see the module's notes); hand its handler
 * {@linkcode denoTransport}.
 *
 * @example
 * ```ts
 * import { Pusher } from "./pusher.ts";
 * import { denoTransport, serveDeno } from "./deno_transport.ts";
 * import { newWorkerId } from "../shared/address.ts";
 * import { openBus } from "../shared/open_bus.ts";
 *
 * const bus = openBus("channel://127.0.0.1:2206");
 * const pusher = new Pusher({ workerId: newWorkerId(), bus, transport: denoTransport });
 * serveDeno({ port: 4236 }, pusher.handler);
 * ```
 */
export function serveDeno(options: DenoServeOptions, handler: DenoHandler): Server {
  // Checked before listening: a bad option must not leave a listener behind.
  const idleTimeout = options.idleTimeout ?? DEFAULT_IDLE_TIMEOUT;
  const settings: SocketSettings = {
    maxMessageBytes: options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    maxBufferedBytes: options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES,
    idleTimeout: idleTimeout === 0 ? 0 : timerMs("idleTimeout", idleTimeout, 1) / 1000,
    closeTimeout: timerMs("closeTimeout", options.closeTimeout ?? DEFAULT_CLOSE_TIMEOUT),
    logger: options.logger ?? createLogger("pusher"),
  };
  const server = new DenoServer(settings, handler, {
    maxConnections: options.maxConnections ?? Infinity,
    onRefused: options.onRefused ?? (() => {}),
  });
  const http = Deno.serve({
    hostname: options.hostname ?? DEFAULT_HOSTNAME,
    port: options.port ?? DEFAULT_PUSHER_PORT,
    ...(options.reusePort ? { reusePort: true } : {}),
    ...(options.tls ? { cert: options.tls.cert, key: options.tls.key } : {}),
    // Deno's own line otherwise.
    onListen: () => {},
    onError: (error) => {
      settings.logger.error("handler threw", { error: String(error) });
      return text(500, "Internal error\n");
    },
  }, server.handle);
  server.attach(http);
  const addr = http.addr as Deno.NetAddr;
  options.signal?.addEventListener("abort", () => server.shutdown(), { once: true });
  options.onListen?.(addr);
  return {
    addr,
    finished: http.finished,
    get sockets() {
      return server.held.size;
    },
    // Deno reads request heads before the handler sees them, and does not say how many.
    handshaking: 0,
    shutdown: () => server.shutdown(),
    reloadCertificate: () =>
      Promise.reject(
        new Error(
          "Cannot reload the certificate on --server deno: Deno.serve's shutdown ends its WebSockets; restart the pusher, or use --server listen",
        ),
      ),
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

class DenoServer implements SocketOwner {
  readonly settings: SocketSettings;
  /** Sockets from their upgrade until Deno closes them: closing ones too, since only the client can end those. */
  readonly held = new Set<DenoSocket>();
  readonly #handler: DenoHandler;
  readonly #maxConnections: number;
  readonly #onRefused: (reason: Refusal) => void;
  #http: Deno.HttpServer | null = null;
  #stopping: Promise<void> | null = null;
  #allClosed: (() => void) | null = null;

  constructor(
    settings: SocketSettings,
    handler: DenoHandler,
    limits: { maxConnections: number; onRefused: (reason: Refusal) => void },
  ) {
    this.settings = settings;
    this.#handler = handler;
    this.#maxConnections = limits.maxConnections;
    this.#onRefused = limits.onRefused;
  }

  get stopping(): boolean {
    return this.#stopping !== null;
  }

  attach(http: Deno.HttpServer): void {
    this.#http = http;
  }

  hold(socket: DenoSocket): void {
    this.held.add(socket);
  }

  forget(socket: DenoSocket): void {
    this.held.delete(socket);
    if (this.held.size === 0) this.#allClosed?.();
  }

  /** Checks a handshake and the room for it before the handler sees it. */
  readonly handle = async (req: Request): Promise<Response> => {
    // Deno.upgradeWebSocket checks less (not the version, the key's form or
    // the subprotocols) and throws where a client should hear why.
    const handshake = checkHandshake(req, false);
    if (handshake instanceof Response) return this.#refuse(handshake, "bad_request");
    if (handshake !== null) {
      if (this.#stopping) return this.#refuse(text(503, "Shutting down\n"), "shutting_down");
      // Sockets are held from their upgrade, which the pusher's handler does
      // synchronously: handshakes in one turn of the event loop each see the last.
      if (this.held.size >= this.#maxConnections) {
        return this.#refuse(text(503, `Too many connections: ${this.#maxConnections}\n`), "too_many_connections");
      }
      served.set(req, this);
    }
    try {
      return await this.#handler(req);
    } catch (error) {
      this.settings.logger.error("handler threw", { error: String(error) });
      return text(500, "Internal error\n");
    }
  };

  /** Closes every socket with 1001 after what it was sent, waits up to `closeTimeout` for them, then stops Deno's server, which ends the rest. */
  shutdown(): Promise<void> {
    this.#stopping ??= (async () => {
      const closed = new Promise<void>((resolve) => (this.#allClosed = resolve));
      // One still opening closes itself once open, unheard by its handlers.
      for (const socket of this.held) socket.close(CloseCode.goingAway, "going away");
      if (this.held.size > 0) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          closed,
          new Promise((resolve) => (timer = setTimeout(resolve, this.settings.closeTimeout))),
        ]);
        clearTimeout(timer);
      }
      await this.#http!.shutdown();
      await this.#http!.finished;
    })();
    return this.#stopping;
  }

  async #refuse(response: Response, refusal: Refusal): Promise<Response> {
    this.#onRefused(refusal);
    const reason = (await response.clone().text()).trim();
    this.settings.logger.info("rejected a request", { status: response.status, reason });
    return response;
  }
}
