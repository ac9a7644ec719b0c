/**
 * One keep-alive HTTP/1.1 connection to a publish API, with pipelining: up
 * to `pipeline` requests in flight, new ones written in one batch as soon as
 * answers free room. Requests are built at write time, so the timestamp a
 * content carries is when it went out.
 *
 * @module
 */

import { type HttpAnswer, ResponseParser } from "./_http_responses.ts";

/** Where a {@linkcode PublishConnection} gets its requests and reports answers. */
export interface PublishSource {
  /** The next request's sequence number, or null when none is due now. */
  take(): number | null;
  /** The request text for `seq`, built now (its content carries the send time). */
  request(seq: number): string;
  /** The answer to `seq`; status 0 when the connection ended without one. */
  answer(seq: number, answer: HttpAnswer): void;
}

/** Options for {@linkcode PublishConnection.open}. */
export interface PublishConnectionOptions {
  /** Server host. Required. */
  hostname: string;
  /** Server port. Required. */
  port: number;
  /** Requests in flight at most. @default {32} */
  pipeline?: number;
  /** Hand 2xx answers' bodies to the source too (a batch's replies). @default {false} */
  keepBodies?: boolean;
}

/** Where a generator publishes, and over how many connections: what every generator's spec says. */
export interface PublishSpec {
  hostname: string;
  publishPort: number;
  publishConnections: number;
  pipeline?: number;
  /** Publishes per request through `POST /api/batch`; 0 or absent: one `GET` each, whose answer needs no body. */
  batch?: number;
}

/** Opens `spec.publishConnections` keep-alive connections to the publisher, each taking work from `source`. */
export function openPublishConnections(source: PublishSource, spec: PublishSpec): Promise<PublishConnection[]> {
  const options = {
    hostname: spec.hostname,
    port: spec.publishPort,
    pipeline: spec.pipeline,
    keepBodies: (spec.batch ?? 0) > 0,
  };
  return Promise.all(Array.from({ length: spec.publishConnections }, () => PublishConnection.open(source, options)));
}

const encoder = new TextEncoder();

/**
 * A pipelined publish connection. Call {@linkcode PublishConnection.pump}
 * whenever the source may have new requests due.
 *
 * @example
 * ```ts
 * import { PublishConnection, type PublishSource } from "./_publish_connection.ts";
 *
 * let next = 0;
 * const source: PublishSource = {
 *   take: () => (next < 10 ? next++ : null),
 *   request: (seq) => `GET /?content=${seq} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`,
 *   answer: (seq, { status }) => console.log(seq, status),
 * };
 * await using connection = await PublishConnection.open(source, { hostname: "127.0.0.1", port: 4237 });
 * connection.pump();
 * ```
 */
export class PublishConnection implements AsyncDisposable {
  readonly #conn: Deno.TcpConn;
  readonly #source: PublishSource;
  readonly #pipeline: number;
  readonly #parser: ResponseParser;
  /** Sequence numbers written and not yet answered, oldest first. */
  readonly #inflight: number[] = [];
  #writing = false;
  #ended = false;
  #done: Promise<void> = Promise.resolve();

  private constructor(conn: Deno.TcpConn, source: PublishSource, pipeline: number, keepBodies: boolean) {
    this.#conn = conn;
    this.#parser = new ResponseParser({ keepBodies });
    this.#source = source;
    this.#pipeline = pipeline;
  }

  /** Connects; answers are read from then on. */
  static async open(source: PublishSource, options: PublishConnectionOptions): Promise<PublishConnection> {
    const conn = await Deno.connect({ hostname: options.hostname, port: options.port });
    conn.setNoDelay(true);
    const connection = new PublishConnection(conn, source, options.pipeline ?? 32, options.keepBodies ?? false);
    connection.#done = connection.#read();
    return connection;
  }

  /**
   * Writes as many due requests as the pipeline has room for, in one write;
   * with `upTo`, only until that many are in flight.
   */
  pump(upTo: number = this.#pipeline): void {
    if (this.#writing || this.#ended) return;
    let text = "";
    while (this.#inflight.length < Math.min(upTo, this.#pipeline)) {
      const seq = this.#source.take();
      if (seq === null) break;
      this.#inflight.push(seq);
      text += this.#source.request(seq);
    }
    if (text === "") return;
    this.#writing = true;
    this.#writeAll(encoder.encode(text)).then(() => {
      this.#writing = false;
      this.pump();
    }, () => this.#end("write failed"));
  }

  /** Closes the connection; requests still in flight are answered with status 0. Closing twice is harmless. */
  async close(): Promise<void> {
    this.#end("closed by the generator");
    await this.#done;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(16 * 1024);
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        for (const answer of this.#parser.push(buffer.subarray(0, n))) {
          const seq = this.#inflight.shift();
          if (seq === undefined) throw new SyntaxError("Cannot match an answer: no request is in flight");
          this.#source.answer(seq, answer);
        }
        this.pump();
      }
      this.#end("connection closed by the server");
    } catch (error) {
      this.#end(`connection failed: ${(error as Error).message}`);
    }
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    let written = 0;
    while (written < bytes.length) written += await this.#conn.write(bytes.subarray(written));
  }

  #end(reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    for (const seq of this.#inflight.splice(0)) this.#source.answer(seq, { status: 0, body: `no answer: ${reason}` });
  }
}
