/**
 * Which client got which benchmark message: one bit per client and message,
 * so a client that gets one message twice and misses another counts one
 * duplicate and one loss, rather than nothing at all.
 *
 * Pure TypeScript: no `Deno.*` calls.
 *
 * @module
 */

/**
 * Counts losses, duplicates and misdirected deliveries of `messages`
 * messages (sequence numbers from 0) to `clients` clients. A broadcast is
 * owed to every client; a targeted message `seq` to client `seq % clients`;
 * with `channels`, message `seq` goes to channel `seq % channels`, whose
 * members are the clients `c` with `c % channels` equal to it.
 *
 * @example
 * ```ts
 * import { DeliveryTally } from "./_tally.ts";
 *
 * const tally = new DeliveryTally({ clients: 2, messages: 1, targeted: false });
 * tally.answered(0);
 * tally.delivered(0, 0);
 * tally.lost(); // 1: client 1 never got message 0
 * ```
 */
export class DeliveryTally {
  readonly #clients: number;
  readonly #messages: number;
  readonly #targeted: boolean;
  readonly #channels: number;
  /** 1 for each message answered 200: only those are owed. */
  readonly #owed: Uint8Array;
  /** Per client, one bit per message. */
  readonly #got: Uint8Array[];
  #duplicates = 0;
  #misdirected = 0;

  constructor(options: { clients: number; messages: number; targeted: boolean; channels?: number }) {
    this.#clients = options.clients;
    this.#channels = options.channels ?? 0;
    this.#messages = options.messages;
    this.#targeted = options.targeted;
    this.#owed = new Uint8Array(options.messages);
    this.#got = Array.from({ length: options.clients }, () => new Uint8Array(Math.ceil(options.messages / 8)));
  }

  /** Second and later copies of a message one client got. */
  get duplicates(): number {
    return this.#duplicates;
  }

  /** Targeted messages, or channel publications, that reached a client they were not for. */
  get misdirected(): number {
    return this.#misdirected;
  }

  /** Message `seq` was answered 200: its clients are owed it. */
  answered(seq: number): void {
    this.#owed[seq] = 1;
  }

  /** Client `client` got message `seq`. */
  delivered(client: number, seq: number): void {
    if (this.#targeted && seq % this.#clients !== client) this.#misdirected++;
    if (this.#channels > 0 && seq % this.#channels !== client % this.#channels) this.#misdirected++;
    const got = this.#got[client]!;
    const bit = 1 << (seq & 7);
    if (got[seq >> 3]! & bit) this.#duplicates++;
    got[seq >> 3]! |= bit;
  }

  /** Owed deliveries that did not arrive, one per client and message. */
  lost(): number {
    let lost = 0;
    for (let seq = 0; seq < this.#messages; seq++) {
      if (!this.#owed[seq]) continue;
      if (this.#targeted) {
        if (!this.#has(seq % this.#clients, seq)) lost++;
        continue;
      }
      const [first, step] = this.#channels > 0 ? [seq % this.#channels, this.#channels] : [0, 1];
      for (let client = first; client < this.#clients; client += step) if (!this.#has(client, seq)) lost++;
    }
    return lost;
  }

  #has(client: number, seq: number): boolean {
    return (this.#got[client]![seq >> 3]! & (1 << (seq & 7))) !== 0;
  }
}
