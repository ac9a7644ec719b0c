import assert from "node:assert/strict";
import { busFlag, busHistoryFlag, durationFlag, maxChannelLengthFlag, parseFlags } from "./cli.ts";
import { MAX_TIMER_MS } from "./duration.ts";

Deno.test("durationFlag reads a duration no longer than a timer waits, in milliseconds or seconds", () => {
  assert.equal(durationFlag({}, "ping-interval", 25_000), 25_000);
  assert.equal(durationFlag({ "ping-interval": "0" }, "ping-interval", 25_000), 0);
  assert.equal(durationFlag({ "ping-interval": String(MAX_TIMER_MS) }, "ping-interval", 25_000), MAX_TIMER_MS);
  assert.throws(
    () => durationFlag({ "ping-interval": String(MAX_TIMER_MS + 1) }, "ping-interval", 25_000),
    new TypeError(
      "Invalid --ping-interval: expected 0 to 2147483647 ms (the longest a timer waits), got 2147483648",
    ),
  );
  assert.equal(durationFlag({ "idle-timeout": "2147483" }, "idle-timeout", 30, { unit: "s" }), 2_147_483);
  assert.throws(
    () => durationFlag({ "idle-timeout": "2147484" }, "idle-timeout", 30, { unit: "s" }),
    /^TypeError: Invalid --idle-timeout: expected 0 to 2147483 s \(the longest a timer waits\), got 2147484$/,
  );
  assert.throws(() => durationFlag({ "publish-timeout": "0" }, "publish-timeout", 5000, { min: 1 }), /expected 1 to/);
  assert.throws(() => durationFlag({ "publish-timeout": "5s" }, "publish-timeout", 5000), /non-negative integer/);
});

Deno.test("busFlag reads --hub, else CHANNEL_HUB, else 127.0.0.1:2206, as a channel:// address", () => {
  const saved = Deno.env.get("CHANNEL_HUB");
  try {
    Deno.env.delete("CHANNEL_HUB");
    assert.equal(busFlag({}), "channel://127.0.0.1:2206");
    assert.equal(busFlag({ hub: "hub.internal:2300" }), "channel://hub.internal:2300");
    assert.equal(busFlag({ hub: "[::1]:2206" }), "channel://[::1]:2206");
    Deno.env.set("CHANNEL_HUB", "10.0.0.5:2206");
    assert.equal(busFlag({}), "channel://10.0.0.5:2206");
    assert.equal(busFlag({ hub: "127.0.0.1:1" }), "channel://127.0.0.1:1", "the flag wins over the variable");
    Deno.env.set("CHANNEL_HUB", "nope");
    assert.throws(() => busFlag({}), {
      name: "TypeError",
      message: 'Invalid CHANNEL_HUB: expected HOST:PORT with a port from 1 to 65535, got "nope"',
    });
    for (const bad of ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "::1:2206", "[::1]", "a b:1", "channel://h:1"]) {
      assert.throws(() => busFlag({ hub: bad }), {
        name: "TypeError",
        message: `Invalid --hub: expected HOST:PORT with a port from 1 to 65535, got ${JSON.stringify(bad)}`,
      });
    }
  } finally {
    if (saved === undefined) Deno.env.delete("CHANNEL_HUB");
    else Deno.env.set("CHANNEL_HUB", saved);
  }
});

Deno.test("busFlag reads --bus, else --hub, else CHANNEL_BUS, else CHANNEL_HUB, and refuses --bus with --hub", () => {
  const saved = { bus: Deno.env.get("CHANNEL_BUS"), hub: Deno.env.get("CHANNEL_HUB") };
  try {
    Deno.env.delete("CHANNEL_HUB");
    Deno.env.set("CHANNEL_BUS", "nats://n1:4222,n2:4222");
    assert.equal(busFlag({}), "nats://n1:4222,n2:4222");
    assert.equal(busFlag({ hub: "h:1" }), "channel://h:1", "--hub wins over the variable");
    assert.equal(busFlag({ bus: "tls://n1:4222" }), "tls://n1:4222");
    Deno.env.delete("CHANNEL_BUS");
    assert.equal(busFlag({ bus: "channel://[::1]:2206" }), "channel://[::1]:2206");
    assert.throws(() => busFlag({ bus: "nats://a:1", hub: "h:1" }), {
      name: "TypeError",
      message: "Invalid --bus: give --bus URL or --hub HOST:PORT, not both",
    });
    assert.throws(() => busFlag({ bus: "amqp://h:1" }), {
      name: "TypeError",
      message:
        'Invalid --bus: "amqp://h:1": unknown scheme "amqp" (schemes: channel://, nats://, tls://, redis://, rediss://)',
    });
    Deno.env.set("CHANNEL_BUS", "nats://");
    assert.throws(() => busFlag({}), /^TypeError: Invalid CHANNEL_BUS: "nats:\/\/": expected nats:\/\/HOST:PORT/);
  } finally {
    for (const [name, value] of [["CHANNEL_BUS", saved.bus], ["CHANNEL_HUB", saved.hub]] as const) {
      if (value === undefined) Deno.env.delete(name);
      else Deno.env.set(name, value);
    }
  }
});

