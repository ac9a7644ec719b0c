/**
 * Micro-benchmarks of the wire protocol's hot paths: the hub encodes every
 * event once, and every link decodes chunks of many frames. `deno task bench:micro`.
 */

import { encodeMessage, type EventMessage, FrameDecoder, MessageDecoder, toHubMessage } from "./wire.ts";

const CONTENT = "0123456789abcdef".repeat(4);
const EVENT: EventMessage = { type: "event", subject: "broadcast", data: { content: CONTENT } };
const FRAME = encodeMessage(EVENT);

/** 100 event frames back to back, as a busy pusher link reads them. */
const CHUNK = new Uint8Array(FRAME.length * 100);
for (let i = 0; i < 100; i++) CHUNK.set(FRAME, i * FRAME.length);

/** The chunk cut into pieces of `size` bytes, so that frames and headers are split across pieces. */
function pieces(size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let offset = 0; offset < CHUNK.length; offset += size) out.push(CHUNK.subarray(offset, offset + size));
  return out;
}

Deno.bench("encodeMessage: one broadcast event, 64-byte content", { group: "encode" }, () => {
  encodeMessage(EVENT);
});

// A fresh decoder per iteration (its construction is negligible): a failed
// or half-fed decoder must not carry over.
Deno.bench("MessageDecoder.push: a chunk of 100 event frames", { group: "decode" }, () => {
  const messages = new MessageDecoder(toHubMessage).push(CHUNK);
  if (messages.length !== 100) throw new Error(`Decoded ${messages.length} messages, expected 100`);
});

Deno.bench("FrameDecoder.push: 100 frames in one chunk", { group: "frames", baseline: true }, () => {
  new FrameDecoder().push(CHUNK);
});

for (const size of [1, 7, 64, 1000]) {
  const split = pieces(size);
  Deno.bench(`FrameDecoder.push: 100 frames split every ${size} bytes`, { group: "frames" }, () => {
    const decoder = new FrameDecoder();
    let frames = 0;
    for (const piece of split) frames += decoder.push(piece).length;
    if (frames !== 100) throw new Error(`Decoded ${frames} frames, expected 100`);
  });
}
