import assert from "node:assert/strict";
import { concat } from "./bytes.ts";
import {
  type ClientMessage,
  encodeLengthPrefixed,
  encodeMessage,
  encodeMessageText,
  type HubMessage,
  jsonCodec,
  MAX_BATCH_ITEMS,
  MAX_SUBJECT_LENGTH,
  type Message,
  MessageDecoder,
  PROTOCOL_VERSION,
  toClientMessage,
  toHubMessage,
} from "./wire.ts";
import { mulberry32 } from "./testing.ts";

const utf8 = new TextEncoder();

/** Fixed seeds always run; one fresh seed per run widens coverage and is printed on failure. */
const SEEDS = [1, 42, 0xdeadbeef, crypto.getRandomValues(new Uint32Array(1))[0]!];

/** A frame whose payload is `text` as UTF-8, bypassing the encoder: for hand-made and invalid payloads. */
function rawFrame(text: string): Uint8Array {
  return encodeLengthPrefixed(utf8.encode(text));
}

const CLIENT_MESSAGES: ClientMessage[] = [
  { type: "hello", version: PROTOCOL_VERSION },
  { type: "hello", version: PROTOCOL_VERSION, token: "s3cret" },
  { type: "subscribe", subjects: ["news", "sport"] },
  { type: "subscribe", subjects: [] },
  { type: "unsubscribe", subjects: ["news"] },
  { type: "publish", id: 1, subjects: ["news"], data: { title: "hello", tags: ["a", "b"], n: 1.5, ok: true } },
  { type: "publish", id: 2, subjects: ["news"], data: null },
  { type: "publishLoop", id: 3, subjects: ["jobs", "mail"], data: "work" },
  { type: "watch", queues: ["jobs"] },
  { type: "unwatch", queues: ["jobs"] },
  { type: "enqueue", id: 4, queues: ["jobs"], data: [1, 2, 3] },
  { type: "reserve" },
  { type: "ping" },
  { type: "publish", id: 5, subjects: ["news"], data: 1, idempotency_key: "order-17" },
  { type: "history", id: 6, subject: "news", since: { offset: 7, epoch: "1f3a9c2e" }, limit: 100 },
  { type: "history", id: 7, subject: "news" },
  { type: "history_remove", id: 8, subject: "news" },
  {
    type: "publish_batch",
    id: 9,
    items: [
      { subject: "user.alice", data: { text: "hi" } },
      { subject: "user.bob", data: null, idempotency_key: "order-18" },
    ],
  },
];

const HUB_MESSAGES: HubMessage[] = [
  { type: "event", subject: "news", data: { title: "hello" } },
  { type: "event", subject: "news", data: null },
  { type: "queue", queue: "jobs", data: "work" },
  { type: "ack", id: 1, count: 3 },
  { type: "ack", id: 2, count: 0 },
  { type: "error", reason: "Unknown channel", id: 5 },
  { type: "error", reason: "Protocol version 2 is not supported" },
  { type: "pong" },
  { type: "event", subject: "news", data: 1, offset: 7, epoch: "1f3a9c2e" },
  { type: "ack", id: 3, count: 1, positions: [{ subject: "news", offset: 7, epoch: "1f3a9c2e" }] },
  { type: "history", id: 4, epoch: "1f3a9c2e", offset: 9, messages: [{ offset: 9, data: "x" }], recovered: true },
  { type: "history", id: 5, epoch: "", offset: 0, messages: [], recovered: false },
  {
    type: "batch_ack",
    id: 6,
    results: [{ count: 1 }, { count: 0, offset: 7, epoch: "1f3a9c2e" }, { error: "Cannot route: too large" }],
  },
  {
    type: "events",
    events: [
      { type: "event", subject: "user.alice", data: { text: "hi" } },
      { type: "event", subject: "news", data: 1, offset: 7, epoch: "1f3a9c2e" },
    ],
  },
];

/** Feeds `stream` to a decoder in chunks whose sizes `nextSize` picks, each a fresh copy. */
function decodeInChunks<T extends Message>(
  decoder: MessageDecoder<T>,
  stream: Uint8Array,
  nextSize: () => number,
): T[] {
  const out: T[] = [];
  let offset = 0;
  while (offset < stream.length) {
    const end = Math.min(stream.length, offset + nextSize());
    out.push(...decoder.push(stream.slice(offset, end)));
    offset = end;
  }
  assert.equal(decoder.bufferedBytes, 0, "no bytes should be held back once the stream is consumed");
  return out;
}

