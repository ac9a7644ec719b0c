/**
 * Every service's `/metrics` against Prometheus' naming rules
 * (https://prometheus.io/docs/practices/naming/), read from the rendered
 * text each service serves, built from its own registry.
 */

import assert from "node:assert/strict";
import { Registry, renderPrometheus } from "../shared/metrics.ts";
import { registerPusherMetrics } from "../pusher/pusher_metrics.ts";
import { PublisherMetrics } from "../publisher/metrics.ts";
import { DISCONNECT_REASONS, metricsOf } from "../channel/metrics.ts";

function pusherText(): string {
  const registry = new Registry();
  const counters = registerPusherMetrics(registry, {
    connections: () => 3,
    busConnected: () => true,
    busReconnects: () => 2,
    channels: () => 1,
    users: () => 1,
  });
  counters.accepted.inc();
  counters.rejected.inc(1, "origin");
  counters.disconnects.inc(1, "slow");
  counters.delivered.inc(1, "broadcast");
  counters.dropped.inc(1, "bad_shape");
  counters.clientErrors.inc(1, "403");
  return renderPrometheus(registry.snapshot());
}

function publisherText(): string {
  const metrics = new PublisherMetrics({ connected: true, reconnects: 1 });
  metrics.countRequest(200);
  metrics.countApiCall("publish", 200);
  metrics.countPublish("broadcast", 2, 0.003);
  return metrics.render();
}

/** The hub's metrics after some traffic, or before any when `fresh`. */
function channelText(fresh = false): string {
  const n = (value: number) => fresh ? 0 : value;
  const disconnects = Object.fromEntries(DISCONNECT_REASONS.map((reason) => [reason, n(1)])) as Record<
    (typeof DISCONNECT_REASONS)[number],
    number
  >;
  return renderPrometheus(metricsOf({
    connections: n(1),
    publishes: n(2),
    deliveries: n(3),
    enqueues: n(4),
    enqueuesRefused: n(1),
    disconnects,
    subjects: n(1),
    queues: n(1),
    queuedMessages: n(1),
    queuedBytes: n(10),
    publishesWaiting: 0,
  }));
}

/**
 * Counters labelled by what happened (a reason, a status code, a method):
 * their series come with the first of each, as no list of them is kept.
 */
const LABELLED_BY_EVENTS = new Set([
  "publisher_requests_total",
  "publisher_api_calls_total",
]);

/** Each service's metrics before anything happened: no connection, no request, no publish. */
const FRESH = {
  pusher(): string {
    const registry = new Registry();
    registerPusherMetrics(registry, {
      connections: () => 0,
      busConnected: () => true,
      busReconnects: () => 0,
      channels: () => 0,
      users: () => 0,
    });
    return renderPrometheus(registry.snapshot());
  },
  publisher: (): string => new PublisherMetrics({ connected: true, reconnects: 0 }).render(),
  channel: (): string => channelText(true),
};

interface Family {
  type: string;
  samples: { name: string; labels: Record<string, string>; value: number }[];
}

