import assert from "node:assert/strict";
import { createPublishHandler, type PublishHandlerOptions } from "./handler.ts";
import { DASHBOARD_CSP, SESSION_COOKIE } from "./dashboard.ts";
import { clusterRatesOf, workerCountersOf } from "./_dashboard_events.ts";
import { within } from "../channel/testing.ts";
import type { Json } from "../shared/json.ts";
import { createLogger } from "../shared/log.ts";
import { serveHttp } from "../shared/http_server.ts";
import { MemoryBroker } from "../shared/memory_bus.ts";

const BASE = "http://publisher.test";
const KEY = "s3cret-key";

/** A handler on a memory broker with one pusher-side link subscribed to `broadcast`, recording what it gets. */
function setup(options: Partial<PublishHandlerOptions> = {}) {
  const broker = new MemoryBroker();
  const pusher = broker.connect();
  const arrived: Json[] = [];
  pusher.subscribe("broadcast", (data) => void arrived.push(data));
  const logger = createLogger("publisher", { level: "silent" });
  const handler = createPublishHandler({ bus: broker.connect(), logger, apiKey: KEY, ...options });
  return { handler, arrived };
}

function login(key: string, headers: Record<string, string> = {}): Request {
  return new Request(`${BASE}/dashboard/login`, {
    method: "POST",
    body: new URLSearchParams({ key }),
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
  });
}

/** Logs in with the right key; returns the cookie to send back and the page's CSRF token. */
async function loggedIn(handler: (req: Request) => Promise<Response>): Promise<{ cookie: string; csrf: string }> {
  const response = await handler(login(KEY));
  assert.equal(response.status, 303);
  const cookie = response.headers.get("set-cookie")!.split(";")[0]!;
  const page = await (await handler(new Request(`${BASE}/dashboard`, { headers: { cookie } }))).text();
  const csrf = /<meta name="csrf-token" content="([^"]+)">/.exec(page)?.[1];
  assert.ok(csrf, "the page carries its CSRF token");
  return { cookie, csrf };
}

function apiCall(method: string, body: Json, headers: Record<string, string> = {}): Request {
  return new Request(`${BASE}/dashboard/api/${method}`, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "content-type": "application/json", ...headers },
  });
}

Deno.test("dashboard: without a session cookie, /dashboard is the login form, under the strict CSP", async () => {
  const { handler } = setup();
  const response = await handler(new Request(`${BASE}/dashboard`));
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-security-policy"), DASHBOARD_CSP);
  assert.equal(response.headers.get("content-type"), "text/html;charset=utf-8");
  assert.equal(response.headers.get("x-frame-options"), "DENY");
  assert.equal(response.headers.get("access-control-allow-origin"), null);
  const page = await response.text();
  assert.match(page, /<form method="post" action="\/dashboard\/login">/);
  assert.match(page, /type="password"/);
  assert.doesNotMatch(page, /csrf-token/);
  assert.doesNotMatch(page, /<script>|<style|style=/, "no inline script or style");
});

