/**
 * A raw WebSocket client for the load generator: `Deno.connect`, a
 * handshake written by hand, and server frames parsed many per read from one
 * reusable buffer. Far cheaper per message than `WebSocket`, so the
 * generator does not become what the benchmark measures.
 *
 * @module
 */

import {
  closeCode,
  closePayload,
  encodeClientFrame,
  OPCODE_BINARY,
  OPCODE_CLOSE,
  OPCODE_PING,
  OPCODE_PONG,
  OPCODE_TEXT,
  ServerFrameParser,
} from "./_ws_frames.ts";

/** A connection's address, from its greeting. */
export interface Address {
  worker: string;
  connection: string;
}

/** Options for {@linkcode WsClient.connect}. */
export interface WsClientOptions {
  /** Server host. Required. */
  hostname: string;
  /** Server port. Required. */
  port: number;
  /** The handshake's request target: `/?token=JWT` for a pusher that checks tokens. @default {"/"} */
  path?: string;
  /** Called for every text message after the greeting, with the time (`performance.now()`) its read completed. */
  onMessage(client: WsClient, payload: Uint8Array, receivedAt: number): void;
  /** Bytes of the read buffer; it grows only for a frame that does not fit. @default {16384} */
  readBufferBytes?: number;
  /** Largest message accepted, in bytes. @default {1048576} */
  maxMessageBytes?: number;
  /** Milliseconds to wait for the 101 answer and the greeting. @default {10000} */
  greetingTimeout?: number;
}

/** The greeting both the pusher and the baseline send: `workerID:<w> connectionID:<c> connected`. */
const GREETING = /^workerID:(\S+) connectionID:(\d+) connected\n?$/;
const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const utf8 = new TextDecoder();
const encoder = new TextEncoder();

/**
 * One raw WebSocket client, connected and greeted.
 *
 * @example
 * ```ts
 * import { WsClient } from "./_ws_client.ts";
 *
 * let received = 0;
 * await using client = await WsClient.connect({ hostname: "127.0.0.1", port: 4236, onMessage: () => received++ });
 * console.log(client.address); // { worker: "…", connection: "…" }
 * ```
 */
export class WsClient implements AsyncDisposable {
  /** Index given by the caller, to keep per-client counters in arrays. */
  index = 0;
  readonly #conn: Deno.TcpConn;
  readonly #options: WsClientOptions;
  readonly #maxMessageBytes: number;
  readonly #parser: ServerFrameParser;
  #buffer: Uint8Array;
  #fill = 0;
  #upgraded = false;
  #address: Address | null = null;
  #greeted!: { resolve: (address: Address) => void; reject: (error: Error) => void };
  #receivedAt = 0;
  #closing = false;
  #connClosed = false;
  #unexpectedClose: string | null = null;
  #writing: Promise<unknown> = Promise.resolve();
  #done: Promise<void> = Promise.resolve();

