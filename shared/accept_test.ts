import assert from "node:assert/strict";
import { AcceptLog, acceptNext } from "./accept.ts";
import { createLogger } from "./log.ts";
import { within } from "../channel/testing.ts";

/** Another process opens `n` connections to `port` and resets each (RST) as soon as it is up. */
async function connectAndReset(port: number, n: number): Promise<void> {
  const script = `
    import net from "node:net";
    for (let i = 0; i < ${n}; i++) {
      await new Promise((resolve) => {
        const socket = net.connect(${port}, "127.0.0.1", () => (socket.resetAndDestroy(), resolve()));
        socket.on("error", () => {});
      });
    }`;
  const { success, stderr } = await new Deno.Command(Deno.execPath(), { args: ["eval", script], stdout: "null" })
    .output();
  assert.ok(success, new TextDecoder().decode(stderr));
}

Deno.test("acceptNext skips connections reset before accept at once, without pausing or logging an error", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const lines: string[] = [];
  const logger = createLogger("test", { level: "debug", sink: (line) => lines.push(line) });
  // Queued before anything accepts, so the resets are in the backlog ahead of the good one.
  await connectAndReset(listener.addr.port, 20);
  using good = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  // A pause after any of the resets would outlast the deadline below.
  const options = { stopping: () => false, log: new AcceptLog(logger), retryDelay: 60_000 };
  let accepted: Deno.TcpConn | null;
  while (true) {
    accepted = await within(acceptNext(listener, options), 5000, "the good connection behind 20 resets");
    // A reset that came after its accept is an ordinary connection that ends at once.
    if (accepted?.remoteAddr.port === good.localAddr.port) break;
    accepted?.close();
  }
  accepted!.close();
  assert.ok(lines.some((line) => line.includes('msg="connection gone before accept"')), "the resets were seen");
  assert.deepEqual(lines.filter((line) => line.includes("level=error")), []);
});

Deno.test("acceptNext resolves null once the listener is closed while stopping", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let stopping = false;
  const log = new AcceptLog(createLogger("test", { level: "silent" }));
  const next = acceptNext(listener, { stopping: () => stopping, log });
  stopping = true;
  listener.close();
  assert.equal(await within(next, 5000, "acceptNext to end"), null);
});

/** A listener whose accepts follow `script`: "fail" rejects as out of descriptors, "ok" resolves. */
function scriptedListener(script: ("fail" | "ok")[]) {
  return {
    accept(): Promise<string> {
      const step = script.shift();
      if (step === "ok") return Promise.resolve("conn");
      return Promise.reject(new Error("Too many open files (os error 24)"));
    },
  };
}

Deno.test("an accept loop out of descriptors logs one error, not one per retry or per flap, and says when it accepts again", async () => {
  const lines: string[] = [];
  const log = new AcceptLog(createLogger("test", { level: "info", sink: (line) => lines.push(line) }));
  const listener = scriptedListener(["fail", "fail", "fail", "ok", "fail", "fail", "ok"]);
  const options = { stopping: () => false, log, retryDelay: 0 };
  assert.equal(await acceptNext(listener, options), "conn");
  assert.equal(await acceptNext(listener, options), "conn");
  assert.deepEqual(lines.map((line) => line.match(/msg="[^"]+"/)?.[0]), [
    'msg="accept failed"',
    'msg="accepting again"',
  ]);
  const [failed, again] = lines;
  assert.match(failed ?? "", /level=error .*error="Too many open files/);
  assert.match(again ?? "", /failedAccepts=3/);
});

Deno.test("an accept loop that keeps failing logs again after the quiet time, with the failures it did not log", async () => {
  const lines: string[] = [];
  const log = new AcceptLog(createLogger("test", { level: "info", sink: (line) => lines.push(line) }), { quietMs: 0 });
  const options = { stopping: () => false, log, retryDelay: 0 };
  assert.equal(await acceptNext(scriptedListener(["fail", "fail", "ok"]), options), "conn");
  assert.equal(lines.filter((line) => line.includes('msg="accept failed"')).length, 2);
  assert.equal(lines.filter((line) => line.includes('msg="accepting again"')).length, 1);
});
