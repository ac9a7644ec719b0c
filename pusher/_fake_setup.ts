/**
 * A pusher on a fake transport and an in-memory bus, for the tests of the
 * pusher's own behaviour: no sockets, no hub.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Pusher, type PusherOptions } from "./pusher.ts";
import { type FakeSocket, FakeTransport } from "./fake_transport.ts";
import { createLogger } from "../shared/log.ts";
import type { Json } from "../shared/json.ts";
import type { HistoryOptions, HistoryResult } from "../shared/bus.ts";
import { MemoryBroker, type MemoryBrokerOptions, type MemoryBus } from "../shared/memory_bus.ts";
import { newWorkerId } from "../shared/address.ts";
import { gatedBus } from "../shared/testing.ts";

/** A pusher under test, and what a test plays with around it. */
export interface Setup extends AsyncDisposable {
  pusher: Pusher;
  transport: FakeTransport;
  broker: MemoryBroker;
  /** A publisher's link to the bus the pusher listens on. */
  bus: MemoryBus;
  /** The pusher's own link: its `subjects` are what the pusher subscribes to. */
  pusherBus: MemoryBus;
  logs: string[];
  /** The message-rate clock, in milliseconds: tests move it. */
  clock: { now: number };
  /** Connects through the pusher's handler; fails the test if refused. */
  connect(path?: string, headers?: Record<string, string>): Promise<FakeSocket>;
  /** Sends a handshake that the test expects refused; returns the status and body. */
  refused(path?: string, headers?: Record<string, string>): Promise<[number, string]>;
  /** Publishes on the bus and lets the pusher's handler run. */
  publish(subject: string, data: Json): Promise<void>;
  get(path: string, method?: string): Promise<Response>;
}

/** A pusher with `options`, its transport and bus (a broker with `brokerOptions`), and a publisher's link to the bus. */
export function setUp(options: Partial<PusherOptions> = {}, brokerOptions: MemoryBrokerOptions = {}): Setup {
  const transport = new FakeTransport();
  const broker = new MemoryBroker(brokerOptions);
  const bus = broker.connect();
  const logs: string[] = [];
  const clock = { now: 0 };
  const pusherBus = broker.connect();
  const pusher = new Pusher({
    workerId: newWorkerId(),
    bus: pusherBus,
    transport,
    logger: createLogger("pusher", { level: "debug", sink: (line) => logs.push(line) }),
    now: () => clock.now,
    ...options,
  });
  return {
    pusher,
    transport,
    broker,
    bus,
    pusherBus,
    logs,
    clock,
    async connect(path, headers) {
      const result = await transport.connect(pusher.handler, path, headers);
      if (result instanceof Response) throw new Error(`Refused: ${result.status} ${await result.text()}`);
      return result;
    },
    async refused(path, headers) {
      const result = await transport.connect(pusher.handler, path, headers);
      if (!(result instanceof Response)) throw new Error("Accepted a handshake that should be refused");
      return [result.status, await result.text()];
    },
    async publish(subject, data) {
      await bus.publish(subject, data);
      // The bus hands messages over in a microtask; a macrotask runs after all of them.
      await new Promise((resolve) => setTimeout(resolve, 0));
    },
    get: async (path, method = "GET") => await pusher.handler(new Request(`http://pusher.test${path}`, { method })),
    async [Symbol.asyncDispose]() {
      pusher.closeAll();
      pusher.detach();
      await bus.close();
    },
  };
}

/** The original's greeting. */
export const GREETING = /^workerID:([0-9a-f]{16}) connectionID:(\d+) connected\n$/;

/** The worker and connection ids of a socket's greeting. */
export function addressOf(socket: FakeSocket): { worker: string; connection: number } {
  const match = GREETING.exec(socket.sent[0] ?? "");
  assert.ok(match, `a greeting first, got ${JSON.stringify(socket.sent[0])}`);
  return { worker: match[1]!, connection: Number(match[2]) };
}

/** What {@linkcode gatedPusher} makes. */
export interface GatedPusher {
  broker: MemoryBroker;
  gated: ReturnType<typeof gatedBus>;
  transport: FakeTransport;
  pusher: Pusher;
}

/**
 * A pusher whose bus confirms its subscriptions and answers its history reads
 * only when `gated.release()` says, as a hub does a moment later; quiet
 * logs. `broker` gives the test links of its own.
 */
export function gatedPusher(
  options: Partial<PusherOptions> = {},
  brokerOptions: MemoryBrokerOptions = {},
): GatedPusher {
  const broker = new MemoryBroker(brokerOptions);
  const gated = gatedBus(broker.connect());
  const transport = new FakeTransport();
  const pusher = new Pusher({
    workerId: newWorkerId(),
    bus: gated.bus,
    transport,
    logger: createLogger("pusher", { level: "error", sink: () => {} }),
    ...options,
  });
  return { broker, gated, transport, pusher };
}

/** What {@linkcode gateHistory} gives a test. */
export interface HistoryGate {
  /** The options of every history read the pusher made, in order. */
  calls: HistoryOptions[];
  /** Lets the oldest waiting read go to the bus (its answer is read then), and lets its caller run. */
  release(): Promise<void>;
}

/** Makes the pusher's history reads wait until the test lets each go. */
export function gateHistory(setup: Setup): HistoryGate {
  const real = setup.pusherBus.history.bind(setup.pusherBus);
  const waiting: (() => void)[] = [];
  const calls: HistoryOptions[] = [];
  setup.pusherBus.history = (subject: string, options: HistoryOptions = {}): Promise<HistoryResult> => {
    calls.push(options);
    return new Promise((resolve) => waiting.push(() => resolve(real(subject, options))));
  };
  return {
    calls,
    async release() {
      waiting.shift()?.();
      await new Promise((resolve) => setTimeout(resolve, 0));
    },
  };
}
