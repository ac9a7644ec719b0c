/**
 * `deno task start`: the whole system on one machine. Starts the hub, a
 * pusher and a publisher as separate processes, each with its own task's
 * permissions, on the original's ports; prints where to go; restarts a
 * service that exits unexpectedly; Ctrl-C stops all three.
 *
 * A service's own flags follow its name and a colon:
 * `deno task start pusher: --presence-channels 'room.*' --workers 4 publisher: --max-content-bytes 4096`.
 *
 * @module
 */

import { ROOT, taskCommand } from "./shared/tasks.ts";
import { createLogger } from "./shared/log.ts";
import { durationFlag, helpText, intFlag, parseFlags } from "./shared/cli.ts";
import { backoffDelay } from "./shared/backoff.ts";

const SERVICES = ["channel", "pusher", "publisher"] as const;
type ServiceName = typeof SERVICES[number];
/** The order services start in: each after those whose addresses it is given (`wiring`). */
const START_ORDER: readonly ServiceName[] = ["channel", "publisher", "pusher"];
/** The order they are drained in: the publisher stops taking publishes first, the hub goes last. */
const STOP_ORDER: readonly ServiceName[] = ["publisher", "pusher", "channel"];
/** Where the pusher and the publisher look for the hub, and the demo page for the publisher, unless told. */
const DEFAULT_HUB = "127.0.0.1:2206";
const DEFAULT_PUBLISHER_PORT = "4237";

/** The flags of `deno task start` itself, and those it passes to each service. */
export interface StartArgs {
  own: string[];
  services: Record<ServiceName, string[]>;
}

/**
 * Splits `deno task start`'s arguments at the words `channel:`, `pusher:` and
 * `publisher:`: what comes before the first is start's own, what follows
 * each goes to that service, after its task's flags.
 *
 * @throws {TypeError} on any other word ending in a colon, or a service named twice.
 */
export function splitStartArgs(args: string[]): StartArgs {
  const split: StartArgs = { own: [], services: { channel: [], pusher: [], publisher: [] } };
  const named = new Set<string>();
  let into = split.own;
  for (const arg of args) {
    const group = /^([a-z]+):$/.exec(arg)?.[1];
    if (group === undefined) {
      into.push(arg);
      continue;
    }
    if (!(SERVICES as readonly string[]).includes(group)) {
      throw new TypeError(`Unknown service '${arg}': expected channel:, pusher: or publisher: before its flags`);
    }
    if (named.has(group)) throw new TypeError(`'${arg}' is given twice: put all of its flags after one`);
    named.add(group);
    into = split.services[group as ServiceName];
  }
  return split;
}

/** Stderr lines of a service kept to explain why it could not start. */
const STDERR_TAIL = 10;

const FLAGS = {
  "restart-delay": {
    type: "string" as const,
    arg: "MS",
    help: "delay ceiling before the first restart of a service that exited; doubles per restart, with jitter",
    default: "200",
  },
  "max-restart-delay": { type: "string" as const, arg: "MS", help: "largest delay between restarts", default: "5000" },
  "stable-after": {
    type: "string" as const,
    arg: "MS",
    help: "a service listening this long before it exits starts its backoff afresh",
    default: "10000",
  },
  "max-failed-starts": {
    type: "string" as const,
    arg: "N",
    help: "exits in a row before a service ever listened that stop everything",
    default: "5",
  },
  "stop-timeout": {
    type: "string" as const,
    arg: "MS",
    help: "how long a service may drain once told to stop before it is killed",
    default: "30000",
  },
  help: { type: "boolean" as const, help: "show this help" },
};

const SERVICE_FLAGS_HELP = `
Each service's own flags follow its name and a colon, after start's:
  deno task start pusher: --presence-channels 'room.*' --workers 4 publisher: --max-content-bytes 4096
They come after the service's task flags (deno task channel --help, pusher --help, publisher --help). Secrets go
in the environment, which every service inherits: PUBLISHER_API_KEY=... PUSHER_TOKEN_SECRET=... deno task start.
A hub or a publisher on another port is passed on to the services started after it (--hub, the pusher's
--publisher-url) unless their own flags or CHANNEL_BUS / CHANNEL_HUB say where to go.`;

/** How services are restarted and stopped; see the flags of the same names. */
interface RestartPolicy {
  restartDelay: number;
  maxRestartDelay: number;
  stableAfter: number;
  maxFailedStarts: number;
  stopTimeout: number;
}

/**
 * A signal this soon after the first is the same request: a terminal's
 * Ctrl-C reaches this process from its group and again through the
 * `deno task` (and `npx`) that forwards it, a few milliseconds apart. A
 * person's second Ctrl-C comes later.
 */
export const SAME_SIGNAL_MS = 500;

