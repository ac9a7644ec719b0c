/**
 * The load generator's side of the stdio protocol that `_load_process.ts`
 * speaks from the parent's: the `main()` of `bench/load.ts` and
 * `bench/soak_load.ts`, around their own runs.
 *
 * One JSON object a line: the spec as the only argument; stdout
 * `{"type":"connected",...}`; stdin `go`; stdout `{"type":"result",...}`;
 * stdin `close` or end of input, then the clients close. On failure, stdout
 * `{"type":"error","message":...}` and exit code 1.
 *
 * @module
 */

import { lines } from "./_lines.ts";

/** One generator run, as {@linkcode generatorMain} drives it. */
export interface GeneratorRun {
  /** Connects the first clients; resolves with how many are greeted. On failure, those connected stay for `close`. */
  connect(): Promise<number>;
  /** Runs the load once the parent says `go`; resolves with the `result` line. */
  drive(connectMs: number): Promise<object>;
  /** Closes every client still open. */
  close(): Promise<void>;
}

/** Options for {@linkcode generatorMain}. */
export interface GeneratorMainOptions<Spec> {
  /** Printed to stderr, exit code 2, when the arguments are not one spec. */
  usage: string;
  /** The run for one spec, parsed from the argument's JSON. */
  create(spec: Spec): GeneratorRun;
}

/**
 * Runs one spec through the protocol; returns the process's exit code.
 *
 * @example
 * ```ts
 * import { generatorMain, type GeneratorRun } from "./_generator.ts";
 *
 * interface Spec {
 *   clients: number;
 * }
 *
 * function createRun(spec: Spec): GeneratorRun {
 *   return {
 *     connect: () => Promise.resolve(spec.clients),
 *     drive: (connectMs) => Promise.resolve({ type: "result", connectMs }),
 *     close: () => Promise.resolve(),
 *   };
 * }
 *
 * if (import.meta.main) {
 *   Deno.exit(await generatorMain(Deno.args, { usage: "Usage: my_load.ts SPEC_JSON", create: createRun }));
 * }
 * ```
 */
export async function generatorMain<Spec>(args: string[], options: GeneratorMainOptions<Spec>): Promise<number> {
  if (args.length !== 1 || args[0] === "--help") {
    console.error(options.usage);
    return 2;
  }
  let run: GeneratorRun | null = null;
  try {
    run = options.create(JSON.parse(args[0]!) as Spec);
    const started = performance.now();
    const clients = await run.connect();
    const connectMs = performance.now() - started;
    emit({ type: "connected", clients, connectMs: Math.round(connectMs * 10) / 10 });
    const stdin = lines(Deno.stdin.readable);
    if ((await stdin.next()).value !== "go") throw new Error("The parent went away before saying go");
    emit(await run.drive(connectMs));
    // The parent samples with the clients still connected (closing costs the
    // servers CPU; the soak reads memory then) before it lets them close.
    await stdin.next();
    await stdin.return(undefined);
    return 0;
  } catch (error) {
    emit({ type: "error", message: (error as Error).message });
    return 1;
  } finally {
    await run?.close();
  }
}

/** Writes one protocol message to stdout, as a line of JSON. */
export function emit(message: object): void {
  console.log(JSON.stringify(message));
}
