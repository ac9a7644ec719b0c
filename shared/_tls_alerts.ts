/**
 * TLS alerts from a NATS or Redis server, which the npm clients cannot pass
 * on: kept from ending the process, and handed to the buses to log.
 *
 * Over TLS 1.3 a server checks the client's certificate after the client's
 * side of the handshake is done, so a server that refuses it (none, another
 * CA's) sends its alert (`CertificateRequired`, `BadCertificate`, `UnknownCA`)
 * just after `secureConnect`. Deno 2.9's `node:tls` emits that alert as an
 * `error` event on the socket, at once, in the read that brings it, and
 * measured, often before the promise jobs `secureConnect` queued have run.
 * The npm clients listen for their socket's errors only from such a job
 * (node-redis `await`s `secureConnect`; the NATS transport drops the socket's
 * listeners on `secureConnect` and adds its own after an `await`), and
 * neither lets a caller add one. With no listener, the event throws, uncaught,
 * out of Deno's read callback, and ends the process (or pusher worker).
 *
 * So that one is caught where it lands, on the global `error` event, and only
 * it: an error whose code is an OpenSSL-style `ERR_SSL_...` and whose message
 * is `received fatal alert: ...`, which only a TLS peer's alert makes. The
 * connection is dead then; the clients retry once it closes, or once their
 * connect timeout ends the attempt, as after any other failure.
 *
 * @module
 */

/** Called with a TLS alert a bus client could not pass on. */
export type TlsAlertListener = (error: Error) => void;

const listeners = new Set<TlsAlertListener>();
let installed = false;

/**
 * From now on, keeps TLS alerts no socket listener heard from ending the
 * process, and calls `listener` with each, and with each one
 * {@linkcode reportTlsAlert} is given. Returns a function that stops calling
 * it (the alerts stay harmless).
 *
 * @example
 * ```ts
 * import { onTlsAlert } from "./_tls_alerts.ts";
 *
 * const stop = onTlsAlert((error) => console.warn("TLS refused:", error.message));
 * stop();
 * ```
 */
export function onTlsAlert(listener: TlsAlertListener): () => void {
  if (!installed) {
    installed = true;
    globalThis.addEventListener("error", (event) => {
      if (!isTlsAlert(event.error)) return;
      event.preventDefault();
      reportTlsAlert(event.error);
    });
  }
  listeners.add(listener);
  return () => void listeners.delete(listener);
}

/** Hands a TLS alert a client heard but will not pass on to the listeners of {@linkcode onTlsAlert}. */
export function reportTlsAlert(error: Error): void {
  for (const listener of listeners) listener(error);
}

/**
 * Whether `error` is a fatal alert a TLS peer sent, as Deno's `node:tls`
 * reports it: `received fatal alert: CertificateRequired` with the code
 * `ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED`.
 */
export function isTlsAlert(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && code.startsWith("ERR_SSL_") && error.message.startsWith("received fatal alert: ");
}

/** What the buses add to the warning of an alert that refused the handshake. */
export const TLS_ALERT_HINT =
  "the server may require a client certificate (--bus-cert, --bus-key) or refuse this one; its log says why";
