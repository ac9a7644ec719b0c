/**
 * The original's browser walkthrough, in real Chromium (Debian's package,
 * driven by playwright-core): the console snippet, then the publisher's URLs
 * opened in another tab. Also the demo page's own buttons.
 *
 * Needs `/usr/bin/chromium` (`.ci/run` installs it). Playwright probes /proc
 * paths that Deno only grants under --allow-all, which is why the test task
 * runs with -A; the services under test still run with their own grants.
 */

import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { type ChromiumOptions, launchChromium } from "./_chromium.ts";
import { signJwt } from "../shared/jwt.ts";
import { type Service, startPusherOnHub, startService } from "./_service.ts";
import { until, within } from "../channel/testing.ts";
import { makeTestCertificates } from "./_tls.ts";

/** The pusher's `--server`. */
type Server = "listen" | "deno";

/**
 * The pusher's servers, each with what test names say of it: the default
 * says nothing. The walkthrough and /client.js run on both; the demo page's
 * own controls on the default alone.
 */
const SERVERS: [Server, string][] = [["listen", "browser:"], ["deno", "browser, pusher --server deno:"]];

/** How {@linkcode startSystem} starts the pusher: on which server, and with which token secret. */
interface SystemOptions {
  server?: Server;
  tokenSecret?: string;
  /** The pusher's `--presence-channels`. @default {none} */
  presenceChannels?: string;
  /** The hub's `--history`: which subjects keep history. @default {none} */
  history?: string;
  /** Every link over TLS: each service serves with this certificate and verifies the hub with this CA. @default {plain text} */
  tls?: { cert: string; key: string; ca: string };
}

/** Hub, publisher and pusher running as processes; disposing stops all three. */
interface System extends AsyncDisposable {
  publisherUrl: string;
  pusherPort: number;
  /**
   * Stops the pusher (SIGTERM, as an operator would) and starts a new one on
   * the same port; `whileDown` runs in between.
   */
  restartPusher(whileDown?: () => Promise<void>): Promise<void>;
  /** Stops the hub (SIGTERM) and starts a new one on the same port: every history is lost. */
  restartHub(): Promise<void>;
  /**
   * Freezes the pusher (SIGSTOP: its sockets stay open and it answers
   * nothing, as behind a dead network) until the returned resume is called
   * (SIGCONT).
   */
  freezePusher(): () => void;
}

/** Starts a pusher on `server` and waits until both of its workers are linked to the hub. */
async function startPusher(
  hubAddr: string,
  publisherUrl: string,
  port: number,
  options: SystemOptions,
): Promise<Service> {
  const args = ["--publisher-url", publisherUrl, "--server", options.server ?? "listen", ...tlsArgs(options)];
  if (options.presenceChannels) args.push("--presence-channels", options.presenceChannels);
  const env = options.tokenSecret ? { PUSHER_TOKEN_SECRET: options.tokenSecret } : undefined;
  return (await startPusherOnHub(hubAddr, { port, args, env })).service;
}

/**
 * Starts hub, publisher and pusher (on `server`) as users do, each on port 0,
 * and waits until both pusher workers are linked to the hub. If a later
 * service fails to start, the earlier ones are stopped.
 */
async function startSystem(options: SystemOptions = {}): Promise<System> {
  await using services = new AsyncDisposableStack();
  const hubArgs = ["--startup-grace", "0", ...(options.history ? ["--history", options.history] : [])];
  if (options.tls) hubArgs.push("--cert", options.tls.cert, "--key", options.tls.key);
  let hub = services.use(await startService("channel", ["--port", "0", ...hubArgs]));
  const hubPort = await hub.port();
  const hubAddr = `127.0.0.1:${hubPort}`;
  const publisher = services.use(
    await startService("publisher", ["--port", "0", "--hub", hubAddr, ...tlsArgs(options)]),
  );
  const publisherUrl = `${options.tls ? "https" : "http"}://127.0.0.1:${await publisher.port()}`;
  let pusher = services.use(await startPusher(hubAddr, publisherUrl, 0, options));
  const pusherPort = await pusher.port();
  // Started: the services now belong to the caller, stopped in reverse order on dispose.
  const owned = services.move();
  return {
    publisherUrl,
    pusherPort,
    async restartPusher(whileDown) {
      await pusher.stop();
      await whileDown?.();
      pusher = owned.use(await startPusher(hubAddr, publisherUrl, pusherPort, options));
    },
    freezePusher() {
      const pid = pusher.process.pid;
      Deno.kill(pid, "SIGSTOP");
      return () => Deno.kill(pid, "SIGCONT");
    },
    async restartHub() {
      await hub.stop();
      hub = owned.use(await startService("channel", ["--port", String(hubPort), ...hubArgs]));
      await hub.port();
    },
    [Symbol.asyncDispose]: () => owned.disposeAsync(),
  };
}

