/**
 * The browser client (`client.js`) against a real `Pusher`: a WebSocket
 * stand-in joins the two through the fake transport, each side's frames
 * arriving a microtask after they were sent, in order, and the pusher's bus
 * confirms its subscriptions only when the test says, as a hub does a moment
 * later. Random interleavings of what the app, the backend and the network
 * do then must leave the client's subscriptions as the pusher's memberships.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { applyAppStep } from "./_client_testing.ts";
import { PushClient } from "./client.js";
import type { Pusher } from "./pusher.ts";
import type { FakeSocket, FakeTransport } from "./fake_transport.ts";
import { addressOf, gatedPusher } from "./_fake_setup.ts";
import { channelSubject, commandRoute } from "../shared/address.ts";
import type { Bus } from "../shared/bus.ts";
import { signJwt } from "../shared/jwt.ts";
import { mulberry32 } from "../shared/testing.ts";

const SECRET = "client-pusher-secret";
const CHANNELS = ["a", "b", "locked"] as const;

/**
 * A WebSocket class whose sockets are the transport's, through `handler`;
 * `current()` is the server side of the last. Each direction keeps its
 * order, and each frame takes a microtask or a turn, as `random` says: the
 * backend's commands then reach the pusher before or after a client's.
 */
function linkedWebSocket(transport: FakeTransport, handler: Pusher["handler"], random: () => number) {
  let latest: FakeSocket | null = null;
  /** Every frame's delivery, to wait for them all. */
  let deliveries: Promise<void>[] = [];
  const delay = () => random() < 0.5 ? Promise.resolve() : new Promise<void>((resolve) => setTimeout(resolve, 0));
  class LinkedWebSocket {
    readyState = 0;
    onopen: ((event: Event) => void) | null = null;
    onmessage: ((event: MessageEvent) => void) | null = null;
    onclose: ((event: CloseEvent) => void) | null = null;
    onerror: ((event: Event) => void) | null = null;
    #server: FakeSocket | null = null;
    #toServer: Promise<void> = Promise.resolve();
    #toClient: Promise<void> = Promise.resolve();

    constructor(url: string) {
      const { pathname, search } = new URL(url);
      void transport.connect(handler, pathname + search).then((server) => {
        if (server instanceof Response) throw new Error(`refused: ${server.status}`);
        if (this.readyState === 3) return server.close(1000, "");
        this.#server = latest = server;
        const send = server.send.bind(server);
        const close = server.close.bind(server);
        const deliver = (text: string) => {
          this.#toClient = this.#toClient.then(delay).then(() => {
            if (this.readyState === 1) this.onmessage?.(new MessageEvent("message", { data: text }));
          });
          deliveries.push(this.#toClient);
        };
        server.send = (message) => {
          const before = server.sent.length;
          send(message);
          if (server.sent.length > before) deliver(server.sent.at(-1)!);
        };
        server.close = (code, reason) => {
          if (server.closed) return;
          close(code, reason);
          this.#toClient = this.#toClient.then(() => {
            if (this.readyState === 3) return;
            this.readyState = 3;
            this.onclose?.(new CloseEvent("close", { code, reason }));
          });
        };
        this.readyState = 1;
        this.onopen?.(new Event("open"));
        for (const text of server.sent) deliver(text);
      });
    }

    send(text: string): void {
      if (this.readyState !== 1) throw new Error(`Cannot send: readyState ${this.readyState}`);
      const server = this.#server!;
      this.#toServer = this.#toServer.then(delay).then(() => server.receive(text));
      deliveries.push(this.#toServer);
    }

    close(code = 1000, reason = ""): void {
      this.readyState = 3;
      this.#server?.close(code, reason);
    }
  }
  return {
    WebSocket: LinkedWebSocket,
    current: () => latest,
    /** Resolves once every frame sent so far, and every frame those caused, has arrived. */
    async delivered(): Promise<void> {
      while (deliveries.length > 0) {
        const now = deliveries;
        deliveries = [];
        await Promise.all(now);
        await settle();
      }
    },
  };
}

/** The client's reconnect delays are at most this; its greeting deadline is far longer, and never fired. */
const MAX_RECONNECT_DELAY = 1000;

