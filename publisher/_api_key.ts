/**
 * The publisher's API key check: a publish presents the key as
 * `Authorization: Bearer KEY`, as Centrifugo's `X-API-Key: KEY` (or its older
 * `Authorization: apikey KEY`), or as the `api_key` query parameter.
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

const MISSING_KEY =
  "Unauthorized: this publisher needs an API key (Authorization: Bearer KEY, X-API-Key: KEY or api_key=KEY)";
const WRONG_KEY = "Unauthorized: wrong API key";
/** `Authorization: Bearer KEY` (RFC 6750 §2.1), or Centrifugo's older `apikey KEY`; the scheme is case-insensitive. */
const KEY_SCHEME = /^(?:Bearer|apikey) +(\S+) *$/i;

/**
 * Refuses a publish that does not present `apiKey`; with none, every publish
 * passes. The first place that holds a key decides, in this order:
 * `Authorization`, `X-API-Key`, `api_key`; a right key further down does not
 * save a wrong one. The key is compared in constant time.
 *
 * @throws {Rejection} 401 with `www-authenticate: Bearer` when no key was
 * given, or `Bearer error="invalid_token"` when a wrong one was.
 */
export function checkApiKey(req: HeadersOf, query: Fields, apiKey: string | undefined): void {
  if (apiKey === undefined) return;
  let given = req.headers.get("authorization")?.match(KEY_SCHEME)?.[1] ?? req.headers.get("x-api-key") ?? undefined;
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
