/**
 * Durations that become timers: their bound, and the check services and
 * clients make on the ones they are given.
 *
 * @module
 */

/**
 * The longest delay a timer can wait, in milliseconds: V8 and Deno run a
 * longer one after 1 ms, with only a warning, so a ping interval set past it
 * would ping every millisecond.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Returns `ms` if a timer can wait that long and it is at least `min`.
 *
 * @throws {RangeError} naming `name` otherwise (not finite, negative, too long).
 *
 * @example
 * ```ts
 * import { timerMs } from "./duration.ts";
 *
 * const options: { pingInterval?: number } = {};
 * const pingInterval = timerMs("pingInterval", options.pingInterval ?? 25_000, 1); // 25000
 * ```
 */
export function timerMs(name: string, ms: number, min = 0): number {
  if (!(ms >= min && ms <= MAX_TIMER_MS)) {
    throw new RangeError(`Invalid ${name}: expected ${min} to ${MAX_TIMER_MS} ms, got ${ms}`);
  }
  return ms;
}