/** Timers the test fires by hand: the client's reconnect delay. */
function manualTimers() {
  const pending = new Map<number, { fn: () => void; ms: number }>();
  let next = 1;
  return {
    setTimeout: (fn: () => void, ms: number) => (pending.set(next, { fn, ms }), next++),
    clearTimeout: (id: unknown) => void pending.delete(id as number),
    /** Fires the reconnect timers set now. */
    reconnect() {
      for (const [id, { fn, ms }] of [...pending]) {
        if (ms > MAX_RECONNECT_DELAY) continue;
        pending.delete(id);
        fn();
      }
    },
  };
}

/** Lets every frame in flight arrive, and what it causes. */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** A pusher on a gated bus, a connected `client.js` to it, a backend's link, and a bystander in "a" and "b". */
async function system(seed: number, history: string[] = []) {
  const { broker, gated, transport, pusher } = gatedPusher({ tokenSecret: SECRET }, { history: { subjects: history } });
  const backend = broker.connect();
  const link = linkedWebSocket(transport, pusher.handler, mulberry32(seed));
  const timers = manualTimers();
  const token = signJwt({ sub: "u", exp: Math.floor(Date.now() / 1000) + 60, channels: ["a", "b", "h"] }, SECRET);
  const client = new PushClient("ws://pusher.test/", {
    WebSocket: link.WebSocket as unknown as typeof WebSocket,
    timers,
    token,
    maxReconnectDelay: MAX_RECONNECT_DELAY,
    connectTimeout: 60_000,
  });
  client.on("error", () => {}); // refusals of "locked" are expected
  const requests: Promise<unknown>[] = [];
  // Another connection in "a" and "b" keeps their subjects in effect: the pusher then tells at once.
  const bystander = await transport.connect(pusher.handler, `/?token=${token}`);
  assert.ok(!(bystander instanceof Response));
  for (const [id, name] of [[1, "a"], [2, "b"]] as const) {
    bystander.receive(JSON.stringify({ id, subscribe: { channel: name } }));
  }
  client.connect();
  // Greeted once the bus confirms the user's subject.
  while (client.state !== "connected") {
    gated.release();
    await settle();
  }
  return {
    pusher,
    client,
    link,
    backend,
    /** Plays the steps every scenario shares; false for one it does not know. */
    async play(s: SharedStep | { [other: string]: unknown }): Promise<boolean> {
      if ("bus" in s) gated.release();
      else if ("wait" in s) await (s.wait === "microtask" ? Promise.resolve() : settle());
      else if (s.network === "drop") link.current()?.drop();
      else if (s.network === "reconnect") timers.reconnect();
      else return false;
      return true;
    },
    /** Not awaited until quiet: its reply may wait for the bus's confirmation. */
    command(route: { subject: string; data: Parameters<Bus["request"]>[1] }): void {
      const request = backend.request(route.subject, route.data).catch(() => {}).finally(() => {
        requests.splice(requests.indexOf(request), 1);
      });
      requests.push(request);
    },
    /** Every confirmation given, every frame arrived, connected, and no subscribe waiting for its reply. */
    async quiet(): Promise<void> {
      const settled = () =>
        requests.length === 0 && gated.waiting() === 0 && client.state === "connected" &&
        [...client.subscriptions.values()].every((s) => s.state !== "subscribing");
      // Each round lets one more of the waits pass: a greeting, a channel's subject, a history read.
      // Settled twice in a row: a round that released nothing started nothing either.
      for (let round = 0, calm = 0; round < 30 && calm < 2; round++) {
        gated.release();
        timers.reconnect();
        await link.delivered();
        await settle();
        calm = settled() ? calm + 1 : 0;
      }
      assert.ok(settled(), `settled: ${client.state}, ${requests.length} commands unanswered`);
    },
    async close(): Promise<void> {
      client.disconnect();
      pusher.closeAll();
      pusher.detach();
      await backend.close();
      await settle();
    },
  };
}

type SharedStep = { bus: "confirm" } | { wait: "microtask" | "turn" } | { network: "drop" | "reconnect" };
const sharedStep: fc.Arbitrary<SharedStep> = fc.oneof(
  fc.constant({ bus: "confirm" as const }),
  { weight: 2, arbitrary: fc.record({ wait: fc.constantFrom("microtask" as const, "turn" as const) }) },
  fc.record({ network: fc.constantFrom("drop" as const, "reconnect" as const) }),
);

type Step =
  | { app: "subscribe" | "unsubscribe"; channel: string }
  | { backend: "subscribe" | "unsubscribe"; channel: string; byUser: boolean }
  | SharedStep;

