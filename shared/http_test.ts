import assert from "node:assert/strict";
import { isMiss, type Route, Router, text, TEXT_CONTENT_TYPE } from "./http.ts";

Deno.test("text() sends the body as given, as text/plain;charset=utf-8, with the headers given", async () => {
  const ok = text(200, "ok");
  assert.equal(ok.status, 200);
  assert.equal(await ok.text(), "ok");
  assert.equal(ok.headers.get("content-type"), "text/plain;charset=utf-8");
  assert.equal(TEXT_CONTENT_TYPE, "text/plain;charset=utf-8");

  const down = text(503, "Hub unavailable: gone\n", { "retry-after": "1", "x-extra": "a" });
  assert.equal(down.status, 503);
  assert.equal(await down.text(), "Hub unavailable: gone\n");
  assert.equal(down.headers.get("Retry-After"), "1");
  assert.equal(down.headers.get("x-extra"), "a");
});

Deno.test("text() keeps its content type over one in the headers", () => {
  const response = text(200, "ok", { "content-type": "text/html" });
  assert.equal(response.headers.get("content-type"), TEXT_CONTENT_TYPE);
});

type Handler = (req: Request) => Response;

const ROUTES: Record<string, Route<Handler>> = {
  "/": { methods: ["GET", "POST", "OPTIONS"], hint: "use GET or POST", handler: () => text(200, "root") },
  "/healthz": { methods: ["GET", "HEAD"], handler: () => text(200, "ok\n") },
};

Deno.test("router matches exact paths only, and the methods of each", () => {
  const router = new Router(ROUTES);
  assert.equal(router.match("GET", "/"), ROUTES["/"]);
  assert.equal(router.match("OPTIONS", "/"), ROUTES["/"]);
  assert.equal(router.match("HEAD", "/healthz"), ROUTES["/healthz"]);
  for (const path of ["/healthz/", "/Healthz", "", "/x", "/a/b"]) {
    assert.deepEqual(router.match("GET", path), { status: 404, reason: `Not found: ${path}`, headers: {} });
  }
});

Deno.test("router misses a method with 405, the route's hint or a default one, and allow in the route's order", () => {
  const router = new Router(ROUTES);
  const put = router.match("PUT", "/");
  assert.ok(isMiss(put));
  assert.deepEqual(put, {
    status: 405,
    reason: "Method PUT not allowed: use GET or POST",
    headers: { allow: "GET, POST, OPTIONS" },
  });
  assert.deepEqual(router.match("POST", "/healthz"), {
    status: 405,
    reason: "Method POST not allowed: use GET or HEAD",
    headers: { allow: "GET, HEAD" },
  });
  assert.ok(!isMiss(router.match("GET", "/")));
});

Deno.test("router handler answers misses as text with a newline and calls the route's handler otherwise", async () => {
  const handle = new Router(ROUTES).handler((route, req: Request) => route.handler(req));
  const root = await handle(new Request("http://x.test/?q=1"));
  assert.equal(await root.text(), "root");

  const missing = await handle(new Request("http://x.test/nowhere"));
  assert.equal(missing.status, 404);
  assert.equal(await missing.text(), "Not found: /nowhere\n");
  assert.equal(missing.headers.get("content-type"), TEXT_CONTENT_TYPE);

  const wrong = await handle(new Request("http://x.test/healthz", { method: "DELETE" }));
  assert.equal(wrong.status, 405);
  assert.equal(wrong.headers.get("allow"), "GET, HEAD");
  assert.equal(await wrong.text(), "Method DELETE not allowed: use GET or HEAD\n");
});
