/**
 * Redis as the {@linkcode Bus} (centrifuge's `broker_redis.go`): subjects are
 * Redis pub/sub channels, history lives in Redis Streams. Opened by address
 * with `openBus("redis://host:6379")`, or `rediss://` for TLS
 * (`shared/open_bus.ts`).
 *
 * Two connections, through the npm `redis` client (node-redis): one for
 * commands, one for subscriptions (a subscribed Redis connection takes no
 * other command). Each reconnects with capped, jittered backoff once Redis
 * accepts TCP again; the subscription link subscribes again to every subject
 * before it reads as up.
 *
 * What a result means on Redis:
 * - `reached` is what `PUBLISH` answers: how many connections subscribe to the
 *   subject's channel, one per pusher worker and per waiting request. It is
 *   exact on one Redis server. On a Redis Cluster `PUBLISH` counts the
 *   subscribers of the node it ran on only, so `reached` undercounts and a
 *   targeted send may be refused wrongly: run the bus on one server (with a
 *   replica for failover), not on a cluster.
 * - A publish resolves only once Redis answered it; while the command link is
 *   down it waits up to its timeout, then rejects `unavailable`: never an ok
 *   for a message Redis did not take. A publish whose link drops while it is
 *   in flight rejects `unavailable` too, though Redis may have taken it.
 * - When the command link comes back, publishes (not replies) are held for a
 *   grace, so that pushers, reconnecting with the same backoff, subscribe
 *   again before anything is published: what is `ok` then reaches them.
 * - Redis pub/sub keeps nothing: a message published while a subscription
 *   link is down is not delivered to it; `reconnects` counts those gaps. And
 *   it delivers at most once: `PUBLISH` is answered as its messages are
 *   queued for the subscribers, so a Redis killed in that instant can lose
 *   them although the publish resolved.
 * - For subjects that keep history, one Lua script publishes, appends to the
 *   subject's stream (`XADD MAXLEN size`), bumps the subject's offset and
 *   remembers the idempotency key, atomically: offsets grow by exactly one
 *   per message. The epoch is new when the subject's history was lost: its
 *   keys expired or were removed, or Redis restarted (a new `run_id`; even a
 *   Redis that reloaded its data from disk may have lost its last writes).
 *
 * @module
 */

import { createClient } from "redis";
import {
  type Bus,
  BusError,
  type BusHandler,
  type BusMessage,
  type BusPublishOptions,
  DEFAULT_REQUEST_TIMEOUT,
  type HistoryOptions,
  type HistoryResult,
  INBOX_PREFIX,
  type Json,
  type Position,
  type PublishResult,
  type RequestOptions,
  type RequestResult,
} from "./bus.ts";
import { DEFAULT_HISTORY_SIZE, DEFAULT_HISTORY_TTL, epochSlot, newEpoch } from "./history_log.ts";
import { DEFAULT_IDEMPOTENCY_WINDOW, MAX_IDEMPOTENCY_KEY_LENGTH } from "./idempotency.ts";
import { createLogger, type Logger } from "./log.ts";
import { isTlsAlert, onTlsAlert, TLS_ALERT_HINT } from "./_tls_alerts.ts";
import { OncePerCause } from "./log_throttle.ts";

/** The default Redis port. */
export const DEFAULT_REDIS_PORT = 6379;

/** PEM contents for a TLS link to Redis (`rediss://`). */
export interface RedisTlsOptions {
  /** CAs to verify the server with. @default {the system's} */
  caCerts?: string[];
  /** A client certificate to present. @default {none} */
  cert?: string;
  /** The client certificate's key. @default {none} */
  key?: string;
}

/** Which subjects keep history on Redis, and its bounds. */
export interface RedisHistoryOptions {
  /** Names, or prefixes ending in `*` (`channel.chat.*`), as the hub's `--history`. */
  subjects: readonly string[];
  /** Most messages kept per subject (the stream's exact `MAXLEN`). @default {100} */
  size?: number;
  /** Longest a message is kept, in milliseconds. @default {300000} */
  ttlMs?: number;
}

/** Options for {@linkcode RedisBus}. */
export interface RedisBusOptions {
  /** Redis's host. @default {"127.0.0.1"} */
  hostname?: string;
  /** Redis's port. @default {6379} */
  port?: number;
  /** Speak TLS (`rediss://`), verifying the server with these CAs. @default {false} */
  tls?: boolean | RedisTlsOptions;
  /** The `AUTH` password, if Redis asks for one. @default {none} */
  token?: string;
  /** Largest message, in bytes of what is sent to Redis; larger is refused as `too_large`. @default {1048576} */
  maxMessageBytes?: number;
  /** How long a publish waits to be taken, reconnects included, in milliseconds. @default {5000} */
  publishTimeout?: number;
  /** How long one connection attempt may take, in milliseconds. @default {2000} */
  connectTimeout?: number;
  /** First wait before reconnecting, in milliseconds; it doubles up to `maxReconnectDelay`, with jitter. @default {50} */
  reconnectDelay?: number;
  /** Longest wait before reconnecting, in milliseconds. @default {2000} */
  maxReconnectDelay?: number;
  /**
   * How often each link pings Redis, in milliseconds; a link that hears
   * nothing for three of these is dropped and reconnected (a peer gone
   * without a word, as a network partition leaves it). @default {5000}
   */
  pingInterval?: number;
  /**
   * After the command link comes back, how long publishes are held, in
   * milliseconds, so that pushers whose links reconnect with the same
   * backoff subscribe again before anything is published (as the hub's
   * `--startup-grace`). @default {maxReconnectDelay + 500}
   */
  reconnectGrace?: number;
  /** Most calls waiting for the link at once; past it they fail `unavailable` at once. @default {10000} */
  maxWaiting?: number;
  /** Subjects that keep history, in Redis Streams. @default {none} */
  history?: RedisHistoryOptions;
  /** How long an idempotency key is remembered, in milliseconds. @default {300000} */
  idempotencyWindow?: number;
  /** Where the bus's log lines go. @default {createLogger("redis-bus")} */
  logger?: Logger;
}

