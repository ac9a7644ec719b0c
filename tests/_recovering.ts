/**
 * Clients and a publish stream for the recovery fault tests: raw WebSocket
 * clients of one history channel that keep their last position and
 * subscribe again with `since` after every reconnect, and a stream of
 * publishes each retried with its idempotency key until answered ok. Used
 * on the hub (`recovery_test.ts`) and on NATS (`nats_faults_test.ts`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { until } from "../channel/testing.ts";
import {
  encodeClientFrame,
  OPCODE_CLOSE,
  OPCODE_PING,
  OPCODE_PONG,
  OPCODE_TEXT,
  ServerFrameParser,
} from "../bench/_ws_frames.ts";

/** The channel every client subscribes to. */
export const CHANNEL = "news";
/** Milliseconds between publishes: 40 a second. */
export const PUBLISH_INTERVAL = 25;
/** The clients' reconnect backoff: full jitter, from this doubling to {@linkcode MAX_RECONNECT_DELAY}. */
const MIN_RECONNECT_DELAY = 50;
const MAX_RECONNECT_DELAY = 500;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A position in the channel's history. */
export interface Position {
  offset: number;
  epoch: string;
}

/** Waits `ms`: only for pacing a stream or an outage, never for a condition. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A raw WebSocket client of one history channel, speaking the client
 * protocol itself: it keeps the last position it saw, subscribes again with
 * `since` after every reconnect, and records every publication's data and
 * every way the protocol let it down.
 */
export class RecoveringClient implements AsyncDisposable {
  /** Every publication's data, in the order it arrived. */
  readonly data: number[] = [];
  /** Gaps, duplicates and disorder inside one epoch, refused commands, protocol errors. */
  readonly violations: string[] = [];
  /** The last position seen, or null before the first or after a "could not recover" without one. */
  position: Position | null = null;
  /** Connections made (greeted). */
  connections = 0;
  /** Subscribe replies received. */
  subscribes = 0;
  /** `recovered` of the last subscribe reply. */
  lastRecovered: boolean | null = null;
  /** Times told it could not recover: `recovered: false` after a `since`, or a live frame from a new epoch. */
  notRecovered = 0;
  /** Of those, the times told by a live frame from a new epoch. */
  newEpochFrames = 0;
  /** Most publications a recovered resubscribe owed this client (the reply's offset less `since`'s). */
  largestRecovery = 0;
  /** Why the last connection ended or failed. */
  lastEnd = "";
  readonly #port: number;
  readonly #sinceById = new Map<number, Position | null>();
  #nextId = 1;
  #conn: Deno.TcpConn | null = null;
  #stopped = false;
  #pause = 0;
  #wake: (() => void) | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #done: Promise<void>;

  constructor(port: number) {
    this.#port = port;
    this.#done = this.#run();
  }

  /** Whether the current connection has its subscribe answered. */
  get subscribed(): boolean {
    return this.#conn !== null && this.#subscribedOn === this.#conn;
  }
  #subscribedOn: Deno.TcpConn | null = null;

  /** Closes the TCP connection without a close frame, as a network drop would, and stays away `pauseMs`. */
  drop(pauseMs: number): void {
    this.#pause = pauseMs;
    try {
      this.#conn?.close();
    } catch { /* already closed */ }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#wake?.();
    try {
      this.#conn?.close();
    } catch { /* already closed */ }
    await this.#done;
  }

