/**
 * The publisher's server API (Centrifugo-shaped): `POST /api/<method>` with
 * a JSON object body, answered `{"result":{...}}` or
 * `{"error":{"code":N,"message":"..."}}` with HTTP status N. `batch` runs
 * many calls in one request and answers `{"replies":[...]}`, in order;
 * `broadcast` publishes the same data to many channels and answers
 * `{"result":{"responses":[...]}}`, in their order (as Centrifugo's does).
 *
 * The methods themselves are in `_api_methods.ts`; this file reads the
 * request (key, body), dispatches, runs batches and broadcasts, and writes
 * the JSON.
 *
 * @module
 */

import type { Json } from "../shared/json.ts";
import type { Logger } from "../shared/log.ts";
import { type ContentTypeHeader, typed } from "../shared/http.ts";
import { checkApiKey } from "./_api_key.ts";
import {
  API_METHODS,
  type ApiMethod,
  apiMethods,
  type ApiMethodsDeps,
  type OwnMethod,
  type PreparedPublish,
} from "./_api_methods.ts";
import type { Result } from "./_api_replies.ts";
import type { Params } from "./_api_params.ts";
import { type JsonBodySource, readJsonBody } from "./_json_body.ts";
import { parseUrlEncoded } from "./form.ts";
import { Rejection } from "./_rejection.ts";
import { utf8Length } from "../shared/bytes.ts";

export { API_METHODS, type ApiMethod } from "./_api_methods.ts";

/** Commands a batch holds at most by default. */
export const DEFAULT_MAX_BATCH_COMMANDS = 1000;

/**
 * Bytes of reads (history, presence, channels) one batch answers at most by
 * default: each read answers up to a hub frame (1 MiB), so a thousand of them
 * would hold a gigabyte for one reply.
 */
export const DEFAULT_MAX_BATCH_REPLY_BYTES = 16 * 1024 * 1024;

/** The methods whose answers grow with what the cluster holds: a batch's budget counts them. */
const READS: ReadonlySet<OwnMethod> = new Set(["history", "presence", "channels"]);

/** How long presence and info wait for the workers' replies by default, in milliseconds. */
export const DEFAULT_PRESENCE_TIMEOUT = 1000;

/** How long a subscribe, unsubscribe or disconnect waits for the workers' replies by default, in milliseconds. */
export const DEFAULT_COMMAND_TIMEOUT = 1000;

/** Publications a history answer lists at most by default, and its `limit` when a call names none. */
export const DEFAULT_MAX_HISTORY_LIMIT = 100;

/** Users a presence answer lists at most by default. */
export const DEFAULT_MAX_PRESENCE_USERS = 1000;

/** Channels a `channels` answer lists at most by default. */
export const DEFAULT_MAX_LISTED_CHANNELS = 1000;

/**
 * Commands of one batch in flight at once: enough to overlap their waits on
 * the bus, few enough that one batch does not open a thousand reply inboxes.
 */
export const BATCH_CONCURRENCY = 64;

/** The `content-type` of every server-API answer. */
export const JSON_CONTENT_TYPE = "application/json";

/** What {@linkcode createApi} needs. */
export interface ApiDeps extends ApiMethodsDeps {
  /** The key every call must present; undefined: none. */
  apiKey: string | undefined;
  /** Largest body, in bytes. */
  maxBodyBytes: number;
  /** Deepest nesting of the body's JSON. */
  maxJsonDepth: number;
  /** Commands a batch holds at most. */
  maxBatchCommands: number;
  /** Bytes of reads' answers a batch holds at most; reads past them answer 413. */
  maxBatchReplyBytes: number;
  /** Headers of every answer (CORS). */
  headers: Readonly<Record<string, string>>;
  logger: Logger;
}

/** What a server-API call reads of its request: the body's headers and bytes, and the query string (without `?`). */
export interface ApiRequest extends JsonBodySource {
  readonly query: string;
}

/** A server-API call's answer: the key, body and method checked; refusals thrown as a {@linkcode Rejection}. */
export type ApiCall = (method: ApiMethod, req: ApiRequest) => Promise<Response>;

/**
 * Creates the answer of `POST /api/<method>`: checks the API key (before
 * the body is read), reads the JSON body, runs the method and answers 200
 * `{"result":{...}}` (`{"replies":[...]}` for `batch`). A refusal is thrown
 * as a {@linkcode Rejection}, for the caller to answer with
 * {@linkcode apiError}. Each call, and each command of a batch, is counted
 * in the metrics by method and status code.
 */
