/**
 * `deno task bench`: the load benchmark. Starts the push system as
 * `deno task start` does (hub, pusher and its workers, publisher, from their
 * `deno.json` task lines) and the baseline (`bench/baseline.ts`), then runs
 * every scenario against both from a separate load-generator process
 * (`bench/load.ts`), prints a table and writes the results as JSON.
 *
 * Permissions of the `bench` task, and why:
 * - `--allow-run`: it starts the services (each with its own task's grants),
 *   the baseline and the load generator (loopback network only), and reads
 *   /proc through `cat` (see `_proc.ts`: Deno grants /proc only under
 *   `--allow-all`). Unscoped because `deno` is wherever npx put it. With
 *   `--buses` it also runs `nats-server` or `redis-server`, and `mktemp` and
 *   `rm` for their temporary directory (`_buses.ts`).
 * - `--allow-read=deno.json`: the services' command lines are its tasks.
 * - `--allow-write=bench/results`: the JSON results.
 * - `--allow-net=127.0.0.1`: checking that the ports are free (and finding
 *   free ones for the bus servers), and probing that the system routes
 *   before measuring.
 *
 * @module
 */

import { type FlagValues, intFlag, stringFlag } from "../shared/cli.ts";
import { CONTENT_BYTES } from "./_content.ts";
import { runLoadProcess } from "./_load_process.ts";
import { clockTicksPerSecond, cpuTicks, cpuTicksEach, describeMachine, rssKiB, rssKiBEach } from "./_proc.ts";
import { portFlag, programMain, progress, SYSTEM_PORT_FLAGS } from "./_program.ts";
import {
  type Ports,
  pusherWorkers,
  startFloor,
  startOriginal,
  startServices,
  startSystem,
  type Target,
} from "./_services.ts";
import { type BusKind, type BusServer, type BusSystem, parseBuses, startBusServer, startBusSystem } from "./_buses.ts";
import {
  type BusesReport,
  type BusRun,
  type BusScenarioReport,
  busScenarioReport,
  formatBusTable,
} from "./bus_report.ts";
import type { LoadSpec } from "./load.ts";
import {
  type BenchReport,
  compareScenarios,
  formatCpuByProcess,
  formatMachine,
  formatTable,
  formatWarnings,
  goalSummary,
  type Measurement,
  medianPair,
  MEMORY_GOALS,
  memoryReport,
  type ScenarioReport,
  scenarioReport,
  type ServiceRss,
  totalKiB,
} from "./report.ts";
import { type Scenario, scenarios } from "./scenarios.ts";

const FLAGS = {
  quick: { type: "boolean" as const, help: "tiny sizes: a smoke test that runs in seconds" },
  scenarios: {
    type: "string" as const,
    arg: "a,b,...",
    help: "scenarios to run",
    default: "all: a,b,c,d,e,f,g,h,i,j,k,l,m,n,o",
  },
  out: {
    type: "string" as const,
    arg: "FILE",
    help: "where the JSON goes (the task may write only under bench/results)",
    default: "bench/results/<ISO time>.json",
  },
  repeat: {
    type: "string" as const,
    arg: "N",
    help: "runs each scenario N times, system then baseline, and reports the median pair (odd N is best)",
    default: "1",
  },
  scale: {
    type: "string" as const,
    arg: "N",
    help:
      "multiplies the publishes of the as-fast-as-accepted scenarios (a, b, d, f, h, j, l, m, n, o), for steady-state figures",
    default: "1",
  },
  "idle-settle": {
    type: "string" as const,
    arg: "SECONDS",
    help: "(g) also samples RSS every second while the clients sit idle this long, and reports the lowest",
    default: "0: off",
  },
  "memory-settle": {
    type: "string" as const,
    arg: "SECONDS",
    help: "after the scenarios, samples the system's RSS every second up to this long, until back within its target",
    default: "30 (2 with --quick)",
  },
  "pusher-server": {
    type: "string" as const,
    arg: "listen|deno",
    help: "the pusher's --server: our own on Deno.listen, or Deno.serve + Deno.upgradeWebSocket",
    default: "listen",
  },
  history: {
    type: "string" as const,
    arg: "SUBJECTS",
    help: "the hub's --history: subjects it keeps history of (channel.*); (j) and (k) get a second system with theirs",
    default: "none",
  },
  buses: {
    type: "string" as const,
    arg: "channel,nats,redis",
    help: "also runs the scenarios with pusher and publisher on these buses (nats-server, redis-server on free " +
      "ports), and prints each against the hub (channel, which always runs)",
    default: "channel",
  },
  ...SYSTEM_PORT_FLAGS,
  "baseline-port": { type: "string" as const, arg: "PORT", help: "baseline port; 0 picks a free one", default: "4240" },
  help: { type: "boolean" as const, help: "show this help" },
};

