/**
 * The load generator: one process, started by `bench/main.ts` per scenario
 * and target, with only `--allow-net=127.0.0.1`. It connects raw WebSocket
 * clients, then publishes over a few pipelined HTTP/1.1 connections and
 * times every delivery from request write to frame parse, on one clock.
 *
 * Talks to its parent over stdio, one JSON object a line:
 *
 * 1. argument: the {@linkcode LoadSpec} as JSON;
 * 2. stdout `{"type":"connected",...}` once every client is greeted (the
 *    parent samples memory and CPU then);
 * 3. stdin `go`: publishing starts;
 * 4. stdout `{"type":"result",...}` ({@linkcode LoadResult});
 * 5. stdin `close` (the parent has sampled CPU) or end of input: the clients
 *    close and the process exits.
 *
 * On failure: stdout `{"type":"error","message":...}`, exit 1.
 *
 * @module
 */

import { type Address, connectClients, type WsClient } from "./_ws_client.ts";
import { Commands } from "./_commands.ts";
import { ChurnRun, type LostDelivery } from "./_churn.ts";
import { RecoveryRun } from "./_recovery.ts";
import { openPublishConnections, type PublishSource } from "./_publish_connection.ts";
import type { HttpAnswer } from "./_http_responses.ts";
import { benchChannel, encodeContent, readChannelFrame, readSendTime, readSeq } from "./_content.ts";
import { generatorMain } from "./_generator.ts";
import { DeliveryTally } from "./_tally.ts";
import { benchUser, tokenPath } from "./_users.ts";

/** What one run does. */
export interface LoadSpec {
  /** Host of both the WebSocket and the publish port. */
  hostname: string;
  /** WebSocket port (`/`). */
  wsPort: number;
  /** Publish API port (`GET /?content=`). */
  publishPort: number;
  /**
   * Broadcasts to every client; sends to one client each (round-robin);
   * publications to one channel each (round-robin), every client subscribed
   * to one; subscribe/unsubscribe churn under a publish stream (see
   * `_churn.ts`); nothing (memory); or a recovery storm on one history
   * channel, `messages` missed by every client (see `_recovery.ts`).
   */
  mode: "broadcast" | "targeted" | "channels" | "churn" | "idle" | "recovery";
  /** WebSocket clients to connect. */
  clients: number;
  /** Publish requests to send (for `churn`, at most: the stream stops when the churn is done). */
  messages: number;
  /** Channels (`channels`, `churn`); client `c` of `channels` is in channel `c % channels`. 0 elsewhere. */
  channels: number;
  /** Subscribe/unsubscribe rounds per client (`churn`); 0 elsewhere. */
  rounds: number;
  /** Publishes per second on a timer; null sends as fast as publishes are accepted. */
  rate: number | null;
  /**
   * Publishes per request through the server API's `POST /api/batch`, each
   * a `publish` command (`{"channel"}`, `{"user"}` or
   * `{"worker_id","connection_id"}`, the content as `"data"`); 0 or absent:
   * one `GET /?content=` each, as the original's API takes them. Only for
   * `rate: null`.
   */
  batch?: number;
  /**
   * The pusher's token secret (its `--token-secret`, made for the run): client
   * `i` connects with `?token=` for user `bench-user-<i>` (`_users.ts`), and a
   * targeted publish to client `i` goes to that user (`"user"` in a batch,
   * `to_user=` in a GET) instead of to its connection. A user has one
   * connection, so a publish is still one delivery. Not for `channels`
   * (the token has no `channels` claim: no subscribe is allowed), `churn`
   * or `recovery`. @default {undefined} no tokens, no users
   */
  userTokenSecret?: string;
  /** Size of each content, in bytes. */
  contentBytes: number;
  /** Clients connected at once. */
  connectBatch: number;
  /** HTTP connections publishes go over. */
  publishConnections: number;
  /** Requests in flight per HTTP connection. */
  pipeline: number;
  /** After the last answer, wait this long with nothing arriving before counting what is missing as lost. */
  quietMs: number;
  /** Read buffer per client, in bytes. */
  readBufferBytes: number;
}