Deno.test("dashboard: the CSP is the one asked for, and the page's script and style are served under it", async () => {
  assert.equal(
    DASHBOARD_CSP,
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
      "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  );
  const { handler } = setup();
  for (const [path, type] of [["app.js", "text/javascript"], ["app.css", "text/css"]]) {
    const response = await handler(new Request(`${BASE}/dashboard/${path}`));
    assert.equal(response.status, 200, path);
    assert.equal(response.headers.get("content-type"), `${type};charset=utf-8`);
    assert.equal(response.headers.get("content-security-policy"), DASHBOARD_CSP);
    assert.equal(response.headers.get("x-content-type-options"), "nosniff");
    assert.ok((await response.text()).length > 1000, `${path} has its content`);
  }
});

Deno.test("dashboard: a wrong key answers 401 with the form again and no cookie", async () => {
  const { handler } = setup();
  for (const request of [login("wrong"), login(""), login(`${KEY}x`)]) {
    const response = await handler(request);
    assert.equal(response.status, 401);
    assert.equal(response.headers.get("set-cookie"), null);
    assert.match(await response.text(), /Wrong API key/);
  }
  const notAForm = await handler(
    new Request(`${BASE}/dashboard/login`, { method: "POST", body: JSON.stringify({ key: KEY }) }),
  );
  assert.equal(notAForm.status, 415);
  await notAForm.body?.cancel();
  const get = await handler(new Request(`${BASE}/dashboard/login?key=${KEY}`));
  assert.equal(get.status, 405, "the key never travels in a URL");
  await get.body?.cancel();
});

Deno.test("dashboard: the right key sets an HttpOnly, SameSite=Strict session cookie that is not the key", async () => {
  const { handler } = setup();
  const response = await handler(login(KEY));
  assert.equal(response.status, 303);
  assert.equal(response.headers.get("location"), "/dashboard");
  const cookie = response.headers.get("set-cookie")!;
  const attributes = cookie.split("; ");
  assert.match(attributes[0]!, new RegExp(`^${SESSION_COOKIE}=[A-Za-z0-9_-]{43}$`));
  assert.ok(!cookie.includes(KEY), "the cookie does not carry the key");
  for (const attribute of ["HttpOnly", "SameSite=Strict", "Path=/dashboard", "Max-Age=28800"]) {
    assert.ok(attributes.includes(attribute), attribute);
  }
  assert.ok(!attributes.includes("Secure"), "not Secure over plain HTTP, or the browser would drop it");

  const https = await handler(login(KEY, { "x-forwarded-proto": "https" }));
  assert.ok(https.headers.get("set-cookie")!.split("; ").includes("Secure"), "Secure behind an HTTPS proxy");

  const { cookie: session, csrf } = await loggedIn(handler);
  assert.notEqual(csrf, session.split("=")[1], "the CSRF token is not the session id");
  const page = await (await handler(new Request(`${BASE}/dashboard`, { headers: { cookie: session } }))).text();
  assert.match(page, /<script type="module" src="\/dashboard\/app.js"><\/script>/);
  assert.match(page, /action="\/dashboard\/logout"/);
});

Deno.test("dashboard: API calls need the session and its CSRF token, and then reach the pushers", async () => {
  const { handler, arrived } = setup();
  const noSession = await handler(apiCall("publish", { data: "x" }));
  assert.equal(noSession.status, 401);
  assert.equal((await noSession.json()).error.code, 401);

  const { cookie, csrf } = await loggedIn(handler);
  const noToken = await handler(apiCall("publish", { data: "x" }, { cookie }));
  assert.equal(noToken.status, 403);
  assert.match((await noToken.json()).error.message, /CSRF/);
  const wrongToken = await handler(apiCall("publish", { data: "x" }, { cookie, "x-csrf-token": `${csrf}x` }));
  assert.equal(wrongToken.status, 403);
  await wrongToken.body?.cancel();
  // The key itself does not stand in for the session here: /api/ is the place for it.
  const keyOnly = await handler(apiCall("publish", { data: "x" }, { authorization: `Bearer ${KEY}` }));
  assert.equal(keyOnly.status, 401);
  await keyOnly.body?.cancel();
  assert.deepEqual(arrived, []);

  const ok = await handler(apiCall("publish", { data: "from the page" }, { cookie, "x-csrf-token": csrf }));
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), { result: { workers_reached: 1 } });
  assert.equal(ok.headers.get("content-security-policy"), DASHBOARD_CSP);
  assert.equal(ok.headers.get("access-control-allow-origin"), null);
  assert.equal(arrived.length, 1);
  assert.ok(JSON.stringify(arrived[0]).includes("from the page"), JSON.stringify(arrived));

  const unknown = await handler(apiCall("nope", {}, { cookie, "x-csrf-token": csrf }));
  assert.equal(unknown.status, 404);
  assert.match((await unknown.json()).error.message, /^Unknown method: nope;/);
});

