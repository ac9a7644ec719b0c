/**
 * Opens a {@linkcode Bus} by address: the scheme picks the implementation
 * (in the spirit of centrifuge's brokers), so a service takes an address
 * from its flags and never names a concrete client.
 *
 * | scheme       | implementation                  | address                                    |
 * | ------------ | ------------------------------- | ------------------------------------------ |
 * | `channel://` | the hub (`channel/bus.ts`)      | `channel://127.0.0.1:2206`, `channel://[::1]:2206` |
| `redis://`   | Redis (`shared/redis_bus.ts`)   | `redis://127.0.0.1:6379` (the port defaults to 6379) |
| `rediss://`  | Redis over TLS                  | `rediss://redis.internal:6380`             |
 *
 * @module
 */

import type { Bus } from "./bus.ts";
import type { Logger } from "./log.ts";
import { HubBus } from "../channel/bus.ts";
import { DEFAULT_REDIS_PORT, RedisBus } from "./redis_bus.ts";

/** The schemes {@linkcode openBus} knows. */
export const BUS_SCHEMES: readonly string[] = ["channel", "redis", "rediss"];

/** PEM contents (not paths) for a TLS link to the bus. */
export interface BusTlsOptions {
  /** CAs to verify the bus server with. @default {the system's} */
  caCerts?: string[];
  /** A client certificate to present. @default {none} */
  cert?: string;
  /** The client certificate's key. @default {none} */
  key?: string;
}

/** History a bus keeps itself (Redis on Streams), as the hub's `--history*` flags. */
export interface BusHistoryOptions {
  /** Subjects that keep history: names, or prefixes ending in `*` (`channel.chat.*`). */
  subjects: string[];
  /** Most messages kept per subject. */
  size: number;
  /** Longest a message is kept, in milliseconds. */
  ttlMs: number;
}

/** Options for {@linkcode openBus}. */
export interface OpenBusOptions {
  /** Token the bus asks for, if it has one. @default {none} */
  token?: string;
  /** Largest frame sent and taken on the link, in bytes; keep it at the hub's `--max-frame-bytes`. @default {1048576} */
  maxFrameBytes?: number;
  /** How long a publish waits to be taken, reconnects included, in milliseconds. @default {5000} */
  publishTimeout?: number;
  /** Where the bus's log lines go. @default {createLogger("channel-client")} */
  logger?: Logger;
  /** TLS material for `rediss://`. @default {the system's CAs, no client certificate} */
  tls?: BusTlsOptions;
  /** Subjects whose history the bus keeps itself (`redis://`); the hub ignores it: it has its own `--history`. @default {none} */
  history?: BusHistoryOptions;
}

/** A bus address, parsed. */
export type BusAddress =
  | {
    /** The hub. */
    scheme: "channel";
    /** Host name or IP address; an IPv6 address without its brackets. */
    hostname: string;
    /** TCP port, 1 to 65535. */
    port: number;
  }
  | {
    /** Redis, `rediss` over TLS. */
    scheme: "redis" | "rediss";
    /** Host name or IP address; an IPv6 address without its brackets. */
    hostname: string;
    /** TCP port, 1 to 65535; 6379 when the address names none. */
    port: number;
  };

/**
 * Parses a bus address: `channel://HOST:PORT`, `redis://HOST[:PORT]` or
 * `rediss://HOST[:PORT]` (IPv6 hosts in brackets).
 *
 * @throws {TypeError} `Invalid bus address: ...` naming the supported
 * schemes, or what is wrong with the address.
 *
 * @example
 * ```ts
 * import { parseBusAddress } from "./open_bus.ts";
 *
 * parseBusAddress("channel://[::1]:2206"); // { scheme: "channel", hostname: "::1", port: 2206 }
 * ```
 */
export function parseBusAddress(address: string): BusAddress {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw invalid(address, `expected a URL such as channel://127.0.0.1:2206 (schemes: ${schemes()})`);
  }
  const scheme = url.protocol.slice(0, -1);
  if (scheme !== "channel" && scheme !== "redis" && scheme !== "rediss") {
    throw invalid(address, `unknown scheme ${JSON.stringify(scheme)} (schemes: ${schemes()})`);
  }
  if (url.username || url.password) throw invalid(address, "credentials do not belong in it: pass a token");
  if ((url.pathname !== "" && url.pathname !== "/") || url.search || url.hash) {
    throw invalid(address, `expected ${scheme}://HOST:PORT with nothing after the port`);
  }
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  if (!hostname) throw invalid(address, "the host is missing");
  if (scheme !== "channel" && url.port === "") return { scheme, hostname, port: DEFAULT_REDIS_PORT };
  const port = Number(url.port);
  if (url.port === "" || port < 1 || port > 65535) throw invalid(address, "expected a port from 1 to 65535");
  return { scheme, hostname, port };
}

/**
 * Formats `HOST:PORT` (IPv6 hosts in brackets) as the hub's bus address,
 * `channel://HOST:PORT`: what `--hub` means.
 *
 * @throws {TypeError} as {@linkcode parseBusAddress}.
 */
export function hubBusAddress(hostPort: string): string {
  const address = `channel://${hostPort}`;
  parseBusAddress(address);
  return address;
}

/**
 * Opens the bus at `address`; the bus connects in the background and keeps
 * itself up (see {@linkcode Bus}).
 *
 * @throws {TypeError} `Invalid bus address: ...` for an address it cannot
 * open, naming the supported schemes.
 *
 * @example
 * ```ts
 * import { openBus } from "./open_bus.ts";
 *
 * await using bus = openBus("channel://127.0.0.1:2206", { token: Deno.env.get("CHANNEL_TOKEN") });
 * await bus.publish("broadcast", { content: "hi" });
 * ```
 */
export function openBus(address: string, options: OpenBusOptions = {}): Bus {
  const { scheme, hostname, port } = parseBusAddress(address);
  if (scheme === "redis" || scheme === "rediss") {
    return new RedisBus({
      hostname,
      port,
      tls: scheme === "rediss" ? options.tls ?? true : false,
      token: options.token,
      maxMessageBytes: options.maxFrameBytes,
      publishTimeout: options.publishTimeout,
      history: options.history,
      logger: options.logger,
    });
  }
  return new HubBus({
    hostname,
    port,
    token: options.token,
    maxFrameBytes: options.maxFrameBytes,
    publishTimeout: options.publishTimeout,
    logger: options.logger,
  });
}

function schemes(): string {
  return BUS_SCHEMES.map((scheme) => `${scheme}://`).join(", ");
}

function invalid(address: string, detail: string): TypeError {
  return new TypeError(`Invalid bus address: ${JSON.stringify(address)}: ${detail}`);
}