/** Where a service listens, from its `listening` log line. */
export interface Endpoint {
  /** `HOST:PORT` as the service logged it. */
  addr: string;
  tls: boolean;
}

interface Running {
  process: Deno.ChildProcess;
  listening: Promise<Endpoint>;
  output: Promise<void>;
  /** The last {@linkcode STDERR_TAIL} lines it wrote to stderr. */
  stderrTail: string[];
}

/** One service under supervision: whichever process runs it now, and its restart history. */
interface Slot {
  name: string;
  current: Running | null;
  /** Resolves when the service first listens. */
  up: Promise<Endpoint>;
  /** The supervision loop; resolves once stopping, rejects when the service keeps failing to start. */
  loop: Promise<void>;
}

/** Runs the three services until Ctrl-C; returns the exit code. */
export async function main(args: string[] = Deno.args): Promise<number> {
  const logger = createLogger("start");
  let policy: RestartPolicy;
  let serviceArgs: StartArgs["services"];
  try {
    const split = splitStartArgs(args);
    serviceArgs = split.services;
    const flags = parseFlags(split.own, FLAGS);
    if (flags.help) {
      console.log(helpText("deno task start", "Runs a hub, a pusher and a publisher on this machine.", FLAGS));
      console.log(SERVICE_FLAGS_HELP);
      return 0;
    }
    policy = {
      restartDelay: durationFlag(flags, "restart-delay", 200, { min: 1 }),
      maxRestartDelay: durationFlag(flags, "max-restart-delay", 5000, { min: 1 }),
      stableAfter: durationFlag(flags, "stable-after", 10_000),
      maxFailedStarts: intFlag(flags, "max-failed-starts", 5),
      stopTimeout: durationFlag(flags, "stop-timeout", 30_000, { min: 1 }),
    };
    if (policy.maxFailedStarts < 1) throw new TypeError("Invalid --max-failed-starts: expected at least 1, got 0");
  } catch (error) {
    logger.error((error as Error).message);
    return 2;
  }
  const slots: Slot[] = [];
  const stop = new AbortController();
  let stopping: Promise<void> | null = null;
  let forced = false;
  // Once only: a second SIGTERM would kill a service mid-drain, its handler
  // being gone after the first.
  const stopAll = () =>
    stopping ??= (async () => {
      stop.abort();
      for (const slot of STOP_ORDER.flatMap((name) => slots.filter((slot) => slot.name === name))) {
        if (slot.current) await stopOne(slot.current, "SIGTERM", policy.stopTimeout);
        // A restart under way when the stop came ends its new process itself.
        await slot.loop.catch(() => {});
      }
    })();
  // The first SIGINT, SIGTERM or SIGHUP drains the services, a second ends
  // them at once: either way none outlives this process. The services run in
  // sessions of their own, so a terminal's Ctrl-C, or its hangup, sent to its
  // whole foreground group, reaches them only through here, once.
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  let firstSignalAt = 0;
  const onSignal = () => {
    if (!stopping) {
      firstSignalAt = performance.now();
      return void stopAll();
    }
    if (performance.now() - firstSignalAt < SAME_SIGNAL_MS) return;
    forced = true;
    for (const slot of slots) if (slot.current) kill(slot.current, "SIGKILL");
  };
  for (const signal of signals) Deno.addSignalListener(signal, onSignal);
  const supervisor: Supervisor = {
    policy,
    serviceArgs,
    endpoints: {},
    signal: stop.signal,
    killSignal: () => forced ? "SIGKILL" : "SIGTERM",
  };
  const code = await run(slots, supervisor, stopAll);
  for (const signal of signals) Deno.removeSignalListener(signal, onSignal);
  return forced ? 1 : code;
}

interface Supervisor {
  policy: RestartPolicy;
  /** Each service's flags from the command line, after its task's. */
  serviceArgs: StartArgs["services"];
  /** Where each service listens, as its latest start logged it. */
  endpoints: Partial<Record<ServiceName, Endpoint>>;
  /** Aborted when everything stops: no more restarts. */
  signal: AbortSignal;
  /** The signal that stops a process now: SIGKILL once a second signal came. */
  killSignal: () => Deno.Signal;
}

/**
 * Starts the services one after another, each once the one before listens,
 * and then keeps them running until a signal stops them or one keeps
 * failing to start.
 */
