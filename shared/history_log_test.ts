import assert from "node:assert/strict";
import fc from "fast-check";
import { HistoryLog, HistoryStore, SUBJECT_BYTES } from "./history_log.ts";

/** A clock the test moves by hand. */
function clock(): { now: () => number; advance: (ms: number) => void } {
  let time = 1_000_000;
  return { now: () => time, advance: (ms) => (time += ms) };
}

function filled(count: number, limits = {}, now = clock().now): HistoryLog<string> {
  const log = new HistoryLog<string>(limits, now, "e0e0e0e0");
  for (let i = 1; i <= count; i++) log.append(`m${i}`, 10);
  return log;
}

const offsets = (read: { messages: { offset: number }[] }) => read.messages.map((m) => m.offset);

Deno.test("history log gives each message the next offset, from 1, in one epoch", () => {
  const log = new HistoryLog<string>({}, Date.now, "abcdef01");
  assert.deepEqual(log.position, { offset: 0, epoch: "abcdef01" });
  assert.deepEqual(log.append("a", 1), { offset: 1, epoch: "abcdef01" });
  assert.deepEqual(log.append("b", 1), { offset: 2, epoch: "abcdef01" });
  assert.match(new HistoryLog().epoch, /^[0-9a-f]{8}$/);
});

Deno.test("history log returns exactly what followed a position of its epoch, recovered", () => {
  const log = filled(5);
  const read = log.read({ since: { offset: 2, epoch: "e0e0e0e0" } });
  assert.deepEqual(offsets(read), [3, 4, 5]);
  assert.deepEqual(read.messages.map((m) => m.data), ["m3", "m4", "m5"]);
  assert.deepEqual(read.position, { offset: 5, epoch: "e0e0e0e0" });
  assert.equal(read.recovered, true);
});

Deno.test("history log recovers a reader at the top with nothing to send", () => {
  const log = filled(3);
  const read = log.read({ since: { offset: 3, epoch: "e0e0e0e0" } });
  assert.deepEqual(read.messages, []);
  assert.equal(read.recovered, true);
  const fresh = new HistoryLog<string>({}, Date.now, "e1e1e1e1");
  assert.equal(fresh.read({ since: { offset: 0, epoch: "e1e1e1e1" } }).recovered, true);
});

Deno.test("history log does not recover a position of another epoch", () => {
  const read = filled(3).read({ since: { offset: 1, epoch: "ffffffff" } });
  assert.deepEqual(read.messages, []);
  assert.equal(read.recovered, false);
});

Deno.test("history log does not recover a future offset", () => {
  const read = filled(3).read({ since: { offset: 4, epoch: "e0e0e0e0" } });
  assert.deepEqual(read.messages, []);
  assert.equal(read.recovered, false);
  assert.deepEqual(read.position, { offset: 3, epoch: "e0e0e0e0" });
});

Deno.test("history log without since returns all it keeps, never recovered", () => {
  const read = filled(3).read();
  assert.deepEqual(offsets(read), [1, 2, 3]);
  assert.equal(read.recovered, false);
});

Deno.test("history log trimmed by size past a position does not recover it, but sends what it keeps", () => {
  const log = filled(10, { size: 4 });
  assert.equal(log.length, 4);
  const lost = log.read({ since: { offset: 5, epoch: "e0e0e0e0" } });
  assert.deepEqual(offsets(lost), [7, 8, 9, 10]);
  assert.equal(lost.recovered, false);
  const edge = log.read({ since: { offset: 6, epoch: "e0e0e0e0" } });
  assert.deepEqual(offsets(edge), [7, 8, 9, 10]);
  assert.equal(edge.recovered, true, "nothing between 6 and 7 was trimmed");
});

