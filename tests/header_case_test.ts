/**
 * Every answer of a service names its headers in one case, lower case: read
 * from the raw bytes, since fetch's `Headers` hide how a name was written.
 */

import assert from "node:assert/strict";
import { startService } from "./_service.ts";
import { within } from "../channel/testing.ts";

/** Sends `request` as raw HTTP/1.1 and returns the status and header names of the answer, as written. */
async function rawAnswer(port: number, request: string): Promise<{ status: number; names: string[] }> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(request));
  let head = "";
  const buffer = new Uint8Array(16_384);
  const decoder = new TextDecoder();
  while (!head.includes("\r\n\r\n")) {
    const n = await within(conn.read(buffer), 5000, `the answer to ${request.split("\r\n")[0]}`);
    if (n === null) break;
    head += decoder.decode(buffer.subarray(0, n), { stream: true });
  }
  const [statusLine, ...lines] = head.split("\r\n\r\n")[0]!.split("\r\n");
  return { status: Number(statusLine!.split(" ")[1]), names: lines.map((line) => line.slice(0, line.indexOf(":"))) };
}

function request(method: string, target: string, headers: Record<string, string> = {}): string {
  const fields = Object.entries({ Host: "127.0.0.1", Connection: "close", ...headers });
  return `${method} ${target} HTTP/1.1\r\n${fields.map(([name, value]) => `${name}: ${value}\r\n`).join("")}\r\n`;
}

/** A POST with `body`, JSON unless `headers` say otherwise. */
function post(target: string, body: string, headers: Record<string, string> = {}): string {
  const head = request("POST", target, {
    "Content-Type": "application/json",
    ...headers,
    "Content-Length": `${body.length}`,
  });
  return head + body;
}

Deno.test("the publisher's answers (200, 400, 401, 404, 405, 415, 503), the server API's JSON ones too, all name their headers in lower case", async () => {
  await using hub = await startService("channel", ["--port", "0", "--startup-grace", "0"]);
  const hubPort = await hub.port();
  await using publisher = await startService(
    "publisher",
    ["--port", "0", "--hub", `127.0.0.1:${hubPort}`, "--publish-timeout", "300"],
    { env: { PUBLISHER_API_KEY: "k" } },
  );
  const port = await publisher.port();
  await publisher.waitForLine(/msg="connected to hub"/);
  const key = { Authorization: "Bearer k" };
  const answers = [
    [200, await rawAnswer(port, request("GET", "/?content=hi", key))],
    [400, await rawAnswer(port, request("GET", "/?to_worker_id=1&content=hi", key))],
    [401, await rawAnswer(port, request("GET", "/?content=hi"))],
    [404, await rawAnswer(port, request("GET", "/nope", key))],
    [405, await rawAnswer(port, request("DELETE", "/", key))],
    [200, await rawAnswer(port, post("/api/publish", '{"data":"hi"}', key))],
    [404, await rawAnswer(port, post("/api/nope", "{}", key))],
    [
      415,
      await rawAnswer(
        port,
        post("/api/publish", "data=hi", { ...key, "Content-Type": "multipart/form-data; boundary=b" }),
      ),
    ],
  ] as const;
  await hub.stop();
  await publisher.waitForLine(/msg="disconnected from hub"/);
  const unavailable = await rawAnswer(port, request("GET", "/?content=hi", key));
  for (const [status, answer] of [...answers, [503, unavailable] as const]) {
    assert.equal(answer.status, status, `${status}: ${answer.names}`);
    for (const name of answer.names) assert.equal(name, name.toLowerCase(), `${status}: header ${name}`);
  }
  assert.ok(answers[0][1].names.includes("x-pushers-reached"), "200: x-pushers-reached");
  assert.ok(answers[2][1].names.includes("www-authenticate"), "401: www-authenticate");
  assert.ok(answers[4][1].names.includes("allow"), "405: allow");
  assert.ok(unavailable.names.includes("retry-after"), "503: retry-after");
});
