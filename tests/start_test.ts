/**
 * `deno task start` as a user runs it. It serves the original's fixed ports
 * (2206, 4236, 4237): that is its job, so this test cannot use port 0.
 */

import assert from "node:assert/strict";
import { type Service, startCommand, startService } from "./_service.ts";
import { Client } from "../pusher/testing.ts";
import { RawSocket } from "../pusher/ws_testing.ts";
import { until, within } from "../channel/testing.ts";
import { taskCommand } from "../shared/tasks.ts";
import { SAME_SIGNAL_MS, samePort, splitStartArgs, wiring } from "../start.ts";

Deno.test("deno task start runs hub, pusher and publisher on the original's ports and Ctrl-C stops all three", async () => {
  await using start = await startSystem();
  await start.waitForLine(/Ctrl-C stops all three/, 20_000);
  for (const line of ["Demo page:        http://127.0.0.1:4236/", 'ws = new WebSocket("ws://127.0.0.1:4236")']) {
    assert.ok(start.lines.some((l) => l.includes(line)), line);
  }
  assert.ok(start.lines.some((l) => l.includes("Dashboard:        http://127.0.0.1:4237/dashboard")), "dashboard");
  await using client = new Client(4236);
  const { worker, connection } = await client.address();
  const answer = await fetch(`http://127.0.0.1:4237/?to_worker_id=${worker}&to_connection_id=${connection}&content=hi`);
  assert.equal(await answer.text(), "ok");
  assert.deepEqual((await client.received(2)).slice(1), ["hi"]);

  const status = await start.stop("SIGINT");
  assert.equal(status.code, 0);
  for (const service of ["publisher", "pusher", "channel"]) {
    assert.ok(start.lines.some((l) => l.includes(`svc=${service} msg=stopped`)), `${service} stopped cleanly`);
  }
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: 2206 }), "the hub is gone");
});

Deno.test("deno task start gives each service the flags after its name, points the others at a moved hub and publisher, and prints the addresses they listen on", async () => {
  await using start = await startSystem([
    "channel:",
    "--port",
    "0",
    "pusher:",
    "--presence-channels",
    "room.*",
    "publisher:",
    "--port",
    "0",
  ]);
  await start.waitForLine(/Ctrl-C stops all three/, 20_000);
  const everyone = start.lines.find((l) => l.startsWith("  Push to everyone: "));
  const port = Number(/^ {2}Push to everyone: http:\/\/127\.0\.0\.1:(\d+)\/\?content=hello$/.exec(everyone ?? "")?.[1]);
  assert.ok(port > 0 && port !== 4237, `the publisher's own port in ${JSON.stringify(everyone)}`);
  assert.ok(start.lines.includes(`  Dashboard:        http://127.0.0.1:${port}/dashboard`), "the dashboard there too");
  assert.ok(start.lines.includes("  Demo page:        http://127.0.0.1:4236/"), "the pusher on its default port");
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: 2206 }), "no hub on its default port");
  // The demo page calls the publisher where it is.
  const page = await fetch("http://127.0.0.1:4236/").then((r) => r.text());
  assert.ok(page.includes(`"http://127.0.0.1:${port}"`), "the demo page has the publisher's URL");

  await using client = new Client(4236);
  await client.address();
  assert.deepEqual(await client.ask({ id: 1, subscribe: { channel: "room.1" } }), { id: 1, result: {} });
  // Only a presence channel answers a browser's presence: the pusher got
  // --presence-channels. A hub just started holds publishes for its startup
  // grace: a presence asked meanwhile answers 503, or, when the grace ends
  // just before the ask's --presence-timeout, partial with the replies that
  // made it in the time left.
  let id = 2;
  let stats: unknown;
  await until(
    async () => {
      stats = await client.ask({ id: ++id, presence_stats: { channel: "room.1" } });
      return !/"code":503|"partial":true/.test(JSON.stringify(stats));
    },
    10_000,
    "the hub's startup grace to end",
  );
  assert.deepEqual(stats, { id, result: { num_clients: 1, num_users: 0 } });
  const answer = await fetch(`http://127.0.0.1:${port}/?channel=room.1&content=hi`);
  assert.equal(await answer.text(), "ok");
  await until(() => client.messages.includes(JSON.stringify({ channel: "room.1", data: "hi" })), 5000, "the publish");
  assert.equal((await start.stop("SIGINT")).code, 0);
});