/** Asserts that pushing `frame` into a fresh client-side decoder throws a TypeError matching `message`. */
function assertClientRejects(value: unknown, message: RegExp): void {
  const frame = rawFrame(JSON.stringify(value));
  assert.throws(() => new MessageDecoder(toClientMessage).push(frame), { name: "TypeError", message });
  assert.throws(() => toClientMessage(value), { name: "TypeError", message });
}

Deno.test("wire round-trips every client message type through encodeMessage and MessageDecoder(toClientMessage)", () => {
  const types = new Set<string>();
  for (const message of CLIENT_MESSAGES) {
    types.add(message.type);
    const decoder = new MessageDecoder(toClientMessage);
    assert.deepEqual(decoder.push(encodeMessage(message)), [message], `round trip of ${message.type}`);
    assert.equal(decoder.bufferedBytes, 0);
  }
  const expected = [
    "hello",
    "subscribe",
    "unsubscribe",
    "publish",
    "publishLoop",
    "watch",
    "unwatch",
    "enqueue",
    "reserve",
    "ping",
    "history",
    "history_remove",
    "publish_batch",
  ];
  assert.deepEqual([...types].sort(), expected.sort(), "every client message type is covered");
});

Deno.test("wire round-trips every hub message type through encodeMessage and MessageDecoder(toHubMessage)", () => {
  for (const message of HUB_MESSAGES) {
    const decoder = new MessageDecoder(toHubMessage);
    assert.deepEqual(decoder.push(encodeMessage(message)), [message], `round trip of ${JSON.stringify(message)}`);
  }
  const [withoutId] = new MessageDecoder(toHubMessage).push(encodeMessage({ type: "error", reason: "bye" }));
  assert.ok(withoutId && !("id" in withoutId), "an error without id decodes without an id field");
});

Deno.test("encodeMessage with the default codec produces the same frame as encodeLengthPrefixed(jsonCodec.encode())", () => {
  for (const message of [...CLIENT_MESSAGES, ...HUB_MESSAGES]) {
    assert.deepEqual(encodeMessage(message), encodeLengthPrefixed(jsonCodec.encode(message)), message.type);
  }
});

Deno.test("encodeMessage and encodeMessageText give frames that hold no more memory than their bytes", () => {
  for (const data of ["ascii", "wide: é ü 日本 🎉", "x".repeat(10_000), "日".repeat(10_000)]) {
    const message: Message = { type: "queue", queue: "q", data };
    for (const frame of [encodeMessage(message), encodeMessageText(JSON.stringify(message))]) {
      assert.deepEqual(frame, encodeLengthPrefixed(jsonCodec.encode(message)));
      // A frame can wait in queues for long: its buffer must be its own size.
      assert.equal(frame.buffer.byteLength, frame.length, data.slice(0, 12));
    }
  }
});

Deno.test("message decoder yields every message in order when fed one byte at a time", () => {
  const stream = concat(CLIENT_MESSAGES.map((message) => encodeMessage(message)));
  assert.deepEqual(decodeInChunks(new MessageDecoder(toClientMessage), stream, () => 1), CLIENT_MESSAGES);
  const hubStream = concat(HUB_MESSAGES.map((message) => encodeMessage(message)));
  assert.deepEqual(decodeInChunks(new MessageDecoder(toHubMessage), hubStream, () => 1), HUB_MESSAGES);
});

Deno.test("message decoder yields every message in order when fed random chunk sizes", () => {
  // Repeat the set with keepalives in between, so chunks span many frames.
  const messages = [...CLIENT_MESSAGES, ...CLIENT_MESSAGES, ...CLIENT_MESSAGES];
  const keepalive = new Uint8Array([0, 0, 0, 4]);
  const stream = concat(messages.flatMap((message) => [encodeMessage(message), keepalive]));
  for (const seed of SEEDS) {
    const random = mulberry32(seed);
    const nextSize = () => 1 + Math.floor(random() * (random() < 0.7 ? 8 : 300));
    const out = decodeInChunks(new MessageDecoder(toClientMessage), stream, nextSize);
    assert.deepEqual(out, messages, `random chunking with seed ${seed} changed the messages`);
  }
});

