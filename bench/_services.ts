/**
 * The processes a benchmark run drives: the push system started exactly as
 * `deno task start` starts it (hub, pusher, publisher, from their
 * `deno.json` task lines), and the baseline.
 *
 * @module
 */

import { taskCommand } from "../shared/tasks.ts";
import { spawnPiped } from "./_child.ts";

/** Ports to serve on; 0 picks a free one. */
export interface Ports {
  hub: number;
  pusher: number;
  publisher: number;
  baseline: number;
}

/** The original's ports, as `deno task start` uses them, and the baseline's. */
export const DEFAULT_PORTS: Readonly<Ports> = { hub: 2206, pusher: 4236, publisher: 4237, baseline: 4240 };

/**
 * The baseline's command line (after `deno`): one process, loopback network
 * only. Not a `deno.json` task: it exists for the benchmark alone. It also
 * gets the V8 flags the services' tasks give them (see
 * {@linkcode baselineArgs}), so that the runtime's tuning is not one of the
 * differences measured.
 */
export const BASELINE_ARGS: readonly string[] = ["run", "--allow-net=127.0.0.1", "bench/baseline.ts"];

/** {@linkcode BASELINE_ARGS} with the pusher task's `--v8-flags`, if it has any. */
export async function baselineArgs(): Promise<string[]> {
  const v8Flags = (await taskCommand("pusher")).filter((word) => word.startsWith("--v8-flags="));
  return [BASELINE_ARGS[0]!, ...v8Flags, ...BASELINE_ARGS.slice(1)];
}

/** One running service process. */
export interface ServiceProcess {
  readonly name: string;
  readonly pid: number;
  /** Its `msg=listening addr=HOST:PORT ...` line. */
  readonly listeningLine: string;
  /** Whether it has exited. */
  readonly exited: boolean;
  /** Warn and error lines since the last call: how many, and the first few. */
  takeWarnings(): { count: number; sample: string[] };
  /** Its last log lines, for error messages. */
  tail(): string;
}

/** A thing the load generator drives, and the processes measured for it. */
export interface Target {
  readonly name: "system" | "baseline";
  readonly wsPort: number;
  readonly publishPort: number;
  /** Processes whose CPU time counts: hub, pusher and publisher, or the baseline. */
  readonly cpuProcesses: readonly ServiceProcess[];
  /** Processes holding the WebSockets: the pusher, or the baseline. */
  readonly rssProcesses: readonly ServiceProcess[];
}

/** Options for {@linkcode startServices}. */
export interface StartServicesOptions {
  /** Stops waiting (and the caller then disposes what started). */
  signal?: AbortSignal;
  /** Milliseconds each service gets to listen, and the system to route. @default {20000} */
  timeout?: number;
  /** The pusher's server (its `--server`): our own on `Deno.listen`, or `Deno.serve`. @default {"listen"} */
  pusherServer?: "listen" | "deno";
  /**
   * Subjects the hub keeps history of (its `--history`: names, or prefixes
   * ending in `*`, comma-separated). @default {""} none, as under `deno task start`
   */
  history?: string;
}

/** The running system and baseline. Disposing stops every process; twice is harmless. */
export interface Services extends AsyncDisposable {
  readonly system: Target;
  readonly baseline: Target;
  /** @throws {Error} naming the service when one has exited. */
  assertRunning(): void;
}

const TAIL_LINES = 40;
const WARNING_SAMPLE = 5;

class Running implements ServiceProcess {
  readonly name: string;
  readonly process: Deno.ChildProcess;
  listeningLine = "";
  exited = false;
  readonly listening: Promise<string>;
  readonly output: Promise<void>;
  readonly #tail: string[] = [];
  #warnings = 0;
  #sample: string[] = [];

