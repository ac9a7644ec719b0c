/**
 * A TCP relay between a service and its bus that a test can cut, as a
 * network blip between them: every relayed connection is closed at once
 * and new ones are refused until the test restores it.
 *
 * @module
 */

/** A relay on a free loopback port to `127.0.0.1:target`. */
export class LinkCutter implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  readonly #target: number;
  readonly #conns = new Set<Deno.Conn>();
  readonly #pipes = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;
  #cut = false;

  constructor(target: number) {
    this.#target = target;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#accepting = this.#accept();
  }

  /** The relay's port: give the service `127.0.0.1:<port>` as its bus. */
  get port(): number {
    return this.#listener.addr.port;
  }

  /** Closes every relayed connection, and refuses new ones until {@linkcode LinkCutter.restore}. */
  cut(): void {
    this.#cut = true;
    for (const conn of this.#conns) closeQuietly(conn);
    this.#conns.clear();
  }

  /** Relays new connections again. */
  restore(): void {
    this.#cut = false;
  }

  async #accept(): Promise<void> {
    for await (const conn of this.#listener) {
      if (this.#cut) {
        closeQuietly(conn);
        continue;
      }
      let upstream: Deno.Conn;
      try {
        upstream = await Deno.connect({ hostname: "127.0.0.1", port: this.#target });
      } catch {
        closeQuietly(conn);
        continue;
      }
      this.#conns.add(conn).add(upstream);
      for (const [from, to] of [[conn, upstream], [upstream, conn]] as const) {
        const pipe = this.#pipe(from, to);
        this.#pipes.add(pipe);
        void pipe.finally(() => this.#pipes.delete(pipe));
      }
    }
  }

  async #pipe(from: Deno.Conn, to: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await from.read(buffer);
        if (n === null) break;
        for (let written = 0; written < n;) written += await to.write(buffer.subarray(written, n));
      }
    } catch {
      // Cut, or the other side went.
    }
    for (const conn of [from, to]) {
      closeQuietly(conn);
      this.#conns.delete(conn);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.cut();
    this.#listener.close();
    await this.#accepting.catch(() => {});
    await Promise.all(this.#pipes);
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
