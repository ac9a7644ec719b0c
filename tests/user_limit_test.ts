/**
 * A user's connection limit end to end, as real processes started from their
 * tasks: one hub, two pushers (two workers each) with
 * `--max-connections-per-user 2`, one publisher, and WebSocket clients of a
 * user spread over both pushers.
 */

import assert from "node:assert/strict";
import { type Service, startPublisherOnHub, startPusherOnHub, startService } from "./_service.ts";
import { startNats } from "./_nats.ts";
import { Client } from "../pusher/testing.ts";
import { until, within } from "../channel/testing.ts";
import { signJwt } from "../shared/jwt.ts";
import { PushClient } from "../pusher/client.js";

const SECRET = "user-limit-e2e-secret";

function tokenPath(user: string): string {
  return `/?token=${signJwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 600 }, SECRET)}`;
}

function startPusher(hubPort: number): Promise<{ service: Service; port: number }> {
  return startPusherOnHub(hubPort, { args: ["--token-secret", SECRET, "--max-connections-per-user", "2"] });
}

Deno.test("a user's third connection on any pusher is closed with 3504 'connection limit', publishes reach the first two, and a place frees when one closes", async () => {
  await using hub = await startService("channel", ["--port", "0", "--startup-grace", "0"]);
  const hubPort = await hub.port();
  const a = await startPusher(hubPort);
  const b = await startPusher(hubPort);
  await using _a = a.service;
  await using _b = b.service;
  await using publisher = await startPublisherOnHub(hubPort);
  const publisherPort = await publisher.port();
  await using alice1 = new Client(a.port, undefined, tokenPath("alice"));
  await using alice2 = new Client(b.port, undefined, tokenPath("alice"));
  await alice1.address();
  await alice2.address();
  await using alice3 = new Client(a.port, undefined, tokenPath("alice"));
  const refused = await within(alice3.closed, 5000, "alice's third connection to be closed");
  assert.deepEqual([refused.code, refused.reason], [3504, "connection limit"]);
  assert.deepEqual(alice3.messages, [], "no greeting");
  // The client library takes the close as final: it says so, and does not come back by itself.
  const library = new PushClient(`ws://127.0.0.1:${b.port}`, { token: tokenPath("alice").slice("/?token=".length) });
  const disconnected = new Promise<{ code: number; reason: string; reconnecting: boolean }>((resolve) =>
    library.on("disconnected", resolve)
  );
  library.connect();
  const event = await within(disconnected, 5000, "the library's disconnected event");
  assert.deepEqual([event.code, event.reason, event.reconnecting], [3504, "connection limit", false]);
  assert.equal(library.state, "disconnected");
  // Another user is not limited by alice's connections.
  await using bob = new Client(b.port, undefined, tokenPath("bob"));
  await bob.address();

  const api = async (method: string, body: Record<string, unknown>) => {
    const response = await fetch(`http://127.0.0.1:${publisherPort}/api/${method}`, {
      method: "POST",
      body: JSON.stringify(body),
    });
    const reply = await response.json();
    assert.equal(response.status, 200, JSON.stringify(reply));
    return reply.result;
  };
  assert.equal((await api("presence", { user: "alice" })).connections, 2, "the refused one is gone");
  await api("publish", { user: "alice", data: "for alice" });
  for (const client of [alice1, alice2]) await client.received(2);
  assert.deepEqual([alice1.messages[1], alice2.messages[1]], ["for alice", "for alice"]);

  await alice1[Symbol.asyncDispose]();
  await until(async () => (await api("presence", { user: "alice" })).connections === 1, 5000, "alice's close");
  await using alice4 = new Client(b.port, undefined, tokenPath("alice"));
  const greeted = await Promise.race([alice4.address().then(() => "greeted"), alice4.closed.then((e) => `${e.code}`)]);
  assert.equal(greeted, "greeted");
});

Deno.test("on NATS the limit counts across pushers, and the count waits for the live workers only, not the presence timeout", async () => {
  await using nats = await startNats();
  const presenceTimeout = 10_000;
  const startOnNats = async () => {
    const service = await startService("pusher", [
      "--port",
      "0",
      "--bus",
      nats.url,
      "--token-secret",
      SECRET,
      "--max-connections-per-user",
      "1",
      "--presence-timeout",
      String(presenceTimeout),
    ]);
    await until(
      () => service.lines.filter((line) => line.includes('msg="connected to NATS"')).length >= 2,
      10_000,
      "two worker NATS links",
    );
    return { service, port: await service.port() };
  };
  const a = await startOnNats();
  await using _a = a.service;
  const b = await startOnNats();
  await using _b = b.service;
  // Each worker knows the others once it heard their census heartbeat (every second).
  await until(
    async () => {
      const started = performance.now();
      await using probe = new Client(a.port, undefined, tokenPath(`probe-${started}`));
      await probe.address();
      return performance.now() - started < presenceTimeout / 2;
    },
    10_000,
    "a greeting that did not wait the presence timeout",
  );
  await using alice1 = new Client(a.port, undefined, tokenPath("alice"));
  await within(alice1.address(), presenceTimeout / 2, "alice's first greeting, before the presence timeout");
  await using alice2 = new Client(b.port, undefined, tokenPath("alice"));
  const refused = await within(
    alice2.closed,
    presenceTimeout / 2,
    "alice's second connection, on the other pusher, to be closed",
  );
  assert.deepEqual([refused.code, refused.reason], [3504, "connection limit"]);
  assert.deepEqual(alice2.messages, [], "no greeting");
});
