/**
 * Idle sockets' read buffers, cut from shared slabs: every open socket keeps
 * a read pending, so its read buffer is paid for per connection.
 *
 * @module
 */

/**
 * An idle socket's read buffer: small, because every open socket holds one
 * in its pending read, and clients of a push system send little (pongs,
 * close frames).
 */
const IDLE_READ_BYTES = 128;
/** Idle read buffers cut from one slab. */
const SLOTS_PER_SLAB = 256;

/**
 * Idle sockets' read buffers, cut from shared slabs. A buffer of its own
 * would cost an `ArrayBuffer` and its backing store besides the view, more
 * than twice the bytes it holds; a slot costs the view and its bytes. A
 * socket gives its slot back once its last read has settled, so no two
 * pending reads ever share one. Slabs are kept for the next sockets: after a
 * peak, the slots of the peak's connections stay allocated.
 */
export class ReadSlots {
  readonly #free: Uint8Array[] = [];

  /** A free slot, from a new slab when none is left. */
  take(): Uint8Array {
    if (this.#free.length === 0) {
      const slab = new ArrayBuffer(IDLE_READ_BYTES * SLOTS_PER_SLAB);
      for (let i = SLOTS_PER_SLAB - 1; i >= 0; i--) {
        this.#free.push(new Uint8Array(slab, i * IDLE_READ_BYTES, IDLE_READ_BYTES));
      }
    }
    return this.#free.pop()!;
  }

  /** Returns a slot once nothing reads into it any more. */
  give(slot: Uint8Array): void {
    this.#free.push(slot);
  }
}
