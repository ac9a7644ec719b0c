import assert from "node:assert/strict";
import fc from "fast-check";
import { createPublishHandler, type PublishHandlerOptions } from "./handler.ts";
import type { RawRequest } from "../shared/http_server.ts";
import { PublisherMetrics } from "./metrics.ts";
import { until, within } from "../channel/testing.ts";
import { type Bus, BusError, type BusMessage, type BusPublishOptions } from "../shared/bus.ts";
import type { HistoryResult, PublishResult, RequestResult } from "../shared/bus.ts";
import type { Json } from "../shared/json.ts";
import { createLogger } from "../shared/log.ts";
import { MemoryBroker, type MemoryBus } from "../shared/memory_bus.ts";

const WORKER = "0123456789abcdef";
const BASE = "http://publisher.test";

/** What reached a pusher's link. */
interface Arrival {
  subject: string;
  data: Json;
}

/**
 * Connects `pushers` pusher-side links to `broker`, each subscribed to
 * `broadcast` and to its own worker's subject as a pusher worker is; the
 * first is worker {@linkcode WORKER}. Returns what reached the first.
 */
function connectPushers(broker: MemoryBroker, pushers: number): Arrival[] {
  const arrived: Arrival[] = [];
  for (let i = 0; i < pushers; i++) {
    const link = broker.connect();
    const record = (data: Json, message: BusMessage) => i === 0 && arrived.push({ subject: message.subject, data });
    link.subscribe("broadcast", record);
    link.subscribe(`worker.${i === 0 ? WORKER : String(i).padStart(16, "f")}`, record);
  }
  return arrived;
}

/**
 * A bus whose publishes `outcome` answers, recording each; its link state is
 * set by the test. For what a memory bus cannot do: a refusal, a timeout, a
 * count it does not know, an acknowledgement that waits.
 */
class FakeBus implements Bus {
  readonly address = "fake://";
  connected = true;
  reconnects = 0;
  readonly published: { subject: string; data: Json; options?: BusPublishOptions }[] = [];
  readonly #outcome: (subject: string, data: Json, options?: BusPublishOptions) => Promise<PublishResult>;

  constructor(outcome: (subject: string, data: Json, options?: BusPublishOptions) => Promise<PublishResult>) {
    this.#outcome = outcome;
  }

  subscribe(): Promise<void> {
    return Promise.resolve();
  }
  unsubscribe(): void {}

  publish(subject: string, data: Json, options?: BusPublishOptions): Promise<PublishResult> {
    this.published.push({ subject, data, options });
    return this.#outcome(subject, data, options);
  }

  request(): Promise<RequestResult> {
    return Promise.reject(new Error("Cannot request: not used by the publisher"));
  }

  history(): Promise<HistoryResult> {
    return Promise.reject(new Error("Cannot read history: not used by these tests"));
  }

