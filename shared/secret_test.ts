import assert from "node:assert/strict";
import { secretsEqual } from "./secret.ts";

Deno.test("secretsEqual is true only for the same secret", () => {
  assert.equal(secretsEqual("s3cret", "s3cret"), true);
  assert.equal(secretsEqual("", ""), true);
  assert.equal(secretsEqual("ünïcødé 🔑", "ünïcødé 🔑"), true);
  for (const given of ["", "s", "s3cre", "s3creT", "s3crets", "s3crets3cret", "S3CRET", "s3cret\0"]) {
    assert.equal(secretsEqual(given, "s3cret"), false, JSON.stringify(given));
  }
  // Cycling over expected must not make a repetition of it match.
  assert.equal(secretsEqual("abab", "ab"), false);
  assert.equal(secretsEqual("x", ""), false);
  assert.equal(secretsEqual("", "x"), false);
});

Deno.test("secretsEqual agrees with plain equality on random strings", () => {
  const alphabet = "ab\u00e9\u{1F511}";
  const random = () =>
    Array.from({ length: Math.floor(Math.random() * 6) }, () => [...alphabet][Math.floor(Math.random() * 4)]).join("");
  for (let i = 0; i < 5000; i++) {
    const [given, expected] = [random(), random()];
    assert.equal(secretsEqual(given, expected), given === expected, `${given} vs ${expected}`);
  }
});