/** A pusher's or publisher's TLS flags for `options.tls`: serve with its certificate, verify the hub with its CA. */
function tlsArgs(options: SystemOptions): string[] {
  const { tls } = options;
  return tls ? ["--cert", tls.cert, "--key", tls.key, "--bus-ca", tls.ca] : [];
}

/** Runs `fn` with a Chromium of its own (`options` as for {@linkcode launchChromium}), closed afterwards. */
async function withChromium(
  ...args: [(browser: Browser) => Promise<void>] | [ChromiumOptions, (browser: Browser) => Promise<void>]
): Promise<void> {
  const [options, fn] = args.length === 1 ? [{}, args[0]] : args;
  const browser = await launchChromium(options);
  try {
    await fn(browser);
  } finally {
    await within(browser.close(), 10_000, "the browser to close");
  }
}

/** Opens a URL in its own tab, as a user would, and returns the page text. */
async function open(browser: Browser, url: string): Promise<string> {
  const tab = await browser.newPage();
  try {
    const response = await tab.goto(url);
    assert.equal(response?.status(), 200, url);
    return (await tab.textContent("body"))!.trim();
  } finally {
    await tab.close();
  }
}

function alerts(page: Page): string[] {
  const seen: string[] = [];
  page.on("dialog", (dialog) => {
    seen.push(dialog.message());
    dialog.accept().catch(() => {});
  });
  return seen;
}

for (const [server, label] of SERVERS) {
  Deno.test(`${label} the original's console snippet gets its greeting, a broadcast and its targeted message`, async () => {
    await using system = await startSystem({ server });
    const { publisherUrl, pusherPort } = system;

    await withChromium(async (browser) => {
      const page = await browser.newPage();
      const seen = alerts(page);
      await page.goto(`http://127.0.0.1:${pusherPort}/`);
      // The original's snippet, verbatim but for the host and port.
      await page.evaluate(`ws = new WebSocket("ws://127.0.0.1:${pusherPort}"); ws.onmessage = (e) => alert(e.data);`);
      await until(() => seen.length >= 1, 10_000, "the greeting alert");
      const greeting = /^workerID:([0-9a-f]{16}) connectionID:(\d+) connected\n$/.exec(seen[0]!);
      assert.ok(greeting, `greeting ${JSON.stringify(seen[0])}`);

      assert.equal(await open(browser, `${publisherUrl}/?content=hello%20browser`), "ok");
      await until(() => seen.includes("hello browser"), 10_000, "the broadcast alert");
      const direct = `${publisherUrl}/?to_worker_id=${greeting[1]}&to_connection_id=${greeting[2]}&content=only%20me`;
      assert.equal(await open(browser, direct), "ok");
      await until(() => seen.includes("only me"), 10_000, "the targeted alert");
      assert.deepEqual(seen.slice(1), ["hello browser", "only me"]);
    });
  });
}