  removeHistory(): Promise<void> {
    return Promise.reject(new Error("Cannot remove history: not used by these tests"));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** A fake bus whose every publish fails with `error`. */
function failing(error: Error): FakeBus {
  return new FakeBus(() => Promise.reject(error));
}

interface SetupOptions extends Partial<Omit<PublishHandlerOptions, "bus">> {
  /** Pusher links on the broker. @default {1} */
  pushers?: number;
  /** The broker's message limit. @default {the broker's} */
  maxMessageBytes?: number;
  /** The publisher's bus, made from its memory link. @default {the memory link itself} */
  bus?: (link: MemoryBus) => Bus;
}

/** A handler publishing on a memory broker with `pushers` pusher links, logging into `logs`. */
function setup(options: SetupOptions = {}) {
  const { pushers = 1, maxMessageBytes, bus: makeBus = (link) => link, ...handlerOptions } = options;
  const broker = new MemoryBroker({ maxMessageBytes });
  const arrived = connectPushers(broker, pushers);
  const bus = makeBus(broker.connect());
  const logs: string[] = [];
  const logger = createLogger("publisher", { level: "debug", sink: (line) => logs.push(line) });
  const handler = createPublishHandler({ bus, logger, ...handlerOptions });
  return { broker, bus, arrived, logs, handler };
}

function get(query: string, init: RequestInit = {}): Request {
  return new Request(`${BASE}/${query}`, init);
}

function post(query: string, body: BodyInit, headers: Record<string, string> = {}): Request {
  return new Request(`${BASE}/${query}`, { method: "POST", body, headers });
}

function urlencoded(query: string, body: BodyInit): Request {
  return post(query, body, { "Content-Type": "application/x-www-form-urlencoded" });
}

async function assertOk(response: Response, reached: number): Promise<void> {
  assert.equal(await response.text(), "ok");
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("X-Pushers-Reached"), String(reached));
  assert.equal(response.headers.get("Content-Type"), "text/plain;charset=utf-8");
  assert.equal(response.headers.get("Access-Control-Allow-Origin"), "*");
}

async function assertRejected(response: Response, status: number, reason: string): Promise<void> {
  assert.equal(await response.text(), `${reason}\n`);
  assert.equal(response.status, status);
  assert.equal(response.headers.get("Content-Type"), "text/plain;charset=utf-8");
  assert.equal(response.headers.get("Access-Control-Allow-Origin"), "*");
}

const INVALID_WORKER = "Invalid to_worker_id: expected a worker id, 16 lowercase hex digits";
const INVALID_CONNECTION = "Invalid to_connection_id: expected a connection id, a decimal integer of 1 to 15 digits";
const INCOMPLETE =
  "Incomplete address: to_worker_id and to_connection_id go together (both for one connection, neither to broadcast)";
const MISSING = "Missing content: pass a non-empty content parameter";

/** A fake bus that passes each publish on to `link`, recording its options. */
function recording(link: MemoryBus): FakeBus {
  return new FakeBus((subject, data, options) => link.publish(subject, data, options));
}

Deno.test("GET broadcasts {content} with the publish timeout and answers ok with the count the hub acknowledged", async () => {
  const { arrived, bus, handler } = setup({ pushers: 3, publishTimeout: 1234, bus: recording });
  await assertOk(await handler(get("?content=hello")), 3);
  assert.equal(arrived.length, 1);
  assert.equal(arrived[0]!.subject, "broadcast");
  assert.deepEqual(arrived[0]!.data, { content: "hello" });
  assert.equal((bus as FakeBus).published[0]!.options?.timeout, 1234);
});

Deno.test("publish timeout defaults to 5000 ms", async () => {
  const { bus, handler } = setup({ bus: recording });
  await assertOk(await handler(get("?content=x")), 1);
  assert.equal((bus as FakeBus).published[0]!.options?.timeout, 5000);
});

Deno.test("content=0 is published, not dropped as the original does", async () => {
  const { arrived, handler } = setup();
  await assertOk(await handler(get("?content=0")), 1);
  assert.deepEqual(arrived[0]!.data, { content: "0" });
});

Deno.test("query decoding turns + into a space and percent-escapes into UTF-8", async () => {
  const { arrived, handler } = setup();
  await assertOk(await handler(get("?content=a+b%20c%E2%82%AC")), 1);
  assert.deepEqual(arrived[0]!.data, { content: "a b c€" });
});

Deno.test("an escaped + is a plus, and names are decoded too", async () => {
  const { arrived, handler } = setup();
  await assertOk(await handler(get("?conten%74=1%2B1")), 1);
  assert.deepEqual(arrived[0]!.data, { content: "1+1" });
});

Deno.test("the last duplicate field wins", async () => {
  const { arrived, handler } = setup();
  await assertOk(await handler(get("?content=first&content=second")), 1);
  assert.deepEqual(arrived[0]!.data, { content: "second" });
});

Deno.test("the value of a duplicate that lost is not decoded, so its bad encoding is harmless", async () => {
  const { arrived, handler } = setup();
  await assertOk(await handler(get("?content=%ZZ&content=fine")), 1);
  assert.deepEqual(arrived[0]!.data, { content: "fine" });
});

Deno.test("unknown fields are ignored, even undecodable ones", async () => {
  const { arrived, handler } = setup();
  await assertOk(await handler(get("?x=%ZZ&%FF=1&flag&content=hi&&")), 1);
  assert.deepEqual(arrived[0]!.data, { content: "hi" });
});

Deno.test("a targeted send publishes {to_connection_id, content} to the worker's channel", async () => {
  const { arrived, handler } = setup();
  await assertOk(await handler(get(`?content=hi&to_worker_id=${WORKER}&to_connection_id=42`)), 1);
  assert.equal(arrived[0]!.subject, `worker.${WORKER}`);
  assert.deepEqual(arrived[0]!.data, { to_connection_id: 42, content: "hi" });
});

Deno.test("empty address fields count as absent, so a form with blank address inputs broadcasts", async () => {
  const { arrived, handler } = setup();
  await assertOk(await handler(get("?content=hi&to_worker_id=&to_connection_id=")), 1);
  assert.equal(arrived[0]!.subject, "broadcast");
});

Deno.test("POST with an urlencoded body publishes its fields", async () => {
  const { arrived, handler } = setup();
  const body = `content=a+b%20c%E2%82%AC&to_worker_id=${WORKER}&to_connection_id=7`;
  await assertOk(await handler(urlencoded("", body)), 1);
  assert.equal(arrived[0]!.subject, `worker.${WORKER}`);
  assert.deepEqual(arrived[0]!.data, { to_connection_id: 7, content: "a b c€" });
});

Deno.test("POST urlencoded takes a charset parameter and raw UTF-8 bytes", async () => {
  const { arrived, handler } = setup();
  const request = post("", "content=caf\u00e9 \u20ac", {
    "Content-Type": "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
  });
  await assertOk(await handler(request), 1);
  assert.deepEqual(arrived[0]!.data, { content: "caf\u00e9 \u20ac" });
});

Deno.test("POST with a multipart body publishes its fields", async () => {
  const { arrived, handler } = setup();
  const form = new FormData();
  form.append("content", "multi part €");
  form.append("to_worker_id", WORKER);
  form.append("to_connection_id", "9");
  await assertOk(await handler(post("", form)), 1);
  assert.equal(arrived[0]!.subject, `worker.${WORKER}`);
  assert.deepEqual(arrived[0]!.data, { to_connection_id: 9, content: "multi part €" });
});

Deno.test("POST multipart: the last duplicate wins", async () => {
  const { arrived, handler } = setup();
  const form = new FormData();
  form.append("content", "first");
  form.append("content", "second");
  await assertOk(await handler(post("", form)), 1);
  assert.deepEqual(arrived[0]!.data, { content: "second" });
});

Deno.test("a POST body field overrides the query, and a field missing from the body falls back to it", async () => {
  const { arrived, handler } = setup();
  const query = `?content=from-query&to_worker_id=${WORKER}`;
  await assertOk(await handler(urlencoded(query, "content=from-body&to_connection_id=5")), 1);
  assert.equal(arrived[0]!.subject, `worker.${WORKER}`);
  assert.deepEqual(arrived[0]!.data, { to_connection_id: 5, content: "from-body" });

  const form = new FormData();
  form.append("content", "multipart wins");
  await assertOk(await handler(post("?content=from-query", form)), 1);
  assert.deepEqual(arrived[1]!.data, { content: "multipart wins" });
});

Deno.test("POST without a content type or body publishes from the query", async () => {
  const { arrived, handler } = setup();
  await assertOk(await handler(new Request(`${BASE}/?content=hi`, { method: "POST" })), 1);
  assert.deepEqual(arrived[0]!.data, { content: "hi" });
});

Deno.test("POST with another content type answers 415", async () => {
  const { arrived, handler } = setup();
  await assertRejected(
    await handler(post("?content=hi", '{"content":"hi"}', { "Content-Type": "application/json" })),
    415,
    "Unsupported content type: application/json; send application/x-www-form-urlencoded or multipart/form-data",
  );
  await assertRejected(
    await handler(post("?content=hi", new Uint8Array([1, 2, 3]))),
    415,
    "Unsupported content type: none; send application/x-www-form-urlencoded or multipart/form-data",
  );
  assert.equal(arrived.length, 0);
});

Deno.test("bad percent-encoding in the query answers 400 naming the field", async () => {
  const { arrived, handler } = setup();
  for (const value of ["%ZZ", "100%", "%E2%82"]) {
    await assertRejected(
      await handler(get(`?content=${value}`)),
      400,
      "Invalid query: bad percent-encoding or non-UTF-8 in content",
    );
  }
  await assertRejected(
    await handler(get(`?content=hi&to_worker_id=${WORKER}&to_connection_id=%4`)),
    400,
    "Invalid query: bad percent-encoding or non-UTF-8 in to_connection_id",
  );
  assert.equal(arrived.length, 0);
});

Deno.test("non-UTF-8 escapes in the query answer 400 naming the field", async () => {
  const { handler } = setup();
  for (const value of ["%FF", "%C0%80", "%ED%A0%80", "%E9t%E9"]) {
    await assertRejected(
      await handler(get(`?content=ok&to_worker_id=${value}&to_connection_id=1`)),
      400,
      "Invalid query: bad percent-encoding or non-UTF-8 in to_worker_id",
    );
  }
});

Deno.test("bad percent-encoding or raw non-UTF-8 bytes in an urlencoded body answer 400 naming the field", async () => {
  const { handler } = setup();
  const reason = "Invalid form body: bad percent-encoding or non-UTF-8 in content";
  await assertRejected(await handler(urlencoded("", "content=%ZZ")), 400, reason);
  const latin1 = new Uint8Array([...new TextEncoder().encode("content=caf"), 0xe9]);
  await assertRejected(await handler(urlencoded("", latin1)), 400, reason);
});

Deno.test("a file where a multipart text field belongs answers 400", async () => {
  const { handler } = setup();
  const form = new FormData();
  form.append("content", new Blob(["hi"]), "hi.txt");
  await assertRejected(
    await handler(post("", form)),
    400,
    "Invalid form body: content must be a text field, not a file",
  );
});

Deno.test("a multipart text field that is not UTF-8 answers 400, and a real U+FFFD in one is published", async () => {
  const { handler, arrived } = setup();
  const body = (content: Uint8Array) =>
    new Uint8Array([
      ...new TextEncoder().encode('--xyz\r\nContent-Disposition: form-data; name="content"\r\n\r\n'),
      ...content,
      ...new TextEncoder().encode("\r\n--xyz--\r\n"),
    ]);
  const headers = { "Content-Type": "multipart/form-data; boundary=xyz" };
  const latin1 = Uint8Array.of(0x63, 0x61, 0x66, 0xe9); // "café" in Latin-1
  await assertRejected(await handler(post("", body(latin1), headers)), 400, "Invalid form body: non-UTF-8 in content");
  const replacement = new TextEncoder().encode("a \uFFFD b");
  assert.equal((await handler(post("", body(replacement), headers))).status, 200);
  assert.deepEqual(arrived.map((arrival) => arrival.data), [{ content: "a \uFFFD b" }]);
  // A real U+FFFD elsewhere (another field, a field's name, the preamble or
  // the epilogue) does not vouch for bad bytes in this one.
  const utf8 = new TextEncoder();
  const part = (name: string, value: string) =>
    utf8.encode(`--xyz\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`);
  const elsewhere = [
    [part("note", "\uFFFD"), body(latin1)],
    [part("x\uFFFD", "a"), body(latin1)],
    [utf8.encode("\uFFFD\r\n"), body(latin1)],
    [body(latin1), utf8.encode("\uFFFD")],
  ];
  for (const [before, after] of elsewhere) {
    await assertRejected(
      await handler(post("", new Uint8Array([...before!, ...after!]), headers)),
      400,
      "Invalid form body: non-UTF-8 in content",
    );
  }
  assert.equal(arrived.length, 1);
});

Deno.test("a malformed multipart body answers 400", async () => {
  const { handler } = setup();
  const request = post("", "not multipart at all", { "Content-Type": "multipart/form-data; boundary=xyz" });
  await assertRejected(await handler(request), 400, "Invalid form body: cannot parse it as multipart/form-data");
});

Deno.test("missing or empty content answers 400", async () => {
  const { arrived, handler } = setup();
  for (const query of ["", "?", "?content=", "?content", "?Content=hi", `?to_worker_id=${WORKER}&to_connection_id=1`]) {
    await assertRejected(await handler(get(query)), 400, MISSING);
  }
  await assertRejected(await handler(urlencoded("?content=query", "content=")), 400, MISSING);
  assert.equal(arrived.length, 0);
});

Deno.test("to_worker_id without to_connection_id, or the reverse, answers 400 instead of broadcasting", async () => {
  const { arrived, handler } = setup();
  await assertRejected(await handler(get(`?content=hi&to_worker_id=${WORKER}`)), 400, INCOMPLETE);
  await assertRejected(await handler(get("?content=hi&to_connection_id=3")), 400, INCOMPLETE);
  await assertRejected(await handler(get("?content=hi&to_worker_id=&to_connection_id=3")), 400, INCOMPLETE);
  assert.equal(arrived.length, 0);
});

Deno.test("a to_worker_id that is not 16 lowercase hex digits answers 400 naming the form", async () => {
  const { arrived, handler } = setup();
  for (const id of ["1", "01", "broadcast", WORKER.toUpperCase(), WORKER.slice(1), `${WORKER}0`, `worker.${WORKER}`]) {
    await assertRejected(
      await handler(get(`?content=hi&to_worker_id=${encodeURIComponent(id)}&to_connection_id=1`)),
      400,
      INVALID_WORKER,
    );
  }
  assert.equal(arrived.length, 0);
});

Deno.test("a to_connection_id that is not a decimal integer from 1 answers 400 naming the form", async () => {
  const { arrived, handler } = setup();
  for (const id of ["0", "01", "-1", "1.5", "1e3", "abc", " 1", "9007199254740992", "1000000000000000"]) {
    await assertRejected(
      await handler(get(`?content=hi&to_worker_id=${WORKER}&to_connection_id=${encodeURIComponent(id)}`)),
      400,
      INVALID_CONNECTION,
    );
  }
  assert.equal(arrived.length, 0);
});

Deno.test("the largest connection id, 15 digits, is accepted", async () => {
  const { arrived, handler } = setup();
  await assertOk(await handler(get(`?content=hi&to_worker_id=${WORKER}&to_connection_id=999999999999999`)), 1);
  assert.deepEqual(arrived[0]!.data, { to_connection_id: 999999999999999, content: "hi" });
});

Deno.test("content over maxContentBytes, counted in UTF-8 bytes, answers 413 with the limit", async () => {
  const { arrived, handler } = setup({ maxContentBytes: 6 });
  await assertOk(await handler(get("?content=%E2%82%AC%E2%82%AC")), 1); // 6 bytes
  await assertRejected(
    await handler(get("?content=%E2%82%AC%E2%82%ACx")),
    413,
    "Content too large: 7 bytes, the limit is 6",
  );
  await assertRejected(
    await handler(urlencoded("", "content=1234567")),
    413,
    "Content too large: 7 bytes, the limit is 6",
  );
  assert.equal(arrived.length, 1);
});

Deno.test("content limit defaults to 65536 bytes", async () => {
  const { handler } = setup();
  await assertOk(await handler(urlencoded("", `content=${"a".repeat(65536)}`)), 1);
  await assertRejected(
    await handler(urlencoded("", `content=${"a".repeat(65537)}`)),
    413,
    "Content too large: 65537 bytes, the limit is 65536",
  );
});

Deno.test("a POST body far over what the content limit needs answers 413 before it is all read", async () => {
  const { arrived, handler } = setup({ maxContentBytes: 10 });
  // 10 * 3 + 16384 bytes is the cap.
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulled++;
      controller.enqueue(new TextEncoder().encode("content=" + "a".repeat(8192)));
    },
  });
  const response = await handler(urlencoded("", body));
  await assertRejected(response, 413, "Body too large: over the 16414-byte limit");
  assert.ok(pulled < 10, `read ${pulled} chunks of an endless body`);
  assert.equal(arrived.length, 0);
});

