/**
 * The soak's load generator: one process, started by `bench/soak.ts`, with
 * only `--allow-net=127.0.0.1`. It keeps a steady number of raw WebSocket
 * clients connected while some leave and new ones take their place, publishes
 * a mix of broadcasts and targeted sends on a timer over pipelined HTTP/1.1
 * connections, and checks that every connected client got what it was owed.
 *
 * What a client is owed: every publish answered `200` that was written after
 * its greeting arrived and answered before it decided to leave (or before the
 * end, for the clients still there): each broadcast, and each targeted send
 * addressed to it. A leaving client stops being a target at once, keeps
 * reading until it has everything it is owed or `lingerMs` pass, then closes;
 * what is still missing once it has closed is lost. The clients still there
 * at the end are checked once every answer is in, after waiting until all
 * they are owed arrived or nothing arrived for `quietMs`. A client the server
 * closed is not checked; it is counted in `unexpectedCloses`.
 *
 * Memory: one bit per publish per client, so about `clients × publishes / 8`
 * bytes (2000 clients × 42,000 publishes: 10 MB).
 *
 * Talks to its parent over stdio as `bench/load.ts` does, one JSON object a
 * line:
 *
 * 1. argument: the {@linkcode SoakSpec} as JSON;
 * 2. stdout `{"type":"connected",...}` once the first `clients` are greeted;
 * 3. stdin `go`: the load starts; stdout `{"type":"tick",...}`
 *    ({@linkcode SoakTick}) once a second while it runs and drains;
 * 4. stdout `{"type":"result",...}` ({@linkcode SoakResult}), the steady
 *    number of clients still connected;
 * 5. stdin `close` or end of input: the clients close and the process exits.
 *
 * On failure: stdout `{"type":"error","message":...}`, exit 1.
 *
 * @module
 */

import { WsClient } from "./_ws_client.ts";
import { openPublishConnections, type PublishSource } from "./_publish_connection.ts";
import type { HttpAnswer } from "./_http_responses.ts";
import { encodeContent, readSendTime, readSeq } from "./_content.ts";
import { emit, generatorMain } from "./_generator.ts";
import type { Latency } from "./load.ts";

/** What one soak does. */
export interface SoakSpec {
  /** Host of both the WebSocket and the publish port. */
  hostname: string;
  /** WebSocket port (`/`). */
  wsPort: number;
  /** Publish API port (`GET /?content=`). */
  publishPort: number;
  /** Clients kept connected. */
  clients: number;
  /** Clients replaced per second: as many leave, as many new ones connect. */
  churnPerSec: number;
  /** Broadcasts per second. */
  broadcastsPerSec: number;
  /** Targeted sends per second, each to a client connected at the time, picked at random. */
  targetedPerSec: number;
  /** Milliseconds the load runs: churn and publishing. */
  durationMs: number;
  /** Size of each content, in bytes. */
  contentBytes: number;
  /** Clients connected at once while the first `clients` connect. */
  connectBatch: number;
  /** HTTP connections publishes go over. */
  publishConnections: number;
  /** Requests in flight per HTTP connection. */
  pipeline: number;
  /** A leaving client waits at most this long for what it is owed before it closes. */
  lingerMs: number;
  /** At the end, wait this long with nothing arriving before counting what is missing as lost. */
  quietMs: number;
  /** Read buffer per client, in bytes. */
  readBufferBytes: number;
}

/** Progress, once a second. */
export interface SoakTick {
  type: "tick";
  /** Milliseconds since `go`. */
  elapsedMs: number;
  /** `load` while churning and publishing, `drain` after. */
  phase: "load" | "drain";
  /** Clients greeted and not leaving. */
  clients: number;
  /** Clients waiting to close. */
  leaving: number;
  /** Clients connecting. */
  connecting: number;
  /** Publishes answered so far. */
  answered: number;
  /** Benchmark messages received so far. */
  deliveries: number;
  /** Deliveries found missing so far (clients that left). */
  lost: number;
}

/** Publishes of one kind. */
export interface PublishCounts {
  /** Due by the schedule. */
  scheduled: number;
  /** Requests written. */
  sent: number;
  /** Answered `200`. */
  ok: number;
  /** Not answered `200`, or not sent. */
  failed: number;
}

/** A delivery found missing, for the report. */
export interface LostDelivery {
  /** The client's number, in connection order. */
  client: number;
  /** Its address. */
  worker: string;
  connection: string;
  seq: number;
  kind: "broadcast" | "targeted";
  /** Milliseconds after `go`. */
  joinedMs: number;
  sentMs: number;
  answeredMs: number;
  /** When it decided to leave; null for a client there to the end. */
  leftMs: number | null;
}

