import assert from "node:assert/strict";
import { type Service, startService } from "./_service.ts";
import { HubClient } from "../channel/client.ts";
import { quiet, until, within } from "../channel/testing.ts";
import { BROADCAST_SUBJECT, workerSubject } from "../shared/address.ts";
import type { Json } from "../shared/json.ts";

/** A made-up worker id the stand-in pusher subscribes for. */
const WORKER = "0123456789abcdef";
const PUBLISH_TIMEOUT = 500;

interface Answer {
  status: number;
  headers: Headers;
  body: string;
}

/** Fetches and reads the whole body, so no response is left open. */
async function call(url: string, init?: RequestInit): Promise<Answer> {
  const what = `${init?.method ?? "GET"} ${url.replace(/\?.*/, "")}`;
  const response = await within(fetch(url, init), 5000, `the answer to ${what}`);
  const body = await within(response.text(), 5000, `the body of the answer to ${what}`);
  return { status: response.status, headers: response.headers, body };
}

/** A port that was free a moment ago, where no hub listens. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/**
 * A hub with no startup grace: the grace holds publishes for 1.5 s, longer
 * than these tests' publish timeout.
 */
function startHub(port = 0): Promise<Service> {
  return startService("channel", ["--port", String(port), "--startup-grace", "0"]);
}

/**
 * A publisher for the hub on `hubPort`, and the base URL of its API. Its
 * environment has no API key unless `env` gives one, whatever the test
 * runner's has.
 */
async function startPublisher(
  hubPort: number,
  extra: string[] = [],
  env: Record<string, string> = {},
): Promise<{ service: Service; base: string }> {
  const service = await startService(
    "publisher",
    ["--port", "0", "--hub", `127.0.0.1:${hubPort}`, "--publish-timeout", String(PUBLISH_TIMEOUT), ...extra],
    { env: { PUBLISHER_API_KEY: "", ...env } },
  );
  return { service, base: `http://127.0.0.1:${await service.port()}/` };
}

/** A channel client standing in for a pusher: it records what it gets on the broadcast and its worker channel. */
async function standInPusher(hubPort: number): Promise<{ client: HubClient; events: Json[]; targeted: Json[] }> {
  const client = new HubClient({ port: hubPort, logger: quiet, reconnectDelay: 50, maxReconnectDelay: 200 });
  const events: Json[] = [];
  const targeted: Json[] = [];
  client.subscribe(BROADCAST_SUBJECT, (data) => events.push(data));
  client.subscribe(workerSubject(WORKER), (data) => targeted.push(data));
  // The hub handles one connection's frames in order: once this is acknowledged, the subscriptions are in place.
  await client.publish("stand-in-ready", null);
  return { client, events, targeted };
}

Deno.test("publisher delivers broadcasts and targeted sends through a real hub, and answers 404 for an unknown worker", async () => {
  await using hub = await startHub();
  const hubPort = await hub.port();
  const { service, base } = await startPublisher(hubPort);
  await using _publisher = service;
  const pusher = await standInPusher(hubPort);
  await using _pusher = pusher.client;

  const broadcast = await call(`${base}?content=hello+w%C3%B6rld`);
  assert.equal(broadcast.body, "ok");
  assert.equal(broadcast.status, 200);
  assert.equal(broadcast.headers.get("X-Pushers-Reached"), "1");
  assert.equal(broadcast.headers.get("Access-Control-Allow-Origin"), "*");
  await until(() => pusher.events.length === 1, 5000, "the stand-in pusher to get the broadcast");
  assert.deepEqual(pusher.events, [{ content: "hello wörld" }]);

  const targeted = await call(`${base}?content=just+you&to_worker_id=${WORKER}&to_connection_id=7`);
  assert.equal(targeted.body, "ok");
  assert.equal(targeted.headers.get("X-Pushers-Reached"), "1");
  await until(() => pusher.targeted.length === 1, 5000, "the stand-in pusher to get the targeted send");
  assert.deepEqual(pusher.targeted, [{ to_connection_id: 7, content: "just you" }]);

  const posted = await call(base, { method: "POST", body: new URLSearchParams({ content: "posted 0" }) });
  assert.equal(posted.body, "ok");
  await until(() => pusher.events.length === 2, 5000, "the stand-in pusher to get the POSTed broadcast");
  assert.deepEqual(pusher.events[1], { content: "posted 0" });

  // As curl or a PHP backend send it, not percent-encoded: "€" is E2 82 AC, whose 0x82 windows-1252 reads as "‚".
  using raw = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(base).port) });
  await raw.write(new TextEncoder().encode("GET /?content=€日本 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
  const answer = await within(new Response(raw.readable).text(), 5000, "the answer to a raw UTF-8 query");
  assert.match(answer, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nok$/);
  await until(() => pusher.events.length === 3, 5000, "the stand-in pusher to get the raw UTF-8 broadcast");
  assert.deepEqual(pusher.events[2], { content: "€日本" });

  const stale = await call(`${base}?content=hi&to_worker_id=fedcba9876543210&to_connection_id=7`);
  assert.equal(stale.status, 404);
  assert.equal(stale.body, "No pusher worker fedcba9876543210 is connected: the address is stale or wrong\n");
  assert.equal(pusher.targeted.length, 1);
});

