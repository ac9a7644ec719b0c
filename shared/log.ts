/**
 * Structured log lines in logfmt (`level=info svc=channel msg="..." key=value`),
 * with levels, written to stderr unless a sink is given.
 *
 * @module
 */

/** Log levels, from most to least verbose. */
export const LOG_LEVELS = ["debug", "info", "warn", "error", "silent"] as const;

/** One of {@linkcode LOG_LEVELS}. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Extra fields of a log line. */
export type LogFields = Record<string, string | number | boolean | undefined>;

/** A leveled, structured logger. */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Lowest level written. @default {"info"} */
  level?: LogLevel;
  /** Where lines go. @default {console.error} */
  sink?: (line: string) => void;
  /** Fields added to every line, after the service name (a worker id, say). */
  fields?: LogFields;
}

/**
 * Creates a logger whose lines carry the service name.
 *
 * @example
 * ```ts
 * import { createLogger } from "./log.ts";
 *
 * const log = createLogger("channel", { level: "debug" });
 * log.warn("slow consumer disconnected", { conn: 3, pending: 8388608 });
 * // ts=2026-11-22T10:00:00.000Z level=warn svc=channel msg="slow consumer disconnected" conn=3 pending=8388608
 * ```
 */
export function createLogger(service: string, options: LoggerOptions = {}): Logger {
  const threshold = LOG_LEVELS.indexOf(options.level ?? "info");
  const sink = options.sink ?? ((line: string) => console.error(line));
  const write = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (LOG_LEVELS.indexOf(level) < threshold) return;
    let line = `ts=${new Date().toISOString()} level=${level} svc=${service} msg=${quote(msg)}`;
    for (const [key, value] of Object.entries({ ...options.fields, ...fields })) {
      if (value !== undefined) line += ` ${key}=${quote(String(value))}`;
    }
    sink(line);
  };
  return {
    debug: (msg, fields) => write("debug", msg, fields),
    info: (msg, fields) => write("info", msg, fields),
    warn: (msg, fields) => write("warn", msg, fields),
    error: (msg, fields) => write("error", msg, fields),
  };
}

/** Checks a `--log-level` value. */
export function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

function quote(value: string): string {
  return /^[\w.:/@+-]+$/.test(value) ? value : JSON.stringify(value);
}