/** What the soak saw. */
export interface SoakResult {
  type: "result";
  /** Clients connected at the end, all checked: the steady count unless some could not connect. */
  clients: number;
  /** Milliseconds to connect and greet the first `clients`. */
  connectMs: number;
  /** Clients that connected during the load, replacing those that left. */
  joined: number;
  /** Clients that left during the load. */
  left: number;
  /** Fewest and most clients connected (greeted, not leaving), sampled every tick of the load. */
  minClients: number;
  maxClients: number;
  /** Connections that failed during the load (refused, no greeting), and the first reasons. */
  connectFailures: number;
  connectFailureSample: string[];
  broadcasts: PublishCounts;
  targeted: PublishCounts;
  /** Publishes not answered `200` (or not sent), both kinds. */
  failedPublishes: number;
  /** Failed publishes by `<status> <reason>`. */
  failures: Record<string, number>;
  /** Clients whose deliveries were checked: those that left, and those there at the end. */
  checkedClients: number;
  /** Deliveries owed and checked, by kind. */
  checkedBroadcastDeliveries: number;
  checkedTargetedDeliveries: number;
  /** Owed deliveries that never came. */
  lost: number;
  lostBroadcast: number;
  lostTargeted: number;
  /** The first few, to look into. */
  lostSample: LostDelivery[];
  /** A message a client got twice. */
  duplicates: number;
  /** A targeted send that reached a client it was not addressed to. */
  misdirected: number;
  /** Benchmark messages received, owed or not. */
  deliveries: number;
  /** Messages that were not benchmark contents. */
  foreign: number;
  /** Clients the server closed or dropped, by reason; they are not checked. */
  unexpectedCloses: Record<string, number>;
  /** From request write to frame parse, over every delivery (0.1 ms buckets). */
  latencyUs: Latency | null;
  /** Milliseconds the load ran. */
  loadMs: number;
  /** Milliseconds from the end of the load to the last check. */
  drainMs: number;
  /** True when the drain ended because nothing arrived for `quietMs`. */
  stalled: boolean;
}

const BROADCAST = 1;
const TARGETED = 2;
const TICK_MS = 10;
const LOST_SAMPLE = 10;
const FAILURE_SAMPLE = 5;
/** Latency histogram: 0.1 ms buckets up to 10 s, the last one open. */
const BUCKET_US = 100;
const BUCKETS = 100_000;

/** One client, from its connection to its check. */
interface Member {
  /** Its number, in connection order. */
  id: number;
  client: WsClient | null;
  state: "connecting" | "live" | "leaving" | "gone";
  /** One bit per publish received. */
  received: Uint8Array;
  /** Every publish from this one on was written after its greeting arrived. */
  firstSeq: number;
  joinedAt: number;
  /** When it decided to leave; Infinity while it stays. */
  leftAt: number;
  /** Targeted sends addressed to it. */
  targeted: number[];
  /** Its index in the live list, while live. */
  liveIndex: number;
  /** While leaving: publishes owed and not received yet. */
  owed: number[];
  owedBroadcasts: number;
  owedTargeted: number;
}

/** Runs one soak spec; the process's exit code. */
export function main(args: string[] = Deno.args): Promise<number> {
  return generatorMain(args, {
    usage: "Usage: deno run --allow-net=127.0.0.1 bench/soak_load.ts '<SoakSpec JSON>' (started by bench/soak.ts)",
    create: (spec: SoakSpec) => new Soak(spec),
  });
}

