import assert from "node:assert/strict";
import { secretsEqual } from "./secret.ts";

Deno.test("secretsEqual matches only the same secret, whatever the lengths and where they differ", () => {
  assert.equal(secretsEqual("k3y", "k3y"), true);
  assert.equal(secretsEqual("", ""), true);
  assert.equal(secretsEqual("k3y", "k3z"), false);
  assert.equal(secretsEqual("k3", "k3y"), false);
  assert.equal(secretsEqual("k3yk3y", "k3y"), false, "a repeat of the secret is not the secret");
  assert.equal(secretsEqual("", "k3y"), false);
  assert.equal(secretsEqual("k3y", ""), false);
  assert.equal(secretsEqual("ключ", "ключ"), true);
  assert.equal(secretsEqual("ключ", "ключи"), false);
});