Deno.test("browser: the demo page shows its address and its buttons publish through the publisher", async () => {
  await using system = await startSystem();
  const { pusherPort } = system;

  await withChromium(async (browser) => {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${pusherPort}/`);
    // Browser-side predicates are strings: they run in the page, not in Deno.
    await page.waitForFunction(`document.getElementById("status").textContent === "connected"`);
    await page.waitForFunction(`!document.getElementById("direct").disabled`);
    assert.match(await page.textContent("#address") ?? "", /^to_worker_id=[0-9a-f]{16}&to_connection_id=\d+$/);

    await page.fill("#content", "from the button");
    await page.click("#broadcast");
    await page.waitForFunction(`document.getElementById("answer").textContent === "Publisher: 200 ok"`);
    await page.waitForFunction(`document.getElementById("log").textContent.includes("from the button")`);

    await page.fill("#content", "to myself");
    await page.click("#direct");
    await page.waitForFunction(`document.getElementById("log").textContent.includes("to myself")`);
    const lines = await page.$$eval("#log div", (divs) => divs.map((d) => d.textContent));
    assert.equal(lines.length, 3);
    assert.match(lines[0]!, /^workerID:/);
    assert.deepEqual(lines.slice(1), ["from the button", "to myself"]);
  });
});

/** What the page's own client (the test's, not the demo page's) has seen; lives in the page as `window.seen`. */
interface Seen {
  greetings: { workerId: string; connectionId: number }[];
  messages: string[];
  publications: { channel: string; data: unknown; offset?: number; epoch?: string }[];
  drops: { code: number; reconnecting: boolean }[];
  subscribed: { channel: string; recovered: boolean | null; position: { offset: number; epoch: string } | null }[];
}

/**
 * Imports `/client.js` in `page`, connects a client with short reconnect
 * delays and waits for its greeting; the client is `window.client`, what it
 * saw `window.seen`. `token` is a fixed token, or the name of a function of
 * the page's that makes one (`page.exposeFunction`); `options` are more of
 * the client's numeric options.
 */
async function connectClient(
  page: Page,
  token?: string | { fromPage: string },
  options: Record<string, number> = {},
): Promise<{ workerId: string; connectionId: number }> {
  const tokenSource = typeof token === "object" ? `() => window.${token.fromPage}()` : JSON.stringify(token ?? null);
  return await page.evaluate(`(async () => {
    const { PushClient } = await import("/client.js");
    const client = new PushClient(location.origin.replace(/^http/, "ws"), {
      minReconnectDelay: 50,
      maxReconnectDelay: 500,
      token: ${tokenSource} ?? undefined,
      ...${JSON.stringify(options)},
    });
    const seen = { greetings: [], messages: [], publications: [], drops: [], subscribed: [] };
    client.on("connected", ({ workerId, connectionId }) => seen.greetings.push({ workerId, connectionId }));
    client.on("message", ({ data }) => seen.messages.push(data));
    client.on("publication", (publication) => seen.publications.push(publication));
    client.on("subscribed", ({ channel, recovered, position }) => seen.subscribed.push({ channel, recovered, position }));
    client.on("disconnected", ({ code, reconnecting }) => seen.drops.push({ code, reconnecting }));
    Object.assign(window, { client, seen });
    client.connect();
    return await client.ready({ signal: AbortSignal.timeout(10000) });
  })()`);
}

/** Waits until `predicate` (over the page's `seen`, as source text) holds. */
async function waitSeen(page: Page, predicate: string, what: string): Promise<void> {
  try {
    await page.waitForFunction(`(() => { const seen = window.seen; return ${predicate}; })()`, null, {
      timeout: 10_000,
    });
  } catch (error) {
    const seen: Seen = await page.evaluate("window.seen");
    throw new Error(`Timed out waiting for ${what}; the client saw ${JSON.stringify(seen)}`, { cause: error });
  }
}

for (const [server, label] of SERVERS) {
  Deno.test(`${label} /client.js connects, reads its address, gets a broadcast, and reconnects by itself after a pusher restart`, async () => {
    await using system = await startSystem({ server });
    const { publisherUrl, pusherPort } = system;

    await withChromium(async (browser) => {
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${pusherPort}/`);
      const first = await connectClient(page);
      assert.match(first.workerId, /^[0-9a-f]{16}$/);
      assert.ok(Number.isInteger(first.connectionId) && first.connectionId > 0, `connection id ${first.connectionId}`);
      assert.deepEqual(await page.evaluate("client.address"), first);

      assert.equal(await open(browser, `${publisherUrl}/?content=hello%20client`), "ok");
      await waitSeen(page, `seen.messages.includes("hello client")`, "the broadcast");

      await system.restartPusher();
      await waitSeen(page, "seen.greetings.length >= 2", "a greeting from the restarted pusher");
      const seen: Seen = await page.evaluate("window.seen");
      assert.equal(seen.drops[0]?.code, 1001, "the pusher said it was going away");
      assert.ok(seen.drops.every((drop) => drop.reconnecting));
      const second = seen.greetings.at(-1)!;
      assert.notEqual(second.workerId, first.workerId, "a new process has new worker ids");
      assert.equal(await page.evaluate("client.state"), "connected");

      assert.equal(await open(browser, `${publisherUrl}/?content=after%20the%20restart`), "ok");
      await waitSeen(page, `seen.messages.includes("after the restart")`, "the broadcast after the restart");
      assert.deepEqual((await page.evaluate<Seen>("window.seen")).messages, ["hello client", "after the restart"]);
      await page.evaluate("client.disconnect()");
    });
  });

  Deno.test({
    name:
      `${label} /client.js subscribes to a channel, gets its publications, and subscribes again after a pusher restart`,
    async fn() {
      await using system = await startSystem({ server });
      const { publisherUrl, pusherPort } = system;

      await withChromium(async (browser) => {
        const page = await browser.newPage();
        await page.goto(`http://127.0.0.1:${pusherPort}/`);
        await connectClient(page);
        await page.evaluate(`client.subscribe("news").ready({ signal: AbortSignal.timeout(10000) })`);
        assert.equal(await page.evaluate(`client.subscription("news").state`), "subscribed");

        assert.equal(await open(browser, `${publisherUrl}/?channel=news&content=first`), "ok");
        await waitSeen(
          page,
          `seen.publications.some((p) => p.channel === "news" && p.data === "first")`,
          "a publication",
        );
        assert.equal(await open(browser, `${publisherUrl}/?content=not%20on%20news`), "ok");
        await waitSeen(page, `seen.messages.includes("not on news")`, "the plain broadcast");

        await system.restartPusher();
        await waitSeen(page, "seen.greetings.length >= 2", "a greeting from the restarted pusher");
        await page.evaluate(`client.subscription("news").ready({ signal: AbortSignal.timeout(10000) })`);
        assert.equal(await open(browser, `${publisherUrl}/?channel=news&content=second`), "ok");
        await waitSeen(page, `seen.publications.some((p) => p.data === "second")`, "a publication after the restart");

        await page.evaluate(`client.subscription("news").unsubscribe()`);
        assert.equal(await open(browser, `${publisherUrl}/?channel=news&content=third`), "ok");
        assert.equal(await open(browser, `${publisherUrl}/?content=marker`), "ok");
        await waitSeen(page, `seen.messages.includes("marker")`, "the marker broadcast");
        const seen: Seen = await page.evaluate("window.seen");
        assert.deepEqual(seen.publications.map((p) => p.data), ["first", "second"], "nothing after unsubscribing");
        await page.evaluate("client.disconnect()");
      });
    },
  });
}

