/**
 * A token bucket per connection, charged for every frame a client sends:
 * the fragments of a message, pings and pongs are not used by the pusher,
 * but a flood of them costs CPU.
 *
 * @module
 */

/** Frames (messages, their fragments, pings, pongs) a client may send per second, unless configured. */
export const DEFAULT_MAX_MESSAGE_RATE = 50;

/** One connection's bucket: what it may still send, and when that was computed. */
export interface RateBucket {
  allowance: number;
  checkedAt: number;
}

/**
 * Allows `rate` messages a second per bucket, with a burst of as many.
 *
 * @example
 * ```ts
 * import { RateLimiter } from "./rate_limit.ts";
 *
 * const limiter = new RateLimiter(50);
 * const bucket = limiter.bucket();
 * if (!limiter.take(bucket)) console.log("over the rate");
 * ```
 */
export class RateLimiter {
  /** Messages a second. */
  readonly rate: number;
  readonly #now: () => number;

  /** `now` is a monotonic clock in milliseconds: a step of the wall clock must not close anyone. */
  constructor(rate: number, now: () => number = () => performance.now()) {
    this.rate = rate;
    this.#now = now;
  }

  /** A full bucket, for a new connection. */
  bucket(): RateBucket {
    return { allowance: this.rate, checkedAt: this.#now() };
  }

  /** Takes one message from `bucket`; false when it is empty. */
  take(bucket: RateBucket): boolean {
    const now = this.#now();
    bucket.allowance = Math.min(this.rate, bucket.allowance + (now - bucket.checkedAt) * this.rate / 1000);
    bucket.checkedAt = now;
    if (bucket.allowance < 1) return false;
    bucket.allowance -= 1;
    return true;
  }
}
