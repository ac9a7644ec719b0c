/**
 * The pusher server's answers to plain HTTP requests: a fetch `Response`
 * written as HTTP/1.1 on the raw connection, which is then closed. The
 * server keeps no connection alive but a WebSocket's.
 *
 * @module
 */

/** Reason phrases of the statuses the server and the pusher answer, for a `Response` built without one. */
const STATUS_TEXT: Record<number, string> = {
  200: "OK",
  204: "No Content",
  304: "Not Modified",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  426: "Upgrade Required",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/**
 * Writes `response` to `tcp` and closes the connection, with or without its
 * body (`headOnly`, for a `HEAD` request: the head is a GET's, its
 * `content-length` too). A client gone meanwhile is not an error: there is
 * no one left to answer.
 */
export async function respond(tcp: Deno.Conn, response: Response, headOnly: boolean): Promise<void> {
  try {
    const body = response.body === null ? new Uint8Array(0) : new Uint8Array(await response.arrayBuffer());
    let head = `HTTP/1.1 ${response.status} ${response.statusText || STATUS_TEXT[response.status] || ""}\r\n`;
    response.headers.forEach((value, name) => {
      if (name !== "content-length" && name !== "connection") head += `${name}: ${value}\r\n`;
    });
    // None on a 204, and on a 304 only the 200's, which it does not have (RFC 9110 8.6).
    if (response.status !== 204 && response.status !== 304) head += `content-length: ${body.length}\r\n`;
    // The response's own options (a 426's Upgrade) are kept: the connection closes all the same.
    const connection = response.headers.get("connection");
    head += `connection: ${connection === null ? "close" : `${connection}, close`}\r\n\r\n`;
    const headBytes = new TextEncoder().encode(head);
    const sent = headOnly ? 0 : body.length;
    const bytes = new Uint8Array(headBytes.length + sent);
    bytes.set(headBytes);
    if (sent > 0) bytes.set(body, headBytes.length);
    let offset = 0;
    while (offset < bytes.length) offset += await tcp.write(bytes.subarray(offset));
  } catch {
    // The client went away; nothing to answer.
  } finally {
    closeConnection(tcp);
  }
}

/** Closes `tcp`; closing one already closed is harmless. */
export function closeConnection(tcp: Deno.Conn): void {
  try {
    tcp.close();
  } catch { /* already closed */ }
}