Deno.test("browser: /client.js with 60 channels keeps under the pusher's message rate: all subscribed on connect() and again after a pusher restart, never closed with 1008", async () => {
  await using system = await startSystem();
  const channels = 60; // over the pusher's burst of 50 frames (--max-message-rate), under its 128 channels
  await withChromium(async (browser) => {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${system.pusherPort}/`);
    await connectClient(page);
    // Stopped, then subscribed: all 60 wait for the next connection, and go out on its greeting.
    await page.evaluate(`client.disconnect();
      window.channels = Array.from({ length: ${channels} }, (_, i) => client.subscribe("ch" + i));
      client.connect();`);
    const allSubscribed = `window.channels.every((subscription) => subscription.state === "subscribed")`;
    await waitSeen(page, allSubscribed, `all ${channels} subscriptions in effect`);

    await system.restartPusher();
    await waitSeen(page, `seen.greetings.length >= 3 && ${allSubscribed}`, `all ${channels} again after the restart`);
    await publishReaching(system.publisherUrl, `ch${channels - 1}`, "to the last");
    await waitSeen(
      page,
      `seen.publications.some((p) => p.data === "to the last")`,
      "a publication on the last channel",
    );
    const seen: Seen = await page.evaluate("window.seen");
    // disconnect(), the pusher's restart, and attempts while it was down (1006): never over its rate.
    assert.deepEqual(seen.drops.slice(0, 2), [{ code: 1000, reconnecting: false }, { code: 1001, reconnecting: true }]);
    assert.deepEqual(seen.drops.slice(2).filter((drop) => drop.code !== 1006), [], JSON.stringify(seen.drops));
    await page.evaluate("client.disconnect()");
  });
});

Deno.test("browser: /client.js notices a pusher that stopped answering, by a ping, and is back in its channel once it answers again", async () => {
  await using system = await startSystem();
  const { publisherUrl, pusherPort } = system;
  await withChromium(async (browser) => {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${pusherPort}/`);
    const first = await connectClient(page, undefined, { pingInterval: 300, pingTimeout: 300, connectTimeout: 1000 });
    await page.evaluate(`(async () => {
      window.drops = [];
      client.on("disconnected", ({ code, reason }) => window.drops.push({ code, reason }));
      await client.subscribe("news").ready({ signal: AbortSignal.timeout(10000) });
    })()`);
    // Its socket stays open, as after a network that died without a close: only the silence tells.
    const resume = system.freezePusher();
    try {
      await page.waitForFunction("window.drops.length > 0", null, { timeout: 10_000 });
      assert.deepEqual(await page.evaluate("window.drops[0]"), { code: 4000, reason: "no answer to ping" });
      assert.equal(await page.evaluate("client.state"), "connecting");
    } finally {
      resume();
    }
    await waitSeen(page, "seen.greetings.length >= 2", "a greeting once the pusher answers again");
    const second = (await page.evaluate<Seen>("window.seen")).greetings.at(-1)!;
    assert.notDeepEqual(second, first, "a new connection");
    await page.evaluate(`client.subscription("news").ready({ signal: AbortSignal.timeout(10000) })`);
    assert.equal(await open(browser, `${publisherUrl}/?channel=news&content=back`), "ok");
    await waitSeen(
      page,
      `seen.publications.some((p) => p.channel === "news" && p.data === "back")`,
      "the channel's publication",
    );
    await page.evaluate("client.disconnect()");
  });
});