Deno.test("publisher answers malformed requests with their 4xx over HTTP", async () => {
  const { service, base } = await startPublisher(freePort());
  await using _publisher = service;
  const cases: [string, RequestInit, number, string][] = [
    ["?content=", {}, 400, "Missing content: pass a non-empty content parameter"],
    ["?content=0%ZZ", {}, 400, "Invalid query: bad percent-encoding or non-UTF-8 in content"],
    [
      `?content=hi&to_worker_id=${WORKER}`,
      {},
      400,
      "Incomplete address: to_worker_id and to_connection_id go together (both for one connection, neither to broadcast)",
    ],
    [
      "?content=hi&to_worker_id=1&to_connection_id=2",
      {},
      400,
      "Invalid to_worker_id: expected a worker id, 16 lowercase hex digits",
    ],
    [
      `?content=hi&to_worker_id=${WORKER}&to_connection_id=02`,
      {},
      400,
      "Invalid to_connection_id: expected a connection id, a decimal integer of 1 to 15 digits",
    ],
    ["push?content=hi", {}, 404, "Not found: /push"],
    ["?content=hi", { method: "PUT" }, 405, "Method PUT not allowed: use GET or POST"],
    [
      "",
      { method: "POST", body: new URLSearchParams({ content: "a".repeat(65537) }) },
      413,
      "Content too large: 65537 bytes, the limit is 65536",
    ],
    [
      "?content=hi",
      { method: "POST", body: '{"content":"hi"}', headers: { "Content-Type": "application/json" } },
      415,
      "Unsupported content type: application/json; send application/x-www-form-urlencoded or multipart/form-data",
    ],
  ];
  for (const [path, init, status, reason] of cases) {
    const answer = await call(`${base}${path}`, init);
    assert.equal(answer.status, status, `${init.method ?? "GET"} /${path.slice(0, 60)}`);
    assert.equal(answer.body, `${reason}\n`);
    assert.equal(answer.headers.get("Access-Control-Allow-Origin"), "*");
  }

  const head = await call(base, { method: "HEAD" });
  assert.equal(head.status, 405);
  assert.equal(head.headers.get("Allow"), "GET, POST, OPTIONS");

  const preflight = await call(base, { method: "OPTIONS" });
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get("Access-Control-Allow-Origin"), "*");
  assert.equal(preflight.headers.get("Access-Control-Allow-Methods"), "GET, POST");
  assert.equal(preflight.headers.get("Access-Control-Allow-Headers"), "Authorization, Content-Type, X-API-Key");
});

/** What a raw connection got: the request's bytes (latin1) are sent in one write and read until the server closes. */
async function rawCall(port: number, request: string): Promise<Answer> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const writing = conn.write(Uint8Array.from(request, (c) => c.charCodeAt(0))).catch(() => 0);
  const decoder = new TextDecoder();
  let text = "";
  const read = async () => {
    const buffer = new Uint8Array(65536);
    while (true) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) return;
      text += decoder.decode(buffer.subarray(0, n), { stream: true });
    }
  };
  await within(read(), 5000, `the server to answer and close: ${JSON.stringify(request.slice(0, 60))}`);
  await writing;
  const end = text.indexOf("\r\n\r\n");
  const [line, ...fields] = text.slice(0, end).split("\r\n");
  const headers = new Headers(
    fields.map((field) => [field.slice(0, field.indexOf(":")), field.slice(field.indexOf(":") + 1).trim()]),
  );
  return { status: Number(line!.split(" ")[1]), headers, body: text.slice(end + 4) };
}