Deno.test("a targeted publish the hub acknowledged with 0 answers 404: the worker address is stale or wrong", async () => {
  const { handler } = setup({ pushers: 0 });
  await assertRejected(
    await handler(get(`?content=hi&to_worker_id=${WORKER}&to_connection_id=1`)),
    404,
    `No pusher worker ${WORKER} is connected: the address is stale or wrong`,
  );
});

Deno.test("a broadcast the hub acknowledged with 0 still answers ok with X-Pushers-Reached 0", async () => {
  const { handler } = setup({ pushers: 0 });
  await assertOk(await handler(get("?content=hi")), 0);
});

Deno.test("on a bus that cannot count, a publish answers ok without X-Pushers-Reached, a targeted send too", async () => {
  const { bus, handler } = setup({ bus: () => new FakeBus(() => Promise.resolve({ reached: null })) });
  const requests = [get("?content=hi"), get(`?content=hi&to_worker_id=${WORKER}&to_connection_id=1`)];
  for (const request of requests) {
    const response = await handler(request);
    assert.equal(await response.text(), "ok");
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("X-Pushers-Reached"), null);
    assert.equal(response.headers.get("Content-Type"), "text/plain;charset=utf-8");
    assert.equal(response.headers.get("Access-Control-Allow-Origin"), "*");
  }
  assert.deepEqual((bus as FakeBus).published.map(({ subject }) => subject), ["broadcast", `worker.${WORKER}`]);
  const text = await (await handler(get("metrics"))).text();
  assert.match(text, /^publisher_publishes_total\{target="broadcast"\} 1$/m);
  assert.match(text, /^publisher_publishes_total\{target="connection"\} 1$/m);
  assert.match(text, /^publisher_deliveries_total 0$/m);
});

