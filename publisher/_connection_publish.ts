/**
 * A send to one connection, which must be refused (404) when its worker is
 * gone. On a bus that counts (the hub) a publish says how many workers it
 * reached; on one that cannot (NATS) it goes as a request instead, answered
 * by the worker: nobody subscribed to the worker's subject fails at once as
 * `no_responders`.
 *
 * @module
 */

import { type Bus, BusError, type Json, type PublishResult } from "../shared/bus.ts";

/** Options for {@linkcode publishToConnection}. */
export interface ConnectionPublishOptions {
  /** How long to wait for the bus (and on NATS for the worker's reply), in milliseconds. */
  timeout: number;
  /** The publish's idempotency key; a request (NATS) cannot carry one. */
  idempotencyKey?: string;
}

/**
 * Publishes `data` to a worker's subject: `reached` 0 means its worker is
 * gone. On a bus that cannot count, `reached` is 1 once the worker answered.
 *
 * @throws {BusError} as {@linkcode Bus.publish}; `unavailable` when the
 * worker took the request but did not answer in time.
 */
export async function publishToConnection(
  bus: Bus,
  subject: string,
  data: Json,
  options: ConnectionPublishOptions,
): Promise<PublishResult> {
  const { timeout, idempotencyKey } = options;
  if (bus.countsReached !== false) {
    return await bus.publish(subject, data, { timeout, ...(idempotencyKey === undefined ? {} : { idempotencyKey }) });
  }
  try {
    const { replies } = await bus.request(subject, data, { timeout, maxReplies: 1 });
    if (replies.length === 0) {
      throw new BusError(
        "unavailable",
        `Cannot publish to ${subject}: its pusher worker did not answer within ${timeout} ms`,
      );
    }
    return { reached: 1 };
  } catch (error) {
    if (error instanceof BusError && error.code === "no_responders") return { reached: 0 };
    throw error;
  }
}