Deno.test("browser: /client.js reconnects as soon as the browser is back online, not after its backoff", async () => {
  await using system = await startSystem();
  const { publisherUrl, pusherPort } = system;
  await withChromium(async (browser) => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${pusherPort}/`);
    // A long, known backoff: 19.8 s before the first attempt after a drop.
    const first: { workerId: string; connectionId: number } = await page.evaluate(`(async () => {
      const { PushClient } = await import("/client.js");
      const client = new PushClient(location.origin.replace(/^http/, "ws"), {
        minReconnectDelay: 20000,
        maxReconnectDelay: 20000,
        random: () => 0.99,
      });
      window.seen = { greetings: [], drops: [] };
      client.on("connected", ({ workerId, connectionId }) => seen.greetings.push({ workerId, connectionId }));
      client.on("disconnected", ({ code, delay }) => seen.drops.push({ code, delay }));
      window.client = client;
      client.connect();
      return await client.ready({ signal: AbortSignal.timeout(10000) });
    })()`);
    await context.setOffline(true);
    const answer = await fetch(`${publisherUrl}/api/disconnect`, {
      method: "POST",
      body: JSON.stringify({ worker_id: first.workerId, connection_id: first.connectionId }),
    });
    assert.equal(answer.status, 200, await answer.text());
    await waitSeen(page, "seen.drops.length > 0", "the backend's disconnect");
    assert.deepEqual(await page.evaluate("seen.drops"), [{ code: 4000, delay: 19800 }]);
    await context.setOffline(false);
    // Well before the backoff's 19.8 s.
    await waitSeen(page, "seen.greetings.length === 2", "a new connection once online");
    await page.evaluate("client.disconnect()");
  });
});

Deno.test("browser: the demo page's channel controls list a channel while subscribed, publish to it, ask who is in a presence channel, and forget it on unsubscribe", async () => {
  await using system = await startSystem({ presenceChannels: "room.*" });
  await withChromium(async (browser) => {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(error.message));
    await page.goto(`http://127.0.0.1:${system.pusherPort}/`);
    await page.waitForFunction(`document.getElementById("status").textContent === "connected"`);
    assert.equal(await page.textContent("#channels"), "none");
    await page.fill("#channel", "news");
    await page.click("#subscribe");
    // "news (subscribing)" until the pusher answers; "news" once it has.
    await page.waitForFunction(`document.getElementById("channels").textContent.startsWith("news")`);
    await page.fill("#content", "to the news channel");
    await page.click("#publish-channel");
    await page.waitForFunction(`document.getElementById("log").textContent.includes("to the news channel")`);
    await page.click("#subscribe");
    await page.waitForFunction(`document.getElementById("answer").textContent.includes("already subscribed")`);
    await page.click("#presence");
    await page.waitForFunction(`document.getElementById("answer").textContent.startsWith("Presence of news")`);
    assert.equal(
      await page.textContent("#answer"),
      "Presence of news: Presence is not open on channel news: it is not a presence channel",
    );
    await page.click("#unsubscribe");
    await page.waitForFunction(`document.getElementById("channels").textContent === "none"`);

    await page.fill("#channel", "room.1");
    await page.click("#subscribe");
    await page.waitForFunction(`document.getElementById("log").textContent.includes("[room.1] joined")`);
    await page.click("#presence");
    await page.waitForFunction(`document.getElementById("answer").textContent.startsWith("room.1:")`);
    // No token: a connection without a user.
    assert.equal(await page.textContent("#answer"), "room.1: connections 1, users 0");
    assert.deepEqual(errors, []);
  });
});

