/**
 * The service tasks in `deno.json`: explicit grants, never `--allow-all`, and
 * `deno task compile` builds each binary with exactly its task's flags.
 */

import assert from "node:assert/strict";
import { taskCommand } from "../shared/tasks.ts";

const SERVICES = ["channel", "pusher", "publisher"];

/** The flags of a `deno run` or `deno compile` command line, without what only compile has. */
function runFlags(words: string[]): string[] {
  const flags: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    if (word === "--output" || word === "--include") i++;
    else if (word.startsWith("-")) flags.push(word);
  }
  return flags.sort();
}

Deno.test("service tasks grant explicit permissions, never --allow-all", async () => {
  for (const service of SERVICES) {
    const words = await taskCommand(service);
    assert.ok(words.some((w) => w.startsWith("--allow-net=")), `${service} grants --allow-net to named hosts`);
    for (const broad of ["-A", "--allow-all", "--allow-net"]) assert.ok(!words.includes(broad), `${service}: ${broad}`);
  }
});

Deno.test("deno task compile builds each service with the same flags as its task", async () => {
  const compile = (await taskCommand("compile")).slice(1).join(" ");
  const builds = compile.split("&&").map((part) => part.trim().split(/\s+/).filter((w) => w !== "deno"));
  for (const service of SERVICES) {
    const task = (await taskCommand(service)).slice(1);
    const entry = task.at(-1)!;
    const build = builds.find((words) => words.at(-1) === entry);
    assert.ok(build, `compile builds ${entry}`);
    assert.deepEqual(runFlags(build.slice(1, -1)), runFlags(task.slice(1, -1)), `${service}: compile and task flags`);
  }
});

Deno.test("README's many-machines commands grant each service what its task grants, besides the hosts it reaches", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const section = readme.split("\n## Many machines\n")[1]!.split("\n## ")[0]!;
  const block = section.split("```sh\n")[1]!.split("```")[0]!;
  const commands = block.replaceAll("\\\n", " ").split("\n").filter((line) => line.includes("deno run"));
  const started = new Set<string>();
  for (const command of commands) {
    const words = command.trim().split(/\s+/);
    const entry = words.find((word) => word.endsWith("/main.ts"))!;
    const run = words.slice(words.indexOf("run") + 1, words.indexOf(entry));
    const service = SERVICES.find((name) => entry === `${name}/main.ts`);
    assert.ok(service, `${entry} is a service`);
    started.add(service);
    const task = (await taskCommand(service)).slice(2, -1);
    // Hosts differ between machines, and the V8 flag is a tuning, not a grant.
    const grants = (flags: string[]) =>
      runFlags(flags).filter((flag) => !flag.startsWith("--allow-net=") && !flag.startsWith("--v8-flags="));
    assert.deepEqual(grants(run), grants(task), `README's ${service} command`);
  }
  assert.deepEqual([...started].sort(), [...SERVICES].sort());
});

Deno.test("each systemd unit in contrib/systemd runs its service with exactly its task's flags, restarting on failure", async () => {
  const units = { channel: "deno-push-hub", pusher: "deno-push-pusher", publisher: "deno-push-publisher" };
  for (const [service, unit] of Object.entries(units)) {
    const text = await Deno.readTextFile(new URL(`../contrib/systemd/${unit}.service`, import.meta.url));
    const settings = text.split("\n").filter((line) => /^\w+=/.test(line));
    const execStart = settings.filter((line) => line.startsWith("ExecStart="));
    assert.equal(execStart.length, 1, `${unit}: one ExecStart`);
    const [exe, ...words] = execStart[0]!.slice("ExecStart=".length).trim().split(/\s+/);
    assert.equal(exe, "/usr/bin/deno", `${unit}: an absolute deno path`);
    const task = (await taskCommand(service)).slice(1);
    assert.equal(words[0], "run", `${unit}: deno run`);
    assert.equal(words.at(-1), task.at(-1), `${unit}: entry point`);
    assert.deepEqual(
      runFlags(words.slice(1, -1)),
      runFlags(task.slice(1, -1)),
      `${unit}: the grants of ${service}'s task`,
    );
    for (const setting of ["Restart=on-failure", "EnvironmentFile=/etc/deno-push/env", "DynamicUser=yes"]) {
      assert.ok(settings.includes(setting), `${unit}: ${setting}`);
    }
  }
});
