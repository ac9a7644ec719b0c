/**
 * Command-line helpers shared by the services' `main.ts`: typed flags on top
 * of `node:util` `parseArgs`, help text, and signal-driven shutdown.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { isLogLevel, type LogLevel } from "./log.ts";
import { MAX_TIMER_MS } from "./duration.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "./frame.ts";

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
 * Parses `args` against `specs`. Unknown flags and stray positionals are
 * errors.
 *
 * @throws {TypeError} with a one-line message naming the bad flag.
 */
export function parseFlags(args: string[], specs: Record<string, FlagSpec>): FlagValues {
  const options = Object.fromEntries(Object.entries(specs).map(([name, spec]) => [name, { type: spec.type }]));
  try {
    const { values } = parseArgs({ args, options, strict: true, allowPositionals: false });
    return values as FlagValues;
  } catch (error) {
    throw new TypeError((error as Error).message.split("\n")[0]);
  }
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
 * Reads the bus address `openBus` takes: `--bus URL`, else `--hub
 * HOST:PORT` (meaning `channel://HOST:PORT`), else the CHANNEL_BUS variable,
 * else CHANNEL_HUB, else `channel://127.0.0.1:2206` (IPv6 hosts in
 * brackets). A URL is checked when the bus is opened.
 *
 * @throws {TypeError} `Invalid --hub: expected HOST:PORT ...` (or
 * `Invalid CHANNEL_HUB: ...`) when the value is not of that form.
 *
 * @example
 * ```ts
 * import { busFlag } from "./cli.ts";
 *
 * busFlag({ hub: "[::1]:2206" }); // "channel://[::1]:2206"
 * busFlag({ bus: "redis://127.0.0.1:6379" }); // "redis://127.0.0.1:6379"
 * ```
 */
export function busFlag(values: FlagValues): string {
  const bus = stringFlag(values, "bus") ??
    (stringFlag(values, "hub") === undefined ? Deno.env.get("CHANNEL_BUS") || undefined : undefined);
  if (bus !== undefined) return bus;
  const { hostname, port } = hubFlag(values);
  return `channel://${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
}

/** History a bus keeps itself, from `--history`, `--history-size` and `--history-ttl`. */
export interface BusHistoryFlags {
  /** Names or `prefix*` patterns. */
  subjects: string[];
  /** Messages kept per subject. */
  size: number;
  /** Milliseconds a message is kept. */
  ttlMs: number;
}

/**
 * Reads `--history` (subjects, comma-separated names or `prefix*`),
 * `--history-size` (100) and `--history-ttl` (seconds, 300), the hub's
 * meaning, for a bus that keeps history itself (Redis); undefined without
 * `--history`.
 *
 * @throws {TypeError} when a number is not a positive integer.
 */
export function busHistoryFlag(values: FlagValues): BusHistoryFlags | undefined {
  const subjects = (stringFlag(values, "history") ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (subjects.length === 0) return undefined;
  const size = intFlag(values, "history-size", 100);
  if (size < 1) throw new TypeError(`Invalid --history-size: at least 1, got ${size}`);
  return { subjects, size, ttlMs: durationFlag(values, "history-ttl", 300, { unit: "s", min: 1 }) * 1000 };
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

/** The `--bus`, `--history*`, `--hub`, `--hub-token` and `--hub-max-frame-bytes` flags of the services that reach the bus. */
export const HUB_FLAGS: Record<string, FlagSpec> = {
  bus: {
    type: "string",
    arg: "URL",
    help: "bus address: channel://HOST:PORT, redis://HOST:PORT or rediss://HOST:PORT (or env CHANNEL_BUS)",
  },
  history: {
    type: "string",
    arg: "SUBJECTS",
    help:
      "on a bus that keeps history itself (redis://): subjects that keep it, as the hub's --history (default: none)",
  },
  "history-size": { type: "string", arg: "N", help: "with --history: messages kept per subject", default: "100" },
  "history-ttl": { type: "string", arg: "S", help: "with --history: seconds a message is kept", default: "300" },
  hub: {
    type: "string",
    arg: "HOST:PORT",
    help: "channel hub address (or env CHANNEL_HUB)",
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
