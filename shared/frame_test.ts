import assert from "node:assert/strict";
import { concat } from "./bytes.ts";
import { DEFAULT_MAX_FRAME_BYTES, encodeLengthPrefixed, FrameDecoder, HEADER_BYTES } from "./frame.ts";
import { mulberry32 } from "./testing.ts";

const utf8 = new TextEncoder();

/** Fixed seeds always run; one fresh seed per run widens coverage and is printed on failure. */
const SEEDS = [1, 42, 0xdeadbeef, crypto.getRandomValues(new Uint32Array(1))[0]!];

/** Payloads of assorted sizes, empty included, with content that tells them apart. */
function samplePayloads(): Uint8Array[] {
  const sizes = [0, 1, 2, 3, 4, 5, 17, 0, 255, 256, 1000, 4096, 70_000, 3];
  return sizes.map((size, index) => {
    const payload = new Uint8Array(size);
    for (let i = 0; i < size; i++) payload[i] = (index * 31 + i * 7) & 0xff;
    return payload;
  });
}

/** Feeds `stream` to a fresh decoder in chunks whose sizes `nextSize` picks; copies every payload out. */
function decodeInChunks(stream: Uint8Array, nextSize: () => number): Uint8Array[] {
  const decoder = new FrameDecoder();
  const out: Uint8Array[] = [];
  let offset = 0;
  while (offset < stream.length) {
    const end = Math.min(stream.length, offset + nextSize());
    // A fresh copy per chunk, as a socket read into a reused buffer would hand over.
    for (const payload of decoder.push(stream.slice(offset, end))) out.push(payload.slice());
    offset = end;
  }
  assert.equal(decoder.bufferedBytes, 0, "no bytes should be held back once the stream is consumed");
  return out;
}

function header(total: number): Uint8Array {
  return new Uint8Array([total >>> 24, (total >>> 16) & 0xff, (total >>> 8) & 0xff, total & 0xff]);
}

Deno.test("encodeLengthPrefixed writes a big-endian total length that counts the 4-byte header, then the payload", () => {
  assert.deepEqual(encodeLengthPrefixed(utf8.encode("hi")), new Uint8Array([0, 0, 0, 6, 0x68, 0x69]));
  assert.deepEqual(encodeLengthPrefixed(new Uint8Array(0)), new Uint8Array([0, 0, 0, 4]));
  const big = encodeLengthPrefixed(new Uint8Array(0x010203 - HEADER_BYTES));
  assert.deepEqual(big.subarray(0, 4), new Uint8Array([0, 0x01, 0x02, 0x03]));
});

Deno.test("frame decoder returns the payload of an encoded frame (round trip)", () => {
  const payload = utf8.encode('{"type":"ping"}');
  const decoder = new FrameDecoder();
  const out = decoder.push(encodeLengthPrefixed(payload));
  assert.equal(out.length, 1);
  assert.deepEqual(out[0], payload);
  assert.equal(decoder.bufferedBytes, 0);
});

Deno.test("frame decoder returns every payload of one chunk holding many frames, in order", () => {
  const payloads = samplePayloads();
  const out = new FrameDecoder().push(concat(payloads.map(encodeLengthPrefixed)));
  assert.deepEqual(out, payloads);
});

Deno.test("frame decoder yields exactly the payloads in order when fed one byte at a time", () => {
  const payloads = samplePayloads().filter((payload) => payload.length <= 4096);
  const out = decodeInChunks(concat(payloads.map(encodeLengthPrefixed)), () => 1);
  assert.deepEqual(out, payloads);
});

Deno.test("frame decoder yields exactly the payloads in order when fed random chunk sizes", () => {
  const payloads = samplePayloads();
  const stream = concat(payloads.map(encodeLengthPrefixed));
  for (const seed of SEEDS) {
    const random = mulberry32(seed);
    // Mostly small chunks, so headers and payloads split at every position; sometimes large ones.
    const nextSize = () => (random() < 0.8 ? 1 + Math.floor(random() * 9) : 1 + Math.floor(random() * 20_000));
    const out = decodeInChunks(stream, nextSize);
    assert.deepEqual(out, payloads, `random chunking with seed ${seed} changed the payloads`);
  }
});

