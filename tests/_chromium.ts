/**
 * Launches Debian's Chromium (`/usr/bin/chromium`, which
 * `tests/ensure_packages.sh` installs) headless under playwright-core, for
 * the browser tests and the WebSocket conformance tests.
 *
 * @module
 */

import { type Browser, chromium } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";

/** Options for {@linkcode launchChromium}. */
export interface ChromiumOptions {
  /**
   * base64 SHA-256 hashes of public keys (SPKI) whose certificates Chromium
   * accepts though no CA it knows signed them: a test CA's server
   * certificates (`--ignore-certificate-errors-spki-list`). @default {none}
   */
  trustedSpki?: string[];
}

/**
 * Launches Chromium headless, with `--no-sandbox` (it refuses to start
 * sandboxed as root) and without the background traffic of a first run.
 * Close the browser when done.
 *
 * @throws {Error} when Chromium is not installed at `/usr/bin/chromium`.
 *
 * @example
 * ```ts
 * const browser = await launchChromium();
 * try {
 *   const page = await browser.newPage();
 * } finally {
 *   await browser.close();
 * }
 * ```
 */
export async function launchChromium(options: ChromiumOptions = {}): Promise<Browser> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(`Chromium not found at ${CHROMIUM}: install it with apt-get install -y chromium`);
  }
  return await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      ...(options.trustedSpki ? [`--ignore-certificate-errors-spki-list=${options.trustedSpki.join(",")}`] : []),
    ],
  });
}
