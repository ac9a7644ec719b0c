/**
 * The hub's routing state: who subscribes to which subject, who watches which
 * queue, and how a publish or an enqueue reaches them. No sockets here: a peer
 * is anything that can take a frame, so routing is tested and benchmarked
 * without a network.
 *
 * @module
 */

import {
  DEFAULT_MAX_FRAME_BYTES,
  encodeMessage,
  encodeMessageText,
  type EventMessage,
  type Json,
} from "../shared/wire.ts";

/** A connected client as the hub sees it. */
export interface Peer {
  /**
   * Queues a frame for this peer. Returns false when the peer cannot take it
   * (it is over its pending-bytes cap or closing); the peer then disconnects
   * itself, and the hub does not count it as reached.
   */
  send(frame: Uint8Array): boolean;
  /**
   * Resolves `true` once every frame sent so far is written to the peer's
   * socket, `false` if the peer went before that. A queue message resolved
   * `false` goes back to the head of its queue.
   */
  flushed(): Promise<boolean>;
}

/**
 * Most subjects plus queues one peer may subscribe to or watch, unless
 * configured: a pusher worker subscribes one subject per channel with a
 * local member (up to its 100,000) and one per user it holds.
 */
export const DEFAULT_MAX_SUBJECTS_PER_PEER = 250_000;

/** Options for {@linkcode Hub}. */
export interface HubOptions {
  /** Most subjects plus queues one peer may subscribe to or watch. @default {250000} */
  maxSubjectsPerPeer?: number;
  /** Most messages one queue holds; `enqueue` past it is refused. @default {10000} */
  maxQueueLength?: number;
  /**
   * Most bytes all queues hold together, their messages' frames and 640 for
   * each queue an enqueue created; `enqueue` past it is refused. @default {67108864} (64 MiB)
   */
  maxQueuedBytes?: number;
  /**
   * Largest frame, header included, taken from a client and sent to one. The
   * hub encodes an event's data again, and JSON may grow in the process
   * (`1e20` becomes `100000000000000000000`): an event or queue message over
   * it is refused, since every client would have to drop its link to the hub
   * on reading it.
   *
   * @default {1048576}
   */
  maxFrameBytes?: number;
}

interface PeerState {
  subjects: Set<string>;
  queues: Set<string>;
}

interface Subject {
  subscribers: Set<Peer>;
}

interface Queue {
  /**
   * `queue` messages as JSON text, oldest first, from `head` on: framed when
   * sent, since a queue may hold millions and a string takes much less
   * memory than a frame.
   */
  messages: string[];
  head: number;
  watchers: Set<Peer>;
  /** Watchers holding a credit from `reserve`, in the order they reserved. */
  consumers: Set<Peer>;
  /** Messages coming back from consumers that went before taking them, in the order they were handed out. */
  returning: string[];
  /** Created by an enqueue, so its own cost counts against `maxQueuedBytes` while it exists. */
  charged: boolean;
}

/** Hub statistics. */
export interface HubStats {
  peers: number;
  subjects: number;
  queues: number;
  queuedMessages: number;
  queuedBytes: number;
}

/**
 * Routing state of a hub. Every event is encoded once per subject
 * and the same bytes are handed to every subscriber.
 *
 * @example
 * ```ts
 * import { Hub, type Peer } from "./hub.ts";
 *
 * const peer: Peer = { send: () => true, flushed: () => Promise.resolve(true) };
 * const hub = new Hub();
 * hub.join(peer);
 * hub.subscribe(peer, ["news"]);
 * const reached = hub.publish(["news"], { title: "hi" }); // [peer]
 * ```
 */
export class Hub {
  readonly #maxSubjectsPerPeer: number;
  readonly #maxQueueLength: number;
  readonly #maxQueuedBytes: number;
  readonly #maxFrameBytes: number;
  readonly #peers = new Map<Peer, PeerState>();
  readonly #subjects = new Map<string, Subject>();
  readonly #queues = new Map<string, Queue>();
  #queuedMessages = 0;
  #queuedBytes = 0;

