import assert from "node:assert/strict";
import { ConnectionEventStreams } from "./connection_events.ts";
import { Rejection } from "./_rejection.ts";
import { CONNECTIONS_SUBJECT } from "../shared/address.ts";
import type { Bus } from "../shared/bus.ts";
import { createLogger } from "../shared/log.ts";
import { MemoryBroker } from "../shared/memory_bus.ts";

// `GET /api/events` behind the route: the streams against an in-memory bus.

const INFO = { worker_id: "1f3a9c2e7b4d0a55", connection_id: 7, user: "alice" };
const decoder = new TextDecoder();

function setUp(options: { maxStreams?: number; maxQueued?: number } = {}) {
  const broker = new MemoryBroker();
  const logs: string[] = [];
  const streams = new ConnectionEventStreams(broker.connect(), {
    ...options,
    logger: createLogger("publisher", { sink: (line) => logs.push(line) }),
  });
  // What a pusher worker's link would publish on.
  const pusher = broker.connect();
  return { streams, pusher, logs };
}

/** Everything a stream holds until it ends, as text. */
async function readAll(response: Response): Promise<string> {
  return await response.text();
}

/** The next chunk of a stream, as text. */
async function next(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<string> {
  const { value, done } = await reader.read();
  assert.ok(!done, "the stream goes on");
  return decoder.decode(value);
}

Deno.test("event streams pass connect and disconnect events as server-sent events, and drop what is not one", async () => {
  const { streams, pusher, logs } = setUp();
  const response = await streams.open({ "access-control-allow-origin": "*" });
  assert.equal(response.headers.get("content-type"), "text/event-stream;charset=utf-8");
  assert.equal(response.headers.get("access-control-allow-origin"), "*");
  const reader = response.body!.getReader();
  assert.equal(await next(reader), "retry: 2000\n: connection events follow\n\n");
  assert.equal((await pusher.publish(CONNECTIONS_SUBJECT, { connect: INFO })).reached, 1, "subscribed once open");
  assert.equal(await next(reader), `event: connect\ndata: ${JSON.stringify(INFO)}\n\n`);
  await pusher.publish(CONNECTIONS_SUBJECT, { connect: { ...INFO, worker_id: "not a worker" } });
  const ended = { ...INFO, code: 4401, reason: "expired" };
  await pusher.publish(CONNECTIONS_SUBJECT, { disconnect: ended });
  assert.equal(await next(reader), `event: disconnect\ndata: ${JSON.stringify(ended)}\n\n`);
  assert.match(logs.join("\n"), /dropped a malformed connection event/);
  await reader.cancel();
  assert.equal(streams.size, 0);
  assert.equal((await pusher.publish(CONNECTIONS_SUBJECT, { connect: INFO })).reached, 0, "unsubscribed with the last");
  streams.close();
});

Deno.test("event streams refuse one past maxStreams with 429, and any once closed with 503", async () => {
  const { streams } = setUp({ maxStreams: 1 });
  const open = await streams.open({});
  await assert.rejects(streams.open({}), (error: Rejection) => {
    assert.equal(error.status, 429);
    assert.equal(error.message, "Too many event streams: 1 are open");
    return true;
  });
  streams.close();
  assert.equal(await readAll(open), "retry: 2000\n: connection events follow\n\n", "closed: the stream ends");
  await assert.rejects(streams.open({}), (error: Rejection) => error.status === 503);
});

Deno.test("an event stream whose reader falls maxQueued events behind is told it missed some, and ends", async () => {
  const { streams, pusher } = setUp({ maxQueued: 3 });
  const slow = await streams.open({});
  for (let id = 1; id <= 5; id++) {
    await pusher.publish(CONNECTIONS_SUBJECT, { connect: { ...INFO, connection_id: id } });
  }
  assert.equal(streams.size, 0, "ended, not holding more");
  const events = (await readAll(slow)).split("\n\n").filter(Boolean);
  assert.deepEqual(events, [
    "retry: 2000\n: connection events follow",
    `event: connect\ndata: ${JSON.stringify({ ...INFO, connection_id: 1 })}`,
    `event: connect\ndata: ${JSON.stringify({ ...INFO, connection_id: 2 })}`,
    'event: error\ndata: {"message":"Too slow: over 3 events waited; some were dropped"}',
  ]);
});

Deno.test("an event stream is refused with 503 when the bus does not confirm the subscription, and keeps none", async () => {
  const calls: string[] = [];
  const bus = {
    subscribe: (subject: string) => (calls.push(`subscribe ${subject}`), new Promise<void>(() => {})),
    unsubscribe: (subject: string) => void calls.push(`unsubscribe ${subject}`),
  } as unknown as Bus;
  const streams = new ConnectionEventStreams(bus, { subscribeTimeout: 20, logger: createLogger("publisher") });
  await assert.rejects(streams.open({}), (error: Rejection) => {
    assert.equal(error.status, 503);
    assert.match(error.message, /did not confirm a subscription within 20 ms/);
    return true;
  });
  assert.deepEqual(calls, [`subscribe ${CONNECTIONS_SUBJECT}`, `unsubscribe ${CONNECTIONS_SUBJECT}`]);
});
