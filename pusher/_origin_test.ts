import assert from "node:assert/strict";
import fc from "fast-check";
import { originMatcher } from "./_origin.ts";

/** The same language as a regular expression: right, but backtracking. */
function regexpFor(origins: readonly string[]): RegExp {
  const alternatives = origins.map((origin) =>
    origin === "*"
      ? ".*"
      : origin.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\/]/g, "\\$&")).join("[a-z0-9.-]*")
  );
  return new RegExp(`^(?:${alternatives.join("|")})$`, "i");
}

Deno.test("originMatcher's wildcard takes a host's or a port's characters only", () => {
  const allowed = originMatcher(["https://*.example.com", "http://localhost:*"]);
  for (const origin of ["https://eu.example.com", "https://a.b-c.EXAMPLE.com", "http://localhost:8080"]) {
    assert.equal(allowed(origin), true, origin);
  }
  for (
    const origin of [
      "https://evil.com#.example.com",
      "https://evil.com?.example.com",
      "https://user@a.example.com",
      "https://evil.com/.example.com",
      "http://localhost:@evil.com",
      "https://example.com.evil.com",
    ]
  ) {
    assert.equal(allowed(origin), false, origin);
  }
});

Deno.test("originMatcher allows what the wildcard regular expression allows, and nothing else", () => {
  // Few characters, so that random origins often match; case pairs, `/`, and characters whose case mapping is odd.
  const char = fc.constantFrom("a", "A", "b", ".", "-", "/", ":", "é", "É", "ÿ", "µ", "ı", "K", "k", "\u212a", "\n");
  const pattern = fc.array(fc.oneof(char, fc.constant("*")), { maxLength: 8 }).map((cs) => cs.join(""));
  const origin = fc.array(char, { maxLength: 12 }).map((cs) => cs.join(""));
  fc.assert(
    fc.property(
      fc.array(fc.oneof({ weight: 9, arbitrary: pattern }, fc.constant("*")), { minLength: 1, maxLength: 3 }),
      origin,
      (
        origins,
        candidate,
      ) => {
        assert.equal(originMatcher(origins)(candidate), regexpFor(origins).test(candidate));
      },
    ),
    { seed: 4236, numRuns: 20_000 },
  );
});

Deno.test("originMatcher answers a long origin against many wildcards without backtracking", () => {
  const allowed = originMatcher(["https://*.*.*.*.example.org", "https://*-*-*-*.example.com"]);
  const started = performance.now();
  for (const origin of [`https://${"a.".repeat(4000)}`, `https://${"a-".repeat(4000)}`]) {
    assert.equal(allowed(origin), false);
  }
  const took = performance.now() - started;
  assert.ok(took < 500, `took ${Math.round(took)} ms`);
  assert.equal(allowed("https://a.b.c.d.example.org"), true);
  assert.equal(allowed("https://a-b-c-d.EXAMPLE.com"), true);
});
