/**
 * Real `nats-server` (Debian's, 2.9) for the tests: one node or a cluster of
 * three on free loopback ports, JetStream on, its store in a temporary
 * directory removed at the end. `nats-server` cannot take port 0 for its
 * cluster routes, so ports are found by binding port 0 first.
 *
 * @module
 */

import { type Service, startCommand } from "./_service.ts";
import { freePort, until } from "../channel/testing.ts";
import type { NatsServer } from "../shared/nats_bus.ts";

/** The `nats-server` the tests run. */
export const NATS_SERVER = "/usr/sbin/nats-server";

/** One node of a {@linkcode NatsCluster}. */
export interface NatsNode {
  readonly name: string;
  readonly port: number;
  readonly clusterPort: number;
  readonly monitorPort: number;
  /** The running process, or null while it is killed. */
  service: Service | null;
}

/** Options for {@linkcode startNats}. */
export interface NatsClusterOptions {
  /** Nodes: 1, or 3 for a cluster. @default {1} */
  nodes?: number;
  /** Token clients must give. @default {none} */
  token?: string;
  /**
   * Serve clients over TLS with this certificate and key (file paths); with
   * `caFile`, only to clients with a certificate signed by it. @default {plain text}
   */
  tls?: { certFile: string; keyFile: string; caFile?: string };
}

/** A running NATS cluster (or single node). */
export interface NatsCluster extends AsyncDisposable {
  readonly nodes: NatsNode[];
  /** The client addresses of every node. */
  readonly servers: NatsServer[];
  /** `nats://127.0.0.1:P1,127.0.0.1:P2,...` (`tls://` with `tls`). */
  readonly url: string;
  /** Kills a node with SIGKILL. */
  kill(index: number): Promise<void>;
  /**
   * Starts a killed node again, on its ports and store, and waits until it is
   * healthy. Over TLS with a `caFile`, `clientAuth` changes whether it asks
   * clients for a certificate; `wipe` empties its store first (a disk lost,
   * or a node without one).
   */
  restart(index: number, changes?: { clientAuth?: boolean; wipe?: boolean }): Promise<void>;
  /** The name of the node leading `stream`, from a live node's monitoring port. */
  streamLeader(stream: string): Promise<string>;
}

/**
 * Starts `nats-server` nodes on free loopback ports with JetStream, and
 * waits until each one reports healthy (JetStream included).
 *
 * @example
 * ```ts
 * import { startNats } from "./_nats.ts";
 * import { NatsBus } from "../shared/nats_bus.ts";
 *
 * await using nats = await startNats({ nodes: 3 });
 * await using bus = new NatsBus({ servers: nats.servers });
 * ```
 */
export async function startNats(options: NatsClusterOptions = {}): Promise<NatsCluster> {
  for (let attempt = 1;; attempt++) {
    try {
      return await startNatsOnce(options);
    } catch (error) {
      // A port found free can be taken by another process before nats-server binds it: try other ports.
      if (attempt === 3 || !/address already in use/.test((error as Error).message)) throw error;
    }
  }
}

async function startNatsOnce(options: NatsClusterOptions): Promise<NatsCluster> {
  const count = options.nodes ?? 1;
  const store = await Deno.makeTempDir({ prefix: "nats-test-" });
  const nodes: NatsNode[] = Array.from({ length: count }, (_, i) => ({
    name: `n${i + 1}`,
    port: freePort(),
    clusterPort: freePort(),
    monitorPort: freePort(),
    service: null,
  }));
  let clientAuth = options.tls?.caFile !== undefined;
  const args = (node: NatsNode): string[] => {
    const words = [
      "-a",
      "127.0.0.1",
      "-p",
      String(node.port),
      "-m",
      String(node.monitorPort),
      "-n",
      node.name,
      "-js",
      "-sd",
      `${store}/${node.name}`,
    ];
    if (options.token !== undefined) words.push("--auth", options.token);
    if (options.tls) words.push("--tls", "--tlscert", options.tls.certFile, "--tlskey", options.tls.keyFile);
    if (options.tls?.caFile !== undefined && clientAuth) words.push("--tlsverify", "--tlscacert", options.tls.caFile);
    if (count > 1) {
      const routes = nodes.filter((other) => other !== node).map((other) => `nats://127.0.0.1:${other.clusterPort}`);
      words.push(
        "--cluster_name",
        "test",
        "--cluster",
        `nats://127.0.0.1:${node.clusterPort}`,
        "--routes",
        routes.join(","),
      );
    }
    return words;
  };
  const start = (node: NatsNode) => {
    node.service = startCommand(`nats ${node.name}`, [NATS_SERVER, ...args(node)]);
  };
  const healthy = async (node: NatsNode) => {
    const deadline = Date.now() + 20_000;
    let exited = false;
    node.service?.process.status.then(() => (exited = true));
    while (true) {
      if (exited) {
        throw new Error(`nats node ${node.name} exited at start; it logged:\n${node.service?.lines.join("\n")}`);
      }
      try {
        const response = await fetch(`http://127.0.0.1:${node.monitorPort}/healthz`);
        await response.body?.cancel();
        if (response.ok) return;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) {
        const log = node.service?.lines.filter((line) => !line.includes("Healthcheck failed")).slice(-12).join("\n");
        throw new Error(
          `Timed out after 20000 ms waiting for nats node ${node.name} to be healthy; it logged:\n${log}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  const stopAll = async () => {
    await Promise.all(nodes.map(async (node) => {
      await node.service?.[Symbol.asyncDispose]();
      node.service = null;
    }));
    await Deno.remove(store, { recursive: true }).catch(() => {});
  };
  try {
    for (const node of nodes) start(node);
    await Promise.all(nodes.map(healthy));
  } catch (error) {
    await stopAll();
    throw error;
  }
  const servers = nodes.map((node) => ({ hostname: "127.0.0.1", port: node.port }));
  return {
    nodes,
    servers,
    url: `${options.tls ? "tls" : "nats"}://${servers.map((s) => `${s.hostname}:${s.port}`).join(",")}`,
    async kill(index) {
      const node = nodes[index]!;
      await node.service?.stop("SIGKILL");
      await node.service?.[Symbol.asyncDispose]();
      node.service = null;
    },
    async restart(index, changes = {}) {
      clientAuth = changes.clientAuth ?? clientAuth;
      const node = nodes[index]!;
      if (changes.wipe) await Deno.remove(`${store}/${node.name}`, { recursive: true }).catch(() => {});
      start(node);
      await healthy(node);
    },
    async streamLeader(stream) {
      let leader = "";
      await until(
        async () => {
          const node = nodes.find((n) => n.service !== null)!;
          const response = await fetch(`http://127.0.0.1:${node.monitorPort}/jsz?streams=true`);
          const jsz = await response.json() as {
            account_details?: { stream_detail?: { name: string; cluster?: { leader?: string } }[] }[];
          };
          const detail = jsz.account_details?.flatMap((a) => a.stream_detail ?? []).find((s) => s.name === stream);
          leader = detail?.cluster?.leader ?? "";
          return leader !== "";
        },
        10_000,
        `a leader of stream ${stream}`,
      );
      return leader;
    },
    [Symbol.asyncDispose]: stopAll,
  };
}
