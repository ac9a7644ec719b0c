/**
 * The hub as a {@linkcode Bus}: a {@linkcode HubClient} behind the bus
 * interface, so pushers and publishers hold a `Bus` and map
 * {@linkcode BusError}s, never the client's {@linkcode HubError}s. Opened by
 * address with `openBus("channel://host:port")` (`shared/open_bus.ts`).
 *
 * @module
 */

import {
  type EventHandler,
  HubClient,
  type HubClientOptions,
  HubError,
  type HubErrorCode,
  type PublishAck,
} from "./client.ts";
import {
  type BatchOutcome,
  type Bus,
  type BusBatchItem,
  type BusBatchOptions,
  BusError,
  type BusErrorCode,
  type BusHandler,
  type BusPublishOptions,
  type HistoryOptions,
  type HistoryResult,
  type Json,
  type PublishResult,
  type RequestOptions,
  requestOver,
  type RequestResult,
} from "../shared/bus.ts";
import { DEFAULT_HUB_PORT } from "../shared/wire.ts";

/** Options for {@linkcode HubBus}: those of the {@linkcode HubClient} it wraps. */
export type HubBusOptions = HubClientOptions;

/** The bus error code of each hub client error code. */
const BUS_CODES: Record<HubErrorCode, BusErrorCode> = {
  timeout: "unavailable",
  closed: "unavailable",
  overloaded: "unavailable",
  refused: "refused",
  too_large: "too_large",
};

/**
 * The bus over the hub: subjects are hub subjects, a publish resolves with
 * how many subscribers (pusher workers) the hub wrote it to, and a request
 * gathers one reply per subscriber on a fresh inbox subject.
 *
 * @example
 * ```ts
 * import { HubBus } from "./bus.ts";
 *
 * await using bus = new HubBus({ hostname: "127.0.0.1", port: 2206 });
 * bus.subscribe("news", (data, { subject }) => console.log(subject, data));
 * const { reached } = await bus.publish("news", { title: "hello" });
 * ```
 */
export class HubBus implements Bus {
  /** `channel://host:port`, IPv6 hosts in brackets. */
  readonly address: string;
  readonly #client: HubClient;
  /** The bus handler of each subject: one, as the interface promises. */
  readonly #handlers = new Map<string, BusHandler>();
  /** The one client handler of each subject, which calls the subject's bus handler. */
  readonly #relays = new Map<string, EventHandler>();
  /**
   * What withdraws the flushes that subscribes of a subject wait for, while
   * any does, and how many: {@linkcode HubBus.unsubscribe} aborts it.
   */
  readonly #flushing = new Map<string, { withdraw: AbortController; waits: number }>();

  /** Connects to the hub at `options.hostname`:`options.port` (127.0.0.1:2206 by default) and keeps the link up. */
  constructor(options: HubBusOptions = {}) {
    this.#client = new HubClient(options);
    const hostname = options.hostname ?? "127.0.0.1";
    const host = hostname.includes(":") ? `[${hostname}]` : hostname;
    this.address = `channel://${host}:${options.port ?? DEFAULT_HUB_PORT}`;
  }

  /** Whether the link to the hub is up now. */
  get connected(): boolean {
    return this.#client.connected;
  }

  /** How many times the link came back after it was lost. */
  get reconnects(): number {
    return this.#client.reconnects;
  }

