/**
 * One peer of the hub: a TCP connection's read loop (decoding frames,
 * holding back a peer that does not read its replies), its hello and token,
 * the messages it sends routed through the {@linkcode Hub}, the acks of its
 * publishes, and its one coalescing {@linkcode FrameWriter}.
 *
 * @module
 */

import type { ThrottledLine } from "../shared/log_throttle.ts";
import type { AckFields, Hub, Routed } from "./hub.ts";
import type { Peer } from "./hub.ts";
import type { Grace } from "./_grace.ts";
import type { Counters, DisconnectReason } from "./metrics.ts";
import type { Logger } from "../shared/log.ts";
import { secretsEqual } from "../shared/secret.ts";
import {
  type BatchResult,
  type ClientMessage,
  encodeMessage,
  encodeMessageText,
  type HubMessage,
  type Json,
  MessageDecoder,
  MIN_PROTOCOL_VERSION,
  PROTOCOL_VERSION,
  type PublishBatch,
  toClientMessage,
} from "../shared/wire.ts";
import { FrameWriter } from "../shared/writer.ts";

/**
 * What a {@linkcode Connection} uses of its socket: a `Deno.Conn` (plain or
 * TLS), or a `node:tls` socket adapted to these methods
 * (`_node_tls_listener.ts`). A `handshake()` or `setNoDelay()` it has is used.
 */
export type HubConn = Pick<Deno.Conn, "read" | "write" | "closeWrite" | "close" | "remoteAddr">;

/** What a {@linkcode Connection} needs to know of the hub's settings. */
export interface ConnectionSettings {
  /** When set, the `hello` must carry it. */
  token: string | undefined;
  /** Largest frame taken from the peer. */
  maxFrameBytes: number;
  /** Most bytes waiting to be written to the peer before it is a slow consumer. */
  maxPendingBytes: number;
  /** The hub's connection budget, for the message of a refusal. */
  maxConnections: number;
  /** How long a closing connection gets to take its error frame, in milliseconds. */
  closeGrace: number;
}

/** The server a {@linkcode Connection} belongs to: what it routes through, counts in, and is admitted by. */
export interface ConnectionHost {
  /** The routing state. */
  readonly hub: Hub;
  /** The counters the connection bumps. */
  readonly counters: Counters;
  /** Counts a connection whose hello was accepted; false when the hub is full. */
  admit(connection: Connection): boolean;
  /** Where failed TLS handshakes are logged: a line a second at most, as any peer can cause them. */
  readonly handshakeFailures: ThrottledLine;
}

/** Every pong is the same bytes: a peer's queue of pongs holds references, not copies. */
const PONG = encodeMessage({ type: "pong" });

/**
 * Past this many bytes waiting to be written to a connection, the hub reads
 * nothing more from it until they are written; and past this many bytes of
 * replies to one read's frames, it handles no further frame of that read
 * until they are written. A peer that sends requests
 * (pings, publishes) without reading the replies is then held back by TCP,
 * rather than growing its queue of small replies, each with its own objects,
 * up to `maxPendingBytes`.
 */
const READ_PAUSE_BYTES = 64 * 1024;

/**
 * Past this many publishes waiting for their acks, the hub reads nothing more
 * from the publisher until half of them are acked. Each costs memory while a
 * subscriber is slow to take its event; a `HubClient` with its default
 * `maxWaitingPublishes` never has more in flight.
 */
const MAX_UNACKED = 10_000;

/** Messages that route data to others, held during the startup grace. */
const ROUTED = new Set<ClientMessage["type"]>(["publish", "publishLoop", "publish_batch", "enqueue"]);

