/**
 * `deno task publisher`: runs the HTTP publish API in front of the channel hub.
 *
 * @module
 */

import { createPublishHandler, DEFAULT_MAX_CONTENT_BYTES } from "./handler.ts";
import { ChannelClient } from "../channel/client.ts";
import { DEFAULT_CHANNEL_PORT } from "../shared/wire.ts";
import { createLogger } from "../shared/log.ts";
import {
  type FlagSpec,
  type FlagValues,
  helpText,
  intFlag,
  LOG_LEVEL_FLAG,
  logLevelFlag,
  onShutdownSignal,
  parseFlags,
  stringFlag,
} from "../shared/cli.ts";

/** The publisher's HTTP port unless `--port` says otherwise. */
export const DEFAULT_PUBLISHER_PORT = 4237;

const DEFAULT_HUB = `127.0.0.1:${DEFAULT_CHANNEL_PORT}`;

const FLAGS: Record<string, FlagSpec> = {
  hostname: {
    type: "string",
    arg: "HOST",
    help: "address to listen on; 0.0.0.0 for other machines",
    default: "127.0.0.1",
  },
  port: { type: "string", arg: "PORT", help: "HTTP port; 0 picks a free one", default: String(DEFAULT_PUBLISHER_PORT) },
  hub: {
    type: "string",
    arg: "HOST:PORT",
    help: "channel hub to publish to (or env CHANNEL_HUB)",
    default: DEFAULT_HUB,
  },
  "hub-token": { type: "string", arg: "TOKEN", help: "token the hub asks for (or env CHANNEL_TOKEN)" },
  "publish-timeout": {
    type: "string",
    arg: "MS",
    help: "how long a publish waits for the hub before the answer is 503",
    default: "5000",
  },
  "max-content-bytes": {
    type: "string",
    arg: "N",
    help: "largest content, in UTF-8 bytes",
    default: String(DEFAULT_MAX_CONTENT_BYTES),
  },
  "log-level": LOG_LEVEL_FLAG,
  help: { type: "boolean", help: "show this help" },
};

/** Serves the publish API until SIGINT or SIGTERM; returns the exit code. */
export async function main(args: string[] = Deno.args): Promise<number> {
  let server;
  let client;
  const logger = createLogger("publisher");
  try {
    const flags = parseFlags(args, FLAGS);
    if (flags.help) {
      console.log(helpText("deno task publisher [options]", "Publisher: the HTTP publish API.", FLAGS));
      return 0;
    }
    const log = createLogger("publisher", { level: logLevelFlag(flags) });
    const hostname = stringFlag(flags, "hostname") ?? "127.0.0.1";
    const port = intFlag(flags, "port", DEFAULT_PUBLISHER_PORT);
    const hub = hubAddress(stringFlag(flags, "hub") ?? Deno.env.get("CHANNEL_HUB") ?? DEFAULT_HUB);
    const token = stringFlag(flags, "hub-token") ?? Deno.env.get("CHANNEL_TOKEN") ?? undefined;
    const publishTimeout = positiveIntFlag(flags, "publish-timeout", 5000);
    const maxContentBytes = positiveIntFlag(flags, "max-content-bytes", DEFAULT_MAX_CONTENT_BYTES);
    // Not connect(): the publisher starts, and answers 503, while the hub is down.
    client = new ChannelClient({ ...hub, token: token || undefined, publishTimeout, logger: log });
    try {
      server = Deno.serve({
        hostname,
        port,
        handler: createPublishHandler({ hub: client, publishTimeout, maxContentBytes, logger: log }),
        onListen: (addr) => log.info("listening", { addr: `${addr.hostname}:${addr.port}` }),
      });
    } catch (error) {
      throw new Error(`Cannot listen on ${hostname}:${port}: ${(error as Error).message}`);
    }
  } catch (error) {
    logger.error((error as Error).message);
    await client?.close();
    return 2;
  }
  const signal = await new Promise<Deno.Signal>((resolve) => onShutdownSignal(resolve));
  logger.info("shutting down", { signal });
  // Requests in flight still get their answer, so the client closes after.
  await server.shutdown();
  await client.close();
  logger.info("stopped");
  return 0;
}

/**
 * Parses `HOST:PORT` (`[IPV6]:PORT` too).
 *
 * @throws {TypeError} when it is not of that form.
 */
function hubAddress(value: string): { hostname: string; port: number } {
  const match = value.match(/^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/);
  const port = Number(match?.[3]);
  if (!match || port < 1 || port > 65535) {
    throw new TypeError(`Invalid --hub: expected HOST:PORT with a port from 1 to 65535, got ${JSON.stringify(value)}`);
  }
  return { hostname: match[1] ?? match[2]!, port };
}

/**
 * Reads an integer flag that must be at least 1.
 *
 * @throws {TypeError} otherwise.
 */
function positiveIntFlag(values: FlagValues, name: string, fallback: number): number {
  const value = intFlag(values, name, fallback);
  if (value < 1) throw new TypeError(`Invalid --${name}: expected a positive integer, got ${value}`);
  return value;
}

if (import.meta.main) Deno.exit(await main());