  constructor(name: string, command: string[]) {
    this.name = name;
    this.process = spawnPiped(command);
    this.process.status.then(() => (this.exited = true));
    let resolveListening!: (addr: string) => void;
    this.listening = new Promise((resolve) => (resolveListening = resolve));
    const collect = async (stream: ReadableStream<Uint8Array>) => {
      let rest = "";
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        const lines = (rest + text).split("\n");
        rest = lines.pop()!;
        for (const line of lines) this.#line(line, resolveListening);
      }
    };
    this.output = Promise.all([collect(this.process.stdout), collect(this.process.stderr)]).then(() => {});
  }

  get pid(): number {
    return this.process.pid;
  }

  #line(line: string, resolveListening: (addr: string) => void): void {
    this.#tail.push(line);
    if (this.#tail.length > TAIL_LINES) this.#tail.shift();
    if (/ msg=listening addr=\S+/.test(line)) resolveListening(line);
    if (/ level=(warn|error) /.test(line)) {
      this.#warnings++;
      if (this.#sample.length < WARNING_SAMPLE) this.#sample.push(line);
    }
  }

  takeWarnings(): { count: number; sample: string[] } {
    const taken = { count: this.#warnings, sample: this.#sample };
    this.#warnings = 0;
    this.#sample = [];
    return taken;
  }

  tail(): string {
    return this.#tail.map((line) => `  [${this.name}] ${line}`).join("\n");
  }

  /** Waits for the listening line; returns the port. Rejects when the process exits first or the time is up. */
  async waitListening(timeout: number, signal?: AbortSignal): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      this.listeningLine = await Promise.race([
        this.listening,
        this.process.status.then(async (status) => {
          await this.output;
          throw new Error(`${this.name} exited with code ${status.code} before listening:\n${this.tail()}`);
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`${this.name} did not listen within ${timeout} ms:\n${this.tail()}`)),
            timeout,
          );
        }),
        aborted(signal),
      ]);
      return Number(/ addr=\S*:(\d+)/.exec(this.listeningLine)![1]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM, then SIGKILL if it is still there after `timeout` ms. */
  async stop(timeout = 10_000): Promise<void> {
    if (!this.exited) {
      try {
        this.process.kill("SIGTERM");
      } catch { /* already gone */ }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const killed = await Promise.race([
        this.process.status.then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeout))),
      ]);
      clearTimeout(timer);
      if (killed) {
        try {
          this.process.kill("SIGKILL");
        } catch { /* exited meanwhile */ }
      }
    }
    await this.process.status;
    await this.output;
  }
}

/**
 * Fails with a clear message when a fixed port is taken, before anything is
 * started: a second `deno task start` or bench would otherwise surface as a
 * service dying with a bare `AddrInUse`.
 *
 * @throws {Error} naming the port, its service and the flag that moves it.
 */
export function assertPortsFree(ports: Partial<Ports>): void {
  for (const [name, port] of Object.entries(ports)) {
    if (port === undefined || port === 0) continue;
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse)) throw error;
      throw new Error(
        `Port ${port} (${name}) is taken: stop what listens there (another deno task start or bench?), ` +
          `or pass --${name}-port with another port (0 picks a free one)`,
      );
    }
  }
}

/** The ports of the push system alone, for runs that need no baseline. */
export type SystemPorts = Omit<Ports, "baseline">;

/** The running push system. Disposing stops its processes, publisher first; twice is harmless. */
export interface SystemServices extends AsyncDisposable {
  readonly system: Target;
  /** @throws {Error} naming the service when one has exited. */
  assertRunning(): void;
}

/**
 * Starts hub, pusher and publisher from their task lines, waits until every
 * pusher worker is subscribed (a broadcast reaches them all), then starts
 * the baseline.
 *
 * @throws {Error} with the service's last log lines when one fails to start.
 */
export async function startServices(ports: Ports, options: StartServicesOptions = {}): Promise<Services> {
  const group = new ProcessGroup(options);
  try {
    const system = await launchSystem(group, ports, options);
    const baseline = await group.start("baseline", [
      Deno.execPath(),
      ...await baselineArgs(),
      "--port",
      String(ports.baseline),
    ]);
    return {
      system,
      baseline: {
        name: "baseline",
        wsPort: baseline.port,
        publishPort: baseline.port,
        cpuProcesses: [baseline.service],
        rssProcesses: [baseline.service],
      },
      assertRunning: () => group.assertRunning(),
      [Symbol.asyncDispose]: () => group[Symbol.asyncDispose](),
    };
  } catch (error) {
    await group[Symbol.asyncDispose]();
    throw error;
  }
}

/**
 * Starts hub, pusher and publisher from their task lines and waits until
 * every pusher worker is subscribed: {@linkcode startServices} without the
 * baseline.
 *
 * @throws {Error} with the service's last log lines when one fails to start.
 */