/** A peer of the hub over TCP. */
export class Connection implements Peer {
  /**
   * When the last complete frame arrived after `hello` (before it: when the
   * connection opened). Bytes of a frame not yet finished, and frames before
   * `hello` (keepalives, say), do not count: otherwise a peer trickling one
   * byte at a time, or one that never says hello, would hold its slot and its
   * partial-frame buffer forever.
   */
  lastSeen = performance.now();
  /** True while the hub holds back reading this peer (its replies unread, its publishes unacked, the startup grace). */
  readPaused = false;
  readonly #id: number;
  readonly #tcp: HubConn;
  readonly #hub: Hub;
  readonly #counters: Counters;
  readonly #settings: ConnectionSettings;
  readonly #logger: Logger;
  readonly #writer: FrameWriter;
  readonly #decoder: MessageDecoder<ClientMessage>;
  readonly #grace: Grace;
  readonly #server: ConnectionHost;
  #greeted = false;
  /** The protocol version its hello announced. */
  #version = 0;
  #closing = false;
  #closed = false;
  /** When {@linkcode Connection.behindFor} last found the peer caught up, and the bytes queued for it by then. */
  #markAt = 0;
  #markBytes = 0;
  /** Why the connection is going, once that is known; counted once. */
  #disconnectReason: DisconnectReason | null = null;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;
  /** Publishes from this connection still waiting for their subscribers' writes, to be acked. */
  #unacked = 0;
  /** Resumes the read loop, paused while `#unacked` was over `MAX_UNACKED`. */
  #readerWaiting: (() => void) | null = null;
  /** Called once no publish waits for its ack, while the hub shuts down. */
  #allAcked: (() => void) | null = null;