  constructor(options: HubOptions = {}) {
    this.#maxSubjectsPerPeer = options.maxSubjectsPerPeer ?? DEFAULT_MAX_SUBJECTS_PER_PEER;
    this.#maxQueueLength = options.maxQueueLength ?? 10_000;
    this.#maxQueuedBytes = options.maxQueuedBytes ?? 64 * 1024 * 1024;
    this.#maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  }

  /** Current counts, for logs and metrics. */
  get stats(): HubStats {
    return {
      peers: this.#peers.size,
      subjects: this.#subjects.size,
      queues: this.#queues.size,
      queuedMessages: this.#queuedMessages,
      queuedBytes: this.#queuedBytes,
    };
  }

  /** Registers a peer. */
  join(peer: Peer): void {
    if (!this.#peers.has(peer)) this.#peers.set(peer, { subjects: new Set(), queues: new Set() });
  }

  /** Removes a peer with all its subscriptions, watches and credits. */
  leave(peer: Peer): void {
    const state = this.#peers.get(peer);
    if (!state) return;
    this.#peers.delete(peer);
    for (const name of state.subjects) this.#removeSubscriber(name, peer);
    for (const name of state.queues) this.#removeWatcher(name, peer);
  }

  /**
   * Subscribes a peer to subjects. Subscribing twice changes nothing.
   *
   * @throws {RangeError} when the peer would go past its limit of subjects and queues; no
   * subject is subscribed then.
   */
  subscribe(peer: Peer, subjects: readonly string[]): void {
    const state = this.#state(peer);
    this.#checkRoom(state, subjects, state.subjects);
    for (const name of subjects) {
      if (state.subjects.has(name)) continue;
      state.subjects.add(name);
      let subject = this.#subjects.get(name);
      if (!subject) {
        subject = { subscribers: new Set() };
        this.#subjects.set(name, subject);
      }
      subject.subscribers.add(peer);
    }
  }

  /** Unsubscribes a peer from subjects it subscribed to. */
  unsubscribe(peer: Peer, subjects: readonly string[]): void {
    const state = this.#state(peer);
    for (const name of subjects) {
      if (state.subjects.delete(name)) this.#removeSubscriber(name, peer);
    }
  }

  /**
   * Sends `data` to every subscriber of each subject (a subject listed twice
   * counts once). Returns the peers that took the event, once per subject
   * they got it on.
   *
   * With `reply`, each event carries it: the subject subscribers may answer on.
   *
   * @throws {RangeError} when an event would be over `maxFrameBytes`; then
   * no subject gets it.
   */
  publish(subjects: readonly string[], data: Json, reply?: string): Peer[] {
    const reached: Peer[] = [];
    for (const [subject, frame] of this.#events(subjects, data, reply)) {
      for (const peer of subject.subscribers) {
        if (peer.send(frame)) reached.push(peer);
      }
    }
    return reached;
  }

  /**
   * Sends `data` to one subscriber of each subject, taking subscribers in
   * turn, starting with the first to subscribe.
   *
   * @throws {RangeError} as {@linkcode Hub.publish}.
   */
  publishLoop(subjects: readonly string[], data: Json, reply?: string): Peer[] {
    const reached: Peer[] = [];
    for (const [subject, frame] of this.#events(subjects, data, reply)) {
      // The first in the set has the turn and goes to the back: a subscriber
      // that leaves takes no one's turn with it, as an index would. One that
      // cannot take the frame is skipped for the next.
      const subscribers = subject.subscribers;
      for (let tries = subscribers.size; tries > 0; tries--) {
        const peer: Peer = subscribers.values().next().value!;
        subscribers.delete(peer);
        subscribers.add(peer);
        if (peer.send(frame)) {
          reached.push(peer);
          break;
        }
      }
    }
    return reached;
  }

  /**
   * Starts watching queues, creating them if needed.
   *
   * @throws {RangeError} when the peer would go past its limit of subjects and queues.
   */
  watch(peer: Peer, queues: readonly string[]): void {
    const state = this.#state(peer);
    this.#checkRoom(state, queues, state.queues);
    for (const name of queues) {
      if (state.queues.has(name)) continue;
      state.queues.add(name);
      this.#queue(name).watchers.add(peer);
    }
  }

  /** Stops watching queues; drops the peer's credit on them. */
  unwatch(peer: Peer, queues: readonly string[]): void {
    const state = this.#state(peer);
    for (const name of queues) {
      if (state.queues.delete(name)) this.#removeWatcher(name, peer);
    }
  }

  /**
   * Appends `data` to each queue (a queue listed twice counts once), then
   * hands out what consumers have reserved. Returns how many queues took it.
   *
   * @throws {RangeError} when a queue is full, all queues together hold
   * their byte limit, or the message would be over `maxFrameBytes`; then no
   * queue takes it.
   */
  enqueue(queues: readonly string[], data: Json): number {
    const names = unique(queues);
    const texts = names.map((name) => JSON.stringify({ type: "queue", queue: name, data }));
    const sizes = texts.map((text) => this.#checkSize(encodeMessageText(text)).length);
    const bytes = sizes.reduce((sum, size) => sum + size, 0);
    for (const name of names) {
      const queue = this.#queues.get(name);
      if (queue && queue.messages.length - queue.head >= this.#maxQueueLength) {
        throw new RangeError(
          `Cannot enqueue: queue ${JSON.stringify(name)} holds its limit of ${this.#maxQueueLength} messages`,
        );
      }
    }
    const newQueues = names.filter((name) => !this.#queues.has(name)).length;
    if (this.#queuedBytes + bytes + newQueues * QUEUE_BYTES > this.#maxQueuedBytes) {
      throw new RangeError(`Cannot enqueue: queues hold their limit of ${this.#maxQueuedBytes} bytes`);
    }
    names.forEach((name, i) => {
      // Watching is bounded by the per-peer limit; a queue that an
      // enqueue brings into being, by nothing else: that one is charged.
      const created = !this.#queues.has(name);
      const queue = this.#queue(name);
      if (created) {
        queue.charged = true;
        this.#queuedBytes += QUEUE_BYTES;
      }
      queue.messages.push(texts[i]!);
      this.#queuedMessages++;
      this.#queuedBytes += sizes[i]!;
      this.#dispatch(name, queue);
    });
    return names.length;
  }

  /**
   * Gives the peer one credit on every queue it watches, or on those of
   * `queues` it watches: each such queue hands it its next message, now or
   * when one arrives. A credit not yet used is not doubled by a second
   * reserve.
   */
  reserve(peer: Peer, queues?: readonly string[]): void {
    const state = this.#state(peer);
    for (const name of queues ?? state.queues) {
      if (!state.queues.has(name)) continue;
      // A peer that fails to take a message leaves the hub in the middle of
      // this loop, and its other queues may go with it.
      const queue = this.#queues.get(name);
      if (!queue || !this.#peers.has(peer)) return;
      queue.consumers.add(peer);
      this.#dispatch(name, queue);
    }
  }

  #dispatch(name: string, queue: Queue): void {
    while (queue.head < queue.messages.length && queue.consumers.size > 0) {
      const consumer: Peer = queue.consumers.values().next().value!;
      queue.consumers.delete(consumer);
      const text = queue.messages[queue.head]!;
      const frame = encodeMessageText(text);
      // A consumer that cannot take the message is disconnecting; the
      // message stays for the next consumer.
      if (!consumer.send(frame)) continue;
      queue.messages[queue.head] = "";
      queue.head++;
      this.#queuedMessages--;
      this.#queuedBytes -= frame.length;
      this.#requeueIfDropped(name, consumer, text, frame.length);
    }
    if (queue.head > 1024 && queue.head * 2 > queue.messages.length) {
      queue.messages = queue.messages.slice(queue.head);
      queue.head = 0;
    }
    this.#dropIfUnused(name, queue);
  }

  /** Each subject with subscribers, with its event frame; all encoded before any is sent. */
  #events(subjects: readonly string[], data: Json, reply: string | undefined): [Subject, Uint8Array][] {
    const events: [Subject, Uint8Array][] = [];
    for (const name of unique(subjects)) {
      const subject = this.#subjects.get(name);
      if (!subject) continue;
      // Without a reply, no reply key at all: the event's bytes stay what they were.
      const event: EventMessage = reply === undefined
        ? { type: "event", subject: name, data }
        : { type: "event", subject: name, data, reply };
      events.push([subject, this.#checkSize(encodeMessage(event))]);
    }
    return events;
  }

  #checkSize(frame: Uint8Array): Uint8Array {
    if (frame.length > this.#maxFrameBytes) {
      throw new RangeError(
        `Cannot route: the message encodes to a ${frame.length}-byte frame, over the ${this.#maxFrameBytes}-byte limit`,
      );
    }
    return frame;
  }

  /**
   * A message is taken once it is in the consumer's socket buffer. If the
   * consumer goes before that (dropped as slow, or closed), the message goes
   * back to the head of its queue for the next consumer.
   */
  #requeueIfDropped(name: string, consumer: Peer, text: string, bytes: number): void {
    consumer.flushed().then((written) => {
      if (written) return;
      const queue = this.#queue(name);
      queue.returning.push(text);
      this.#queuedMessages++;
      this.#queuedBytes += bytes;
      // The others a dropped consumer held come back in the same turn: all
      // go back at once, in their order, rather than each ahead of the last.
      if (queue.returning.length === 1) queueMicrotask(() => this.#putBack(name, queue));
    });
  }

  #putBack(name: string, queue: Queue): void {
    queue.messages = [...queue.returning, ...queue.messages.slice(queue.head)];
    queue.head = 0;
    queue.returning = [];
    this.#dispatch(name, queue);
  }

  #state(peer: Peer): PeerState {
    const state = this.#peers.get(peer);
    if (!state) throw new TypeError("Cannot route: the peer has not joined the hub");
    return state;
  }

  #checkRoom(state: PeerState, names: readonly string[], current: Set<string>): void {
    let added = 0;
    for (const name of unique(names)) if (!current.has(name)) added++;
    const total = state.subjects.size + state.queues.size + added;
    if (total > this.#maxSubjectsPerPeer) {
      throw new RangeError(
        `Cannot subscribe: ${total} subjects and queues exceed the limit of ${this.#maxSubjectsPerPeer} per connection`,
      );
    }
  }

  #queue(name: string): Queue {
    let queue = this.#queues.get(name);
    if (!queue) {
      queue = { messages: [], head: 0, watchers: new Set(), consumers: new Set(), returning: [], charged: false };
      this.#queues.set(name, queue);
    }
    return queue;
  }