const DESCRIPTION = `Load benchmark: the push system against a minimal one-process Deno.serve baseline.

Starts hub, pusher and publisher as deno task start does, and the baseline (bench/baseline.ts); drives
both from a separate load-generator process (bench/load.ts) with raw WebSocket and HTTP/1.1 clients;
prints system, baseline and system/baseline for every metric; writes the results as JSON.

Scenarios: (a) 100 clients × 500 broadcasts; (b) 1000 × 200; (c) 1000 clients at 50 broadcasts/s;
(d) 100 clients × 5000 targeted sends; (e) targeted at 1000/s; (f) 5000 clients × 20 broadcasts;
(g) 10,000 idle connections; (h) 1000 clients in 10 channels of 100, 2000 channel publications;
(i) 1000 clients × 20 subscribe/unsubscribe rounds over 50 channels under 5000 publications/s;
(j) (h) on a system whose hub keeps history of channel.*; (k) a recovery storm: 1000 clients of one
history channel reconnect at once, each asking for 100 missed publications (the system only);
(l) 100 clients × 50,000 targeted sends, 100 per /api/batch request; (m) the same to 100 channels of
one client each; (n) (h) with one GET /?channel= per publication; (o) (l) to users: every client
connects with a token as its own user, on a system whose pusher has --token-secret (the system only).
Contents are ${CONTENT_BYTES} bytes.

Issue 19: when ../shared/peers/workerman/peer.sh, the sources in $PEER_SRC (default /tmp/peer-src) and
php are there, the PHP original also runs (a) to (g), on free ports, and the table shows system/original
beside system/baseline; otherwise it says why not and runs the rest as before.

Issue 18: --buses channel,nats,redis also runs the chosen scenarios with pusher and publisher on a
nats-server (JetStream) and a redis-server the bench starts on free ports, and prints each bus against
the hub's run (channel: the hub, which always runs).`;

/** Options of one run, from the command line. */
interface BenchOptions {
  quick: boolean;
  scenarios: Scenario[];
  out: string;
  ports: Ports;
  idleSettleSeconds: number;
  /** Most seconds to wait for the system's memory to come back after the scenarios. */
  memorySettleSeconds: number;
  repeat: number;
  scale: number;
  pusherServer: "listen" | "deno";
  /** The hub's `--history`; "" for none. */
  history: string;
  /** Buses the scenarios also run on, besides the hub (`--buses`). */
  buses: BusKind[];
}

/** The JSON: with `--buses`, each bus's figures beside the hub's. */
type Report = BenchReport & { buses?: BusesReport };

/** Runs the benchmark; returns the exit code. */
export function main(args: string[] = Deno.args): Promise<number> {
  return programMain(args, {
    task: "bench",
    script: "bench/main.ts",
    description: DESCRIPTION,
    flags: FLAGS,
    options: benchOptions,
    run,
    print(report) {
      console.log(formatTable(report));
      const cpu = formatCpuByProcess(report);
      if (cpu) console.log(`\n${cpu}`);
      if (report.buses) console.log(`\n${formatBusTable(report.buses)}`);
      const warnings = formatWarnings(report);
      if (warnings) console.log(`\n${warnings}`);
      return 0;
    },
    failureCode: 1,
  });
}

