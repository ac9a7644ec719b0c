/**
 * Opens a {@linkcode Bus} by address: the scheme picks the implementation
 * (in the spirit of centrifuge's brokers), so a service takes an address
 * from its flags and never names a concrete client.
 *
 * | scheme       | implementation                  | address                                    |
 * | ------------ | ------------------------------- | ------------------------------------------ |
 * | `channel://` | the hub (`channel/bus.ts`)      | `channel://127.0.0.1:2206`, `channel://[::1]:2206` |
 *
 * @module
 */

import type { Bus } from "./bus.ts";
import type { Logger } from "./log.ts";
import { HubBus } from "../channel/bus.ts";

/** The schemes {@linkcode openBus} knows. */
export const BUS_SCHEMES: readonly string[] = ["channel"];

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
  /**
   * TLS to the bus, PEM contents (not paths): `caCerts` verify the bus
   * server, and `cert` with `key` are presented to it as a client
   * certificate. On `channel://`, TLS is on when `caCerts` is given; a client
   * certificate without them is an error. @default {plain text}
   */
  tls?: { caCerts?: string[]; cert?: string; key?: string };
}

/** A bus address, parsed. */
export interface BusAddress {
  /** The scheme without its colon: `channel`. */
  scheme: "channel";
  /** Host name or IP address; an IPv6 address without its brackets. */
  hostname: string;
  /** TCP port, 1 to 65535. */
  port: number;
}

/**
 * Parses a bus address: `channel://HOST:PORT` (IPv6 hosts in brackets).
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
  if (scheme !== "channel") throw invalid(address, `unknown scheme ${JSON.stringify(scheme)} (schemes: ${schemes()})`);
  if (url.username || url.password) throw invalid(address, "credentials do not belong in it: pass a token");
  if ((url.pathname !== "" && url.pathname !== "/") || url.search || url.hash) {
    throw invalid(address, "expected channel://HOST:PORT with nothing after the port");
  }
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const port = Number(url.port);
  if (!hostname) throw invalid(address, "the host is missing");
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
 * open, naming the supported schemes; `Invalid TLS for ...` for a client
 * certificate without the CA that turns TLS on.
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
  const { hostname, port } = parseBusAddress(address);
  const { caCerts, cert, key } = options.tls ?? {};
  if ((cert !== undefined || key !== undefined) && caCerts === undefined) {
    throw new TypeError(
      `Invalid TLS for ${address}: a client certificate needs TLS, which the hub link takes from a CA (--bus-ca)`,
    );
  }
  return new HubBus({
    tls: caCerts === undefined ? undefined : { caCerts, cert, key },
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
