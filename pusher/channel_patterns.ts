/**
 * Channel patterns: a list of channel names and `prefix*` patterns, as in a
 * token's `channels` claim and the `--presence-channels` flag.
 *
 * @module
 */

/**
 * A test for channel names against `patterns`: a pattern ending in `*`
 * matches every name that starts with what comes before it (`room.*`
 * matches `room.1`; `*` alone matches every name); any other pattern
 * matches only itself. A `*` elsewhere is an ordinary character.
 *
 * @example
 * ```ts
 * import { channelMatcher } from "./channel_patterns.ts";
 *
 * const allowed = channelMatcher(["news", "room.*"]);
 * allowed("room.1"); // true
 * allowed("newsletter"); // false
 * ```
 */
export function channelMatcher(patterns: readonly string[]): (channel: string) => boolean {
  const exact = new Set<string>();
  const prefixes: string[] = [];
  for (const pattern of patterns) {
    if (pattern.endsWith("*")) prefixes.push(pattern.slice(0, -1));
    else exact.add(pattern);
  }
  if (prefixes.includes("")) return () => true;
  if (prefixes.length === 0) return (channel) => exact.has(channel);
  return (channel) => exact.has(channel) || prefixes.some((prefix) => channel.startsWith(prefix));
}

/**
 * Reads a token's `channels` claim: an array of names and patterns. Returns
 * it, an empty list when the claim is absent, or why it cannot be read.
 */
export function channelsClaim(claim: unknown): readonly string[] | string {
  if (claim === undefined) return [];
  if (!Array.isArray(claim) || !claim.every((pattern) => typeof pattern === "string")) {
    return "Invalid token: channels must be an array of strings";
  }
  return claim;
}