  /**
   * Calls `handler` with every message published to `subject`; subscribing
   * again replaces the handler. Resolves once the hub has handled the
   * subscription (a ping's pong behind it: {@linkcode HubClient.flush}), or
   * once `subject` is unsubscribed first: during a hub outage the wait (and
   * what its callers chained to it) is not kept for a subscription that is
   * gone, as the pusher's channels and users come and go.
   */
  subscribe(subject: string, handler: BusHandler): Promise<void> {
    this.#listen(subject, handler);
    let flushing = this.#flushing.get(subject);
    if (!flushing) this.#flushing.set(subject, flushing = { withdraw: new AbortController(), waits: 0 });
    flushing.waits++;
    const done = flushing;
    return this.#client.flush({ signal: flushing.withdraw.signal }).catch(() => {}).finally(() => {
      if (--done.waits === 0 && this.#flushing.get(subject) === done) this.#flushing.delete(subject);
    });
  }

  /** Subscribes as {@linkcode HubBus.subscribe} does, without waiting for the hub to have handled it. */
  #listen(subject: string, handler: BusHandler): void {
    this.#handlers.set(subject, handler);
    if (!this.#relays.has(subject)) {
      const relay: EventHandler = (data, _subject, reply, position) => {
        this.#handlers.get(subject)?.(data, {
          subject,
          ...(reply === undefined ? {} : { replyTo: reply }),
          ...(position === undefined ? {} : { position }),
        });
      };
      this.#relays.set(subject, relay);
      this.#client.subscribe(subject, relay);
    }
  }

  /** Stops the handler of `subject`; unknown subjects are ignored. */
  unsubscribe(subject: string): void {
    const relay = this.#relays.get(subject);
    if (!relay) return;
    this.#handlers.delete(subject);
    this.#relays.delete(subject);
    this.#client.unsubscribe(subject, relay);
    this.#flushing.get(subject)?.withdraw.abort();
    this.#flushing.delete(subject);
  }

  /**
   * Publishes `data` to every subscriber of `subject`; resolves once the hub
   * has written it to them, with how many it reached.
   *
   * @throws {BusError} `unavailable` when the hub did not acknowledge it in
   * time, the bus is closed or too much waits; `refused` when the hub
   * refused it; `too_large` when it is over the frame limit.
   */
  publish(subject: string, data: Json, options: BusPublishOptions = {}): Promise<PublishResult> {
    // A promise chain, not an async function, which would hold `data` until the hub answers.
    let acked: Promise<PublishAck>;
    try {
      acked = this.#client.publishWithPositions(subject, data, {
        timeout: options.timeout,
        signal: options.signal,
        reply: options.replyTo,
        idempotencyKey: options.idempotencyKey,
      });
    } catch (error) {
      return Promise.reject(toBusError(error));
    }
    return acked.then(({ count, positions }) => {
      const position = positions.find((p) => p.subject === subject);
      return position
        ? { reached: count, position: { offset: position.offset, epoch: position.epoch } }
        : { reached: count };
    }, (error) => {
      throw toBusError(error);
    });
  }

  /**
   * Publishes every item in one `publish_batch` frame (more when they pass
   * the frame limit), answered by one acknowledgement with a result per
   * item: the hub routes each as {@linkcode HubBus.publish} would.
   *
   * @throws the abort's reason when `options.signal` aborts.
   */
  publishBatch(items: readonly BusBatchItem[], options: BusBatchOptions = {}): Promise<BatchOutcome[]> {
    // Not async: the items' data need not wait in memory for the hub's answer.
    return this.#client.publishBatch(items, options).then((outcomes) =>
      outcomes.map((outcome): BatchOutcome => {
        if (outcome instanceof HubError) return toBusError(outcome) as BusError;
        // A batch item has one subject: its position, when it has one, is the only one.
        const position = outcome.positions[0];
        return position
          ? { reached: outcome.count, position: { offset: position.offset, epoch: position.epoch } }
          : { reached: outcome.count };
      })
    );
  }

  /**
   * Publishes `data` to `subject` asking for replies, and gathers one per
   * subscriber reached, or those that came before the timeout.
   *
   * @throws {BusError} `no_responders` when nobody subscribes to `subject`,
   * or as {@linkcode HubBus.publish}.
   */
  request(subject: string, data: Json, options?: RequestOptions): Promise<RequestResult> {
    return requestOver(this.#requester, subject, data, options);
  }

  /**
   * The bus as a request sees it: its inbox subscription is not flushed.
   * The subscribe frame goes out before the publish on the one link, and a
   * reconnect restores subscriptions before waiting publishes, so the hub
   * has the inbox first without it; and a flush waits for the hub, kept
   * through an outage long after the request gave up.
   */
  readonly #requester: Pick<Bus, "subscribe" | "unsubscribe" | "publish"> = {
    subscribe: (subject, handler) => Promise.resolve(this.#listen(subject, handler)),
    unsubscribe: (subject) => this.unsubscribe(subject),
    publish: (subject, data, options) => this.publish(subject, data, options),
  };

  /**
   * Reads `subject`'s history at the hub (a subject the hub keeps no history
   * for answers no messages, position `{ offset: 0, epoch: "" }`).
   *
   * @throws {BusError} as {@linkcode HubBus.publish}; `refused` for a
   * malformed request.
   */
  async history(subject: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    try {
      const { epoch, offset, messages, recovered } = await this.#client.history(subject, options);
      return {
        messages: messages.map((message) => ({ data: message.data, position: { offset: message.offset, epoch } })),
        position: { offset, epoch },
        recovered,
      };
    } catch (error) {
      throw toBusError(error);
    }
  }

  /**
   * Drops `subject`'s history at the hub; its epoch changes.
   *
   * @throws {BusError} as {@linkcode HubBus.history}.
   */
  async removeHistory(subject: string): Promise<void> {
    try {
      await this.#client.removeHistory(subject);
    } catch (error) {
      throw toBusError(error);
    }
  }

  /** Closes the link; waiting publishes reject with `unavailable`. Closing twice is harmless. */
  close(): Promise<void> {
    return this.#client.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Maps a {@linkcode HubError} to its {@linkcode BusError}, keeping the message and the cause; other errors pass. */
function toBusError(error: unknown): unknown {
  if (!(error instanceof HubError)) return error;
  return new BusError(BUS_CODES[error.code], error.message, { cause: error });
}
