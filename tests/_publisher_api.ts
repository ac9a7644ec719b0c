/**
 * Calls a running publisher as a backend does, for the end-to-end tests of
 * each bus: the original's `GET /?...` and the JSON server API.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Json } from "../shared/json.ts";

/** A publisher's answers, read whole. */
export interface PublisherApi {
  /** `GET /?query`: its status, body and `X-Pushers-Reached` (null when absent). */
  get(query: string): Promise<{ status: number; text: string; reached: string | null }>;
  /** `POST /api/<method>` with `body` as JSON: its status and JSON answer. */
  api(method: string, body: Json): Promise<{ status: number; body: { [key: string]: Json } }>;
  /** As `api`, asserting 200, and returns its `result`. */
  result(method: string, body: Json): Promise<{ [key: string]: Json }>;
}

/**
 * The calls to the publisher at `base` (`http://127.0.0.1:4237`).
 *
 * @example
 * ```ts
 * import { publisherApi } from "./_publisher_api.ts";
 *
 * const { result } = publisherApi("http://127.0.0.1:4237");
 * await result("publish", { channel: "news", data: "hi" });
 * ```
 */
export function publisherApi(base: string): PublisherApi {
  const api: PublisherApi["api"] = async (method, body) => {
    const response = await fetch(`${base}/api/${method}`, {
      method: "POST",
      body: JSON.stringify(body),
      headers: { "content-type": "application/json" },
    });
    return { status: response.status, body: await response.json() };
  };
  return {
    async get(query) {
      const response = await fetch(`${base}/?${query}`);
      return {
        status: response.status,
        text: await response.text(),
        reached: response.headers.get("x-pushers-reached"),
      };
    },
    api,
    async result(method, body) {
      const answer = await api(method, body);
      assert.equal(answer.status, 200, `${method} ${JSON.stringify(body)}: ${JSON.stringify(answer.body)}`);
      return answer.body.result as { [key: string]: Json };
    },
  };
}
