/**
 * Matching an `Origin` header against the allowed-origins list, in time
 * linear in the header's length.
 *
 * @module
 */

/**
 * Builds a test for a list of allowed origins: `*` alone allows every
 * origin, and inside a pattern it matches any run of the characters a host
 * name or a port is made of (letters, digits, `.` and `-`); the rest is
 * literal and compared without regard to case. So `https://*.example.com`
 * takes no `https://evil.com#.example.com` and no `https://user@a.example.com`,
 * which no browser sends but a looser matcher would let through. The same
 * language as a regular expression built by turning each `*` into
 * `[a-z0-9.-]*`, but not matched by backtracking: with three wildcards a
 * regular expression took seconds on a 4 KB Origin, freezing the worker. This
 * runs the pattern as a set of states, at most one pass over the origin per
 * pattern.
 *
 * @example
 * ```ts
 * const allowed = originMatcher(["https://app.example.com", "https://*.example.org"]);
 * allowed("https://eu.example.org"); // true
 * ```
 */
export function originMatcher(origins: readonly string[]): (origin: string) => boolean {
  const patterns = origins.map((origin) => origin === "*" ? matchAny : globMatcher(origin));
  return (origin) => patterns.some((matches) => matches(origin));
}

/** What `.*` matches: anything without a line terminator. */
function matchAny(origin: string): boolean {
  return !/[\n\r\u2028\u2029]/.test(origin);
}

/** What a wildcard matches, one character at a time (already in canonical case). */
const HOST_CHARACTER = /^[A-Z0-9.-]$/;

function globMatcher(pattern: string): (origin: string) => boolean {
  // Pattern position i is a wildcard, or a character (canonical case).
  const wild: boolean[] = [];
  const chars: string[] = [];
  for (const [i, part] of pattern.split("*").entries()) {
    if (i > 0) {
      wild.push(true);
      chars.push("");
    }
    for (let j = 0; j < part.length; j++) {
      wild.push(false);
      chars.push(canonicalize(part[j]!));
    }
  }
  const n = chars.length;
  /** A wildcard may match nothing: a state on it is also a state after it. */
  const skipWildcards = (states: Uint8Array) => {
    for (let i = 0; i < n; i++) if (states[i] && wild[i]) states[i + 1] = 1;
  };
  return (origin) => {
    let states = new Uint8Array(n + 1);
    let next = new Uint8Array(n + 1);
    states[0] = 1;
    skipWildcards(states);
    for (let k = 0; k < origin.length; k++) {
      const c = canonicalize(origin[k]!);
      next.fill(0);
      let alive = false;
      for (let i = 0; i < n; i++) {
        if (!states[i]) continue;
        if (wild[i]) {
          if (!HOST_CHARACTER.test(c)) continue;
          next[i] = 1;
        } else if (chars[i] === c) {
          next[i + 1] = 1;
        } else {
          continue;
        }
        alive = true;
      }
      if (!alive) return false;
      skipWildcards(next);
      [states, next] = [next, states];
    }
    return states[n] === 1;
  };
}

/** A code unit's case as a regular expression's `i` flag compares it (ECMA-262 Canonicalize, non-Unicode). */
function canonicalize(ch: string): string {
  const upper = ch.toUpperCase();
  if (upper.length !== 1) return ch;
  if (ch.charCodeAt(0) >= 128 && upper.charCodeAt(0) < 128) return ch;
  return upper;
}