const channel = fc.constantFrom(...CHANNELS);
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ app: fc.constantFrom("subscribe" as const, "unsubscribe" as const), channel }) },
  {
    weight: 2,
    arbitrary: fc.record({
      backend: fc.constantFrom("subscribe" as const, "unsubscribe" as const),
      channel,
      // By the connection's address, or to every connection of its user (the bystander's too).
      byUser: fc.boolean(),
    }),
  },
  { weight: 4, arbitrary: sharedStep },
);

Deno.test("client and pusher: after any interleaving of the app's and the backend's subscribes and unsubscribes, late bus confirmations and reconnects, the client is subscribed where publications reach it", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(step, { maxLength: 30 }), fc.integer(), async (steps, seed) => {
      const { pusher, client, link, backend, play, command, quiet, close } = await system(seed);
      const publications: string[] = [];
      client.on("publication", ({ channel, data }) => publications.push(`${channel}:${data}`));
      try {
        for (const s of steps) {
          if ("app" in s) {
            applyAppStep(client, s);
          } else if ("backend" in s && s.byUser) {
            command(commandRoute({ kind: "user", user: "u" }, { cmd: s.backend, channel: s.channel }));
          } else if ("backend" in s) {
            const server = link.current();
            // A connection not greeted yet has no address the backend knows.
            if (server === null || server.closed || server.sent.length === 0) continue;
            command(commandRoute(
              { kind: "connection", workerId: pusher.workerId, connectionId: addressOf(server).connection },
              { cmd: s.backend, channel: s.channel },
            ));
          } else {
            await play(s);
          }
        }
        await quiet();
        publications.length = 0;
        for (const name of CHANNELS) await backend.publish(channelSubject(name), { channel: name, data: "probe" });
        await link.delivered();
        for (const name of CHANNELS) {
          const subscribed = client.subscription(name)?.state === "subscribed";
          const reached = publications.includes(`${name}:probe`);
          assert.equal(subscribed, reached, `channel ${name}: subscribed ${subscribed}, reached ${reached}`);
        }
      } finally {
        await close();
      }
    }),
    { seed: 4236, numRuns: 1000 },
  );
});

Deno.test("client and pusher: a history channel's publications reach the app once each, in order, across drops, reconnects and late history reads, and every gap is told as not recovered", async () => {
  type RecoveryStep = { publish: number } | SharedStep;
  const recoveryStep: fc.Arbitrary<RecoveryStep> = fc.oneof(
    { weight: 3, arbitrary: fc.record({ publish: fc.integer({ min: 1, max: 4 }) }) },
    { weight: 4, arbitrary: sharedStep },
  );
  await fc.assert(
    fc.asyncProperty(fc.array(recoveryStep, { maxLength: 30 }), fc.integer(), async (steps, seed) => {
      const { client, link, backend, play, quiet, close } = await system(seed, [channelSubject("h")]);
      /** What the app saw, in order: each publication's offset, and each time it was told it missed some. */
      const seen: (number | "not recovered")[] = [];
      const h = client.subscribe("h");
      h.on("publication", ({ offset }) => seen.push(offset!));
      h.on("subscribed", ({ recovered }) => recovered === false && seen.push("not recovered"));
      let published = 0;
      try {
        for (const s of steps) {
          if ("publish" in s) {
            for (let n = 0; n < s.publish; n++) {
              await backend.publish(channelSubject("h"), { channel: "h", data: ++published });
            }
          } else {
            await play(s);
          }
        }
        await quiet();
        await backend.publish(channelSubject("h"), { channel: "h", data: ++published });
        await link.delivered();
        const offsets = seen.filter((x): x is number => typeof x === "number");
        assert.deepEqual(offsets, [...new Set(offsets)].sort((a, b) => a - b), `once each, in order: ${seen}`);
        assert.equal(offsets.at(-1), published, `caught up: ${seen}`);
        // A gap only where the app was told.
        for (let i = 1; i < seen.length; i++) {
          const [before, now] = [seen[i - 1], seen[i]];
          if (typeof before === "number" && typeof now === "number") {
            assert.equal(now, before + 1, `a gap after ${before} that nobody told: ${seen}`);
          }
        }
      } finally {
        await close();
      }
    }),
    { seed: 17, numRuns: 200 },
  );
});
