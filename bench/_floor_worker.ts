/**
 * A bare worker for `bench/floor.ts`: it says it started and then holds
 * nothing, so that what it costs is the runtime's.
 *
 * @module
 */

self.postMessage("started");
