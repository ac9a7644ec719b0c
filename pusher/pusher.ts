/**
 * One pusher worker: it takes WebSocket connections from its transport,
 * greets each with its address, and delivers to them what its bus carries.
 * Who may connect (`admission.ts`), the connections (`registry.ts`), channel
 * membership (`channels.ts`), the delivery of events (`delivery.ts`), the
 * client's commands (`client_protocol.ts`), presence (`presence.ts`), client
 * message rates (`rate_limit.ts`) and metrics (`pusher_metrics.ts`) each
 * have a file; this one wires them to the bus and the sockets, and applies
 * commands, the client's and the backend's.
 *
 * @module
 */

import { busName } from "../shared/bus_address.ts";
import { demoPage } from "./demo_page.ts";
import { clientAssetResponse } from "./client_asset.ts";
import { Admission, type Admitted, type Refused } from "./admission.ts";
import { Delivery } from "./delivery.ts";
import { type Connection, ConnectionRegistry } from "./registry.ts";
import { ChannelMembership, type JoinOutcome, type Member } from "./channels.ts";
import { channelMatcher } from "./channel_patterns.ts";
import {
  type ClientError,
  type ClientProtocolOptions,
  CONNECTION_LIMIT,
  CONNECTION_LIMIT_REASON,
  ErrorCode,
  errorFrame,
  type HistoryCommand,
  historyResultFrame,
  INSUFFICIENT_STATE,
  INSUFFICIENT_STATE_REASON,
  isClientError,
  isMalformed,
  parseClientMessage,
  type PresenceCommand,
  presenceResultFrame,
  type RefreshCommand,
  resultFrame,
  subscribedFrame,
  TOKEN_EXPIRED,
  TOKEN_EXPIRED_REASON,
  TOO_MANY_BAD_MESSAGES,
  TOO_MANY_BAD_MESSAGES_REASON,
  unsubscribedFrame,
} from "./client_protocol.ts";
import { DEFAULT_MAX_CLIENT_READS, DEFAULT_PRESENCE_TIMEOUT } from "./defaults.ts";
import { Presence } from "./presence.ts";
import { Recovery } from "./recovery.ts";
import { CatchUp } from "./catch_up.ts";
import { DEFAULT_MAX_MESSAGE_RATE, type RateBucket, RateLimiter } from "./rate_limit.ts";
import {
  CLIENT_CLOSED,
  closeReason,
  healthOf,
  type PusherCounters,
  registerPusherMetrics,
  workerCounters,
} from "./pusher_metrics.ts";
import type { ClientSocket, SocketHandlers } from "./socket.ts";
import type { Transport, TransportRequest } from "./transport.ts";
import { CloseCode } from "./websocket.ts";
import {
  BROADCAST_SUBJECT,
  type ChannelEvent,
  channelNameError,
  channelOfSubject,
  channelSubject,
  type Command,
  type CommandReply,
  type ConnectionEvent,
  type ConnectionInfo,
  CONNECTIONS_SUBJECT,
  DEFAULT_DISCONNECT,
  mergeChannelPresence,
  PRESENCE_SUBJECT,
  presenceQuery,
  readChannelHistory,
  toCommand,
  toDataPush,
  toPresenceQuery,
  toUserCommandReply,
  userOfSubject,
  type UserPresence,
  userSubject,
  workerSubject,
} from "../shared/address.ts";
import type { Bus, BusMessage } from "../shared/bus.ts";
import type { Json } from "../shared/json.ts";
import { createLogger, type Logger } from "../shared/log.ts";
import { PROMETHEUS_CONTENT_TYPE, Registry, type RegistrySnapshot, renderPrometheus } from "../shared/metrics.ts";
import { Router, text } from "../shared/http.ts";

/** A handshake whose token expired: closed with 4401 at once, before any greeting. */
const EXPIRED_HANDLERS: SocketHandlers = {
  open: (socket) => socket.close(TOKEN_EXPIRED, TOKEN_EXPIRED_REASON),
  message: () => {},
  close: () => {},
};

const READ = { methods: ["GET", "HEAD"], hint: "use GET" };
/** A worker's reply to a command or an acknowledged send for a connection it does not have. */
const NO_SUCH_CONNECTION = "no such connection";
const HTML_CONTENT_TYPE = "text/html;charset=utf-8";

