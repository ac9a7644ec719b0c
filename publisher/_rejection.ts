/**
 * The publisher's refusals: a request it answers with a 4xx or 5xx and a
 * one-line reason, thrown from wherever the request is read and answered
 * in one place (`handler.ts`), which logs it.
 *
 * @module
 */

import { BusError } from "../shared/bus.ts";
import type { BusName } from "../shared/bus_address.ts";

/** A request the handler answers with a 4xx or 5xx and a one-line reason. */
export class Rejection extends Error {
  /** The answer's status. */
  readonly status: number;
  /** The answer's headers beyond the publisher's own, lower-case names. */
  readonly headers: Readonly<Record<string, string>>;
  /** What the log says, when the reason holds a value the request sent. */
  readonly logReason: string;

  /** `reason` is the answer's body, without its newline. */
  constructor(
    status: number,
    reason: string,
    options: { headers?: Readonly<Record<string, string>>; logReason?: string } = {},
  ) {
    super(reason);
    this.status = status;
    this.headers = options.headers ?? {};
    this.logReason = options.logReason ?? reason;
  }
}

/**
 * Maps a failed publish or request to its answer, from the
 * {@linkcode BusError} code: `unavailable` 503 with `Retry-After: 1`,
 * `refused` 502, `too_large` 413, each naming the bus (`busName` in
 * `shared/bus_address.ts`: the hub, NATS or Redis). Anything else,
 * `no_responders` too (its meaning depends on the call), is returned as it is.
 */
export function busRejection(error: unknown, bus: BusName = "hub"): unknown {
  if (!(error instanceof BusError)) return error;
  const [name, the] = bus === "hub" ? ["Hub", "the hub"] : [bus, bus];
  switch (error.code) {
    case "unavailable":
      return new Rejection(503, `${name} unavailable: ${error.message}`, { headers: { "retry-after": "1" } });
    case "refused":
      return new Rejection(502, `${name} refused the publish: ${error.message}`);
    case "too_large":
      return new Rejection(413, `Content too large for ${the}: ${error.message}`);
    case "no_responders":
      return error;
  }
}