function benchOptions(flags: FlagValues): BenchOptions {
  const quick = flags.quick === true;
  const scale = atLeastOne(intFlag(flags, "scale", 1), "scale");
  const all = scenarios(quick, scale);
  const wanted = stringFlag(flags, "scenarios")?.split(",").map((id) => id.trim()).filter(Boolean);
  const unknown = wanted?.filter((id) => !all.some((scenario) => scenario.id === id)) ?? [];
  if (unknown.length > 0) {
    throw new TypeError(`Invalid --scenarios: no scenario ${unknown.join(", ")}; pick from ${all.map((s) => s.id)}`);
  }
  const port = (name: keyof Ports) => portFlag(flags, name);
  const pusherServer = stringFlag(flags, "pusher-server") ?? "listen";
  if (pusherServer !== "listen" && pusherServer !== "deno") {
    throw new TypeError(`Invalid --pusher-server: listen or deno, got ${JSON.stringify(pusherServer)}`);
  }
  return {
    quick,
    scenarios: wanted ? all.filter((scenario) => wanted.includes(scenario.id)) : all,
    out: stringFlag(flags, "out") ?? `bench/results/${new Date().toISOString()}.json`,
    ports: { hub: port("hub"), pusher: port("pusher"), publisher: port("publisher"), baseline: port("baseline") },
    idleSettleSeconds: intFlag(flags, "idle-settle", 0),
    memorySettleSeconds: intFlag(flags, "memory-settle", quick ? 2 : 30),
    repeat: atLeastOne(intFlag(flags, "repeat", 1), "repeat"),
    scale,
    pusherServer,
    history: stringFlag(flags, "history")?.trim() ?? "",
    buses: parseBuses(stringFlag(flags, "buses")),
  };
}

function atLeastOne(value: number, flag: string): number {
  if (value < 1) throw new TypeError(`Invalid --${flag}: at least 1`);
  return value;
}

