/**
 * The bus: what carries messages between publishers and pushers, whatever
 * carries them (in the spirit of centrifuge's `Broker`). Pushers and
 * publishers hold a {@linkcode Bus}, never a concrete client, and map
 * {@linkcode BusError}s, never an implementation's errors.
 *
 * Implementations: the channel hub (`channel/bus.ts`, address
 * `channel://host:port`, opened by `shared/open_bus.ts`), and an in-process
 * one for tests (`shared/memory_bus.ts`).
 *
 * Messages are routed by subject: a plain string such as `broadcast` or
 * `worker.1f3a9c2e7b4d0a55`. A user-facing channel (a chat room, a feed) is a
 * subject too, but not every subject is one.
 *
 * @module
 */

import type { Json } from "./json.ts";

export type { Json } from "./json.ts";

/**
 * Where a message stands in its subject's history: `offset` grows by one per
 * message of the subject (the first is 1; 0 before any), and `epoch`, a
 * short random string (8 hex characters), changes whenever the subject's
 * history was lost (the bus restarted, the subject's history was dropped to
 * stay within the bus's bounds, or removed). A position from another epoch can
 * never be recovered from. Only subjects the bus keeps history for have one.
 */
export interface Position {
  /** The message's number in its subject, from 1; 0 for "before the first". */
  readonly offset: number;
  /** The history's identity; "" for a subject without history. */
  readonly epoch: string;
}

/** Where a message was published, and where to answer it. */
export interface BusMessage {
  /** The subject it was published to. */
  readonly subject: string;
  /** When the publisher asked for replies: publish them to this subject. */
  readonly replyTo?: string;
  /** Its position, when the subject keeps history. */
  readonly position?: Position;
}

/** Called with each message published on a subscribed subject. */
export type BusHandler = (data: Json, message: BusMessage) => void;

/** What a publish achieved. */
export interface PublishResult {
  /**
   * How many subscribers the bus handed the message to (for the hub: pusher
   * workers), or null when the bus cannot count them.
   */
  readonly reached: number | null;
  /** The message's position, when the subject keeps history. */
  readonly position?: Position;
}

/** Options for {@linkcode Bus.publish}. */
export interface BusPublishOptions {
  /** How long to wait for the bus to take the message, in milliseconds. @default {the bus's own} */
  timeout?: number;
  /** Aborting it rejects the publish; the message may still have been taken. */
  signal?: AbortSignal;
  /** A subject the subscribers may answer on ({@linkcode BusMessage.replyTo}). */
  replyTo?: string;
  /**
   * Makes a retry safe: a publish whose key the bus saw on the same subject
   * within its idempotency window is not delivered again, and resolves with
   * the first one's result (its `reached` and `position`). Up to 128
   * characters.
   */
  idempotencyKey?: string;
}

/** One publish of {@linkcode Bus.publishBatch}: to one subject, with its own data and key. */
export interface BusBatchItem {
  /** The subject it goes to. */
  readonly subject: string;
  /** What it carries. */
  readonly data: Json;
  /** As {@linkcode BusPublishOptions.idempotencyKey}, for this item alone. */
  readonly idempotencyKey?: string;
}

/** Options for {@linkcode Bus.publishBatch}. */
export interface BusBatchOptions {
  /** How long to wait for the bus to take the items, in milliseconds. @default {the bus's own} */
  timeout?: number;
  /** Aborting it rejects the call; items may still have been taken. */
  signal?: AbortSignal;
}

/** What one item of a batch achieved, or the {@linkcode BusError} that refused it alone. */
export type BatchOutcome = PublishResult | BusError;

/** Options for {@linkcode Bus.history}. */
export interface HistoryOptions {
  /** Return what followed this position; without it, every message kept. */
  since?: Position;
  /** Most messages returned; the bus caps it at the history size it keeps. @default {the bus's history size} */
  limit?: number;
  /** How long to wait for the bus, in milliseconds. @default {the bus's own} */
  timeout?: number;
  /** Aborting it rejects the call. */
  signal?: AbortSignal;
}

/** What {@linkcode Bus.history} found. */
export interface HistoryResult {
  /**
   * The messages after `since` (every one kept without it), oldest first, at
   * most `limit`.
   */
  readonly messages: { readonly data: Json; readonly position: Position }[];
  /**
   * The subject's current top position: offset 0 when it never had a
   * message; `{ offset: 0, epoch: "" }` when it keeps no history.
   */
  readonly position: Position;
  /**
   * True only when `since` was given, its epoch is the current one, it is not
   * past the top, nothing after it was trimmed before the first message
   * returned, and `limit` did not cut the answer: `messages` are exactly
   * what followed `since`. False means the reader must reload its state.
   */
  readonly recovered: boolean;
}

