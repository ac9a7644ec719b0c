import assert from "node:assert/strict";
import { type Service, startPusherOnHub, startService } from "./_service.ts";
import { Client } from "../pusher/testing.ts";
import { until, within } from "../channel/testing.ts";
import { handshakeRequest, httpExchange, RawSocket } from "../pusher/ws_testing.ts";
import { signJwt } from "../shared/jwt.ts";

/** A hub, and a pusher linked to it with `args` added; disposing stops both. */
async function startPusher(args: string[] = []): Promise<{ pusher: Service; port: number } & AsyncDisposable> {
  const hub = await startService("channel", ["--port", "0"]);
  try {
    const pusher = await startService("pusher", ["--port", "0", "--hub", `127.0.0.1:${await hub.port()}`, ...args]);
    return {
      pusher,
      port: await pusher.port(),
      async [Symbol.asyncDispose]() {
        await pusher[Symbol.asyncDispose]();
        await hub[Symbol.asyncDispose]();
      },
    };
  } catch (error) {
    await hub[Symbol.asyncDispose]();
    throw error;
  }
}

Deno.test("pusher task prints help, and refuses bad flags with exit code 2", async () => {
  await using help = await startService("pusher", ["--help"]);
  await help.waitForLine(/^Usage: deno task pusher/);
  assert.equal((await help.process.status).code, 0);
  await using bad = await startService("pusher", ["--workers", "two"]);
  await bad.waitForLine(/Invalid --workers/);
  assert.equal((await bad.process.status).code, 2);
  // A timer waits at most 2^31-1 ms; a longer ping interval would ping every millisecond.
  await using forever = await startService("pusher", ["--idle-timeout", "2147484"]);
  await forever.waitForLine(/Invalid --idle-timeout: expected 1 to 2147483 s/);
  assert.equal((await forever.process.status).code, 2);
  // An empty secret would let anyone sign tokens.
  await using empty = await startService("pusher", ["--token-secret", ""]);
  await empty.waitForLine(/Invalid --token-secret: empty/);
  assert.equal((await empty.process.status).code, 2);
  // Without tokens connections have no user to count.
  await using unlimited = await startService("pusher", ["--max-connections-per-user", "2"]);
  await unlimited.waitForLine(/Invalid --max-connections-per-user: it needs --token-secret/);
  assert.equal((await unlimited.process.status).code, 2);
  // A worker with no share of the connections would refuse everyone who reaches it.
  await using unshared = await startService("pusher", ["--workers", "2", "--max-connections", "1"]);
  await unshared.waitForLine(/Invalid --max-connections: at least one per worker \(2\), got 1/);
  assert.equal((await unshared.process.status).code, 2);
  await using tiny = await startService("pusher", ["--hub-max-frame-bytes", "10"]);
  await tiny.waitForLine(/Invalid --hub-max-frame-bytes: at least 64, got 10/);
  assert.equal((await tiny.process.status).code, 2);
  // The bus carries a channel as channel.<name>, at most 256 characters: a longer limit could never hold.
  await using long = await startService("pusher", ["--max-channel-length", "249"]);
  await long.waitForLine(
    /Invalid --max-channel-length: at most 248 \(the bus carries a channel as channel\.<name>\), got 249/,
  );
  assert.equal((await long.process.status).code, 2);
});

Deno.test("pusher workers share one port, each with its own worker id, and SIGTERM closes clients with 1001", async () => {
  await using system = await startPusher(["--workers", "3"]);
  const { pusher, port } = system;
  assert.equal(pusher.lines.filter((line) => line.includes('msg="worker started"')).length, 3);
  const clients = Array.from({ length: 30 }, () => new Client(port));
  try {
    const workers = new Set((await Promise.all(clients.map((c) => c.address()))).map((a) => a.worker));
    assert.ok(workers.size >= 2, `30 connections all landed on one worker of 3`);
    const closing = clients.map((client) => client.closed);
    assert.equal((await pusher.stop("SIGTERM")).code, 0);
    for (const event of await Promise.all(closing)) assert.equal(event.code, 1001);
  } finally {
    await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
  }
});