async function run(options: BenchOptions, signal: AbortSignal): Promise<Report> {
  const startedAt = new Date().toISOString();
  const machine = await describeMachine();
  const ticksPerSecond = await clockTicksPerSecond();
  progress(formatMachine(machine));
  const { pusherServer, history } = options;
  await using services = await startServices(options.ports, { signal, pusherServer, history });
  // Issue 19: the PHP original, in the same run, when its scripts, sources and php are here.
  await using originalStack = new AsyncDisposableStack();
  const peer = await startOriginal({ signal });
  const original = "services" in peer ? originalStack.use(peer.services).original : null;
  const originalRun = "services" in peer ? { ran: true } : { ran: false, reason: peer.reason };
  progress(
    original
      ? `original: started on ws ${original.wsPort}, http ${original.publishPort}`
      : `original not run: ${originalRun.reason}`,
  );
  // Scenarios that need the hub to keep other history than --history says,
  // or clients that are users (a pusher with a token secret, which lets in
  // no client without a token), get a second system, on free ports, started
  // when the first of them runs: one per history and token secret.
  await using others = new AsyncDisposableStack();
  // Made for this run: it guards nothing but the run's own loopback pushers.
  const userTokenSecret = crypto.randomUUID();
  const systemNeeds = (scenario: Scenario) => {
    const subjects = scenario.history ?? history;
    const tokenSecret = scenario.users ? userTokenSecret : undefined;
    return { subjects, tokenSecret, key: `${subjects} ${tokenSecret === undefined ? "anyone" : "users"}` };
  };
  const systems = new Map<string, Target>([[`${history} anyone`, services.system]]);
  const systemFor = async (scenario: Scenario): Promise<Target> => {
    const { subjects, tokenSecret, key } = systemNeeds(scenario);
    let target = systems.get(key);
    if (target === undefined) {
      progress(
        `starting a second system whose hub keeps ${subjects === "" ? "no history" : `history of ${subjects}`}` +
          (tokenSecret === undefined ? "" : " and whose pusher lets in clients with a token only (--token-secret)"),
      );
      const started = others.use(
        await startSystem({ hub: 0, pusher: 0, publisher: 0 }, {
          signal,
          pusherServer,
          history: subjects,
          ...(tokenSecret === undefined ? {} : { tokenSecret }),
        }),
      );
      target = started.system;
      systems.set(key, target);
      if (!options.quick) await warmUp(context, [target]);
    }
    return target;
  };
  // --buses: their servers now, so that a missing one stops the run before
  // anything is measured; pusher and publisher on each when first needed,
  // one pair per history, as for the hub.
  await using busStack = new AsyncDisposableStack();
  const busServers: BusServer[] = [];
  for (const kind of options.buses) {
    const server = busStack.use(await startBusServer(kind, { signal }));
    busServers.push(server);
    progress(`${kind}: started on ${server.url}`);
  }
  const busSystems = new Map<string, BusSystem>();
  const warmedBuses = new Set<BusSystem>();
  const busTargetFor = async (server: BusServer, scenario: Scenario): Promise<Target> => {
    const { subjects, tokenSecret, key: needs } = systemNeeds(scenario);
    const key = `${server.kind} ${needs}`;
    let started = busSystems.get(key);
    if (started === undefined) {
      progress(
        `starting pusher and publisher on ${server.url}${subjects === "" ? "" : ` with --history ${subjects}`}` +
          (tokenSecret === undefined ? "" : " with --token-secret"),
      );
      started = busStack.use(
        await startBusSystem(server, {
          signal,
          pusherServer,
          history: subjects,
          ...(tokenSecret === undefined ? {} : { tokenSecret }),
        }),
      );
      busSystems.set(key, started);
    }
    // Warmed up as the hub's system is, but not before the idle scenario's memory is read.
    if (!options.quick && scenario.mode !== "idle" && !warmedBuses.has(started)) {
      warmedBuses.add(started);
      await warmUp(context, [started.target]);
    }
    return started.target;
  };
  const context: RunContext = {
    assertRunning() {
      services.assertRunning();
      if ("services" in peer) peer.services.assertRunning();
      for (const system of busSystems.values()) system.assertRunning();
    },
    signal,
    quick: options.quick,
    ticksPerSecond,
    idleSettleSeconds: options.idleSettleSeconds,
  };
  // Issue 19: the system idle after start, then its floor, before any load.
  const systemPids = services.system.cpuProcesses.map((service) => service.pid);
  const systemNames = services.system.cpuProcesses.map((service) => service.name);
  const sampleSystem = async (): Promise<ServiceRss> => {
    const each = await rssKiBEach(systemPids);
    return Object.fromEntries(systemNames.map((name, i) => [name, each[i]!]));
  };
  const idleSamples = options.quick ? 3 : IDLE_SAMPLES;
  const idleRss = await lowestOf(idleSamples, sampleSystem);
  const workers = pusherWorkers(services.system);
  const floorRss = await measureFloor(workers, idleSamples, signal);
  progress(`memory: idle after start ${mib(totalKiB(idleRss))} MiB, floor ${mib(totalKiB(floorRss))} MiB`);
  const reports = new Map<string, ScenarioReport>();
  const busReports = new Map<string, BusScenarioReport>();
  const runScenario = async (scenario: Scenario, times: number) => {
    const pairs: ScenarioReport[] = [];
    const busRuns: BusRun[] = [];
    for (let i = 0; i < times; i++) {
      const system = await measure(context, scenario, await systemFor(scenario));
      const baseline = scenario.withBaseline === false ? null : await measure(context, scenario, services.baseline);
      const theirs = original && scenario.withOriginal !== false ? await measure(context, scenario, original) : null;
      pairs.push(scenarioReport(scenario, { system, baseline, original: theirs }));
      const buses: BusRun["buses"] = {};
      for (const server of busServers) {
        buses[server.kind] = await measure(context, scenario, await busTargetFor(server, scenario));
      }
      busRuns.push({ hub: system, buses });
    }
    reports.set(scenario.id, times === 1 ? pairs[0]! : medianPair(pairs));
    if (busServers.length > 0) busReports.set(scenario.id, busScenarioReport(scenario, busRuns));
  };
  // Memory first, on processes that have not held thousands of sockets yet:
  // the heap a busy scenario frees stays mapped, and new connections reusing
  // it would look free. For the same reason it runs once, whatever --repeat says.
  for (const scenario of options.scenarios) if (scenario.mode === "idle") await runScenario(scenario, 1);
  if (!options.quick) {
    await warmUp(context, [services.system, services.baseline, ...(original ? [original] : [])]);
  }
  for (const scenario of options.scenarios) {
    if (scenario.mode !== "idle") await runScenario(scenario, options.repeat);
  }
  // Memory goes back: the clients are gone; sample until the total is within
  // its target over the idle figure, or the time is up, and keep the lowest.
  const afterBound = MEMORY_GOALS.find((goal) => goal.of === "afterKiB")!.bound * totalKiB(idleRss);
  let afterRss = await sampleSystem();
  for (let second = 0; second < options.memorySettleSeconds && totalKiB(afterRss) > afterBound; second++) {
    await sleep(1000);
    const sample = await sampleSystem();
    if (totalKiB(sample) < totalKiB(afterRss)) afterRss = sample;
  }
  progress(`memory: idle after the benchmark ${mib(totalKiB(afterRss))} MiB`);
  const memory = memoryReport({
    workers,
    floorKiB: floorRss,
    idleKiB: idleRss,
    afterKiB: afterRss,
    settleSeconds: options.memorySettleSeconds,
  });
  const ordered = options.scenarios.map((scenario) => reports.get(scenario.id)!);
  const comparisons = compareScenarios(ordered);
  return {
    startedAt,
    finishedAt: new Date().toISOString(),
    machine,
    quick: options.quick,
    repeat: options.repeat,
    scale: options.scale,
    pusherServer: options.pusherServer,
    history,
    scenarios: ordered,
    comparisons,
    goals: goalSummary(ordered, comparisons, memory),
    original: originalRun,
    memory,
    ...(busServers.length === 0 ? {} : {
      buses: { buses: options.buses, scenarios: options.scenarios.map((scenario) => busReports.get(scenario.id)!) },
    }),
  };
}

