/**
 * Child processes of the benchmarks and of their tests: started from the
 * repository root, without colour, with no input and their output piped.
 *
 * @module
 */

import { ROOT, taskCommand } from "../shared/tasks.ts";

/**
 * Spawns `command` (the executable, then its arguments) from the repository
 * root with `NO_COLOR=1` and `env`, stdin closed, and stdout and stderr
 * piped: the caller must read or cancel both.
 */
export function spawnPiped(command: readonly string[], env: Readonly<Record<string, string>> = {}): Deno.ChildProcess {
  const [exe, ...args] = command;
  return new Deno.Command(exe!, {
    args,
    cwd: ROOT,
    env: { ...env, NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** How a task run ended, and everything it printed. */
export interface TaskOutput {
  status: Deno.CommandStatus;
  stdout: string;
  stderr: string;
}

/** Options for {@linkcode runTask}. */
export interface RunTaskOptions {
  /** Milliseconds the task may take. */
  timeout: number;
  /** What the timeout's error says was awaited, e.g. `"deno task bench --quick to finish"`. */
  what: string;
}

/**
 * Runs `deno task <task> ...args` as a user would (the task's own command
 * line and permissions, without the task runner) and waits for it to exit.
 * Past the timeout it gets SIGTERM, so that it stops the services it
 * started, and the call rejects once it has exited.
 *
 * @example
 * ```ts
 * import { runTask } from "./_child.ts";
 *
 * const { status, stdout } = await runTask("soak", ["--quick"], {
 *   timeout: 30_000,
 *   what: "deno task soak --quick to finish",
 * });
 * ```
 *
 * @throws {Error} `Timed out after <timeout> ms waiting for <what>`.
 */
export async function runTask(task: string, args: string[], options: RunTaskOptions): Promise<TaskOutput> {
  const process = spawnPiped([...await taskCommand(task), ...args]);
  const stdout = new Response(process.stdout).text();
  const stderr = new Response(process.stderr).text();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out after ${options.timeout} ms waiting for ${options.what}`)),
      options.timeout,
    );
  });
  try {
    const status = await Promise.race([process.status, timeout]);
    return { status, stdout: await stdout, stderr: await stderr };
  } catch (error) {
    process.kill("SIGTERM");
    await process.status;
    throw error;
  } finally {
    clearTimeout(timer);
    await Promise.all([stdout, stderr]);
  }
}

/**
 * The last `count` lines of a task's output, for a test's failure message:
 * a failed task's reason is its last line, and CI shows only the end of a
 * long log.
 *
 * @example
 * ```ts
 * import { lastLines } from "./_child.ts";
 *
 * lastLines("starting\nmeasuring\nlevel=error msg=\"the pusher exited\"\n", 1); // 'level=error msg="the pusher exited"'
 * ```
 */
export function lastLines(text: string, count = 12): string {
  return text.trimEnd().split("\n").slice(-count).join("\n");
}
