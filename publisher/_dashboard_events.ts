/**
 * The dashboard's live numbers: one sample of the cluster per interval
 * (the hub link, every pusher worker's counts from `info`, the publisher's
 * own counters turned into rates), sent to every open page as server-sent
 * events. One sample serves every stream: it is taken and encoded once per
 * tick, whatever the number of pages.
 *
 * @module
 */

import { eventStream } from "../shared/http.ts";
import type { Json } from "../shared/json.ts";
import type { RegistrySnapshot } from "../shared/metrics.ts";
import { Rejection } from "./_rejection.ts";

/** Streams open at once by default; one more gets 429. */
export const DEFAULT_MAX_STREAMS = 16;

/** Streams one login (session) may have open at once by default; one more gets 429. */
export const DEFAULT_MAX_STREAMS_PER_SESSION = 4;

/**
 * How long a stream lasts by default, in milliseconds; then it ends, and
 * the page's `EventSource` opens the next one, which resumes after the
 * last sample the page got (`Last-Event-ID`).
 */
export const DEFAULT_MAX_STREAM_AGE = 60_000;

/** When a page refused a place asks again, in milliseconds: its `EventSource`'s `retry`, a 429's `Retry-After`. */
const FULL_RETRY_MS = 5000;

/** Samples kept for a page that opens: five minutes at one a second. */
export const DEFAULT_HISTORY = 300;

/** Chunks a stream may have queued, unread, before it is closed as too slow. */
const STREAM_QUEUE = 8;

/** The publisher's counters the dashboard reads, as totals since it started. */
export interface Totals {
  /** Publishes answered 200, every target. */
  publishes: number;
  /** Pusher workers those publishes reached (`publisher_deliveries_total`). */
  deliveries: number;
  /** Requests answered, every status. */
  requests: number;
  /** Requests answered 5xx. */
  errors: number;
  /** Requests answered 4xx. */
  rejected: number;
  /** Seconds successful publishes took, summed, for the mean latency. */
  publishSeconds: number;
  /** Times the hub link came back. */
  hubReconnects: number;
}

/** The pusher workers' counters, summed over the workers that answered `info`. */
export interface ClusterTotals {
  /** Messages handed to sockets. */
  deliveries: number;
  /** Connections closed as slow consumers (3008). */
  slowCloses: number;
}

/**
 * Per-second rates between two samples; null in the first sample after a
 * gap. `socketDeliveries` and `slowCloses` are the pusher workers' (null
 * when `info` failed or the workers do not send counters).
 */
export type Rates =
  & {
    [K in "publishes" | "deliveries" | "requests" | "errors" | "rejected" | "socketDeliveries" | "slowCloses"]:
      | number
      | null;
  }
  & {
    /** Mean time of the publishes between the two samples, in milliseconds; null without any. */
    publishMs: number | null;
  };

/** One sample, as a page receives it in an `event: snapshot`. */
export interface Sample {
  /** When it was taken, in milliseconds since the epoch. */
  t: number;
  /** Whether the publisher's hub link is up. */
  hub: boolean;
  /** The `info` result (workers and their sums), or null when it failed. */
  info: Json | null;
  /** Why `info` failed, when it did. */
  infoError?: string;
  totals: Totals;
  /** The pusher workers' counters, or null when `info` failed or they sent none. */
  cluster: ClusterTotals | null;
  rates: Rates;
}

/** What the sampler reads. */
export interface SampleSources {
  /** Whether the hub link is up. */
  hubConnected: () => boolean;
  /** The `info` result; throws (a {@linkcode Rejection}) when it cannot be had. */
  info: () => Promise<Json>;
  /** The publisher's metrics, as `/metrics` would render them. */
  metrics: () => RegistrySnapshot;
  /** The wall clock, in milliseconds. */
  clock: () => number;
}

/** Options for {@linkcode EventStreams}. */
export interface EventStreamsOptions {
  /** Time between samples, in milliseconds. @default {1000} */
  interval?: number;
  /** Streams open at once; one more gets 429. @default {16} */
  maxStreams?: number;
  /** Streams of one session open at once; one more gets 429. @default {4} */
  maxStreamsPerSession?: number;
  /**
   * How long a stream lasts, in milliseconds: a page that stops reading
   * holds its place no longer, where its socket's buffers could take an
   * hour to fill. A page that reads opens the next one by itself and
   * resumes where it was. @default {60000}
   */
  maxStreamAge?: number;
  /** Samples kept for pages that open later. @default {300} */
  history?: number;
}

