/**
 * Starts Debian's `redis-server` for the tests: on a free loopback port,
 * without persistence (`--save '' --appendonly no`), its working directory
 * a temporary one removed when it is disposed. It can be stopped and started
 * again on the same port, as a Redis that restarted.
 *
 * @module
 */

import { freePort } from "../channel/testing.ts";
import { type Service, startCommand } from "./_service.ts";

/** Options for {@linkcode startRedis}. */
export interface RedisOptions {
  /** Asks clients for this password (`--requirepass`). @default {none} */
  password?: string;
  /**
   * Serves TLS only, with these PEM files (paths), instead of plain TCP;
   * with `clientAuth`, only to clients with a certificate signed by `caFile`.
   * @default {plain TCP}
   */
  tls?: { certFile: string; keyFile: string; caFile: string; clientAuth?: boolean };
}

/** A running `redis-server`. */
export interface TestRedis extends AsyncDisposable {
  /** Its port on 127.0.0.1; it keeps it across {@linkcode TestRedis.restart}. */
  readonly port: number;
  /** `redis://127.0.0.1:PORT` (or `rediss://` with TLS). */
  readonly address: string;
  /** Every line the current process logged. */
  readonly lines: string[];
  /** Stops the server (SIGKILL: as a crash, nothing saved). */
  stop(): Promise<void>;
  /**
   * Starts it again on the same port, with nothing kept: it resolves once it
   * accepts connections. Over TLS, `clientAuth` changes whether it asks
   * clients for a certificate.
   */
  start(changes?: { clientAuth?: boolean }): Promise<void>;
  /** Runs `redis-cli` against it with these arguments and returns its output. */
  cli(...args: string[]): Promise<string>;
}

/**
 * Starts `redis-server` and resolves once it accepts connections.
 *
 * @example
 * ```ts
 * import { startRedis } from "./_redis.ts";
 * import { openBus } from "../shared/open_bus.ts";
 *
 * await using redis = await startRedis();
 * await using bus = openBus(redis.address);
 * ```
 */
export async function startRedis(options: RedisOptions = {}): Promise<TestRedis> {
  const dir = await Deno.makeTempDir({ prefix: "redis-test-" });
  const port = freePort();
  let clientAuth = options.tls?.clientAuth ?? false;
  const args = (): string[] => [
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    dir,
    "--loglevel",
    "notice",
    ...(options.password === undefined ? [] : ["--requirepass", options.password]),
    ...(options.tls === undefined ? ["--port", String(port)] : [
      "--port",
      "0",
      "--tls-port",
      String(port),
      "--tls-cert-file",
      options.tls.certFile,
      "--tls-key-file",
      options.tls.keyFile,
      "--tls-ca-cert-file",
      options.tls.caFile,
      "--tls-auth-clients",
      clientAuth ? "yes" : "no",
    ]),
  ];
  let server: Service | null = null;
  const start = async (changes: { clientAuth?: boolean } = {}) => {
    clientAuth = changes.clientAuth ?? clientAuth;
    server = startCommand("redis", ["redis-server", ...args()]);
    await server.waitForLine(/Ready to accept connections/);
  };
  const stop = async () => {
    const running = server;
    server = null;
    if (running) await running.stop("SIGKILL");
  };
  try {
    await start();
  } catch (error) {
    await stop();
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
  return {
    port,
    address: `${options.tls ? "rediss" : "redis"}://127.0.0.1:${port}`,
    get lines() {
      return server?.lines ?? [];
    },
    stop,
    start,
    async cli(...cliArgs: string[]) {
      const auth = options.password === undefined ? [] : ["--no-auth-warning", "-a", options.password];
      const { stdout, stderr, success } = await new Deno.Command("redis-cli", {
        args: ["-h", "127.0.0.1", "-p", String(port), ...auth, ...cliArgs],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(stdout).trim();
      if (!success) throw new Error(`redis-cli ${cliArgs.join(" ")} failed: ${new TextDecoder().decode(stderr)}`);
      return text;
    },
    async [Symbol.asyncDispose]() {
      await stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}