/** Latency percentiles, in microseconds. */
export interface Latency {
  p50: number;
  p99: number;
  max: number;
}

/** What one run measured, as the generator saw it. */
export interface LoadResult {
  type: "result";
  clients: number;
  /** Milliseconds to connect and greet every client. */
  connectMs: number;
  /** Publish requests sent. */
  publishes: number;
  /** Answered `200`. */
  okPublishes: number;
  /** Not answered `200` (a status, or no answer at all). */
  failedPublishes: number;
  /** Failed publishes by `<status> <reason>`. */
  failures: Record<string, number>;
  /** Deliveries the `200` answers promise. */
  expectedDeliveries: number;
  /** Benchmark messages received. */
  deliveries: number;
  /** Messages answered 200 that a client they were for never got, counted per client and message. */
  lost: number;
  /** Second and later copies of a message one client got. */
  duplicates: number;
  /** Targeted messages or channel publications that reached a client they were not sent to. */
  misdirected: number;
  /**
   * Channel publications a client got at another position among its
   * channel's than the channel's other members did: the order is the hub's,
   * the same for every member (publishes race each other over 64 connections,
   * so it need not be the order they were written in).
   */
  reordered: number;
  /** Messages that were not intact benchmark contents (greetings, a wrong length). */
  foreign: number;
  /** Clients the server closed or dropped, by reason. */
  unexpectedCloses: Record<string, number>;
  /** Deliveries / (last receipt − first publish). */
  deliveriesPerSec: number | null;
  /** Publishes / (last answer − first publish). */
  publishesPerSec: number | null;
  /**
   * Deliveries/s over the connections each publish reaches: every client for
   * a broadcast, a channel's members for a channel publication. Null elsewhere.
   */
  deliveriesPerSecPerConnection: number | null;
  /** Subscribe and unsubscribe commands answered with a result. */
  commands: number;
  /** Commands answered with an error, or not within 10 s. */
  failedCommands: number;
  /** Commands / (last reply − first command sent); null without commands. */
  commandsPerSec: number | null;
  /** From writing a command to parsing its reply; null without commands. */
  commandLatencyUs: Latency | null;
  /** From request write to frame parse, over every delivery. */
  latencyUs: Latency | null;
  /** Milliseconds from the first publish to the last receipt or answer. */
  publishMs: number;
  /** True when the run ended because nothing arrived for `quietMs`. */
  stalled: boolean;
  /** Churn: the first lost deliveries, with what tells a race from a drop. */
  lostSample?: LostDelivery[];
  /** Recovery: from the first reconnect to the last client having every missed publication; null if one never did. */
  recoveryMs?: number | null;
  /** Recovery: from the first reconnect to the last greeting. */
  reconnectMs?: number | null;
  /** Recovery: per client, from the first reconnect to having every missed publication. */
  recoveryUs?: Latency | null;
  /** Recovery: subscribe replies without `"recovered":true` (also counted as failed commands). */
  notRecovered?: number;
}

/** Runs one load spec; the process's exit code. */
export function main(args: string[] = Deno.args): Promise<number> {
  return generatorMain(args, {
    usage: "Usage: deno run --allow-net=127.0.0.1 bench/load.ts '<LoadSpec JSON>' (started by bench/main.ts)",
    create(spec: LoadSpec) {
      if (spec.userTokenSecret !== undefined && !["broadcast", "targeted", "idle"].includes(spec.mode)) {
        throw new TypeError(`Invalid spec: userTokenSecret is for broadcast, targeted or idle, not ${spec.mode}`);
      }
      return spec.mode === "churn"
        ? new ChurnRun(spec)
        : spec.mode === "recovery"
        ? new RecoveryRun(spec)
        : new LoadRun(spec);
    },
  });
}

/**
 * Whom one publish is for: everyone (null), a channel, a user, or one
 * connection.
 */
export type PublishTarget = null | { channel: string } | { user: string } | Address;