/** Calls the publisher's server API as a backend would. */
async function api(publisherUrl: string, method: string, params: Record<string, unknown>): Promise<unknown> {
  const response = await fetch(`${publisherUrl}/api/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(params),
  });
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return body;
}

Deno.test("browser: a user's connections get the messages sent to that user, a token's channels claim decides what the page may join, and members ask a presence channel who is in it", async () => {
  const secret = "browser-test-secret";
  await using system = await startSystem({ tokenSecret: secret, presenceChannels: "room.*" });
  const exp = Math.floor(Date.now() / 1000) + 600;
  await withChromium(async (browser) => {
    const alice = await browser.newPage();
    const bob = await browser.newPage();
    for (const page of [alice, bob]) await page.goto(`http://127.0.0.1:${system.pusherPort}/`);
    await connectClient(alice, signJwt({ sub: "alice", exp, channels: ["news", "room.*"] }, secret));
    await connectClient(bob, signJwt({ sub: "bob", exp }, secret));

    await alice.evaluate(`client.subscribe("room.1").ready({ signal: AbortSignal.timeout(10000) })`);
    const refused = await bob.evaluate(`client.subscribe("room.1").ready().then(() => "joined", (e) => e.code)`);
    assert.equal(refused, 403, "bob's token names no channels");

    await api(system.publisherUrl, "publish", { user: "alice", data: "for alice" });
    await api(system.publisherUrl, "publish", { channel: "room.1", data: { text: "in the room" } });
    await api(system.publisherUrl, "publish", { data: "for everyone" });
    await waitSeen(alice, `seen.messages.includes("for everyone")`, "alice's broadcast");
    await waitSeen(bob, `seen.messages.includes("for everyone")`, "bob's broadcast");
    await waitSeen(alice, `seen.publications.some((p) => p.data.text === "in the room")`, "the room's publication");
    const seenByAlice: Seen = await alice.evaluate("window.seen");
    const seenByBob: Seen = await bob.evaluate("window.seen");
    assert.deepEqual(seenByAlice.messages, ["for alice", "for everyone"]);
    assert.deepEqual(seenByBob.messages, ["for everyone"], "bob gets nothing of alice's");
    assert.deepEqual(seenByBob.publications, []);

    // The backend subscribes bob: no claim needed, and the page hears of it.
    await api(system.publisherUrl, "subscribe", { channel: "room.1", user: "bob" });
    await bob.waitForFunction(`client.subscriptions.has("room.1")`);
    await api(system.publisherUrl, "publish", { channel: "room.1", data: { text: "both of you" } });
    await waitSeen(bob, `seen.publications.some((p) => p.data.text === "both of you")`, "bob's room publication");
    await waitSeen(alice, `seen.publications.some((p) => p.data.text === "both of you")`, "alice's room publication");

    // Members of a presence channel ask who is in it, over both workers; elsewhere it is refused.
    assert.deepEqual(await alice.evaluate(`client.subscription("room.1").presence()`), {
      num_clients: 2,
      num_users: 2,
      users: ["alice", "bob"],
    });
    assert.deepEqual(await bob.evaluate(`client.subscription("room.1").presenceStats()`), {
      num_clients: 2,
      num_users: 2,
    });
    await alice.evaluate(`client.subscribe("news").ready({ signal: AbortSignal.timeout(10000) })`);
    const closed = await alice.evaluate(`client.subscription("news").presence().then(() => "answered", (e) => e.code)`);
    assert.equal(closed, 403, "news is not a presence channel");
    for (const page of [alice, bob]) await page.evaluate("client.disconnect()");
  });
});

