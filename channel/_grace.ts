/**
 * The hub's startup grace: for a while after the hub starts, publishes and
 * enqueues wait, so that clients reconnecting after a restart have
 * re-subscribed before anything is routed.
 *
 * @module
 */

/** The startup grace: a promise that resolves when it is over. */
export class Grace {
  /** Resolves when the grace ends, by its timer or by {@linkcode Grace.end}. */
  readonly over: Promise<void>;
  #active = true;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #resolve!: () => void;

  /** Starts a grace of `ms` milliseconds; 0 or less is over at once. */
  constructor(ms: number) {
    this.over = new Promise((resolve) => (this.#resolve = resolve));
    if (ms > 0) this.#timer = setTimeout(() => this.end(), ms);
    else this.end();
  }

  /** True until the grace is over. */
  get active(): boolean {
    return this.#active;
  }

  /** Ends the grace now (on shutdown, say); ending twice is harmless. */
  end(): void {
    clearTimeout(this.#timer);
    this.#active = false;
    this.#resolve();
  }
}
