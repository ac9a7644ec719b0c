/**
 * Test-only helpers shared across the repo's unit tests: a seeded PRNG, so
 * that a randomised test (random chunk sizes, random frames) reproduces from
 * its seed, and a bus link whose confirmations come when the test says.
 *
 * @module
 */

import type { Bus } from "./bus.ts";

/**
 * Small seeded PRNG (mulberry32): the same seed gives the same numbers in
 * [0, 1), so a failure reproduces.
 *
 * @example
 * ```ts
 * import { mulberry32 } from "./testing.ts";
 *
 * const random = mulberry32(42);
 * const size = 1 + Math.floor(random() * 300);
 * ```
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A bus link whose subscriptions are confirmed, and whose history reads
 * answered, only by `release()`, as a hub or a NATS server does a moment
 * later; `waiting()` counts those not yet released.
 *
 * @example
 * ```ts
 * import { gatedBus } from "./testing.ts";
 * import { MemoryBroker } from "./memory_bus.ts";
 *
 * const gated = gatedBus(new MemoryBroker().connect());
 * const ready = gated.bus.subscribe("news", () => {});
 * gated.release(); // now `ready` resolves
 * await ready;
 * ```
 */
export function gatedBus(link: Bus): { bus: Bus; release: () => void; waiting: () => number } {
  let held: (() => void)[] = [];
  let unreleased = 0;
  const gated = <T>(operation: Promise<T>): Promise<T> => {
    unreleased++;
    const release = () => unreleased--;
    return operation.then(
      (value) => new Promise<T>((resolve) => held.push(() => (release(), resolve(value)))),
      (error) => new Promise<T>((_, reject) => held.push(() => (release(), reject(error)))),
    );
  };
  const bus = new Proxy(link, {
    get(target, property) {
      if (property === "subscribe") {
        return (subject: string, handler: Parameters<Bus["subscribe"]>[1]) => gated(target.subscribe(subject, handler));
      }
      if (property === "history") {
        return (subject: string, options?: Parameters<Bus["history"]>[1]) => gated(target.history(subject, options));
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return {
    bus,
    waiting: () => unreleased,
    release() {
      const now = held;
      held = [];
      for (const resolve of now) resolve();
    },
  };
}
