import assert from "node:assert/strict";
import {
  acceptKey,
  type ClientEvent,
  CloseCode,
  encodeClose,
  encodePing,
  encodePong,
  encodeText,
  encodeWebSocketFrame,
  FrameParser,
  isValidCloseCode,
  isValidKey,
  PreparedText,
  ProtocolError,
} from "./websocket.ts";
import { clientFrame, closePayload, Op, parseClose, parseServerFrame } from "./ws_testing.ts";
import { concat } from "../shared/bytes.ts";
import { mulberry32 } from "../shared/testing.ts";

const utf8 = new TextEncoder();
/** What a frame of a fragmented message before its last gives. */
const FRAGMENT: ClientEvent = { type: "fragment" };

/** Fixed seeds always run; one fresh seed per run widens coverage and is printed on failure. */
const SEEDS = [1, 42, 0xdeadbeef, crypto.getRandomValues(new Uint32Array(1))[0]!];

Deno.test("acceptKey gives RFC 6455's example answer", () => {
  assert.equal(acceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
});

Deno.test("isValidKey accepts base64 of 16 bytes and nothing else", () => {
  assert.ok(isValidKey("dGhlIHNhbXBsZSBub25jZQ=="));
  assert.ok(isValidKey(btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))))));
  for (
    const key of [
      "",
      "abc",
      "dGhlIHNhbXBsZSBub25jZQ",
      "dGhlIHNhbXBsZSBub25jZQ=",
      "dGhlIHNhbXBsZSBub25jZSE=",
      "dGhlIHNhbXBsZSBub25jZQ===",
    ]
  ) {
    assert.equal(isValidKey(key), false, key);
  }
  // 20 bytes, and a key with a character outside base64.
  assert.equal(isValidKey(btoa("x".repeat(20))), false);
  assert.equal(isValidKey("dGhlIHNhbXBsZSBub25jZ-=="), false);
});

Deno.test("encodeWebSocketFrame uses the 7-bit length up to 125, the 16-bit one up to 65535, the 64-bit one above", () => {
  const cases: [number, number[]][] = [
    [0, [0x82, 0]],
    [125, [0x82, 125]],
    [126, [0x82, 126, 0, 126]],
    [65535, [0x82, 126, 0xff, 0xff]],
    [65536, [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]],
  ];
  for (const [length, header] of cases) {
    const payload = new Uint8Array(length).map((_, i) => i * 7);
    const frame = encodeWebSocketFrame(Op.binary, payload);
    assert.deepEqual([...frame.subarray(0, header.length)], header, `header for ${length} bytes`);
    assert.equal(frame.length, header.length + length);
    assert.deepEqual(frame.subarray(header.length), payload);
    const parsed = parseServerFrame(frame);
    assert.ok(parsed);
    assert.equal(parsed.size, frame.length);
  }
});

Deno.test("encodeText, PreparedText, encodePing and encodePong make final unmasked frames", () => {
  const text = "héllo €🙂";
  assert.deepEqual(encodeText(text), encodeWebSocketFrame(Op.text, utf8.encode(text)));
  // Each header length (2, 4, 10 bytes) on both sides of its bound, multi-byte characters and a lone surrogate.
  for (const length of [0, 125, 126, 65535, 65536, 70000]) {
    for (const tail of ["", "é", "€🙂", "\ud800"]) {
      const long = "a".repeat(length) + tail;
      assert.deepEqual(encodeText(long), encodeWebSocketFrame(Op.text, utf8.encode(long)), `${length} + ${tail}`);
    }
  }
  assert.deepEqual(new PreparedText(text).frame, encodeText(text));
  assert.deepEqual([...encodePing()], [0x89, 0]);
  assert.deepEqual([...encodePong(new Uint8Array([1, 2]))], [0x8a, 2, 1, 2]);
});

Deno.test("encodeClose writes the code and the reason", () => {
  assert.deepEqual(parseClose(encodeClose(1001, "going away").subarray(2)), { code: 1001, reason: "going away" });
  assert.deepEqual([...encodeClose(1000)], [0x88, 2, 0x03, 0xe8]);
});

