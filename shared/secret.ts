/**
 * Secret comparison that takes the same time whatever the inputs share.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";

/**
 * Compares two secrets in constant time. Both are hashed first, so neither
 * their contents nor their lengths leak through timing.
 */
export function secretsEqual(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

function digest(value: string): Uint8Array {
  return createHash("sha256").update(value).digest();
}