  /** One single-flight loop: connect, read until the connection ends, back off, again. */
  async #run(): Promise<void> {
    let attempt = 0;
    while (!this.#stopped) {
      try {
        await this.#session(() => (attempt = 0));
      } catch (error) {
        this.lastEnd = (error as Error).message;
      }
      this.#conn = null;
      if (this.#stopped) return;
      const delay = this.#pause ||
        Math.random() * Math.min(MAX_RECONNECT_DELAY, MIN_RECONNECT_DELAY * 2 ** attempt++);
      this.#pause = 0;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        this.#timer = setTimeout(resolve, delay);
      });
      this.#wake = null;
    }
  }

  async #session(onGreeted: () => void): Promise<void> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.#port });
    this.#conn = conn;
    if (this.#stopped) {
      conn.close();
      return;
    }
    let writing: Promise<unknown> = Promise.resolve();
    const write = (bytes: Uint8Array) => {
      writing = writing.then(async () => {
        let written = 0;
        while (written < bytes.length) written += await conn.write(bytes.subarray(written));
      }).catch(() => {});
    };
    let greeted = false;
    const parser = new ServerFrameParser({
      onFrame: (opcode, payload) => {
        if (opcode === OPCODE_PING) write(encodeClientFrame(OPCODE_PONG, payload));
        if (opcode === OPCODE_CLOSE) throw new Error(`closed by the server (${payload[0]! * 256 + payload[1]!})`);
        if (opcode !== OPCODE_TEXT) return;
        const text = decoder.decode(payload);
        if (!greeted) {
          greeted = true;
          this.connections++;
          onGreeted();
          const id = this.#nextId++;
          const since = this.position;
          this.#sinceById.set(id, since);
          const subscribe = since ? { channel: CHANNEL, since } : { channel: CHANNEL };
          write(encodeClientFrame(OPCODE_TEXT, encoder.encode(JSON.stringify({ id, subscribe }))));
          return;
        }
        this.#message(conn, text);
      },
    });
    write(encoder.encode(
      `GET / HTTP/1.1\r\nHost: 127.0.0.1:${this.#port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    ));
    let buffer = new Uint8Array(8192);
    let fill = 0;
    let upgraded = false;
    try {
      while (true) {
        if (fill === buffer.length) {
          const bigger = new Uint8Array(Math.max(buffer.length * 2, parser.needed));
          bigger.set(buffer);
          buffer = bigger;
        }
        const n = await conn.read(buffer.subarray(fill));
        if (n === null) throw new Error("eof");
        fill += n;
        let consumed = 0;
        if (!upgraded) {
          const head = decoder.decode(buffer.subarray(0, fill)).indexOf("\r\n\r\n");
          if (head < 0) continue;
          const status = decoder.decode(buffer.subarray(0, head)).split("\r\n")[0]!;
          if (!status.startsWith("HTTP/1.1 101")) throw new Error(`upgrade refused: ${status}`);
          upgraded = true;
          consumed = head + 4;
        }
        consumed += parser.parse(buffer.subarray(consumed, fill));
        buffer.copyWithin(0, consumed, fill);
        fill -= consumed;
      }
    } finally {
      try {
        conn.close();
      } catch { /* already closed */ }
      await writing;
    }
  }

  #message(conn: Deno.TcpConn, text: string): void {
    const message = JSON.parse(text);
    if (message.id !== undefined) {
      if (message.error) {
        this.violations.push(`subscribe refused: ${text}`);
        return;
      }
      const since = this.#sinceById.get(message.id);
      this.#sinceById.delete(message.id);
      const { recovered, offset, epoch } = message.result;
      this.subscribes++;
      this.lastRecovered = recovered;
      this.#subscribedOn = conn;
      const position = offset === undefined ? null : { offset, epoch };
      if (!since) {
        // A first subscribe: nothing to recover, the channel's position to start from.
        this.position = position;
      } else if (recovered === true) {
        // What followed `since` comes next, in order: the position moves with it.
        if (position?.epoch !== since.epoch) {
          this.violations.push(`recovered across epochs: since ${since.epoch}, ${text}`);
        }
        this.largestRecovery = Math.max(this.largestRecovery, (position?.offset ?? 0) - since.offset);
      } else {
        this.notRecovered++;
        this.position = position;
      }
      return;
    }
    if (message.channel !== CHANNEL) {
      this.violations.push(`unexpected frame: ${text}`);
      return;
    }
    const { offset, epoch, data } = message as { offset: number; epoch: string; data: number };
    const last = this.position;
    if (last !== null && last.epoch !== epoch) {
      // Another epoch: the hub lost the history; this frame is how the client learns it.
      this.notRecovered++;
      this.newEpochFrames++;
    } else if (last !== null && offset !== last.offset + 1) {
      this.violations.push(`offset ${offset} after ${last.offset} in epoch ${epoch} (data ${data})`);
    }
    this.position = { offset, epoch };
    this.data.push(data);
  }
}

/**
 * Publishes `data` `next`, `next + 1`, ... to `news` through `/api/publish`,
 * one at a time, each retried with its idempotency key until answered ok:
 * the sequence the hub routes is complete by construction.
 */
export class PublishStream {
  /** The last data answered ok, and its position. */
  confirmed: number;
  position: Position | null = null;
  /** Answers other than ok (503s during a fault) and failed requests, each retried. */
  retries = 0;
  readonly #port: () => number;
  readonly #keyPrefix: string;
  #running = true;
  readonly #done: Promise<void>;

  constructor(port: () => number, keyPrefix: string, after: number) {
    this.#port = port;
    this.#keyPrefix = keyPrefix;
    this.confirmed = after;
    this.#done = this.#loop();
  }

  async #loop(): Promise<void> {
    while (this.#running) {
      const data = this.confirmed + 1;
      const body = JSON.stringify({ channel: CHANNEL, data, idempotency_key: `${this.#keyPrefix}-${data}` });
      while (true) {
        let status = 0;
        let answer = "";
        try {
          const response = await fetch(`http://127.0.0.1:${this.#port()}/api/publish`, {
            method: "POST",
            body,
            headers: { "content-type": "application/json" },
          });
          status = response.status;
          answer = await response.text();
        } catch {
          // The publisher could not be reached: no answer, so retried.
        }
        if (status === 200) {
          const { offset, epoch } = JSON.parse(answer).result;
          this.position = { offset, epoch };
          break;
        }
        if (status !== 0 && status !== 503) throw new Error(`Publish ${data} answered ${status}: ${answer}`);
        this.retries++;
        await sleep(50);
      }
      this.confirmed = data;
      await sleep(PUBLISH_INTERVAL);
    }
  }

  /** Waits until `count` more publishes are answered ok than now. */
  async more(count: number, what: string): Promise<void> {
    const target = this.confirmed + count;
    await Promise.race([
      this.#done.then(() => {
        throw new Error(`The publish stream ended before ${what}`);
      }),
      until(() => this.confirmed >= target, 20_000, `${count} publishes answered ok ${what}`),
    ]);
  }

  /** Stops after the publish in flight is answered ok. */
  async stop(): Promise<void> {
    this.#running = false;
    await this.#done;
  }
}

