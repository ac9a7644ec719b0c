import assert from "node:assert/strict";
import {
  closeCode,
  closePayload,
  encodeClientFrame,
  OPCODE_BINARY,
  OPCODE_CLOSE,
  OPCODE_PING,
  OPCODE_PONG,
  OPCODE_TEXT,
  ServerFrameParser,
} from "./_ws_frames.ts";
import { mulberry32 } from "../shared/testing.ts";

/** An unmasked server frame, as RFC 6455 lays it out. */
function serverFrame(
  opcode: number,
  payload: Uint8Array,
  options: { fin?: boolean; masked?: boolean } = {},
): Uint8Array {
  const header = payload.length < 126 ? 2 : payload.length < 0x10000 ? 4 : 10;
  const frame = new Uint8Array(header + payload.length);
  frame[0] = (options.fin === false ? 0 : 0x80) | opcode;
  const mask = options.masked ? 0x80 : 0;
  if (header === 2) frame[1] = mask | payload.length;
  else if (header === 4) {
    frame[1] = mask | 126;
    new DataView(frame.buffer).setUint16(2, payload.length);
  } else {
    frame[1] = mask | 127;
    new DataView(frame.buffer).setBigUint64(2, BigInt(payload.length));
  }
  frame.set(payload, header);
  return frame;
}

function bytes(size: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: size }, (_, i) => (seed * 31 + i * 7) & 0xff);
}

/**
 * Feeds `stream` in chunks the way `WsClient` does: append to a buffer,
 * parse, keep the unconsumed tail. Returns the frames, payloads copied.
 */
function parseInChunks(stream: Uint8Array, nextSize: () => number): [number, Uint8Array][] {
  const frames: [number, Uint8Array][] = [];
  const parser = new ServerFrameParser({ onFrame: (opcode, payload) => frames.push([opcode, payload.slice()]) });
  let held = new Uint8Array(0);
  for (let offset = 0; offset < stream.length;) {
    const end = Math.min(stream.length, offset + nextSize());
    const buffer = new Uint8Array(held.length + end - offset);
    buffer.set(held);
    buffer.set(stream.subarray(offset, end), held.length);
    held = buffer.slice(parser.parse(buffer));
    offset = end;
  }
  assert.equal(held.length, 0, "every byte should be consumed once the stream ends");
  return frames;
}

const SAMPLES: [number, Uint8Array][] = [
  [OPCODE_TEXT, bytes(0, 1)],
  [OPCODE_TEXT, bytes(64, 2)],
  [OPCODE_PING, bytes(125, 3)],
  [OPCODE_BINARY, bytes(126, 4)],
  [OPCODE_TEXT, bytes(65_535, 5)],
  [OPCODE_TEXT, bytes(65_536, 6)],
  [OPCODE_PONG, bytes(3, 7)],
  [OPCODE_CLOSE, closePayload(3008, "slow")],
];
const STREAM = new Uint8Array(SAMPLES.flatMap(([opcode, payload]) => [...serverFrame(opcode, payload)]));

Deno.test("server frames of 7-, 16- and 64-bit lengths parse the same whole, byte by byte and in random chunks", () => {
  assert.deepEqual(parseInChunks(STREAM, () => STREAM.length), SAMPLES);
  assert.deepEqual(parseInChunks(STREAM, () => 1), SAMPLES);
  for (const seed of [1, 42, 0xdeadbeef]) {
    const random = mulberry32(seed);
    assert.deepEqual(parseInChunks(STREAM, () => 1 + Math.floor(random() * 300)), SAMPLES, `seed ${seed}`);
  }
});

Deno.test("the parser says how big a buffer the frame it stopped in needs", () => {
  const parser = new ServerFrameParser({ onFrame: () => {} });
  const frame = serverFrame(OPCODE_TEXT, bytes(1000, 1));
  assert.equal(parser.parse(frame.subarray(0, 1)), 0);
  assert.equal(parser.needed, 0, "a header cut short says nothing yet");
  assert.equal(parser.parse(frame.subarray(0, 500)), 0);
  assert.equal(parser.needed, 1004);
  assert.equal(parser.parse(frame), 1004);
  assert.equal(parser.needed, 0);
});

Deno.test("the parser refuses masked, fragmented and oversized frames, and long control frames", () => {
  const parse = (frame: Uint8Array, maxPayloadBytes?: number) =>
    new ServerFrameParser({ onFrame: () => {}, maxPayloadBytes }).parse(frame);
  assert.throws(() => parse(serverFrame(OPCODE_TEXT, bytes(4, 1), { masked: true })), /must not be masked/);
  assert.throws(() => parse(serverFrame(OPCODE_TEXT, bytes(4, 1), { fin: false })), /fragmented/);
  assert.throws(() => parse(serverFrame(0, bytes(4, 1))), /fragmented/);
  assert.throws(() => parse(serverFrame(OPCODE_PING, bytes(126, 1))), /control frame of 126 bytes/);
  // Refused on the header alone: the caller never allocates for it.
  assert.throws(() => parse(serverFrame(OPCODE_TEXT, bytes(2000, 1)).subarray(0, 4), 1000), RangeError);
});

Deno.test("client frames are masked, and unmask to their payload at every length class", () => {
  for (const size of [0, 5, 125, 126, 65_535, 65_536]) {
    const payload = bytes(size, size);
    const frame = encodeClientFrame(OPCODE_PONG, payload);
    assert.equal(frame[0], 0x80 | OPCODE_PONG);
    assert.equal(frame[1]! & 0x80, 0x80, "mask bit");
    const length = frame[1]! & 0x7f;
    const header = length === 127 ? 10 : length === 126 ? 4 : 2;
    const declared = length === 127
      ? Number(new DataView(frame.buffer).getBigUint64(2))
      : length === 126
      ? new DataView(frame.buffer).getUint16(2)
      : length;
    assert.equal(declared, size);
    const mask = frame.subarray(header, header + 4);
    const unmasked = frame.subarray(header + 4).map((byte, i) => byte ^ mask[i & 3]!);
    assert.deepEqual(unmasked, payload);
  }
});

Deno.test("close payloads carry their code, and an empty one means 1005", () => {
  assert.equal(closeCode(closePayload(1000)), 1000);
  assert.equal(closeCode(closePayload(3008, "slow")), 3008);
  assert.equal(closeCode(new Uint8Array(0)), 1005);
});