for (const [server, label] of SERVERS) {
  Deno.test(`${label} /client.js renews its token before it expires and keeps its connection; a fixed token's is closed with 4401 at its exp`, async () => {
    const secret = "browser-test-secret";
    await using system = await startSystem({ server, tokenSecret: secret });
    const lifetime = 4;
    const expiry = () => Math.floor(Date.now() / 1000) + lifetime;
    const minted: number[] = [];
    await withChromium(async (browser) => {
      const alice = await browser.newPage();
      await alice.exposeFunction("mintToken", () => {
        const exp = expiry();
        minted.push(exp);
        return signJwt({ sub: "alice", exp }, secret);
      });
      const bob = await browser.newPage();
      for (const page of [alice, bob]) await page.goto(`http://127.0.0.1:${system.pusherPort}/`);
      const bobsExp = expiry();
      await connectClient(alice, { fromPage: "mintToken" });
      await connectClient(bob, signJwt({ sub: "bob", exp: bobsExp }, secret));
      await bob.evaluate(`client.on("disconnected", () => { window.droppedAt = Date.now(); })`);

      // Renewed twice, and the pusher has looked for expired tokens after the first one's exp.
      await until(() => minted.length >= 3 && Date.now() > minted[0]! * 1000 + 1500, 20_000, "two renewals");
      const seenByAlice: Seen = await alice.evaluate("window.seen");
      assert.deepEqual(seenByAlice.drops, [], "alice's connection outlived her first token");
      assert.equal(seenByAlice.greetings.length, 1);
      await api(system.publisherUrl, "publish", { user: "alice", data: "still you" });
      await waitSeen(alice, `seen.messages.includes("still you")`, "a message to alice on her first connection");

      await waitSeen(bob, `seen.drops.length > 0`, "bob's fixed token to run out");
      const seenByBob: Seen = await bob.evaluate("window.seen");
      assert.deepEqual(seenByBob.drops, [{ code: 4401, reconnecting: false }], "a fixed token cannot be renewed");
      const droppedAt: number = await bob.evaluate("window.droppedAt");
      assert.ok(droppedAt >= bobsExp * 1000, `closed ${bobsExp * 1000 - droppedAt} ms before the token's exp`);
      const metrics = await (await fetch(`http://127.0.0.1:${system.pusherPort}/metrics`)).text();
      assert.match(metrics, /^pusher_disconnects_total\{reason="expired"\} 1$/m);
      await alice.evaluate("client.disconnect()");
    });
  });
}

/** Publishes `data` to `channel` through the server API until a pusher worker is reached (the bus links come back by themselves). */
async function publishReaching(publisherUrl: string, channel: string, data: string): Promise<void> {
  await until(
    async () => {
      const response = await fetch(`${publisherUrl}/api/publish`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ channel, data }),
      });
      const body = await response.json();
      return response.status === 200 && body.result.workers_reached >= 1;
    },
    10_000,
    `a publish of ${data} on ${channel} that reaches a pusher`,
  );
}