Deno.test("a bus that is down, closed or timed out answers 503 with Retry-After 1", async () => {
  const down = setup();
  down.broker.down = true;
  const closed = setup();
  await closed.bus.close();
  const timeout = "Cannot publish: no acknowledgement within 5000 ms";
  const timedOut = setup({ bus: () => failing(new BusError("unavailable", timeout)) });
  const cases = [
    [down, "Memory bus is down"],
    [closed, "Memory bus link is closed"],
    [timedOut, timeout],
  ] as const;
  for (const [{ handler, logs, arrived }, message] of cases) {
    const response = await handler(get("?content=hi"));
    assert.equal(response.headers.get("Retry-After"), "1");
    await assertRejected(response, 503, `Hub unavailable: ${message}`);
    assert.match(logs.join("\n"), /level=warn .*status=503/);
    assert.equal(arrived.length, 0);
  }
});

Deno.test("content the bus finds over its message limit answers 413 with the bus's reason", async () => {
  const { arrived, handler } = setup({ maxMessageBytes: 20 });
  await assertOk(await handler(get("?content=short")), 1);
  const response = await handler(get(`?content=${"a".repeat(20)}`));
  assert.equal(response.headers.get("Retry-After"), null);
  await assertRejected(
    response,
    413,
    "Content too large for the hub: message of 34 bytes is over the 20-byte limit",
  );
  assert.equal(arrived.length, 1);
});

Deno.test("a publish the hub refused answers 502 with the hub's reason", async () => {
  const { handler } = setup({ bus: () => failing(new BusError("refused", "Channel name too long")) });
  const response = await handler(get("?content=hi"));
  assert.equal(response.headers.get("Retry-After"), null);
  await assertRejected(response, 502, "Hub refused the publish: Channel name too long");
});

Deno.test("an unexpected publish failure answers 500 Internal error and is logged at error level", async () => {
  const { handler, logs } = setup({ bus: () => failing(new TypeError("bug in the client")) });
  await assertRejected(await handler(get("?content=hi")), 500, "Internal error");
  assert.match(logs.join("\n"), /level=error .*status=500 error="TypeError: bug in the client"/);
});

Deno.test("other paths answer 404 Not found with the path", async () => {
  const { arrived, handler } = setup();
  await assertRejected(await handler(get("index.html?content=hi")), 404, "Not found: /index.html");
  await assertRejected(await handler(new Request(`${BASE}/a/b/`, { method: "DELETE" })), 404, "Not found: /a/b/");
  assert.equal(arrived.length, 0);
});

Deno.test("HEAD, PUT, DELETE and PATCH answer 405 with an Allow header", async () => {
  const { arrived, handler } = setup();
  for (const method of ["HEAD", "PUT", "DELETE", "PATCH"]) {
    const response = await handler(get("?content=hi", { method }));
    assert.equal(response.headers.get("Allow"), "GET, POST, OPTIONS");
    await assertRejected(response, 405, `Method ${method} not allowed: use GET or POST`);
  }
  assert.equal(arrived.length, 0);
});

