/**
 * The hub's listener when it requires client certificates (`--client-ca`):
 * `node:tls`, because `Deno.listenTls` cannot ask a client for a certificate
 * (denoland/deno#26825), while Deno's `node:tls` server can and checks it
 * (`requestCert`, `ca`, `rejectUnauthorized`). Only sockets whose certificate
 * the CA signed, and which is in date, are handed on, each adapted to the
 * few `Deno.Conn` methods a `Connection` uses ({@linkcode NodeTlsConn});
 * the others are refused by `node:tls` and logged here with the reason.
 *
 * @module
 */

import { createServer, type Server, type TLSSocket } from "node:tls";
import type { Logger } from "../shared/log.ts";
import { ThrottledLine } from "../shared/log_throttle.ts";
import type { CertifiedKey } from "../shared/tls.ts";

/** Options for {@linkcode listenNodeTls}. */
export interface NodeTlsListenOptions extends CertifiedKey {
  /** Address to listen on. Required. */
  hostname: string;
  /** TCP port; 0 picks a free one. Required. */
  port: number;
  /** CA certificates (PEM) that sign the clients' certificates. Required. */
  clientCa: string;
  /** Where refused handshakes are logged. Required. */
  logger: Logger;
  /** Milliseconds a client gets to finish its handshake. @default {10000} */
  handshakeTimeout?: number;
  /**
   * Most verified connections waiting for {@linkcode NodeTlsListener.accept};
   * one more is closed at once. The hub's accept loop takes each at once, so
   * only a stalled loop reaches it. @default {1024}
   */
  backlog?: number;
}

/** The listener of {@linkcode listenNodeTls}: what the hub's accept loop uses of a `Deno.Listener`. */
export interface NodeTlsListener {
  /** The address it listens on, with the real port when 0 was asked. */
  readonly addr: Deno.NetAddr;
  /** Resolves with the next verified connection; rejects with `BadResource` once closed. */
  accept(): Promise<NodeTlsConn>;
  /** Stops listening and closes the connections not yet accepted; harmless twice. */
  close(): void;
}

/**
 * Bytes read from a socket and not yet taken by {@linkcode NodeTlsConn.read};
 * past it the socket is paused, so a peer that sends faster than the hub
 * reads is held back by TCP, as a `Deno.Conn` would be.
 *
 * Two things of Deno 2.9.6's `node:tls` (measured, README: TLS): once a
 * socket was paused, the peer's end of stream may never come (no `end`, no
 * `close`), so such a peer is dropped by the hub's idle check (`idlePings`
 * times `pingInterval`) rather than at once; and Deno reads up to about
 * 16 MiB of a paused socket into its own buffers before TCP holds the peer
 * back, where `Deno.listenTls` stops at the kernel's buffer.
 */
const READ_BUFFER_BYTES = 64 * 1024;

/** Why `node:tls` refused a client's certificate, in a word an operator can act on. */
const REFUSALS: Record<string, string> = {
  ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE: "no certificate",
  // Deno 2.9 gives this code both for another CA's certificate and for one not made for client use.
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "not trusted",
  UNABLE_TO_GET_ISSUER_CERT: "unknown CA",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "unknown CA",
  SELF_SIGNED_CERT_IN_CHAIN: "unknown CA",
  DEPTH_ZERO_SELF_SIGNED_CERT: "unknown CA",
  CERT_SIGNATURE_FAILURE: "unknown CA",
  CERT_HAS_EXPIRED: "expired",
  CERT_NOT_YET_VALID: "not yet valid",
};

const UNTRUSTED = "UNABLE_TO_VERIFY_LEAF_SIGNATURE";
const UNTRUSTED_HINT =
  "signed by a CA other than --client-ca's, or not a client certificate (its extendedKeyUsage lacks clientAuth)";

/**
 * Listens with `node:tls`, requiring of every client a certificate signed by
 * `clientCa`. Resolves once listening.
 *
 * @throws {Error} when it cannot listen there (the address is in use, say).
 *
 * @example
 * ```ts
 * import { listenNodeTls } from "./_node_tls_listener.ts";
 * import { createLogger } from "../shared/log.ts";
 *
 * const read = (path: string) => Deno.readTextFile(path);
 * const listener = await listenNodeTls({
 *   hostname: "127.0.0.1",
 *   port: 2206,
 *   cert: await read("certs/hub.pem"),
 *   key: await read("certs/hub.key"),
 *   clientCa: await read("certs/ca.pem"),
 *   logger: createLogger("channel"),
 * });
 * const conn = await listener.accept(); // its certificate was signed by certs/ca.pem
 * conn.close();
 * listener.close();
 * ```
 */