Deno.test("deno task start refuses a service name it does not know, before starting anything", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["task", "start", "pushr:", "--workers", "4"],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 2);
  const stderr = new TextDecoder().decode(output.stderr);
  assert.match(stderr, /Unknown service 'pushr:': expected channel:, pusher: or publisher: before its flags/);
  assert.doesNotMatch(stderr, /svc=(channel|pusher|publisher)/, "no service started");
});

Deno.test("wiring: a moved hub and publisher are passed on, unless the service's flags or the environment say where to go", () => {
  const env = (vars: Record<string, string>) => (name: string) => vars[name];
  const moved = {
    channel: { addr: "0.0.0.0:2300", tls: false },
    publisher: { addr: "127.0.0.1:4300", tls: true },
  };
  assert.deepEqual(wiring("pusher", moved, [], env({})), [
    "--hub",
    "127.0.0.1:2300",
    "--publisher-url",
    "https://127.0.0.1:4300",
  ]);
  assert.deepEqual(wiring("publisher", { channel: moved.channel }, [], env({})), ["--hub", "127.0.0.1:2300"]);
  assert.deepEqual(wiring("channel", moved, [], env({})), []);
  assert.deepEqual(
    wiring("pusher", moved, ["--bus", "nats://127.0.0.1:4222", "--publisher-url=http://x"], env({})),
    [],
  );
  assert.deepEqual(wiring("publisher", moved, ["--hub=10.0.0.1:2206"], env({})), []);
  assert.deepEqual(wiring("publisher", moved, [], env({ CHANNEL_BUS: "redis://127.0.0.1:6379" })), []);
  assert.deepEqual(wiring("publisher", moved, [], env({ CHANNEL_HUB: "10.0.0.1:2206" })), []);
  // Where they would look by themselves, nothing: the demo page keeps calling the host it came from.
  const defaults = { channel: { addr: "127.0.0.1:2206", tls: false }, publisher: { addr: "0.0.0.0:4237", tls: false } };
  assert.deepEqual(wiring("pusher", defaults, [], env({})), []);
  // A page served over TLS would call https on the publisher's port: told where the plain-text publisher is.
  assert.deepEqual(wiring("pusher", defaults, ["--cert", "c.pem", "--key", "k.pem"], env({})), [
    "--publisher-url",
    "http://127.0.0.1:4237",
  ]);
  const both = { publisher: { addr: "0.0.0.0:4237", tls: true } };
  assert.deepEqual(wiring("pusher", both, ["--cert=c.pem", "--key=k.pem"], env({})), []);
  assert.deepEqual(wiring("pusher", both, [], env({})), ["--publisher-url", "https://127.0.0.1:4237"]);
  assert.deepEqual(wiring("pusher", { channel: { addr: "::1:2301", tls: false } }, [], env({})), [
    "--hub",
    "[::1]:2301",
  ]);
});

Deno.test("samePort: a service comes back on the port it listened on, whatever port it was given", () => {
  const at = (addr: string) => ({ addr, tls: false });
  assert.deepEqual(samePort(["--port", "0", "--workers", "2"], undefined), ["--port", "0", "--workers", "2"]);
  assert.deepEqual(samePort(["--port", "0", "--workers", "2"], at("0.0.0.0:41234")), [
    "--workers",
    "2",
    "--port",
    "41234",
  ]);
  assert.deepEqual(samePort(["--port=0"], at("[::]:41234")), ["--port", "41234"]);
  assert.deepEqual(samePort([], at("0.0.0.0:2206")), ["--port", "2206"]);
});