Deno.test("encodeClose cuts a long reason on a character boundary to fit 125 bytes", () => {
  for (const unit of ["a", "é", "€", "🙂", "a🙂", "€🙂a"]) {
    const reason = unit.repeat(200);
    const frame = encodeClose(CloseCode.goingAway, reason);
    assert.ok(frame.length <= 127, `${unit}: frame of ${frame.length} bytes`);
    assert.equal(frame[1], frame.length - 2);
    const close = parseClose(frame.subarray(2));
    assert.equal(close.code, CloseCode.goingAway);
    assert.ok(
      reason.startsWith(close.reason),
      `${unit}: ${JSON.stringify(close.reason)} is not a prefix of the reason`,
    );
    // As long as fits: one more character would not.
    const next = [...reason.slice(close.reason.length)][0]!;
    assert.ok(utf8.encode(close.reason + next).length > 123, `${unit}: cut too short`);
  }
  // A reason that fits is left alone.
  assert.equal(parseClose(encodeClose(1000, "🙂".repeat(30)).subarray(2)).reason, "🙂".repeat(30));
});

Deno.test("isValidCloseCode accepts the codes a client may send and rejects the rest", () => {
  const valid = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999];
  const invalid = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535];
  for (const code of valid) assert.equal(isValidCloseCode(code), true, String(code));
  for (const code of invalid) assert.equal(isValidCloseCode(code), false, String(code));
});

/** A stream of client frames of every kind, and the events it must give. */
function sampleStream(random: () => number): { bytes: Uint8Array; events: ClientEvent[] } {
  const frames: Uint8Array[] = [];
  const events: ClientEvent[] = [];
  const mask = () => new Uint8Array(4).map(() => random() * 256);
  const bytesOf = (n: number) => new Uint8Array(n).map(() => random() * 256);
  for (let i = 0; i < 60; i++) {
    const kind = Math.floor(random() * 7);
    if (kind === 0) {
      const text = ["", "a", "héllo", "€".repeat(50), "🙂 ok", "x".repeat(200 + Math.floor(random() * 70_000))][
        Math.floor(random() * 6)
      ]!;
      frames.push(clientFrame(Op.text, text, { mask: mask() }));
      events.push({ type: "text", data: text });
    } else if (kind === 1) {
      const data = bytesOf(Math.floor(random() * 300));
      frames.push(clientFrame(Op.binary, data, { mask: mask() }));
      events.push({ type: "binary", data });
    } else if (kind === 2) {
      const data = bytesOf(Math.floor(random() * 126));
      frames.push(clientFrame(Op.ping, data, { mask: mask() }));
      events.push({ type: "ping", data });
    } else if (kind === 3) {
      const data = bytesOf(Math.floor(random() * 126));
      frames.push(clientFrame(Op.pong, data, { mask: mask() }));
      events.push({ type: "pong", data });
    } else if (kind === 4) {
      // A fragmented text cut inside its multi-byte characters, a ping between fragments.
      const text = "€🙂é".repeat(1 + Math.floor(random() * 20));
      const bytes = utf8.encode(text);
      const cut = 1 + Math.floor(random() * (bytes.length - 2));
      frames.push(clientFrame(Op.text, bytes.subarray(0, cut), { fin: false, mask: mask() }));
      events.push(FRAGMENT);
      frames.push(clientFrame(Op.ping, "between", { mask: mask() }));
      events.push({ type: "ping", data: utf8.encode("between") });
      frames.push(clientFrame(Op.continuation, bytes.subarray(cut), { mask: mask() }));
      events.push({ type: "text", data: text });
    } else if (kind === 5) {
      const parts = Array.from({ length: 1 + Math.floor(random() * 5) }, () => bytesOf(Math.floor(random() * 200)));
      parts.forEach((part, index) => {
        const opcode = index === 0 ? Op.binary : Op.continuation;
        frames.push(clientFrame(opcode, part, { fin: index === parts.length - 1, mask: mask() }));
        if (index < parts.length - 1) events.push(FRAGMENT);
      });
      events.push({ type: "binary", data: concat(parts) });
    } else {
      // A length at a bound of its encoding: the longest 7-bit, 16-bit, the shortest 16-bit, 64-bit.
      const data = bytesOf([125, 126, 65535, 65536][Math.floor(random() * 4)]!);
      frames.push(clientFrame(Op.binary, data, { mask: mask() }));
      events.push({ type: "binary", data });
    }
  }
  frames.push(clientFrame(Op.close, closePayload(4001, "done 🙂"), { mask: mask() }));
  events.push({ type: "close", code: 4001, reason: "done 🙂" });
  return { bytes: concat(frames), events };
}

