/**
 * Splits a byte stream into text lines: how the load generators and their
 * parent read each other's stdio.
 *
 * @module
 */

/**
 * The lines of a stream, without their line ends; a last line without one
 * is yielded too.
 *
 * @example
 * ```ts
 * import { lines } from "./_lines.ts";
 *
 * for await (const line of lines(Deno.stdin.readable)) console.log(line);
 * ```
 */
export async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string, void, undefined> {
  let rest = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const parts = (rest + text).split("\n");
    rest = parts.pop()!;
    yield* parts;
  }
  if (rest) yield rest;
}
