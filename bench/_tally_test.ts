import assert from "node:assert/strict";
import { DeliveryTally } from "./_tally.ts";

Deno.test("tally counts a broadcast one client got twice and another never got as one duplicate and one loss", () => {
  const tally = new DeliveryTally({ clients: 2, messages: 3, targeted: false });
  for (const seq of [0, 1, 2]) tally.answered(seq);
  for (const seq of [0, 1, 2]) tally.delivered(0, seq);
  // Client 1: message 0 twice, message 1 never; the per-client total is still 3.
  for (const seq of [0, 0, 2]) tally.delivered(1, seq);
  assert.deepEqual([tally.lost(), tally.duplicates, tally.misdirected], [1, 1, 0]);
});

Deno.test("tally owes only messages answered 200, and a targeted one only to its client", () => {
  const tally = new DeliveryTally({ clients: 3, messages: 6, targeted: true });
  for (const seq of [0, 1, 2, 4]) tally.answered(seq); // 3 and 5 failed
  tally.delivered(0, 0);
  tally.delivered(1, 1);
  tally.delivered(1, 2); // for client 2
  tally.delivered(2, 5); // failed, delivered anyway: not owed, not a loss
  assert.deepEqual([tally.lost(), tally.duplicates, tally.misdirected], [2, 0, 1]); // 2 and 4 never reached their clients
});

Deno.test("tally owes a channel publication to its channel's members only", () => {
  // Channels 0 and 1: clients 0 and 2 are in channel 0, clients 1 and 3 in channel 1.
  const tally = new DeliveryTally({ clients: 4, messages: 4, targeted: false, channels: 2 });
  for (const seq of [0, 1, 2, 3]) tally.answered(seq);
  for (const seq of [0, 2]) tally.delivered(0, seq);
  tally.delivered(2, 0); // client 2 misses 2
  for (const seq of [1, 3]) tally.delivered(1, seq);
  for (const seq of [1, 3, 0]) tally.delivered(3, seq); // 0 is channel 0's
  assert.deepEqual([tally.lost(), tally.duplicates, tally.misdirected], [1, 0, 1]);
});
