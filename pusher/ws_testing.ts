/**
 * Test helpers for the WebSocket server (`pusher/server.ts`): an echo server
 * with captured logs, a raw TCP client that writes its own frames and reads
 * the server's, and the three real clients (Deno's `WebSocket`, npm `ws`,
 * Chromium) behind one interface. Every wait has a deadline.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { Browser } from "playwright-core";
import NpmWebSocket from "ws";
import { within } from "../channel/testing.ts";
import { concat } from "../shared/bytes.ts";
import { createLogger } from "../shared/log.ts";
import { isWebSocketUpgrade, serve, type ServeOptions, type Server, upgradeWebSocket } from "./server.ts";
import { acceptKey } from "./websocket.ts";

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

// ---------------------------------------------------------------------------
// The echo server

/** What the echo server answers to a binary message: its length and SHA-1, as text. */
export function describeBinary(data: Uint8Array): string {
  return `binary ${data.length} ${createHash("sha1").update(data).digest("hex")}`;
}

/**
 * The page served on `GET /`: helpers that Chromium's tests call with
 * `page.evaluate`, each wait bounded by its own deadline.
 */
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>echo</title>
<script>
const sockets = [];
function deadline(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("Timed out after " + ms + " ms waiting for " + what)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
window.t = {
  open(url, protocols) {
    const ws = new WebSocket(url, protocols);
    const s = { ws, inbox: [], wake() {} };
    s.opened = new Promise((resolve, reject) => {
      ws.onopen = () => resolve(ws.protocol);
      ws.onerror = () => reject(new Error("WebSocket error before open"));
    });
    s.opened.catch(() => {});
    s.closed = new Promise((resolve) => {
      ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
    });
    ws.onmessage = (e) => {
      s.inbox.push(e.data);
      s.wake();
    };
    sockets.push(s);
    return sockets.length - 1;
  },
  opened: (id, ms) => deadline(sockets[id].opened, ms, "the socket to open"),
  send(id, data) {
    sockets[id].ws.send(data);
  },
  sendBytes(id, bytes) {
    sockets[id].ws.send(new Uint8Array(bytes));
  },
  next(id, ms) {
    const s = sockets[id];
    return deadline(new Promise((resolve) => {
      s.wake = () => {
        if (s.inbox.length === 0) return;
        s.wake = () => {};
        resolve(s.inbox.shift());
      };
      s.wake();
    }), ms, "a message");
  },
  close(id, code, reason) {
    sockets[id].ws.close(code, reason);
  },
  closed: (id, ms) => deadline(sockets[id].closed, ms, "the close event"),
  state: (id) => sockets[id].ws.readyState,
};
</script>
<p>echo</p>
`;

/** A close as a handler or a client saw it. */
export interface CloseInfo {
  code: number;
  reason: string;
}

/** An echo server on a free loopback port, recording what its handler saw. */
export interface EchoServer extends AsyncDisposable {
  readonly server: Server;
  readonly port: number;
  /** `http://127.0.0.1:PORT/`: serves {@linkcode PAGE}. */
  readonly url: string;
  /** `ws://127.0.0.1:PORT/`. */
  readonly wsUrl: string;
  /** Every log line of the server. */
  readonly logs: string[];
  /** One entry per accepted socket: its `Origin` and requested subprotocols. */
  readonly opens: { origin: string | null; protocols: string | null }[];
  /** Every message the handler got. */
  readonly received: (string | Uint8Array)[];
  /** Every close the handler got. */
  readonly closes: CloseInfo[];
  /** True once the server's `finished` promise settled: before shutdown, only by a crash. */
  readonly finishedEarly: boolean;
  /** Log lines matching `pattern`. */
  logged(pattern: RegExp): string[];
}

/**
 * Starts an echo server: a text message comes back as is, a binary one as
 * {@linkcode describeBinary}. Two commands drive the server side from any
 * client: `cmd:close CODE REASON` closes the socket, and
 * `cmd:burst N CODE REASON` sends `burst 0` .. `burst N-1` and then closes.
 * A plain `GET /` gets a small page with the browser-side helpers.
 */
