import assert from "node:assert/strict";
import { collectWhenIdle, type HeapUsage, type IdleCollection } from "./idle_gc.ts";

const MiB = 1024 * 1024;

/** A heap the test scripts, a collection that shrinks it, and a timer the test ticks by hand. */
function scripted(start: HeapUsage, startBytes?: number) {
  let heap = start;
  let check: (() => void) | undefined;
  const collections: IdleCollection[] = [];
  /** What a collection leaves: by default, the idle heap. */
  let leaves: HeapUsage = { heapTotal: 6 * MiB, heapUsed: 5 * MiB };
  const watcher = collectWhenIdle({
    usage: () => heap,
    collect: () => heap = leaves,
    every: (fn) => {
      check = fn;
      return { [Symbol.dispose]: () => check = undefined };
    },
    onCollect: (collection) => collections.push(collection),
    ...(startBytes === undefined ? {} : { startBytes }),
  });
  return {
    collections,
    watcher,
    /** Makes the next collections leave `heapTotal` committed. */
    leave(heapTotal: number) {
      leaves = { heapTotal, heapUsed: heapTotal - MiB };
    },
    /** The heap as the next look will find it, then that look. */
    look(heapTotal: number, heapUsed: number) {
      heap = { heapTotal, heapUsed };
      check?.();
    },
  };
}

Deno.test("idle gc collects once a burst is over: the heap grew and then stopped moving", () => {
  const heap = scripted({ heapTotal: 6 * MiB, heapUsed: 5 * MiB });
  heap.look(20 * MiB, 14 * MiB); // at work: grown, and moving
  heap.look(25 * MiB, 9 * MiB);
  heap.look(25 * MiB, 9.05 * MiB); // one quiet look: a young collection between two looks can do that
  heap.look(25 * MiB, 9.15 * MiB); // a trickle: 102 KiB moved
  assert.equal(heap.collections.length, 0, "no pause while the service works, even at a trickle");
  heap.look(25 * MiB, 9.1 * MiB); // quiet: 51 KiB moved
  assert.equal(heap.collections.length, 0, "one quiet look is not enough");
  heap.look(25 * MiB, 9.1 * MiB);
  assert.equal(heap.collections.length, 1, "two in a row are");
  assert.equal(heap.collections[0]!.before, 25 * MiB);
  assert.equal(heap.collections[0]!.after, 6 * MiB);
  heap.look(6 * MiB, 5 * MiB);
  heap.look(6 * MiB, 5 * MiB);
  assert.equal(heap.collections.length, 1, "once per burst: an idle heap that did not grow is left alone");
});

Deno.test("idle gc leaves a quiet heap alone until it has grown past the minimum, and measures from the last collection", () => {
  const heap = scripted({ heapTotal: 6 * MiB, heapUsed: 5 * MiB });
  heap.look(9 * MiB, 5 * MiB);
  heap.look(9 * MiB, 5 * MiB);
  assert.equal(heap.collections.length, 0, "3 MiB of growth is under the 4 MiB worth a pause");
  heap.look(11 * MiB, 8 * MiB);
  heap.look(11 * MiB, 8 * MiB);
  heap.look(11 * MiB, 8 * MiB);
  assert.equal(heap.collections.length, 1);
});

Deno.test("idle gc with startBytes 0 gives back the heap built while starting, once, when it is quiet", () => {
  const started = scripted({ heapTotal: 9 * MiB, heapUsed: 8 * MiB }, 0);
  started.look(9 * MiB, 8 * MiB);
  assert.equal(started.collections.length, 0, "one quiet look is not enough");
  started.look(9 * MiB, 8 * MiB);
  assert.deepEqual(started.collections.map(({ before, after }) => [before, after]), [[9 * MiB, 6 * MiB]]);
  started.look(6 * MiB, 5 * MiB);
  started.look(6 * MiB, 5 * MiB);
  assert.equal(started.collections.length, 1, "then only after growth");
  const small = scripted({ heapTotal: 3 * MiB, heapUsed: 2 * MiB }, 0);
  small.look(3 * MiB, 2 * MiB);
  small.look(3 * MiB, 2 * MiB);
  assert.equal(small.collections.length, 0, "a start under the minimum growth is left alone");
  const unset = scripted({ heapTotal: 9 * MiB, heapUsed: 8 * MiB });
  unset.look(9 * MiB, 8 * MiB);
  unset.look(9 * MiB, 8 * MiB);
  assert.equal(unset.collections.length, 0, "by default growth counts from the heap when watching starts");
});

