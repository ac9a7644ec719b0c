/**
 * An HTTP/1.1 server on a `Deno.Listener` (TCP, or TLS from
 * `Deno.listenTls`) for a fetch-style handler `(req: Request) => Response`,
 * with the bounds a server facing the internet needs and `Deno.serve` does
 * not give: a time limit on each request head, on an idle keep-alive
 * connection, on reading a body and on each write, a cap on open
 * connections, on a head's size and on a body's.
 *
 * Keep-alive and pipelining: the requests of one connection that have no
 * body are handled at once, up to `maxPipeline` of them, and answered in the
 * order they came. A request with a body is read from the connection
 * itself, so it waits for the answers before it, and nothing after it is
 * read until its own answer is written. Bodies come as `Content-Length` or
 * `chunked`, streamed to the handler as it reads them (`Expect:
 * 100-continue` is answered when it first reads). Answers are written with
 * their length when their body is known, else chunked (an event stream):
 * one write per answer for the former.
 *
 * The server refuses, with a one-line reason (or in the form the `refusal`
 * option gives the request's path) and `connection: close`: a
 * malformed head (400), a head over `maxHeadBytes` (431), a declared body
 * over `maxBodyBytes` (413), an HTTP version other than 1.x (505), a
 * transfer coding other than chunked (501), an `Expect` other than
 * `100-continue` (417), a head not received within `headTimeout` (408),
 * more than a few empty lines before a request line (400). Empty lines are
 * no activity: they do not put off the idle deadline.
 *
 * @module
 */

import { AcceptLog, acceptNext } from "./accept.ts";
import { concat, decodeLatin1 } from "./bytes.ts";
import { timerMs } from "./duration.ts";
import { isShared, stringBodyOf, text, TEXT_CONTENT_TYPE } from "./http.ts";
import { authorityOf, type HeadError, isHeadError, parseRequestHead, type RequestHead, trimOws } from "./http_head.ts";
import { createLogger, type LogFields, type Logger } from "./log.ts";

/** Largest request head by default: 16 KiB, as Node's `maxHeaderSize`. */
export const DEFAULT_MAX_HEAD_BYTES = 16 * 1024;
/** Milliseconds a request head gets by default: 10 s. */
export const DEFAULT_HEAD_TIMEOUT = 10_000;
/** Milliseconds a keep-alive connection may sit idle between requests by default: 60 s. */
export const DEFAULT_IDLE_TIMEOUT = 60_000;
/** Milliseconds reading one request body may take by default: 30 s. */
export const DEFAULT_BODY_TIMEOUT = 30_000;
/** Milliseconds one write to a client may stay blocked by default: 30 s. */
export const DEFAULT_SEND_TIMEOUT = 30_000;
/** Connections open at once by default: 10,000. */
export const DEFAULT_MAX_CONNECTIONS = 10_000;
/** Largest request body by default: 1 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
/** Requests of one connection handled at once by default. */
export const DEFAULT_MAX_PIPELINE = 32;

/** Milliseconds a connection closed after a refusal keeps reading (and dropping) what its client still sends. */
const LINGER_MS = 2000;

/** Options for {@linkcode serveHttp}. */
export interface HttpServerOptions {
  /**
   * Where to accept connections: a TCP listener, or a TLS one from
   * `Deno.listenTls` (the handler then sees `https:` URLs). The server
   * closes it on shutdown. @default {a TCP listener on hostname:port}
   */
  listener?: Deno.Listener<Deno.Conn, Deno.NetAddr>;
  /** Address to listen on when no `listener` is given. @default {"127.0.0.1"} */
  hostname?: string;
  /** Port to listen on when no `listener` is given; 0 picks a free one. @default {0} */
  port?: number;
  /** Aborting it shuts the server down. @default {undefined} */
  signal?: AbortSignal;
  /** Called once listening. @default {undefined} */
  onListen?: (addr: Deno.NetAddr) => void;
  /** Largest request head, in bytes; larger gets 431. @default {16384} */
  maxHeadBytes?: number;
  /**
   * Milliseconds a request head gets: from the accept for a connection's
   * first request, from the first byte of a later one. Past it the
   * connection is closed, with a 408 if part of a head came. @default {10000}
   */
  headTimeout?: number;
  /** Milliseconds a keep-alive connection may wait for its next request before it is closed. @default {60000} */
  idleTimeout?: number;
  /**
   * Milliseconds a request body may take to arrive, from its head; past it
   * the handler's read of it fails and the connection closes after the
   * answer. @default {30000}
   */
  bodyTimeout?: number;
  /** Milliseconds one write may stay blocked (a client that does not read) before the connection is closed. @default {30000} */
  sendTimeout?: number;
  /**
   * Connections open at once. One more is accepted and closed at once, so
   * that it does not wait in the kernel's queue: a log line says so at the
   * start of each such burst, and another how many were refused once one
   * is accepted again. @default {10000}
   */
  maxConnections?: number;
  /** Largest request body, in bytes: a larger `Content-Length` gets 413, a longer chunked body fails its read. @default {1048576} */
  maxBodyBytes?: number;
  /** Requests without a body of one connection handled at once; more wait for the first answers. @default {32} */
  maxPipeline?: number;
  /** Where log lines go. @default {createLogger("http")} */
  logger?: Logger;
  /**
   * Tried first for each request without a body, or whose whole
   * `Content-Length` body came with its head; the handler answers what it
   * leaves. @default {undefined}
   */
  fastPath?: FastPath;
  /**
   * How the server writes a refusal of its own (400, 408, 413, 417, 431,
   * 501, 505) to a request whose request line names a path: its body and
   * headers, for a path whose answers have a form of their own (an API's
   * JSON). Undefined, or no answer for the path: the one-line reason as
   * text. @default {undefined}
   */
  refusal?: RefusalForm;
}

/**
 * The body and headers (the content type among them) of a refusal the
 * server writes itself, with `status` and one-line `reason`, to a request
 * for `path`; undefined leaves it as text.
 */
export type RefusalForm = (
  status: number,
  reason: string,
  path: string,
) => { readonly body: string; readonly headers: Readonly<Record<string, string>> } | undefined;

/**
 * The error a request body's read fails with when the body grows past the
 * server's `maxBodyBytes` (a chunked one: a `Content-Length` over it is
 * refused with 413 before the handler is called), so that a handler can
 * answer 413 too.
 */
export class BodyTooLargeError extends RangeError {
  override name = "BodyTooLargeError";
}

