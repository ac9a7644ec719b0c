/**
 * Command-line helpers shared by the services' `main.ts`: typed flags, help
 * text, and signal-driven shutdown.
 *
 * @module
 */

import { isLogLevel, type Logger, type LogLevel } from "./log.ts";
import { MAX_TIMER_MS } from "./duration.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "./frame.ts";
import { parseBusAddress } from "./bus_address.ts";
import { natsHistoryFilter } from "./nats_subject.ts";
import { DEFAULT_HISTORY_SIZE, DEFAULT_HISTORY_TOTAL_BYTES, DEFAULT_HISTORY_TTL } from "./history_log.ts";
import { MAX_CARRIED_CHANNEL_LENGTH } from "./address.ts";

/** One command-line flag. */
export interface FlagSpec {
  /** `string` takes a value; `boolean` is a switch. */
  type: "string" | "boolean";
  /** Shown in `--help`. */
  help: string;
  /** Shown in `--help` as the default. */
  default?: string;
  /** Value placeholder in `--help`. @default {"VALUE"} */
  arg?: string;
}

/** Parsed flags: strings (or undefined) and booleans. */
export type FlagValues = Record<string, string | boolean | undefined>;

/**
 * Parses `args` against `specs`: `--name VALUE` or `--name=VALUE` for a
 * string flag, `--name` for a boolean one; the last of a repeated flag
 * wins. Unknown flags, stray positionals and a string flag without its
 * value are errors; so is a value that starts with `-` unless given as
 * `--name=VALUE`, which could be a flag typed where a value was meant.
 *
 * Not `node:util`'s `parseArgs`: importing it loads Deno's Node layer, about
 * a megabyte of resident memory in each process (issue 19).
 *
 * @throws {TypeError} with a one-line message naming the bad argument.
 *
 * @example
 * ```ts
 * import { parseFlags } from "./cli.ts";
 *
 * const specs = { port: { type: "string" as const, help: "port" }, help: { type: "boolean" as const, help: "help" } };
 * parseFlags(["--port", "4236", "--help"], specs); // { port: "4236", help: true }
 * ```
 */
export function parseFlags(args: string[], specs: Record<string, FlagSpec>): FlagValues {
  const values: FlagValues = {};
  // `deno task pusher -- --port 0`, as npm scripts are given flags: `deno task` passes the `--` on.
  for (let i = args[0] === "--" ? 1 : 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith("-")) throw new TypeError(`Unexpected argument '${arg}': this command takes only --flags`);
    const equals = arg.indexOf("=");
    const name = arg.slice(2, equals === -1 ? undefined : equals);
    const spec = arg.startsWith("--") && Object.hasOwn(specs, name) ? specs[name]! : undefined;
    if (spec === undefined) throw new TypeError(`Unknown option '${equals === -1 ? arg : arg.slice(0, equals)}'`);
    if (spec.type === "boolean") {
      if (equals !== -1) throw new TypeError(`Option '--${name}' does not take a value`);
      values[name] = true;
    } else if (equals !== -1) {
      values[name] = arg.slice(equals + 1);
    } else {
      const value = args[++i];
      if (value === undefined) throw new TypeError(`Option '--${name} ${spec.arg ?? "VALUE"}' needs a value`);
      if (value.startsWith("-")) {
        throw new TypeError(`Option '--${name}' got '${value}', which looks like a flag: write --${name}=${value}`);
      }
      values[name] = value;
    }
  }
  return values;
}

/** Formats `--help` text. */
export function helpText(usage: string, description: string, specs: Record<string, FlagSpec>): string {
  const rows = Object.entries(specs).map(([name, spec]) => {
    const left = spec.type === "string" ? `--${name} ${spec.arg ?? "VALUE"}` : `--${name}`;
    const def = spec.default === undefined ? "" : ` (default: ${spec.default})`;
    return `  ${left.padEnd(30)} ${spec.help}${def}`;
  });
  return `${description}\n\nUsage: ${usage}\n\nOptions:\n${rows.join("\n")}\n`;
}

/**
 * Reads a non-negative integer flag.
 *
 * @throws {TypeError} when the value is not a non-negative integer.
 */
export function intFlag(values: FlagValues, name: string, fallback: number): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (typeof raw !== "string" || !/^\d+$/.test(raw) || !Number.isSafeInteger(value)) {
    throw new TypeError(`Invalid --${name}: expected a non-negative integer, got ${JSON.stringify(raw)}`);
  }
  return value;
}

