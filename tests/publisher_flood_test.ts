import assert from "node:assert/strict";
import { startService } from "./_service.ts";
import { HubClient } from "../channel/client.ts";
import { quiet, until, within } from "../channel/testing.ts";
import { workerSubject } from "../shared/address.ts";

/** Connections that trickle their heads. */
const FLOOD = 5000;
/** The publisher's --head-timeout in this test: shorter than the default 10 s, so that the test does not wait it out. */
const HEAD_TIMEOUT = 4000;
const WORKER = "0123456789abcdef";

/** The soft limit on open files of this process (Deno raises it to the hard one at start). */
async function openFilesLimit(): Promise<number> {
  const limits = await Deno.readTextFile("/proc/self/limits");
  return Number(limits.match(/^Max open files\s+(\d+)/m)?.[1] ?? 0);
}

Deno.test("publisher: 5000 connections that trickle a head byte a second do not hold up a publish, and --head-timeout closes them", async () => {
  // This process holds the flood's sockets; the publisher as many, as it runs with the same limit.
  const limit = await openFilesLimit();
  assert.ok(limit >= FLOOD + 1000, `This test needs ${FLOOD + 1000} open files, the limit is ${limit} (ulimit -Hn)`);

  await using hub = await startService("channel", ["--port", "0", "--startup-grace", "0"]);
  const hubPort = await hub.port();
  await using publisher = await startService(
    "publisher",
    ["--port", "0", "--hub", `127.0.0.1:${hubPort}`, "--head-timeout", String(HEAD_TIMEOUT)],
    { env: { PUBLISHER_API_KEY: "" } },
  );
  const port = await publisher.port();
  // A stand-in pusher worker, so that a targeted publish answers ok.
  await using pusher = new HubClient({ port: hubPort, logger: quiet });
  let delivered = 0;
  pusher.subscribe(workerSubject(WORKER), () => delivered++);
  await pusher.publish("stand-in-ready", null);

  const head = new TextEncoder().encode(`GET /?content=slow HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
  const flood: Deno.TcpConn[] = [];
  /** When each connected, and when the publisher closed it. */
  const connected: number[] = [];
  const closed: Promise<number>[] = [];
  let sent = 0;
  let timer: ReturnType<typeof setInterval> | undefined;
  try {
    for (let i = 0; i < FLOOD; i += 250) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(250, FLOOD - i) }, () => Deno.connect({ hostname: "127.0.0.1", port })),
      );
      flood.push(...batch);
      connected.push(...batch.map(() => performance.now()));
    }
    // Each reads until the publisher closes it, and says when.
    for (const conn of flood) {
      closed.push((async () => {
        const buffer = new Uint8Array(1024);
        try {
          while ((await conn.read(buffer)) !== null) { /* a 408 */ }
        } catch { /* reset */ }
        return performance.now();
      })());
    }
    // One byte a second on each, never the whole head.
    const trickle = async () => {
      const byte = head.subarray(sent, sent + 1);
      sent++;
      await Promise.all(flood.map((conn) => conn.write(byte).catch(() => 0)));
    };
    await trickle();
    timer = setInterval(trickle, 1000);

    // A user's publishes while the flood holds its connections open.
    const timings: number[] = [];
    for (let i = 0; i < 5; i++) {
      const started = performance.now();
      const response = await within(
        fetch(`http://127.0.0.1:${port}/?to_worker_id=${WORKER}&to_connection_id=1&content=during-${i}`),
        5000,
        "a publish during the flood",
      );
      const body = await response.text();
      timings.push(performance.now() - started);
      assert.deepEqual([response.status, body], [200, "ok"]);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    assert.ok(
      timings.every((ms) => ms < 100),
      `each publish answered within 100 ms during the flood: ${timings.map((ms) => ms.toFixed(1)).join(", ")} ms`,
    );
    await until(() => delivered === 5, 5000, "the five publishes to reach the stand-in pusher");

    // The head timeout closes every one of them: none before it, each within a watchdog tick (1 s) and some slack after.
    const times = await within(Promise.all(closed), HEAD_TIMEOUT + 10_000, "the publisher to close the flood");
    const held = times.map((at, i) => at - connected[i]!);
    assert.ok(sent < head.length, "no connection of the flood finished its head");
    const [shortest, longest] = [Math.min(...held), Math.max(...held)];
    assert.ok(
      shortest >= HEAD_TIMEOUT - 1000 && longest < HEAD_TIMEOUT + 3000,
      `held ${shortest.toFixed(0)} to ${longest.toFixed(0)} ms, the head timeout is ${HEAD_TIMEOUT} ms`,
    );
    await publisher.waitForLine(/msg="closing connections past a deadline" headTimeouts=\d+ headTimeout=4000/);
  } finally {
    clearInterval(timer);
    for (const conn of flood) {
      try {
        conn.close();
      } catch { /* closed by the publisher */ }
    }
    await Promise.all(closed);
  }
});
