/**
 * The soak generator against a fake push system that breaks its promises on
 * purpose: what it drops, repeats or sends to the wrong client must show up
 * as lost, duplicates and misdirected, and a faithful one must show none.
 */

import assert from "node:assert/strict";
import { runLoadProcess } from "./_load_process.ts";
import type { SoakResult, SoakSpec } from "./soak_load.ts";

/** What the fake does with one delivery. */
type Fault = (kind: "broadcast" | "targeted", seq: number, connection: number) => "send" | "drop" | "twice" | "next";

/** One process, the pusher's and the publisher's API on one port: greetings, broadcasts, targeted sends. */
function fakeSystem(fault: Fault): Deno.HttpServer<Deno.NetAddr> {
  const sockets = new Map<number, WebSocket>();
  let nextId = 1;
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    if (req.headers.get("upgrade") === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      const id = nextId++;
      socket.onopen = () => {
        sockets.set(id, socket);
        socket.send(`workerID:0123456789abcdef connectionID:${id} connected\n`);
      };
      socket.onclose = () => sockets.delete(id);
      return response;
    }
    const params = new URL(req.url).searchParams;
    const content = params.get("content")!;
    const seq = Number(content.split(":")[0]);
    const to = params.get("to_connection_id");
    const kind = to === null ? "broadcast" : "targeted";
    const ids = to === null ? [...sockets.keys()] : [Number(to)];
    for (const id of ids) {
      const action = fault(kind, seq, id);
      const socket = sockets.get(action === "next" ? id + 1 : id);
      if (action === "drop" || socket?.readyState !== WebSocket.OPEN) continue;
      socket.send(content);
      if (action === "twice") socket.send(content);
    }
    return new Response("ok\n");
  });
}

async function soak(fault: Fault): Promise<SoakResult> {
  await using server = fakeSystem(fault);
  const port = server.addr.port;
  const spec: SoakSpec = {
    hostname: "127.0.0.1",
    wsPort: port,
    publishPort: port,
    clients: 20,
    churnPerSec: 10,
    broadcastsPerSec: 20,
    targetedPerSec: 50,
    durationMs: 1500,
    contentBytes: 64,
    connectBatch: 20,
    publishConnections: 4,
    pipeline: 2,
    lingerMs: 300,
    quietMs: 300,
    readBufferBytes: 4096,
  };
  return await runLoadProcess<SoakResult>(spec, {
    script: "bench/soak_load.ts",
    timeout: 20_000,
    onConnected: () => Promise.resolve(),
    onResult: () => Promise.resolve(),
  });
}

Deno.test("a system that keeps its promises: nothing lost, duplicated or misdirected, clients come and go", async () => {
  const result = await soak(() => "send");
  assert.equal(result.lost, 0, JSON.stringify(result.lostSample));
  assert.equal(result.duplicates, 0);
  assert.equal(result.misdirected, 0);
  assert.equal(result.failedPublishes, 0);
  assert.equal(result.clients, 20);
  assert.ok(result.left > 0 && result.joined === result.left, `left ${result.left}, joined ${result.joined}`);
  assert.ok(result.checkedBroadcastDeliveries > 0 && result.checkedTargetedDeliveries > 0);
});

Deno.test("broadcasts dropped for some connections are counted lost", async () => {
  const result = await soak((kind, seq, connection) =>
    kind === "broadcast" && seq % 5 === 0 && connection % 2 === 0 ? "drop" : "send"
  );
  assert.ok(result.lostBroadcast > 0, `lost ${result.lostBroadcast}`);
  assert.equal(result.lostTargeted, 0);
  assert.equal(result.lostSample[0]?.kind, "broadcast");
  assert.equal(Number(result.lostSample[0]?.connection) % 2, 0);
});

Deno.test("targeted sends delivered twice are duplicates; to the next connection, misdirected and lost", async () => {
  const twice = await soak((kind, seq) => kind === "targeted" && seq % 7 === 0 ? "twice" : "send");
  assert.ok(twice.duplicates > 0, `duplicates ${twice.duplicates}`);
  assert.equal(twice.lost, 0);
  const astray = await soak((kind, seq) => kind === "targeted" && seq % 7 === 0 ? "next" : "send");
  assert.ok(astray.misdirected > 0, `misdirected ${astray.misdirected}`);
  assert.ok(astray.lostTargeted > 0, `lost ${astray.lostTargeted}`);
});