Deno.test("busHistoryFlag reads --history* for NATS and Redis, refuses them for the hub, and a total in bytes for Redis", () => {
  assert.equal(busHistoryFlag({}, "nats://n:4222"), undefined);
  assert.deepEqual(busHistoryFlag({ history: "channel.*, news" }, "nats://n:4222"), {
    subjects: ["channel.*", "news"],
    size: 100,
    ttlMs: 300_000,
    totalBytes: 64 * 1024 * 1024,
  });
  assert.deepEqual(
    busHistoryFlag(
      { history: "channel.*", "history-size": "5", "history-ttl": "60", "history-total-bytes": "1048576" },
      "tls://n:4222",
    ),
    { subjects: ["channel.*"], size: 5, ttlMs: 60_000, totalBytes: 1_048_576 },
  );
  // Redis keeps no stream of ours to bound: its own maxmemory does.
  assert.deepEqual(busHistoryFlag({ history: "channel.*" }, "redis://r:6379"), {
    subjects: ["channel.*"],
    size: 100,
    ttlMs: 300_000,
  });
  assert.throws(
    () => busHistoryFlag({ history: "channel.*", "history-total-bytes": "1048576" }, "redis://r:6379"),
    /^TypeError: Invalid --history-total-bytes: Redis bounds what it keeps itself: run it with maxmemory/,
  );
  assert.throws(
    () => busHistoryFlag({ history: "channel.*", "history-total-bytes": "0" }, "nats://n:4222"),
    /^TypeError: Invalid --history-total-bytes: at least 1, got 0$/,
  );
  assert.throws(() => busHistoryFlag({ history: "channel.*" }, "channel://127.0.0.1:2206"), {
    name: "TypeError",
    message:
      "Invalid --history: the hub keeps history itself: give --history to the hub (deno task channel), not to the pusher or publisher",
  });
  assert.throws(
    () => busHistoryFlag({ "history-size": "5" }, "nats://n:4222"),
    /^TypeError: Invalid --history: expected subjects/,
  );
  assert.throws(
    () => busHistoryFlag({ history: "channel.chat*" }, "nats://n:4222"),
    /^TypeError: Invalid --history: Invalid history pattern "channel.chat\*" for NATS: a prefix must end at a dot/,
  );
  assert.throws(
    () => busHistoryFlag({ history: "a", "history-size": "0" }, "nats://n:4222"),
    /^TypeError: Invalid --history-size: at least 1, got 0$/,
  );
});

Deno.test("maxChannelLengthFlag takes 1 to 248, the longest name the bus carries, and 248 by default", () => {
  assert.equal(maxChannelLengthFlag({}), 248);
  assert.equal(maxChannelLengthFlag({ "max-channel-length": "248" }), 248);
  assert.equal(maxChannelLengthFlag({ "max-channel-length": "1" }), 1);
  assert.throws(
    () => maxChannelLengthFlag({ "max-channel-length": "255" }),
    /^TypeError: Invalid --max-channel-length: at most 248 \(the bus carries a channel as channel\.<name>\), got 255$/,
  );
  assert.throws(
    () => maxChannelLengthFlag({ "max-channel-length": "0" }),
    /^TypeError: Invalid --max-channel-length: at least 1, got 0$/,
  );
});

Deno.test("parseFlags reads --name VALUE, --name=VALUE and switches, the last of a repeated flag winning", () => {
  const specs = {
    port: { type: "string" as const, help: "" },
    token: { type: "string" as const, help: "" },
    quick: { type: "boolean" as const, help: "" },
  };
  assert.deepEqual(parseFlags([], specs), {});
  assert.deepEqual(parseFlags(["--port", "0", "--quick"], specs), { port: "0", quick: true });
  assert.deepEqual(parseFlags(["--port=1", "--port", "2"], specs), { port: "2" });
  assert.deepEqual(parseFlags(["--token=-a=b", "--port="], specs), { token: "-a=b", port: "" });
  // `deno task pusher -- --port 0`, as npm scripts take flags: the leading `--` is passed on, and passed over.
  assert.deepEqual(parseFlags(["--", "--port", "0"], specs), { port: "0" });
});

Deno.test("parseFlags refuses what it does not know with one line naming it", () => {
  const specs = {
    port: { type: "string" as const, arg: "PORT", help: "" },
    quick: { type: "boolean" as const, help: "" },
  };
  const refused = (args: string[], message: string) =>
    assert.throws(
      () => parseFlags(args, specs),
      (error: Error) => error instanceof TypeError && error.message === message,
    );
  refused(["--foo"], "Unknown option '--foo'");
  refused(["--foo=1"], "Unknown option '--foo'");
  refused(["-p", "1"], "Unknown option '-p'");
  refused(["--toString"], "Unknown option '--toString'");
  refused(["4236"], "Unexpected argument '4236': this command takes only --flags");
  refused(["--port", "0", "--"], "Unknown option '--'");
  refused(["--", "--"], "Unknown option '--'");
  refused(["--port"], "Option '--port PORT' needs a value");
  refused(["--port", "--quick"], "Option '--port' got '--quick', which looks like a flag: write --port=--quick");
  refused(["--quick=yes"], "Option '--quick' does not take a value");
});