/**
 * Reads an integer flag of at least 1.
 *
 * @throws {TypeError} when the value is not an integer, or is 0.
 */
export function positiveIntFlag(values: FlagValues, name: string, fallback: number): number {
  const value = intFlag(values, name, fallback);
  if (value < 1) throw new TypeError(`Invalid --${name}: at least 1, got ${value}`);
  return value;
}

/** `--max-channel-length`, which the pusher and the publisher take alike. */
export const MAX_CHANNEL_LENGTH_FLAG: FlagSpec = {
  type: "string",
  arg: "N",
  help:
    `longest channel name accepted (422 past it), 1 to ${MAX_CARRIED_CHANNEL_LENGTH}: the bus carries a channel as channel.<name>`,
  default: String(MAX_CARRIED_CHANNEL_LENGTH),
};

/**
 * Reads `--max-channel-length`: 1 to {@linkcode MAX_CARRIED_CHANNEL_LENGTH},
 * the longest name whose subject the bus carries.
 *
 * @throws {TypeError} when it is outside those bounds.
 */
export function maxChannelLengthFlag(values: FlagValues): number {
  const length = positiveIntFlag(values, "max-channel-length", MAX_CARRIED_CHANNEL_LENGTH);
  if (length > MAX_CARRIED_CHANNEL_LENGTH) {
    throw new TypeError(
      `Invalid --max-channel-length: at most ${MAX_CARRIED_CHANNEL_LENGTH} (the bus carries a channel as channel.<name>), got ${length}`,
    );
  }
  return length;
}

/** Options for {@linkcode durationFlag}. */
export interface DurationFlagOptions {
  /** The flag's unit. @default {"ms"} */
  unit?: "ms" | "s";
  /** The least value accepted, in the flag's unit. @default {0} */
  min?: number;
}

/**
 * Reads a duration flag: a non-negative integer in its unit, no longer than
 * a timer can wait ({@linkcode MAX_TIMER_MS}).
 *
 * @throws {TypeError} when it is not an integer, or outside those bounds.
 */
export function durationFlag(
  values: FlagValues,
  name: string,
  fallback: number,
  options: DurationFlagOptions = {},
): number {
  const value = intFlag(values, name, fallback);
  const unit = options.unit ?? "ms";
  const max = unit === "s" ? Math.floor(MAX_TIMER_MS / 1000) : MAX_TIMER_MS;
  const min = options.min ?? 0;
  if (value < min || value > max) {
    throw new TypeError(
      `Invalid --${name}: expected ${min} to ${max} ${unit} (the longest a timer waits), got ${value}`,
    );
  }
  return value;
}

/** Reads a string flag. */
export function stringFlag(values: FlagValues, name: string): string | undefined {
  const raw = values[name];
  return typeof raw === "string" ? raw : undefined;
}

/**
 * Reads `--log-level`.
 *
 * @throws {TypeError} on an unknown level.
 */
export function logLevelFlag(values: FlagValues): LogLevel {
  const raw = stringFlag(values, "log-level") ?? "info";
  if (!isLogLevel(raw)) throw new TypeError(`Invalid --log-level: ${JSON.stringify(raw)}`);
  return raw;
}

/** The `--log-level` flag every service takes. */
export const LOG_LEVEL_FLAG: FlagSpec = {
  type: "string",
  arg: "LEVEL",
  help: "debug, info, warn, error or silent",
  default: "info",
};

/**
 * Every service's `--stop-on-stdin-eof`: `deno task start` passes it, and
 * keeps the other end of each service's stdin, so that its services go when
 * it goes, even killed outright (SIGKILL, the OOM killer), instead of
 * running on unsupervised. A service started otherwise has no use for it:
 * its stdin may be `/dev/null`, which ends at once.
 */
export const STOP_ON_STDIN_EOF_FLAG: FlagSpec = {
  type: "boolean",
  help: "stop as on SIGTERM once stdin ends (deno task start passes it: its services go when it does)",
};

/**
 * Resolves with `SIGTERM` once stdin ends, as if that signal had come, when
 * `enabled` (see {@linkcode STOP_ON_STDIN_EOF_FLAG}); never otherwise.
 */
export function stdinEnded(enabled: boolean, logger: Logger): Promise<Deno.Signal> {
  if (!enabled) return new Promise(() => {});
  return (async () => {
    const buffer = new Uint8Array(256);
    try {
      while (await Deno.stdin.read(buffer) !== null);
    } catch { /* a closed stdin ends it too */ }
    logger.warn("stdin ended: the supervisor that started this service is gone; stopping");
    return "SIGTERM" as const;
  })();
}