Deno.test("dashboard: an expired session gets the login form, and its API calls 401", async () => {
  let now = 1_000_000;
  const { handler } = setup({ dashboard: { sessionTtl: 60_000, clock: () => now } });
  const { cookie, csrf } = await loggedIn(handler);
  now += 59_999;
  const live = await handler(new Request(`${BASE}/dashboard`, { headers: { cookie } }));
  assert.match(await live.text(), /csrf-token/);
  now += 1;
  const expired = await handler(new Request(`${BASE}/dashboard`, { headers: { cookie } }));
  assert.match(await expired.text(), /action="\/dashboard\/login"/);
  const call = await handler(apiCall("info", {}, { cookie, "x-csrf-token": csrf }));
  assert.equal(call.status, 401);
  await call.body?.cancel();
  const events = await handler(new Request(`${BASE}/dashboard/events`, { headers: { cookie } }));
  assert.equal(events.status, 401);
  await events.body?.cancel();
});

Deno.test("dashboard: sessions are bounded: a login past the limit ends the oldest", async () => {
  const { handler } = setup({ dashboard: { maxSessions: 2 } });
  const first = await loggedIn(handler);
  const second = await loggedIn(handler);
  const third = await loggedIn(handler);
  const pageOf = async (cookie: string) =>
    await (await handler(new Request(`${BASE}/dashboard`, { headers: { cookie } }))).text();
  assert.match(await pageOf(first.cookie), /action="\/dashboard\/login"/, "the oldest is gone");
  assert.match(await pageOf(second.cookie), /csrf-token/);
  assert.match(await pageOf(third.cookie), /csrf-token/);
});

Deno.test("dashboard: logout needs the CSRF token, then ends the session on the server", async () => {
  const { handler } = setup();
  const { cookie, csrf } = await loggedIn(handler);
  const logout = (token: string) =>
    handler(
      new Request(`${BASE}/dashboard/logout`, {
        method: "POST",
        body: new URLSearchParams({ csrf: token }),
        headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
      }),
    );
  const forged = await logout("forged");
  assert.equal(forged.status, 403);
  await forged.body?.cancel();
  const out = await logout(csrf);
  assert.equal(out.status, 303);
  assert.match(out.headers.get("set-cookie")!, new RegExp(`^${SESSION_COOKIE}=; Path=/dashboard; Max-Age=0;`));
  // The old cookie, replayed, no longer opens anything.
  const page = await (await handler(new Request(`${BASE}/dashboard`, { headers: { cookie } }))).text();
  assert.match(page, /action="\/dashboard\/login"/);
});

Deno.test("dashboard: without an API key it is open, like the API", async () => {
  const { handler, arrived } = setup({ apiKey: undefined });
  const page = await (await handler(new Request(`${BASE}/dashboard`))).text();
  assert.match(page, /id="connections"/);
  assert.doesNotMatch(page, /csrf-token|logout/);
  const ok = await handler(apiCall("publish", { data: "open" }));
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
  assert.equal(arrived.length, 1);
});

/** Reads server-sent events from `response` until `count` events named `name` arrived; returns every event. */
async function readEvents(
  reader: ReadableStreamDefaultReader<string>,
  name: string,
  count: number,
): Promise<{ event: string; data: string; id?: string }[]> {
  const events: { event: string; data: string; id?: string }[] = [];
  let buffer = "";
  while (events.filter((e) => e.event === name).length < count) {
    const { done, value } = await within(reader.read(), 5000, `${count} ${name} events`);
    if (done) throw new Error(`The stream ended after ${JSON.stringify(events.map((e) => e.event))}`);
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      const id = /^id: (.*)$/m.exec(block)?.[1];
      if (event !== undefined && data !== undefined) events.push({ event, data, ...(id === undefined ? {} : { id }) });
    }
  }
  return events;
}

