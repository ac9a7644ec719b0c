import assert from "node:assert/strict";
import { FORM_OVERHEAD_BYTES, parseUrlEncoded, percentEncodeHighBytes, readBody, readForm } from "./form.ts";
import { Rejection } from "./_rejection.ts";

/** Matches a Rejection with this status and reason, for assert.throws and assert.rejects. */
function rejection(status: number, reason: string): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof Rejection, `not a Rejection: ${error}`);
    assert.equal(error.message, reason);
    assert.equal(error.status, status);
    return true;
  };
}

function post(body: BodyInit | null, contentType?: string): Request {
  const headers: Record<string, string> = contentType === undefined ? {} : { "content-type": contentType };
  return new Request("http://publisher.test/", { method: "POST", body, headers });
}

const utf8 = new TextEncoder();

Deno.test("parseUrlEncoded: + is a space, escapes are UTF-8, names are decoded, the last duplicate wins", () => {
  const fields = parseUrlEncoded("conten%74=a+b%20c%E2%82%AC&x=1&x=2&plus=1%2B1&flag", "query");
  assert.equal(fields.get("content"), "a b c€");
  assert.equal(fields.get("x"), "2");
  assert.equal(fields.get("plus"), "1+1");
  assert.equal(fields.get("flag"), "");
  assert.equal(fields.get("missing"), undefined);
});

Deno.test("parseUrlEncoded: a malformed value is refused when read, naming the field and the source", () => {
  for (const value of ["%ZZ", "100%", "%E2%82", "%FF", "%C0%80", "%ED%A0%80"]) {
    assert.throws(
      () => parseUrlEncoded(`content=${value}`, "query").get("content"),
      rejection(400, "Invalid query: bad percent-encoding or non-UTF-8 in content"),
    );
  }
  assert.throws(
    () => parseUrlEncoded("to_worker_id=%ZZ", "form body").get("to_worker_id"),
    rejection(400, "Invalid form body: bad percent-encoding or non-UTF-8 in to_worker_id"),
  );
});

Deno.test("parseUrlEncoded: values never read, and names that do not decode, are harmless", () => {
  const fields = parseUrlEncoded("content=%ZZ&content=fine&x=%ZZ&%FF=1&&", "query");
  assert.equal(fields.get("content"), "fine");
  assert.equal(fields.get("%FF"), undefined);
});

Deno.test("percentEncodeHighBytes escapes bytes above 0x7f and keeps the rest", () => {
  assert.equal(percentEncodeHighBytes(utf8.encode("a=€ b%41+")), "a=%e2%82%ac b%41+");
  assert.equal(percentEncodeHighBytes(Uint8Array.of(0x63, 0xe9)), "c%e9");
  assert.equal(percentEncodeHighBytes(new Uint8Array()), "");
});