export async function startSystem(ports: SystemPorts, options: StartServicesOptions = {}): Promise<SystemServices> {
  const group = new ProcessGroup(options);
  try {
    const system = await launchSystem(group, ports, options);
    return {
      system,
      assertRunning: () => group.assertRunning(),
      [Symbol.asyncDispose]: () => group[Symbol.asyncDispose](),
    };
  } catch (error) {
    await group[Symbol.asyncDispose]();
    throw error;
  }
}

/** The processes one run started, stopped together in reverse order. */
class ProcessGroup implements AsyncDisposable {
  readonly #started: Running[] = [];
  readonly #timeout: number;
  readonly #signal?: AbortSignal;

  constructor(options: StartServicesOptions) {
    this.#timeout = options.timeout ?? 20_000;
    this.#signal = options.signal;
  }

  get timeout(): number {
    return this.#timeout;
  }

  get signal(): AbortSignal | undefined {
    return this.#signal;
  }

  async start(name: string, command: string[]): Promise<{ service: Running; port: number }> {
    const service = new Running(name, command);
    this.#started.push(service);
    return { service, port: await service.waitListening(this.#timeout, this.#signal) };
  }

  assertRunning(): void {
    const gone = this.#started.find((service) => service.exited);
    if (gone) throw new Error(`${gone.name} exited during the run:\n${gone.tail()}`);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    // Front to back, as deno task start stops them: publisher first, hub last.
    for (const service of [...this.#started].reverse()) await service.stop();
  }
}

/** Starts hub, pusher and publisher in `group` and waits until they route. */
async function launchSystem(
  group: ProcessGroup,
  ports: SystemPorts,
  { pusherServer = "listen", history = "" }: StartServicesOptions,
): Promise<Target> {
  // Flags only where a port differs from the default, or history is asked
  // for: at the defaults the command lines are exactly the tasks'.
  const hub = await group.start("hub", [
    ...await taskCommand("channel"),
    ...portFlag(ports.hub, DEFAULT_PORTS.hub),
    ...(history === "" ? [] : ["--history", history]),
  ]);
  const hubFlag = hub.port === DEFAULT_PORTS.hub ? [] : ["--hub", `127.0.0.1:${hub.port}`];
  const pusher = await group.start("pusher", [
    ...await taskCommand("pusher"),
    ...portFlag(ports.pusher, DEFAULT_PORTS.pusher),
    ...hubFlag,
    // Only when asked: at the default the command line is exactly the task's.
    ...(pusherServer === "listen" ? [] : ["--server", pusherServer]),
  ]);
  const publisher = await group.start("publisher", [
    ...await taskCommand("publisher"),
    ...portFlag(ports.publisher, DEFAULT_PORTS.publisher),
    ...hubFlag,
  ]);
  const workers = Number(/ workers=(\d+)/.exec(pusher.service.listeningLine)?.[1] ?? 1);
  await waitRouted(publisher.port, workers, group.timeout, group.signal);
  return {
    name: "system",
    wsPort: pusher.port,
    publishPort: publisher.port,
    cpuProcesses: [hub.service, pusher.service, publisher.service],
    rssProcesses: [pusher.service],
  };
}

function portFlag(port: number, defaultPort: number): string[] {
  return port === defaultPort ? [] : ["--port", String(port)];
}

/**
 * Publishes a broadcast nobody is connected to receive until the publisher
 * says it reached every pusher worker: then each worker's hub link is up and
 * subscribed, and the hub's startup grace is over.
 */
async function waitRouted(publishPort: number, workers: number, timeout: number, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeout;
  let last = "no answer yet";
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    try {
      const response = await fetch(`http://127.0.0.1:${publishPort}/?content=bench-probe`, { signal });
      const body = (await response.text()).trim();
      const reached = Number(response.headers.get("x-pushers-reached"));
      if (response.status === 200 && reached >= workers) return;
      last = `${response.status} ${body}, reached ${reached} of ${workers} workers`;
    } catch (error) {
      signal?.throwIfAborted();
      last = (error as Error).message;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(
    `The system did not route a broadcast to all ${workers} pusher workers within ${timeout} ms: ${last}`,
  );
}

function aborted(signal?: AbortSignal): Promise<never> {
  if (!signal) return new Promise<never>(() => {});
  return new Promise<never>((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}
