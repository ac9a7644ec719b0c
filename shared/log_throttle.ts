/**
 * One kind of log line that a peer can cause at will (a failed TLS
 * handshake, say), kept to at most one line per interval: a line counts in
 * `unlogged` the ones left out before it. Left-out ones are not held back
 * for long: once the interval has passed, the last of them is written with
 * that count, whether more come or not. A flood of plain-text connections
 * to a TLS port then costs a line or two a second, not one per connection.
 *
 * @module
 */

import type { LogFields, Logger } from "./log.ts";

/** Options for {@linkcode ThrottledLine}. */
export interface ThrottledLineOptions {
  /** Least milliseconds between two lines. @default {1000} */
  intervalMs?: number;
  /** The clock, in milliseconds. @default {performance.now} */
  now?: () => number;
}

/**
 * A log line written at most once per interval.
 *
 * @example
 * ```ts
 * import { ThrottledLine } from "./log_throttle.ts";
 * import { createLogger } from "./log.ts";
 *
 * const failed = new ThrottledLine(createLogger("hub"), "warn", "TLS handshake failed");
 * failed.log({ remote: "10.0.0.7:51234" }); // written
 * failed.log({ remote: "10.0.0.7:51235" }); // left out for now
 * failed.log({ remote: "10.0.0.7:51236" }); // written a second after the first, with unlogged=1
 * failed.close(); // or now, at shutdown
 * ```
 */
export class ThrottledLine implements Disposable {
  readonly #logger: Logger;
  readonly #level: "info" | "warn" | "error";
  readonly #message: string;
  readonly #intervalMs: number;
  readonly #now: () => number;
  #last = -Infinity;
  /** Lines left out since the last written, and the fields of the latest of them. */
  #unlogged = 0;
  #latest: LogFields | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(logger: Logger, level: "info" | "warn" | "error", message: string, options: ThrottledLineOptions = {}) {
    this.#logger = logger;
    this.#level = level;
    this.#message = message;
    this.#intervalMs = options.intervalMs ?? 1000;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Writes the line with `fields`, or leaves it out when one was written less than the interval ago. */
  log(fields: LogFields): void {
    const now = this.#now();
    if (now - this.#last >= this.#intervalMs) return this.#write(fields, now);
    this.#unlogged++;
    this.#latest = fields;
    // The latest left out goes out once the interval has passed, with the count of those before it.
    if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.#flush(), Math.max(0, this.#last + this.#intervalMs - now));
      // A line waiting to be written does not keep the process alive.
      Deno.unrefTimer(this.#timer);
    }
  }

  /** Writes what was left out now, and stops the timer. */
  close(): void {
    this.#flush();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const latest = this.#latest;
    if (latest === null) return;
    this.#unlogged--;
    this.#write(latest, this.#now());
  }

  #write(fields: LogFields, now: number): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#logger[this.#level](this.#message, this.#unlogged > 0 ? { ...fields, unlogged: this.#unlogged } : fields);
    this.#last = now;
    this.#unlogged = 0;
    this.#latest = null;
  }
}

/**
 * A line that a misconfiguration makes at every retry (a TLS alert, a
 * refused connect): written at its level the first time a cause comes, and
 * at debug while the same cause repeats, until {@linkcode OncePerCause.reset}
 * (the link came up). A new cause is written at its level again.
 *
 * @example
 * ```ts
 * import { OncePerCause } from "./log_throttle.ts";
 * import { createLogger } from "./log.ts";
 *
 * const refused = new OncePerCause(createLogger("redis-bus"));
 * refused.log("warn", "Redis TLS handshake refused", "bad certificate"); // a warning
 * refused.log("warn", "Redis TLS handshake refused", "bad certificate"); // debug
 * refused.reset(); // the link is up: the next refusal is a warning again
 * ```
 */
export class OncePerCause {
  readonly #logger: Logger;
  #last: string | null = null;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Writes `message` at `level` if `cause` is not the one last written, at debug if it is. */
  log(level: "warn" | "error", message: string, cause: string, fields: LogFields = {}): void {
    const repeated = cause === this.#last;
    this.#last = cause;
    this.#logger[repeated ? "debug" : level](message, fields);
  }

  /** Forgets the last cause: the next line is written at its level whatever its cause. */
  reset(): void {
    this.#last = null;
  }
}