async function run(slots: Slot[], supervisor: Supervisor, stopAll: () => Promise<void>): Promise<number> {
  const logger = createLogger("start");
  const stopped = new Promise<void>((resolve) => supervisor.signal.addEventListener("abort", () => resolve()));
  try {
    for (const name of START_ORDER) {
      if (supervisor.signal.aborted) break;
      const slot = supervise(name, supervisor);
      slots.push(slot);
      await Promise.race([slot.up, slot.loop, stopped]);
    }
    const { pusher, publisher } = supervisor.endpoints;
    if (!supervisor.signal.aborted) console.log(instructions(pusher!, publisher!));
    await Promise.race([stopped, ...slots.map((slot) => slot.loop)]);
  } catch (error) {
    // A service that a signal stopped before it listened is no failure.
    if (!supervisor.signal.aborted) {
      logger.error((error as Error).message);
      if (error instanceof FailedStart) {
        console.error(`Last lines ${error.service} wrote to stderr:`);
        for (const line of error.stderrTail) console.error(`  ${line}`);
      }
      await stopAll();
      return 1;
    }
  }
  await stopAll();
  return 0;
}

/** A service exited too many times in a row before it listened. */
class FailedStart extends Error {
  constructor(message: string, readonly service: string, readonly stderrTail: string[]) {
    super(message);
    this.name = "FailedStart";
  }
}

