/**
 * The churn scenario's run in the load generator (`bench/load.ts`, mode
 * `churn`): every client subscribes to a channel, holds it, unsubscribes,
 * and again for `rounds` rounds, each round another of `channels` channels,
 * while a steady stream of publications (`rate` a second, round-robin over
 * the channels) runs until every client is done.
 *
 * A client is owed a publication of its channel when the subscribe's reply
 * came before the publish request was written and the `200` answer came
 * before the client decided to unsubscribe. It holds each subscription until
 * a publication written after the reply has reached it (so every round checks
 * something), then decides: it waits until it has every publication it is
 * owed (or `quietMs` passes: what is missing then is lost), and only then
 * sends the unsubscribe. Publications answered after the decision are not
 * counted either way. A publication of a channel the client is not in
 * (another channel, or after the unsubscribe's reply) is misdirected; one it
 * gets twice in a round, a duplicate.
 *
 * @module
 */

import { Commands } from "./_commands.ts";
import { benchChannel, encodeContent, readChannelFrame, readSendTime, readSeq } from "./_content.ts";
import type { GeneratorRun } from "./_generator.ts";
import type { HttpAnswer } from "./_http_responses.ts";
import { openPublishConnections, type PublishSource } from "./_publish_connection.ts";
import { connectClients, type WsClient } from "./_ws_client.ts";
import { type LoadResult, type LoadSpec, percentiles, perSecond, round } from "./load.ts";

/** Added to a client's channel each round: coprime with 50, so 20 rounds visit 20 different channels. */
const STRIDE = 7;
/** Longest a client holds a subscription waiting for a publication written after its reply. */
const HOLD_MS = 5000;

/** A delivery a client was owed and never got. */
export interface LostDelivery {
  seq: number;
  channel: number;
  /** The client's pusher worker. */
  worker: string;
  /**
   * Other clients of that worker subscribed to the channel (their replies in,
   * their unsubscribes not sent) when the subscribe's reply came: at 0 the
   * client may have been the worker's first member, whose subscribe made the
   * worker subscribe to the channel at the hub.
   */
  companions: number;
  /** From the subscribe's reply to the publish request's write. */
  writtenMsAfterReply: number;
  /** Publications of the channel the client did get that round. */
  got: number;
}

/** One client's state in its current round. */
interface Member {
  client: WsClient;
  /** The channel it is in, subscribing to or leaving; -1 between rounds. */
  channel: number;
  /** The subscribe's reply came: publications from `firstSeq` on are its. */
  subscribed: boolean;
  /** The first publication written after the subscribe's reply. */
  firstSeq: number;
  /** Publications of `channel` received this round. */
  got: Set<number>;
  /** Owed and not yet received, once it decided to leave. */
  missing: Set<number> | null;
  /** Wakes the round's wait (the hold, or the wait for what is owed). */
  wake: (() => void) | null;
  /** When the subscribe's reply came (`performance.now()`). */
  repliedAt: number;
  /** Other clients of its pusher worker subscribed to the channel (their reply in) when its reply came. */
  companions: number;
}

/** The churn run; see the module doc. */
export class ChurnRun implements GeneratorRun, PublishSource {
  readonly #spec: LoadSpec;
  readonly #clients: WsClient[] = [];
  #members: Member[] = [];
  readonly #commands = new Commands();
  /** Per publication: 0 not answered, 1 answered 200, 2 failed. */
  readonly #status: Uint8Array;
  /** Per publication, when its request was built and written (`performance.now()`). */
  readonly #writtenAt: Float64Array;
  /** The first lost deliveries, for the JSON: what a reader needs to tell a race from a drop. */
  readonly #lostSample: LostDelivery[] = [];
  #latencies = new Float64Array(1024);
  #deliveries = 0;
  #owed = 0;
  #lost = 0;
  #duplicates = 0;
  #misdirected = 0;
  #foreign = 0;
  #taken = 0;
  #due = 0;
  #stopped = false;
  #answered = 0;
  #ok = 0;
  readonly #failures = new Map<string, number>();
  #firstWrite = NaN;
  #lastAnswer = NaN;
  #lastReceipt = NaN;
  #connectMs = 0;

  constructor(spec: LoadSpec) {
    this.#spec = spec;
    this.#status = new Uint8Array(spec.messages);
    this.#writtenAt = new Float64Array(spec.messages);
  }

