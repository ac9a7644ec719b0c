/**
 * TLS settings from the command line, shared by the three services: the
 * certificate and key a service serves with (`--cert`, `--key`), and what
 * the bus client verifies its server with and presents to it (`--bus-ca`,
 * alias `--hub-ca`, `--bus-cert`, `--bus-key`). Files are PEM; each is read
 * and checked once here, so that a missing, unreadable or malformed file is
 * a one-line error at start (or, on SIGHUP, a log line while the old
 * certificate stays), never a listener that fails each handshake.
 *
 * @module
 */

import type { FlagSpec, FlagValues } from "./cli.ts";
import type { Logger } from "./log.ts";
import { busSpeaksTls, parseBusAddress } from "./bus_address.ts";

/** PEM contents of a certificate chain (leaf first) and its private key: what a TLS server presents. */
export interface CertifiedKey {
  /** The certificate chain, PEM. */
  cert: string;
  /** The private key of its first certificate, PEM. */
  key: string;
}

/** A {@linkcode CertifiedKey} as read from its files, with what the logs say of it. */
export interface ServedCertificate extends CertifiedKey {
  /** The leaf certificate's subject, e.g. `CN=push.example.com`. */
  subject: string;
  /** When the leaf certificate expires. */
  notAfter: Date;
  /** When the leaf certificate becomes valid. */
  notBefore: Date;
}

/** The paths of a served certificate and its key. */
export interface CertFiles {
  /** PEM certificate chain, leaf first (`--cert`). */
  cert: string;
  /** PEM private key (`--key`). */
  key: string;
}

/**
 * TLS to the bus, PEM contents: what `OpenBusOptions.tls` takes. `caCerts`
 * verify the bus server; `cert` and `key`, given together, are presented to
 * it as a client certificate.
 */
export interface BusTls {
  /** CA certificates that verify the bus server, one PEM certificate each. */
  caCerts?: string[];
  /** Client certificate chain, PEM. */
  cert?: string;
  /** Its private key, PEM. */
  key?: string;
}

/** `--cert` and `--key`: serve TLS. */
export const SERVE_TLS_FLAGS: Record<string, FlagSpec> = {
  cert: {
    type: "string",
    arg: "FILE",
    help: "PEM certificate chain to serve TLS with, with --key; reloaded on SIGHUP (README: TLS) (default: plain text)",
  },
  key: { type: "string", arg: "FILE", help: "PEM private key of --cert" },
};

/** `--bus-ca` (alias `--hub-ca`), `--bus-cert` and `--bus-key`: TLS to the bus. */
export const BUS_TLS_FLAGS: Record<string, FlagSpec> = {
  "bus-ca": {
    type: "string",
    arg: "FILE",
    help:
      "PEM CA certificate(s) that verify the bus server: TLS to the bus, whatever its scheme (default: plain text; the system's CAs on tls:// and rediss://)",
  },
  "hub-ca": { type: "string", arg: "FILE", help: "the same as --bus-ca" },
  "bus-cert": { type: "string", arg: "FILE", help: "PEM client certificate presented to the bus, with --bus-key" },
  "bus-key": { type: "string", arg: "FILE", help: "PEM private key of --bus-cert" },
};

/**
 * Reads `--cert` and `--key`: both, or neither (undefined).
 *
 * @throws {TypeError} when only one of them is given.
 */
export function certFilesFlag(values: FlagValues): CertFiles | undefined {
  const cert = stringValue(values, "cert");
  const key = stringValue(values, "key");
  if (cert === undefined && key === undefined) return undefined;
  if (cert === undefined) throw new TypeError("Invalid --key: give --cert with it");
  if (key === undefined) throw new TypeError("Invalid --cert: give --key with it");
  return { cert, key };
}

/**
 * Reads and checks a served certificate and its key: the certificate file
 * holds PEM certificates, the key file a PEM private key, and the key is the
 * first certificate's. `flags` names the flags in errors.
 *
 * @throws {TypeError} one line naming the flag and file: `Cannot read --cert
 * certs/push.pem: ...`, `Invalid --key certs/push.key: ...`.
 *
 * @example
 * ```ts
 * import { readServedCertificate } from "./tls.ts";
 *
 * const served = await readServedCertificate({ cert: "certs/push.pem", key: "certs/push.key" });
 * Deno.serve({ port: 443, cert: served.cert, key: served.key }, () => new Response("hi"));
 * ```
 */
