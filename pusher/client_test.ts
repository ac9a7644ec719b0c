import assert from "node:assert/strict";
import fc from "fast-check";
import { applyAppStep } from "./_client_testing.ts";
import { type Address, PushClient, type PushClientEvents, type PushClientOptions, PushError } from "./client.js";
import { within } from "../channel/testing.ts";
import { signJwt } from "../shared/jwt.ts";

// The browser client library against a fake WebSocket and fake timers: no
// sockets, no clock. What it does against a real pusher in a real browser is
// in tests/browser_test.ts.

/** A WebSocket the test plays the server of. */
class FakeWebSocket {
  /** Every socket made, in order. */
  static made: FakeWebSocket[] = [];
  readonly url: string;
  /** Every text the client sent, parsed. */
  readonly sent: Record<string, unknown>[] = [];
  readyState = 0;
  closedWith: { code?: number; reason?: string } | null = null;
  onopen: ((event: Event) => void) | null = null;
  onmessage: ((event: MessageEvent) => void) | null = null;
  onclose: ((event: CloseEvent) => void) | null = null;
  onerror: ((event: Event) => void) | null = null;

  constructor(url: string) {
    this.url = url;
    FakeWebSocket.made.push(this);
  }

  send(text: string): void {
    if (this.readyState !== 1) throw new Error(`Cannot send: readyState ${this.readyState}`);
    this.sent.push(JSON.parse(text));
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  /** The server greets: the handshake is done and the greeting arrives. */
  greet(workerId = "00000000000000aa", connectionId = 1): void {
    this.readyState = 1;
    this.onopen?.(new Event("open"));
    this.receive(`workerID:${workerId} connectionID:${connectionId} connected\n`);
  }

  receive(data: string | object): void {
    const text = typeof data === "string" ? data : JSON.stringify(data);
    this.onmessage?.(new MessageEvent("message", { data: text }));
  }

  /** The server (or the network) closes it. */
  drop(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.(new CloseEvent("close", { code, reason }));
  }
}

/** Timers the test fires by hand, and the clock they run on: it moves only when the test moves it. */
class FakeTimers {
  readonly pending = new Map<number, { fn: () => void; ms: number; due: number }>();
  /** The clock, in milliseconds: a timer that fires moves it to when the timer was due. */
  time = 0;
  #next = 1;

  setTimeout = (fn: () => void, ms: number): number => {
    const id = this.#next++;
    this.pending.set(id, { fn, ms, due: this.time + ms });
    return id;
  };

  clearTimeout = (id: unknown): void => {
    this.pending.delete(id as number);
  };

  now = (): number => this.time;

  /** The delays waiting now, in the order they were set. */
  get delays(): number[] {
    return [...this.pending.values()].map((timer) => timer.ms);
  }

