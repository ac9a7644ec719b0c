/**
 * Bus addresses: `channel://HOST:PORT` for the hub, `nats://` and `tls://`
 * server lists for a NATS cluster, `redis://` and `rediss://` for Redis. Pure, so that flags are checked without
 * loading any bus; `shared/open_bus.ts` opens them.
 *
 * @module
 */

/** The schemes `openBus` knows. */
export const BUS_SCHEMES: readonly string[] = ["channel", "nats", "tls", "redis", "rediss"];

/** Redis's port when a `redis://` or `rediss://` address names none. */
export const DEFAULT_REDIS_PORT = 6379;

/** A host and port in a bus address. */
export interface BusHost {
  /** Host name or IP address; an IPv6 address without its brackets. */
  hostname: string;
  /** TCP port, 1 to 65535. */
  port: number;
}

/**
 * A bus address, parsed: the hub's, a NATS cluster's (`tls` is NATS over
 * TLS), or a Redis server's (`rediss` is Redis over TLS).
 */
export type BusAddress =
  | { scheme: "channel"; hostname: string; port: number }
  | { scheme: "nats" | "tls"; servers: BusHost[] }
  | { scheme: "redis" | "rediss"; hostname: string; port: number };

/**
 * Parses a bus address: `channel://HOST:PORT`, or `nats://HOST:PORT,HOST:PORT,...`
 * and `tls://...` for a NATS cluster, `redis://HOST:PORT` and
 * `rediss://HOST:PORT` for Redis (IPv6 hosts in brackets; NATS's port
 * defaults to 4222, Redis's to 6379).
 *
 * @throws {TypeError} `Invalid bus address: ...` naming the supported
 * schemes, or what is wrong with the address.
 *
 * @example
 * ```ts
 * import { parseBusAddress } from "./bus_address.ts";
 *
 * parseBusAddress("channel://[::1]:2206"); // { scheme: "channel", hostname: "::1", port: 2206 }
 * parseBusAddress("nats://n1:4222,n2"); // { scheme: "nats", servers: [{ hostname: "n1", port: 4222 }, { hostname: "n2", port: 4222 }] }
 * ```
 */
export function parseBusAddress(address: string): BusAddress {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(address)?.[1];
  if (scheme === "nats" || scheme === "tls") {
    const rest = address.slice(scheme.length + 3);
    if (rest === "") throw invalid(address, `expected ${scheme}://HOST:PORT,HOST:PORT,...`);
    const servers = rest.split(",").map((part) => parseHost(address, `${scheme}://${part}`, 4222));
    return { scheme, servers };
  }
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw invalid(address, `expected a URL such as channel://127.0.0.1:2206 (schemes: ${schemes()})`);
  }
  const protocol = url.protocol.slice(0, -1);
  if (protocol === "redis" || protocol === "rediss") {
    return { scheme: protocol, ...parseHost(address, address, DEFAULT_REDIS_PORT) };
  }
  if (protocol !== "channel") {
    throw invalid(address, `unknown scheme ${JSON.stringify(protocol)} (schemes: ${schemes()})`);
  }
  return { scheme: "channel", ...parseHost(address, address, null) };
}

/** One `scheme://HOST[:PORT]` of `address`; `defaultPort` null means the port is required. */
function parseHost(address: string, part: string, defaultPort: number | null): BusHost {
  let url: URL;
  try {
    url = new URL(part.replace(/^[a-z]+:/, "channel:"));
  } catch {
    throw invalid(address, `cannot read ${JSON.stringify(part)} as HOST:PORT`);
  }
  if (url.username || url.password) throw invalid(address, "credentials do not belong in it: pass a token");
  if ((url.pathname !== "" && url.pathname !== "/") || url.search || url.hash) {
    throw invalid(
      address,
      defaultPort === null
        ? "expected channel://HOST:PORT with nothing after the port"
        : "expected HOST:PORT with nothing after the port",
    );
  }
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  if (!hostname) throw invalid(address, "the host is missing");
  if (url.port === "" && defaultPort !== null) return { hostname, port: defaultPort };
  const port = Number(url.port);
  if (url.port === "" || port < 1 || port > 65535) throw invalid(address, "expected a port from 1 to 65535");
  return { hostname, port };
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

function schemes(): string {
  return BUS_SCHEMES.map((scheme) => `${scheme}://`).join(", ");
}

function invalid(address: string, detail: string): TypeError {
  return new TypeError(`Invalid bus address: ${JSON.stringify(address)}: ${detail}`);
}

/**
 * Whether the link to the bus at `address` speaks TLS, given the TLS settings
 * of `--bus-ca`, `--bus-cert` and `--bus-key`: always on `tls://` and
 * `rediss://` (verified with the system's CAs if no CA is given); on
 * `channel://` once a CA is given, which verifies the hub; on `nats://` and
 * `redis://` once any is given, as TLS settings are for TLS and should never
 * be dropped for plain text.
 *
 * @example
 * ```ts
 * import { busSpeaksTls, parseBusAddress } from "./bus_address.ts";
 *
 * busSpeaksTls(parseBusAddress("redis://10.0.0.1:6379"), { caCerts: ["-----BEGIN CERTIFICATE-----..."] }); // true
 * busSpeaksTls(parseBusAddress("nats://10.0.0.1:4222"), undefined); // false
 * ```
 */
export function busSpeaksTls(address: BusAddress, tls: { caCerts?: readonly string[] } | undefined): boolean {
  switch (address.scheme) {
    case "tls":
    case "rediss":
      return true;
    case "channel":
      return tls?.caCerts !== undefined;
    default:
      return tls !== undefined;
  }
}

/**
 * What answers and logs call the bus at `address`, as written mid-sentence:
 * `hub`, `NATS` or `Redis` (`hub` for an address of no other scheme: the
 * services open only those that parse).
 *
 * @example
 * ```ts
 * import { busName } from "./bus_address.ts";
 *
 * busName("redis://127.0.0.1:6379"); // "Redis"
 * ```
 */
export function busName(address: string): BusName {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(address)?.[1]?.toLowerCase();
  if (scheme === "nats" || scheme === "tls") return "NATS";
  if (scheme === "redis" || scheme === "rediss") return "Redis";
  return "hub";
}

/** A bus as answers and logs call it: see {@linkcode busName}. */
export type BusName = "hub" | "NATS" | "Redis";
