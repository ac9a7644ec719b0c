/**
 * Starts a service as a real process, the way the README starts it: the
 * command of its `deno.json` task, with the task's permissions, plus flags.
 * The task runner itself is skipped so that signals (SIGKILL included) reach
 * the service and not a wrapper.
 *
 * @module
 */

import { ROOT, taskCommand } from "../shared/tasks.ts";
import { until } from "../channel/testing.ts";

/** A running service process. */
export interface Service extends AsyncDisposable {
  readonly process: Deno.ChildProcess;
  /** Every log line so far (stderr and stdout). */
  readonly lines: string[];
  /** Resolves with the first line, past or future, matching `pattern`. */
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Port from the service's first `msg=listening addr=HOST:PORT` line. */
  port(name?: string): Promise<number>;
  /**
   * Sends a signal and waits for the process to exit. One still running
   * after `timeoutMs` is killed (SIGKILL), and the call rejects with its
   * last log lines: a hung shutdown fails the test instead of hanging it.
   */
  stop(signal?: Deno.Signal, timeoutMs?: number): Promise<Deno.CommandStatus>;
}

/** Options for {@linkcode startService} and {@linkcode startCommand}. */
export interface StartOptions {
  env?: Record<string, string>;
  /** Caps the process's open file descriptors (soft and hard), through util-linux's `prlimit`. */
  openFiles?: number;
  /** Runs the process in this network namespace, through iproute2's `ip netns exec` (needs root). */
  netns?: string;
}

/**
 * Starts `deno task <task> ...args` as a process.
 *
 * @example
 * ```ts
 * await using hub = await startService("channel", ["--port", "0"]);
 * const port = await hub.port();
 * ```
 */
export async function startService(task: string, args: string[] = [], options: StartOptions = {}): Promise<Service> {
  return startCommand(task, [...await taskCommand(task), ...args], options);
}

/**
 * Starts `command` (its first word the executable) as a service process from
 * the repository root; `label` names it in errors and in `SERVICE_LOGS`.
 *
 * @example
 * ```ts
 * await using hub = await startCommand("hub", [Deno.execPath(), "run", "--allow-net", "channel/main.ts"], { netns: "hub" });
 * ```
 */
export function startCommand(label: string, command: string[], options: StartOptions = {}): Service {
  let words = command;
  if (options.openFiles !== undefined) {
    // Deno raises its soft limit to the hard one at start, so both are set.
    words = ["prlimit", `--nofile=${options.openFiles}:${options.openFiles}`, ...words];
  }
  // `ip netns exec` execs the command, so signals reach the service itself.
  if (options.netns !== undefined) words = ["ip", "netns", "exec", options.netns, ...words];
  const [exe, ...args] = words;
  const process = new Deno.Command(exe!, {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1", ...options.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const waiters = new Set<{ pattern: RegExp; resolve: (line: string) => void }>();
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    let rest = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (rest + text).split("\n");
      rest = parts.pop()!;
      for (const line of parts) {
        lines.push(line);
        if (Deno.env.get("SERVICE_LOGS")) console.error(`[${label}] ${line}`);
        for (const waiter of waiters) {
          if (waiter.pattern.test(line)) {
            waiters.delete(waiter);
            waiter.resolve(line);
          }
        }
      }
    }
  };
  const reading = Promise.all([collect(process.stdout), collect(process.stderr)]);
  let status: Promise<Deno.CommandStatus> | null = null;

  const waitForLine = (pattern: RegExp, timeoutMs = 10_000): Promise<string> => {
    const seen = lines.find((line) => pattern.test(line));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(
          new Error(`${label}: no log line matching ${pattern} within ${timeoutMs} ms; got:\n${lines.join("\n")}`),
        );
      }, timeoutMs);
      const waiter = {
        pattern,
        resolve: (line: string) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      waiters.add(waiter);
      process.status.then(() => {
        if (!waiters.has(waiter)) return;
        // Let the last lines arrive before giving up.
        reading.then(() => {
          if (!waiters.delete(waiter)) return;
          clearTimeout(timer);
          reject(new Error(`${label} exited before logging ${pattern}; got:\n${lines.join("\n")}`));
        });
      });
    });
  };

  const stop = async (signal: Deno.Signal = "SIGTERM", timeoutMs = 30_000) => {
    if (!status) {
      try {
        process.kill(signal);
      } catch { /* already exited */ }
      status = process.status;
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const hung = new Promise<"hung">((resolve) => (timer = setTimeout(() => resolve("hung"), timeoutMs)));
    const result = await Promise.race([status, hung]).finally(() => clearTimeout(timer));
    if (result === "hung") {
      try {
        process.kill("SIGKILL");
      } catch { /* exited meanwhile */ }
      await status;
      await reading;
      throw new Error(
        `${label} did not exit within ${timeoutMs} ms of ${signal}; its last lines:\n${lines.slice(-20).join("\n")}`,
      );
    }
    await reading;
    return result;
  };

  return {
    process,
    lines,
    waitForLine,
    async port(name = "listening") {
      const line = await waitForLine(new RegExp(`msg=${name} .*addr=\\S+:\\d+`));
      return Number(line.match(/addr=\S+:(\d+)/)![1]);
    },
    stop,
    async [Symbol.asyncDispose]() {
      // Even after stop(): a process that ignored its signal must not outlive the test.
      try {
        process.kill("SIGKILL");
      } catch { /* already exited */ }
      await stop("SIGKILL");
    },
  };
}

/**
 * Starts a pusher from its task (2 workers) linked to the hub at `hub` (a
 * port on 127.0.0.1, or an address as `--hub` takes it), on `port` (0: a
 * free one), with `args` after and `env`; resolves once both workers' hub
 * links are up, and so their subscriptions, before any client comes.
 *
 * @example
 * ```ts
 * await using hub = await startService("channel", ["--port", "0"]);
 * const pusher = await startPusherOnHub(await hub.port(), { args: ["--token-secret", "s3cret"] });
 * await using _pusher = pusher.service;
 * const client = new WebSocket(`ws://127.0.0.1:${pusher.port}`);
 * ```
 */
export async function startPusherOnHub(
  hub: number | string,
  { port = 0, args = [], env }: { port?: number; args?: string[]; env?: Record<string, string> } = {},
): Promise<{ service: Service; port: number }> {
  const hubAddress = typeof hub === "number" ? `127.0.0.1:${hub}` : hub;
  const service = await startService("pusher", ["--port", String(port), "--hub", hubAddress, ...args], { env });
  try {
    const bound = await service.port();
    await until(
      () => service.lines.filter((line) => line.includes('msg="connected to hub"')).length >= 2,
      10_000,
      "two worker hub links",
    );
    return { service, port: bound };
  } catch (error) {
    await service[Symbol.asyncDispose]();
    throw error;
  }
}

/**
 * Starts a publisher from its task on a free port, linked to the hub on
 * `hubPort`; resolves once its `/healthz` says the hub link is up.
 *
 * @example
 * ```ts
 * await using hub = await startService("channel", ["--port", "0"]);
 * await using publisher = await startPublisherOnHub(await hub.port());
 * await fetch(`http://127.0.0.1:${await publisher.port()}/?content=hi`);
 * ```
 */
export async function startPublisherOnHub(hubPort: number): Promise<Service> {
  const service = await startService("publisher", ["--port", "0", "--hub", `127.0.0.1:${hubPort}`]);
  try {
    const port = await service.port();
    await until(
      async () => (await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.text())) === "ok",
      10_000,
      "the publisher's hub link",
    );
    return service;
  } catch (error) {
    await service[Symbol.asyncDispose]();
    throw error;
  }
}
