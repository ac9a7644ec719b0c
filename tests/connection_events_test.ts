/**
 * Connection events end to end, as real processes started from their tasks:
 * a hub, a pusher with `--connection-events` and tokens, a publisher with an
 * API key, and a backend reading `GET /api/events` while browsers' stand-ins
 * come and go.
 */

import assert from "node:assert/strict";
import { startPusherOnHub, startService } from "./_service.ts";
import { Client } from "../pusher/testing.ts";
import { within } from "../channel/testing.ts";
import { signJwt } from "../shared/jwt.ts";

const SECRET = "events-e2e-secret";
const API_KEY = "events-e2e-key";

/** One server-sent event: its name and its data, parsed. */
interface Sent {
  event: string;
  data: Record<string, unknown>;
}

/** Reads the server-sent events of a stream, one at a time, each within a deadline. */
class EventReader {
  readonly #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";

  constructor(body: ReadableStream<Uint8Array>) {
    this.#reader = body.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next event with a name (comments and `retry:` skipped). */
  next(what: string): Promise<Sent> {
    return within(this.#next(), 10_000, what);
  }

  async #next(): Promise<Sent> {
    for (;;) {
      const end = this.#buffer.indexOf("\n\n");
      if (end >= 0) {
        const block = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event !== undefined && data !== undefined) return { event, data: JSON.parse(data) };
        continue;
      }
      const { value, done } = await this.#reader.read();
      if (done) throw new Error(`The event stream ended; it held ${JSON.stringify(this.#buffer)}`);
      this.#buffer += value;
    }
  }

  cancel(): Promise<void> {
    return this.#reader.cancel();
  }
}

Deno.test("connection events end to end: a backend hears each greeted connection come and go, with its user and close code", async () => {
  await using hub = await startService("channel", ["--port", "0", "--startup-grace", "0"]);
  const hubArgs = ["--hub", `127.0.0.1:${await hub.port()}`];
  const started = await startPusherOnHub(hubArgs[1]!, {
    args: ["--connection-events"],
    env: { PUSHER_TOKEN_SECRET: SECRET },
  });
  await using _pusher = started.service;
  const pusherPort = started.port;
  await using publisher = await startService("publisher", ["--port", "0", ...hubArgs], {
    env: { PUBLISHER_API_KEY: API_KEY },
  });
  const events = `http://127.0.0.1:${await publisher.port()}/api/events`;

  const refused = await fetch(events);
  assert.equal(refused.status, 401);
  assert.match((await refused.json()).error.message, /needs an API key/);

  const response = await fetch(events, { headers: { authorization: `Bearer ${API_KEY}` } });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-type"), "text/event-stream;charset=utf-8");
  const stream = new EventReader(response.body!);
  try {
    const token = signJwt({ sub: "alice", exp: Math.floor(Date.now() / 1000) + 600 }, SECRET);
    const alice = new Client(pusherPort, undefined, `/?token=${token}`);
    const { worker, connection } = await alice.address();
    const address = { worker_id: worker, connection_id: connection, user: "alice" };
    assert.deepEqual(await stream.next("alice's connect"), { event: "connect", data: address });

    alice.ws.close(1000, "bye");
    await alice.closed;
    assert.deepEqual(await stream.next("alice's disconnect"), {
      event: "disconnect",
      data: { ...address, code: 1000, reason: "client_closed" },
    });

    // The backend ends a connection (`/api/disconnect`): its code comes back in the event.
    const bob = new Client(pusherPort, undefined, `/?token=${signJwt({ sub: "bob", exp: 1e10 }, SECRET)}`);
    const bobs = await bob.address();
    assert.equal((await stream.next("bob's connect")).data.user, "bob");
    const disconnect = await fetch(events.replace("/events", "/disconnect"), {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ user: "bob", code: 4001, reason: "banned" }),
    });
    assert.equal(disconnect.status, 200, await disconnect.text());
    assert.equal((await bob.closed).code, 4001);
    assert.deepEqual(await stream.next("bob's disconnect"), {
      event: "disconnect",
      data: { worker_id: bobs.worker, connection_id: bobs.connection, user: "bob", code: 4001, reason: "closed" },
    });
  } finally {
    await stream.cancel();
  }
});
