/**
 * Opens a {@linkcode Bus} by address: the scheme picks the implementation
 * (in the spirit of centrifuge's brokers), so a service takes an address
 * from its flags and never names a concrete client.
 *
 * | scheme       | implementation                  | address                                    |
 * | ------------ | ------------------------------- | ------------------------------------------ |
 * | `channel://` | the hub (`channel/bus.ts`)      | `channel://127.0.0.1:2206`, `channel://[::1]:2206` |
 * | `nats://`    | a NATS cluster (`shared/nats_bus.ts`) | `nats://10.0.0.1:4222,10.0.0.2:4222`       |
 * | `tls://`     | a NATS cluster over TLS         | `tls://nats1.internal:4222,nats2.internal:4222` |
 * | `redis://`   | Redis (`shared/redis_bus.ts`)   | `redis://10.0.0.1:6379`                    |
 * | `rediss://`  | Redis over TLS                  | `rediss://redis.internal:6379`             |
 *
 * @module
 */

import type { Bus } from "./bus.ts";
import type { Logger } from "./log.ts";
import { HubBus } from "../channel/bus.ts";
import { LazyBus } from "./_lazy_bus.ts";
import { busSpeaksTls, parseBusAddress } from "./bus_address.ts";

export {
  BUS_SCHEMES,
  type BusAddress,
  type BusHost,
  busSpeaksTls,
  hubBusAddress,
  parseBusAddress,
} from "./bus_address.ts";

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
   * certificate without them is an error. On `nats://` and `redis://`, TLS is
   * on when this is given; `tls://` and `rediss://` always speak TLS, with
   * the system's CAs unless `caCerts` is given. @default {plain text}
   */
  tls?: { caCerts?: string[]; cert?: string; key?: string };
  /**
   * For a bus that keeps history itself (NATS on JetStream, Redis): which
   * subjects (names or `prefix*`, as the hub's `--history`), how many
   * messages per subject, for how long, and (NATS) how many bytes over all.
   * The hub ignores it: it has its own `--history`. @default {none}
   */
  history?: { subjects: string[]; size: number; ttlMs: number; totalBytes?: number };
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
  const parsed = parseBusAddress(address);
  if (parsed.scheme === "channel") {
    const { hostname, port } = parsed;
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
  // The discriminant "nats" | "tls" is not a unit type, so TypeScript narrows by the field.
  if ("servers" in parsed) {
    // Imported only now: a process on the hub never loads the NATS client (see _lazy_bus.ts).
    return new LazyBus(address, false, async () => {
      const { NatsBus } = await import("./nats_bus.ts");
      return new NatsBus({
        servers: parsed.servers,
        tls: busSpeaksTls(parsed, options.tls) ? options.tls ?? true : false,
        token: options.token,
        publishTimeout: options.publishTimeout,
        maxPayload: options.maxFrameBytes,
        history: options.history,
        logger: options.logger,
      });
    });
  }
  return new LazyBus(address, true, async () => {
    const { RedisBus } = await import("./redis_bus.ts");
    return new RedisBus({
      hostname: parsed.hostname,
      port: parsed.port,
      tls: busSpeaksTls(parsed, options.tls) ? options.tls ?? true : false,
      token: options.token,
      maxMessageBytes: options.maxFrameBytes,
      publishTimeout: options.publishTimeout,
      history: options.history,
      logger: options.logger,
    });
  });
}
