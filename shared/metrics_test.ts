import assert from "node:assert/strict";
import { mergeSnapshots, Registry, renderPrometheus } from "./metrics.ts";

Deno.test("metrics render counters, gauges and histograms in the Prometheus text format", () => {
  const registry = new Registry();
  registry.counter({ name: "drops_total", help: "Dropped messages", labels: ["reason"] }).inc(2, "slow");
  registry.gauge({ name: "connections", help: "Open connections" }).collect(() => 7);
  const latency = registry.histogram({ name: "latency_seconds", help: "Publish latency", buckets: [0.01, 0.1] });
  latency.observe(0.005);
  latency.observe(0.05);
  latency.observe(3);
  assert.equal(
    renderPrometheus(registry.snapshot()),
    [
      "# HELP drops_total Dropped messages",
      "# TYPE drops_total counter",
      'drops_total{reason="slow"} 2',
      "# HELP connections Open connections",
      "# TYPE connections gauge",
      "connections 7",
      "# HELP latency_seconds Publish latency",
      "# TYPE latency_seconds histogram",
      'latency_seconds_bucket{le="0.01"} 1',
      'latency_seconds_bucket{le="0.1"} 2',
      'latency_seconds_bucket{le="+Inf"} 3',
      "latency_seconds_sum 3.055",
      "latency_seconds_count 3",
      "",
    ].join("\n"),
  );
});

Deno.test("a counter or histogram without labels renders 0 from the start; one with labels, the values it was given", () => {
  const registry = new Registry();
  registry.counter({ name: "connections_total", help: "Connections" });
  registry.counter({ name: "drops_total", help: "Drops", labels: ["reason"] });
  registry.histogram({ name: "latency_seconds", help: "Latency", buckets: [0.1] });
  assert.equal(
    renderPrometheus(registry.snapshot()),
    [
      "# HELP connections_total Connections",
      "# TYPE connections_total counter",
      "connections_total 0",
      "# HELP drops_total Drops",
      "# TYPE drops_total counter",
      "# HELP latency_seconds Latency",
      "# TYPE latency_seconds histogram",
      'latency_seconds_bucket{le="0.1"} 0',
      'latency_seconds_bucket{le="+Inf"} 0',
      "latency_seconds_sum 0",
      "latency_seconds_count 0",
      "",
    ].join("\n"),
  );
});

Deno.test("metrics snapshots from several workers merge by summing", () => {
  const make = (drops: number, conns: number) => {
    const registry = new Registry();
    registry.counter({ name: "drops_total", help: "d", labels: ["reason"] }).inc(drops, "slow");
    registry.gauge({ name: "connections", help: "c" }).set(conns);
    registry.histogram({ name: "h", help: "h", buckets: [1] }).observe(0.5);
    return registry.snapshot();
  };
  const text = renderPrometheus(mergeSnapshots([make(1, 10), make(2, 5)]));
  assert.match(text, /^drops_total\{reason="slow"\} 3$/m);
  assert.match(text, /^connections 15$/m);
  assert.match(text, /^h_count 2$/m);
});

Deno.test("metrics escape label values and refuse the wrong number of labels", () => {
  const registry = new Registry();
  const counter = registry.counter({ name: "c", help: "c", labels: ["path"] });
  counter.inc(1, 'a"b\\c\n');
  assert.match(renderPrometheus(registry.snapshot()), /^c\{path="a\\"b\\\\c\\n"\} 1$/m);
  assert.throws(() => counter.inc(1), RangeError);
});

Deno.test("a counter read from a function renders that function's total at each snapshot", () => {
  const registry = new Registry();
  let reconnects = 0;
  registry.counter({ name: "reconnects_total", help: "Reconnects" }).collect(() => reconnects);
  assert.match(renderPrometheus(registry.snapshot()), /# TYPE reconnects_total counter\nreconnects_total 0\n/);
  reconnects = 3;
  assert.match(renderPrometheus(registry.snapshot()), /\nreconnects_total 3\n/);
});