Deno.test("history log cut by limit does not recover", () => {
  const log = filled(10);
  const cut = log.read({ since: { offset: 2, epoch: "e0e0e0e0" }, limit: 3 });
  assert.deepEqual(offsets(cut), [3, 4, 5]);
  assert.equal(cut.recovered, false);
  const whole = log.read({ since: { offset: 7, epoch: "e0e0e0e0" }, limit: 3 });
  assert.deepEqual(offsets(whole), [8, 9, 10]);
  assert.equal(whole.recovered, true);
  assert.deepEqual(offsets(log.read({ limit: 2 })), [1, 2]);
  assert.equal(log.read({ since: { offset: 10, epoch: "e0e0e0e0" }, limit: 0 }).recovered, true);
});

Deno.test("history log caps a limit at its size", () => {
  const log = filled(6, { size: 5 });
  assert.equal(log.read({ limit: 1000 }).messages.length, 5);
});

Deno.test("history log trims messages older than its ttl", () => {
  const time = clock();
  const log = new HistoryLog<string>({ ttl: 1000 }, time.now, "e0e0e0e0");
  log.append("old", 10);
  time.advance(600);
  log.append("new", 10);
  time.advance(500);
  const read = log.read({ since: { offset: 0, epoch: "e0e0e0e0" } });
  assert.deepEqual(offsets(read), [2]);
  assert.equal(read.recovered, false);
  assert.equal(log.bytes, 10);
  time.advance(1000);
  const empty = log.read({ since: { offset: 1, epoch: "e0e0e0e0" } });
  assert.deepEqual(empty.messages, []);
  assert.equal(empty.recovered, false, "message 2 expired unseen");
  assert.equal(log.read({ since: { offset: 2, epoch: "e0e0e0e0" } }).recovered, true);
  assert.equal(log.bytes, 0);
});

Deno.test("history log trims oldest messages past its byte bound", () => {
  const log = filled(0, { maxBytes: 25 });
  log.append("a", 10);
  log.append("b", 10);
  log.append("c", 10);
  assert.equal(log.bytes, 20);
  assert.deepEqual(offsets(log.read()), [2, 3]);
  log.append("huge", 100);
  assert.equal(log.length, 0, "a message over the bound alone is not kept");
  assert.deepEqual(log.position.offset, 4);
  assert.equal(log.read({ since: { offset: 3, epoch: "e0e0e0e0" } }).recovered, false);
});

Deno.test("history log keeps offsets consecutive across many trims", () => {
  const log = filled(1000, { size: 7 });
  const read = log.read({ since: { offset: 995, epoch: "e0e0e0e0" } });
  assert.deepEqual(offsets(read), [996, 997, 998, 999, 1000]);
  assert.equal(read.recovered, true);
});

Deno.test("history store keeps history only for listed names and prefixes", () => {
  const store = new HistoryStore<string>({ subjects: ["news", "chat.*"] });
  assert(store.keeps("news") && store.keeps("chat.1") && store.keeps("chat."));
  assert(!store.keeps("newsy") && !store.keeps("chat") && !store.keeps("broadcast"));
  assert.equal(store.append("other", "x", 1), undefined);
  assert.deepEqual(store.read("other"), { position: { offset: 0, epoch: "" }, messages: [], recovered: false });
  assert.equal(store.append("chat.1", "x", 1)?.offset, 1);
  assert(!new HistoryStore().enabled);
});

Deno.test("history store gives a subject read before its first message the epoch its messages get", () => {
  const store = new HistoryStore<string>({ subjects: ["news"] });
  const before = store.read("news").position;
  assert.equal(before.offset, 0);
  store.append("news", "a", 1);
  const read = store.read("news", { since: before });
  assert.deepEqual(read.messages.map((m) => m.data), ["a"]);
  assert.equal(read.recovered, true);
});

Deno.test("history store reads of subjects never published make nothing and drop no other subject's history", () => {
  const store = new HistoryStore<string>({ subjects: ["*"], maxSubjects: 2 });
  const a = store.append("a", "kept", 1)!;
  const b = store.append("b", "kept", 1)!;
  for (let i = 0; i < 100; i++) assert.equal(store.read(`fresh.${i}`).position.offset, 0);
  assert.deepEqual(store.stats, { subjects: 2, bytes: 2 * SUBJECT_BYTES + 2, evictions: 0 });
  for (const [subject, since] of [["a", a], ["b", b]] as const) {
    const read = store.read(subject, { since: { offset: 0, epoch: since.epoch } });
    assert.deepEqual([read.messages.map((m) => m.data), read.recovered], [["kept"], true], subject);
  }
});