Deno.test("frame decoder yields an empty payload for the frame 00 00 00 04", () => {
  const decoder = new FrameDecoder();
  assert.deepEqual(decoder.push(new Uint8Array([0, 0, 0, 4])), [new Uint8Array(0)]);
  assert.deepEqual(decoder.push(new Uint8Array([0, 0])), []);
  assert.deepEqual(decoder.push(new Uint8Array([0, 4])), [new Uint8Array(0)]);
  assert.equal(decoder.bufferedBytes, 0);
});

Deno.test("frame decoder rejects a declared length below the 4-byte header", () => {
  for (const total of [0, 1, 2, 3]) {
    const expected = {
      name: "RangeError",
      message: `Cannot decode frame: declared length ${total} is below the 4-byte header`,
    };
    // Whole header in one chunk.
    assert.throws(() => new FrameDecoder().push(header(total)), expected);
    // Header split across chunks.
    const split = new FrameDecoder();
    assert.deepEqual(split.push(header(total).subarray(0, 2)), []);
    assert.throws(() => split.push(header(total).subarray(2)), expected);
    // After a valid frame in the same chunk.
    assert.throws(
      () => new FrameDecoder().push(concat([encodeLengthPrefixed(utf8.encode("ok")), header(total)])),
      expected,
    );
  }
});

Deno.test("frame decoder rejects a declared length over maxFrameBytes from the 4-byte header alone", () => {
  const decoder = new FrameDecoder({ maxFrameBytes: 100 });
  assert.throws(() => decoder.push(header(101)), {
    name: "RangeError",
    message: "Cannot decode frame: declared length 101 exceeds the 100-byte maximum",
  });
  // Exactly the maximum is accepted.
  assert.deepEqual(new FrameDecoder({ maxFrameBytes: 100 }).push(encodeLengthPrefixed(new Uint8Array(96))), [
    new Uint8Array(96),
  ]);
  // A 4 GiB declaration must be refused by the check, not by a failed 4 GiB allocation.
  assert.throws(() => new FrameDecoder().push(header(0xffffffff)), {
    name: "RangeError",
    message: `Cannot decode frame: declared length 4294967295 exceeds the ${DEFAULT_MAX_FRAME_BYTES}-byte maximum`,
  });
  // Header split across chunks: the error comes as soon as its last byte arrives.
  const split = new FrameDecoder({ maxFrameBytes: 100 });
  assert.deepEqual(split.push(header(0x7fffffff).subarray(0, 3)), []);
  assert.throws(() => split.push(header(0x7fffffff).subarray(3)), /exceeds the 100-byte maximum/);
});

Deno.test("frame decoder says so when the bytes are a TLS record: a plain-text end of a link whose other end has TLS", () => {
  // What a plain-text client reads from a TLS hub (an alert), and what a plain-text hub reads from a TLS client (a ClientHello).
  for (const record of [[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32], [0x16, 0x03, 0x01, 0x02, 0x00, 0x01]]) {
    assert.throws(
      () => new FrameDecoder().push(Uint8Array.from(record)),
      /exceeds the \d+-byte maximum \(the bytes are a TLS record: TLS is on at one end of this link and off at the other\)$/,
    );
  }
  assert.throws(() => new FrameDecoder().push(header(0x16_04_00_00)), /maximum$/, "no TLS version 4.x");
});

Deno.test("frame decoder stays failed on later pushes after an error", () => {
  const decoder = new FrameDecoder({ maxFrameBytes: 100 });
  let first: unknown;
  try {
    decoder.push(header(1000));
  } catch (error) {
    first = error;
  }
  assert.ok(first instanceof RangeError, "the oversized header should throw a RangeError");
  for (const chunk of [encodeLengthPrefixed(utf8.encode("valid")), new Uint8Array([0, 0, 0, 4]), new Uint8Array([1])]) {
    assert.throws(() => decoder.push(chunk), (error) => error === first);
  }
  // Even an empty chunk is refused: the stream has lost its alignment.
  assert.throws(() => decoder.push(new Uint8Array(0)), (error) => error === first);
});

