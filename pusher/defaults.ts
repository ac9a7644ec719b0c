/**
 * The pusher's defaults, apart from the code that uses them: \`main.ts\`
 * reads them for its flags without loading the server, which a worker runs
 * (the supervisor's isolate then loads neither the server nor node:crypto,
 * issue 19).
 *
 * @module
 */

/** The address `serve` (`./server.ts`) listens on by default: this machine only. */
export const DEFAULT_HOSTNAME = "127.0.0.1";
/** The pusher's WebSocket port, as in the original: `serve` (`./server.ts`)'s default. */
export const DEFAULT_PUSHER_PORT = 4236;
/** The largest request head by default, in bytes: 8 KiB. */
export const DEFAULT_MAX_HEAD_BYTES = 8192;
/** Milliseconds a connection gets to send its request head by default: 10 s. */
export const DEFAULT_HANDSHAKE_TIMEOUT = 10_000;
/** Bytes that may wait to be written to one socket by default: 1 MiB. */
export const DEFAULT_MAX_BUFFERED_BYTES = 1024 * 1024;
/** Milliseconds a write to one socket may stay blocked by default: 2 s. */
export const DEFAULT_SLOW_CLIENT_TIMEOUT = 2000;
/** Milliseconds between protocol pings by default: 30 s. */
export const DEFAULT_PING_INTERVAL = 30_000;
/** Milliseconds to wait for the client's close frame after ours by default: 1 s. */
export const DEFAULT_CLOSE_TIMEOUT = 1000;
/**
 * Default least milliseconds between two writes to one socket (see
 * `ServeOptions.writeInterval` in `./server.ts`): 0, no pacing. 1 to 10 ms did not
 * make fewer writes in bench scenario (n), and an interval near a paced
 * stream's period (20 ms at 50 messages a second) would delay that stream
 * (bench/FINDINGS.md).
 */
export const DEFAULT_WRITE_INTERVAL = 0;

/** The largest message a client may send by default, in bytes: 64 KiB. */
export const DEFAULT_MAX_MESSAGE_BYTES = 65536;

/** Milliseconds a client's presence call waits for every worker's reply by default: 1 s, as the publisher's. */
export const DEFAULT_PRESENCE_TIMEOUT = 1000;

/** History and presence calls of one worker's clients in flight at once by default. */
export const DEFAULT_MAX_CLIENT_READS = 1000;
