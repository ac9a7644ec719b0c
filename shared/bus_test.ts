import assert from "node:assert/strict";
import { type Bus, type BusBatchItem, BusError, coalescePublishes } from "./bus.ts";

/** A bus that records each publishBatch call's items and answers each item with `answer`. */
function recordingBus(answer: (item: BusBatchItem) => ReturnType<NonNullable<Bus["publishBatch"]>> | undefined) {
  const batches: BusBatchItem[][] = [];
  const bus: Pick<Bus, "publish" | "publishBatch"> = {
    publish: () => Promise.reject(new Error("publish is not for a bus that batches")),
    publishBatch(items) {
      batches.push([...items]);
      return answer(items[0]!) ??
        Promise.resolve(items.map(({ data }) => (data === "refuse" ? new BusError("refused", "no") : { reached: 1 })));
    },
  };
  return { bus, batches };
}

Deno.test("coalesced publishes go in batches of at most maxItems, and only what one turn made", async () => {
  const { bus, batches } = recordingBus(() => undefined);
  const publish = coalescePublishes(bus, { maxItems: 1000 });
  const first = Array.from({ length: 2500 }, (_, i) => publish({ subject: "s", data: i }));
  assert.deepEqual(batches.map((batch) => batch.length), [1000, 1000], "full batches go at once");
  await Promise.all(first);
  assert.deepEqual(batches.map((batch) => batch.length), [1000, 1000, 500], "the rest at the turn's end");
  await publish({ subject: "s", data: "later" });
  assert.deepEqual(batches.at(-1), [{ subject: "s", data: "later" }]);
});

Deno.test("a coalesced publish rejects alone with the BusError that refused its item, or with its batch's failure", async () => {
  const { bus } = recordingBus((first) => first.data === "down" ? Promise.reject(new Error("link gone")) : undefined);
  const publish = coalescePublishes(bus);
  const outcomes = await Promise.allSettled([
    publish({ subject: "s", data: 1 }),
    publish({ subject: "s", data: "refuse" }),
    publish({ subject: "s", data: 3 }),
  ]);
  assert.deepEqual(outcomes.map((outcome) => outcome.status), ["fulfilled", "rejected", "fulfilled"]);
  assert.ok(outcomes[1]!.status === "rejected" && outcomes[1]!.reason instanceof BusError);
  const failed = await Promise.allSettled([
    publish({ subject: "s", data: "down" }),
    publish({ subject: "s", data: 2 }),
  ]);
  assert.deepEqual(failed.map((outcome) => outcome.status === "rejected" && outcome.reason.message), [
    "link gone",
    "link gone",
  ]);
});

Deno.test("on a bus without publishBatch each coalesced publish goes at once, with the timeout and its key", async () => {
  const calls: unknown[][] = [];
  const publish = coalescePublishes({
    publish: (...args) => {
      calls.push(args);
      return Promise.resolve({ reached: 2 });
    },
  }, { timeout: 1234 });
  const done = publish({ subject: "s", data: 1, idempotencyKey: "k" });
  assert.deepEqual(calls, [["s", 1, { timeout: 1234, idempotencyKey: "k" }]], "called before the turn ends");
  assert.deepEqual(await done, { reached: 2 });
});

Deno.test("at most maxWaiting coalesced publishes wait for the bus; past it one is refused at once", async () => {
  let answer = () => {};
  const { bus } = recordingBus((first) =>
    new Promise((resolve) => {
      answer = () => resolve([{ reached: 1 }, { reached: 1 }].slice(0, first.data === "a" ? 2 : 1));
    })
  );
  const publish = coalescePublishes(bus, { maxWaiting: 2 });
  const waiting = [publish({ subject: "s", data: "a" }), publish({ subject: "s", data: "b" })];
  await assert.rejects(publish({ subject: "s", data: "c" }), {
    name: "BusError",
    code: "unavailable",
    message: "Cannot publish: 2 publishes already wait for the bus",
  });
  await new Promise((resolve) => setImmediate(resolve));
  answer();
  assert.deepEqual(await Promise.all(waiting), [{ reached: 1 }, { reached: 1 }]);
  const later = publish({ subject: "s", data: "d" });
  await new Promise((resolve) => setImmediate(resolve));
  answer();
  assert.deepEqual(await later, { reached: 1 }, "room again once the bus answered");
});

Deno.test("a bus whose publishBatch throws rejects the turn's coalesced publishes, and nothing else", async () => {
  const publish = coalescePublishes({
    publish: () => Promise.reject(new Error("unused")),
    publishBatch: () => {
      throw new TypeError("cannot encode");
    },
  });
  const outcomes = await Promise.allSettled([publish({ subject: "s", data: 1 }), publish({ subject: "s", data: 2 })]);
  assert.deepEqual(outcomes.map((outcome) => outcome.status === "rejected" && outcome.reason.message), [
    "cannot encode",
    "cannot encode",
  ]);
});