Deno.test("publisher answers the HTTP server's own refusals on /api/ paths as API errors in JSON, and on / as text", async () => {
  const { service } = await startPublisher(freePort(), [
    "--max-body-bytes",
    "250000",
    "--max-head-bytes",
    "4096",
    "--head-timeout",
    "300",
  ]);
  await using _publisher = service;
  const port = await service.port();
  const over = 250_001;
  const json = `{"data":"${"a".repeat(over - 11)}"}`;
  assert.equal(json.length, over);
  const post = (path: string, fields: string) =>
    `POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n${fields}`;
  const cases: [string, number, RegExp][] = [
    [
      `${post("/api/publish", `Content-Length: ${over}\r\n\r\n`)}${json}`,
      413,
      /^Body too large: over the 250000-byte limit$/,
    ],
    [
      `${post("/api/publish", "Transfer-Encoding: chunked\r\n\r\n")}${over.toString(16)}\r\n${json}\r\n0\r\n\r\n`,
      413,
      /^Body too large: over the 250000-byte limit$/,
    ],
    [post("/api/publish", "Content-Length: 1x\r\n\r\n"), 400, /^Bad Content-Length: 1x$/],
    [post("/api/publish", "Transfer-Encoding: gzip\r\n\r\n"), 501, /^Transfer coding not supported: gzip;/],
    [post("/api/publish?api_key=k", "Content-Length: 2\r\nExpect: magic\r\n\r\n{}"), 417, /^Expectation not supported/],
    [post("/api/info", `X: ${"a".repeat(5000)}\r\n\r\n`), 431, /^Request head too large: over 4096 bytes$/],
    [post("/dashboard/api/info", "Content-Length: 1x\r\n\r\n"), 400, /^Bad Content-Length: 1x$/],
    ["POST /api/info HTTP/2.0\r\nHost: a\r\n\r\n", 505, /^HTTP version not supported: HTTP\/2\.0$/],
    ["POST /api/info HTTP/1.1\r\nHo", 408, /^Request head not received within 300 ms$/],
  ];
  for (const [request, status, message] of cases) {
    const what = request.slice(0, 80);
    const answer = await rawCall(port, request);
    assert.equal(answer.status, status, what);
    assert.equal(answer.headers.get("content-type"), "application/json", what);
    assert.equal(answer.headers.get("connection"), "close", what);
    const body = JSON.parse(answer.body);
    assert.deepEqual(Object.keys(body), ["error"], what);
    assert.equal(body.error.code, status, what);
    assert.match(body.error.message, message, what);
  }
  // The original's API keeps its one-line text.
  const plain = await rawCall(port, `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ${over}\r\n\r\n`);
  assert.deepEqual([plain.status, plain.headers.get("content-type"), plain.body], [
    413,
    "text/plain;charset=utf-8",
    "Body too large: over the 250000-byte limit\n",
  ]);
});

Deno.test("publisher answers 405 with Allow to a method in another case, as to any other method it does not take", async () => {
  // No hub: a request that were served would be a 503, not a 405.
  const { service } = await startPublisher(freePort());
  await using _publisher = service;
  const port = await service.port();
  const end = "Host: a\r\nConnection: close\r\n";
  const cases: [string, string, string, string][] = [
    [
      `get /?content=x HTTP/1.1\r\n${end}\r\n`,
      "GET, POST, OPTIONS",
      "text/plain;charset=utf-8",
      "Method get not allowed: use GET or POST\n",
    ],
    [
      `Get /?content=%E2%82%AC HTTP/1.1\r\n${end}\r\n`,
      "GET, POST, OPTIONS",
      "text/plain;charset=utf-8",
      "Method Get not allowed: use GET or POST\n",
    ],
    [`gEt /healthz HTTP/1.1\r\n${end}\r\n`, "GET", "text/plain;charset=utf-8", "Method gEt not allowed: use GET\n"],
    [
      `post /api/publish HTTP/1.1\r\n${end}Content-Length: 12\r\n\r\n{"data":"d"}`,
      "POST, OPTIONS",
      "application/json",
      '{"error":{"code":405,"message":"Method post not allowed: use POST with a JSON body"}}',
    ],
    [
      `post /api/publish HTTP/1.1\r\n${end}Transfer-Encoding: chunked\r\n\r\nc\r\n{"data":"d"}\r\n0\r\n\r\n`,
      "POST, OPTIONS",
      "application/json",
      '{"error":{"code":405,"message":"Method post not allowed: use POST with a JSON body"}}',
    ],
    [
      `get /?content=x HTTP/1.1\r\n${end}Content-Length: 2\r\n\r\nab`,
      "GET, POST, OPTIONS",
      "text/plain;charset=utf-8",
      "Method get not allowed: use GET or POST\n",
    ],
    // As any other method is answered.
    [
      `FOO / HTTP/1.1\r\n${end}\r\n`,
      "GET, POST, OPTIONS",
      "text/plain;charset=utf-8",
      "Method FOO not allowed: use GET or POST\n",
    ],
  ];
  for (const [request, allow, type, body] of cases) {
    const answer = await rawCall(port, request);
    const what = request.slice(0, 40);
    assert.deepEqual([answer.status, answer.headers.get("allow"), answer.headers.get("content-type"), answer.body], [
      405,
      allow,
      type,
      body,
    ], what);
  }
});

