import assert from "node:assert/strict";
import { IdempotencyCache, idempotencyKey } from "./idempotency.ts";

Deno.test("idempotency cache answers a key within its window, not after", () => {
  let time = 0;
  const cache = new IdempotencyCache<number>({ window: 1000, now: () => time });
  cache.set("k", 3);
  time = 999;
  assert.equal(cache.get("k"), 3);
  time = 1000;
  assert.equal(cache.get("k"), undefined);
  assert.equal(cache.size, 0);
});

Deno.test("idempotency cache forgets its oldest keys past its count", () => {
  const cache = new IdempotencyCache<number>({ maxKeys: 2 });
  cache.set("a", 1);
  cache.set("b", 2);
  cache.set("c", 3);
  assert.equal(cache.get("a"), undefined);
  assert.equal(cache.get("b"), 2);
  assert.equal(cache.size, 2);
});

Deno.test("idempotency keys differ by subject list", () => {
  assert.notEqual(idempotencyKey(["a"], "k"), idempotencyKey(["b"], "k"));
  assert.notEqual(idempotencyKey(["a,b"], "k"), idempotencyKey(["a", "b"], "k"));
});

Deno.test("idempotency cache forgets its oldest keys past its weight, and does not keep an answer heavier than all of it", () => {
  const cache = new IdempotencyCache<string>({ maxWeight: 10 });
  cache.set("a", "light", 1);
  cache.set("b", "heavy", 8);
  cache.set("c", "light", 1);
  assert.deepEqual([cache.get("a"), cache.get("b"), cache.get("c")], ["light", "heavy", "light"], "10 of 10");
  cache.set("d", "middle", 5);
  assert.deepEqual([cache.get("a"), cache.get("b"), cache.get("c"), cache.get("d")], [
    undefined,
    undefined,
    "light",
    "middle",
  ]);
  cache.set("e", "too heavy", 11);
  assert.equal(cache.get("e"), undefined);
  assert.equal(cache.size, 2, "nothing else forgotten for it");
  // A key set again weighs only its new answer.
  cache.set("c", "again", 4);
  cache.set("f", "light", 1);
  assert.deepEqual([cache.get("c"), cache.get("d"), cache.get("f")], ["again", "middle", "light"]);
});
