import assert from "node:assert/strict";
import { startOriginal, waitOriginalRouted } from "./_services.ts";
import { until } from "../channel/testing.ts";

Deno.test("startOriginal leaves out an original that does not route in time, instead of failing the run", async () => {
  // With no time to route, an original that starts (php and its sources
  // here) is stopped and reported like a missing one (as on a machine
  // without them): either way the benchmark goes on without it.
  const started = await startOriginal({ timeout: 0 });
  if ("services" in started) {
    await started.services[Symbol.asyncDispose]();
    assert.fail("the original was taken as routed with no time to route");
  }
  assert.match(started.reason, /^The original did not route a broadcast to its \d+ pusher processes|is missing/);
});

Deno.test("waitOriginalRouted waits for a pusher process that starts accepting after the first has taken dozens of connections", async () => {
  // A stand-in for the original's two pusher processes and publisher: the
  // first 40 connections are greeted by worker a (worker b not yet in its
  // accept loop), later ones by a and b in turn; a GET /?content= goes to
  // every open socket.
  const sockets = new Set<WebSocket>();
  let connections = 0;
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    if (req.headers.get("upgrade") !== "websocket") {
      const content = new URL(req.url).searchParams.get("content") ?? "";
      for (const socket of sockets) socket.send(content);
      return new Response("ok");
    }
    const { socket, response } = Deno.upgradeWebSocket(req);
    const id = ++connections;
    const worker = id <= 40 || id % 2 === 0 ? "a" : "b";
    socket.onopen = () => {
      sockets.add(socket);
      socket.send(`workerID:${worker} connectionID:${id} connected\n`);
    };
    socket.onclose = () => sockets.delete(socket);
    return response;
  });
  const port = server.addr.port;
  await waitOriginalRouted(port, port, 2, 10_000);
  assert.ok(connections > 40, `${connections} connections`);
  await until(() => sockets.size === 0, 5000, "the probe's sockets to close");
});