  /** Fires the one timer set for `ms`; fails if there is not exactly one. */
  fire(ms: number): void {
    const matching = [...this.pending].filter(([, timer]) => timer.ms === ms);
    assert.equal(matching.length, 1, `one timer of ${ms} ms, have ${JSON.stringify(this.delays)}`);
    const [id, timer] = matching[0]!;
    this.pending.delete(id);
    this.time = Math.max(this.time, timer.due);
    timer.fn();
  }
}

const CONNECT_TIMEOUT = 10_000;

interface Setup {
  client: PushClient;
  timers: FakeTimers;
  /** The latest socket the client made. */
  socket(): FakeWebSocket;
}

function setUp(options: PushClientOptions = {}): Setup {
  FakeWebSocket.made = [];
  const timers = new FakeTimers();
  const client = new PushClient("ws://pusher.test:4236", {
    WebSocket: FakeWebSocket as unknown as typeof WebSocket,
    timers,
    // Always the ceiling, so the delays are known.
    random: () => 0.999999,
    ...options,
  });
  return {
    client,
    timers,
    socket() {
      const socket = FakeWebSocket.made.at(-1);
      assert.ok(socket, "the client made a socket");
      return socket;
    },
  };
}

/** The next `type` event's detail, within a deadline. */
function next<K extends keyof PushClientEvents>(client: PushClient, type: K): Promise<PushClientEvents[K]> {
  return within(
    new Promise((resolve) => {
      const off = client.on(type, (detail) => {
        off();
        resolve(detail);
      });
    }),
    1000,
    `the client's ${type} event`,
  );
}

/** Collects every `type` event's detail. */
function record<K extends keyof PushClientEvents>(client: PushClient, type: K): PushClientEvents[K][] {
  const seen: PushClientEvents[K][] = [];
  client.on(type, (detail) => seen.push(detail));
  return seen;
}

/** A connected client with a greeted socket. */
function connected(options: PushClientOptions = {}): Setup {
  const setup = setUp(options);
  setup.client.connect();
  setup.socket().greet();
  return setup;
}

Deno.test("client parses the greeting into its address and is connected", async () => {
  const { client, socket, timers } = setUp();
  const states = record(client, "state");
  client.connect();
  assert.equal(client.state, "connecting");
  assert.equal(socket().url, "ws://pusher.test:4236/");
  assert.deepEqual(timers.delays, [CONNECT_TIMEOUT]);
  const greeting = next(client, "connected");
  socket().greet("0123456789abcdef", 42);
  const expected: Address = { workerId: "0123456789abcdef", connectionId: 42 };
  assert.deepEqual(await greeting, { ...expected, greeting: "workerID:0123456789abcdef connectionID:42 connected\n" });
  assert.deepEqual(client.address, expected);
  assert.deepEqual(await client.ready(), expected);
  assert.equal(client.state, "connected");
  assert.deepEqual(states.map((s) => s.state), ["connecting", "connected"]);
  assert.deepEqual(timers.delays, [25_000], "the greeting timer is cleared, and the silence watch set");
  client.disconnect();
  assert.equal(client.state, "disconnected");
  assert.deepEqual(socket().closedWith, { code: 1000, reason: "disconnect called" });
});

Deno.test("client sends its token in the URL, and asks a token function again on every attempt", async () => {
  const plain = setUp({ token: "a b&c" });
  plain.client.connect();
  assert.equal(new URL(plain.socket().url).searchParams.get("token"), "a b&c");
  plain.client.disconnect();

  let calls = 0;
  const fresh = setUp({ token: () => Promise.resolve(`t${++calls}`) });
  fresh.client.connect();
  // The token function resolves in microtasks: one macrotask later the socket exists.
  await within(new Promise((resolve) => setTimeout(resolve, 0)), 1000, "the token");
  assert.equal(new URL(fresh.socket().url).searchParams.get("token"), "t1");
  const dropped = next(fresh.client, "disconnected");
  fresh.socket().drop();
  fresh.timers.fire((await dropped).delay!);
  await within(new Promise((resolve) => setTimeout(resolve, 0)), 1000, "the token");
  assert.equal(new URL(fresh.socket().url).searchParams.get("token"), "t2");
  fresh.client.disconnect();
});

Deno.test("client refuses a URL that is not a WebSocket one, and takes http as ws", () => {
  assert.throws(() => new PushClient("ftp://x"), { name: "TypeError", message: /^Invalid pusher URL: expected ws:/ });
  const { client, socket } = setUp();
  assert.ok(client);
  const https = new PushClient("https://pusher.test/", { WebSocket: FakeWebSocket as unknown as typeof WebSocket });
  https.connect();
  assert.equal(socket().url, "wss://pusher.test/");
  https.disconnect();
});

Deno.test("client takes a first message that is not a greeting as an error and tries again", async () => {
  const { client, socket, timers } = setUp();
  client.connect();
  const error = next(client, "error");
  const disconnected = next(client, "disconnected");
  socket().receive("hello");
  assert.match((await error).error.message, /^Unexpected first message: expected the greeting, got hello/);
  assert.deepEqual(await disconnected, { code: 4000, reason: "no greeting", reconnecting: true, delay: 249 });
  assert.equal(client.state, "connecting");
  assert.deepEqual(timers.delays, [249]);
  client.disconnect();
  assert.deepEqual(timers.delays, [], "disconnect cancels the retry");
});

Deno.test("client tries again when no greeting comes within connectTimeout", async () => {
  const { client, socket, timers } = setUp({ connectTimeout: 500 });
  client.connect();
  const first = socket();
  const disconnected = next(client, "disconnected");
  timers.fire(500);
  assert.equal((await disconnected).reason, "no greeting");
  assert.equal(first.closedWith?.code, 4000);
  client.disconnect();
});

Deno.test("client passes plain text to message, greeting excluded", async () => {
  const { client, socket } = connected();
  const messages = record(client, "message");
  socket().receive("hello browser");
  socket().receive('{"not":"protocol"}');
  socket().receive("[1,2]");
  socket().receive('{"channel":7,"data":1}');
  assert.deepEqual(messages.map((m) => m.data), [
    "hello browser",
    '{"not":"protocol"}',
    "[1,2]",
    '{"channel":7,"data":1}',
  ]);
  client.disconnect();
  await Promise.resolve();
});

Deno.test("client subscribe sends the command and resolves on its reply", async () => {
  const { client, socket } = connected();
  const news = client.subscribe("news");
  assert.equal(news.state, "subscribing");
  assert.deepEqual(socket().sent, [{ id: 1, subscribe: { channel: "news" } }]);
  socket().receive({ id: 1, result: {} });
  await within(news.ready(), 1000, "the subscription");
  assert.equal(news.state, "subscribed");
  assert.equal(client.subscription("news"), news);

  news.unsubscribe();
  assert.equal(news.state, "unsubscribed");
  assert.deepEqual(socket().sent.at(-1), { id: 2, unsubscribe: { channel: "news" } });
  assert.equal(client.subscription("news"), null);
  await assert.rejects(news.ready(), /^Error: Cannot wait for channel news: it is unsubscribed$/);
  client.disconnect();
});

Deno.test("client subscription history sends the command and resolves with the result, or rejects with the error", async () => {
  const { client, socket } = connected();
  const news = client.subscribe("news");
  socket().receive({ id: 1, result: { recovered: false, offset: 3, epoch: "e" } });
  await within(news.ready(), 1000, "the subscription");

  const last = news.history({ limit: 2, reverse: true });
  assert.deepEqual(socket().sent.at(-1), { id: 2, history: { channel: "news", limit: 2, reverse: true } });
  const result = {
    publications: [{ data: "c", offset: 3 }, { data: "b", offset: 2 }],
    offset: 3,
    epoch: "e",
    recovered: true,
  };
  socket().receive({ id: 2, result });
  assert.deepEqual(await within(last, 1000, "the history"), result);

  const forward = news.history({ since: { offset: 1, epoch: "e" } });
  assert.deepEqual(socket().sent.at(-1), { id: 3, history: { channel: "news", since: { offset: 1, epoch: "e" } } });
  socket().receive({ id: 3, error: { code: 404, message: "History is not kept for channel news" } });
  const error = await within(forward.catch((e) => e), 1000, "the refusal");
  assert.ok(error instanceof PushError);
  assert.deepEqual([error.code, error.message], [404, "History is not kept for channel news"]);
  assert.equal(news.state, "subscribed", "a refused history leaves the subscription as it was");

  // A history in flight when the connection ends is rejected, not left waiting.
  const lost = news.history();
  socket().drop();
  await assert.rejects(within(lost, 1000, "the lost history"));
  client.disconnect();
});

Deno.test("client subscription presence and presenceStats send their commands and resolve with the result, or reject", async () => {
  const { client, socket } = connected();
  const room = client.subscribe("room.1");
  socket().receive({ id: 1, result: {} });
  await within(room.ready(), 1000, "the subscription");

  const who = room.presence();
  assert.deepEqual(socket().sent.at(-1), { id: 2, presence: { channel: "room.1" } });
  const result = { num_clients: 3, num_users: 2, users: ["alice", "bob"] };
  socket().receive({ id: 2, result });
  assert.deepEqual(await within(who, 1000, "the presence"), result);

  const stats = room.presenceStats();
  assert.deepEqual(socket().sent.at(-1), { id: 3, presence_stats: { channel: "room.1" } });
  socket().receive({ id: 3, error: { code: 403, message: "Presence is not open on channel room.1" } });
  const error = await within(stats.catch((e) => e), 1000, "the refusal");
  assert.ok(error instanceof PushError);
  assert.deepEqual([error.code, error.message], [403, "Presence is not open on channel room.1"]);
  assert.equal(room.state, "subscribed", "a refused presence leaves the subscription as it was");
  client.disconnect();
});

Deno.test("client subscribe rejects on an error reply, and the subscription is over", async () => {
  const { client, socket } = connected();
  const errors = record(client, "error");
  const secret = client.subscribe("secret");
  const ready = secret.ready();
  socket().receive({ id: 1, error: { code: 403, message: "not allowed to subscribe to secret" } });
  const error = await within(ready.catch((e) => e), 1000, "the refusal");
  assert.ok(error instanceof PushError);
  assert.equal(error.code, 403);
  assert.equal(error.message, "not allowed to subscribe to secret");
  assert.equal(secret.state, "unsubscribed");
  assert.equal(client.subscription("secret"), null);
  assert.equal(errors.length, 1);
  assert.equal(errors[0]!.channel, "secret");
  // Refused: not tried again after a reconnect.
  socket().drop();
  assert.equal(client.state, "connecting");
  client.disconnect();
  assert.throws(() => client.subscribe(""), TypeError);
});

Deno.test("client routes publications to their channel's subscription, passes over a channel it is not in, and refuses a second subscribe", () => {
  const { client, socket } = connected();
  const news: unknown[] = [];
  const sport: unknown[] = [];
  const all: unknown[] = [];
  client.subscribe("news", ({ data }) => news.push(data));
  client.subscribe("sport").on("publication", ({ data }) => sport.push(data));
  client.on("publication", ({ channel, data }) => all.push([channel, data]));
  assert.throws(() => client.subscribe("news"), /^Error: Cannot subscribe: already subscribed to channel news$/);
  socket().receive({ id: 1, result: {} });
  socket().receive({ id: 2, result: {} });
  socket().receive({ channel: "news", data: "one" });
  socket().receive({ channel: "sport", data: { score: 2 } });
  // Not in it (what the pusher sent before it took an unsubscribe): not for the app.
  socket().receive({ channel: "other", data: null });
  socket().receive({ channel: "other", join: { user: "bob" } });
  socket().receive({ channel: "news", data: [1] });
  assert.deepEqual(news, ["one", [1]]);
  assert.deepEqual(sport, [{ score: 2 }]);
  assert.deepEqual(all, [["news", "one"], ["sport", { score: 2 }], ["news", [1]]]);
  client.disconnect();
});

Deno.test("client reports an error the server pushed on its own", async () => {
  const { client, socket } = connected();
  const error = next(client, "error");
  socket().receive({ error: { code: 400, message: "malformed message" } });
  const { error: pushed } = await error;
  assert.ok(pushed instanceof PushError);
  assert.deepEqual([pushed.code, pushed.message], [400, "malformed message"]);
  client.disconnect();
});

Deno.test("client reconnects with capped exponential backoff, full jitter, and resets it after a connection that stayed up", async () => {
  const { client, socket, timers } = setUp({ minReconnectDelay: 100, maxReconnectDelay: 1000 });
  const drops = record(client, "disconnected");
  client.connect();
  for (let i = 0; i < 6; i++) {
    socket().drop(1006);
    const delay = drops.at(-1)!.delay!;
    timers.fire(delay);
    assert.equal(FakeWebSocket.made.length, i + 2);
  }
  assert.deepEqual(drops.map((d) => d.delay), [99, 199, 399, 799, 999, 999]);
  assert.ok(drops.every((d) => d.reconnecting && d.code === 1006));
  socket().greet();
  timers.time += 5000;
  socket().drop(1001, "going away");
  assert.deepEqual(drops.at(-1), { code: 1001, reason: "going away", reconnecting: true, delay: 99 });
  client.disconnect();

  // Full jitter: anywhere from 0 up to the ceiling.
  const low = setUp({ random: () => 0 });
  const lowDrop = next(low.client, "disconnected");
  low.client.connect();
  low.socket().drop();
  assert.equal((await lowDrop).delay, 0);
  low.client.disconnect();
});

Deno.test("client pings a pusher it has not heard from, and reconnects when nothing answers", () => {
  const { client, socket, timers } = connected({ pingInterval: 1000, pingTimeout: 300, minReconnectDelay: 100 });
  client.subscribe("news");
  const first = socket();
  first.receive({ id: 1, result: {} });
  const drops = record(client, "disconnected");
  const errors = record(client, "error");
  // Heard from within the interval: no ping, another look an interval later.
  timers.fire(1000);
  assert.deepEqual(first.sent.map((command) => Object.keys(command)[1]), ["subscribe"]);
  // A whole interval of silence: a ping.
  timers.fire(1000);
  const ping = first.sent.at(-1)!;
  assert.deepEqual(ping, { id: ping.id, ping: {} });
  assert.deepEqual(timers.delays, [300]);
  // Nothing within the timeout: the connection is dropped, and made again.
  timers.fire(300);
  assert.match(String(errors[0]?.error.message), /^No answer to a ping within 300 ms$/);
  assert.deepEqual(drops, [{ code: 4000, reason: "no answer to ping", reconnecting: true, delay: 99 }]);
  assert.deepEqual(first.closedWith, { code: 4000, reason: "no answer to ping" });
  assert.equal(client.state, "connecting");
  timers.fire(99);
  assert.equal(FakeWebSocket.made.length, 2);
  socket().greet();
  assert.deepEqual(socket().sent.map((command) => command.subscribe), [{ channel: "news" }], "subscribed again");
  // A late message on the old socket counts for nothing.
  first.receive({ id: ping.id, result: {} });
  assert.equal(client.state, "connected");
  client.disconnect();
  assert.deepEqual(timers.delays, [], "no timer left");
});

Deno.test("client keeps a connection whose pusher answers its ping, and sends no pings with pingInterval 0", () => {
  const { client, socket, timers } = connected({ pingInterval: 1000, pingTimeout: 300 });
  const drops = record(client, "disconnected");
  for (let round = 0; round < 3; round++) {
    timers.fire(1000);
    const ping = socket().sent.at(-1)!;
    assert.deepEqual(ping, { id: round + 1, ping: {} });
    socket().receive({ id: ping.id, result: {} });
    timers.fire(300);
    assert.deepEqual(timers.delays, [1000], "watching again");
  }
  // A pusher too old to know ping answers 400: still an answer from a live connection.
  timers.fire(1000);
  socket().receive({ id: 4, error: { code: 400, message: "Malformed message: expected one command" } });
  timers.fire(300);
  assert.deepEqual(drops, []);
  assert.equal(client.state, "connected");
  client.disconnect();

  const quiet = connected({ pingInterval: 0 });
  assert.deepEqual(quiet.timers.delays, []);
  quiet.client.disconnect();
  assert.throws(
    () => setUp({ pingTimeout: 0 }),
    /^RangeError: Invalid ping settings: need 0 <= pingInterval <= 2147483647 and 0 < pingTimeout <= 2147483647, got 25000 and 0$/,
  );
  assert.throws(() => setUp({ pingInterval: -1 }), RangeError);
  assert.throws(() => setUp({ pingInterval: 2 ** 31 }), RangeError, "a browser would fire it at once");
});

Deno.test("client reconnects at once when the browser says the network is back, not while connected or stopped", () => {
  const network = new EventTarget();
  const { client, socket, timers } = connected({ minReconnectDelay: 5000, pingInterval: 0, network });
  const drops = record(client, "disconnected");
  // Connected, with pings off: nothing to do.
  network.dispatchEvent(new Event("online"));
  assert.equal(FakeWebSocket.made.length, 1);
  assert.deepEqual(socket().sent, []);
  socket().drop(1006);
  assert.deepEqual(timers.delays, [drops[0]!.delay], "waiting out its backoff");
  network.dispatchEvent(new Event("online"));
  assert.equal(FakeWebSocket.made.length, 2, "a new socket at once");
  assert.deepEqual(timers.delays, [CONNECT_TIMEOUT], "the backoff's timer is gone, the greeting's set");
  socket().drop(1006);
  client.disconnect();
  network.dispatchEvent(new Event("online"));
  assert.equal(FakeWebSocket.made.length, 2, "stopped: the event is not listened to any more");
  assert.deepEqual(timers.delays, []);
});

Deno.test("client pings at once when the browser says the network is back, as its connection may have gone with it", () => {
  const network = new EventTarget();
  const { client, socket, timers } = connected({ pingInterval: 1000, pingTimeout: 300, network });
  const drops = record(client, "disconnected");
  network.dispatchEvent(new Event("online"));
  assert.deepEqual(socket().sent, [{ id: 1, ping: {} }], "no interval waited");
  assert.deepEqual(timers.delays, [300]);
  socket().receive({ id: 1, result: {} });
  timers.fire(300);
  assert.deepEqual(timers.delays, [1000], "answered: watching for silence again");
  network.dispatchEvent(new Event("online"));
  timers.fire(300);
  assert.deepEqual(drops.map((drop) => drop.reason), ["no answer to ping"]);
  client.disconnect();
});

Deno.test("client does not reconnect after a close code that says not to come back", () => {
  const { client, socket, timers } = connected();
  const drops = record(client, "disconnected");
  socket().drop(4500, "banned");
  assert.deepEqual(drops, [{ code: 4500, reason: "banned", reconnecting: false, delay: null }]);
  assert.equal(client.state, "disconnected");
  assert.deepEqual(timers.delays, []);
  client.connect();
  assert.equal(client.state, "connecting");
  client.disconnect();
});

Deno.test("client backs off further after a connection that closed right after its greeting", () => {
  const { client, socket, timers } = setUp({ minReconnectDelay: 100, maxReconnectDelay: 10_000 });
  const drops = record(client, "disconnected");
  client.connect();
  for (let i = 0; i < 4; i++) {
    socket().greet();
    // As a pusher does to a client over its --max-message-rate.
    socket().drop(1008, "message rate exceeded");
    timers.fire(drops.at(-1)!.delay!);
  }
  assert.deepEqual(drops.map((d) => d.delay), [99, 199, 399, 799]);
  client.disconnect();
});

Deno.test("client sends at most maxMessageRate commands a second, its resubscribes after a greeting too", () => {
  const { client, socket, timers } = setUp({ pingInterval: 0 });
  const channels = Array.from({ length: 60 }, (_, i) => `ch${i}`);
  for (const channel of channels) client.subscribe(channel);
  client.connect();
  socket().greet();
  // 25 a second by default, with a burst of 25: half the pusher's default --max-message-rate.
  assert.equal(socket().sent.length, 25);
  const sentAt: number[] = Array(25).fill(0);
  while (timers.pending.size > 0) {
    timers.fire(timers.delays[0]!);
    while (sentAt.length < socket().sent.length) sentAt.push(timers.time);
  }
  assert.deepEqual(socket().sent.map((command) => (command.subscribe as { channel: string }).channel), channels);
  // Never more than the burst plus the rate within any second: a pusher allowing 50 a second takes all of it.
  for (const [i, at] of sentAt.entries()) {
    const inSecond = sentAt.filter((other) => other >= at && other < at + 1000).length;
    assert.ok(inSecond <= 25 + 25, `${inSecond} sent in the second after command ${i}`);
  }
  assert.ok(sentAt.at(-1)! >= 1400 && sentAt.at(-1)! <= 1440, `the 60th went at ${sentAt.at(-1)} ms`);
  client.disconnect();

  // A lower rate; a subscribe that still waits its turn is taken back without a word to the pusher.
  const slow = connected({ pingInterval: 0, maxMessageRate: 2 });
  const subscriptions = ["a", "b", "c"].map((channel) => slow.client.subscribe(channel));
  assert.deepEqual(slow.socket().sent.map((command) => command.subscribe), [{ channel: "a" }, { channel: "b" }]);
  subscriptions[2]!.unsubscribe();
  slow.timers.fire(500);
  assert.equal(slow.socket().sent.length, 2);
  assert.deepEqual(slow.timers.delays, []);
  slow.client.disconnect();
  assert.throws(() => setUp({ maxMessageRate: 0 }), /^RangeError: Invalid maxMessageRate/);
});

Deno.test("client subscribes again to its channels after a reconnect, each once", async () => {
  const { client, socket, timers } = connected();
  const news = client.subscribe("news");
  const sport = client.subscribe("sport");
  socket().receive({ id: 1, result: {} });
  // sport's reply is lost with the connection.
  await within(news.ready(), 1000, "news subscribed");
  const drop = next(client, "disconnected");
  socket().drop();
  assert.equal(news.state, "subscribing");
  assert.equal(sport.state, "subscribing");
  const later = client.subscribe("later");
  const back = next(client, "connected");
  timers.fire((await drop).delay!);
  socket().greet("00000000000000bb", 9);
  await back;
  assert.deepEqual(client.address, { workerId: "00000000000000bb", connectionId: 9 });
  const sent = socket().sent.map((command) => (command.subscribe as { channel: string }).channel).sort();
  assert.deepEqual(sent, ["later", "news", "sport"]);
  for (const command of socket().sent) socket().receive({ id: command.id as number, result: {} });
  await within(Promise.all([news.ready(), sport.ready(), later.ready()]), 1000, "all three subscribed");
  client.disconnect();
});

Deno.test("client tracks what the server subscribed it to, and forgets it with the connection", async () => {
  const { client, socket, timers } = connected();
  const subscribed = next(client, "subscribed");
  socket().receive({ subscribed: { channel: "backend" } });
  const { subscription: backend } = await subscribed;
  assert.equal(backend.channel, "backend");
  assert.equal(backend.state, "subscribed");
  assert.equal(backend.serverSide, true);
  assert.deepEqual(socket().sent, [], "nothing to ask: the server has it");
  const seen: unknown[] = [];
  backend.on("publication", ({ data }) => seen.push(data));
  socket().receive({ channel: "backend", data: "from the backend" });
  assert.deepEqual(seen, ["from the backend"]);

  socket().receive({ subscribed: { channel: "gone" } });
  const unsubscribed = next(client, "unsubscribed");
  socket().receive({ unsubscribed: { channel: "gone" } });
  assert.equal((await unsubscribed).channel, "gone");
  assert.equal(client.subscription("gone"), null);

  // Taken over by the client: it becomes its own, made again after reconnects.
  socket().receive({ subscribed: { channel: "adopted" } });
  assert.equal(client.subscribe("adopted").serverSide, false);

  const forgotten = record(client, "unsubscribed");
  const drop = next(client, "disconnected");
  socket().drop();
  assert.deepEqual(forgotten.map((f) => f.channel), ["backend"]);
  assert.equal(backend.state, "unsubscribed");
  timers.fire((await drop).delay!);
  socket().greet();
  assert.deepEqual(socket().sent, [{ id: 1, subscribe: { channel: "adopted" } }]);
  assert.deepEqual([...client.subscriptions.keys()], ["adopted"]);
  client.disconnect();
});

Deno.test("client queues commands while connecting, within a bound, and sends them on the greeting", () => {
  const { client, socket } = setUp({ maxQueuedCommands: 3 });
  client.connect();
  client.subscribe("a");
  const b = client.subscribe("b");
  client.subscribe("c");
  assert.throws(() => client.subscribe("d"), {
    name: "RangeError",
    message: "Cannot queue a command: 3 commands already wait for the connection",
  });
  assert.equal(client.subscription("d"), null);
  // Unsubscribing before it was sent takes it out of the queue: nothing to tell the server.
  b.unsubscribe();
  client.subscribe("d");
  socket().greet();
  assert.deepEqual(socket().sent, [
    { id: 1, subscribe: { channel: "a" } },
    { id: 3, subscribe: { channel: "c" } },
    { id: 4, subscribe: { channel: "d" } },
  ]);
  // Connected: no queue, no bound.
  for (const channel of ["e", "f", "g", "h"]) client.subscribe(channel);
  assert.equal(socket().sent.length, 7);
  client.disconnect();
});

Deno.test("client's subscriptions wait through disconnect() and go out on the next connect; its reads are rejected", async () => {
  const { client, socket } = setUp();
  const early = client.subscribe("early");
  assert.equal(FakeWebSocket.made.length, 0);
  client.connect();
  const history = early.history();
  const ready = early.ready();
  client.disconnect();
  await assert.rejects(history, /^ConnectionLost: Connection lost before the reply$/);
  await assert.rejects(ready, /^Error: Cannot wait for a connection: the client stopped \(1000 disconnect called\)$/);
  client.connect();
  socket().greet();
  assert.deepEqual(socket().sent.map(({ id: _, ...body }) => body), [{ subscribe: { channel: "early" } }]);
  client.disconnect();
});

Deno.test("client stays stopped when the app calls disconnect() from a listener while a connection ends", async (t) => {
  /** Connects, lets `stopFrom` hook a listener that calls disconnect(), ends the connection with `end`. */
  const stoppedDuring = (
    stopFrom: (client: PushClient) => void,
    end: (setup: Setup) => void,
    options: PushClientOptions = {},
  ) => {
    const setup = setUp({ pingInterval: 1000, pingTimeout: 300, ...options });
    const drops = record(setup.client, "disconnected");
    stopFrom(setup.client);
    end(setup);
    // Whatever is left to fire (a backoff, a ping) must not bring it back.
    for (const delay of setup.timers.delays) setup.timers.fire(delay);
    assert.equal(setup.client.state, "disconnected");
    assert.equal(FakeWebSocket.made.length, 1, "no new socket");
    assert.deepEqual(setup.timers.delays, [], "no timer left");
    return drops.map(({ code, reconnecting }) => [code, reconnecting]);
  };
  const onDisconnected = (client: PushClient) =>
    client.on("disconnected", ({ reconnecting }) => reconnecting && client.disconnect());
  const onError = (client: PushClient) => client.on("error", () => client.disconnect());
  await t.step("from `disconnected`, after a drop", () => {
    const drops = stoppedDuring(onDisconnected, ({ client, socket }) => {
      client.connect();
      socket().greet();
      socket().drop(1006);
    });
    assert.deepEqual(drops, [[1006, true], [1000, false]]);
  });
  await t.step("from `error`, on a ping that got no answer", () => {
    const drops = stoppedDuring(onError, ({ client, socket, timers }) => {
      client.connect();
      socket().greet();
      timers.fire(1000);
      timers.fire(300);
    });
    assert.deepEqual(drops, [[1000, false]]);
  });
  await t.step("from `error`, on no greeting in time", () => {
    const drops = stoppedDuring(onError, ({ client, timers }) => {
      client.connect();
      timers.fire(CONNECT_TIMEOUT);
    });
    assert.deepEqual(drops, [[1000, false]]);
  });
  await t.step("from `error`, on a first message that is not the greeting", () => {
    const drops = stoppedDuring(onError, ({ client, socket }) => {
      client.connect();
      socket().readyState = 1;
      socket().receive("hello");
    });
    assert.deepEqual(drops, [[1000, false]]);
  });
  await t.step("from `state`, as it becomes connected", () => {
    const connects = [] as unknown[];
    const drops = stoppedDuring((client) => {
      client.on("connected", (detail) => connects.push(detail));
      const off = client.on("state", ({ state }) => {
        if (state !== "connected") return;
        off();
        client.disconnect();
      });
    }, ({ client, socket }) => {
      client.subscribe("news");
      client.connect();
      socket().greet();
    });
    assert.deepEqual(drops, [[1000, false]]);
    assert.deepEqual(connects, [], "no connected event after the app stopped it");
    assert.deepEqual(FakeWebSocket.made[0]!.sent, [], "nothing sent on the connection it stopped");
  });
});

Deno.test("client sends on the next connection what listeners asked for while a connection ended", () => {
  const { client, socket, timers } = connected({ pingInterval: 0 });
  socket().receive({ subscribed: { channel: "room.1" } });
  const news = client.subscribe("news");
  socket().receive({ id: 1, result: {} });
  const drops = record(client, "disconnected");
  // The backend's room ends with the connection: the app falls back to a lobby.
  client.on("unsubscribed", ({ channel }) => {
    if (channel === "room.1") client.subscribe("lobby");
  });
  let history: Promise<unknown> | null = null;
  news.on("state", ({ state }) => {
    if (state === "subscribing") history = news.history({ limit: 1 });
  });
  socket().drop(1006);
  timers.fire(drops[0]!.delay!);
  socket().greet("00000000000000bb", 2);
  assert.deepEqual(socket().sent.map(({ id: _, ...body }) => body), [
    { subscribe: { channel: "news" } },
    { subscribe: { channel: "lobby" } },
    { history: { channel: "news", limit: 1 } },
  ]);
  assert.equal(client.subscription("lobby")?.state, "subscribing");
  assert.ok(history, "the app asked for the history");
  client.disconnect();
  return assert.rejects(history, /ConnectionLost/);
});

Deno.test("client takes the backend's subscribe on a new connection to a channel the app left while the old one ended", () => {
  const { client, socket, timers } = connected({ pingInterval: 0 });
  const news = client.subscribe("news");
  socket().receive({ id: 1, result: {} });
  news.on("state", ({ state }) => state === "subscribing" && news.unsubscribe());
  const drops = record(client, "disconnected");
  socket().drop(1006);
  timers.fire(drops[0]!.delay!);
  socket().greet("00000000000000bb", 2);
  assert.deepEqual(socket().sent, [], "nothing to unsubscribe on a connection that never had it");
  const publications = record(client, "publication");
  socket().receive({ subscribed: { channel: "news" } });
  socket().receive({ channel: "news", data: "hi" });
  assert.equal(client.subscription("news")?.serverSide, true);
  assert.deepEqual(publications.map(({ data }) => data), ["hi"]);
  client.disconnect();
});

Deno.test("client bounds the reads that wait for a connection as it bounds subscribes", async () => {
  const { client, socket } = setUp({ maxQueuedCommands: 3 });
  const room = client.subscribe("room");
  client.connect();
  const reads = [room.presenceStats(), room.presence()];
  await assert.rejects(room.history(), {
    name: "RangeError",
    message: "Cannot queue a command: 3 commands already wait for the connection",
  });
  assert.throws(() => client.subscribe("more"), RangeError);
  socket().greet();
  assert.equal(socket().sent.length, 3);
  for (const [id, result] of [[2, { num_clients: 1 }], [3, { num_clients: 1, users: [] }]] as const) {
    socket().receive({ id, result });
  }
  assert.deepEqual((await Promise.all(reads)).map((result) => result.num_clients), [1, 1]);
  client.disconnect();
});

Deno.test("subscription ready() after a refusal rejects with the refusal, whenever it is called", async () => {
  const { client, socket } = connected({ pingInterval: 0 });
  const secret = client.subscribe("secret");
  client.on("error", () => {});
  socket().receive({ id: 1, error: { code: 403, message: "permission denied" } });
  await assert.rejects(secret.ready(), (error) => error instanceof PushError && error.code === 403);
  secret.unsubscribe();
  client.disconnect();
});

Deno.test("client ready() rejects once the client stops, and leaves no listener behind", async () => {
  const { client, socket } = setUp({ pingInterval: 0 });
  let listeners = 0;
  const add = client.addEventListener.bind(client);
  const remove = client.removeEventListener.bind(client);
  client.addEventListener = (...args: Parameters<typeof add>) => (listeners++, add(...args));
  client.removeEventListener = (...args: Parameters<typeof remove>) => (listeners--, remove(...args));
  client.connect();
  for (let i = 0; i < 100; i++) {
    const controller = new AbortController();
    const ready = client.ready({ signal: controller.signal });
    controller.abort(new Error("gave up"));
    await assert.rejects(ready, /gave up/);
  }
  assert.equal(listeners, 0, "an aborted ready() takes its listeners with it");
  const news = client.subscribe("news");
  const ready = client.ready();
  const subscribed = news.ready();
  socket().greet();
  await ready;
  const again = client.ready();
  const subscribedAgain = news.ready();
  socket().drop(3504, "connection limit");
  assert.equal(client.state, "disconnected");
  await assert.rejects(subscribed, /the client stopped \(3504 connection limit\)/);
  await assert.rejects(subscribedAgain, /the client stopped \(3504 connection limit\)/);
  await again;
  client.connect();
  const third = client.ready();
  socket().drop(3504, "connection limit");
  await assert.rejects(third, /^Error: Cannot wait for a connection: the client stopped \(3504 connection limit\)$/);
  assert.equal(listeners, 0);
});

Deno.test("client stopped: ready(), a subscription's ready() and its reads reject at once, and wait again after connect()", async () => {
  const { client, socket } = setUp({ pingInterval: 0 });
  const news = client.subscribe("news");
  const notStarted = /^Error: Cannot wait for a connection: the client is not connected, call connect\(\)$/;
  await assert.rejects(within(client.ready(), 1000, "client.ready() before connect()"), notStarted);
  await assert.rejects(within(news.ready(), 1000, "news.ready() before connect()"), notStarted);
  client.connect();
  socket().greet();
  socket().receive({ id: 1, result: {} });
  await news.ready();
  client.disconnect();
  assert.deepEqual([client.state, news.state], ["disconnected", "subscribing"]);
  const stopped = /^Error: Cannot wait for a connection: the client stopped \(1000 disconnect called\)$/;
  for (
    const [what, promise] of [
      ["client.ready()", client.ready()],
      ["news.ready()", news.ready()],
      ["news.history()", news.history()],
      ["news.presence()", news.presence()],
      ["news.presenceStats()", news.presenceStats()],
    ] as const
  ) {
    await assert.rejects(within(promise as Promise<unknown>, 1000, `${what} after disconnect()`), stopped, what);
  }
  // Started again, they wait for the connection as before.
  client.connect();
  const ready = client.ready();
  const subscribed = news.ready();
  const history = news.history({ limit: 1 });
  socket().greet();
  assert.deepEqual(socket().sent, [
    { id: 3, subscribe: { channel: "news" } },
    { id: 2, history: { channel: "news", limit: 1 } },
  ]);
  socket().receive({ id: 3, result: {} });
  socket().receive({ id: 2, result: { publications: [], offset: 0, epoch: "e", recovered: true } });
  await Promise.all([ready, subscribed, history]);
  client.disconnect();
});

Deno.test("client refuses settings a timer cannot wait, and a token function that gives no token", async () => {
  assert.throws(() => setUp({ maxReconnectDelay: 30 * 86_400_000 }), /^RangeError: Invalid reconnect delays/);
  for (const connectTimeout of [0, -1, NaN, 2 ** 31]) {
    assert.throws(() => setUp({ connectTimeout }), /^RangeError: Invalid connectTimeout/, String(connectTimeout));
  }
  assert.throws(() => setUp({ token: 42 as unknown as string }), /^TypeError: Invalid token/);
  const { client, timers } = setUp({ token: () => undefined as unknown as string, pingInterval: 0 });
  const errors = record(client, "error");
  const drops = record(client, "disconnected");
  client.connect();
  await within(
    new Promise<void>((resolve) => client.on("disconnected", () => resolve())),
    1000,
    "the failed attempt",
  );
  assert.equal(FakeWebSocket.made.length, 0, "no attempt with ?token=undefined");
  assert.deepEqual(errors.map(({ error }) => error.message), [
    "Cannot get a token: the token function gave undefined, not a token",
  ]);
  assert.deepEqual(drops.map(({ code, reason, reconnecting }) => [code, reason, reconnecting]), [[
    4000,
    "no token",
    true,
  ]]);
  assert.deepEqual(timers.delays, [drops[0]!.delay]);
  client.disconnect();
});

Deno.test("client ignores a late close of a socket it already replaced", () => {
  const { client, socket, timers } = connected();
  const old = socket();
  const drops = record(client, "disconnected");
  old.drop();
  timers.fire(drops[0]!.delay!);
  socket().greet();
  old.drop();
  assert.equal(drops.length, 1);
  assert.equal(client.state, "connected");
  client.disconnect();
});

Deno.test("client ready() and subscription ready() give up when their signal aborts", async () => {
  const { client } = setUp();
  client.connect();
  const controller = new AbortController();
  const ready = client.ready({ signal: controller.signal });
  const sub = client.subscribe("news").ready({ signal: controller.signal });
  controller.abort(new Error("gave up"));
  await assert.rejects(ready, /gave up/);
  await assert.rejects(sub, /gave up/);
  client.disconnect();
});

/** The data of every publication the client passed on. */
function dataOf(publications: PushClientEvents["publication"][]): unknown[] {
  return publications.map((p) => p.data);
}

/** Drops the socket, fires the retry and greets the new one. */
async function reconnect(setup: Setup): Promise<void> {
  const drop = next(setup.client, "disconnected");
  setup.socket().drop();
  setup.timers.fire((await drop).delay!);
  setup.socket().greet();
}

Deno.test("client keeps the last position of a history channel and subscribes again from it after a reconnect", async () => {
  const setup = connected();
  const { client, socket } = setup;
  const news = client.subscribe("news");
  assert.equal(news.recovered, null);
  assert.equal(news.position, null);
  const first = next(client, "subscribed");
  socket().receive({ id: 1, result: { recovered: false, offset: 4, epoch: "e1" } });
  const told = await first;
  assert.deepEqual([told.channel, told.subscription, told.recovered, told.position], [
    "news",
    news,
    false,
    { offset: 4, epoch: "e1" },
  ]);
  assert.equal(news.recovered, false);
  assert.deepEqual(news.position, { offset: 4, epoch: "e1" });
  const publications = record(client, "publication");
  socket().receive({ channel: "news", data: "five", offset: 5, epoch: "e1" });
  socket().receive({ channel: "news", data: "six", offset: 6, epoch: "e1" });
  assert.deepEqual(publications, [
    { channel: "news", data: "five", offset: 5, epoch: "e1" },
    { channel: "news", data: "six", offset: 6, epoch: "e1" },
  ]);
  assert.deepEqual(news.position, { offset: 6, epoch: "e1" });

  await reconnect(setup);
  assert.deepEqual(socket().sent, [{ id: 2, subscribe: { channel: "news", since: { offset: 6, epoch: "e1" } } }]);
  const onSubscription: unknown[] = [];
  news.on("subscribed", (detail) => onSubscription.push(detail));
  // Recovered: 7 and 8 are replayed after the reply, then 8 again live (dropped) and 9.
  socket().receive({ id: 2, result: { recovered: true, offset: 8, epoch: "e1" } });
  assert.deepEqual(onSubscription, [{ channel: "news", recovered: true, position: { offset: 8, epoch: "e1" } }]);
  assert.equal(news.recovered, true);
  assert.deepEqual(news.position, { offset: 6, epoch: "e1" }, "the replay moves it on");
  for (const [offset, data] of [[7, "seven"], [8, "eight"], [8, "eight"], [6, "six"], [9, "nine"]] as const) {
    socket().receive({ channel: "news", data, offset, epoch: "e1" });
  }
  assert.deepEqual(dataOf(publications), ["five", "six", "seven", "eight", "nine"]);
  assert.deepEqual(news.position, { offset: 9, epoch: "e1" });
  client.disconnect();
});

Deno.test("client starts over from the reply's position when the pusher did not recover, and tells the app", async () => {
  const setup = connected();
  const { client, socket } = setup;
  const news = client.subscribe("news");
  socket().receive({ id: 1, result: { recovered: false, offset: 10, epoch: "e1" } });
  socket().receive({ channel: "news", data: 11, offset: 11, epoch: "e1" });
  await reconnect(setup);
  assert.deepEqual(socket().sent[0], { id: 2, subscribe: { channel: "news", since: { offset: 11, epoch: "e1" } } });
  const told = next(client, "subscribed");
  // The hub restarted: a new epoch, three messages in it so far.
  socket().receive({ id: 2, result: { recovered: false, offset: 3, epoch: "e2" } });
  assert.deepEqual([(await told).recovered, (await told).position], [false, { offset: 3, epoch: "e2" }]);
  assert.equal(news.recovered, false);
  assert.deepEqual(news.position, { offset: 3, epoch: "e2" });
  const publications = record(client, "publication");
  socket().receive({ channel: "news", data: 3, offset: 3, epoch: "e2" });
  socket().receive({ channel: "news", data: 4, offset: 4, epoch: "e2" });
  assert.deepEqual(dataOf(publications), [4], "what the reply's position covers is not passed on again");
  client.disconnect();
});

Deno.test("client tells the app when a live publication comes from a new epoch", async () => {
  const { client, socket } = connected();
  const news = client.subscribe("news");
  socket().receive({ id: 1, result: { recovered: false, offset: 0, epoch: "e1" } });
  socket().receive({ channel: "news", data: 1, offset: 1, epoch: "e1" });
  const told = next(client, "subscribed");
  const publications = record(client, "publication");
  // The hub restarted under a pusher that stayed up.
  socket().receive({ channel: "news", data: "new", offset: 1, epoch: "e2" });
  const { recovered, position, subscription } = await told;
  assert.deepEqual([recovered, position, subscription], [false, { offset: 1, epoch: "e2" }, news]);
  assert.deepEqual(dataOf(publications), ["new"]);
  assert.equal(news.recovered, false);
  assert.deepEqual(news.position, { offset: 1, epoch: "e2" });
  client.disconnect();
});

Deno.test("client on a channel without history: no position, no since, publications as they come", async () => {
  const setup = connected();
  const { client, socket } = setup;
  const plain = client.subscribe("plain");
  const told: unknown[] = [];
  plain.on("subscribed", (detail) => told.push(detail));
  socket().receive({ id: 1, result: {} });
  assert.deepEqual(told, [{ channel: "plain", recovered: null, position: null }]);
  const publications = record(client, "publication");
  socket().receive({ channel: "plain", data: "a" });
  socket().receive({ channel: "plain", data: "a" });
  // A malformed position is no position: passed on, not remembered.
  socket().receive({ channel: "plain", data: "b", offset: 0, epoch: "e" });
  socket().receive({ channel: "plain", data: "c", offset: 1, epoch: 7 });
  assert.deepEqual(publications, [
    { channel: "plain", data: "a" },
    { channel: "plain", data: "a" },
    { channel: "plain", data: "b" },
    { channel: "plain", data: "c" },
  ]);
  assert.equal(plain.position, null);
  await reconnect(setup);
  assert.deepEqual(socket().sent, [{ id: 2, subscribe: { channel: "plain" } }]);
  // A pusher asked to recover a channel without history says so.
  socket().receive({ id: 2, result: { recovered: false } });
  assert.equal(plain.recovered, false);
  assert.equal(plain.position, null);
  client.disconnect();
});

Deno.test("client subscribing anew to a channel it left starts without a position", () => {
  const { client, socket } = connected();
  const news = client.subscribe("news");
  socket().receive({ id: 1, result: { recovered: false, offset: 2, epoch: "e1" } });
  news.unsubscribe();
  client.subscribe("news");
  assert.deepEqual(socket().sent.at(-1), { id: 3, subscribe: { channel: "news" } });
  client.disconnect();
});

Deno.test("client recovers from offset 0 too: everything published to a channel it joined before its first message", async () => {
  const setup = connected();
  const news = setup.client.subscribe("news");
  setup.socket().receive({ id: 1, result: { recovered: false, offset: 0, epoch: "e1" } });
  assert.deepEqual(news.position, { offset: 0, epoch: "e1" });
  await reconnect(setup);
  assert.deepEqual(setup.socket().sent, [{ id: 2, subscribe: { channel: "news", since: { offset: 0, epoch: "e1" } } }]);
  setup.client.disconnect();
});

/** A token of alice's that expires `seconds` from now (the client reads its `exp`; the pusher would check it). */
function expiringToken(seconds: number): string {
  return signJwt({ sub: "alice", exp: Math.floor(Date.now() / 1000) + seconds }, "client-test-secret");
}

/** Lets a token function's promise settle: one macrotask. */
function tokenSettles(): Promise<void> {
  return within(new Promise((resolve) => setTimeout(resolve, 0)), 1000, "the token");
}

Deno.test("client renews a function's token before it expires, on the same connection, and tries again after a refusal", async () => {
  const tokens: string[] = [];
  const { client, socket, timers } = setUp({
    token: () => Promise.resolve(tokens[tokens.push(expiringToken(1000 + tokens.length)) - 1]!),
    pingInterval: 0, // only the renewal's timers
  });
  const errors = record(client, "error");
  client.connect();
  await tokenSettles();
  socket().greet();
  // A fifth of the 1000 s left, at most a minute, less half of it at random (the test's random is 0.999999).
  assert.equal(timers.delays.length, 1);
  const [due] = timers.delays;
  assert.ok(due! > 1000_000 - 60_000 - 2000 && due! < 1000_000 - 30_000, `renewal due in ${due} ms`);
  timers.fire(due!);
  await tokenSettles();
  assert.deepEqual(socket().sent, [{ id: 1, refresh: { token: tokens[1] } }]);
  socket().receive({ id: 1, result: {} });
  assert.equal(timers.delays.length, 1, "the next renewal, for the new token");
  timers.fire(timers.delays[0]!);
  await tokenSettles();
  socket().receive({ id: 2, error: { code: 401, message: "Unauthorized: Token expired" } });
  assert.deepEqual(errors.map(({ error }) => String(error.message)), [
    "Cannot renew the token: Unauthorized: Token expired",
  ]);
  assert.deepEqual(timers.delays, [5000], "asked again in 5 s, while the token has time left");
  assert.equal(FakeWebSocket.made.length, 1, "never a new connection");
  assert.equal(tokens.length, 3);
  client.disconnect();
  assert.deepEqual(timers.delays, [], "disconnect() drops the renewal");
});

Deno.test("client does not send a renewal that expires no later than the connection's token, and asks again later", async () => {
  const same = expiringToken(1000);
  const { client, socket, timers } = setUp({ token: () => same, pingInterval: 0 });
  const errors = record(client, "error");
  client.connect();
  await tokenSettles();
  socket().greet();
  timers.fire(timers.delays[0]!);
  await tokenSettles();
  assert.deepEqual(socket().sent, [], "no refresh with the same token");
  assert.match(String(errors[0]?.error.message), /gave no token that expires later/);
  assert.deepEqual(timers.delays, [5000]);
  client.disconnect();
});

Deno.test("client waits for a long-lived token's renewal in steps a timer can take", async () => {
  const year = 365 * 24 * 3600;
  const { client, socket, timers } = setUp({ token: () => expiringToken(year), pingInterval: 0 });
  client.connect();
  await tokenSettles();
  socket().greet();
  const longest = 2 ** 31 - 1;
  assert.deepEqual(timers.delays, [longest], "a longer delay would fire at once in a browser");
  let waited = 0;
  while (timers.delays[0] === longest) {
    waited += longest;
    timers.fire(longest);
    assert.equal(timers.delays.length, 1);
  }
  waited += timers.delays[0]!;
  // A year less a minute's lead at most, half of it at least (the test's random is 0.999999).
  assert.ok(waited > year * 1000 - 62_000 && waited < year * 1000 - 30_000, `renewal due after ${waited} ms in all`);
  await tokenSettles();
  assert.deepEqual(socket().sent, [], "no renewal yet");
  client.disconnect();
});

/** A token of `seconds` from now, with `iat`: its lifetime is `exp - iat` whatever the clock that reads it. */
function issuedToken(seconds: number): string {
  const now = Math.floor(Date.now() / 1000);
  return signJwt({ sub: "alice", iat: now, exp: now + seconds }, "client-test-secret");
}

/** Runs `fn` with the browser's clock (`Date.now`) off by `skew` milliseconds. */
async function withClockOff(skew: number, fn: () => Promise<void>): Promise<void> {
  const real = Date.now;
  Date.now = () => real() + skew;
  try {
    await fn();
  } finally {
    Date.now = real;
  }
}

Deno.test("client times a token's renewal from its lifetime, not from the browser's clock", async () => {
  for (const skew of [2000_000, -2000_000]) {
    const token = issuedToken(1000);
    await withClockOff(skew, async () => {
      const { client, socket, timers } = setUp({ token: () => token, pingInterval: 0 });
      client.connect();
      await tokenSettles();
      socket().greet();
      // A fifth of the 1000 s less half of it at random, at most a minute: as with a clock that is right.
      const [due] = timers.delays;
      assert.ok(
        due! > 1000_000 - 60_000 - 2000 && due! < 1000_000 - 30_000,
        `clock off by ${skew}: renewal due in ${due} ms`,
      );
      client.disconnect();
    });
  }
});

Deno.test("client with a token without iat and a clock ahead of its exp asks again after the usual delay, not at once or never", async () => {
  // Handed out again and again, as from a cache: a renewal with it renews nothing.
  const cached = signJwt({ sub: "alice", exp: Math.floor(Date.now() / 1000) + 8 }, "client-test-secret");
  await withClockOff(20_000, async () => {
    const { client, socket, timers } = setUp({ token: () => cached, pingInterval: 0 });
    const errors = record(client, "error");
    client.connect();
    await tokenSettles();
    socket().greet();
    assert.deepEqual(timers.delays, [5000], "nothing left by the browser's clock: asks after 5 s, not at once");
    timers.fire(5000);
    await tokenSettles();
    assert.match(String(errors[0]?.error.message), /gave no token that expires later/);
    assert.deepEqual(timers.delays, [5000], "and again after 5 s, not never");
    client.disconnect();
  });
});

Deno.test("client with a fixed token that expired while it was away stops when the pusher closes its handshake with 4401", async () => {
  const { client, socket, timers } = setUp({ token: issuedToken(100), pingInterval: 0 });
  const errors = record(client, "error");
  const drops = record(client, "disconnected");
  client.connect();
  socket().greet();
  timers.time += 101_000;
  socket().drop(1001, "going away");
  timers.fire(drops.at(-1)!.delay!);
  // The pusher lets the handshake in to close it with 4401 before any greeting (a 401 a browser would see as 1006).
  assert.equal(FakeWebSocket.made.length, 2);
  socket().drop(4401, "token expired");
  assert.equal(client.state, "disconnected");
  assert.deepEqual(drops.at(-1), { code: 4401, reason: "token expired", reconnecting: false, delay: null });
  assert.match(String(errors.at(-1)?.error.message), /^The token expired: pass a function as token to renew it$/);
  await assert.rejects(client.ready(), /the client stopped \(4401 token expired\)/);
  assert.equal(FakeWebSocket.made.length, 2, "and it tries no more");
});

Deno.test("client with a fixed token stops at 4401 and says why; with a token function it reconnects", async () => {
  const fixed = connected({ token: expiringToken(1000), pingInterval: 0 });
  assert.deepEqual(fixed.timers.delays, [], "nothing to renew a fixed token with");
  const errors = record(fixed.client, "error");
  const drops = record(fixed.client, "disconnected");
  fixed.socket().drop(4401, "token expired");
  assert.deepEqual(drops, [{ code: 4401, reason: "token expired", reconnecting: false, delay: null }]);
  assert.match(String(errors[0]?.error.message), /The token expired: pass a function as token to renew it/);
  assert.equal(fixed.client.state, "disconnected");

  const renewing = setUp({ token: () => expiringToken(1000) });
  renewing.client.connect();
  await tokenSettles();
  renewing.socket().greet();
  const dropped = next(renewing.client, "disconnected");
  renewing.socket().drop(4401, "token expired");
  assert.equal((await dropped).reconnecting, true);
  renewing.client.disconnect();
});

Deno.test("client: after any interleaving of the app's subscribes and unsubscribes, the backend's, refusals and reconnects, its subscriptions are the server's", () => {
  type Step =
    | { app: "subscribe" | "unsubscribe"; channel: string }
    | { backend: "subscribe" | "unsubscribe"; channel: string }
    | { server: "answer" }
    | { network: "drop" | "reconnect" };
  const CHANNELS = ["a", "b", "locked"];
  /** What the token grants: "locked" only through the backend. */
  const allowed = (channel: string) => channel !== "locked";
  const channel = fc.constantFrom(...CHANNELS);
  const step: fc.Arbitrary<Step> = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.record({ app: fc.constantFrom("subscribe" as const, "unsubscribe" as const), channel }),
    },
    fc.record({ backend: fc.constantFrom("subscribe" as const, "unsubscribe" as const), channel }),
    { weight: 4, arbitrary: fc.constant({ server: "answer" as const }) },
    fc.record({ network: fc.constantFrom("drop" as const, "reconnect" as const) }),
  );
  fc.assert(
    fc.property(fc.array(step, { maxLength: 40 }), (steps) => {
      const { client, socket, timers } = setUp();
      client.on("error", () => {}); // refusals are expected here
      client.connect();
      let connection = 1;
      socket().greet("00000000000000aa", connection);
      // The pusher's side of the current connection: its members, and the commands it has not read yet. It
      // answers and tells in the order it applies them, as the real one does (client_pusher_test.ts checks the pair).
      let members = new Set<string>();
      let read = 0;
      const answerNext = (): boolean => {
        const ws = socket();
        if (ws.readyState !== 1 || read >= ws.sent.length) return false;
        const command = ws.sent[read++] as {
          id: number;
          subscribe?: { channel: string };
          unsubscribe?: { channel: string };
        };
        if (command.subscribe) {
          const name = command.subscribe.channel;
          if (members.has(name) || allowed(name)) {
            members.add(name);
            ws.receive({ id: command.id, result: {} });
          } else {
            ws.receive({ id: command.id, error: { code: 403, message: `Not allowed: ${name}` } });
          }
        } else if (command.unsubscribe) {
          members.delete(command.unsubscribe.channel);
          ws.receive({ id: command.id, result: {} });
        }
        return true;
      };
      const reconnect = () => {
        if (client.state !== "connecting" || timers.pending.size !== 1) return;
        timers.fire(timers.delays[0]!);
        socket().greet("00000000000000aa", ++connection);
        members = new Set();
        read = 0;
      };
      for (const s of steps) {
        if ("app" in s) {
          applyAppStep(client, s);
        } else if ("backend" in s) {
          if (socket().readyState !== 1) continue;
          if (s.backend === "subscribe" && !members.has(s.channel)) {
            members.add(s.channel);
            socket().receive({ subscribed: { channel: s.channel } });
          } else if (s.backend === "unsubscribe" && members.has(s.channel)) {
            members.delete(s.channel);
            socket().receive({ unsubscribed: { channel: s.channel } });
          }
        } else if ("server" in s) {
          answerNext();
        } else if (s.network === "drop") {
          if (socket().readyState === 1) socket().drop();
        } else {
          reconnect();
        }
      }
      // Quiet: connected, and every command answered.
      reconnect();
      while (answerNext());
      assert.equal(client.state, "connected");
      for (const name of CHANNELS) {
        const subscription = client.subscription(name);
        assert.equal(subscription?.state ?? "none", members.has(name) ? "subscribed" : "none", `channel ${name}`);
      }
      client.disconnect();
    }),
    { seed: 4236, numRuns: 2000 },
  );
});

