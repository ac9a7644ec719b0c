/**
 * What each service loads before it is asked for more: some modules cost a
 * process (and each pusher worker) megabytes of resident memory at idle
 * (issue 19), so they are imported only where a flag or an address needs
 * them. Read from `deno info --json`: the modules a service's `main.ts`
 * reaches through static imports alone.
 */

import assert from "node:assert/strict";
import { ROOT } from "../shared/tasks.ts";

interface InfoDependency {
  specifier: string;
  isDynamic?: boolean;
  code?: { specifier?: string };
  type?: { specifier?: string };
}

interface Info {
  roots: string[];
  modules: { specifier: string; dependencies?: InfoDependency[] }[];
  redirects: Record<string, string>;
}

/** Every module `entry` loads at start: the closure of its static imports. */
async function staticGraph(entry: string): Promise<Set<string>> {
  const { stdout, success, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(success, new TextDecoder().decode(stderr));
  const info: Info = JSON.parse(new TextDecoder().decode(stdout));
  const modules = new Map(info.modules.map((module) => [module.specifier, module]));
  const seen = new Set<string>();
  const visit = (specifier: string) => {
    const resolved = info.redirects[specifier] ?? specifier;
    if (seen.has(resolved)) return;
    seen.add(resolved);
    for (const dependency of modules.get(resolved)?.dependencies ?? []) {
      if (dependency.isDynamic) continue;
      const target = dependency.code?.specifier ?? dependency.type?.specifier ?? dependency.specifier;
      // Type-only imports (`import type`) load nothing at run time.
      if (dependency.code === undefined && !target.startsWith("node:")) continue;
      visit(target);
    }
  };
  for (const root of info.roots) visit(root);
  return seen;
}

const heavy = (graph: Set<string>, pattern: RegExp) => [...graph].filter((specifier) => pattern.test(specifier));

// Any node: module loads Deno's Node layer: about 1 MiB (node:util) to 6 (node:crypto, node:tls) in each
// process; npm: the NATS and Redis clients, about 29 MiB.
const HEAVY = /^(node:|npm:)/;

Deno.test("the hub loads no node: module (node:tls only with a client CA, node:crypto only with certificates)", async () => {
  assert.deepEqual(heavy(await staticGraph("channel/main.ts"), HEAVY), []);
});

Deno.test("the publisher loads no node: module, nor a bus client it was not given", async () => {
  assert.deepEqual(heavy(await staticGraph("publisher/main.ts"), HEAVY), []);
});

Deno.test("the pusher's supervisor loads no node: module, nor its workers' code, nor a bus client", async () => {
  const graph = await staticGraph("pusher/main.ts");
  assert.deepEqual(heavy(graph, HEAVY), []);
  assert.deepEqual(heavy(graph, /\/pusher\/(worker|server|pusher)\.ts$/), []);
});

Deno.test("the pusher's workers load no node: module (node:crypto only with a token secret), nor a bus client", async () => {
  assert.deepEqual(heavy(await staticGraph("pusher/worker.ts"), HEAVY), []);
});