/** Feeds `bytes` in chunks whose sizes `nextSize` picks, each chunk from a reused buffer as a socket read gives. */
function parseInChunks(bytes: Uint8Array, nextSize: () => number): ClientEvent[] {
  const parser = new FrameParser({ maxMessageBytes: 1 << 20 });
  const events: ClientEvent[] = [];
  const buffer = new Uint8Array(bytes.length);
  let offset = 0;
  while (offset < bytes.length) {
    const end = Math.min(bytes.length, offset + nextSize());
    const chunk = buffer.subarray(0, end - offset);
    chunk.set(bytes.subarray(offset, end));
    // Copy the events out before the buffer is overwritten by the next chunk.
    for (const event of parser.push(chunk)) events.push(structuredClone(event));
    chunk.fill(0xee);
    offset = end;
  }
  return events;
}

Deno.test("FrameParser gives the same events whole, byte at a time, and in seeded random chunks", () => {
  for (const seed of SEEDS) {
    const random = mulberry32(seed);
    const { bytes, events } = sampleStream(random);
    assert.deepEqual(parseInChunks(bytes, () => bytes.length), events, `whole, seed ${seed}`);
    assert.deepEqual(parseInChunks(bytes, () => 1), events, `byte at a time, seed ${seed}`);
    assert.deepEqual(parseInChunks(bytes, () => 1 + Math.floor(random() * 300)), events, `small chunks, seed ${seed}`);
    assert.deepEqual(parseInChunks(bytes, () => 1 + Math.floor(random() * 9000)), events, `large chunks, seed ${seed}`);
  }
});

Deno.test("FrameParser accepts a message of exactly maxMessageBytes, fragments added up", () => {
  const parser = new FrameParser({ maxMessageBytes: 100 });
  assert.deepEqual(parser.push(clientFrame(Op.binary, new Uint8Array(100))), [
    { type: "binary", data: new Uint8Array(100) },
  ]);
  const events = parser.push(concat([
    clientFrame(Op.text, "a".repeat(60), { fin: false }),
    clientFrame(Op.continuation, "b".repeat(40)),
  ]));
  assert.deepEqual(events, [FRAGMENT, { type: "text", data: "a".repeat(60) + "b".repeat(40) }]);
});

