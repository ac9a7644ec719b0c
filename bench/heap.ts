/**
 * `deno task bench:heap`: where an idle pusher connection's JavaScript heap
 * goes. Runs the pusher's WebSocket server and handler in this process (as
 * one worker runs them), with a hub link that never fires; a child process
 * (this module with `--clients`) opens the connections in two halves and
 * reads each greeting. After each half, a full GC and a heap snapshot
 * (`node:v8`); the difference, per connection of the second half, is
 * printed by kind of object. Snapshots go to `bench/results/` and are
 * removed afterwards.
 *
 * Permissions of the task, and why: `--allow-net=127.0.0.1` (serve, and the
 * clients), `--allow-run` (the client process; unscoped because `deno` is
 * wherever npx put it), `--allow-read`/`--allow-write=bench/results` (the
 * snapshots), `--v8-flags=--expose-gc` (a full GC before each snapshot, so
 * that garbage is not counted).
 *
 * @module
 */

import v8 from "node:v8";
import { helpText, intFlag, parseFlags } from "../shared/cli.ts";
import { createLogger } from "../shared/log.ts";
import { newWorkerId } from "../shared/address.ts";
import { Pusher } from "../pusher/pusher.ts";
import { listenTransport, serve } from "../pusher/server.ts";
import { MemoryBroker } from "../shared/memory_bus.ts";
import { type HeapRow, type HeapSnapshot, perConnection, summarize } from "./_heap_snapshot.ts";
import { lines } from "./_lines.ts";
import { WsClient } from "./_ws_client.ts";

const FLAGS = {
  connections: { type: "string" as const, arg: "N", help: "connections opened in each half", default: "2000" },
  help: { type: "boolean" as const, help: "show this help" },
};

const USAGE = "deno task bench:heap [--connections N]";
const DESCRIPTION = "Where an idle pusher connection's JavaScript heap goes, by kind of object (V8 heap snapshots).";

async function main(args: string[]): Promise<number> {
  if (args[0] === "--clients") return await clients(Number(args[1]), Number(args[2]));
  const flags = parseFlags(args, FLAGS);
  if (flags.help) {
    console.log(helpText(USAGE, DESCRIPTION, FLAGS));
    return 0;
  }
  const half = intFlag(flags, "connections", 2000);
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("Run with --v8-flags=--expose-gc (deno task bench:heap does)");
  const logger = createLogger("pusher", { level: "error" });
  // A bus nobody publishes on: the pusher never hears from a hub.
  const bus = new MemoryBroker().connect();
  const pusher = new Pusher({ workerId: newWorkerId(), bus, transport: listenTransport, logger });
  const server = serve({ hostname: "127.0.0.1", port: 0, logger, onListen() {} }, pusher.handler);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net=127.0.0.1", import.meta.filename!, "--clients", String(server.addr.port), String(half)],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const said = lines(child.stdout);
  const stdin = child.stdin.getWriter();
  const paths: string[] = [];
  try {
    // Both are written before either is read: a summary held in the heap
    // while the second is taken would count as the connections' (a Map of
    // every kind, about 115 bytes per connection of 2000).
    for (let round = 0; round < 2; round++) {
      const line = await said.next();
      if (line.value !== "ready") throw new Error(`The clients failed: ${line.value ?? "no answer"}`);
      if (pusher.connectionCount !== half * (round + 1)) {
        throw new Error(`Expected ${half * (round + 1)} connections, have ${pusher.connectionCount}`);
      }
      gc();
      paths.push(await writeSnapshot());
      await stdin.write(new TextEncoder().encode("more\n"));
    }
    const [before, after] = await Promise.all(paths.map(summarizeSnapshot));
    const rows = perConnection(before!, after!, half, 2);
    const total = rows.reduce((sum, row) => sum + row.bytes, 0);
    console.log(`JavaScript heap per idle connection: ${total.toFixed(0)} bytes (${half} connections measured)`);
    const width = Math.max(...rows.map((row) => row.kind.length));
    for (const row of rows) {
      console.log(
        `  ${row.kind.padEnd(width)}  ${row.count.toFixed(2).padStart(6)}/conn  ${row.bytes.toFixed(0).padStart(5)} B`,
      );
    }
    return 0;
  } finally {
    for (const path of paths) await Deno.remove(path).catch(() => {});
    await stdin.close().catch(() => {});
    await child.status;
    pusher.closeAll();
    await server.shutdown();
  }
}

/** Writes a heap snapshot of this process; returns its path. */
async function writeSnapshot(): Promise<string> {
  await Deno.mkdir("bench/results", { recursive: true });
  const path = `bench/results/heap-${crypto.randomUUID()}.heapsnapshot`;
  v8.writeHeapSnapshot(path);
  return path;
}

/** A snapshot written by {@linkcode writeSnapshot}, summed by kind; the file is removed. */
async function summarizeSnapshot(path: string): Promise<Map<string, HeapRow>> {
  try {
    return summarize(JSON.parse(await Deno.readTextFile(path)) as HeapSnapshot);
  } finally {
    await Deno.remove(path);
  }
}

/** The client process: `count` connections, greeted, twice; says `ready` after each and waits for a line. */
async function clients(port: number, count: number): Promise<number> {
  const open: WsClient[] = [];
  const connect = async () => open.push(await WsClient.connect({ hostname: "127.0.0.1", port, onMessage() {} }));
  const commands = lines(Deno.stdin.readable);
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < count; i += 100) await Promise.all(Array.from({ length: Math.min(100, count - i) }, connect));
    console.log("ready");
    await commands.next();
  }
  await Promise.all(open.map((client) => client.close()));
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
