/**
 * The dashboard's logins: a bounded map from random session ids to a
 * per-session CSRF token and an expiry. The cookie carries the session id
 * only, never the API key, so a stolen cookie dies with its session and
 * logging out ends it on the server.
 *
 * @module
 */

import { secretsEqual } from "../shared/secret.ts";

/** Sessions kept at most by default; a login beyond it ends the oldest. */
export const DEFAULT_MAX_SESSIONS = 64;

/** How long a session lives after its login by default, in milliseconds: a working day. */
export const DEFAULT_SESSION_TTL = 8 * 60 * 60 * 1000;

/** One logged-in browser. */
export interface Session {
  /** The cookie's value: 32 random bytes, base64url. */
  readonly id: string;
  /** What the page sends back in `x-csrf-token` (and logout's form): 32 random bytes, base64url. */
  readonly csrf: string;
  /** When it ends, on the store's clock, in milliseconds. */
  readonly expires: number;
}

/** Options for {@linkcode SessionStore}. */
export interface SessionStoreOptions {
  /** Sessions kept at most; a login beyond it ends the oldest. @default {64} */
  maxSessions?: number;
  /** How long a session lives after its login, in milliseconds. @default {28800000} */
  ttl?: number;
  /** The clock, in milliseconds. @default {Date.now} */
  now?: () => number;
}

/**
 * The dashboard's sessions. Bounded: at most `maxSessions` live at once,
 * and a login past that ends the oldest one (only a holder of the API key
 * can log in, so an eviction costs an operator a login, never the service
 * its memory). Expired sessions are dropped when met and at each login.
 *
 * @example
 * ```ts
 * import { SessionStore } from "./_sessions.ts";
 *
 * const sessions = new SessionStore({ maxSessions: 2, ttl: 60_000 });
 * const session = sessions.create();
 * sessions.get(session.id)?.csrf === session.csrf; // true
 * sessions.delete(session.id);
 * ```
 */
export class SessionStore {
  readonly maxSessions: number;
  readonly ttl: number;
  readonly #now: () => number;
  /** In login order: the first is the oldest. */
  readonly #sessions = new Map<string, Session>();

  constructor(options: SessionStoreOptions = {}) {
    this.maxSessions = options.maxSessions ?? DEFAULT_MAX_SESSIONS;
    this.ttl = options.ttl ?? DEFAULT_SESSION_TTL;
    this.#now = options.now ?? Date.now;
    if (!(this.maxSessions >= 1)) throw new RangeError(`Invalid maxSessions: ${this.maxSessions}, expected at least 1`);
    if (!(this.ttl > 0)) throw new RangeError(`Invalid ttl: ${this.ttl}, expected more than 0`);
  }

  /** Live sessions. */
  get size(): number {
    this.#sweep();
    return this.#sessions.size;
  }

  /** Starts a session, ending the oldest one when the store is full. */
  create(): Session {
    this.#sweep();
    while (this.#sessions.size >= this.maxSessions) {
      this.#sessions.delete(this.#sessions.keys().next().value!);
    }
    const session = { id: randomToken(), csrf: randomToken(), expires: this.#now() + this.ttl };
    this.#sessions.set(session.id, session);
    return session;
  }

  /** The live session of `id`; undefined for an unknown, ended or expired one. */
  get(id: string | undefined): Session | undefined {
    if (id === undefined) return undefined;
    const session = this.#sessions.get(id);
    if (session === undefined) return undefined;
    if (session.expires <= this.#now()) {
      this.#sessions.delete(id);
      return undefined;
    }
    return session;
  }

  /** Whether `given` is the CSRF token of the live session `id`, compared in constant time. */
  checkCsrf(id: string | undefined, given: string | null | undefined): boolean {
    const session = this.get(id);
    if (session === undefined || !given) return false;
    return secretsEqual(given, session.csrf);
  }

  /** Ends the session `id`; harmless for one that is unknown or gone. */
  delete(id: string | undefined): void {
    if (id !== undefined) this.#sessions.delete(id);
  }

  #sweep(): void {
    const now = this.#now();
    for (const [id, session] of this.#sessions) if (session.expires <= now) this.#sessions.delete(id);
  }
}

function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}