export function createApi(deps: ApiDeps): ApiCall {
  const methods = apiMethods(deps);
  const { metrics, logger } = deps;

  /** A command's answer: its result, or its error as a single call would answer it; counted in the metrics. */
  function answer(method: OwnMethod | undefined, outcome: Result | Error): Json {
    if (method !== undefined) metrics.countApiCall(method, statusOf(outcome));
    return reply(method, outcome);
  }

  /** A command's answer, not counted. */
  function reply(method: OwnMethod | undefined, outcome: Result | Error): Json {
    if (!(outcome instanceof Error)) return { result: outcome };
    const status = statusOf(outcome);
    if (outcome instanceof Rejection) return errorBody(status, outcome.message);
    logger.error("batch command failed", { method, error: String(outcome) });
    return errorBody(500, "Internal error");
  }

  /** A batch: `{"replies":[...]}`, one per command, in order. */
  function batch(body: Params): Promise<Json> {
    const commands = body.commands;
    if (!Array.isArray(commands)) {
      return Promise.reject(
        new Rejection(400, 'Invalid commands: expected an array of {"<method>": {params}} objects'),
      );
    }
    if (commands.length > deps.maxBatchCommands) {
      return Promise.reject(
        new Rejection(413, `Too many commands: ${commands.length}, the limit is ${deps.maxBatchCommands}`),
      );
    }
    return run(commands).then((replies) => ({ replies }));
  }

  /**
   * A broadcast: the publish its other parameters make, to each of its
   * `channels`, run as a batch of those publishes (one exchange with the
   * hub). `{"responses":[...]}`, one per channel, in order: each its
   * publish's result or error. It carries at most what a batch's body could:
   * its data times its channels within `maxBodyBytes`, so that a small
   * request cannot make the publisher encode a thousand copies of 64 KiB.
   */
  function broadcast(params: Params): Promise<Result> {
    const { channels, ...publish } = params;
    if (!Array.isArray(channels) || channels.length === 0) {
      return Promise.reject(new Rejection(400, "Invalid channels: expected a non-empty array of channel names"));
    }
    if ("channel" in publish) {
      return Promise.reject(new Rejection(400, "Ambiguous target: a broadcast takes channels, not channel"));
    }
    if (channels.length > deps.maxBatchCommands) {
      return Promise.reject(
        new Rejection(413, `Too many channels: ${channels.length}, the limit is ${deps.maxBatchCommands}`),
      );
    }
    const { data } = publish;
    const bytes = data === undefined ? 0 : utf8Length(typeof data === "string" ? data : JSON.stringify(data));
    if (bytes * channels.length > deps.maxBodyBytes) {
      return Promise.reject(
        new Rejection(
          413,
          `Broadcast too large: ${channels.length} channels × ${bytes} bytes of data is over the ` +
            `${deps.maxBodyBytes}-byte body limit; send fewer channels a call`,
        ),
      );
    }
    return run(channels.map((channel) => ({ publish: { ...publish, channel } }))).then((responses) => ({ responses }));
  }

  /**
   * Runs commands: their publishes go to the bus together (one exchange
   * with the hub for all of them), the other commands at most
   * {@linkcode BATCH_CONCURRENCY} at once. Answers keep the commands' order.
   */
  function run(commands: readonly Json[]): Promise<Json[]> {
    const replies = new Array<Json>(commands.length);
    const prepared: PreparedPublish[] = [];
    const publishedAt: number[] = [];
    const others: { index: number; method: OwnMethod; params: Params }[] = [];
    let readBytes = 0;
    // The batch's publishes are read together: one time for them all.
    const read = deps.now();
    // A loop, not forEach: a callback's closure would share this call's
    // context with the answers' closures, and keep `prepared` (the data)
    // until the bus answers.
    for (let index = 0; index < commands.length; index++) {
      let method: OwnMethod | undefined;
      try {
        // The method first: a command refused for its parameters is counted under it.
        method = commandMethod(commands[index]!);
        const params = commandParams(method, commands[index]!);
        const publish = method === "publish" ? methods.preparePublish(params, read) : null;
        if (publish?.batchable) {
          prepared.push(publish);
          publishedAt.push(index);
        } else others.push({ index, method, params });
      } catch (error) {
        replies[index] = answer(method, error as Error);
      }
    }
    const published = prepared.length === 0 ? Promise.resolve() : methods.publishMany(prepared).then((outcomes) => {
      // Counted once per status, not once per publish: a label lookup each was a share of a batch's CPU.
      const calls = new Map<number, number>();
      outcomes.forEach((outcome, i) => {
        replies[publishedAt[i]!] = reply("publish", outcome);
        const status = statusOf(outcome);
        calls.set(status, (calls.get(status) ?? 0) + 1);
      });
      for (const [status, count] of calls) metrics.countApiCall("publish", status, count);
    });
    const commanded = mapConcurrently(others, BATCH_CONCURRENCY, async ({ index, method, params }) => {
      let outcome: Result | Error;
      try {
        outcome = await methods.single[method](params);
        if (READS.has(method)) {
          readBytes += utf8Length(JSON.stringify(outcome));
          if (readBytes > deps.maxBatchReplyBytes) outcome = overBudget(deps.maxBatchReplyBytes);
        }
      } catch (error) {
        outcome = error as Error;
      }
      replies[index] = answer(method, outcome);
    });
    return Promise.all([published, commanded]).then(() => replies);
  }

  function answerOf(method: ApiMethod, body: Params): Promise<Json> {
    if (method === "batch") return batch(body);
    return (method === "broadcast" ? broadcast(body) : methods.single[method](body)).then((result) => ({ result }));
  }

  return async (method, req) => {
    let status = 500;
    try {
      // Before the body: a caller without the key does not get it read.
      checkApiKey(req, parseUrlEncoded(req.query, "query"), deps.apiKey);
      // The body is no variable here: one would keep it, the publishes' data
      // with it, until the bus answers (an async call keeps its variables
      // alive across each await), long enough for the collections meanwhile
      // to move it to the old generation. batch() reads it, starts the
      // publishes and lets it go; each closure of it holds what the answers
      // need, not the commands.
      const answer = await answerOf(
        method,
        await readJsonBody(req, { maxBodyBytes: deps.maxBodyBytes, maxDepth: deps.maxJsonDepth }),
      );
      status = 200;
      return json(200, answer, deps.headers);
    } catch (error) {
      if (error instanceof Rejection) status = error.status;
      throw error;
    } finally {
      metrics.countApiCall(method, status);
    }
  };
}

