/**
 * Accepting the next TCP connection, for servers that run their own accept
 * loop on `Deno.listen` (the hub, the pusher, the publisher).
 *
 * @module
 */

import type { Logger } from "./log.ts";

/**
 * What an accept loop logs of its failures. Out of file descriptors, accepts
 * fail on every retry, and succeed and fail again as descriptors come and
 * go: one error line, then at most one per `quietMs` with the count of the
 * failures since the last, and one "accepting again" after each error line.
 */
export class AcceptLog {
  readonly logger: Logger;
  readonly #quietMs: number;
  #lastError = -Infinity;
  /** Failures since the last "accept failed" line, not counting the one it logged. */
  #unlogged = 0;
  #awaitingRecovery = false;

  /** `quietMs`: the least time between two "accept failed" lines. @default {10_000} */
  constructor(logger: Logger, options: { quietMs?: number } = {}) {
    this.logger = logger;
    this.#quietMs = options.quietMs ?? 10_000;
  }

  /** An accept failed for a reason that is not the peer's. */
  failed(error: Error): void {
    const now = performance.now();
    if (now - this.#lastError < this.#quietMs) {
      this.#unlogged++;
      return;
    }
    this.logger.error("accept failed", {
      error: error.message,
      retrying: "until an accept succeeds",
      ...(this.#unlogged > 0 ? { unloggedFailures: this.#unlogged } : {}),
    });
    this.#lastError = now;
    this.#unlogged = 0;
    this.#awaitingRecovery = true;
  }

  /** An accept succeeded. */
  accepted(): void {
    if (!this.#awaitingRecovery) return;
    this.#awaitingRecovery = false;
    this.logger.info("accepting again", { failedAccepts: this.#unlogged + 1 });
  }
}

/** Options for {@linkcode acceptNext}. */
export interface AcceptOptions {
  /** True once the server is closing: a failed accept then ends the loop. Required. */
  stopping(): boolean;
  /** Where failures to accept are logged; one per accept loop, kept across its calls. Required. */
  log: AcceptLog;
  /** Milliseconds to wait after a failure that is not the peer's, such as running out of file descriptors. @default {100} */
  retryDelay?: number;
}

/**
 * Errors of a connection its peer reset or gave up on before it could be
 * accepted (Deno reads the peer's address as it accepts): that connection's
 * own, and no reason to pause, or anyone could stall the loop with a
 * stream of connect-and-reset.
 */
const PEER_GONE = [Deno.errors.NotConnected, Deno.errors.ConnectionReset, Deno.errors.ConnectionAborted];

/**
 * Resolves with the next connection, or null once the listener fails while
 * `stopping()` (it was closed). A connection its peer already reset is
 * skipped at once; any other failure goes to `log` and is retried after
 * `retryDelay`, so that a server out of file descriptors keeps serving as
 * they free up instead of spinning.
 *
 * @example
 * ```ts
 * import { acceptNext, AcceptLog } from "./accept.ts";
 * import { createLogger } from "./log.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * let stopping = false; // set before listener.close(), so that the null that follows is not logged
 * const options = { stopping: () => stopping, log: new AcceptLog(createLogger("hub")) };
 * const conn = await acceptNext(listener, options);
 * conn?.close();
 * ```
 */
export async function acceptNext<C>(
  listener: { accept(): Promise<C> },
  options: AcceptOptions,
): Promise<C | null> {
  while (true) {
    let conn: C;
    try {
      conn = await listener.accept();
    } catch (error) {
      if (options.stopping()) return null;
      if (PEER_GONE.some((kind) => error instanceof kind)) {
        options.log.logger.debug("connection gone before accept", { error: (error as Error).message });
        continue;
      }
      options.log.failed(error as Error);
      await new Promise((resolve) => setTimeout(resolve, options.retryDelay ?? 100));
      continue;
    }
    options.log.accepted();
    return conn;
  }
}