Deno.test("history store gives a subject read again after its history was dropped another epoch", () => {
  const store = new HistoryStore<string>({ subjects: ["*"], maxSubjects: 1 });
  const read = store.read("a").position;
  const published = store.append("a", "x", 1)!;
  assert.deepEqual(published, { offset: 1, epoch: read.epoch }, "the first message continues the epoch read");
  store.append("b", "x", 1); // past maxSubjects: a's history goes
  assert.equal(store.stats.evictions, 1);
  const after = store.read("a", { since: published });
  assert.equal(after.recovered, false);
  assert.notEqual(after.position.epoch, published.epoch);
  assert.deepEqual(store.append("a", "y", 1), { offset: 1, epoch: after.position.epoch });
});

Deno.test("history store remove of a subject only read gives its next read another epoch", () => {
  const store = new HistoryStore<string>({ subjects: ["news"] });
  const read = store.read("news").position;
  store.remove("news");
  const again = store.read("news", { since: read });
  assert.equal(again.recovered, false);
  assert.notEqual(again.position.epoch, read.epoch);
  assert.equal(store.append("news", "a", 1)!.epoch, again.position.epoch);
  assert.deepEqual(store.stats, { subjects: 1, bytes: SUBJECT_BYTES + 1, evictions: 0 });
});

Deno.test("history store remove starts a new epoch", () => {
  const store = new HistoryStore<string>({ subjects: ["news"] });
  const first = store.append("news", "a", 1)!;
  store.remove("news");
  const second = store.append("news", "b", 1)!;
  assert.equal(second.offset, 1);
  assert.notEqual(second.epoch, first.epoch);
  assert.equal(store.read("news", { since: first }).recovered, false);
  assert.equal(store.stats.bytes, SUBJECT_BYTES + 1);
});

Deno.test("history store drops the least recently published subject whole past its total bytes", () => {
  const store = new HistoryStore<string>({
    subjects: ["*"],
    maxBytes: 1000,
    totalBytes: 3 * SUBJECT_BYTES + 2500,
  });
  const a = store.append("a", "x", 1000)!;
  store.append("b", "x", 1000);
  store.append("a", "x", 500); // a trims its first message and is now the most recent
  store.append("c", "x", 1000);
  assert.deepEqual(store.stats, { subjects: 3, bytes: 3 * SUBJECT_BYTES + 2500, evictions: 0 });
  store.append("d", "y", 100);
  assert.deepEqual(store.stats, { subjects: 3, bytes: 3 * SUBJECT_BYTES + 500 + 1000 + 100, evictions: 1 });
  assert.equal(store.read("b").position.offset, 0, "b's history went whole; reading it starts a new one");
  assert.equal(store.read("a", { since: a }).recovered, true);
});

Deno.test("history store drops the least recently published subject past its subject count", () => {
  const store = new HistoryStore<string>({ subjects: ["*"], maxSubjects: 2 });
  const a = store.append("a", "x", 1)!;
  store.append("b", "x", 1);
  store.append("c", "x", 1);
  assert.equal(store.stats.subjects, 2);
  const again = store.read("a", { since: a });
  assert.equal(again.recovered, false);
  assert.notEqual(again.position.epoch, a.epoch);
});

Deno.test("history store sweep frees expired messages of idle subjects", () => {
  const time = clock();
  const store = new HistoryStore<string>({ subjects: ["*"], ttl: 100, now: time.now });
  store.append("a", "x", 50);
  time.advance(200);
  assert.equal(store.sweep(), 50);
  assert.equal(store.stats.bytes, SUBJECT_BYTES);
});