/** Options for {@linkcode Bus.request}. */
export interface RequestOptions {
  /** How long to wait for replies, in milliseconds. @default {1000} */
  timeout?: number;
  /** Aborting it ends the wait with the replies gathered so far. */
  signal?: AbortSignal;
  /**
   * Stop at this many replies: for a subject only one subscriber takes (a
   * worker's), on a bus that cannot count. Buses that count stop at their
   * count and may ignore it. @default {no limit}
   */
  maxReplies?: number;
}

/** The replies to a {@linkcode Bus.request}. */
export interface RequestResult {
  /** Every reply that arrived in time, in the order they arrived. */
  readonly replies: Json[];
  /**
   * How many subscribers the request reached, when the bus counts them; fewer
   * replies than this means some did not answer in time.
   */
  readonly expected: number | null;
}

/**
 * A connection to whatever carries messages. It keeps itself up: while it is
 * down, publishes wait (up to their timeout) and subscriptions are restored
 * when it is back.
 */
export interface Bus extends AsyncDisposable {
  /**
   * False when {@linkcode Bus.publish} cannot count whom it reached
   * (`reached` is always null, as on NATS): a send that must know whether
   * anyone took it goes as a {@linkcode Bus.request} instead. @default {true}
   */
  readonly countsReached?: boolean;
  /** Where it connects, as a URL without secrets (`channel://127.0.0.1:2206`). */
  readonly address: string;
  /** Whether the link is up now. */
  readonly connected: boolean;
  /** How many times the link came back after it was lost. */
  readonly reconnects: number;
  /**
   * Calls `handler` with every message published to `subject` from now on.
   * One handler per subject: subscribing again replaces it.
   *
   * The returned promise resolves once the subscription is in effect at the
   * bus: a publish made after that, by anyone, reaches `handler` (the bus
   * may need a round trip to know; tell a client it is subscribed only
   * then). It also resolves if the bus closes first, or once `subject` is
   * unsubscribed first (during an outage, say: its wait is not kept for a
   * subscription that is gone); it never rejects.
   */
  subscribe(subject: string, handler: BusHandler): Promise<void>;
  /** Stops the handler of `subject`. Unknown subjects are ignored. */
  unsubscribe(subject: string): void;
  /**
   * Publishes `data` to every subscriber of `subject`. Resolves once the bus
   * has taken it.
   *
   * @throws {BusError} when it did not.
   */
  publish(subject: string, data: Json, options?: BusPublishOptions): Promise<PublishResult>;
  /**
   * Publishes many messages, each to one subject, as if each were published
   * alone, and resolves with one outcome per item, in order: its result, or
   * the {@linkcode BusError} that refused that item alone (`too_large`,
   * say). Buses that can take many in one exchange do (the hub: one frame
   * and one acknowledgement for the lot); call it through
   * {@linkcode publishBatch}, which publishes one by one on the others.
   *
   * @throws the abort's reason when `options.signal` aborts.
   */
  publishBatch?(items: readonly BusBatchItem[], options?: BusBatchOptions): Promise<BatchOutcome[]>;
  /**
   * Publishes `data` to `subject` asking for replies, and gathers them: until
   * every subscriber reached has answered when the bus counts them, else until
   * the timeout.
   *
   * @throws {BusError} `no_responders` when nobody subscribes to `subject`,
   * or as {@linkcode Bus.publish} does.
   */
  request(subject: string, data: Json, options?: RequestOptions): Promise<RequestResult>;
  /**
   * Reads the history of `subject`: what followed `options.since`, or all
   * that is kept. A subject without history answers no messages, position
   * `{ offset: 0, epoch: "" }`, not recovered.
   *
   * @throws {BusError} as {@linkcode Bus.publish} does.
   */
  history(subject: string, options?: HistoryOptions): Promise<HistoryResult>;
  /**
   * Drops the history of `subject`: its epoch changes, so no reader recovers
   * across it. Subjects without history are ignored.
   *
   * @throws {BusError} as {@linkcode Bus.publish} does.
   */
  removeHistory(subject: string): Promise<void>;
  /** Closes the link; waiting publishes reject with `unavailable`. Closing twice is harmless. */
  close(): Promise<void>;
}

/**
 * Why a {@linkcode BusError} was raised:
 * - `unavailable`: the bus did not take the message in time, is closed, or
 *   holds too many waiting (try again later: 503);
 * - `refused`: the bus refused it (502);
 * - `too_large`: the message is over the bus's size limit (413);
 * - `no_responders`: a request reached nobody (404).
 */
export type BusErrorCode = "unavailable" | "refused" | "too_large" | "no_responders";

