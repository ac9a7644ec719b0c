/**
 * The client pushers and publishers use to reach the hub: pub/sub on subjects,
 * round-robin publish, work queues, acknowledged publishes that survive
 * reconnects, and a heartbeat that notices a dead hub.
 *
 * @module
 */

import { backoffDelay } from "../shared/backoff.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { OncePerCause } from "../shared/log_throttle.ts";
import {
  type Ack,
  type AckPosition,
  type BatchAck,
  type BatchItem,
  type ClientMessage,
  DEFAULT_HUB_PORT,
  DEFAULT_MAX_FRAME_BYTES,
  encodeMessage,
  encodeMessageText,
  type EventMessage,
  type HistoryReply,
  type HubMessage,
  type Json,
  MAX_BATCH_ITEMS,
  MessageDecoder,
  PROTOCOL_VERSION,
  toHubMessage,
  type WirePosition,
} from "../shared/wire.ts";
import { DEFAULT_MAX_PENDING_BYTES, FrameWriter } from "../shared/writer.ts";
import { timerMs } from "../shared/duration.ts";
import { utf8Length } from "../shared/bytes.ts";

/** Options for {@linkcode HubClient} and {@linkcode connect}. */
export interface HubClientOptions {
  /** Hub host. @default {"127.0.0.1"} */
  hostname?: string;
  /** Hub port. @default {2206} */
  port?: number;
  /** Token the hub asks for, if it was started with one. */
  token?: string;
  /** Aborting it closes the client. */
  signal?: AbortSignal;
  /** How long one connection attempt may take, in milliseconds. @default {5000} */
  connectTimeout?: number;
  /**
   * How long a publish or enqueue waits for the hub's acknowledgement,
   * reconnects included, in milliseconds; then it rejects.
   *
   * @default {5000}
   */
  publishTimeout?: number;
  /** Most publishes and enqueues waiting for an acknowledgement at once. @default {10000} */
  maxWaitingPublishes?: number;
  /**
   * Most bytes of encoded publishes and enqueues waiting for an
   * acknowledgement at once: while the hub is down each keeps its frame.
   * Never less than `maxFrameBytes`. @default {67108864}
   */
  maxWaitingBytes?: number;
  /** Interval between pings to the hub, in milliseconds. @default {25000} */
  pingInterval?: number;
  /** The hub is taken for dead after this many ping intervals without a word from it. @default {2} */
  maxMissedPongs?: number;
  /** First reconnect delay ceiling, in milliseconds (doubles per failed attempt). @default {100} */
  reconnectDelay?: number;
  /** Largest reconnect delay, in milliseconds. @default {1000} */
  maxReconnectDelay?: number;
  /**
   * Largest frame accepted from the hub, and sent to it: keep it at the hub's
   * `--max-frame-bytes`. A publish or enqueue over it is refused at once
   * (`too_large`) rather than sent to a hub that would drop the link.
   *
   * @default {1048576}
   */
  maxFrameBytes?: number;
  /**
   * Most bytes of publishes and enqueues queued to be written to the hub at
   * once: more wait (within `maxWaitingPublishes` and `maxWaitingBytes`, up
   * to their timeout) and go out, in order, as the link drains. Subscribes,
   * watches and reserves may take the backlog to twice this; past it the
   * link is dropped, and the next restores them. What a new connection
   * restores is never refused: it is bounded by what the client subscribed
   * to and watches.
   *
   * @default {8388608}
   */
  maxPendingBytes?: number;
  /** Where log lines go. @default {createLogger("channel-client")} */
  logger?: Logger;
  /**
   * Speak TLS to the hub, verifying its certificate with `caCerts` (PEM) for
   * `hostname`, and presenting `cert` and `key` (PEM) when given. A
   * handshake that fails (an unknown CA, an expired certificate, a plain-text
   * hub) is logged as a warning and retried like any failed connect.
   *
   * @default {plain text}
   */
  tls?: HubTlsOptions;
}

/** TLS to the hub: the CA certificates that verify it, and an optional client certificate. */
export interface HubTlsOptions {
  /** PEM CA certificates that verify the hub's certificate. */
  caCerts: string[];
  /** PEM client certificate chain presented to the hub, with `key`. @default {none} */
  cert?: string;
  /** PEM private key of `cert`. @default {none} */
  key?: string;
}

/**
 * Called with each event published on a subject the client subscribed to;
 * `reply` is the subject the publisher asked answers on, if it did;
 * `position`, the event's place in the subject's history, when the subject
 * keeps history.
 */
export type EventHandler = (data: Json, subject: string, reply?: string, position?: WirePosition) => void;

/** Called with each message taken from a watched queue. */
export type QueueHandler = (data: Json, queue: string) => void | Promise<void>;

/** Options for {@linkcode HubClient.publish} and {@linkcode HubClient.enqueue}. */
export interface PublishOptions {
  /** Overrides the client's `publishTimeout`, in milliseconds. */
  timeout?: number;
  /** Aborting it rejects the publish (it may still have reached the hub). */
  signal?: AbortSignal;
  /**
   * For `publish` and `publishLoop`: a subject handed to the subscribers with
   * the event, for their answers (request/reply). Ignored by `enqueue`.
   */
  reply?: string;
  /**
   * For `publish` and `publishLoop`: makes a retry safe. A publish whose key
   * the hub saw with the same subjects within its idempotency window is not
   * routed again, and resolves as the first one did. Up to 128 characters.
   * Ignored by `enqueue`.
   */
  idempotencyKey?: string;
}

/** What {@linkcode HubClient.publishWithPositions} resolves with: the publish's whole ack. */
export interface PublishAck {
  /** As {@linkcode HubClient.publish} resolves: how many deliveries the hub made. */
  count: number;
  /** The publish's position in each of its subjects that keeps history; empty when none does. */
  positions: AckPosition[];
}

