/**
 * The memory floor of one service (issue 19): a bare Deno process that
 * listens on a port, and with `--workers N` starts N bare workers as the
 * pusher starts its own. `bench/main.ts` runs one per service, with the
 * service's V8 flags, and sums their RSS: what the runtime costs before any
 * of our code, against which the services idle after start are held.
 *
 * Prints the services' `listening` line (so the benchmark starts it as it
 * starts them) once every worker has started, and runs until SIGTERM or SIGINT.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 --allow-read=bench bench/floor.ts --workers 2
 * ```
 *
 * @module
 */

// Nothing of ours is imported, not even the flag parser or the logger: they
// load node: modules (node:util), which a floor must not count.

/** Listens on a free port with `--workers N` bare workers beside it until a shutdown signal; returns the exit code. */
export async function main(args: string[] = Deno.args): Promise<number> {
  const workers = args[0] === "--workers" ? Number(args[1]) : 0;
  if (!Number.isSafeInteger(workers) || workers < 0 || args.length > (args[0] === "--workers" ? 2 : 0)) {
    console.error("Usage: bench/floor.ts [--workers N]");
    return 2;
  }
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const started = await Promise.all(Array.from({ length: workers }, () => {
    const worker = new Worker(new URL("./_floor_worker.ts", import.meta.url), { type: "module" });
    return new Promise<Worker>((resolve) => worker.addEventListener("message", () => resolve(worker), { once: true }));
  }));
  const { hostname, port } = listener.addr;
  // The services' listening line, which the benchmark waits for.
  console.log(
    `ts=${new Date().toISOString()} level=info svc=floor msg=listening addr=${hostname}:${port} workers=${workers}`,
  );
  await new Promise<void>((resolve) => {
    for (const signal of ["SIGTERM", "SIGINT"] as const) Deno.addSignalListener(signal, () => resolve());
  });
  for (const worker of started) worker.terminate();
  return 0;
}

if (import.meta.main) Deno.exit(await main());
