/**
 * The browser client library as a pusher serves it: `/client.js` and its
 * types, `/client.d.ts`, each read once, when first asked for (the pusher
 * task may read `pusher/`; `deno task compile` embeds them with `--include`).
 * Not when this module loads: a process that imports the pusher and never
 * serves them (the heap benchmark) needs no read access.
 *
 * @module
 */

import { sha1 } from "./_sha1.ts";

/** One file served as is. */
interface Asset {
  body: string;
  contentType: string;
  etag: string;
}

function load(name: string, contentType: string): Asset {
  // Synchronously: a few kilobytes, once; the handler that asks stays simple.
  const body = Deno.readTextFileSync(new URL(`./${name}`, import.meta.url));
  const etag = `"${sha1(new TextEncoder().encode(body)).toHex().slice(0, 24)}"`;
  return { body, contentType, etag };
}

const FILES: ReadonlyMap<string, [name: string, contentType: string]> = new Map([
  ["/client.js", ["client.js", "text/javascript;charset=utf-8"]],
  ["/client.d.ts", ["client.d.ts", "application/typescript;charset=utf-8"]],
]);
const loaded = new Map<string, Asset>();

/** Paths {@linkcode clientAssetResponse} answers. */
export const CLIENT_ASSET_PATHS: readonly string[] = [...FILES.keys()];

/**
 * The response to a GET (or HEAD) of `path`, one of
 * {@linkcode CLIENT_ASSET_PATHS}: the file, or 304 when the request's
 * `If-None-Match` names it. Caches may keep it five minutes and must then
 * revalidate, since the URL does not change with the file. Any origin may
 * load it (a module script from another origin needs CORS), and Deno finds
 * the types of `/client.js` from its `X-TypeScript-Types` header.
 *
 * @throws {RangeError} for another path.
 */
export function clientAssetResponse(headers: { get(name: string): string | null }, path: string): Response {
  const file = FILES.get(path);
  if (!file) throw new RangeError(`Not a client asset: ${path}`);
  let asset = loaded.get(path);
  if (!asset) loaded.set(path, asset = load(...file));
  const responseHeaders = new Headers({
    "content-type": asset.contentType,
    "cache-control": "public, max-age=300, must-revalidate",
    "etag": asset.etag,
    "access-control-allow-origin": "*",
    "x-content-type-options": "nosniff",
  });
  if (path === "/client.js") responseHeaders.set("x-typescript-types", "/client.d.ts");
  const match = headers.get("if-none-match");
  if (match !== null && match.split(",").some((tag) => tag.trim().replace(/^W\//, "") === asset.etag)) {
    return new Response(null, { status: 304, headers: responseHeaders });
  }
  return new Response(asset.body, { headers: responseHeaders });
}
