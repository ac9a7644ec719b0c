import assert from "node:assert/strict";
import { createBaselineHandler } from "./baseline.ts";
import { Commands } from "./_commands.ts";
import { benchChannel, readChannelFrame } from "./_content.ts";
import { WsClient } from "./_ws_client.ts";

const utf8 = new TextDecoder();

Deno.test("baseline answers subscribe and unsubscribe and sends a channel publication to its members only", async () => {
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, createBaselineHandler());
  const { port } = server.addr;
  const commands = new Commands(5000);
  const got = new Map<WsClient, string[]>();
  const onMessage = (client: WsClient, payload: Uint8Array, at: number) => {
    if (commands.reply(client, payload, at)) return;
    const frame = readChannelFrame(payload);
    got.get(client)!.push(frame ? `${frame.channel}:${utf8.decode(frame.content)}` : utf8.decode(payload));
  };
  await using a = await WsClient.connect({ hostname: "127.0.0.1", port, onMessage });
  await using b = await WsClient.connect({ hostname: "127.0.0.1", port, onMessage });
  got.set(a, []).set(b, []);
  assert.deepEqual(await commands.send(a, "subscribe", benchChannel(1)), { ok: true });
  assert.deepEqual(await commands.send(b, "subscribe", benchChannel(2)), { ok: true });
  const publish = async (query: string) => {
    const response = await fetch(`http://127.0.0.1:${port}/?${query}`, { signal: AbortSignal.timeout(5000) });
    assert.equal(await response.text(), "ok");
  };
  await publish(`channel=${benchChannel(1)}&content=one`);
  await publish(`channel=${benchChannel(2)}&content=two`);
  assert.deepEqual(await commands.send(a, "unsubscribe", benchChannel(1)), { ok: true });
  await publish(`channel=${benchChannel(1)}&content=gone`);
  await publish("content=everyone");
  const deadline = AbortSignal.timeout(5000);
  while (got.get(a)!.length < 2 || got.get(b)!.length < 2) {
    assert.ok(!deadline.aborted, `both clients' messages, got ${JSON.stringify([...got.values()])}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.deepEqual(got.get(a), ["1:one", "everyone"]);
  assert.deepEqual(got.get(b), ["2:two", "everyone"]);
  assert.equal(commands.replies, 3);
  await a.close();
  await b.close();
});