/** A running server. */
export interface HttpServer extends AsyncDisposable {
  /** The address it listens on: read the port back from here after `port: 0`. */
  readonly addr: Deno.NetAddr;
  /** Resolves once shut down and every connection is closed. */
  readonly finished: Promise<void>;
  /** Connections open now. */
  readonly connections: number;
  /**
   * Accepts from `listener` from now on and closes the one before, leaving
   * the connections it accepted open: how a reloaded certificate takes
   * effect (the new TLS listener opens beside the old one with `reusePort`).
   * After shutdown it closes `listener`.
   */
  replaceListener(listener: Deno.Listener<Deno.Conn, Deno.NetAddr>): void;
  /**
   * Stops accepting, closes idle connections, lets the requests in flight be
   * answered (with `connection: close`), then closes their connections.
   * Resolves once every connection is closed; calling it again is harmless.
   */
  shutdown(): Promise<void>;
}

/** A fetch-style request handler. */
export type HttpHandler = (req: Request) => Response | Promise<Response>;

/** A request as the server read it, before any `Request` is built: what a fast path reads. */
export interface RawRequest {
  /** `GET`, `POST`, ... */
  readonly method: string;
  /** The request target as sent: path and query (taken from an absolute-form target). */
  readonly target: string;
  /** Header values by case-insensitive name; repeated fields are joined with ", ", as `Headers.get` does. */
  readonly headers: { get(name: string): string | null };
  /**
   * The whole body, which came with the head (`Content-Length`, at most the
   * server's `maxBodyBytes`); null for a request without one. A view of the
   * server's read buffer, valid only until the fast path returns: one that
   * needs the bytes later copies them (or decodes them) first. Not a copy
   * per request: that was a malloc'd buffer per request, and much of what
   * the allocator kept after a load of batches.
   */
  readonly body: Uint8Array | null;
}

/**
 * Answers a request from its head (and its body, when the whole of it came
 * with the head), or returns undefined to leave it to the handler. Building
 * a `Request` (its `Headers`, its URL, a stream for its body) costs more than
 * the rest of a small request's answer. A request it answers is pipelined
 * like one without a body: the next request's head is read while its answer
 * is waited for.
 */
export type FastPath = (req: RawRequest) => Response | Promise<Response> | undefined;

/**
 * Serves `handler` until shut down.
 *
 * @example
 * ```ts
 * import { serveHttp } from "./http_server.ts";
 *
 * await using server = serveHttp({ port: 0 }, () => new Response("ok"));
 * const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
 * await response.text(); // "ok"
 * ```
 */