Deno.test("publisher answers 503 within the publish timeout while the hub is down, and ok again once it is back", async () => {
  await using first = await startHub();
  const hubPort = await first.port();
  const { service, base } = await startPublisher(hubPort);
  await using _publisher = service;
  const pusher = await standInPusher(hubPort);
  await using _pusher = pusher.client;
  assert.equal((await call(`${base}?content=before`)).headers.get("X-Pushers-Reached"), "1");

  assert.equal((await first.stop("SIGKILL")).signal, "SIGKILL");
  const started = Date.now();
  const down = await call(`${base}?content=during`);
  const took = Date.now() - started;
  assert.equal(down.status, 503);
  assert.equal(down.headers.get("Retry-After"), "1");
  assert.match(down.body, /^Hub unavailable: Cannot publish: no acknowledgement within 500 ms.*\n$/);
  assert.ok(took >= PUBLISH_TIMEOUT - 50 && took < PUBLISH_TIMEOUT + 1500, `503 after ${took} ms`);

  await using second = await startHub(hubPort);
  assert.equal(await second.port(), hubPort);
  // Ok once the publisher is back; reaching 1 once the stand-in pusher has re-subscribed too.
  const deadline = Date.now() + 10_000;
  let last: Answer | undefined;
  for (let i = 0; last?.headers.get("X-Pushers-Reached") !== "1"; i++) {
    if (Date.now() > deadline) {
      throw new Error(`Publishes did not reach the pusher again within 10 s; last: ${last?.body}`);
    }
    if (last) await new Promise((resolve) => setTimeout(resolve, 50));
    last = await call(`${base}?content=after-${i}`);
    assert.ok(last.status === 200 || last.status === 503, `unexpected ${last.status} ${last.body}`);
  }
  assert.equal(last.body, "ok");
  await until(() => pusher.events.length >= 2, 5000, "the stand-in pusher to get a broadcast after the restart");
  assert.deepEqual(pusher.events[0], { content: "before" });
  assert.match(JSON.stringify(pusher.events.at(-1)), /^\{"content":"after-\d+"\}$/);
  assert.ok(
    !pusher.events.some((event) => JSON.stringify(event).includes("during")),
    "the 503 publish was not sent later",
  );
});

Deno.test("publisher task prints help and exits 0, and exits 2 on a bad --hub or --max-channel-length", async () => {
  await using help = await startService("publisher", ["--help"]);
  await help.waitForLine(/^Usage: deno task publisher/);
  assert.equal((await help.process.status).code, 0);
  await using bad = await startService("publisher", ["--port", "0", "--hub", "localhost"]);
  await bad.waitForLine(/Invalid --hub: expected HOST:PORT/);
  assert.equal((await bad.process.status).code, 2);
  await using long = await startService("publisher", ["--port", "0", "--max-channel-length", "249"]);
  await long.waitForLine(
    /Invalid --max-channel-length: at most 248 \(the bus carries a channel as channel\.<name>\), got 249/,
  );
  assert.equal((await long.process.status).code, 2);
});

Deno.test("publisher on SIGTERM lets the request in flight finish, then exits 0", async () => {
  const { service, base } = await startPublisher(freePort(), ["--log-level", "debug"]);
  await using publisher = service;
  const answering = call(`${base}?content=in-flight`);
  await publisher.waitForLine(/msg=publishing/);
  const status = await within(publisher.stop("SIGTERM"), 5000, "the publisher to exit");
  const answer = await answering;
  assert.equal(status.code, 0);
  assert.equal(answer.status, 503, "the hub is down, but the request got its answer");
  assert.ok(publisher.lines.some((line) => /msg="shutting down" signal=SIGTERM/.test(line)));
  assert.ok(publisher.lines.some((line) => /msg=stopped/.test(line)));
});

/** Sends SIGTERM and waits up to `ms` for the exit; past it, kills the process and fails. */
async function stopWithin(service: Service, ms: number): Promise<Deno.CommandStatus> {
  try {
    return await within(service.stop("SIGTERM"), ms, `the ${ms} ms exit after SIGTERM`);
  } catch (error) {
    // stop() has begun, so disposing the service would not kill it.
    service.process.kill("SIGKILL");
    throw error;
  }
}