  #removeSubscriber(name: string, peer: Peer): void {
    const subject = this.#subjects.get(name);
    if (!subject) return;
    subject.subscribers.delete(peer);
    if (subject.subscribers.size === 0) this.#subjects.delete(name);
  }

  #removeWatcher(name: string, peer: Peer): void {
    const queue = this.#queues.get(name);
    if (!queue) return;
    queue.watchers.delete(peer);
    queue.consumers.delete(peer);
    this.#dropIfUnused(name, queue);
  }

  #dropIfUnused(name: string, queue: Queue): void {
    const empty = queue.head === queue.messages.length && queue.returning.length === 0;
    if (queue.watchers.size === 0 && empty && this.#queues.delete(name) && queue.charged) {
      this.#queuedBytes -= QUEUE_BYTES;
    }
  }
}

/**
 * What a queue costs the hub beyond its messages' bytes (its object, two
 * sets, its map entry; rounded up from a heap measurement), counted against
 * `maxQueuedBytes` for a queue that an enqueue created: otherwise tiny
 * messages to as many new queues would hold many times the limit in memory.
 * Watched queues are bounded by the per-peer limit.
 */
const QUEUE_BYTES = 640;

function unique(names: readonly string[]): readonly string[] {
  return names.length < 2 ? names : [...new Set(names)];
}
