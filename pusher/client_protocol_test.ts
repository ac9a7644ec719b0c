import assert from "node:assert/strict";
import fc from "fast-check";
import {
  errorFrame,
  historyResultFrame,
  isClientError,
  isMalformed,
  parseClientMessage,
  presenceResultFrame,
  resultFrame,
  subscribedFrame,
  subscribeResultFrame,
  unsubscribedFrame,
} from "./client_protocol.ts";

Deno.test("client protocol reads subscribe and unsubscribe commands with their ids", () => {
  assert.deepEqual(parseClientMessage('{"id":1,"subscribe":{"channel":"news"}}'), {
    id: 1,
    op: "subscribe",
    channel: "news",
  });
  assert.deepEqual(parseClientMessage('{"id":42,"unsubscribe":{"channel":"room.1"}}'), {
    id: 42,
    op: "unsubscribe",
    channel: "room.1",
  });
});

Deno.test("client protocol reads a refresh with its new token, and refuses one without a token as malformed", () => {
  assert.deepEqual(parseClientMessage('{"id":7,"refresh":{"token":"a.b.c"}}'), {
    id: 7,
    op: "refresh",
    token: "a.b.c",
  });
  for (const body of ['"a.b.c"', "{}", '{"token":""}', '{"token":7}']) {
    const parsed = parseClientMessage(`{"id":8,"refresh":${body}}`);
    assert.ok(isClientError(parsed), body);
    assert.deepEqual([parsed.id, parsed.code], [8, 400], body);
    assert.match(parsed.message, /refresh/, body);
  }
  assert.deepEqual(parseClientMessage('{"id":10,"ping":{}}'), { id: 10, op: "ping" });
  const ping = parseClientMessage('{"id":11,"ping":true}');
  assert.ok(isClientError(ping));
  assert.deepEqual([ping.id, ping.code, ping.message], [11, 400, "Malformed message: ping must be an object"]);
  const both = parseClientMessage('{"id":9,"refresh":{"token":"t"},"subscribe":{"channel":"n"}}');
  assert.ok(isClientError(both));
  assert.match(
    both.message,
    /expected one command, subscribe, unsubscribe, history, presence, presence_stats, refresh or ping/,
  );
});

Deno.test("client protocol answers malformed messages with 400, naming the fault", () => {
  const cases: [string | Uint8Array, number | null, RegExp][] = [
    ["hello", null, /not JSON/],
    ["[1]", null, /expected a JSON object/],
    ["null", null, /expected a JSON object/],
    ['{"subscribe":{"channel":"a"}}', null, /id must be a positive integer/],
    ['{"id":0,"subscribe":{"channel":"a"}}', null, /id must be a positive integer/],
    ['{"id":1.5,"subscribe":{"channel":"a"}}', null, /id must be a positive integer/],
    ['{"id":"1","subscribe":{"channel":"a"}}', null, /id must be a positive integer/],
    ['{"id":3,"publish":{"channel":"a"}}', 3, /expected one command/],
    ['{"id":3,"subscribe":{"channel":"a"},"unsubscribe":{"channel":"a"}}', 3, /expected one command/],
    ['{"id":4,"subscribe":"a"}', 4, /subscribe must be an object/],
    [new Uint8Array([123, 125]), null, /commands are JSON in text frames/],
  ];
  for (const [message, id, pattern] of cases) {
    const parsed = parseClientMessage(message);
    assert.ok(isClientError(parsed), String(message));
    assert.equal(parsed.code, 400, String(message));
    assert.equal(parsed.id, id, String(message));
    assert.match(parsed.message, pattern);
    assert.ok(isMalformed(parsed));
  }
});

Deno.test("client protocol refuses a bad channel name with 422 and a large message with 413", () => {
  const bad = parseClientMessage('{"id":5,"subscribe":{"channel":"a b"}}');
  assert.deepEqual(bad, {
    id: 5,
    code: 422,
    message: "Invalid channel name: only letters, digits and _-.:@/= are allowed",
  });
  assert.ok(isClientError(bad) && !isMalformed(bad), "a bad name is no malformed message");
  const missing = parseClientMessage('{"id":6,"subscribe":{}}');
  assert.ok(isClientError(missing) && missing.code === 422);
  const long = parseClientMessage('{"id":7,"subscribe":{"channel":"abcd"}}', { maxChannelLength: 3 });
  assert.ok(isClientError(long) && long.code === 422 && /over the limit of 3/.test(long.message));
  const large = parseClientMessage(`{"id":8,"subscribe":{"channel":"${"a".repeat(100)}"}}`, { maxCommandBytes: 64 });
  assert.deepEqual(large, { id: null, code: 413, message: "Message too large: over 64 bytes" });
  // 30 characters, 90 bytes: the limit is in bytes.
  const wide = parseClientMessage(`"${"€".repeat(28)}"`, { maxCommandBytes: 64 });
  assert.ok(isClientError(wide) && wide.code === 413);
});