/** Options for {@linkcode Pusher}. */
export interface PusherOptions {
  /** This worker's id: part of every connection's address. */
  workerId: string;
  /** What events come from; the pusher subscribes it to its subjects. */
  bus: Bus;
  /** What turns requests into sockets: `listenTransport` from `pusher/server.ts`, say. */
  transport: Transport;
  /** Publisher base URL the demo page calls; null lets the page use its own host on port 4237. @default {null} */
  publisherUrl?: string | null;
  /**
   * Origins allowed to connect, `*` wildcards allowed (`https://*.example.com`).
   * A browser handshake from another origin gets 403. Requests without an
   * `Origin` header (not from a browser) are not affected. null allows all.
   *
   * @default {null}
   */
  allowedOrigins?: readonly string[] | null;
  /**
   * HS256 secret for client tokens. When set, a handshake must carry
   * `?token=JWT` with a valid signature, a future `exp` and a `sub`, which
   * becomes the connection's user id; otherwise 401. An empty secret is
   * refused (RangeError): anyone could sign tokens with it.
   *
   * @default {null}
   */
  tokenSecret?: string | null;
  /**
   * Connections one user may have open on every pusher of the bus together.
   * A connection is counted against those of its user opened before it
   * (by {@linkcode OpenedAt}: the first ones stay), asking every worker as
   * presence does within `presenceTimeout`; one past the limit is closed
   * with 3504 `connection limit` instead of its greeting. Connections
   * without a user (no token secret) are not limited. 0: no limit.
   * @default {0}
   */
  maxConnectionsPerUser?: number;
  /** Frames per second a client may send (with a burst of as many): messages, their fragments, pings and pongs; faster closes with 1008. @default {50} */
  maxMessageRate?: number;
  /** Channels one connection may be a member of; past it, 429. @default {128} */
  maxChannelsPerConnection?: number;
  /** Distinct channels this worker may have members of; past it, 429. @default {100000} */
  maxChannelsPerWorker?: number;
  /** Longest channel name; longer is refused with 422 (and never above what the bus carries, 248). @default {248} */
  maxChannelLength?: number;
  /** Largest client command, in UTF-8 bytes; larger gets 413. @default {4096} */
  maxCommandBytes?: number;
  /** Malformed client messages in a row (400, 413) that close a client with 4400. @default {10} */
  maxBadMessages?: number;
  /**
   * Publications a subscribe with `since` may recover from a channel's
   * history, and live ones held for it meanwhile; past either, the client is
   * told it did not recover (`recovery.ts`). @default {100}
   */
  maxRecoverMessages?: number;
  /**
   * How often a worker with channel members looks whether its bus link came
   * back, to read what its history channels missed (`catch_up.ts`), in
   * milliseconds. @default {1000}
   */
  catchUpCheckInterval?: number;
  /** Users listed in a worker's answer about a channel's presence, and in a client's `presence` answer. @default {1000} */
  maxPresenceUsers?: number;
  /**
   * Milliseconds a client's `presence` waits for every worker's reply;
   * past it, it answers what arrived with `partial: true`. @default {1000}
   */
  presenceTimeout?: number;
  /**
   * History and presence calls of this worker's clients in flight at once,
   * all connections together (each has at most
   * {@linkcode MAX_READS_IN_FLIGHT}); past it, 429. @default {1000}
   */
  maxClientReads?: number;
  /**
   * Channels whose members hear who joins and leaves, names and `prefix*`
   * patterns (`room.*`). @default {[]}
   */
  presenceChannels?: readonly string[];
  /**
   * Tell every connection's greeting and end on the bus's `connections`
   * subject ({@linkcode ConnectionEvent}), for backends. @default {false}
   */
  connectionEvents?: boolean;
  /**
   * Metrics of every worker of this pusher, merged; `/metrics` and
   * `/healthz` answer from it.
   *
   * @default {this worker's own metrics}
   */
  gather?: () => Promise<RegistrySnapshot>;
  /** Where log lines go. @default {createLogger("pusher")} */
  logger?: Logger;
  /** Monotonic clock for message rates, in milliseconds. @default {performance.now} */
  now?: () => number;
  /** Wall clock for tokens' expiry, in milliseconds since the epoch. @default {Date.now} */
  clock?: () => number;
  /**
   * Milliseconds between two looks for connections whose token expired
   * (closed with 4401 unless the client sent a new one): the most a
   * connection outlives its token. @default {1000}
   */
  expiryCheckInterval?: number;
}

/** The default of {@linkcode PusherOptions.expiryCheckInterval}. */
export const DEFAULT_EXPIRY_CHECK_INTERVAL = 1000;

/**
 * Messages a connection may send before its greeting, held until it is
 * greeted; one more closes it with 1008. A client that waits for the
 * greeting, as `/client.js` does, sends none.
 */
export const MAX_EARLY_MESSAGES = 16;

/** History and presence reads one connection may have in flight at once; past it, 429. */
export const MAX_READS_IN_FLIGHT = 8;

/** An open connection, with its message-rate bucket, its channels and its count of bad messages. */
interface PusherConnection extends Connection, Member {
  /**
   * Its message-rate bucket, made full on its first message, which is what
   * a bucket made full at the open would hold by then: an idle connection
   * holds none.
   */
  rate: RateBucket | null;
  /** Which channels the client may subscribe to itself (the token's claim, the last refresh's); null: any. */
  may: ((channel: string) => boolean) | null;
  /** When its token expires (milliseconds since the epoch; moved on by a refresh); Infinity without one. */
  expires: number;
  /** Malformed messages in a row. */
  bad: number;
  /** Its history and presence reads in flight. */
  reads: number;
  /** Whether it was greeted: its end is told (`connectionEvents`) only then. */
  greeted: boolean;
  /** The presence channels whose join was told, and whose leave is told therefore; null while none. */
  told: Set<string> | null;
  /** When it opened, in milliseconds since the epoch: orders a user's connections for `maxConnectionsPerUser`. */
  readonly opened: number;
}

/**
 * A pusher worker. Subscribes its bus to the broadcast subject, its own
 * worker subject and the presence subject, and to a channel's (a user's)
 * subject while it has a member of the channel (a connection of the user);
 * greets each new connection with its address; sends broadcasts to every
 * connection, channel publications to the channel's members, a user's to
 * the user's connections and targeted events to one; applies the client's
 * subscribe and unsubscribe commands and the backend's commands; answers
 * presence requests.
 *
 * @example
 * ```ts
 * import { Pusher } from "./pusher.ts";
 * import { listenTransport, serve } from "./server.ts";
 * import { newWorkerId } from "../shared/address.ts";
 * import { openBus } from "../shared/open_bus.ts";
 *
 * const bus = openBus("channel://127.0.0.1:2206");
 * const pusher = new Pusher({ workerId: newWorkerId(), bus, transport: listenTransport });
 * serve({ port: 4236 }, pusher.handler);
 * ```
 */