Deno.test("frame decoder reassembles a header split across chunks at every position", () => {
  const payload = utf8.encode("split header");
  const frame = encodeLengthPrefixed(payload);
  for (let cut = 1; cut < HEADER_BYTES; cut++) {
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(frame.slice(0, cut)), [], `cut at ${cut}: nothing is complete yet`);
    assert.equal(decoder.bufferedBytes, cut, `cut at ${cut}: header bytes are held back`);
    assert.deepEqual(decoder.push(frame.slice(cut)), [payload], `cut at ${cut}`);
  }
  // Header split three ways, the last piece carrying the next frame's start.
  const next = encodeLengthPrefixed(utf8.encode("next"));
  const decoder = new FrameDecoder();
  assert.deepEqual(decoder.push(frame.slice(0, 1)), []);
  assert.deepEqual(decoder.push(frame.slice(1, 3)), []);
  assert.deepEqual(decoder.push(concat([frame.slice(3), next.slice(0, 2)])), [payload]);
  assert.deepEqual(decoder.push(next.slice(2)), [utf8.encode("next")]);
});

Deno.test("frame decoder bufferedBytes counts the bytes held back for an incomplete frame", () => {
  const decoder = new FrameDecoder();
  assert.equal(decoder.bufferedBytes, 0);
  const frame = encodeLengthPrefixed(utf8.encode("0123456789")); // 14 bytes
  assert.deepEqual(decoder.push(frame.slice(0, 2)), []);
  assert.equal(decoder.bufferedBytes, 2);
  assert.deepEqual(decoder.push(frame.slice(2, 7)), []);
  assert.equal(decoder.bufferedBytes, 7);
  assert.deepEqual(decoder.push(frame.slice(7, 13)), []);
  assert.equal(decoder.bufferedBytes, 13);
  assert.deepEqual(decoder.push(concat([frame.slice(13), frame.slice(0, 9)])), [utf8.encode("0123456789")]);
  assert.equal(decoder.bufferedBytes, 9, "the start of the next frame is held back");
  assert.deepEqual(decoder.push(frame.slice(9)), [utf8.encode("0123456789")]);
  assert.equal(decoder.bufferedBytes, 0);
});

Deno.test("frame decoder returns payloads that stay valid after the caller reuses its read buffer for split frames", () => {
  const frame = encodeLengthPrefixed(utf8.encode("abcdef"));
  const buffer = new Uint8Array(8);
  const decoder = new FrameDecoder();
  buffer.set(frame.subarray(0, 8));
  assert.deepEqual(decoder.push(buffer), []);
  buffer.fill(0xee);
  buffer.set(frame.subarray(8), 0);
  const [payload] = decoder.push(buffer.subarray(0, frame.length - 8));
  buffer.fill(0xee);
  assert.deepEqual(payload, utf8.encode("abcdef"), "a frame split across chunks is copied out");
});

Deno.test("encodeLengthPrefixed matches the original's captured headers 0x42, 0x4e, 0x56 for payloads of 62, 74, 82 bytes", () => {
  const vectors: [number, number[]][] = [
    [62, [0x00, 0x00, 0x00, 0x42]],
    [74, [0x00, 0x00, 0x00, 0x4e]],
    [82, [0x00, 0x00, 0x00, 0x56]],
  ];
  for (const [length, expected] of vectors) {
    const payload = utf8.encode("x".repeat(length));
    const frame = encodeLengthPrefixed(payload);
    assert.deepEqual([...frame.subarray(0, 4)], expected, `header for a ${length}-byte payload`);
    assert.equal(frame.length, length + 4);
    // And the captured header decodes back to the payload.
    assert.deepEqual(new FrameDecoder().push(concat([new Uint8Array(expected), payload])), [payload]);
  }
});