export function startEcho(options: ServeOptions = {}): EchoServer {
  const logs: string[] = [];
  const opens: EchoServer["opens"] = [];
  const received: EchoServer["received"] = [];
  const closes: CloseInfo[] = [];
  let finishedEarly = false;
  let stopping = false;
  const server = serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
    logger: createLogger("pusher", { level: "debug", sink: (line) => logs.push(line) }),
    ...options,
  }, (req) => {
    if (!isWebSocketUpgrade(req)) {
      if (new URL(req.url).pathname !== "/") return new Response("Not found\n", { status: 404 });
      return new Response(PAGE, { headers: { "content-type": "text/html;charset=utf-8" } });
    }
    const protocols = req.headers.get("sec-websocket-protocol");
    return upgradeWebSocket(req, {
      open(socket) {
        opens.push({ origin: socket.origin, protocols });
      },
      message(socket, data) {
        received.push(data);
        if (typeof data !== "string") return socket.send(describeBinary(data));
        const close = /^cmd:close (\d+) (.*)$/s.exec(data);
        if (close) return socket.close(Number(close[1]), close[2]!);
        const burst = /^cmd:burst (\d+) (\d+) (.*)$/s.exec(data);
        if (burst) {
          for (let i = 0; i < Number(burst[1]); i++) socket.send(`burst ${i}`);
          return socket.close(Number(burst[2]), burst[3]!);
        }
        socket.send(data);
      },
      close(_socket, code, reason) {
        closes.push({ code, reason });
      },
    });
  });
  server.finished.then(() => finishedEarly = !stopping, () => finishedEarly = true);
  const port = server.addr.port;
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}/`,
    wsUrl: `ws://127.0.0.1:${port}/`,
    logs,
    opens,
    received,
    closes,
    get finishedEarly() {
      return finishedEarly;
    },
    logged: (pattern) => logs.filter((line) => pattern.test(line)),
    async [Symbol.asyncDispose]() {
      stopping = true;
      await within(server.shutdown(), 10_000, "the echo server to shut down");
    },
  };
}

// ---------------------------------------------------------------------------
// Raw frames

/** RFC 6455's example key; its accept value is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`. */
export const SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ==";

/** A valid handshake's header fields, with extra or replaced ones; a null value drops one. */
export function handshakeHeaders(headers: Record<string, string | null> = {}): [string, string][] {
  const all: Record<string, string | null> = {
    Host: "127.0.0.1",
    Upgrade: "websocket",
    Connection: "Upgrade",
    "Sec-WebSocket-Key": SAMPLE_KEY,
    "Sec-WebSocket-Version": "13",
    ...headers,
  };
  return Object.entries(all).filter((field): field is [string, string] => field[1] !== null);
}

/** A valid handshake request head, with extra or replaced headers (a null value drops one). */
export function handshakeRequest(headers: Record<string, string | null> = {}, requestLine = "GET / HTTP/1.1"): string {
  let head = `${requestLine}\r\n`;
  for (const [name, value] of handshakeHeaders(headers)) head += `${name}: ${value}\r\n`;
  return `${head}\r\n`;
}

/** What curl --http2 sends to an http:// URL: a plain request that offers an upgrade to h2c. */
export function h2cUpgradeRequest(path: string): string {
  return `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n` +
    "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
}