Deno.test("message decoder rejects a payload that is not valid UTF-8 with a SyntaxError", () => {
  const invalid = [
    new Uint8Array([0xff]),
    // `{"type":"ping","x":"` + a lead byte with a bad continuation + `"}`
    concat([utf8.encode('{"type":"ping","x":"'), new Uint8Array([0xc3, 0x28]), utf8.encode('"}')]),
    // Overlong encoding of "/".
    concat([utf8.encode('{"type":"ping","x":"'), new Uint8Array([0xc0, 0xaf]), utf8.encode('"}')]),
    // An encoded lone surrogate (U+D800).
    concat([utf8.encode('{"type":"ping","x":"'), new Uint8Array([0xed, 0xa0, 0x80]), utf8.encode('"}')]),
    // Truncated 4-byte sequence at the end.
    concat([utf8.encode('{"type":"ping"}'), new Uint8Array([0xf0, 0x9f, 0x98])]),
  ];
  for (const payload of invalid) {
    assert.throws(() => new MessageDecoder(toClientMessage).push(encodeLengthPrefixed(payload)), {
      name: "SyntaxError",
      message: /UTF-8/,
    });
  }
  assert.throws(() => jsonCodec.decode(new Uint8Array([0xff])), { name: "SyntaxError", message: /UTF-8/ });
  // The shared strict decoder is not left in a bad state by a failure.
  assert.deepEqual(jsonCodec.decode(utf8.encode('{"type":"ping"}')), { type: "ping" });
});

Deno.test("message decoder rejects a payload that is not JSON with a SyntaxError", () => {
  for (const text of ["{", "not json", '{"type":"ping",}', "{'type':'ping'}", " "]) {
    assert.throws(() => new MessageDecoder(toClientMessage).push(rawFrame(text)), {
      name: "SyntaxError",
      message: /^Cannot decode message: /,
    }, JSON.stringify(text));
  }
});

Deno.test("toClientMessage rejects an unknown type with a TypeError", () => {
  assertClientRejects({ type: "shout", channels: ["news"] }, /unknown type "shout"/);
  assertClientRejects({ type: "" }, /unknown type/);
  assertClientRejects({ type: "constructor" }, /unknown type/);
  assert.throws(() => toHubMessage({ type: "shout" }), { name: "TypeError", message: /unknown type/ });
});

Deno.test("toClientMessage and toHubMessage reject JSON that is not an object with a type", () => {
  for (const value of [42, "str", [], null, true, [{ type: "ping" }]]) {
    assertClientRejects(value, /expected an object/);
    assert.throws(() => new MessageDecoder(toHubMessage).push(rawFrame(JSON.stringify(value))), TypeError);
  }
  for (const value of [{}, { type: 1 }, { type: null }]) {
    assertClientRejects(value, /type is missing or not a string/);
  }
});

Deno.test("toClientMessage rejects a publish, publishLoop or enqueue without data", () => {
  for (const type of ["publish", "publishLoop"]) {
    assertClientRejects({ type, id: 1, subjects: ["news"] }, /data is missing/);
  }
  assertClientRejects({ type: "enqueue", id: 1, queues: ["news"] }, /data is missing/);
  assert.throws(() => toHubMessage({ type: "event", subject: "news" }), {
    name: "TypeError",
    message: /data is missing/,
  });
  assert.throws(() => toHubMessage({ type: "queue", queue: "news" }), {
    name: "TypeError",
    message: /data is missing/,
  });
});

Deno.test("toClientMessage rejects subjects or queues that are not an array", () => {
  for (const names of ["news", undefined, null, { 0: "news" }, 7]) {
    for (const type of ["subscribe", "unsubscribe"]) {
      assertClientRejects({ type, subjects: names }, /subjects must be an array/);
    }
    for (const type of ["watch", "unwatch"]) {
      assertClientRejects({ type, queues: names }, /queues must be an array/);
    }
    assertClientRejects({ type: "publish", id: 1, subjects: names, data: 1 }, /subjects must be an array/);
  }
});

Deno.test("toClientMessage rejects an empty or non-string subject or queue name", () => {
  assertClientRejects({ type: "subscribe", subjects: ["news", ""] }, /non-empty string/);
  assertClientRejects({ type: "enqueue", id: 1, queues: [""], data: 1 }, /non-empty string/);
  assertClientRejects({ type: "watch", queues: [3] }, /non-empty string/);
  assertClientRejects({ type: "subscribe", subjects: [null] }, /non-empty string/);
});