  private constructor(conn: Deno.TcpConn, options: WsClientOptions) {
    this.#conn = conn;
    this.#options = options;
    this.#maxMessageBytes = options.maxMessageBytes ?? 1024 * 1024;
    this.#buffer = new Uint8Array(options.readBufferBytes ?? 16 * 1024);
    this.#parser = new ServerFrameParser({
      maxPayloadBytes: this.#maxMessageBytes,
      onFrame: (opcode, payload) => this.#frame(opcode, payload),
    });
  }

  /**
   * Connects, upgrades and waits for the greeting.
   *
   * @throws {Error} when the upgrade is refused, the greeting is malformed or
   * does not come within `greetingTimeout`.
   */
  static async connect(options: WsClientOptions): Promise<WsClient> {
    const conn = await Deno.connect({ hostname: options.hostname, port: options.port });
    conn.setNoDelay(true);
    const client = new WsClient(conn, options);
    const greeted = new Promise<Address>((resolve, reject) => (client.#greeted = { resolve, reject }));
    // Settled before anyone awaits it when the server answers at once: not an unhandled rejection.
    greeted.catch(() => {});
    client.#done = client.#run();
    const timeout = options.greetingTimeout ?? 10_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await client.#write(encoder.encode(
        `GET ${options.path ?? "/"} HTTP/1.1\r\nHost: ${options.hostname}:${options.port}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      ));
      await Promise.race([
        greeted,
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`No greeting within ${timeout} ms`)), timeout);
        }),
      ]);
    } catch (error) {
      client.#closeConn();
      await client.#done;
      throw new Error(`Cannot connect a WebSocket to ${options.hostname}:${options.port}: ${(error as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
    return client;
  }

  /** The address from the greeting. */
  get address(): Address {
    return this.#address!;
  }

  /** Settles once the connection has ended, whoever ended it. */
  get closed(): Promise<void> {
    return this.#done;
  }

  /** Why the connection ended when we did not ask it to (`close 3008 slow`, `eof`, an error), or null. */
  get unexpectedClose(): string | null {
    return this.#unexpectedClose;
  }

  /** Sends one text message (a client command); a failed write shows up as the connection ending. */
  send(text: string): void {
    this.#write(encodeClientFrame(OPCODE_TEXT, encoder.encode(text))).catch(() => {});
  }

  /**
   * Sends a close frame, waits up to `timeout` ms for the server to end the
   * connection (so that TIME_WAIT stays on its side), then closes the socket.
   * Closing twice is harmless.
   */
  async close(timeout = 2000): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      this.#write(encodeClientFrame(OPCODE_CLOSE, closePayload(1000))).catch(() => {});
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([this.#done, new Promise((resolve) => (timer = setTimeout(resolve, timeout)))]);
    clearTimeout(timer);
    this.#closeConn();
    await this.#done;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #run(): Promise<void> {
    try {
      while (true) {
        if (this.#fill === this.#buffer.length) this.#grow();
        const n = await this.#conn.read(this.#buffer.subarray(this.#fill));
        if (n === null) {
          this.#ended("eof");
          return;
        }
        this.#fill += n;
        this.#receivedAt = performance.now();
        let consumed = this.#upgraded ? 0 : this.#readHead();
        if (!this.#upgraded) continue;
        consumed += this.#parser.parse(this.#buffer.subarray(consumed, this.#fill));
        if (consumed > 0) {
          this.#buffer.copyWithin(0, consumed, this.#fill);
          this.#fill -= consumed;
        }
      }
    } catch (error) {
      this.#ended(this.#connClosed ? "closed" : `error: ${(error as Error).message}`);
    } finally {
      this.#closeConn();
    }
  }

  /** Reads the 101 answer; returns the bytes it took (0 while incomplete). */
  #readHead(): number {
    const view = this.#buffer.subarray(0, this.#fill);
    for (let i = 0; i + 3 < view.length; i++) {
      if (view[i] === 13 && view[i + 1] === 10 && view[i + 2] === 13 && view[i + 3] === 10) {
        const statusLine = utf8.decode(view.subarray(0, i)).split("\r\n")[0]!;
        if (!/^HTTP\/1\.1 101\b/.test(statusLine)) throw new Error(`Upgrade refused: ${statusLine}`);
        this.#upgraded = true;
        return i + 4;
      }
    }
    return 0;
  }

  #grow(): void {
    const needed = this.#upgraded ? this.#parser.needed : 0;
    if (needed <= this.#buffer.length) {
      throw new RangeError(
        `Cannot read: ${this.#buffer.length} bytes hold no complete ${this.#upgraded ? "frame header" : "answer head"}`,
      );
    }
    const bigger = new Uint8Array(needed);
    bigger.set(this.#buffer.subarray(0, this.#fill));
    this.#buffer = bigger;
  }

  #frame(opcode: number, payload: Uint8Array): void {
    switch (opcode) {
      case OPCODE_TEXT:
      case OPCODE_BINARY:
        if (this.#address) {
          this.#options.onMessage(this, payload, this.#receivedAt);
        } else {
          this.#greet(payload);
        }
        break;
      case OPCODE_PING:
        this.#write(encodeClientFrame(OPCODE_PONG, payload)).catch(() => {});
        break;
      case OPCODE_CLOSE:
        if (!this.#closing) {
          this.#unexpectedClose ??= `close ${closeCode(payload)} ${utf8.decode(payload.subarray(2))}`.trim();
          this.#closing = true;
          this.#write(encodeClientFrame(OPCODE_CLOSE, payload.subarray(0, 2))).catch(() => {});
        }
        break;
        // Pongs (and unknown opcodes) carry nothing for us.
    }
  }

  #greet(payload: Uint8Array): void {
    const text = utf8.decode(payload);
    const match = GREETING.exec(text);
    if (!match) {
      this.#greeted.reject(new Error(`Unexpected greeting ${JSON.stringify(text.slice(0, 120))}`));
      return;
    }
    this.#address = { worker: match[1]!, connection: match[2]! };
    this.#greeted.resolve(this.#address);
  }

  #ended(reason: string): void {
    if (!this.#closing) this.#unexpectedClose ??= reason;
    this.#greeted.reject(new Error(`Connection ended before the greeting: ${reason}`));
  }

  #write(bytes: Uint8Array): Promise<unknown> {
    this.#writing = this.#writing.catch(() => {}).then(async () => {
      let written = 0;
      while (written < bytes.length) written += await this.#conn.write(bytes.subarray(written));
    });
    return this.#writing;
  }

  #closeConn(): void {
    if (this.#connClosed) return;
    this.#connClosed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }
}

/** Options for {@linkcode connectClients}: those of {@linkcode WsClient.connect}, and how many. */
export interface ConnectClientsOptions extends Omit<WsClientOptions, "path"> {
  /** Clients to connect. Required. */
  count: number;
  /** Clients connecting at once. Required. */
  batch: number;
  /**
   * The handshake's request target of the client that gets `index` (its
   * position in `into`, as every connection before it succeeded: any
   * failure ends the whole). @default {() => "/"}
   */
  path?(index: number): string;
}

/**
 * Connects `count` clients, `batch` at a time, each pushed to `into` once
 * greeted with its position there as its index: on failure, those connected
 * are in `into` for the caller to close.
 *
 * @throws {Error} naming how many failed, and the first reason.
 */
export async function connectClients(into: WsClient[], options: ConnectClientsOptions): Promise<void> {
  const { count: clients, batch: size, path, ...connect } = options;
  for (let first = 0; first < clients; first += size) {
    const count = Math.min(size, clients - first);
    const batch = await Promise.allSettled(
      Array.from({ length: count }, (_, i) => WsClient.connect({ ...connect, path: path?.(first + i) ?? "/" })),
    );
    for (const outcome of batch) {
      if (outcome.status === "fulfilled") {
        outcome.value.index = into.length;
        into.push(outcome.value);
      }
    }
    const failed = batch.filter((outcome) => outcome.status === "rejected");
    if (failed.length > 0) {
      throw new Error(
        `${failed.length} of ${count} connections failed after ${into.length} succeeded: ${
          (failed[0] as PromiseRejectedResult).reason.message
        }`,
      );
    }
  }
}