Deno.test("client protocol frames replies, errors and server-side subscription pushes as the spec writes them", () => {
  assert.equal(resultFrame(3), '{"id":3,"result":{}}');
  assert.equal(
    errorFrame({ id: 3, code: 403, message: "no" }),
    '{"id":3,"error":{"code":403,"message":"no"}}',
  );
  assert.equal(errorFrame({ id: null, code: 400, message: "bad" }), '{"error":{"code":400,"message":"bad"}}');
  assert.equal(subscribedFrame("news"), '{"subscribed":{"channel":"news"}}');
  assert.equal(unsubscribedFrame("news"), '{"unsubscribed":{"channel":"news"}}');
});

Deno.test("client protocol reads a subscribe's since, and answers a bad one with 400, a bad parameter that is not malformed", () => {
  assert.deepEqual(
    parseClientMessage('{"id":1,"subscribe":{"channel":"news","since":{"offset":7,"epoch":"1f3a9c2e"}}}'),
    {
      id: 1,
      op: "subscribe",
      channel: "news",
      since: { offset: 7, epoch: "1f3a9c2e" },
    },
  );
  const cases: [string, RegExp][] = [
    ['"7"', /since must be an object/],
    ["null", /since must be an object/],
    ["[7]", /since must be an object/],
    ['{"epoch":"e"}', /since.offset must be an integer of 0 or more/],
    ['{"offset":-1,"epoch":"e"}', /since.offset must be an integer of 0 or more/],
    ['{"offset":1.5,"epoch":"e"}', /since.offset must be an integer of 0 or more/],
    ['{"offset":"7","epoch":"e"}', /since.offset must be an integer of 0 or more/],
    ['{"offset":9007199254740993,"epoch":"e"}', /since.offset must be an integer of 0 or more/],
    ['{"offset":7}', /since.epoch must be a string/],
    ['{"offset":7,"epoch":7}', /since.epoch must be a string/],
    [`{"offset":7,"epoch":"${"e".repeat(33)}"}`, /since.epoch is over 32 characters/],
  ];
  for (const [since, pattern] of cases) {
    const parsed = parseClientMessage(`{"id":2,"subscribe":{"channel":"news","since":${since}}}`);
    assert.ok(isClientError(parsed), since);
    assert.deepEqual([parsed.id, parsed.code, isMalformed(parsed)], [2, 400, false], since);
    assert.match(parsed.message, /^Invalid parameter: /);
    assert.match(parsed.message, pattern);
  }
  const longest = parseClientMessage(
    `{"id":3,"subscribe":{"channel":"n","since":{"offset":1,"epoch":"${"e".repeat(32)}"}}}`,
  );
  assert.ok(!isClientError(longest) && longest.op === "subscribe" && longest.since?.epoch.length === 32);
  // An unsubscribe has no use for it.
  assert.deepEqual(parseClientMessage('{"id":4,"unsubscribe":{"channel":"n","since":7}}'), {
    id: 4,
    op: "unsubscribe",
    channel: "n",
  });
});

Deno.test("client protocol frames a subscribe's result with its recovery and position", () => {
  assert.equal(
    subscribeResultFrame(1, { recovered: true, position: { offset: 7, epoch: "1f3a9c2e" } }),
    '{"id":1,"result":{"recovered":true,"offset":7,"epoch":"1f3a9c2e"}}',
  );
  assert.equal(subscribeResultFrame(2, { recovered: false, position: null }), '{"id":2,"result":{"recovered":false}}');
});

Deno.test("client protocol reads a history with its limit, since or reverse, and answers bad ones with 400, not as malformed", () => {
  assert.deepEqual(parseClientMessage('{"id":3,"history":{"channel":"news"}}'), {
    id: 3,
    op: "history",
    channel: "news",
  });
  assert.deepEqual(parseClientMessage('{"id":3,"history":{"channel":"news","limit":20,"reverse":true}}'), {
    id: 3,
    op: "history",
    channel: "news",
    limit: 20,
    reverse: true,
  });
  assert.deepEqual(
    parseClientMessage('{"id":3,"history":{"channel":"news","since":{"offset":4,"epoch":"e"},"reverse":false}}'),
    { id: 3, op: "history", channel: "news", since: { offset: 4, epoch: "e" } },
  );
  const refused: [string, RegExp][] = [
    ['{"channel":"news","limit":0}', /history\.limit must be a positive integer/],
    ['{"channel":"news","limit":1.5}', /history\.limit must be a positive integer/],
    ['{"channel":"news","reverse":"yes"}', /history\.reverse must be true or false/],
    ['{"channel":"news","reverse":true,"since":{"offset":1,"epoch":"e"}}', /history\.reverse does not go with since/],
    ['{"channel":"news","since":{"offset":-1,"epoch":"e"}}', /history\.since\.offset must be an integer of 0 or more/],
  ];
  for (const [body, message] of refused) {
    const parsed = parseClientMessage(`{"id":5,"history":${body}}`);
    assert.ok(isClientError(parsed), body);
    assert.deepEqual([parsed.id, parsed.code, isMalformed(parsed)], [5, 400, false], body);
    assert.match(parsed.message, message, body);
  }
  const badName = parseClientMessage('{"id":6,"history":{"channel":"a b"}}');
  assert.ok(isClientError(badName));
  assert.equal(badName.code, 422);
});