/** Reads until the stream ends, with a deadline. */
async function ended(reader: ReadableStreamDefaultReader<string>, what: string): Promise<void> {
  await within(
    (async () => {
      while (!(await reader.read()).done) { /* the last events */ }
    })(),
    5000,
    what,
  );
}

Deno.test("dashboard: /dashboard/events sends the history, then a snapshot each interval with the cluster's numbers", async () => {
  const { handler } = setup({ apiKey: undefined, dashboard: { interval: 20 } });
  const controller = new AbortController();
  const response = await handler(new Request(`${BASE}/dashboard/events`, { signal: controller.signal }));
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/event-stream;charset=utf-8");
  assert.equal(response.headers.get("content-security-policy"), DASHBOARD_CSP);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  try {
    await handler(new Request(`${BASE}/?content=one`));
    const events = await readEvents(reader, "snapshot", 3);
    assert.equal(events[0]!.event, "history");
    const last = JSON.parse(events.at(-1)!.data);
    assert.equal(last.hub, true);
    assert.deepEqual(last.info, { workers: [], connections: 0, users: 0, channels: 0, workers_reached: 0 });
    assert.equal(last.totals.publishes, 1);
    assert.equal(last.totals.deliveries, 1);
    assert.equal(typeof last.rates.publishes, "number");
  } finally {
    await reader.cancel();
  }
});

Deno.test("dashboard: shutdown (the handler's signal) closes every event stream and refuses new ones", async () => {
  const shutdown = new AbortController();
  const { handler } = setup({ apiKey: undefined, signal: shutdown.signal, dashboard: { interval: 20 } });
  const readers = await Promise.all([1, 2].map(async () => {
    const response = await handler(new Request(`${BASE}/dashboard/events`));
    return response.body!.pipeThrough(new TextDecoderStream()).getReader();
  }));
  for (const reader of readers) await readEvents(reader, "snapshot", 1);
  shutdown.abort();
  for (const reader of readers) await ended(reader, "the stream to end on shutdown");
  const late = await handler(new Request(`${BASE}/dashboard/events`));
  assert.equal(late.status, 503);
  await late.body?.cancel();
});

Deno.test("dashboard: event streams are bounded, and a stream ends with its session", async () => {
  const { handler } = setup({ dashboard: { interval: 20, maxStreams: 2 } });
  const { cookie, csrf } = await loggedIn(handler);
  const open = async () => {
    const response = await handler(new Request(`${BASE}/dashboard/events`, { headers: { cookie } }));
    assert.equal(response.status, 200);
    return response.body!.pipeThrough(new TextDecoderStream()).getReader();
  };
  const readers = [await open(), await open()];
  try {
    const third = await handler(new Request(`${BASE}/dashboard/events`, { headers: { cookie } }));
    assert.equal(third.status, 429);
    assert.match(await third.text(), /Too many dashboard streams/);
    await readEvents(readers[0]!, "snapshot", 1);
    const out = await handler(
      new Request(`${BASE}/dashboard/logout`, {
        method: "POST",
        body: new URLSearchParams({ csrf }),
        headers: { cookie, "content-type": "application/x-www-form-urlencoded" },
      }),
    );
    assert.equal(out.status, 303);
    for (const reader of readers) await ended(reader, "the stream to end with its session");
  } finally {
    for (const reader of readers) await reader.cancel();
  }
});