Deno.test("client sends a ping at once though commands wait their turn under the rate, and bounds what waits", () => {
  const { client, socket, timers } = connected({ pingInterval: 1000, pingTimeout: 300, maxQueuedCommands: 200 });
  for (let i = 0; i < 200; i++) client.subscribe(`ch${i}`);
  assert.equal(socket().sent.length, 25, "the rest wait their turn");
  // The pusher answers nothing for an interval: a ping, ahead of the 175 subscribes still waiting.
  timers.fire(1000);
  const sent = socket().sent;
  assert.equal(sent.length, 26);
  assert.deepEqual(Object.keys(sent.at(-1)!), ["id", "ping"]);
  socket().receive({ id: sent.at(-1)!.id, result: {} });
  timers.fire(300);
  assert.equal(client.state, "connected", "answered in time: kept");
  // What waits to go out is bounded as what waits for a connection is: 175 wait, 25 more fit.
  for (let i = 0; i < 25; i++) client.subscribe(`more${i}`);
  assert.throws(
    () => client.subscribe("one-too-many"),
    /^RangeError: Cannot queue a command: \d+ commands already wait to go out under maxMessageRate$/,
  );
  client.disconnect();
});

Deno.test("client stopped by a close whose state listener connects again is not told it stopped", async () => {
  const { client, socket } = connected({ pingInterval: 0 });
  const drops = record(client, "disconnected");
  let ready: Promise<unknown> | null = null;
  client.on("state", ({ state }) => {
    if (state !== "disconnected" || ready) return;
    client.connect();
    ready = client.ready();
  });
  socket().drop(4500, "go away");
  assert.equal(client.state, "connecting");
  assert.deepEqual(drops, [], "no disconnected with reconnecting: false while it connects");
  socket().greet();
  assert.equal(((await within(ready!, 1000, "ready")) as { workerId: string }).workerId.length, 16);
  client.disconnect();
});