/** True for addresses only this machine can reach. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/**
 * Runs `stop` on the first SIGINT or SIGTERM, then removes the listeners.
 * Returns a function that removes them without stopping.
 */
export function onShutdownSignal(stop: (signal: Deno.Signal) => void): () => void {
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  const handlers = signals.map((signal) => {
    const handler = () => {
      remove();
      stop(signal);
    };
    Deno.addSignalListener(signal, handler);
    return [signal, handler] as const;
  });
  function remove() {
    for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
  }
  return remove;
}

/** A host and port. */
export interface HostPort {
  hostname: string;
  port: number;
}

/**
 * Parses `HOST:PORT` (IPv6 hosts in brackets: `[::1]:2206`).
 *
 * @throws {TypeError} naming the flag when the value is not of that form.
 */
export function parseHostPort(value: string, flag: string): HostPort {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(value);
  const port = Number(match?.[3]);
  if (!match || port < 1 || port > 65535) {
    throw new TypeError(
      `Invalid ${flag}: expected HOST:PORT with a port from 1 to 65535, got ${JSON.stringify(value)}`,
    );
  }
  return { hostname: match[1] ?? match[2]!, port };
}

/** Reads the hub address from `--hub`, else the CHANNEL_HUB variable, else 127.0.0.1:2206. */
export function hubFlag(values: FlagValues): HostPort {
  const flag = stringFlag(values, "hub");
  const value = flag ?? Deno.env.get("CHANNEL_HUB") ?? "127.0.0.1:2206";
  return parseHostPort(value, flag === undefined ? "CHANNEL_HUB" : "--hub");
}

/**
 * Reads the bus address: `--bus URL`, else `--hub HOST:PORT` (meaning
 * `channel://HOST:PORT`), else the CHANNEL_BUS variable, else CHANNEL_HUB,
 * else `channel://127.0.0.1:2206`; checked with `parseBusAddress`.
 *
 * @throws {TypeError} `Invalid --bus: ...` (or `--hub`, `CHANNEL_BUS`,
 * `CHANNEL_HUB`) naming what is wrong, or when both `--bus` and `--hub` are given.
 *
 * @example
 * ```ts
 * import { busFlag } from "./cli.ts";
 *
 * busFlag({ hub: "[::1]:2206" }); // "channel://[::1]:2206"
 * busFlag({ bus: "nats://n1:4222,n2:4222" }); // "nats://n1:4222,n2:4222"
 * ```
 */
