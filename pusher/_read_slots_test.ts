import assert from "node:assert/strict";
import { ReadSlots } from "./_read_slots.ts";

Deno.test("ReadSlots hands out separate 128-byte slots, from new slabs as needed, and reuses given-back ones first", () => {
  const slots = new ReadSlots();
  const taken = Array.from({ length: 600 }, () => slots.take());
  for (const slot of taken) assert.equal(slot.length, 128);
  // No two slots overlap: writing each one's index into it is seen back in all.
  taken.forEach((slot, i) => slot.fill(i % 256));
  taken.forEach((slot, i) => assert.ok(slot.every((byte) => byte === i % 256), `slot ${i}`));
  assert.ok(new Set(taken.map((slot) => slot.buffer)).size >= 3, "600 slots need three slabs");
  slots.give(taken[7]!);
  assert.equal(slots.take(), taken[7]);
});
