/**
 * A NATS cluster as the {@linkcode Bus} (centrifuge's `broker_nats.go` in
 * spirit), through the npm NATS client. Opened by address with
 * `openBus("nats://h1:4222,h2:4222")`, or `tls://...` for TLS
 * (`shared/open_bus.ts`).
 *
 * What it gives, and how, where NATS differs from the hub:
 *
 * - **Subjects.** A bus subject becomes a NATS subject as it is when it is
 *   one; any other character (and a dot that would leave an empty token) is
 *   written `%XX` ({@linkcode natsSubject}), so any channel or user id is
 *   carried.
 * - **publish** resolves once the server has taken the message (a flush: its
 *   PONG is behind the message), with `reached: null`: core NATS does not
 *   count subscribers. While the link is down it waits for it, up to its
 *   timeout, and then rejects `unavailable` without having sent anything.
 *   Over the server's `max_payload` it rejects `too_large`.
 * - **request** is NATS request/reply: nobody subscribed fails at once with
 *   `no_responders`. Replies are gathered until every live subscriber
 *   answered: for the subjects every pusher worker subscribes to (the
 *   **census** subjects, `presence`), each bus subscribed to one announces
 *   itself on `_bus.census` every `heartbeatInterval` (at once when it
 *   subscribes, and a goodbye when it closes), so the requester knows who is
 *   alive and stops when each of them has replied (`expected` is their
 *   number). A subscriber that died unannounced is forgotten after three
 *   missed heartbeats; until then a request waits its whole timeout. For other
 *   subjects (a user's workers, one worker) the bus cannot know how many will
 *   answer: it stops after `maxReplies`, or `requestStall` ms after the last
 *   reply, and answers `expected: null`.
 * - **History** lives in one JetStream stream (`CHANNEL_HISTORY`) capturing
 *   the history subjects, with `max_msgs_per_subject` = history size, `max_age`
 *   = its ttl, `max_bytes` = its total bytes (the oldest messages go first,
 *   whichever subject's) and min(3, cluster size) replicas (the servers the
 *   cluster advertises, or those given, whichever are more). Each message carries
 *   `Bus-Offset` and `Bus-Epoch` headers and `Bus-Prev` (the stream sequence
 *   of the subject's previous message); it is published with
 *   `Nats-Expected-Last-Subject-Sequence`, so concurrent publishers never give
 *   two messages one offset (the loser reads the last one again and retries).
 *   Subscribers do not get history subjects from the publisher but
 *   from the stream (`republish` to `_live.<subject>`), so only stored
 *   messages are delivered, once each, in the stream's order. A subscriber
 *   knows the subject's top from when it subscribed (one read), then from
 *   each message; when it sees an offset jump, or its link came back, it
 *   reads what it missed from the stream and delivers it first (up to the
 *   history size). A message the stream stored but never republished (its
 *   leader died in between) comes with the next message or reconnect.
 * - **A position outlives its messages**, as the hub's and Redis's do: a
 *   history publish first records the position it takes in a second stream
 *   (`CHANNEL_HISTORY_TOPS`, one headers-only record per subject at
 *   `_top.<subject>`, `max_age` = max(24 h, ttl), at most 100,000 subjects
 *   and 64 MiB, the least recently published dropped first), then stores
 *   the message. A compare-and-set on the record's sequence keeps the later
 *   position of an epoch whichever publisher's record arrives last. So the
 *   record is never behind a stored message: a publish that recorded and
 *   then failed (a timeout, a crash) leaves a gap, and a reader before it
 *   is told `recovered: false`; none repeats an offset a client may have
 *   seen. That is one more JetStream round trip per history publish:
 *   nats-server 2.9 cannot copy the messages itself (a source, a mirror or a
 *   stream capturing the republished ones checks the copy's
 *   `Nats-Expected-Last-Subject-Sequence` against its own sequences and
 *   drops it once they differ). Once every message of a subject expired, a
 *   read answers the recorded position (a reader at it has missed nothing)
 *   and the next publish goes on in its epoch, one past it; the subject's
 *   last sequence is then 0, so of two publishers doing so at once, one's
 *   expectation fails and it reads the other's message.
 *   A subject without a position kept (never published, its record dropped
 *   or past its age) is at offset 0 of its slot's epoch (one of 4096 slots
 *   by a hash of its name, each epoch recorded in the tops stream by the
 *   first process that needs it), which its first publish continues: as the
 *   hub's, a read stores nothing per subject, so reads of made-up names
 *   never push real history or positions out of their bounds. A removal writes a marker, purges what is below it and
 *   records the marker's position. A message published around this bus (a
 *   process without --history) starts a new epoch while it is kept.
 * - **Idempotency keys**: on history subjects, `Nats-Msg-Id` (the subject and
 *   the key), so the stream drops a retry within its duplicate window
 *   (min(ttl, 5 minutes)) whichever publisher sends it, and the retry answers
 *   the first one's position. On other subjects NATS has nothing to dedupe
 *   with: this bus remembers keys itself, so a retry through the same process
 *   is not delivered again, but one through another publisher process is.
 *
 * @module
 */

import {
  type ConnectionOptions,
  createInbox,
  headers as natsHeaders,
  InvalidArgumentError,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  NatsConnectionImpl,
  RequestError,
  setTransportFactory,
  type Subscription,
  TimeoutError,
} from "@nats-io/transport-node";
import { NodeTransport } from "@nats-io/transport-node/lib/node_transport.js";
import {
  DiscardPolicy,
  jetstream,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  jetstreamManager,
  type StoredMsg,
  type StreamConfig,
} from "@nats-io/jetstream";
import {
  type BatchOutcome,
  type Bus,
  type BusBatchItem,
  type BusBatchOptions,
  BusError,
  type BusHandler,
  type BusMessage,
  type BusPublishOptions,
  DEFAULT_REQUEST_TIMEOUT,
  type HistoryOptions,
  type HistoryResult,
  type Json,
  type Position,
  type PublishResult,
  type RequestOptions,
  type RequestResult,
} from "./bus.ts";
import { createLogger, type Logger } from "./log.ts";
import { OncePerCause } from "./log_throttle.ts";
import { isTlsAlert, onTlsAlert, reportTlsAlert, TLS_ALERT_HINT } from "./_tls_alerts.ts";
import { DEFAULT_HISTORY_TOTAL_BYTES, epochSlot, newEpoch } from "./history_log.ts";
import { IdempotencyCache, idempotencyKey, MAX_IDEMPOTENCY_KEY_LENGTH } from "./idempotency.ts";
import { PRESENCE_SUBJECT } from "./address.ts";
import { natsHistoryFilter, natsSubject } from "./nats_subject.ts";

export { natsHistoryFilter, natsSubject } from "./nats_subject.ts";

/** A NATS server's address. */
export interface NatsServer {
  /** Host name or IP address; an IPv6 address without brackets. */
  hostname: string;
  /** TCP port. */
  port: number;
}

/** TLS to the NATS servers: PEM contents, not paths. */
export interface NatsTls {
  /** CA certificates to verify the servers with. @default {the system's} */
  caCerts?: string[];
  /** A client certificate to present. @default {none} */
  cert?: string;
  /** The client certificate's key. @default {none} */
  key?: string;
}

/** Which subjects keep history on JetStream, and its bounds. */
export interface NatsHistory {
  /** Subject names, or prefixes ending in `.*` (`channel.*`); a prefix must end at a dot. */
  subjects: string[];
  /** Messages kept per subject (`max_msgs_per_subject`). */
  size: number;
  /** How long a message is kept, in milliseconds (`max_age`). */
  ttlMs: number;
  /**
   * Bytes the stream keeps over all subjects (`max_bytes`); past it the
   * oldest messages go, whichever subject's. @default {64 MiB, the hub's `--history-total-bytes`}
   */
  totalBytes?: number;
}