/** The publisher's counters, summed from its metrics. */
export function totalsOf(snapshot: RegistrySnapshot): Totals {
  const totals: Totals = {
    publishes: 0,
    deliveries: 0,
    requests: 0,
    errors: 0,
    rejected: 0,
    publishSeconds: 0,
    hubReconnects: 0,
  };
  for (const metric of snapshot) {
    const series = Object.entries(metric.series);
    switch (metric.name) {
      case "publisher_publishes_total":
        for (const [, [value]] of series) totals.publishes += value!;
        break;
      case "publisher_deliveries_total":
        for (const [, [value]] of series) totals.deliveries += value!;
        break;
      case "publisher_requests_total":
        for (const [status, [value]] of series) {
          totals.requests += value!;
          if (status >= "500") totals.errors += value!;
          else if (status >= "400") totals.rejected += value!;
        }
        break;
      case "publisher_publish_duration_seconds":
        // Buckets, then the sum, then the count.
        for (const [, values] of series) totals.publishSeconds += values[values.length - 2]!;
        break;
      case "publisher_hub_reconnects_total":
        for (const [, [value]] of series) totals.hubReconnects += value!;
        break;
    }
  }
  return totals;
}

/** Each worker's counters in an `info` result, by worker id; workers without counters are left out. */
export function workerCountersOf(info: Json | null): Map<string, ClusterTotals> {
  const counters = new Map<string, ClusterTotals>();
  const workers = info !== null && typeof info === "object" && !Array.isArray(info) ? info.workers : undefined;
  if (!Array.isArray(workers)) return counters;
  for (const worker of workers) {
    if (worker === null || typeof worker !== "object" || Array.isArray(worker)) continue;
    const { worker_id: id, deliveries, slow_closes: slowCloses } = worker;
    if (typeof id !== "string" || typeof deliveries !== "number" || typeof slowCloses !== "number") continue;
    counters.set(id, { deliveries, slowCloses });
  }
  return counters;
}

/**
 * Per-second rates of the workers' counters from `before` to `after`,
 * `seconds` apart, over the workers in both: a worker that died took its
 * counts with it, a new one starts from 0, and neither is a negative rate.
 */
export function clusterRatesOf(
  before: Map<string, ClusterTotals> | undefined,
  after: Map<string, ClusterTotals>,
  seconds: number,
): { socketDeliveries: number | null; slowCloses: number | null } {
  if (before === undefined || seconds <= 0 || after.size === 0) return { socketDeliveries: null, slowCloses: null };
  let deliveries = 0;
  let slowCloses = 0;
  for (const [id, now] of after) {
    const then = before.get(id);
    if (then === undefined) continue;
    deliveries += Math.max(0, now.deliveries - then.deliveries);
    slowCloses += Math.max(0, now.slowCloses - then.slowCloses);
  }
  return { socketDeliveries: deliveries / seconds, slowCloses: slowCloses / seconds };
}

/** Rates from `before` to `after`, `seconds` apart (the workers' rates null: see {@linkcode clusterRatesOf}). */
export function ratesOf(before: Totals | undefined, after: Totals, seconds: number): Rates {
  const rate = (key: keyof Totals) =>
    before === undefined || seconds <= 0 ? null : Math.max(0, after[key] - before[key]) / seconds;
  const published = before === undefined ? 0 : after.publishes - before.publishes;
  return {
    publishes: rate("publishes"),
    deliveries: rate("deliveries"),
    requests: rate("requests"),
    errors: rate("errors"),
    rejected: rate("rejected"),
    socketDeliveries: null,
    slowCloses: null,
    publishMs: published > 0 ? (after.publishSeconds - before!.publishSeconds) / published * 1000 : null,
  };
}

/** Options for {@linkcode EventStreams.open}. */
export interface OpenStreamOptions {
  /** Asked before each event: whether the stream may go on (its session is still live). @default {() => true} */
  alive?: () => boolean;
  /** The login it is for, counted against `maxStreamsPerSession`. @default {none: not counted} */
  session?: string;
  /**
   * The request's `Last-Event-ID`: the id of the last sample the page got
   * from a stream before this one. When the samples after it are all kept,
   * only they are sent, instead of the whole history. @default {null}
   */
  lastEventId?: string | null;
  /**
   * Whether the page's `EventSource` asks (`Accept: text/event-stream`): when
   * no place is free it is answered 200 with a `full` event and `retry: 5000`,
   * and comes back by itself, where a 429 would stop it for good.
   * @default {false}
   */
  waitWhenFull?: boolean;
}

interface Stream {
  controller: ReadableStreamDefaultController<Uint8Array>;
  alive: () => boolean;
  session: string | undefined;
  /** When it opened, on the monotonic clock. */
  opened: number;
}