Deno.test("pusher --server deno: workers on Deno.serve share one port, greet, get a broadcast through a publisher, and SIGTERM closes clients with 1001", async () => {
  await using hub = await startService("channel", ["--port", "0", "--startup-grace", "0"]);
  const hubAddr = `127.0.0.1:${await hub.port()}`;
  const started = await startPusherOnHub(hubAddr, { args: ["--server", "deno"] });
  await using pusher = started.service;
  const port = started.port;
  await pusher.waitForLine(/msg=listening .*server=deno/);
  await using publisher = await startService("publisher", ["--port", "0", "--hub", hubAddr]);
  const clients = Array.from({ length: 12 }, () => new Client(port));
  try {
    const workers = new Set((await Promise.all(clients.map((c) => c.address()))).map((a) => a.worker));
    assert.equal(workers.size, 2, "12 connections all landed on one worker of 2");
    const response = await fetch(`http://127.0.0.1:${await publisher.port()}/?content=hello%20deno`);
    assert.equal(await response.text(), "ok");
    for (const client of clients) await until(() => client.messages.includes("hello deno"), 5000, "the broadcast");
    const closing = clients.map((client) => client.closed);
    assert.equal((await pusher.stop("SIGTERM")).code, 0);
    for (const event of await Promise.all(closing)) assert.equal(event.code, 1001);
  } finally {
    await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
  }
});

Deno.test("a second pusher on the port of one running refuses to start, instead of sharing its connections", async () => {
  await using first = await startService("pusher", ["--port", "0", "--hub", "127.0.0.1:9", "--workers", "1"]);
  const port = await first.port();
  await using second = await startService("pusher", ["--port", String(port), "--hub", "127.0.0.1:9", "--workers", "1"]);
  assert.equal((await within(second.process.status, 20_000, "the second pusher to exit")).code, 1);
  assert.ok(
    second.lines.some((line) => line.includes(`Cannot listen on 127.0.0.1:${port}: the address is already in use`)),
    second.lines.join("\n"),
  );
  // The first still has every connection.
  const answer = await fetch(`http://127.0.0.1:${port}/client.js`, { method: "HEAD" });
  await answer.body?.cancel();
  assert.equal(answer.status, 200);
});

Deno.test("pusher refuses an unknown --server with exit code 2", async () => {
  await using bad = await startService("pusher", ["--server", "hyper"]);
  await bad.waitForLine(/Invalid --server: listen or deno, got hyper/);
  assert.equal((await bad.process.status).code, 2);
});

Deno.test("pusher /healthz follows the hub links of all workers and /metrics adds up every worker", async () => {
  let hub = await startService("channel", ["--port", "0", "--startup-grace", "0"]);
  const hubPort = await hub.port();
  await using pusher = await startService("pusher", ["--port", "0", "--hub", `127.0.0.1:${hubPort}`]);
  const port = await pusher.port();
  const health = async () => {
    const response = await fetch(`http://127.0.0.1:${port}/healthz`);
    return `${response.status} ${(await response.text()).trim()}`;
  };
  try {
    await until(async () => (await health()) === "200 ok", 10_000, "healthy");
    const clients = Array.from({ length: 6 }, () => new Client(port));
    try {
      await Promise.all(clients.map((c) => c.address()));
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      assert.match(metrics, /^pusher_workers 2$/m);
      assert.match(metrics, /^pusher_connections 6$/m, "every worker's connections, whichever answered");
    } finally {
      await Promise.all(clients.map((c) => c[Symbol.asyncDispose]()));
    }
    await hub.stop("SIGKILL");
    await until(async () => (await health()).startsWith("503 hub link down in 2 of 2 workers"), 10_000, "unhealthy");
    hub = await startService("channel", ["--port", String(hubPort), "--startup-grace", "0"]);
    await until(async () => (await health()) === "200 ok", 10_000, "healthy again");
  } finally {
    await hub.stop();
  }
});