/** Options for {@linkcode NatsBus}. */
export interface NatsBusOptions {
  /** The servers to connect to; the client learns the rest of the cluster from them. */
  servers: NatsServer[];
  /** TLS (`tls://`): true for the system's CAs, or the PEMs to use. @default {false} */
  tls?: boolean | NatsTls;
  /** The server's token (`authorization { token }`). @default {none} */
  token?: string;
  /** How long a publish, history read or removal waits, reconnects included, in milliseconds. @default {5000} */
  publishTimeout?: number;
  /** Subjects that keep history, on JetStream. @default {none} */
  history?: NatsHistory;
  /** The history stream's name. @default {"CHANNEL_HISTORY"} */
  stream?: string;
  /**
   * Subjects whose subscribers announce themselves, so that requests to them
   * end when all answered. @default {["presence"]}
   */
  census?: string[];
  /** Milliseconds between census heartbeats; a subscriber is forgotten after three missed. @default {1000} */
  heartbeatInterval?: number;
  /** A request to a subject outside the census ends this long after its last reply, in milliseconds. @default {50} */
  requestStall?: number;
  /** Milliseconds between reconnect attempts to a server (the client adds jitter). @default {250} */
  reconnectDelay?: number;
  /** Publishes that may wait for the link at once; more reject `unavailable`. @default {10000} */
  maxWaiting?: number;
  /** Largest message before the server told its own `max_payload`, in bytes. @default {1048576} */
  maxPayload?: number;
  /** Where log lines go. @default {createLogger("nats-bus")} */
  logger?: Logger;
}

/** The history stream's default name. */
export const DEFAULT_HISTORY_STREAM = "CHANNEL_HISTORY";
/** Where the stream republishes a history subject's stored messages: `_live.<subject>`. */
export const LIVE_PREFIX = "_live.";
const CENSUS_SUBJECT = "_bus.census";
const CENSUS_QUERY_SUBJECT = "_bus.census.query";
const H_OFFSET = "Bus-Offset";
const H_EPOCH = "Bus-Epoch";
const H_PREV = "Bus-Prev";
const H_MARKER = "Bus-Marker";
const H_ID = "Bus-Id";
/** Live history messages a subscriber holds while it reads what it missed; past it, it stops holding. */
const MAX_HELD = 10_000;
/** Subjects whose last position a publisher remembers, to skip a read before each publish. */
const MAX_CACHED_TOPS = 10_000;
/**
 * Keyed publishes whose position a publisher remembers, for a retry whose
 * first publish is no longer in the stream (its history was removed).
 */
const MAX_KEYED_POSITIONS = 10_000;
/** The tops stream's name: the history stream's, and this. */
export const TOPS_SUFFIX = "_TOPS";
/** Where the tops stream keeps a history subject's last position: `_top.<subject>`. */
export const TOP_PREFIX = "_top.";
/** Where the tops stream keeps the epochs of subjects with nothing kept: `_slot.<stream>.<slot>`. */
const SLOT_PREFIX = "_slot.";
/** Subjects whose last position the tops stream keeps; past it, the least recently published go first. */
const MAX_TOPS = 100_000;
/** Bytes the tops stream keeps (a record is headers only, about 200 bytes); past it, the same. */
const MAX_TOPS_BYTES = 64 * 1024 * 1024;
/** The tops stream keeps a position at least this long after its message, in milliseconds: Redis's meta key's day. */
const TOPS_MIN_AGE = 86_400_000;
/** How long one JetStream call waits before it is tried again (within the caller's timeout), in milliseconds. */
const ATTEMPT_TIMEOUT = 1000;
/** Most subscribers the census tracks. */
const MAX_PEERS = 10_000;

/**
 * The npm client's Node transport drops a socket's listeners when it gives up
 * on it (a refused token, a failed handshake), and Deno's `node:net` may
 * still report the peer's reset on it: with no listener, an uncaught
 * `ECONNRESET` that would end the process. The client has already failed the
 * attempt (and this bus retries or reports it), so that late reset is dropped
 * here: only a read reset, only once this module is loaded.
 */
function ignoreLateResets(): void {
  globalThis.addEventListener("error", (event) => {
    const error = event.error as { code?: unknown; syscall?: unknown } | undefined;
    if (error?.code === "ECONNRESET" && error.syscall === "read") event.preventDefault();
  });
}
let lateResetsIgnored = false;

/**
 * The npm client's `connect`, except that a server given by host name is
 * dialled by that name. The client's own resolver looks the name up first
 * (`dns.lookup`, which Deno grants only for the bare host) and dials the
 * addresses it gets (which need grants of their own), checking TLS
 * certificates for the name: a task granted `--allow-net=nats1:4222` could not
 * connect. Dialled by name, the grant is exactly the `--bus` host and port,
 * the system resolves the name at each dial, and TLS still checks the name.
 */
function connect(options: ConnectionOptions): Promise<NatsConnection> {
  setTransportFactory({ factory: () => new AlertingTransport(), dnsResolveFn: (host) => Promise.resolve([host]) });
  return NatsConnectionImpl.connect(options);
}

/**
 * The npm client's Node transport, passing on the TLS alert a server sends
 * once the handshake is done (over TLS 1.3, its refusal of the client's
 * certificate). The transport keeps it as the connection's error, for a close
 * that Deno's `node:tls` does not report after an alert (not even once the
 * socket is destroyed): the attempt ends at the connect timeout, and the
 * client says only `timeout`. (An alert that comes before the transport
 * listens is caught by `_tls_alerts.ts` itself.)
 */
