/**
 * Faults with real processes: the hub killed with SIGKILL under load, and a
 * publisher restarted, while 1000 WebSocket clients stay connected.
 */

import assert from "node:assert/strict";
import { type Service, startService } from "./_service.ts";
import { Client } from "../pusher/testing.ts";
import { until } from "../channel/testing.ts";

const CLIENTS = 1000;

interface Answer {
  content: string;
  status: number;
  sentAt: number;
}

/** Publishes `tag-N` broadcasts from `loops` sequential loops until `stop()`; records every answer. */
function streamPublishes(publisherPort: () => number, tag: string, loops = 4) {
  const answers: Answer[] = [];
  let running = true;
  let n = 0;
  const done = Promise.all(Array.from({ length: loops }, async () => {
    while (running) {
      const content = `${tag}-${n++}`;
      const sentAt = Date.now();
      try {
        const response = await fetch(`http://127.0.0.1:${publisherPort()}/?content=${content}`);
        await response.body?.cancel();
        answers.push({ content, status: response.status, sentAt });
      } catch {
        // The publisher itself is being restarted: no answer, so no promise made.
        answers.push({ content, status: 0, sentAt });
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  }));
  return {
    answers,
    async stop() {
      running = false;
      await done;
    },
  };
}

async function connectClients(port: number): Promise<Client[]> {
  const clients: Client[] = [];
  // In batches, so the accept queue is never flooded.
  for (let i = 0; i < CLIENTS; i += 100) {
    const batch = Array.from({ length: 100 }, () => new Client(port));
    await Promise.all(batch.map((client) => client.address()));
    clients.push(...batch);
  }
  return clients;
}

Deno.test("SIGKILL of the hub under load: every ok is delivered to every client, and service returns within 2 s", async () => {
  let hub: Service = await startService("channel", ["--port", "0"]);
  const hubPort = await hub.port();
  const hubAddr = `127.0.0.1:${hubPort}`;
  await using pusher = await startService("pusher", ["--port", "0", "--hub", hubAddr]);
  const pusherPort = await pusher.port();
  await using publisher = await startService("publisher", ["--port", "0", "--hub", hubAddr]);
  const publisherPort = await publisher.port();
  let clients: Client[] = [];
  try {
    clients = await connectClients(pusherPort);
    const stream = streamPublishes(() => publisherPort, "m");
    await until(
      () => stream.answers.filter((a) => a.status === 200).length >= 20,
      10_000,
      "publishes before the crash",
    );

    assert.equal((await hub.stop("SIGKILL")).signal, "SIGKILL");
    await new Promise((resolve) => setTimeout(resolve, 1000)); // an outage of a second
    hub = await startService("channel", ["--port", String(hubPort)]);
    await hub.port();
    const returnedAt = Date.now();
    await until(() => stream.answers.some((a) => a.sentAt > returnedAt + 2000), 15_000, "publishes after the return");
    await until(() => stream.answers.filter((a) => a.sentAt > returnedAt + 2000).length >= 20, 15_000, "more of them");
    await stream.stop();

    const answers = stream.answers;
    assert.deepEqual(
      [...new Set(answers.map((a) => a.status))].filter((s) => s !== 200 && s !== 503),
      [],
      "only ok or 503",
    );
    const late = answers.filter((a) => a.sentAt > returnedAt + 2000);
    assert.ok(late.every((a) => a.status === 200), "everything works within 2 s of the hub's return");
    const promised = answers.filter((a) => a.status === 200).map((a) => a.content);
    assert.ok(
      answers.some((a) => a.status === 200 && a.sentAt > returnedAt),
      "publishes made after the return went out",
    );

    // Every client stayed connected to its pusher and got every acknowledged publish.
    for (const [i, client] of clients.entries()) {
      assert.equal(client.ws.readyState, WebSocket.OPEN, `client ${i} stayed connected`);
    }
    for (const [i, client] of clients.entries()) {
      await until(
        () => {
          const got = new Set(client.messages);
          return promised.every((content) => got.has(content));
        },
        15_000,
        `client ${i} to get all ${promised.length} acknowledged publishes`,
      );
    }
  } finally {
    await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
    await hub.stop();
  }
});

Deno.test("restarting a publisher: clients notice nothing, and publishing resumes", async () => {
  await using hub = await startService("channel", ["--port", "0", "--startup-grace", "0"]);
  const hubAddr = `127.0.0.1:${await hub.port()}`;
  await using pusher = await startService("pusher", ["--port", "0", "--hub", hubAddr]);
  let publisher = await startService("publisher", ["--port", "0", "--hub", hubAddr]);
  const publisherPort = await publisher.port();
  const port = await pusher.port();
  const live = Array.from({ length: 20 }, () => new Client(port));
  try {
    await Promise.all(live.map((c) => c.address()));
    const before = await fetch(`http://127.0.0.1:${publisherPort}/?content=before`);
    assert.equal(await before.text(), "ok");
    assert.equal((await publisher.stop("SIGTERM")).code, 0);
    publisher = await startService("publisher", ["--port", String(publisherPort), "--hub", hubAddr]);
    await publisher.port();
    let after = await fetch(`http://127.0.0.1:${publisherPort}/?content=after`);
    for (let i = 0; i < 50 && after.status !== 200; i++) {
      await after.body?.cancel();
      after = await fetch(`http://127.0.0.1:${publisherPort}/?content=after`);
    }
    assert.equal(await after.text(), "ok");
    for (const client of live) {
      assert.deepEqual((await client.received(3)).slice(1), ["before", "after"]);
      assert.equal(client.ws.readyState, WebSocket.OPEN);
    }
  } finally {
    await Promise.all(live.map((c) => c[Symbol.asyncDispose]()));
    await publisher.stop();
  }
});
