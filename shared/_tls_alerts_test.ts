import assert from "node:assert/strict";
import { isTlsAlert, onTlsAlert, reportTlsAlert } from "./_tls_alerts.ts";
import { until } from "../channel/testing.ts";

/** An alert as Deno's node:tls makes it. */
function alert(name: string, code: string): Error {
  return Object.assign(new Error(`received fatal alert: ${name}`), { code });
}

Deno.test("isTlsAlert knows a TLS peer's fatal alert as node:tls reports it, and nothing else", () => {
  assert.ok(isTlsAlert(alert("CertificateRequired", "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED")));
  assert.ok(isTlsAlert(alert("BadCertificate", "ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE")));
  assert.ok(!isTlsAlert(new Error("received fatal alert: UnknownCA")), "no code");
  assert.ok(!isTlsAlert(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" })));
  assert.ok(!isTlsAlert(Object.assign(new Error("boom"), { code: "ERR_SSL_X" })));
  assert.ok(!isTlsAlert("received fatal alert: UnknownCA"));
});

Deno.test("onTlsAlert keeps an alert thrown uncaught from ending the process, and hands it and reported ones on", async () => {
  const heard: string[] = [];
  const stop = onTlsAlert((error) => heard.push(error.message));
  try {
    setTimeout(() => {
      throw alert("UnknownCA", "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA");
    });
    await until(() => heard.length === 1, 1000, "the uncaught alert");
    reportTlsAlert(alert("BadCertificate", "ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE"));
    assert.deepEqual(heard, ["received fatal alert: UnknownCA", "received fatal alert: BadCertificate"]);
  } finally {
    stop();
  }
  reportTlsAlert(alert("BadCertificate", "ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE"));
  assert.equal(heard.length, 2, "not after stop");
});