Deno.test("OPTIONS answers 204 with the CORS preflight headers", async () => {
  const { arrived, handler } = setup();
  const response = await handler(get("", { method: "OPTIONS" }));
  assert.equal(response.status, 204);
  assert.equal(await response.text(), "");
  assert.equal(response.headers.get("Access-Control-Allow-Origin"), "*");
  assert.equal(response.headers.get("Access-Control-Allow-Methods"), "GET, POST");
  assert.equal(response.headers.get("Access-Control-Allow-Headers"), "Authorization, Content-Type, X-API-Key");
  assert.equal(arrived.length, 0);
});

Deno.test("every answer lets other origins read X-Pushers-Reached and Retry-After", async () => {
  const { handler } = setup();
  for (const request of [get("?content=hi"), get(""), get("x"), get("", { method: "PUT" })]) {
    const response = await handler(request);
    await response.body?.cancel();
    assert.equal(response.headers.get("Access-Control-Allow-Origin"), "*");
    assert.equal(response.headers.get("Access-Control-Expose-Headers"), "X-Pushers-Reached, Retry-After");
  }
});

Deno.test("the answer is not sent until the hub acknowledges the publish", async () => {
  const ack = Promise.withResolvers<PublishResult>();
  const { bus, handler } = setup({ bus: () => new FakeBus(() => ack.promise) });
  const published = (bus as FakeBus).published;
  let settled = false;
  const answering = handler(get("?content=hi"));
  answering.finally(() => (settled = true));
  await until(() => published.length === 1, 1000, "the publish to reach the hub");
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(settled, false, "the handler answered before the hub acknowledged");
  ack.resolve({ reached: 2 });
  await assertOk(await within(answering, 1000, "the answer after the acknowledgement"), 2);
});

Deno.test("rejections are logged with method, path, status and reason, never with content or query values", async () => {
  const { handler, logs } = setup({ pushers: 0, maxContentBytes: 16 });
  const secret = "s3cr3t-t0ken";
  const requests = [
    get(`?content=${secret}&to_worker_id=${WORKER}`),
    get(`?content=${secret}${secret}`),
    get(`?content=${secret}&to_worker_id=${WORKER}&to_connection_id=1`),
    get(`?content=${secret}&to_worker_id=${secret}&to_connection_id=1`),
    urlencoded(`?content=${secret}`, `content=${secret}%ZZ`),
  ];
  for (const request of requests) await (await handler(request)).body?.cancel();
  const text = logs.join("\n");
  // One line per rejection, plus "publishing" at debug for the one that reached the hub.
  assert.equal(logs.length, requests.length + 1, text);
  assert.doesNotMatch(text, new RegExp(`${secret}|${WORKER}`));
  assert.match(
    text,
    /level=info svc=publisher msg="request rejected" method=GET path=\/ status=400 reason="Incomplete/,
  );
  assert.match(text, /status=404 reason="No pusher worker is connected: the address is stale or wrong"/);
  assert.match(text, /method=POST path=\/ status=400 reason="Invalid form body/);
});

const KEY = "k3y-Zx9+/=";
const MISSING_KEY =
  "Unauthorized: this publisher needs an API key (Authorization: Bearer KEY, X-API-Key: KEY or api_key=KEY)";
const WRONG_KEY = "Unauthorized: wrong API key";

Deno.test("with an API key, a publish without it answers 401 with WWW-Authenticate: Bearer and is not published", async () => {
  const { arrived, handler } = setup({ apiKey: KEY });
  const requests = [
    get("?content=hi"),
    get("?content=hi", { headers: { Authorization: `Basic ${btoa(`user:${KEY}`)}` } }),
    get("?content=hi", { headers: { Authorization: "Bearer" } }),
    urlencoded("", `content=hi&api_key=${encodeURIComponent(KEY)}`),
  ];
  for (const request of requests) {
    const response = await handler(request);
    assert.equal(response.headers.get("WWW-Authenticate"), "Bearer");
    await assertRejected(response, 401, MISSING_KEY);
  }
  assert.equal(arrived.length, 0);
});

Deno.test("with an API key, a wrong key in the header or the query answers 401 wrong API key", async () => {
  const { arrived, handler } = setup({ apiKey: KEY });
  const requests = [
    get("?content=hi", { headers: { Authorization: "Bearer wrong" } }),
    get(`?content=hi`, { headers: { Authorization: `Bearer ${KEY}x` } }),
    get(`?content=hi&api_key=${encodeURIComponent(KEY.slice(1))}`),
    get("?content=hi&api_key="),
    get("?content=hi&api_key=%ZZ"),
    get("?content=hi", { headers: { "X-API-Key": "wrong" } }),
    get("?content=hi", { headers: { Authorization: "apikey wrong" } }),
    // The first place with a key decides: a right key further down does not save a wrong one.
    get(`?content=hi&api_key=${encodeURIComponent(KEY)}`, { headers: { Authorization: "Bearer wrong" } }),
    get("?content=hi", { headers: { Authorization: "Bearer wrong", "X-API-Key": KEY } }),
    get(`?content=hi&api_key=${encodeURIComponent(KEY)}`, { headers: { "X-API-Key": "wrong" } }),
  ];
  for (const request of requests) {
    const response = await handler(request);
    assert.equal(response.headers.get("WWW-Authenticate"), 'Bearer error="invalid_token"');
    await assertRejected(response, 401, WRONG_KEY);
  }
  assert.equal(arrived.length, 0);
});

Deno.test("with an API key, Authorization: Bearer, Centrifugo's X-API-Key and apikey, and the api_key query parameter are accepted, for GET and POST", async () => {
  const { arrived, handler } = setup({ pushers: 2, apiKey: KEY });
  const bearer = { Authorization: `Bearer ${KEY}` };
  await assertOk(await handler(get("?content=one", { headers: bearer })), 2);
  await assertOk(await handler(get("?content=two", { headers: { Authorization: `bearer  ${KEY}` } })), 2);
  await assertOk(await handler(get(`?content=three&api_key=${encodeURIComponent(KEY)}`)), 2);
  await assertOk(
    await handler(post("", "content=four", { ...bearer, "Content-Type": "application/x-www-form-urlencoded" })),
    2,
  );
  await assertOk(await handler(urlencoded(`?api_key=${encodeURIComponent(KEY)}`, "content=five")), 2);
  // Basic auth in front (a proxy's, say) does not hide the api_key parameter.
  const basic = { Authorization: "Basic dXNlcjpwYXNz" };
  await assertOk(await handler(get(`?content=six&api_key=${encodeURIComponent(KEY)}`, { headers: basic })), 2);
  await assertOk(await handler(get("?content=seven", { headers: { "X-API-Key": KEY } })), 2);
  await assertOk(await handler(get("?content=eight", { headers: { Authorization: `apikey ${KEY}` } })), 2);
  // Basic auth in front does not hide X-API-Key either.
  await assertOk(await handler(get("?content=nine", { headers: { ...basic, "x-api-key": KEY } })), 2);
  assert.deepEqual(arrived.map((arrival) => arrival.data), [
    { content: "one" },
    { content: "two" },
    { content: "three" },
    { content: "four" },
    { content: "five" },
    { content: "six" },
    { content: "seven" },
    { content: "eight" },
    { content: "nine" },
  ]);
});

Deno.test("an empty API key option means none is needed", async () => {
  const { handler } = setup({ apiKey: "" });
  await assertOk(await handler(get("?content=hi")), 1);
});

Deno.test("with an API key, a publish without it is refused before its body is read", async () => {
  const { handler } = setup({ apiKey: KEY });
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulled++;
      controller.enqueue(new TextEncoder().encode("content=hi"));
      controller.close();
    },
  }, { highWaterMark: 0 }); // pulled only when read
  await assertRejected(await handler(urlencoded("", body)), 401, MISSING_KEY);
  assert.equal(pulled, 0);
});

