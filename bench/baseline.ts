/**
 * The benchmark's baseline: the least a Deno program can do to push, in one
 * isolate. `Deno.serve` plus `Deno.upgradeWebSocket`, one `socket.send` per
 * client, no hub, no workers, no limits. Same API as the push system, on
 * one port for both, so the load generator does not care which it drives:
 *
 * - WebSocket on `/`, greeted with `workerID:0 connectionID:<c> connected\n`;
 * - `GET /?content=X` sends X to every socket and answers `ok`;
 * - `GET /?to_worker_id=0&to_connection_id=C&content=X` sends X to one
 *   (404 when there is no such connection);
 * - a client's text frame `{"id":N,"subscribe":{"channel":"news"}}` (or
 *   `unsubscribe`) is answered `{"id":N,"result":{}}`, and
 *   `GET /?channel=news&content=X` sends `{"channel":"news","data":"X"}` to
 *   the channel's members: the pusher's channel protocol, without its
 *   checks or limits;
 * - `POST /api/batch` `{"commands":[{"publish":{"channel"|"worker_id"+"connection_id"|nothing, "data"}}]}`
 *   does each publish as the `GET` above would and answers
 *   `{"replies":[{"result":{}}|{"error":{...}}]}`, in order: the
 *   server API's batch, as the benchmark uses it.
 *
 * ```sh
 * deno run --allow-net=127.0.0.1 bench/baseline.ts --port 4240
 * ```
 *
 * @module
 */

import { createLogger } from "../shared/log.ts";
import { helpText, intFlag, onShutdownSignal, parseFlags } from "../shared/cli.ts";

/** The baseline's default port. */
export const DEFAULT_BASELINE_PORT = 4240;

const FLAGS = {
  port: {
    type: "string" as const,
    arg: "PORT",
    help: "port for WebSockets and publishes; 0 picks a free one",
    default: "4240",
  },
  help: { type: "boolean" as const, help: "show this help" },
};

/**
 * Creates the baseline's handler: WebSocket upgrades and publishes on `/`.
 *
 * @example
 * ```ts
 * import { createBaselineHandler } from "./baseline.ts";
 *
 * Deno.serve({ port: 4240 }, createBaselineHandler());
 * ```
 */
export function createBaselineHandler(): (req: Request) => Response | Promise<Response> {
  const sockets = new Map<number, WebSocket>();
  const channels = new Map<string, Set<WebSocket>>();
  let nextId = 1;
  return (req) => {
    if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      const id = nextId++;
      socket.onopen = () => {
        sockets.set(id, socket);
        socket.send(`workerID:0 connectionID:${id} connected\n`);
      };
      const joined = new Set<string>();
      socket.onmessage = (event) => {
        const command = JSON.parse(event.data);
        const channel: string = (command.subscribe ?? command.unsubscribe).channel;
        if (command.subscribe) {
          joined.add(channel);
          let members = channels.get(channel);
          if (!members) channels.set(channel, members = new Set());
          members.add(socket);
        } else {
          joined.delete(channel);
          channels.get(channel)?.delete(socket);
        }
        socket.send(`{"id":${command.id},"result":{}}`);
      };
      socket.onclose = () => {
        sockets.delete(id);
        for (const channel of joined) channels.get(channel)?.delete(socket);
      };
      socket.onerror = () => {};
      return response;
    }
    const url = new URL(req.url);
    if (url.pathname === "/api/batch" && req.method === "POST") return batch(req);
    const content = url.searchParams.get("content");
    if (url.pathname !== "/" || req.method !== "GET") return new Response("Not found\n", { status: 404 });
    if (!content) return new Response("Missing content\n", { status: 400 });
    const connection = url.searchParams.get("to_connection_id");
    const sent = publish(
      content,
      url.searchParams.get("channel"),
      connection === null ? null : { worker: url.searchParams.get("to_worker_id"), connection: Number(connection) },
    );
    return sent ? new Response("ok") : new Response("No such connection\n", { status: 404 });
  };

  /** Sends to a channel's members, one connection, or everyone; false when there is no such connection. */
  function publish(content: string, channel: string | null, to: { worker: string | null; connection: number } | null) {
    if (channel !== null) {
      const frame = JSON.stringify({ channel, data: content });
      for (const socket of channels.get(channel) ?? []) socket.send(frame);
      return true;
    }
    if (to === null) {
      for (const socket of sockets.values()) socket.send(content);
      return true;
    }
    const socket = to.worker === "0" ? sockets.get(to.connection) : undefined;
    socket?.send(content);
    return socket !== undefined;
  }

  async function batch(req: Request): Promise<Response> {
    const { commands } = await req.json() as {
      commands: { publish: { channel?: string; worker_id?: string; connection_id?: number; data: string } }[];
    };
    const replies = commands.map(({ publish: p }) => {
      const to = p.connection_id === undefined ? null : { worker: p.worker_id ?? null, connection: p.connection_id };
      return publish(p.data, p.channel ?? null, to)
        ? { result: {} }
        : { error: { code: 404, message: "No such connection" } };
    });
    return Response.json({ replies });
  }
}

/** Serves the baseline until SIGINT or SIGTERM; returns the exit code. */
export async function main(args: string[] = Deno.args): Promise<number> {
  const logger = createLogger("baseline");
  let port: number;
  try {
    const flags = parseFlags(args, FLAGS);
    if (flags.help) {
      console.log(helpText("deno run --allow-net=127.0.0.1 bench/baseline.ts [options]", "Benchmark baseline.", FLAGS));
      return 0;
    }
    port = intFlag(flags, "port", DEFAULT_BASELINE_PORT);
  } catch (error) {
    logger.error((error as Error).message);
    return 2;
  }
  let server: Deno.HttpServer;
  try {
    server = Deno.serve({
      hostname: "127.0.0.1",
      port,
      onListen: (addr) => logger.info("listening", { addr: `${addr.hostname}:${addr.port}` }),
    }, createBaselineHandler());
  } catch (error) {
    logger.error(`Cannot listen on 127.0.0.1:${port}: ${(error as Error).message}`);
    return 2;
  }
  await new Promise<Deno.Signal>((resolve) => onShutdownSignal(resolve));
  await server.shutdown();
  logger.info("stopped");
  return 0;
}

if (import.meta.main) Deno.exit(await main());
