/**
 * The benchmark's scenarios, at full size and at `--quick` size, and the
 * targets the push system is meant to hit against the baseline.
 *
 * @module
 */

/** One load shape. */
export interface Scenario {
  /** Letter from the issue: a … g. */
  id: string;
  /** One line for the table. */
  title: string;
  /** Broadcasts, targeted sends (round-robin over the clients), or idle connections. */
  mode: "broadcast" | "targeted" | "idle";
  /** WebSocket clients. */
  clients: number;
  /** Publish requests. */
  messages: number;
  /** Publishes per second on a timer; null: as fast as publishes are accepted. */
  rate: number | null;
  /** What the scenario puts under stress, for readers of the report. */
  stresses: string;
}

/** The metrics a scenario report holds, per target. */
export type MetricKey =
  | "deliveriesPerSec"
  | "publishesPerSec"
  | "latencyP50Ms"
  | "latencyP99Ms"
  | "latencyMaxMs"
  | "cpuUsPerDelivery"
  | "loadGenCpuUsPerDelivery"
  | "connectCpuUsPerConnection"
  | "rssKiBPerConnection"
  | "rssKiBPerConnectionSettled"
  | "lost"
  | "failedPublishes";

/** A target: the system's value, or its ratio to the baseline, against a bound. */
export interface Goal {
  scenario: string;
  metric: MetricKey;
  /** `ratio`: system / baseline; `absolute`: the system's own value. */
  kind: "ratio" | "absolute";
  /** `>=`: at least `bound`; `<=`: at most. */
  op: ">=" | "<=";
  bound: number;
}

/**
 * Builds the scenarios, full size or tiny (`--quick`, a smoke test that runs
 * in seconds). `scale` multiplies the publishes of the scenarios that run as
 * fast as publishes are accepted (a, b, d, f): at the sizes they last
 * a fraction of a second, so their figures include the start of the run; a
 * larger scale measures the steady state.
 */
export function scenarios(quick = false, scale = 1): Scenario[] {
  const q = <T>(full: T, small: T): T => (quick ? small : full);
  const burst = (full: number, small: number) => q(full, small) * scale;
  const fixedSeconds = q(5, 1);
  return [
    {
      id: "a",
      title: `${q(100, 20)} clients × ${burst(500, 20)} broadcasts, as fast as accepted`,
      mode: "broadcast",
      clients: q(100, 20),
      messages: burst(500, 20),
      rate: null,
      stresses: "the publish path (HTTP, hub ack) more than fan-out",
    },
    {
      id: "b",
      title: `${q(1000, 20)} clients × ${burst(200, 20)} broadcasts, as fast as accepted`,
      mode: "broadcast",
      clients: q(1000, 20),
      messages: burst(200, 20),
      rate: null,
      stresses: "fan-out: one event to many sockets",
    },
    {
      id: "c",
      title: `${q(1000, 20)} clients, 50 broadcasts/s for ${fixedSeconds} s`,
      mode: "broadcast",
      clients: q(1000, 20),
      messages: 50 * fixedSeconds,
      rate: 50,
      stresses: "broadcast latency below saturation",
    },
    {
      id: "d",
      title: `${q(100, 20)} clients × ${burst(5000, 200)} targeted sends, as fast as accepted`,
      mode: "targeted",
      clients: q(100, 20),
      messages: burst(5000, 200),
      rate: null,
      stresses: "per-publish overhead: HTTP parse, hub round trip, one send",
    },
    {
      id: "e",
      title: `${q(100, 20)} clients, ${q(1000, 200)} targeted sends/s for ${fixedSeconds} s`,
      mode: "targeted",
      clients: q(100, 20),
      messages: q(1000, 200) * fixedSeconds,
      rate: q(1000, 200),
      stresses: "targeted latency below saturation",
    },
    {
      id: "f",
      title: `${q(5000, 50)} clients × ${burst(20, 10)} broadcasts, as fast as accepted`,
      mode: "broadcast",
      clients: q(5000, 50),
      messages: burst(20, 10),
      rate: null,
      stresses: "fan-out to many sockets, per-socket write cost",
    },
    {
      id: "g",
      title: `${q(10_000, 500)} idle connections`,
      mode: "idle",
      clients: q(10_000, 500),
      messages: 0,
      rate: null,
      stresses: "memory per connection",
    },
  ];
}

/** What the system is meant to hit. A miss is reported, never a failed run. */
export const GOALS: readonly Goal[] = [
  { scenario: "b", metric: "deliveriesPerSec", kind: "ratio", op: ">=", bound: 4 },
  { scenario: "b", metric: "cpuUsPerDelivery", kind: "ratio", op: "<=", bound: 0.3 },
  { scenario: "f", metric: "deliveriesPerSec", kind: "ratio", op: ">=", bound: 3 },
  { scenario: "c", metric: "latencyP99Ms", kind: "ratio", op: "<=", bound: 1 },
  { scenario: "d", metric: "publishesPerSec", kind: "ratio", op: ">=", bound: 1 },
  { scenario: "e", metric: "latencyP99Ms", kind: "ratio", op: "<=", bound: 2 },
  { scenario: "g", metric: "rssKiBPerConnection", kind: "absolute", op: "<=", bound: 6 },
  // Zero loss everywhere a message is sent.
  ...["a", "b", "c", "d", "e", "f"].flatMap((scenario): Goal[] => [
    { scenario, metric: "lost", kind: "absolute", op: "<=", bound: 0 },
    { scenario, metric: "failedPublishes", kind: "absolute", op: "<=", bound: 0 },
  ]),
];