Deno.test("toClientMessage rejects a subject longer than MAX_SUBJECT_LENGTH", () => {
  const longest = "c".repeat(MAX_SUBJECT_LENGTH);
  const accepted: ClientMessage = { type: "subscribe", subjects: [longest] };
  assert.deepEqual(new MessageDecoder(toClientMessage).push(encodeMessage(accepted)), [accepted]);
  assertClientRejects({ type: "subscribe", subjects: [longest + "c"] }, /limited to 256 characters/);
  assertClientRejects({ type: "publish", id: 1, subjects: ["ok", longest + "c"], data: 1 }, /limited to/);
});

Deno.test("toClientMessage rejects a non-integer id or version", () => {
  for (const id of [1.5, "7", null, undefined, 2 ** 53, -0.1]) {
    for (const type of ["publish", "publishLoop"]) {
      assertClientRejects({ type, id, subjects: ["news"], data: 1 }, /id must be an integer/);
    }
    assertClientRejects({ type: "enqueue", id, queues: ["news"], data: 1 }, /id must be an integer/);
    assert.throws(() => toHubMessage({ type: "ack", id, count: 1 }), { name: "TypeError", message: /id must be/ });
    if (id !== undefined) {
      assert.throws(() => toHubMessage({ type: "error", reason: "x", id }), { name: "TypeError", message: /id/ });
    }
  }
  assertClientRejects({ type: "hello", version: "1" }, /version must be an integer/);
  assertClientRejects({ type: "hello", version: 1, token: 5 }, /token must be a string/);
});

Deno.test("toClientMessage answers a publish_batch with a malformed item as invalid with its id, not a dropped link", () => {
  const item = { subject: "news", data: 1 };
  const cases: [unknown, RegExp][] = [
    [[], /items must be an array of 1 to 1000/],
    [Array.from({ length: MAX_BATCH_ITEMS + 1 }, () => item), /items must be an array of 1 to 1000/],
    ["news", /items must be an array/],
    [[item, null], /every item must be an object/],
    [[item, [1]], /every item must be an object/],
    [[{ subject: "", data: 1 }], /subject must be a non-empty string/],
    [[{ subject: "c".repeat(MAX_SUBJECT_LENGTH + 1), data: 1 }], /limited to 256 characters/],
    [[{ subject: 3, data: 1 }], /subject must be a non-empty string/],
    [[{ subject: "news" }], /every item needs data/],
    [[{ subject: "news", data: 1, idempotency_key: "" }], /idempotency_key must be a string of 1 to 128/],
    [[{ subject: "news", data: 1, idempotency_key: "k".repeat(129) }], /idempotency_key must be/],
    [[{ subject: "news", data: 1, idempotency_key: 7 }], /idempotency_key must be/],
  ];
  for (const [items, reason] of cases) {
    const message = toClientMessage({ type: "publish_batch", id: 12, items });
    assert.equal(message.type, "invalid", String(reason));
    assert.equal((message as { id: number }).id, 12);
    assert.match((message as { reason: string }).reason, reason);
  }
  // Without a valid id there is nothing to answer: the link goes.
  assertClientRejects({ type: "publish_batch", id: "12", items: [item] }, /id must be an integer/);
  const longest: ClientMessage = {
    type: "publish_batch",
    id: 1,
    items: Array.from({ length: MAX_BATCH_ITEMS }, () => item),
  };
  assert.deepEqual(toClientMessage(longest), longest);
});

Deno.test("toHubMessage rejects a batch_ack whose results are not counts or errors", () => {
  const cases: [unknown, RegExp][] = [
    [undefined, /results must be an array/],
    [{}, /results must be an array/],
    [[null], /every result must be an object/],
    [[{}], /every result needs a count or an error/],
    [[{ count: -1 }], /every result needs a count or an error/],
    [[{ count: 1.5 }], /every result needs a count or an error/],
    [[{ error: 5 }], /error must be a string/],
    [[{ count: 1, offset: -1, epoch: "e" }], /offset must be/],
    [[{ count: 1, offset: 1 }], /epoch must be/],
    [[{ count: 1, offset: 1, epoch: "e".repeat(33) }], /epoch must be/],
  ];
  for (const [results, message] of cases) {
    assert.throws(
      () => toHubMessage({ type: "batch_ack", id: 1, results }),
      { name: "TypeError", message },
      String(message),
    );
  }
  assert.throws(() => toHubMessage({ type: "batch_ack", id: "1", results: [] }), { message: /id must be an integer/ });
});