Deno.test("client renews a token handed out late (its iat long past) by its exp, not a lifetime counted from now", async () => {
  const now = Math.floor(Date.now() / 1000);
  const late = signJwt({ sub: "alice", iat: now - 3600, exp: now + 100 }, "client-test-secret");
  const { client, socket, timers } = setUp({ token: () => late, pingInterval: 0 });
  client.connect();
  await tokenSettles();
  socket().greet();
  const [due] = timers.delays;
  assert.ok(due! > 100_000 - 20_000 - 2000 && due! < 100_000, `renewal due in ${due} ms, within its 100 s left`);
  client.disconnect();
});

Deno.test("client on a presence channel with history: joins and leaves move the position on, and a replay does not repeat them", async () => {
  const setup = connected();
  const { client, socket } = setup;
  const room = client.subscribe("chat.p1");
  socket().receive({ id: 1, result: { recovered: false, offset: 1, epoch: "e1" } });
  const heard: string[] = [];
  room.on("join", ({ info }) => heard.push(`join ${(info as { user: string }).user}`));
  room.on("leave", ({ info }) => heard.push(`leave ${(info as { user: string }).user}`));
  room.on("publication", ({ data }) => heard.push(`data ${data}`));
  socket().receive({ channel: "chat.p1", data: "m", offset: 2, epoch: "e1" });
  socket().receive({ channel: "chat.p1", join: { user: "bob" }, offset: 3, epoch: "e1" });
  assert.deepEqual(room.position, { offset: 3, epoch: "e1" });

  await reconnect(setup);
  assert.deepEqual(socket().sent, [{ id: 2, subscribe: { channel: "chat.p1", since: { offset: 3, epoch: "e1" } } }]);
  socket().receive({ id: 2, result: { recovered: true, offset: 5, epoch: "e1" } });
  // The pusher replays from what it was given; bob's join again (as from a subscribe with an older position) is dropped.
  socket().receive({ channel: "chat.p1", join: { user: "bob" }, offset: 3, epoch: "e1" });
  socket().receive({ channel: "chat.p1", leave: { user: "bob" }, offset: 4, epoch: "e1" });
  socket().receive({ channel: "chat.p1", join: { user: "carol" }, offset: 5, epoch: "e1" });
  assert.deepEqual(heard, ["data m", "join bob", "leave bob", "join carol"]);
  assert.deepEqual(room.position, { offset: 5, epoch: "e1" });
  assert.equal(room.recovered, true);
  client.disconnect();
});
