/**
 * One kind of log line that a peer can cause at will (a failed TLS
 * handshake, say), kept to at most one line per interval: the next line
 * that is written says how many were left out since the last (`unlogged`).
 * A flood of plain-text connections to a TLS port then costs one line a
 * second, not one per connection.
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
 * failed.log({ remote: "10.0.0.7:51235" }); // left out, counted in the next line written
 * ```
 */
export class ThrottledLine {
  readonly #logger: Logger;
  readonly #level: "info" | "warn" | "error";
  readonly #message: string;
  readonly #intervalMs: number;
  readonly #now: () => number;
  #last = -Infinity;
  #unlogged = 0;

  constructor(logger: Logger, level: "info" | "warn" | "error", message: string, options: ThrottledLineOptions = {}) {
    this.#logger = logger;
    this.#level = level;
    this.#message = message;
    this.#intervalMs = options.intervalMs ?? 1000;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Writes the line with `fields`, or counts it when one was written less than the interval ago. */
  log(fields: LogFields): void {
    const now = this.#now();
    if (now - this.#last < this.#intervalMs) {
      this.#unlogged++;
      return;
    }
    this.#logger[this.#level](this.#message, this.#unlogged > 0 ? { ...fields, unlogged: this.#unlogged } : fields);
    this.#last = now;
    this.#unlogged = 0;
  }
}