/** Opcodes. */
export const Op = { continuation: 0x0, text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const;

/** Options for {@linkcode clientFrame}. */
export interface FrameOptions {
  /** @default {true} */
  fin?: boolean;
  /** The three reserved bits, as a number 0-7. @default {0} */
  rsv?: number;
  /** The 4-byte masking key, or null to send the frame unmasked. @default a random key */
  mask?: Uint8Array | null;
  /** Declared payload length, when it should differ from the payload's (a header-only frame, say). */
  length?: number;
  /** Length encoding; the shortest by default. */
  lengthBits?: 7 | 16 | 64;
}

/** Encodes a frame as a client sends it: masked unless told otherwise. */
export function clientFrame(opcode: number, payload: Uint8Array | string = "", options: FrameOptions = {}): Uint8Array {
  const bytes = typeof payload === "string" ? utf8.encode(payload) : payload;
  const length = options.length ?? bytes.length;
  const bits = options.lengthBits ?? (length < 126 ? 7 : length < 0x10000 ? 16 : 64);
  const mask = options.mask === undefined ? crypto.getRandomValues(new Uint8Array(4)) : options.mask;
  const header = new Uint8Array(2 + (bits === 16 ? 2 : bits === 64 ? 8 : 0) + (mask ? 4 : 0));
  header[0] = ((options.fin ?? true) ? 0x80 : 0) | ((options.rsv ?? 0) << 4) | opcode;
  header[1] = (mask ? 0x80 : 0) | (bits === 7 ? length : bits === 16 ? 126 : 127);
  const view = new DataView(header.buffer);
  if (bits === 16) view.setUint16(2, length);
  if (bits === 64) view.setBigUint64(2, BigInt(length));
  const body = bytes.slice();
  if (mask) {
    header.set(mask, header.length - 4);
    for (let i = 0; i < body.length; i++) body[i]! ^= mask[i & 3]!;
  }
  return concat([header, body]);
}

/** A close frame's payload: the code, big-endian, then the reason. */
export function closePayload(code: number, reason: Uint8Array | string = ""): Uint8Array {
  const bytes = typeof reason === "string" ? utf8.encode(reason) : reason;
  return concat([new Uint8Array([code >> 8, code & 0xff]), bytes]);
}

/** A frame the server sent. */
export interface ServerFrame {
  fin: boolean;
  opcode: number;
  payload: Uint8Array;
}

/**
 * Parses one server frame at the start of `bytes`; null when incomplete.
 * Fails on what a server must never send: a mask, reserved bits, an unknown
 * opcode, or a fragmented or oversized control frame.
 */
export function parseServerFrame(bytes: Uint8Array): { frame: ServerFrame; size: number } | null {
  if (bytes.length < 2) return null;
  const b0 = bytes[0]!;
  const b1 = bytes[1]!;
  const opcode = b0 & 0x0f;
  assert.equal(b0 & 0x70, 0, `server frame with reserved bits: 0x${b0.toString(16)}`);
  assert.equal(b1 & 0x80, 0, "server frames must not be masked");
  assert.ok([0, 1, 2, 8, 9, 10].includes(opcode), `server frame with opcode ${opcode}`);
  let length = b1 & 0x7f;
  let start = 2;
  if (length === 126) {
    if (bytes.length < 4) return null;
    length = (bytes[2]! << 8) | bytes[3]!;
    start = 4;
  } else if (length === 127) {
    if (bytes.length < 10) return null;
    length = Number(new DataView(bytes.buffer, bytes.byteOffset + 2, 8).getBigUint64(0));
    start = 10;
  }
  if (opcode >= 8) {
    assert.ok(b0 & 0x80, "server control frame fragmented");
    assert.ok(length <= 125, `server control frame of ${length} bytes`);
  }
  if (bytes.length < start + length) return null;
  return {
    frame: { fin: (b0 & 0x80) !== 0, opcode, payload: bytes.slice(start, start + length) },
    size: start + length,
  };
}

/** The code and reason of a server close frame's payload (1005 when empty). */
export function parseClose(payload: Uint8Array): CloseInfo {
  if (payload.length === 0) return { code: 1005, reason: "" };
  assert.ok(payload.length >= 2, "server close frame with a 1-byte payload");
  return { code: (payload[0]! << 8) | payload[1]!, reason: strictUtf8.decode(payload.subarray(2)) };
}

/** A response head as read off the wire. */
export interface HttpHead {
  status: number;
  headers: Headers;
  head: string;
}

function parseHttpHead(head: string): HttpHead {
  const [statusLine, ...lines] = head.split("\r\n");
  const match = /^HTTP\/1\.1 (\d{3}) /.exec(statusLine!);
  assert.ok(match, `status line ${JSON.stringify(statusLine)}`);
  const headers = new Headers();
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  return { status: Number(match[1]), headers, head };
}

function indexOfHeadEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}