/**
 * One command of a batch: an object with one key, the method, whose value
 * is its parameters.
 *
 * @throws {Rejection} 400 otherwise; `batch` cannot be nested, and
 * `broadcast` runs on its own.
 */
/** A read that would take a batch's answer past its budget. */
function overBudget(maxBytes: number): Rejection {
  return new Rejection(
    413,
    `Batch reply too large: its reads' answers passed ${maxBytes} bytes (--max-batch-reply-bytes); read this in a call of its own or with a smaller limit`,
  );
}

/** The method a batch command names; refused when it names none, several, or one not run in a batch. */
function commandMethod(command: Json): OwnMethod {
  if (typeof command !== "object" || command === null || Array.isArray(command)) {
    throw new Rejection(400, 'Invalid command: expected an object {"<method>": {params}}');
  }
  const keys = Object.keys(command);
  if (keys.length !== 1) {
    throw new Rejection(400, `Invalid command: expected one method, got ${keys.length} keys`);
  }
  const method = keys[0]!;
  // A broadcast multiplies its data by its channels: in a batch, by the batch's commands too.
  if (method === "broadcast") {
    throw new Rejection(400, "Invalid command: broadcast runs on its own (POST /api/broadcast), not in a batch");
  }
  if (method === "batch" || !(API_METHODS as readonly string[]).includes(method)) {
    throw new Rejection(404, `Unknown method: ${method.slice(0, 64)}; use one of ${singleMethods()}`);
  }
  return method as OwnMethod;
}

/** The parameters of a command whose method {@linkcode commandMethod} read. */
function commandParams(method: OwnMethod, command: Json): Params {
  const params = (command as Params)[method];
  if (typeof params !== "object" || params === null || Array.isArray(params)) {
    throw new Rejection(400, `Invalid ${method} parameters: expected an object`);
  }
  return params;
}

function singleMethods(): string {
  return API_METHODS.filter((method) => method !== "batch" && method !== "broadcast").join(", ");
}

/**
 * The answer to a refused server-API call: `{"error":{"code":N,"message":"..."}}`
 * with status N and the refusal's headers.
 */
export function apiError(status: number, message: string, headers: Readonly<Record<string, string>>): Response {
  return json(status, errorBody(status, message), headers);
}

/** The body of a refused server-API call, as {@linkcode apiError} answers it: `{"error":{"code":N,"message":"..."}}`. */
export function apiErrorBody(status: number, message: string): string {
  return JSON.stringify(errorBody(status, message));
}

/** The reason of a 404 under `/api/`: the method is unknown. */
export function unknownMethod(pathname: string): string {
  const name = pathname.slice("/api/".length);
  return `Unknown method: ${name.slice(0, 64)}; use one of ${API_METHODS.join(", ")}`;
}

/** The status a command's outcome answers with: 200, its rejection's, or 500. */
function statusOf(outcome: Result | Error): number {
  if (!(outcome instanceof Error)) return 200;
  return outcome instanceof Rejection ? outcome.status : 500;
}

function errorBody(code: number, message: string): Json {
  return { error: { code, message } };
}

function json(status: number, body: Json, headers: Readonly<Record<string, string>>): Response {
  // Typed when built: set afterwards, the name would keep the case a string body gave it.
  return typed(status, JSON.stringify(body), JSON_HEADER, headers);
}

const JSON_HEADER: ContentTypeHeader = [["content-type", JSON_CONTENT_TYPE]];

/** Maps `items` with `fn`, at most `limit` at once; the results keep the items' order. */
async function mapConcurrently<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}
