/**
 * The processes a benchmark run drives: the push system started exactly as
 * `deno task start` starts it (hub, pusher, publisher, from their
 * `deno.json` task lines), and the baseline.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { ROOT, taskCommand } from "../shared/tasks.ts";
import { spawnPiped } from "./_child.ts";
import { tokenPath } from "./_users.ts";

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
  /** `system` is on the hub; `nats` and `redis` are the same services on that bus (`bench/_buses.ts`). */
  readonly name: "system" | "baseline" | "original" | "nats" | "redis";
  readonly wsPort: number;
  readonly publishPort: number;
  /** Processes whose CPU time counts: hub, pusher and publisher (for the original, masters and workers), or the baseline. */
  readonly cpuProcesses: readonly ServiceProcess[];
  /** Processes holding the WebSockets: the pusher (the original's pusher master and workers), or the baseline. */
  readonly rssProcesses: readonly ServiceProcess[];
  /**
   * The pusher's `--token-secret`: every client must connect with a token
   * signed with it. Absent: anyone connects, as under `deno task start`.
   */
  readonly tokenSecret?: string;
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
  /**
   * The pusher's and publisher's `--bus` instead of a hub: no hub is
   * started, and `history` goes to the pusher and the publisher, as a bus
   * that keeps history itself takes it. @default {undefined} a hub of ours
   */
  bus?: string;
  /**
   * The pusher's `--token-secret`: every WebSocket must then carry
   * `?token=JWT`, and a client's user is its token's `sub`. The probes that
   * wait for the system to route open WebSockets only on a bus, and sign
   * their own tokens then. @default {undefined} none, as under `deno task start`
   */
  tokenSecret?: string;
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

  readonly #ready: RegExp;
  readonly #warning: RegExp;

  constructor(name: string, command: string[], lines: ProcessLines = {}, env: Readonly<Record<string, string>> = {}) {
    this.name = name;
    this.#ready = lines.ready ?? / msg=listening addr=\S+/;
    this.#warning = lines.warning ?? / level=(warn|error) /;
    this.process = spawnPiped(command, env);
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
    if (this.#ready.test(line)) resolveListening(line);
    if (this.#warning.test(line)) {
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
      // A process that is not ours says it is ready in its own words, without an addr=.
      return Number(/ addr=\S*:(\d+)/.exec(this.listeningLine)?.[1] ?? 0);
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

/** How a process says it is ready and warns; our services' log lines by default. */
export interface ProcessLines {
  /** Its line saying it is ready. @default {/ msg=listening addr=\S+/} */
  ready?: RegExp;
  /** Its warning and error lines. @default {/ level=(warn|error) /} */
  warning?: RegExp;
}

/** A process started by {@linkcode startProcess}; disposing stops it (SIGTERM, then SIGKILL), twice is harmless. */
export interface StartedProcess extends ServiceProcess, AsyncDisposable {}

/**
 * Starts a process that is not a service of ours (`nats-server`,
 * `redis-server`) from the repository root and waits for its ready line.
 *
 * @throws {Error} with its last log lines when it exits first or is not ready within `timeout` ms.
 */
export async function startProcess(
  name: string,
  command: string[],
  { timeout = 20_000, signal, ...lines }: ProcessLines & { timeout?: number; signal?: AbortSignal },
): Promise<StartedProcess> {
  const running = new Running(name, command, lines);
  const started: StartedProcess = {
    name,
    pid: running.pid,
    get listeningLine() {
      return running.listeningLine;
    },
    get exited() {
      return running.exited;
    },
    takeWarnings: () => running.takeWarnings(),
    tail: () => running.tail(),
    [Symbol.asyncDispose]: () => running.stop(),
  };
  try {
    await running.waitListening(timeout, signal);
  } catch (error) {
    await running.stop();
    throw error;
  }
  return started;
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

  async start(
    name: string,
    command: string[],
    env: Readonly<Record<string, string>> = {},
  ): Promise<{ service: Running; port: number }> {
    const service = new Running(name, command, {}, env);
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
  { pusherServer = "listen", history = "", bus, tokenSecret }: StartServicesOptions,
): Promise<Target> {
  if (bus !== undefined) return await launchOnBus(group, ports, { pusherServer, history, bus, tokenSecret });
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
  ], tokenEnv(tokenSecret));
  const publisher = await group.start("publisher", [
    ...await taskCommand("publisher"),
    ...portFlag(ports.publisher, DEFAULT_PORTS.publisher),
    ...hubFlag,
  ]);
  const workers = Number(/ workers=(\d+)/.exec(pusher.service.listeningLine)?.[1] ?? 1);
  // A broadcast through the publisher: no WebSocket, so no token needed.
  await waitRouted(publisher.port, workers, group.timeout, group.signal);
  return {
    name: "system",
    wsPort: pusher.port,
    publishPort: publisher.port,
    cpuProcesses: [hub.service, pusher.service, publisher.service],
    rssProcesses: [pusher.service],
    ...(tokenSecret === undefined ? {} : { tokenSecret }),
  };
}

/**
 * Starts pusher and publisher on `bus` (no hub) and waits until a broadcast
 * reaches every pusher worker: seen by clients, as NATS counts no
 * subscribers. Whoever started the bus's servers names the target after
 * the bus and adds them to its CPU processes (`bench/_buses.ts`).
 */
async function launchOnBus(
  group: ProcessGroup,
  ports: SystemPorts,
  { pusherServer, history, bus, tokenSecret }:
    & Required<Pick<StartServicesOptions, "pusherServer" | "history" | "bus">>
    & Pick<StartServicesOptions, "tokenSecret">,
): Promise<Target> {
  const busFlags = ["--bus", bus, ...(history === "" ? [] : ["--history", history])];
  const pusher = await group.start("pusher", [
    ...await taskCommand("pusher"),
    ...portFlag(ports.pusher, DEFAULT_PORTS.pusher),
    ...busFlags,
    ...(pusherServer === "listen" ? [] : ["--server", pusherServer]),
  ], tokenEnv(tokenSecret));
  const publisher = await group.start("publisher", [
    ...await taskCommand("publisher"),
    ...portFlag(ports.publisher, DEFAULT_PORTS.publisher),
    ...busFlags,
  ]);
  const workers = Number(/ workers=(\d+)/.exec(pusher.service.listeningLine)?.[1] ?? 1);
  await waitOriginalRouted(pusher.port, publisher.port, workers, group.timeout, group.signal, {
    who: `The system on ${bus}`,
    ...(tokenSecret === undefined ? {} : { tokenSecret }),
  });
  return {
    name: "system",
    wsPort: pusher.port,
    publishPort: publisher.port,
    cpuProcesses: [pusher.service, publisher.service],
    rssProcesses: [pusher.service],
    ...(tokenSecret === undefined ? {} : { tokenSecret }),
  };
}

function portFlag(port: number, defaultPort: number): string[] {
  return port === defaultPort ? [] : ["--port", String(port)];
}

/**
 * The pusher's token secret, only when asked for, in its environment
 * (`PUSHER_TOKEN_SECRET`) rather than on its command line, where any process
 * of the machine could read it: the command line stays exactly the task's.
 */
function tokenEnv(tokenSecret: string | undefined): Record<string, string> {
  return tokenSecret === undefined ? {} : { PUSHER_TOKEN_SECRET: tokenSecret };
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

/**
 * The PHP original's scripts (`peer.sh` and the seed's three services),
 * beside the repository: `../shared/peers/workerman/`.
 */
export const PEER_DIR: URL = new URL("../shared/peers/workerman/", ROOT);

/** The running PHP original. Disposing stops it (`peer.sh stop`) and removes its run directory; twice is harmless. */
export interface OriginalServices extends AsyncDisposable {
  readonly original: Target;
  /** @throws {Error} naming the process when one of the original's is gone. */
  assertRunning(): void;
}

/** Options for {@linkcode startOriginal}. */
export interface StartOriginalOptions {
  /** Checked between steps; the original is stopped when it fires. */
  signal?: AbortSignal;
  /** Milliseconds for the original's pushers to route a broadcast once started. @default {20000} */
  timeout?: number;
  /** Pusher processes (`WS_COUNT`). @default {2} */
  pushers?: number;
}

/**
 * Starts the PHP original (Workerman + Channel: hub, publisher, pusher with
 * `pushers` processes) with `peer.sh start` on free ports, in its own run
 * directory, and waits until a broadcast reaches every pusher process.
 *
 * Nothing is started when something it needs is missing: the scripts in
 * {@linkcode PEER_DIR}, the upstream sources in `$PEER_SRC` (default
 * `/tmp/peer-src`) or php (`$PHP_BIN`, default `php`). Then, or when it does
 * not start or does not route a broadcast within `timeout`, it resolves to
 * why, and the benchmark runs without it.
 */
export async function startOriginal(
  options: StartOriginalOptions = {},
): Promise<{ services: OriginalServices } | { reason: string }> {
  const peerSh = fileURLToPath(new URL("peer.sh", PEER_DIR));
  // Through bash, as _proc.ts reads /proc through cat: the bench holds
  // --allow-run, and neither the sources' place nor php's is known in advance.
  const missing = await shell(CHECK_ORIGINAL, [peerSh]);
  if (!missing.ok) return { reason: missing.output || "the original's prerequisites could not be checked" };
  const runDir = (await shell("mktemp -d -t bench-original.XXXXXX", [])).output;
  if (runDir === "") return { reason: "no temporary directory for the original's pid and log files" };
  const [hub, pusher, publisher] = freePorts(3) as [number, number, number];
  const env = {
    PEER_RUN_DIR: `${runDir}/run`,
    CHANNEL_PORT: String(hub),
    WS_PORT: String(pusher),
    HTTP_PORT: String(publisher),
    WS_COUNT: String(options.pushers ?? 2),
  };
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await shell(`"$1" stop; rm -rf -- "$2"`, [peerSh, runDir], env);
  };
  try {
    const started = await shell(`"$1" start`, [peerSh], env);
    if (!started.ok) {
      await stop();
      return { reason: `peer.sh start failed: ${started.output.split("\n").slice(-3).join(" / ")}` };
    }
    const status = await shell(`"$1" status`, [peerSh], env);
    const processes = originalProcesses(status.output);
    const workers = processes.filter((p) => p.name.startsWith("pusher worker")).length;
    if (processes.length === 0 || workers === 0) {
      await stop();
      return { reason: `peer.sh status listed no pusher workers: ${status.output}` };
    }
    options.signal?.throwIfAborted();
    await waitOriginalRouted(pusher, publisher, workers, options.timeout ?? 20_000, options.signal);
    return {
      services: {
        original: {
          name: "original",
          wsPort: pusher,
          publishPort: publisher,
          cpuProcesses: processes,
          rssProcesses: processes.filter((p) => p.name.startsWith("pusher")),
        },
        assertRunning() {
          const gone = processes.find((p) => p.exited);
          if (gone) throw new Error(`The original's ${gone.name} (pid ${gone.pid}) exited during the run`);
        },
        [Symbol.asyncDispose]: stop,
      },
    };
  } catch (error) {
    await stop();
    // An original that starts but does not route in time is left out like a
    // missing one: the run measures the rest.
    if (options.signal?.aborted) throw error;
    return { reason: (error as Error).message };
  }
}

/** Prints what is missing, first thing first, and fails; prints nothing when all is there. */
const CHECK_ORIGINAL = `
[ -x "$1" ] || { echo "$1 is missing (the original's scripts sit beside the repository, in ../shared/peers/workerman/)"; exit 1; }
src="\${PEER_SRC:-/tmp/peer-src}"
for f in workerman/src/Worker.php channel/src/Server.php coroutine/src/Coroutine.php; do
  [ -f "$src/$f" ] || { echo "$src/$f is missing (PEER_SRC=$src; see ../shared/peers/workerman/README.md)"; exit 1; }
done
php="\${PHP_BIN:-php}"
command -v "$php" >/dev/null || { echo "php is missing: no $php on the PATH"; exit 1; }
`;

async function shell(
  script: string,
  args: string[],
  env?: Record<string, string>,
): Promise<{ ok: boolean; output: string }> {
  const { success, stdout, stderr } = await new Deno.Command("bash", {
    args: ["-c", script, "bash", ...args],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes).trim();
  return { ok: success, output: [decode(stdout), decode(stderr)].filter(Boolean).join("\n") };
}

/** `count` loopback ports free a moment ago (bound to port 0, then closed). */
export function freePorts(count: number): number[] {
  const listeners = Array.from({ length: count }, () => Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  const ports = listeners.map((listener) => listener.addr.port);
  for (const listener of listeners) listener.close();
  return ports;
}

const ORIGINAL_NAMES: Record<string, string> = { start_channel: "hub", start_http: "publisher", start_ws: "pusher" };

/** A process of the original's, from `peer.sh status`; not a child of ours, so watched by pid. */
class OriginalProcess implements ServiceProcess {
  readonly listeningLine = "";
  constructor(readonly name: string, readonly pid: number) {}

  get exited(): boolean {
    try {
      // SIGCONT does nothing to a running process: it only asks whether the pid is there.
      Deno.kill(this.pid, "SIGCONT");
      return false;
    } catch {
      return true;
    }
  }

  takeWarnings(): { count: number; sample: string[] } {
    return { count: 0, sample: [] };
  }

  tail(): string {
    return "";
  }
}

/**
 * Masters and workers from `peer.sh status` lines such as
 * `start_ws master 14876 workers: 14878 14879  port 24236`.
 */
export function originalProcesses(status: string): ServiceProcess[] {
  const processes: ServiceProcess[] = [];
  for (const match of status.matchAll(/^(start_\w+) master (\d+) workers: ([\d ]*?)\s+port/gm)) {
    const name = ORIGINAL_NAMES[match[1]!] ?? match[1]!;
    processes.push(new OriginalProcess(`${name} master`, Number(match[2])));
    const workers = match[3]!.trim().split(/\s+/).filter(Boolean).map(Number);
    workers.forEach((pid, i) => processes.push(new OriginalProcess(`${name} worker ${i}`, pid)));
  }
  return processes;
}

/**
 * Connects WebSockets until every pusher process has greeted one, then
 * broadcasts until each has delivered: each process's Channel client is
 * then connected and subscribed. The publisher answers `ok` before it
 * publishes, so only the deliveries tell. `who` names the system in the
 * error (default "The original"); with `tokenSecret`, each WebSocket carries
 * a token signed with it, as that pusher lets in no other.
 */
export async function waitOriginalRouted(
  wsPort: number,
  publishPort: number,
  workers: number,
  timeout: number,
  signal?: AbortSignal,
  { who = "The original", tokenSecret }: { who?: string; tokenSecret?: string } = {},
): Promise<void> {
  const deadline = Date.now() + timeout;
  const sockets: WebSocket[] = [];
  const seen = new Set<string>();
  const reached = new Set<string>();
  try {
    while (seen.size < workers && Date.now() < deadline) {
      signal?.throwIfAborted();
      const path = tokenSecret === undefined ? "/" : tokenPath("bench-probe", tokenSecret);
      const socket = new WebSocket(`ws://127.0.0.1:${wsPort}${path}`);
      sockets.push(socket);
      const worker = await new Promise<string | null>((resolve) => {
        const timer = setTimeout(() => resolve(null), Math.max(0, deadline - Date.now()));
        socket.onmessage = (event) => {
          clearTimeout(timer);
          resolve(/^workerID:(\S+) /.exec(String(event.data))?.[1] ?? null);
        };
        socket.onerror = socket.onclose = () => {
          clearTimeout(timer);
          resolve(null);
        };
      });
      if (worker !== null && !seen.has(worker)) {
        seen.add(worker);
        socket.onmessage = () => reached.add(worker);
        continue;
      }
      // A worker that greeted already, or none: until every worker is in its
      // accept loop (the original's second pusher process can start after the
      // first has taken a few dozen connections), try again a little later.
      sockets.pop();
      socket.close();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    while (Date.now() < deadline && (seen.size < workers || reached.size < workers)) {
      signal?.throwIfAborted();
      if (seen.size === workers) {
        await fetch(`http://127.0.0.1:${publishPort}/?content=bench-probe`, { signal }).then((r) => r.body?.cancel())
          .catch(() => {});
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (reached.size < workers) {
      throw new Error(
        `${who} did not route a broadcast to its ${workers} pusher processes within ${timeout} ms ` +
          `(${seen.size} greeted, ${reached.size} delivered)`,
      );
    }
  } finally {
    for (const socket of sockets) socket.close();
  }
}

/** The floor processes of {@linkcode startFloor}: one per service, named after it. */
export interface FloorServices extends AsyncDisposable {
  readonly processes: readonly ServiceProcess[];
}

/**
 * Starts the memory floor of the system (issue 19): for each of hub, pusher
 * and publisher, `bench/floor.ts` with that service's `--v8-flags`, a bare
 * Deno process listening on a port; the pusher's with `workers` bare workers.
 */
export async function startFloor(workers: number, options: StartServicesOptions = {}): Promise<FloorServices> {
  const group = new ProcessGroup(options);
  try {
    const processes: ServiceProcess[] = [];
    for (const [name, task] of [["hub", "channel"], ["pusher", "pusher"], ["publisher", "publisher"]] as const) {
      const v8Flags = (await taskCommand(task)).filter((word) => word.startsWith("--v8-flags="));
      const { service } = await group.start(`${name} floor`, [
        Deno.execPath(),
        "run",
        ...v8Flags,
        "--allow-net=127.0.0.1",
        "--allow-read=bench",
        "bench/floor.ts",
        "--workers",
        String(name === "pusher" ? workers : 0),
      ]);
      processes.push(service);
    }
    return { processes, [Symbol.asyncDispose]: () => group[Symbol.asyncDispose]() };
  } catch (error) {
    await group[Symbol.asyncDispose]();
    throw error;
  }
}

/** The pusher's worker count, from its listening line (`workers=N`). */
export function pusherWorkers(target: Target): number {
  const pusher = target.cpuProcesses.find((service) => service.name === "pusher");
  return Number(/ workers=(\d+)/.exec(pusher?.listeningLine ?? "")?.[1] ?? 1);
}