Deno.test("splitStartArgs: start's flags first, then each service's after its name", () => {
  assert.deepEqual(splitStartArgs(["--stable-after", "0", "publisher:", "--port", "0", "channel:", "--port", "2300"]), {
    own: ["--stable-after", "0"],
    services: { channel: ["--port", "2300"], pusher: [], publisher: ["--port", "0"] },
  });
  assert.throws(() => splitStartArgs(["pusher:", "--workers", "1", "pusher:"]), /'pusher:' is given twice/);
});

/** `deno task start` as a terminal runs it: the leader of a process group of its own, which Ctrl-C signals whole. */
async function startInTerminal(): Promise<Service> {
  const start = startCommand("start", ["setsid", ...await taskCommand("start")]);
  await start.waitForLine(/Ctrl-C stops all three/, 20_000);
  return start;
}

function signalGroup(pgid: number, signal: Deno.Signal): Promise<Deno.CommandOutput> {
  return new Deno.Command("kill", { args: [`-${signal}`, "--", `-${pgid}`] }).output();
}

Deno.test("Ctrl-C on deno task start drains every service, though the terminal signals the whole group", async () => {
  await using start = await startInTerminal();
  // A client that does not answer the pusher's 1001 keeps its drain going for a second.
  await using _silent = await RawSocket.open(4236);
  await signalGroup(start.process.pid, "SIGINT");
  assert.equal((await within(start.process.status, 20_000, "deno task start to stop")).code, 0);
  await start.stop();
  for (const service of ["publisher", "pusher", "channel"]) {
    assert.ok(start.lines.some((l) => l.includes(`svc=${service} msg=stopped`)), `${service} drained`);
  }
});

Deno.test("Ctrl-C that also comes forwarded, as npx and the task runner pass it on, drains every service as one Ctrl-C", async () => {
  await using start = await startInTerminal();
  await using _silent = await RawSocket.open(4236);
  // The terminal's copy, to the whole group, and a runner's, to its child, a moment apart.
  await signalGroup(start.process.pid, "SIGINT");
  start.process.kill("SIGINT");
  assert.equal((await within(start.process.status, 20_000, "deno task start to stop")).code, 0);
  await start.stop();
  for (const service of ["publisher", "pusher", "channel"]) {
    assert.ok(start.lines.some((l) => l.includes(`svc=${service} msg=stopped`)), `${service} drained`);
  }
});

Deno.test("a second signal to deno task start ends every service at once, leaving none behind", async () => {
  await using start = await startInTerminal();
  await using _silent = await RawSocket.open(4236);
  start.process.kill("SIGTERM");
  const first = performance.now();
  await start.waitForLine(/svc=publisher msg=stopped/);
  // Later than a forwarded copy of the first would come; the pusher drains a second for its silent client.
  const copyWindow = SAME_SIGNAL_MS + 100 - (performance.now() - first);
  if (copyWindow > 0) await new Promise((resolve) => setTimeout(resolve, copyWindow));
  start.process.kill("SIGTERM"); // the pusher is still draining
  assert.equal((await within(start.process.status, 20_000, "deno task start to stop")).code, 1);
  await start.stop();
  for (const port of [2206, 4236, 4237]) {
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }), `nothing listens on ${port}`);
  }
});

Deno.test("deno task start kills a service that does not stop within --stop-timeout, and still drains the others", async () => {
  await using start = await startSystem(["--stop-timeout", "1000"]);
  const pusher = await pidOf(start, "pusher");
  await start.waitForLine(/Ctrl-C stops all three/, 20_000);
  // A pusher that cannot act on a signal: it would hold up the hub's stop for ever.
  Deno.kill(pusher, "SIGSTOP");
  start.process.kill("SIGTERM");
  assert.equal((await within(start.process.status, 20_000, "deno task start to stop")).code, 0);
  assert.ok(start.lines.some((l) => l.includes('msg="a service did not stop in time: killing it"')));
  for (const service of ["publisher", "channel"]) {
    assert.ok(start.lines.some((l) => l.includes(`svc=${service} msg=stopped`)), `${service} drained`);
  }
});

