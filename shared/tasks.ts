/**
 * The command lines of `deno.json` tasks, so that launchers and tests start
 * each service exactly as `deno task <name>` would, with the task's own
 * permissions, but without the task runner in between (signals then reach
 * the service itself).
 *
 * @module
 */

/** The repository root. */
export const ROOT: URL = new URL("../", import.meta.url);

/**
 * The command line of a `deno.json` task, with `deno` resolved to this
 * executable.
 *
 * @throws {Error} when the task is missing or does not start with `deno`.
 */
export async function taskCommand(task: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const command: string | undefined = config.tasks?.[task];
  if (!command) throw new Error(`deno.json has no task ${task}`);
  const words = command.trim().split(/\s+/);
  if (words[0] !== "deno") throw new Error(`Task ${task} does not start with deno: ${command}`);
  return [Deno.execPath(), ...words.slice(1)];
}
