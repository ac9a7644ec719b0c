/**
 * The other buses of `deno task bench --buses`: `nats-server` (one node,
 * JetStream on, its store in a temporary directory) or `redis-server`
 * (nothing persisted), on a free loopback port, and a pusher and a publisher
 * on it with `--bus` instead of the hub, started from their task lines as
 * the system is.
 *
 * Debian's packages, as the tests use (`tests/ensure_packages.sh`); the
 * benchmark stops with what to install when one is missing. The temporary
 * directory is made and removed with `mktemp` and `rm` because the task's
 * `--allow-write` is `bench/results` only, as `startOriginal` does.
 *
 * @module
 */

import { freePorts, type StartedProcess, startProcess, startSystem, type Target } from "./_services.ts";

/** A bus the benchmark can start besides the hub. */
export type BusKind = "nats" | "redis";

/** What `--buses` names: `channel` is the hub, the system every run has and the ratios' base. */
export const BUS_NAMES: readonly string[] = ["channel", "nats", "redis"];

/**
 * The buses a `--buses` value asks for besides the hub, in its order; the
 * hub (`channel`) runs anyway.
 *
 * @example
 * ```ts
 * import { parseBuses } from "./_buses.ts";
 *
 * parseBuses("channel,nats,redis"); // ["nats", "redis"]
 * ```
 *
 * @throws {TypeError} for a name that is not a bus.
 */
export function parseBuses(value: string | undefined): BusKind[] {
  const names = (value ?? "channel").split(",").map((name) => name.trim()).filter(Boolean);
  const unknown = names.filter((name) => !BUS_NAMES.includes(name));
  if (unknown.length > 0) {
    throw new TypeError(`Invalid --buses: no bus ${unknown.join(", ")}; pick from ${BUS_NAMES.join(",")}`);
  }
  return [...new Set(names.filter((name): name is BusKind => name !== "channel"))];
}

/** A running bus server. Disposing stops it and removes its directory; twice is harmless. */
export interface BusServer extends AsyncDisposable {
  readonly kind: BusKind;
  /** The pusher's and publisher's `--bus`: `nats://127.0.0.1:PORT` or `redis://127.0.0.1:PORT`. */
  readonly url: string;
  /** Its process, whose CPU counts with the pusher's and the publisher's as the hub's does. */
  readonly process: StartedProcess;
}

/** Options for {@linkcode startBusServer} and {@linkcode startBusSystem}. */
export interface StartBusOptions {
  /** Stops waiting (what started is then stopped). */
  signal?: AbortSignal;
  /** Milliseconds to be ready. @default {20000} */
  timeout?: number;
}

const INSTALL: Record<BusKind, string> = {
  nats: "nats-server is not installed (Debian: apt-get install nats-server)",
  redis: "redis-server is not installed (Debian: apt-get install redis-server)",
};

/**
 * Starts `nats-server` or `redis-server` on a free loopback port and waits
 * until it says it is ready.
 *
 * @throws {Error} saying what to install when it is missing, or with its last log lines when it does not start.
 */
export async function startBusServer(kind: BusKind, options: StartBusOptions = {}): Promise<BusServer> {
  const dir = await run("mktemp", ["-d", "-t", `bench-${kind}.XXXXXX`]);
  const removeDir = async () => {
    await run("rm", ["-rf", "--", dir]);
  };
  const [port] = freePorts(1) as [number];
  const command = kind === "nats"
    ? ["nats-server", "-a", "127.0.0.1", "-p", String(port), "-n", "bench", "-js", "-sd", dir]
    : ["redis-server", "--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no"]
      .concat(["--dir", dir]);
  let process: StartedProcess;
  try {
    process = await startProcess(kind, command, {
      ...options,
      ready: kind === "nats" ? /Server is ready/ : /Ready to accept connections/,
      // nats-server's [WRN] and [ERR]; redis-server's warnings are its `#` lines.
      warning: kind === "nats" ? /\[(WRN|ERR)\]/ : / # /,
    });
  } catch (error) {
    await removeDir();
    if (error instanceof Deno.errors.NotFound) throw new Error(INSTALL[kind]);
    throw error;
  }
  let disposed = false;
  return {
    kind,
    url: `${kind}://127.0.0.1:${port}`,
    process,
    async [Symbol.asyncDispose]() {
      if (disposed) return;
      disposed = true;
      await process[Symbol.asyncDispose]();
      await removeDir();
    },
  };
}

/** Pusher and publisher on a bus. Disposing stops them (not the bus server); twice is harmless. */
export interface BusSystem extends AsyncDisposable {
  /** Named after the bus; its CPU processes are the bus server, the pusher and the publisher. */
  readonly target: Target;
  /** @throws {Error} naming the process when the bus server, the pusher or the publisher is gone. */
  assertRunning(): void;
}

/**
 * Starts a pusher and a publisher with `--bus` at `server` (and `--history`
 * when given, which a bus takes on the pusher and the publisher; the
 * pusher's `--token-secret` when given) on free ports, and waits until a
 * broadcast reaches every pusher worker.
 */
export async function startBusSystem(
  server: BusServer,
  options: StartBusOptions & { pusherServer?: "listen" | "deno"; history?: string; tokenSecret?: string } = {},
): Promise<BusSystem> {
  const started = await startSystem({ hub: 0, pusher: 0, publisher: 0 }, { ...options, bus: server.url });
  const { system } = started;
  return {
    target: { ...system, name: server.kind, cpuProcesses: [server.process, ...system.cpuProcesses] },
    assertRunning() {
      if (server.process.exited) throw new Error(`${server.kind} exited during the run:\n${server.process.tail()}`);
      started.assertRunning();
    },
    [Symbol.asyncDispose]: () => started[Symbol.asyncDispose](),
  };
}

async function run(command: string, args: string[]): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command(command, { args, stdin: "null" }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes).trim();
  if (!success) throw new Error(`${command} ${args.join(" ")} failed: ${decode(stderr)}`);
  return decode(stdout);
}