/** Keys and channels of one subject share a hash tag, so a script touches one slot. */
const PREFIX = "channel:";

/** The hash of the 4096 slots' epochs (see LUA_COMMON): `epoch run_id evicted_keys made_ms` by slot. */
const EPOCH_SLOTS_KEY = `${PREFIX}epoch-slots`;

/**
 * The history keys of a subject without a message for a day go: a reader
 * that comes back later reloads (its epoch is gone), as it would have to
 * anyway once every message expired.
 */
const META_TTL = 86_400_000;

/**
 * The Lua shared by both scripts: the subject's epoch and top offset. A
 * subject with nothing kept (never published, its keys expired or evicted,
 * or Redis restarted) is at offset 0 of its slot's epoch (one of 4096, by
 * its name's hash, in one hash key), which a read answers without making a
 * key, so reads of made-up names cost nothing per name, as on the hub; the
 * subject's first publish continues it. A subject must never be answered
 * again an epoch it had positions in, so a slot's epoch holds only while
 * no subject that took it can have lost its keys: for the meta ttl from
 * when it was made (a subject's keys, made later, expire later), on the
 * same Redis run, and while Redis evicted no key (eviction keeps no
 * order). Past any of these the slot gets a new epoch when next needed.
 */
const LUA_COMMON = `
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function meta(metaKey, streamKey, slotsKey, slot, fresh, take, slotTtl)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local m = redis.call('HMGET', metaKey, 'epoch', 'offset', 'run')
  if m[1] and m[3] == run then return m[1], tonumber(m[2]) end
  redis.call('DEL', streamKey)
  local evicted = string.match(redis.call('INFO', 'stats'), 'evicted_keys:(%d+)')
  local t = now()
  local epoch
  local s = redis.call('HGET', slotsKey, slot)
  if s then
    local e, r, ev, made = string.match(s, '^(%S+) (%S+) (%S+) (%d+)$')
    if r == run and ev == evicted and t - tonumber(made) < tonumber(slotTtl) then epoch = e end
  end
  if not epoch then
    epoch = fresh
    redis.call('HSET', slotsKey, slot, fresh .. ' ' .. run .. ' ' .. evicted .. ' ' .. t)
    redis.call('PEXPIRE', slotsKey, slotTtl)
  end
  if take then redis.call('HSET', metaKey, 'epoch', epoch, 'offset', 0, 'run', run) end
  return epoch, 0
end
local function trim(streamKey, oldest)
  while true do
    local first = redis.call('XRANGE', streamKey, '-', '+', 'COUNT', 1)[1]
    if not first or tonumber(first[2][2]) > oldest then return end
    redis.call('XDEL', streamKey, first[1])
  end
end
`;

/**
 * KEYS: meta, stream, idempotency key, epoch slots. ARGV: channel, body
 * (`{...}` JSON), history (1/0), size, ttl, fresh epoch, idempotency window
 * (0: none), meta ttl, slot. Answers
 * `{seen (1/0), "reached offset epoch"}`.
 */
const PUBLISH_SCRIPT = `${LUA_COMMON}
if ARGV[7] ~= '0' then
  local seen = redis.call('GET', KEYS[3])
  if seen then return {1, seen} end
end
local reached, offset, epoch = 0, 0, ''
if ARGV[3] == '1' then
  epoch, offset = meta(KEYS[1], KEYS[2], KEYS[4], ARGV[9], ARGV[6], true, ARGV[8])
  offset = offset + 1
  redis.call('HSET', KEYS[1], 'offset', offset)
  local t = now()
  trim(KEYS[2], t - tonumber(ARGV[5]))
  local payload = '{"o":' .. offset .. ',"e":"' .. epoch .. '",' .. string.sub(ARGV[2], 2)
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], offset .. '-0', 't', t, 'p', payload)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[8])
  reached = redis.call('PUBLISH', ARGV[1], payload)
else
  reached = redis.call('PUBLISH', ARGV[1], ARGV[2])
end
local result = reached .. ' ' .. offset .. ' ' .. epoch
if ARGV[7] ~= '0' then redis.call('SET', KEYS[3], result, 'PX', ARGV[7], 'NX') end
return {0, result}
`;