Deno.test("FrameParser holds one buffer per frame and per message, however small the reads and fragments", () => {
  const limit = 60_000;
  // A frame trickled in one byte per read.
  const trickled = new FrameParser({ maxMessageBytes: limit });
  const frame = clientFrame(Op.binary, new Uint8Array(limit).fill(7));
  let most = 0;
  for (let i = 0; i < frame.length - 1; i++) {
    assert.deepEqual(trickled.push(frame.subarray(i, i + 1)), []);
    most = Math.max(most, trickled.heldBytes);
  }
  assert.ok(most <= frame.length, `held ${most} bytes for a ${frame.length}-byte frame`);
  assert.deepEqual(trickled.push(frame.subarray(-1)), [{ type: "binary", data: new Uint8Array(limit).fill(7) }]);
  assert.equal(trickled.heldBytes, 0, "nothing held once the frame is done");

  // A message in one-byte fragments, then one of empty fragments.
  const fragmented = new FrameParser({ maxMessageBytes: limit });
  assert.deepEqual(fragmented.push(clientFrame(Op.text, "a", { fin: false })), [FRAGMENT]);
  const fragment = clientFrame(Op.continuation, "b", { fin: false });
  for (let i = 0; i < limit - 2; i++) fragmented.push(fragment);
  assert.ok(fragmented.heldBytes <= limit, `held ${fragmented.heldBytes} bytes for a ${limit}-byte message`);
  assert.deepEqual(fragmented.push(clientFrame(Op.continuation, "c")), [
    { type: "text", data: "a" + "b".repeat(limit - 2) + "c" },
  ]);
  assert.deepEqual(fragmented.push(clientFrame(Op.text, "", { fin: false })), [FRAGMENT]);
  const empty = clientFrame(Op.continuation, "", { fin: false });
  for (let i = 0; i < 100_000; i++) fragmented.push(empty);
  assert.equal(fragmented.heldBytes, 0, "empty fragments hold nothing");
  assert.deepEqual(fragmented.push(clientFrame(Op.continuation, "")), [{ type: "text", data: "" }]);
});

Deno.test("FrameParser checks the declared length before the payload arrives", () => {
  for (const length of [101, 65536, 2 ** 32 - 1, 2 ** 40]) {
    const parser = new FrameParser({ maxMessageBytes: 100 });
    const header = clientFrame(Op.binary, new Uint8Array(0), { length });
    assert.throws(() => parser.push(header), { name: "ProtocolError", code: CloseCode.messageTooBig }, String(length));
  }
  // The second fragment's header alone takes the message over the limit.
  const parser = new FrameParser({ maxMessageBytes: 100 });
  assert.deepEqual(parser.push(clientFrame(Op.text, "a".repeat(60), { fin: false })), [FRAGMENT]);
  assert.throws(
    () => parser.push(clientFrame(Op.continuation, new Uint8Array(0), { length: 41 })),
    { name: "ProtocolError", code: CloseCode.messageTooBig },
  );
});