/**
 * The query of a `GET /?…` publish of `content` to `to`. Contents are
 * URL-safe (`_content.ts`), as are channel and user names here.
 *
 * @example
 * ```ts
 * import { publishQuery } from "./load.ts";
 *
 * publishQuery({ user: "bench-user-3" }, "7:123:___"); // "to_user=bench-user-3&content=7:123:___"
 * ```
 */
export function publishQuery(to: PublishTarget, content: string): string {
  if (to === null) return `content=${content}`;
  if ("channel" in to) return `channel=${to.channel}&content=${content}`;
  if ("user" in to) return `to_user=${to.user}&content=${content}`;
  return `to_worker_id=${to.worker}&to_connection_id=${to.connection}&content=${content}`;
}

/**
 * One `publish` command of a `POST /api/batch` body: `content` to `to`, as
 * its `"data"` string. Contents, channel and user names and worker ids here
 * are ASCII without quotes or backslashes: JSON strings as they are.
 *
 * @example
 * ```ts
 * import { publishCommand } from "./load.ts";
 *
 * publishCommand({ user: "bench-user-3" }, "7:123:___"); // '{"publish":{"user":"bench-user-3","data":"7:123:___"}}'
 * ```
 */
export function publishCommand(to: PublishTarget, content: string): string {
  const data = `"data":"${content}"`;
  if (to === null) return `{"publish":{${data}}}`;
  if ("channel" in to) return `{"publish":{"channel":"${to.channel}",${data}}}`;
  if ("user" in to) return `{"publish":{"user":"${to.user}",${data}}}`;
  return `{"publish":{"worker_id":"${to.worker}","connection_id":${to.connection},${data}}}`;
}

/** One run: the clients, the publishing, the counting. */
class LoadRun implements PublishSource {
  readonly #spec: LoadSpec;
  /** Publishes per request: 1 for `GET`, the batch's size for `POST /api/batch`. */
  readonly #perRequest: number;
  #clients: WsClient[] = [];
  #addresses: Address[] = [];
  #tally: DeliveryTally | null = null;
  readonly #commands = new Commands();
  /** Per channel, its members. */
  #members: number[] = [];
  /** Per channel and position, the first member's delivery there; -1 until one arrives. */
  #order: Int32Array[] = [];
  /** Per client, channel publications received. */
  #position = new Uint32Array(0);
  #reordered = 0;
  #okBroadcasts = 0;
  #owed = 0;
  #latencies: Float64Array;
  #deliveries = 0;
  #foreign = 0;
  #taken = 0;
  #due = 0;
  #answered = 0;
  #ok = 0;
  readonly #failures = new Map<string, number>();
  #firstWrite = NaN;
  #lastAnswer = NaN;
  #lastReceipt = NaN;
  #lastActivity = 0;
  #connectMs = 0;

  constructor(spec: LoadSpec) {
    this.#spec = spec;
    this.#perRequest = Math.max(1, spec.batch ?? 0);
    const perPublish = spec.mode === "broadcast"
      ? spec.clients
      : spec.mode === "channels"
      ? Math.ceil(spec.clients / spec.channels)
      : 1;
    this.#latencies = new Float64Array(spec.mode === "idle" ? 0 : spec.messages * perPublish);
  }