/**
 * KEYS: meta, stream, epoch slots. ARGV: since offset (-1: none), since
 * epoch, limit, ttl, fresh epoch, meta ttl, slot. Answers
 * `{epoch, top, recovered (1/0), payloads...}`.
 */
const HISTORY_SCRIPT = `${LUA_COMMON}
local epoch, top = meta(KEYS[1], KEYS[2], KEYS[3], ARGV[7], ARGV[5], false, ARGV[6])
if top > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
trim(KEYS[2], now() - tonumber(ARGV[4]))
local since = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
if since >= 0 and (ARGV[2] ~= epoch or since > top) then return {epoch, top, 0} end
local after = math.max(since, 0)
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
local firstKept = top + 1
if first then firstKept = tonumber(string.match(first[1], '^(%d+)')) end
local entries = redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+', 'COUNT', limit + 1)
local recovered = 0
if since >= 0 and firstKept <= after + 1 and #entries <= limit then recovered = 1 end
local out = {epoch, top, recovered}
for i = 1, math.min(#entries, limit) do out[#out + 1] = entries[i][2][4] end
return out
`;

/**
 * KEYS: meta, stream. ARGV: fresh epoch, meta ttl. Drops the subject's
 * messages and gives it a new epoch at offset 0, kept as a published
 * subject's: its readers are told of the removal, and the next publish
 * continues the new epoch.
 */
const REMOVE_SCRIPT = `
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'offset', 0, 'run', run)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`;

/** What travels on a subject's Redis channel: the data, where to reply, and the position. */
interface Envelope {
  d: Json;
  r?: string;
  o?: number;
  e?: string;
}

type RedisClient = ReturnType<typeof createClient>;

/** One of the two connections, with the state the bus needs from it. */
interface Link {
  readonly name: "commands" | "subscriptions";
  readonly client: RedisClient;
  /** Resolves when the first connection attempt loop ends (connected, or closed). */
  connecting: Promise<void>;
  ready: boolean;
  /** Whether it was ready once: a later ready is a reconnect. */
  everReady: boolean;
  /** Whether the current outage was logged. */
  lostLogged: boolean;
  /** Attempts that failed since the link was last ready: the backoff's exponent. */
  failures: number;
  /** Calls waiting for it to be ready, each woken by `ready` or close. */
  readonly waiters: Set<() => void>;
}

/**
 * The bus over Redis: pub/sub for delivery, counted by `PUBLISH`; Streams and
 * a Lua script for history and idempotency.
 *
 * @example
 * ```ts
 * import { RedisBus } from "./redis_bus.ts";
 *
 * await using bus = new RedisBus({ hostname: "127.0.0.1", port: 6379, history: { subjects: ["news"] } });
 * await bus.subscribe("news", (data, { position }) => console.log(data, position));
 * const { reached, position } = await bus.publish("news", { title: "hello" }); // 1, { offset: 1, epoch: "…" }
 * ```
 */
export class RedisBus implements Bus {
  /** `redis://host:port` or `rediss://host:port`, IPv6 hosts in brackets. */
  readonly address: string;
  readonly #commands: Link;
  readonly #subscriptions: Link;
  readonly #handlers = new Map<string, BusHandler>();
  /** Subjects subscribed at Redis, or on their way: each with the promise of its confirmation. */
  readonly #subscribing = new Map<string, Promise<void>>();
  /** What ends the wait of each subject's subscribe in `#subscribing` early, while it waits: its unsubscribe. */
  readonly #withdraw = new Map<string, () => void>();
  /** Unsubscribes sent and not yet confirmed, by subject: a subscribe of the subject waits for its. */
  readonly #unsubscribing = new Map<string, Promise<void>>();
  /** Subjects whose UNSUBSCRIBE was lost with the link: sent again when it is ready. */
  readonly #withdrawn = new Set<string>();
  readonly #logger: Logger;
  readonly #maxMessageBytes: number;
  readonly #publishTimeout: number;
  readonly #maxWaiting: number;
  readonly #idempotencyWindow: number;
  readonly #history: { names: Set<string>; prefixes: string[]; size: number; ttl: number };
  readonly #reconnectGrace: number;
  /** Publishes wait until then (ms since the epoch): the grace after the command link came back. */
  #holdUntil = 0;
  readonly #closedSignal = new AbortController();
  #reconnects = 0;
  /** Whether "connected" was logged: once, when both links first came up. */
  #announced = false;
  readonly #scriptSha = new Map<string, Promise<string>>();
  #closing: Promise<void> | undefined;
  readonly #hostname: string;
  readonly #port: number;
  readonly #connectTimeout: number;
  readonly #reconnectDelay: number;
  readonly #maxReconnectDelay: number;
  /** TLS alerts, logged as a warning once per cause until a link is up. */
  readonly #tlsAlerts: OncePerCause;
  readonly #stopHearingAlerts: () => void;