Deno.test("FrameParser rejects each protocol violation with its close code, and stays failed", () => {
  const violations: [string, Uint8Array, number][] = [
    ["unmasked frame", clientFrame(Op.text, "hi", { mask: null }), 1002],
    ["RSV1", clientFrame(Op.text, "hi", { rsv: 4 }), 1002],
    ["RSV2", clientFrame(Op.text, "hi", { rsv: 2 }), 1002],
    ["RSV3", clientFrame(Op.text, "hi", { rsv: 1 }), 1002],
    ...[3, 4, 5, 6, 7, 11, 12, 13, 14, 15].map((op): [string, Uint8Array, number] => [
      `opcode ${op}`,
      clientFrame(op, "x"),
      1002,
    ]),
    ["fragmented ping", clientFrame(Op.ping, "x", { fin: false }), 1002],
    ["fragmented close", clientFrame(Op.close, closePayload(1000), { fin: false }), 1002],
    ["ping of 126 bytes", clientFrame(Op.ping, new Uint8Array(126)), 1002],
    ["pong of 126 bytes in the long form", clientFrame(Op.pong, new Uint8Array(126), { lengthBits: 16 }), 1002],
    ["continuation without a start", clientFrame(Op.continuation, "x"), 1002],
    [
      "a new text frame inside a fragmented message",
      concat([clientFrame(Op.text, "a", { fin: false }), clientFrame(Op.text, "b")]),
      1002,
    ],
    [
      "a new binary frame inside a fragmented message",
      concat([clientFrame(Op.binary, "a", { fin: false }), clientFrame(Op.binary, "b", { fin: false })]),
      1002,
    ],
    ["close with a 1-byte payload", clientFrame(Op.close, new Uint8Array([3])), 1002],
    // Malformed whatever the length they declare: 1002, not the size limit's 1009.
    ["ping declaring 2^32 bytes", clientFrame(Op.ping, "", { length: 2 ** 32 }), 1002],
    ["a 64-bit length with its top bit set", clientFrame(Op.binary, "", { length: 2 ** 63 + 2 ** 11 }), 1002],
    // RFC 6455 5.2: the shortest encoding of a length MUST be used.
    ["5 bytes in the 16-bit length", clientFrame(Op.text, "hello", { lengthBits: 16 }), 1002],
    ["125 bytes in the 16-bit length", clientFrame(Op.binary, new Uint8Array(125), { lengthBits: 16 }), 1002],
    ["0 bytes in the 64-bit length", clientFrame(Op.binary, "", { lengthBits: 64 }), 1002],
    ["125 bytes in the 64-bit length", clientFrame(Op.binary, new Uint8Array(125), { lengthBits: 64 }), 1002],
    ["65535 bytes in the 64-bit length", clientFrame(Op.binary, new Uint8Array(65535), { lengthBits: 64 }), 1002],
    ["a ping of 5 bytes in the 16-bit length", clientFrame(Op.ping, "hello", { lengthBits: 16 }), 1002],
    [
      "a last fragment of 3 bytes in the 64-bit length",
      concat([clientFrame(Op.text, "a", { fin: false }), clientFrame(Op.continuation, "bcd", { lengthBits: 64 })]),
      1002,
    ],
    ["continuation without a start, declaring 70000 bytes", clientFrame(Op.continuation, "", { length: 70_000 }), 1002],
    [
      "a new text frame inside a fragmented message, declaring 70000 bytes",
      concat([clientFrame(Op.text, "a", { fin: false }), clientFrame(Op.text, "", { length: 70_000 })]),
      1002,
    ],
    ...[0, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000].map((code): [string, Uint8Array, number] => [
      `close code ${code}`,
      clientFrame(Op.close, closePayload(code)),
      1002,
    ]),
    ["close reason not UTF-8", clientFrame(Op.close, closePayload(1000, new Uint8Array([0xff]))), 1007],
    ["text not UTF-8", clientFrame(Op.text, new Uint8Array([0x68, 0xff])), 1007],
    ["text with an overlong encoding", clientFrame(Op.text, new Uint8Array([0xc0, 0x80])), 1007],
    ["text with a surrogate", clientFrame(Op.text, new Uint8Array([0xed, 0xa0, 0x80])), 1007],
    ["text cut inside a character", clientFrame(Op.text, new Uint8Array([0xe2, 0x82])), 1007],
    [
      "fragmented text cut inside a character",
      concat([clientFrame(Op.text, new Uint8Array([0xe2, 0x82]), { fin: false }), clientFrame(Op.continuation, "(")]),
      1007,
    ],
  ];
  for (const [name, bytes, code] of violations) {
    for (const chunked of [false, true]) {
      const parser = new FrameParser();
      const push = () => {
        if (!chunked) parser.push(bytes);
        else for (const byte of bytes) parser.push(new Uint8Array([byte]));
      };
      assert.throws(push, (error) => error instanceof ProtocolError && error.code === code, `${name} (${chunked})`);
      // Failed for good: a valid frame after it still throws.
      assert.throws(() => parser.push(clientFrame(Op.text, "ok")), ProtocolError, `${name}: stays failed`);
    }
  }
});

Deno.test("FrameParser hands over the events completed before a violation in the same chunk, once", () => {
  const parser = new FrameParser();
  const chunk = concat([
    clientFrame(Op.text, new Uint8Array([0x31, 0xe2]), { fin: false }),
    clientFrame(Op.ping, "p"),
    clientFrame(Op.continuation, new Uint8Array([0x82, 0xac])),
    clientFrame(Op.text, new Uint8Array([0xff])),
    clientFrame(Op.text, "never seen"),
  ]);
  assert.throws(() => parser.push(chunk), (error) => {
    assert.ok(error instanceof ProtocolError);
    assert.equal(error.code, CloseCode.invalidData);
    assert.deepEqual(error.events, [FRAGMENT, { type: "ping", data: utf8.encode("p") }, { type: "text", data: "1€" }]);
    return true;
  });
  assert.throws(() => parser.push(clientFrame(Op.text, "later")), (error) => {
    assert.ok(error instanceof ProtocolError);
    assert.equal(error.code, CloseCode.invalidData);
    assert.deepEqual(error.events, []);
    return true;
  });
});