export async function readServedCertificate(
  files: CertFiles,
  flags: CertFiles = { cert: "--cert", key: "--key" },
): Promise<ServedCertificate> {
  // Only the blocks each needs: one file may hold the certificates and the key (`cat cert.pem key.pem`).
  const cert = pemBlocks(await readPem(flags.cert, files.cert), "CERTIFICATE").join("");
  const key = privateKeyBlock(flags.key, files.key, await readPem(flags.key, files.key));
  const x509 = await loadX509();
  const leaf = parseCertificates(x509, flags.cert, files.cert, cert)[0]!;
  const privateKey = parseKey(x509, flags.key, files.key, key);
  checkServable(privateKey, flags.key, files.key);
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new TypeError(
      `Invalid ${flags.key} ${files.key}: it is not the key of the first certificate in ${files.cert}`,
    );
  }
  return {
    cert,
    key,
    subject: leaf.subject.replaceAll("\n", ", "),
    notAfter: leaf.validToDate,
    notBefore: leaf.validFromDate,
  };
}

/**
 * Reads `--bus-ca` (or `--hub-ca`), `--bus-cert` and `--bus-key` into the
 * bus's TLS settings; undefined when none is given (plain text).
 *
 * @throws {TypeError} one line naming the flag and file when one cannot be
 * read or is not what it should be, when `--bus-cert` and `--bus-key` do
 * not come together or come without `--bus-ca`, or when both `--bus-ca` and
 * `--hub-ca` are given.
 */
export async function busTlsFlag(values: FlagValues): Promise<BusTls | undefined> {
  const busCa = stringValue(values, "bus-ca");
  const hubCa = stringValue(values, "hub-ca");
  if (busCa !== undefined && hubCa !== undefined) {
    throw new TypeError("Invalid --hub-ca: it is another name for --bus-ca; give one of them");
  }
  const caFlag = busCa !== undefined ? "--bus-ca" : "--hub-ca";
  const caFile = busCa ?? hubCa;
  const certFile = stringValue(values, "bus-cert");
  const keyFile = stringValue(values, "bus-key");
  if (certFile !== undefined && keyFile === undefined) {
    throw new TypeError("Invalid --bus-cert: give --bus-key with it");
  }
  if (keyFile !== undefined && certFile === undefined) {
    throw new TypeError("Invalid --bus-key: give --bus-cert with it");
  }
  if (caFile === undefined && certFile === undefined) return undefined;
  if (caFile === undefined) {
    throw new TypeError(
      "Invalid --bus-cert: give --bus-ca with it (TLS to the bus is on when a CA verifies the server)",
    );
  }
  const pem = await readCaCertificates(caFlag, caFile);
  const tls: BusTls = { caCerts: pemBlocks(pem, "CERTIFICATE") };
  if (certFile !== undefined && keyFile !== undefined) {
    const served = await readServedCertificate({ cert: certFile, key: keyFile }, {
      cert: "--bus-cert",
      key: "--bus-key",
    });
    tls.cert = served.cert;
    tls.key = served.key;
  }
  return tls;
}

/**
 * What the `listening` line says of TLS to the bus at `address` with `tls`
 * (from {@linkcode busTlsFlag}): `on, client certificate`, `on`, or `off`.
 *
 * @example
 * ```ts
 * import { busTlsField } from "./tls.ts";
 *
 * busTlsField("rediss://10.0.0.1:6379", undefined); // "on": the system's CAs verify it
 * busTlsField("nats://10.0.0.1:4222", undefined); // "off"
 * ```
 */
export function busTlsField(address: string, tls: BusTls | undefined): string {
  if (!busSpeaksTls(parseBusAddress(address), tls)) return "off";
  return tls?.cert === undefined ? "on" : "on, client certificate";
}

/**
 * Reads a file of CA certificates (`--bus-ca`, `--client-ca`) and checks
 * that it holds at least one PEM certificate and that each parses; `flag`
 * names the flag in errors. Resolves with the file's PEM text.
 *
 * @throws {TypeError} one line naming the flag and file.
 *
 * @example
 * ```ts
 * import { readCaCertificates } from "./tls.ts";
 *
 * const clientCa = await readCaCertificates("--client-ca", "certs/ca.pem");
 * ```
 */
export async function readCaCertificates(flag: string, path: string): Promise<string> {
  const pem = await readPem(flag, path);
  parseCertificates(await loadX509(), flag, path, pem);
  return pem;
}

/**
 * Listens for SIGHUP and calls `reload` on each, one at a time; a signal
 * that comes while a reload runs is folded into one more reload after it.
 * Returns a function that stops listening.
 *
 * SIGHUP's default action ends the process: start listening before the
 * service says it is up.
 */
