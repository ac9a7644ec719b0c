/**
 * Secret comparison that takes the same time whatever the inputs share.
 *
 * @module
 */

const encoder = new TextEncoder();

/**
 * Compares two secrets in constant time: every byte of `given` is compared,
 * against the byte of `expected` at the same place (cycling over it), and
 * the lengths are folded into the result, so the time depends on the length
 * of `given` only, which its sender knows, never on `expected`'s contents or
 * length, nor on where the two first differ.
 *
 * By hand rather than with `node:crypto`'s `timingSafeEqual` over hashes:
 * importing `node:crypto` costs each process and worker about 7 MiB of
 * resident memory (issue 19), and nothing else on the default path needs it.
 */
export function secretsEqual(given: string, expected: string): boolean {
  const a = encoder.encode(given);
  const b = encoder.encode(expected);
  // A length of 0 cannot be cycled over; it still must not match a non-empty given.
  let difference = a.length ^ b.length;
  if (b.length === 0) return difference === 0;
  for (let i = 0; i < a.length; i++) difference |= a[i]! ^ b[i % b.length]!;
  return difference === 0;
}
