/**
 * Who may connect to a pusher: the browser's origin against the allowed
 * list, and the client's token (`?token=JWT`) against the secret.
 *
 * @module
 */

import { originMatcher } from "./_origin.ts";
import { TokenError, verifyJwt } from "../shared/jwt.ts";
import type { TransportRequest } from "./transport.ts";

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
}

/** A handshake refused: the metric's reason, the HTTP status and the one-line answer. */
export interface Refused {
  readonly admitted: false;
  readonly reason: "origin" | "token";
  readonly status: 401 | 403;
  readonly message: string;
}

/** Decides whether a WebSocket handshake may become a connection. */
export class Admission {
  readonly #originAllowed: ((origin: string) => boolean) | null;
  readonly #tokenSecret: string | null;

  constructor(options: AdmissionOptions = {}) {
    if (options.tokenSecret === "") {
      throw new RangeError("Cannot check tokens with an empty secret: anyone could sign one");
    }
    this.#tokenSecret = options.tokenSecret ?? null;
    this.#originAllowed = options.allowedOrigins ? originMatcher(options.allowedOrigins) : null;
  }

  /** Checks the origin, then the token (`url` is `req.url`, parsed). */
  check(req: TransportRequest, url: URL): Admitted | Refused {
    const origin = req.headers.get("origin");
    if (this.#originAllowed && origin !== null && !this.#originAllowed(origin)) {
      return { admitted: false, reason: "origin", status: 403, message: `Origin not allowed: ${origin}` };
    }
    if (this.#tokenSecret === null) return ANONYMOUS;
    const token = url.searchParams.get("token");
    if (!token) return refuseToken("Unauthorized: this pusher needs a token (?token=JWT)");
    try {
      return { admitted: true, user: verifyJwt(token, this.#tokenSecret).sub };
    } catch (error) {
      if (!(error instanceof TokenError)) throw error;
      return refuseToken(`Unauthorized: ${error.message}`);
    }
  }
}

const ANONYMOUS: Admitted = { admitted: true, user: null };

function refuseToken(message: string): Refused {
  return { admitted: false, reason: "token", status: 401, message };
}
