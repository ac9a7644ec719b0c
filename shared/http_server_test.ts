import assert from "node:assert/strict";
import fc from "fast-check";
import {
  BodyTooLargeError,
  type HttpHandler,
  type HttpServerOptions,
  type RawRequest,
  type RefusalForm,
  serveHttp,
} from "./http_server.ts";
import { share, text } from "./http.ts";
import { createLogger } from "./log.ts";
import { until, within } from "../channel/testing.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A server on a free port that logs into `logs`. */
function start(options: HttpServerOptions, handler: HttpHandler, logs: string[] = []) {
  const logger = createLogger("http", { level: "info", sink: (line) => logs.push(line) });
  return serveHttp({ port: 0, logger, ...options }, handler);
}

async function connect(port: number): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: "127.0.0.1", port });
}

async function send(conn: Deno.Conn, text: string | Uint8Array): Promise<void> {
  const bytes = typeof text === "string" ? encoder.encode(text) : text;
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

/** One response as read off the wire. */
interface Answer {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** Reads and parses answers from a raw connection, across reads. */
class Reader {
  readonly #conn: Deno.Conn;
  #text = "";
  #ended = false;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** The next answer, within 5 s; null if the connection ended before one began. `head`: it answers a HEAD. */
  next(what = "an answer", head = false): Promise<Answer | null> {
    return within(this.#next(head), 5000, what);
  }

  /** Resolves once the server closed the connection, within `ms`; what came before it, unparsed. */
  async closed(ms = 5000): Promise<string> {
    await within(this.#fill(() => false), ms, "the server to close the connection");
    return this.#text;
  }

  async #next(head: boolean): Promise<Answer | null> {
    await this.#fill(() => this.#text.includes("\r\n\r\n"));
    if (!this.#text.includes("\r\n\r\n")) {
      if (this.#text === "") return null;
      throw new Error(`The connection ended inside a head: ${JSON.stringify(this.#text)}`);
    }
    const end = this.#text.indexOf("\r\n\r\n");
    const [line, ...fields] = this.#text.slice(0, end).split("\r\n");
    const headers = new Map(
      fields.map((f) => [f.slice(0, f.indexOf(":")).toLowerCase(), f.slice(f.indexOf(":") + 1).trim()]),
    );
    this.#text = this.#text.slice(end + 4);
    const status = Number(line!.split(" ")[1]);
    let body = "";
    if (head) {
      // No body, whatever its headers say.
    } else if (headers.has("content-length")) {
      const length = Number(headers.get("content-length"));
      await this.#fill(() => this.#text.length >= length);
      body = this.#text.slice(0, length);
      this.#text = this.#text.slice(length);
    } else if (headers.get("transfer-encoding") === "chunked") {
      while (true) {
        await this.#fill(() => this.#text.includes("\r\n"));
        const size = parseInt(this.#text.slice(0, this.#text.indexOf("\r\n")), 16);
        const start = this.#text.indexOf("\r\n") + 2;
        await this.#fill(() => this.#text.length >= start + size + 2);
        body += this.#text.slice(start, start + size);
        this.#text = this.#text.slice(start + size + 2);
        if (size === 0) break;
      }
    }
    return { status, headers, body };
  }

  /** Reads until `enough()` or the end of the connection. */
  async #fill(enough: () => boolean): Promise<void> {
    const buffer = new Uint8Array(65536);
    while (!enough() && !this.#ended) {
      let n: number | null;
      try {
        n = await this.#conn.read(buffer);
      } catch {
        n = null;
      }
      if (n === null) this.#ended = true;
      else this.#text += decoder.decode(buffer.subarray(0, n));
    }
  }
}

const echo: HttpHandler = async (req) => {
  const url = new URL(req.url);
  const body = req.body ? await req.text() : "";
  return text(200, `${req.method} ${url.pathname}${url.search} ${body}`);
};

Deno.test("http server keeps a connection alive across requests and answers pipelined ones in order", async () => {
  // The first answer is the slowest: the order on the wire is the order of the requests all the same.
  const delays: Record<string, number> = { "/1": 60, "/2": 0, "/3": 20 };
  await using server = start({}, async (req) => {
    const path = new URL(req.url).pathname;
    await new Promise((resolve) => setTimeout(resolve, delays[path] ?? 0));
    return text(200, path);
  });
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  await send(
    conn,
    "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
  );
  for (const path of ["/1", "/2", "/3"]) assert.equal((await reader.next())?.body, path);
  await send(conn, "GET /4 HTTP/1.1\r\nHost: a\r\n\r\n");
  const fourth = await reader.next();
  assert.equal(fourth?.body, "/4");
  assert.equal(fourth?.headers.get("connection"), undefined);
  assert.match(fourth?.headers.get("date") ?? "", /GMT$/);
  await send(conn, "GET /5 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /6 HTTP/1.1\r\nHost: a\r\n\r\n");
  const last = await reader.next();
  assert.deepEqual([last?.body, last?.headers.get("connection")], ["/5", "close"]);
  // A request after the one that asked to close is not answered.
  assert.equal(await reader.closed(), "");
});

Deno.test("http server reads Content-Length and chunked bodies, in any pieces, and answers 100 Continue when the handler reads", async () => {
  await using server = start({}, echo);
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  await send(conn, "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
  assert.equal((await reader.next())?.body, "POST /a hello");
  const chunked = "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
    "3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\n";
  for (const byte of encoder.encode(chunked)) await send(conn, new Uint8Array([byte]));
  assert.equal((await reader.next())?.body, "POST /b abc0123456789abcdef");
  await send(conn, "POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
  const interim = await reader.next("100 Continue");
  assert.equal(interim?.status, 100);
  await send(conn, "hi");
  assert.equal((await reader.next())?.body, "POST /c hi");
  // GET, HEAD: the same connection still works after all that.
  await send(conn, "HEAD /d HTTP/1.1\r\nHost: a\r\n\r\nGET /e?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
  const head = await reader.next("the answer to HEAD", true);
  assert.deepEqual([head?.status, head?.headers.get("content-length"), head?.body], [200, "8", ""]);
  assert.equal((await reader.next())?.body, "GET /e?x=1 ");
});

Deno.test("http server gives the fast path a body that came whole with its head, pipelined, and the handler the rest", async () => {
  const seen: string[] = [];
  const fastPath = (req: RawRequest) => {
    const body = req.body === null ? "no body" : decoder.decode(req.body);
    seen.push(`${req.method} ${req.target} ${body}`);
    if (req.target === "/leave") return undefined;
    // The first answer is the slowest: the order on the wire is the order of the requests all the same.
    // It says how many requests were read by then: the next ones, if they are pipelined.
    const delay = req.target === "/1" ? 50 : 0;
    return new Promise<Response>((resolve) =>
      setTimeout(() => resolve(text(200, `fast ${body}${delay > 0 ? `, ${seen.length} read` : ""}`)), delay)
    );
  };
  let handlerCalled = Promise.withResolvers<void>();
  await using server = start({ fastPath }, (req) => {
    handlerCalled.resolve();
    return echo(req);
  });
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  const post = (path: string, body: string, fields = "") =>
    `POST ${path} HTTP/1.1\r\nHost: a\r\n${fields}Content-Length: ${body.length}\r\n\r\n${body}`;
  await send(conn, post("/1", "one") + post("/2", "two") + "GET /3 HTTP/1.1\r\nHost: a\r\n\r\n");
  // All three were read before the first was answered: pipelined, as requests without a body are.
  for (const body of ["fast one, 3 read", "fast two", "fast no body"]) assert.equal((await reader.next())?.body, body);
  assert.deepEqual(seen, ["POST /1 one", "POST /2 two", "GET /3 no body"]);
  // Left by the fast path: the handler reads the same body.
  await send(conn, post("/leave", "mine"));
  assert.equal((await reader.next())?.body, "POST /leave mine");
  // A body still coming, a chunked one, one behind an expectation: the handler's, and the fast path never sees them.
  seen.length = 0;
  handlerCalled = Promise.withResolvers<void>();
  await send(conn, "POST /4 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nha");
  await within(handlerCalled.promise, 5000, "the handler to get the request whose body is still coming");
  await send(conn, "lf");
  assert.equal((await reader.next())?.body, "POST /4 half");
  await send(conn, "POST /5 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n");
  assert.equal((await reader.next())?.body, "POST /5 ab");
  await send(conn, post("/6", "xy", "Expect: 100-continue\r\n"));
  assert.equal((await reader.next())?.body, "POST /6 xy");
  assert.deepEqual(seen, []);
});

Deno.test("http server drops an unread body that came whole, and closes after the answer when one is still coming", async () => {
  await using server = start({}, () => text(404, "nope\n"));
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  await send(conn, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.1\r\nHost: a\r\n\r\n");
  assert.equal((await reader.next())?.status, 404);
  assert.equal((await reader.next())?.status, 404);
  await send(conn, "POST /z HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc");
  const answer = await reader.next();
  assert.deepEqual([answer?.status, answer?.headers.get("connection")], [404, "close"]);
  await reader.closed();
});

Deno.test("http server refuses malformed heads with a status and a one-line reason, and closes", async () => {
  await using server = start({ maxHeadBytes: 1024, maxBodyBytes: 100 }, echo);
  const cases: [string, number, RegExp][] = [
    ["GARBAGE\r\n\r\n", 400, /^Bad request line\n$/],
    ["GET / HTTP/1.1\r\n\r\n", 400, /^Missing Host header\n$/],
    ["GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, /^More than one Host header\n$/],
    ["GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, /^Bad Host header\n$/],
    ["GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400, /^Bad header line\n$/],
    ["GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400, /^Bad header line\n$/],
    ["GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, /^HTTP version not supported: HTTP\/2\.0\n$/],
    [
      "GET / HTTP/1.1\r\nHost: a\r\nX: " + "a".repeat(2000) + "\r\n\r\n",
      431,
      /^Request head too large: over 1024 bytes\n$/,
    ],
    ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", 413, /^Body too large: over the 100-byte limit\n$/],
    ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400, /^Bad Content-Length: x\n$/],
    [
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      400,
      /^Conflicting Content-Length/,
    ],
    [
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
      400,
      /^Both Content-Length and Transfer-Encoding\n$/,
    ],
    ["POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501, /^Transfer coding not supported: gzip;/],
    ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: magic\r\n\r\n", 417, /^Expectation not supported/],
    ["TRACE / HTTP/1.1\r\nHost: a\r\n\r\n", 400, /^Bad request: /],
  ];
  for (const [request, status, reason] of cases) {
    using conn = await connect(server.addr.port);
    const reader = new Reader(conn);
    await send(conn, request);
    const answer = await reader.next(`the answer to ${JSON.stringify(request.slice(0, 40))}`);
    assert.equal(answer?.status, status, request.slice(0, 60));
    assert.match(answer?.body ?? "", reason);
    if (status !== 400 || !reason.source.includes("Bad request: ")) {
      assert.equal(answer?.headers.get("connection"), "close");
    }
    if (answer?.headers.get("connection") === "close") await reader.closed();
  }
});

Deno.test("http server writes its own refusals to the paths its refusal option takes in their form, and fails a chunked body past maxBodyBytes with BodyTooLargeError", async () => {
  const refusal: RefusalForm = (status, reason, path) =>
    path.startsWith("/j/")
      ? { body: JSON.stringify({ status, reason }), headers: { "content-type": "application/json" } }
      : undefined;
  await using server = start({ maxBodyBytes: 10, maxHeadBytes: 256, headTimeout: 200, refusal }, async (req) => {
    try {
      await req.arrayBuffer();
      return text(200, "read");
    } catch (error) {
      return text(error instanceof BodyTooLargeError ? 413 : 400, `${(error as Error).message}\n`);
    }
  });
  const cases: [string, number, string][] = [
    ["POST /j/a?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", 413, "Body too large: over the 10-byte limit"],
    [
      "GET http://a/j/b HTTP/1.1\r\nHost: a\r\nX: " + "a".repeat(300) + "\r\n\r\n",
      431,
      "Request head too large: over 256 bytes",
    ],
    ["GET /j/c HTTP/1.1\r\nHo", 408, "Request head not received within 200 ms"],
    ["GET /j/d HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400, "Bad header line"],
  ];
  for (const [request, status, reason] of cases) {
    using conn = await connect(server.addr.port);
    const reader = new Reader(conn);
    await send(conn, request);
    const answer = await reader.next(`the answer to ${JSON.stringify(request.slice(0, 40))}`);
    assert.deepEqual([answer?.status, answer?.headers.get("content-type"), answer?.headers.get("connection")], [
      status,
      "application/json",
      "close",
    ]);
    assert.deepEqual(JSON.parse(answer?.body ?? ""), { status, reason });
  }
  // Another path, or no path at all: the one-line text.
  for (
    const [request, status, reason] of [
      ["POST /k HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", 413, "Body too large: over the 10-byte limit\n"],
      ["GARBAGE\r\n\r\n", 400, "Bad request line\n"],
    ] as const
  ) {
    using conn = await connect(server.addr.port);
    const reader = new Reader(conn);
    await send(conn, request);
    const plain = await reader.next();
    assert.deepEqual([plain?.status, plain?.headers.get("content-type"), plain?.body], [
      status,
      "text/plain;charset=utf-8",
      reason,
    ]);
  }
  using chunked = await connect(server.addr.port);
  await send(
    chunked,
    "POST /k HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n",
  );
  const failed = await new Reader(chunked).next();
  assert.deepEqual([failed?.status, failed?.body], [413, "Body too large: over the 10-byte limit\n"]);
});

Deno.test("http server takes only spaces and tabs as whitespace around a header value, and CRLF alone as a chunk line's end", async () => {
  await using server = start({}, async (req) => {
    try {
      return text(200, `${req.method} ${await req.text()}`);
    } catch (error) {
      return text(400, `Cannot read the body: ${(error as Error).message}\n`);
    }
  });
  const latin1 = (request: string) => Uint8Array.from(request, (c) => c.charCodeAt(0));
  const post = "POST / HTTP/1.1\r\nHost: a\r\n";
  const cases: [string, number, string][] = [
    // Spaces and tabs around a value are no part of it.
    [`${post}Content-Length: \t 2 \t\r\n\r\nhi`, 200, "POST hi"],
    [`${post}Transfer-Encoding:\tchunked \r\n\r\n2\r\nhi\r\n0\r\n\r\n`, 200, "POST hi"],
    // Other whitespace (VT, FF, NBSP) is not optional whitespace: the value is malformed.
    [`${post}Transfer-Encoding:\x0bchunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n`, 400, "Bad header value\n"],
    [`${post}Transfer-Encoding: chunked\x0c\r\n\r\n2\r\nhi\r\n0\r\n\r\n`, 400, "Bad header value\n"],
    [`${post}Transfer-Encoding: chunked\xa0\r\n\r\n2\r\nhi\r\n0\r\n\r\n`, 400, "Bad Transfer-Encoding: chunked\xa0\n"],
    [`${post}Content-Length: 2\xa0\r\n\r\nhi`, 400, "Bad Content-Length: 2\xa0\n"],
    [`${post}Content-Length:\x0b2\r\n\r\nhi`, 400, "Bad header value\n"],
    [`${post}X-Note: a\x01b\r\nContent-Length: 2\r\n\r\nhi`, 400, "Bad header value\n"],
    // A chunk's size line, its data's end and the last line end in CRLF, never in LF alone (RFC 9112 7.1).
    [
      `${post}Transfer-Encoding: chunked\r\n\r\n2\nhi\r\n0\r\n\r\n`,
      400,
      "Cannot read the body: Bad chunked body: a line that does not end in CRLF\n",
    ],
    [
      `${post}Transfer-Encoding: chunked\r\n\r\n2\r\nhi\n0\r\n\r\n`,
      400,
      "Cannot read the body: Bad chunked body: a line that does not end in CRLF\n",
    ],
    [
      `${post}Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\n`,
      400,
      "Cannot read the body: Bad chunked body: a line that does not end in CRLF\n",
    ],
  ];
  for (const [request, status, body] of cases) {
    using conn = await connect(server.addr.port);
    const reader = new Reader(conn);
    await send(conn, latin1(request));
    const answer = await reader.next(`the answer to ${JSON.stringify(request)}`);
    assert.deepEqual([answer?.status, answer?.body], [status, body], JSON.stringify(request));
  }
});

Deno.test("http server answers the requests before a malformed one as usual, then refuses it as the last answer", async () => {
  await using server = start({}, echo);
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  await send(conn, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGARBAGE\r\n\r\n");
  const first = await reader.next();
  assert.equal(first?.body, "GET /1 ");
  assert.equal(first?.headers.get("connection"), undefined, "not the last answer");
  const refusal = await reader.next();
  assert.deepEqual([refusal?.status, refusal?.body, refusal?.headers.get("connection")], [
    400,
    "Bad request line\n",
    "close",
  ]);
  assert.equal(await reader.closed(), "");
});

Deno.test("http server hands the handler a method as sent, in its case: get is not GET", async () => {
  await using server = start({}, echo);
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  await send(conn, "get /a HTTP/1.1\r\nHost: a\r\n\r\nPost /b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
  assert.equal((await reader.next())?.body, "get /a ");
  assert.equal((await reader.next())?.body, "Post /b hi");
  // A get with a body, as a GET with one: the handler does not see the body, and the connection closes after the answer.
  await send(conn, "gEt /c HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nhi");
  const last = await reader.next();
  assert.deepEqual([last?.body, last?.headers.get("connection")], ["gEt /c ", "close"]);
});

Deno.test("http server answers 500 when the handler throws, and the connection goes on", async () => {
  const logs: string[] = [];
  await using server = start({}, (req) => {
    if (req.url.endsWith("/throw")) throw new Error("boom");
    if (req.url.endsWith("/reject")) return Promise.reject(new Error("late boom"));
    return text(200, "fine");
  }, logs);
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  await send(
    conn,
    "GET /throw HTTP/1.1\r\nHost: a\r\n\r\nGET /reject HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
  );
  assert.deepEqual([(await reader.next())?.status, (await reader.next())?.body], [500, "Internal error\n"]);
  assert.equal((await reader.next())?.body, "fine");
  assert.equal(
    logs.filter((line) => /level=error .*msg="handler threw" error="Error: (late )?boom"/.test(line)).length,
    2,
  );
});

Deno.test("http server streams a body that is still coming, chunked, and a known one with its length", async () => {
  await using server = start({}, (req) => {
    if (!req.url.endsWith("/events")) return share(text(200, "shared"));
    let n = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        await new Promise((resolve) => setTimeout(resolve, 5));
        if (n++ === 3) return controller.close();
        controller.enqueue(encoder.encode(`data: ${n}\n\n`));
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  });
  const events = await fetch(`http://127.0.0.1:${server.addr.port}/events`);
  assert.equal(events.headers.get("transfer-encoding"), "chunked");
  assert.equal(await events.text(), "data: 1\n\ndata: 2\n\ndata: 3\n\n");
  for (let i = 0; i < 2; i++) {
    const shared = await fetch(`http://127.0.0.1:${server.addr.port}/`);
    assert.deepEqual([shared.headers.get("content-length"), await shared.text()], ["6", "shared"]);
  }
});

Deno.test("http server answers string bodies of every size in UTF-8, one after another on a connection", async () => {
  // Sizes around the encoding buffer's steps, with 1-, 2-, 3- and 4-byte characters: a short body after a long one, too.
  const characters = [..."aé€😀"];
  const bodies = [1, 16 * 1024, 5, 40_000, 300 * 1024, 3, 100_000].map((length, i) =>
    Array.from({ length }, (_, k) => characters[k % characters.length]).join("") + i
  );
  await using server = start({}, (req) => text(200, bodies[Number(new URL(req.url).searchParams.get("i"))]!));
  for (const [i, body] of bodies.entries()) {
    const answer = await fetch(`http://127.0.0.1:${server.addr.port}/?i=${i}`);
    const bytes = new Uint8Array(await answer.arrayBuffer());
    assert.equal(answer.headers.get("content-length"), String(encoder.encode(body).length), `body ${i}`);
    assert.equal(decoder.decode(bytes), body, `body ${i}`);
  }
});

Deno.test("http server closes a connection whose head does not come within headTimeout, with a 408 if part of it came", async () => {
  const logs: string[] = [];
  await using server = start({ headTimeout: 100 }, echo, logs);
  using silent = await connect(server.addr.port);
  using partial = await connect(server.addr.port);
  await send(partial, "GET / HTTP/1.1\r\nHo");
  const answer = await new Reader(partial).closed();
  assert.match(answer, /^HTTP\/1\.1 408 Request Timeout\r\n[^]*\r\n\r\nRequest head not received within 100 ms\n$/);
  assert.equal(await new Reader(silent).closed(), "");
  assert.ok(
    logs.some((line) => /msg="closing connections past a deadline" headTimeouts=[12] headTimeout=100/.test(line)),
  );
});

Deno.test("http server times a pipelined head from the answer before it, and its 408 comes after that answer", async () => {
  let answered = 0;
  const slow: HttpHandler = async (req) => {
    await new Promise((resolve) => setTimeout(resolve, 300));
    answered = performance.now();
    return text(200, `slow ${new URL(req.url).pathname}`);
  };
  await using server = start({ headTimeout: 100 }, slow);
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  await send(conn, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HT");
  const first = await reader.next();
  assert.deepEqual([first?.status, first?.body, first?.headers.get("connection")], [200, "slow /1", undefined]);
  const refusal = await reader.next();
  assert.equal(refusal?.status, 408);
  assert.ok(performance.now() - answered >= 90, "the head's time counted from the answer");
  assert.equal(await reader.closed(), "");
});

Deno.test("http server times a later head from its first byte, and closes a keep-alive connection idle for idleTimeout", async () => {
  await using server = start({ headTimeout: 150, idleTimeout: 400 }, echo);
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  await send(conn, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
  assert.equal((await reader.next())?.status, 200);
  // Idle for longer than the head timeout: still open, as the idle timeout is longer.
  await new Promise((resolve) => setTimeout(resolve, 250));
  await send(conn, "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
  assert.equal((await reader.next())?.status, 200);
  const idleSince = Date.now();
  await reader.closed();
  const idle = Date.now() - idleSince;
  assert.ok(idle >= 350 && idle < 2000, `closed after ${idle} ms idle, the timeout is 400 ms`);
});

Deno.test("http server does not count empty lines between requests as activity: a connection sending only CRLFs closes at idleTimeout", async () => {
  await using server = start({ headTimeout: 400, idleTimeout: 500 }, echo);
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  await send(conn, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
  assert.equal((await reader.next())?.status, 200);
  const idleSince = performance.now();
  // A CRLF every 200 ms: were each one activity, the connection would stay open until 500 ms after the last.
  const keepAlive = (async () => {
    for (let i = 0; i < 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      try {
        await send(conn, "\r\n");
      } catch {
        return;
      }
    }
  })();
  assert.equal(await reader.closed(), "");
  const idle = performance.now() - idleSince;
  await keepAlive;
  assert.ok(
    idle >= 450 && idle < 1050,
    `closed after ${idle} ms, the idle timeout is 500 ms and CRLFs came until 600 ms`,
  );
});

Deno.test("http server skips a few empty lines before a request, and refuses more with 400", async () => {
  await using server = start({}, echo);
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  await send(conn, "\r\n\r\nGET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
  assert.equal((await reader.next())?.body, "GET /1 ");
  assert.equal((await reader.next())?.body, "GET /2 ");
  await send(conn, "\r\n".repeat(100));
  const refusal = await reader.next("the refusal of many empty lines");
  assert.deepEqual([refusal?.status, refusal?.body, refusal?.headers.get("connection")], [
    400,
    "Too many empty lines before a request line\n",
    "close",
  ]);
  assert.equal(await reader.closed(), "");
});

Deno.test("http server fails the read of a body that does not come within bodyTimeout, answers, and closes", async () => {
  await using server = start({ bodyTimeout: 100 }, async (req) => {
    try {
      await req.text();
      return text(200, "read");
    } catch (error) {
      return text(400, `Cannot read the body: ${(error as Error).message}\n`);
    }
  });
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  await send(conn, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
  const answer = await reader.next();
  assert.deepEqual([answer?.status, answer?.body], [
    400,
    "Cannot read the body: Request body not received within 100 ms\n",
  ]);
  assert.equal(answer?.headers.get("connection"), "close");
  await reader.closed();
});

Deno.test("http server closes a connection whose client does not read its answers within sendTimeout", async () => {
  const big = "x".repeat(1024 * 1024);
  await using server = start({ sendTimeout: 200 }, () => text(200, big));
  using conn = await connect(server.addr.port);
  // Many large answers and no reads: the server's writes block, then it gives up.
  await send(conn, "GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(40));
  await until(() => server.connections === 0, 10_000, "the server to close the connection that does not read");
});

Deno.test("http server over maxConnections closes new connections at once and logs once per burst", async () => {
  const logs: string[] = [];
  await using server = start({ maxConnections: 2 }, echo, logs);
  using first = await connect(server.addr.port);
  using second = await connect(server.addr.port);
  await until(() => server.connections === 2, 5000, "two connections");
  for (let i = 0; i < 3; i++) {
    using extra = await connect(server.addr.port);
    assert.equal(await new Reader(extra).closed(), "");
  }
  first.close();
  await until(() => server.connections === 1, 5000, "the first connection to go");
  using third = await connect(server.addr.port);
  const reader = new Reader(third);
  await send(third, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  assert.equal((await reader.next())?.status, 200);
  assert.equal(
    logs.filter((line) => line.includes('msg="refusing connections: at the limit of open connections" limit=2')).length,
    1,
  );
  assert.ok(logs.some((line) => /msg="accepting connections again" refused=3/.test(line)));
  void second;
});

Deno.test("http server shutdown closes idle connections, answers the requests in flight with connection: close, then resolves", async () => {
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const server = start({}, async () => {
    await held;
    return text(200, "late");
  });
  using idle = await connect(server.addr.port);
  using busy = await connect(server.addr.port);
  const reader = new Reader(busy);
  await send(busy, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  await until(() => server.connections === 2, 5000, "both connections");
  await new Promise((resolve) => setTimeout(resolve, 20));
  const stopped = server.shutdown();
  assert.equal(await new Reader(idle).closed(), "");
  release();
  const answer = await reader.next();
  assert.deepEqual([answer?.body, answer?.headers.get("connection")], ["late", "close"]);
  await within(stopped, 5000, "the shutdown");
  await server.shutdown();
});

Deno.test("http server serves HTTP/1.0: the answer closes the connection, and a stream is sent until then", async () => {
  await using server = start(
    {},
    (req) =>
      req.url.endsWith("/stream")
        ? new Response(ReadableStream.from([encoder.encode("a"), encoder.encode("b")]))
        : echo(req),
  );
  using conn = await connect(server.addr.port);
  await send(conn, "GET /x HTTP/1.0\r\n\r\n");
  const reply = await new Reader(conn).closed();
  assert.match(reply, /^HTTP\/1\.1 200 OK\r\n[^]*connection: close\r\n[^]*\r\n\r\nGET \/x $/);
  using stream = await connect(server.addr.port);
  await send(stream, "GET /stream HTTP/1.0\r\n\r\n");
  const streamed = await new Reader(stream).closed();
  assert.doesNotMatch(streamed, /transfer-encoding/);
  assert.match(streamed, /\r\n\r\nab$/);
});

Deno.test("http server keeps an HTTP/1.0 connection that asks for keep-alive (ab -k), and closes it when a request does not", async () => {
  const seen: string[] = [];
  await using server = start({}, (req) => {
    seen.push(new URL(req.url).pathname);
    return echo(req);
  });
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  // Sent at once: each is read once the one before it is answered.
  await send(
    conn,
    "GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
  );
  for (const path of ["/1", "/2"]) {
    const answer = await reader.next(`the answer to ${path}`);
    assert.equal(answer?.headers.get("connection"), "keep-alive", path);
    assert.equal(answer.body, `GET ${path} `);
  }
  // The same connection, a plain HTTP/1.0 request: its answer is the last, and what follows it is not handled.
  await send(conn, "GET /3 HTTP/1.0\r\n\r\nGET /4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  const last = await reader.closed();
  assert.match(last, /^HTTP\/1\.1 200 OK\r\n[^]*connection: close\r\n[^]*\r\n\r\nGET \/3 $/);
  assert.deepEqual(seen, ["/1", "/2", "/3"]);
});

Deno.test("http server closes an HTTP/1.0 keep-alive connection after a streamed answer, which that client reads to the close", async () => {
  const seen: string[] = [];
  let rest!: ReadableStreamDefaultController<Uint8Array>;
  await using server = start({}, (req) => {
    seen.push(new URL(req.url).pathname);
    // Still coming when the answer starts: a stream, not a body of known length.
    return new Response(
      new ReadableStream({ start: (controller) => (rest = controller, controller.enqueue(encoder.encode("a"))) }),
    );
  });
  using conn = await connect(server.addr.port);
  await send(
    conn,
    "GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
  );
  let first = "";
  const buffer = new Uint8Array(4096);
  while (!first.endsWith("\r\n\r\na")) first += decoder.decode(buffer.subarray(0, (await conn.read(buffer))!));
  rest.enqueue(encoder.encode("b"));
  rest.close();
  const reply = first + await new Reader(conn).closed();
  assert.match(reply, /^HTTP\/1\.1 200 OK\r\n[^]*connection: close\r\n\r\nab$/);
  assert.doesNotMatch(reply, /keep-alive|transfer-encoding/);
  assert.deepEqual(seen, ["/1"], "nothing after it is handled (RFC 9112 9.6)");
});

/** A self-signed certificate for localhost and its key, made by openssl in a temporary directory. */
async function selfSigned(): Promise<{ cert: string; key: string }> {
  const dir = await Deno.makeTempDir();
  try {
    const { success, stderr } = await new Deno.Command("openssl", {
      args: [
        ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"],
        ...["-keyout", `${dir}/key.pem`, "-out", `${dir}/cert.pem`, "-subj", "/CN=localhost"],
        ...["-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE"],
        ...["-addext", "extendedKeyUsage=serverAuth"],
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!success) throw new Error(`Cannot make a certificate with openssl: ${decoder.decode(stderr)}`);
    return { cert: await Deno.readTextFile(`${dir}/cert.pem`), key: await Deno.readTextFile(`${dir}/key.pem`) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("http server serves on a TLS listener, and the handler sees https URLs", async () => {
  const { cert, key } = await selfSigned();
  const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
  await using server = start({ listener }, (req) => text(200, new URL(req.url).protocol));
  const client = Deno.createHttpClient({ caCerts: [cert] });
  const response = await fetch(`https://localhost:${server.addr.port}/`, { client });
  assert.equal(await response.text(), "https:");
  client.close();
});

Deno.test("http server cancels a stream whose client has gone, and forgets the connection", async () => {
  let cancelled!: () => void;
  const cancel = new Promise<void>((resolve) => (cancelled = resolve));
  await using server = start({}, () =>
    new Response(
      new ReadableStream<Uint8Array>({
        start: (controller) => controller.enqueue(encoder.encode("data: hello\n\n")),
        cancel: () => cancelled(),
      }),
      { headers: { "content-type": "text/event-stream" } },
    ));
  const conn = await connect(server.addr.port);
  await send(conn, "GET /events HTTP/1.1\r\nHost: a\r\n\r\n");
  await within(conn.read(new Uint8Array(1024)), 5000, "the stream's first bytes");
  conn.close();
  await within(cancel, 5000, "the stream to be cancelled");
  await until(() => server.connections === 0, 5000, "the server to forget the connection");
});

/** Every status the server answers fuzzed requests with: the echo's 200, and its refusals. */
const FUZZ_STATUSES = new Set([200, 400, 408, 413, 417, 431, 501, 505]);

/**
 * Sends `bytes` on a fresh connection, ends its side, and reads everything
 * the server sends until it closes: a run of whole answers, each with a
 * status the server gives, a one-line reason for a refusal, and nothing
 * after a `connection: close` answer.
 */
async function fuzzHttpOnce(port: number, bytes: Uint8Array): Promise<void> {
  using conn = await connect(port);
  try {
    await send(conn, bytes);
    await conn.closeWrite();
  } catch {
    // The server may have closed already.
  }
  const reader = new Reader(conn);
  while (true) {
    const answer = await reader.next("an answer, or the close");
    if (answer === null) break;
    assert.ok(FUZZ_STATUSES.has(answer.status), `status ${answer.status}: ${answer.body}`);
    if (answer.status !== 200) assert.match(answer.body, /^[^\n]+\n$/, "a one-line reason");
    if (answer.headers.get("connection") === "close") {
      assert.equal(await reader.closed(), "", "nothing after connection: close");
      break;
    }
  }
}

// No HEAD: its answer's length describes no body, which a reader of the bytes alone cannot tell.
const fuzzMethod = fc.constantFrom("GET", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "G T", "");
const fuzzHeader = fc.oneof(
  fc.constantFrom(
    "Host: a",
    "Host: ",
    "Content-Length: 5",
    "Content-Length: 0",
    "Content-Length: -1",
    "Content-Length: 99999999999999999999",
    "Content-Length: 5, 5",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: chunked, gzip",
    "Transfer-Encoding: identity",
    "Expect: 100-continue",
    "Connection: close",
    "Connection: keep-alive",
    " folded",
  ),
  fc.tuple(fc.string({ maxLength: 12 }), fc.string({ maxLength: 20 })).map(([name, value]) => `${name}: ${value}`),
);
/** One request: mostly well-formed heads and bodies, each part sometimes wrong. */
const fuzzRequest = fc.record({
  method: fuzzMethod,
  target: fc.oneof({ weight: 4, arbitrary: fc.constantFrom("/", "/?a=1", "/x%20y") }, fc.string({ maxLength: 20 })),
  version: fc.oneof({ weight: 6, arbitrary: fc.constant("HTTP/1.1") }, fc.constantFrom("HTTP/1.0", "HTTP/2.0", "")),
  headers: fc.array(fuzzHeader, { maxLength: 5 }),
  host: fc.oneof({ weight: 6, arbitrary: fc.constant(true) }, fc.constant(false)),
  body: fc.oneof(
    fc.constant(""),
    fc.string({ maxLength: 40 }),
    // Chunks, some of them with wrong sizes or extensions.
    fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 10 }), fc.integer({ min: -1, max: 2 })), { maxLength: 4 })
      .map((chunks) =>
        chunks.map(([data, skew]) => `${(data.length + skew).toString(16)};ext=1\r\n${data}\r\n`).join("") +
        "0\r\n\r\n"
      ),
  ),
  eol: fc.oneof({ weight: 8, arbitrary: fc.constant("\r\n") }, fc.constant("\n")),
}).map(({ method, target, version, headers, host, body, eol }) =>
  `${method} ${target} ${version}${eol}${host ? `Host: a${eol}` : ""}${
    headers.map((h) => h + eol).join("")
  }${eol}${body}`
);
/** A run of requests on one connection, as bytes, with one byte sometimes changed. */
const fuzzRequests = fc.tuple(fc.array(fuzzRequest, { minLength: 1, maxLength: 4 }), fc.nat(), fc.nat({ max: 255 }))
  .map(([requests, at, value]) => {
    const bytes = encoder.encode(requests.join(""));
    if (at % 3 === 0) bytes[at % bytes.length] = value;
    return bytes;
  });

Deno.test("fuzz: requests with wrong heads, lengths, chunks and bytes get answers or a close, and never break the server", async () => {
  await using server = start({ maxHeadBytes: 512, maxBodyBytes: 64, headTimeout: 2000, bodyTimeout: 2000 }, echo);
  await fc.assert(fc.asyncProperty(fuzzRequests, (bytes) => fuzzHttpOnce(server.addr.port, bytes)), {
    seed: 7230,
    numRuns: 300,
  });
  await until(() => server.connections === 0, 5000, "every fuzzed connection to be closed");
  using conn = await connect(server.addr.port);
  const reader = new Reader(conn);
  await send(conn, "POST /after HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok");
  assert.equal((await reader.next())?.body, "POST /after ok");
});

Deno.test("http server gives a target's raw UTF-8 bytes to the handler as their percent-encoding, bytes 0x80-0x9F too", async () => {
  // Answered percent-encoded, so that the reader's body is ASCII.
  await using server = start({}, (req) => text(200, encodeURIComponent(new URL(req.url).searchParams.get("c")!)));
  // As curl or a PHP backend send them unencoded: "€" is E2 82 AC, "日本" E6 97 A5 E6 9C AC.
  // "à" (C3 A0) and "你" (E4 BD A0) hold 0xA0, which as Latin-1 is U+00A0, a no-break space to `\s`.
  for (const value of ["€", "日本", "a€b", "é", "\u0080\u009f", "à", "你好"]) {
    using conn = await connect(server.addr.port);
    await send(conn, `GET /?c=${value} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const answer = await new Reader(conn).next();
    assert.equal(answer?.status, 200, value);
    assert.equal(decodeURIComponent(answer.body), value);
  }
});
