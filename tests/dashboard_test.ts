/**
 * The publisher's dashboard in real Chromium, against hub, pusher and
 * publisher running as processes with an API key: the login, numbers that
 * match `POST /api/info` and `/metrics` under load, actions that reach
 * connected clients, a phone-width layout without horizontal scroll, and
 * event streams that do not hold up the publisher's shutdown.
 *
 * Writes screenshots to `tests/artifacts/` (kept by CI). Runs under -A for
 * Playwright, as `browser_test.ts` explains; the services run with their
 * own grants.
 */

import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { launchChromium } from "./_chromium.ts";
import { type Service, startPusherOnHub, startService } from "./_service.ts";
import { until, within } from "../channel/testing.ts";
import { Client } from "../pusher/testing.ts";

const KEY = "dashboard-test-key-0123456789";
const ARTIFACTS = new URL("./artifacts/", import.meta.url);

interface System extends AsyncDisposable {
  publisherUrl: string;
  pusherPort: number;
  publisher: Service;
}

/** Hub, publisher (with {@linkcode KEY}) and a two-worker pusher, each on port 0, the pusher linked to the hub. */
async function startSystem(publisherArgs: string[] = []): Promise<System> {
  await using services = new AsyncDisposableStack();
  const hub = services.use(await startService("channel", ["--port", "0", "--startup-grace", "0"]));
  const hubAddr = `127.0.0.1:${await hub.port()}`;
  const publisher = services.use(
    await startService("publisher", ["--port", "0", "--hub", hubAddr, ...publisherArgs], {
      env: { PUBLISHER_API_KEY: KEY },
    }),
  );
  const publisherUrl = `http://127.0.0.1:${await publisher.port()}`;
  const started = await startPusherOnHub(hubAddr, { args: ["--publisher-url", publisherUrl] });
  services.use(started.service);
  const pusherPort = started.port;
  const owned = services.move();
  return { publisherUrl, pusherPort, publisher, [Symbol.asyncDispose]: () => owned.disposeAsync() };
}