/** Polls `url` until it answers `status`, failing after `ms` with the last answer. */
async function untilStatus(url: string, status: number, ms: number, what: string): Promise<Answer> {
  const deadline = Date.now() + ms;
  let last: Answer | undefined;
  while (true) {
    last = await call(url);
    if (last.status === status) return last;
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${ms} ms waiting for ${what}; last answer: ${last.status} ${last.body}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const API_KEY = "pub-k3y+/=";

Deno.test("publisher with PUBLISHER_API_KEY answers 401 to a publish without the key and delivers one with it, and never logs it", async () => {
  await using hub = await startHub();
  const hubPort = await hub.port();
  const { service, base } = await startPublisher(hubPort, ["--log-level", "debug"], { PUBLISHER_API_KEY: API_KEY });
  await using publisher = service;
  const pusher = await standInPusher(hubPort);
  await using _pusher = pusher.client;
  assert.match(await publisher.waitForLine(/msg=listening/), /auth=api-key/);

  const missing = await call(`${base}?content=no+key`);
  assert.equal(missing.status, 401);
  assert.equal(missing.headers.get("WWW-Authenticate"), "Bearer");
  assert.equal(
    missing.body,
    "Unauthorized: this publisher needs an API key (Authorization: Bearer KEY, X-API-Key: KEY or api_key=KEY)\n",
  );
  const wrong = await call(`${base}?content=wrong+key&api_key=guess`);
  assert.equal(wrong.status, 401);
  assert.equal(wrong.body, "Unauthorized: wrong API key\n");

  const bearer = await call(`${base}?content=bearer`, { headers: { Authorization: `Bearer ${API_KEY}` } });
  assert.equal(bearer.body, "ok");
  assert.equal(bearer.status, 200);
  const query = await call(`${base}?content=query&api_key=${encodeURIComponent(API_KEY)}`);
  assert.equal(query.body, "ok");
  // Centrifugo's documented call, as curl --header "X-API-Key: KEY" --data '{...}' sends it.
  const centrifugo = await call(`${base}api/publish`, {
    method: "POST",
    headers: { "X-API-Key": API_KEY, "Content-Type": "application/x-www-form-urlencoded" },
    body: '{"data": {"value": "test_value"}}',
  });
  assert.equal(centrifugo.body, '{"result":{"workers_reached":1}}');
  await until(() => pusher.events.length === 3, 5000, "the stand-in pusher to get the three authenticated publishes");
  assert.deepEqual(pusher.events, [{ content: "bearer" }, { content: "query" }, { data: { value: "test_value" } }]);

  const healthz = await call(`${base}healthz`);
  assert.equal(healthz.status, 200, "/healthz needs no key");
  const metrics = await call(`${base}metrics`);
  assert.equal(metrics.status, 200, "/metrics needs no key");
  assert.match(metrics.body, /^publisher_requests_total\{status="401"\} 2$/m);

  await publisher.stop("SIGTERM");
  const logs = publisher.lines.join("\n");
  assert.match(logs, /status=401/);
  for (const secret of [API_KEY, encodeURIComponent(API_KEY)]) assert.ok(!logs.includes(secret), logs);
});

Deno.test("publisher refuses a non-loopback --hostname without an API key (exit 2, one line) unless --insecure", async () => {
  await using refused = await startService("publisher", ["--hostname", "0.0.0.0", "--port", "0"], {
    env: { PUBLISHER_API_KEY: "" },
  });
  const status = await within(refused.process.status, 10_000, "the refusing publisher to exit");
  assert.equal(status.code, 2);
  await refused.stop();
  assert.equal(refused.lines.length, 1, refused.lines.join("\n"));
  assert.match(
    refused.lines[0]!,
    /level=error svc=publisher msg="Refusing to listen on 0\.0\.0\.0 without an API key: set --api-key or PUBLISHER_API_KEY, or pass --insecure"$/,
  );

  for (const [args, env] of [[["--insecure"], {}], [[], { PUBLISHER_API_KEY: API_KEY }]] as const) {
    await using publisher = await startService(
      "publisher",
      ["--hostname", "0.0.0.0", "--port", "0", "--hub", `127.0.0.1:${freePort()}`, ...args],
      { env: { PUBLISHER_API_KEY: "", ...env } },
    );
    const port = await publisher.port();
    assert.equal((await call(`http://127.0.0.1:${port}/healthz`)).status, 503);
    assert.equal((await publisher.stop("SIGTERM")).code, 0);
  }
});

Deno.test("publisher /healthz goes 503 when the hub is killed and 200 again once it is back", async () => {
  await using first = await startHub();
  const hubPort = await first.port();
  const { service, base } = await startPublisher(hubPort);
  await using _publisher = service;
  const healthz = `${base}healthz`;

  await untilStatus(healthz, 200, 10_000, "/healthz to answer 200 with the hub up");
  assert.equal((await first.stop("SIGKILL")).signal, "SIGKILL");
  const down = await untilStatus(healthz, 503, 10_000, "/healthz to answer 503 with the hub killed");
  assert.equal(down.body, "hub link down\n");
  assert.equal(down.headers.get("Content-Type"), "text/plain;charset=utf-8");
  assert.match((await call(`${base}metrics`)).body, /^publisher_hub_connected 0$/m);

  await using _second = await startHub(hubPort);
  const up = await untilStatus(healthz, 200, 10_000, "/healthz to answer 200 with the hub restarted");
  assert.equal(up.body, "ok");
  const metrics = await call(`${base}metrics`);
  assert.match(metrics.body, /^publisher_hub_connected 1$/m);
  assert.match(metrics.body, /^publisher_hub_reconnects_total 1$/m);
  assert.match(metrics.body, /^publisher_requests_total\{status="503"\} [1-9]\d*$/m);
});

Deno.test("publisher /healthz says 503 while the hub's port takes connections but nothing answers on them (a hung hub)", async () => {
  // What a stopped hub's listen backlog does: connections complete, nothing is read or answered.
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { service, base } = await startPublisher(listener.addr.port);
  await using _publisher = service;
  using link = await within(listener.accept(), 10_000, "the publisher to connect");
  // Its hello has come: the link is open as far as TCP goes.
  const hello = await within(link.read(new Uint8Array(4096)), 10_000, "the publisher's hello");
  assert.ok(hello !== null && hello > 0);
  const answer = await call(`${base}healthz`);
  assert.deepEqual([answer.status, answer.body], [503, "hub link down\n"]);
  assert.match((await call(`${base}metrics`)).body, /^publisher_hub_connected 0$/m);
});

Deno.test("publisher on SIGTERM still gets the acknowledgement of a publish in flight, answers it ok, and exits 0", async () => {
  // The hub is not up yet: the publish waits for it.
  const hubPort = freePort();
  const { service, base } = await startPublisher(hubPort, [
    "--log-level",
    "debug",
    "--publish-timeout",
    "4000",
    "--shutdown-timeout",
    "6000",
  ]);
  await using publisher = service;
  const answering = call(`${base}?content=in-flight`);
  await publisher.waitForLine(/msg=publishing/);
  const started = Date.now();
  publisher.process.kill("SIGTERM");
  await publisher.waitForLine(/msg="shutting down" signal=SIGTERM timeout=6000/);
  await using _hub = await startHub(hubPort);
  const answer = await answering;
  assert.equal(answer.body, "ok");
  assert.equal(answer.status, 200);
  assert.equal(answer.headers.get("X-Pushers-Reached"), "0");
  // Not stop(): a second SIGTERM would kill it at once.
  const status = await within(publisher.process.status, 7000, "the publisher to exit after SIGTERM");
  assert.equal(status.code, 0);
  assert.ok(Date.now() - started < 6000, `exited ${Date.now() - started} ms after SIGTERM`);
  assert.ok(!publisher.lines.some((line) => /shutdown timeout/.test(line)), "the shutdown was not cut short");
});

Deno.test("publisher on SIGTERM exits 0 within --shutdown-timeout even when a request in flight would wait longer", async () => {
  const { service, base } = await startPublisher(freePort(), [
    "--log-level",
    "debug",
    "--publish-timeout",
    "60000",
    "--shutdown-timeout",
    "300",
  ]);
  await using publisher = service;
  // The hub is down and the publish would wait a minute for it.
  const answering = call(`${base}?content=stuck`);
  await publisher.waitForLine(/msg=publishing/);
  const started = Date.now();
  const status = await stopWithin(publisher, 5000);
  const took = Date.now() - started;
  assert.equal(status.code, 0);
  // Bounds with room for a loaded machine: the process exits at 300 ms, not at the 60 s publish timeout.
  assert.ok(took >= 200 && took < 2000, `exited ${took} ms after SIGTERM, the bound is 300 ms`);
  assert.ok(publisher.lines.some((line) => /level=warn .*msg="shutdown timeout: cutting off/.test(line)));
  assert.ok(publisher.lines.some((line) => /msg=stopped/.test(line)));
  // Cut off, it still got an answer: closing the hub link rejected its publish.
  const answer = await answering;
  assert.equal(answer.status, 503);
  assert.match(answer.body, /^Hub unavailable: Cannot publish: the client was closed\n$/);
});

/** Reads from `conn` until the text read so far contains `end`. */
async function readUntil(conn: Deno.Conn, end: string): Promise<string> {
  const buffer = new Uint8Array(4096);
  let text = "";
  while (!text.includes(end)) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error(`The connection closed before ${JSON.stringify(end)}; got ${JSON.stringify(text)}`);
    text += new TextDecoder().decode(buffer.subarray(0, n));
  }
  return text;
}

Deno.test("publisher on SIGTERM exits 0 within --shutdown-timeout even when a client never finishes its request body", async () => {
  const { service, base } = await startPublisher(freePort(), ["--shutdown-timeout", "300"]);
  await using publisher = service;
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(base).port) });
  const head = "POST / HTTP/1.1\r\nHost: publisher\r\nContent-Type: application/x-www-form-urlencoded\r\n" +
    "Content-Length: 100\r\nExpect: 100-continue\r\n\r\n";
  await conn.write(new TextEncoder().encode(head));
  // The server answers 100 Continue once the handler reads the body: the request is in flight.
  assert.match(await within(readUntil(conn, "\r\n\r\n"), 5000, "100 Continue"), /^HTTP\/1\.1 100 Continue\r\n/);
  await conn.write(new TextEncoder().encode("content=never+end"));

  const started = Date.now();
  const status = await stopWithin(publisher, 5000);
  const took = Date.now() - started;
  assert.equal(status.code, 0);
  assert.ok(took >= 200 && took < 2000, `exited ${took} ms after SIGTERM, the bound is 300 ms`);
  assert.ok(publisher.lines.some((line) => /level=warn .*msg="shutdown timeout: cutting off/.test(line)));
  // Deno stops reading request bodies on shutdown, so the request was answered at once (the README says so).
  const answer = await within(
    readUntil(conn, "\r\n\r\nCannot read the body: "),
    5000,
    "the answer to the unfinished request",
  );
  assert.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n[^]*\r\n\r\nCannot read the body: /);
});

/**
 * Opens more connections than the publisher has descriptors, each stuck in
 * its request head, until its accepts fail; then closes them.
 */
async function exhaustDescriptors(publisher: Service, port: number): Promise<void> {
  const halfHead = new TextEncoder().encode("GET /?content=x HTTP/1.1\r\nHo");
  const flood: Deno.Conn[] = [];
  try {
    while (flood.length < 1000 && !publisher.lines.some((line) => line.includes("accept failed"))) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      flood.push(conn);
      await conn.write(halfHead);
    }
    await publisher.waitForLine(/level=error .*msg="accept failed" error=".*Too many open files/);
  } finally {
    for (const conn of flood) {
      try {
        conn.close();
      } catch { /* reset by the publisher */ }
    }
  }
}

Deno.test("publisher out of file descriptors logs it once, keeps its port, and answers once the flood is gone", async () => {
  await using hub = await startHub();
  await using publisher = await startService(
    "publisher",
    ["--port", "0", "--hub", `127.0.0.1:${await hub.port()}`],
    { openFiles: 200 },
  );
  const port = await publisher.port();
  await exhaustDescriptors(publisher, port);
  const answer = await call(`http://127.0.0.1:${port}/?content=after`);
  assert.deepEqual([answer.status, answer.body], [200, "ok"]);
  await publisher.waitForLine(/level=info .*msg="accepting again" failedAccepts=\d+/);
  assert.equal(publisher.lines.filter((line) => line.includes("accept failed")).length, 1);
});

Deno.test("publisher keeps to --log-level through its shutdown", async () => {
  // At warn it does not log where it listens: it is asked on a port known beforehand.
  const port = freePort();
  await using publisher = await startService("publisher", [
    "--port",
    String(port),
    "--hub",
    `127.0.0.1:${freePort()}`,
    "--log-level",
    "warn",
  ]);
  const up = async () => {
    try {
      await (await fetch(`http://127.0.0.1:${port}/healthz`)).body?.cancel();
      return true;
    } catch {
      return false;
    }
  };
  await until(up, 10_000, "the publisher to listen");
  assert.equal((await publisher.stop()).code, 0);
  assert.deepEqual(publisher.lines.filter((line) => /level=(info|debug)/.test(line)), []);
});

Deno.test("publisher on SIGTERM answers a request it took before it ran out of descriptors", async () => {
  // No hub: the publish waits out its timeout, within the shutdown bound.
  await using publisher = await startService(
    "publisher",
    [
      "--port",
      "0",
      "--hub",
      `127.0.0.1:${freePort()}`,
      "--publish-timeout",
      "2000",
      "--shutdown-timeout",
      "4000",
      "--log-level",
      "debug",
    ],
    { openFiles: 200 },
  );
  const port = await publisher.port();
  const answer = call(`http://127.0.0.1:${port}/?content=in-flight`);
  await publisher.waitForLine(/msg=publishing/);
  await exhaustDescriptors(publisher, port);
  publisher.process.kill("SIGTERM");
  assert.equal((await within(answer, 10_000, "the answer")).status, 503);
  assert.equal((await publisher.process.status).code, 0);
});

Deno.test("publisher answers 413 to content that the hub's frame limit cannot carry once encoded, and keeps publishing", async () => {
  await using hub = await startHub();
  await using publisher = await startService("publisher", [
    "--port",
    "0",
    "--hub",
    `127.0.0.1:${await hub.port()}`,
    "--max-content-bytes",
    "200000",
  ]);
  const url = `http://127.0.0.1:${await publisher.port()}/`;
  const form = { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" } };
  // 180,000 control bytes: under --max-content-bytes, but JSON writes each as
  // \u0001, six bytes, past the hub's 1 MiB frame.
  const big = await call(url, { ...form, body: `content=${"%01".repeat(180_000)}` });
  assert.equal(big.status, 413);
  assert.match(
    big.body,
    /^Content too large for the hub: Cannot publish: the message encodes to a \d+-byte frame, over the 1048576-byte limit\n?$/,
  );
  const small = await call(url, { ...form, body: "content=fine" });
  assert.deepEqual([small.status, small.body], [200, "ok"]);
  assert.ok(!publisher.lines.some((line) => line.includes("disconnected from hub")), "the hub link stayed up");
});

Deno.test("publisher with the hub's lower frame limit answers 413 to what the hub could not take, and the link stays up", async () => {
  await using hub = await startService("channel", [
    "--port",
    "0",
    "--startup-grace",
    "0",
    "--max-frame-bytes",
    "32768",
  ]);
  await using publisher = await startService("publisher", [
    "--port",
    "0",
    "--hub",
    `127.0.0.1:${await hub.port()}`,
    "--hub-max-frame-bytes",
    "32768",
  ]);
  const url = `http://127.0.0.1:${await publisher.port()}/`;
  const form = { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" } };
  // Under --max-content-bytes (64 KiB), over the hub's frame: without the
  // flag it went out, the hub dropped the link for it, at every reconnect.
  const [big, small] = await Promise.all([
    call(url, { ...form, body: `content=${"a".repeat(40_000)}` }),
    call(`${url}?content=innocent`),
  ]);
  assert.equal(big.status, 413);
  assert.match(big.body, /^Content too large for the hub: .* over the 32768-byte limit\n?$/);
  assert.deepEqual([small.status, small.body], [200, "ok"]);
  assert.ok(!publisher.lines.some((line) => line.includes("disconnected from hub")), "the hub link stayed up");
});

Deno.test("publisher told a --hub its task's --allow-net does not grant says so at the error level, with a hint", async () => {
  const { service, base } = await startPublisher(freePort(), ["--hub", "localhost:2206"]);
  await using _publisher = service;
  const line = await service.waitForLine(/msg="hub connect not permitted"/, 10_000);
  assert.match(line, /level=error .*hub=localhost:2206 .*hint="the task's --allow-net does not grant this host/);
  assert.equal((await call(`${base}?content=x`)).status, 503);
});

Deno.test("publisher refuses at start, in one line, an API key that no header could carry as given", async () => {
  // "kéy" sent as UTF-8 in X-API-Key would be read as Latin-1 "kÃ©y", and a space cuts a Bearer token.
  for (const key of ["kéy", "two words"]) {
    await using refused = await startService("publisher", ["--port", "0"], { env: { PUBLISHER_API_KEY: key } });
    const status = await within(refused.process.status, 10_000, "the refusing publisher to exit");
    assert.equal(status.code, 2, key);
    await refused.stop();
    assert.equal(refused.lines.length, 1, refused.lines.join("\n"));
    assert.match(refused.lines[0]!, /level=error svc=publisher msg="Invalid API key: use visible ASCII without spaces/);
    assert.ok(!refused.lines[0]!.includes(key), "the key is not logged");
  }
});