/** A publish or request that did not go through. Messages say why, for logs and answers. */
export class BusError extends Error {
  /** Why it failed. */
  readonly code: BusErrorCode;

  constructor(code: BusErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BusError";
    this.code = code;
  }
}

/** The default wait of {@linkcode Bus.request}, in milliseconds. */
export const DEFAULT_REQUEST_TIMEOUT = 1000;

/** Subjects of reply inboxes start with this; they are no one's to publish to but the replier's. */
export const INBOX_PREFIX = "_inbox.";

/**
 * Does what {@linkcode Bus.request} promises with the bus's own `subscribe`
 * and `publish`, for implementations without native request/reply: a fresh
 * inbox subject, subscribed for the request's lifetime.
 *
 * @example
 * ```ts
 * import { requestOver } from "./bus.ts";
 * import { MemoryBroker } from "./memory_bus.ts";
 *
 * await using bus = new MemoryBroker().connect();
 * bus.subscribe("time", (_data, { replyTo }) => {
 *   if (replyTo) void bus.publish(replyTo, Date.now());
 * });
 * const { replies } = await requestOver(bus, "time", null, { timeout: 100 }); // [1764400000000]
 * ```
 */
export async function requestOver(
  bus: Pick<Bus, "subscribe" | "unsubscribe" | "publish">,
  subject: string,
  data: Json,
  options: RequestOptions = {},
): Promise<RequestResult> {
  const timeout = options.timeout ?? DEFAULT_REQUEST_TIMEOUT;
  const inbox = `${INBOX_PREFIX}${randomHex(8)}`;
  const replies: Json[] = [];
  let expected: number | null = null;
  let done: () => void = () => {};
  const finished = new Promise<void>((resolve) => (done = resolve));
  const complete = () => expected !== null && replies.length >= expected;
  bus.subscribe(inbox, (reply) => {
    replies.push(reply);
    if (complete()) done();
  });
  const timer = setTimeout(done, timeout);
  const abort = () => done();
  options.signal?.addEventListener("abort", abort, { once: true });
  try {
    const { reached } = await bus.publish(subject, data, { replyTo: inbox, timeout, signal: options.signal });
    if (reached === 0) throw new BusError("no_responders", `Cannot request on ${subject}: nobody subscribes to it`);
    expected = reached;
    if (!complete()) await finished;
    return { replies: replies.slice(), expected };
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", abort);
    bus.unsubscribe(inbox);
  }
}

/**
 * Publishes `items` on `bus` with its own {@linkcode Bus.publishBatch} when it
 * has one, else one {@linkcode Bus.publish} per item, all at once. Resolves
 * with one outcome per item, in order.
 *
 * @throws what is not a {@linkcode BusError} (an abort's reason).
 *
 * @example
 * ```ts
 * import { publishBatch } from "./bus.ts";
 * import { MemoryBroker } from "./memory_bus.ts";
 *
 * await using bus = new MemoryBroker().connect();
 * const outcomes = await publishBatch(bus, [{ subject: "a", data: 1 }, { subject: "b", data: 2 }]);
 * ```
 */
export function publishBatch(
  bus: Pick<Bus, "publish" | "publishBatch">,
  items: readonly BusBatchItem[],
  options: BusBatchOptions = {},
): Promise<BatchOutcome[]> {
  if (bus.publishBatch) return bus.publishBatch(items, options);
  return publishEach(bus, items, options);
}

/** Publishes one item, as {@linkcode Bus.publish} would: see {@linkcode coalescePublishes}. */
export type PublishOne = (item: BusBatchItem) => Promise<PublishResult>;

/** Options for {@linkcode coalescePublishes}. */
export interface CoalesceOptions {
  /** As {@linkcode BusBatchOptions.timeout}, for every publish. @default {the bus's own} */
  timeout?: number;
  /** Publishes gathered before they go at once, without waiting for the turn to end. @default {1000} */
  maxItems?: number;
  /**
   * Publishes waiting for the bus at once, gathered or sent; past it a
   * publish rejects at once with `unavailable`. @default {10000}
   */
  maxWaiting?: number;
}