Deno.test("toHubMessage rejects an events message with anything but valid events in it", () => {
  const cases: [unknown, RegExp][] = [
    [undefined, /events must be an array/],
    [[{ type: "queue", queue: "q", data: 1 }], /every event must be of type event/],
    [[null], /expected an object with a type/],
    [[{ type: "event", data: 1 }], /subject must be a string/],
    [[{ type: "event", subject: "s" }], /data is missing/],
    [[{ type: "event", subject: "s", data: 1, offset: 1 }], /epoch must be/],
  ];
  for (const [events, message] of cases) {
    assert.throws(() => toHubMessage({ type: "events", events }), { name: "TypeError", message }, String(message));
  }
});

Deno.test("toClientMessage rejects a hub message", () => {
  for (const message of HUB_MESSAGES) {
    if (message.type === "history") {
      // The reply shares the request's type (issue 17's wire): sent back, it is a request with a malformed subject.
      assert.equal(toClientMessage(message).type, "invalid");
      continue;
    }
    assert.throws(() => new MessageDecoder(toClientMessage).push(encodeMessage(message)), {
      name: "TypeError",
      message: /unknown type/,
    }, message.type);
  }
  for (const message of CLIENT_MESSAGES) {
    assert.throws(() => new MessageDecoder(toHubMessage).push(encodeMessage(message)), {
      name: "TypeError",
      // A history request read as the reply of the same type lacks the reply's fields.
      message: message.type === "history" ? /offset must be/ : /unknown type/,
    }, message.type);
  }
});

Deno.test("message decoder skips an empty payload frame as a keepalive", () => {
  const decoder = new MessageDecoder(toClientMessage);
  const keepalive = new Uint8Array([0, 0, 0, 4]);
  assert.deepEqual(decoder.push(keepalive), []);
  assert.deepEqual(decoder.push(concat([keepalive, encodeMessage({ type: "ping" }), keepalive])), [{ type: "ping" }]);
  assert.equal(decoder.bufferedBytes, 0);
});

Deno.test("multi-byte UTF-8 content survives a round trip", () => {
  const texts = ["a b c€", "😀👍🏽 family: 👨‍👩‍👧", "日本語のテキスト", "\u0000 nul and \u2028 separator", "\u00e9e\u0301"];
  for (const text of texts) {
    const message: HubMessage = { type: "event", subject: "ünïcødé-€", data: { text, list: [text] } };
    const frame = encodeMessage(message);
    const payloadBytes = utf8.encode(JSON.stringify(message)).length;
    assert.deepEqual([...frame.subarray(0, 4)], [0, 0, (payloadBytes + 4) >>> 8, (payloadBytes + 4) & 0xff]);
    assert.equal(frame.length, payloadBytes + 4, `frame length counts UTF-8 bytes, not characters: ${text}`);
    assert.deepEqual(new MessageDecoder(toHubMessage).push(frame), [message], text);
    assert.deepEqual(decodeInChunks(new MessageDecoder(toHubMessage), frame, () => 1), [message], text);
  }
});

Deno.test("a message over 4096 characters round-trips", () => {
  const cases = [
    "x".repeat(5000),
    "€".repeat(4100), // 3 UTF-8 bytes each
    "😀".repeat(3000), // a surrogate pair per emoji, 4 UTF-8 bytes each
    "y".repeat(100_000),
  ];
  for (const text of cases) {
    const message: ClientMessage = { type: "publish", id: 9, subjects: ["big"], data: text };
    const json = JSON.stringify(message);
    assert.ok(json.length > 4096);
    const frame = encodeMessage(message);
    assert.equal(frame.length, utf8.encode(json).length + 4);
    assert.deepEqual(new MessageDecoder(toClientMessage).push(frame), [message]);
  }
});

