/* @ts-self-types="./client.d.ts" */
// @ts-check
/**
 * The browser client of a pusher, served by every pusher at `/client.js`: one
 * ES module with no dependencies and no build step (its types are in
 * `client.d.ts` beside it, served at `/client.d.ts`; `// @ts-check` above
 * has `deno check pusher/client.js` check its JSDoc types too).
 *
 * It connects to a pusher over WebSocket, reads the greeting
 * (`workerID:<w> connectionID:<c> connected\n`) into {@link PushClient#address},
 * reconnects by itself with capped exponential backoff and full jitter
 * (started over only once a connection stayed up a few seconds), sends at
 * most `maxMessageRate` commands a second so that the pusher's
 * `--max-message-rate` never closes it, and
 * speaks the pusher's JSON protocol: `{"id":N,"subscribe":{"channel":C}}`
 * commands with id'd replies, `{"channel":C,"data":D}` publications and
 * `{"subscribed":{"channel":C}}` pushes. Plain text (the original's
 * `?content=` broadcasts and sends to one connection) arrives as `message`
 * events, unchanged.
 *
 * Subscriptions the client made are made again on every new connection.
 * On a channel that keeps history, the pusher's frames carry positions
 * (`"offset"`, `"epoch"`): the client keeps the last one it saw per channel,
 * subscribes again with `"since"` that position so that the pusher replays
 * what was published meanwhile, drops a publication it has already had, and
 * says in {@link Subscription#recovered} and the `subscribed` event whether
 * nothing was missed.
 *
 * With a token from a function (`token: () => fetchToken()`), the client also
 * renews it before it expires: it counts the token's lifetime (`exp - iat`;
 * `exp` against the browser's clock without `iat`) from when it got it, asks
 * the function for a new one some time before the end (a fifth of what is
 * left, at most a minute, with jitter) and sends it as
 * `{"id":N,"refresh":{"token":T}}`, so the pusher keeps the connection open
 * past the first token's expiry. A pusher closes a connection whose token
 * expired with 4401; after that the client reconnects with a new token, or,
 * when its token is a fixed string, stops and says why.
 *
 * A connection can die without a close: a laptop that slept, a network that
 * changed, a NAT that forgot it. The browser then waits minutes for TCP to
 * give up, and sees none of the server's WebSocket pings meanwhile. So after
 * `pingInterval` (25 s) without a message the client sends
 * `{"id":N,"ping":{}}`, and when nothing at all comes back within
 * `pingTimeout` (10 s) it drops the connection and reconnects (recovering
 * what it missed on channels with history). And when the browser says the
 * network is back (its `online` event), a reconnect waiting out its backoff
 * is made at once, and a connection still open is pinged at once: it may
 * have been made over the network that went.
 *
 * Subscriptions the server made (from the publisher's `subscribe` API) belong
 * to the connection they were made on: they end when it ends, and the
 * backend has to make them again for the new connection if it wants them.
 *
 * @example
 * ```js
 * // In a page: import { PushClient } from "/client.js"; here, beside the file:
 * import { PushClient } from "./client.js";
 *
 * const client = new PushClient("ws://127.0.0.1:4236");
 * client.on("connected", ({ workerId, connectionId }) => console.log(workerId, connectionId));
 * client.on("message", ({ data }) => console.log("message", data));
 * const news = client.subscribe("news", ({ data }) => console.log("news", data));
 * client.connect();
 * await news.ready();
 * ```
 *
 * @module
 */

const GREETING = /^workerID:(\S+) connectionID:(\d+) connected\n?$/;

/**
 * Close codes after which the client does not reconnect by itself: the
 * server said not to come back (Centrifugo's convention: 3500-3999 and
 * 4500-4999 are terminal, 3000-3499 and 4000-4499 are not).
 *
 * @param {number} code
 * @returns {boolean}
 */
function isTerminal(code) {
  return (code >= 3500 && code <= 3999) || (code >= 4500 && code <= 4999);
}

/** The close code of a connection whose token expired (see the module's text). */
const TOKEN_EXPIRED = 4401;

/** The longest a renewed token is asked for ahead of its predecessor's expiry, in milliseconds. */
const MAX_REFRESH_LEAD = 60_000;

/**
 * How long to wait before asking again after a failed renewal, in
 * milliseconds: at most this, at most half of the time the token has left,
 * and not at all once that half is under {@link MIN_REFRESH_RETRY}.
 */
const REFRESH_RETRY = 5_000;
const MIN_REFRESH_RETRY = 250;

/**
 * How long a connection must have stayed up for the reconnect backoff to
 * start over, in milliseconds: one the pusher closes right after its
 * greeting (over its message rate, say) backs off further instead.
 */
const PROVEN_AFTER = 5_000;

/**
 * Commands a second the client sends at most, unless told: half the
 * pusher's default `--max-message-rate` (50), so that frames the network
 * delivers together (a burst, and what followed it for up to a second) stay
 * under the pusher's allowance.
 */
const DEFAULT_MAX_MESSAGE_RATE = 25;

/** The longest delay a timer takes as given (2^31 - 1 ms, about 24.8 days): browsers fire a longer one at once. */
const MAX_TIMER_DELAY = 2 ** 31 - 1;

/**
 * A JWT's `exp` and `iat` (its payload's, in milliseconds since the epoch on
 * the issuer's clock); null when it has no readable `exp`, `iat` null when it
 * has none (or one after `exp`). Not a check: the pusher checks tokens.
 *
 * @param {string} token
 * @returns {{ exp: number, iat: number | null } | null}
 */
function tokenTimes(token) {
  const payload = token.split(".")[1];
  if (!payload) return null;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(base64.padEnd(base64.length + ((4 - (base64.length % 4)) % 4), "=")));
    /** @param {unknown} value */
    const seconds = (value) => typeof value === "number" && Number.isFinite(value) ? value * 1000 : null;
    const exp = seconds(claims?.exp);
    if (exp === null) return null;
    const iat = seconds(claims?.iat);
    return { exp, iat: iat !== null && iat <= exp ? iat : null };
  } catch {
    return null;
  }
}

/**
 * How long a token the client got just now has left, in milliseconds; null
 * when it has no `exp`. The browser's clock says `exp - now`, which a clock
 * behind the issuer's makes too long; with `iat`, the token's lifetime
 * (`exp - iat`, both on the issuer's clock) bounds it. A browser clock past
 * `exp` may be ahead rather than the token old: then the lifetime is all
 * there is to go on (a token handed out stale is closed with 4401 by the
 * pusher, and the client gets a new one).
 *
 * @param {{ exp: number, iat: number | null } | null} times
 * @returns {number | null}
 */
function lifetimeOf(times) {
  if (times === null) return null;
  const byClock = times.exp - Date.now();
  if (times.iat === null) return byClock;
  const lifetime = times.exp - times.iat;
  return byClock > 0 ? Math.min(byClock, lifetime) : lifetime;
}

/**
 * Why what a token function gave cannot be sent as a token (not a string,
 * or empty); null when it can.
 *
 * @param {unknown} token
 * @returns {TypeError | null}
 */
