/**
 * Test-only helpers shared across the repo's unit tests: a seeded PRNG, so
 * that a randomised test (random chunk sizes, random frames) reproduces from
 * its seed.
 *
 * @module
 */

/**
 * Small seeded PRNG (mulberry32): the same seed gives the same numbers in
 * [0, 1), so a failure reproduces.
 *
 * @example
 * ```ts
 * import { mulberry32 } from "./testing.ts";
 *
 * const random = mulberry32(42);
 * const size = 1 + Math.floor(random() * 300);
 * ```
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
