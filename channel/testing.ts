/**
 * Test helpers for the channel hub: a hub on port 0 with captured logs, a raw
 * TCP peer that speaks frames, and deadlines for every wait.
 *
 * @module
 */

import { type HubServer, type HubServerOptions, serveHub } from "./server.ts";
import { createLogger } from "../shared/log.ts";
import {
  type ClientMessage,
  encodeMessage,
  type HubMessage,
  MessageDecoder,
  PROTOCOL_VERSION,
  toHubMessage,
} from "../shared/wire.ts";

/**
 * Rejects with a message naming `what` unless `promise` settles within `ms`.
 */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `check` every 10 ms until it returns (or resolves to) true, or fails after `ms`. */
export async function until(check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > ms) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A hub on a free loopback port whose log lines are kept. */
export interface TestHub extends AsyncDisposable {
  server: HubServer;
  port: number;
  logs: string[];
}

/** Starts a hub on 127.0.0.1 port 0, logging into `logs`, with no startup grace unless asked. */
export function startHub(options: HubServerOptions = {}): TestHub {
  const logs: string[] = [];
  const server = serveHub({
    port: 0,
    startupGrace: 0,
    onListen() {},
    logger: createLogger("channel", { level: "debug", sink: (line) => logs.push(line) }),
    ...options,
  });
  return { server, port: server.addr.port, logs, [Symbol.asyncDispose]: () => server.shutdown() };
}

/** A silent logger for clients in tests. */
export const quiet = createLogger("test", { level: "silent" });

/** A bare TCP connection to the hub that sends and reads frames itself. */
export class RawPeer implements AsyncDisposable {
  readonly #conn: Deno.TcpConn;
  readonly #decoder = new MessageDecoder(toHubMessage, { maxFrameBytes: 64 * 1024 * 1024 });
  readonly #inbox: HubMessage[] = [];
  #ended = false;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  /** Connects (to 127.0.0.1 unless `hostname` says), and sends `hello` unless `hello` is false. */
  static async connect(
    port: number,
    options: { hello?: boolean; token?: string; hostname?: string } = {},
  ): Promise<RawPeer> {
    const peer = new RawPeer(await Deno.connect({ hostname: options.hostname ?? "127.0.0.1", port }));
    if (options.hello ?? true) {
      await peer.send({ type: "hello", version: PROTOCOL_VERSION, token: options.token });
    }
    return peer;
  }

  /** Sends a message. */
  send(message: ClientMessage): Promise<void> {
    return this.write(encodeMessage(message));
  }

  /** Sends raw bytes. */
  async write(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < bytes.length) offset += await this.#conn.write(bytes.subarray(offset));
  }

  /** Reads the next message, failing after `ms`. */
  async next(ms = 5000): Promise<HubMessage> {
    await within(this.#fill(() => this.#inbox.length > 0), ms, "a message from the hub");
    if (this.#inbox.length === 0) throw new Error("The hub closed the connection");
    return this.#inbox.shift()!;
  }

  /** Reads every message until the hub closes the connection. */
  async readToEnd(ms = 5000): Promise<HubMessage[]> {
    await within(this.#fill(() => false), ms, "the hub to close the connection");
    return this.#inbox.splice(0);
  }

  async #fill(enough: () => boolean): Promise<void> {
    const buffer = new Uint8Array(256 * 1024);
    while (!enough() && !this.#ended) {
      let n: number | null;
      try {
        n = await this.#conn.read(buffer);
      } catch {
        n = null;
      }
      if (n === null) {
        this.#ended = true;
        break;
      }
      this.#inbox.push(...this.#decoder.push(buffer.subarray(0, n)));
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/** A port on 127.0.0.1 that was free a moment ago: for a hub that is down. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}
