import assert from "node:assert/strict";
import {
  type BusTls,
  busTlsField,
  busTlsFlag,
  certFilesFlag,
  certificateFields,
  pemBlocks,
  readServedCertificate,
} from "./tls.ts";
import { makeTestCertificates } from "../tests/_tls.ts";

Deno.test("readServedCertificate reads a certificate and its key, with the subject and expiry the logs show", async () => {
  await using certs = await makeTestCertificates();
  const served = await readServedCertificate(certs.server);
  assert.match(served.cert, /^-----BEGIN CERTIFICATE-----/);
  assert.match(served.key, /PRIVATE KEY-----/);
  assert.equal(served.subject, "CN=localhost");
  assert.ok(served.notAfter.getTime() > Date.now());
  assert.equal(certificateFields(served).expired, undefined);
  assert.equal(certificateFields(await readServedCertificate(certs.expired)).expired, true);
  assert.ok(served.notBefore.getTime() <= Date.now());
  assert.equal(certificateFields(served).notYetValid, undefined);
  // A certificate whose validity starts tomorrow (a clock set back, or one issued ahead): clients refuse it too.
  const tomorrow = new Date(Date.now() + 86_400_000);
  assert.equal(certificateFields({ ...served, notBefore: tomorrow }).notYetValid, true);
});

Deno.test("readServedCertificate names the flag and the file of what is wrong, in one line", async () => {
  await using certs = await makeTestCertificates();
  const cases: [{ cert: string; key: string }, RegExp][] = [
    [{ cert: "certs/none.pem", key: certs.server.key }, /^Cannot read --cert certs\/none\.pem: No such file/],
    [
      { cert: certs.server.key, key: certs.server.key },
      /^Invalid --cert .*: no PEM certificate \(BEGIN CERTIFICATE\) in it$/,
    ],
    [{ cert: certs.server.cert, key: certs.server.cert }, /^Invalid --key .*: no PEM private key/],
    [
      { cert: certs.server.cert, key: certs.foreign.key },
      /^Invalid --key .*: it is not the key of the first certificate in /,
    ],
  ];
  for (const [files, message] of cases) {
    const error = await readServedCertificate(files).then(() => null, (error: Error) => error);
    assert.ok(error instanceof TypeError, `${files.cert} ${files.key}: a TypeError`);
    assert.match(error.message, message);
    assert.ok(!error.message.includes("\n"), "one line");
  }
  const broken = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
  const path = certs.ca.replace("ca.pem", "broken.pem");
  await Deno.writeTextFile(path, broken);
  await assert.rejects(readServedCertificate({ cert: path, key: certs.server.key }), /certificate 1 does not parse/);
});

Deno.test("certFilesFlag takes --cert and --key together or not at all", () => {
  assert.equal(certFilesFlag({}), undefined);
  assert.deepEqual(certFilesFlag({ cert: "a.pem", key: "a.key" }), { cert: "a.pem", key: "a.key" });
  assert.throws(() => certFilesFlag({ cert: "a.pem" }), /^TypeError: Invalid --cert: give --key with it$/);
  assert.throws(() => certFilesFlag({ key: "a.key" }), /^TypeError: Invalid --key: give --cert with it$/);
});

Deno.test("busTlsFlag reads the CA (--bus-ca or --hub-ca) and a client certificate into OpenBusOptions.tls", async () => {
  await using certs = await makeTestCertificates();
  assert.equal(await busTlsFlag({}), undefined);
  assert.deepEqual(await busTlsFlag({ "hub-ca": certs.ca }), { caCerts: [certs.caPem] });
  const both = await busTlsFlag({ "bus-ca": certs.ca, "bus-cert": certs.client.cert, "bus-key": certs.client.key });
  assert.equal(both?.cert, certs.client.certPem);
  assert.match(both?.key ?? "", /PRIVATE KEY/);
  await assert.rejects(busTlsFlag({ "bus-ca": certs.ca, "hub-ca": certs.ca }), /another name for --bus-ca/);
  await assert.rejects(busTlsFlag({ "bus-ca": certs.ca, "bus-cert": certs.client.cert }), /give --bus-key with it/);
  await assert.rejects(
    busTlsFlag({ "bus-ca": certs.ca, "bus-cert": certs.client.cert, "bus-key": certs.server.key }),
    /^TypeError: Invalid --bus-key .*not the key of the first certificate/,
  );
});