Deno.test("with an API key, preflight, /healthz and /metrics need no key, and other paths and methods answer as before", async () => {
  const { handler } = setup({ apiKey: KEY });
  const preflight = await handler(get("", { method: "OPTIONS" }));
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get("Access-Control-Allow-Headers"), "Authorization, Content-Type, X-API-Key");
  assert.equal(await (await handler(get("healthz"))).text(), "ok");
  const metrics = await handler(get("metrics"));
  assert.equal(metrics.status, 200);
  await metrics.body?.cancel();
  await assertRejected(await handler(get("push?content=hi")), 404, "Not found: /push");
  await assertRejected(
    await handler(get("?content=hi", { method: "PUT" })),
    405,
    "Method PUT not allowed: use GET or POST",
  );
});

Deno.test("the API key, from the header or the query, never appears in a log line", async () => {
  const { handler, logs } = setup({ pushers: 1, apiKey: KEY });
  const wrong = "n0t-the-k3y";
  const requests = [
    get("?content=hi", { headers: { Authorization: `Bearer ${KEY}` } }),
    get(`?content=hi&api_key=${encodeURIComponent(KEY)}`),
    get(`?content=hi&api_key=${wrong}`),
    get("?content=hi", { headers: { Authorization: `Bearer ${wrong}` } }),
    get("?content=hi", { headers: { "X-API-Key": KEY } }),
    get("?content=hi", { headers: { "X-API-Key": wrong } }),
    get(`?api_key=${encodeURIComponent(KEY)}`),
    get(`?content=hi&api_key=${encodeURIComponent(KEY)}&to_worker_id=${WORKER}`),
    get(`nowhere?api_key=${encodeURIComponent(KEY)}`),
    get(`?content=${"a".repeat(70_000)}&api_key=${encodeURIComponent(KEY)}`),
  ];
  for (const request of requests) await (await handler(request)).body?.cancel();
  const text = logs.join("\n");
  assert.equal(logs.length, requests.length + 3, text); // every request, plus publishing/published for the three good ones
  for (const secret of [KEY, encodeURIComponent(KEY), wrong]) assert.ok(!text.includes(secret), text);
  assert.match(text, /status=401 reason="Unauthorized: wrong API key"/);
  assert.match(text, /status=400 reason="Missing content/);
});

Deno.test("GET /healthz answers 200 ok while the hub link is up and 503 hub link down while it is not", async () => {
  const { broker, arrived, handler, logs } = setup();
  const up = await handler(get("healthz"));
  assert.equal(await up.text(), "ok");
  assert.equal(up.status, 200);
  assert.equal(up.headers.get("Content-Type"), "text/plain;charset=utf-8");

  broker.down = true;
  await assertRejected(await handler(get("healthz")), 503, "hub link down");
  broker.down = false;
  assert.equal((await handler(get("healthz"))).status, 200);
  // Probes poll it: answering it is not worth a log line.
  assert.deepEqual(logs, []);
  assert.equal(arrived.length, 0);
});

Deno.test("/healthz and /metrics answer 405 to anything but GET", async () => {
  const { handler } = setup();
  for (const path of ["healthz", "metrics"]) {
    const response = await handler(get(path, { method: "POST" }));
    assert.equal(response.headers.get("Allow"), "GET");
    await assertRejected(response, 405, "Method POST not allowed: use GET");
  }
});

/** A clock that moves by the given steps, in milliseconds, one per reading. */
function steppingClock(...steps: number[]): () => number {
  let time = 1000;
  return () => (time += steps.shift() ?? 0);
}

Deno.test("GET /metrics renders requests by status, publishes by target, deliveries, publish durations and the hub link", async () => {
  // A memory bus never reconnects: a fake in front of it reports reconnects.
  let link: FakeBus | undefined;
  const bus = (memory: MemoryBus) => (link = recording(memory));
  // Each good publish reads the clock twice: at the request's start and at the acknowledgement.
  const now = steppingClock(0, 3, 0, 300);
  const { handler } = setup({ pushers: 3, bus, now, apiKey: KEY });
  link!.reconnects = 2;
  const auth = { headers: { Authorization: `Bearer ${KEY}` } };
  await (await handler(get("?content=a", auth))).text(); // 3 ms
  await (await handler(get(`?content=b&to_worker_id=${WORKER}&to_connection_id=1`, auth))).text(); // 300 ms
  await (await handler(get("?content=c"))).text(); // 401
  await (await handler(get("?content=", auth))).text(); // 400
  await (await handler(get("", { method: "OPTIONS" }))).text(); // 204

  const response = await handler(get("metrics"));
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  const text = await response.text();
  const lines = text.split("\n");
  const has = (line: string) => assert.ok(lines.includes(line), `no line ${line} in:\n${text}`);
  has("# TYPE publisher_requests_total counter");
  has('publisher_requests_total{status="200"} 2');
  has('publisher_requests_total{status="401"} 1');
  has('publisher_requests_total{status="400"} 1');
  has('publisher_requests_total{status="204"} 1');
  has('publisher_publishes_total{target="broadcast"} 1');
  has('publisher_publishes_total{target="connection"} 1');
  // The sum of X-Pushers-Reached: 3 pushers took the broadcast, the one of WORKER the targeted send.
  has("publisher_deliveries_total 4");
  has("# TYPE publisher_publish_duration_seconds histogram");
  has('publisher_publish_duration_seconds_bucket{le="0.0025"} 0');
  has('publisher_publish_duration_seconds_bucket{le="0.005"} 1');
  has('publisher_publish_duration_seconds_bucket{le="0.25"} 1');
  has('publisher_publish_duration_seconds_bucket{le="0.5"} 2');
  has('publisher_publish_duration_seconds_bucket{le="5"} 2');
  has('publisher_publish_duration_seconds_bucket{le="+Inf"} 2');
  has("publisher_publish_duration_seconds_sum 0.303");
  has("publisher_publish_duration_seconds_count 2");
  has("# TYPE publisher_hub_connected gauge");
  has("publisher_hub_connected 1");
  has("# TYPE publisher_hub_reconnects_total counter");
  has("publisher_hub_reconnects_total 2");
  const buckets = lines.filter((line) => line.startsWith("publisher_publish_duration_seconds_bucket"));
  assert.deepEqual(
    buckets.map((line) => line.match(/le="([^"]+)"/)![1]),
    ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf"],
  );

  link!.connected = false;
  link!.reconnects = 3;
  const later = await (await handler(get("metrics"))).text();
  assert.match(later, /^publisher_hub_connected 0$/m);
  assert.match(later, /^publisher_hub_reconnects_total 3$/m);
  // The first scrape is a request too, counted once answered.
  assert.match(later, /^publisher_requests_total\{status="200"\} 3$/m);
});

Deno.test("/metrics counts failed publishes by status only, not as publishes or durations", async () => {
  const { handler } = setup({
    bus: () => failing(new BusError("unavailable", "Cannot publish: no acknowledgement")),
  });
  await (await handler(get("?content=hi"))).text();
  await (await handler(get(`?content=hi&to_worker_id=${WORKER}`))).text();
  const text = await (await handler(get("metrics"))).text();
  assert.match(text, /^publisher_requests_total\{status="503"\} 1$/m);
  assert.match(text, /^publisher_requests_total\{status="400"\} 1$/m);
  assert.match(text, /^publisher_publishes_total\{target="broadcast"\} 0$/m);
  assert.match(text, /^publisher_publishes_total\{target="connection"\} 0$/m);
  assert.match(text, /^publisher_deliveries_total 0$/m);
  assert.match(text, /^publisher_publish_duration_seconds_count 0$/m);
});

Deno.test("a targeted publish that reached no one (404) is not a successful publish in /metrics", async () => {
  const { handler } = setup({ pushers: 0 });
  await (await handler(get(`?content=hi&to_worker_id=${WORKER}&to_connection_id=1`))).text();
  const text = await (await handler(get("metrics"))).text();
  assert.match(text, /^publisher_requests_total\{status="404"\} 1$/m);
  assert.match(text, /^publisher_publishes_total\{target="connection"\} 0$/m);
});

Deno.test("metrics passed in are the ones /metrics renders, so a caller can share them", async () => {
  const broker = new MemoryBroker();
  const bus = broker.connect();
  const metrics = new PublisherMetrics(bus);
  const { handler } = setup({ bus: () => bus, metrics });
  await (await handler(get("?content=hi"))).text();
  assert.match(metrics.render(), /^publisher_publishes_total\{target="broadcast"\} 1$/m);
});

/** The fast path's view of a GET: its target and headers, as the server reads them from the head. */
function raw(target: string, headers: Record<string, string> = {}, body: string | Uint8Array | null = null) {
  const fields = new Headers(headers);
  return {
    method: body === null ? "GET" : "POST",
    target,
    headers: { get: (name: string) => fields.get(name) },
    body: body === null ? null : typeof body === "string" ? new TextEncoder().encode(body) : body.slice(),
  };
}

/** An answer's status, headers and body, to compare two answers. */
async function seen(response: Response): Promise<[number, [string, string][], string]> {
  // The fast path's ok answers are shared: read a copy, as a server never reads them.
  const body = await response.clone().text();
  return [response.status, [...response.headers], body];
}

/** No key, the right one, a wrong one: what each request is sent with. */
const KEY_VARIANTS: readonly Record<string, string>[] = [{}, { Authorization: "Bearer s3cret" }, {
  Authorization: "Bearer wrong",
}];

/**
 * Sends each request with each of {@linkcode KEY_VARIANTS} to a handler's
 * fast path and to another handler's full path, with and without an API
 * key, and checks that both answer and publish the same.
 */
async function assertFastAsSlow(
  requests: readonly {
    what: string;
    raw: (headers: Record<string, string>) => RawRequest;
    full: (headers: Record<string, string>) => Request;
  }[],
): Promise<void> {
  for (const apiKey of [undefined, "s3cret"]) {
    const fast = setup({ apiKey });
    const slow = setup({ apiKey });
    for (const request of requests) {
      for (const headers of KEY_VARIANTS) {
        const what = `${request.what} with ${JSON.stringify(headers)}`;
        const req = request.raw(headers);
        const answer = fast.handler.fast(req);
        // The body is a view of the server's read buffer, which the next requests overwrite once the fast path returns.
        req.body?.fill(0x21);
        assert.ok(answer, `the fast path takes ${what}`);
        assert.deepEqual(await seen(await answer), await seen(await slow.handler(request.full(headers))), what);
      }
    }
    assert.deepEqual(fast.arrived, slow.arrived);
    assert.equal(fast.arrived.length > 0, true);
  }
}

/** Checks that the fast path leaves each `[method, target]`, with `body` (none: null), to the handler. */
function assertLeft(requests: readonly [string, string][], body: string | null): void {
  const { handler } = setup();
  for (const [method, target] of requests) {
    assert.equal(handler.fast({ ...raw(target, {}, body), method }), undefined, `${method} ${target}`);
  }
}

Deno.test("the fast path answers every plain GET publish as the handler does, and leaves other requests to it", async () => {
  const targets = [
    "/?content=hi",
    `/?content=hi&to_worker_id=${WORKER}&to_connection_id=7`,
    "/?content=hi&to_worker_id=fedcba9876543210&to_connection_id=7",
    "/?content=",
    "/?content=%ZZ",
    "/?content=a+b%C3%A9&channel=news",
    "/?content=x&channel=bad%20name",
    "/?content=x&to_user=alice",
    "/?content=x&to_worker_id=1&to_connection_id=2",
    `/?content=x&to_worker_id=${WORKER}`,
    "/?content=x&channel=a&to_user=b",
    "/?content=x&idempotency_key=",
    "/?",
    "/",
    `/?content=${"a".repeat(65537)}`,
  ];
  await assertFastAsSlow(targets.map((target) => ({
    what: `GET ${target.slice(0, 60)}`,
    raw: (headers) => raw(target, headers),
    full: (headers) => get(target.slice(1), { headers }),
  })));
  assertLeft([
    ["POST", "/?content=x"],
    ["GET", "/healthz"],
    ["GET", "/x?content=x"],
    ["GET", "/?content='quoted'"],
    ["GET", "/?content=<b>"],
    ["GET", "/./?content=x"],
    ["HEAD", "/?content=x"],
  ], null);
});

Deno.test("the fast path answers any GET it takes as the handler does: generated queries of the API's fields", async () => {
  const value = fc.oneof(
    fc.constantFrom("hi", "", WORKER, "fedcba9876543210", "7", "0", "-1", "news", "a+b", "%C3%A9", "%ZZ", "%", "%00"),
    fc.string({ maxLength: 12 }).map(encodeURIComponent),
    fc.string({ maxLength: 12 }),
  );
  const key = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom("content", "channel", "to_user", "to_worker_id", "to_connection_id") },
    fc.constantFrom("idempotency_key", "api_key", "other", "content%5B%5D", ""),
  );
  // Mostly a content first, as a publish has, then any fields.
  const content = fc.option(fc.constantFrom("hi", "a+b%C3%A9", "x%20y"), { freq: 5 });
  const target = fc.tuple(content, fc.array(fc.tuple(key, fc.option(value, { freq: 8 })), { maxLength: 3 }))
    .map(([first, fields]) =>
      "/?" + [...(first === null ? [] : [`content=${first}`]), ...fields.map(([k, v]) => v === null ? k : `${k}=${v}`)]
        .join("&")
    );
  for (const apiKey of [undefined, "s3cret"]) {
    const fast = setup({ apiKey });
    const slow = setup({ apiKey });
    let taken = 0;
    await fc.assert(
      fc.asyncProperty(target, fc.constantFrom(...KEY_VARIANTS), async (target, headers) => {
        const answer = fast.handler.fast(raw(target, headers));
        if (answer === undefined) return;
        taken++;
        assert.deepEqual(await seen(await answer), await seen(await slow.handler(get(target.slice(1), { headers }))));
      }),
      { seed: 4237, numRuns: 1000 },
    );
    assert.deepEqual(fast.arrived, slow.arrived, "the same publishes");
    assert.ok(
      taken > 500 && fast.arrived.length > 50,
      `most taken (${taken}), many published (${fast.arrived.length})`,
    );
  }
});