/** One publish of {@linkcode HubClient.publishBatch}: to one subject, with its own data and key. */
export interface HubBatchItem {
  subject: string;
  data: Json;
  /** As {@linkcode PublishOptions.idempotencyKey}, for this item alone. */
  idempotencyKey?: string;
}

/** Options for {@linkcode HubClient.publishBatch}. */
export interface PublishBatchOptions {
  /** Overrides the client's `publishTimeout`, in milliseconds. */
  timeout?: number;
  /** Aborting it rejects every item still waiting (they may still have reached the hub). */
  signal?: AbortSignal;
}

/** Options for {@linkcode HubClient.history}. */
export interface HubHistoryOptions {
  /** Return what followed this position; without it, every message kept. */
  since?: WirePosition;
  /** Most messages returned, capped by the hub at its history size. @default {the hub's history size} */
  limit?: number;
  /** Overrides the client's `publishTimeout`, in milliseconds. */
  timeout?: number;
  /** Aborting it rejects the call. */
  signal?: AbortSignal;
}

/** A subject's history as the hub answered it (a `history` reply without its type and id). */
export type HubHistory = Omit<HistoryReply, "type" | "id">;

/** Options for {@linkcode HubClient.flush}. */
export interface FlushOptions {
  /** Aborting it rejects the flush with its reason and withdraws it. */
  signal?: AbortSignal;
}

/** Options for {@linkcode HubClient.watch}. */
export interface WatchOptions {
  /** Reserve the next message as soon as the handler settles. @default {true} */
  autoReserve?: boolean;
}

/** Why a {@linkcode HubError} was raised. */
export type HubErrorCode = "timeout" | "refused" | "closed" | "overloaded" | "too_large";

/**
 * A publish or enqueue that did not go through: the hub did not acknowledge
 * it in time (`timeout`), refused it (`refused`), the client was closed
 * (`closed`), too much was already waiting (`overloaded`), or the message
 * was over the frame limit (`too_large`).
 */
export class HubError extends Error {
  /** Why it failed. */
  readonly code: HubErrorCode;

  constructor(code: HubErrorCode, message: string) {
    super(message);
    this.name = "HubError";
    this.code = code;
  }
}

/** Detail of the `disconnected` lifecycle event. */
export interface DisconnectedDetail {
  reason: string;
}

interface Waiting {
  type: string;
  frame: Uint8Array;
  resolve: (reply: Reply) => void;
  reject: (error: Error) => void;
  /** When it times out (ms since the epoch), and its timeout. */
  deadline: number;
  timeout: number;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

interface QueueWatch {
  handler: QueueHandler;
  autoReserve: boolean;
}

/**
 * A connection to the hub that keeps itself up: it reconnects with
 * capped exponential backoff and jitter, and on each connection re-subscribes
 * every subject and re-watches every queue before any waiting publish goes out.
 *
 * Lifecycle: dispatches `connected` (an `Event`) and `disconnected` (a
 * `CustomEvent<DisconnectedDetail>`), usable for logs and health checks.
 *
 * @example
 * ```ts
 * import { HubClient } from "./client.ts";
 *
 * await using client = new HubClient({ port: 2206 });
 * client.subscribe("news", (data) => console.log(data));
 * const reached = await client.publish("news", { title: "hello" });
 * ```
 */
export class HubClient extends EventTarget {
  readonly #hostname: string;
  readonly #port: number;
  readonly #token: string | undefined;
  readonly #connectTimeout: number;
  readonly #publishTimeout: number;
  readonly #maxWaiting: number;
  readonly #maxWaitingBytes: number;
  /** Bytes of the frames in `#waiting`. */
  #waitingBytes = 0;
  readonly #pingInterval: number;
  readonly #maxMissedPongs: number;
  readonly #reconnectDelay: number;
  readonly #maxReconnectDelay: number;
  readonly #maxFrameBytes: number;
  readonly #maxPendingBytes: number;
  readonly #logger: Logger;
  readonly #handlers = new Map<string, Set<EventHandler>>();
  readonly #watches = new Map<string, QueueWatch>();
  readonly #waiting = new Map<number, Waiting>();
  /**
   * Those of `#waiting` not yet queued on this connection's writer, in the
   * order they were made: all of them while the link is down, and on a link
   * backed up past `maxPendingBytes` those that wait for it to drain.
   */
  #unsent = new Map<number, Waiting>();
  /** The writer whose drain will send more of `#unsent`, once one is awaited. */
  #draining: FrameWriter | null = null;
  readonly #readyWaiters = new Set<{ resolve: () => void; reject: (error: Error) => void }>();
  readonly #running: Promise<void>;
  #nextId = 1;
  readonly #tls: HubTlsOptions | undefined;
  /** Configuration failures (a TLS handshake, a connect not permitted), logged at their level once per cause until a dial works. */
  readonly #configFailures: OncePerCause;
  /** Why links dropped, warned of once per reason until a link hears the hub. */
  readonly #silentDrops: OncePerCause;
  #tcp: Deno.Conn | null = null;
  #writer: FrameWriter | null = null;
  #connecting: Promise<unknown> = Promise.resolve();
  #wake: (() => void) | null = null;
  #closed = false;
  #manualReserve = false;
  /** Queues whose handler is running: each asks for its next message when it is done. */
  readonly #handling = new Set<string>();
  /** The hub's last connection-level error (a wrong token, say), until a connection works. */
  #refusal: string | null = null;
  #sessions = 0;
  /** Whether the hub answered on this connection: see {@linkcode HubClient.connected}. */
  #established = false;
  /** Pings written and pongs read on this connection: a pong answers the oldest ping not yet answered. */
  #pings = 0;
  #pongs = 0;
  /** flush() calls waiting for the pong of a ping (`ping`, or null until one is written on a connection). */
  readonly #flushes = new Set<{ ping: number | null; resolve: () => void }>();
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #sweepPeriod = Infinity;

