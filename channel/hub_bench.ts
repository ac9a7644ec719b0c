/**
 * Micro-benchmarks of the hub's routing, with no sockets: peers that take
 * every frame and do nothing. `deno task bench:micro`.
 */

import { Hub, type Peer } from "./hub.ts";

const DATA = { content: "0123456789abcdef".repeat(4) };

function noopPeer(): Peer {
  return { send: () => true, flushed: () => Promise.resolve(true) };
}

function hubWithSubscribers(count: number): Hub {
  const hub = new Hub();
  for (let i = 0; i < count; i++) {
    const peer = noopPeer();
    hub.join(peer);
    hub.subscribe(peer, ["broadcast"]);
  }
  return hub;
}

for (const subscribers of [1, 10, 1000]) {
  const hub = hubWithSubscribers(subscribers);
  Deno.bench(`Hub.publish to ${subscribers} subscriber${subscribers === 1 ? "" : "s"}`, {
    group: "publish",
    baseline: subscribers === 1,
  }, () => {
    hub.publish(["broadcast"], DATA);
  });
}

{
  const hub = hubWithSubscribers(10);
  Deno.bench("Hub.publishLoop over 10 subscribers", { group: "publish" }, () => {
    hub.publishLoop(["broadcast"], DATA);
  });
}

{
  const hub = new Hub();
  const consumer = noopPeer();
  hub.join(consumer);
  hub.watch(consumer, ["tasks"]);
  Deno.bench("Hub.enqueue then reserve: one message through a watched queue", { group: "queue" }, () => {
    hub.enqueue(["tasks"], DATA);
    hub.reserve(consumer);
  });
}