export function serveHttp(options: HttpServerOptions, handler: HttpHandler): HttpServer {
  // Checked before listening: a bad option must not leave a listener behind.
  const settings: Settings = {
    maxHeadBytes: positive("maxHeadBytes", options.maxHeadBytes ?? DEFAULT_MAX_HEAD_BYTES),
    headTimeout: timerMs("headTimeout", options.headTimeout ?? DEFAULT_HEAD_TIMEOUT, 1),
    idleTimeout: timerMs("idleTimeout", options.idleTimeout ?? DEFAULT_IDLE_TIMEOUT, 1),
    bodyTimeout: timerMs("bodyTimeout", options.bodyTimeout ?? DEFAULT_BODY_TIMEOUT, 1),
    sendTimeout: timerMs("sendTimeout", options.sendTimeout ?? DEFAULT_SEND_TIMEOUT, 1),
    maxConnections: positive("maxConnections", options.maxConnections ?? DEFAULT_MAX_CONNECTIONS),
    maxBodyBytes: positive("maxBodyBytes", options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES),
    maxPipeline: positive("maxPipeline", options.maxPipeline ?? DEFAULT_MAX_PIPELINE),
    logger: options.logger ?? createLogger("http"),
    fastPath: options.fastPath,
    refusal: options.refusal,
  };
  const listener = options.listener ??
    Deno.listen({ hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0 });
  const server = new Server(listener, handler, settings);
  options.signal?.addEventListener("abort", () => server.shutdown(), { once: true });
  options.onListen?.(server.addr);
  return {
    addr: server.addr,
    finished: server.finished,
    get connections() {
      return server.connections.size;
    },
    replaceListener: (listener) => server.replaceListener(listener),
    shutdown: () => server.shutdown(),
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

function positive(name: string, value: number): number {
  if (!(value >= 1)) throw new RangeError(`Invalid ${name}: expected a positive number, got ${value}`);
  return value;
}

/** `HttpServerOptions` with their defaults. */
interface Settings {
  maxHeadBytes: number;
  headTimeout: number;
  idleTimeout: number;
  bodyTimeout: number;
  sendTimeout: number;
  maxConnections: number;
  maxBodyBytes: number;
  maxPipeline: number;
  logger: Logger;
  fastPath: FastPath | undefined;
  refusal: RefusalForm | undefined;
}

class Server {
  readonly addr: Deno.NetAddr;
  readonly finished: Promise<void>;
  readonly connections = new Set<Connection>();
  readonly handler: HttpHandler;
  readonly settings: Settings;
  /** `http` or `https`: the scheme of the URLs the handler sees. */
  readonly scheme: string;
  #listener: Deno.Listener<Deno.Conn, Deno.NetAddr>;
  readonly #watchdog: ReturnType<typeof setInterval>;
  #stopping: Promise<void> | null = null;
  #allClosed: (() => void) | null = null;
  /** Connections refused since the last one accepted: the current burst. */
  #refused = 0;
  /** The bytes of the shared answers ({@linkcode isShared}) as last written, and the `date` they carry. */
  readonly prepared = new WeakMap<Response, { date: string; bytes: Uint8Array }>();
  /** The `date` header's value, renewed by the watchdog: formatting it per answer costs more than the rest of the head. */
  date = new Date().toUTCString();

  constructor(listener: Deno.Listener<Deno.Conn, Deno.NetAddr>, handler: HttpHandler, settings: Settings) {
    this.#listener = listener;
    this.addr = listener.addr;
    this.handler = handler;
    this.settings = settings;
    // A TLS listener is the only one with this method.
    this.scheme = "handshake" in listener || Object.getPrototypeOf(listener)?.constructor?.name === "TlsListener"
      ? "https"
      : "http";
    const { headTimeout, idleTimeout, bodyTimeout, sendTimeout } = settings;
    const tick = Math.min(1000, Math.max(10, Math.min(headTimeout, idleTimeout, bodyTimeout, sendTimeout) / 4));
    this.#watchdog = setInterval(() => this.#watch(), tick);
    this.finished = this.#accept();
  }

  get stopping(): boolean {
    return this.#stopping !== null;
  }

  replaceListener(listener: Deno.Listener<Deno.Conn, Deno.NetAddr>): void {
    const old = this.#stopping ? listener : this.#listener;
    this.#listener = this.#stopping ? this.#listener : listener;
    try {
      old.close();
    } catch { /* closed */ }
  }

  shutdown(): Promise<void> {
    this.#stopping ??= (async () => {
      try {
        this.#listener.close();
      } catch { /* closed */ }
      const closed = new Promise<void>((resolve) => (this.#allClosed = resolve));
      for (const connection of this.connections) connection.stop();
      await this.finished;
      if (this.connections.size > 0) await closed;
      clearInterval(this.#watchdog);
    })();
    return this.#stopping;
  }

  async #accept(): Promise<void> {
    const log = new AcceptLog(this.settings.logger);
    while (true) {
      const listener = this.#listener;
      // A listener replaced by replaceListener is closed: its accept ends, and the loop goes on with the new one.
      const replaced = () => this.#listener !== listener;
      const conn = await acceptNext(listener, {
        stopping: () => this.#stopping !== null || replaced(),
        log,
      });
      if (!conn) {
        if (this.#stopping === null && replaced()) continue;
        break;
      }
      if (this.#stopping) {
        close(conn);
        continue;
      }
      if (this.connections.size >= this.settings.maxConnections) {
        // Closed at once rather than left in the kernel's queue, where a
        // client would wait for its connect to time out.
        if (this.#refused++ === 0) {
          this.settings.logger.warn("refusing connections: at the limit of open connections", {
            limit: this.settings.maxConnections,
          });
        }
        close(conn);
        continue;
      }
      if (this.#refused > 0) {
        this.settings.logger.info("accepting connections again", { refused: this.#refused });
        this.#refused = 0;
      }
      const connection = new Connection(this, conn);
      this.connections.add(connection);
      connection.run().finally(() => {
        this.connections.delete(connection);
        if (this.connections.size === 0) this.#allClosed?.();
      });
    }
  }

  /**
   * Acts on the deadlines that passed, and logs one line for all of them:
   * thousands of connections that trickle their heads must not cost a log
   * line each.
   */
  #watch(): void {
    const now = performance.now();
    this.date = new Date().toUTCString();
    const counts = { head: 0, body: 0, send: 0 };
    for (const connection of this.connections) {
      const missed = connection.check(now);
      if (missed !== null && missed !== "idle") counts[missed]++;
    }
    if (counts.head + counts.body + counts.send === 0) return;
    const { headTimeout, bodyTimeout, sendTimeout } = this.settings;
    const fields: LogFields = {};
    if (counts.head > 0) Object.assign(fields, { headTimeouts: counts.head, headTimeout });
    if (counts.body > 0) Object.assign(fields, { bodyTimeouts: counts.body, bodyTimeout });
    if (counts.send > 0) Object.assign(fields, { sendTimeouts: counts.send, sendTimeout });
    this.settings.logger.info("closing connections past a deadline", fields);
  }
}

/** What a connection is waiting for from its client, which says what its deadline means. */
type ReadPhase = "head" | "idle" | "body" | "linger" | "none";

/** How a request's body is framed. */
type Framing = { kind: "none" } | { kind: "length"; length: number } | { kind: "chunked" };

const utf8 = new TextEncoder();
const CONTINUE = utf8.encode("HTTP/1.1 100 Continue\r\n\r\n");
const CHUNKED_END = utf8.encode("0\r\n\r\n");
/** The request head's first read buffer: most heads are well under 1 KiB. */
const FIRST_BUFFER_BYTES = 2048;
/** Answers queued for one connection past which the next waits for them to be written. */
const OUT_HIGH_WATER_BYTES = 64 * 1024;
/** The read buffer of a body's bytes that did not come with its head. */
const BODY_READ_BYTES = 16 * 1024;
/**
 * Bytes of empty lines (CR, LF) skipped before a request line: one CRLF is
 * what an old client may send after a POST body (RFC 9112 2.2), a few more
 * are tolerated; past this the client is refused.
 */
const MAX_EMPTY_LINE_BYTES = 8;
/** Headers the server writes itself, whatever the handler's response says. */
const OWN_HEADERS = new Set(["connection", "content-length", "transfer-encoding", "keep-alive", "date"]);

/** Reason phrases of the statuses a `Response` built without one may carry. */
const STATUS_TEXT: Record<number, string> = {
  100: "Continue",
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  409: "Conflict",
  411: "Length Required",
  413: "Content Too Large",
  415: "Unsupported Media Type",
  417: "Expectation Failed",
  422: "Unprocessable Content",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** A request body being read from its connection. */
interface BodyState {
  framing: Framing;
  /** Bytes left of a `Content-Length` body, or of the current chunk. */
  left: number;
  /** Where a chunked body is: a size line next, the data, the CRLF after it, the trailers. */
  chunk: "size" | "data" | "crlf" | "trailers";
  /** Bytes handed to the handler so far. */
  read: number;
  expectContinue: boolean;
  finished: boolean;
  /** Set when the body stream is errored or cancelled before its end. */
  abandoned: boolean;
  controller: ReadableStreamDefaultController<Uint8Array> | null;
}

class Connection {
  readonly #server: Server;
  readonly #conn: Deno.Conn;
  readonly #settings: Settings;
  #buffer = new Uint8Array(FIRST_BUFFER_BYTES);
  #start = 0;
  #end = 0;
  #phase: ReadPhase = "head";
  #readDeadline: number;
  #writeDeadline = Infinity;
  #closed = false;
  /** No request is read after the ones already read: answered, the connection closes. */
  #closeAfter = false;
  /** Close with a lingering read once the last answer is out: the client may still be sending. */
  #linger = false;
  /** The answers in order: each one's write waits for the one before. */
  #writes: Promise<void> = Promise.resolve();
  #inFlight = 0;
  #wake: (() => void) | null = null;
  #body: BodyState | null = null;
  #streaming: ReadableStreamDefaultReader<Uint8Array> | null = null;
  /** The client has closed its side: no more requests come. */
  #peerEnded = false;
  /** Bytes queued for the next write, and their total. */
  #out: Uint8Array[] = [];
  #outBytes = 0;
  #flushing = false;
  #flushWaiters: (() => void)[] = [];
  /** Bytes of empty lines skipped before the next request line. */
  #skipped = 0;

  constructor(server: Server, conn: Deno.Conn) {
    this.#server = server;
    this.#conn = conn;
    this.#settings = server.settings;
    this.#readDeadline = performance.now() + this.#settings.headTimeout;
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  }

  /** Serves the connection's requests until it closes. */
  async run(): Promise<void> {
    try {
      while (!this.#closeAfter && !this.#closed) {
        const head = await this.#readHead();
        if (head === null) {
          // The client is done sending. The answers to what it sent still go out, but a stream (an event
          // stream) would hold the connection open for no one.
          this.#peerEnded = true;
          this.#streaming?.cancel().catch(() => {});
          break;
        }
        if (isHeadError(head)) {
          await this.#refuse(head.status, head.reason, head.path);
          break;
        }
        const framing = this.#framing(head);
        if ("status" in framing) {
          await this.#refuse(framing.status, framing.reason, pathOf(head.target));
          break;
        }
        if (wantsClose(head)) this.#closeAfter = true;
        // An HTTP/1.0 answer may still turn out to close the connection (a stream): nothing after it is read before it.
        const pipeline = head.http10 ? 1 : this.#settings.maxPipeline;
        const fast = this.#fast(head, framing);
        if (fast !== undefined) {
          if (framing.kind === "length") this.#start += framing.length;
          this.#dispatch(head, null, fast);
          if (this.#inFlight >= pipeline) await this.#drained(pipeline - 1);
          continue;
        }
        if (framing.kind === "none") {
          this.#dispatch(head, null);
          if (this.#inFlight >= pipeline) await this.#drained(pipeline - 1);
          continue;
        }
        // Read from the connection itself: the answers before it go out first, and nothing after it is read until its own.
        await this.#drained(0);
        if (this.#closed) break;
        const expect = fieldOf(head, "expect");
        if (expect !== null && expect.toLowerCase() !== "100-continue") {
          await this.#refuse(417, `Expectation not supported: ${expect}`, pathOf(head.target));
          break;
        }
        this.#body = {
          framing,
          left: framing.kind === "length" ? framing.length : 0,
          chunk: "size",
          read: 0,
          expectContinue: expect !== null && !head.http10,
          finished: false,
          abandoned: false,
          controller: null,
        };
        this.#setPhase("body", this.#settings.bodyTimeout);
        this.#dispatch(head, this.#body);
        await this.#drained(0);
      }
      await this.#drained(0);
      await this.#flushed();
    } catch (error) {
      this.#settings.logger.debug("connection failed", { error: String(error) });
    } finally {
      if (this.#linger && !this.#closed) await this.#lingeringClose();
      this.close();
    }
  }

  /**
   * Shutdown: closes the connection now if idle, else after the answers to
   * the requests already read. A body still coming is not waited for: its
   * read fails, as under `Deno.serve`, and the handler answers that.
   */
  stop(): void {
    this.#closeAfter = true;
    if (this.#inFlight === 0) return this.close();
    this.#failBody(new Deno.errors.Interrupted("The server is shutting down"));
  }

  /** Closes the connection; closing it twice is harmless. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    close(this.#conn);
    this.#streaming?.cancel().catch(() => {});
    this.#failBody(new Deno.errors.ConnectionReset("Connection closed before the body ended"));
    this.#wake?.();
  }

  /** Called by the watchdog: acts on a deadline that passed, and says which (null: none). */
  check(now: number): "head" | "body" | "send" | "idle" | null {
    if (this.#closed) return null;
    if (now >= this.#writeDeadline) {
      this.close();
      return "send";
    }
    if (now < this.#readDeadline) return null;
    switch (this.#phase) {
      case "head":
        if (this.#end > this.#start) {
          // Best effort: a client that trickles its head reads little, and the watchdog closes it in any case.
          this.#setPhase("linger", LINGER_MS);
          const refusal = this.#errorBytes(
            408,
            `Request head not received within ${this.#settings.headTimeout} ms`,
            requestLinePath(this.#buffer.subarray(this.#start, this.#end)),
          );
          // After what is still being written of the answers before it.
          this.#flushed().then(() => this.#closed ? 0 : this.#conn.write(refusal))
            .catch(() => {}).finally(() => this.close());
        } else {
          this.close();
        }
        return "head";
      case "body":
        this.#closeAfter = true;
        this.#failBody(new Deno.errors.TimedOut(`Request body not received within ${this.#settings.bodyTimeout} ms`));
        // The handler answers the failed read; if it does not, the connection goes anyway.
        this.#setPhase("linger", LINGER_MS);
        return "body";
      default:
        this.close();
        return "idle";
    }
  }

  #setPhase(phase: ReadPhase, timeout: number): void {
    this.#phase = phase;
    this.#readDeadline = timeout === Infinity ? Infinity : performance.now() + timeout;
  }

  /** Reads into the buffer after `#end`, compacting or growing it first if full; the count, or null at the end. */
  async #read(limit: number): Promise<number | null> {
    if (this.#end === this.#buffer.length) {
      if (this.#start > 0) {
        this.#buffer.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      } else {
        const grown = new Uint8Array(Math.min(this.#buffer.length * 2, Math.max(limit, this.#buffer.length)));
        if (grown.length === this.#buffer.length) return null;
        grown.set(this.#buffer);
        this.#buffer = grown;
      }
    }
    if (this.#closed) return null;
    try {
      return await this.#conn.read(this.#buffer.subarray(this.#end));
    } catch {
      return null;
    }
  }

  /** The next request head, or why it cannot be served; null when the connection ended first. */
  async #readHead(): Promise<RequestHead | RefusedHead | null> {
    const limit = this.#settings.maxHeadBytes;
    let scanned = this.#start;
    while (true) {
      // Empty lines before a request line are skipped (RFC 9112 2.2), a few of them: they are no request, and a
      // client that sends nothing else is idle, not busy.
      while (this.#start < this.#end && (this.#buffer[this.#start] === 13 || this.#buffer[this.#start] === 10)) {
        this.#start++;
        if (++this.#skipped > MAX_EMPTY_LINE_BYTES) {
          return { status: 400, reason: "Too many empty lines before a request line", path: null };
        }
      }
      if (this.#start === this.#end) {
        this.#start = this.#end = 0;
        scanned = 0;
        // A large head grew the buffer: an idle connection does not keep that.
        if (this.#buffer.length > BODY_READ_BYTES) this.#buffer = new Uint8Array(FIRST_BUFFER_BYTES);
        // Once idle, it stays idle from when it became so: empty lines do not put the deadline off.
        if (this.#phase !== "head" && this.#phase !== "idle") {
          this.#setPhase(this.#inFlight > 0 ? "none" : "idle", this.#idleTimeout());
        }
      } else if (this.#phase !== "head") {
        // From the first byte of a later request (or of the rest of a pipelined batch), or, while answers
        // to the requests before it are still coming, from the last of them: a slow answer is not the
        // client's delay, and a 408 must not come before them.
        this.#setPhase("head", this.#inFlight > 0 ? Infinity : this.#settings.headTimeout);
      }
      const end = indexOfHeadEnd(this.#buffer, Math.max(scanned, this.#start), this.#end);
      if (end >= 0) {
        if (end + 4 - this.#start > limit) return this.#tooLarge();
        const head = decodeLatin1(this.#buffer.subarray(this.#start, end));
        this.#skipped = 0;
        this.#start = end + 4;
        if (this.#start === this.#end) this.#start = this.#end = 0;
        this.#setPhase("none", Infinity);
        const parsed = parseRequestHead(head);
        return isHeadError(parsed) ? { ...parsed, path: requestLinePath(head) } : parsed;
      }
      if (this.#end - this.#start >= limit) return this.#tooLarge();
      scanned = Math.max(this.#start, this.#end - 3);
      const before = this.#start;
      const n = await this.#read(limit + 4);
      if (n === null) return null;
      // Compaction moved the bytes: the scan restarts where they now are.
      if (this.#start !== before) scanned = Math.max(0, scanned - before);
      this.#end += n;
    }
  }

  #tooLarge(): RefusedHead {
    const reason = `Request head too large: over ${this.#settings.maxHeadBytes} bytes`;
    return { status: 431, reason, path: requestLinePath(this.#buffer.subarray(this.#start, this.#end)) };
  }

  #idleTimeout(): number {
    return this.#inFlight > 0 ? Infinity : this.#settings.idleTimeout;
  }

  #framing(head: RequestHead): Framing | { status: 400 | 413 | 501; reason: string } {
    let length: string | null = null;
    let coding: string | null = null;
    for (const [name, value] of head.fields) {
      const lower = name.toLowerCase();
      if (lower === "content-length") {
        if (length !== null && length !== value) return { status: 400, reason: "Conflicting Content-Length headers" };
        length = value;
      } else if (lower === "transfer-encoding") {
        coding = coding === null ? value : `${coding}, ${value}`;
      }
    }
    if (coding !== null) {
      // Both framings at once is how requests are smuggled past proxies (RFC 9112 6.1).
      if (length !== null) return { status: 400, reason: "Both Content-Length and Transfer-Encoding" };
      if (head.http10) return { status: 400, reason: "Transfer-Encoding in an HTTP/1.0 request" };
      // A list of codings, each a token and its parameters (RFC 9112 6.1): what is not is malformed, not unknown.
      if (!coding.split(",").every((element) => TRANSFER_CODING.test(trimOws(element)))) {
        return { status: 400, reason: `Bad Transfer-Encoding: ${coding.slice(0, 40)}` };
      }
      if (coding.toLowerCase() !== "chunked") {
        return { status: 501, reason: `Transfer coding not supported: ${coding}; send chunked or Content-Length` };
      }
      return { kind: "chunked" };
    }
    if (length === null) return { kind: "none" };
    if (!/^\d{1,15}$/.test(length)) return { status: 400, reason: `Bad Content-Length: ${length.slice(0, 40)}` };
    const bytes = Number(length);
    if (bytes > this.#settings.maxBodyBytes) {
      return { status: 413, reason: `Body too large: over the ${this.#settings.maxBodyBytes}-byte limit` };
    }
    return bytes === 0 ? { kind: "none" } : { kind: "length", length: bytes };
  }

  /**
   * The fast path's answer to a request without a body, or with the whole of
   * its `Content-Length` body already read; undefined when it leaves the
   * request to the handler (or there is no fast path).
   */
  #fast(head: RequestHead, framing: Framing): Response | Promise<Response> | undefined {
    const fastPath = this.#settings.fastPath;
    if (fastPath === undefined || framing.kind === "chunked") return undefined;
    let body: Uint8Array | null = null;
    if (framing.kind === "length") {
      // An expectation (answered or refused by the body's own path) is the handler's too.
      if (this.#end - this.#start < framing.length || fieldOf(head, "expect") !== null) return undefined;
      body = this.#buffer.subarray(this.#start, this.#start + framing.length);
    }
    try {
      return fastPath(new RawHead(head, body));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Calls the handler (unless the fast path answered) and queues its answer behind the ones before it. */
  #dispatch(head: RequestHead, body: BodyState | null, fast?: Response | Promise<Response>): void {
    this.#inFlight++;
    let answer: Response | Promise<Response>;
    try {
      answer = fast ?? this.#server.handler(this.#request(head, body));
    } catch (error) {
      answer = Promise.reject(error);
    }
    const http10 = head.http10;
    const headOnly = head.method === "HEAD";
    this.#writes = this.#writes.then(() => this.#answer(answer, headOnly, http10, body));
  }

  #request(head: RequestHead, body: BodyState | null): Request {
    const url = `${this.#server.scheme}://${
      head.host ?? authorityOf(this.#conn.localAddr as Deno.NetAddr)
    }${head.target}`;
    const init: RequestInit = { method: head.method, headers: head.fields };
    // `new Request` upper-cases get, head, post... (the Fetch standard's
    // normalisation): a GET or HEAD in any case with a body. The handler does
    // not see that body, and the connection closes after the answer.
    const upper = head.method.toUpperCase();
    if (body !== null && upper !== "GET" && upper !== "HEAD") init.body = this.#bodyStream(body);
    let request: Request;
    try {
      request = new Request(url, init);
    } catch (error) {
      throw new BadRequest(`Bad request: ${(error as Error).message}`);
    }
    // Methods are case-sensitive (RFC 9110 9.1): `get` is not GET, and the
    // handler sees it as sent (as under `Deno.serve`), to refuse it as the
    // method it does not know that it is.
    if (request.method !== head.method) Object.defineProperty(request, "method", { value: head.method });
    return request;
  }

  #bodyStream(body: BodyState): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>({
      start: (controller) => {
        body.controller = controller;
      },
      pull: async (controller) => {
        if (body.expectContinue) {
          body.expectContinue = false;
          if (this.#start === this.#end) {
            this.#send(CONTINUE);
            await this.#flushed();
          }
        }
        const chunk = await this.#readBody(body);
        if (body.abandoned) return;
        if (chunk === null) {
          body.abandoned = true;
          controller.error(new Deno.errors.UnexpectedEof("Connection closed before the body ended"));
          return;
        }
        if (chunk.length > 0) controller.enqueue(chunk);
        if (body.finished) {
          controller.close();
          body.controller = null;
          this.#setPhase("none", Infinity);
        }
      },
      cancel: () => {
        body.abandoned = true;
        body.controller = null;
      },
    }, { highWaterMark: 0 });
  }

  #failBody(error: Error): void {
    const body = this.#body;
    if (body === null || body.finished || body.abandoned) return;
    body.abandoned = true;
    try {
      body.controller?.error(error);
    } catch { /* closed */ }
    body.controller = null;
  }

  /** The body's next bytes (empty once it ends), or null when the connection ends first. */
  async #readBody(body: BodyState): Promise<Uint8Array | null> {
    let more = false;
    while (!body.finished) {
      if (this.#start === this.#end || more) {
        if (this.#start === this.#end) {
          this.#start = this.#end = 0;
          if (this.#buffer.length < BODY_READ_BYTES) this.#buffer = new Uint8Array(BODY_READ_BYTES);
        }
        const n = await this.#read(this.#settings.maxHeadBytes + BODY_READ_BYTES);
        if (n === null || body.abandoned) return null;
        this.#end += n;
        more = false;
      }
      const chunk = this.#takeBody(body);
      if (chunk === null) return null;
      if (chunk === NEED_MORE) more = true;
      else if (chunk.length > 0 || body.finished) return chunk;
    }
    return new Uint8Array(0);
  }

  /**
   * Takes what the buffer holds of the body: data (copied out), or a step
   * of the chunked framing (an empty array). Null for a framing error, with
   * the body failed.
   */
  #takeBody(body: BodyState): Uint8Array | null {
    const available = this.#end - this.#start;
    if (body.framing.kind === "length" || body.chunk === "data") {
      const n = Math.min(available, body.left);
      const data = this.#buffer.slice(this.#start, this.#start + n);
      this.#start += n;
      body.left -= n;
      body.read += n;
      if (body.left === 0) {
        if (body.framing.kind === "length") body.finished = true;
        else body.chunk = "crlf";
      }
      return data;
    }
    // Chunked framing: lines end in CRLF (RFC 9112 7.1).
    const lineEnd = this.#buffer.subarray(this.#start, this.#end).indexOf(10);
    if (lineEnd < 0) {
      // A size line, or a trailer line, longer than a head is refused.
      if (available >= this.#settings.maxHeadBytes) return this.#badBody("Bad chunked body: line too long");
      return NEED_MORE;
    }
    if (lineEnd === 0 || this.#buffer[this.#start + lineEnd - 1] !== 13) {
      return this.#badBody("Bad chunked body: a line that does not end in CRLF");
    }
    const line = decodeLatin1(this.#buffer.subarray(this.#start, this.#start + lineEnd - 1));
    this.#start += lineEnd + 1;
    if (body.chunk === "crlf") {
      if (line !== "") return this.#badBody("Bad chunked body: no CRLF after a chunk's data");
      body.chunk = "size";
      return new Uint8Array(0);
    }
    if (body.chunk === "trailers") {
      // Trailers are read and dropped.
      if (line === "") body.finished = true;
      return new Uint8Array(0);
    }
    const size = /^([0-9A-Fa-f]{1,8})(?:[ \t]*;.*)?$/.exec(line);
    if (!size) return this.#badBody("Bad chunked body: bad chunk size line");
    const bytes = parseInt(size[1]!, 16);
    if (bytes === 0) {
      body.chunk = "trailers";
      return new Uint8Array(0);
    }
    if (body.read + bytes > this.#settings.maxBodyBytes) {
      return this.#badBody(
        new BodyTooLargeError(`Body too large: over the ${this.#settings.maxBodyBytes}-byte limit`),
      );
    }
    body.left = bytes;
    body.chunk = "data";
    return new Uint8Array(0);
  }

  /** Fails the body's read with `reason` (a framing error), or with `error`. */
  #badBody(reason: string | Error): null {
    this.#closeAfter = true;
    this.#failBody(typeof reason === "string" ? new TypeError(reason) : reason);
    return null;
  }

  /** Waits until at most `n` answers are still to be written (or the connection closed). */
  async #drained(n: number): Promise<void> {
    while (this.#inFlight > n && !this.#closed) {
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /** Writes the answer to one request, after the answers before it. */
  async #answer(
    answer: Response | Promise<Response>,
    headOnly: boolean,
    http10: boolean,
    body: BodyState | null,
  ): Promise<void> {
    let response: Response;
    try {
      response = await answer;
      if (!(response instanceof Response)) throw new TypeError("The handler did not return a Response");
    } catch (error) {
      if (error instanceof BadRequest) {
        response = text(400, `${error.message}\n`);
      } else {
        this.#settings.logger.error("handler threw", { error: String(error) });
        response = text(500, "Internal error\n");
      }
    }
    try {
      if (body !== null && !body.finished) {
        // What the handler left unread is dropped here if it came already, else the connection closes after this answer.
        if (!body.abandoned && body.framing.kind === "length" && this.#end - this.#start >= body.left) {
          this.#start += body.left;
          body.left = 0;
          body.finished = true;
          this.#setPhase("none", Infinity);
        } else {
          this.#failBody(new Deno.errors.Interrupted("The answer was sent before the body was read"));
          this.#closeAfter = true;
          this.#linger = true;
        }
      }
      if (!this.#closed) await this.#write(response, headOnly, http10, this.#isLast());
      else if (stringBodyOf(response) === undefined) await response.body?.cancel();
      // A client that does not read holds this answer's turn, and so the reading of its next requests.
      if (this.#outBytes >= OUT_HIGH_WATER_BYTES) await this.#flushed();
    } catch (error) {
      this.#settings.logger.debug("cannot write an answer", { error: String(error) });
      this.close();
    } finally {
      this.#inFlight--;
      if (this.#closeAfter && this.#inFlight === 0) {
        // The run loop may be waiting for a head that will not be read.
        if (!this.#linger) this.#flushed().then(() => this.close());
      } else if (this.#inFlight === 0 && this.#phase === "none" && this.#start === this.#end) {
        this.#setPhase("idle", this.#settings.idleTimeout);
      } else if (this.#inFlight === 0 && this.#phase === "head" && this.#readDeadline === Infinity) {
        this.#setPhase("head", this.#settings.headTimeout);
      }
      const wake = this.#wake;
      this.#wake = null;
      wake?.();
    }
  }

  /** Whether the answer being written is the connection's last. */
  #isLast(): boolean {
    return this.#inFlight === 1 && (this.#closeAfter || this.#server.stopping);
  }

  async #write(response: Response, headOnly: boolean, http10: boolean, last: boolean): Promise<void> {
    if (last) this.#closeAfter = true;
    const known = stringBodyOf(response);
    const reused = known !== undefined && !last && !headOnly && !http10 && isShared(response);
    if (reused) {
      const prepared = this.#server.prepared.get(response);
      if (prepared !== undefined && prepared.date === this.#server.date) return this.#send(prepared.bytes);
    }
    const status = response.status;
    let head = `HTTP/1.1 ${status} ${
      response.statusText || STATUS_TEXT[status] || "Unknown"
    }\r\ndate: ${this.#server.date}\r\n`;
    response.headers.forEach((value, name) => {
      if (!OWN_HEADERS.has(name)) head += `${name}: ${value}\r\n`;
    });
    if (last) head += "connection: close\r\n";
    // HTTP/1.1 keeps a connection unless told otherwise; HTTP/1.0 only when told so (RFC 9112 9.3).
    else if (http10) head += "connection: keep-alive\r\n";
    if (status === 204 || status === 304 || status < 200) {
      // A string body is left as it is: a fast path may answer with the same response again.
      if (known === undefined) await response.body?.cancel();
      return this.#send(latin1Bytes(`${head}\r\n`, 0));
    }
    if (known !== undefined) {
      const bytes = this.#withBody(head, encodeInScratch(known), headOnly);
      if (reused) this.#server.prepared.set(response, { date: this.#server.date, bytes });
      return this.#send(bytes);
    }
    if (response.body === null) return this.#send(latin1Bytes(`${head}content-length: 0\r\n\r\n`, 0));
    const reader = response.body.getReader();
    const chunks: Uint8Array[] = [];
    let size = 0;
    // A body that is all there already (a string, bytes) takes a microtask or two to read; one still coming is a stream.
    while (true) {
      const next = reader.read();
      const read = await settledSoon(next);
      if (read === PENDING) {
        // An HTTP/1.0 client reads a stream to the close: this connection's last answer after all.
        if (http10 && !last) {
          this.#closeAfter = true;
          head = head.replace("connection: keep-alive\r\n", "connection: close\r\n");
        }
        return this.#stream(reader, next, head, chunks, headOnly, !http10);
      }
      if (read.done) break;
      chunks.push(read.value);
      size += read.value.length;
    }
    return this.#send(this.#withBody(head, concat(chunks, size), headOnly));
  }

  /** The answer's bytes: its head with the body's length, and the body unless it answers a HEAD. */
  #withBody(head: string, body: Uint8Array, headOnly: boolean): Uint8Array {
    head += `content-length: ${body.length}\r\n\r\n`;
    if (headOnly) return latin1Bytes(head, 0);
    const bytes = latin1Bytes(head, body.length);
    bytes.set(body, head.length);
    return bytes;
  }

  /** Writes a body that is still coming: chunked, or until the connection closes for an HTTP/1.0 client. */
  async #stream(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    next: Promise<ReadableStreamReadResult<Uint8Array>>,
    head: string,
    chunks: Uint8Array[],
    headOnly: boolean,
    chunked: boolean,
  ): Promise<void> {
    if (headOnly) {
      await reader.cancel();
      return this.#send(latin1Bytes(`${head}\r\n`, 0));
    }
    // An HTTP/1.0 client reads to the end of the connection, which closes after this answer.
    this.#send(latin1Bytes(`${head}${chunked ? "transfer-encoding: chunked\r\n" : ""}\r\n`, 0));
    this.#streaming = reader;
    if (this.#peerEnded) reader.cancel().catch(() => {});
    try {
      for (const chunk of chunks) await this.#writeChunk(chunk, chunked);
      while (true) {
        const read = await next;
        if (read.done) break;
        if (read.value.length > 0) await this.#writeChunk(read.value, chunked);
        next = reader.read();
      }
      if (chunked) this.#send(CHUNKED_END);
      await this.#flushed();
    } finally {
      this.#streaming = null;
    }
  }

  /** Writes one chunk of a streamed body, and waits for it: a stream goes at the pace its client reads. */
  #writeChunk(chunk: Uint8Array, chunked: boolean): Promise<void> {
    if (!chunked) {
      this.#send(chunk);
      return this.#flushed();
    }
    const size = `${chunk.length.toString(16)}\r\n`;
    const bytes = new Uint8Array(size.length + chunk.length + 2);
    for (let i = 0; i < size.length; i++) bytes[i] = size.charCodeAt(i);
    bytes.set(chunk, size.length);
    bytes[bytes.length - 2] = 13;
    bytes[bytes.length - 1] = 10;
    this.#send(bytes);
    return this.#flushed();
  }

  /**
   * Queues `bytes` to be written. One write is in flight at a time, and what
   * is queued meanwhile goes out in the next: pipelined answers that are
   * ready together cost one write, not one each.
   */
  #send(bytes: Uint8Array): void {
    if (this.#closed) return;
    this.#out.push(bytes);
    this.#outBytes += bytes.length;
    if (this.#flushing) return;
    if (this.#inFlight <= 1) return void this.#flush();
    // Answers to other requests are on their way, most often in this same turn
    // of the event loop (the bus acknowledges publishes in batches): one write
    // for them all once the turn's I/O is handled (`setImmediate`; a timer
    // would wait a millisecond).
    this.#flushing = true;
    setImmediate(() => this.#flush());
  }

  async #flush(): Promise<void> {
    this.#flushing = true;
    try {
      while (this.#out.length > 0 && !this.#closed) {
        const bytes = concat(this.#out, this.#outBytes);
        this.#out = [];
        this.#outBytes = 0;
        this.#writeDeadline = performance.now() + this.#settings.sendTimeout;
        let offset = 0;
        while (offset < bytes.length) offset += await this.#conn.write(bytes.subarray(offset));
        this.#writeDeadline = Infinity;
      }
    } catch (error) {
      this.#settings.logger.debug("cannot write to a client", { error: String(error) });
      this.close();
    } finally {
      this.#writeDeadline = Infinity;
      this.#out = [];
      this.#outBytes = 0;
      this.#flushing = false;
      for (const resolve of this.#flushWaiters.splice(0)) resolve();
    }
  }

  /** Resolves once everything queued is written (or the connection closed). */
  #flushed(): Promise<void> {
    if (!this.#flushing) return Promise.resolve();
    return new Promise((resolve) => this.#flushWaiters.push(resolve));
  }

  /** Answers a request the server refuses itself, after the answers before it, and closes the connection. */
  async #refuse(status: number, reason: string, path: string | null): Promise<void> {
    this.#linger = true;
    // The answers before it are not the last: the refusal is, and says so.
    await this.#drained(0);
    this.#closeAfter = true;
    if (this.#closed) return;
    this.#settings.logger.info("rejected a request", { status, reason });
    this.#send(this.#errorBytes(status, reason, path));
    await this.#flushed();
  }

  /** A refusal's bytes: the one-line reason as text, or in the form `refusal` gives answers to `path`. */
  #errorBytes(status: number, reason: string, path: string | null): Uint8Array {
    const form = path === null ? undefined : this.#settings.refusal?.(status, reason, path);
    let head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\ndate: ${this.#server.date}\r\n`;
    let body = `${reason}\n`;
    if (form === undefined) head += `content-type: ${TEXT_CONTENT_TYPE}\r\n`;
    else {
      body = form.body;
      for (const [name, value] of Object.entries(form.headers)) {
        if (!OWN_HEADERS.has(name.toLowerCase())) head += `${name}: ${value}\r\n`;
      }
    }
    const bytes = utf8.encode(body);
    return concat([latin1Bytes(`${head}content-length: ${bytes.length}\r\nconnection: close\r\n\r\n`, 0), bytes]);
  }

  /**
   * Closes after a refusal or an unread body without losing the answer: a
   * close with unread bytes in the kernel's buffer sends a reset, which may
   * reach the client before it has read the answer. So the write side is
   * closed first, and what still comes is read and dropped for a moment.
   */
  async #lingeringClose(): Promise<void> {
    this.#setPhase("linger", LINGER_MS);
    try {
      await (this.#conn as Deno.TcpConn).closeWrite();
    } catch {
      return;
    }
    const sink = new Uint8Array(BODY_READ_BYTES);
    try {
      while (!this.#closed && (await this.#conn.read(sink)) !== null) { /* dropped */ }
    } catch { /* closed by the watchdog, or reset */ }
  }
}

/** What {@linkcode Connection} takes of a body when the buffer ends inside a line of the chunked framing: read on. */
const NEED_MORE = new Uint8Array(0);

/** One transfer coding: a token, then any parameters (`;` and what follows, up to the next comma). */
const TRANSFER_CODING = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*;[^,]*)?$/;

/** A request's head as a fast path reads it. */
class RawHead implements RawRequest {
  readonly method: string;
  readonly target: string;
  readonly body: Uint8Array | null;
  readonly #head: RequestHead;

  constructor(head: RequestHead, body: Uint8Array | null) {
    this.method = head.method;
    this.target = head.target;
    this.body = body;
    this.#head = head;
  }

  get headers(): { get(name: string): string | null } {
    return { get: (name) => fieldOf(this.#head, name.toLowerCase()) };
  }
}

/** A request `new Request` refused (a method fetch forbids, a target that is not a URL): answered 400. */
class BadRequest extends Error {}

/** A head the server refuses: why, and the path its request line names (null when none could be read). */
interface RefusedHead extends HeadError {
  readonly path: string | null;
}

/** The path of a request target: what comes before its query. */
function pathOf(target: string): string {
  const query = target.indexOf("?");
  return query < 0 ? target : target.slice(0, query);
}

const REQUEST_LINE_PATH = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ (?:https?:\/\/[^/\t\n\v\f\r ?#]*)?(\/[^\t\n\v\f\r ?#]*)/i;

/** The path a request line names (in origin or absolute form), from a head as text or bytes; null when it names none. */
function requestLinePath(head: string | Uint8Array): string | null {
  const text = typeof head === "string" ? head : decodeLatin1(head);
  return REQUEST_LINE_PATH.exec(text)?.[1] ?? null;
}

/** The value of header `name` (lower case), the fields of that name joined with ", ", or null. */
function fieldOf(head: RequestHead, name: string): string | null {
  let value: string | null = null;
  for (const [field, v] of head.fields) {
    if (field.length === name.length && field.toLowerCase() === name) value = value === null ? v : `${value}, ${v}`;
  }
  return value;
}

/**
 * Whether the connection closes after this request: the client asks so, or
 * speaks HTTP/1.0 without `Connection: keep-alive` (RFC 9112 9.3). An
 * HTTP/1.0 client that asks to keep it (`ab -k`, Workerman's own clients)
 * is answered `connection: keep-alive`, as the original's server answers
 * it, and its connection stays but for an answer that is a stream, which it
 * can read only to the close.
 */
function wantsClose(head: RequestHead): boolean {
  const tokens = fieldOf(head, "connection")?.toLowerCase().split(",").map(trimOws) ?? [];
  if (tokens.includes("close")) return true;
  return head.http10 && !tokens.includes("keep-alive");
}

function indexOfHeadEnd(bytes: Uint8Array, from: number, to: number): number {
  for (let i = from; i + 3 < to; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}

/** Where a string body is encoded before it is copied behind its head: one buffer per thread, reused (see encodeInScratch). */
let scratch = new Uint8Array(16 * 1024);
/** The scratch buffer grows to fit a body of up to this many bytes; a larger body is encoded into an array of its own. */
const SCRATCH_MAX_BYTES = 256 * 1024;

/**
 * `text` in UTF-8, in a view of the thread's scratch buffer that the next
 * call overwrites: the caller copies it at once. An answer's body used to
 * be encoded into an array of its own, which the allocator made and freed
 * once per answer only to be copied behind the head.
 */
function encodeInScratch(text: string): Uint8Array {
  if (text.length > scratch.length && scratch.length < SCRATCH_MAX_BYTES) {
    scratch = new Uint8Array(Math.min(SCRATCH_MAX_BYTES, 2 ** Math.ceil(Math.log2(text.length))));
  }
  const { read, written } = utf8.encodeInto(text, scratch);
  return read === text.length ? scratch.subarray(0, written) : utf8.encode(text);
}

/** `text`'s bytes, one per character (a head is Latin-1), with `room` bytes after them. */
function latin1Bytes(text: string, room: number): Uint8Array {
  const bytes = new Uint8Array(text.length + room);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

const PENDING = Symbol("pending");

/** `promise`'s value if it settles within a few microtasks, else {@linkcode PENDING}. */
async function settledSoon<T>(promise: Promise<T>): Promise<T | typeof PENDING> {
  let value: T | typeof PENDING = PENDING;
  let failed = false;
  let error: unknown;
  promise.then((v) => (value = v), (e) => {
    failed = true;
    error = e;
  });
  for (let i = 0; i < 8 && value === PENDING && !failed; i++) await null;
  if (failed) throw error;
  return value;
}

function close(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}
