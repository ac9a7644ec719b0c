/**
 * The publisher's API key check: a publish presents the key as
 * `Authorization: Bearer KEY` or as the `api_key` query parameter.
 *
 * @module
 */

import { secretsEqual } from "../shared/secret.ts";
import type { Fields } from "./form.ts";
import { Rejection } from "./_rejection.ts";

/** What the check reads of a request: its headers (a fetch `Request`, or a server's head before one is built). */
export interface HeadersOf {
  readonly headers: { get(name: string): string | null };
}

const MISSING_KEY = "Unauthorized: this publisher needs an API key (Authorization: Bearer KEY or api_key=KEY)";
const WRONG_KEY = "Unauthorized: wrong API key";
/** `Authorization: Bearer KEY` (RFC 6750 §2.1); the scheme is case-insensitive. */
const BEARER = /^Bearer +(\S+) *$/i;

/**
 * Refuses a publish that does not present `apiKey`; with none, every publish
 * passes. The header decides when it holds a bearer token: a right key in the
 * query does not save a wrong one there. The key is compared in constant time.
 *
 * @throws {Rejection} 401 with `www-authenticate: Bearer` when no key was
 * given, or `Bearer error="invalid_token"` when a wrong one was.
 */
export function checkApiKey(req: HeadersOf, query: Fields, apiKey: string | undefined): void {
  if (apiKey === undefined) return;
  let given = req.headers.get("authorization")?.match(BEARER)?.[1];
  if (given === undefined) {
    try {
      given = query.get("api_key");
    } catch {
      // Bad percent-encoding cannot be the key; the answer must not say more.
      given = "";
    }
  }
  if (given === undefined) {
    throw new Rejection(401, MISSING_KEY, { headers: { "www-authenticate": "Bearer" } });
  }
  if (!secretsEqual(given, apiKey)) {
    throw new Rejection(401, WRONG_KEY, { headers: { "www-authenticate": 'Bearer error="invalid_token"' } });
  }
}