  /** Connects to Redis at `options.hostname`:`options.port` (127.0.0.1:6379 by default) and keeps both links up. */
  constructor(options: RedisBusOptions = {}) {
    const hostname = options.hostname ?? "127.0.0.1";
    const port = options.port ?? DEFAULT_REDIS_PORT;
    const tls = options.tls === true ? {} : options.tls || undefined;
    this.address = `${tls ? "rediss" : "redis"}://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
    this.#logger = options.logger ?? createLogger("redis-bus");
    this.#tlsAlerts = new OncePerCause(this.#logger);
    this.#maxMessageBytes = options.maxMessageBytes ?? 1024 * 1024;
    this.#publishTimeout = options.publishTimeout ?? 5000;
    this.#maxWaiting = options.maxWaiting ?? 10_000;
    this.#idempotencyWindow = options.idempotencyWindow ?? DEFAULT_IDEMPOTENCY_WINDOW;
    const subjects = options.history?.subjects ?? [];
    this.#history = {
      names: new Set(subjects.filter((s) => !s.endsWith("*"))),
      prefixes: subjects.filter((s) => s.endsWith("*")).map((s) => s.slice(0, -1)),
      size: positive("history size", options.history?.size ?? DEFAULT_HISTORY_SIZE),
      ttl: positive("history ttl", options.history?.ttlMs ?? DEFAULT_HISTORY_TTL),
    };
    this.#hostname = hostname;
    this.#port = port;
    this.#connectTimeout = options.connectTimeout ?? 2000;
    this.#reconnectDelay = options.reconnectDelay ?? 50;
    const pingInterval = options.pingInterval ?? 5000;
    this.#maxReconnectDelay = options.maxReconnectDelay ?? 2000;
    this.#reconnectGrace = options.reconnectGrace ?? this.#maxReconnectDelay + 500;
    const open = (name: Link["name"]): Link => {
      const socket = {
        host: hostname,
        port,
        connectTimeout: this.#connectTimeout,
        socketTimeout: 3 * pingInterval,
        // node-redis does not retry by itself: a failed attempt ends its loop ("terminated"), and #redial dials again
        // once Redis accepts TCP. Deno 2.9's node:tls keeps every TLS socket whose TCP connect failed (about 9 KiB
        // each, for good), so node-redis's own retries against a Redis that is down grew the heap without bound.
        reconnectStrategy: false as const,
        ...(tls
          ? {
            tls: true as const,
            // SNI takes names only; an IP address is checked against the certificate's IP entries.
            ...(/^[\d.]+$|:/.test(hostname) ? {} : { servername: hostname }),
            ...(tls.caCerts ? { ca: tls.caCerts } : {}),
            ...(tls.cert ? { cert: tls.cert } : {}),
            ...(tls.key ? { key: tls.key } : {}),
          }
          : {}),
      };
      const client = createClient({
        socket,
        ...(options.token === undefined ? {} : { password: options.token }),
        // A command sent while the link is down would go out when it is back,
        // maybe after its caller was told it failed: calls wait for the link
        // themselves (#whenLinkReady). The subscription link keeps the queue, so
        // a SUBSCRIBE made while it is down goes out on reconnect.
        disableOfflineQueue: name === "commands",
        commandsQueueMaxLength: this.#maxWaiting,
        pingInterval,
        maintNotifications: "disabled",
      }) as RedisClient;
      const link: Link = {
        name,
        client,
        connecting: Promise.resolve(),
        ready: false,
        everReady: false,
        lostLogged: false,
        failures: 0,
        waiters: new Set(),
      };
      link.client.on("error", (error: Error) => this.#onLost(link, error));
      link.client.on("ready", () => this.#onReady(link));
      link.client.on("terminated", () => this.#redial(link));
      link.connecting = link.client.connect().then(() => {}, () => {});
      return link;
    };
    // Before the links open: an alert that comes before node-redis listens would end the process (_tls_alerts.ts).
    this.#stopHearingAlerts = onTlsAlert((error) => this.#onTlsAlert(error));
    this.#commands = open("commands");
    this.#subscriptions = open("subscriptions");
  }

  /** Whether both links to Redis are up now. */
  get connected(): boolean {
    return this.#commands.ready && this.#subscriptions.ready;
  }

  /** How many times the subscription link came back after it was lost (messages published meanwhile were missed). */
  get reconnects(): number {
    return this.#reconnects;
  }

  /**
   * Calls `handler` with every message published to `subject`; subscribing
   * again replaces the handler. Resolves once Redis confirmed the `SUBSCRIBE`
   * (after a reconnect, if the link was down), when the bus closes, or once
   * `subject` is unsubscribed first.
   */
  subscribe(subject: string, handler: BusHandler): Promise<void> {
    if (this.#closedSignal.signal.aborted) return Promise.resolve();
    this.#handlers.set(subject, handler);
    let confirmed = this.#subscribing.get(subject);
    if (!confirmed) {
      // Or withdrawn by an unsubscribe: while Redis is down, the SUBSCRIBE waits in the client's (bounded) queue.
      const withdrawn = Promise.withResolvers<void>();
      confirmed = Promise.race([this.#subscribeAtRedis(subject), withdrawn.promise]);
      this.#subscribing.set(subject, confirmed);
      this.#withdraw.set(subject, withdrawn.resolve);
      const settled = confirmed;
      void settled.then(() => {
        if (this.#subscribing.get(subject) === settled) this.#withdraw.delete(subject);
      });
    }
    return confirmed;
  }

  /** Stops the handler of `subject`; unknown subjects are ignored. */
  unsubscribe(subject: string): void {
    if (!this.#handlers.delete(subject)) return;
    this.#subscribing.delete(subject);
    this.#withdraw.get(subject)?.();
    this.#withdraw.delete(subject);
    if (this.#closedSignal.signal.aborted) return;
    this.#unsubscribeAtRedis(subject);
  }

  /**
   * UNSUBSCRIBEs from `subject`'s channel. node-redis forgets the channel
   * only once Redis answers: an UNSUBSCRIBE lost with a connect attempt
   * leaves it in the set the next connection subscribes to again, so it is
   * sent again once the link is ready (#onReady), unless the subject was
   * subscribed to again meanwhile.
   */
  #unsubscribeAtRedis(subject: string): void {
    const done = this.#subscriptions.client.unsubscribe(PREFIX + subject).catch(() => {
      if (!this.#handlers.has(subject)) this.#withdrawn.add(subject);
    });
    this.#unsubscribing.set(subject, done);
    void done.then(() => {
      if (this.#unsubscribing.get(subject) === done) this.#unsubscribing.delete(subject);
    });
  }

  /**
   * Publishes `data` to every subscriber of `subject`; resolves once Redis
   * took it, with how many subscribers `PUBLISH` counted, and its position
   * when the subject keeps history.
   *
   * @throws {BusError} `unavailable` when Redis did not answer in time (the
   * link is down), the bus is closed or too many calls wait; `too_large`
   * over the size limit; `refused` for an idempotency key over 128
   * characters or an error from Redis.
   */
  async publish(subject: string, data: Json, options: BusPublishOptions = {}): Promise<PublishResult> {
    const key = options.idempotencyKey;
    if (key !== undefined && key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
      throw new BusError("refused", `Cannot publish to ${subject}: idempotency key is over 128 characters`);
    }
    const envelope: Envelope = options.replyTo === undefined ? { d: data } : { r: options.replyTo, d: data };
    const body = JSON.stringify(envelope);
    const bytes = new TextEncoder().encode(body).length;
    if (bytes > this.#maxMessageBytes) {
      throw new BusError(
        "too_large",
        `Cannot publish to ${subject}: message of ${bytes} bytes is over the ${this.#maxMessageBytes}-byte limit`,
      );
    }
    const history = this.#keeps(subject);
    const what = `Cannot publish to ${subject}`;
    // A reply goes to a requester that is subscribed already: no need to wait for anyone.
    const hold = !subject.startsWith(INBOX_PREFIX);
    const timeout = options.timeout ?? this.#publishTimeout;
    if (!history && key === undefined) {
      const reached = await this.#command(what, (client) => client.publish(PREFIX + subject, body), {
        timeout,
        signal: options.signal,
        hold,
      });
      return { reached: Number(reached) };
    }
    const keys = subjectKeys(subject);
    const reply = await this.#command(
      what,
      (client) =>
        this.#eval(client, PUBLISH_SCRIPT, [
          keys.meta,
          keys.stream,
          key === undefined ? keys.meta : `${keys.idempotency}${key}`,
          EPOCH_SLOTS_KEY,
        ], [
          PREFIX + subject,
          body,
          history ? "1" : "0",
          String(this.#history.size),
          String(this.#history.ttl),
          newEpoch(),
          key === undefined ? "0" : String(this.#idempotencyWindow),
          String(Math.max(META_TTL, this.#history.ttl)),
          String(epochSlot(subject)),
        ]),
      { timeout, signal: options.signal, hold },
    ) as [number, string];
    const [reached, offset, epoch] = String(reply[1]).split(" ");
    return history ? { reached: Number(reached), position: { offset: Number(offset), epoch: epoch! } } : {
      reached: Number(reached),
    };
  }

  /**
   * Publishes `data` to `subject` asking for replies, on a fresh inbox
   * subscribed (and confirmed) before the request goes out, and gathers
   * them until as many as `PUBLISH` counted have come, or the timeout.
   *
   * @throws {BusError} `no_responders` when nobody subscribes to `subject`;
   * `unavailable` when the inbox or the request could not be set up in
   * time; as {@linkcode RedisBus.publish}.
   */
  async request(subject: string, data: Json, options: RequestOptions = {}): Promise<RequestResult> {
    const timeout = options.timeout ?? DEFAULT_REQUEST_TIMEOUT;
    const started = Date.now();
    const inbox = `${INBOX_PREFIX}${newEpoch()}${newEpoch()}`;
    const replies: Json[] = [];
    let expected: number | null = null;
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    const timer = setTimeout(done, timeout);
    const abort = () => done();
    options.signal?.addEventListener("abort", abort, { once: true });
    try {
      let subscribed = false;
      await Promise.race([
        this.subscribe(inbox, (reply) => {
          replies.push(reply);
          if (expected !== null && replies.length >= expected) done();
        }).then(() => (subscribed = true)),
        finished,
      ]);
      if (!subscribed || this.#closedSignal.signal.aborted) {
        throw new BusError("unavailable", `Cannot request on ${subject}: Redis did not take the reply inbox in time`);
      }
      const { reached } = await this.publish(subject, data, {
        replyTo: inbox,
        timeout: Math.max(1, timeout - (Date.now() - started)),
        signal: options.signal,
      });
      if (reached === 0) throw new BusError("no_responders", `Cannot request on ${subject}: nobody subscribes to it`);
      expected = reached ?? 0;
      if (replies.length < expected) await finished;
      return { replies: replies.slice(), expected };
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", abort);
      this.unsubscribe(inbox);
    }
  }

  /**
   * Reads `subject`'s history from its stream (a subject without history
   * answers no messages, position `{ offset: 0, epoch: "" }`, at once).
   *
   * @throws {BusError} as {@linkcode RedisBus.publish}.
   */
  async history(subject: string, options: HistoryOptions = {}): Promise<HistoryResult> {
    if (!this.#keeps(subject)) return { messages: [], position: { offset: 0, epoch: "" }, recovered: false };
    const keys = subjectKeys(subject);
    const limit = Math.max(0, Math.min(options.limit ?? this.#history.size, this.#history.size));
    const since = options.since;
    const reply = await this.#command(
      `Cannot read the history of ${subject}`,
      (client) =>
        this.#eval(client, HISTORY_SCRIPT, [keys.meta, keys.stream, EPOCH_SLOTS_KEY], [
          String(since ? since.offset : -1),
          since?.epoch ?? "",
          String(Math.floor(limit)),
          String(this.#history.ttl),
          newEpoch(),
          String(Math.max(META_TTL, this.#history.ttl)),
          String(epochSlot(subject)),
        ]),
      { timeout: options.timeout ?? this.#publishTimeout, signal: options.signal },
    ) as [string, number, number, ...string[]];
    const [epoch, top, recovered, ...payloads] = reply;
    const messages: { data: Json; position: Position }[] = [];
    for (const payload of payloads) {
      const envelope = JSON.parse(String(payload)) as Envelope;
      messages.push({ data: envelope.d, position: { offset: envelope.o!, epoch: String(epoch) } });
    }
    return { messages, position: { offset: Number(top), epoch: String(epoch) }, recovered: Number(recovered) === 1 };
  }

  /**
   * Drops `subject`'s history (its stream) and gives it a new epoch at
   * offset 0: the next message is offset 1 of it.
   *
   * @throws {BusError} as {@linkcode RedisBus.publish}.
   */
  async removeHistory(subject: string): Promise<void> {
    if (!this.#keeps(subject)) return;
    const keys = subjectKeys(subject);
    await this.#command(
      `Cannot remove the history of ${subject}`,
      (client) =>
        this.#eval(client, REMOVE_SCRIPT, [keys.meta, keys.stream], [
          newEpoch(),
          String(Math.max(META_TTL, this.#history.ttl)),
        ]),
      { timeout: this.#publishTimeout },
    );
  }

  /** Closes both links; waiting calls reject with `unavailable`, pending subscribes resolve. Closing twice is harmless. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    this.#closedSignal.abort();
    this.#stopHearingAlerts();
    this.#handlers.clear();
    this.#subscribing.clear();
    for (const withdraw of this.#withdraw.values()) withdraw();
    this.#withdraw.clear();
    for (const link of [this.#commands, this.#subscriptions]) {
      link.ready = false;
      for (const wake of [...link.waiters]) wake();
      link.client.destroy();
    }
    await Promise.all([this.#commands.connecting, this.#subscriptions.connecting]);
    // node-redis may finish a connection that was under way when it was
    // destroyed, and start its ping timer: destroying again ends both.
    for (const link of [this.#commands, this.#subscriptions]) link.client.destroy();
  }

  /**
   * Dials `link` again after an attempt failed or the link was lost: waits
   * the backoff, then until Redis accepts a TCP connection (a plain probe,
   * which Deno does not leak), then lets node-redis connect, its handshake
   * and subscriptions included. A failure there ends in "terminated" again,
   * and here again, one failure further in the backoff.
   */
  async #redial(link: Link): Promise<void> {
    link.ready = false;
    const signal = this.#closedSignal.signal;
    while (!signal.aborted) {
      const delay = Math.min(this.#maxReconnectDelay, this.#reconnectDelay * 2 ** Math.min(link.failures++, 20));
      await abortableDelay(Math.round(delay / 2 + Math.random() * delay / 2), signal);
      if (signal.aborted) return;
      if (!(await this.#accepts(signal))) continue;
      if (signal.aborted) return;
      link.connecting = link.client.connect().then(() => {}, () => {});
      return;
    }
  }

  /** Whether Redis accepts a TCP connection now, within the connect timeout. */
  async #accepts(signal: AbortSignal): Promise<boolean> {
    const timeout = AbortSignal.timeout(this.#connectTimeout);
    try {
      const probe = await Deno.connect({
        hostname: this.#hostname,
        port: this.#port,
        signal: AbortSignal.any([signal, timeout]),
      });
      probe.close();
      return true;
    } catch {
      return false;
    }
  }

  #keeps(subject: string): boolean {
    return this.#history.names.has(subject) || this.#history.prefixes.some((prefix) => subject.startsWith(prefix));
  }

  /** SUBSCRIBEs to `subject`'s channel; retried after the link comes back if it was lost meanwhile. */
  async #subscribeAtRedis(subject: string): Promise<void> {
    // An unsubscribe of the subject still on its way would undo a subscribe sent behind it: the client takes the
    // channel for subscribed still, sends nothing, and the unsubscribe's reply then drops it.
    await this.#unsubscribing.get(subject);
    const listener = (message: string) => this.#deliver(subject, message);
    while (!this.#closedSignal.signal.aborted && this.#handlers.has(subject)) {
      try {
        await this.#subscriptions.client.subscribe(PREFIX + subject, listener);
        return;
      } catch (error) {
        if (isErrorReply(error)) {
          // Redis said no (an ACL, say): asking again would get the same answer.
          this.#logger.error("redis refused a subscription", { subject, reason: (error as Error).message });
          return;
        }
        // The link dropped before Redis confirmed: wait for it, then try again.
        const { ready } = this.#whenLinkReady(this.#subscriptions);
        await ready;
      }
    }
  }

  #deliver(subject: string, payload: string): void {
    const handler = this.#handlers.get(subject);
    if (!handler) return;
    let envelope: Envelope;
    try {
      envelope = JSON.parse(payload);
      if (typeof envelope !== "object" || envelope === null || !("d" in envelope)) throw new SyntaxError("no data");
    } catch {
      this.#logger.warn("dropping a message that is not ours", { subject, bytes: payload.length });
      return;
    }
    const message: BusMessage = {
      subject,
      ...(typeof envelope.r === "string" ? { replyTo: envelope.r } : {}),
      ...(typeof envelope.o === "number" && typeof envelope.e === "string"
        ? { position: { offset: envelope.o, epoch: envelope.e } }
        : {}),
    };
    try {
      handler(envelope.d, message);
    } catch (error) {
      // Thrown into node-redis, it would reset the link's parser mid-stream.
      this.#logger.error("a subscriber's handler threw", { subject, reason: String(error) });
    }
  }

  /**
   * Runs `run` on the command link once it is up (and, with `hold`, once
   * the grace after a reconnect is over), within `timeout`, the waits
   * included.
   *
   * @throws {BusError} `unavailable` past the timeout, when closed or
   * disconnected meanwhile, or with too many waiting; `refused` for an error
   * answered by Redis.
   */
  async #command<T>(
    what: string,
    run: (client: RedisClient) => Promise<T>,
    options: { timeout: number; signal?: AbortSignal; hold?: boolean },
  ): Promise<T> {
    const { timeout, signal } = options;
    signal?.throwIfAborted();
    if (this.#closedSignal.signal.aborted) throw new BusError("unavailable", `${what}: the Redis bus is closed`);
    let timer: ReturnType<typeof setTimeout> | undefined;
    let settle: (outcome: "timeout" | "aborted") => void = () => {};
    const ended = new Promise<"timeout" | "aborted">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeout);
      settle = resolve;
    });
    const abort = () => settle("aborted");
    signal?.addEventListener("abort", abort, { once: true });
    try {
      while (!this.#commands.ready) {
        if (this.#closedSignal.signal.aborted) throw new BusError("unavailable", `${what}: the Redis bus is closed`);
        if (this.#commands.waiters.size >= this.#maxWaiting) {
          throw new BusError(
            "unavailable",
            `${what}: the Redis link is down and ${this.#maxWaiting} calls wait for it`,
          );
        }
        const waiting = this.#whenLinkReady(this.#commands);
        const outcome = await Promise.race([waiting.ready, ended]);
        waiting.cancel();
        if (outcome === "aborted") throw signal!.reason;
        if (outcome === "timeout") {
          throw new BusError("unavailable", `${what}: the Redis link stayed down for ${timeout} ms`);
        }
      }
      if (this.#closedSignal.signal.aborted) throw new BusError("unavailable", `${what}: the Redis bus is closed`);
      const held = this.#holdUntil - Date.now();
      if (options.hold && held > 0) {
        let wake: ReturnType<typeof setTimeout> | undefined;
        const outcome = await Promise.race([new Promise((resolve) => (wake = setTimeout(resolve, held))), ended]);
        clearTimeout(wake);
        if (outcome === "aborted") throw signal!.reason;
        if (outcome === "timeout") {
          throw new BusError(
            "unavailable",
            `${what}: Redis is back, and publishes wait for pushers to subscribe again`,
          );
        }
      }
      const running = run(this.#commands.client);
      running.catch(() => {}); // Answered below, or after its caller gave up.
      const outcome = await Promise.race([running.then((value) => ({ value })), ended]);
      if (outcome === "aborted") throw signal!.reason;
      if (outcome === "timeout") {
        throw new BusError("unavailable", `${what}: Redis did not answer within ${timeout} ms`);
      }
      return outcome.value;
    } catch (error) {
      if (error instanceof BusError || error === signal?.reason) throw error;
      throw toBusError(what, error);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", abort);
    }
  }

  /** Resolves `ready` when `link` is ready, or the bus closes; `cancel` stops waiting. */
  #whenLinkReady(link: Link): { ready: Promise<void>; cancel: () => void } {
    let wake = () => {};
    const ready = new Promise<void>((resolve) => {
      wake = () => {
        link.waiters.delete(wake);
        resolve();
      };
    });
    if (link.ready || this.#closedSignal.signal.aborted) wake();
    else link.waiters.add(wake);
    return { ready, cancel: () => link.waiters.delete(wake) };
  }

  /** Runs a script by its SHA1, loading it on first use and again after Redis lost it (a restart). */
  async #eval(client: RedisClient, script: string, keys: string[], args: string[]): Promise<unknown> {
    let sha = this.#scriptSha.get(script);
    if (!sha) {
      sha = sha1(script);
      this.#scriptSha.set(script, sha);
    }
    const digest = await sha;
    try {
      return await client.sendCommand(["EVALSHA", digest, String(keys.length), ...keys, ...args]);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith("NOSCRIPT")) throw error;
      return await client.sendCommand(["EVAL", script, String(keys.length), ...keys, ...args]);
    }
  }

  #onReady(link: Link): void {
    if (this.#closedSignal.signal.aborted) {
      // A reconnect that was under way when the bus closed: end it.
      link.client.destroy();
      return;
    }
    link.ready = true;
    link.failures = 0;
    if (link.everReady) {
      if (link === this.#subscriptions) this.#reconnects++;
      else this.#holdUntil = Date.now() + this.#reconnectGrace;
      this.#logger.info("redis link back", { bus: this.address, link: link.name });
    }
    link.everReady = true;
    link.lostLogged = false;
    this.#tlsAlerts.reset();
    if (!this.#announced && this.connected) {
      this.#announced = true;
      this.#logger.info("connected to redis", { bus: this.address });
    }
    if (link === this.#subscriptions) {
      for (const subject of this.#withdrawn) if (!this.#handlers.has(subject)) this.#unsubscribeAtRedis(subject);
      this.#withdrawn.clear();
    }
    for (const wake of [...link.waiters]) wake();
  }

  #onLost(link: Link, error: Error): void {
    link.ready = link.client.isReady;
    if (this.#closedSignal.signal.aborted) return;
    if (isTlsAlert(error)) {
      // Said once per cause, not once per outage: it is why every retry fails.
      link.lostLogged = true;
      return this.#onTlsAlert(error);
    }
    if (link.lostLogged) return;
    link.lostLogged = true;
    const hint = link.everReady ? undefined : this.#schemeHint(error);
    this.#logger.warn(link.everReady ? "redis link lost" : "cannot reach redis", {
      bus: this.address,
      link: link.name,
      reason: error.message,
      ...(hint && { hint }),
    });
  }

  /** What a first connect's failure may mean of the address's scheme: TLS to a plain Redis, or plain text to a TLS one. */
  #schemeHint(error: Error): string | undefined {
    if (this.address.startsWith("rediss:") && error.message === "Connection timeout") {
      return "no TLS handshake in time: if Redis serves plain TCP on this port, use redis:// without --bus-ca";
    }
    if (this.address.startsWith("redis:") && /ECONNRESET|Socket closed unexpectedly/.test(error.message)) {
      return "Redis closed the connection before answering: if it serves TLS on this port (tls-port), use rediss://";
    }
    return undefined;
  }

  /**
   * Redis refused the TLS handshake with an alert (a client certificate
   * missing or not trusted): a configuration to fix, said as a warning once
   * per cause until a link is up, as the hub link says its own.
   */
  #onTlsAlert(error: Error): void {
    if (this.#closedSignal.signal.aborted) return;
    this.#tlsAlerts.log("warn", "Redis TLS handshake refused", error.message, {
      bus: this.address,
      error: error.message,
      hint: TLS_ALERT_HINT,
    });
  }
}

/** The keys of `subject`: its position (epoch, offset), its stream, and the prefix of its idempotency keys. */
function subjectKeys(subject: string): { meta: string; stream: string; idempotency: string } {
  const tag = `${PREFIX}{${subject}}`;
  return { meta: `${tag}:meta`, stream: `${tag}:stream`, idempotency: `${tag}:idem:` };
}

/** Maps what node-redis threw: errors Redis answered are `refused`, the rest (a lost link) `unavailable`. */
function toBusError(what: string, error: unknown): BusError {
  const message = error instanceof Error ? error.message : String(error);
  const answered = isErrorReply(error);
  return new BusError(answered ? "refused" : "unavailable", `${what}: ${message}`, { cause: error });
}

/** Whether Redis answered `error` (node-redis's ErrorReply), rather than the link failing. */
function isErrorReply(error: unknown): boolean {
  return error instanceof Error && error.constructor.name === "ErrorReply";
}

async function sha1(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

function positive(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(`Cannot keep history on Redis: ${name} must be a positive number, got ${value}`);
  }
  return value;
}