/** Calls the server API with the key, as a backend would; returns the parsed answer. */
async function api(publisherUrl: string, method: string, body: unknown): Promise<Record<string, unknown>> {
  const response = await fetch(`${publisherUrl}/api/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  assert.equal(response.status, 200, `${method}: ${JSON.stringify(answer)}`);
  return answer;
}

/** The sum of a metric's series in the publisher's `/metrics`. */
async function metric(publisherUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${publisherUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) {
      sum += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return sum;
}

/** Publishes to everyone (every client gets each) in `lanes` loops until `signal` aborts; returns how many were answered 200. */
async function load(publisherUrl: string, lanes: number, signal: AbortSignal): Promise<number> {
  let ok = 0;
  await Promise.all(Array.from({ length: lanes }, async (_, lane) => {
    for (let i = 0; !signal.aborted; i++) {
      const response = await fetch(`${publisherUrl}/api/publish`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
        body: JSON.stringify({ data: { lane, i } }),
      });
      await response.body?.cancel();
      if (response.ok) ok++;
      // A steady rate, not a flood: the point is live numbers, not a benchmark.
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }));
  return ok;
}

/** Opens the dashboard, logs in with the key, and waits for the first sample to be drawn (unless told not to). */
async function logIn(page: Page, publisherUrl: string, { firstSample = true } = {}): Promise<void> {
  await page.goto(`${publisherUrl}/dashboard`);
  await page.waitForSelector('input[type="password"]#key', { timeout: 10_000 });
  assert.equal(await page.locator("#connections").count(), 0, "no numbers before the login");
  await page.fill("#key", KEY);
  await Promise.all([page.waitForURL(`${publisherUrl}/dashboard`), page.click('button[type="submit"]')]);
  if (firstSample) await waitPage(async () => await sampleTime(page) > 0, "the first sample on the page");
}

/** Logs in as the login form does, without a browser; answers the session's cookie. */
async function sessionCookie(publisherUrl: string): Promise<string> {
  const response = await fetch(`${publisherUrl}/dashboard/login`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ key: KEY }),
    redirect: "manual",
  });
  await response.body?.cancel();
  assert.equal(response.status, 303);
  return response.headers.get("set-cookie")!.split(";")[0]!;
}

/**
 * Waits until `check` holds, polling the page from here: the page's CSP
 * forbids eval, so Playwright's string predicates cannot run in it.
 */
async function waitPage(check: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  await until(check, ms, what);
}

/** The page's sample time (`data-t` on its body), 0 before the first. */
async function sampleTime(page: Page): Promise<number> {
  return Number(await page.getAttribute("body", "data-t") ?? 0);
}

/** The page's raw number for card `id`. */
async function shown(page: Page, id: string): Promise<number> {
  return Number(await page.getAttribute(`#${id}`, "data-value"));
}

/** Waits until the page shows a sample taken after now (on the shared machine clock). */
async function nextSample(page: Page): Promise<void> {
  const after = Date.now();
  await waitPage(async () => await sampleTime(page) > after, "a sample taken after now");
}

async function withBrowser(run: (browser: Browser) => Promise<void>): Promise<void> {
  const browser = await launchChromium();
  try {
    await run(browser);
  } finally {
    await within(browser.close(), 10_000, "the browser to close");
  }
}

const CLIENTS = 24;

Deno.test("dashboard in Chromium: login, numbers matching /api/info and /metrics under load, and actions that reach clients", async () => {
  await using system = await startSystem();
  const { publisherUrl, pusherPort } = system;
  await using clients = new AsyncDisposableStack();
  const connected: Client[] = [];
  for (let i = 0; i < CLIENTS; i++) connected.push(clients.use(new Client(pusherPort)));
  const addresses = await Promise.all(connected.map((client) => client.address()));
  // One client in the channel "news", for the page's channel publish and presence.
  const member = addresses[0]!;
  await api(publisherUrl, "subscribe", {
    channel: "news",
    worker_id: member.worker,
    connection_id: member.connection,
  });

  const stopLoad = new AbortController();
  const loading = load(publisherUrl, 4, stopLoad.signal);
  try {
    await withBrowser(async (browser) => {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const problems: string[] = [];
      page.on("console", (message) => message.type() === "error" && problems.push(message.text()));
      page.on("pageerror", (error) => problems.push(error.message));
      await logIn(page, publisherUrl);

      // The cluster's numbers are the ones /api/info gives.
      await waitPage(async () => await shown(page, "connections") === CLIENTS, `${CLIENTS} connections shown`);
      const info = (await api(publisherUrl, "info", {})).result as {
        workers: { worker_id: string; connections: number; users: number; channels: number }[];
        connections: number;
        users: number;
        channels: number;
      };
      await nextSample(page);
      assert.equal(await shown(page, "connections"), info.connections);
      assert.equal(await shown(page, "users"), info.users);
      assert.equal(await shown(page, "channels"), info.channels);
      assert.equal(await shown(page, "workers"), info.workers.length);
      assert.equal(info.workers.length, 2);
      assert.equal(await page.textContent("#hub"), "up");
      const rows = await page.$$eval(
        "#workers-table tbody tr",
        (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)),
      );
      assert.deepEqual(
        rows,
        info.workers.map((w) => [w.worker_id, String(w.connections), String(w.users), String(w.channels)]),
      );

      // Totals between two scrapes of /metrics taken around the sample; rates above zero under load.
      const before = await metric(publisherUrl, "publisher_publishes_total");
      // Deliveries are the pusher workers' (pusher_deliveries_total), which the dashboard gets over the bus.
      const pusherUrl = `http://127.0.0.1:${pusherPort}`;
      const deliveredBefore = await metric(pusherUrl, "pusher_deliveries_total");
      await nextSample(page);
      const publishes = await shown(page, "publishes");
      const deliveries = await shown(page, "deliveries");
      const after = await metric(publisherUrl, "publisher_publishes_total");
      const deliveredAfter = await metric(pusherUrl, "pusher_deliveries_total");
      assert.ok(before <= publishes && publishes <= after, `publishes ${before} <= ${publishes} <= ${after}`);
      assert.ok(
        deliveredBefore <= deliveries && deliveries <= deliveredAfter,
        `deliveries ${deliveredBefore} <= ${deliveries} <= ${deliveredAfter}`,
      );
      assert.ok(publishes > 0, "the load is counted");
      assert.ok(deliveries >= publishes, "each publish went to every client");
      assert.equal(await shown(page, "slow"), 0, "no slow consumer here");
      await waitPage(async () => Number(await page.textContent("#publishes")) > 0, "a publish rate above 0");

      // Actions: to everyone, to a channel, to one connection, then presence; each reply is shown.
      const sendFromPage = async (target: string, fill: Record<string, string>, data: string) => {
        await page.selectOption("#publish-target", target);
        for (const [selector, value] of Object.entries(fill)) await page.fill(selector, value);
        await page.fill("#publish-data", data);
        await page.click("#publish-send");
        await waitPage(async () => await page.textContent("#reply-status") === "publish: 200", "the publish reply");
        const reply = JSON.parse(await page.textContent("#reply") ?? "");
        await page.evaluate(`document.getElementById("reply-status").textContent = ""`);
        return reply;
      };
      assert.deepEqual(await sendFromPage("everyone", {}, "hello from the dashboard"), {
        result: { workers_reached: 2 },
      });
      await Promise.all(
        connected.map((client) =>
          until(() => client.messages.includes("hello from the dashboard"), 10_000, "the broadcast at every client")
        ),
      );
      await sendFromPage("channel", { "#publish-channel": "news" }, "channel news");
      await until(
        () => connected[0]!.messages.includes(JSON.stringify({ channel: "news", data: "channel news" })),
        10_000,
        "the channel publication at its member",
      );
      const target = addresses[CLIENTS - 1]!;
      await sendFromPage(
        "connection",
        { "#publish-worker": target.worker, "#publish-connection": String(target.connection) },
        "just you",
      );
      await until(() => connected[CLIENTS - 1]!.messages.includes("just you"), 10_000, "the targeted message");
      assert.ok(!connected[1]!.messages.includes("just you"), "only the addressed connection");

      await page.fill("#presence-channel", "news");
      await page.click("#presence-send");
      await waitPage(async () => await page.textContent("#reply-status") === "presence: 200", "the presence reply");
      const presence = JSON.parse(await page.textContent("#reply") ?? "");
      assert.equal(presence.result.num_clients, 1);

      // A few seconds of charts, then the picture CI keeps.
      // A quarter of a minute of charts, on the 1-minute window, then the picture CI keeps.
      const charted = Date.now() + 15_000;
      await page.click("#window-60");
      await waitPage(async () => await sampleTime(page) > charted, "fifteen more seconds of samples", 20_000);
      await page.evaluate("scrollTo(0, 0)");
      await Deno.mkdir(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: new URL("dashboard.png", ARTIFACTS).pathname, fullPage: true });
      assert.deepEqual(problems, [], "no errors in the page (a CSP violation would be one)");
    });
  } finally {
    stopLoad.abort();
    assert.ok(await within(loading, 10_000, "the load to stop") > 0);
  }
});

