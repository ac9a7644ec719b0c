/**
 * The README's many-machines commands, run as written, each service on a
 * machine of its own: a network namespace with the address the README gives
 * it, the namespaces on one bridge, the clients and the test on the host.
 * Each machine has the addresses, secrets and grants the README gives it,
 * and nothing else. Two layouts: the hub's (hub, two pushers, two
 * publishers, 10.0.0.1 to 10.0.0.5), and NATS over TLS (three NATS nodes,
 * two `wss://` pushers, two `https://` publishers, 10.0.1.1 to 10.0.1.7),
 * where each machine also has the host names of the block (a hosts file,
 * `/etc/netns/<namespace>/hosts`), a `certs/` directory of its own (the
 * CA's certificate, and its own certificate for its name and address, made
 * here) and a NATS store of its own (`-sd`).
 *
 * Needs root, for iproute2's `ip netns`; elsewhere it is ignored.
 */

import assert from "node:assert/strict";
import { type Service, startCommand } from "./_service.ts";
import { type Host, makeHostCertificates } from "./_tls.ts";
import { NATS_SERVER } from "./_nats.ts";
import { Client } from "../pusher/testing.ts";
import { Op, RawSocket } from "../pusher/ws_testing.ts";
import { RawPeer, until } from "../channel/testing.ts";
import type { Json } from "../shared/json.ts";
import { ROOT } from "../shared/tasks.ts";

/** One machine of a README block: where it is and what runs there. */
interface Machine {
  /** Its host name, when the block gives one (`push1 (10.0.1.4)`). */
  name?: string;
  address: string;
  /** The command, `deno` resolved to this executable and `nats-server` to Debian's. */
  command: string[];
  env: Record<string, string>;
}

/** The first `sh` block after `heading` (`## Many machines`), up to the next heading of its level or above. */
function readmeBlock(readme: string, heading: string): string {
  const level = heading.split(" ")[0]!;
  const after = readme.split(`\n${heading}\n`)[1];
  assert.ok(after !== undefined, `README has a section ${heading}`);
  const section = after.split(new RegExp(`\\n#{2,${level.length}} `))[0]!;
  return section.split("```sh\n")[1]!.split("```")[0]!;
}

const EXECUTABLES: Record<string, string> = { deno: Deno.execPath(), "nats-server": NATS_SERVER };

/**
 * A block's commands, one per machine. Each `# ..., on A and B` comment
 * starts the part for machines A and B (addresses, or `name (address)`), a
 * shell of their own: an `export` holds for the commands below it in that
 * part, and `NAME=...` (or `export NAME=...`) stands for the value an
 * earlier part exported. `"$NAME"` is expanded and `'quotes'` removed.
 */
function readmeMachines(block: string): Machine[] {
  const generated: Record<string, string> = {};
  let exported: Record<string, string> = {};
  let hosts: { name?: string; address: string }[] = [];
  const machines: Machine[] = [];
  for (const line of block.replaceAll("\\\n", " ").split("\n")) {
    const words = line.trim().split(/\s+/);
    if (words[0] === "#") {
      const named = [...line.matchAll(/\b([a-z][\w-]*) \((\d+\.\d+\.\d+\.\d+)\)/gi)];
      hosts = named.length > 0
        ? named.map(([, name, address]) => ({ name, address: address! }))
        : (line.match(/\b\d+\.\d+\.\d+\.\d+\b/g) ?? []).map((address) => ({ address }));
      exported = {};
    } else if (words[0] === "export") {
      // `export NAME=$(openssl rand -hex 16)`, or `export NAME=...` for the same value again
      const [name, value] = words[1]!.split("=") as [string, string];
      if (value === "...") exported[name] = generated[name]!;
      else exported[name] = generated[name] = crypto.randomUUID().replaceAll("-", "");
      assert.ok(exported[name], `README gives ${name} a value`);
    } else {
      const run = words.findIndex((word) => Object.hasOwn(EXECUTABLES, word));
      if (run === -1) continue;
      const env = { ...exported };
      for (const word of words.slice(0, run)) {
        const [name, value] = [word.slice(0, word.indexOf("=")), word.slice(word.indexOf("=") + 1)];
        env[name] = value === "..." ? generated[name]! : value;
        assert.ok(env[name], `README gives ${name} a value`);
      }
      const args = words.slice(run + 1).map((word) =>
        word.replace(/^"\$(\w+)"$/, (_, name: string) => {
          assert.ok(exported[name], `README exports ${name} before using it`);
          return exported[name];
        }).replace(/^'(.*)'$/, "$1")
      );
      for (const { name, address } of hosts) {
        machines.push({ name, address, command: [EXECUTABLES[words[run]!]!, ...args], env });
      }
    }
  }
  return machines;
}