export class Pusher {
  readonly workerId: string;
  /** Where this pusher logs; its transport can log there too. */
  readonly logger: Logger;
  /** This worker's metrics. */
  readonly metrics: Registry = new Registry();
  readonly #connections = new ConnectionRegistry<PusherConnection>();
  /**
   * What connections sent before their greeting (a client that does not wait
   * for it; the greeting waits for the user's subject, and for the user's
   * count under a connection limit): handled once greeted, in order, as the
   * greeting must come first and a connection refused at its limit gets
   * nothing. At most {@linkcode MAX_EARLY_MESSAGES} each.
   */
  readonly #early = new Map<PusherConnection, (string | Uint8Array)[]>();
  readonly #bus: Bus;
  readonly #transport: Transport;
  readonly #admission: Admission;
  readonly #rates: RateLimiter;
  readonly #delivery: Delivery;
  readonly #page: string;
  readonly #gather: () => Promise<RegistrySnapshot>;
  readonly #anonymous: SocketHandlers;
  readonly #counters: PusherCounters;
  readonly #membership: ChannelMembership<PusherConnection>;
  readonly #presence: Presence<PusherConnection>;
  readonly #recovery: Recovery<PusherConnection>;
  readonly #catchUp: CatchUp;
  readonly #protocol: ClientProtocolOptions;
  readonly #maxBadMessages: number;
  readonly #presenceTimeout: number;
  readonly #maxClientReads: number;
  readonly #maxConnectionsPerUser: number;
  /** This worker's clients' history and presence reads in flight. */
  #clientReads = 0;
  readonly #connectionEvents: boolean;
  /** Channel and user subjects the bus subscribes to now, for detach(). */
  readonly #interest = new Set<string>();
  /** Of those, the ones whose subscription the bus has not yet confirmed in effect. */
  readonly #pending = new Map<string, Promise<void>>();
  /** Clients' subscribes not yet answered, by connection and channel: a backend's unsubscribe tells after them. */
  readonly #replying = new Map<PusherConnection, Map<string, Promise<void>>>();
  /** Connections with a token, which end when it expires; looked over while there are any. */
  readonly #expiring = new Set<PusherConnection>();
  readonly #clock: () => number;
  readonly #expiryCheckInterval: number;
  #expiryTimer: ReturnType<typeof setInterval> | undefined;
  #accepting = true;

