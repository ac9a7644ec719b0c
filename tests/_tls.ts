/**
 * Test certificates made with `openssl` for the TLS tests: a CA, a server
 * certificate it signs for 127.0.0.1 and localhost, a second one (to
 * reload), an expired one, client certificates (good, expired, from
 * another CA), and a server certificate from another CA. They go in a fresh directory under `certs/`, the only
 * place the service tasks may read (README: TLS), removed on dispose.
 *
 * @module
 */

import { X509Certificate } from "node:crypto";
import { ROOT } from "../shared/tasks.ts";

/** A certificate and its key: paths from the repository root, as the services take them, and the PEM text. */
export interface TestPair {
  /** Path of the PEM certificate, from the repository root (`certs/test-.../server.pem`). */
  cert: string;
  /** Path of the PEM private key, from the repository root. */
  key: string;
  /** The certificate's PEM text. */
  certPem: string;
}

/** The certificates of one test run. */
export interface TestCertificates extends AsyncDisposable {
  /** Path of the CA certificate, from the repository root. */
  ca: string;
  /** The CA certificate's PEM text. */
  caPem: string;
  /** Signed by `ca` for 127.0.0.1 and localhost, valid for a day. */
  server: TestPair;
  /** Like `server`, another key and subject (`CN=reloaded`): what a reload swaps in. */
  renewed: TestPair;
  /** Signed by `ca` for 127.0.0.1 and localhost, expired yesterday. */
  expired: TestPair;
  /** A client certificate signed by `ca`. */
  client: TestPair;
  /** A client certificate signed by `ca`, expired yesterday. */
  expiredClient: TestPair;
  /** A client certificate signed by the other CA. */
  foreignClient: TestPair;
  /** Path of another CA's certificate, from the repository root. */
  otherCa: string;
  /** The other CA's PEM text. */
  otherCaPem: string;
  /** Signed by the other CA for 127.0.0.1 and localhost. */
  foreign: TestPair;
  /** base64 SHA-256 of a certificate's public key (SPKI): what Chromium's `--ignore-certificate-errors-spki-list` takes. */
  spkiHash(pair: TestPair): Promise<string>;
}

const SERVER_NAMES =
  "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n";
const CLIENT_EXTENSIONS = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";

/**
 * Makes the test certificates in a fresh `certs/test-*` directory; disposing
 * removes it.
 *
 * @example
 * ```ts
 * import { makeTestCertificates } from "./_tls.ts";
 * import { startService } from "./_service.ts";
 *
 * await using certs = await makeTestCertificates();
 * await using hub = await startService("channel", ["--cert", certs.server.cert, "--key", certs.server.key]);
 * ```
 */
export async function makeTestCertificates(): Promise<TestCertificates> {
  const certsDir = new URL("certs/", ROOT);
  await Deno.mkdir(certsDir, { recursive: true });
  const absolute = await Deno.makeTempDir({ dir: certsDir.pathname, prefix: "test-" });
  const relative = `certs/${absolute.split("/").at(-1)}`;
  try {
    const file = (name: string) => `${absolute}/${name}`;
    const ca = async (name: string, subject: string) => {
      await openssl([
        "req",
        "-x509",
        ...EC_KEY,
        "-keyout",
        file(`${name}.key`),
        "-out",
        file(`${name}.pem`),
        "-days",
        "2",
        "-subj",
        subject,
      ]);
    };
    const signed = async (name: string, caName: string, subject: string, days: string, extensions: string) => {
      await openssl([
        "req",
        "-new",
        ...EC_KEY,
        "-keyout",
        file(`${name}.key`),
        "-out",
        file(`${name}.csr`),
        "-subj",
        subject,
      ]);
      await Deno.writeTextFile(file(`${name}.ext`), extensions);
      await openssl([
        "x509",
        "-req",
        "-in",
        file(`${name}.csr`),
        "-CA",
        file(`${caName}.pem`),
        "-CAkey",
        file(`${caName}.key`),
        "-CAcreateserial",
        "-out",
        file(`${name}.pem`),
        "-days",
        days,
        "-extfile",
        file(`${name}.ext`),
      ]);
      return {
        cert: `${relative}/${name}.pem`,
        key: `${relative}/${name}.key`,
        certPem: await Deno.readTextFile(file(`${name}.pem`)),
      };
    };
    await ca("ca", "/CN=deno-push test CA");
    await ca("other-ca", "/CN=another test CA");
    const server = await signed("server", "ca", "/CN=localhost", "1", SERVER_NAMES);
    const renewed = await signed("renewed", "ca", "/CN=reloaded", "1", SERVER_NAMES);
    // Valid from now until a day ago: expired from the start.
    const expired = await signed("expired", "ca", "/CN=localhost", "-1", SERVER_NAMES);
    const client = await signed("client", "ca", "/CN=pusher", "1", CLIENT_EXTENSIONS);
    const expiredClient = await signed("expired-client", "ca", "/CN=pusher", "-1", CLIENT_EXTENSIONS);
    const foreignClient = await signed("foreign-client", "other-ca", "/CN=pusher", "1", CLIENT_EXTENSIONS);
    const foreign = await signed("foreign", "other-ca", "/CN=localhost", "1", SERVER_NAMES);
    return {
      ca: `${relative}/ca.pem`,
      caPem: await Deno.readTextFile(file("ca.pem")),
      otherCa: `${relative}/other-ca.pem`,
      otherCaPem: await Deno.readTextFile(file("other-ca.pem")),
      server,
      renewed,
      expired,
      client,
      expiredClient,
      foreignClient,
      foreign,
      spkiHash: (pair) => spkiHash(pair.certPem),
      async [Symbol.asyncDispose]() {
        await Deno.remove(absolute, { recursive: true });
      },
    };
  } catch (error) {
    await Deno.remove(absolute, { recursive: true });
    throw error;
  }
}