Deno.test("services started by deno task start go when it is killed outright, instead of running on unsupervised", async () => {
  await using start = await startInTerminal();
  const pids = await Promise.all(["channel", "pusher", "publisher"].map((service) => pidOf(start, service)));
  // As the OOM killer does: no signal it could pass on.
  start.process.kill("SIGKILL");
  await start.process.status;
  const gone = (pid: number) => {
    try {
      return Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.startsWith("Z");
    } catch {
      return true;
    }
  };
  await until(() => pids.every(gone), 20_000, "every service to stop");
  for (const port of [2206, 4236, 4237]) {
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }), `nothing listens on ${port}`);
  }
});

Deno.test("a terminal hangup (SIGHUP to the group) drains every service under deno task start", async () => {
  await using start = await startInTerminal();
  await signalGroup(start.process.pid, "SIGHUP");
  assert.equal((await within(start.process.status, 20_000, "deno task start to stop")).code, 0);
  await start.stop();
  for (const service of ["publisher", "pusher", "channel"]) {
    assert.ok(start.lines.some((l) => l.includes(`svc=${service} msg=stopped`)), `${service} drained`);
  }
});

/**
 * `deno task start` with `args`, stopped with Ctrl-C when disposed: a
 * SIGKILL alone would leave its services running, holding the ports.
 */
async function startSystem(args: string[] = []): Promise<Service> {
  const start = await startService("start", args);
  return {
    ...start,
    async [Symbol.asyncDispose]() {
      await within(start.stop("SIGINT"), 20_000, "deno task start to stop").catch(() => {});
      await start[Symbol.asyncDispose]();
    },
  };
}

/** The pid of `service` as `deno task start` last logged it up (`restarts` times restarted). */
async function pidOf(start: Service, service: string, restarts = 0): Promise<number> {
  const restarted = restarts ? ` restarts=${restarts}$` : "$";
  const line = await start.waitForLine(new RegExp(`msg="service up" service=${service} .*pid=\\d+${restarted}`));
  return Number(/pid=(\d+)/.exec(line)![1]);
}

async function healthy(url: string): Promise<boolean> {
  try {
    const answer = await fetch(url, { signal: AbortSignal.timeout(500) });
    // Read whatever the status: a body left unread is a leak.
    return (await answer.text()).trim() === "ok" && answer.ok;
  } catch {
    return false;
  }
}

async function hubAnswers(): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port: 2206 })).close();
    return true;
  } catch {
    return false;
  }
}

function settled(promise: Promise<unknown>): Promise<boolean> {
  return Promise.race([promise.then(() => true), new Promise<boolean>((resolve) => setTimeout(resolve, 0, false))]);
}

Deno.test("deno task start brings a killed hub back within 2 s, and the pusher's clients stay connected and get publishes again", async () => {
  await using start = await startSystem();
  await start.waitForLine(/Ctrl-C stops all three/, 20_000);
  const hub = await pidOf(start, "channel");
  await using client = new Client(4236);
  await client.address();

  Deno.kill(hub, "SIGKILL");
  const killed = Date.now();
  await start.waitForLine(/msg="service exited; restarting" service=channel signal=SIGKILL delay_ms=\d+ attempt=1/);
  await until(hubAnswers, 2000 - (Date.now() - killed), "the hub's port to answer again");
  await until(() => healthy("http://127.0.0.1:4236/healthz"), 2000 - (Date.now() - killed), "the pusher's /healthz");
  assert.notEqual(await pidOf(start, "channel", 1), hub, "a new hub process");

  const answer = await fetch("http://127.0.0.1:4237/?content=again", { signal: AbortSignal.timeout(10_000) });
  assert.equal(await answer.text(), "ok");
  assert.deepEqual((await client.received(2)).slice(1), ["again"]);
  assert.equal(await settled(client.closed), false, "the client saw no close");
  assert.equal((await start.stop("SIGINT")).code, 0);
});