Deno.test("client protocol reads presence and presence_stats of a channel, and refuses a bad one", () => {
  assert.deepEqual(parseClientMessage('{"id":3,"presence":{"channel":"room.1"}}'), {
    id: 3,
    op: "presence",
    channel: "room.1",
    listUsers: true,
  });
  assert.deepEqual(parseClientMessage('{"id":4,"presence_stats":{"channel":"room.1"}}'), {
    id: 4,
    op: "presence",
    channel: "room.1",
    listUsers: false,
  });
  const notObject = parseClientMessage('{"id":5,"presence":"room.1"}');
  assert.ok(isClientError(notObject));
  assert.deepEqual([notObject.code, notObject.message], [400, "Malformed message: presence must be an object"]);
  const badName = parseClientMessage('{"id":6,"presence_stats":{"channel":""}}');
  assert.ok(isClientError(badName));
  assert.deepEqual([badName.id, badName.code], [6, 422]);
});

Deno.test("client protocol frames a presence's result as the publisher's /api/presence answers it, partial when a worker was silent", () => {
  assert.equal(
    presenceResultFrame(2, { num_clients: 3, num_users: 2, users: ["a", "b"] }, false),
    '{"id":2,"result":{"num_clients":3,"num_users":2,"users":["a","b"]}}',
  );
  assert.equal(
    presenceResultFrame(3, { num_clients: 1, num_users: 1 }, true),
    '{"id":3,"result":{"num_clients":1,"num_users":1,"partial":true}}',
  );
});

Deno.test("client protocol frames a history's result as the publisher's /api/history answers it", () => {
  assert.equal(
    historyResultFrame(4, { publications: [{ data: { n: 1 }, offset: 7 }], offset: 7, epoch: "e", recovered: true }),
    '{"id":4,"result":{"publications":[{"data":{"n":1},"offset":7}],"offset":7,"epoch":"e","recovered":true}}',
  );
});

Deno.test("client protocol: any text or JSON a client sends reads as a command or as a 400, 413 or 422 for its id", () => {
  const op = fc.constantFrom("subscribe", "unsubscribe", "history", "presence", "presence_stats", "refresh", "publish");
  const any = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.string({ maxLength: 40 }), fc.integer());
  // Each field mostly of its own type, sometimes anything: most runs get past the first checks.
  const body = fc.record({
    channel: fc.oneof({ weight: 4, arbitrary: fc.stringMatching(/^[a-z0-9_.:@=-]{1,12}$/) }, any),
    since: fc.oneof(fc.record({ offset: fc.oneof(fc.nat(), any), epoch: fc.oneof(fc.string(), any) }), any),
    limit: fc.oneof(fc.integer(), any),
    reverse: fc.oneof(fc.boolean(), any),
    token: fc.oneof(fc.string({ maxLength: 40 }), any),
    __proto__: any,
  }, { requiredKeys: ["channel"] });
  // Near-commands: a command's shape with fields missing, changed or added.
  const nearCommand = fc.record({
    id: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1 }) }, fc.integer(), fc.double(), fc.string()),
    command: fc.tuple(op, fc.oneof({ weight: 4, arbitrary: body }, any)),
    second: fc.option(fc.tuple(op, any), { freq: 5 }),
  }).map(({ id, command, second }) =>
    JSON.stringify({ id, ...(second && { [second[0]]: second[1] }), [command[0]]: command[1] })
  );
  const message = fc.oneof(
    { weight: 4, arbitrary: nearCommand },
    fc.json({ maxDepth: 4 }),
    fc.string({ maxLength: 300 }),
  );
  fc.assert(
    fc.property(message, (text) => {
      const parsed = parseClientMessage(text, { maxCommandBytes: 512 });
      if (!isClientError(parsed)) {
        assert.equal(parsed.id, JSON.parse(text).id, "a command keeps its id");
        return;
      }
      assert.ok([400, 413, 422].includes(parsed.code), `a parse error is a 400, 413 or 422: ${parsed.code}`);
      const frame = errorFrame(parsed);
      assert.ok(!frame.includes("\n"), "one line");
      assert.deepEqual(JSON.parse(frame).error.code, parsed.code);
      let id: unknown = null;
      try {
        id = JSON.parse(text)?.id;
      } catch { /* not JSON: no id to answer */ }
      if (parsed.id !== null) assert.equal(parsed.id, id, "the error answers the message's own id");
    }),
    { seed: 16, numRuns: 3000 },
  );
});
