/**
 * The README's examples, run as a reader would run them, against real
 * processes started from their tasks: every `curl` line of the block under
 * "The server API", and the browser's JSON commands under "Channels and
 * users, from the browser's side". Each is answered as the README shows:
 * 200 (or the error code it shows), and where it shows an answer, the real
 * one has its shape, the same fields at every level.
 */

import assert from "node:assert/strict";
import { startPublisherOnHub, startPusherOnHub, startService } from "./_service.ts";
import { Client } from "../pusher/testing.ts";
import type { Json } from "../shared/json.ts";
import { signJwt } from "../shared/jwt.ts";

const SECRET = "readme-api-secret";
/** The placeholders the README's examples use for one connection's address and a channel's epoch. */
const WORKER = "1f3a9c2e7b4d0a55";
const CONNECTION = 7;
const EPOCH = "1f3a9c2e";

/** One example: what it sends, and the answer the README shows for it, if any. */
interface Example {
  line: string;
  method: string | null;
  body: string | null;
  url: string | null;
  shown: Json | undefined;
}

/** The `curl` lines of the README's server API block, each with the answer shown after it on its line or the next. */
function examples(readme: string): Example[] {
  const section = readme.slice(readme.indexOf("## The server API"));
  const block = /```sh\n([\s\S]*?)```/.exec(section)![1]!;
  const lines = block.split("\n");
  const found: Example[] = [];
  lines.forEach((line, i) => {
    if (!line.startsWith("curl ")) return;
    const post = /^curl -H "\$H" \$API\/(\w+)\s+-d '([^']*)'/.exec(line);
    const get = /^curl '([^']*)'/.exec(line);
    assert.ok(post || get, `an example this test cannot read: ${line}`);
    const comment = /'\s+#\s*(\{.*)$/.exec(line)?.[1] ?? /^#\s*(\{.*)$/.exec(lines[i + 1] ?? "")?.[1];
    found.push({
      line,
      method: post?.[1] ?? null,
      body: post?.[2] ?? null,
      url: get?.[1] ?? null,
      shown: comment === undefined ? undefined : shownAnswer(comment),
    });
  });
  return found;
}

/** An answer as the README shows it: JSON, with `…` standing for more of the same (read as null: anything). */
function shownAnswer(comment: string): Json {
  const json = comment.replace(/;.*$/, "").replace(/(?<=[,:\[]\s*)…/g, "null").replace(/,null(?=\])/g, "");
  return JSON.parse(json);
}

/** The fields of `value` at every level, as paths (`result.workers[].worker_id`); arrays by their first element. */
function shape(value: Json, path = ""): string[] {
  if (Array.isArray(value)) return value.length === 0 || value[0] === null ? [] : shape(value[0]!, `${path}[]`);
  if (value === null || typeof value !== "object") return [];
  // A map keyed by data (channel names) is shown by example: its first entry's shape, not its names.
  const entries = path.endsWith(".channels")
    ? Object.values(value).slice(0, 1).map((child) => ["*", child] as const)
    : Object.entries(value);
  return entries.flatMap(([key, child]) => [`${path}.${key}`, ...shape(child!, `${path}.${key}`)]).sort();
}

/** A hub as the examples' history channels need it: of `chat.*`. */
function startHistoryHub() {
  return startService("channel", ["--port", "0", "--startup-grace", "0", "--history", "channel.chat.*"]);
}