Deno.test("a crashed pusher worker is replaced with a new worker id while the other worker's clients carry on", async () => {
  await using hub = await startService("channel", ["--port", "0", "--startup-grace", "0"]);
  const hubPort = await hub.port();
  await using pusher = await startService("pusher", ["--port", "0", "--hub", `127.0.0.1:${hubPort}`]);
  const port = await pusher.port();
  await using publisher = await startService("publisher", ["--port", "0", "--hub", `127.0.0.1:${hubPort}`]);
  const publish = async (content: string) => {
    const response = await fetch(`http://127.0.0.1:${await publisher.port()}/?content=${content}`);
    return response.text();
  };
  const clients = Array.from({ length: 12 }, () => new Client(port));
  const fresh: Client[] = [];
  try {
    const addresses = await Promise.all(clients.map((c) => c.address()));
    const started = pusher.lines.filter((l) => l.includes('msg="worker started"'));
    const crashedId = /slot=0 worker=(\w+)/.exec(started.find((l) => l.includes("slot=0"))!)![1]!;
    const survivors = clients.filter((_, i) => addresses[i]!.worker !== crashedId);
    const victims = clients.filter((_, i) => addresses[i]!.worker === crashedId);
    assert.ok(survivors.length > 0 && victims.length > 0, "clients on both workers");

    pusher.process.kill("SIGUSR2");
    await until(
      () => pusher.lines.filter((l) => l.includes('msg="worker started" slot=0')).length === 2,
      10_000,
      "a replacement",
    );
    const replacementId = /slot=0 worker=(\w+)/.exec(pusher.lines.filter((l) => l.includes("slot=0")).at(-1)!)![1]!;
    assert.notEqual(replacementId, crashedId);
    for (const victim of victims) await within(victim.closed, 5000, "the crashed worker's clients to drop");

    // New connections land on both workers again; the replacement gets broadcasts.
    let onReplacement: Client | undefined;
    for (let i = 0; i < 40 && !onReplacement; i++) {
      const client = new Client(port);
      fresh.push(client);
      if ((await client.address()).worker === replacementId) onReplacement = client;
    }
    assert.ok(onReplacement, "no new connection reached the replacement worker");
    await until(
      () => pusher.lines.filter((l) => l.includes('msg="connected to hub"')).length >= 3,
      10_000,
      "its hub link",
    );
    assert.equal(await publish("after-crash"), "ok");
    for (const client of [...survivors, onReplacement]) {
      await until(() => client.messages.includes("after-crash"), 5000, "the broadcast");
      assert.equal(client.ws.readyState, WebSocket.OPEN);
    }
  } finally {
    await Promise.all([...clients, ...fresh].map((c) => c[Symbol.asyncDispose]()));
  }
});

Deno.test("pusher /metrics counts the connections its server refuses before the handshake reaches the pusher", async () => {
  await using system = await startPusher(["--workers", "1", "--max-connections", "1"]);
  const { port } = system;
  await using client = new Client(port);
  await client.address();
  const full = await httpExchange(port, handshakeRequest());
  assert.equal(`${full.status} ${full.body}`, "503 Too many connections: 1\n");
  const bad = await httpExchange(port, "GARBAGE\r\n\r\n");
  assert.equal(`${bad.status} ${bad.body}`, "400 Bad request line\n");
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  assert.match(metrics, /^pusher_rejected_total\{reason="too_many_connections"\} 1$/m);
  assert.match(metrics, /^pusher_rejected_total\{reason="bad_request"\} 1$/m);
  assert.match(metrics, /^pusher_connections 1$/m);
});

Deno.test("pusher starts no replacement worker once it is shutting down", async () => {
  await using system = await startPusher();
  const { pusher, port } = system;
  // Clients that do not answer the 1001 keep the drain going for a second: past the replacement's 100 ms.
  const silent = await Promise.all(Array.from({ length: 6 }, () => RawSocket.open(port)));
  try {
    pusher.process.kill("SIGUSR2"); // the fault drill: slot 0 ends, its replacement due in 100 ms
    pusher.process.kill("SIGTERM");
    assert.equal((await within(pusher.process.status, 15_000, "the pusher to stop")).code, 0);
  } finally {
    for (const socket of silent) socket.close();
  }
  const shutdown = pusher.lines.findIndex((line) => line.includes('msg="shutting down"'));
  assert.ok(shutdown >= 0);
  assert.deepEqual(pusher.lines.slice(shutdown).filter((line) => line.includes('msg="worker started"')), []);
});

