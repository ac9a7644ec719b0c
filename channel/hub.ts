/**
 * The hub's routing state: who subscribes to which subject, who watches which
 * queue, and how a publish or an enqueue reaches them. No sockets here: a peer
 * is anything that can take a frame, so routing is tested and benchmarked
 * without a network.
 *
 * @module
 */

import {
  type AckPosition,
  DEFAULT_MAX_FRAME_BYTES,
  encodeMessageText,
  type Json,
  type WirePosition,
} from "../shared/wire.ts";
import { utf8Length } from "../shared/bytes.ts";
import { HistoryStore } from "../shared/history_log.ts";
import { IdempotencyCache, idempotencyKey } from "../shared/idempotency.ts";

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
  /**
   * True when the peer reads `events` frames (it spoke protocol version 3):
   * a batch's events for it then go in one frame rather than one each.
   */
  readonly takesEvents?: boolean;
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
  /**
   * Subjects that keep history: names, or prefixes ending in `*`
   * (`channel.chat.*`). @default {[]} (history off)
   */
  historySubjects?: readonly string[];
  /** Most messages kept per subject. @default {100} */
  historySize?: number;
  /** Longest a message is kept, in milliseconds. @default {300000} */
  historyTtl?: number;
  /** Most bytes kept per subject, by the length of each message's JSON data. @default {1048576} */
  historyMaxBytes?: number;
  /**
   * Most bytes kept over all subjects, 512 per subject included; past it the
   * least recently published subject's history is dropped whole and its
   * epoch changes. @default {67108864} (64 MiB)
   */
  historyTotalBytes?: number;
  /** Most subjects with history; past it, the same eviction. @default {10000} */
  maxHistorySubjects?: number;
  /** How long a publish's idempotency key is remembered, in milliseconds. @default {300000} */
  idempotencyWindow?: number;
  /** Most idempotency keys remembered; past it the oldest go. @default {100000} */
  maxIdempotencyKeys?: number;
  /** The clock for history ages and idempotency windows, in milliseconds. @default {Date.now} */
  now?: () => number;
}

/** What a publish did: who took it, and where it went in each subject that keeps history. */
export interface Routed {
  /** The peers that took the event, once per subject they got it on. */
  reached: Peer[];
  /** The publish's position in each of its subjects that keeps history. */
  positions: AckPosition[];
}

/** The part of an `ack` a retried publish is answered with again. */
export interface AckFields {
  count: number;
  positions?: AckPosition[];
}

interface PeerState {
  subjects: Set<string>;
  queues: Set<string>;
  /**
   * The watched queues on which the peer holds no credit: a bare `reserve`
   * walks these only, so that repeating it costs nothing however many
   * queues the peer watches.
   */
  uncredited: Set<string>;
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
  /** Subjects with history kept. */
  historySubjects: number;
  /** Bytes of history kept, counted against `historyTotalBytes`. */
  historyBytes: number;
  /** Subjects whose history was dropped whole to stay within the bounds. */
  historyEvictions: number;
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
  /** Each history subject's log of its messages' data as JSON text. */
  readonly #history: HistoryStore<string>;
  readonly #historySize: number;
  /** The acks of keyed publishes, by subjects and key; pending until the first one's ack is known. */
  readonly #acks: IdempotencyCache<Promise<AckFields>>;

