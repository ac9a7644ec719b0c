/**
 * Runs a load generator (`bench/load.ts`, or `bench/soak_load.ts`) as its own
 * process and walks it through their stdio protocol: connected → go → result
 * → close. The generator's side is `_generator.ts`.
 *
 * @module
 */

import { ROOT } from "../shared/tasks.ts";
import { lines } from "./_lines.ts";
import type { LoadResult } from "./load.ts";

/**
 * The generator's command line (after `deno`): loopback network and nothing
 * else; its own process, so its CPU is not the servers' and is measured apart.
 */
export const LOAD_ARGS: readonly string[] = ["run", "--allow-net=127.0.0.1", "bench/load.ts"];

/** Options for {@linkcode runLoadProcess}. */
export interface LoadProcessOptions {
  /** The generator's module, from the repository root (run with loopback network only). @default {"bench/load.ts"} */
  script?: string;
  /** Called for every other line the generator writes (progress). */
  onMessage?(message: { type?: string }): void;
  /** Every client is greeted; publishing starts when this resolves. Gets the generator's pid. */
  onConnected(pid: number): Promise<void>;
  /** The result is in and the clients are still open; they close when this resolves. */
  onResult(pid: number): Promise<void>;
  /** Kills the generator. */
  signal?: AbortSignal;
  /** Milliseconds the whole run may take before the generator is killed. @default {300000} */
  timeout?: number;
}

const encoder = new TextEncoder();

/**
 * Runs one spec in a fresh generator process and returns its result once
 * the process has exited. `Result` is the generator's `result` line:
 * {@linkcode LoadResult} for `bench/load.ts`.
 *
 * @throws {Error} with the generator's message or its stderr when it fails,
 * times out or is aborted.
 */
export async function runLoadProcess<Result = LoadResult>(
  spec: object,
  options: LoadProcessOptions,
): Promise<Result> {
  const args = options.script === undefined ? LOAD_ARGS : [...LOAD_ARGS.slice(0, -1), options.script];
  const process = new Deno.Command(Deno.execPath(), {
    args: [...args, JSON.stringify(spec)],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdin = process.stdin.getWriter();
  const stderr = new Response(process.stderr).text();
  const kill = () => {
    try {
      process.kill("SIGKILL");
    } catch { /* already exited */ }
  };
  const timeout = options.timeout ?? 300_000;
  const timer = setTimeout(kill, timeout);
  options.signal?.addEventListener("abort", kill, { once: true });
  let result: Result | null = null;
  let failure: string | null = null;
  try {
    for await (const line of lines(process.stdout)) {
      let message: { type?: string; message?: string };
      try {
        message = JSON.parse(line);
      } catch {
        continue;
      }
      if (message.type === "connected") {
        await options.onConnected(process.pid);
        await stdin.write(encoder.encode("go\n"));
      } else if (message.type === "result") {
        result = message as Result;
        await options.onResult(process.pid);
        await stdin.write(encoder.encode("close\n"));
      } else if (message.type === "error") {
        failure = message.message ?? "unknown error";
      } else {
        options.onMessage?.(message);
      }
    }
  } catch (error) {
    // A hook failed: the generator must not outlive this run.
    kill();
    throw error;
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", kill);
    await stdin.close().catch(() => {});
    await process.status;
  }
  const errors = (await stderr).trim();
  options.signal?.throwIfAborted();
  if (failure) throw new Error(`Load generator failed: ${failure}`);
  if (!result) {
    const status = await process.status;
    throw new Error(
      `Load generator exited (code ${status.code}${status.signal ? `, ${status.signal}` : ""}) without a result` +
        `${status.signal === "SIGKILL" ? ` (killed after ${timeout} ms?)` : ""}${errors ? `:\n${errors}` : ""}`,
    );
  }
  return result;
}