Deno.test("the README's server API examples are answered 200, in the shape it shows", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const all = examples(readme);
  assert.ok(all.length >= 20, `found ${all.length} examples`);
  assert.ok(all.filter((example) => example.shown !== undefined).length >= 12, "examples with their answers shown");

  await using hub = await startHistoryHub();
  const hubPort = await hub.port();
  const args = { args: ["--token-secret", SECRET] };
  const a = await startPusherOnHub(hubPort, args);
  await using _a = a.service;
  const b = await startPusherOnHub(hubPort, args);
  await using _b = b.service;
  await using publisher = await startPublisherOnHub(hubPort);
  const origin = `http://127.0.0.1:${await publisher.port()}`;
  const token = (user: string) => `/?token=${signJwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 600 }, SECRET)}`;
  await using alice1 = new Client(a.port, undefined, token("alice"));
  await using alice2 = new Client(b.port, undefined, token("alice"));
  await using bob = new Client(a.port, undefined, token("bob"));
  for (const client of [alice1, alice2]) await client.address();
  const bobs = await bob.address();

  const post = async (method: string, body: string) => {
    const response = await fetch(`${origin}/api/${method}`, {
      method: "POST",
      body,
      headers: { "content-type": "application/json" },
    });
    return { status: response.status, text: await response.text() };
  };
  for (const [channel, user] of [["news", "alice"], ["news", "bob"], ["room.1", "bob"]]) {
    assert.equal((await post("subscribe", JSON.stringify({ channel, user }))).status, 200);
  }
  let epoch = EPOCH;
  for (const example of all) {
    const { status, text } = example.url
      ? await fetch(example.url.replace("http://127.0.0.1:4237", origin)).then(async (r) => ({
        status: r.status,
        text: await r.text(),
      }))
      : await post(
        example.method!,
        // The README's address and epoch stand for real ones: bob's connection, news's epoch.
        example.body!.replaceAll(WORKER, bobs.worker).replaceAll(
          `"connection_id":${CONNECTION}`,
          `"connection_id":${bobs.connection}`,
        )
          .replaceAll(EPOCH, epoch),
      );
    assert.equal(status, 200, `${example.line}\n→ ${status} ${text}`);
    if (example.url) continue;
    const answer = JSON.parse(text) as Json;
    const read = (answer as { result?: { epoch?: string } }).result?.epoch;
    if (read) epoch = read;
    if (example.shown !== undefined) {
      assert.deepEqual(shape(answer), shape(example.shown), `${example.line}\n→ ${text}`);
    }
  }
});

/** The browser's commands of the README's first transcript, each with the reply it shows. */
function transcript(readme: string): { command: Json; shown: Json }[] {
  const section = readme.slice(readme.indexOf("### Channels and users, from the browser's side"));
  const block = /```\n([\s\S]*?)```/.exec(section)![1]!;
  const steps: { command: Json; shown: Json }[] = [];
  for (const line of block.split("\n")) {
    const sent = /^→ (\{.*?\})(?:\s+←\s+(\{.*\}))?\s*$/.exec(line);
    const reply = /^\s+← (\{.*\})\s*$/.exec(line);
    if (sent) steps.push({ command: JSON.parse(sent[1]!), shown: sent[2] ? shownAnswer(sent[2]) : null });
    else if (reply) steps.at(-1)!.shown = shownAnswer(reply[1]!);
    else assert.equal(line.trim(), "", `a line this test cannot read: ${line}`);
  }
  return steps;
}

Deno.test("the README's browser commands are answered as it shows", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const steps = transcript(readme);
  assert.ok(steps.length >= 9 && steps.every((step) => step.shown !== null), "every command with its reply");

  await using hub = await startHistoryHub();
  const hubPort = await hub.port();
  const pusher = await startPusherOnHub(hubPort, {
    args: ["--token-secret", SECRET, "--presence-channels", "room.*"],
  });
  await using _pusher = pusher.service;
  await using publisher = await startPublisherOnHub(hubPort);
  const origin = `http://127.0.0.1:${await publisher.port()}`;
  const jwt = (user: string) =>
    signJwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 600, channels: ["news", "chat.*", "room.*"] }, SECRET);
  await using alice = new Client(pusher.port, undefined, `/?token=${jwt("alice")}`);
  await using bob = new Client(pusher.port, undefined, `/?token=${jwt("bob")}`);
  await alice.address();
  await bob.address();
  // Something in chat.1's history, and bob in room.1.
  for (const content of ["one", "two"]) {
    assert.equal(await fetch(`${origin}/?channel=chat.1&content=${content}`).then((r) => r.text()), "ok");
  }
  assert.deepEqual(await bob.ask({ id: 1, subscribe: { channel: "room.1" } }), { id: 1, result: {} });

  for (const { command, shown } of steps) {
    const sent = JSON.parse(JSON.stringify(command).replace('"<JWT>"', JSON.stringify(jwt("alice"))));
    const answer = await alice.ask(sent) as Json;
    const what = `${JSON.stringify(command)}\n→ ${JSON.stringify(answer)}`;
    assert.deepEqual(shape(answer), shape(shown), what);
    const code = (reply: Json) => (reply as { error?: { code: number } }).error?.code;
    assert.equal(code(answer), code(shown), what);
  }
});
