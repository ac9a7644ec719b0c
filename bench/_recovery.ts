/**
 * (k), the recovery storm, in the load generator: every client subscribes to
 * one history channel and gets a first publication (its position), all leave,
 * `messages` publications are made while they are away, then all come back at
 * once and subscribe with `since` (the position they last had). Measured: the
 * time from the first reconnect until every client has every missed
 * publication, each once, in order, at the position that follows its last.
 *
 * @module
 */

import { type LoadResult, type LoadSpec, percentiles, round } from "./load.ts";
import { benchChannel, encodeContent, readChannelFrame, readSeq } from "./_content.ts";
import { connectClients, WsClient } from "./_ws_client.ts";

/** The channel (k) uses: its hub subject is `channel.bench.0`, under `--history channel.*`. */
const CHANNEL = benchChannel(0);

const utf8 = new TextDecoder();

/** Where a client last was in the channel's history. */
interface Position {
  offset: number;
  epoch: string;
}

/** One storm: the clients, the publishing while they are away, the replay's accounting. */
export class RecoveryRun {
  readonly #spec: LoadSpec;
  #clients: WsClient[] = [];
  #positions: (Position | null)[] = [];
  /** Per client and missed publication: received yet. */
  #seen = new Uint8Array(0);
  #unique = new Uint32Array(0);
  #next = new Uint32Array(0);
  #doneAt = new Float64Array(0);
  #done = 0;
  #deliveries = 0;
  #duplicates = 0;
  #reordered = 0;
  #foreign = 0;
  #notRecovered = 0;
  #publishes = 0;
  #ok = 0;
  readonly #failures = new Map<string, number>();
  #storming = false;
  #lastActivity = 0;
  #primerSeq = 0;
  #replies = 0;

  constructor(spec: LoadSpec) {
    this.#spec = spec;
    this.#primerSeq = spec.messages;
  }

  /** Connects every client, subscribes it to the channel and waits until each has a position from a publication. */
  async connect(): Promise<number> {
    const { hostname, wsPort: port, clients, connectBatch, readBufferBytes } = this.#spec;
    this.#positions = Array.from({ length: clients }, () => null);
    await connectClients(this.#clients, {
      hostname,
      port,
      readBufferBytes,
      count: clients,
      batch: connectBatch,
      onMessage: (client, payload) => this.#beforeStorm(client, payload),
    });
    for (const client of this.#clients) this.#subscribe(client, null);
    await this.#until(() => this.#replies === this.#clients.length, "a subscribe reply");
    // One publication that everyone gets: the position each client last had.
    await this.#publish(this.#primerSeq);
    await this.#until(() => this.#positions.every((position) => position !== null), "the first publication");
    return this.#clients.length;
  }