/** A kept sample and its number, which its event's `id` carries. */
interface Kept {
  seq: number;
  sample: Sample;
}

const utf8 = new TextEncoder();

/**
 * The dashboard's event streams (`text/event-stream`). Samples are taken
 * only while at least one stream is open; a page that opens gets the kept
 * history first (`event: history`), then one `event: snapshot` per
 * interval. A stream whose page stopped reading, or whose session ended, is
 * closed; {@linkcode EventStreams.close} closes them all and refuses new
 * ones, so that a server's drain is not held up by pages that never leave.
 *
 * Every stream ends after `maxStreamAge`. Whether a page reads cannot be
 * seen from here until its socket's buffers are full (megabytes, an hour of
 * samples), but a page that reads comes back: its `EventSource` reconnects
 * with the `Last-Event-ID` of the last sample it got, and gets only those
 * after it. A page that stopped reading does not, and its place is free.
 */
export class EventStreams {
  readonly #sources: SampleSources;
  readonly #interval: number;
  readonly #maxStreams: number;
  readonly #maxStreamsPerSession: number;
  readonly #maxStreamAge: number;
  readonly #historyLength: number;
  readonly #streams = new Set<Stream>();
  /** Streams open of each session that has any. */
  readonly #perSession = new Map<string, number>();
  readonly #history: Kept[] = [];
  /** Starts every sample's id, so that an id from before a restart is not taken for one of ours. */
  readonly #epoch = crypto.randomUUID().slice(0, 8);
  /** The number of the last sample taken. */
  #seq = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #sampling = false;
  #closed = false;
  #last: { totals: Totals; workers: Map<string, ClusterTotals>; t: number } | undefined;

  constructor(sources: SampleSources, options: EventStreamsOptions = {}) {
    this.#sources = sources;
    this.#interval = options.interval ?? 1000;
    this.#maxStreams = options.maxStreams ?? DEFAULT_MAX_STREAMS;
    this.#maxStreamsPerSession = options.maxStreamsPerSession ?? DEFAULT_MAX_STREAMS_PER_SESSION;
    this.#maxStreamAge = options.maxStreamAge ?? DEFAULT_MAX_STREAM_AGE;
    this.#historyLength = options.history ?? DEFAULT_HISTORY;
  }

  /** Streams open now. */
  get size(): number {
    return this.#streams.size;
  }

