import assert from "node:assert/strict";
import { type HttpAnswer, ResponseParser } from "./_http_responses.ts";

const utf8 = new TextEncoder();

const RESPONSES = [
  "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nContent-Length: 2\r\ndate: Sun, 22 Nov 2026 03:00:00 GMT\r\n\r\nok",
  "HTTP/1.1 404 Not Found\r\ncontent-length: 20\r\n\r\nNo such connection\r\n",
  "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n",
  "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHub u\r\nb;x=y\r\nnavailable\n\r\n0\r\nx-trailer: 1\r\n\r\n",
  "HTTP/1.1 204 No Content\r\n\r\n",
];
const EXPECTED: HttpAnswer[] = [
  { status: 200, body: "" },
  { status: 404, body: "No such connection" },
  { status: 200, body: "" },
  { status: 503, body: "Hub unavailable" },
  { status: 204, body: "" },
];
const STREAM = utf8.encode(RESPONSES.join(""));

function parseInChunks(nextSize: () => number): HttpAnswer[] {
  const parser = new ResponseParser();
  const answers: HttpAnswer[] = [];
  for (let offset = 0; offset < STREAM.length;) {
    const end = Math.min(STREAM.length, offset + nextSize());
    // A reused read buffer: the parser must copy what it keeps.
    const chunk = STREAM.slice(offset, end);
    answers.push(...parser.push(chunk));
    chunk.fill(0);
    offset = end;
  }
  assert.equal(parser.bufferedBytes, 0, "no bytes held back at the end");
  return answers;
}

Deno.test("pipelined responses (content-length, chunked, trailers, none) parse whole, byte by byte and in random chunks", () => {
  assert.deepEqual(parseInChunks(() => STREAM.length), EXPECTED);
  assert.deepEqual(parseInChunks(() => 1), EXPECTED);
  for (let seed = 1; seed <= 20; seed++) {
    let state = seed;
    const random = () => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648;
    assert.deepEqual(parseInChunks(() => 1 + Math.floor(random() * 40)), EXPECTED, `seed ${seed}`);
  }
});

Deno.test("the response parser refuses what is not HTTP, and heads or bodies over their limits", () => {
  assert.throws(() => new ResponseParser().push(utf8.encode("SSH-2.0-OpenSSH\r\n\r\n")), SyntaxError);
  assert.throws(
    () => new ResponseParser({ maxHeadBytes: 16 }).push(utf8.encode("HTTP/1.1 200 OK\r\nx: yyyyyyy")),
    RangeError,
  );
  assert.throws(
    () => new ResponseParser({ maxBodyBytes: 10 }).push(utf8.encode("HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n")),
    RangeError,
  );
});