Deno.test("pusher backs off a worker that cannot start, and exits 1 when none is left", async () => {
  await using system = await startPusher(["--workers", "1"]);
  const { pusher, port } = system;
  pusher.process.kill("SIGUSR2"); // the only worker ends
  // Something else takes the port before the replacement binds it.
  let squatter: Deno.TcpListener | undefined;
  for (let i = 0; i < 1000 && !squatter; i++) {
    try {
      squatter = Deno.listen({ hostname: "127.0.0.1", port });
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }
  assert.ok(squatter, "the port was taken over");
  try {
    assert.equal((await within(pusher.process.status, 20_000, "the pusher to give up")).code, 1);
  } finally {
    squatter.close();
  }
  const died = pusher.lines.filter((line) => line.includes('msg="worker died"')).length;
  assert.ok(died <= 6, `${died} failed starts: it backs off and gives up after 5`);
  await pusher.waitForLine(/msg="No pusher worker is left: slot 0 failed to start 5 times in a row"/);
});

Deno.test("pusher /metrics counters do not go back when a worker is replaced", async () => {
  await using system = await startPusher();
  const { pusher, port } = system;
  const total = async () => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    return Number(/^pusher_connections_total (\d+)$/m.exec(text)?.[1]);
  };
  const clients = Array.from({ length: 12 }, () => new Client(port));
  await Promise.all(clients.map((client) => client.address()));
  await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
  assert.equal(await total(), 12);
  pusher.process.kill("SIGUSR2"); // slot 0 ends, with its share of the 12
  await until(
    () => pusher.lines.filter((line) => line.includes('msg="worker started" slot=0')).length === 2,
    10_000,
    "the replacement",
  );
  assert.equal(await total(), 12);
});

Deno.test("pusher --max-connections holds for all workers together", async () => {
  await using system = await startPusher(["--workers", "4", "--max-connections", "5"]);
  const { port } = system;
  const clients: Client[] = [];
  try {
    // Shares of 2, 1, 1 and 1; the kernel spreads connections over the workers.
    let open = 0;
    for (let i = 0; i < 40; i++) {
      const client = new Client(port);
      clients.push(client);
      const outcome = new Promise<boolean>((resolve) => {
        client.ws.addEventListener("message", () => resolve(true), { once: true });
        client.closed.then(() => resolve(false));
      });
      const greeted = await within(outcome, 5000, `client ${i} to be greeted or refused`);
      if (greeted) open++;
    }
    assert.ok(open >= 1 && open <= 5, `${open} connections open with --max-connections 5`);
  } finally {
    await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
  }
});

for (const server of ["listen", "deno"]) {
  Deno.test(`pusher --server ${server} lets a handshake whose token expired in, only to close it with 4401 before any greeting`, async () => {
    await using pusher = await startService("pusher", ["--port", "0", "--workers", "1", "--server", server], {
      env: { PUSHER_TOKEN_SECRET: "process-test-secret" },
    });
    const port = await pusher.port();
    const token = signJwt({ sub: "alice", exp: Math.floor(Date.now() / 1000) - 10 }, "process-test-secret");
    // A browser shows a 401 as a bare 1006; this it can read.
    const socket = new WebSocket(`ws://127.0.0.1:${port}/?token=${token}`);
    const messages: string[] = [];
    socket.onmessage = (event) => messages.push(String(event.data));
    const closed = await within(new Promise<CloseEvent>((resolve) => socket.onclose = resolve), 5000, "the close");
    assert.deepEqual([closed.code, closed.reason], [4401, "token expired"]);
    assert.deepEqual(messages, [], "no greeting: it never was a connection");
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /^pusher_rejected_total\{reason="token"\} 1$/m);
    assert.match(metrics, /^pusher_connections_total 0$/m);
  });
}
