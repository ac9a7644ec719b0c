/**
 * Retry delays: capped exponential backoff with jitter, for the hub client's
 * reconnects, the pusher's worker restarts and `deno task start`'s service
 * restarts.
 *
 * @module
 */

/** Options for {@linkcode backoffDelay}. */
export interface BackoffOptions {
  /** Delay ceiling before jitter for the first retry, in milliseconds. @default {100} */
  initialDelay?: number;
  /** Largest delay, in milliseconds. @default {5000} */
  maxDelay?: number;
  /** Source of randomness in [0, 1). @default {Math.random} */
  random?: () => number;
}

/**
 * Delay before retry number `attempt` (0 for the first): half of
 * `min(maxDelay, initialDelay * 2^attempt)` plus a random part of the other
 * half, so clients that lost the same hub do not all come back at once.
 */
export function backoffDelay(attempt: number, options: BackoffOptions = {}): number {
  const initial = options.initialDelay ?? 100;
  const max = options.maxDelay ?? 5000;
  const random = options.random ?? Math.random;
  const ceiling = Math.min(max, initial * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + random() * (ceiling / 2);
}