  constructor(options: PusherOptions) {
    this.workerId = options.workerId;
    this.#bus = options.bus;
    this.#transport = options.transport;
    this.logger = options.logger ?? createLogger("pusher", { fields: { worker: this.workerId } });
    this.#admission = new Admission(options);
    this.#rates = new RateLimiter(options.maxMessageRate ?? DEFAULT_MAX_MESSAGE_RATE, options.now);
    this.#clock = options.clock ?? Date.now;
    this.#expiryCheckInterval = options.expiryCheckInterval ?? DEFAULT_EXPIRY_CHECK_INTERVAL;
    this.#page = demoPage({ publisherUrl: options.publisherUrl ?? null });
    this.#gather = options.gather ?? (() => Promise.resolve(this.metrics.snapshot()));
    // Connections without a user share one handlers object: no per-socket closures.
    this.#anonymous = this.#handlersFor(null, null, Infinity);
    this.#membership = new ChannelMembership({
      maxPerConnection: options.maxChannelsPerConnection,
      maxPerWorker: options.maxChannelsPerWorker,
      onFirst: (channel) => {
        this.#catchUp.watch(true);
        this.#interested(channelSubject(channel), this.#onChannel);
      },
      onLast: (channel) => {
        this.#recovery.forget(channel);
        this.#catchUp.forget(channel);
        this.#uninterested(channelSubject(channel));
        if (this.#membership.size === 0) this.#catchUp.watch(false);
      },
    });
    this.#recovery = new Recovery({
      workerId: this.workerId,
      bus: this.#bus,
      isOpen: (connection) => this.#connections.of(connection.socket) === connection,
      isMember: (connection, channel) => this.#membership.has(connection, channel),
      logger: this.logger,
      maxRecoverMessages: options.maxRecoverMessages,
      onTold: (channel, position) => this.#catchUp.told(channel, position),
      onUnplaced: (channel, reconnects) => this.#catchUp.unplaced(channel, reconnects),
      settled: (channel) => this.#catchUp.settled(channel),
    });
    this.#protocol = { maxCommandBytes: options.maxCommandBytes, maxChannelLength: options.maxChannelLength };
    this.#maxBadMessages = options.maxBadMessages ?? 10;
    this.#presenceTimeout = options.presenceTimeout ?? DEFAULT_PRESENCE_TIMEOUT;
    this.#maxClientReads = options.maxClientReads ?? DEFAULT_MAX_CLIENT_READS;
    this.#maxConnectionsPerUser = options.maxConnectionsPerUser ?? 0;
    if (!Number.isSafeInteger(this.#maxConnectionsPerUser) || this.#maxConnectionsPerUser < 0) {
      throw new RangeError(`Invalid maxConnectionsPerUser: expected 0 or more, got ${this.#maxConnectionsPerUser}`);
    }
    this.#connectionEvents = options.connectionEvents ?? false;
    this.#presence = new Presence({
      workerId: this.workerId,
      members: (channel) => this.#membership.members(channel),
      channels: () => this.#membership.channels(),
      ofUser: (user) => this.#connections.ofUser(user),
      counts: () => ({
        connections: this.#connections.size,
        users: this.#connections.users,
        channels: this.#membership.size,
      }),
      counters: () => workerCounters(this.metrics.snapshot()),
    }, options);
    this.#counters = registerPusherMetrics(this.metrics, {
      connections: () => this.#connections.size,
      busConnected: () => this.#bus.connected,
      busReconnects: () => this.#bus.reconnects,
      channels: () => this.#membership.size,
      users: () => this.#connections.users,
    });
    this.#delivery = new Delivery({
      workerId: this.workerId,
      connections: this.#connections,
      members: (channel) => this.#membership.members(channel),
      hold: this.#recovery,
      transport: this.#transport,
      counters: this.#counters,
      logger: this.logger,
    });
    this.#catchUp = new CatchUp({
      bus: this.#bus,
      deliver: (channel, data, position) => {
        this.#recovery.observe(channel, position);
        this.#delivery.channel(channel, data, position);
      },
      // Centrifugo's answer to a gap it cannot fill: the members reconnect and are told they did not recover.
      // Not those whose subscribe is still to be answered: their reply (or recovery) tells them where they stand.
      lost: (channel) => {
        for (const connection of [...this.#membership.members(channel)]) {
          if (this.#recovery.joining(connection, channel)) continue;
          connection.socket.close(INSUFFICIENT_STATE, INSUFFICIENT_STATE_REASON);
        }
      },
      maxMessages: this.#recovery.maxRecoverMessages,
      logger: this.logger,
      checkInterval: options.catchUpCheckInterval,
    });
    this.#bus.subscribe(BROADCAST_SUBJECT, (data) => this.#delivery.broadcast(data));
    this.#bus.subscribe(workerSubject(this.workerId), (data, message) => this.#onWorker(data, message));
    this.#bus.subscribe(PRESENCE_SUBJECT, (data, message) => this.#onPresence(data, message));
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Serves WebSocket upgrades, the demo page on `GET /`, the client library (`/client.js`, `/client.d.ts`), `/healthz` and `/metrics`. */
  readonly handler = (req: TransportRequest): Response | Promise<Response> => {
    if (this.#transport.isUpgrade(req)) return this.#upgrade(req, new URL(req.url));
    return this.#routes(req);
  };

  /** The pages, by exact path; GET and HEAD only. */
  readonly #routes = new Router<(req: TransportRequest, url: URL) => Response | Promise<Response>>({
    "/": { ...READ, handler: () => new Response(this.#page, { headers: { "content-type": HTML_CONTENT_TYPE } }) },
    "/client.js": { ...READ, handler: (req, url) => clientAssetResponse(req.headers, url.pathname) },
    "/client.d.ts": { ...READ, handler: (req, url) => clientAssetResponse(req.headers, url.pathname) },
    "/healthz": {
      ...READ,
      handler: async () => {
        const health = healthOf(await this.#gather(), busName(this.#bus.address));
        return text(health.ok ? 200 : 503, `${health.reason}\n`);
      },
    },
    "/metrics": {
      ...READ,
      handler: async () =>
        new Response(renderPrometheus(await this.#gather()), { headers: { "content-type": PROMETHEUS_CONTENT_TYPE } }),
    },
  }).handler((route, req: TransportRequest, url) => route.handler(req, url));

  /** Stops taking connections and closes every open one with `code`. */
  closeAll(code: number = CloseCode.goingAway, reason = "going away"): void {
    this.#accepting = false;
    for (const connection of this.#connections.values()) connection.socket.close(code, reason);
  }

  /** Counts in `pusher_rejected_total` a connection its transport refused before {@linkcode Pusher.handler} saw it. */
  countRefusal(reason: string): void {
    this.#counters.rejected.inc(1, reason);
  }

  /**
   * Closes with 4401 every connection whose token has expired (a refresh
   * moves its expiry on); returns how many. Runs every
   * `expiryCheckInterval` while there are connections with a token.
   */
  closeExpired(): number {
    const now = this.#clock();
    let closed = 0;
    for (const connection of this.#expiring) {
      if (connection.expires > now) continue;
      this.logger.info("closing a client whose token expired", { connection: connection.id });
      // Its closing handler takes it out of the set: deleting while iterating a Set is safe.
      connection.socket.close(TOKEN_EXPIRED, TOKEN_EXPIRED_REASON);
      closed++;
    }
    return closed;
  }

  /** Stops listening to the bus. */
  detach(): void {
    clearInterval(this.#expiryTimer);
    this.#expiryTimer = undefined;
    this.#catchUp.watch(false);
    this.#bus.unsubscribe(BROADCAST_SUBJECT);
    this.#bus.unsubscribe(workerSubject(this.workerId));
    this.#bus.unsubscribe(PRESENCE_SUBJECT);
    for (const subject of this.#interest) this.#bus.unsubscribe(subject);
    this.#interest.clear();
  }

  #upgrade(req: TransportRequest, url: URL): Response | Promise<Response> {
    if (!this.#accepting) return this.#reject("shutting_down", 503, "Shutting down");
    const admission = this.#admission.check(req, url);
    return admission instanceof Promise
      ? admission.then((admitted) => this.#admit(req, admitted))
      : this.#admit(req, admission);
  }

  #admit(req: TransportRequest, admission: Admitted | Refused): Response {
    if (!admission.admitted && admission.expired) {
      // A browser sees a 401 as 1006 and retries for ever: it is let in to be told, with a close code it can read.
      this.#counters.rejected.inc(1, admission.reason);
      this.logger.info("refused a connection", { status: TOKEN_EXPIRED, reason: admission.message });
      return this.#transport.upgrade(req, EXPIRED_HANDLERS);
    }
    if (!admission.admitted) return this.#reject(admission.reason, admission.status, admission.message);
    const handlers = admission.user === null && admission.channels === null ? this.#anonymous : this.#handlersFor(
      admission.user,
      admission.channels === null ? null : channelMatcher(admission.channels),
      admission.expires ?? Infinity,
    );
    return this.#transport.upgrade(req, handlers);
  }

  #reject(reason: string, status: number, message: string): Response {
    this.#counters.rejected.inc(1, reason);
    this.logger.info("refused a connection", { status, reason: message });
    return text(status, `${message}\n`);
  }

  #handlersFor(user: string | null, may: ((channel: string) => boolean) | null, expires: number): SocketHandlers {
    return {
      open: (socket) => this.#open(socket, user, may, expires),
      message: (socket, data) => this.#message(socket, data),
      frame: (socket) => this.#limitRate(socket),
      // A connection the server closes is forgotten at once: in no channel, user or presence count from then on.
      closing: (socket, code) => this.#forget(socket, code, closeReason(code)),
      // Not closed by the server (that came through closing): lost, or closed by the client, whose code is not ours.
      close: (socket, code) =>
        this.#forget(socket, code, code === CloseCode.abnormal ? closeReason(code) : CLIENT_CLOSED),
    };
  }

  #open(
    socket: ClientSocket,
    user: string | null,
    may: ((channel: string) => boolean) | null,
    expires: number,
  ): void {
    const id = this.#connections.nextId();
    const connection: PusherConnection = {
      id,
      socket,
      user,
      may,
      expires,
      rate: null,
      channels: null,
      bad: 0,
      reads: 0,
      greeted: false,
      told: null,
      opened: this.#clock(),
    };
    this.#connections.add(connection);
    this.#counters.accepted.inc();
    if (expires !== Infinity) this.#watchExpiry(connection);
    if (user === null) return this.#greet(connection);
    this.logger.debug("connected", { connection: id, user });
    if (this.#connections.ofUser(user).size === 1) this.#interested(userSubject(user), this.#onUser);
    // Greeted once its user's subject is in effect: from then on a publish to the user reaches it.
    if (this.#maxConnectionsPerUser === 0) return this.#whenInEffect(userSubject(user), () => this.#greet(connection));
    const within = this.#withinUserLimit(connection, user);
    this.#whenInEffect(userSubject(user), () => void within.then((ok) => ok && this.#greet(connection)));
  }

  /**
   * Whether `connection` is within its user's connection limit: fewer than
   * the limit of the user's connections, on every worker, opened before it.
   * Asked of this worker first, then of all of them; closes it when not.
   * When the bus cannot ask, this worker's count decides.
   */
  #withinUserLimit(connection: PusherConnection, user: string): Promise<boolean> {
    const limit = this.#maxConnectionsPerUser;
    const before = { at: connection.opened, worker_id: this.workerId, connection_id: connection.id };
    const here = this.#presence.answer({ q: "user", user, before }) as UserPresence;
    if (here.connections >= limit) return Promise.resolve(this.#overUserLimit(connection, here.connections));
    const query = presenceQuery({ q: "user", user, before });
    return this.#bus.request(query.subject, { ...query.data }, { timeout: this.#presenceTimeout }).then(
      ({ replies }) => {
        let earlier = 0;
        for (const reply of replies) earlier += toUserCommandReply(reply)?.connections ?? 0;
        return earlier < limit || this.#overUserLimit(connection, earlier);
      },
      (error) => {
        this.logger.warn("could not count a user's connections on the other workers: let in by this one's count", {
          connection: connection.id,
          error: (error as Error).message,
        });
        return true;
      },
    );
  }

  /** Closes a connection past its user's limit, if still open; false. */
  #overUserLimit(connection: PusherConnection, earlier: number): false {
    if (this.#connections.of(connection.socket) !== connection) return false;
    this.logger.info("closing a connection over its user's connection limit", {
      connection: connection.id,
      limit: this.#maxConnectionsPerUser,
      earlier,
    });
    connection.socket.close(CONNECTION_LIMIT, CONNECTION_LIMIT_REASON);
    return false;
  }

  /** Sends the original's greeting, and tells the backend (`connectionEvents`) of a connection still open. */
  #greet(connection: PusherConnection): void {
    if (this.#connections.of(connection.socket) !== connection) return;
    connection.socket.send(`workerID:${this.workerId} connectionID:${connection.id} connected\n`);
    connection.greeted = true;
    if (this.#connectionEvents) this.#tell({ connect: this.#infoOf(connection) });
    const early = this.#early.get(connection);
    if (!early) return;
    this.#early.delete(connection);
    for (const data of early) {
      if (this.#connections.of(connection.socket) !== connection) return;
      this.#command(connection, data);
    }
  }

  #infoOf(connection: PusherConnection): ConnectionInfo {
    return { worker_id: this.workerId, connection_id: connection.id, user: connection.user };
  }

  /** Publishes a connection event for backends; one that cannot be published is logged and lost. */
  #tell(event: ConnectionEvent): void {
    this.#bus.publish(CONNECTIONS_SUBJECT, event as unknown as Json).catch((error) => {
      this.logger.warn("could not tell a connection event", { error: (error as Error).message });
    });
  }

  #forget(socket: ClientSocket, code: number, reason: string): void {
    const connection = this.#connections.remove(socket);
    if (!connection) return;
    this.#early.delete(connection);
    this.#unwatchExpiry(connection);
    this.#counters.disconnects.inc(1, reason);
    if (this.#connectionEvents && connection.greeted) {
      this.#tell({ disconnect: { ...this.#infoOf(connection), code, reason } });
    }
    for (const channel of this.#membership.leaveAll(connection)) this.#announceLeave(channel, connection);
    const user = connection.user;
    if (user !== null && this.#connections.ofUser(user).size === 0) this.#uninterested(userSubject(user));
  }

  #watchExpiry(connection: PusherConnection): void {
    this.#expiring.add(connection);
    this.#expiryTimer ??= setInterval(() => this.closeExpired(), this.#expiryCheckInterval);
  }

  #unwatchExpiry(connection: PusherConnection): void {
    if (!this.#expiring.delete(connection) || this.#expiring.size > 0) return;
    clearInterval(this.#expiryTimer);
    this.#expiryTimer = undefined;
  }

  /** The connection of `socket` if it is within its message rate; else closed, and undefined. */
  #limitRate(socket: ClientSocket): PusherConnection | undefined {
    const connection = this.#connections.of(socket);
    if (!connection || this.#rates.take(connection.rate ??= this.#rates.bucket())) return connection;
    this.logger.info("closing a client over its message rate", { connection: connection.id, rate: this.#rates.rate });
    socket.close(CloseCode.policyViolation, "message rate exceeded");
    return undefined;
  }

  /** A client's message, counted against its rate; before its greeting, held until then. */
  #message(socket: ClientSocket, data: string | Uint8Array): void {
    const connection = this.#limitRate(socket);
    if (!connection) return;
    if (connection.greeted) return this.#command(connection, data);
    let early = this.#early.get(connection);
    if (!early) this.#early.set(connection, early = []);
    if (early.length === MAX_EARLY_MESSAGES) {
      this.logger.info("closing a client that sent too much before its greeting", { connection: connection.id });
      return socket.close(CloseCode.policyViolation, "too many messages before the greeting");
    }
    // A binary message's bytes may be the read buffer's, which the next read reuses.
    early.push(typeof data === "string" ? data : data.slice());
  }

  /** A client's command: `{"id":N,"subscribe":{"channel":...}}` or unsubscribe. */
  #command(connection: PusherConnection, data: string | Uint8Array): void {
    const command = parseClientMessage(data, this.#protocol);
    if (isClientError(command)) return this.#refuse(connection, command);
    // A well-formed command ends a run of malformed ones, whatever its answer.
    connection.bad = 0;
    // A client that heard nothing for a while asks whether the connection still carries anything.
    if (command.op === "ping") return this.#succeed(connection, command.id);
    if (command.op === "refresh") return this.#refresh(connection, command);
    if (command.op === "history") return this.#history(connection, command);
    if (command.op === "presence") return this.#presenceOf(connection, command);
    const { id, channel } = command;
    if (command.op === "unsubscribe") {
      this.#leave(connection, channel);
      return this.#succeed(connection, id);
    }
    // A channel it is in already (the backend may have put it there) needs no claim.
    if (connection.may && !this.#membership.has(connection, channel) && !connection.may(channel)) {
      const message = `Not allowed to subscribe: the token does not grant channel ${channel}`;
      return this.#refuse(connection, { id, code: ErrorCode.forbidden, message });
    }
    const outcome = this.#join(connection, channel, false);
    const refusal = limitError(outcome, this.#membership);
    if (refusal !== null) return this.#refuse(connection, { id, code: ErrorCode.tooManyChannels, message: refusal });
    // From here publications reach it: held until the reply and its replay are out.
    this.#recovery.begin(connection, channel, outcome === "joined");
    const replied = new Promise<void>((resolve) => {
      this.#whenSubscribed(channel, () => {
        // The joiner gets its own join after its reply and what the reply brings.
        void this.#recovery.answer(connection, id, channel, command.since).then(() => {
          if (outcome === "joined") this.#announceJoin(channel, connection);
        }).finally(resolve);
      });
    });
    this.#awaitReply(connection, channel, replied);
  }

  /**
   * Notes a subscribe's reply on its way, until it is out: a backend's
   * unsubscribe of the channel meanwhile came after the subscribe, so its
   * "unsubscribed" must reach the client after the reply, not before it,
   * or the client could not tell which came last.
   */
  #awaitReply(connection: PusherConnection, channel: string, replied: Promise<void>): void {
    let channels = this.#replying.get(connection);
    if (!channels) this.#replying.set(connection, channels = new Map());
    channels.set(channel, replied);
    void replied.then(() => {
      if (channels.get(channel) !== replied) return;
      channels.delete(channel);
      if (channels.size === 0 && this.#replying.get(connection) === channels) this.#replying.delete(connection);
    });
  }

  /**
   * A client's new token: the same user's, valid; from then on the
   * connection ends when the new token expires, and the client may subscribe
   * itself to the channels of the new token's claim (those it is in stay).
   */
  #refresh(connection: PusherConnection, { id, token }: RefreshCommand): void {
    if (connection.user === null) {
      const message = "Cannot refresh: this connection has no token";
      return this.#refuse(connection, { id, code: ErrorCode.forbidden, message });
    }
    const apply = (checked: Admitted | Refused): void => {
      // Closed while a first token check loaded its module: nothing to refresh.
      if (this.#connections.of(connection.socket) !== connection) return;
      if (!checked.admitted) {
        return this.#refuse(connection, { id, code: ErrorCode.unauthorized, message: checked.message });
      }
      if (checked.user !== connection.user) {
        const message = "Cannot refresh: the token is another user's";
        return this.#refuse(connection, { id, code: ErrorCode.forbidden, message });
      }
      connection.expires = checked.expires ?? Infinity;
      connection.may = checked.channels === null ? null : channelMatcher(checked.channels);
      this.logger.debug("refreshed a token", { connection: connection.id });
      this.#succeed(connection, id);
    };
    const checked = this.#admission.verify(token);
    if (checked instanceof Promise) void checked.then(apply);
    else apply(checked);
  }

  /**
   * A client's history of a channel it is a member of (as Centrifugo lets a
   * subscriber ask): at most `--max-recover-messages` publications, forward
   * from `since` or the last ones with `reverse`, answered as the
   * publisher's `/api/history` answers; 404 for a channel without history,
   * 503 when the bus does not answer.
   */
  #history(connection: PusherConnection, command: HistoryCommand): void {
    const { id, channel, since, reverse } = command;
    if (!this.#membership.has(connection, channel)) {
      const message = `Not subscribed to channel ${channel}: history is for its members`;
      return this.#refuse(connection, { id, code: ErrorCode.forbidden, message });
    }
    const limit = Math.min(command.limit ?? Infinity, this.#recovery.maxRecoverMessages);
    const options = { limit, ...(since === undefined ? {} : { since }), ...(reverse ? { reverse } : {}) };
    this.#read(connection, id, "History", () => readChannelHistory(this.#bus, channel, options), (history) => {
      if (history !== null) return historyResultFrame(id, history);
      return { id, code: ErrorCode.notFound, message: `History is not kept for channel ${channel}` };
    });
  }

  /**
   * A client's question about a presence channel it is a member of, asked
   * of every worker as the publisher's `/api/presence` asks: `presence`
   * counts and lists the users (at most `maxPresenceUsers`),
   * `presence_stats` only counts; `partial: true` when a worker did not
   * answer within `presenceTimeout`. Only on presence channels, whose
   * members already hear every join and leave: elsewhere the users stay
   * the backend's to tell (403).
   */
  #presenceOf(connection: PusherConnection, command: PresenceCommand): void {
    const { id, channel, listUsers } = command;
    if (!this.#membership.has(connection, channel)) {
      const message = `Not subscribed to channel ${channel}: presence is for its members`;
      return this.#refuse(connection, { id, code: ErrorCode.forbidden, message });
    }
    if (!this.#presence.isPresenceChannel(channel)) {
      const message = `Presence is not open on channel ${channel}: it is not a presence channel`;
      return this.#refuse(connection, { id, code: ErrorCode.forbidden, message });
    }
    const query = presenceQuery({ q: "channel", channel });
    const ask = () => this.#bus.request(query.subject, { ...query.data }, { timeout: this.#presenceTimeout });
    this.#read(connection, id, "Presence", ask, ({ replies, expected }) => {
      const presence = mergeChannelPresence(replies, this.#presence.maxPresenceUsers, listUsers);
      return presenceResultFrame(id, presence, expected !== null && replies.length < expected);
    });
  }

  /**
   * Runs a client's read of the bus (a history, a presence) within its
   * connection's {@linkcode MAX_READS_IN_FLIGHT} and the worker's
   * `maxClientReads` (each presence asks every worker), and answers it with
   * `answer`'s frame or error, or 503 naming `what` when the bus failed.
   * A connection closed meanwhile gets nothing.
   */
  #read<T>(
    connection: PusherConnection,
    id: number,
    what: string,
    read: () => Promise<T>,
    answer: (value: T) => string | ClientError,
  ): void {
    if (connection.reads >= MAX_READS_IN_FLIGHT) {
      const message = `Too many reads in flight: at most ${MAX_READS_IN_FLIGHT} history and presence calls at once`;
      return this.#refuse(connection, { id, code: ErrorCode.tooManyReads, message });
    }
    if (this.#clientReads >= this.#maxClientReads) {
      const message =
        `Too many reads in flight on this pusher worker: at most ${this.#maxClientReads}; try again later`;
      return this.#refuse(connection, { id, code: ErrorCode.tooManyReads, message });
    }
    connection.reads++;
    this.#clientReads++;
    read().then((value) => {
      connection.reads--;
      this.#clientReads--;
      if (this.#connections.of(connection.socket) !== connection) return;
      const frame = answer(value);
      if (typeof frame === "string") connection.socket.send(frame);
      else this.#refuse(connection, frame);
    }, (error) => {
      connection.reads--;
      this.#clientReads--;
      if (this.#connections.of(connection.socket) !== connection) return;
      const message = `${what} is not available: ${(error as Error).message}`;
      this.#refuse(connection, { id, code: ErrorCode.unavailable, message });
    });
  }

  #succeed(connection: PusherConnection, id: number): void {
    connection.socket.send(resultFrame(id));
  }

  /** Answers a client's message with an error; closes a client that sends only malformed ones. */
  #refuse(connection: PusherConnection, error: ClientError): void {
    this.#counters.clientErrors.inc(1, String(error.code));
    connection.socket.send(errorFrame(error));
    if (!isMalformed(error)) {
      connection.bad = 0;
      return;
    }
    if (++connection.bad < this.#maxBadMessages) return;
    this.logger.info("closing a client over its malformed messages", {
      connection: connection.id,
      count: connection.bad,
    });
    connection.socket.close(TOO_MANY_BAD_MESSAGES, TOO_MANY_BAD_MESSAGES_REASON);
  }

  #join(connection: PusherConnection, channel: string, announce = true): JoinOutcome {
    const outcome = this.#membership.join(connection, channel);
    // Once the worker hears the channel: the joiner gets its own join after its reply.
    if (outcome === "joined" && announce) {
      this.#whenSubscribed(channel, () => this.#announceJoin(channel, connection));
    }
    return outcome;
  }

  /**
   * Tells a join that waited (for the bus, or for the joiner's reply), unless
   * the connection left meanwhile (a join after its leave would leave the
   * others with someone who is gone) or it was told already (the connection
   * left and joined again while it waited).
   */
  #announceJoin(channel: string, connection: PusherConnection): void {
    if (!this.#membership.has(connection, channel) || !this.#presence.isPresenceChannel(channel)) return;
    const told = connection.told ??= new Set();
    if (told.has(channel)) return;
    told.add(channel);
    this.#announce("join", channel, connection);
  }

  /** Tells a leave whose join was told: members never hear of someone leaving who they were not told joined. */
  #announceLeave(channel: string, connection: PusherConnection): void {
    if (!connection.told?.delete(channel)) return;
    if (connection.told.size === 0) connection.told = null;
    this.#announce("leave", channel, connection);
  }

  #leave(connection: PusherConnection, channel: string): boolean {
    if (!this.#membership.leave(connection, channel)) return false;
    this.#announceLeave(channel, connection);
    return true;
  }

  /** Tells the members of a presence channel, in every worker, that `connection` joined or left it. */
  #announce(kind: "join" | "leave", channel: string, connection: PusherConnection): void {
    const event: ChannelEvent = this.#presence.event(kind, channel, connection);
    this.#bus.publish(channelSubject(channel), event).catch((error) => {
      this.logger.warn(`could not announce a ${kind}`, { channel, error: (error as Error).message });
    });
  }

  #interested(subject: string, handler: (data: Json, message: BusMessage) => void): void {
    this.#interest.add(subject);
    const ready = this.#bus.subscribe(subject, handler);
    this.#pending.set(subject, ready);
    ready.then(() => {
      if (this.#pending.get(subject) === ready) this.#pending.delete(subject);
    });
  }

  #uninterested(subject: string): void {
    if (!this.#interest.delete(subject)) return;
    this.#pending.delete(subject);
    this.#bus.unsubscribe(subject);
  }

  /**
   * Runs `then` once this worker's subscription to `channel` is in effect at
   * the bus, at once when it already is: a client told "subscribed" before
   * that could miss a publication made right after.
   */
  #whenSubscribed(channel: string, then: () => void): void {
    this.#whenInEffect(channelSubject(channel), then);
  }

  /** Runs `then` once this worker's subscription to `subject` is in effect at the bus, at once when it already is. */
  #whenInEffect(subject: string, then: () => void): void {
    const pending = this.#pending.get(subject);
    if (pending) pending.then(then);
    else then();
  }

  readonly #onChannel = (data: Json, message: BusMessage): void => {
    const channel = channelOfSubject(message.subject);
    if (channel === null) return;
    this.#catchUp.receive(channel, data, message.position);
  };

  /** A user's subject: a publish to the user's connections here, or a command for them. */
  readonly #onUser = (data: Json, message: BusMessage): void => {
    const user = userOfSubject(message.subject);
    if (user === null) return;
    const command = toCommand(data);
    if (typeof command === "string") return this.#badCommand(data, command, message.replyTo);
    if (command !== null) return this.#userCommand(user, command, message.replyTo);
    const push = toDataPush(data);
    if (!push || push.to_connection_id !== undefined) return this.#delivery.wrongShape(data, "a user's publish");
    const sent = this.#delivery.user(user, push);
    // Asked as a request (a publish with `ack`): to how many of the user's connections here it went.
    this.#reply(message.replyTo, { connections: sent });
  };

  /** The worker's subject: a send to one connection, or a command for one. */
  #onWorker(data: Json, message: BusMessage): void {
    const command = toCommand(data);
    if (command === null) {
      const sent = this.#delivery.target(data);
      // Asked as a request (a publish with `ack`, or by a publisher whose bus cannot count: NATS): the reply says
      // this worker is alive, and whether the connection was here.
      return this.#reply(message.replyTo, sent ? { ok: true } : { ok: false, error: NO_SUCH_CONNECTION });
    }
    if (typeof command === "string") return this.#badCommand(data, command, message.replyTo);
    const id = command.to_connection_id;
    if (id === undefined) {
      const error = "Invalid command: to_connection_id is required on a worker's subject";
      return this.#badCommand(data, error, message.replyTo);
    }
    const connection = this.#connections.get(id);
    // Its address is nobody's before its greeting.
    if (!connection?.greeted) {
      this.#counters.dropped.inc(1, "no_connection");
      this.logger.info("no such connection", { connection: id, cmd: command.cmd });
      return this.#reply(message.replyTo, { ok: false, error: NO_SUCH_CONNECTION });
    }
    const error = this.#apply(connection, command);
    if (error !== null) return this.#reply(message.replyTo, { ok: false, error });
    this.#afterCommand(command, () => this.#reply(message.replyTo, { ok: true }));
  }

  /** Runs `then` once `command` has taken effect: a subscribe once the worker's subscription is in effect. */
  #afterCommand(command: Command, then: () => void): void {
    if (command.cmd === "subscribe") this.#whenSubscribed(command.channel, then);
    else then();
  }

  #userCommand(user: string, command: Command, replyTo: string | undefined): void {
    let applied = 0;
    // A copy: a disconnect takes connections out of the set as it goes. It
    // ends one not yet greeted too; a subscribe or unsubscribe, whose frame
    // would come before its greeting, skips it.
    for (const connection of [...this.#connections.ofUser(user)]) {
      if (!connection.greeted && command.cmd !== "disconnect") continue;
      if (this.#apply(connection, command) === null) applied++;
    }
    this.#afterCommand(command, () => this.#reply(replyTo, { connections: applied }));
  }

  #badCommand(data: Json, error: string, replyTo: string | undefined): void {
    this.#delivery.wrongShape(data, "a command");
    this.#reply(replyTo, { ok: false, error });
  }

  /** Applies a backend's command to one connection; returns why it could not, or null. */
  #apply(connection: PusherConnection, command: Command): string | null {
    switch (command.cmd) {
      case "subscribe": {
        const invalid = channelNameError(command.channel, this.#protocol.maxChannelLength);
        if (invalid !== null) return invalid;
        const outcome = this.#join(connection, command.channel);
        if (outcome === "joined") {
          const channel = command.channel;
          // Not if it left meanwhile: its "unsubscribed" went out at once, and this one, late, would undo it.
          this.#whenSubscribed(channel, () => {
            if (this.#membership.has(connection, channel)) connection.socket.send(subscribedFrame(channel));
          });
        }
        return limitError(outcome, this.#membership);
      }
      case "unsubscribe": {
        const channel = command.channel;
        if (!this.#leave(connection, channel)) return null;
        const tell = () => connection.socket.send(unsubscribedFrame(channel));
        const replied = this.#replying.get(connection)?.get(channel);
        if (replied) void replied.then(tell);
        else tell();
        return null;
      }
      case "disconnect":
        connection.socket.close(command.code ?? DEFAULT_DISCONNECT.code, command.reason ?? DEFAULT_DISCONNECT.reason);
        return null;
    }
  }

  #onPresence(data: Json, message: BusMessage): void {
    if (message.replyTo === undefined) return;
    const query = toPresenceQuery(data);
    this.#reply(message.replyTo, typeof query === "string" ? { error: query } : this.#presence.answer(query));
  }

  #reply(replyTo: string | undefined, reply: CommandReply | Json): void {
    if (replyTo === undefined) return;
    this.#bus.publish(replyTo, reply as Json).catch((error) => {
      this.logger.warn("could not reply", { error: (error as Error).message });
    });
  }
}

/** Why a join was refused over a limit, or null when it was not. */
function limitError(outcome: JoinOutcome, membership: ChannelMembership<PusherConnection>): string | null {
  switch (outcome) {
    case "connection_limit":
      return `Too many channels for this connection: the limit is ${membership.maxPerConnection}`;
    case "worker_limit":
      return `Too many channels for this worker: the limit is ${membership.maxPerWorker}`;
    default:
      return null;
  }
}
