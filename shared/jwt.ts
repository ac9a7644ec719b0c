/**
 * JSON Web Tokens signed with HMAC SHA-256 (HS256), the kind any backend can
 * mint with a shared secret: verification for the pusher, and signing for
 * backends and tests.
 *
 * @module
 */

import { createHmac, timingSafeEqual } from "node:crypto";

/** Claims the pusher reads; others are kept as they are. */
export interface JwtClaims {
  /** Subject: the user the connection belongs to. */
  sub: string;
  /** Expiry, in seconds since the epoch. */
  exp: number;
  /** Not before, in seconds since the epoch. */
  nbf?: number;
  [claim: string]: unknown;
}

/** A token that did not verify; the message says why, without the token. */
export class TokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenError";
  }
}

/** A token that verified but for its `exp`, which has passed. */
export class TokenExpired extends TokenError {
  constructor() {
    super("Token expired");
    this.name = "TokenExpired";
  }
}

/**
 * Verifies an HS256 token: signature (constant time), algorithm (HS256
 * only, never `none`), `exp` (required, finite, in the future), `nbf` (if
 * present, not in the future) and `sub` (required, a non-empty string).
 *
 * @param now Seconds since the epoch. @default {Date.now() / 1000}
 * @throws {TokenError} naming what is wrong.
 * @throws {RangeError} when `secret` is empty: anyone could sign with it.
 *
 * @example
 * ```ts
 * import { TokenError, verifyJwt } from "./jwt.ts";
 *
 * const secret = Deno.env.get("PUSHER_TOKEN_SECRET")!;
 * Deno.serve((req) => {
 *   try {
 *     const claims = verifyJwt(new URL(req.url).searchParams.get("token") ?? "", secret);
 *     return new Response(`hello ${claims.sub}\n`);
 *   } catch (error) {
 *     if (error instanceof TokenError) return new Response(`${error.message}\n`, { status: 401 });
 *     throw error;
 *   }
 * });
 * ```
 */
export function verifyJwt(token: string, secret: string, now: number = Date.now() / 1000): JwtClaims {
  requireSecret(secret);
  const parts = token.split(".");
  if (parts.length !== 3) throw new TokenError("Invalid token: expected three dot-separated parts");
  const [head, body, signature] = parts as [string, string, string];
  // Buffer's decoder skips characters outside the alphabet and stops at "=":
  // without this, a token with junk added would still verify.
  if (!BASE64URL.test(head) || head === "") throw new TokenError("Invalid token: header is not base64url");
  if (!BASE64URL.test(body) || body === "") throw new TokenError("Invalid token: payload is not base64url");
  if (!BASE64URL.test(signature)) throw new TokenError("Invalid token: signature is not base64url");
  const header = decodePart(head, "header");
  if (header.alg !== "HS256") {
    // Named only when it is a short string: the header is the sender's, and String() of an object can throw.
    const alg = typeof header.alg === "string" ? header.alg.slice(0, 20) : typeof header.alg;
    throw new TokenError(`Invalid token: algorithm must be HS256, not ${alg}`);
  }
  // Compared as text: the last character of 32 bytes' encoding has unused
  // bits, and only the canonical spelling of the signature is the signature.
  const expected = Buffer.from(sign(`${head}.${body}`, secret).toString("base64url"));
  const given = Buffer.from(signature);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    throw new TokenError("Invalid token: bad signature");
  }
  const claims = decodePart(body, "payload");
  if (typeof claims.exp !== "number") throw new TokenError("Invalid token: exp is required");
  // 1e999 parses as Infinity: a token that never expires.
  if (!Number.isFinite(claims.exp)) throw new TokenError("Invalid token: exp must be a finite number of seconds");
  if (now >= claims.exp) throw new TokenExpired();
  if (claims.nbf !== undefined && (typeof claims.nbf !== "number" || now < claims.nbf)) {
    throw new TokenError("Token not valid yet");
  }
  if (typeof claims.sub !== "string" || claims.sub === "") throw new TokenError("Invalid token: sub is required");
  return claims as JwtClaims;
}

/**
 * Signs claims as an HS256 token.
 *
 * @example
 * ```ts
 * import { signJwt } from "./jwt.ts";
 *
 * const secret = Deno.env.get("PUSHER_TOKEN_SECRET")!;
 * const token = signJwt({ sub: "alice", exp: Math.floor(Date.now() / 1000) + 3600 }, secret);
 * new WebSocket(`ws://127.0.0.1:4236/?token=${token}`);
 * ```
 */
export function signJwt(claims: Record<string, unknown>, secret: string): string {
  requireSecret(secret);
  const head = Buffer.from(JSON.stringify({ alg: "HS256", typ: "JWT" })).toString("base64url");
  const body = Buffer.from(JSON.stringify(claims)).toString("base64url");
  return `${head}.${body}.${sign(`${head}.${body}`, secret).toString("base64url")}`;
}

/** The base64url alphabet, without padding (RFC 7515 2). */
const BASE64URL = /^[A-Za-z0-9_-]*$/;

function requireSecret(secret: string): void {
  if (secret === "") throw new RangeError("Cannot use an empty token secret: anyone could sign with it");
}

function sign(input: string, secret: string): Buffer {
  return createHmac("sha256", secret).update(input).digest();
}

function decodePart(part: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
  } catch {
    throw new TokenError(`Invalid token: ${what} is not base64url JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TokenError(`Invalid token: ${what} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}