Deno.test("the fast path answers every server-API call whose body came whole as the handler does", async () => {
  const JSON_TYPE = { "content-type": "application/json" };
  const publish = { channel: "news", data: { text: "hi" } };
  const calls: [string, Record<string, string>, string | Uint8Array<ArrayBuffer>][] = [
    ["/api/publish", JSON_TYPE, JSON.stringify(publish)],
    ["/api/publish", JSON_TYPE, JSON.stringify({ data: "to all" })],
    ["/api/publish", JSON_TYPE, JSON.stringify({ worker_id: WORKER, connection_id: 7, data: 1 })],
    ["/api/publish", JSON_TYPE, JSON.stringify({ channel: "bad name", data: 1 })],
    ["/api/publish", JSON_TYPE, JSON.stringify({ channel: "news" })],
    ["/api/batch", JSON_TYPE, JSON.stringify({ commands: [{ publish }, { publish: { user: "alice", data: 2 } }] })],
    ["/api/batch", JSON_TYPE, JSON.stringify({ commands: [{ publish }, { nope: {} }, 3] })],
    ["/api/batch?api_key=s3cret", JSON_TYPE, JSON.stringify({ commands: [{ publish }] })],
    ["/api/publish", {}, JSON.stringify(publish)],
    ["/api/publish", { "content-type": "text/plain" }, JSON.stringify(publish)],
    ["/api/publish", JSON_TYPE, "{not json"],
    ["/api/publish", JSON_TYPE, "[1]"],
    ["/api/publish", JSON_TYPE, `{"data":${"[".repeat(40)}${"]".repeat(40)}}`],
    ["/api/publish", JSON_TYPE, `{"data":"${"a".repeat(2 * 1024 * 1024)}"}`],
    ["/api/publish", JSON_TYPE, new Uint8Array([0x7b, 0x22, 0x64, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d])],
  ];
  await assertFastAsSlow(calls.map(([target, fields, body]) => ({
    what: `POST ${target} ${typeof body === "string" ? body.slice(0, 60) : `bytes ${body.join(" ")}`}`,
    raw: (headers) => raw(target, { ...fields, ...headers }, body),
    // A stream, as the server gives the handler: a string would bring a content type of its own.
    full: (headers) =>
      new Request(`${BASE}${target}`, {
        method: "POST",
        headers: { ...fields, ...headers },
        body: new Blob([body]).stream(),
      }),
  })));
  // What is not a server-API call with its body goes to the handler: the
  // original's POST form, an unknown method, a preflight, a GET with a body.
  assertLeft([
    ["POST", "/?content=x"],
    ["POST", "/api/nope"],
    ["POST", "/api/publish/"],
    ["POST", "/dashboard/api/publish"],
    ["OPTIONS", "/api/publish"],
    ["GET", "/?content=x"],
  ], "content=x");
});

Deno.test("the fast path's ok answers are shared, and the handler's are not", async () => {
  const { handler } = setup();
  const first = await handler.fast(raw("/?content=a"))!;
  const second = await handler.fast(raw("/?content=b"))!;
  assert.equal(first, second);
  assert.notEqual(await handler(get("?content=a")), await handler(get("?content=b")));
});