/** The metric families of a text exposition, by name, each with its samples. */
function parse(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  let current: Family | undefined;
  for (const line of text.split("\n").filter(Boolean)) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      assert.ok(!families.has(type[1]!), `${type[1]} declared once`);
      families.set(type[1]!, current = { type: type[2]!, samples: [] });
      continue;
    }
    if (line.startsWith("#")) continue;
    const sample = /^([^{ ]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(sample && current, `a sample line after its TYPE: ${line}`);
    const labels = Object.fromEntries(
      [...(sample[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1]!, m[2]!]),
    );
    current.samples.push({ name: sample[1]!, labels, value: Number(sample[3]) });
  }
  return families;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
/** Units Prometheus wants as their base unit instead. */
const NON_BASE_UNITS =
  /_(ms|millis|milliseconds|us|microseconds|ns|nanoseconds|minutes|hours|kb|kib|mb|mib|gb|percent)(_|$)/;
/** Words that measure something with a unit: the name must end in it. */
const MEASURES = /(^|_)(duration|latency|elapsed|uptime|size|memory|age)(_|$)/;

for (
  const [service, text] of [["pusher", pusherText], ["publisher", publisherText], ["channel", channelText]] as const
) {
  Deno.test(`${service} metrics follow Prometheus' naming rules: _total on counters only, units as suffixes, histogram series`, () => {
    const families = parse(text());
    assert.ok(families.size > 0);
    for (const [name, family] of families) {
      assert.match(name, NAME);
      assert.ok(["counter", "gauge", "histogram"].includes(family.type), `${name}: type ${family.type}`);
      assert.equal(
        name.endsWith("_total"),
        family.type === "counter",
        `${name} (${family.type}): _total iff a counter`,
      );
      assert.doesNotMatch(name, NON_BASE_UNITS, `${name}: base units (seconds, bytes)`);
      const unitless = name.replace(/_total$/, "");
      // A unit is the last word of the name, before _total.
      assert.doesNotMatch(unitless, /_(seconds|bytes)_/, `${name}: its unit last`);
      if (MEASURES.test(unitless)) assert.match(unitless, /_(seconds|bytes)$/, `${name}: says its unit`);
      assert.doesNotMatch(name, /_(bucket|sum|count)$/, `${name}: a suffix reserved for histograms' series`);
      for (const sample of family.samples) {
        for (const label of Object.keys(sample.labels)) {
          assert.match(label, LABEL, `${name}: label ${label}`);
          assert.ok(!label.startsWith("__"), `${name}: label ${label} is reserved`);
        }
      }
      if (family.type !== "histogram") {
        assert.ok(family.samples.every((s) => s.name === name && !("le" in s.labels)), `${name}: samples named as it`);
        continue;
      }
      const buckets = family.samples.filter((s) => s.name === `${name}_bucket`);
      const sum = family.samples.filter((s) => s.name === `${name}_sum`);
      const count = family.samples.filter((s) => s.name === `${name}_count`);
      assert.equal(buckets.length + sum.length + count.length, family.samples.length, `${name}: only its three series`);
      assert.ok(buckets.length > 1 && sum.length === 1 && count.length === 1, `${name}: buckets, a sum and a count`);
      assert.ok(buckets.every((b) => "le" in b.labels), `${name}: every bucket has le`);
      assert.equal(buckets.at(-1)!.labels.le, "+Inf", `${name}: the last bucket is +Inf`);
      assert.equal(buckets.at(-1)!.value, count[0]!.value, `${name}: +Inf counts every observation`);
      buckets.slice(1).forEach((b, i) => assert.ok(b.value >= buckets[i]!.value, `${name}: cumulative buckets`));
    }
  });
}

for (const [service, text] of Object.entries(FRESH)) {
  Deno.test(`${service} metrics have their samples from the start, at 0: a dashboard shows 0 before the first event, not "no data"`, () => {
    for (const [name, family] of parse(text())) {
      if (LABELLED_BY_EVENTS.has(name)) continue;
      assert.ok(family.samples.length > 0, `${name} (${family.type}) has no sample before its first event`);
      if (family.type === "counter" || family.type === "histogram") {
        for (const sample of family.samples) assert.equal(sample.value, 0, `${sample.name} starts at 0`);
      }
    }
  });
}

/** The `reason`s README gives a pusher counter: in the table `section` heads, or in the parentheses after `name{reason}`. */
function documentedReasons(readme: string, where: { section: string } | { name: string }): string[] {
  if ("section" in where) {
    const table = readme.slice(readme.indexOf(where.section));
    const rows = table.slice(0, table.indexOf("\n\n", table.indexOf("| reason")));
    return [...rows.matchAll(/^\| `(\w+)` /gm)].map((match) => match[1]!);
  }
  const after = readme.slice(readme.indexOf(`\`${where.name}{reason}\``));
  return [...after.slice(after.indexOf("("), after.indexOf(")")).matchAll(/`(\w+)`/g)].map((match) => match[1]!);
}

for (
  const [name, where] of [
    ["pusher_disconnects_total", { section: "#### Why a connection closed" }],
    ["pusher_rejected_total", { name: "pusher_rejected_total" }],
    ["pusher_drops_total", { name: "pusher_drops_total" }],
  ] as const
) {
  Deno.test(`${name} starts at 0 for every reason README names, and no other`, async () => {
    const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
    const documented = documentedReasons(readme, where);
    const fresh = parse(FRESH.pusher()).get(name)!.samples;
    assert.ok(documented.length >= 2, `README's reasons: ${documented}`);
    assert.ok(fresh.every((sample) => sample.value === 0), `${name} starts at 0`);
    assert.deepEqual(fresh.map((sample) => sample.labels.reason).toSorted(), documented.toSorted());
  });
}