Deno.test("FrameParser reports a close frame's code and reason, and an empty close as 1005, no status (RFC 6455 7.1.5)", () => {
  const parser = new FrameParser();
  assert.deepEqual(parser.push(clientFrame(Op.close, closePayload(1001, "bye €"))), [
    { type: "close", code: 1001, reason: "bye €" },
  ]);
  assert.deepEqual(new FrameParser().push(clientFrame(Op.close)), [{ type: "close", code: 1005, reason: "" }]);
});

Deno.test("parser is at rest between frames only: not with half a frame, a fragmented message or a violation", () => {
  const parser = new FrameParser();
  assert.equal(parser.atRest, true);
  const text = clientFrame(Op.text, "hello");
  parser.push(text.subarray(0, 3));
  assert.equal(parser.atRest, false, "half a frame is held");
  parser.push(text.subarray(3));
  assert.equal(parser.atRest, true);
  parser.push(clientFrame(Op.text, "he", { fin: false }));
  assert.equal(parser.atRest, false, "a fragmented message is in progress");
  parser.push(clientFrame(Op.continuation, "llo"));
  assert.equal(parser.atRest, true);
  assert.throws(() => parser.push(clientFrame(Op.text, "x", { mask: null })));
  assert.equal(parser.atRest, false, "a failed parser must be kept, to fail again");
});

Deno.test("FrameParser skips data frames unread once told to discard them, and still finds the close frame", () => {
  const stream = concat([
    clientFrame(Op.binary, new Uint8Array(200_000)),
    clientFrame(Op.text, new Uint8Array([0x68, 0xff])),
    clientFrame(Op.text, "a", { fin: false }),
    clientFrame(Op.ping, "p"),
    clientFrame(Op.continuation, "b"),
    clientFrame(Op.close, closePayload(1000, "bye")),
  ]);
  const expected: ClientEvent[] = [
    { type: "ping", data: utf8.encode("p") },
    { type: "close", code: 1000, reason: "bye" },
  ];
  for (const size of [1, 7, 4096, stream.length]) {
    // Over the size limit and not UTF-8: neither matters to data no one reads.
    const parser = new FrameParser({ maxMessageBytes: 100 });
    parser.discardData();
    const events: ClientEvent[] = [];
    let held = 0;
    for (let at = 0; at < stream.length; at += size) {
      events.push(...parser.push(stream.subarray(at, at + size)));
      held = Math.max(held, parser.heldBytes);
    }
    assert.deepEqual(events, expected, `chunks of ${size}`);
    assert.ok(held <= 200, `chunks of ${size}: held ${held} bytes`);
    assert.equal(parser.atRest, true);
  }
});

Deno.test("FrameParser discarding drops the message in progress and still checks every header", () => {
  const parser = new FrameParser();
  assert.deepEqual(parser.push(clientFrame(Op.text, "a".repeat(1000), { fin: false })), [FRAGMENT]);
  parser.discardData();
  assert.equal(parser.heldBytes, 0, "the message in progress is dropped");
  // Its continuation is skipped; a new message before its end is still a violation.
  assert.deepEqual(parser.push(clientFrame(Op.continuation, "b", { fin: false })), []);
  assert.throws(() => parser.push(clientFrame(Op.text, "c")), { name: "ProtocolError", code: CloseCode.protocolError });
  for (const bad of [clientFrame(Op.text, "x", { mask: null }), clientFrame(Op.binary, "x", { lengthBits: 16 })]) {
    const discarding = new FrameParser();
    discarding.discardData();
    assert.throws(() => discarding.push(bad), { name: "ProtocolError", code: CloseCode.protocolError });
  }
});