Deno.test("history store refuses bounds that cannot hold", () => {
  assert.throws(() => new HistoryStore({ size: 0 }), RangeError);
  assert.throws(() => new HistoryStore({ maxBytes: 1000, totalBytes: 1000 }), RangeError);
});

Deno.test("history log agrees with a model on any appends, waits and reads: the newest run within every bound, and recovered only when nothing was missed", () => {
  type Op =
    | { op: "append"; bytes: number }
    | { op: "wait"; ms: number }
    | { op: "read"; since: number | null; epoch: boolean; limit: number | null };
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 5, arbitrary: fc.record({ op: fc.constant("append" as const), bytes: fc.integer({ min: 0, max: 60 }) }) },
    // Waits and ttls on one grid, so that messages meet their ttl exactly.
    fc.record({ op: fc.constant("wait" as const), ms: fc.constantFrom(0, 25, 50, 100, 150) }),
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant("read" as const),
        since: fc.option(fc.integer({ min: -1, max: 40 }), { freq: 5 }),
        epoch: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, fc.constant(false)),
        limit: fc.option(fc.integer({ min: 1, max: 12 })),
      }),
    },
  );
  const limits = fc.record({
    size: fc.integer({ min: 1, max: 8 }),
    ttl: fc.constantFrom(25, 50, 100, 200, 1000),
    maxBytes: fc.integer({ min: 1, max: 150 }),
  });
  fc.assert(
    fc.property(limits, fc.array(op, { maxLength: 60 }), ({ size, ttl, maxBytes }, ops) => {
      const time = clock();
      const log = new HistoryLog<number>({ size, ttl, maxBytes }, time.now, "e0e0e0e0");
      const all: { offset: number; bytes: number; time: number }[] = [];
      let trimmedUpTo = 0;
      /** The model: the newest messages within every bound now, never one trimmed before. */
      const kept = () => {
        let count = 0;
        let bytes = 0;
        let from = all.length;
        while (from > 0) {
          const m = all[from - 1]!;
          if (m.offset <= trimmedUpTo || count + 1 > size || bytes + m.bytes > maxBytes) break;
          if (m.time <= time.now() - ttl) break;
          count++;
          bytes += m.bytes;
          from--;
        }
        trimmedUpTo = Math.max(trimmedUpTo, all[from - 1]?.offset ?? 0);
        return all.slice(from);
      };
      for (const step of ops) {
        if (step.op === "wait") {
          time.advance(step.ms);
        } else if (step.op === "append") {
          const offset = all.length + 1;
          all.push({ offset, bytes: step.bytes, time: time.now() });
          assert.deepEqual(log.append(offset, step.bytes), { offset, epoch: "e0e0e0e0" });
          kept();
        } else {
          const top = all.length;
          const since = step.since === null
            ? undefined
            : { offset: step.since, epoch: step.epoch ? "e0e0e0e0" : "ffffffff" };
          const read = log.read({ ...(since && { since }), ...(step.limit !== null && { limit: step.limit }) });
          const now = kept();
          assert.deepEqual(read.position, { offset: top, epoch: "e0e0e0e0" });
          if (since && (!step.epoch || since.offset > top)) {
            assert.deepEqual([read.messages, read.recovered], [[], false]);
            continue;
          }
          const after = now.filter((m) => m.offset > (since?.offset ?? 0));
          const expected = after.slice(0, Math.min(step.limit ?? size, size));
          assert.deepEqual(
            read.messages.map((m) => [m.offset, m.data, m.bytes]),
            expected.map((m) => [m.offset, m.offset, m.bytes]),
          );
          const missed = since !== undefined && (after[0]?.offset ?? top + 1) > since.offset + 1;
          assert.equal(read.recovered, since !== undefined && !missed && expected.length === after.length);
        }
        assert.equal(log.length <= size && log.bytes <= maxBytes, true, "within its bounds");
      }
    }),
    { seed: 17, numRuns: 2000 },
  );
});