export async function listenNodeTls(options: NodeTlsListenOptions): Promise<NodeTlsListener> {
  const server = createServer({
    cert: options.cert,
    key: options.key,
    ca: options.clientCa,
    requestCert: true,
    rejectUnauthorized: true,
    handshakeTimeout: options.handshakeTimeout ?? 10_000,
  });
  const listening = Promise.withResolvers<void>();
  server.once("error", listening.reject);
  server.listen(options.port, options.hostname, () => listening.resolve());
  try {
    await listening.promise;
  } catch (error) {
    server.close();
    throw error;
  } finally {
    server.off("error", listening.reject);
  }
  return new Listener(server, options.logger, options.backlog ?? 1024);
}

class Listener implements NodeTlsListener {
  readonly addr: Deno.NetAddr;
  readonly #server: Server;
  readonly #logger: Logger;
  /** Failed handshakes, a line a second at most: any client can cause them. */
  readonly #handshakeFailures: ThrottledLine;
  /** Refused client certificates, likewise. */
  readonly #refusedCertificates: ThrottledLine;
  readonly #backlog: number;
  readonly #ready: NodeTlsConn[] = [];
  #waiting: PromiseWithResolvers<NodeTlsConn> | null = null;
  #closed = false;

  constructor(server: Server, logger: Logger, backlog: number) {
    this.#server = server;
    this.#logger = logger;
    this.#handshakeFailures = new ThrottledLine(logger, "warn", "TLS handshake failed");
    this.#refusedCertificates = new ThrottledLine(logger, "warn", "client certificate refused");
    this.#backlog = backlog;
    const { address, port } = server.address() as { address: string; port: number };
    this.addr = { transport: "tcp", hostname: address, port };
    server.on("secureConnection", (socket: TLSSocket) => this.#verified(socket));
    server.on("tlsClientError", (error: Error & { code?: string }, socket: TLSSocket) => this.#refused(error, socket));
    server.on("error", (error: Error) => logger.error("listener failed", { error: error.message }));
  }

  accept(): Promise<NodeTlsConn> {
    const next = this.#ready.shift();
    if (next) return Promise.resolve(next);
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("Listener has been closed"));
    this.#waiting ??= Promise.withResolvers<NodeTlsConn>();
    return this.#waiting.promise;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    this.#handshakeFailures.close();
    this.#refusedCertificates.close();
    for (const conn of this.#ready.splice(0)) conn.close();
    this.#waiting?.reject(new Deno.errors.BadResource("Listener has been closed"));
    this.#waiting = null;
  }

  #verified(socket: TLSSocket): void {
    // rejectUnauthorized already refused the others; checked again so that no change of default lets one through.
    if (!socket.authorized || this.#closed) {
      socket.destroy();
      return;
    }
    const conn = new NodeTlsConn(socket);
    const waiting = this.#waiting;
    if (waiting) {
      this.#waiting = null;
      waiting.resolve(conn);
    } else if (this.#ready.length < this.#backlog) {
      this.#ready.push(conn);
    } else {
      this.#logger.warn("connection dropped: too many waiting to be accepted", { remote: addressOf(conn.remoteAddr) });
      conn.close();
    }
  }

  #refused(error: Error & { code?: string }, socket: TLSSocket): void {
    // Deno has destroyed the socket by now, so its own remoteAddress is gone; the TCP socket under it keeps it.
    const tcp = (socket as unknown as { _parent?: TcpUnder })._parent;
    const remote = `${socket.remoteAddress ?? tcp?.remoteAddress ?? "?"}:${
      socket.remotePort ?? tcp?.remotePort ?? "?"
    }`;
    // A bad certificate comes as a reset with the reason on the socket; a missing one as the error's code.
    const code = socket.authorizationError ? String(socket.authorizationError) : error.code;
    const reason = code === undefined ? undefined : REFUSALS[code];
    if (reason) {
      this.#refusedCertificates.log({
        remote,
        reason,
        code: code!,
        ...(code === UNTRUSTED && { hint: UNTRUSTED_HINT }),
      });
    } else {
      this.#handshakeFailures.log({ remote, error: error.message });
    }
    // Deno 2.9.6 leaves that TCP socket open when the handshake failed or timed out (the TLS socket's destroy does
    // not reach it), so a client that stalls its handshake would keep a descriptor for good. Destroying it closes
    // the connection and frees the descriptor (measured: /proc/<pid>/fd, and the client reads end of stream).
    tcp?.destroy?.();
  }
}