export function onReloadSignal(reload: () => Promise<void>, logger: Logger): () => void {
  let running: Promise<void> | null = null;
  let again = false;
  const run = async (): Promise<void> => {
    do {
      again = false;
      try {
        await reload();
      } catch (error) {
        logger.error("reload failed", { error: (error as Error).message });
      }
    } while (again);
    running = null;
  };
  const handler = () => {
    if (running) again = true;
    else running = run();
  };
  Deno.addSignalListener("SIGHUP", handler);
  return () => Deno.removeSignalListener("SIGHUP", handler);
}

/**
 * The log fields of a served certificate: its subject and expiry, and
 * `expired: true` once past it or `notYetValid: true` before its start
 * (clients will refuse it).
 */
export function certificateFields(served: ServedCertificate): Record<string, string | boolean> {
  const fields: Record<string, string | boolean> = {
    subject: served.subject,
    notAfter: served.notAfter.toISOString(),
  };
  if (served.notAfter.getTime() < Date.now()) fields.expired = true;
  if (served.notBefore.getTime() > Date.now()) fields.notYetValid = true;
  return fields;
}

/** The PEM blocks of `type` in `pem`, each as its own PEM string. */
export function pemBlocks(pem: string, type: string): string[] {
  const pattern = new RegExp(`-----BEGIN ${type}-----[\\s\\S]*?-----END ${type}-----`, "g");
  return [...pem.matchAll(pattern)].map((match) => `${match[0]}\n`);
}

async function readPem(flag: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    const hint = error instanceof Deno.errors.NotCapable
      ? ": the service may read only what its task grants (README: TLS)"
      : "";
    throw new TypeError(`Cannot read ${flag} ${path}: ${(error as Error).message}${hint}`);
  }
}

type NodeCrypto = typeof import("node:crypto");

/**
 * node:crypto, for parsing certificates and keys, imported only when a
 * service is given some: it costs a process about 6 MiB at idle (issue 19).
 */
function loadX509(): Promise<NodeCrypto> {
  return import("node:crypto");
}

function parseCertificates(
  x509: NodeCrypto,
  flag: string,
  path: string,
  pem: string,
): InstanceType<NodeCrypto["X509Certificate"]>[] {
  const blocks = pemBlocks(pem, "CERTIFICATE");
  if (blocks.length === 0) throw new TypeError(`Invalid ${flag} ${path}: no PEM certificate (BEGIN CERTIFICATE) in it`);
  return blocks.map((block, i) => {
    try {
      return new x509.X509Certificate(block);
    } catch (error) {
      throw new TypeError(`Invalid ${flag} ${path}: certificate ${i + 1} does not parse: ${(error as Error).message}`);
    }
  });
}

function parseKey(
  x509: NodeCrypto,
  flag: string,
  path: string,
  pem: string,
): ReturnType<NodeCrypto["createPrivateKey"]> {
  try {
    return x509.createPrivateKey(pem);
  } catch (error) {
    throw new TypeError(`Invalid ${flag} ${path}: the private key does not parse: ${(error as Error).message}`);
  }
}

/** The first private key block of `pem` (PKCS#8, or `RSA`/`EC` as OpenSSL writes them), whatever else the file holds. */
function privateKeyBlock(flag: string, path: string, pem: string): string {
  const block = /-----BEGIN ([A-Z ]*)PRIVATE KEY-----[\s\S]*?-----END \1PRIVATE KEY-----/.exec(pem);
  if (!block) throw new TypeError(`Invalid ${flag} ${path}: no PEM private key (BEGIN PRIVATE KEY) in it`);
  return `${block[0]}\n`;
}

/** The curves of ECDSA keys that Deno's TLS (rustls) signs with. */
const SERVABLE_CURVES = new Set(["prime256v1", "secp384r1", "secp521r1"]);

/**
 * Refuses a key that parses but that Deno's TLS cannot sign a handshake
 * with (Ed448, RSA-PSS, DSA, ECDSA on another curve such as secp256k1):
 * `Deno.listenTls` fails at start on some, and `node:tls` (the hub's
 * `--client-ca`) listens and then fails every handshake.
 */
function checkServable(key: ReturnType<NodeCrypto["createPrivateKey"]>, flag: string, path: string): void {
  const type = key.asymmetricKeyType;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (type === "rsa" || type === "ed25519" || (type === "ec" && curve !== undefined && SERVABLE_CURVES.has(curve))) {
    return;
  }
  throw new TypeError(
    `Invalid ${flag} ${path}: TLS here cannot sign with this key (${type}${curve ? ` ${curve}` : ""}); ` +
      "use RSA, ECDSA on P-256, P-384 or P-521, or Ed25519",
  );
}

function stringValue(values: FlagValues, name: string): string | undefined {
  const raw = values[name];
  return typeof raw === "string" ? raw : undefined;
}