/** The sample of the `count` taken a second apart whose total is lowest. */
/**
 * Samples of idle memory, one a second, the lowest kept: 10, so that the
 * services have settled. Each gives back the garbage of its start once it
 * has been idle for two looks of `shared/idle_gc.ts`, 2 s apart (4-6 s after
 * it starts); the floor's bare processes are sampled as long.
 */
const IDLE_SAMPLES = 10;

async function lowestOf(count: number, sample: () => Promise<ServiceRss>): Promise<ServiceRss> {
  let lowest = await sample();
  for (let i = 1; i < count; i++) {
    await sleep(1000);
    const next = await sample();
    if (totalKiB(next) < totalKiB(lowest)) lowest = next;
  }
  return lowest;
}

/**
 * The system's memory floor: a bare Deno process listening per service, the
 * pusher's with `workers` bare workers, sampled as the system is, then stopped.
 */
async function measureFloor(workers: number, samples: number, signal: AbortSignal): Promise<ServiceRss> {
  await using floor = await startFloor(workers, { signal });
  const pids = floor.processes.map((service) => service.pid);
  return await lowestOf(samples, async () => {
    const each = await rssKiBEach(pids);
    return Object.fromEntries(floor.processes.map((service, i) => [service.name.replace(/ floor$/, ""), each[i]!]));
  });
}

function mib(kib: number): string {
  return (kib / 1024).toFixed(1);
}

interface RunContext {
  /** @throws {Error} when a service of the run is gone. */
  assertRunning(): void;
  signal: AbortSignal;
  quick: boolean;
  ticksPerSecond: number;
  idleSettleSeconds: number;
}