  /** Connects every client, `connectBatch` at a time; on failure, those connected stay for {@linkcode close}. */
  async connect(): Promise<number> {
    const { hostname, wsPort: port, clients, connectBatch, readBufferBytes, userTokenSecret } = this.#spec;
    const onMessage = (client: WsClient, payload: Uint8Array, at: number) => this.#delivered(client, payload, at);
    await connectClients(this.#clients, {
      hostname,
      port,
      onMessage,
      readBufferBytes,
      count: clients,
      batch: connectBatch,
      ...(userTokenSecret === undefined
        ? {}
        : { path: (index: number) => tokenPath(benchUser(index), userTokenSecret) }),
    });
    if (this.#spec.mode === "channels") await this.#subscribeAll();
    this.#addresses = this.#clients.map((client) => client.address);
    this.#tally = new DeliveryTally({
      clients: this.#clients.length,
      messages: this.#spec.messages,
      targeted: this.#spec.mode === "targeted",
      channels: this.#spec.mode === "channels" ? this.#spec.channels : 0,
    });
    return this.#clients.length;
  }

  /** Subscribes client `c` to channel `c % channels`, every reply in before publishing starts. */
  async #subscribeAll(): Promise<void> {
    const { channels, messages } = this.#spec;
    this.#members = Array.from({ length: channels }, () => 0);
    this.#order = Array.from({ length: channels }, () => new Int32Array(Math.ceil(messages / channels)).fill(-1));
    this.#position = new Uint32Array(this.#clients.length);
    const outcomes = await Promise.all(this.#clients.map((client) => {
      this.#members[client.index % channels]!++;
      return this.#commands.send(client, "subscribe", benchChannel(client.index % channels));
    }));
    const failed = outcomes.filter((outcome) => !outcome.ok);
    if (failed.length > 0) {
      throw new Error(`${failed.length} of ${outcomes.length} subscribes failed: ${failed[0]!.error}`);
    }
  }

  /** Closes every client connected so far. */
  async close(): Promise<void> {
    await Promise.all(this.#clients.map((client) => client.close()));
  }

  /** Publishes, waits for the deliveries, and measures. */
  async drive(connectMs: number): Promise<LoadResult> {
    this.#connectMs = connectMs;
    const spec = this.#spec;
    if (spec.mode === "idle") return this.#result(false);
    const connections = await openPublishConnections(this, spec);
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stalled = false;
    try {
      const start = performance.now();
      this.#lastActivity = start;
      if (spec.rate === null) {
        this.#due = spec.messages;
        for (const connection of connections) connection.pump();
      } else {
        const rate = spec.rate;
        const tick = () => {
          const elapsed = performance.now() - start;
          this.#due = Math.min(spec.messages, Math.floor((elapsed * rate) / 1000) + 1);
          // Idle connections first: a request pipelined behind another would
          // wait for its answer, a whole hub round trip on the system.
          for (const connection of connections) connection.pump(1);
          for (const connection of connections) connection.pump();
          if (this.#due < spec.messages) timer = setTimeout(tick, Math.max(0, (this.#due * 1000) / rate - elapsed));
        };
        tick();
      }
      while (true) {
        await new Promise((resolve) => setTimeout(resolve, 10));
        if (this.#answered === spec.messages && this.#deliveries >= this.#expectedTotal()) break;
        if (performance.now() - this.#lastActivity > spec.quietMs) {
          stalled = true;
          break;
        }
      }
    } finally {
      clearTimeout(timer);
      await Promise.all(connections.map((connection) => connection.close()));
    }
    // Closing answered what was in flight with status 0; what was never taken failed too.
    const unsent = spec.messages - this.#taken;
    if (unsent > 0) this.#failures.set("not sent", unsent);
    return this.#result(stalled);
  }

  /** The first publish of the next request: `batch` publishes go in one. */
  take(): number | null {
    if (this.#taken >= this.#due) return null;
    const seq = this.#taken;
    this.#taken = Math.min(this.#spec.messages, seq + this.#perRequest);
    return seq;
  }

  request(seq: number): string {
    const now = performance.now();
    if (Number.isNaN(this.#firstWrite)) this.#firstWrite = now;
    this.#lastActivity = now;
    const sendUs = Math.round(now * 1000);
    const { contentBytes: bytes, hostname, publishPort } = this.#spec;
    const host = `Host: ${hostname}:${publishPort}\r\n`;
    if (this.#perRequest > 1) return this.#batchRequest(seq, sendUs, host);
    const query = publishQuery(this.#target(seq), encodeContent(seq, sendUs, { bytes }));
    return `GET /?${query} HTTP/1.1\r\n${host}\r\n`;
  }

  /**
   * Whom publish `seq` is for: everyone, channel `seq % channels`, or client
   * `seq % clients`, by its user when clients connect as users.
   */
  #target(seq: number): PublishTarget {
    const { mode, channels, userTokenSecret } = this.#spec;
    if (mode === "broadcast") return null;
    if (mode === "channels") return { channel: benchChannel(seq % channels) };
    const client = seq % this.#addresses.length;
    return userTokenSecret === undefined ? this.#addresses[client]! : { user: benchUser(client) };
  }

  /** `POST /api/batch` with a `publish` command for each of the request's publishes. */
  #batchRequest(first: number, sendUs: number, host: string): string {
    const { contentBytes: bytes, messages } = this.#spec;
    const commands: string[] = [];
    for (let seq = first; seq < Math.min(messages, first + this.#perRequest); seq++) {
      commands.push(publishCommand(this.#target(seq), encodeContent(seq, sendUs, { bytes })));
    }
    const body = `{"commands":[${commands.join(",")}]}`;
    return `POST /api/batch HTTP/1.1\r\n${host}Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  }

  answer(first: number, answer: HttpAnswer): void {
    const now = performance.now();
    const count = Math.min(this.#spec.messages, first + this.#perRequest) - first;
    this.#answered += count;
    this.#lastAnswer = now;
    this.#lastActivity = now;
    if (answer.status !== 200) {
      const key = `${answer.status} ${answer.body}`.slice(0, 160);
      this.#failures.set(key, (this.#failures.get(key) ?? 0) + count);
      return;
    }
    if (this.#perRequest === 1) return this.#published(first);
    const replies = batchReplies(answer.body, count);
    for (let i = 0; i < count; i++) {
      const failure = replies[i]!;
      if (failure === null) this.#published(first + i);
      else this.#failures.set(failure, (this.#failures.get(failure) ?? 0) + 1);
    }
  }

  /** Publish `seq` was answered with success: its recipients are owed it. */
  #published(seq: number): void {
    this.#ok++;
    this.#tally!.answered(seq);
    if (this.#spec.mode === "broadcast") this.#okBroadcasts++;
    if (this.#spec.mode === "channels") this.#owed += this.#members[seq % this.#spec.channels]!;
  }

  #delivered(client: WsClient, message: Uint8Array, at: number): void {
    let payload = message;
    let channel = -1;
    if (this.#spec.mode === "channels") {
      if (this.#commands.reply(client, message, at)) return;
      const frame = readChannelFrame(message);
      if (frame !== null) [payload, channel] = [frame.content, frame.channel];
    }
    const seq = readSeq(payload);
    if (!(seq < this.#spec.messages) || payload.length !== this.#spec.contentBytes) {
      this.#foreign++;
      return;
    }
    this.#tally!.delivered(client.index, seq);
    if (channel >= 0) this.#checkOrder(client.index, channel, seq);
    const sendUs = readSendTime(payload);
    if (this.#deliveries === this.#latencies.length) {
      const bigger = new Float64Array(Math.max(1024, this.#latencies.length * 2));
      bigger.set(this.#latencies);
      this.#latencies = bigger;
    }
    this.#latencies[this.#deliveries++] = at * 1000 - sendUs;
    this.#lastReceipt = at;
    this.#lastActivity = at;
  }

  /** Holds a channel member's deliveries to the order the first member to reach each position got. */
  #checkOrder(client: number, channel: number, seq: number): void {
    const { channels } = this.#spec;
    if (channel !== seq % channels || channel !== client % channels) return; // misdirected, counted by the tally
    const order = this.#order[channel]!;
    const position = this.#position[client]!++;
    if (position >= order.length) return; // a duplicate past the end, counted by the tally
    if (order[position] === -1) order[position] = seq;
    else if (order[position] !== seq) this.#reordered++;
  }

  #expectedTotal(): number {
    if (this.#spec.mode === "broadcast") return this.#okBroadcasts * this.#clients.length;
    if (this.#spec.mode === "channels") return this.#owed;
    return this.#ok;
  }

  /**
   * Deliveries/s over the connections delivered to, every client in a
   * broadcast and a channel run alike: the messages a second that each
   * connection gets. (Not over the members of one channel: that is the
   * publications' rate, which a channel of a tenth of the clients would
   * multiply by ten.)
   */
  #perConnection(): number | null {
    const rate = perSecond(this.#deliveries, this.#lastReceipt - this.#firstWrite);
    const { mode } = this.#spec;
    if (rate === null || (mode !== "broadcast" && mode !== "channels")) return null;
    return round(rate / this.#clients.length);
  }

  #result(stalled: boolean): LoadResult {
    const tally = this.#tally;
    const unexpectedCloses: Record<string, number> = {};
    for (const client of this.#clients) {
      const reason = client.unexpectedClose;
      if (reason !== null) unexpectedCloses[reason] = (unexpectedCloses[reason] ?? 0) + 1;
    }
    const lastEvent = Math.max(
      Number.isNaN(this.#lastReceipt) ? -Infinity : this.#lastReceipt,
      Number.isNaN(this.#lastAnswer) ? -Infinity : this.#lastAnswer,
    );
    const failed = this.#spec.messages - this.#ok;
    return {
      type: "result",
      clients: this.#clients.length,
      connectMs: round(this.#connectMs),
      publishes: this.#taken,
      okPublishes: this.#ok,
      failedPublishes: this.#spec.mode === "idle" ? 0 : failed,
      failures: Object.fromEntries(this.#failures),
      expectedDeliveries: this.#expectedTotal(),
      deliveries: this.#deliveries,
      lost: tally?.lost() ?? 0,
      duplicates: tally?.duplicates ?? 0,
      misdirected: tally?.misdirected ?? 0,
      reordered: this.#reordered,
      foreign: this.#foreign,
      unexpectedCloses,
      deliveriesPerSec: perSecond(this.#deliveries, this.#lastReceipt - this.#firstWrite),
      publishesPerSec: perSecond(this.#answered, this.#lastAnswer - this.#firstWrite),
      deliveriesPerSecPerConnection: this.#perConnection(),
      commands: this.#commands.replies,
      failedCommands: this.#commands.failed,
      commandsPerSec: this.#commands.perSecond(),
      commandLatencyUs: percentiles(this.#commands.latenciesUs),
      latencyUs: percentiles(this.#latencies.subarray(0, this.#deliveries)),
      publishMs: Number.isFinite(lastEvent) ? round(lastEvent - this.#firstWrite) : 0,
      stalled,
    };
  }
}

/**
 * How each command of a `/api/batch` answer went: null for a result, else
 * `<code> <message>` of its error (or of a reply that is missing or not
 * understood), `count` of them.
 */
export function batchReplies(body: string, count: number): (string | null)[] {
  let replies: unknown;
  try {
    replies = (JSON.parse(body) as { replies?: unknown }).replies;
  } catch {
    replies = undefined;
  }
  if (!Array.isArray(replies)) return Array.from({ length: count }, () => "200 batch answer without replies");
  return Array.from({ length: count }, (_, i) => {
    const reply = replies[i] as { result?: unknown; error?: { code?: number; message?: string } } | undefined;
    if (reply?.result !== undefined) return null;
    if (reply?.error) return `${reply.error.code} ${reply.error.message}`.slice(0, 160);
    return "200 batch answer: no reply for this command";
  });
}

/** `count` per second over `ms`; null when there is nothing to divide. */
export function perSecond(count: number, ms: number): number | null {
  return count > 0 && ms > 0 ? round((count * 1000) / ms) : null;
}

/** Nearest-rank p50 and p99, and the maximum. Sorts `values` in place. */
export function percentiles(values: Float64Array): Latency | null {
  if (values.length === 0) return null;
  values.sort();
  const rank = (p: number) => values[Math.max(0, Math.ceil(p * values.length) - 1)]!;
  return { p50: round(rank(0.5)), p99: round(rank(0.99)), max: round(values[values.length - 1]!) };
}

/** Rounded to a tenth. */
export function round(value: number): number {
  return Math.round(value * 10) / 10;
}

if (import.meta.main) Deno.exit(await main());