/** One soak: the clients coming and going, the publishing, the checks. */
class Soak implements PublishSource {
  readonly #spec: SoakSpec;
  readonly #total: number;
  readonly #totals: { broadcast: number; targeted: number };
  /** Per publish: its kind, target, when it was written and answered, and the answer's status. */
  readonly #kind: Uint8Array;
  readonly #target: Int32Array;
  readonly #writtenAt: Float64Array;
  readonly #answeredAt: Float64Array;
  readonly #status: Uint16Array;
  readonly #members = new Map<number, Member>();
  /** Greeted and not leaving: the ones targeted sends and departures pick from. */
  readonly #live: Member[] = [];
  readonly #leaving = new Set<Member>();
  readonly #closing = new Set<Promise<void>>();
  readonly #failures = new Map<string, number>();
  readonly #connectFailureSample: string[] = [];
  readonly #unexpectedCloses: Record<string, number> = {};
  readonly #lostSample: LostDelivery[] = [];
  readonly #latency = new Uint32Array(BUCKETS);
  #maxLatencyUs = 0;
  #nextId = 0;
  #connecting = 0;
  #connectFailures = 0;
  #joined = 0;
  #left = 0;
  #minClients = Infinity;
  #maxClients = 0;
  #taken = 0;
  #takenBroadcasts = 0;
  #takenTargeted = 0;
  #dueBroadcasts = 0;
  #dueTargeted = 0;
  #answered = 0;
  #deliveries = 0;
  #foreign = 0;
  #duplicates = 0;
  #misdirected = 0;
  #checkedClients = 0;
  #checkedBroadcasts = 0;
  #checkedTargeted = 0;
  #lostBroadcast = 0;
  #lostTargeted = 0;
  #start = 0;
  #lastActivity = 0;
  /** False once the load is over: no more departures, no more replacements. */
  #churning = false;