  constructor(options: HubClientOptions = {}) {
    super();
    this.#hostname = options.hostname ?? "127.0.0.1";
    this.#tls = options.tls;
    this.#port = options.port ?? DEFAULT_HUB_PORT;
    this.#token = options.token;
    this.#connectTimeout = timerMs("connectTimeout", options.connectTimeout ?? 5000);
    this.#publishTimeout = timerMs("publishTimeout", options.publishTimeout ?? 5000);
    this.#maxWaiting = options.maxWaitingPublishes ?? 10_000;
    this.#pingInterval = timerMs("pingInterval", options.pingInterval ?? 25_000, 1);
    this.#maxMissedPongs = options.maxMissedPongs ?? 2;
    this.#reconnectDelay = timerMs("reconnectDelay", options.reconnectDelay ?? 100);
    this.#maxReconnectDelay = timerMs("maxReconnectDelay", options.maxReconnectDelay ?? 1000);
    this.#maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    // Room for one publish of the largest frame, always: else it would be overloaded with nothing waiting.
    this.#maxWaitingBytes = Math.max(options.maxWaitingBytes ?? 64 * 1024 * 1024, this.#maxFrameBytes);
    this.#maxPendingBytes = options.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
    this.#logger = options.logger ?? createLogger("channel-client");
    this.#configFailures = new OncePerCause(this.#logger);
    this.#silentDrops = new OncePerCause(this.#logger);
    options.signal?.addEventListener("abort", () => this.close(), { once: true });
    this.#running = options.signal?.aborted ? Promise.resolve() : this.#run();
    if (options.signal?.aborted) this.close();
  }

  /**
   * True while a connection to the hub is up and the hub has answered on it:
   * a TCP connection alone is not (a hub that hangs still completes it from
   * its listen backlog, and one that refuses the token answers only that).
   */
  get connected(): boolean {
    return this.#writer !== null && this.#established;
  }

  /** Times the link came back after it was up once: for metrics. */
  get reconnects(): number {
    return Math.max(0, this.#sessions - 1);
  }

  /** `host:port` of the hub, for logs. */
  get address(): string {
    return `${this.#hostname}:${this.#port}`;
  }

  /** Resolves once connected (at once if connected now); rejects when closed or aborted. */
  ready(signal?: AbortSignal): Promise<void> {
    if (this.connected) return Promise.resolve();
    if (this.#closed) {
      return Promise.reject(new HubError("closed", "Cannot wait for the hub: the client is closed"));
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#readyWaiters.delete(waiter);
        reject(signal!.reason);
      };
      const waiter = {
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
        reject: (error: Error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      if (signal?.aborted) return reject(signal.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#readyWaiters.add(waiter);
    });
  }

  /**
   * Adds a handler for a subject's events, subscribing to the subject with
   * the first one. Not to be confused with `addEventListener`, which is for
   * the link's own `connected` and `disconnected` events.
   */
  subscribe(subject: string, handler: EventHandler): void {
    let handlers = this.#handlers.get(subject);
    if (!handlers) {
      handlers = new Set();
      this.#handlers.set(subject, handlers);
      this.#send({ type: "subscribe", subjects: [subject] });
    }
    handlers.add(handler);
  }

  /** Removes one handler, or all of a subject's handlers; unsubscribes when none is left. */
  unsubscribe(subject: string, handler?: EventHandler): void {
    const handlers = this.#handlers.get(subject);
    if (!handlers) return;
    if (handler) handlers.delete(handler);
    else handlers.clear();
    if (handlers.size > 0) return;
    this.#handlers.delete(subject);
    this.#send({ type: "unsubscribe", subjects: [subject] });
  }

  /**
   * Resolves once the hub has handled every frame this client wrote before
   * the call: a subscription made before it is in effect, so a publish made
   * after it (by anyone) reaches this client. While the link is down it waits
   * for the next connection, which restores every subscription first. Also
   * resolves when the client closes.
   *
   * @throws the abort's reason when `options.signal` aborts first: the wait
   * is withdrawn, and nothing of it is kept until the link is back.
   */
  flush(options: FlushOptions = {}): Promise<void> {
    if (this.#closed) return Promise.resolve();
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.#flushes.delete(flush);
        reject(signal!.reason);
      };
      const flush = {
        ping: null as number | null,
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#flushes.add(flush);
      if (this.#writer) flush.ping = this.#ping(this.#writer);
    });
  }

  /**
   * Publishes `data` to every subscriber of each subject. Resolves with how
   * many deliveries the hub made (one per subject per subscriber) once the
   * hub has written them to its subscribers' sockets. While the hub is
   * unreachable the publish waits, up to its timeout.
   *
   * @throws {HubError} on timeout, refusal, close, or overload.
   */
  publish(subjects: string | string[], data: Json, options?: PublishOptions): Promise<number> {
    return this.#request("publish", subjects, data, options).then(count);
  }

  /**
   * Publishes as {@linkcode publish} does, and resolves with the whole ack:
   * the count, and the position the hub gave the message in each subject
   * that keeps history.
   *
   * @throws {HubError} as {@linkcode publish}.
   */
  publishWithPositions(subjects: string | string[], data: Json, options?: PublishOptions): Promise<PublishAck> {
    return this.#request("publish", subjects, data, options).then((reply) => ({
      count: count(reply),
      positions: (reply as Ack).positions ?? [],
    }));
  }

  /** Like {@linkcode publish}, but each subject's event goes to one subscriber, in turn. */
  publishLoop(subjects: string | string[], data: Json, options?: PublishOptions): Promise<number> {
    return this.#request("publishLoop", subjects, data, options).then(count);
  }