Deno.test("deno task start brings a killed hub that was started on port 0 back on the same port, where the others were pointed", async () => {
  await using start = await startSystem(["channel:", "--port", "0"]);
  await start.waitForLine(/Ctrl-C stops all three/, 20_000);
  const addr = (line: string) => /addr=(\S+)/.exec(line)![1];
  const first = await start.waitForLine(/msg="service up" service=channel .*pid=\d+$/);
  await using client = new Client(4236);
  await client.address();

  Deno.kill(Number(/pid=(\d+)/.exec(first)![1]), "SIGKILL");
  const again = await start.waitForLine(/msg="service up" service=channel .*restarts=1$/, 10_000);
  assert.equal(addr(again), addr(first));
  await until(() => healthy("http://127.0.0.1:4236/healthz"), 10_000, "the pusher's hub link again");
  const answer = await fetch("http://127.0.0.1:4237/?content=again", { signal: AbortSignal.timeout(10_000) });
  assert.equal(await answer.text(), "ok");
  assert.deepEqual((await client.received(2)).slice(1), ["again"]);
  assert.equal((await start.stop("SIGINT")).code, 0);
});

Deno.test("deno task start brings a killed publisher and a killed pusher back: the publisher answers, a new connection is greeted", async () => {
  await using start = await startSystem();
  await start.waitForLine(/Ctrl-C stops all three/, 20_000);

  Deno.kill(await pidOf(start, "publisher"), "SIGKILL");
  await start.waitForLine(/msg="service exited; restarting" service=publisher signal=SIGKILL .*attempt=1/);
  await until(() => healthy("http://127.0.0.1:4237/healthz"), 5000, "the restarted publisher's /healthz");

  await using before = new Client(4236);
  await before.address();
  Deno.kill(await pidOf(start, "pusher"), "SIGKILL");
  await within(before.closed, 5000, "the killed pusher's client to lose its socket");
  await start.waitForLine(/msg="service exited; restarting" service=pusher signal=SIGKILL .*attempt=1/);
  await pidOf(start, "pusher", 1);
  await until(() => healthy("http://127.0.0.1:4236/healthz"), 5000, "the restarted pusher's /healthz");
  await using after = new Client(4236);
  const { worker, connection } = await after.address();
  const url = `http://127.0.0.1:4237/?to_worker_id=${worker}&to_connection_id=${connection}&content=back`;
  assert.equal(await (await fetch(url, { signal: AbortSignal.timeout(10_000) })).text(), "ok");
  assert.deepEqual((await after.received(2)).slice(1), ["back"]);
  assert.equal((await start.stop("SIGINT")).code, 0);
});

Deno.test("deno task start backs off further for a service that keeps dying, and afresh after it stayed up --stable-after", async () => {
  for (const [stableAfter, second] of [["60000", 2], ["0", 1]] as const) {
    await using start = await startSystem(["--stable-after", stableAfter]);
    await start.waitForLine(/Ctrl-C stops all three/, 20_000);
    Deno.kill(await pidOf(start, "channel"), "SIGKILL");
    Deno.kill(await pidOf(start, "channel", 1), "SIGKILL");
    await start.waitForLine(new RegExp(`service=channel signal=SIGKILL delay_ms=\\d+ attempt=${second}$`));
    await pidOf(start, "channel", second);
    assert.equal((await start.stop("SIGINT")).code, 0);
  }
});

Deno.test("deno task start exits non-zero, naming the service and its last stderr lines, when a service keeps failing to start", async () => {
  // The hub's port, taken: the hub can never listen.
  using _taken = Deno.listen({ hostname: "127.0.0.1", port: 2206 });
  await using start = await startSystem();
  const status = await within(start.process.status, 20_000, "deno task start to give up");
  await start.stop();
  assert.notEqual(status.code, 0);
  const line = start.lines.find((l) => l.includes("svc=start") && l.includes("level=error"));
  assert.match(line ?? "", /channel keeps failing to start: it exited 5 times in a row before listening/);
  const tail = start.lines.slice(start.lines.indexOf(line!));
  assert.ok(
    tail.some((l) => /^ {2}.*svc=channel .*(in use|AddrInUse)/i.test(l)),
    `the hub's own error:\n${tail.join("\n")}`,
  );
  assert.ok(!start.lines.some((l) => l.includes("Push system running.")), "never claimed to run");
  for (const port of [4236, 4237]) {
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }), `nothing listens on ${port}`);
  }
});