const ETC_NETNS = "/etc/netns";

async function ip(...args: string[]): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command("ip", { args }).output();
  const decoder = new TextDecoder();
  if (!success) throw new Error(`ip ${args.join(" ")}: ${decoder.decode(stderr).trim()}`);
  return decoder.decode(stdout);
}

/**
 * A bridge on the host with one network namespace per address, each joined
 * to it by a veth pair; the host is .254 on the same /24. With `hosts`,
 * every namespace resolves their names (`ip netns exec` mounts
 * `/etc/netns/<namespace>/hosts` over `/etc/hosts`).
 */
class Network implements AsyncDisposable {
  readonly #bridge = `dpb${Deno.pid}`;
  readonly #namespaces = new Map<string, string>();
  #createdNetnsDir = false;

  static async create(addresses: string[], hosts: Host[] = []): Promise<Network> {
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
        if (hosts.length > 0) {
          network.#createdNetnsDir ||= await Deno.mkdir(ETC_NETNS).then(() => true, () => false);
          await Deno.mkdir(`${ETC_NETNS}/${namespace}`);
          const lines = ["127.0.0.1 localhost", ...hosts.map(({ name, address }) => `${address} ${name}`)];
          await Deno.writeTextFile(`${ETC_NETNS}/${namespace}/hosts`, lines.join("\n") + "\n");
        }
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
    for (const namespace of this.#namespaces.values()) {
      await ip("netns", "delete", namespace).catch(() => {});
      await Deno.remove(`${ETC_NETNS}/${namespace}`, { recursive: true }).catch(() => {});
    }
    if (this.#createdNetnsDir) await Deno.remove(ETC_NETNS).catch(() => {});
    this.#namespaces.clear();
    await ip("link", "delete", this.#bridge).catch(() => {});
  }
}

/** What a caller of a publisher has: its API key (none by default), and for `https://` a client that trusts the CA. */
interface Caller {
  apiKey?: string;
  client?: Deno.HttpClient;
}

/** A publish through the publisher at `origin` (`http://10.0.0.4:4237`). */
async function publish(origin: string, params: Record<string, string>, { apiKey, client }: Caller = {}) {
  const response = await fetch(`${origin}/?${new URLSearchParams(params)}`, {
    headers: apiKey === undefined ? {} : { authorization: `Bearer ${apiKey}` },
    // Past the publisher's own publish timeout (5 s), so a publish the bus never takes shows as its 503.
    signal: AbortSignal.timeout(10_000),
    ...(client ? { client } : {}),
  });
  return { status: response.status, body: await response.text(), reached: response.headers.get("x-pushers-reached") };
}

const asRoot = Deno.uid() === 0;

function readme(): Promise<string> {
  return Deno.readTextFile(new URL("../README.md", import.meta.url));
}

Deno.test({
  name: "README's many-machines commands: hub, two pushers and two publishers, each on its own address",
  ignore: !asRoot,
  async fn() {
    const machines = readmeMachines(readmeBlock(await readme(), "## Many machines"));
    const entry = (machine: Machine) => machine.command.find((word) => word.endsWith("/main.ts"))!;
    const onEach = (service: string) => machines.filter((machine) => entry(machine) === `${service}/main.ts`);
    const [hubMachine] = onEach("channel");
    const pushers = onEach("pusher");
    const publishers = onEach("publisher");
    assert.deepEqual([[hubMachine].length, pushers.length, publishers.length], [1, 2, 2], "the README's five machines");
    const workers = Number(pushers[0]!.command[pushers[0]!.command.indexOf("--workers") + 1]);
    const apiKey = publishers[0]!.env.PUBLISHER_API_KEY!;
    const origin = (machine: Machine) => `http://${machine.address}:4237`;

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
      const broadcast = await publish(origin(publishers[0]!), { content: "hello machines" }, { apiKey });
      assert.deepEqual(broadcast, { status: 200, body: "ok", reached: String(2 * workers) });
      for (const client of clients) assert.deepEqual((await client.received(2)).slice(1), ["hello machines"]);

      // A targeted send from the second publisher reaches exactly one connection; the
      // broadcast after it would have come second to anyone else who got it.
      const { worker, connection } = addresses[target]!;
      const targeted = { to_worker_id: worker, to_connection_id: String(connection), content: "just you" };
      assert.deepEqual(await publish(origin(publishers[1]!), targeted, { apiKey }), {
        status: 200,
        body: "ok",
        reached: "1",
      });
      assert.equal((await publish(origin(publishers[1]!), { content: "fence" }, { apiKey })).status, 200);
      for (const [i, client] of clients.entries()) {
        const expected = i === target ? ["hello machines", "just you", "fence"] : ["hello machines", "fence"];
        assert.deepEqual((await client.received(expected.length + 1)).slice(1), expected, `client ${i}`);
      }

      // Publishers and the hub listen on every interface, so neither lets in a stranger.
      const keyless = await publish(origin(publishers[1]!), { content: "let me in" });
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

/** A `wss://` client, as a browser is: it answers pings and keeps every text message. */
class WssClient implements AsyncDisposable {
  readonly messages: string[] = [];
  readonly #socket: RawSocket;
  #ended = false;
  readonly #reading: Promise<void>;

  private constructor(socket: RawSocket) {
    this.#socket = socket;
    this.#reading = this.#read();
  }

  /** Connects to the pusher on `address` port 4236 over TLS, verifying it with `caPem` for that address. */
  static async open(address: string, caPem: string): Promise<WssClient> {
    return new WssClient(await RawSocket.open(4236, {}, { hostname: address, caCerts: [caPem] }));
  }

  async #read(): Promise<void> {
    try {
      while (true) {
        // Ends when the server closes, or when dispose closes the socket under it.
        const frame = await this.#socket.next(3_600_000, "a frame");
        if (frame === null || frame.opcode === Op.close) break;
        if (frame.opcode === Op.ping) await this.#socket.send(Op.pong, frame.payload);
        if (frame.opcode === Op.text) this.messages.push(new TextDecoder().decode(frame.payload));
      }
    } catch { /* closed by dispose */ }
    this.#ended = true;
  }

  /** Whether the connection ended (the server closed it, or dispose did). */
  get ended(): boolean {
    return this.#ended;
  }

  /** Sends one client command, `{"id":1,"subscribe":{...}}`. */
  send(message: Json): Promise<void> {
    return this.#socket.send(Op.text, JSON.stringify(message));
  }

  /** Waits until `n` messages arrived, and returns them. */
  async received(n: number, what: string): Promise<string[]> {
    await until(() => this.messages.length >= n, 10_000, `${what} (got ${JSON.stringify(this.messages)})`);
    return this.messages;
  }

  /** The worker and connection ids of the greeting. */
  async address(): Promise<{ worker: string; connection: number }> {
    const [greeting] = await this.received(1, "the greeting");
    const match = /^workerID:(\S+) connectionID:(\d+) connected\n$/.exec(greeting!);
    assert.ok(match, `greeting ${JSON.stringify(greeting)}`);
    return { worker: match[1]!, connection: Number(match[2]) };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#socket.close();
    await this.#reading;
  }
}

Deno.test({
  name:
    "README's NATS-over-TLS commands: three NATS nodes, two wss:// pushers and two https:// publishers on seven machines, through the death of a NATS node",
  ignore: !asRoot,
  async fn() {
    const machines = readmeMachines(readmeBlock(await readme(), "### On NATS, over TLS"));
    const entry = (machine: Machine) => machine.command.find((word) => word.endsWith("/main.ts"));
    const nodes = machines.filter((machine) => machine.command[0] === NATS_SERVER);
    const pushers = machines.filter((machine) => entry(machine) === "pusher/main.ts");
    const publishers = machines.filter((machine) => entry(machine) === "publisher/main.ts");
    assert.deepEqual([nodes.length, pushers.length, publishers.length], [3, 2, 2], "the README's seven machines");
    const hosts = machines.map(({ name, address }) => ({ name: name!, address }));
    assert.ok(hosts.every((host) => host.name), "the README names every machine");
    const workers = Number(pushers[0]!.command[pushers[0]!.command.indexOf("--workers") + 1]);
    const apiKey = publishers[0]!.env.PUBLISHER_API_KEY!;
    const origin = (machine: Machine) => `https://${machine.address}:4237`;

    await using certs = await makeHostCertificates(hosts);
    const stores = await Deno.makeTempDir({ prefix: "nats-machines-" });
    await using _stores = { [Symbol.asyncDispose]: () => Deno.remove(stores, { recursive: true }) };
    /**
     * The machine's command on its own disk: its own `certs/` and NATS store, and
     * a copy of a configuration file (`-c`) whose `certs/` paths point there.
     */
    const onItsDisk = async (machine: Machine): Promise<string[]> => {
      const own = (path: string) => `${certs.dir(machine.name!)}/${path.slice("certs/".length)}`;
      const words: string[] = [];
      for (const [i, word] of machine.command.entries()) {
        const after = machine.command[i - 1];
        if (after === "-c") {
          const copy = `${stores}/${machine.name}.conf`;
          await Deno.writeTextFile(copy, (await Deno.readTextFile(new URL(word, ROOT))).replace(/\bcerts\/\S+/g, own));
          words.push(copy);
        } else if (after === "-sd") words.push(`${stores}/${machine.name}`);
        else words.push(word.startsWith("certs/") ? own(word) : word);
      }
      return words;
    };
    await using network = await Network.create(machines.map((machine) => machine.address), hosts);
    const services = new Map<Machine, Service>();
    const clients: WssClient[] = [];
    const client = Deno.createHttpClient({ caCerts: [certs.caPem] });
    const caller = { apiKey, client };
    try {
      const start = async (machine: Machine) => {
        const label = `${entry(machine) ?? "nats-server"}@${machine.name}`;
        const service = startCommand(label, await onItsDisk(machine), {
          env: machine.env,
          netns: network.namespace(machine.address),
        });
        services.set(machine, service);
        return service;
      };
      const natsServices = await Promise.all(nodes.map(start));
      await Promise.all(natsServices.map((service) => service.waitForLine(/Server is ready/, 20_000)));
      await Promise.race(
        natsServices.map((service) => service.waitForLine(/JetStream cluster new metadata leader/, 20_000)),
      );
      const links = (service: Service) => service.lines.filter((line) => line.includes('msg="connected to NATS"'));
      await Promise.all([...pushers, ...publishers].map(async (machine) => {
        const service = await start(machine);
        const expected = entry(machine) === "pusher/main.ts" ? workers : 1;
        await until(() => links(service).length >= expected, 20_000, `${expected} NATS links from ${machine.name}`);
        await service.waitForLine(/msg=listening addr=0\.0\.0\.0:\d+ .*tls=on/);
      }));

      for (let i = 0; i < 8; i++) clients.push(await WssClient.open(pushers[i % 2]!.address, certs.caPem));
      const addresses = await Promise.all(clients.map((wss) => wss.address()));
      const seen = clients.map(() => 1);
      /** What each client got since the last call, once a broadcast fence through `via` reached all of them. */
      const since = async (via: Machine, fence: string): Promise<string[][]> => {
        assert.deepEqual(await publish(origin(via), { content: fence }, caller), {
          status: 200,
          body: "ok",
          reached: null,
        });
        return await Promise.all(clients.map(async (wss, i) => {
          await until(() => wss.messages.slice(seen[i]).includes(fence), 10_000, `${fence} on client ${i}`);
          const got = wss.messages.slice(seen[i], wss.messages.lastIndexOf(fence));
          seen[i] = wss.messages.lastIndexOf(fence) + 1;
          return got;
        }));
      };

      // A broadcast over https:// from the first publisher reaches every wss:// client on both pushers.
      assert.deepEqual(await since(publishers[0]!, "hello machines"), clients.map(() => []));

      // A targeted send from the second publisher reaches exactly one connection; a stale address is refused.
      const target = 3;
      const { worker, connection } = addresses[target]!;
      const targeted = { to_worker_id: worker, to_connection_id: String(connection), content: "just you" };
      assert.deepEqual(await publish(origin(publishers[1]!), targeted, caller), {
        status: 200,
        body: "ok",
        reached: "1",
      });
      const stale = { to_worker_id: "0123456789abcdef", to_connection_id: "1", content: "nobody" };
      assert.equal((await publish(origin(publishers[1]!), stale, caller)).status, 404);
      assert.deepEqual(await since(publishers[1]!, "fence 1"), clients.map((_, i) => i === target ? ["just you"] : []));

      // Publishers listen on every interface, so neither lets in a caller without the key.
      const keyless = await publish(origin(publishers[0]!), { content: "let me in" }, { client });
      assert.equal(keyless.status, 401);

      // History on JetStream: a client that comes with the position it last saw recovers what came after.
      const news = async (data: string, key?: string) => {
        const response = await fetch(`${origin(publishers[0]!)}/api/publish`, {
          method: "POST",
          headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
          body: JSON.stringify({ channel: "news", data, ...(key ? { idempotency_key: key } : {}) }),
          signal: AbortSignal.timeout(10_000),
          client,
        });
        return {
          status: response.status,
          body: await response.json() as { result?: { offset: number; epoch: string } },
        };
      };
      const [reader] = clients;
      await reader!.send({ id: 1, subscribe: { channel: "news" } });
      await until(() => reader!.messages.some((m) => m.startsWith('{"id":1,"result"')), 10_000, "the subscribe reply");
      const first = await news("n1");
      assert.equal(first.status, 200, JSON.stringify(first.body));
      const { epoch } = first.body.result!;
      assert.equal((await news("n2")).status, 200);
      assert.equal((await news("n3")).status, 200);
      const late = await WssClient.open(pushers[1]!.address, certs.caPem);
      clients.push(late);
      seen.push(1);
      await late.address();
      await late.send({ id: 1, subscribe: { channel: "news", since: { offset: first.body.result!.offset, epoch } } });
      assert.deepEqual((await late.received(4, "the recovered history")).slice(1), [
        JSON.stringify({ id: 1, result: { recovered: true, offset: 3, epoch } }),
        JSON.stringify({ channel: "news", data: "n2", offset: 2, epoch }),
        JSON.stringify({ channel: "news", data: "n3", offset: 3, epoch }),
      ]);
      // The live subscriber got all three as they came, the late one its two recovered ones, nobody else any.
      const newsOf = (got: string[]) => got.filter((message) => message.startsWith('{"channel":"news"'));
      const n = (data: string, offset: number) => JSON.stringify({ channel: "news", data, offset, epoch });
      assert.deepEqual(
        (await since(publishers[0]!, "fence 2")).map(newsOf),
        clients.map((wss) =>
          wss === reader ? [n("n1", 1), n("n2", 2), n("n3", 3)] : wss === late ? [n("n2", 2), n("n3", 3)] : []
        ),
      );

      // kill -9 the NATS node with the most links: they move to the others by themselves, and every client keeps
      // its socket. (Whether it also leads the history stream is chance here; tests/nats_faults_test.ts kills the leader.)
      const clientsOf = (node: Machine) =>
        [...pushers, ...publishers].map((machine) => ({
          service: services.get(machine)!,
          count: links(services.get(machine)!).filter((line) => line.includes(`server=${node.name}:`)).length,
        }));
      const total = (node: Machine) => clientsOf(node).reduce((sum, { count }) => sum + count, 0);
      const dead = nodes.reduce((most, node) => total(node) > total(most) ? node : most);
      const moved = clientsOf(dead);
      assert.ok(total(dead) > 0, "the killed node has links to move");
      await services.get(dead)!.stop("SIGKILL");
      for (const { service, count } of moved) {
        await until(
          () => service.lines.filter((line) => line.includes('msg="NATS link back"')).length >= count,
          20_000,
          `${count} NATS links back; got:\n${service.lines.join("\n")}`,
        );
      }
      assert.deepEqual(await since(publishers[1]!, "after the node died"), clients.map(() => []));
      // A history publish may wait for the stream's new leader; a retry with its key is not stored twice.
      let after = await news("n4", "n4");
      for (const deadline = Date.now() + 20_000; after.status === 503 && Date.now() < deadline;) {
        after = await news("n4", "n4");
      }
      assert.equal(after.status, 200, JSON.stringify(after.body));
      assert.deepEqual(
        (await since(publishers[0]!, "fence 3")).map(newsOf),
        clients.map((wss) => wss === reader || wss === late ? [n("n4", 4)] : []),
      );
      assert.deepEqual(clients.map((wss) => wss.ended), clients.map(() => false), "every client kept its socket");
    } finally {
      await Promise.all(clients.map((wss) => wss[Symbol.asyncDispose]()));
      client.close();
      await Promise.all([...services.values()].map((service) => service[Symbol.asyncDispose]()));
    }
  },
});