function notAToken(token) {
  if (typeof token === "string" && token !== "") return null;
  return new TypeError(`the token function gave ${token === "" ? "an empty string" : typeof token}, not a token`);
}

/**
 * What waits for a connection gets when the client stops: `disconnect()`, or
 * a close after which it does not reconnect (`code`, `reason`).
 *
 * @param {number} code
 * @param {string} reason
 * @returns {Error}
 */
function stoppedError(code, reason) {
  return new Error(`Cannot wait for a connection: the client stopped (${reason ? `${code} ${reason}` : code})`);
}

/**
 * Why a command got no reply: its connection ended first. The subscription
 * logic makes such commands again; callers never see this error.
 */
class ConnectionLost extends Error {
  constructor() {
    super("Connection lost before the reply");
    this.name = "ConnectionLost";
  }
}

/**
 * An error reply from the pusher to a command, or an error it pushed on its
 * own: `code` is the protocol's (400, 403, 413, 422, 429), not an HTTP or
 * close code.
 */
export class PushError extends Error {
  /**
   * @param {number} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = "PushError";
    /** @type {number} */
    this.code = code;
  }
}

/**
 * Calls `listener` with the detail of each `type` event of `target`.
 *
 * @param {EventTarget} target
 * @param {string} type
 * @param {(detail: any) => void} listener
 * @returns {() => void} removes the listener
 */
function listen(target, type, listener) {
  /** @param {Event} event */
  const wrapped = (event) => listener(/** @type {CustomEvent} */ (event).detail);
  target.addEventListener(type, wrapped);
  return () => target.removeEventListener(type, wrapped);
}

/**
 * A promise that settles when `signal` aborts, for racing a wait against it.
 *
 * @template T
 * @param {Promise<T>} promise
 * @param {AbortSignal | undefined} signal
 * @returns {Promise<T>}
 */
function abortable(promise, signal) {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const abort = () => reject(signal.reason);
    signal.addEventListener("abort", abort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", abort));
  });
}

/**
 * A place in a channel's history: `offset` counts the channel's messages (the
 * first is 1), `epoch` names the history they belong to; a new epoch means
 * the history was lost (the hub restarted, or dropped it).
 *
 * @typedef {{ offset: number, epoch: string }} Position
 */

/**
 * A channel's history: its publications (oldest first, newest first with
 * `reverse`), the channel's top position when it was read, and whether
 * nothing was missing.
 *
 * @typedef {{ publications: { data: unknown, offset: number }[], offset: number, epoch: string, recovered: boolean }} HistoryResult
 */

/**
 * Who is in a presence channel, over every pusher worker: its connections,
 * its distinct users and (from `presence()`, not `presenceStats()`) the
 * users, sorted; `users_truncated` when a list was cut at the pusher's
 * limit, `partial` when some worker did not answer in time.
 *
 * @typedef {{ num_clients: number, num_users: number, users?: string[], users_truncated?: true, partial?: true }} PresenceResult
 */

/**
 * One channel of a {@link PushClient}: made by {@link PushClient#subscribe},
 * or by the server (then {@link Subscription#serverSide} is true).
 *
 * Events (listen with {@link Subscription#on} or `addEventListener`; the
 * detail is the listener's argument): `publication` `{channel, data, offset?,
 * epoch?}`, `state` `{state, previous}`, `subscribed` `{channel, recovered,
 * position}` after each (re)subscribe (and when a publication shows the
 * channel's history was lost under the connection, with `recovered` false),
 * `unsubscribed` `{channel}`, `error` `{error}` (a refused subscribe: the
 * subscription is then over), `join` and `leave` (presence channels) with
 * the server's info.
 */
export class Subscription extends EventTarget {
  /** @type {PushClient} */
  #client;
  /** @type {"subscribing" | "subscribed" | "unsubscribed"} */
  #state = "subscribing";
  /** @type {boolean} */
  #serverSide;
  /** @type {{ promise: Promise<void>, resolve: () => void, reject: (error: Error) => void } | null} */
  #waiting = null;
  /** @type {boolean | null} */
  #recovered = null;
  /** @type {Position | null} */
  #position = null;
  /** @type {Error | null} why it ended, when a refusal ended it */
  #error = null;

  /**
   * Made by {@link PushClient}; not meant to be called by hand.
   *
   * @param {PushClient} client
   * @param {string} channel
   * @param {boolean} serverSide
   */
  constructor(client, channel, serverSide) {
    super();
    this.#client = client;
    /** @type {string} */
    this.channel = channel;
    this.#serverSide = serverSide;
  }

  /** @returns {"subscribing" | "subscribed" | "unsubscribed"} */
  get state() {
    return this.#state;
  }

  /**
   * True when the server subscribed the connection (from the backend) and
   * the client did not ask: such a subscription ends with its connection.
   *
   * @returns {boolean}
   */
  get serverSide() {
    return this.#serverSide;
  }

  /**
   * Whether the last (re)subscribe missed nothing: true when the pusher
   * replayed everything published since the last position seen; false when
   * it could not (no position to ask from, another epoch, too much missed,
   * the history not kept), or when a publication showed the history was lost
   * since; then the app should reload the channel's state. null before the
   * first reply, and for a channel without history that was not asked to
   * recover.
   *
   * @returns {boolean | null}
   */
  get recovered() {
    return this.#recovered;
  }

  /**
   * The position of the last publication seen on this channel (or the one
   * the pusher's reply gave, when it did not recover): sent as `since` on the
   * next subscribe. null for a channel without history.
   *
   * @returns {Position | null}
   */
  get position() {
    return this.#position;
  }