Deno.test("dashboard: the workers' rates are taken per worker, so a worker that died or started is no negative rate", () => {
  const before = workerCountersOf({
    workers: [
      { worker_id: "a", connections: 1, users: 0, channels: 0, deliveries: 100, slow_closes: 2 },
      { worker_id: "dead", connections: 1, users: 0, channels: 0, deliveries: 5000, slow_closes: 9 },
    ],
  });
  const after = workerCountersOf({
    workers: [
      { worker_id: "a", connections: 1, users: 0, channels: 0, deliveries: 300, slow_closes: 3 },
      { worker_id: "new", connections: 1, users: 0, channels: 0, deliveries: 40, slow_closes: 0 },
      { worker_id: "old", connections: 1, users: 0, channels: 0 },
    ],
  });
  assert.deepEqual([...after.keys()], ["a", "new"], "a worker without counters is left out");
  assert.deepEqual(clusterRatesOf(before, after, 2), { socketDeliveries: 100, slowCloses: 0.5 });
  assert.deepEqual(clusterRatesOf(undefined, after, 2), { socketDeliveries: null, slowCloses: null });
  assert.equal(workerCountersOf(null).size, 0);
});

Deno.test("dashboard: a page that stops reading its event stream is cut off, and its place freed", async () => {
  const { handler } = setup({ apiKey: undefined, dashboard: { interval: 5, maxStreams: 1 } });
  const response = await handler(new Request(`${BASE}/dashboard/events`));
  const reader = response.body!.getReader();
  // Nothing is read: the queue fills, and the stream is errored rather than left waiting.
  let freed: Response | undefined;
  try {
    for (let i = 0; i < 200 && freed === undefined; i++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      const next = await handler(new Request(`${BASE}/dashboard/events`));
      if (next.status === 200) freed = next;
      else await next.body?.cancel();
    }
    assert.ok(freed, "the slow stream's place was freed");
    await assert.rejects(async () => {
      while (!(await reader.read()).done) { /* what was queued before the cut */ }
    }, /too slow/);
  } finally {
    await reader.cancel().catch(() => {});
    await freed?.body?.cancel();
  }
});

Deno.test("dashboard: a page whose socket takes its stream but never reads it is ended after maxStreamAge, and a new page gets its place", async () => {
  const shutdown = new AbortController();
  const { handler } = setup({
    apiKey: undefined,
    signal: shutdown.signal,
    dashboard: { interval: 5, maxStreams: 1, maxStreamAge: 300 },
  });
  const logger = createLogger("http", { level: "silent" });
  const server = serveHttp({ port: 0, logger }, handler);
  const request = new TextEncoder().encode("GET /dashboard/events HTTP/1.1\r\nhost: publisher.test\r\n\r\n");
  /** Asks for a stream on a connection of its own; what that connection is, and the status line of the answer. */
  const ask = async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    await conn.write(request);
    const buffer = new Uint8Array(64);
    const n = await within(conn.read(buffer), 5000, "the answer's status line");
    return { conn, status: new TextDecoder().decode(buffer.subarray(0, n ?? 0)).split("\r\n")[0] ?? "" };
  };
  // Its kernel buffers take megabytes, minutes of samples even at this rate, before a write would block.
  const frozen = await ask();
  const pages: Deno.Conn[] = [frozen.conn];
  try {
    assert.equal(frozen.status, "HTTP/1.1 200 OK");
    let status = "";
    const started = performance.now();
    while (performance.now() - started < 3000) {
      const next = await ask();
      pages.push(next.conn);
      status = next.status;
      if (status === "HTTP/1.1 200 OK") break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(status, "HTTP/1.1 200 OK", "a new page got the frozen page's place");
  } finally {
    shutdown.abort();
    for (const conn of pages) conn.close();
    await server.shutdown();
  }
});