  /** Wraps an accepted socket; the read loop starts with {@linkcode Connection.serve}. */
  constructor(
    id: number,
    tcp: HubConn,
    server: ConnectionHost,
    settings: ConnectionSettings,
    logger: Logger,
    grace: Grace,
  ) {
    this.#id = id;
    this.#grace = grace;
    this.#tcp = tcp;
    this.#server = server;
    this.#hub = server.hub;
    this.#counters = server.counters;
    this.#settings = settings;
    this.#logger = logger;
    this.#writer = new FrameWriter(tcp, {
      maxPendingBytes: settings.maxPendingBytes,
      onError: () => this.#close(),
    });
    this.#decoder = new MessageDecoder(toClientMessage, { maxFrameBytes: settings.maxFrameBytes });
    // A Deno.TlsConn has no such switch.
    if ("setNoDelay" in tcp) (tcp as Pick<Deno.TcpConn, "setNoDelay">).setNoDelay(true);
    this.#hub.join(this);
  }

  /** Publishes from this connection waiting for their subscribers' writes, to be acked. */
  get unacked(): number {
    return this.#unacked;
  }

  /** True when the client reads `events` frames: it spoke protocol version 3 or later. */
  get takesEvents(): boolean {
    return this.#version >= 3;
  }

  /** True once the client's `hello` was accepted. */
  get greeted(): boolean {
    return this.#greeted;
  }

  /** Queues a frame; over `maxPendingBytes` the peer is closed as a slow consumer and false returned. */
  send(frame: Uint8Array): boolean {
    if (this.#writer.enqueue(frame)) return true;
    this.fail(
      "slow_consumer",
      `Slow consumer: more than ${this.#settings.maxPendingBytes} bytes waiting to be written`,
    );
    return false;
  }

  /** Milliseconds the write in flight has been blocked; 0 once closing, as it is being dealt with. */
  stalledFor(now: number): number {
    return this.#closing ? 0 : this.#writer.stalledFor(now);
  }

  /**
   * Milliseconds since the mark, when bytes queued before it are still not
   * all taken by the socket; else 0, and the mark moves to now and to every
   * byte queued so far. Called once a sweep, so a byte that waits longer
   * than the sweep's bound is caught within a sweep of it: a peer that
   * reads, but slower than it is sent to, never has one write blocked for
   * long, yet falls further behind. 0 once closing.
   */
  behindFor(now: number): number {
    if (this.#closing) return 0;
    if (this.#writer.acceptedBytes >= this.#markBytes) {
      this.#markAt = now;
      this.#markBytes = this.#writer.enqueuedBytes;
      return 0;
    }
    return Math.round(now - this.#markAt);
  }

  /** Resolves true once everything queued so far is in the kernel's socket buffer. */
  flushed(): Promise<boolean> {
    return this.#writer.flushed();
  }

  /** Reads and handles the peer's frames until it goes; resolves once the socket is closed. */
  async serve(): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    let handshaken = false;
    try {
      // Done here rather than by the first read, so that a failed handshake
      // has its own line: a plain-text client, or one that refuses the certificate.
      if ("handshake" in this.#tcp) await (this.#tcp as Pick<Deno.TlsConn, "handshake">).handshake();
      handshaken = true;
      while (true) {
        const n = await this.#tcp.read(buffer);
        if (n === null) break;
        // After an error the connection only drains what the peer still sends.
        if (this.#closing) continue;
        const buffered = this.#decoder.bufferedBytes;
        const held = this.#receive(buffer.subarray(0, n));
        // Unless a frame was completed, every byte read is still buffered.
        if (this.#greeted && this.#decoder.bufferedBytes !== buffered + n) this.lastSeen = performance.now();
        const pauses = held !== null || this.#writer.pendingBytes > READ_PAUSE_BYTES ||
          this.#unacked > MAX_UNACKED;
        if (!pauses) continue;
        // While the hub does not read a peer, its silence is the hub's doing:
        // the idle check passes it over, and starts again from the end of the pause.
        this.readPaused = true;
        if (held) await this.#resume(held);
        if (this.#writer.pendingBytes > READ_PAUSE_BYTES) await this.#writer.flushed();
        if (this.#unacked > MAX_UNACKED) await new Promise<void>((resolve) => (this.#readerWaiting = resolve));
        this.readPaused = false;
        if (this.#greeted) this.lastSeen = performance.now();
      }
    } catch (error) {
      if (!handshaken && !this.#closed) {
        const remote = this.#tcp.remoteAddr as Deno.NetAddr;
        this.#server.handshakeFailures.log({
          conn: this.#id,
          remote: `${remote.hostname}:${remote.port}`,
          error: (error as Error).message,
        });
      } else if (!this.#closed) this.#logger.debug("read failed", { conn: this.#id, error: (error as Error).message });
    } finally {
      this.#countDisconnect("closed");
      this.#hub.leave(this);
      if (this.#closing) await this.#writer.end();
      this.#close();
    }
  }

  /** Closes with an error frame: for the peer's mistakes and for limits. */
  fail(kind: DisconnectReason, reason: string): void {
    if (this.#closing) return;
    this.#countDisconnect(kind);
    this.#logger.warn("closing connection", { conn: this.#id, reason });
    this.#closing = true;
    this.#hub.leave(this);
    this.#graceTimer = setTimeout(() => this.#close(), this.#settings.closeGrace);
    this.#writer.end(encodeMessage({ type: "error", reason })).then(() => {
      // Half-close: the peer reads the error, then end of stream.
      if (!this.#closed) this.#tcp.closeWrite().catch(() => this.#close());
    });
  }

  /** Closes after flushing what is queued: for shutdown. */
  end(): void {
    if (this.#closing) return;
    this.#countDisconnect("shutdown");
    this.#closing = true;
    this.#hub.leave(this);
    this.#graceTimer = setTimeout(() => this.#close(), this.#settings.closeGrace);
    // Its publishes' acks first, as their events reach their subscribers
    // (within the grace): an ack not sent makes the publisher send again.
    // Then finish(), not end(): what was queued before the shutdown is written.
    const acked = this.#unacked === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.#allAcked = resolve));
    // Then a half-close, which over TLS is the close_notify a client checks for (else it logs a truncation).
    acked.then(() => this.#writer.finish())
      .then(() => this.#closed ? undefined : this.#tcp.closeWrite().catch(() => {}))
      .then(() => this.#close());
  }

  /**
   * Decodes and handles a chunk's messages. Returns those not yet handled
   * when one of them must wait for the startup grace to end.
   */
  #receive(chunk: Uint8Array): ClientMessage[] | null {
    let messages: ClientMessage[];
    try {
      messages = this.#decoder.push(chunk);
    } catch (error) {
      this.fail("protocol_error", (error as Error).message);
      return null;
    }
    return this.#handleAll(messages);
  }

  /**
   * Handles `messages` in order; returns those that must wait: routed ones
   * during the startup grace, and all that follow once the replies to these
   * messages pass `READ_PAUSE_BYTES` (one read can bring hundreds of history
   * requests, each answered with up to a frame's limit: handled at once,
   * they would pass `maxPendingBytes` and close the peer as a slow
   * consumer). Only its own replies count: events others publish to it are
   * the pause of the read loop's business, as before.
   */
  #handleAll(messages: ClientMessage[]): ClientMessage[] | null {
    let replied = 0;
    for (let i = 0; i < messages.length; i++) {
      const message = messages[i]!;
      if (this.#grace.active && ROUTED.has(message.type)) return messages.slice(i);
      if (replied > READ_PAUSE_BYTES) return messages.slice(i);
      const before = this.#writer.pendingBytes;
      this.#handle(message);
      if (this.#closing) return null;
      replied += Math.max(0, this.#writer.pendingBytes - before);
    }
    return null;
  }

  /** Handles held messages in order, once the grace is over and the replies before them are written; reading pauses meanwhile. */
  async #resume(held: ClientMessage[]): Promise<void> {
    let waiting: ClientMessage[] | null = held;
    while (waiting && !this.#closing) {
      await this.#grace.over;
      if (!(await this.#writer.flushed()) || this.#closing) return;
      waiting = this.#handleAll(waiting);
    }
  }

  #handle(message: ClientMessage): void {
    if (message.type === "hello") {
      this.#greet(message.version, message.token);
      return;
    }
    if (!this.#greeted) {
      this.fail("protocol_error", `Expected hello first, got ${message.type}`);
      return;
    }
    try {
      switch (message.type) {
        case "subscribe":
          this.#hub.subscribe(this, message.subjects);
          break;
        case "unsubscribe":
          this.#hub.unsubscribe(this, message.subjects);
          break;
        case "publish":
        case "publishLoop":
          this.#publish(message);
          break;
        case "publish_batch":
          this.#publishBatch(message);
          break;
        case "watch":
          this.#hub.watch(this, message.queues);
          break;
        case "unwatch":
          this.#hub.unwatch(this, message.queues);
          break;
        case "enqueue":
          this.#enqueue(message.id, message.queues, message.data);
          break;
        case "reserve":
          this.#hub.reserve(this, message.queues);
          break;
        case "ping":
          this.send(PONG);
          break;
        case "history":
          this.send(encodeMessageText(this.#hub.history(message.id, message.subject, message.since, message.limit)));
          break;
        case "history_remove":
          this.#hub.removeHistory(message.subject);
          this.#reply({ type: "ack", id: message.id, count: 0 });
          break;
        case "invalid":
          this.#reply({ type: "error", id: message.id, reason: message.reason });
          break;
      }
    } catch (error) {
      // The hub throws RangeError for a peer past its limit of subjects and queues only.
      if (!(error instanceof RangeError)) throw error;
      this.fail("limit", error.message);
    }
  }

  #greet(version: number, token: string | undefined): void {
    if (this.#greeted) return this.fail("protocol_error", "Hello sent twice");
    if (version < MIN_PROTOCOL_VERSION || version > PROTOCOL_VERSION) {
      return this.fail(
        "protocol_error",
        `Unsupported protocol version ${version}: this hub speaks ${MIN_PROTOCOL_VERSION} to ${PROTOCOL_VERSION}`,
      );
    }
    const expected = this.#settings.token;
    if (expected !== undefined && (token === undefined || !secretsEqual(token, expected))) {
      return this.fail(
        "unauthorized",
        token === undefined ? "Unauthorized: this hub needs a token" : "Unauthorized: wrong token",
      );
    }
    if (!this.#server.admit(this)) {
      return this.fail("full", `Hub is full: ${this.#settings.maxConnections} connections`);
    }
    this.#greeted = true;
    this.#version = version;
  }

  #enqueue(id: number, queues: string[], data: Json): void {
    this.#counters.enqueues++;
    let count: number;
    try {
      count = this.#hub.enqueue(queues, data);
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      this.#counters.enqueuesRefused++;
      this.#reply({ type: "error", id, reason: error.message });
      return;
    }
    this.#reply({ type: "ack", id, count });
  }

  #publish(message: Extract<ClientMessage, { type: "publish" | "publishLoop" }>): void {
    const key = message.idempotency_key;
    const seen = key === undefined ? undefined : this.#hub.recall(message.subjects, key);
    if (seen) {
      // A retry: answered as the first one was, once that one's ack is known; not routed again.
      this.#counters.publishes++;
      this.#await(seen.then((ack) => this.#reply({ type: "ack", id: message.id, ...ack })));
      return;
    }
    let routed: Routed;
    try {
      routed = this.#hub.route(message.subjects, message.data, message.reply, message.type === "publishLoop");
    } catch (error) {
      // Too large an event: the publisher is told, and keeps its connection.
      if (!(error instanceof RangeError)) throw error;
      this.#counters.publishes++;
      this.#reply({ type: "error", id: message.id, reason: error.message });
      return;
    }
    const ack = this.#acknowledge(message.id, routed);
    if (key !== undefined) this.#hub.remember(message.subjects, key, ack, routed.positions.length);
  }

  /**
   * Routes each item of a batch as a `publish` of it alone, and answers one
   * `batch_ack` once every event is in the kernel's buffer of every
   * subscriber it was queued for: one wait per peer reached, not per item.
   * An item too large is refused alone; a keyed item seen before is answered
   * as the first one was, and not routed again.
   */
  #publishBatch(message: PublishBatch): void {
    const items = message.items;
    this.#counters.publishes += items.length;
    const results: (BatchResult | Promise<AckFields>)[] = new Array(items.length);
    const reachedBy: Peer[][] = new Array(items.length);
    /** Resolves the remembered ack of each keyed item routed here. */
    const settles: ((fields: CountResult) => void)[] = new Array(items.length);
    /** The item a keyed retry in the same batch repeats, and the first item of each subject and key. */
    const sameAs: number[] = new Array(items.length);
    const firsts = new Map<string, number>();
    const peers = new Set<Peer>();
    const events = this.#hub.eventBatch();
    let waits = false;
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!;
      const key = item.idempotency_key;
      const subjects = [item.subject];
      // A retry within this batch is answered as its first, with no wait. Keyed by the pair as JSON: a
      // separator could also be in a subject or a key ("a\nb" with "c" against "a" with "b\nc").
      const pair = key === undefined ? undefined : JSON.stringify([item.subject, key]);
      const first = pair === undefined ? undefined : firsts.get(pair);
      if (first !== undefined) {
        sameAs[i] = first;
        continue;
      }
      const seen = key === undefined ? undefined : this.#hub.recall(subjects, key);
      if (pair !== undefined) firsts.set(pair, i);
      if (seen) {
        results[i] = seen;
        waits = true;
        continue;
      }
      let routed: Routed;
      try {
        routed = this.#hub.route(subjects, item.data, undefined, false, events);
      } catch (error) {
        if (!(error instanceof RangeError)) throw error;
        results[i] = { error: error.message };
        continue;
      }
      this.#counters.deliveries += routed.reached.length;
      const position = routed.positions[0];
      results[i] = position ? { count: 0, offset: position.offset, epoch: position.epoch } : { count: 0 };
      reachedBy[i] = routed.reached;
      for (const peer of routed.reached) peers.add(peer);
      if (key !== undefined) {
        if (routed.reached.length === 0) {
          this.#hub.remember(
            subjects,
            key,
            Promise.resolve(ackFields(item.subject, results[i] as CountResult)),
            routed.positions.length,
          );
        } else {
          // Settled below, once the writes are known; a retry in this same batch waits for it.
          const subject = item.subject;
          this.#hub.remember(
            subjects,
            key,
            new Promise<AckFields>((resolve) => (settles[i] = (fields) => resolve(ackFields(subject, fields)))),
            routed.positions.length,
          );
        }
      }
      if (routed.reached.length > 0) waits = true;
    }
    events.send();
    if (!waits) {
      for (let i = 0; i < items.length; i++) if (sameAs[i] !== undefined) results[i] = results[sameAs[i]!]!;
      this.#reply({ type: "batch_ack", id: message.id, results: results as BatchResult[] });
      return;
    }
    // What waits for the writes holds no item: the batch's data dies young,
    // not after the collections that a wait for the kernel spans.
    const { id, items: { length } } = message;
    const written = new Map<Peer, boolean>();
    const flushes = [...peers].map((peer) => peer.flushed().then((ok) => void written.set(peer, ok)));
    const done = Promise.all(flushes).then(async () => {
      const answered: BatchResult[] = new Array(length);
      for (let i = 0; i < length; i++) {
        if (sameAs[i] !== undefined) {
          answered[i] = answered[sameAs[i]!]!;
          continue;
        }
        const result = results[i]!;
        if (result instanceof Promise) {
          answered[i] = batchResult(await result);
          continue;
        }
        if ("error" in result) {
          answered[i] = result;
          continue;
        }
        let count = 0;
        for (const peer of reachedBy[i]!) if (written.get(peer)) count++;
        const fields = { ...result, count };
        answered[i] = fields;
        settles[i]?.(fields);
      }
      this.#reply({ type: "batch_ack", id, results: answered });
    });
    // Weighed by its items: a batch holds as much as as many publishes.
    this.#await(done, length);
  }

  /**
   * Counts a publish, and acknowledges it once its event is in the kernel's
   * buffer of every subscriber it was queued for, so an `ack` survives a hub
   * crash after it. Resolves with what the ack said.
   */
  #acknowledge(id: number, { reached, positions }: Routed): Promise<AckFields> {
    this.#counters.publishes++;
    this.#counters.deliveries += reached.length;
    const fields = (count: number): AckFields => positions.length > 0 ? { count, positions } : { count };
    if (reached.length === 0) {
      this.#reply({ type: "ack", id, ...fields(0) });
      return Promise.resolve(fields(0));
    }
    const writes = reached.map((peer) => peer.flushed());
    const ack = Promise.all(writes).then((written) => fields(written.filter(Boolean).length));
    this.#await(ack.then((fields) => this.#reply({ type: "ack", id, ...fields })));
    return ack;
  }

  /** Counts an ack still to come (for `publishes` publishes), holding back reading past {@linkcode MAX_UNACKED} of them. */
  #await(acked: Promise<void>, publishes = 1): void {
    this.#unacked += publishes;
    acked.then(() => {
      this.#unacked -= publishes;
      if (this.#unacked <= MAX_UNACKED / 2) this.#wakeReader();
      if (this.#unacked === 0) this.#allAcked?.();
    });
  }

  #wakeReader(): void {
    const wake = this.#readerWaiting;
    this.#readerWaiting = null;
    wake?.();
  }

  #reply(message: HubMessage): void {
    this.send(encodeMessage(message));
  }

  /** Records why the connection goes: the first reason given is the one counted. */
  #countDisconnect(reason: DisconnectReason): void {
    if (this.#disconnectReason !== null) return;
    this.#disconnectReason = reason;
    this.#counters.disconnects[reason]++;
  }

  #close(): void {
    if (this.#closed) return;
    this.#countDisconnect("closed");
    this.#closed = true;
    this.#closing = true;
    clearTimeout(this.#graceTimer);
    this.#wakeReader();
    this.#writer.close();
    try {
      this.#tcp.close();
    } catch { /* already closed */ }
  }
}

/** A batch item's result when it was routed. */
type CountResult = Exclude<BatchResult, { error: string }>;

/** A batch item's result from the ack fields of a publish to its one subject. */
function batchResult(fields: AckFields): BatchResult {
  const position = fields.positions?.[0];
  return position ? { count: fields.count, offset: position.offset, epoch: position.epoch } : { count: fields.count };
}

/** The ack fields a `publish` to `subject` alone would have had: what a keyed retry of it is answered with. */
function ackFields(subject: string, result: CountResult): AckFields {
  if (result.offset === undefined) return { count: result.count };
  return { count: result.count, positions: [{ subject, offset: result.offset, epoch: result.epoch! }] };
}