/** What is used of the TCP socket under a `TLSSocket` (its `_parent`, not in the types). */
interface TcpUnder {
  remoteAddress?: string;
  remotePort?: number;
  destroy?: () => void;
}

/**
 * A verified `node:tls` socket as the hub's `Connection` uses a `Deno.Conn`:
 * `read` into a buffer (null at end of stream), `write` resolving once the
 * bytes are handed to the socket's handle (so the hub's one write in flight
 * stays blocked while the peer does not read), `closeWrite`, `close`.
 */
export class NodeTlsConn {
  /** The peer's address. */
  readonly remoteAddr: Deno.NetAddr;
  readonly #socket: TLSSocket;
  readonly #chunks: Uint8Array[] = [];
  #buffered = 0;
  #ended = false;
  #closed = false;
  #error: Error | null = null;
  #reader: (() => void) | null = null;
  readonly #writes = new Set<(error: Error) => void>();

  /** Wraps a socket whose handshake is done; reading starts at once, bounded by {@linkcode READ_BUFFER_BYTES}. */
  constructor(socket: TLSSocket) {
    this.#socket = socket;
    this.remoteAddr = { transport: "tcp", hostname: socket.remoteAddress ?? "?", port: socket.remotePort ?? 0 };
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
      if (this.#buffered >= READ_BUFFER_BYTES) socket.pause();
      this.#wake();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wake();
    });
    socket.on("error", (error: Error) => {
      this.#error ??= error;
      this.#wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#closed = true;
      const failure = this.#error ?? new Deno.errors.BrokenPipe("Connection closed");
      for (const reject of this.#writes) reject(failure);
      this.#writes.clear();
      this.#wake();
    });
  }

  /** Sets TCP_NODELAY, as on a `Deno.TcpConn`. */
  setNoDelay(noDelay = true): void {
    this.#socket.setNoDelay(noDelay);
  }

  /** Reads into `buffer`; resolves with the bytes read, or null at end of stream. One read at a time. */
  async read(buffer: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => (this.#reader = resolve));
    }
    const chunk = this.#chunks[0]!;
    const n = Math.min(chunk.length, buffer.length);
    buffer.set(chunk.subarray(0, n));
    if (n === chunk.length) this.#chunks.shift();
    else this.#chunks[0] = chunk.subarray(n);
    this.#buffered -= n;
    if (this.#buffered < READ_BUFFER_BYTES && this.#socket.isPaused() && !this.#closed) this.#socket.resume();
    return n;
  }

  /** Writes all of `bytes`; resolves with their length once the socket has taken them. */
  write(bytes: Uint8Array): Promise<number> {
    if (this.#closed || this.#error) {
      return Promise.reject(this.#error ?? new Deno.errors.BrokenPipe("Connection closed"));
    }
    return new Promise<number>((resolve, reject) => {
      const fail = (error: Error) => reject(error);
      this.#writes.add(fail);
      this.#socket.write(bytes, (error?: Error | null) => {
        this.#writes.delete(fail);
        if (error) reject(error);
        else resolve(bytes.length);
      });
    });
  }

  /** Ends the writing half (TLS close_notify, then FIN); resolves once sent or the socket is gone. */
  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#socket.once("close", resolve);
      this.#socket.end(() => {
        this.#socket.off("close", resolve);
        resolve();
      });
    });
  }

  /** Closes the socket at once; harmless twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ended = true;
    this.#socket.destroy();
    this.#wake();
  }

  #wake(): void {
    const reader = this.#reader;
    this.#reader = null;
    reader?.();
  }
}

function addressOf(addr: Deno.NetAddr): string {
  return `${addr.hostname}:${addr.port}`;
}
