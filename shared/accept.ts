/**
 * Accepting the next TCP connection, for servers that run their own accept
 * loop on `Deno.listen` (the hub, the pusher).
 *
 * @module
 */

import type { Logger } from "./log.ts";

/** Options for {@linkcode acceptNext}. */
export interface AcceptOptions {
  /** True once the server is closing: a failed accept then ends the loop. Required. */
  stopping(): boolean;
  /** Where failures to accept are logged. Required. */
  logger: Logger;
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
 * skipped at once; any other failure is logged and retried after
 * `retryDelay`, so that a server out of file descriptors keeps serving as
 * they free up instead of spinning.
 *
 * @example
 * ```ts
 * import { acceptNext } from "./accept.ts";
 * import { createLogger } from "./log.ts";
 *
 * using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * let stopping = false; // set before listener.close(), so that the null that follows is not logged
 * const conn = await acceptNext(listener, { stopping: () => stopping, logger: createLogger("hub") });
 * conn?.close();
 * ```
 */
export async function acceptNext<C>(
  listener: { accept(): Promise<C> },
  options: AcceptOptions,
): Promise<C | null> {
  while (true) {
    try {
      return await listener.accept();
    } catch (error) {
      if (options.stopping()) return null;
      if (PEER_GONE.some((kind) => error instanceof kind)) {
        options.logger.debug("connection gone before accept", { error: (error as Error).message });
        continue;
      }
      options.logger.error("accept failed", { error: (error as Error).message });
      await new Promise((resolve) => setTimeout(resolve, options.retryDelay ?? 100));
    }
  }
}
