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
import { launchChromium } from "./_chromium.ts";
import { startService } from "./_service.ts";
import { until, within } from "../channel/testing.ts";

/** Hub, publisher and pusher running as processes; disposing stops all three. */
interface System extends AsyncDisposable {
  publisherUrl: string;
  pusherPort: number;
}

/**
 * Starts hub, publisher and pusher as users do, each on port 0, and waits
 * until both pusher workers are linked to the hub. If a later service fails
 * to start, the earlier ones are stopped.
 */
async function startSystem(): Promise<System> {
  await using services = new AsyncDisposableStack();
  const hub = services.use(await startService("channel", ["--port", "0", "--startup-grace", "0"]));
  const hubAddr = `127.0.0.1:${await hub.port()}`;
  const publisher = services.use(await startService("publisher", ["--port", "0", "--hub", hubAddr]));
  const publisherUrl = `http://127.0.0.1:${await publisher.port()}`;
  const pusher = services.use(
    await startService("pusher", ["--port", "0", "--hub", hubAddr, "--publisher-url", publisherUrl]),
  );
  const pusherPort = await pusher.port();
  await until(() => pusher.lines.filter((l) => l.includes('msg="connected to hub"')).length >= 2, 10_000, "hub links");
  // Started: the services now belong to the caller, stopped in reverse order on dispose.
  const owned = services.move();
  return { publisherUrl, pusherPort, [Symbol.asyncDispose]: () => owned.disposeAsync() };
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

Deno.test("browser: the original's console snippet gets its greeting, a broadcast and its targeted message", async () => {
  await using system = await startSystem();
  const { publisherUrl, pusherPort } = system;

  const browser = await launchChromium();
  try {
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
  } finally {
    await within(browser.close(), 10_000, "the browser to close");
  }
});

Deno.test("browser: the demo page shows its address and its buttons publish through the publisher", async () => {
  await using system = await startSystem();
  const { pusherPort } = system;

  const browser = await launchChromium();
  try {
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
  } finally {
    await within(browser.close(), 10_000, "the browser to close");
  }
});
