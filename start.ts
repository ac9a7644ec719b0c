/**
 * `deno task start`: the whole system on one machine. Starts the hub, a
 * pusher and a publisher as separate processes, each with its own task's
 * permissions, on the original's ports; prints where to go; Ctrl-C stops
 * all three.
 *
 * @module
 */

import { ROOT, taskCommand } from "./shared/tasks.ts";
import { createLogger } from "./shared/log.ts";
import { helpText, parseFlags } from "./shared/cli.ts";

const SERVICES = ["channel", "pusher", "publisher"] as const;

const FLAGS = {
  help: { type: "boolean" as const, help: "show this help" },
};

interface Running {
  name: string;
  process: Deno.ChildProcess;
  listening: Promise<string>;
  output: Promise<void>;
}

/** Runs the three services until Ctrl-C; returns the exit code. */
export async function main(args: string[] = Deno.args): Promise<number> {
  const logger = createLogger("start");
  try {
    if (parseFlags(args, FLAGS).help) {
      console.log(helpText("deno task start", "Runs a hub, a pusher and a publisher on this machine.", FLAGS));
      return 0;
    }
  } catch (error) {
    logger.error((error as Error).message);
    return 2;
  }
  const running: Running[] = [];
  let stopping: Promise<void> | null = null;
  let forced = false;
  // Once only: a second SIGTERM would kill a service mid-drain, its handler
  // being gone after the first.
  const stopAll = () =>
    stopping ??= (async () => {
      // Front to back: the publisher stops taking publishes first, the hub last.
      for (const service of [...running].reverse()) await stopOne(service);
    })();
  // The first SIGINT, SIGTERM or SIGHUP drains the services, a second ends
  // them at once: either way none outlives this process. The services run in
  // sessions of their own, so a terminal's Ctrl-C, or its hangup, sent to its
  // whole foreground group, reaches them only through here, once.
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  const onSignal = () => {
    if (!stopping) return void stopAll();
    forced = true;
    for (const service of running) {
      try {
        service.process.kill("SIGKILL");
      } catch { /* already gone */ }
    }
  };
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  const code = await run(running, stopAll, () => stopping !== null);
  for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
  return forced ? 1 : code;
}

/** Starts the services one after another and waits until one exits or a signal stops them. */
async function run(running: Running[], stopAll: () => Promise<void>, stopped: () => boolean): Promise<number> {
  const logger = createLogger("start");
  try {
    for (const name of SERVICES) {
      // Stopped while starting: the rest are not started.
      if (stopped()) return (await stopAll(), 0);
      const service = await spawn(name);
      running.push(service);
      // A signal while it was being spawned stopped the others, not this one.
      if (stopped()) {
        await stopAll();
        await stopOne(service);
        return 0;
      }
      const addr = await Promise.race([
        service.listening,
        service.process.status.then((status) => {
          throw new Error(`${name} exited with code ${status.code} before listening`);
        }),
      ]);
      logger.info("service up", { service: name, addr });
    }
  } catch (error) {
    // A service that a signal stopped before it listened is no failure.
    if (stopped()) return (await stopAll(), 0);
    logger.error((error as Error).message);
    await stopAll();
    return 1;
  }
  console.log(instructions());
  const first = await Promise.race(running.map(async (service) => ({ service, status: await service.process.status })));
  if (stopped()) {
    await stopAll();
    return 0;
  }
  logger.error("service exited; stopping the others", { service: first.service.name, code: first.status.code });
  await stopAll();
  return 1;
}

/** Drains one service: SIGTERM, and its exit and last output. */
async function stopOne(service: Running): Promise<void> {
  try {
    service.process.kill("SIGTERM");
  } catch { /* already gone */ }
  await service.process.status;
  await service.output;
}

async function spawn(name: string): Promise<Running> {
  const [exe, ...args] = await taskCommand(name);
  const process = new Deno.Command(exe!, {
    args,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    detached: true,
  }).spawn();
  let resolveListening!: (addr: string) => void;
  const listening = new Promise<string>((resolve) => (resolveListening = resolve));
  const relay = async (stream: ReadableStream<Uint8Array>, sink: (line: string) => void) => {
    let rest = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + text).split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        const addr = /msg=listening addr=(\S+)/.exec(line)?.[1];
        if (addr) resolveListening(addr);
        sink(line);
      }
    }
  };
  const output = Promise.all([
    relay(process.stdout, (line) => console.log(line)),
    relay(process.stderr, (line) => console.error(line)),
  ]).then(() => {});
  return { name, process, listening, output };
}

function instructions(): string {
  return `
Push system running.

  Demo page:        http://127.0.0.1:4236/
  Dashboard:        http://127.0.0.1:4237/dashboard
  Browser console:  ws = new WebSocket("ws://127.0.0.1:4236"); ws.onmessage = (e) => alert(e.data);
  Push to everyone: http://127.0.0.1:4237/?content=hello
  Push to one:      http://127.0.0.1:4237/?to_worker_id=WORKER_ID&to_connection_id=CONNECTION_ID&content=hello
                    (the ids are in the greeting each connection receives)

Ctrl-C stops all three.
`;
}

if (import.meta.main) Deno.exit(await main());