  /**
   * Opens a stream for one page, with `headers` on its answer.
   *
   * @throws {Rejection} 429 when `maxStreams` are open, or `maxStreamsPerSession`
   * of `options.session` (unless `options.waitWhenFull`); 503 once the streams are closed.
   */
  open(headers: Readonly<Record<string, string>>, options: OpenStreamOptions = {}): Response {
    if (this.#closed) throw new Rejection(503, "Shutting down", { headers: { "retry-after": "5" } });
    const { session } = options;
    const full = session !== undefined && (this.#perSession.get(session) ?? 0) >= this.#maxStreamsPerSession
      ? `Too many dashboard streams: ${this.#maxStreamsPerSession} are open for this login`
      : this.#streams.size >= this.#maxStreams
      ? `Too many dashboard streams: ${this.#maxStreams} are open`
      : null;
    if (full !== null && options.waitWhenFull) {
      const event = utf8.encode(`retry: ${FULL_RETRY_MS}\nevent: full\ndata: ${JSON.stringify(full)}\n\n`);
      return eventStream(new Blob([event]).stream(), headers);
    }
    // 429, not 503: the publisher is fine, and its error rate should not say otherwise.
    if (full !== null) throw new Rejection(429, full, { headers: { "retry-after": String(FULL_RETRY_MS / 1000) } });
    const first = this.#resumed(options.lastEventId ?? null) ?? this.#historyEvent();
    let stream!: Stream;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        stream = { controller, alive: options.alive ?? (() => true), session, opened: performance.now() };
        this.#streams.add(stream);
        if (session !== undefined) this.#perSession.set(session, (this.#perSession.get(session) ?? 0) + 1);
        controller.enqueue(first);
      },
      cancel: () => this.#drop(stream),
    }, new CountQueuingStrategy({ highWaterMark: STREAM_QUEUE }));
    this.#start();
    return eventStream(body, headers);
  }

  /** The whole history, as a page that opens gets it. */
  #historyEvent(): Uint8Array {
    const last = this.#history.at(-1);
    const id = last === undefined ? "" : `id: ${this.#idOf(last.seq)}\n`;
    const samples = JSON.stringify(this.#history.map(({ sample }) => sample));
    // A reconnecting EventSource waits 2 s, not its default 3 s or more.
    return utf8.encode(`retry: 2000\n${id}event: history\ndata: ${samples}\n\n`);
  }

  /**
   * The samples after `lastEventId`, each as the snapshot it was; null
   * when that is not the id of a sample of ours whose followers are all
   * still kept (the page then gets the whole history).
   */
  #resumed(lastEventId: string | null): Uint8Array | null {
    const match = lastEventId === null ? null : /^([0-9a-f]{8})-(\d{1,15})$/.exec(lastEventId);
    if (match === null || match[1] !== this.#epoch) return null;
    const seq = Number(match[2]);
    const oldest = this.#history[0]?.seq ?? this.#seq + 1;
    if (seq > this.#seq || seq < oldest - 1) return null;
    let text = "retry: 2000\n\n";
    for (const kept of this.#history) if (kept.seq > seq) text += this.#snapshotText(kept);
    return utf8.encode(text);
  }

  #idOf(seq: number): string {
    return `${this.#epoch}-${seq}`;
  }

  #snapshotText({ seq, sample }: Kept): string {
    return `id: ${this.#idOf(seq)}\nevent: snapshot\ndata: ${JSON.stringify(sample)}\n\n`;
  }

  /** Closes every stream and stops sampling; later opens get 503. Harmless twice. */
  close(): void {
    this.#closed = true;
    for (const stream of [...this.#streams]) this.#end(stream);
    this.#stop();
  }

  #start(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => void this.#tick(), this.#interval);
    void this.#tick();
  }

  #stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    // Rates across a gap would be averages over it: the next sample starts afresh.
    this.#last = undefined;
  }

  async #tick(): Promise<void> {
    // A slow info (a worker that does not answer) skips ticks rather than piling them up.
    if (this.#sampling) return;
    this.#sampling = true;
    let sample: Sample;
    try {
      sample = await this.#sample();
    } finally {
      this.#sampling = false;
    }
    if (this.#timer === undefined) return;
    const kept = { seq: ++this.#seq, sample };
    this.#history.push(kept);
    if (this.#history.length > this.#historyLength) this.#history.shift();
    const bytes = utf8.encode(this.#snapshotText(kept));
    const now = performance.now();
    for (const stream of [...this.#streams]) {
      const { controller } = stream;
      if (!stream.alive()) {
        this.#end(stream);
      } else if (now - stream.opened >= this.#maxStreamAge) {
        // Its page, if it reads, is back in a moment with this sample's predecessor's id, and gets this one then.
        this.#end(stream);
      } else if (controller.desiredSize === null || controller.desiredSize <= 0) {
        // A page that stopped reading: cut off, as a close would wait behind what it has not read.
        this.#end(stream, new Error("Dashboard stream too slow: the page stopped reading"));
      } else {
        controller.enqueue(bytes);
      }
    }
  }

  async #sample(): Promise<Sample> {
    const { hubConnected, info, metrics, clock } = this.#sources;
    let result: Json | null = null;
    let infoError: string | undefined;
    try {
      result = await info();
    } catch (error) {
      infoError = error instanceof Error ? error.message : String(error);
    }
    const t = clock();
    const totals = totalsOf(metrics());
    const last = this.#last;
    const fresh = last !== undefined && t - last.t <= this.#interval * 3;
    const seconds = fresh ? (t - last.t) / 1000 : 0;
    const workers = workerCountersOf(result);
    const rates = {
      ...ratesOf(fresh ? last.totals : undefined, totals, seconds),
      ...clusterRatesOf(fresh ? last.workers : undefined, workers, seconds),
    };
    this.#last = { totals, workers, t };
    let cluster: ClusterTotals | null = null;
    if (workers.size > 0) {
      cluster = { deliveries: 0, slowCloses: 0 };
      for (const counters of workers.values()) {
        cluster.deliveries += counters.deliveries;
        cluster.slowCloses += counters.slowCloses;
      }
    }
    const sample: Sample = { t, hub: hubConnected(), info: result, totals, cluster, rates };
    if (infoError !== undefined) sample.infoError = infoError;
    return sample;
  }

  #end(stream: Stream, error?: Error): void {
    try {
      if (error === undefined) stream.controller.close();
      else stream.controller.error(error);
    } catch { /* already closed or cancelled */ }
    this.#drop(stream);
  }

  #drop(stream: Stream): void {
    if (!this.#streams.delete(stream)) return;
    const { session } = stream;
    if (session !== undefined) {
      const left = this.#perSession.get(session)! - 1;
      if (left === 0) this.#perSession.delete(session);
      else this.#perSession.set(session, left);
    }
    if (this.#streams.size === 0) this.#stop();
  }
}
