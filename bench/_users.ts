/**
 * The benchmark's users, for a pusher that checks tokens (`--token-secret`):
 * client `i` is user `bench-user-<i>`, and connects with a token for it.
 *
 * @module
 */

import { signJwt } from "../shared/jwt.ts";

/** How long a client's token is valid: longer than any run. */
export const TOKEN_SECONDS = 3600;

/** The user of client `index`. */
export function benchUser(index: number): string {
  return `bench-user-${index}`;
}

/**
 * A handshake's request target for `user`: `/?token=JWT`, an HS256 token
 * signed with `secret` whose `sub` is `user`, valid
 * {@linkcode TOKEN_SECONDS} from `nowSeconds`.
 *
 * @example
 * ```ts
 * import { benchUser, tokenPath } from "./_users.ts";
 *
 * tokenPath(benchUser(7), "bench secret"); // "/?token=eyJ…" for user bench-user-7
 * ```
 */
export function tokenPath(user: string, secret: string, nowSeconds: number = Date.now() / 1000): string {
  return `/?token=${signJwt({ sub: user, exp: Math.floor(nowSeconds) + TOKEN_SECONDS }, secret)}`;
}