  async connect(): Promise<number> {
    const { hostname, wsPort: port, clients, connectBatch, readBufferBytes } = this.#spec;
    const onMessage = (client: WsClient, payload: Uint8Array, at: number) => this.#received(client, payload, at);
    await connectClients(this.#clients, {
      hostname,
      port,
      onMessage,
      readBufferBytes,
      count: clients,
      batch: connectBatch,
    });
    this.#members = this.#clients.map((client) => ({
      client,
      channel: -1,
      subscribed: false,
      firstSeq: 0,
      got: new Set(),
      missing: null,
      wake: null,
      repliedAt: 0,
      companions: 0,
    }));
    return this.#clients.length;
  }

  async close(): Promise<void> {
    await Promise.all(this.#clients.map((client) => client.close()));
  }

  async drive(connectMs: number): Promise<LoadResult> {
    this.#connectMs = connectMs;
    const spec = this.#spec;
    const connections = await openPublishConnections(this, spec);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const start = performance.now();
      const rate = spec.rate ?? 1000;
      const tick = () => {
        const elapsed = performance.now() - start;
        this.#due = Math.min(spec.messages, Math.floor((elapsed * rate) / 1000) + 1);
        for (const connection of connections) connection.pump(1);
        for (const connection of connections) connection.pump();
        if (!this.#stopped && this.#due < spec.messages) {
          timer = setTimeout(tick, Math.max(0, (this.#due * 1000) / rate - elapsed));
        }
      };
      tick();
      await Promise.all(this.#members.map((member) => this.#churn(member)));
      this.#stopped = true;
      clearTimeout(timer);
      const deadline = performance.now() + spec.quietMs;
      while (this.#answered < this.#taken && performance.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    } finally {
      this.#stopped = true;
      clearTimeout(timer);
      await Promise.all(connections.map((connection) => connection.close()));
    }
    return this.#result();
  }

  take(): number | null {
    return !this.#stopped && this.#taken < this.#due ? this.#taken++ : null;
  }

  request(seq: number): string {
    const now = performance.now();
    if (Number.isNaN(this.#firstWrite)) this.#firstWrite = now;
    this.#writtenAt[seq] = now;
    const content = encodeContent(seq, Math.round(now * 1000), { bytes: this.#spec.contentBytes });
    const channel = benchChannel(seq % this.#spec.channels);
    return `GET /?channel=${channel}&content=${content} HTTP/1.1\r\nHost: ${this.#spec.hostname}:${this.#spec.publishPort}\r\n\r\n`;
  }

  answer(seq: number, answer: HttpAnswer): void {
    this.#answered++;
    this.#lastAnswer = performance.now();
    if (answer.status === 200) {
      this.#ok++;
      this.#status[seq] = 1;
      return;
    }
    this.#status[seq] = 2;
    const key = `${answer.status} ${answer.body}`.slice(0, 160);
    this.#failures.set(key, (this.#failures.get(key) ?? 0) + 1);
  }

  /** One client's rounds: subscribe, hold, collect what is owed, unsubscribe. */
  async #churn(member: Member): Promise<void> {
    const { channels, rounds, quietMs } = this.#spec;
    for (let r = 0; r < rounds; r++) {
      const channel = (member.client.index + r * STRIDE) % channels;
      member.channel = channel;
      member.got.clear();
      const subscribed = await this.#commands.send(member.client, "subscribe", benchChannel(channel), () => {
        // Synchronously with the reply's parse: every publication taken from
        // here on is written after the reply came.
        member.subscribed = true;
        member.firstSeq = this.#taken;
        member.repliedAt = performance.now();
        member.companions = this.#companions(member);
      });
      if (subscribed.ok) {
        if (!this.#heardSince(member)) await this.#wait(member, HOLD_MS);
        this.#decide(member);
        if (member.missing!.size > 0) await this.#wait(member, quietMs);
        this.#lost += member.missing!.size;
        for (const seq of member.missing!) {
          if (this.#lostSample.length === 100) break;
          this.#lostSample.push({
            seq,
            channel,
            worker: member.client.address.worker,
            companions: member.companions,
            writtenMsAfterReply: round(this.#writtenAt[seq]! - member.repliedAt),
            got: member.got.size,
          });
        }
        member.missing = null;
      }
      member.subscribed = false;
      await this.#commands.send(member.client, "unsubscribe", benchChannel(channel));
      member.channel = -1;
    }
  }

  /** Other clients of the member's pusher worker subscribed to its channel now. */
  #companions(member: Member): number {
    let count = 0;
    for (const other of this.#members) {
      if (
        other !== member && other.subscribed && other.channel === member.channel &&
        other.client.address.worker === member.client.address.worker
      ) {
        count++;
      }
    }
    return count;
  }

  /** Whether the member got a publication written after its subscribe's reply. */
  #heardSince(member: Member): boolean {
    for (const seq of member.got) if (seq >= member.firstSeq) return true;
    return false;
  }

  /** What the member is owed now: its channel's publications written after the reply and answered 200. */
  #decide(member: Member): void {
    const channels = this.#spec.channels;
    const missing = new Set<number>();
    const first = member.firstSeq + ((member.channel - (member.firstSeq % channels) + channels) % channels);
    for (let seq = first; seq < this.#taken; seq += channels) {
      if (this.#status[seq] !== 1) continue;
      this.#owed++;
      if (!member.got.has(seq)) missing.add(seq);
    }
    member.missing = missing;
  }

  #wait(member: Member, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        member.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      member.wake = done;
    });
  }

  #received(client: WsClient, message: Uint8Array, at: number): void {
    if (this.#commands.reply(client, message, at)) return;
    const frame = readChannelFrame(message);
    const seq = frame === null ? NaN : readSeq(frame.content);
    if (frame === null || !(seq < this.#spec.messages) || frame.content.length !== this.#spec.contentBytes) {
      this.#foreign++;
      return;
    }
    const member = this.#members[client.index]!;
    if (frame.channel !== member.channel || frame.channel !== seq % this.#spec.channels) {
      this.#misdirected++;
      return;
    }
    if (member.got.has(seq)) {
      this.#duplicates++;
      return;
    }
    member.got.add(seq);
    if (this.#deliveries === this.#latencies.length) {
      const bigger = new Float64Array(this.#latencies.length * 2);
      bigger.set(this.#latencies);
      this.#latencies = bigger;
    }
    this.#latencies[this.#deliveries++] = at * 1000 - readSendTime(frame.content);
    this.#lastReceipt = at;
    if (member.missing !== null) {
      if (member.missing.delete(seq) && member.missing.size === 0) member.wake?.();
    } else if (member.subscribed && seq >= member.firstSeq) {
      member.wake?.();
    }
  }

  #result(): LoadResult {
    const unexpectedCloses: Record<string, number> = {};
    for (const client of this.#clients) {
      const reason = client.unexpectedClose;
      if (reason !== null) unexpectedCloses[reason] = (unexpectedCloses[reason] ?? 0) + 1;
    }
    const unsent = this.#taken - this.#answered;
    if (unsent > 0) this.#failures.set("no answer", unsent);
    const lastEvent = Math.max(
      Number.isNaN(this.#lastReceipt) ? -Infinity : this.#lastReceipt,
      Number.isNaN(this.#lastAnswer) ? -Infinity : this.#lastAnswer,
    );
    return {
      type: "result",
      clients: this.#clients.length,
      connectMs: round(this.#connectMs),
      publishes: this.#taken,
      okPublishes: this.#ok,
      failedPublishes: this.#taken - this.#ok,
      failures: Object.fromEntries(this.#failures),
      expectedDeliveries: this.#owed,
      deliveries: this.#deliveries,
      lost: this.#lost,
      duplicates: this.#duplicates,
      misdirected: this.#misdirected,
      reordered: 0,
      foreign: this.#foreign,
      unexpectedCloses,
      deliveriesPerSec: perSecond(this.#deliveries, this.#lastReceipt - this.#firstWrite),
      publishesPerSec: perSecond(this.#answered, this.#lastAnswer - this.#firstWrite),
      deliveriesPerSecPerConnection: null,
      commands: this.#commands.replies,
      failedCommands: this.#commands.failed,
      commandsPerSec: this.#commands.perSecond(),
      commandLatencyUs: percentiles(this.#commands.latenciesUs),
      latencyUs: percentiles(this.#latencies.subarray(0, this.#deliveries)),
      publishMs: Number.isFinite(lastEvent) ? round(lastEvent - this.#firstWrite) : 0,
      stalled: false,
      lostSample: this.#lostSample,
    };
  }
}