class AlertingTransport extends NodeTransport {
  override setupHandlers(): void {
    super.setupHandlers();
    this.socket.on("error", (error) => {
      if (isTlsAlert(error)) reportTlsAlert(error);
    });
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** A subject's last stored message, as a publisher needs it. */
interface Top {
  /** Its stream sequence; 0 when the subject has none. */
  seq: number;
  offset: number;
  epoch: string;
}

/** A subject's record in the tops stream, as a publisher last knew it. */
interface Kept {
  /** The record's sequence in the tops stream; 0 when the subject has none. */
  seq: number;
  /** The position it keeps: the highest one a publisher took (or a removal began), or null when none. */
  position: Position | null;
}

/** One subscription. */
interface Subscribed {
  handler: BusHandler;
  sub: Subscription | null;
  /** For a history subject: the last position delivered, what it holds while it reads what it missed. */
  history: { last: Position | null; filling: boolean; held: Msg[] } | null;
  /** Settles once the subscription was sent to the server. */
  ready?: Promise<void>;
  /** Aborted by {@linkcode NatsBus.unsubscribe}: a subscribe still waiting for the link stops waiting. */
  gone: AbortController;
}

/** A bus subscribed to census subjects, as its heartbeats told. */
interface Peer {
  subjects: Set<string>;
  seen: number;
}

/** Someone waiting for the link. */
interface Waiter {
  resolve: () => void;
  reject: (error: BusError) => void;
}

/**
 * The bus over a NATS cluster (see the module's documentation for what each
 * operation means here).
 *
 * @example
 * ```ts
 * import { NatsBus } from "./nats_bus.ts";
 *
 * await using bus = new NatsBus({ servers: [{ hostname: "127.0.0.1", port: 4222 }] });
 * await bus.subscribe("news", (data) => console.log(data));
 * await bus.publish("news", { title: "hello" }); // { reached: null }
 * ```
 */
export class NatsBus implements Bus {
  /** `nats://h1:4222,h2:4222` or `tls://...`. */
  readonly address: string;
  /** A publish cannot count who it reached: `reached` is always null. */
  readonly countsReached = false;
  readonly #options: NatsBusOptions;
  readonly #logger: Logger;
  readonly #publishTimeout: number;
  readonly #id = crypto.randomUUID();
  readonly #subs = new Map<string, Subscribed>();
  /** The tops of this link's last publishes, until `freshUntil` (ms since the epoch); the oldest forgotten first. */
  readonly #tops = new Map<string, Top & { freshUntil: number }>();
  /** The subjects' records in the tops stream, as this link last wrote or read them; the oldest forgotten first. */
  readonly #kepts = new Map<string, Kept>();
  /** The positions of this link's last keyed publishes, by message id; the oldest forgotten first. */
  readonly #keyed = new Map<string, Position>();
  readonly #peers = new Map<string, Peer>();
  readonly #census: Set<string>;
  readonly #historyNames = new Set<string>();
  readonly #historyPrefixes: string[] = [];
  readonly #keys = new IdempotencyCache<PublishResult>();
  readonly #waiters = new Set<Waiter>();
  readonly #heartbeatInterval: number;
  #nc: NatsConnection | null = null;
  #js: JetStreamClient | null = null;
  #jsm: JetStreamManager | null = null;
  #streamReady: Promise<void> | null = null;
  /** The streams were made or set once: a later check only makes them again if they are gone (#recheckStreams). */
  #streamsSet = false;
  #connected = false;
  #reconnects = 0;
  #closed = false;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  readonly #connecting: Promise<void>;
  /** TLS alerts, logged as a warning once per cause until the link is up. */
  readonly #tlsAlerts: OncePerCause;
  readonly #stopHearingAlerts: () => void;

  /** Connects to `options.servers` in the background and keeps the link up. */
  constructor(options: NatsBusOptions) {
    if (options.servers.length === 0) throw new TypeError("Cannot open a NATS bus: no servers");
    if (!lateResetsIgnored) ignoreLateResets();
    lateResetsIgnored = true;
    this.#options = options;
    this.#logger = options.logger ?? createLogger("nats-bus");
    this.#tlsAlerts = new OncePerCause(this.#logger);
    this.#publishTimeout = options.publishTimeout ?? 5000;
    this.#heartbeatInterval = options.heartbeatInterval ?? 1000;
    this.#census = new Set(options.census ?? [PRESENCE_SUBJECT]);
    for (const pattern of options.history?.subjects ?? []) {
      natsHistoryFilter(pattern);
      if (pattern.endsWith("*")) this.#historyPrefixes.push(pattern.slice(0, -1));
      else this.#historyNames.add(pattern);
    }
    const scheme = options.tls ? "tls" : "nats";
    this.address = `${scheme}://${options.servers.map(hostPort).join(",")}`;
    // Before the first dial: an alert that comes before the client listens would end the process (_tls_alerts.ts).
    this.#stopHearingAlerts = onTlsAlert((error) => this.#onTlsAlert(error));
    this.#connecting = this.#connect();
  }

  /** Whether the link is up now. */
  get connected(): boolean {
    return this.#connected;
  }

  /** How many times the link came back after it was lost. */
  get reconnects(): number {
    return this.#reconnects;
  }

  async #connect(): Promise<void> {
    const tls = this.#options.tls;
    const delay = this.#options.reconnectDelay ?? 250;
    let nc: NatsConnection | null = null;
    let logged = false;
    // The client's own first-connect retries cannot be stopped by close(): this loop can.
    while (!nc) {
      if (this.#closed) return;
      try {
        nc = await connect({
          servers: this.#options.servers.map(hostPort),
          ...(this.#options.token === undefined ? {} : { token: this.#options.token }),
          ...(tls
            ? {
              tls: tls === true ? {} : {
                ...(tls.caCerts?.length ? { ca: tls.caCerts.join("\n") } : {}),
                ...(tls.cert === undefined ? {} : { cert: tls.cert }),
                ...(tls.key === undefined ? {} : { key: tls.key }),
              },
            }
            : {}),
          name: `channel-bus ${this.#id}`,
          maxReconnectAttempts: -1,
          reconnectTimeWait: delay,
          reconnectJitter: delay,
          pingInterval: 2000,
          maxPingOut: 2,
          timeout: 2000,
        });
      } catch (error) {
        const alert = tlsAlertOf(error);
        if (alert) {
          this.#onTlsAlert(alert);
        } else if (!logged) {
          this.#logger.warn("cannot connect to NATS yet", { address: this.address, error: errorText(error) });
          logged = true;
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            this.#waiters.delete(waiter);
            resolve();
          }, delay);
          const waiter: Waiter = {
            resolve,
            reject: () => {
              clearTimeout(timer);
              resolve();
            },
          };
          this.#waiters.add(waiter);
        });
      }
    }
    if (this.#closed) {
      await nc.close();
      return;
    }
    this.#nc = nc;
    this.#js = jetstream(nc, { timeout: ATTEMPT_TIMEOUT });
    this.#connected = true;
    this.#tlsAlerts.reset();
    this.#logger.info("connected to NATS", { server: nc.getServer() });
    void this.#watch(nc);
    nc.subscribe(CENSUS_SUBJECT, { callback: (_error, msg) => this.#onCensus(msg) });
    nc.subscribe(CENSUS_QUERY_SUBJECT, { callback: () => this.#announce() });
    for (const [subject, subscribed] of this.#subs) this.#open(subject, subscribed);
    nc.publish(CENSUS_QUERY_SUBJECT);
    this.#heartbeat = setInterval(() => this.#announce(), this.#heartbeatInterval);
    this.#wake();
  }

  async #watch(nc: NatsConnection): Promise<void> {
    // A server that refuses the client's certificate after the handshake (TLS 1.3) makes each attempt a disconnect
    // (and, measured, queues a reconnect for each, told at once when one works): one outage is one of each.
    for await (const status of nc.status()) {
      if (status.type === "disconnect") {
        if (!this.#connected) continue;
        this.#connected = false;
        this.#logger.warn("NATS link lost", { server: status.server });
      } else if (status.type === "reconnect") {
        if (this.#connected) continue;
        this.#connected = true;
        this.#tlsAlerts.reset();
        this.#reconnects++;
        this.#logger.info("NATS link back", { server: status.server });
        this.#tops.clear();
        this.#kepts.clear();
        nc.publish(CENSUS_QUERY_SUBJECT);
        this.#announce();
        // What was published while the link was down reached the stream, not us: read it.
        for (const [subject, subscribed] of this.#subs) {
          if (subscribed.history?.last) void this.#fill(subject, subscribed);
        }
        this.#wake();
      }
    }
  }

  /**
   * A NATS server refused the TLS handshake with an alert (a client
   * certificate missing or not trusted): a configuration to fix, said as a
   * warning once per cause until the link is up, as the hub link says its own.
   */
  #onTlsAlert(error: Error): void {
    if (this.#closed) return;
    this.#tlsAlerts.log("warn", "NATS TLS handshake refused", error.message, {
      address: this.address,
      error: error.message,
      hint: TLS_ALERT_HINT,
    });
  }

  #wake(): void {
    for (const waiter of this.#waiters) waiter.resolve();
    this.#waiters.clear();
  }

  #failWaiters(message: string): void {
    for (const waiter of this.#waiters) waiter.reject(new BusError("unavailable", message));
    this.#waiters.clear();
  }

  /**
   * Resolves with the connection once the link is up, or rejects
   * `unavailable` at `deadline`, on close, or once `signal` aborts.
   */
  async #link(deadline: number, what: string, signal?: AbortSignal): Promise<NatsConnection> {
    while (true) {
      if (this.#closed) throw new BusError("unavailable", "NATS bus is closed");
      if (signal?.aborted) throw new BusError("unavailable", `Cannot ${what}: given up`);
      if (this.#connected && this.#nc) return this.#nc;
      const left = deadline - Date.now();
      if (left <= 0) throw new BusError("unavailable", `Cannot ${what}: the NATS link is down`);
      if (this.#waiters.size >= (this.#options.maxWaiting ?? 10_000)) {
        throw new BusError("unavailable", `Cannot ${what}: too many wait for the NATS link`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      let waiter: Waiter | undefined;
      let onAbort: (() => void) | undefined;
      try {
        await new Promise<void>((resolve, reject) => {
          waiter = { resolve, reject };
          this.#waiters.add(waiter);
          timer = setTimeout(resolve, left);
          onAbort = resolve;
          signal?.addEventListener("abort", onAbort, { once: true });
        });
      } finally {
        clearTimeout(timer);
        if (waiter) this.#waiters.delete(waiter);
        if (onAbort) signal?.removeEventListener("abort", onAbort);
      }
    }
  }

  /** Whether `subject` keeps history. */
  #keeps(subject: string): boolean {
    if (this.#historyNames.has(subject)) return true;
    return this.#historyPrefixes.some((prefix) => subject.startsWith(prefix));
  }

  /**
   * Calls `handler` with every message published to `subject`; subscribing
   * again replaces the handler. Resolves once the server has the
   * subscription (a flush behind it), or when the bus closes.
   */
  async subscribe(subject: string, handler: BusHandler): Promise<void> {
    const known = this.#subs.get(subject);
    if (known) {
      known.handler = handler;
    } else {
      const subscribed: Subscribed = {
        handler,
        sub: null,
        history: this.#keeps(subject) ? { last: null, filling: false, held: [] } : null,
        gone: new AbortController(),
      };
      this.#subs.set(subject, subscribed);
      if (this.#nc) this.#open(subject, subscribed);
      if (this.#census.has(subject)) this.#announce();
    }
    await this.#connecting;
    const subscribed = this.#subs.get(subject);
    await subscribed?.ready;
    while (!this.#closed && this.#nc && subscribed && !subscribed.gone.signal.aborted) {
      try {
        await this.#nc.flush();
        return;
      } catch {
        // The link is down: wait for it, unless the subject is unsubscribed first.
        await this.#link(Date.now() + 60_000, "subscribe", subscribed.gone.signal).catch(() => {});
      }
    }
  }

  /**
   * Subscribes at the server. A history subject first reads its top, so
   * that a gap is seen even before the first message (a link that moves
   * while the subject is quiet): anything past that top is owed.
   */
  #open(subject: string, subscribed: Subscribed): void {
    if (!subscribed.history) return this.#natsSubscribe(subject, subscribed);
    subscribed.ready = (async () => {
      const read = await this.history(subject, { limit: 0, timeout: ATTEMPT_TIMEOUT }).catch(() => null);
      if (this.#subs.get(subject) !== subscribed || this.#closed || !this.#nc) return;
      if (read && !subscribed.history!.last) subscribed.history!.last = read.position;
      this.#natsSubscribe(subject, subscribed);
    })();
  }

  #natsSubscribe(subject: string, subscribed: Subscribed): void {
    const natsName = subscribed.history ? LIVE_PREFIX + natsSubject(subject) : natsSubject(subject);
    subscribed.sub = this.#nc!.subscribe(natsName, {
      callback: (_error, msg) => {
        if (this.#subs.get(subject) !== subscribed) return;
        if (subscribed.history) this.#onHistoryMessage(subject, subscribed, msg);
        else this.#deliver(subject, subscribed, msg, undefined);
      },
    });
  }

  #deliver(subject: string, subscribed: Subscribed, msg: Msg, position: Position | undefined): void {
    let data: Json;
    try {
      data = msg.data.length === 0 ? null : JSON.parse(decoder.decode(msg.data));
    } catch {
      this.#logger.warn("dropped a message that is not JSON", { subject });
      return;
    }
    const message: BusMessage = {
      subject,
      ...(msg.reply ? { replyTo: msg.reply } : {}),
      ...(position === undefined ? {} : { position }),
    };
    subscribed.handler(data, message);
  }

  #onHistoryMessage(subject: string, subscribed: Subscribed, msg: Msg): void {
    const state = subscribed.history!;
    if (state.filling) {
      if (state.held.length < MAX_HELD) state.held.push(msg);
      else this.#logger.warn("dropped a live history message while catching up", { subject });
      return;
    }
    const position = positionOf(msg.headers);
    if (position === null) return;
    const last = state.last;
    if (msg.headers?.get(H_MARKER)) {
      if (!last || last.epoch !== position.epoch) state.last = position;
      return;
    }
    if (last && last.epoch === position.epoch) {
      if (position.offset <= last.offset) return;
      if (position.offset > last.offset + 1) {
        state.held.push(msg);
        void this.#fill(subject, subscribed);
        return;
      }
    }
    state.last = position;
    this.#deliver(subject, subscribed, msg, position);
  }

  /** Reads what `subject`'s subscriber missed since its last position and delivers it, then what it held. */
  async #fill(subject: string, subscribed: Subscribed): Promise<void> {
    const state = subscribed.history!;
    if (state.filling || !state.last) return;
    state.filling = true;
    try {
      const since = state.last;
      const read = await this.history(subject, { since, limit: this.#options.history?.size }).catch((error) => {
        this.#logger.warn("cannot read what a subscriber missed", { subject, error: String(error) });
        return null;
      });
      if (this.#subs.get(subject) !== subscribed) return;
      for (const { data, position } of read?.messages ?? []) {
        if (position.epoch !== since.epoch || position.offset <= (state.last?.offset ?? 0)) continue;
        state.last = position;
        subscribed.handler(data, { subject, position });
      }
    } finally {
      state.filling = false;
    }
    const held = state.held.splice(0);
    for (const msg of held) {
      const position = positionOf(msg.headers);
      // A jump left after the read (the stream trimmed it) is delivered as it is: the reader sees the gap.
      if (position && state.last && position.epoch === state.last.epoch && position.offset <= state.last.offset) {
        continue;
      }
      if (position && !msg.headers?.get(H_MARKER)) {
        state.last = position;
        this.#deliver(subject, subscribed, msg, position);
      }
    }
  }

  /** Stops the handler of `subject`; unknown subjects are ignored. */
  unsubscribe(subject: string): void {
    const subscribed = this.#subs.get(subject);
    if (!subscribed) return;
    this.#subs.delete(subject);
    subscribed.gone.abort();
    subscribed.sub?.unsubscribe();
    if (this.#census.has(subject)) this.#announce();
  }

  #announce(): void {
    if (!this.#nc || !this.#connected) return;
    const subjects = [...this.#census].filter((subject) => this.#subs.has(subject));
    if (subjects.length === 0) return;
    this.#nc.publish(CENSUS_SUBJECT, JSON.stringify({ id: this.#id, subjects }));
  }

  #onCensus(msg: Msg): void {
    let beat: { id?: unknown; subjects?: unknown };
    try {
      beat = JSON.parse(decoder.decode(msg.data));
    } catch {
      return;
    }
    if (typeof beat.id !== "string" || !Array.isArray(beat.subjects)) return;
    if (beat.subjects.length === 0) {
      this.#peers.delete(beat.id);
      return;
    }
    this.#peers.delete(beat.id);
    if (this.#peers.size >= MAX_PEERS) this.#peers.delete(this.#peers.keys().next().value!);
    this.#peers.set(beat.id, { subjects: new Set(beat.subjects.map(String)), seen: Date.now() });
  }

  /** Ids of the live buses subscribed to `subject`, as their heartbeats told. */
  #livePeers(subject: string): Set<string> {
    const now = Date.now();
    const live = new Set<string>();
    for (const [id, peer] of this.#peers) {
      if (now - peer.seen > 3 * this.#heartbeatInterval) this.#peers.delete(id);
      else if (peer.subjects.has(subject)) live.add(id);
    }
    return live;
  }

  #encode(data: Json, nc: NatsConnection): Uint8Array {
    const bytes = encoder.encode(JSON.stringify(data));
    const max = nc.info?.max_payload ?? this.#options.maxPayload ?? 1024 * 1024;
    if (bytes.length > max) {
      throw new BusError(
        "too_large",
        `Cannot publish: message of ${bytes.length} bytes is over NATS's ${max}-byte limit`,
      );
    }
    return bytes;
  }

  /**
   * Publishes `data` to `subject`; resolves once the server took it (a
   * history subject: once the stream stored it), with `reached: null`.
   *
   * @throws {BusError} `unavailable` when the link stayed down past the
   * timeout or the bus is closed; `too_large` over the server's
   * `max_payload`; `refused` for an idempotency key over 128 characters.
   */
  async publish(subject: string, data: Json, options: BusPublishOptions = {}): Promise<PublishResult> {
    const key = options.idempotencyKey;
    if (key !== undefined && key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
      throw new BusError("refused", `Cannot publish: idempotency key is over ${MAX_IDEMPOTENCY_KEY_LENGTH} characters`);
    }
    if (options.signal?.aborted) throw options.signal.reason;
    const deadline = Date.now() + (options.timeout ?? this.#publishTimeout);
    if (this.#keeps(subject)) return await this.#publishHistory(subject, data, deadline, key);
    const cacheKey = key === undefined ? undefined : idempotencyKey([subject], key);
    const seen = cacheKey === undefined ? undefined : this.#keys.get(cacheKey);
    if (seen) return seen;
    const nc = await this.#link(deadline, `publish to ${subject}`);
    const bytes = this.#encode(data, nc);
    const replyTo = options.replyTo;
    const hdrs = subject.startsWith("_INBOX.") ? idHeaders(this.#id) : undefined;
    nc.publish(natsSubject(subject), bytes, {
      ...(replyTo === undefined ? {} : { reply: replyTo }),
      ...(hdrs ? { headers: hdrs } : {}),
    });
    await this.#flush(nc, deadline, `publish to ${subject}`);
    const result: PublishResult = { reached: null };
    if (cacheKey !== undefined) this.#keys.set(cacheKey, result);
    return result;
  }

  /**
   * Publishes every item as {@linkcode NatsBus.publish} would, those to
   * subjects without history together: written at once, then one flush for
   * all of them. History subjects go through the stream one by one.
   *
   * @throws the abort's reason when `options.signal` aborts.
   */
  async publishBatch(items: readonly BusBatchItem[], options: BusBatchOptions = {}): Promise<BatchOutcome[]> {
    if (options.signal?.aborted) throw options.signal.reason;
    const outcomes = new Array<BatchOutcome | Promise<BatchOutcome>>(items.length);
    const plain: number[] = [];
    /** The first item of each subject and key: a retry within the batch is answered as it is. */
    const firsts = new Map<string, Promise<BatchOutcome>>();
    items.forEach((item, i) => {
      const key = item.idempotencyKey === undefined ? undefined : idempotencyKey([item.subject], item.idempotencyKey);
      const first = key === undefined ? undefined : firsts.get(key);
      if (first) outcomes[i] = first;
      else if (this.#keeps(item.subject) || key !== undefined) {
        // Through publish: the stream for history, and its checks and cache for keys.
        outcomes[i] = this.publish(item.subject, item.data, {
          ...options,
          ...(item.idempotencyKey === undefined ? {} : { idempotencyKey: item.idempotencyKey }),
        }).catch((error) => {
          if (error instanceof BusError) return error;
          throw error;
        });
        if (key !== undefined) firsts.set(key, outcomes[i] as Promise<BatchOutcome>);
      } else plain.push(i);
    });
    if (plain.length > 0) {
      const deadline = Date.now() + (options.timeout ?? this.#publishTimeout);
      // A batch of one (a publish coalesced alone) is worded as that publish.
      const what = plain.length === 1 ? `publish to ${items[plain[0]!]!.subject}` : `publish ${plain.length} messages`;
      try {
        const nc = await this.#link(deadline, what);
        const written: number[] = [];
        for (const i of plain) {
          const item = items[i]!;
          try {
            nc.publish(natsSubject(item.subject), this.#encode(item.data, nc));
            written.push(i);
          } catch (error) {
            if (!(error instanceof BusError)) throw error;
            outcomes[i] = error;
          }
        }
        await this.#flush(nc, deadline, what);
        for (const i of written) outcomes[i] = { reached: null };
      } catch (error) {
        if (!(error instanceof BusError)) throw error;
        for (const i of plain) outcomes[i] ??= error;
      }
    }
    return await Promise.all(outcomes);
  }

  async #flush(nc: NatsConnection, deadline: number, what: string): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        nc.flush(),
        new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(new BusError("unavailable", `Cannot ${what}: NATS did not confirm it in time`)),
            Math.max(0, deadline - Date.now()),
          );
        }),
      ]);
    } catch (error) {
      if (error instanceof BusError) throw error;
      throw new BusError("unavailable", `Cannot ${what}: the NATS link failed: ${errorText(error)}`, { cause: error });
    } finally {
      clearTimeout(timer);
    }
  }

  /** The JetStream handles, once the history stream exists (made or updated by the first bus that needs it). */
  async #jetstream(deadline: number, what: string): Promise<{ js: JetStreamClient; jsm: JetStreamManager }> {
    const nc = await this.#link(deadline, what);
    // Short attempts, retried until the deadline: a request to a node that just died gets no answer.
    if (!this.#jsm) this.#jsm = await jetstreamManager(nc, { timeout: ATTEMPT_TIMEOUT });
    this.#streamReady ??= this.#ensureStream(this.#jsm, this.#streamsSet).then(() => {
      this.#streamsSet = true;
    }, (error) => {
      this.#streamReady = null;
      throw error;
    });
    await this.#streamReady;
    return { js: this.#js!, jsm: this.#jsm };
  }

  /** Makes the streams, or sets them to this bus's bounds; with `missingOnly`, makes those that are gone, and no more. */
  async #ensureStream(jsm: JetStreamManager, missingOnly: boolean): Promise<void> {
    const { subjects, size, ttlMs: ttl, totalBytes } = this.#options.history!;
    // The servers the cluster advertises, or those we were given: a cluster run with `--no_advertise` advertises none.
    const replicas = Math.min(3, Math.max(1, this.#nc?.info?.connect_urls?.length ?? 0, this.#options.servers.length));
    // Both at once: on a cluster each is a round of its meta leader's, paid by a process's first history call.
    const history = this.#ensure(jsm, missingOnly, {
      name: this.#streamName,
      subjects: subjects.map(natsHistoryFilter),
      max_msgs_per_subject: size,
      max_age: ttl * 1_000_000,
      max_bytes: totalBytes ?? DEFAULT_HISTORY_TOTAL_BYTES,
      discard: DiscardPolicy.Old,
      duplicate_window: Math.min(ttl, 300_000) * 1_000_000,
      num_replicas: replicas,
      allow_direct: true,
      republish: { src: ">", dest: `${LIVE_PREFIX}>` },
    });
    // Written by the publishers, not copied by the server: nats-server 2.9 checks a copy's (a source's, a mirror's,
    // a stream capturing the republished messages) Nats-Expected-Last-Subject-Sequence against the copy's own
    // sequences, and drops it (a source or mirror then stalls) once they differ, as they do after an expiry.
    const tops = this.#ensure(jsm, missingOnly, {
      name: this.#topsStreamName,
      subjects: [
        ...subjects.map((pattern) => TOP_PREFIX + natsHistoryFilter(pattern)),
        `${SLOT_PREFIX}${this.#streamName}.*`,
      ],
      max_msgs_per_subject: 1,
      max_age: Math.max(TOPS_MIN_AGE, ttl) * 1_000_000,
      max_msgs: MAX_TOPS,
      max_bytes: MAX_TOPS_BYTES,
      discard: DiscardPolicy.Old,
      num_replicas: replicas,
      allow_direct: true,
    });
    await Promise.all([history, tops]);
  }