  constructor(options: HubOptions = {}) {
    this.#maxSubjectsPerPeer = options.maxSubjectsPerPeer ?? DEFAULT_MAX_SUBJECTS_PER_PEER;
    this.#maxQueueLength = options.maxQueueLength ?? 10_000;
    this.#maxQueuedBytes = options.maxQueuedBytes ?? 64 * 1024 * 1024;
    this.#maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.#historySize = options.historySize ?? 100;
    this.#history = new HistoryStore({
      subjects: options.historySubjects,
      size: this.#historySize,
      ttl: options.historyTtl,
      maxBytes: options.historyMaxBytes,
      totalBytes: options.historyTotalBytes,
      maxSubjects: options.maxHistorySubjects,
      now: options.now,
    });
    this.#acks = new IdempotencyCache({
      window: options.idempotencyWindow,
      maxKeys: options.maxIdempotencyKeys,
      maxWeight: MAX_REMEMBERED_POSITIONS,
      now: options.now,
    });
  }

  /** Current counts, for logs and metrics. */
  get stats(): HubStats {
    const history = this.#history.stats;
    return {
      peers: this.#peers.size,
      subjects: this.#subjects.size,
      queues: this.#queues.size,
      queuedMessages: this.#queuedMessages,
      queuedBytes: this.#queuedBytes,
      historySubjects: history.subjects,
      historyBytes: history.bytes,
      historyEvictions: history.evictions,
    };
  }

  /** Whether any subject keeps history. */
  get keepsHistory(): boolean {
    return this.#history.enabled;
  }

  /** Registers a peer. */
  join(peer: Peer): void {
    if (!this.#peers.has(peer)) {
      this.#peers.set(peer, { subjects: new Set(), queues: new Set(), uncredited: new Set() });
    }
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
    return this.route(subjects, data, reply).reached;
  }

  /**
   * Sends `data` to one subscriber of each subject, taking subscribers in
   * turn, starting with the first to subscribe.
   *
   * @throws {RangeError} as {@linkcode Hub.publish}.
   */
  publishLoop(subjects: readonly string[], data: Json, reply?: string): Peer[] {
    return this.route(subjects, data, reply, true).reached;
  }

  /**
   * Routes a publish as {@linkcode Hub.publish} does (as
   * {@linkcode Hub.publishLoop} with `loop`), and appends it to the history
   * of each subject that keeps history, subscribed or not: its events carry
   * their position, and so does the result.
   *
   * @throws {RangeError} as {@linkcode Hub.publish}; then no subject gets it,
   * nor keeps it.
   */
  route(
    subjects: readonly string[],
    data: Json,
    reply?: string,
    loop = false,
    gathered?: EventBatch,
  ): Routed {
    const reached: Peer[] = [];
    const positions: AckPosition[] = [];
    const planned = this.#events(subjects, data, reply);
    this.#checkAckBytes(planned);
    for (const { name, subject, event } of planned) {
      const position = this.#history.append(name, event.data, event.dataBytes);
      if (position) positions.push({ subject: name, offset: position.offset, epoch: position.epoch });
      if (!subject) continue;
      const text = event.text(position);
      if (gathered && !loop) {
        // Peers that read `events` get theirs when the batch is sent; the others, now.
        let frame: Uint8Array | undefined;
        for (const peer of subject.subscribers) {
          if (peer.takesEvents) {
            gathered.add(peer, text, event.bytes);
            reached.push(peer);
          } else if (peer.send(frame ??= encodeMessageText(text))) reached.push(peer);
        }
        continue;
      }
      const frame = encodeMessageText(text);
      if (!loop) {
        for (const peer of subject.subscribers) {
          if (peer.send(frame)) reached.push(peer);
        }
        continue;
      }
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
    return { reached, positions };
  }

  /**
   * Gathers the events of a batch per peer, for {@linkcode Hub.route}, so
   * that each peer that reads `events` gets them in as few frames as the
   * frame limit allows: call {@linkcode EventBatch.send} once routed.
   */
  eventBatch(): EventBatch {
    return new EventBatch(this.#maxFrameBytes);
  }

  /**
   * The ack a publish with this idempotency key got, if one was published
   * with the same subjects within the window: answer it again, do not route.
   */
  recall(subjects: readonly string[], key: string): Promise<AckFields> | undefined {
    return this.#acks.get(idempotencyKey(subjects, key));
  }

  /**
   * Remembers the ack of a publish with an idempotency key, for
   * {@linkcode Hub.recall}; `positions` is how many it lists (one per history
   * subject), what it weighs against the positions all keys may hold.
   */
  remember(subjects: readonly string[], key: string, ack: Promise<AckFields>, positions = 0): void {
    this.#acks.set(idempotencyKey(subjects, key), ack, 1 + positions);
  }

  /**
   * The JSON text of a `history` reply: `subject`'s messages after `since`
   * (all kept ones without it), at most `limit` (capped at the history
   * size), cut to fit `maxFrameBytes`; `recovered` as the history log rules,
   * and false when the reply was cut to fit.
   */
  history(id: number, subject: string, since?: WirePosition, limit?: number): string {
    const read = this.#history.read(subject, { since, limit: Math.min(limit ?? this.#historySize, this.#historySize) });
    const { offset, epoch } = read.position;
    const head = `{"type":"history","id":${id},"epoch":${JSON.stringify(epoch)},"offset":${offset},"messages":[`;
    // Room for the head, the tail, and the frame header, counted in UTF-8 bytes.
    let room = this.#maxFrameBytes - 4 - utf8Length(head) - `],"recovered":false}`.length;
    const entries: string[] = [];
    for (const message of read.messages) {
      const entry = `{"offset":${message.offset},"data":${message.data}}`;
      room -= utf8Length(entry) + 1;
      if (room < 0) break;
      entries.push(entry);
    }
    const recovered = read.recovered && entries.length === read.messages.length;
    return `${head}${entries.join(",")}],"recovered":${recovered}}`;
  }

  /** Drops `subject`'s history; its epoch changes. */
  removeHistory(subject: string): void {
    this.#history.remove(subject);
  }

  /** Frees the memory of expired history messages of idle subjects; returns the bytes freed. */
  sweepHistory(): number {
    return this.#history.sweep();
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
      state.uncredited.add(name);
      this.#queue(name).watchers.add(peer);
    }
  }

  /** Stops watching queues; drops the peer's credit on them. */
  unwatch(peer: Peer, queues: readonly string[]): void {
    const state = this.#state(peer);
    for (const name of queues) {
      if (!state.queues.delete(name)) continue;
      state.uncredited.delete(name);
      this.#removeWatcher(name, peer);
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
    // Only where it holds no credit: a credit used puts its queue back (#dispatch), so a reserve costs what it gives.
    for (const name of queues ?? [...state.uncredited]) {
      if (!state.uncredited.delete(name)) continue;
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
      // Its credit here is used: the next reserve gives it one again.
      this.#peers.get(consumer)?.uncredited.add(name);
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

  /**
   * Each subject with subscribers or history, with its event's JSON text
   * but for the position; every size is checked before anything is sent or
   * kept. The text is built around the data's JSON, stringified once for
   * every subject and for the history.
   */
  #events(subjects: readonly string[], data: Json, reply: string | undefined): PlannedEvent[] {
    const planned: PlannedEvent[] = [];
    let text: string | undefined;
    let textBytes = 0;
    for (const name of unique(subjects)) {
      const subject = this.#subjects.get(name);
      const keeps = this.#history.keeps(name);
      if (!subject && !keeps) continue;
      text ??= JSON.stringify(data);
      // Without a reply, no reply key at all: the event's bytes stay what they were.
      const head = `{"type":"event","subject":${JSON.stringify(name)},"data":`;
      const tail = reply === undefined ? "" : `,"reply":${JSON.stringify(reply)}`;
      const extra = 4 + 1 + (keeps ? POSITION_BYTES : 0);
      // UTF-8 takes at most 3 bytes per UTF-16 unit: counted only when that bound could pass the limit.
      let bytes = extra + 3 * (head.length + text.length + tail.length);
      if (bytes > this.#maxFrameBytes) {
        if (textBytes === 0) textBytes = utf8Length(text);
        bytes = extra + utf8Length(head) + textBytes + utf8Length(tail);
      }
      this.#checkBytes(bytes);
      // History is bounded in bytes of UTF-8, as the flags say, not in UTF-16 units.
      if (keeps && textBytes === 0) textBytes = utf8Length(text);
      const body = text;
      planned.push({
        name,
        subject,
        event: {
          bytes: bytes - 4,
          data: body,
          dataBytes: keeps ? textBytes : 0,
          text: (position) =>
            position
              ? `${head}${body}${tail},"offset":${position.offset},"epoch":${JSON.stringify(position.epoch)}}`
              : `${head}${body}${tail}}`,
        },
      });
    }
    return planned;
  }

  /**
   * Refuses a publish whose acknowledgement, which lists a position per
   * history subject, would pass the frame limit: the publisher would have
   * to drop its link on it, and retry a publish already routed.
   */
  #checkAckBytes(planned: readonly PlannedEvent[]): void {
    // A name's JSON takes at most 6 bytes per UTF-16 unit (`\u001f`): counted exactly only when that bound could pass.
    let bound = ACK_BYTES;
    for (const { name, event } of planned) if (event.dataBytes > 0) bound += ACK_POSITION_BYTES + 6 * name.length;
    if (bound <= this.#maxFrameBytes) return;
    let bytes = ACK_BYTES;
    for (const { name, event } of planned) {
      if (event.dataBytes > 0) bytes += ACK_POSITION_BYTES + utf8Length(JSON.stringify(name));
    }
    if (bytes > this.#maxFrameBytes) {
      throw new RangeError(
        `Cannot route: its acknowledgement would list a position for each of its history subjects in about ${bytes} bytes, over the ${this.#maxFrameBytes}-byte frame limit; publish to fewer of them at once`,
      );
    }
  }

  #checkBytes(bytes: number): void {
    if (bytes > this.#maxFrameBytes) {
      throw new RangeError(
        `Cannot route: the message encodes to a ${bytes}-byte frame, over the ${this.#maxFrameBytes}-byte limit`,
      );
    }
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
 * A batch's events per peer, as JSON texts, sent as `events` frames of up
 * to the frame limit each. A peer that cannot take a frame is disconnecting:
 * its `flushed()` says false, so the batch's ack does not count it.
 */
export class EventBatch {
  readonly #maxFrameBytes: number;
  /** Each peer's event texts, and at most how many UTF-8 bytes each is (counted when its event was planned). */
  readonly #events = new Map<Peer, { texts: string[]; bytes: number[] }>();

  /** Events gathered into frames of at most `maxFrameBytes`. */
  constructor(maxFrameBytes: number) {
    this.#maxFrameBytes = maxFrameBytes;
  }

  /** Gathers an event's JSON text (`{"type":"event",…}`) of at most `bytes` UTF-8 bytes for `peer`. */
  add(peer: Peer, text: string, bytes: number): void {
    const events = this.#events.get(peer);
    if (events) {
      events.texts.push(text);
      events.bytes.push(bytes);
    } else this.#events.set(peer, { texts: [text], bytes: [bytes] });
  }

  /** Sends each peer its events: one `event` frame for a lone event, else `events` frames. */
  send(): void {
    const room = this.#maxFrameBytes - 4 - EVENTS_ENVELOPE.length;
    for (const [peer, { texts, bytes: sizes }] of this.#events) {
      if (texts.length === 1) {
        peer.send(encodeMessageText(texts[0]!));
        continue;
      }
      let run: string[] = [];
      let bytes = 0;
      const flush = () => {
        if (run.length === 1) peer.send(encodeMessageText(run[0]!));
        else if (run.length > 1) peer.send(encodeMessageText(`${EVENTS_HEAD}${run.join(",")}]}`));
        run = [];
        bytes = 0;
      };
      for (let i = 0; i < texts.length; i++) {
        const size = sizes[i]! + 1;
        if (run.length > 0 && bytes + size > room) flush();
        run.push(texts[i]!);
        bytes += size;
      }
      flush();
    }
    this.#events.clear();
  }
}

const EVENTS_HEAD = `{"type":"events","events":[`;
const EVENTS_ENVELOPE = `${EVENTS_HEAD}]}`;

/**
 * What a queue costs the hub beyond its messages' bytes (its object, two
 * sets, its map entry; rounded up from a heap measurement), counted against
 * `maxQueuedBytes` for a queue that an enqueue created: otherwise tiny
 * messages to as many new queues would hold many times the limit in memory.
 * Watched queues are bounded by the per-peer limit.
 */
const QUEUE_BYTES = 640;

/**
 * Most bytes a position adds to an event (`,"offset":` and 16 digits,
 * `,"epoch":"` and 8 hex characters and `"`): counted when checking the size
 * of a history subject's event before its offset is known.
 */
const POSITION_BYTES = 48;

/**
 * Positions the acks of remembered idempotency keys hold at most, all keys
 * together (about 100 bytes each): an ack lists one per history subject, so
 * a key of a publish to 5,000 of them held half a megabyte; past it the
 * oldest keys go. A key of a publish to one subject weighs 2: the 100,000
 * keys fit.
 */
const MAX_REMEMBERED_POSITIONS = 250_000;

/** An `ack`'s bytes but for its positions, at most: `{"type":"ack","id":N,"count":N,"positions":[]}`, numbers of 16 digits. */
const ACK_BYTES = 80;

/**
 * A position in an `ack` but for its subject's name, at most:
 * `{"subject":,"offset":N,"epoch":"…"},` with 16 digits and 8 hex characters.
 */
const ACK_POSITION_BYTES = 64;

interface PlannedEvent {
  name: string;
  subject: Subject | undefined;
  /**
   * The data's JSON and its UTF-8 bytes (counted for history only, 0
   * otherwise); the event's text, with its position if it has one; at most
   * how many UTF-8 bytes that text is.
   */
  event: { data: string; dataBytes: number; text: (position: WirePosition | undefined) => string; bytes: number };
}

function unique(names: readonly string[]): readonly string[] {
  return names.length < 2 ? names : [...new Set(names)];
}
