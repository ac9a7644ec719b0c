/**
 * TLS clients that stall their handshake, for the tests that check a TLS
 * server really closes them: plain TCP connections that send nothing, half
 * a ClientHello, or a whole one and then never their Finished. A server that
 * only forgets such a connection, without closing its socket, keeps a
 * descriptor per client for good (Deno 2.9.6's TLS listeners did).
 *
 * @module
 */

import { within } from "../channel/testing.ts";

/** How far a stalled client gets: nothing sent, half a ClientHello, or all of it and no more. */
export type Stall = "silent" | "half-hello" | "hello";

/** Every {@linkcode Stall}. */
export const STALLS: readonly Stall[] = ["silent", "half-hello", "hello"];

/**
 * A real TLS ClientHello, as `Deno.connectTls` sends it: caught by a plain
 * TCP listener that answers nothing.
 */
export async function clientHello(): Promise<Uint8Array> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connecting = Deno.connectTls({ hostname: "127.0.0.1", port: listener.addr.port }).catch(() => null);
  using conn = await listener.accept();
  const buffer = new Uint8Array(16 * 1024);
  const n = await within(conn.read(buffer), 5000, "the ClientHello");
  conn.close();
  (await connecting)?.close();
  return buffer.slice(0, n ?? 0);
}

/**
 * Opens `count` TCP connections to `port` on 127.0.0.1 that stall their TLS
 * handshake at `stall`. The caller closes them (or waits for the server to).
 */
export async function openStalled(port: number, count: number, stall: Stall): Promise<Deno.TcpConn[]> {
  const hello = stall === "silent" ? new Uint8Array() : await clientHello();
  const sent = stall === "half-hello" ? hello.subarray(0, hello.length >> 1) : hello;
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < count; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conns.push(conn);
    if (sent.length > 0) await conn.write(sent);
  }
  return conns;
}

/**
 * Resolves once the server has closed every one of `conns` (each read ends
 * with end of stream or a reset; what the server sent before is skipped),
 * and closes them; rejects, naming `what`, when one is still open after
 * `ms`.
 */
export async function closedByServer(conns: Deno.TcpConn[], ms: number, what: string): Promise<void> {
  const buffer = new Uint8Array(16 * 1024);
  const ended = async (conn: Deno.TcpConn): Promise<void> => {
    try {
      while (await conn.read(buffer) !== null) {
        // the server's half of the handshake: not what is waited for
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
    }
  };
  let open = conns.length;
  try {
    await within(
      Promise.all(conns.map((conn) => ended(conn).then(() => open--))),
      ms,
      `the server to close ${what} (${conns.length} connections)`,
    ).catch((error: Error) => {
      throw new Error(`${error.message}: ${open} still open`);
    });
  } finally {
    for (const conn of conns) {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  }
}

/** How many descriptors process `pid` has open (Linux, `/proc`). */
export async function openDescriptors(pid: number): Promise<number> {
  let count = 0;
  for await (const _ of Deno.readDir(`/proc/${pid}/fd`)) count++;
  return count;
}