/** A short unrecorded run of each kind on each target, so that none is measured cold. */
async function warmUp(context: RunContext, targets: readonly Target[]): Promise<void> {
  const runs: Scenario[] = [
    { mode: "broadcast", clients: 100, messages: 200, channels: 0 },
    { mode: "targeted", clients: 100, messages: 2000, channels: 0 },
    { mode: "channels", clients: 100, messages: 2000, channels: 10 },
    { mode: "channels", clients: 100, messages: 2000, channels: 10, batch: 10 },
    { mode: "targeted", clients: 100, messages: 5000, channels: 0, batch: 100 },
  ].map((run) => ({ ...run, id: "warm-up", title: "", rate: null, rounds: 0, stresses: "" }) as Scenario);
  for (const target of targets) {
    for (const scenario of runs) {
      // The original has no channels and no batch API.
      if (target.name === "original" && (scenario.mode === "channels" || scenario.batch)) continue;
      // With tokens, clients are users, whose tokens name no channel to subscribe to.
      if (target.tokenSecret !== undefined && scenario.mode === "channels") continue;
      await measure(context, scenario, target);
    }
  }
}

/** Runs one scenario against one target, sampling CPU and memory around it. */
async function measure(context: RunContext, scenario: Scenario, target: Target): Promise<Measurement> {
  context.assertRunning();
  const cpuPids = target.cpuProcesses.map((service) => service.pid);
  const rssPids = target.rssProcesses.map((service) => service.pid);
  for (const service of target.cpuProcesses) service.takeWarnings();
  const spec: LoadSpec = {
    hostname: "127.0.0.1",
    wsPort: target.wsPort,
    publishPort: target.publishPort,
    mode: scenario.mode,
    clients: scenario.clients,
    messages: scenario.messages,
    rate: scenario.rate,
    batch: scenario.batch ?? 0,
    // A pusher with a token secret lets in clients with a token only: they connect as users.
    ...(target.tokenSecret === undefined ? {} : { userTokenSecret: target.tokenSecret }),
    channels: scenario.channels,
    rounds: scenario.rounds,
    contentBytes: CONTENT_BYTES,
    connectBatch: 200,
    // An HTTP/1.1 server answers a connection's pipelined requests one at a
    // time, so a server that answers after a round trip (the publisher waits
    // for the hub's ack) could have at most 4 publishes in flight over 4
    // connections. 64 connections with 2 pipelined each offer concurrency as
    // a publisher's connection pool would; the baseline is barely affected.
    publishConnections: 64,
    pipeline: 2,
    quietMs: 5000,
    readBufferBytes: scenario.clients > 2000 ? 4096 : 16 * 1024,
  };
  const started = performance.now();
  // Anonymous memory only: the first connections also bring in pages of the
  // deno binary's code, which are not memory a connection holds.
  const rss = () => rssKiB(rssPids, "RssAnon");
  const rssBefore = await rss();
  const connectTicksBefore = await cpuTicks(cpuPids);
  let connectTicks = 0;
  let rssAfter = rssBefore;
  let rssSettled: number | null = null;
  // Ticks at the start, then used while publishing: each service, and the generator.
  let serviceTicks = cpuPids.map(() => 0);
  let loadGenTicks = 0;
  // (k): the hub's memory, with the history it keeps and the storm it serves.
  const hub = scenario.mode === "recovery" ? target.cpuProcesses.find((service) => service.name === "hub") : undefined;
  let hubRssBefore: number | null = null;
  let hubRssAfter: number | null = null;
  const result = await runLoadProcess(spec, {
    signal: context.signal,
    // The default five minutes, plus the idle wait.
    timeout: 300_000 + (scenario.mode === "idle" ? context.idleSettleSeconds * 1000 : 0),
    async onConnected(pid) {
      connectTicks = (await cpuTicks(cpuPids)) - connectTicksBefore;
      if (hub) hubRssBefore = await rssKiB([hub.pid], "VmRSS");
      // Let the servers finish the greetings' writes before memory is read.
      await sleep(250);
      rssAfter = await rss();
      if (scenario.mode === "idle" && context.idleSettleSeconds > 0) {
        // The runtime frees the handshakes' garbage when it gets round to a
        // full collection, at no fixed time (an idle V8 may run none): keep
        // the lowest sample.
        rssSettled = rssAfter;
        for (let second = 0; second < context.idleSettleSeconds; second++) {
          await sleep(1000);
          rssSettled = Math.min(rssSettled, await rss());
        }
      }
      [serviceTicks, loadGenTicks] = await Promise.all([cpuTicksEach(cpuPids), cpuTicks([pid])]);
    },
    async onResult(pid) {
      if (hub) hubRssAfter = await rssKiB([hub.pid], "VmRSS");
      const [services, loadGen] = await Promise.all([cpuTicksEach(cpuPids), cpuTicks([pid])]);
      serviceTicks = services.map((ticks, i) => ticks - serviceTicks[i]!);
      loadGenTicks = loadGen - loadGenTicks;
    },
  });
  // Give the servers a moment to see the clients go before the next run.
  await sleep(context.quick ? 200 : 1000);
  context.assertRunning();
  const usPerTick = 1e6 / context.ticksPerSecond;
  const perDelivery = (ticks: number) =>
    result.deliveries > 0 ? round((ticks * usPerTick) / result.deliveries, 3) : null;
  const warnings = target.cpuProcesses.map((service) => service.takeWarnings());
  const perClient = (total: number, digits: number) =>
    result.clients > 0 ? round(total / result.clients, digits) : null;
  const totalTicks = serviceTicks.reduce((sum, ticks) => sum + ticks, 0);
  const { type: _, ...load } = result;
  const measurement: Measurement = {
    ...load,
    cpuUsPerDelivery: perDelivery(totalTicks),
    serviceCpuMs: round((totalTicks * usPerTick) / 1000, 1),
    serviceCpuMsByProcess: Object.fromEntries(
      target.cpuProcesses.map((service, i) => [service.name, round((serviceTicks[i]! * usPerTick) / 1000, 1)]),
    ),
    loadGenCpuUsPerDelivery: perDelivery(loadGenTicks),
    connectCpuUsPerConnection: perClient(connectTicks * usPerTick, 1),
    rssBeforeKiB: rssBefore,
    rssAfterKiB: rssAfter,
    rssKiBPerConnection: perClient(rssAfter - rssBefore, 2),
    rssKiBPerConnectionSettled: rssSettled === null ? null : perClient(rssSettled - rssBefore, 2),
    serviceWarnings: {
      count: warnings.reduce((sum, w) => sum + w.count, 0),
      sample: warnings.flatMap((w) => w.sample).slice(0, 5),
    },
    ...(hub ? { hubRssBeforeKiB: hubRssBefore, hubRssAfterKiB: hubRssAfter } : {}),
  };
  progress(
    `(${scenario.id}) ${target.name.padEnd(8)} ${scenario.clients} clients: ` +
      (scenario.mode === "idle"
        ? `${measurement.rssKiBPerConnection} KiB/connection` +
          (rssSettled === null ? "" : `, ${measurement.rssKiBPerConnectionSettled} settled`)
        : scenario.mode === "recovery"
        ? `full recovery in ${result.recoveryMs ?? "-"} ms (reconnected in ${result.reconnectMs ?? "-"} ms), ` +
          `lost ${result.lost}, not recovered ${result.notRecovered ?? 0}, hub RSS ${hubRssBefore} → ${hubRssAfter} KiB`
        : `${Math.round(result.deliveriesPerSec ?? 0)} deliveries/s, ${Math.round(result.publishesPerSec ?? 0)} ` +
          `publishes/s, p99 ${((result.latencyUs?.p99 ?? 0) / 1000).toFixed(1)} ms, lost ${result.lost}, ` +
          `failed ${result.failedPublishes}` +
          (scenario.mode === "churn"
            ? `, ${result.commandsPerSec ?? 0} commands/s, ${result.failedCommands} failed commands`
            : "")) +
      ` (${((performance.now() - started) / 1000).toFixed(1)} s)`,
  );
  return measurement;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

if (import.meta.main) Deno.exit(await main());
