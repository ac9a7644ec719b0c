/**
 * Secret comparison that takes the same time whatever the inputs share.
 *
 * @module
 */

const encoder = new TextEncoder();

/**
 * Compares two secrets in constant time: every byte of `given` is compared
 * with the byte of `expected` at the same place (cycling over it), and the
 * lengths are folded into the result, so the time depends on the length of
 * `given` only, which its sender knows, never on `expected`'s contents or
 * length, nor on where the two first differ.
 *
 * Without `node:crypto` (`timingSafeEqual` over hashes of both): importing
 * it costs a process about 6 MiB of resident memory (issue 19), and nothing
 * else on the hub's or the publisher's default path needs it.
 *
 * @example
 * ```ts
 * import { secretsEqual } from "./secret.ts";
 *
 * secretsEqual("s3cret", "s3cret"); // true
 * secretsEqual("s3cre", "s3cret"); // false
 * ```
 */
export function secretsEqual(given: string, expected: string): boolean {
  const a = encoder.encode(given);
  const b = encoder.encode(expected);
  let difference = a.length ^ b.length;
  // An empty expected cannot be cycled over; it still must not match a non-empty given.
  if (b.length === 0) return difference === 0;
  for (let i = 0; i < a.length; i++) difference |= a[i]! ^ b[i % b.length]!;
  return difference === 0;
}
