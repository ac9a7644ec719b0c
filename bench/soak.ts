/**
 * `deno task soak`: the bounded soak. Starts the push system as
 * `deno task start` does (hub, pusher and its workers, publisher, from their
 * `deno.json` task lines), then, from a separate load-generator process
 * (`bench/soak_load.ts`), keeps a steady number of clients connected while
 * some leave and new ones connect, and publishes broadcasts and targeted
 * sends on a timer, for a bounded time. Meanwhile it samples each service's
 * RSS once a second.
 *
 * PASS when nothing owed to a connected client was lost (nor duplicated,
 * misdirected, refused or dropped: `soakChecks` in `soak_report.ts`) and each
 * service's RSS at the end is within 10% of its RSS after the warm-up. Exit
 * code: 0 PASS, 1 FAIL, 2 bad arguments, 3 the soak could not run, 130
 * interrupted.
 *
 * Permissions of the `soak` task are those of `bench`, for the same reasons
 * (see `bench/main.ts`): `--allow-run`, `--allow-read=deno.json`,
 * `--allow-write=bench/results`, `--allow-net=127.0.0.1`.
 *
 * @module
 */

import { type FlagValues, intFlag, stringFlag } from "../shared/cli.ts";
import { CONTENT_BYTES } from "./_content.ts";
import { runLoadProcess } from "./_load_process.ts";
import { describeMachine, rssKiBEach } from "./_proc.ts";
import { portFlag, programMain, progress, SYSTEM_PORT_FLAGS } from "./_program.ts";
import { type ServiceProcess, startSystem, type SystemPorts } from "./_services.ts";
import { formatMachine } from "./report.ts";
import type { SoakResult, SoakSpec, SoakTick } from "./soak_load.ts";
import {
  describeConfig,
  formatSoakDetails,
  formatSoakTable,
  type RssSample,
  type SoakConfig,
  type SoakReport,
  soakReport,
} from "./soak_report.ts";

/** Defaults, full size and `--quick`. */
const SIZES: Record<"full" | "quick", SoakConfig> = {
  full: {
    clients: 2000,
    churnPerSec: 40,
    broadcastsPerSec: 50,
    targetedPerSec: 500,
    durationS: 60,
    warmupS: 10,
    // Long enough for each service's idle collection (shared/idle_gc.ts: two quiet looks 2 s apart, so 4-6 s after
    // the load) to give back the heap the load grew. At 2 s the publisher was sampled still at its plateau under load
    // (1.10-1.12x its warm-up, flat after about 45 s in a 180 s soak), which tells nothing about a leak.
    settleS: 8,
  },
  quick: {
    clients: 200,
    churnPerSec: 10,
    broadcastsPerSec: 50,
    targetedPerSec: 200,
    durationS: 8,
    warmupS: 3,
    settleS: 1,
  },
};

const full = SIZES.full;
const FLAGS = {
  quick: {
    type: "boolean" as const,
    help: `a short smoke: ${describeConfig(SIZES.quick)}; flags below still apply`,
  },
  duration: { type: "string" as const, arg: "S", help: "seconds the load runs", default: String(full.durationS) },
  warmup: {
    type: "string" as const,
    arg: "S",
    help: "seconds into the load when the warm-up RSS is sampled",
    default: String(full.warmupS),
  },
  clients: { type: "string" as const, arg: "N", help: "clients kept connected", default: String(full.clients) },
  churn: {
    type: "string" as const,
    arg: "N",
    help: "clients replaced per second (as many leave, as many connect)",
    default: String(full.churnPerSec),
  },
  "broadcast-rate": {
    type: "string" as const,
    arg: "N",
    help: "broadcasts per second",
    default: String(full.broadcastsPerSec),
  },
  "targeted-rate": {
    type: "string" as const,
    arg: "N",
    help: "targeted sends per second, each to a client connected then",
    default: String(full.targetedPerSec),
  },
  settle: {
    type: "string" as const,
    arg: "S",
    help: "seconds between the last check and the end RSS sample",
    default: String(full.settleS),
  },
  out: {
    type: "string" as const,
    arg: "FILE",
    help: "where the JSON goes (the task may write only under bench/results)",
    default: "bench/results/soak-<ISO time>.json",
  },
  ...SYSTEM_PORT_FLAGS,
  help: { type: "boolean" as const, help: "show this help" },
};