Deno.test("browser: /client.js recovers what a history channel got while the pusher restarted, in order and once, reads its last publications, and is told when a hub restart lost the history", async () => {
  await using system = await startSystem({ history: "channel.*" });
  const { publisherUrl, pusherPort } = system;
  await withChromium(async (browser) => {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${pusherPort}/`);
    await connectClient(page);
    await page.evaluate(`client.subscribe("news").ready({ signal: AbortSignal.timeout(10000) })`);
    const first: Seen = await page.evaluate("window.seen");
    assert.equal(first.subscribed[0]?.recovered, false, "nothing to recover on a first subscribe");
    assert.equal(first.subscribed[0]?.position?.offset, 0, "a history channel's reply says where it stands");
    const epoch = first.subscribed[0]!.position!.epoch;

    for (const data of ["m1", "m2"]) await api(publisherUrl, "publish", { channel: "news", data });
    await waitSeen(page, `seen.publications.length === 2`, "the first two publications");

    await system.restartPusher(async () => {
      // Nobody listens: only the hub's history has these.
      for (const data of ["m3", "m4"]) await api(publisherUrl, "publish", { channel: "news", data });
    });
    await waitSeen(page, "seen.greetings.length >= 2", "a greeting from the restarted pusher");
    await waitSeen(page, `seen.subscribed.length >= 2`, "the subscribe again");
    assert.equal(await page.evaluate(`client.subscription("news").recovered`), true);
    await publishReaching(publisherUrl, "news", "m5");
    await waitSeen(page, `seen.publications.some((p) => p.data === "m5")`, "a publication after the recovery");
    const recovered: Seen = await page.evaluate("window.seen");
    assert.deepEqual(recovered.publications.map((p) => [p.data, p.offset, p.epoch]), [
      ["m1", 1, epoch],
      ["m2", 2, epoch],
      ["m3", 3, epoch],
      ["m4", 4, epoch],
      ["m5", 5, epoch],
    ]);
    assert.deepEqual(recovered.subscribed[1], { channel: "news", recovered: true, position: { offset: 4, epoch } });
    // What a chat shows when it opens: the last publications, newest first, asked of the pusher by the page.
    assert.deepEqual(await page.evaluate(`client.subscription("news").history({ limit: 3, reverse: true })`), {
      publications: [{ data: "m5", offset: 5 }, { data: "m4", offset: 4 }, { data: "m3", offset: 3 }],
      offset: 5,
      epoch,
      recovered: true,
    });

    await system.restartHub();
    await publishReaching(publisherUrl, "news", "after the hub");
    await waitSeen(
      page,
      `seen.publications.some((p) => p.data === "after the hub")`,
      "a publication after the hub restart",
    );
    const lost: Seen = await page.evaluate("window.seen");
    const told = lost.subscribed.at(-1)!;
    assert.equal(told.recovered, false, "the hub's restart lost the history: the page must reload");
    assert.notEqual(told.position?.epoch, epoch);
    assert.equal(await page.evaluate(`client.subscription("news").recovered`), false);
    assert.deepEqual(lost.publications.map((p) => p.data), ["m1", "m2", "m3", "m4", "m5", "after the hub"]);
    await page.evaluate("client.disconnect()");
  });
});

for (const [server, label] of SERVERS) {
  Deno.test(`${label} over TLS, the demo page comes over https://, /client.js connects over wss:// and gets a publish made over HTTPS`, async () => {
    await using certs = await makeTestCertificates();
    await using system = await startSystem({
      server,
      tls: { cert: certs.server.cert, key: certs.server.key, ca: certs.ca },
    });
    const { publisherUrl, pusherPort } = system;
    assert.match(publisherUrl, /^https:/);

    // Chromium trusts the test server certificate by its public key, as it would one from a CA it knows.
    await withChromium({ trustedSpki: [await certs.spkiHash(certs.server)] }, async (browser) => {
      const page = await browser.newPage();
      const response = await page.goto(`https://127.0.0.1:${pusherPort}/`);
      assert.equal(response?.status(), 200);
      // From an https:// page Chromium opens no ws:// (mixed content): connectClient's URL is wss://.
      assert.equal(await page.evaluate("location.origin"), `https://127.0.0.1:${pusherPort}`);
      const address = await connectClient(page);
      assert.match(address.workerId, /^[0-9a-f]{16}$/);

      assert.equal(await open(browser, `${publisherUrl}/?content=hello%20over%20tls`), "ok");
      await waitSeen(page, `seen.messages.includes("hello over tls")`, "the publish over HTTPS, on wss://");
    });
  });
}
