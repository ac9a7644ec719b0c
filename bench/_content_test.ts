import assert from "node:assert/strict";
import { benchChannel, CONTENT_BYTES, encodeContent, readChannelFrame, readSendTime, readSeq } from "./_content.ts";

const utf8 = new TextEncoder();

Deno.test("a content is 64 URL-safe bytes and gives its send time back", () => {
  const content = encodeContent(123, 4_567_890_123);
  assert.equal(content.length, CONTENT_BYTES);
  assert.match(content, /^123:4567890123:_+$/);
  // Digits, ":" and "_" need no escaping in a query (RFC 3986 pchar).
  assert.equal(new URL(`http://127.0.0.1/?content=${content}`).searchParams.get("content"), content);
  assert.equal(readSendTime(utf8.encode(content)), 4_567_890_123);
  assert.equal(readSeq(utf8.encode(content)), 123);
});

Deno.test("anything but a content reads as NaN", () => {
  for (const text of ["workerID:0 connectionID:1 connected\n", "", ":1:", "1:", "1:2", "x:1:", "1:2x:"]) {
    assert.ok(Number.isNaN(readSendTime(utf8.encode(text))), JSON.stringify(text));
    assert.ok(Number.isNaN(readSeq(utf8.encode(text))), JSON.stringify(text));
  }
});

Deno.test("a content too small for its numbers is refused", () => {
  assert.throws(() => encodeContent(1, 123456, { bytes: 8 }), RangeError);
});

Deno.test("a channel publication gives its channel and content back; anything else is null", () => {
  const content = encodeContent(42, 1_000_000);
  const frame = readChannelFrame(utf8.encode(JSON.stringify({ channel: benchChannel(17), data: content })));
  assert.equal(frame?.channel, 17);
  assert.equal(new TextDecoder().decode(frame!.content), content);
  assert.equal(readSeq(frame!.content), 42);
  for (
    const text of [
      '{"id":1,"result":{}}',
      '{"channel":"news","data":"1:2:_"}',
      '{"channel":"bench.","data":"1:2:_"}',
      '{"channel":"bench.1","data":1}',
      '{"channel":"bench.1","data":"x"',
      '{"channel":"bench.1"}',
      '{"channel":"bench.1","data":"1:2:_","offset":x,"epoch":"ab"}',
      '{"channel":"bench.1","data":"1:2:_","epoch":"ab"}',
      '{"channel":"bench.1","data":"1:2:_","offset":3,"epoch":"a"b"}',
      content,
    ]
  ) {
    assert.equal(readChannelFrame(utf8.encode(text)), null, text);
  }
});

Deno.test("a publication of a channel with history gives its position back too", () => {
  const content = encodeContent(42, 1_000_000);
  const text = JSON.stringify({ channel: benchChannel(3), data: content, offset: 108, epoch: "1f3a9c2e" });
  const frame = readChannelFrame(utf8.encode(text));
  assert.equal(frame?.channel, 3);
  assert.equal(new TextDecoder().decode(frame!.content), content);
  assert.equal(frame!.offset, 108);
  assert.equal(new TextDecoder().decode(frame!.epoch!), "1f3a9c2e");
  const plain = readChannelFrame(utf8.encode(JSON.stringify({ channel: benchChannel(3), data: content })));
  assert.deepEqual([plain?.offset, plain?.epoch], [null, null]);
});