Deno.test("dashboard in Chromium: a page that finds every stream place taken waits for one, and goes live once one is free", async () => {
  await using system = await startSystem();
  const { publisherUrl } = system;
  // The 16 places, 4 a login: four other operators' pages take them all.
  const taken: ReadableStreamDefaultReader<Uint8Array>[] = [];
  try {
    for (let login = 0; login < 4; login++) {
      const cookie = await sessionCookie(publisherUrl);
      for (let i = 0; i < 4; i++) {
        const response = await fetch(`${publisherUrl}/dashboard/events`, {
          headers: { cookie, accept: "text/event-stream" },
        });
        assert.equal(response.status, 200);
        taken.push(response.body!.getReader());
      }
    }
    await withBrowser(async (browser) => {
      const page = await browser.newPage();
      await logIn(page, publisherUrl, { firstSample: false });
      const pill = async () => (await page.textContent("#stream"))?.trim();
      await waitPage(async () => await pill() === "waiting for a place", "the page to say it waits for a place");
      assert.equal(await sampleTime(page), 0, "no sample while it waits");
      await taken.shift()!.cancel();
      // The browser asks again 5 s after each refusal.
      await waitPage(async () => await sampleTime(page) > 0, "the page to take the place freed", 15_000);
      assert.equal(await pill(), "live");
    });
  } finally {
    for (const reader of taken) await reader.cancel();
  }
});

Deno.test("dashboard in Chromium: at a phone's width (390 px) nothing scrolls sideways", async () => {
  await using system = await startSystem();
  const { publisherUrl, pusherPort } = system;
  await using _client = new Client(pusherPort);
  await withBrowser(async (browser) => {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true });
    await logIn(page, publisherUrl);
    await waitPage(async () => await shown(page, "connections") === 1, "1 connection shown");
    const widths = await page.evaluate(`({
      scroll: document.documentElement.scrollWidth,
      client: document.documentElement.clientWidth,
      body: document.body.scrollWidth,
    })`) as { scroll: number; client: number; body: number };
    assert.equal(widths.client, 390);
    assert.ok(
      widths.scroll <= widths.client && widths.body <= widths.client,
      `no sideways scroll: ${JSON.stringify(widths)}`,
    );
    await Deno.mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: new URL("dashboard-phone.png", ARTIFACTS).pathname, fullPage: true });
  });
});

Deno.test("an open dashboard does not hold up the publisher's shutdown: its event stream ends, the process exits", async () => {
  // A long shutdown timeout, so that exiting fast proves the stream was closed, not cut off.
  await using system = await startSystem(["--shutdown-timeout", "20000"]);
  const { publisherUrl, publisher } = system;
  const login = await fetch(`${publisherUrl}/dashboard/login`, {
    method: "POST",
    body: new URLSearchParams({ key: KEY }),
    redirect: "manual",
  });
  assert.equal(login.status, 303);
  await login.body?.cancel();
  const cookie = login.headers.get("set-cookie")!.split(";")[0]!;
  const events = await fetch(`${publisherUrl}/dashboard/events`, { headers: { cookie } });
  assert.equal(events.status, 200);
  const reader = events.body!.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("event: snapshot")) {
    const { value, done } = await within(reader.read(), 10_000, "the first snapshot");
    assert.ok(!done, "the stream is open");
    seen += value;
  }
  const started = performance.now();
  publisher.process.kill("SIGTERM");
  await within(
    (async () => {
      while (!(await reader.read()).done) { /* the last snapshots */ }
    })(),
    5000,
    "the event stream to end on shutdown",
  );
  const status = await within(publisher.process.status, 5000, "the publisher to exit");
  assert.equal(status.code, 0);
  assert.ok(performance.now() - started < 5000, "well before the 20 s shutdown timeout");
  assert.ok(publisher.lines.some((l) => l.includes("msg=stopped")));
});
