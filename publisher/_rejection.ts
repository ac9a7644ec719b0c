/**
 * The publisher's refusals: a request it answers with a 4xx or 5xx and a
 * one-line reason, thrown from wherever the request is read and answered
 * in one place (`handler.ts`), which logs it.
 *
 * @module
 */

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