  constructor(spec: SoakSpec) {
    this.#spec = spec;
    const seconds = spec.durationMs / 1000;
    this.#totals = {
      broadcast: Math.floor(spec.broadcastsPerSec * seconds),
      targeted: Math.floor(spec.targetedPerSec * seconds),
    };
    this.#total = this.#totals.broadcast + this.#totals.targeted;
    this.#kind = new Uint8Array(this.#total);
    this.#target = new Int32Array(this.#total).fill(-1);
    this.#writtenAt = new Float64Array(this.#total).fill(NaN);
    this.#answeredAt = new Float64Array(this.#total).fill(NaN);
    this.#status = new Uint16Array(this.#total);
  }

  /** Connects the first `clients`, `connectBatch` at a time; returns how many. */
  async connect(): Promise<number> {
    const { clients, connectBatch } = this.#spec;
    for (let first = 0; first < clients; first += connectBatch) {
      const count = Math.min(connectBatch, clients - first);
      const batch = await Promise.allSettled(Array.from({ length: count }, () => this.#join()));
      const failed = batch.filter((outcome) => outcome.status === "rejected");
      if (failed.length > 0) {
        throw new Error(
          `${failed.length} of ${count} connections failed after ${this.#live.length} succeeded: ${
            (failed[0] as PromiseRejectedResult).reason.message
          }`,
        );
      }
    }
    return this.#live.length;
  }

  /** Closes every client still open. */
  async close(): Promise<void> {
    this.#churning = false;
    await Promise.all([
      ...this.#closing,
      ...[...this.#members.values()].map((member) => member.client?.close()),
    ]);
  }

  /** Runs the load for `durationMs`, drains, checks; the clients stay connected. */
  async drive(connectMs: number): Promise<SoakResult> {
    const spec = this.#spec;
    const connections = await openPublishConnections(this, spec);
    const pump = () => {
      for (const connection of connections) connection.pump();
    };
    let loadMs = 0;
    let drainMs = 0;
    let stalled = false;
    try {
      this.#start = performance.now();
      this.#lastActivity = this.#start;
      this.#churning = true;
      let churnDebt = 0;
      let last = this.#start;
      let nextTick = this.#start + 1000;
      // The load: publishing on schedule, clients leaving and joining.
      while (true) {
        const now = performance.now();
        const elapsed = now - this.#start;
        if (elapsed >= spec.durationMs) break;
        this.#dueBroadcasts = Math.min(this.#totals.broadcast, Math.floor((elapsed * spec.broadcastsPerSec) / 1000));
        this.#dueTargeted = Math.min(this.#totals.targeted, Math.floor((elapsed * spec.targetedPerSec) / 1000));
        pump();
        churnDebt += ((now - last) * spec.churnPerSec) / 1000;
        last = now;
        for (; churnDebt >= 1 && this.#live.length > 0; churnDebt--) this.#leave(this.#pick());
        this.#topUp();
        this.#lingerCheck(now);
        this.#minClients = Math.min(this.#minClients, this.#live.length);
        this.#maxClients = Math.max(this.#maxClients, this.#live.length);
        if (now >= nextTick) {
          this.#tick("load", elapsed);
          nextTick += 1000;
        }
        await sleep(TICK_MS);
      }
      const loadEnd = performance.now();
      loadMs = loadEnd - this.#start;
      // The drain: the rest of the schedule goes out, every answer comes in,
      // the last leavers close and the last replacements connect.
      this.#churning = false;
      this.#dueBroadcasts = this.#totals.broadcast;
      this.#dueTargeted = this.#totals.targeted;
      pump();
      this.#lastActivity = performance.now();
      while (this.#answered < this.#total || this.#leaving.size > 0 || this.#connecting > 0) {
        const now = performance.now();
        this.#lingerCheck(now);
        if (now >= nextTick) {
          this.#tick("drain", now - this.#start);
          nextTick += 1000;
        }
        if (now - this.#lastActivity > spec.quietMs + spec.lingerMs) {
          stalled = true;
          break;
        }
        await sleep(TICK_MS);
      }
      await Promise.all(this.#closing);
      // The clients there to the end: owed every publish answered 200 since their greeting.
      const remaining = [...this.#live];
      for (const member of remaining) this.#owe(member, Infinity);
      this.#lastActivity = performance.now();
      while (remaining.some((member) => this.#stillOwed(member))) {
        const now = performance.now();
        if (now >= nextTick) {
          this.#tick("drain", now - this.#start);
          nextTick += 1000;
        }
        if (now - this.#lastActivity > spec.quietMs) {
          stalled = true;
          break;
        }
        await sleep(TICK_MS);
      }
      for (const member of remaining) this.#settle(member);
      drainMs = performance.now() - loadEnd;
    } finally {
      this.#churning = false;
      await Promise.all(connections.map((connection) => connection.close()));
    }
    return this.#result(connectMs, loadMs, drainMs, stalled);
  }

  take(): number | null {
    const broadcast = this.#takenBroadcasts < this.#dueBroadcasts;
    const targeted = this.#takenTargeted < this.#dueTargeted;
    if (!broadcast && !targeted) return null;
    // The kind further behind its own schedule goes first.
    const { broadcastsPerSec: rb, targetedPerSec: rt } = this.#spec;
    const kind = broadcast && (!targeted || this.#takenBroadcasts * rt <= this.#takenTargeted * rb)
      ? BROADCAST
      : TARGETED;
    if (kind === BROADCAST) this.#takenBroadcasts++;
    else this.#takenTargeted++;
    const seq = this.#taken++;
    this.#kind[seq] = kind;
    return seq;
  }

  request(seq: number): string {
    const now = performance.now();
    this.#writtenAt[seq] = now;
    this.#lastActivity = now;
    const content = encodeContent(seq, Math.round(now * 1000), { bytes: this.#spec.contentBytes });
    const host = `Host: ${this.#spec.hostname}:${this.#spec.publishPort}\r\n\r\n`;
    if (this.#kind[seq] === TARGETED && this.#live.length > 0) {
      const member = this.#pick();
      this.#target[seq] = member.id;
      member.targeted.push(seq);
      const { worker, connection } = member.client!.address;
      return `GET /?to_worker_id=${worker}&to_connection_id=${connection}&content=${content} HTTP/1.1\r\n${host}`;
    }
    // Nobody to target (every client gone): it goes to everyone instead.
    this.#kind[seq] = BROADCAST;
    return `GET /?content=${content} HTTP/1.1\r\n${host}`;
  }

  answer(seq: number, answer: HttpAnswer): void {
    const now = performance.now();
    this.#answered++;
    this.#answeredAt[seq] = now;
    this.#status[seq] = answer.status;
    this.#lastActivity = now;
    if (answer.status === 200) return;
    const key = `${answer.status} ${answer.body}`.slice(0, 160);
    this.#failures.set(key, (this.#failures.get(key) ?? 0) + 1);
  }

  /** Connects one client; it is live once greeted. */
  async #join(): Promise<void> {
    const spec = this.#spec;
    const member: Member = {
      id: this.#nextId++,
      client: null,
      state: "connecting",
      received: new Uint8Array(Math.ceil(this.#total / 8)),
      firstSeq: 0,
      joinedAt: 0,
      leftAt: Infinity,
      targeted: [],
      liveIndex: -1,
      owed: [],
      owedBroadcasts: 0,
      owedTargeted: 0,
    };
    this.#connecting++;
    try {
      member.client = await WsClient.connect({
        hostname: spec.hostname,
        port: spec.wsPort,
        readBufferBytes: spec.readBufferBytes,
        onMessage: (_, payload, at) => this.#delivered(member, payload, at),
      });
    } finally {
      this.#connecting--;
    }
    // Every publish taken from now on is written after the greeting arrived.
    member.firstSeq = this.#taken;
    member.joinedAt = performance.now();
    member.state = "live";
    member.liveIndex = this.#live.length;
    this.#live.push(member);
    this.#members.set(member.id, member);
    member.client.closed.then(() => this.#ended(member));
  }

  /** During the load, connects as many clients as the steady count lacks. */
  #topUp(): void {
    if (!this.#churning) return;
    for (let missing = this.#spec.clients - this.#live.length - this.#connecting; missing > 0; missing--) {
      this.#join().then(() => this.#joined++, (error: Error) => {
        this.#connectFailures++;
        if (this.#connectFailureSample.length < FAILURE_SAMPLE) this.#connectFailureSample.push(error.message);
      });
    }
  }

  /** A live client, at random. */
  #pick(): Member {
    return this.#live[Math.floor(Math.random() * this.#live.length)]!;
  }

  #removeLive(member: Member): void {
    const last = this.#live.pop()!;
    if (last !== member) {
      this.#live[member.liveIndex] = last;
      last.liveIndex = member.liveIndex;
    }
    member.liveIndex = -1;
  }

  /** The client decides to leave: no longer a target; it closes once it has what it is owed. */
  #leave(member: Member): void {
    const now = performance.now();
    this.#removeLive(member);
    member.state = "leaving";
    member.leftAt = now;
    this.#owe(member, now);
    this.#leaving.add(member);
    this.#left++;
  }

  /** Closes the leaving clients that have everything they are owed, or have waited `lingerMs`. */
  #lingerCheck(now: number): void {
    for (const member of this.#leaving) {
      if (this.#stillOwed(member) && now - member.leftAt < this.#spec.lingerMs) continue;
      this.#leaving.delete(member);
      const closing = member.client!.close().then(() => {
        this.#closing.delete(closing);
        this.#settle(member);
      });
      this.#closing.add(closing);
    }
  }

  /** Lists what `member` is owed: publishes since its greeting answered 200 before `before`. */
  #owe(member: Member, before: number): void {
    const owed: number[] = [];
    let broadcasts = 0;
    for (let seq = member.firstSeq; seq < this.#taken; seq++) {
      if (this.#kind[seq] !== BROADCAST || this.#status[seq] !== 200 || !(this.#answeredAt[seq]! < before)) continue;
      broadcasts++;
      if (!has(member.received, seq)) owed.push(seq);
    }
    let targeted = 0;
    for (const seq of member.targeted) {
      if (this.#status[seq] !== 200 || !(this.#answeredAt[seq]! < before)) continue;
      targeted++;
      if (!has(member.received, seq)) owed.push(seq);
    }
    member.owed = owed;
    member.owedBroadcasts = broadcasts;
    member.owedTargeted = targeted;
  }

  /** Whether `member` still misses something it is owed. */
  #stillOwed(member: Member): boolean {
    const owed = member.owed;
    while (owed.length > 0 && has(member.received, owed[owed.length - 1]!)) owed.pop();
    for (const seq of owed) if (!has(member.received, seq)) return true;
    return false;
  }

  /** Counts what `member` was owed and what it missed; it is done with. */
  #settle(member: Member): void {
    if (member.state === "gone") return;
    member.state = "gone";
    this.#members.delete(member.id);
    if (member.client?.unexpectedClose) return;
    this.#checkedClients++;
    this.#checkedBroadcasts += member.owedBroadcasts;
    this.#checkedTargeted += member.owedTargeted;
    for (const seq of member.owed) {
      if (has(member.received, seq)) continue;
      const broadcast = this.#kind[seq] === BROADCAST;
      if (broadcast) this.#lostBroadcast++;
      else this.#lostTargeted++;
      if (this.#lostSample.length < LOST_SAMPLE) {
        const at = (time: number) => round(time - this.#start);
        this.#lostSample.push({
          client: member.id,
          worker: member.client!.address.worker,
          connection: member.client!.address.connection,
          seq,
          kind: broadcast ? "broadcast" : "targeted",
          joinedMs: at(member.joinedAt),
          sentMs: at(this.#writtenAt[seq]!),
          answeredMs: at(this.#answeredAt[seq]!),
          leftMs: Number.isFinite(member.leftAt) ? at(member.leftAt) : null,
        });
      }
    }
    // What it received is no longer needed.
    member.received = new Uint8Array(0);
    member.owed = [];
  }

  /** The connection ended: the server closed it, unless the client was closing it. */
  #ended(member: Member): void {
    const reason = member.client!.unexpectedClose;
    if (reason === null) return;
    this.#unexpectedCloses[reason] = (this.#unexpectedCloses[reason] ?? 0) + 1;
    if (member.state === "live") this.#removeLive(member);
    this.#leaving.delete(member);
    this.#settle(member);
  }

  #delivered(member: Member, payload: Uint8Array, at: number): void {
    const seq = readSeq(payload);
    if (!(seq < this.#total)) {
      this.#foreign++;
      return;
    }
    this.#deliveries++;
    this.#lastActivity = at;
    const latencyUs = at * 1000 - readSendTime(payload);
    this.#latency[Math.min(BUCKETS - 1, Math.max(0, Math.floor(latencyUs / BUCKET_US)))]!++;
    if (latencyUs > this.#maxLatencyUs) this.#maxLatencyUs = latencyUs;
    if (this.#kind[seq] === TARGETED && this.#target[seq] !== member.id) {
      this.#misdirected++;
      return;
    }
    if (member.received.length === 0) return;
    const byte = seq >> 3;
    const bit = 1 << (seq & 7);
    if ((member.received[byte]! & bit) !== 0) this.#duplicates++;
    else member.received[byte]! |= bit;
  }

  #tick(phase: "load" | "drain", elapsedMs: number): void {
    const tick: SoakTick = {
      type: "tick",
      elapsedMs: round(elapsedMs),
      phase,
      clients: this.#live.length,
      leaving: this.#leaving.size + this.#closing.size,
      connecting: this.#connecting,
      answered: this.#answered,
      deliveries: this.#deliveries,
      lost: this.#lostBroadcast + this.#lostTargeted,
    };
    emit(tick);
  }

  #result(connectMs: number, loadMs: number, drainMs: number, stalled: boolean): SoakResult {
    const counts = (kind: number, scheduled: number): PublishCounts => {
      let sent = 0;
      let ok = 0;
      for (let seq = 0; seq < this.#taken; seq++) {
        if (this.#kind[seq] !== kind) continue;
        sent++;
        if (this.#status[seq] === 200) ok++;
      }
      // A targeted send with nobody to target went out as a broadcast: it counts there.
      return { scheduled, sent, ok, failed: Math.max(0, scheduled - ok) };
    };
    const broadcasts = counts(BROADCAST, this.#totals.broadcast);
    const targeted = counts(TARGETED, this.#totals.targeted);
    const failedPublishes = this.#total - broadcasts.ok - targeted.ok;
    const unsent = this.#total - this.#taken;
    if (unsent > 0) this.#failures.set("not sent", unsent);
    return {
      type: "result",
      clients: this.#live.length,
      connectMs: round(connectMs),
      joined: this.#joined,
      left: this.#left,
      minClients: Number.isFinite(this.#minClients) ? this.#minClients : this.#live.length,
      maxClients: this.#maxClients,
      connectFailures: this.#connectFailures,
      connectFailureSample: this.#connectFailureSample,
      broadcasts,
      targeted,
      failedPublishes,
      failures: Object.fromEntries(this.#failures),
      checkedClients: this.#checkedClients,
      checkedBroadcastDeliveries: this.#checkedBroadcasts,
      checkedTargetedDeliveries: this.#checkedTargeted,
      lost: this.#lostBroadcast + this.#lostTargeted,
      lostBroadcast: this.#lostBroadcast,
      lostTargeted: this.#lostTargeted,
      lostSample: this.#lostSample,
      duplicates: this.#duplicates,
      misdirected: this.#misdirected,
      deliveries: this.#deliveries,
      foreign: this.#foreign,
      unexpectedCloses: this.#unexpectedCloses,
      latencyUs: this.#percentiles(),
      loadMs: round(loadMs),
      drainMs: round(drainMs),
      stalled,
    };
  }

  /** p50 and p99 as their bucket's upper edge, and the exact maximum. */
  #percentiles(): Latency | null {
    if (this.#deliveries === 0) return null;
    const rank = (p: number) => {
      const wanted = Math.max(1, Math.ceil(p * this.#deliveries));
      let seen = 0;
      for (let i = 0; i < BUCKETS; i++) {
        seen += this.#latency[i]!;
        if (seen >= wanted) return Math.min((i + 1) * BUCKET_US, this.#maxLatencyUs);
      }
      return this.#maxLatencyUs;
    };
    return { p50: round(rank(0.5)), p99: round(rank(0.99)), max: round(this.#maxLatencyUs) };
  }
}

function has(bits: Uint8Array, seq: number): boolean {
  return (bits[seq >> 3]! & (1 << (seq & 7))) !== 0;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}

if (import.meta.main) Deno.exit(await main());