const DESCRIPTION = `Soak: the push system under churn and mixed traffic for a bounded time.

Starts hub, pusher and publisher as deno task start does. A separate load-generator process
(bench/soak_load.ts) keeps --clients connected while --churn of them per second leave and as many
new ones connect, and publishes --broadcast-rate broadcasts and --targeted-rate targeted sends per
second (each to a client connected then), for --duration seconds. Then it checks every delivery.

PASS: zero loss for connected clients (a client greeted before a publish was written and still
there after its 200 answer got it), nothing duplicated or misdirected, every publish answered 200,
no client dropped or refused; and each service's RSS at the end (the load over, every delivery
checked, --clients still connected, --settle seconds later) at most 1.10 × its RSS --warmup seconds
into the load. Exit code 0 PASS, 1 FAIL, 2 bad arguments, 3 could not run.`;

/** A leaving client waits at most this long for what it is owed before it closes. */
const LINGER_MS = 5000;
/** At the end, nothing arriving for this long ends the wait for what is missing. */
const QUIET_MS = 5000;

/** Options of one soak, from the command line. */
interface SoakOptions {
  quick: boolean;
  config: SoakConfig;
  out: string;
  ports: SystemPorts;
}

/** Runs the soak; returns the exit code. */
export function main(args: string[] = Deno.args): Promise<number> {
  return programMain(args, {
    task: "soak",
    script: "bench/soak.ts",
    description: DESCRIPTION,
    flags: FLAGS,
    options: soakOptions,
    run,
    print(report) {
      console.log(formatSoakTable(report));
      const details = formatSoakDetails(report);
      if (details) console.log(`\n${details}`);
      return report.pass ? 0 : 1;
    },
    failureCode: 3,
  });
}

function soakOptions(flags: FlagValues): SoakOptions {
  const quick = flags.quick === true;
  const sizes = quick ? SIZES.quick : SIZES.full;
  const config: SoakConfig = {
    clients: intFlag(flags, "clients", sizes.clients),
    churnPerSec: intFlag(flags, "churn", sizes.churnPerSec),
    broadcastsPerSec: intFlag(flags, "broadcast-rate", sizes.broadcastsPerSec),
    targetedPerSec: intFlag(flags, "targeted-rate", sizes.targetedPerSec),
    durationS: intFlag(flags, "duration", sizes.durationS),
    warmupS: intFlag(flags, "warmup", sizes.warmupS),
    settleS: intFlag(flags, "settle", sizes.settleS),
  };
  if (config.clients < 1) throw new RangeError("Invalid --clients: at least 1 client is needed");
  if (config.broadcastsPerSec + config.targetedPerSec < 1) {
    throw new RangeError("Invalid --broadcast-rate and --targeted-rate: nothing would be published");
  }
  if (config.warmupS < 1 || config.warmupS >= config.durationS) {
    throw new RangeError(
      `Invalid --warmup: ${config.warmupS} s must be at least 1 and under --duration (${config.durationS} s)`,
    );
  }
  const port = (name: keyof SystemPorts) => portFlag(flags, name);
  return {
    quick,
    config,
    out: stringFlag(flags, "out") ?? `bench/results/soak-${new Date().toISOString()}.json`,
    ports: { hub: port("hub"), pusher: port("pusher"), publisher: port("publisher") },
  };
}