  /** Leaves, publishes `messages` meanwhile, then the storm: everyone back at once, subscribing with `since`. */
  async drive(connectMs: number): Promise<LoadResult> {
    const { hostname, wsPort: port, clients, messages, readBufferBytes } = this.#spec;
    await Promise.all(this.#clients.map((client) => client.close()));
    this.#clients = [];
    const publishStart = performance.now();
    // One at a time: the hub's order is then the seq order.
    for (let seq = 0; seq < messages; seq++) await this.#publish(seq);
    const publishMs = performance.now() - publishStart;
    this.#seen = new Uint8Array(clients * messages);
    this.#unique = new Uint32Array(clients);
    this.#next = new Uint32Array(clients);
    this.#doneAt = new Float64Array(clients).fill(NaN);
    this.#storming = true;
    const start = performance.now();
    this.#lastActivity = start;
    let lastGreeting = NaN;
    const outcomes = await Promise.allSettled(Array.from({ length: clients }, async (_, index) => {
      const client = await WsClient.connect({
        hostname,
        port,
        readBufferBytes,
        onMessage: (client, payload, at) => this.#inStorm(client, payload, at),
      });
      client.index = index;
      this.#clients.push(client);
      lastGreeting = Number.isNaN(lastGreeting) ? performance.now() : Math.max(lastGreeting, performance.now());
      this.#subscribe(client, this.#positions[index]!);
    }));
    const failedConnects = outcomes.filter((outcome) => outcome.status === "rejected").length;
    const stalled = !await this.#until(() => this.#done + failedConnects >= clients, null);
    const times = this.#doneAt.filter((at) => !Number.isNaN(at)).map((at) => (at - start) * 1000);
    const lastDone = this.#done === clients ? Math.max(...this.#doneAt) : NaN;
    const recoveryMs = Number.isNaN(lastDone) ? null : round(lastDone - start);
    const unexpectedCloses: Record<string, number> = {};
    for (const client of this.#clients) {
      const reason = client.unexpectedClose;
      if (reason !== null) unexpectedCloses[reason] = (unexpectedCloses[reason] ?? 0) + 1;
    }
    if (failedConnects > 0) unexpectedCloses["failed to reconnect"] = failedConnects;
    const expected = clients * messages;
    return {
      type: "result",
      clients: this.#clients.length,
      connectMs: round(connectMs),
      publishes: this.#publishes,
      okPublishes: this.#ok,
      failedPublishes: this.#publishes - this.#ok,
      failures: Object.fromEntries(this.#failures),
      expectedDeliveries: expected,
      deliveries: this.#deliveries,
      lost: expected - this.#unique.reduce((sum, n) => sum + n, 0),
      duplicates: this.#duplicates,
      misdirected: 0,
      reordered: this.#reordered,
      foreign: this.#foreign,
      unexpectedCloses,
      deliveriesPerSec: recoveryMs === null ? null : round((this.#deliveries * 1000) / recoveryMs),
      publishesPerSec: publishMs > 0 ? round((messages * 1000) / publishMs) : null,
      deliveriesPerSecPerConnection: null,
      commands: 0,
      failedCommands: this.#notRecovered,
      commandsPerSec: null,
      commandLatencyUs: null,
      latencyUs: null,
      publishMs: round(publishMs),
      stalled,
      recoveryMs,
      reconnectMs: Number.isNaN(lastGreeting) ? null : round(lastGreeting - start),
      recoveryUs: percentiles(Float64Array.from(times)),
      notRecovered: this.#notRecovered,
    };
  }

  /** Closes every client connected so far. */
  async close(): Promise<void> {
    await Promise.all(this.#clients.map((client) => client.close()));
  }

  /** Sends the subscribe (with `since` when given); its reply is read by the message handlers. */
  #subscribe(client: WsClient, since: Position | null): void {
    const at = since === null ? "" : `,"since":{"offset":${since.offset},"epoch":"${since.epoch}"}`;
    client.send(`{"id":1,"subscribe":{"channel":"${CHANNEL}"${at}}}`);
  }

  async #publish(seq: number): Promise<void> {
    const { hostname, publishPort, contentBytes } = this.#spec;
    const content = encodeContent(seq, Math.round(performance.now() * 1000), { bytes: contentBytes });
    this.#publishes++;
    try {
      const response = await fetch(`http://${hostname}:${publishPort}/?channel=${CHANNEL}&content=${content}`);
      const body = await response.text();
      if (response.status === 200) {
        this.#ok++;
        return;
      }
      const key = `${response.status} ${body.trim()}`.slice(0, 160);
      this.#failures.set(key, (this.#failures.get(key) ?? 0) + 1);
    } catch (error) {
      const key = `no answer: ${(error as Error).message}`.slice(0, 160);
      this.#failures.set(key, (this.#failures.get(key) ?? 0) + 1);
    }
  }

  /** Before leaving: subscribe replies pass, the first publication gives each client its position. */
  #beforeStorm(client: WsClient, payload: Uint8Array): void {
    const frame = readChannelFrame(payload);
    if (frame === null) {
      if (!isReply(payload)) this.#foreign++;
      else if (!utf8.decode(payload).includes('"error"')) this.#replies++;
      return;
    }
    if (readSeq(frame.content) !== this.#primerSeq || frame.offset === null || frame.epoch === null) {
      this.#foreign++;
      return;
    }
    this.#positions[client.index] = { offset: frame.offset, epoch: utf8.decode(frame.epoch) };
  }

  /** In the storm: the subscribe's reply, then the missed publications, checked against the client's position. */
  #inStorm(client: WsClient, payload: Uint8Array, at: number): void {
    if (!this.#storming) return;
    this.#lastActivity = at;
    const frame = readChannelFrame(payload);
    if (frame === null) {
      if (isReply(payload)) {
        const reply = JSON.parse(utf8.decode(payload)) as { result?: { recovered?: boolean } };
        if (reply.result?.recovered !== true) this.#notRecovered++;
      } else {
        this.#foreign++;
      }
      return;
    }
    const { messages } = this.#spec;
    const seq = readSeq(frame.content);
    if (!(seq < messages)) {
      this.#foreign++;
      return;
    }
    const c = client.index;
    this.#deliveries++;
    if (this.#seen[c * messages + seq]) {
      this.#duplicates++;
      return;
    }
    this.#seen[c * messages + seq] = 1;
    const base = this.#positions[c]!;
    // Out of order, or not at the position that follows the client's last by seq + 1.
    if (
      seq !== this.#next[c] || frame.offset !== base.offset + seq + 1 || frame.epoch === null ||
      utf8.decode(frame.epoch) !== base.epoch
    ) {
      this.#reordered++;
    }
    this.#next[c] = seq + 1;
    if (++this.#unique[c]! === messages) {
      this.#doneAt[c] = at;
      this.#done++;
    }
  }

  /** Waits until `done()`, or until nothing arrived for `quietMs` (false; throws naming `what` when given). */
  async #until(done: () => boolean, what: string | null): Promise<boolean> {
    this.#lastActivity = performance.now();
    while (!done()) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      if (performance.now() - this.#lastActivity > this.#spec.quietMs) {
        if (what !== null) throw new Error(`Not every client got ${what} within ${this.#spec.quietMs} ms`);
        return false;
      }
    }
    return true;
  }
}

/** `{"id":`: a command's reply. */
function isReply(payload: Uint8Array): boolean {
  return payload[0] === 0x7b && payload[1] === 0x22 && payload[2] === 0x69 && payload[3] === 0x64;
}