export function busFlag(values: FlagValues): string {
  const bus = stringFlag(values, "bus");
  const hub = stringFlag(values, "hub");
  if (bus !== undefined && hub !== undefined) {
    throw new TypeError("Invalid --bus: give --bus URL or --hub HOST:PORT, not both");
  }
  const fromEnv = bus === undefined && hub === undefined ? Deno.env.get("CHANNEL_BUS") || undefined : undefined;
  const address = bus ?? fromEnv;
  if (address === undefined) {
    const { hostname, port } = hubFlag(values);
    return `channel://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
  }
  try {
    parseBusAddress(address);
  } catch (error) {
    const name = bus === undefined ? "CHANNEL_BUS" : "--bus";
    throw new TypeError((error as Error).message.replace(/^Invalid bus address/, `Invalid ${name}`));
  }
  return address;
}

/** The `--history*` flags of the pusher and the publisher, for a bus that keeps history itself. */
export const BUS_HISTORY_FLAGS: Record<string, FlagSpec> = {
  history: {
    type: "string",
    arg: "SUBJECTS",
    help:
      "on a NATS bus: subjects that keep history, comma-separated names or prefix.* patterns (channel.*); the same on every pusher and publisher (the hub has its own --history)",
  },
  "history-size": {
    type: "string",
    arg: "N",
    help: "on a NATS bus: messages kept per history subject",
    default: "100",
  },
  "history-ttl": { type: "string", arg: "S", help: "on a NATS bus: seconds a history message is kept", default: "300" },
  "history-total-bytes": {
    type: "string",
    arg: "N",
    help:
      "on a NATS bus: bytes of history kept over all subjects; past it the oldest messages go (on Redis: maxmemory)",
    default: String(DEFAULT_HISTORY_TOTAL_BYTES),
  },
};

/**
 * Reads `--history`, `--history-size`, `--history-ttl` and, for NATS,
 * `--history-total-bytes` as `OpenBusOptions.history` for a bus at
 * `address`; undefined without `--history`.
 *
 * @throws {TypeError} when given for the hub (`channel://`: the hub keeps
 * history with its own `--history`), `--history-total-bytes` for Redis
 * (bounded by Redis's `maxmemory`), or for a bad value.
 */
export function busHistoryFlag(
  values: FlagValues,
  address: string,
): { subjects: string[]; size: number; ttlMs: number; totalBytes?: number } | undefined {
  const given = ["history", "history-size", "history-ttl", "history-total-bytes"].filter((name) =>
    values[name] !== undefined
  );
  if (given.length === 0) return undefined;
  const { scheme } = parseBusAddress(address);
  if ((scheme === "redis" || scheme === "rediss") && values["history-total-bytes"] !== undefined) {
    throw new TypeError(
      "Invalid --history-total-bytes: Redis bounds what it keeps itself: run it with maxmemory and maxmemory-policy volatile-lru",
    );
  }
  if (scheme === "channel") {
    throw new TypeError(
      `Invalid --${
        given[0]
      }: the hub keeps history itself: give --history to the hub (deno task channel), not to the pusher or publisher`,
    );
  }
  const subjects = (stringFlag(values, "history") ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (subjects.length === 0) throw new TypeError("Invalid --history: expected subjects such as channel.*");
  for (const subject of subjects) {
    try {
      natsHistoryFilter(subject);
    } catch (error) {
      throw new TypeError(`Invalid --history: ${(error as Error).message}`);
    }
  }
  const size = positiveIntFlag(values, "history-size", DEFAULT_HISTORY_SIZE);
  const ttl = durationFlag(values, "history-ttl", DEFAULT_HISTORY_TTL / 1000, { unit: "s", min: 1 });
  if (scheme === "redis" || scheme === "rediss") return { subjects, size, ttlMs: ttl * 1000 };
  const totalBytes = positiveIntFlag(values, "history-total-bytes", DEFAULT_HISTORY_TOTAL_BYTES);
  return { subjects, size, ttlMs: ttl * 1000, totalBytes };
}

/**
 * `--hub-max-frame-bytes`: the largest frame on the hub link. Kept at the
 * hub's `--max-frame-bytes`, a publish the hub could not take is refused
 * before it is sent (413), and an event as large as the hub sends is read.
 */
export const HUB_MAX_FRAME_BYTES_FLAG: FlagSpec = {
  type: "string",
  arg: "N",
  help: "largest frame on the hub link; keep it at the hub's --max-frame-bytes",
  default: String(DEFAULT_MAX_FRAME_BYTES),
};

/** Reads `--hub-max-frame-bytes`. */
export function hubMaxFrameBytesFlag(values: FlagValues): number {
  const bytes = intFlag(values, "hub-max-frame-bytes", DEFAULT_MAX_FRAME_BYTES);
  if (bytes < 64) throw new TypeError(`Invalid --hub-max-frame-bytes: at least 64, got ${bytes}`);
  return bytes;
}

/** The `--hub`, `--hub-token` and `--hub-max-frame-bytes` flags of the services that reach the hub. */
export const HUB_FLAGS: Record<string, FlagSpec> = {
  bus: {
    type: "string",
    arg: "URL",
    help:
      "the bus: channel://HOST:PORT (the hub), nats://HOST:PORT,... or tls://... (a NATS cluster), redis:// or rediss://HOST:PORT (Redis) (or env CHANNEL_BUS)",
  },
  hub: {
    type: "string",
    arg: "HOST:PORT",
    help: "channel hub address, the same as --bus channel://HOST:PORT (or env CHANNEL_HUB)",
    default: "127.0.0.1:2206",
  },
  "hub-token": { type: "string", arg: "TOKEN", help: "token the hub asks for (or env CHANNEL_TOKEN)" },
  "hub-max-frame-bytes": HUB_MAX_FRAME_BYTES_FLAG,
};

/** Reads the hub token from `--hub-token`, else the CHANNEL_TOKEN variable. */
export function hubTokenFlag(values: FlagValues): string | undefined {
  return stringFlag(values, "hub-token") ?? (Deno.env.get("CHANNEL_TOKEN") || undefined);
}

/**
 * Starts listening for SIGINT and SIGTERM at once and resolves with the first
 * one. Call it before the service starts listening: a signal that arrives
 * while it is still starting would otherwise meet the default action and
 * kill it mid-start, without a drain.
 */
export function shutdownSignal(): Promise<Deno.Signal> {
  return new Promise((resolve) => onShutdownSignal(resolve));
}
