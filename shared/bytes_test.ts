import assert from "node:assert/strict";
import { concat, decodeLatin1, StrictUtf8Decoder, utf8Length } from "./bytes.ts";

Deno.test("concat joins chunks in order into a fresh array, with or without the total given", () => {
  const a = new Uint8Array([1, 2]);
  const b = new Uint8Array([]);
  const c = new Uint8Array([3, 4, 5]);
  const expected = new Uint8Array([1, 2, 3, 4, 5]);
  assert.deepEqual(concat([a, b, c]), expected);
  assert.deepEqual(concat([a, b, c], 5), expected);
  const joined = concat([a, c]);
  joined[0] = 9;
  assert.equal(a[0], 1, "the chunks are copied, not shared");
});

Deno.test("concat returns a single chunk itself, without copying", () => {
  const only = new Uint8Array([1, 2, 3]).subarray(1);
  assert.equal(concat([only]), only);
  assert.equal(concat([only], only.length), only);
});

Deno.test("concat of no chunks is an empty array", () => {
  assert.deepEqual(concat([]), new Uint8Array(0));
  assert.deepEqual(concat([], 0), new Uint8Array(0));
});

Deno.test("utf8Length counts what TextEncoder would encode, lone surrogates included", () => {
  const encoder = new TextEncoder();
  for (
    const text of [
      "",
      "ascii",
      "é",
      "€",
      "😀",
      "a€😀",
      "\ud800",
      "\udc00x",
      "\ud800\ud800",
      "x\udbff\udfff",
      "\u07ff\u0800",
    ]
  ) {
    assert.equal(utf8Length(text), encoder.encode(text).length, JSON.stringify(text));
  }
});

/** The fatal `TextDecoder`'s answer for `bytes`: its text, or the class of what it threw. */
function fatalAnswer(bytes: Uint8Array, ignoreBOM: boolean): string {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM }).decode(bytes);
  } catch (error) {
    return `threw ${(error as Error).constructor.name}`;
  }
}

function strictAnswer(bytes: Uint8Array, ignoreBOM: boolean): string {
  try {
    return new StrictUtf8Decoder({ ignoreBOM }).decode(bytes);
  } catch (error) {
    return `threw ${(error as Error).constructor.name}`;
  }
}

Deno.test("StrictUtf8Decoder decodes valid UTF-8, a U+FFFD that was sent included, and throws TypeError on invalid input", () => {
  const utf8 = new StrictUtf8Decoder();
  assert.equal(utf8.decode(new TextEncoder().encode('{"data":"a€😀"}')), '{"data":"a€😀"}');
  assert.equal(utf8.decode(new Uint8Array([0x61, 0xef, 0xbf, 0xbd, 0x62])), "a\uFFFDb");
  for (
    const invalid of [
      [0xe2, 0x82], // cut short
      [0x80], // a continuation byte alone
      [0xc0, 0xaf], // overlong
      [0xed, 0xa0, 0x80], // a UTF-16 surrogate
      [0xf4, 0x90, 0x80, 0x80], // past U+10FFFF
      [0x61, 0xef, 0xbf, 0xbd, 0xff], // a U+FFFD that was sent, then an error
    ]
  ) {
    assert.throws(() => utf8.decode(new Uint8Array(invalid)), TypeError, `${invalid}`);
  }
});

Deno.test("StrictUtf8Decoder drops a leading byte order mark unless told to keep it, as TextDecoder does", () => {
  const withBom = new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d]);
  assert.equal(new StrictUtf8Decoder().decode(withBom), "{}");
  assert.equal(new StrictUtf8Decoder({ ignoreBOM: true }).decode(withBom), "\uFEFF{}");
});

Deno.test("StrictUtf8Decoder answers as the fatal TextDecoder does, for random bytes near UTF-8", () => {
  // Mostly valid sequences with bytes changed here and there, so that both valid and invalid inputs come up often.
  let seed = 7;
  const random = (below: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % below;
  };
  const pieces = ["a", "é", "€", "😀", "\uFFFD", "\uFEFF"].map((text) => [...new TextEncoder().encode(text)]);
  let invalid = 0;
  for (let i = 0; i < 2000; i++) {
    const bytes: number[] = [];
    for (let n = random(6); n >= 0; n--) bytes.push(...pieces[random(pieces.length)]!);
    if (random(2) === 0) bytes[random(bytes.length)] = random(256);
    const input = new Uint8Array(bytes);
    const ignoreBOM = random(2) === 0;
    const expected = fatalAnswer(input, ignoreBOM);
    if (expected.startsWith("threw")) invalid++;
    assert.equal(strictAnswer(input, ignoreBOM), expected, `${bytes} ignoreBOM=${ignoreBOM}`);
  }
  assert.ok(invalid > 200 && invalid < 1800, `both kinds of input came up (${invalid} of 2000 invalid)`);
});

Deno.test("decodeLatin1 gives each byte as the character of its code, 0x80-0x9F too (not windows-1252's)", () => {
  const every = Uint8Array.from({ length: 256 }, (_, i) => i);
  const text = decodeLatin1(every);
  assert.deepEqual([...text].map((c) => c.charCodeAt(0)), [...every]);
  assert.equal(decodeLatin1(new TextEncoder().encode("a€")), "a\xe2\x82\xac");
  assert.equal(decodeLatin1(new TextEncoder().encode("GET / HTTP/1.1")), "GET / HTTP/1.1");
  const long = new Uint8Array(10_000).fill(0x80);
  assert.equal(decodeLatin1(long), "\x80".repeat(10_000), "past one chunk of fromCharCode");
});