Deno.test("dashboard: a page back after its stream ended gets only the samples it missed, by Last-Event-ID", async () => {
  const { handler } = setup({ apiKey: undefined, dashboard: { interval: 10, maxStreamAge: 100 } });
  const open = async (lastEventId?: string) => {
    const headers: Record<string, string> = lastEventId === undefined ? {} : { "last-event-id": lastEventId };
    const response = await handler(new Request(`${BASE}/dashboard/events`, { headers }));
    assert.equal(response.status, 200);
    return response.body!.pipeThrough(new TextDecoderStream()).getReader();
  };
  const first = await open();
  let text = "";
  await within(
    (async () => {
      for (let read = await first.read(); !read.done; read = await first.read()) text += read.value;
    })(),
    5000,
    "the stream to end at its age",
  );
  const last = [...text.matchAll(/^id: (.*)$/gm)].at(-1)?.[1];
  assert.ok(last, "the stream's samples carry ids");
  assert.match(last, /^[0-9a-f]{8}-\d+$/);
  const [epoch, seq] = last.split("-");
  // Samples are taken while it is away: another page keeps them coming.
  const keeper = await open();
  await readEvents(keeper, "snapshot", 2);
  const back = await open(last);
  try {
    const events = await readEvents(back, "snapshot", 2);
    assert.equal(events[0]!.event, "snapshot", "no history: only what it missed");
    assert.deepEqual(events.slice(0, 2).map((e) => e.id), [
      `${epoch}-${Number(seq) + 1}`,
      `${epoch}-${Number(seq) + 2}`,
    ]);
  } finally {
    await back.cancel();
  }
  const stranger = await open("00000000-1");
  try {
    assert.equal((await readEvents(stranger, "history", 1))[0]!.event, "history", "an id not ours: the whole history");
  } finally {
    await stranger.cancel();
    await keeper.cancel();
  }
});

Deno.test("dashboard: a page's EventSource refused a place is told to come back (200, a full event, retry 5000), and holds none", async () => {
  const { handler } = setup({ dashboard: { interval: 20, maxStreams: 1 } });
  const { cookie } = await loggedIn(handler);
  const open = (accept?: string) =>
    handler(
      new Request(`${BASE}/dashboard/events`, { headers: { cookie, ...(accept ? { accept } : {}) } }),
    );
  const taken = await open("text/event-stream");
  try {
    assert.equal(taken.status, 200);
    const refused = await open("text/event-stream");
    assert.equal(refused.status, 200);
    assert.match(refused.headers.get("content-type")!, /^text\/event-stream/);
    // The whole answer: the stream ends, and the browser asks again after the retry.
    assert.equal(
      await within(refused.text(), 1000, "the refusal's stream to end"),
      'retry: 5000\nevent: full\ndata: "Too many dashboard streams: 1 are open"\n\n',
    );
    // Anything else that asks is refused as before.
    const plain = await open();
    assert.equal(plain.status, 429);
    assert.equal(plain.headers.get("retry-after"), "5");
    await plain.body?.cancel();
    // It held no place: once the one stream is gone, the next page gets it.
    await taken.body!.cancel();
    const next = await open("text/event-stream");
    assert.equal(next.status, 200);
    const reader = next.body!.pipeThrough(new TextDecoderStream()).getReader();
    await readEvents(reader, "history", 1);
    await reader.cancel();
  } finally {
    await taken.body?.cancel().catch(() => {});
  }
});

Deno.test("dashboard: one login holds at most maxStreamsPerSession streams (4), and the next gets 429; others still get theirs", async () => {
  const { handler } = setup({ dashboard: { interval: 20 } });
  const one = await loggedIn(handler);
  const other = await loggedIn(handler);
  const open = (cookie: string) => handler(new Request(`${BASE}/dashboard/events`, { headers: { cookie } }));
  const responses: Response[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      responses.push(await open(one.cookie));
      assert.equal(responses.at(-1)!.status, 200, `stream ${i + 1} of the login`);
    }
    const fifth = await open(one.cookie);
    assert.equal(fifth.status, 429);
    assert.equal(fifth.headers.get("retry-after"), "5");
    assert.match(await fifth.text(), /Too many dashboard streams: 4 are open for this login/);
    responses.push(await open(other.cookie));
    assert.equal(responses.at(-1)!.status, 200, "another login still gets a place");
    await responses.shift()!.body!.cancel();
    responses.push(await open(one.cookie));
    assert.equal(responses.at(-1)!.status, 200, "a place the login gave back is its again");
  } finally {
    for (const response of responses) await response.body?.cancel();
  }
});