Deno.test("messages on both sides of the 4096-character encoding threshold round-trip", () => {
  const base = JSON.stringify({ type: "event", subject: "c", data: "" }).length;
  for (let length = 4090 - base; length <= 4100 - base; length++) {
    for (const unit of ["z", "€", "😀"]) {
      // Emoji take two UTF-16 code units; trim to the exact code-unit length wanted.
      const data = unit.repeat(length).slice(0, length).replace(/[\ud800-\udbff]$/, "q");
      const message: HubMessage = { type: "event", subject: "c", data };
      const frame = encodeMessage(message);
      assert.equal(frame.length, utf8.encode(JSON.stringify(message)).length + 4, `length ${length} of ${unit}`);
      assert.deepEqual(new MessageDecoder(toHubMessage).push(frame), [message], `length ${length} of ${unit}`);
    }
  }
});

Deno.test("message decoder honours maxFrameBytes", () => {
  const decoder = new MessageDecoder(toClientMessage, { maxFrameBytes: 64 });
  const message: ClientMessage = { type: "publish", id: 1, subjects: ["news"], data: "z".repeat(100) };
  assert.throws(() => decoder.push(encodeMessage(message).subarray(0, 4)), {
    name: "RangeError",
    message: /exceeds the 64-byte maximum/,
  });
});

Deno.test("message decoder stays failed after a payload error", () => {
  const decoder = new MessageDecoder(toClientMessage);
  assert.throws(() => decoder.push(encodeLengthPrefixed(new TextEncoder().encode("{nope"))), SyntaxError);
  assert.throws(() => decoder.push(encodeMessage({ type: "ping" })), SyntaxError);
});

Deno.test("toClientMessage takes a publish's reply subject and checks it as a subject", () => {
  const message = { type: "publish", id: 1, subjects: ["news"], data: 1, reply: "_inbox.1" };
  assert.deepEqual(toClientMessage(message), message);
  assertClientRejects({ type: "publishLoop", id: 1, subjects: ["news"], data: 1, reply: "" }, /reply must be/);
  assertClientRejects({ type: "publish", id: 1, subjects: ["news"], data: 1, reply: ["x"] }, /reply must be/);
  assert.throws(() => toHubMessage({ type: "event", subject: "news", data: 1, reply: 5 }), /reply must be a string/);
});

Deno.test("toClientMessage makes a history request with a valid id but a malformed field an invalid request", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ type: "history", id: 1, subject: "" }, /subject must be a non-empty string/],
    [{ type: "history", id: 1, subject: "s", since: 7 }, /since must be an object/],
    [{ type: "history", id: 1, subject: "s", since: { offset: -1, epoch: "e" } }, /offset must be an integer/],
    [{ type: "history", id: 1, subject: "s", since: { offset: 1.5, epoch: "e" } }, /offset must be an integer/],
    [{ type: "history", id: 1, subject: "s", since: { offset: 1, epoch: 3 } }, /epoch must be a string/],
    [{ type: "history", id: 1, subject: "s", limit: -1 }, /limit must be an integer/],
    [{ type: "history_remove", id: 1 }, /subject must be a non-empty string/],
    [{ type: "publish", id: 1, subjects: ["s"], data: 1, idempotency_key: "k".repeat(129) }, /idempotency_key/],
    [{ type: "publish", id: 1, subjects: ["s"], data: 1, idempotency_key: 5 }, /idempotency_key/],
  ];
  for (const [value, reason] of cases) {
    const message = toClientMessage(value);
    assert.equal(message.type, "invalid", JSON.stringify(value));
    assert.equal((message as { id: number }).id, 1);
    assert.match((message as { reason: string }).reason, reason);
  }
  assertClientRejects({ type: "history", id: "x", subject: "s" }, /id must be an integer/);
});

Deno.test("toHubMessage rejects malformed positions, acks' positions and history replies", () => {
  const bad: unknown[] = [
    { type: "event", subject: "s", data: 1, offset: -1, epoch: "e" },
    { type: "event", subject: "s", data: 1, offset: 1 },
    { type: "ack", id: 1, count: 1, positions: [{ offset: 1, epoch: "e" }] },
    { type: "ack", id: 1, count: 1, positions: {} },
    { type: "history", id: 1, epoch: "e", offset: 1, messages: [{ offset: 1 }], recovered: true },
    { type: "history", id: 1, epoch: "e", offset: 1, messages: [], recovered: "yes" },
  ];
  for (const value of bad) assert.throws(() => toHubMessage(value), TypeError, JSON.stringify(value));
});