async function run(options: SoakOptions, signal: AbortSignal): Promise<SoakReport> {
  const { config } = options;
  const startedAt = new Date().toISOString();
  const machine = await describeMachine();
  progress(formatMachine(machine));
  progress(`soak: ${describeConfig(config)}`);
  await using services = await startSystem(options.ports, { signal });
  // A service that dies stops the run at once, not after the load.
  const stop = new AbortController();
  const onAbort = () => stop.abort(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  const processes = services.system.cpuProcesses;
  const pids = processes.map((service) => service.pid);
  const idleKiB = await rssKiBEach(pids);
  let connectedKiB = idleKiB;
  let endKiB = idleKiB;
  let tick: SoakTick | null = null;
  const samples: RssSample[] = [];
  let sampler: Sampler | null = null;
  const spec: SoakSpec = {
    hostname: "127.0.0.1",
    wsPort: services.system.wsPort,
    publishPort: services.system.publishPort,
    clients: config.clients,
    churnPerSec: config.churnPerSec,
    broadcastsPerSec: config.broadcastsPerSec,
    targetedPerSec: config.targetedPerSec,
    durationMs: config.durationS * 1000,
    contentBytes: CONTENT_BYTES,
    connectBatch: 200,
    // The publisher answers a connection's pipelined requests one at a time,
    // each after the hub's ack: concurrency comes from connections.
    publishConnections: 64,
    pipeline: 2,
    lingerMs: LINGER_MS,
    quietMs: QUIET_MS,
    readBufferBytes: 16 * 1024,
  };
  let load: SoakResult;
  try {
    load = await runLoadProcess<SoakResult>(spec, {
      script: "bench/soak_load.ts",
      signal: stop.signal,
      // Connecting, the load, the drain's waits, the settle, and room to spare.
      timeout: 120_000 + config.durationS * 1000 + LINGER_MS + 2 * QUIET_MS + config.settleS * 1000,
      async onConnected() {
        connectedKiB = await rssKiBEach(pids);
        progress(`${config.clients} clients connected; load for ${config.durationS} s`);
        sampler = new Sampler(1000, async (t) => {
          services.assertRunning();
          const kib = await rssKiBEach(pids);
          samples.push({ t, clients: tick?.clients ?? config.clients, kib });
          if (Math.round(t) % 5 === 0 || Math.round(t) === config.warmupS) {
            progress(progressLine(t, tick, processes, kib));
          }
        }, (error) => stop.abort(error));
      },
      onMessage(message) {
        if (message.type === "tick") tick = message as SoakTick;
      },
      async onResult() {
        await (sampler as Sampler | null)?.stop();
        services.assertRunning();
        await sleep(config.settleS * 1000);
        services.assertRunning();
        endKiB = await rssKiBEach(pids);
      },
    });
  } catch (error) {
    // The sampler's reason (a service gone) says more than the generator's being killed.
    throw stop.signal.aborted && !signal.aborted ? stop.signal.reason : error;
  } finally {
    await (sampler as Sampler | null)?.stop();
    signal.removeEventListener("abort", onAbort);
  }
  progress(`load over: ${load.checkedClients} clients checked, ${load.lost} lost; stopping the services`);
  return soakReport({
    startedAt,
    finishedAt: new Date().toISOString(),
    machine,
    quick: options.quick,
    config,
    load,
    names: processes.map((service) => service.name),
    idleKiB,
    connectedKiB,
    samples,
    endKiB,
  });
}

/** Calls `sample(seconds since start)` every `intervalMs`, on schedule, one at a time, until stopped. */
class Sampler {
  readonly #done: Promise<void>;
  #stopped = false;
  #wake: () => void = () => {};

  constructor(intervalMs: number, sample: (t: number) => Promise<void>, onError: (error: Error) => void) {
    const start = performance.now();
    this.#done = (async () => {
      for (let k = 1; !this.#stopped; k++) {
        const wait = start + k * intervalMs - performance.now();
        if (wait > 0) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, wait);
            this.#wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
        }
        if (this.#stopped) return;
        try {
          await sample(Math.round((performance.now() - start) / 100) / 10);
        } catch (error) {
          onError(error as Error);
          return;
        }
      }
    })();
  }

  /** Stops sampling and waits for a sample in progress. Stopping twice is harmless. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake();
    await this.#done;
  }
}

function progressLine(
  t: number,
  tick: SoakTick | null,
  processes: readonly ServiceProcess[],
  kib: number[],
): string {
  const rss = processes.map((service, i) => `${service.name} ${(kib[i]! / 1024).toFixed(1)}`).join(", ");
  const load = tick
    ? `${tick.phase} ${tick.clients} clients (${tick.connecting} connecting, ${tick.leaving} leaving), ` +
      `${tick.answered} answered, ${tick.deliveries} deliveries, ${tick.lost} lost`
    : "no tick yet";
  return `t=${Math.round(t)} s: ${load}; RSS MiB ${rss}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

if (import.meta.main) Deno.exit(await main());