/** Runs `name`, and runs it again after each exit that no stop asked for. */
function supervise(name: ServiceName, supervisor: Supervisor): Slot {
  const logger = createLogger("start");
  const { policy, signal } = supervisor;
  let markUp!: (endpoint: Endpoint) => void;
  const slot: Slot = {
    name,
    current: null,
    up: new Promise((resolve) => (markUp = resolve)),
    loop: Promise.resolve(),
  };
  slot.loop = (async () => {
    let attempt = 0;
    let failedStarts = 0;
    while (!signal.aborted) {
      // Back where it listened before: the others were pointed there, and the printed addresses stay true.
      const given = samePort(supervisor.serviceArgs[name], supervisor.endpoints[name]);
      const service = await spawn(name, [...wiring(name, supervisor.endpoints, given, Deno.env.get), ...given]);
      slot.current = service;
      // A stop that came while it was being spawned did not reach it.
      if (signal.aborted) return await stopOne(service, supervisor.killSignal());
      const endpoint = await Promise.race([service.listening, service.process.status.then(() => null)]);
      const listenedAt = performance.now();
      if (endpoint !== null) {
        failedStarts = 0;
        const { addr } = endpoint;
        logger.info("service up", { service: name, addr, pid: service.process.pid, restarts: attempt || undefined });
        supervisor.endpoints[name] = endpoint;
        markUp(endpoint);
      }
      const status = await service.process.status;
      await service.output;
      if (signal.aborted) return;
      const exit = status.signal ? { signal: status.signal } : { code: status.code };
      if (endpoint === null && ++failedStarts >= policy.maxFailedStarts) {
        throw new FailedStart(
          `${name} keeps failing to start: it exited ${failedStarts} times in a row before listening ` +
            `(last ${exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`}); stopping everything`,
          name,
          service.stderrTail,
        );
      }
      // A service that ran for a while failed afresh, not again.
      if (endpoint !== null && performance.now() - listenedAt >= policy.stableAfter) attempt = 0;
      const delay = Math.round(
        backoffDelay(attempt, { initialDelay: policy.restartDelay, maxDelay: policy.maxRestartDelay }),
      );
      attempt++;
      logger.warn("service exited; restarting", { service: name, ...exit, delay_ms: delay, attempt });
      await sleep(delay, signal);
    }
  })();
  return slot;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

function kill(service: Running, signal: Deno.Signal): void {
  try {
    service.process.kill(signal);
  } catch { /* already gone */ }
}

/**
 * Drains one service: a signal (SIGTERM unless told), and its exit and last
 * output; killed if it has not exited within `timeout` ms (a service that
 * hangs, or is stopped, would hold up the others' stop for ever).
 */
async function stopOne(service: Running, signal: Deno.Signal = "SIGTERM", timeout = Infinity): Promise<void> {
  kill(service, signal);
  let timer: ReturnType<typeof setTimeout> | undefined;
  if (timeout !== Infinity) {
    timer = setTimeout(() => {
      createLogger("start").warn("a service did not stop in time: killing it", {
        pid: service.process.pid,
        timeoutMs: timeout,
      });
      kill(service, "SIGKILL");
    }, timeout);
  }
  try {
    await service.process.status;
    await service.output;
  } finally {
    clearTimeout(timer);
  }
}

async function spawn(name: string, extraArgs: string[]): Promise<Running> {
  const [exe, ...args] = await taskCommand(name);
  const process = new Deno.Command(exe!, {
    // Its stdin is a pipe this process holds and never writes: when this process is gone, killed outright too,
    // the pipe ends and the service stops as on SIGTERM (running in a session of its own, nothing else tells it).
    args: [...args, "--stop-on-stdin-eof", ...extraArgs],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    detached: true,
  }).spawn();
  // Closed once it exited, so that restarts do not pile up open pipes.
  process.status.then(() => process.stdin.close()).catch(() => {});
  let resolveListening!: (endpoint: Endpoint) => void;
  const listening = new Promise<Endpoint>((resolve) => (resolveListening = resolve));
  const stderrTail: string[] = [];
  const relay = async (stream: ReadableStream<Uint8Array>, sink: (line: string) => void) => {
    let rest = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + text).split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        const addr = /msg=listening addr=(\S+)/.exec(line)?.[1];
        if (addr) resolveListening({ addr, tls: / tls=on( |$)/.test(line) });
        sink(line);
      }
    }
    if (rest) sink(rest);
  };
  const output = Promise.all([
    relay(process.stdout, (line) => console.log(line)),
    relay(process.stderr, (line) => {
      console.error(line);
      stderrTail.push(line);
      if (stderrTail.length > STDERR_TAIL) stderrTail.shift();
    }),
  ]).then(() => {});
  return { process, listening, output, stderrTail };
}

/**
 * The flags that point service `name` at where the services started before
 * it listen, when that is not where it would look by itself: the hub's
 * address for the pusher and the publisher (`--hub`), the publisher's URL
 * for the pusher's demo page (`--publisher-url`). None that its own flags
 * (`given`) or the environment (CHANNEL_BUS, CHANNEL_HUB) already set.
 */
export function wiring(
  name: ServiceName,
  endpoints: Partial<Record<ServiceName, Endpoint>>,
  given: readonly string[],
  env: (variable: string) => string | undefined,
): string[] {
  const has = (flag: string) => given.some((arg) => arg === `--${flag}` || arg.startsWith(`--${flag}=`));
  const args: string[] = [];
  const hub = endpoints.channel && hostPort(endpoints.channel);
  const busGiven = has("hub") || has("bus") || Boolean(env("CHANNEL_BUS") || env("CHANNEL_HUB"));
  if (name !== "channel" && hub !== undefined && hub !== DEFAULT_HUB && !busGiven) args.push("--hub", hub);
  const publisher = endpoints.publisher;
  // By default the demo page calls the host it came from, with the page's scheme, on the publisher's default port:
  // kept when that is right. A pusher on TLS (its --cert) and a publisher without, or the other way, is not.
  const movedPublisher = publisher !== undefined &&
    (!publisher.addr.endsWith(`:${DEFAULT_PUBLISHER_PORT}`) || publisher.tls !== has("cert"));
  if (name === "pusher" && movedPublisher && !has("publisher-url")) {
    args.push("--publisher-url", url("http", publisher));
  }
  return args;
}

/**
 * A service's flags for its next start: `given`, with the port it last
 * listened on (`endpoint`) instead of the one it was given, which may have
 * been 0 (any free port). Unchanged before its first start.
 */
export function samePort(given: readonly string[], endpoint: Endpoint | undefined): string[] {
  if (endpoint === undefined) return [...given];
  const args: string[] = [];
  for (let i = 0; i < given.length; i++) {
    if (given[i] === "--port") i++;
    else if (!given[i]!.startsWith("--port=")) args.push(given[i]!);
  }
  return [...args, "--port", endpoint.addr.slice(endpoint.addr.lastIndexOf(":") + 1)];
}

/** What `deno task start` prints once all three listen, with the addresses they listen on. */
export function instructions(pusher: Endpoint, publisher: Endpoint): string {
  const page = url("http", pusher);
  const api = url("http", publisher);
  return `
Push system running.

  Demo page:        ${page}/
  Dashboard:        ${api}/dashboard
  Browser console:  ws = new WebSocket("${url("ws", pusher)}"); ws.onmessage = (e) => alert(e.data);
  Push to everyone: ${api}/?content=hello
  Push to one:      ${api}/?to_worker_id=WORKER_ID&to_connection_id=CONNECTION_ID&content=hello
                    (the ids are in the greeting each connection receives)

Ctrl-C stops all three.
`;
}

/** A browser's URL of a service: `http://127.0.0.1:4236`; a wildcard address as this machine's loopback. */
function url(scheme: "http" | "ws", endpoint: Endpoint): string {
  return `${scheme}${endpoint.tls ? "s" : ""}://${hostPort(endpoint)}`;
}

/** `HOST:PORT` to connect to a service at: a wildcard address as this machine's loopback, IPv6 in brackets. */
function hostPort({ addr }: Endpoint): string {
  const colon = addr.lastIndexOf(":");
  const host = addr.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  const shown = host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "[::1]" : host.includes(":") ? `[${host}]` : host;
  return `${shown}${addr.slice(colon)}`;
}

if (import.meta.main) Deno.exit(await main());
