/**
 * Who the hub lets in and who it lets go on its own: the connection budget
 * (greeted connections against `maxConnections`, ungreeted ones with a
 * budget of as many again, oldest out first), and the periodic sweeps that
 * close idle connections and those whose writes stay blocked.
 *
 * @module
 */

import type { DisconnectReason } from "./metrics.ts";

/** A connection as admission and the sweeps see it. */
export interface Admittable {
  /** True once its `hello` was accepted. */
  readonly greeted: boolean;
  /** When its last complete frame arrived (see `Connection.lastSeen`). */
  readonly lastSeen: number;
  /** True while the hub holds back reading it: its silence is then the hub's doing. */
  readonly readPaused: boolean;
  /** Milliseconds its write in flight has been blocked. */
  stalledFor(now: number): number;
  /** Milliseconds the oldest bytes queued for it and not yet taken by its socket have waited, within a sweep. */
  behindFor(now: number): number;
  /** Closes it with an error frame. */
  fail(kind: DisconnectReason, reason: string): void;
}

/**
 * The connection budget. Connections past their hello count against
 * `maxConnections`; those waiting for it have a budget of as many again, and
 * a new one past it closes the oldest, so clients without the token cannot
 * keep those with it out.
 */
export class Admission<C extends Admittable> {
  readonly #maxConnections: number;
  /** Connections waiting for their hello, oldest first: the first to go when too many wait. */
  readonly #ungreeted = new Set<C>();
  /** Connections past their hello, counted against `maxConnections`. */
  #greetedCount = 0;

  /** A budget of `maxConnections` greeted connections. */
  constructor(maxConnections: number) {
    this.#maxConnections = maxConnections;
  }

  /**
   * Admits a new connection to wait for its hello, closing the oldest
   * waiting one if as many as `maxConnections` already wait; refuses it
   * when the hub is full.
   */
  waitForHello(connection: C): void {
    const max = this.#maxConnections;
    if (this.#greetedCount >= max) return connection.fail("full", `Hub is full: ${max} connections`);
    if (this.#ungreeted.size >= max) {
      const oldest: C = this.#ungreeted.values().next().value!;
      this.#ungreeted.delete(oldest);
      oldest.fail("full", `Hub is full: ${max} connections are waiting for their hello`);
    }
    this.#ungreeted.add(connection);
  }

  /** Counts a connection whose hello was accepted; false when the hub is full. */
  admit(connection: C): boolean {
    this.#ungreeted.delete(connection);
    if (this.#greetedCount >= this.#maxConnections) return false;
    this.#greetedCount++;
    return true;
  }

  /** Gives back the place of a connection that closed. */
  release(connection: C): void {
    this.#ungreeted.delete(connection);
    if (connection.greeted) this.#greetedCount--;
  }
}

/** Settings of {@linkcode Sweeps}, all in milliseconds but `idlePings`. */
export interface SweepSettings {
  /** A write blocked longer than this closes its connection as a slow consumer. */
  writeTimeout: number;
  /** How often clients are expected to ping. */
  pingInterval: number;
  /** Ping intervals of silence before a greeted connection is closed as idle. */
  idlePings: number;
  /** Time a new connection gets to send its hello. */
  helloTimeout: number;
}

/**
 * Two timers over the hub's connections: one closes those idle too long (or
 * without a hello in time), the other those whose write stays blocked past
 * `writeTimeout`. Stopped with {@linkcode Sweeps.stop} (or disposal).
 */
export class Sweeps implements Disposable {
  readonly #connections: Iterable<Admittable>;
  readonly #settings: SweepSettings;
  readonly #idle: ReturnType<typeof setInterval>;
  readonly #stalled: ReturnType<typeof setInterval>;

  /** Starts sweeping `connections`, a live collection. */
  constructor(connections: Iterable<Admittable>, settings: SweepSettings) {
    this.#connections = connections;
    this.#settings = settings;
    this.#idle = setInterval(() => this.#closeIdle(), Math.min(settings.pingInterval, settings.helloTimeout));
    this.#stalled = setInterval(() => this.#closeStalled(), Math.max(10, settings.writeTimeout / 4));
  }

  /** Stops both timers; stopping twice is harmless. */
  stop(): void {
    clearInterval(this.#idle);
    clearInterval(this.#stalled);
  }

  [Symbol.dispose](): void {
    this.stop();
  }

  #closeStalled(): void {
    const now = performance.now();
    for (const connection of this.#connections) {
      const stalled = connection.stalledFor(now);
      // Each sweep: it moves the mark that behindFor() measures from.
      const behind = connection.behindFor(now);
      if (stalled > this.#settings.writeTimeout) {
        connection.fail("slow_consumer", `Slow consumer: a write has been blocked for ${stalled} ms`);
      } else if (behind > this.#settings.writeTimeout) {
        // One that reads, but slower than it is sent to: each write moves a little, none blocks for long.
        connection.fail("slow_consumer", `Slow consumer: what was sent to it ${behind} ms ago is not written yet`);
      }
    }
  }

  #closeIdle(): void {
    const limit = this.#settings.pingInterval * this.#settings.idlePings;
    const helloTimeout = this.#settings.helloTimeout;
    const now = performance.now();
    for (const connection of this.#connections) {
      if (connection.readPaused) continue;
      if (!connection.greeted) {
        if (now - connection.lastSeen > helloTimeout) connection.fail("idle", `No hello within ${helloTimeout} ms`);
      } else if (now - connection.lastSeen > limit) connection.fail("idle", `Idle: no message for ${limit} ms`);
    }
  }
}