  /**
   * Publishes many messages, each to one subject, in as few `publish_batch`
   * frames as the frame limit and {@linkcode MAX_BATCH_ITEMS} allow, each
   * answered by one `batch_ack`. Resolves with one outcome per item, in
   * order: its ack (as {@linkcode publishWithPositions} resolves) or the
   * {@linkcode HubError} that refused it. An item over the frame limit alone
   * is refused `too_large` without being sent; the others go.
   *
   * @example
   * ```ts
   * import { HubClient } from "./client.ts";
   *
   * await using client = new HubClient({ port: 2206 });
   * const outcomes = await client.publishBatch([
   *   { subject: "user.alice", data: "hi" },
   *   { subject: "user.bob", data: "hello" },
   * ]);
   * ```
   */
  publishBatch(
    items: readonly HubBatchItem[],
    options: PublishBatchOptions = {},
  ): Promise<(PublishAck | HubError)[]> {
    const outcomes = new Array<PublishAck | HubError>(items.length);
    // What waits for the hub's answer is each item's subject, not the item:
    // its data is in the frame's bytes, and the objects can go young.
    const subjects = items.map(({ subject }) => subject);
    const sent: Promise<void>[] = [];
    for (const { json, indexes } of this.#batchChunks(items, outcomes)) {
      sent.push(
        this.#askBatch(json, options).then(
          (reply) => {
            const results = reply.type === "batch_ack" ? reply.results : [];
            indexes.forEach((index, i) => {
              const subject = subjects[index]!;
              const result = results[i];
              if (result === undefined) {
                outcomes[index] = new HubError("refused", `Cannot publish: the hub answered ${reply.type}`);
              } else if ("error" in result) outcomes[index] = new HubError("refused", result.error);
              else {
                outcomes[index] = {
                  count: result.count,
                  positions: result.offset === undefined
                    ? []
                    : [{ subject, offset: result.offset, epoch: result.epoch ?? "" }],
                };
              }
            });
          },
          (error) => {
            // An abort's reason rejects the whole call, as it rejects a publish.
            if (!(error instanceof HubError)) throw error;
            for (const index of indexes) outcomes[index] = error;
          },
        ),
      );
    }
    return Promise.all(sent).then(() => outcomes);
  }

  /**
   * Sends one frame of a batch. Apart from {@linkcode publishBatch}'s loop:
   * a closure there that names the items' JSON (the frame's builder) would
   * put it in the loop's context, which the answer's closures keep until the
   * hub answers.
   */
  #askBatch(json: string, options: PublishBatchOptions): Promise<Reply> {
    // Errors say "Cannot publish", as a publish's do: the frame's name is the wire's business.
    return this.#ask("publish", (id) => `{"type":"publish_batch","id":${id},"items":${json}}`, options);
  }

  /**
   * The items of a batch as JSON arrays that fit one frame each, each with
   * the indexes of its items in `items` (kept until the hub answers, where
   * the JSON is not); an item too large for a frame alone gets its
   * `too_large` outcome here. A batch that fits one frame, the common case,
   * is one `JSON.stringify` (a third of the CPU of one per item, which was
   * a tenth of the publisher's per `/api/batch`); only a larger one is cut
   * item by item.
   */
  *#batchChunks(
    items: readonly HubBatchItem[],
    outcomes: (PublishAck | HubError)[],
  ): Generator<{ json: string; indexes: number[] }> {
    // The frame header and the message around the items, a 16-digit id included.
    const room = this.#maxFrameBytes - 4 - BATCH_ENVELOPE_BYTES;
    // And its batch_ack must fit a frame too, at most BATCH_ACK_ITEM_BYTES an item: under a small --max-frame-bytes
    // an ack of 1000 items would not, and the link would drop on it with every item routed.
    const maxItems = Math.max(1, Math.min(MAX_BATCH_ITEMS, Math.floor(room / BATCH_ACK_ITEM_BYTES)));
    if (items.length <= maxItems) {
      const json = JSON.stringify(items.map(batchItem));
      // A UTF-16 unit is at most 3 bytes of UTF-8: counted exactly only when that bound could pass the room.
      if (3 * json.length <= room || utf8Length(json) <= room) {
        yield { json, indexes: items.map((_, index) => index) };
        return;
      }
    }
    let texts: string[] = [];
    let indexes: number[] = [];
    let size = 0;
    for (let index = 0; index < items.length; index++) {
      const text = JSON.stringify(batchItem(items[index]!));
      const bytes = utf8Length(text) + 1;
      if (bytes > room) {
        outcomes[index] = new HubError(
          "too_large",
          `Cannot publish: the message encodes to a ${
            bytes + 4 + BATCH_ENVELOPE_BYTES
          }-byte frame, over the ${this.#maxFrameBytes}-byte limit`,
        );
        continue;
      }
      if (indexes.length > 0 && (size + bytes > room || indexes.length >= maxItems)) {
        yield { json: `[${texts.join(",")}]`, indexes };
        texts = [];
        indexes = [];
        size = 0;
      }
      texts.push(text);
      indexes.push(index);
      size += bytes;
    }
    if (indexes.length > 0) yield { json: `[${texts.join(",")}]`, indexes };
  }

  /**
   * Reads `subject`'s history from the hub: the messages after
   * `options.since` (all kept ones without it), oldest first, with the
   * subject's top position and whether `since` was recovered (see
   * {@linkcode HistoryReply}). Waits for the hub as a publish does.
   *
   * @throws {HubError} `refused` when the hub refused the request, or as {@linkcode publish}.
   */
  async history(subject: string, options: HubHistoryOptions = {}): Promise<HubHistory> {
    const reply = await this.#ask("history", (id) => ({
      type: "history",
      id,
      subject,
      ...(options.since === undefined ? {} : { since: { offset: options.since.offset, epoch: options.since.epoch } }),
      ...(options.limit === undefined ? {} : { limit: options.limit }),
    }), options);
    if (reply.type !== "history") throw new HubError("refused", `Cannot read history: the hub answered ${reply.type}`);
    const { type: _type, id: _id, ...history } = reply;
    return history;
  }

  /**
   * Drops `subject`'s history at the hub; its epoch changes.
   *
   * @throws {HubError} as {@linkcode history}.
   */
  async removeHistory(subject: string, options: Omit<HubHistoryOptions, "since" | "limit"> = {}): Promise<void> {
    await this.#ask("history_remove", (id) => ({ type: "history_remove", id, subject }), options);
  }

  /**
   * Watches work queues. With `autoReserve` (the default) the client reserves
   * one message of each queue at once, and the queue's next each time the
   * handler settles, so the handler sees one message at a time per queue,
   * across reconnects too. Watches are restored on reconnect.
   */
  watch(queues: string | string[], handler: QueueHandler, options: WatchOptions = {}): void {
    const names = toList(queues);
    const autoReserve = options.autoReserve ?? true;
    for (const name of names) this.#watches.set(name, { handler, autoReserve });
    this.#send({ type: "watch", queues: names });
    if (autoReserve) this.#send({ type: "reserve", queues: names });
  }

  /** Stops watching queues. */
  unwatch(queues: string | string[]): void {
    const names = toList(queues);
    for (const name of names) this.#watches.delete(name);
    this.#send({ type: "unwatch", queues: names });
  }

  /**
   * Appends `data` to each queue. Resolves with how many queues took it.
   *
   * @throws {HubError} `refused` when a queue is full, or as {@linkcode publish}.
   */
  enqueue(queues: string | string[], data: Json, options?: PublishOptions): Promise<number> {
    return this.#request("enqueue", queues, data, options).then(count);
  }

  /** Asks for the next message of every watched queue (for watches without `autoReserve`). */
  reserve(): void {
    this.#manualReserve = true;
    this.#send({ type: "reserve" });
  }

  /** Closes the connection and stops reconnecting; waiting publishes reject. Safe to call twice. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      clearInterval(this.#sweeper);
      const error = new HubError("closed", "Cannot publish: the client was closed");
      for (const waiting of this.#waiting.values()) this.#settle(waiting, error);
      this.#waiting.clear();
      this.#unsent.clear();
      for (const waiter of this.#readyWaiters) waiter.reject(error);
      this.#readyWaiters.clear();
      for (const flush of this.#flushes) flush.resolve();
      this.#flushes.clear();
      this.#wake?.();
      this.#closeSocket();
    }
    await this.#running;
    await this.#connecting;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #request(
    type: "publish" | "publishLoop" | "enqueue",
    names: string | string[],
    data: Json,
    options: PublishOptions = {},
  ): Promise<Ack | BatchAck | HistoryReply> {
    return this.#ask(type, (id) => {
      if (type === "enqueue") return { type, id, queues: toList(names), data };
      return {
        type,
        id,
        subjects: toList(names),
        data,
        ...(options.reply === undefined ? {} : { reply: options.reply }),
        ...(options.idempotencyKey === undefined ? {} : { idempotency_key: options.idempotencyKey }),
      };
    }, options);
  }

  /** Sends the request `build` makes with a fresh id, and waits for its answer up to the timeout, reconnects included. */
  #ask(
    type: string,
    build: (id: number) => ClientMessage | string,
    options: { timeout?: number; signal?: AbortSignal },
  ): Promise<Reply> {
    if (this.#closed) return Promise.reject(new HubError("closed", `Cannot ${type}: the client is closed`));
    if (this.#waiting.size >= this.#maxWaiting) {
      return Promise.reject(
        new HubError("overloaded", `Cannot ${type}: ${this.#maxWaiting} requests already wait for the hub`),
      );
    }
    if (options.signal?.aborted) return Promise.reject(options.signal.reason);
    const id = this.#nextId++;
    const built = build(id);
    const frame = typeof built === "string" ? encodeMessageText(built) : encodeMessage(built);
    if (frame.length > this.#maxFrameBytes) {
      return Promise.reject(
        new HubError(
          "too_large",
          `Cannot ${type}: the message encodes to a ${frame.length}-byte frame, over the ${this.#maxFrameBytes}-byte limit`,
        ),
      );
    }
    if (this.#waitingBytes + frame.length > this.#maxWaitingBytes) {
      return Promise.reject(
        new HubError("overloaded", `Cannot ${type}: ${this.#maxWaitingBytes} bytes already wait for the hub`),
      );
    }
    const timeout = options.timeout ?? this.#publishTimeout;
    this.#sweepEvery(timeout);
    return new Promise<Reply>((resolve, reject) => {
      const signal = options.signal;
      const waiting: Waiting = {
        type,
        frame,
        resolve,
        reject,
        deadline: performance.now() + timeout,
        timeout,
        signal,
        onAbort: signal && (() => {
          this.#forget(id);
          this.#settle(waiting, signal.reason);
        }),
      };
      if (waiting.onAbort) signal!.addEventListener("abort", waiting.onAbort, { once: true });
      this.#waiting.set(id, waiting);
      this.#waitingBytes += frame.length;
      const writer = this.#writer;
      // Behind any that wait for the link to drain: publishes go out in the order they were made.
      if (writer && this.#unsent.size === 0 && fits(writer, frame, this.#maxPendingBytes)) writer.enqueue(frame);
      else {
        this.#unsent.set(id, waiting);
        if (writer) this.#sendWaiting(writer);
      }
    });
  }

  /**
   * Timeouts are found by one sweep per client rather than a timer per
   * request: a timer per publish cost CPU and, living until its ack, was
   * promoted out of V8's young generation under load. The sweep runs at a
   * quarter of the shortest timeout asked for (5 to 250 ms), from the first
   * request until close().
   */
  #sweepEvery(timeout: number): void {
    const every = Math.min(250, Math.max(5, Math.floor(timeout / 4)));
    if (this.#sweeper !== undefined && every >= this.#sweepPeriod) return;
    clearInterval(this.#sweeper);
    this.#sweepPeriod = every;
    this.#sweeper = setInterval(() => this.#expire(), every);
  }

  #expire(): void {
    const now = performance.now();
    for (const [id, waiting] of this.#waiting) {
      if (waiting.deadline > now) continue;
      const unsent = this.#unsent.has(id);
      this.#forget(id);
      const why = this.connected
        ? unsent ? "; it still waited to be written: the link to the hub is backed up" : ""
        : this.#refusal
        ? `; the hub at ${this.address} refused the connection: ${this.#refusal}`
        : `; the hub at ${this.address} is unreachable`;
      this.#settle(
        waiting,
        new HubError("timeout", `Cannot ${waiting.type}: no acknowledgement within ${waiting.timeout} ms${why}`),
      );
    }
  }

  /** Forgets a request that was answered, timed out or aborted: it is no longer to be sent. */
  #forget(id: number): void {
    this.#waiting.delete(id);
    this.#unsent.delete(id);
  }

  /**
   * Queues the requests waiting to be sent, in order, while the backlog has
   * room for them; the rest go once it drained. Memory stays bounded by
   * `maxWaitingBytes` either way: they keep their frames until answered.
   */
  #sendWaiting(writer: FrameWriter): void {
    if (writer !== this.#writer) return;
    for (const [id, waiting] of this.#unsent) {
      if (!fits(writer, waiting.frame, this.#maxPendingBytes)) return this.#whenDrained(writer);
      // Ended: the link is going, and the next connection sends them all.
      if (!writer.enqueue(waiting.frame)) return;
      this.#unsent.delete(id);
    }
  }

  /** Sends more of the waiting requests once `writer` has written what it holds. */
  #whenDrained(writer: FrameWriter): void {
    if (this.#draining === writer) return;
    this.#draining = writer;
    writer.flushed().then(() => {
      if (this.#draining === writer) this.#draining = null;
      this.#sendWaiting(writer);
    });
  }

  #settle(waiting: Waiting, outcome: Reply | Error): void {
    this.#waitingBytes -= waiting.frame.length;
    if (waiting.onAbort) waiting.signal!.removeEventListener("abort", waiting.onAbort);
    if (outcome instanceof Error) waiting.reject(outcome);
    else waiting.resolve(outcome);
  }

  /**
   * Sends a subscribe, watch or reserve. The hub must see it, or it keeps
   * routing by the old state: with the backlog full, the link is dropped
   * instead, and the next connection restores everything.
   */
  #send(message: ClientMessage): void {
    const writer = this.#writer;
    if (!writer) return;
    const frame = encodeMessage(message);
    // Room above the publishes' cap, which waiting publishes may fill: a subscribe is not refused for them.
    if (fits(writer, frame, 2 * this.#maxPendingBytes) && writer.enqueue(frame)) return;
    this.#logger.warn("dropping the hub link: its backlog is full", { hub: this.address, message: message.type });
    this.#closeSocket();
  }

  async #run(): Promise<void> {
    let attempt = 0;
    while (!this.#closed) {
      const tcp = await this.#dial();
      if (tcp) {
        const started = performance.now();
        await this.#session(tcp);
        // A hub that drops us at once (a wrong token, say) is not hammered.
        if (performance.now() - started > this.#maxReconnectDelay) attempt = 0;
      }
      if (this.#closed) break;
      await this.#sleep(backoffDelay(attempt++, {
        initialDelay: this.#reconnectDelay,
        maxDelay: this.#maxReconnectDelay,
      }));
    }
  }

  async #dial(): Promise<Deno.Conn | null> {
    // Aborted on timeout and on close(), so a host that drops SYNs cannot
    // hold the loop (or close()) for the kernel's minutes-long connect timeout.
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.#connectTimeout);
    this.#wake = () => abort.abort();
    const connecting = this.#connect(abort.signal);
    this.#connecting = connecting.catch(() => {});
    try {
      const conn = await connecting;
      this.#configFailures.reset();
      if (!this.#closed) return conn;
      conn.close();
      return null;
    } catch (error) {
      if (abort.signal.aborted && !this.#closed) {
        this.#logger.warn("hub connect timed out", { hub: this.address });
      } else if (error instanceof TlsFailure && !this.#closed) {
        // Not the hub being down: a configuration to fix, said at the level
        // one sees, once per cause rather than at each retry.
        this.#configFailures.log("warn", "hub TLS handshake failed", error.message, {
          hub: this.address,
          error: error.message,
        });
      } else if (isNotPermitted(error) && !this.#closed) {
        // The process may not connect there at all (its --allow-net): a configuration to fix, said once, as above.
        this.#configFailures.log("error", "hub connect not permitted", (error as Error).message, {
          hub: this.address,
          error: (error as Error).message,
          hint: "the task's --allow-net does not grant this host: use an address it grants (127.0.0.1), or grant it",
        });
      } else if (!this.#closed) {
        this.#logger.debug("hub connect failed", { hub: this.address, error: (error as Error).message });
      }
      return null;
    } finally {
      clearTimeout(timer);
      this.#wake = null;
    }
  }

  /**
   * Opens the link: TCP, then TLS when configured, its handshake done here
   * so that a certificate the client refuses (or a hub that does not speak
   * TLS) fails the dial with a {@linkcode TlsFailure}, not the first read.
   */
  async #connect(signal: AbortSignal): Promise<Deno.Conn> {
    const tls = this.#tls;
    if (!tls) return await Deno.connect({ hostname: this.#hostname, port: this.#port, signal });
    let conn: Deno.TlsConn;
    if (tls.cert === undefined || tls.key === undefined) {
      // Deno.startTls takes no client certificate; Deno.connectTls no signal, and its socket no setNoDelay.
      const tcp = await Deno.connect({ hostname: this.#hostname, port: this.#port, signal });
      tcp.setNoDelay(true);
      conn = await Deno.startTls(tcp, { hostname: this.#hostname, caCerts: tls.caCerts });
    } else {
      const connecting = Deno.connectTls({
        hostname: this.#hostname,
        port: this.#port,
        caCerts: tls.caCerts,
        cert: tls.cert,
        key: tls.key,
      });
      const aborted = new Promise<never>((_, reject) => {
        signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      });
      aborted.catch(() => {});
      try {
        conn = await Promise.race([connecting, aborted]);
      } catch (error) {
        connecting.then((late) => late.close(), () => {});
        throw error;
      }
    }
    const onAbort = () => conn.close();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await conn.handshake();
      return conn;
    } catch (error) {
      try {
        conn.close();
      } catch { /* closed on abort */ }
      if (signal.aborted) throw error;
      throw new TlsFailure((error as Error).message);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    }).finally(() => (this.#wake = null));
  }

  async #session(tcp: Deno.Conn): Promise<void> {
    // close() may have come between the dial and now, when there was no socket for it to close.
    if (this.#closed) return tcp.close();
    if ("setNoDelay" in tcp) (tcp as Deno.TcpConn).setNoDelay(true);
    this.#tcp = tcp;
    const writer = new FrameWriter(tcp, {
      // Bounded here instead, per kind of frame: see fits().
      maxPendingBytes: Infinity,
      // Publishes come from HTTP requests, each in its own event loop turn:
      // waiting for the turn to end sends a burst of them in one write.
      defer: "immediate",
      onError: () => this.#closeSocket(),
    });
    this.#restore(writer);
    this.#writer = writer;
    this.#pings = this.#pongs = 0;
    // Answered at once: the link counts as up from the hub's first answer. Those that waited through the outage
    // wait for it too, behind everything #restore queued.
    const ping = this.#ping(writer);
    for (const flush of this.#flushes) flush.ping = ping;
    this.#sendWaiting(writer);
    const heard = { at: performance.now() };
    const opened = heard.at;
    const heartbeat = this.#heartbeat(writer, heard);

    let reason: string;
    try {
      reason = await this.#read(tcp, heard);
    } finally {
      clearInterval(heartbeat);
      writer.close();
      this.#writer = null;
      this.#established = false;
      this.#closeSocket();
      this.#tcp = null;
    }
    if (!this.#closed) {
      // TLS 1.3 ends our side of the handshake before the hub checks our certificate: a refusal comes on the first read.
      const refused = this.#tls !== undefined && heard.at === opened;
      // Dropped again for the same reason without the hub answering in between (TLS at one end only, a refused
      // certificate): a configuration to fix, said once until a link is up, not at every retry.
      this.#silentDrops.log("warn", "disconnected from hub", reason, {
        hub: this.address,
        reason,
        ...(refused &&
          {
            hint:
              "the hub closed the link before its first reply: it may require a client certificate (--bus-cert) or refuse this one; its log says why",
          }),
      });
      this.dispatchEvent(new CustomEvent<DisconnectedDetail>("disconnected", { detail: { reason } }));
    }
  }

  /**
   * Queues what a new connection needs before anything else: `hello`, every
   * subscription and watch, and the reserves of idle queues, whatever their
   * bytes (the client's own subscriptions bound them: refused, a subscription
   * would be lost with no one told); then marks every
   * waiting publish to be sent, as the backlog has room, by
   * {@linkcode HubClient.#sendWaiting}. Order matters: the hub handles frames
   * in order, so subscriptions and watches are in place before any waiting
   * publish is routed.
   */
  #restore(writer: FrameWriter): void {
    writer.enqueue(encodeMessage({ type: "hello", version: PROTOCOL_VERSION, token: this.#token }));
    for (const subjects of batches(this.#handlers.keys(), this.#maxFrameBytes)) {
      writer.enqueue(encodeMessage({ type: "subscribe", subjects }));
    }
    if (this.#watches.size > 0) {
      for (const queues of batches(this.#watches.keys(), this.#maxFrameBytes)) {
        writer.enqueue(encodeMessage({ type: "watch", queues }));
      }
      // A queue whose handler still runs asks for its next message when it is done.
      const idle = [...this.#watches].filter(([queue, watch]) => watch.autoReserve && !this.#handling.has(queue));
      for (const queues of batches(idle.map(([queue]) => queue), this.#maxFrameBytes)) {
        writer.enqueue(encodeMessage({ type: "reserve", queues }));
      }
      if (this.#manualReserve) writer.enqueue(encodeMessage({ type: "reserve" }));
    }
    // Those sent on the last connection too: it may have gone before they reached the hub.
    this.#unsent = new Map(this.#waiting);
  }

  /**
   * Pings every interval, and closes the socket once the hub was silent for
   * `maxMissedPongs` intervals (`heard.at` is when it last said anything).
   * Checked four times as often, so a silent hub is noticed within a quarter
   * interval of the limit, not up to a whole one late.
   */
  #heartbeat(writer: FrameWriter, heard: { at: number }): ReturnType<typeof setInterval> {
    let lastPing = heard.at;
    return setInterval(() => {
      const now = performance.now();
      const silence = now - heard.at;
      if (silence > this.#pingInterval * this.#maxMissedPongs) {
        this.#logger.warn("hub missed its pongs", { hub: this.address, silentMs: Math.round(silence) });
        this.#closeSocket();
        return;
      }
      // Timers drift: a tick a little early still counts as the interval's.
      if (now - lastPing < this.#pingInterval * 7 / 8) return;
      lastPing = now;
      this.#ping(writer);
    }, this.#pingInterval / 4);
  }

  /** Writes a ping; returns its number on this connection, which its pong will match. */
  #ping(writer: FrameWriter): number {
    writer.enqueue(PING);
    return ++this.#pings;
  }

  /** The hub answered on a new connection: the link is up. */
  #establish(): void {
    this.#established = true;
    this.#silentDrops.reset();
    this.#sessions++;
    this.#logger.info("connected to hub", { hub: this.address });
    for (const waiter of this.#readyWaiters) waiter.resolve();
    this.#readyWaiters.clear();
    this.dispatchEvent(new Event("connected"));
  }

  /** Reads and handles the hub's messages until the connection ends; returns why it ended. */
  async #read(tcp: Deno.Conn, heard: { at: number }): Promise<string> {
    const decoder = new MessageDecoder(toHubMessage, { maxFrameBytes: this.#maxFrameBytes });
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await tcp.read(buffer);
        if (n === null) return "the hub closed the connection";
        heard.at = performance.now();
        for (const message of decoder.push(buffer.subarray(0, n))) this.#receive(message);
      }
    } catch (error) {
      return (error as Error).message;
    }
  }

  #receive(message: HubMessage): void {
    // Anything but a refusal of the connection itself (a wrong token) says the hub took it.
    if (!this.#established && !(message.type === "error" && message.id === undefined)) this.#establish();
    switch (message.type) {
      case "event":
        this.#event(message);
        break;
      case "events":
        for (const event of message.events) this.#event(event);
        break;
      case "queue":
        this.#runQueueHandler(message.queue, message.data);
        break;
      case "ack":
      case "batch_ack":
      case "history": {
        this.#refusal = null;
        const waiting = this.#waiting.get(message.id);
        if (!waiting) break;
        this.#forget(message.id);
        this.#settle(waiting, message);
        break;
      }
      case "error": {
        const waiting = message.id === undefined ? undefined : this.#waiting.get(message.id);
        if (waiting) {
          this.#forget(message.id!);
          this.#settle(waiting, new HubError("refused", message.reason));
        } else {
          this.#refusal = message.reason;
          this.#logger.error("hub reported an error", { hub: this.address, reason: message.reason });
        }
        break;
      }
      case "pong":
        this.#pongs++;
        for (const flush of this.#flushes) {
          if (flush.ping !== null && flush.ping <= this.#pongs) {
            this.#flushes.delete(flush);
            flush.resolve();
          }
        }
        break;
    }
  }

  #event(message: EventMessage): void {
    for (const handler of this.#handlers.get(message.subject) ?? []) {
      try {
        handler(
          message.data,
          message.subject,
          message.reply,
          message.offset === undefined ? undefined : { offset: message.offset, epoch: message.epoch! },
        );
      } catch (error) {
        this.#logger.error("event handler threw", { subject: message.subject, error: String(error) });
      }
    }
  }

  #runQueueHandler(queue: string, data: Json): void {
    this.#manualReserve = false;
    const watch = this.#watches.get(queue);
    if (!watch) return;
    this.#handling.add(queue);
    Promise.resolve()
      .then(() => watch.handler(data, queue))
      .catch((error) => this.#logger.error("queue handler threw", { queue, error: String(error) }))
      .finally(() => {
        this.#handling.delete(queue);
        if (watch.autoReserve && this.#watches.get(queue) === watch) this.#send({ type: "reserve", queues: [queue] });
      });
  }

  #closeSocket(): void {
    try {
      this.#tcp?.close();
    } catch { /* already closed */ }
  }
}

/**
 * Whether `frame` may join `writer`'s backlog within `limit` bytes: always
 * when nothing waits, so a frame larger than the limit still goes.
 */
function fits(writer: FrameWriter, frame: Uint8Array, limit: number): boolean {
  const pending = writer.pendingBytes;
  return pending === 0 || pending + frame.length <= limit;
}

/**
 * Names in runs whose `subscribe` or `watch` frame stays under
 * `maxFrameBytes`: each was sent in a frame of its own when it was added,
 * and all of them in one could pass the hub's frame limit, which would drop
 * the link at every reconnect.
 */
/** A connect that the process's permissions refuse (`--allow-net`), not one the network refused. */
function isNotPermitted(error: unknown): boolean {
  return error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied;
}

function* batches(names: Iterable<string>, maxFrameBytes: number): Generator<string[]> {
  // The frame's length prefix and the message around the list.
  const room = maxFrameBytes - 64;
  let batch: string[] = [];
  let size = 0;
  for (const name of names) {
    const bytes = utf8Length(JSON.stringify(name)) + 1;
    if (batch.length > 0 && size + bytes > room) {
      yield batch;
      batch = [];
      size = 0;
    }
    batch.push(name);
    size += bytes;
  }
  if (batch.length > 0) yield batch;
}

/**
 * Creates a client and waits for its first connection to the hub.
 *
 * @throws {HubError} `timeout` when the hub cannot be reached within `connectTimeout`.
 *
 * @example
 * ```ts
 * import { connect } from "./client.ts";
 *
 * await using client = await connect({ hostname: "127.0.0.1", port: 2206 });
 * await client.publish("broadcast", { content: "hello" });
 * ```
 */
export async function connect(options: HubClientOptions = {}): Promise<HubClient> {
  const client = new HubClient(options);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), options.connectTimeout ?? 5000);
  try {
    await client.ready(controller.signal);
    return client;
  } catch {
    await client.close();
    throw new HubError("timeout", `Cannot connect to the hub at ${client.address}`);
  } finally {
    clearTimeout(timer);
  }
}

const PING = encodeMessage({ type: "ping" });

function toList(names: string | string[]): string[] {
  return typeof names === "string" ? [names] : names;
}

/** What answers a request the client waits for. */
type Reply = Ack | BatchAck | HistoryReply;

/**
 * Bytes of a `publish_batch` message but its items:
 * `{"type":"publish_batch","id":` with 16 digits, `,"items":[` and `]}`.
 */
const BATCH_ENVELOPE_BYTES = 64;

/**
 * Most bytes one item's result takes in a `batch_ack`:
 * `{"count":N,"offset":N,"epoch":"…"},` with 16-digit numbers and 8 hex
 * characters. (An item the hub refuses gets a longer reason, but what it
 * refuses, an event over the frame limit, this client refuses first.)
 */
const BATCH_ACK_ITEM_BYTES = 72;

/** A batch item as the wire names its fields. */
function batchItem({ subject, data, idempotencyKey }: HubBatchItem): BatchItem {
  return idempotencyKey === undefined ? { subject, data } : { subject, data, idempotency_key: idempotencyKey };
}

/** The count of an ack. */
function count(reply: Reply): number {
  return reply.type === "ack" ? reply.count : 0;
}

/** A TLS handshake with the hub failed: the message is the TLS library's (`invalid peer certificate: UnknownIssuer`). */
class TlsFailure extends Error {
  override name = "TlsFailure";
}