  /**
   * Makes the stream `config` names, or updates it to `config` when it
   * exists with another one, unless `missingOnly`: a check after a failure
   * must not undo the bounds a bus opened later set.
   */
  async #ensure(
    jsm: JetStreamManager,
    missingOnly: boolean,
    config: Partial<StreamConfig> & { name: string },
  ): Promise<void> {
    try {
      await jsm.streams.add(config).catch((error) => {
        // A cluster smaller than it looked (the client saw fewer servers than replicas need): one replica.
        if (config.num_replicas === 1 || !/replicas|resources/i.test(errorText(error))) throw error;
        return jsm.streams.add({ ...config, num_replicas: 1 });
      });
    } catch (error) {
      if (!(error instanceof JetStreamApiError)) throw error;
      if (missingOnly) return;
      // It exists with another configuration: the last bus opened with new bounds sets them.
      const { config: current } = await jsm.streams.info(config.name);
      await jsm.streams.update(config.name, { ...current, ...config, num_replicas: current.num_replicas });
    }
  }

  get #streamName(): string {
    return this.#options.stream ?? DEFAULT_HISTORY_STREAM;
  }

  get #topsStreamName(): string {
    return this.#streamName + TOPS_SUFFIX;
  }

  /** The last stored message of `subject`, or null. */
  async #last(jsm: JetStreamManager, subject: string): Promise<StoredMsg | null> {
    return await jsm.direct.getMessage(this.#streamName, { last_by_subj: natsSubject(subject) });
  }

  /**
   * The position the tops stream keeps for `subject` (for when the history
   * stream has no message of it left: all expired), or null when it keeps
   * none. Remembers the record for {@linkcode #keep}.
   */
  async #kept(jsm: JetStreamManager, subject: string): Promise<Position | null> {
    const record = await jsm.direct.getMessage(this.#topsStreamName, {
      last_by_subj: TOP_PREFIX + natsSubject(subject),
    });
    const position = record ? positionOf(record.header) : null;
    this.#rememberKept(subject, { seq: record?.seq ?? 0, position });
    return position;
  }

  #rememberKept(subject: string, kept: Kept): void {
    this.#kepts.delete(subject);
    if (this.#kepts.size >= MAX_CACHED_TOPS) this.#kepts.delete(this.#kepts.keys().next().value!);
    this.#kepts.set(subject, kept);
  }

  /**
   * Records `position` as `subject`'s top in the tops stream before a
   * message is stored there, unless it keeps a later position of the same
   * epoch already: so the record is never behind a stored message, and
   * after every message expired the next publish goes on past any offset
   * ever given. Compare-and-set on the record's sequence: of two publishers
   * writing at once, the later position stays. A publish that records and
   * then fails leaves a gap, which a reader before it is told of
   * (`recovered: false`); one that stored without recording would have had
   * its offset given again.
   */
  async #keep(js: JetStreamClient, jsm: JetStreamManager, subject: string, position: Position, deadline: number) {
    while (true) {
      if (!this.#kepts.has(subject)) await this.#kept(jsm, subject);
      const kept = this.#kepts.get(subject)!;
      if (kept.position?.epoch === position.epoch && kept.position.offset >= position.offset) return;
      const hdrs = natsHeaders();
      hdrs.set(H_OFFSET, String(position.offset));
      hdrs.set(H_EPOCH, position.epoch);
      try {
        const ack = await js.publish(TOP_PREFIX + natsSubject(subject), new Uint8Array(), {
          headers: hdrs,
          expect: { lastSubjectSequence: kept.seq },
          timeout: Math.max(100, Math.min(ATTEMPT_TIMEOUT, deadline - Date.now())),
        });
        this.#rememberKept(subject, { seq: ack.seq, position });
        return;
      } catch (error) {
        this.#kepts.delete(subject);
        // Another publisher wrote it first: read it again and compare.
        if (!(error instanceof JetStreamApiError && error.code === 10071)) throw error;
      }
    }
  }

  async #top(jsm: JetStreamManager, subject: string): Promise<Top> {
    const cached = this.#tops.get(subject);
    if (cached && Date.now() < cached.freshUntil) return cached;
    const last = await this.#last(jsm, subject);
    const position = last ? positionOf(last.header) : null;
    if (last && position) return { seq: last.seq, ...position };
    // Every message expired: the epoch goes on from the last one. The subject's last sequence is then 0, so of two
    // publishers that both read this, the second one's expectation fails and it reads the first one's message.
    if (!last) {
      // Nothing kept either: the epoch its readers were answered, its slot's.
      const kept = (await this.#kept(jsm, subject)) ?? { offset: 0, epoch: await this.#slotEpoch(jsm, subject) };
      return { seq: 0, ...kept };
    }
    // A message published around this bus (a process without --history): a new epoch.
    return { seq: last.seq, offset: 0, epoch: newEpoch() };
  }

  /**
   * The epoch of `subject` while nothing of it is kept: its slot's (one of
   * 4096 by a hash of its name, shared by every process), recorded in the
   * tops stream by the first that needs it (a compare-and-set on its
   * absence, so all agree). A read then stores nothing per subject, as the
   * hub's slots (`history_log.ts`). A subject that had positions in a slot's
   * epoch and lost its record never answers that epoch again: its record was
   * written after the slot's, and both streams' bounds (age, count, bytes)
   * drop the older first, so the slot has a new epoch by then.
   */
  async #slotEpoch(jsm: JetStreamManager, subject: string): Promise<string> {
    const slot = `${SLOT_PREFIX}${this.#streamName}.${epochSlot(subject)}`;
    for (let attempt = 0; attempt < 3; attempt++) {
      const record = await jsm.direct.getMessage(this.#topsStreamName, { last_by_subj: slot });
      const kept = record?.header?.get(H_EPOCH);
      if (kept) return kept;
      const epoch = newEpoch();
      const hdrs = natsHeaders();
      hdrs.set(H_EPOCH, epoch);
      try {
        await this.#js!.publish(slot, new Uint8Array(), {
          headers: hdrs,
          expect: { lastSubjectSequence: record?.seq ?? 0 },
          timeout: ATTEMPT_TIMEOUT,
        });
        return epoch;
      } catch (error) {
        // Another process made it first: read theirs.
        if (!(error instanceof JetStreamApiError && error.code === 10071)) throw error;
      }
    }
    // A replica not caught up with the winner's record: the caller's loop asks again.
    throw new Error(`the epoch slot of ${subject} has no record yet`);
  }

  /**
   * Remembers `top`, just stored, as `subject`'s for the first half of its
   * ttl. Past it the message may have expired, and a publish that expected
   * it would record a position it then could not store: a gap.
   */
  #remember(subject: string, top: Top): void {
    this.#tops.delete(subject);
    if (this.#tops.size >= MAX_CACHED_TOPS) this.#tops.delete(this.#tops.keys().next().value!);
    this.#tops.set(subject, { ...top, freshUntil: Date.now() + this.#options.history!.ttlMs / 2 });
  }

  async #publishHistory(
    subject: string,
    data: Json,
    deadline: number,
    key: string | undefined,
  ): Promise<PublishResult> {
    const what = `publish to ${subject}`;
    const msgID = key === undefined ? crypto.randomUUID() : `${natsSubject(subject)} ${key}`;
    let pause = 25;
    while (true) {
      const bytes = this.#encode(data, await this.#link(deadline, what));
      try {
        const { js, jsm } = await this.#jetstream(deadline, what);
        const top = await this.#top(jsm, subject);
        const position = { offset: top.offset + 1, epoch: top.epoch };
        await this.#keep(js, jsm, subject, position, deadline);
        const hdrs = natsHeaders();
        hdrs.set(H_OFFSET, String(position.offset));
        hdrs.set(H_EPOCH, top.epoch);
        hdrs.set(H_PREV, String(top.seq));
        const ack = await js.publish(natsSubject(subject), bytes, {
          msgID,
          headers: hdrs,
          expect: { lastSubjectSequence: top.seq },
          timeout: Math.max(100, Math.min(ATTEMPT_TIMEOUT, deadline - Date.now())),
        });
        if (ack.duplicate) {
          // Answered as the first one was; not stored again. Its position is read back from the stream, or, when
          // the subject's history was removed since, remembered from this link's own first publish, or unknown.
          const stored = await jsm.direct.getMessage(this.#streamName, { seq: ack.seq });
          const first = (stored ? positionOf(stored.header) : null) ?? this.#keyed.get(msgID);
          return first ? { reached: null, position: first } : { reached: null };
        }
        this.#remember(subject, { seq: ack.seq, ...position });
        if (key !== undefined) {
          if (this.#keyed.size >= MAX_KEYED_POSITIONS) this.#keyed.delete(this.#keyed.keys().next().value!);
          this.#keyed.set(msgID, position);
        }
        return { reached: null, position };
      } catch (error) {
        if (error instanceof BusError) throw error;
        // Within max_payload alone, over it with the history's headers: no retry would fit it.
        if (error instanceof InvalidArgumentError && error.message.includes("max_payload")) {
          throw new BusError(
            "too_large",
            `Cannot ${what}: message of ${bytes.length} bytes with its history headers is over NATS's limit`,
            { cause: error },
          );
        }
        this.#tops.delete(subject);
        // Another publisher went first: read the last message again and retry at once.
        if (error instanceof JetStreamApiError && error.code === 10071) continue;
        this.#recheckStreams();
        if (Date.now() + pause >= deadline) {
          throw new BusError("unavailable", `Cannot ${what}: JetStream did not store it in time: ${errorText(error)}`, {
            cause: error,
          });
        }
        this.#logger.debug("retrying a history publish", { subject, error: errorText(error) });
        await new Promise((resolve) => setTimeout(resolve, pause));
        pause = Math.min(pause * 2, 500);
      }
    }
  }

  /**
   * Asks `subject`'s subscribers and gathers their replies (see the module's
   * documentation for when it stops).
   *
   * @throws {BusError} `no_responders` when nobody subscribes to `subject`;
   * `unavailable` when the link stayed down past the timeout.
   */
  async request(subject: string, data: Json, options: RequestOptions = {}): Promise<RequestResult> {
    const timeout = options.timeout ?? DEFAULT_REQUEST_TIMEOUT;
    const deadline = Date.now() + timeout;
    const nc = await this.#link(deadline, `request on ${subject}`);
    const bytes = this.#encode(data, nc);
    if (options.maxReplies === 1) return await this.#requestOne(nc, subject, bytes, deadline);
    const census = this.#census.has(subject) ? this.#livePeers(subject) : null;
    const replies: Json[] = [];
    const answered = new Set<string>();
    const inbox = createInbox();
    let finish: (error?: BusError) => void = () => {};
    const finished = new Promise<void>((resolve, reject) => {
      finish = (error) => (error ? reject(error) : resolve());
    });
    let stall: ReturnType<typeof setTimeout> | undefined;
    const complete = (): boolean => {
      if (options.maxReplies !== undefined && replies.length >= options.maxReplies) return true;
      if (census && census.size > 0) return [...census].every((id) => answered.has(id));
      return false;
    };
    const sub = nc.subscribe(inbox, {
      callback: (_error, msg) => {
        if (msg.headers?.hasError && msg.headers.code === 503) {
          finish(new BusError("no_responders", `Cannot request on ${subject}: nobody subscribes to it`));
          return;
        }
        try {
          replies.push(msg.data.length === 0 ? null : JSON.parse(decoder.decode(msg.data)));
        } catch {
          return;
        }
        const id = msg.headers?.get(H_ID);
        if (id) answered.add(id);
        if (complete()) return finish();
        if (!census || census.size === 0) {
          clearTimeout(stall);
          stall = setTimeout(() => finish(), this.#options.requestStall ?? 50);
        }
      },
    });
    const timer = setTimeout(() => finish(), Math.max(0, deadline - Date.now()));
    const abort = () => finish();
    options.signal?.addEventListener("abort", abort, { once: true });
    try {
      nc.publish(natsSubject(subject), bytes, { reply: inbox });
      await finished;
      const expected = census && census.size > 0 ? Math.max(census.size, answered.size) : null;
      return { replies, expected };
    } finally {
      clearTimeout(timer);
      clearTimeout(stall);
      options.signal?.removeEventListener("abort", abort);
      sub.unsubscribe();
    }
  }

  /** NATS's own request: the first reply, or none by the deadline; no responders fails at once. */
  async #requestOne(nc: NatsConnection, subject: string, bytes: Uint8Array, deadline: number): Promise<RequestResult> {
    try {
      const reply = await nc.request(natsSubject(subject), bytes, { timeout: Math.max(1, deadline - Date.now()) });
      return { replies: [parseData(reply.data)], expected: null };
    } catch (error) {
      if (error instanceof RequestError && error.isNoResponders()) {
        throw new BusError("no_responders", `Cannot request on ${subject}: nobody subscribes to it`, { cause: error });
      }
      if (error instanceof TimeoutError || (error instanceof RequestError && error.cause instanceof TimeoutError)) {
        return { replies: [], expected: null };
      }
      throw new BusError("unavailable", `Cannot request on ${subject}: ${errorText(error)}`, { cause: error });
    }
  }

  /**
   * Reads `subject`'s history from the stream (see {@linkcode Bus.history});
   * a subject that keeps none answers `{ offset: 0, epoch: "" }`.
   *
   * @throws {BusError} `unavailable` when the link or JetStream stayed down
   * past the timeout.
   */
  async history(subject: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    if (!this.#keeps(subject)) return { messages: [], position: { offset: 0, epoch: "" }, recovered: false };
    if (options.signal?.aborted) throw options.signal.reason;
    const deadline = Date.now() + (options.timeout ?? this.#publishTimeout);
    const what = `read the history of ${subject}`;
    const size = this.#options.history!.size;
    const limit = Math.max(0, Math.min(options.limit ?? size, size));
    let pause = 25;
    while (true) {
      try {
        const { jsm } = await this.#jetstream(deadline, what);
        return await this.#read(jsm, subject, options.since, limit);
      } catch (error) {
        if (error instanceof BusError) throw error;
        this.#recheckStreams();
        if (Date.now() + pause >= deadline) {
          throw new BusError("unavailable", `Cannot ${what}: JetStream did not answer in time: ${errorText(error)}`, {
            cause: error,
          });
        }
        await new Promise((resolve) => setTimeout(resolve, pause));
        pause = Math.min(pause * 2, 500);
      }
    }
  }

  async #read(
    jsm: JetStreamManager,
    subject: string,
    since: Position | undefined,
    limit: number,
  ): Promise<HistoryResult> {
    let last = await this.#last(jsm, subject);
    if (!last) {
      // A subject never published to (or whose record was dropped) answers its slot's epoch, and stores nothing:
      // reads of made-up names never push real history, or the positions of real channels, out of their bounds.
      const kept = (await this.#kept(jsm, subject)) ?? { offset: 0, epoch: await this.#slotEpoch(jsm, subject) };
      // Still none: nothing was published between the two reads, so the copy is the top, and no message is kept.
      last = await this.#last(jsm, subject);
      if (!last) {
        const current = since !== undefined && since.epoch === kept.epoch && since.offset === kept.offset;
        return { messages: [], position: kept, recovered: current };
      }
    }
    if (!positionOf(last.header)) {
      await this.#mark(subject, last.seq);
      last = await this.#last(jsm, subject);
    }
    const top = last ? positionOf(last.header) : null;
    // A direct get may be answered by a replica that has not caught up with
    // the marker yet: not an answer, so the caller's loop asks again.
    if (!last || !top) throw new Error(`the history of ${subject} has no top yet`);
    const current = since !== undefined && since.epoch === top.epoch && since.offset <= top.offset;
    // A position of another epoch, or past the top, has nothing after it here: the hub's rule (history_log.ts).
    if (since !== undefined && !current) return { messages: [], position: top, recovered: false };
    if (limit === 0) return { messages: [], position: top, recovered: current && since.offset === top.offset };
    // Walks back from the top through each message's predecessor, as far as needed and kept.
    const from = current ? since.offset : 0;
    const walked: { data: Json; position: Position }[] = [];
    let message: StoredMsg | null = last;
    let reachedFrom = top.offset === from;
    while (message && !reachedFrom) {
      const position = positionOf(message.header);
      if (!position || position.epoch !== top.epoch || message.header.get(H_MARKER)) break;
      if (position.offset <= from) break;
      walked.push({ data: parseData(message.data), position });
      if (position.offset === from + 1) {
        reachedFrom = true;
        break;
      }
      const prev = Number(message.header.get(H_PREV) ?? "0");
      if (!prev) break;
      message = await jsm.direct.getMessage(this.#streamName, { seq: prev });
      if (message && message.subject !== natsSubject(subject)) message = null;
    }
    walked.reverse();
    const messages = walked.slice(0, limit);
    const recovered = current && reachedFrom && messages.length === walked.length;
    return { messages, position: top, recovered };
  }

  /**
   * Writes an empty marker at `subject` (offset 0, a new epoch), so that
   * its epoch is kept: when its last sequence is `expected`, or whatever it
   * is with null. Answers the marker's sequence and epoch, or null when someone wrote
   * first (theirs is the top).
   */
  async #mark(subject: string, expected: number | null): Promise<{ seq: number; epoch: string } | null> {
    const epoch = newEpoch();
    const hdrs = natsHeaders();
    hdrs.set(H_OFFSET, "0");
    hdrs.set(H_EPOCH, epoch);
    hdrs.set(H_PREV, "0");
    hdrs.set(H_MARKER, "1");
    try {
      const ack = await this.#js!.publish(natsSubject(subject), new Uint8Array(), {
        headers: hdrs,
        ...(expected === null ? {} : { expect: { lastSubjectSequence: expected } }),
      });
      return { seq: ack.seq, epoch };
    } catch (error) {
      if (!(error instanceof JetStreamApiError && error.code === 10071)) throw error;
      return null;
    }
  }

  /**
   * Drops `subject`'s history (a purge of its messages in the stream) and
   * starts a new epoch; subjects without history are ignored.
   *
   * @throws {BusError} `unavailable` when the link or JetStream stayed down past the timeout.
   */
  async removeHistory(subject: string): Promise<void> {
    if (!this.#keeps(subject)) return;
    const deadline = Date.now() + this.#publishTimeout;
    const what = `remove the history of ${subject}`;
    try {
      const { js, jsm } = await this.#jetstream(deadline, what);
      // The marker first, then what is below it: a publisher never finds the subject empty in between, which would
      // have it go on with the old epoch from the tops stream. One that published before the marker lands under it
      // (removed with the rest); one after it, whose expectation fails, reads the marker and goes on in its epoch.
      const marker = (await this.#mark(subject, null))!;
      await jsm.streams.purge(this.#streamName, { filter: natsSubject(subject), seq: marker.seq });
      this.#tops.delete(subject);
      // Its new epoch outlives the marker, as a publish's position does.
      await this.#keep(js, jsm, subject, { offset: 0, epoch: marker.epoch }, deadline);
    } catch (error) {
      if (error instanceof BusError) throw error;
      this.#recheckStreams();
      throw new BusError("unavailable", `Cannot ${what}: ${errorText(error)}`, { cause: error });
    }
  }

  /**
   * After a history call failed: its streams may be gone (a NATS that came
   * back without its store, one whose streams an operator deleted), and
   * nothing else would make them again in this process, so the next call
   * makes sure of them first. Where they exist, that is one request that
   * changes nothing, whatever bounds they have.
   */
  #recheckStreams(): void {
    if (this.#streamsSet) this.#streamReady = null;
  }

  /** Closes the link; waiting publishes reject with `unavailable`. Closing twice is harmless. */
  async close(): Promise<void> {
    if (this.#closed) {
      await this.#connecting;
      return;
    }
    this.#closed = true;
    this.#stopHearingAlerts();
    clearInterval(this.#heartbeat);
    this.#failWaiters("NATS bus is closed");
    const nc = this.#nc;
    if (nc && this.#connected) {
      // A goodbye, so requesters stop waiting for this bus at once.
      if ([...this.#census].some((subject) => this.#subs.has(subject))) {
        nc.publish(CENSUS_SUBJECT, JSON.stringify({ id: this.#id, subjects: [] }));
        await this.#flush(nc, Date.now() + 1000, "say goodbye").catch(() => {});
      }
    }
    this.#subs.clear();
    if (nc) await nc.close().catch(() => {});
    await this.#connecting;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function hostPort({ hostname, port }: NatsServer): string {
  return `${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
}

function idHeaders(id: string): MsgHdrs {
  const hdrs = natsHeaders();
  hdrs.set(H_ID, id);
  return hdrs;
}

function positionOf(hdrs: MsgHdrs | undefined): Position | null {
  const offset = Number(hdrs?.get(H_OFFSET) ?? "");
  const epoch = hdrs?.get(H_EPOCH) ?? "";
  if (!Number.isSafeInteger(offset) || offset < 0 || epoch === "") return null;
  return { offset, epoch };
}

function parseData(bytes: Uint8Array): Json {
  try {
    return bytes.length === 0 ? null : JSON.parse(decoder.decode(bytes));
  } catch {
    return null;
  }
}

/** The TLS alert that `error` is, or was caused by; null when none. */
function tlsAlertOf(error: unknown): Error | null {
  let cause: unknown = error;
  while (cause instanceof Error) {
    if (isTlsAlert(cause)) return cause;
    cause = cause.cause;
  }
  return null;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
