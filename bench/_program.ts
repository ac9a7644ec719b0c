/**
 * What `bench/main.ts` and `bench/soak.ts` share around their runs: flags,
 * `--help`, checks before anything starts, shutdown on a signal, the JSON
 * results, and exit codes. Each program keeps its own options, run, table
 * and report.
 *
 * @module
 */

import { dirname } from "node:path";
import { type FlagSpec, type FlagValues, helpText, onShutdownSignal, parseFlags, stringFlag } from "../shared/cli.ts";
import { createLogger } from "../shared/log.ts";
import { assertPortsFree, DEFAULT_PORTS, type Ports } from "./_services.ts";

/** Options every program's run has, whatever else it takes. */
export interface ProgramRunOptions {
  /** Where the JSON results go. */
  out: string;
  /** Ports to serve on; 0 picks a free one. */
  ports: Partial<Ports>;
}

/** A benchmark program, for {@linkcode programMain}. */
export interface Program<Options extends ProgramRunOptions, Report> {
  /** Its `deno.json` task: the logger's name, and what usage and errors call it. */
  task: string;
  /** Its module from the repository root, named where it may write elsewhere. */
  script: string;
  /** The `--help` text above the usage line. */
  description: string;
  /** Its flags; `help` shows the help. */
  flags: Record<string, FlagSpec>;
  /** The run's options from the parsed flags. @throws {TypeError} or {RangeError} on a bad flag (exit code 2). */
  options(flags: FlagValues): Options;
  /** Runs it; aborting `signal` (SIGINT, SIGTERM) stops it. */
  run(options: Options, signal: AbortSignal): Promise<Report>;
  /** Prints the report's table (and notes) to stdout; returns the exit code. */
  print(report: Report): number;
  /** The exit code when the run fails. */
  failureCode: number;
}

/**
 * A program's `main()`: parses `args`, shows `--help`, checks that the
 * results can be written and the fixed ports are free (exit code 2 if not),
 * runs until done or a shutdown signal (exit code 130), prints, writes the
 * report as JSON to `options.out`, and returns the exit code.
 *
 * @example
 * ```ts
 * import { programMain, type ProgramRunOptions } from "./_program.ts";
 *
 * export function main(args: string[] = Deno.args): Promise<number> {
 *   return programMain<ProgramRunOptions, { lost: number }>(args, {
 *     task: "bench",
 *     script: "bench/main.ts",
 *     description: "Measures the system against the baseline.",
 *     flags: {},
 *     options: () => ({ out: "bench/results.json", ports: {} }),
 *     run: () => Promise.resolve({ lost: 0 }),
 *     print: (report) => (report.lost === 0 ? 0 : 1),
 *     failureCode: 1,
 *   });
 * }
 * ```
 */
export async function programMain<Options extends ProgramRunOptions, Report>(
  args: string[],
  program: Program<Options, Report>,
): Promise<number> {
  const logger = createLogger(program.task);
  let options: Options;
  try {
    const flags = parseFlags(args, program.flags);
    if (flags.help) {
      console.log(helpText(`deno task ${program.task} [options]`, program.description, program.flags));
      return 0;
    }
    options = program.options(flags);
    assertWritable(program, options.out);
    assertPortsFree(options.ports);
  } catch (error) {
    logger.error((error as Error).message);
    return 2;
  }
  const abort = new AbortController();
  const removeSignals = onShutdownSignal((signal) => abort.abort(new Error(`Stopped by ${signal}`)));
  try {
    const report = await program.run(options, abort.signal);
    const code = program.print(report);
    await writeReport(options.out, report);
    console.log(`\nresults: ${options.out}`);
    return code;
  } catch (error) {
    logger.error((error as Error).message);
    return abort.signal.aborted ? 130 : program.failureCode;
  } finally {
    removeSignals();
  }
}

/** `--hub-port`, `--pusher-port` and `--publisher-port`, at the ports `deno task start` uses. */
export const SYSTEM_PORT_FLAGS: Record<"hub-port" | "pusher-port" | "publisher-port", FlagSpec> = {
  "hub-port": { type: "string", arg: "PORT", help: "hub port; 0 picks a free one", default: String(DEFAULT_PORTS.hub) },
  "pusher-port": {
    type: "string",
    arg: "PORT",
    help: "pusher port; 0 picks a free one",
    default: String(DEFAULT_PORTS.pusher),
  },
  "publisher-port": {
    type: "string",
    arg: "PORT",
    help: "publisher port; 0 picks a free one",
    default: String(DEFAULT_PORTS.publisher),
  },
};

/**
 * Reads `--<name>-port`, or the default port.
 *
 * @throws {TypeError} when it is not a port number.
 */
export function portFlag(flags: FlagValues, name: keyof Ports): number {
  const raw = stringFlag(flags, `${name}-port`);
  if (raw === undefined) return DEFAULT_PORTS[name];
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || value > 65535) throw new TypeError(`Invalid --${name}-port: ${JSON.stringify(raw)}`);
  return value;
}

/** Progress goes to stderr: stdout holds the table. */
export function progress(line: string): void {
  console.error(line);
}

/**
 * Fails before anything starts when the results could not be written.
 *
 * @throws {Error} saying where the task may write.
 */
function assertWritable(program: { task: string; script: string }, path: string): void {
  if (Deno.permissions.querySync({ name: "write", path }).state === "granted") return;
  throw new Error(
    `Cannot write ${path}: the ${program.task} task may write only under bench/results; ` +
      `pick a file there, or run ${program.script} with --allow-write for that path`,
  );
}

async function writeReport(path: string, report: unknown): Promise<void> {
  await Deno.mkdir(dirname(path), { recursive: true });
  await Deno.writeTextFile(path, JSON.stringify(report, null, 2) + "\n");
}