/** Every client has everything up to `position`. */
export async function caughtUp(clients: RecoveringClient[], position: Position, ms: number): Promise<void> {
  await until(
    () => clients.every((c) => c.position?.epoch === position.epoch && c.position.offset >= position.offset),
    ms,
    `every client to reach ${JSON.stringify(position)}; behind: ${
      clients.filter((c) => c.position?.offset !== position.offset).length
    } at the deadline's start, e.g. client ${clients.findIndex((c) => c.position?.offset !== position.offset)}`,
  ).catch((error) => {
    const behind = clients.filter((c) => c.position?.epoch !== position.epoch || c.position.offset < position.offset);
    throw new Error(
      `${error.message}\n${behind.length} behind; the first: ${
        JSON.stringify({
          position: behind[0]?.position,
          subscribed: behind[0]?.subscribed,
          lastEnd: behind[0]?.lastEnd,
          lastRecovered: behind[0]?.lastRecovered,
        })
      }`,
    );
  });
}

/** Where each client stood when a step began: its step is checked from there. */
export interface Mark {
  data: number;
  violations: number;
}

export function markClients(clients: RecoveringClient[]): Mark[] {
  return clients.map((c) => ({ data: c.data.length, violations: c.violations.length }));
}

/** Since `marks`, every client got exactly `first`..`last`, in order, once, and nothing went wrong on the way. */
export function assertComplete(clients: RecoveringClient[], marks: Mark[], first: number, last: number): void {
  for (const [i, client] of clients.entries()) {
    const mark = marks[i]!;
    assert.deepEqual(client.violations.slice(mark.violations), [], `client ${i}: no gap, duplicate or refusal`);
    const data = client.data.slice(mark.data);
    const wrong = data.findIndex((d, at) => d !== first + at);
    assert.ok(
      wrong < 0 && data.length === last - first + 1,
      `client ${i}: expected ${first}..${last} in order once, got ${data.length} messages` +
        (wrong < 0 ? "" : `, ${data[wrong]} at ${wrong} (around: ${data.slice(Math.max(0, wrong - 3), wrong + 3)})`),
    );
  }
}