Deno.test("readForm reads an urlencoded body, with a charset parameter and raw UTF-8 bytes", async () => {
  const fields = await readForm(
    post("content=caf\u00e9+%E2%82%AC", "Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
    100,
  );
  assert.equal(fields.get("content"), "caf\u00e9 \u20ac");
  const latin1 = await readForm(
    post(Uint8Array.of(...utf8.encode("content=caf"), 0xe9), "application/x-www-form-urlencoded"),
    100,
  );
  assert.throws(
    () => latin1.get("content"),
    rejection(400, "Invalid form body: bad percent-encoding or non-UTF-8 in content"),
  );
});

Deno.test("readForm reads a multipart body's text fields, the last duplicate winning", async () => {
  const form = new FormData();
  form.append("content", "first");
  form.append("content", "multi part €");
  form.append("file", new Blob(["hi"]), "hi.txt");
  const fields = await readForm(new Request("http://publisher.test/", { method: "POST", body: form }), 100);
  assert.equal(fields.get("content"), "multi part €");
  assert.equal(fields.get("missing"), undefined);
  assert.throws(() => fields.get("file"), rejection(400, "Invalid form body: file must be a text field, not a file"));
});

/** One field of a multipart body with the boundary `xyz`, its value as raw bytes. */
function part(name: string, value: Uint8Array): Uint8Array<ArrayBuffer> {
  return Uint8Array.of(
    ...utf8.encode(`--xyz\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n`),
    ...value,
    ...utf8.encode("\r\n"),
  );
}

/** A multipart body of `parts`, with the boundary `xyz` of {@linkcode MULTIPART}. */
function body(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  return Uint8Array.of(...parts.flatMap((p) => [...p]), ...utf8.encode("--xyz--\r\n"));
}

const MULTIPART = "multipart/form-data; boundary=xyz";

Deno.test("readForm refuses a multipart value that was not UTF-8, and keeps one with a real U+FFFD", async () => {
  const latin1 = Uint8Array.of(0x63, 0x61, 0x66, 0xe9);

  const bad = await readForm(post(body(part("content", latin1)), MULTIPART), 100);
  assert.throws(() => bad.get("content"), rejection(400, "Invalid form body: non-UTF-8 in content"));
  const real = await readForm(post(body(part("content", utf8.encode("a \uFFFD b"))), MULTIPART), 100);
  assert.equal(real.get("content"), "a \uFFFD b");
  // A real U+FFFD in another field does not vouch for bad bytes in this one.
  const elsewhere = await readForm(
    post(body(part("note", utf8.encode("\uFFFD")), part("content", latin1)), MULTIPART),
    100,
  );
  assert.equal(elsewhere.get("note"), "\uFFFD");
  assert.throws(() => elsewhere.get("content"), rejection(400, "Invalid form body: non-UTF-8 in content"));
});

Deno.test("readForm refuses a multipart value that was not UTF-8 even when another part holds the text it decodes to", async () => {
  const invalid = Uint8Array.of(0x6d, 0xff, 0x31); // "m", a byte no UTF-8 has, "1": decoded leniently, "m\uFFFD1"
  const decoded = utf8.encode("m\uFFFD1");
  for (
    const [what, parts] of [
      ["another field", [part("other", decoded), part("content", invalid)]],
      ["another field after it", [part("content", invalid), part("other", decoded)]],
      ["an earlier duplicate", [part("content", decoded), part("content", invalid)]],
    ] as const
  ) {
    const fields = await readForm(post(body(...parts), MULTIPART), 100);
    assert.throws(() => fields.get("content"), rejection(400, "Invalid form body: non-UTF-8 in content"), what);
  }
  // The field's own bytes are what count: valid ones pass, whatever the other parts hold.
  const valid = await readForm(post(body(part("other", invalid), part("content", decoded)), MULTIPART), 100);
  assert.equal(valid.get("content"), "m\uFFFD1");
  assert.throws(() => valid.get("other"), rejection(400, "Invalid form body: non-UTF-8 in other"));
  // As a FormData is sent: its own boundary, a file part beside.
  const form = new FormData();
  form.append("content", "a \uFFFD b");
  form.append("file", new Blob(["\uFFFD"]), "f.txt");
  const sent = await readForm(new Request("http://publisher.test/", { method: "POST", body: form }), 100);
  assert.equal(sent.get("content"), "a \uFFFD b");
});

Deno.test("readForm refuses a malformed multipart body, and other content types with 415", async () => {
  await assert.rejects(
    readForm(post("not multipart at all", "multipart/form-data; boundary=xyz"), 100),
    rejection(400, "Invalid form body: cannot parse it as multipart/form-data"),
  );
  const unsupported = "; send application/x-www-form-urlencoded or multipart/form-data";
  await assert.rejects(
    readForm(post("{}", "application/json"), 100),
    rejection(415, `Unsupported content type: application/json${unsupported}`),
  );
  await assert.rejects(
    readForm(post(Uint8Array.of(1)), 100),
    rejection(415, `Unsupported content type: none${unsupported}`),
  );
});

Deno.test("readForm of a POST with neither a content type nor a body has no fields", async () => {
  const fields = await readForm(post(null), 100);
  assert.equal(fields.get("content"), undefined);
});

Deno.test("readForm bounds the body by three times the content limit plus the overhead", async () => {
  assert.equal(FORM_OVERHEAD_BYTES, 16384);
  const limit = 10 * 3 + FORM_OVERHEAD_BYTES;
  const fits = await readForm(post(`content=${"a".repeat(limit - 8)}`, "application/x-www-form-urlencoded"), 10);
  assert.equal(fits.get("content")?.length, limit - 8);
  await assert.rejects(
    readForm(post(`content=${"a".repeat(limit - 7)}`, "application/x-www-form-urlencoded"), 10),
    rejection(413, `Body too large: over the ${limit}-byte limit`),
  );
});

Deno.test("readBody stops reading an endless body as soon as it passes the limit", async () => {
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulled++;
      controller.enqueue(new Uint8Array(1000));
    },
  });
  await assert.rejects(readBody(post(body), 2500), rejection(413, "Body too large: over the 2500-byte limit"));
  assert.ok(pulled <= 4, `read ${pulled} chunks of an endless body`);
});

Deno.test("readBody refuses a declared length over the limit before reading, and joins the chunks it reads", async () => {
  let pulled = 0;
  const never = new ReadableStream<Uint8Array>({ pull: () => void pulled++ }, { highWaterMark: 0 });
  const declared = new Request("http://publisher.test/", {
    method: "POST",
    body: never,
    headers: { "content-length": "2501" },
  });
  await assert.rejects(readBody(declared, 2500), rejection(413, "Body too large: over the 2500-byte limit"));
  assert.equal(pulled, 0);
  await never.cancel();

  const chunks = [utf8.encode("ab"), utf8.encode("c"), utf8.encode("de")];
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      const chunk = chunks.shift();
      if (chunk === undefined) controller.close();
      else controller.enqueue(chunk);
    },
  });
  assert.deepEqual(await readBody(post(stream), 5), utf8.encode("abcde"));
});

Deno.test("readBody answers a body that fails to arrive with 400 and the reason", async () => {
  const broken = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.error(new Error("connection reset"));
    },
  });
  await assert.rejects(readBody(post(broken), 100), rejection(400, "Cannot read the body: connection reset"));
});