/** How {@linkcode RawSocket} connects: over TLS when `caCerts` is given, verifying the server for `hostname`. */
export interface RawConnectOptions {
  /** PEM CA certificates: connect over TLS and verify the server with them. @default {plain TCP} */
  caCerts?: string[];
  /** The name the server's certificate must carry. @default {"127.0.0.1"} */
  hostname?: string;
}

/** A bare TCP (or TLS) connection that speaks WebSocket by hand. */
export class RawSocket implements AsyncDisposable {
  readonly conn: Deno.Conn;
  #buffer: Uint8Array = new Uint8Array(0);
  #ended = false;
  /** Pings read by {@linkcode RawSocket.next} and its callers. */
  pings = 0;

  constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  /** Connects without writing anything; over TLS with `options.caCerts`, its handshake done. */
  static async connect(port: number, options: RawConnectOptions = {}): Promise<RawSocket> {
    const hostname = options.hostname ?? "127.0.0.1";
    if (!options.caCerts) return new RawSocket(await Deno.connect({ hostname, port }));
    const tls = await Deno.connectTls({ hostname, port, caCerts: options.caCerts });
    try {
      await tls.handshake();
    } catch (error) {
      tls.close();
      throw error;
    }
    return new RawSocket(tls);
  }

  /** Connects, sends a valid handshake (with `headers` added) and checks the 101 answer. */
  static async open(
    port: number,
    headers: Record<string, string | null> = {},
    options: RawConnectOptions = {},
  ): Promise<RawSocket> {
    const socket = await RawSocket.connect(port, options);
    try {
      await socket.write(handshakeRequest(headers));
      const response = await socket.readHead();
      assert.equal(response.status, 101, response.head);
      assert.equal(response.headers.get("sec-websocket-accept"), acceptKey(headers["Sec-WebSocket-Key"] ?? SAMPLE_KEY));
      return socket;
    } catch (error) {
      socket.close();
      throw error;
    }
  }

  /** True once the server ended the TCP connection. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Writes all of `bytes`. */
  async write(bytes: Uint8Array | string): Promise<void> {
    const data = typeof bytes === "string" ? utf8.encode(bytes) : bytes;
    let offset = 0;
    while (offset < data.length) offset += await this.conn.write(data.subarray(offset));
  }

  /** Sends one masked (by default) frame. */
  send(opcode: number, payload: Uint8Array | string = "", options: FrameOptions = {}): Promise<void> {
    return this.write(clientFrame(opcode, payload, options));
  }

