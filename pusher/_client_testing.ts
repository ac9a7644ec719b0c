/**
 * What an app does with `client.js` in the property tests: subscribe to a
 * channel (unless it already asked for it; one the backend put it in becomes
 * its own), or unsubscribe from it.
 *
 * @module
 */

import type { PushClient } from "./client.js";

/** One app action on a channel. */
export interface AppStep {
  app: "subscribe" | "unsubscribe";
  channel: string;
}

/** Does `step` with `client`, as an app would. */
export function applyAppStep(client: PushClient, step: AppStep): void {
  const mine = client.subscription(step.channel);
  if (step.app === "subscribe" && !(mine && !mine.serverSide)) client.subscribe(step.channel);
  if (step.app === "unsubscribe") mine?.unsubscribe();
}