Deno.test("idle gc follows a heap that V8 shrank by itself, and stops when disposed", () => {
  const heap = scripted({ heapTotal: 20 * MiB, heapUsed: 5 * MiB });
  heap.look(8 * MiB, 5 * MiB); // V8's own reducer ran: this is the new floor
  heap.look(11 * MiB, 5 * MiB);
  assert.equal(heap.collections.length, 0, "3 MiB past the lower floor");
  heap.watcher[Symbol.dispose]();
  heap.watcher[Symbol.dispose]();
  heap.look(30 * MiB, 5 * MiB);
  assert.equal(heap.collections.length, 0, "nothing after dispose");
});

Deno.test("idle gc looks once more after 30 s of quiet when a collection in a lull left the heap high, and only once", () => {
  const heap = scripted({ heapTotal: 6 * MiB, heapUsed: 5 * MiB });
  heap.look(40 * MiB, 30 * MiB);
  heap.leave(20 * MiB); // the burst's objects were still in use
  heap.look(40 * MiB, 30 * MiB);
  heap.look(40 * MiB, 30 * MiB);
  assert.equal(heap.collections.length, 1);
  heap.leave(6 * MiB);
  for (let look = 1; look < 15; look++) heap.look(20 * MiB, 19 * MiB);
  heap.look(20 * MiB, 18 * MiB); // work again: the quiet starts over
  for (let look = 1; look < 15; look++) heap.look(20 * MiB, 18 * MiB);
  assert.equal(heap.collections.length, 1, "29 looks, but not 15 quiet in a row");
  heap.look(20 * MiB, 18 * MiB);
  assert.equal(heap.collections.length, 2, "the 15th quiet look (30 s at 2 s a look)");
  assert.equal(heap.collections[1]!.after, 6 * MiB);
  for (let look = 0; look < 40; look++) heap.look(6 * MiB, 5 * MiB);
  assert.equal(heap.collections.length, 2);
});

Deno.test("idle gc leaves a heap that holds its size for good alone after one follow-up", () => {
  const heap = scripted({ heapTotal: 6 * MiB, heapUsed: 5 * MiB });
  heap.leave(30 * MiB); // 10,000 open connections, say
  heap.look(40 * MiB, 35 * MiB);
  heap.look(40 * MiB, 35 * MiB);
  heap.look(40 * MiB, 35 * MiB);
  for (let look = 0; look < 15; look++) heap.look(30 * MiB, 29 * MiB);
  assert.equal(heap.collections.length, 2, "the collection, and its follow-up");
  for (let look = 0; look < 100; look++) heap.look(30 * MiB, 29 * MiB);
  assert.equal(heap.collections.length, 2, "then no pause until the heap grows again");
});

Deno.test("idle gc watches nothing without --expose-gc", () => {
  assert.equal((globalThis as { gc?: unknown }).gc, undefined, "this test runs without --expose-gc");
  let timers = 0;
  using _watcher = collectWhenIdle({
    every: () => {
      timers++;
      return { [Symbol.dispose]() {} };
    },
  });
  assert.equal(timers, 0);
});

Deno.test("idle gc with V8's gc() gives back the pages of a heap grown by garbage", async () => {
  // A process of its own, as the services run: with --expose-gc and the services' small young generation.
  const script = `
    import { collectWhenIdle } from ${JSON.stringify(new URL("./idle_gc.ts", import.meta.url).href)};
    // The watcher's timer does not keep a process alive: this does, until the collection or 5 s.
    const hold = setTimeout(() => {}, 5000);
    const watcher = collectWhenIdle({
      intervalMs: 50,
      onCollect: (c) => { console.log(JSON.stringify(c)); watcher[Symbol.dispose](); clearTimeout(hold); },
    });
    let keep = [];
    for (let i = 0; i < 200_000; i++) keep.push({ i, text: "x".repeat(100) + i });
    keep = null;
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--v8-flags=--expose-gc,--max-semi-space-size=1", script],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.equal(output.code, 0);
  const line = new TextDecoder().decode(output.stdout).trim().split("\n")[0];
  assert.ok(line, "the watcher collected within 5 s");
  const collection: IdleCollection = JSON.parse(line);
  assert.ok(
    collection.after < collection.before / 2,
    `committed heap ${collection.before} -> ${collection.after} bytes: less than half is left`,
  );
});
