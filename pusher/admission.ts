/**
 * Who may connect to a pusher: the browser's origin against the allowed
 * list, and the client's token (`?token=JWT`) against the secret.
 *
 * @module
 */

import { originMatcher } from "./_origin.ts";
import type { TransportRequest } from "./transport.ts";
import { channelsClaim } from "./channel_patterns.ts";
import { MAX_CARRIED_USER_LENGTH } from "../shared/address.ts";

/** Options for {@linkcode Admission}. */
export interface AdmissionOptions {
  /**
   * Origins allowed to connect, `*` wildcards allowed (`https://*.example.com`).
   * A handshake without an `Origin` header (not from a browser) is not
   * checked. null allows all.
   *
   * @default {null}
   */
  allowedOrigins?: readonly string[] | null;
  /**
   * HS256 secret for client tokens; null lets anyone connect. An empty
   * secret is refused (RangeError): anyone could sign tokens with it.
   *
   * @default {null}
   */
  tokenSecret?: string | null;
}

/** A handshake let in, and whose it is. */
export interface Admitted {
  readonly admitted: true;
  /** The token's `sub`, when tokens are checked; else null. */
  readonly user: string | null;
  /**
   * The channels the client may subscribe to itself: the token's `channels`
   * claim (names and `prefix*` patterns; none when absent), or null, any
   * channel, when tokens are not checked.
   */
  readonly channels: readonly string[] | null;
  /** When the token expires, in milliseconds since the epoch (its `exp`); null when tokens are not checked. */
  readonly expires: number | null;
}

/** A handshake refused: the metric's reason, the HTTP status and the one-line answer. */
export interface Refused {
  readonly admitted: false;
  readonly reason: "origin" | "token";
  readonly status: 401 | 403;
  readonly message: string;
  /**
   * The token is well signed and past its `exp`: the client is to be told
   * so as a close code it can read (4401), not a 401 that a browser shows
   * as 1006 and retries for ever.
   */
  readonly expired?: true;
}

/**
 * Decides whether a WebSocket handshake may become a connection.
 *
 * With a token secret it loads `shared/jwt.ts`, and with it `node:crypto`,
 * when constructed, not when this module loads: Deno's Node layer costs a
 * pusher worker about 4 MiB of resident memory (issue 19), which a pusher
 * that checks no tokens does not need. A handshake that comes before it has
 * loaded (the first milliseconds of a worker) is answered once it has.
 */
export class Admission {
  readonly #originAllowed: ((origin: string) => boolean) | null;
  readonly #tokenSecret: string | null;
  #jwt: typeof import("../shared/jwt.ts") | null = null;
  readonly #jwtLoaded: Promise<void> | null = null;

  constructor(options: AdmissionOptions = {}) {
    if (options.tokenSecret === "") {
      throw new RangeError("Cannot check tokens with an empty secret: anyone could sign one");
    }
    this.#tokenSecret = options.tokenSecret ?? null;
    if (this.#tokenSecret !== null) this.#jwtLoaded = import("../shared/jwt.ts").then((jwt) => void (this.#jwt = jwt));
    this.#originAllowed = options.allowedOrigins ? originMatcher(options.allowedOrigins) : null;
  }

  /** Checks the origin, then the token (`url` is `req.url`, parsed). */
  check(req: TransportRequest, url: URL): Admitted | Refused | Promise<Admitted | Refused> {
    const origin = req.headers.get("origin");
    if (this.#originAllowed && origin !== null && !this.#originAllowed(origin)) {
      return { admitted: false, reason: "origin", status: 403, message: `Origin not allowed: ${origin}` };
    }
    if (this.#tokenSecret === null) return ANONYMOUS;
    const token = url.searchParams.get("token");
    if (!token) return refuseToken("Unauthorized: this pusher needs a token (?token=JWT)");
    return this.verify(token);
  }

  /**
   * Checks a token as a handshake's: its signature, its `exp`, its `sub` and
   * its `channels` claim. Without a token secret there is nothing to check
   * it with: refused.
   */
  verify(token: string): Admitted | Refused | Promise<Admitted | Refused> {
    if (this.#tokenSecret === null) return refuseToken("Unauthorized: this pusher checks no tokens");
    const jwt = this.#jwt;
    if (jwt === null) return this.#jwtLoaded!.then(() => this.verify(token));
    let claims;
    try {
      claims = jwt.verifyJwt(token, this.#tokenSecret);
    } catch (error) {
      if (!(error instanceof jwt.TokenError)) throw error;
      if (error instanceof jwt.TokenExpired) return { ...refuseToken(`Unauthorized: ${error.message}`), expired: true };
      return refuseToken(`Unauthorized: ${error.message}`);
    }
    // The user's subject on the bus must fit it, or pushes to the user could never arrive.
    if (claims.sub.length > MAX_CARRIED_USER_LENGTH) {
      return refuseToken(`Unauthorized: Invalid token: sub is over ${MAX_CARRIED_USER_LENGTH} characters`);
    }
    const channels = channelsClaim(claims.channels);
    if (typeof channels === "string") return refuseToken(`Unauthorized: ${channels}`);
    return { admitted: true, user: claims.sub, channels, expires: claims.exp * 1000 };
  }
}

const ANONYMOUS: Admitted = { admitted: true, user: null, channels: null, expires: null };

function refuseToken(message: string): Refused {
  return { admitted: false, reason: "token", status: 401, message };
}
