/**
 * The README's many-machines commands, run as written on five machines: each
 * service in a network namespace of its own with the address the README gives
 * it (10.0.0.1 to 10.0.0.5), the namespaces on one bridge, the clients and
 * the test on the host. Each machine has the hub's address, the hub's token
 * and the grants the README gives it, and nothing else.
 *
 * Needs root, for iproute2's `ip netns`; elsewhere it is ignored.
 */

import assert from "node:assert/strict";
import { type Service, startCommand } from "./_service.ts";
import { Client } from "../pusher/testing.ts";
import { RawPeer, until } from "../channel/testing.ts";

/** One machine of the README's block: where it is and what runs there. */
interface Machine {
  address: string;
  /** The command, `deno` resolved to this executable. */
  command: string[];
  env: Record<string, string>;
}

/**
 * The block's commands, one per machine. Each `# ..., on A and B` comment
 * starts the part for machines A and B, a shell of their own: an `export`
 * holds for the commands below it in that part, and `NAME=...` stands for
 * the value an earlier part exported.
 */
function readmeMachines(readme: string): Machine[] {
  const section = readme.split("\n## Many machines\n")[1]!.split("\n## ")[0]!;
  const block = section.split("```sh\n")[1]!.split("```")[0]!;
  const generated: Record<string, string> = {};
  let exported: Record<string, string> = {};
  let addresses: string[] = [];
  const machines: Machine[] = [];
  for (const line of block.replaceAll("\\\n", " ").split("\n")) {
    const words = line.trim().split(/\s+/);
    if (words[0] === "#") {
      addresses = line.match(/\b\d+\.\d+\.\d+\.\d+\b/g) ?? [];
      exported = {};
    } else if (words[0] === "export") {
      // `export NAME=$(openssl rand -hex 16)`
      const name = words[1]!.split("=")[0]!;
      exported[name] = generated[name] = crypto.randomUUID().replaceAll("-", "");
    } else if (words.includes("deno")) {
      const run = words.indexOf("deno");
      const env = { ...exported };
      for (const word of words.slice(0, run)) {
        const [name, value] = [word.slice(0, word.indexOf("=")), word.slice(word.indexOf("=") + 1)];
        env[name] = value === "..." ? generated[name]! : value;
        assert.ok(env[name], `README gives ${name} a value`);
      }
      for (const address of addresses) {
        machines.push({ address, command: [Deno.execPath(), ...words.slice(run + 1)], env });
      }
    }
  }
  return machines;
}

async function ip(...args: string[]): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command("ip", { args }).output();
  const decoder = new TextDecoder();
  if (!success) throw new Error(`ip ${args.join(" ")}: ${decoder.decode(stderr).trim()}`);
  return decoder.decode(stdout);
}

/**
 * A bridge on the host with one network namespace per address, each joined
 * to it by a veth pair; the host is .254 on the same /24.
 */
class Network implements AsyncDisposable {
  readonly #bridge = `dpb${Deno.pid}`;
  readonly #namespaces = new Map<string, string>();