Deno.test("busTlsField: TLS to the bus is on for tls:// and rediss://, and on every scheme once TLS flags are given", () => {
  const ca = { caCerts: ["-----BEGIN CERTIFICATE-----"] };
  const withCert = { ...ca, cert: "cert", key: "key" };
  const cases: [string, BusTls | undefined, string][] = [
    ["channel://127.0.0.1:2206", undefined, "off"],
    ["channel://127.0.0.1:2206", ca, "on"],
    ["nats://127.0.0.1:4222", undefined, "off"],
    ["nats://127.0.0.1:4222", withCert, "on, client certificate"],
    ["tls://nats1:4222", undefined, "on"],
    ["redis://127.0.0.1:6379", undefined, "off"],
    ["redis://127.0.0.1:6379", ca, "on"],
    ["rediss://127.0.0.1:6379", undefined, "on"],
  ];
  for (const [address, tls, field] of cases) assert.equal(busTlsField(address, tls), field, `${address} ${!!tls}`);
});

Deno.test("pemBlocks splits a bundle into one PEM per certificate", async () => {
  await using certs = await makeTestCertificates();
  const bundle = certs.caPem + certs.otherCaPem;
  assert.deepEqual(pemBlocks(bundle, "CERTIFICATE"), [certs.caPem, certs.otherCaPem]);
  assert.deepEqual(pemBlocks("nothing here", "CERTIFICATE"), []);
});

Deno.test("readServedCertificate refuses, in one line, a key that Deno's TLS cannot sign a handshake with", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const kinds: [string, string[], RegExp][] = [
      ["ed448", ["-newkey", "ed448"], /\(ed448\)/],
      ["secp256k1", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"], /\(ec secp256k1\)/],
      ["rsa-pss", ["-newkey", "rsa-pss", "-pkeyopt", "rsa_keygen_bits:2048"], /\(rsa-pss\)/],
      ["ed25519", ["-newkey", "ed25519"], /^$/],
    ];
    for (const [name, newKey, message] of kinds) {
      const files = { cert: `${dir}/${name}.pem`, key: `${dir}/${name}.key` };
      const args = ["req", "-x509", ...newKey, "-nodes", "-keyout", files.key, "-out", files.cert, "-days", "1"];
      const made = await new Deno.Command("openssl", { args: [...args, "-subj", "/CN=localhost"], stderr: "null" })
        .output();
      assert.equal(made.code, 0, `openssl made the ${name} pair`);
      const error = await readServedCertificate(files).then(() => null, (error: Error) => error);
      if (name === "ed25519") {
        assert.equal(error, null, "Ed25519 serves");
        continue;
      }
      assert.ok(error instanceof TypeError, name);
      assert.match(error.message, /^Invalid --key .*: TLS here cannot sign with /);
      assert.match(error.message, message);
      assert.ok(!error.message.includes("\n"), "one line");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readServedCertificate takes one file holding the certificate and its key, in either order, for both flags", async () => {
  await using certs = await makeTestCertificates();
  const key = await Deno.readTextFile(certs.server.key);
  const orders: [string, string][] = [
    ["cert-then-key", certs.server.certPem + key],
    ["key-then-cert", key + certs.server.certPem],
  ];
  for (const [name, text] of orders) {
    const path = certs.ca.replace("ca.pem", `${name}.pem`);
    await Deno.writeTextFile(path, text);
    const served = await readServedCertificate({ cert: path, key: path });
    assert.equal(served.cert, certs.server.certPem, `${name}: the certificate alone is served`);
    assert.match(served.key, /^-----BEGIN [A-Z ]*PRIVATE KEY-----\n[\s\S]*-----END [A-Z ]*PRIVATE KEY-----\n$/);
    assert.ok(!served.key.includes("CERTIFICATE"), `${name}: the key alone`);
    // And a server starts with them.
    using listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert: served.cert, key: served.key });
    assert.ok(listener.addr.port > 0);
  }
});