/**
 * Publishes one item at a time, as {@linkcode Bus.publish} would, but sends
 * those made in one event loop turn to the bus together, as one
 * {@linkcode Bus.publishBatch}, once the turn's I/O is handled
 * (`setImmediate`). A server that publishes once per request (the
 * publisher's `GET /?content=`) gets, under load, the requests of a turn
 * through the hub as one frame, one acknowledgement and one events frame per
 * subscriber link rather than one of each per request; alone, a publish
 * waits only for the end of its turn. Each publish resolves with its own
 * result or rejects with the {@linkcode BusError} that refused it alone; a
 * bus without `publishBatch` gets each publish at once. At most
 * `maxWaiting` publishes wait for the bus at once: a batch is one request
 * to the bus, so the bus's own bound on waiting requests no longer counts
 * publishes.
 *
 * @example
 * ```ts
 * import { coalescePublishes } from "./bus.ts";
 * import { MemoryBroker } from "./memory_bus.ts";
 *
 * await using bus = new MemoryBroker().connect();
 * const publish = coalescePublishes(bus, { timeout: 5000 });
 * const [a, b] = await Promise.all([publish({ subject: "a", data: 1 }), publish({ subject: "b", data: 2 })]);
 * ```
 */
export function coalescePublishes(
  bus: Pick<Bus, "publish" | "publishBatch">,
  options: CoalesceOptions = {},
): PublishOne {
  const { timeout } = options;
  const batchOptions: BusBatchOptions = timeout === undefined ? {} : { timeout };
  if (!bus.publishBatch) {
    return ({ subject, data, idempotencyKey }) =>
      bus.publish(subject, data, { ...batchOptions, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) });
  }
  const maxItems = options.maxItems ?? 1000;
  const maxWaiting = options.maxWaiting ?? 10_000;
  /** Publishes gathered or sent whose outcome has not come yet. */
  let waiting = 0;
  let items: BusBatchItem[] = [];
  let waiters: { resolve: (result: PublishResult) => void; reject: (error: unknown) => void }[] = [];
  const flush = () => {
    if (items.length === 0) return;
    const sent = waiters;
    const batch = items;
    // From an immediate: a bus that threw rather than rejecting must not take the process down.
    Promise.try(() => bus.publishBatch!(batch, batchOptions)).then((outcomes) => {
      waiting -= sent.length;
      outcomes.forEach((outcome, i) => {
        if (outcome instanceof BusError) sent[i]!.reject(outcome);
        else sent[i]!.resolve(outcome);
      });
    }, (error) => {
      waiting -= sent.length;
      for (const waiter of sent) waiter.reject(error);
    });
    items = [];
    waiters = [];
  };
  return (item) => {
    if (waiting >= maxWaiting) {
      return Promise.reject(
        new BusError("unavailable", `Cannot publish: ${maxWaiting} publishes already wait for the bus`),
      );
    }
    waiting++;
    return new Promise<PublishResult>((resolve, reject) => {
      if (items.length === 0) setImmediate(flush);
      items.push(item);
      waiters.push({ resolve, reject });
      if (items.length >= maxItems) flush();
    });
  };
}

/**
 * Does what {@linkcode Bus.publishBatch} promises with the bus's own
 * `publish`, for implementations without native batching: every item
 * published at once, so a bus that pipelines (Redis, NATS) still writes
 * them together.
 */
export function publishEach(
  bus: Pick<Bus, "publish">,
  items: readonly BusBatchItem[],
  options: BusBatchOptions = {},
): Promise<BatchOutcome[]> {
  return Promise.all(items.map(async ({ subject, data, idempotencyKey }): Promise<BatchOutcome> => {
    try {
      return await bus.publish(subject, data, {
        ...(options.timeout === undefined ? {} : { timeout: options.timeout }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
        ...(idempotencyKey === undefined ? {} : { idempotencyKey }),
      });
    } catch (error) {
      if (error instanceof BusError) return error;
      throw error;
    }
  }));
}

function randomHex(bytes: number): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The last `limit` messages of `subject`'s history, oldest first: its top,
 * then the messages after `limit` before it (offsets grow by one per message
 * on every bus). Answered at the top read first, so that a reader that goes
 * on from its offset misses nothing published meanwhile; `recovered` says
 * whether every offset of that window is there (none trimmed away). A
 * subject that keeps no history answers as {@linkcode Bus.history} does.
 */
export async function lastMessages(
  bus: Pick<Bus, "history">,
  subject: string,
  limit: number,
  timeout?: number,
): Promise<HistoryResult> {
  const options = timeout === undefined ? {} : { timeout };
  const top = (await bus.history(subject, { ...options, limit: 0 })).position;
  if (top.epoch === "" || top.offset === 0) return { messages: [], position: top, recovered: top.epoch !== "" };
  const from = Math.max(0, top.offset - limit);
  const window = await bus.history(subject, { ...options, since: { offset: from, epoch: top.epoch }, limit });
  // History begun anew in between: what the window holds is of another epoch.
  if (window.position.epoch !== top.epoch) return { messages: [], position: window.position, recovered: false };
  const messages = window.messages.filter(({ position }) => position.offset <= top.offset);
  return { messages, position: top, recovered: messages.length === top.offset - from };
}