/** One machine of {@linkcode makeHostCertificates}: its host name and address. */
export interface Host {
  name: string;
  address: string;
}

/** The certificates of {@linkcode makeHostCertificates}: one `certs/` directory per machine. */
export interface HostCertificates extends AsyncDisposable {
  /** The CA's PEM text. */
  caPem: string;
  /** A machine's own `certs/` directory, from the repository root (`certs/test-.../nats1`). */
  dir(name: string): string;
}

/**
 * Makes a CA and, for each host, a directory under a fresh `certs/test-*`
 * holding what that machine's `certs/` would: the CA's certificate
 * (`ca.pem`) and a certificate for its name and address, signed by the CA
 * (`server.pem`, `server.key`), for server and client authentication (a
 * NATS route presents it both ways). Disposing removes them all.
 *
 * @example
 * ```ts
 * import { makeHostCertificates } from "./_tls.ts";
 *
 * await using certs = await makeHostCertificates([{ name: "nats1", address: "10.0.1.1" }]);
 * certs.dir("nats1"); // "certs/test-.../nats1", with ca.pem, server.pem and server.key
 * ```
 */
export async function makeHostCertificates(hosts: Host[]): Promise<HostCertificates> {
  const certsDir = new URL("certs/", ROOT);
  await Deno.mkdir(certsDir, { recursive: true });
  const absolute = await Deno.makeTempDir({ dir: certsDir.pathname, prefix: "test-" });
  const relative = `certs/${absolute.split("/").at(-1)}`;
  try {
    const file = (name: string) => `${absolute}/${name}`;
    await openssl([
      "req",
      "-x509",
      ...EC_KEY,
      "-keyout",
      file("ca.key"),
      "-out",
      file("ca.pem"),
      "-days",
      "2",
      "-subj",
      "/CN=deno-push test CA",
    ]);
    const caPem = await Deno.readTextFile(file("ca.pem"));
    for (const { name, address } of hosts) {
      const dir = file(name);
      await Deno.mkdir(dir);
      await Deno.writeTextFile(`${dir}/ca.pem`, caPem);
      await openssl([
        "req",
        "-new",
        ...EC_KEY,
        "-keyout",
        `${dir}/server.key`,
        "-out",
        `${dir}/server.csr`,
        "-subj",
        `/CN=${name}`,
      ]);
      await Deno.writeTextFile(
        `${dir}/server.ext`,
        `subjectAltName=DNS:${name},IP:${address}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n`,
      );
      await openssl([
        "x509",
        "-req",
        "-in",
        `${dir}/server.csr`,
        "-CA",
        file("ca.pem"),
        "-CAkey",
        file("ca.key"),
        "-CAcreateserial",
        "-out",
        `${dir}/server.pem`,
        "-days",
        "1",
        "-extfile",
        `${dir}/server.ext`,
      ]);
    }
    return {
      caPem,
      dir: (name) => `${relative}/${name}`,
      async [Symbol.asyncDispose]() {
        await Deno.remove(absolute, { recursive: true });
      },
    };
  } catch (error) {
    await Deno.remove(absolute, { recursive: true });
    throw error;
  }
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

async function openssl(args: string[]): Promise<void> {
  const { code, stderr } = await new Deno.Command("openssl", { args, stdout: "null", stderr: "piped" }).output();
  if (code !== 0) throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(stderr).trim()}`);
}

async function spkiHash(certPem: string): Promise<string> {
  const spki = new X509Certificate(certPem).publicKey.export({ type: "spki", format: "der" });
  const digest = await crypto.subtle.digest("SHA-256", new Uint8Array(spki));
  return new Uint8Array(digest).toBase64();
}
