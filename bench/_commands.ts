/**
 * Client commands for the load generator's raw clients: sends
 * `{"id":N,"subscribe":{"channel":...}}` (or `unsubscribe`), matches the
 * reply `{"id":N,"result":{}}` or `{"id":N,"error":{...}}` to it, and times
 * the round trip. One command in flight per client, as the scenarios send
 * them.
 *
 * @module
 */

import type { WsClient } from "./_ws_client.ts";

/** How a command ended. */
export interface CommandOutcome {
  /** `result` came back. */
  ok: boolean;
  /** Why not: the error reply's message, or that none came in time. */
  error?: string;
}

interface Waiting {
  id: number;
  sentAt: number;
  settle(outcome: CommandOutcome, at: number): void;
}

const utf8 = new TextDecoder();

/**
 * Sends commands and takes their replies from the clients' message stream.
 *
 * @example
 * ```ts ignore
 * const commands = new Commands();
 * // In the clients' onMessage: if (commands.reply(client, payload, at)) return;
 * const outcome = await commands.send(client, "subscribe", "bench.0");
 * ```
 */
export class Commands {
  readonly #waiting = new Map<WsClient, Waiting>();
  readonly #timeoutMs: number;
  #nextId = 0;
  #latencies = new Float64Array(1024);
  #replies = 0;
  #failed = 0;
  #firstSent = NaN;
  #lastReply = NaN;

  /** `timeoutMs`: how long a reply may take before the command counts as failed. */
  constructor(timeoutMs = 10_000) {
    this.#timeoutMs = timeoutMs;
  }

  /** Successful replies. */
  get replies(): number {
    return this.#replies;
  }

  /** Error replies and commands with no reply in time. */
  get failed(): number {
    return this.#failed;
  }

  /** Round trips of the successful commands, in µs (a view: sort it freely). */
  get latenciesUs(): Float64Array {
    return this.#latencies.subarray(0, this.#replies);
  }

  /** Successful replies per second, from the first command sent to the last reply; null with none. */
  perSecond(): number | null {
    const ms = this.#lastReply - this.#firstSent;
    return this.#replies > 0 && ms > 0 ? Math.round((this.#replies * 1000) / ms) : null;
  }

  /**
   * Sends one command; resolves when its reply came (or `timeoutMs` passed).
   * `onReplied` runs synchronously with the reply, before anything else reads
   * a socket: what it records happened before any later publish was written.
   */
  send(
    client: WsClient,
    op: "subscribe" | "unsubscribe",
    channel: string,
    onReplied?: () => void,
  ): Promise<CommandOutcome> {
    if (this.#waiting.has(client)) throw new RangeError("Cannot send a command: one is in flight on this client");
    const id = ++this.#nextId;
    const sentAt = performance.now();
    if (Number.isNaN(this.#firstSent)) this.#firstSent = sentAt;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(client);
        this.#failed++;
        resolve({ ok: false, error: `no reply within ${this.#timeoutMs} ms` });
      }, this.#timeoutMs);
      this.#waiting.set(client, {
        id,
        sentAt,
        settle: (outcome, at) => {
          clearTimeout(timer);
          if (outcome.ok) {
            this.#record((at - sentAt) * 1000, at);
            onReplied?.();
          } else {
            this.#failed++;
          }
          resolve(outcome);
        },
      });
      client.send(`{"id":${id},"${op}":{"channel":"${channel}"}}`);
    });
  }

  /** Takes `payload` if it is a command's reply (`{"id":...`); false for anything else. */
  reply(client: WsClient, payload: Uint8Array, at: number): boolean {
    // `{"id":`: replies are rare next to publications, so only they are parsed.
    if (payload[0] !== 0x7b || payload[2] !== 0x69 || payload[3] !== 0x64 || payload[1] !== 0x22) return false;
    const waiting = this.#waiting.get(client);
    const reply = JSON.parse(utf8.decode(payload)) as { id: number; error?: { message: string } };
    if (!waiting || waiting.id !== reply.id) {
      this.#failed++;
      return true;
    }
    this.#waiting.delete(client);
    waiting.settle(reply.error ? { ok: false, error: reply.error.message } : { ok: true }, at);
    return true;
  }

  #record(us: number, at: number): void {
    if (this.#replies === this.#latencies.length) {
      const bigger = new Float64Array(this.#latencies.length * 2);
      bigger.set(this.#latencies);
      this.#latencies = bigger;
    }
    this.#latencies[this.#replies++] = us;
    this.#lastReply = at;
  }
}