  static async create(addresses: string[]): Promise<Network> {
    const subnet = addresses[0]!.replace(/\.\d+$/, ".0/24");
    assert.equal((await ip("-4", "route", "show", subnet)).trim(), "", `${subnet} is free on this machine`);
    const network = new Network();
    try {
      await ip("link", "add", network.#bridge, "type", "bridge");
      await ip("addr", "add", subnet.replace(".0/24", ".254/24"), "dev", network.#bridge);
      await ip("link", "set", network.#bridge, "up");
      for (const [i, address] of addresses.entries()) {
        const namespace = `dp${Deno.pid}-${i}`;
        const veth = `dpv${Deno.pid}x${i}`;
        await ip("netns", "add", namespace);
        network.#namespaces.set(address, namespace);
        await ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace);
        await ip("link", "set", veth, "master", network.#bridge, "up");
        await ip("-n", namespace, "addr", "add", `${address}/24`, "dev", "eth0");
        await ip("-n", namespace, "link", "set", "eth0", "up");
        await ip("-n", namespace, "link", "set", "lo", "up");
      }
    } catch (error) {
      await network[Symbol.asyncDispose]();
      throw error;
    }
    return network;
  }

  namespace(address: string): string {
    return this.#namespaces.get(address)!;
  }

  /** Deleting a namespace deletes its veth pair; the processes in it must have exited first. */
  async [Symbol.asyncDispose](): Promise<void> {
    for (const namespace of this.#namespaces.values()) await ip("netns", "delete", namespace).catch(() => {});
    this.#namespaces.clear();
    await ip("link", "delete", this.#bridge).catch(() => {});
  }
}

/** A publish through one machine's publisher, with the API key or without. */
async function publish(address: string, params: Record<string, string>, apiKey?: string) {
  const response = await fetch(`http://${address}:4237/?${new URLSearchParams(params)}`, {
    headers: apiKey === undefined ? {} : { authorization: `Bearer ${apiKey}` },
    // Past the publisher's own publish timeout (5 s), so a publish the hub never acks shows as its 503.
    signal: AbortSignal.timeout(10_000),
  });
  return { status: response.status, body: await response.text(), reached: response.headers.get("x-pushers-reached") };
}

const asRoot = Deno.uid() === 0;

Deno.test({
  name: "README's many-machines commands: hub, two pushers and two publishers, each on its own address",
  ignore: !asRoot,
  async fn() {
    const machines = readmeMachines(await Deno.readTextFile(new URL("../README.md", import.meta.url)));
    const entry = (machine: Machine) => machine.command.find((word) => word.endsWith("/main.ts"))!;
    const onEach = (service: string) => machines.filter((machine) => entry(machine) === `${service}/main.ts`);
    const [hubMachine] = onEach("channel");
    const pushers = onEach("pusher");
    const publishers = onEach("publisher");
    assert.deepEqual([[hubMachine].length, pushers.length, publishers.length], [1, 2, 2], "the README's five machines");
    const workers = Number(pushers[0]!.command[pushers[0]!.command.indexOf("--workers") + 1]);
    const apiKey = publishers[0]!.env.PUBLISHER_API_KEY!;

    await using network = await Network.create(machines.map((machine) => machine.address));
    const services: Service[] = [];
    const clients: Client[] = [];
    try {
      const start = (machine: Machine) => {
        const service = startCommand(`${entry(machine)}@${machine.address}`, machine.command, {
          env: machine.env,
          netns: network.namespace(machine.address),
        });
        services.push(service);
        return service;
      };
      await start(hubMachine!).waitForLine(/msg=listening addr=0\.0\.0\.0:2206 auth=token/);
      const linked = [...pushers, ...publishers].map((machine) => {
        const service = start(machine);
        const links = entry(machine) === "pusher/main.ts" ? workers : 1;
        return until(
          () => service.lines.filter((line) => line.includes('msg="connected to hub"')).length >= links,
          15_000,
          `${links} hub links from ${machine.address}`,
        );
      });
      await Promise.all(linked);
      for (const service of services.slice(1)) await service.waitForLine(/msg=listening addr=0\.0\.0\.0:/);

      for (let i = 0; i < 16; i++) clients.push(new Client(4236, undefined, "/", pushers[i % 2]!.address));
      const addresses = await Promise.all(clients.map((client) => client.address()));
      /** On the second pusher; it gets the targeted send. */
      const target = 5;

      // A broadcast from the first publisher reaches every connection on both pushers.
      const broadcast = await publish(publishers[0]!.address, { content: "hello machines" }, apiKey);
      assert.deepEqual(broadcast, { status: 200, body: "ok", reached: String(2 * workers) });
      for (const client of clients) assert.deepEqual((await client.received(2)).slice(1), ["hello machines"]);

      // A targeted send from the second publisher reaches exactly one connection; the
      // broadcast after it would have come second to anyone else who got it.
      const { worker, connection } = addresses[target]!;
      const targeted = { to_worker_id: worker, to_connection_id: String(connection), content: "just you" };
      assert.deepEqual(await publish(publishers[1]!.address, targeted, apiKey), {
        status: 200,
        body: "ok",
        reached: "1",
      });
      assert.equal((await publish(publishers[1]!.address, { content: "fence" }, apiKey)).status, 200);
      for (const [i, client] of clients.entries()) {
        const expected = i === target ? ["hello machines", "just you", "fence"] : ["hello machines", "fence"];
        assert.deepEqual((await client.received(expected.length + 1)).slice(1), expected, `client ${i}`);
      }

      // Publishers and the hub listen on every interface, so neither lets in a stranger.
      const keyless = await publish(publishers[1]!.address, { content: "let me in" });
      assert.equal(keyless.status, 401);
      assert.match(keyless.body, /^Unauthorized: this publisher needs an API key/);
      await using stranger = await RawPeer.connect(2206, { hostname: hubMachine!.address });
      assert.deepEqual(await stranger.readToEnd(), [{ type: "error", reason: "Unauthorized: this hub needs a token" }]);
      for (const client of clients) assert.equal(client.messages.at(-1), "fence", "nothing after the fence");
    } finally {
      await Promise.all(clients.map((client) => client[Symbol.asyncDispose]()));
      await Promise.all(services.map((service) => service[Symbol.asyncDispose]()));
    }
  },
});