  /**
   * Calls `listener` with each `type` event's detail.
   *
   * @param {string} type
   * @param {(detail: any) => void} listener
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    return listen(this, type, listener);
  }

  /**
   * Resolves when the server has confirmed the subscription; rejects with a
   * {@link PushError} if it refused it (then too when called after the
   * refusal), when it is unsubscribed first, or when the client stops
   * (`disconnect()`, or a close after which it does not reconnect); at once
   * while the client is stopped (before `connect()`, or after it stopped).
   *
   * @param {{ signal?: AbortSignal }} [options]
   * @returns {Promise<void>}
   */
  ready(options = {}) {
    if (this.#state === "subscribed") return Promise.resolve();
    if (this.#state === "unsubscribed") {
      return Promise.reject(this.#error ?? new Error(`Cannot wait for channel ${this.channel}: it is unsubscribed`));
    }
    // Stopped, the client makes no subscribe until the next connect(): nothing to wait for now.
    if (this.#client.state === "disconnected") return Promise.reject(this.#client._stoppedError());
    if (!this.#waiting) {
      /** @type {() => void} */
      let resolve = () => {};
      /** @type {(error: Error) => void} */
      let reject = () => {};
      const promise = new Promise((res, rej) => {
        resolve = () => res(undefined);
        reject = rej;
      });
      this.#waiting = { promise, resolve, reject };
    }
    return abortable(this.#waiting.promise, options.signal);
  }

  /** Leaves the channel: no more publications; not made again after a reconnect. */
  unsubscribe() {
    this.#client._unsubscribe(this);
  }

  /**
   * The channel's history, which the pusher answers to its members: forward
   * from `since` (from the oldest kept without it), or with `reverse` the
   * last publications, newest first; at most `limit` (and the pusher's cap).
   * Rejects with a {@link PushError} (403 when not subscribed yet, 404 for a
   * channel without history, 503 when the pusher could not read it), or
   * when the connection ends first; at once while the client is stopped.
   *
   * @param {{ limit?: number, since?: Position, reverse?: boolean }} [options]
   * @returns {Promise<HistoryResult>}
   */
  history(options = {}) {
    return this.#client._history(this.channel, options);
  }

  /**
   * Who is in this presence channel: connections, distinct users and the
   * users. Rejects with a {@link PushError} (403 when not subscribed yet, or
   * when the channel is not a presence channel; 503 when the pusher could
   * not ask), or when the connection ends first; at once while the client
   * is stopped.
   *
   * @returns {Promise<PresenceResult>}
   */
  presence() {
    return this.#client._read({ presence: { channel: this.channel } });
  }

  /**
   * How many are in this presence channel: connections and distinct users,
   * without the list. Rejects as {@link Subscription#presence} does.
   *
   * @returns {Promise<PresenceResult>}
   */
  presenceStats() {
    return this.#client._read({ presence_stats: { channel: this.channel } });
  }

  /**
   * @internal
   * @param {"subscribing" | "subscribed" | "unsubscribed"} state
   * @param {Error} [error] why it ended, when it ends
   * @param {{ recovered: boolean | null, position: Position | null }} [subscribed] what the reply said, when subscribed
   * @returns {boolean} whether the state changed
   */
  _setState(state, error, subscribed) {
    const previous = this.#state;
    if (state === previous) return false;
    this.#state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, previous } }));
    if (state === "subscribed") {
      this.#waiting?.resolve();
      this.#waiting = null;
      const { recovered, position } = subscribed ?? { recovered: this.#recovered, position: this.#position };
      this.dispatchEvent(new CustomEvent("subscribed", { detail: { channel: this.channel, recovered, position } }));
    } else if (state === "unsubscribed") {
      this.#error = error ?? null;
      this._stopped(error ?? new Error(`Unsubscribed from channel ${this.channel}`));
      this.dispatchEvent(new CustomEvent("unsubscribed", { detail: { channel: this.channel } }));
    }
    return true;
  }

  /**
   * @internal
   * Rejects whoever waits in {@link Subscription#ready}.
   *
   * @param {Error} error
   */
  _stopped(error) {
    const waiting = this.#waiting;
    this.#waiting = null;
    if (!waiting) return;
    // A rejection nobody awaits must not be reported as unhandled.
    waiting.promise.catch(() => {});
    waiting.reject(error);
  }

  /**
   * @internal
   * @param {boolean | null} recovered
   * @param {Position | null} position
   */
  _setRecovery(recovered, position) {
    this.#recovered = recovered;
    this.#position = position;
  }

  /**
   * @internal
   * @param {boolean} serverSide
   */
  _setServerSide(serverSide) {
    this.#serverSide = serverSide;
  }

  /**
   * @internal
   * @param {string} type
   * @param {unknown} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * @typedef {object} Command
 * @property {number} id
 * @property {Record<string, unknown>} body
 * @property {(error: Error | null, result?: unknown) => void} done
 */

/**
 * A client of one pusher. Events (listen with {@link PushClient#on} or
 * `addEventListener`; the detail is the listener's argument):
 *
 * - `state` `{state, previous}`: `"disconnected"`, `"connecting"`, `"connected"`;
 * - `connected` `{workerId, connectionId, greeting}` on each greeting;
 * - `disconnected` `{code, reason, reconnecting, delay}`; `delay` is the wait
 *   before the next attempt, in milliseconds, when reconnecting;
 * - `message` `{data}`: a text message that is not part of the JSON protocol
 *   (the original's `?content=` broadcasts and sends to one connection, and
 *   the JSON API's publishes to everyone, a user or a connection);
 * - `publication` `{channel, data, offset?, epoch?}` for every channel the client is in
 *   (`offset` and `epoch` on a channel that keeps history);
 * - `subscribed` `{channel, subscription, recovered, position}` after each
 *   (re)subscribe, the client's and the server's (the server's say null for
 *   both), and when a publication shows a channel's history was lost;
 *   `unsubscribed` `{channel, subscription}` for server-side subscriptions;
 * - `join` and `leave` `{channel, info}`;
 * - `error` `{error}`: an error the server pushed, a refused subscribe, a
 *   first message that is not a greeting.
 *
 * A text message that is a JSON object shaped like the protocol's (a reply,
 * a publication, a `subscribed` push) is taken as one: a plain `?content=`
 * broadcast whose content looks exactly like one is not told apart.
 */
export class PushClient extends EventTarget {
  /** @type {string} */
  #url;
  /** @type {string | (() => string | Promise<string>) | undefined} */
  #token;
  /** @type {number} */
  #minDelay;
  /** @type {number} */
  #maxDelay;
  /** @type {number} */
  #connectTimeout;
  /** @type {number} */
  #maxQueued;
  /** @type {number} */
  #pingInterval;
  /** @type {number} */
  #pingTimeout;
  /** @type {typeof WebSocket} */
  #WebSocket;
  /** @type {() => number} */
  #random;
  /** @type {{ setTimeout: (fn: () => void, ms: number) => unknown, clearTimeout: (id: any) => void }} */
  #timers;
  /** @type {() => number} a monotonic clock in milliseconds: what the timers wait on */
  #now;
  /** @type {number} commands a second the client sends at most, with a burst of as many */
  #maxRate;
  /** @type {Pick<EventTarget, "addEventListener" | "removeEventListener"> | null} where `online` is told */
  #network;

  /** @type {"disconnected" | "connecting" | "connected"} */
  #state = "disconnected";
  /** @type {{ workerId: string, connectionId: number } | null} */
  #address = null;
  /** @type {WebSocket | null} */
  #socket = null;
  /** Bumped whenever a socket is dropped, so late callbacks of an old one do nothing. */
  #generation = 0;
  #attempt = 0;
  /** @type {unknown} */
  #retryTimer = null;
  /** @type {unknown} */
  #greetingTimer = null;
  /** @type {unknown} the renewal of the connection's token, when one is due */
  #refreshTimer = null;
  /** @type {unknown} the next look at whether the pusher was heard: to ping it, or to give up on it */
  #pingTimer = null;
  /** Whether anything came from the pusher since the ping timer was last set. */
  #heard = false;
  /**
   * The browser says the network is back: a reconnect waiting out its
   * backoff goes now, and a connection made over the network that went may
   * be dead, so it is pinged now rather than after an interval of silence.
   */
  #online = () => {
    if (this.#state === "connected" && this.#pingInterval > 0) {
      this.#clearPingTimer();
      this.#ping(this.#generation);
      return;
    }
    if (this.#retryTimer === null) return;
    this.#cancelRetry();
    this.#open();
  };
  /** @type {string | null} the token of the connection being made or made */
  #connectionToken = null;
  /** @type {number | null} when the connection's token expires, on {@link PushClient#now}'s clock; null when it does not say */
  #connectionDeadline = null;
  /** @type {number | null} when the connection was greeted, on {@link PushClient#now}'s clock */
  #greetedAt = null;
  /** @type {{ code: number, reason: string } | null} why the client last stopped; null before it first did */
  #stoppedWith = null;
  /** @type {Command[]} commands of the connection waiting for their turn under the message rate */
  #outbox = [];
  /** Commands the connection may send now (a token bucket: {@link PushClient#maxRate} a second, as many at most). */
  #allowance = 0;
  #allowanceAt = 0;
  /** @type {unknown} the next turn of the outbox, when it waits for allowance */
  #sendTimer = null;
  #nextId = 1;
  /** @type {Command[]} commands waiting for a connection */
  #queue = [];
  /** @type {Map<number, Command>} commands sent, waiting for their reply */
  #inFlight = new Map();
  /** @type {Map<string, Subscription>} */
  #subscriptions = new Map();
  /** @type {Map<Subscription, number>} the id of each subscription's subscribe command, queued or in flight */
  #subscribing = new Map();
  /** @type {Map<string, number>} the id of each channel's unsubscribe command in flight */
  #unsubscribing = new Map();

  /**
   * @param {string | URL} url the pusher's WebSocket URL (`ws:`/`wss:`; `http:`/`https:` are taken as such)
   * @param {import("./client.d.ts").PushClientOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    const parsed = new URL(url);
    if (parsed.protocol === "http:") parsed.protocol = "ws:";
    else if (parsed.protocol === "https:") parsed.protocol = "wss:";
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
      throw new TypeError(`Invalid pusher URL: expected ws: or wss:, got ${parsed.protocol}`);
    }
    this.#url = parsed.href;
    if (options.token !== undefined && typeof options.token !== "string" && typeof options.token !== "function") {
      throw new TypeError(`Invalid token: expected a string or a function, got ${typeof options.token}`);
    }
    this.#token = options.token;
    this.#minDelay = options.minReconnectDelay ?? 250;
    this.#maxDelay = options.maxReconnectDelay ?? 10_000;
    // A browser fires a longer timer at once: a reconnect storm.
    if (!(this.#minDelay >= 0) || !(this.#maxDelay >= this.#minDelay && this.#maxDelay <= MAX_TIMER_DELAY)) {
      throw new RangeError(
        `Invalid reconnect delays: need 0 <= minReconnectDelay <= maxReconnectDelay <= ${MAX_TIMER_DELAY}, got ${this.#minDelay} and ${this.#maxDelay}`,
      );
    }
    this.#connectTimeout = options.connectTimeout ?? 10_000;
    if (!(this.#connectTimeout > 0 && this.#connectTimeout <= MAX_TIMER_DELAY)) {
      throw new RangeError(
        `Invalid connectTimeout: need 0 < connectTimeout <= ${MAX_TIMER_DELAY}, got ${this.#connectTimeout}`,
      );
    }
    this.#maxQueued = options.maxQueuedCommands ?? 128;
    this.#pingInterval = options.pingInterval ?? 25_000;
    this.#pingTimeout = options.pingTimeout ?? 10_000;
    if (
      !(this.#pingInterval >= 0 && this.#pingInterval <= MAX_TIMER_DELAY) ||
      !(this.#pingTimeout > 0 && this.#pingTimeout <= MAX_TIMER_DELAY)
    ) {
      throw new RangeError(
        `Invalid ping settings: need 0 <= pingInterval <= ${MAX_TIMER_DELAY} and 0 < pingTimeout <= ${MAX_TIMER_DELAY}, got ${this.#pingInterval} and ${this.#pingTimeout}`,
      );
    }
    const WebSocketClass = options.WebSocket ?? globalThis.WebSocket;
    if (!WebSocketClass) throw new TypeError("Cannot create a PushClient: no WebSocket class in this runtime");
    this.#WebSocket = WebSocketClass;
    this.#random = options.random ?? Math.random;
    this.#network = options.network ?? (typeof globalThis.addEventListener === "function" ? globalThis : null);
    this.#timers = options.timers ?? {
      setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
      clearTimeout: (id) => globalThis.clearTimeout(id),
    };
    const timers = options.timers;
    this.#now = timers?.now ? () => /** @type {() => number} */ (timers.now)() : () => performance.now();
    this.#maxRate = options.maxMessageRate ?? DEFAULT_MAX_MESSAGE_RATE;
    if (!(this.#maxRate > 0 && Number.isFinite(this.#maxRate))) {
      throw new RangeError(`Invalid maxMessageRate: need a finite number above 0, got ${this.#maxRate}`);
    }
  }

  /** @returns {"disconnected" | "connecting" | "connected"} */
  get state() {
    return this.#state;
  }

  /**
   * The address of the current connection, from its greeting; null until
   * the first greeting. Kept while reconnecting: it is the last known one.
   *
   * @returns {{ workerId: string, connectionId: number } | null}
   */
  get address() {
    return this.#address;
  }

  /** @returns {Map<string, Subscription>} the subscriptions now, by channel (a copy) */
  get subscriptions() {
    return new Map(this.#subscriptions);
  }

  /**
   * The subscription to `channel`, if any.
   *
   * @param {string} channel
   * @returns {Subscription | null}
   */
  subscription(channel) {
    return this.#subscriptions.get(channel) ?? null;
  }

  /**
   * Calls `listener` with each `type` event's detail.
   *
   * @param {string} type
   * @param {(detail: any) => void} listener
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    return listen(this, type, listener);
  }

  /**
   * Resolves with the address once connected (at once if connected now);
   * rejects when the client stops first (`disconnect()`, or a close after
   * which it does not reconnect), or when `signal` aborts; at once while the
   * client is stopped (before `connect()`, or after it stopped).
   *
   * @param {{ signal?: AbortSignal }} [options]
   * @returns {Promise<{ workerId: string, connectionId: number }>}
   */
  ready(options = {}) {
    if (this.#state === "connected" && this.#address) return Promise.resolve(this.#address);
    if (this.#state === "disconnected") return Promise.reject(this._stoppedError());
    const { signal } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const settled = () => {
        offConnected();
        offDisconnected();
        signal?.removeEventListener("abort", aborted);
      };
      const offConnected = this.on("connected", ({ workerId, connectionId }) => {
        settled();
        resolve({ workerId, connectionId });
      });
      const offDisconnected = this.on("disconnected", ({ code, reason, reconnecting }) => {
        if (reconnecting) return;
        settled();
        reject(stoppedError(code, reason));
      });
      const aborted = () => {
        settled();
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", aborted, { once: true });
    });
  }

  /** Connects, and keeps reconnecting after a lost connection until {@link PushClient#disconnect}. */
  connect() {
    if (this.#state !== "disconnected") return;
    this.#attempt = 0;
    this.#network?.addEventListener("online", this.#online);
    this.#open();
  }

  /** Closes the connection and stops reconnecting. Subscriptions stay, and are made again on the next connect. */
  disconnect() {
    if (this.#state === "disconnected" && this.#retryTimer === null) return;
    this.#cancelRetry();
    this.#drop(1000, "disconnect called", false);
  }

  /**
   * Subscribes to `channel`, now if connected, else as soon as connected;
   * after every reconnect, again. `handler` (optional) gets each
   * publication, as `on("publication", handler)` would.
   *
   * @param {string} channel
   * @param {(publication: { channel: string, data: unknown }) => void} [handler]
   * @returns {Subscription}
   * @throws {Error} when already subscribed to `channel` by this client
   * @throws {RangeError} when not connected and the command queue is full
   */
  subscribe(channel, handler) {
    if (typeof channel !== "string" || channel === "") {
      throw new TypeError(`Invalid channel name: expected a non-empty string, got ${JSON.stringify(channel)}`);
    }
    let subscription = this.#subscriptions.get(channel);
    if (subscription && !subscription.serverSide) {
      throw new Error(`Cannot subscribe: already subscribed to channel ${channel}`);
    }
    if (subscription) {
      // The server made it; from now on the client wants it too, on every connection.
      subscription._setServerSide(false);
      if (handler) subscription.on("publication", handler);
      return subscription;
    }
    this.#checkQueue();
    subscription = new Subscription(this, channel, false);
    if (handler) subscription.on("publication", handler);
    this.#subscriptions.set(channel, subscription);
    this.#sendSubscribe(subscription);
    return subscription;
  }

  /**
   * @internal
   * @param {string} channel
   * @param {{ limit?: number, since?: Position, reverse?: boolean }} options
   * @returns {Promise<HistoryResult>}
   */
  _history(channel, { limit, since, reverse }) {
    /** @type {Record<string, unknown>} */
    const body = { channel };
    if (limit !== undefined) body.limit = limit;
    if (since !== undefined) body.since = { offset: since.offset, epoch: since.epoch };
    if (reverse) body.reverse = true;
    return this._read({ history: body });
  }

  /**
   * @internal
   * @param {Record<string, unknown>} command a command that reads, without its id
   * @returns {Promise<any>} its result
   */
  _read(command) {
    if (this.#state === "disconnected") return Promise.reject(this._stoppedError());
    try {
      this.#checkQueue();
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.#command(command, (error, result) => {
        if (error) reject(error);
        else resolve(result);
      });
    });
  }

  /**
   * @internal
   * What waits for a connection is told while the client is stopped: why
   * it stopped, or that it was never started.
   *
   * @returns {Error}
   */
  _stoppedError() {
    if (this.#stoppedWith === null) {
      return new Error("Cannot wait for a connection: the client is not connected, call connect()");
    }
    return stoppedError(this.#stoppedWith.code, this.#stoppedWith.reason);
  }

  /**
   * @internal
   * @param {Subscription} subscription
   */
  _unsubscribe(subscription) {
    if (this.#subscriptions.get(subscription.channel) !== subscription) return;
    this.#subscriptions.delete(subscription.channel);
    const queued = this.#subscribing.get(subscription);
    this.#subscribing.delete(subscription);
    const index = this.#queue.findIndex((command) => command.id === queued);
    const waiting = this.#outbox.findIndex((command) => command.id === queued);
    // Never sent: the server has nothing to forget.
    if (index >= 0) this.#queue.splice(index, 1);
    else if (waiting >= 0) {
      this.#outbox.splice(waiting, 1);
      this.#inFlight.delete(/** @type {number} */ (queued));
    } else if (this.#live()) {
      const { channel } = subscription;
      const id = this.#command({ unsubscribe: { channel } }, (error) => {
        if (this.#unsubscribing.get(channel) === id) this.#unsubscribing.delete(channel);
        if (error && !(error instanceof ConnectionLost)) this.#emit("error", { error });
      });
      this.#unsubscribing.set(channel, id);
    }
    subscription._setState("unsubscribed");
  }

  /** @param {Subscription} subscription */
  #sendSubscribe(subscription) {
    subscription._setState("subscribing");
    const since = subscription.position;
    /** @type {Record<string, unknown>} */
    const body = { channel: subscription.channel };
    // Offset 0 too: a channel not yet published to, where everything since is owed. No epoch: no history.
    if (since && since.epoch !== "") body.since = { offset: since.offset, epoch: since.epoch };
    const id = this.#command({ subscribe: body }, (error, result) => {
      if (this.#subscribing.get(subscription) !== id) return;
      this.#subscribing.delete(subscription);
      if (this.#subscriptions.get(subscription.channel) !== subscription) return;
      // Lost with its connection: made again on the next one.
      if (error instanceof ConnectionLost) return;
      if (error) {
        this.#subscriptions.delete(subscription.channel);
        subscription._emit("error", { error });
        subscription._setState("unsubscribed", error);
        this.#emit("error", { error, channel: subscription.channel });
        return;
      }
      this.#subscribed(subscription, result);
    });
    this.#subscribing.set(subscription, id);
  }

  /**
   * A subscribe's reply: `{}` from a channel without history, else
   * `{"recovered":R,"offset":O,"epoch":E}` (a reply without a position after
   * a failed recovery). Recovered, the client keeps its own position: the
   * missed publications follow the reply and move it on. Not recovered, it
   * starts over from the reply's position, or from none.
   *
   * @param {Subscription} subscription
   * @param {unknown} result
   */
  #subscribed(subscription, result) {
    const fields = /** @type {Record<string, unknown>} */ (typeof result === "object" && result !== null ? result : {});
    const recovered = typeof fields.recovered === "boolean" ? fields.recovered : null;
    const position = positionOf(fields, 0);
    const keep = recovered === true && subscription.position !== null &&
      subscription.position.epoch === position?.epoch;
    subscription._setRecovery(recovered, keep ? subscription.position : position);
    const detail = { recovered, position };
    if (!subscription._setState("subscribed", undefined, detail)) {
      subscription._emit("subscribed", { channel: subscription.channel, ...detail });
    }
    this.#emit("subscribed", { channel: subscription.channel, subscription, ...detail });
  }

  /**
   * Whether a publication (or a join or leave, which take offsets on a
   * presence channel with history) goes on to the app: not when its subscription has
   * seen its offset already (the replay after a reconnect may overlap what
   * came live). One from another epoch than the last seen means the
   * channel's history was lost under this connection (the hub restarted):
   * the app is told as after a resubscribe that did not recover.
   *
   * @param {Subscription} subscription
   * @param {Position | null} position
   * @returns {boolean}
   */
  #fresh(subscription, position) {
    if (!position) return true;
    const seen = subscription.position;
    if (seen && seen.epoch === position.epoch) {
      if (position.offset <= seen.offset) return false;
      subscription._setRecovery(subscription.recovered, position);
      return true;
    }
    subscription._setRecovery(seen ? false : subscription.recovered, position);
    if (seen) {
      const detail = { recovered: false, position };
      subscription._emit("subscribed", { channel: subscription.channel, ...detail });
      this.#emit("subscribed", { channel: subscription.channel, subscription, ...detail });
    }
    return true;
  }

  /**
   * Whether commands go out now: connected, with the socket not yet lost.
   * (While a lost connection is wound up, listeners run before the state
   * leaves "connected"; what they ask for waits for the next connection.)
   *
   * @returns {boolean}
   */
  #live() {
    return this.#state === "connected" && this.#socket !== null;
  }

  #checkQueue() {
    if (!this.#live() && this.#queue.length >= this.#maxQueued) {
      throw new RangeError(
        `Cannot queue a command: ${this.#queue.length} commands already wait for the connection`,
      );
    }
    if (this.#live() && this.#outbox.length >= this.#maxQueued) {
      throw new RangeError(
        `Cannot queue a command: ${this.#outbox.length} commands already wait to go out under maxMessageRate`,
      );
    }
  }

  /**
   * Sends a command now if connected, else queues it for the next connection.
   *
   * @param {Record<string, unknown>} body
   * @param {(error: Error | null, result?: unknown) => void} done
   * @returns {number} the command's id
   */
  #command(body, done) {
    const command = { id: this.#nextId++, body, done };
    if (this.#live()) this.#write(command);
    else this.#queue.push(command);
    return command.id;
  }

  /**
   * Sends a command of the connection's own upkeep (a ping, a token's
   * renewal) now, ahead of what waits in the outbox: behind a backlog, a
   * ping would time out unsent and a renewal come after the token's expiry.
   * It still takes its share of the allowance, so the rate holds.
   *
   * @param {Record<string, unknown>} body
   * @param {(error: Error | null, result?: unknown) => void} done
   * @returns {boolean} whether it went out (else the connection is not live)
   */
  #commandNow(body, done) {
    if (!this.#live()) return false;
    const command = { id: this.#nextId++, body, done };
    this.#inFlight.set(command.id, command);
    this.#refill();
    this.#allowance -= 1;
    this.#socket?.send(JSON.stringify({ id: command.id, ...body }));
    return true;
  }

  /** @param {Command} command */
  #write(command) {
    this.#inFlight.set(command.id, command);
    this.#outbox.push(command);
    if (this.#sendTimer === null) this.#send();
  }

  /** Adds what the time since the last look allows, up to the burst. */
  #refill() {
    const now = this.#now();
    const burst = Math.max(1, this.#maxRate);
    this.#allowance = Math.min(burst, this.#allowance + (now - this.#allowanceAt) * this.#maxRate / 1000);
    this.#allowanceAt = now;
  }

  /**
   * Sends what the outbox holds as far as the allowance goes, and waits for
   * more allowance for the rest: a pusher closes a connection over its
   * `--max-message-rate` (1008), so a burst of resubscribes after a
   * reconnect must not pass it.
   */
  #send() {
    this.#refill();
    const due = this.#outbox.splice(0, Math.floor(this.#allowance));
    this.#allowance -= due.length;
    for (const command of due) this.#socket?.send(JSON.stringify({ id: command.id, ...command.body }));
    if (this.#outbox.length === 0) return;
    const generation = this.#generation;
    const wait = Math.ceil((1 - this.#allowance) * 1000 / this.#maxRate);
    this.#sendTimer = this.#timers.setTimeout(() => {
      this.#sendTimer = null;
      if (generation === this.#generation) this.#send();
    }, wait);
  }

  async #open() {
    const generation = ++this.#generation;
    this.#setState("connecting");
    const url = new URL(this.#url);
    if (this.#token !== undefined) {
      let token;
      try {
        token = typeof this.#token === "function" ? await this.#token() : this.#token;
        const invalid = notAToken(token);
        if (invalid) throw invalid;
      } catch (error) {
        if (generation !== this.#generation) return;
        const cause = error instanceof Error ? error.message : String(error);
        this.#emit("error", { error: new Error(`Cannot get a token: ${cause}`) });
        this.#closed(generation, 4000, "no token");
        return;
      }
      if (generation !== this.#generation) return;
      url.searchParams.set("token", token);
      this.#connectionToken = token;
      const lifetime = lifetimeOf(tokenTimes(token));
      this.#connectionDeadline = lifetime === null ? null : this.#now() + lifetime;
    }
    let socket;
    try {
      socket = new this.#WebSocket(url.href);
    } catch (error) {
      this.#emit("error", { error });
      this.#closed(generation, 1006, "");
      return;
    }
    this.#socket = socket;
    socket.onmessage = (event) => {
      if (generation !== this.#generation) return;
      this.#heard = true;
      this.#receive(event.data);
    };
    socket.onclose = (event) => this.#closed(generation, event.code, event.reason);
    // A failed handshake reports `error` then `close`; the close is what counts.
    socket.onerror = () => {};
    this.#greetingTimer = this.#timers.setTimeout(() => {
      this.#greetingTimer = null;
      if (generation !== this.#generation) return;
      this.#emit("error", { error: new Error(`No greeting within ${this.#connectTimeout} ms`) });
      // Unless a listener of that error stopped the client.
      if (generation === this.#generation) this.#drop(4000, "no greeting", true);
    }, this.#connectTimeout);
  }

  /** @param {unknown} data */
  #receive(data) {
    if (typeof data !== "string") {
      this.#emit("error", { error: new TypeError("Unexpected binary message: the pusher sends text") });
      return;
    }
    if (this.#state === "connecting") {
      this.#greet(data);
      return;
    }
    const message = protocolMessage(data);
    if (!message) {
      this.#emit("message", { data });
      return;
    }
    if (typeof message.id === "number") {
      const command = this.#inFlight.get(message.id);
      if (!command) return;
      this.#inFlight.delete(message.id);
      const error = message.error;
      command.done(error ? new PushError(Number(error.code), String(error.message)) : null, message.result);
    } else if (message.subscribed) {
      const channel = String(message.subscribed.channel);
      // The pusher answers in order: our unsubscribe, not answered yet, comes after this there, and undoes it.
      if (!this.#unsubscribing.has(channel)) this.#serverSubscribed(channel);
    } else if (message.unsubscribed) {
      const subscription = this.#subscriptions.get(String(message.unsubscribed.channel));
      if (!subscription) return;
      // Before the reply to our subscribe: the pusher took that subscribe after this unsubscribe (it tells
      // a later one after the reply), so the reply decides.
      if (this.#inFlight.has(/** @type {number} */ (this.#subscribing.get(subscription)))) return;
      this.#subscriptions.delete(subscription.channel);
      this.#subscribing.delete(subscription);
      subscription._setState("unsubscribed");
      this.#emit("unsubscribed", { channel: subscription.channel, subscription });
    } else if (message.error) {
      this.#emit("error", { error: new PushError(Number(message.error.code), String(message.error.message)) });
    } else if (message.join || message.leave) {
      const type = message.join ? "join" : "leave";
      const detail = { channel: message.channel, info: message.join ?? message.leave };
      const subscription = this.#subscriptions.get(String(message.channel));
      // Sent before the pusher took our unsubscribe: the app has left the channel.
      if (!subscription) return;
      // On a presence channel with history, joins and leaves take offsets too: heard once, and the position moves on.
      if (!this.#fresh(subscription, positionOf(message, 1))) return;
      subscription._emit(type, detail);
      this.#emit(type, detail);
    } else {
      const subscription = this.#subscriptions.get(String(message.channel));
      // Sent before the pusher took our unsubscribe: the app has left the channel.
      if (!subscription) return;
      const position = positionOf(message, 1);
      if (!this.#fresh(subscription, position)) return;
      const detail = position
        ? { channel: message.channel, data: message.data, offset: position.offset, epoch: position.epoch }
        : { channel: message.channel, data: message.data };
      subscription._emit("publication", detail);
      this.#emit("publication", detail);
    }
  }

  /** @param {string} text */
  #greet(text) {
    const generation = this.#generation;
    const match = GREETING.exec(text);
    if (!match) {
      this.#emit("error", { error: new SyntaxError(`Unexpected first message: expected the greeting, got ${text}`) });
      if (generation === this.#generation) this.#drop(4000, "no greeting", true);
      return;
    }
    this.#clearGreetingTimer();
    this.#greetedAt = this.#now();
    // A new connection: the pusher's allowance for it starts full, and so does ours.
    this.#allowance = Math.max(1, this.#maxRate);
    this.#allowanceAt = this.#greetedAt;
    this.#address = { workerId: /** @type {string} */ (match[1]), connectionId: Number(match[2]) };
    this.#setState("connected");
    // A `state` listener may have stopped the client.
    if (generation !== this.#generation) return;
    for (const subscription of this.#subscriptions.values()) {
      if (!this.#subscribing.has(subscription)) this.#sendSubscribe(subscription);
    }
    const queued = this.#queue;
    this.#queue = [];
    for (const command of queued) this.#write(command);
    if (this.#connectionToken !== null) this.#scheduleRefresh(this.#connectionToken);
    this.#watchSilence();
    this.#emit("connected", { ...this.#address, greeting: text });
  }

  /**
   * Renews the connection's token some time before it expires, when the
   * token comes from a function: a fifth of what is left (at most a
   * minute), less up to half of that at random, so that clients whose tokens
   * were made together do not all ask at once. What is left is counted from
   * when the client got the token ({@link lifetimeOf}); when it says nothing
   * is left (a browser clock ahead of the issuer's, for a token without
   * `iat`), the client asks after the usual retry delay rather than at once.
   *
   * @param {string} token
   */
  #scheduleRefresh(token) {
    if (typeof this.#token !== "function") return;
    const times = tokenTimes(token);
    if (times === null || this.#connectionDeadline === null) return;
    const left = this.#connectionDeadline - this.#now();
    if (left <= 0) return this.#refreshAt(REFRESH_RETRY, times.exp);
    const lead = Math.min(MAX_REFRESH_LEAD, left / 5) * (1 - this.#random() / 2);
    this.#refreshAt(left - lead, times.exp);
  }

  /**
   * @param {number} delay
   * @param {number} expires the connection's token's `exp`
   */
  #refreshAt(delay, expires) {
    this.#clearRefreshTimer();
    const generation = this.#generation;
    // A token that lasts for months is waited for in steps a timer can take.
    const step = Math.min(delay, MAX_TIMER_DELAY);
    this.#refreshTimer = this.#timers.setTimeout(() => {
      this.#refreshTimer = null;
      if (generation !== this.#generation) return;
      if (delay > step) this.#refreshAt(delay - step, expires);
      else void this.#refresh(generation, expires);
    }, step);
  }

  /**
   * Gets a new token and sends it; after a failure, tries again (every
   * {@link REFRESH_RETRY} at most, sooner when the token has less than twice
   * that left). A token that did run out gets the connection closed with
   * 4401, and the client reconnects with a new one.
   *
   * @param {number} generation
   * @param {number} expires the connection's token's `exp`
   */
  async #refresh(generation, expires) {
    /** @param {unknown} error */
    const failed = (error) => {
      const cause = error instanceof Error ? error.message : String(error);
      this.#emit("error", { error: new Error(`Cannot renew the token: ${cause}`) });
      if (generation !== this.#generation) return;
      const left = this.#connectionDeadline === null ? 0 : this.#connectionDeadline - this.#now();
      const half = left / 2;
      this.#refreshAt(half >= MIN_REFRESH_RETRY ? Math.min(REFRESH_RETRY, half) : REFRESH_RETRY, expires);
    };
    let token;
    try {
      token = await /** @type {() => string | Promise<string>} */ (this.#token)();
    } catch (error) {
      if (generation === this.#generation) failed(error);
      return;
    }
    if (generation !== this.#generation) return;
    const invalid = notAToken(token);
    if (invalid) return failed(invalid);
    // A cached token handed out again would renew nothing, and ask again at once.
    const times = tokenTimes(token);
    if (times !== null && times.exp <= expires) {
      failed(new Error("the token function gave no token that expires later than the connection's"));
      return;
    }
    const lifetime = lifetimeOf(times);
    const got = this.#now();
    // Not live any more: the next connection is made with a token of its own.
    this.#commandNow({ refresh: { token } }, (error) => {
      if (error instanceof ConnectionLost || generation !== this.#generation) return;
      if (error) return failed(error);
      this.#connectionToken = token;
      this.#connectionDeadline = lifetime === null ? null : got + lifetime;
      this.#scheduleRefresh(token);
    });
  }

  /** @param {string} channel */
  #serverSubscribed(channel) {
    const existing = this.#subscriptions.get(channel);
    if (existing) {
      // The server has it now, whatever our own subscribe's reply says.
      existing._setState("subscribed");
      return;
    }
    const subscription = new Subscription(this, channel, true);
    this.#subscriptions.set(channel, subscription);
    // Listeners added in the `subscribed` handler see the state already set.
    subscription._setState("subscribed");
    this.#emit("subscribed", { channel, subscription, recovered: null, position: null });
  }

  /**
   * Closes the socket (if any) and forgets it, as if it had closed with `code`.
   *
   * @param {number} code
   * @param {string} reason
   * @param {boolean} reconnect
   */
  #drop(code, reason, reconnect) {
    const socket = this.#socket;
    const generation = this.#generation;
    if (socket) {
      socket.onclose = null;
      try {
        socket.close(code >= 3000 || code === 1000 ? code : 1000, reason);
      } catch {
        // Closing a socket that is already closing: nothing left to do.
      }
    }
    if (reconnect) this.#closed(generation, code, reason);
    else {
      const stopped = ++this.#generation;
      this.#lose();
      if (stopped !== this.#generation) return;
      this.#stop(code, reason);
    }
  }

  /**
   * The client stops (`disconnect()`, or a close after which it does not
   * come back): what waits for a connection is told it will not come. The
   * subscriptions stay, and are made again on the next `connect()`.
   *
   * @param {number} code
   * @param {string} reason
   */
  #stop(code, reason) {
    this.#stoppedWith = { code, reason };
    const queued = this.#queue;
    this.#queue = [];
    const lost = new ConnectionLost();
    for (const command of queued) command.done(lost);
    const error = stoppedError(code, reason);
    for (const subscription of this.#subscriptions.values()) subscription._stopped(error);
    const generation = this.#generation;
    this.#setState("disconnected");
    // A `state` listener that called connect() again: the client is not stopped, and no one is to be told it is.
    if (generation !== this.#generation) return;
    this.#emit("disconnected", { code, reason, reconnecting: false, delay: null });
  }

  /**
   * The socket of `generation` closed: forget it, and retry unless told not to.
   *
   * @param {number} generation
   * @param {number} code
   * @param {string} reason
   */
  #closed(generation, code, reason) {
    if (generation !== this.#generation) return;
    if (this.#greetedAt !== null && this.#now() - this.#greetedAt >= PROVEN_AFTER) this.#attempt = 0;
    // Listeners run from here on (the app's own code): any of them may stop the client, or start it again.
    const closed = ++this.#generation;
    this.#lose();
    // A fixed token that expired would be refused on every attempt.
    const expired = code === TOKEN_EXPIRED && typeof this.#token === "string";
    if (expired && closed === this.#generation) {
      this.#emit("error", { error: new Error("The token expired: pass a function as token to renew it") });
    }
    if (closed !== this.#generation) return;
    if (isTerminal(code) || expired) return this.#stop(code, reason);
    const delay = this.#backoff();
    this.#setState("connecting");
    if (closed !== this.#generation) return;
    this.#emit("disconnected", { code, reason, reconnecting: true, delay });
    if (closed !== this.#generation) return;
    this.#retryTimer = this.#timers.setTimeout(() => {
      this.#retryTimer = null;
      this.#open();
    }, delay);
  }

  /** What a connection's end takes with it: its socket, its replies, the server's subscriptions. */
  #lose() {
    this.#clearGreetingTimer();
    this.#clearRefreshTimer();
    this.#clearPingTimer();
    this.#clearSendTimer();
    this.#outbox = [];
    this.#connectionToken = null;
    this.#connectionDeadline = null;
    this.#greetedAt = null;
    if (this.#socket) {
      this.#socket.onmessage = null;
      this.#socket.onclose = null;
      this.#socket.onerror = null;
    }
    this.#socket = null;
    const inFlight = [...this.#inFlight.values()];
    this.#inFlight.clear();
    const lost = new ConnectionLost();
    for (const command of inFlight) command.done(lost);
    for (const subscription of [...this.#subscriptions.values()]) {
      // A listener of an earlier one may have unsubscribed it.
      if (this.#subscriptions.get(subscription.channel) !== subscription) continue;
      if (!subscription.serverSide) {
        subscription._setState("subscribing");
        continue;
      }
      this.#subscriptions.delete(subscription.channel);
      subscription._setState("unsubscribed");
      this.#emit("unsubscribed", { channel: subscription.channel, subscription });
    }
  }

  /**
   * Looks every `pingInterval` whether the pusher was heard from: after an
   * interval of silence, pings it, and drops the connection (to reconnect)
   * when nothing comes back within `pingTimeout`. Any message counts, so a
   * busy connection sends no pings.
   */
  #watchSilence() {
    if (this.#pingInterval === 0) return;
    const generation = this.#generation;
    this.#heard = false;
    this.#pingTimer = this.#timers.setTimeout(() => {
      this.#pingTimer = null;
      if (generation !== this.#generation) return;
      if (this.#heard) return this.#watchSilence();
      this.#ping(generation);
    }, this.#pingInterval);
  }

  /**
   * Pings the pusher, and drops the connection of `generation` when nothing
   * comes back within `pingTimeout`; otherwise watches for silence again.
   *
   * @param {number} generation
   */
  #ping(generation) {
    this.#commandNow({ ping: {} }, () => {});
    this.#heard = false;
    this.#pingTimer = this.#timers.setTimeout(() => {
      this.#pingTimer = null;
      if (generation !== this.#generation) return;
      if (this.#heard) return this.#watchSilence();
      this.#emit("error", { error: new Error(`No answer to a ping within ${this.#pingTimeout} ms`) });
      if (generation === this.#generation) this.#drop(4000, "no answer to ping", true);
    }, this.#pingTimeout);
  }

  #clearPingTimer() {
    if (this.#pingTimer === null) return;
    this.#timers.clearTimeout(this.#pingTimer);
    this.#pingTimer = null;
  }

  /** @returns {number} the wait before the next attempt: full jitter under a doubling, capped ceiling */
  #backoff() {
    const ceiling = Math.min(this.#maxDelay, this.#minDelay * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    return Math.floor(this.#random() * ceiling);
  }

  #cancelRetry() {
    if (this.#retryTimer === null) return;
    this.#timers.clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
  }

  #clearRefreshTimer() {
    if (this.#refreshTimer === null) return;
    this.#timers.clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
  }

  #clearSendTimer() {
    if (this.#sendTimer === null) return;
    this.#timers.clearTimeout(this.#sendTimer);
    this.#sendTimer = null;
  }

  #clearGreetingTimer() {
    if (this.#greetingTimer === null) return;
    this.#timers.clearTimeout(this.#greetingTimer);
    this.#greetingTimer = null;
  }

  /** @param {"disconnected" | "connecting" | "connected"} state */
  #setState(state) {
    const previous = this.#state;
    if (state === previous) return;
    this.#state = state;
    if (state === "disconnected") this.#network?.removeEventListener("online", this.#online);
    this.#emit("state", { state, previous });
  }

  /**
   * @param {string} type
   * @param {unknown} detail
   */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// `using client = new PushClient(...)` disconnects at the end of its scope,
// where the runtime knows `Symbol.dispose` (older browsers do not).
if (typeof Symbol.dispose === "symbol") {
  Object.defineProperty(PushClient.prototype, Symbol.dispose, {
    value: function dispose() {
      this.disconnect();
    },
    writable: true,
    configurable: true,
  });
}

/**
 * The position in `fields` (`offset`, `epoch`), or null when it has none or
 * a malformed one.
 *
 * @param {Record<string, unknown>} fields
 * @param {number} lowest the lowest offset that makes sense: 1 for a publication, 0 for a reply (a channel not yet published to)
 * @returns {Position | null}
 */
function positionOf(fields, lowest) {
  const { offset, epoch } = fields;
  if (!Number.isSafeInteger(offset) || /** @type {number} */ (offset) < lowest) return null;
  if (typeof epoch !== "string" || epoch === "") return null;
  return { offset: /** @type {number} */ (offset), epoch };
}

/**
 * The JSON protocol message `text` is, or null when it is plain text (or
 * JSON that is not shaped like one of the protocol's messages).
 *
 * @param {string} text
 * @returns {Record<string, any> | null}
 */
function protocolMessage(text) {
  // Cheap test first: most plain text is not a JSON object.
  if (text.charCodeAt(0) !== 0x7b) return null;
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof message !== "object" || message === null || Array.isArray(message)) return null;
  const isObject = (/** @type {unknown} */ value) => typeof value === "object" && value !== null;
  if (typeof message.id === "number" && ("result" in message || isObject(message.error))) return message;
  if (isObject(message.subscribed) && typeof message.subscribed.channel === "string") return message;
  if (isObject(message.unsubscribed) && typeof message.unsubscribed.channel === "string") return message;
  if (typeof message.channel === "string") {
    if ("data" in message) return message;
    if (isObject(message.join) || isObject(message.leave)) return message;
  }
  if (isObject(message.error) && Object.keys(message).length === 1) return message;
  return null;
}