  /** Reads an HTTP response head; what follows it stays buffered for {@linkcode RawSocket.next}. */
  async readHead(ms = 5000): Promise<HttpHead> {
    return await within(
      (async () => {
        while (true) {
          const end = indexOfHeadEnd(this.#buffer);
          if (end >= 0) {
            const head = new TextDecoder("latin1").decode(this.#buffer.subarray(0, end));
            this.#buffer = this.#buffer.slice(end + 4);
            return parseHttpHead(head);
          }
          if (!await this.#fill()) throw new Error(`Connection ended before a response head: ${this.#text()}`);
        }
      })(),
      ms,
      "the response head",
    );
  }

  /** Takes the bytes read but not parsed yet (what came in the same read as a response head, say). */
  takeBuffered(): Uint8Array {
    const bytes = this.#buffer;
    this.#buffer = new Uint8Array(0);
    return bytes;
  }

  /** The next server frame, or null when the connection ended first. */
  async next(ms = 5000, what = "a frame from the server"): Promise<ServerFrame | null> {
    return await within(
      (async () => {
        while (true) {
          const parsed = parseServerFrame(this.#buffer);
          if (parsed) {
            this.#buffer = this.#buffer.slice(parsed.size);
            if (parsed.frame.opcode === Op.ping) this.pings++;
            return parsed.frame;
          }
          if (!await this.#fill()) {
            assert.equal(this.#buffer.length, 0, "the connection ended inside a frame");
            return null;
          }
        }
      })(),
      ms,
      what,
    );
  }

  /**
   * Reads frames up to and including a close frame; returns its code and
   * reason and the frames before it, or a null close when the connection
   * ended first.
   */
  async readUntilClose(ms = 5000): Promise<{ close: CloseInfo | null; before: ServerFrame[] }> {
    const before: ServerFrame[] = [];
    const deadline = Date.now() + ms;
    while (true) {
      const frame = await this.next(Math.max(1, deadline - Date.now()), "a close frame from the server");
      if (frame === null) return { close: null, before };
      if (frame.opcode === Op.close) return { close: parseClose(frame.payload), before };
      before.push(frame);
    }
  }

  /** Reads and returns frames until the server ends the connection. */
  async readToEnd(ms = 5000): Promise<ServerFrame[]> {
    const frames: ServerFrame[] = [];
    const deadline = Date.now() + ms;
    while (true) {
      const frame = await this.next(Math.max(1, deadline - Date.now()), "the server to end the connection");
      if (frame === null) return frames;
      frames.push(frame);
    }
  }

  /**
   * Answers pings with pongs (as a live client does) until `n` pings were
   * read since the socket opened.
   */
  async answerPings(n: number, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.pings < n) {
      const frame = await this.next(Math.max(1, deadline - Date.now()), `${n} pings (got ${this.pings})`);
      assert.ok(frame, `the connection ended after ${this.pings} pings`);
      if (frame.opcode === Op.ping) await this.send(Op.pong, frame.payload);
    }
  }

  /** Reads once into the buffer; false on end of stream. */
  async #fill(): Promise<boolean> {
    if (this.#ended) return false;
    const chunk = new Uint8Array(64 * 1024);
    let n: number | null;
    try {
      n = await this.conn.read(chunk);
    } catch {
      n = null; // reset by the server: ended all the same
    }
    if (n === null) {
      this.#ended = true;
      return false;
    }
    this.#buffer = concat([this.#buffer, chunk.subarray(0, n)]);
    return true;
  }

  #text(): string {
    return JSON.stringify(new TextDecoder("latin1").decode(this.#buffer.subarray(0, 200)));
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/**
 * Sends `request` on a fresh connection and reads the response to the end of
 * the connection (the server closes after any non-101 answer).
 */
export async function httpExchange(
  port: number,
  request: Uint8Array | string,
  ms = 5000,
): Promise<HttpHead & { body: string }> {
  await using socket = await RawSocket.connect(port);
  try {
    await socket.write(request);
  } catch {
    // The server may answer and close before reading all of an oversized request.
  }
  const head = await socket.readHead(ms);
  const rest: Uint8Array[] = [socket.takeBuffered()];
  await within(
    (async () => {
      const chunk = new Uint8Array(4096);
      for (let n; (n = await socket.conn.read(chunk).catch(() => null)) !== null;) rest.push(chunk.slice(0, n));
    })(),
    ms,
    "the server to close after its answer",
  );
  return { ...head, body: new TextDecoder().decode(concat(rest)) };
}

// ---------------------------------------------------------------------------
// Real clients

/** One open WebSocket of a real client, as the tests drive it. */
export interface Peer extends AsyncDisposable {
  /** The subprotocol the client agreed to ("" for none). */
  readonly protocol: string;
  send(data: string | Uint8Array): Promise<void>;
  /** The next message from the server (text: this server sends no binary). */
  next(ms?: number): Promise<string>;
  /** Starts the client's closing handshake. */
  close(code: number, reason: string): Promise<void>;
  /** The close as the client saw it. */
  closed(ms?: number): Promise<CloseInfo>;
  isOpen(): Promise<boolean>;
}

/** A real WebSocket client. */
export interface RealClient {
  readonly name: string;
  /** True when the caller chooses the `Origin` header; a browser sends the page's own. */
  readonly setsOrigin: boolean;
  connect(echo: EchoServer, options?: { protocols?: string[]; origin?: string }): Promise<Peer>;
}

/** Messages of a client, with a waiter for the next one. */
class Inbox<T> {
  readonly #items: T[] = [];
  #wake = () => {};

  push(item: T): void {
    this.#items.push(item);
    this.#wake();
  }

  async next(ms: number, what: string): Promise<T> {
    return await within(
      new Promise<T>((resolve) => {
        this.#wake = () => {
          if (this.#items.length === 0) return;
          // Once resolved, later items wait for the next call.
          this.#wake = () => {};
          resolve(this.#items.shift()!);
        };
        this.#wake();
      }),
      ms,
      what,
    );
  }
}

/** Deno's own `WebSocket`. */
export const denoClient: RealClient = {
  name: "Deno WebSocket",
  setsOrigin: true,
  async connect(echo, options = {}) {
    const ws = new WebSocket(echo.wsUrl, {
      protocols: options.protocols ?? [],
      headers: options.origin ? { origin: options.origin } : {},
    });
    ws.binaryType = "arraybuffer";
    const inbox = new Inbox<string>();
    ws.onmessage = (event) => inbox.push(String(event.data));
    const closed = new Promise<CloseInfo>((resolve) => {
      ws.onclose = (event) => resolve({ code: event.code, reason: event.reason });
    });
    const opened = new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error("WebSocket error before open"));
    });
    try {
      await within(opened, 5000, "Deno's WebSocket to open");
    } catch (error) {
      await within(closed, 5000, "Deno's failed WebSocket to close");
      throw error;
    }
    return {
      get protocol() {
        return ws.protocol;
      },
      send: (data) => Promise.resolve(ws.send(data)),
      next: (ms = 5000) => inbox.next(ms, "a message to Deno's WebSocket"),
      close: (code, reason) => Promise.resolve(ws.close(code, reason)),
      closed: (ms = 5000) => within(closed, ms, "Deno's WebSocket to close"),
      isOpen: () => Promise.resolve(ws.readyState === WebSocket.OPEN),
      async [Symbol.asyncDispose]() {
        if (ws.readyState !== WebSocket.CLOSED) ws.close();
        await within(closed, 5000, "Deno's WebSocket to close");
      },
    };
  },
};

/** The part of npm `ws`'s client used here (the package ships no types). */
export interface NpmSocket {
  readonly readyState: number;
  readonly protocol: string;
  send(data: string | Uint8Array, options?: { fin?: boolean; binary?: boolean }): void;
  ping(data?: Uint8Array | string): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  on(event: "open", listener: () => void): this;
  on(event: "message", listener: (data: Uint8Array, isBinary: boolean) => void): this;
  on(event: "pong" | "ping", listener: (data: Uint8Array) => void): this;
  on(event: "close", listener: (code: number, reason: Uint8Array) => void): this;
  on(event: "error", listener: (error: Error) => void): this;
}

type NpmSocketConstructor = new (
  url: string,
  protocols: string[],
  options: { origin?: string },
) => NpmSocket;

/** An npm `ws` peer, with the raw `ws` socket for what only it can do (pings, fragments). */
export interface NpmPeer extends Peer {
  readonly ws: NpmSocket;
  /** Payloads of the pongs received. */
  pong(ms?: number): Promise<Uint8Array>;
}

/** Opens an npm `ws` client. */
export async function openNpm(
  echo: EchoServer,
  options: { protocols?: string[]; origin?: string } = {},
): Promise<NpmPeer> {
  const Ctor = NpmWebSocket as unknown as NpmSocketConstructor;
  const ws = new Ctor(echo.wsUrl, options.protocols ?? [], options.origin ? { origin: options.origin } : {});
  const inbox = new Inbox<string>();
  const pongs = new Inbox<Uint8Array>();
  const errors: Error[] = [];
  ws.on("message", (data, isBinary) => inbox.push(isBinary ? `unexpected binary ${data.length}` : String(data)));
  ws.on("pong", (data) => pongs.push(new Uint8Array(data)));
  ws.on("error", (error) => errors.push(error));
  const closed = new Promise<CloseInfo>((resolve) => {
    ws.on("close", (code, reason) => resolve({ code, reason: new TextDecoder().decode(reason) }));
  });
  const opened = new Promise<void>((resolve, reject) => {
    ws.on("open", resolve);
    closed.then(() => reject(new Error(`ws closed before open: ${errors.map((e) => e.message).join(", ")}`)));
  });
  try {
    await within(opened, 5000, "ws to open");
  } catch (error) {
    ws.terminate();
    await within(closed, 5000, "a failed ws to close");
    throw error;
  }
  return {
    ws,
    get protocol() {
      return ws.protocol;
    },
    send: (data) => Promise.resolve(ws.send(data)),
    next: (ms = 5000) => inbox.next(ms, "a message to ws"),
    pong: (ms = 5000) => pongs.next(ms, "a pong to ws"),
    close: (code, reason) => Promise.resolve(ws.close(code, reason)),
    closed: (ms = 5000) => within(closed, ms, "ws to close"),
    isOpen: () => Promise.resolve(ws.readyState === 1),
    async [Symbol.asyncDispose]() {
      if (ws.readyState !== 3) ws.terminate();
      await within(closed, 5000, "ws to close");
    },
  };
}

/** npm `ws`. */
export const npmClient: RealClient = {
  name: "npm ws",
  setsOrigin: true,
  connect: openNpm,
};

/**
 * Chromium: each peer is a tab on the echo server's page, whose own
 * WebSocket code (see {@linkcode PAGE}) the test calls by evaluating strings.
 */
export function chromiumClient(browser: Browser): RealClient {
  return {
    name: "Chromium",
    setsOrigin: false,
    async connect(echo, options = {}) {
      const page = await browser.newPage();
      const run = <T>(code: string, ms = 5000): Promise<T> =>
        within(page.evaluate(code) as Promise<T>, ms + 2000, `Chromium to run ${code.slice(0, 60)}`);
      try {
        await within(page.goto(echo.url), 10_000, "the echo page to load");
        const id = await run<number>(
          `t.open(${JSON.stringify(echo.wsUrl)}, ${JSON.stringify(options.protocols ?? [])})`,
        );
        const protocol = await run<string>(`t.opened(${id}, 5000)`);
        return {
          protocol,
          send: (data) =>
            run(typeof data === "string" ? `t.send(${id}, ${JSON.stringify(data)})` : `t.sendBytes(${id}, [${data}])`),
          next: (ms = 5000) => run<string>(`t.next(${id}, ${ms})`, ms),
          close: (code, reason) => run(`t.close(${id}, ${code}, ${JSON.stringify(reason)})`),
          async closed(ms = 5000) {
            const { code, reason } = await run<CloseInfo>(`t.closed(${id}, ${ms})`, ms);
            return { code, reason };
          },
          isOpen: async () => await run<number>(`t.state(${id})`) === 1,
          async [Symbol.asyncDispose]() {
            try {
              if (await run<number>(`t.state(${id})`) !== 3) {
                await run(`t.close(${id})`);
                await run(`t.closed(${id}, 5000)`);
              }
            } finally {
              await within(page.close(), 5000, "the tab to close");
            }
          },
        };
      } catch (error) {
        await within(page.close(), 5000, "the tab to close");
        throw error;
      }
    },
  };
}
