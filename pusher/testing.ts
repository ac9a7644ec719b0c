/**
 * Test helpers for the pusher: a WebSocket client that records what it
 * receives, with deadlines on every wait.
 *
 * @module
 */

import assert from "node:assert/strict";
import { until, within } from "../channel/testing.ts";

/** A browser-like client: Deno's own WebSocket. */
export class Client implements AsyncDisposable {
  readonly ws: WebSocket;
  readonly port: number;
  readonly messages: string[] = [];
  readonly closed: Promise<CloseEvent>;
  #wake = () => {};

  constructor(port: number, protocols?: string[], path = "/", hostname = "127.0.0.1") {
    this.ws = new WebSocket(`ws://${hostname}:${port}${path}`, protocols);
    this.port = port;
    this.ws.onmessage = (event) => {
      this.messages.push(event.data);
      this.#wake();
    };
    this.closed = new Promise((resolve) => (this.ws.onclose = resolve));
  }

  /** Waits until `n` messages arrived, and returns them. */
  async received(n: number, ms = 5000): Promise<string[]> {
    await within(
      new Promise<void>((resolve) => {
        this.#wake = () => this.messages.length >= n && resolve();
        this.#wake();
      }),
      ms,
      `${n} messages (got ${JSON.stringify(this.messages)})`,
    );
    return this.messages;
  }

  /** Sends a client command and returns the frame that answers its id, parsed. */
  async ask(command: { id: number } & Record<string, unknown>, ms = 5000): Promise<unknown> {
    const before = this.messages.length;
    this.ws.send(JSON.stringify(command));
    const answer = () => this.messages.slice(before).find((m) => m.startsWith(`{"id":${command.id},`));
    await until(() => answer() !== undefined, ms, `the answer to command ${command.id}`);
    return JSON.parse(answer()!);
  }

  /** The worker and connection ids of the greeting. */
  async address(): Promise<{ worker: string; connection: number }> {
    const [greeting] = await this.received(1);
    const match = /^workerID:(\S+) connectionID:(\d+) connected\n$/.exec(greeting!);
    assert.ok(match, `greeting ${JSON.stringify(greeting)}`);
    return { worker: match[1]!, connection: Number(match[2]) };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.close();
    await within(this.closed, 5000, "the client to close");
  }
}
