/**
 * The demo page a pusher serves on `GET /`: it connects back through the
 * client library (`/client.js`), shows the greeting and every message,
 * subscribes to channels and lists them, asks a presence channel who is in
 * it, and calls the publisher's broadcast, targeted and channel URLs.
 *
 * @module
 */

/** Options for {@linkcode demoPage}. */
export interface DemoPageOptions {
  /** Publisher base URL; null means this page's host on port 4237. */
  publisherUrl: string | null;
}

/** Renders the demo page. */
export function demoPage(options: DemoPageOptions): string {
  const publisher = JSON.stringify(options.publisherUrl).replaceAll("<", "\\u003c");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Push demo</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
  #status { font-weight: 600; }
  #log { border: 1px solid #ccc; border-radius: 6px; padding: .5rem; min-height: 10rem; white-space: pre-wrap; font-family: ui-monospace, monospace; }
  #log div { border-bottom: 1px solid #eee; padding: .15rem 0; }
  form { display: flex; gap: .5rem; margin: 1rem 0; }
  input { flex: 1; padding: .4rem; }
  code { background: #f4f4f4; padding: 0 .2rem; }
</style>
</head>
<body>
<h1>Push demo</h1>
<p>Status: <span id="status">connecting…</span></p>
<p>Address: <code id="address">-</code></p>
<form id="form">
  <input id="content" value="hello" aria-label="content">
  <button type="button" id="broadcast">Broadcast to everyone</button>
  <button type="button" id="direct" disabled>Send to this connection</button>
</form>
<form id="channel-form">
  <input id="channel" value="news" aria-label="channel">
  <button type="button" id="subscribe">Subscribe</button>
  <button type="button" id="unsubscribe">Unsubscribe</button>
  <button type="button" id="publish-channel">Publish to channel</button>
  <button type="button" id="presence">Who is here</button>
</form>
<p>Channels: <span id="channels">none</span></p>
<p id="answer"></p>
<div id="log" aria-live="polite"></div>
<script type="module">
// The page speaks through the client library this pusher serves (/client.js).
// A module script keeps its names out of the global scope, so the original's
// console snippet (ws = new WebSocket(...)) still works on this page; the
// page's own client is \`pushClient\` in the console.
import { PushClient } from "/client.js";

const publisher = ${publisher} ?? location.protocol + "//" + location.hostname + ":4237";
const $ = (id) => document.getElementById(id);

function show(text) {
  const line = document.createElement("div");
  line.textContent = text;
  $("log").append(line);
}

const client = new PushClient(location.origin.replace(/^http/, "ws") + "/");
globalThis.pushClient = client;

client.on("state", ({ state }) => {
  $("status").textContent = state === "connecting" ? "connecting…" : state;
  $("direct").disabled = state !== "connected";
});
client.on("connected", ({ workerId, connectionId, greeting }) => {
  $("address").textContent = "to_worker_id=" + workerId + "&to_connection_id=" + connectionId;
  show(greeting);
});
client.on("disconnected", ({ code, reason, reconnecting, delay }) => {
  show("closed (" + code + (reason ? " " + reason : "") + ")" + (reconnecting ? ", again in " + delay + " ms" : ""));
});
client.on("message", ({ data }) => show(data));
client.on("publication", ({ channel, data }) => show("[" + channel + "] " + (typeof data === "string" ? data : JSON.stringify(data))));
client.on("error", ({ error, channel }) => show("error" + (channel ? " on " + channel : "") + ": " + error.message));
client.on("join", ({ channel, info }) => show("[" + channel + "] joined: " + JSON.stringify(info)));
client.on("leave", ({ channel, info }) => show("[" + channel + "] left: " + JSON.stringify(info)));
client.on("subscribed", listChannels);
client.on("unsubscribed", listChannels);
client.on("state", listChannels);

function listChannels() {
  const names = [...client.subscriptions.values()].map((sub) =>
    sub.channel + (sub.state === "subscribed" ? "" : " (" + sub.state + ")") + (sub.serverSide ? " [server]" : "")
  );
  $("channels").textContent = names.length ? names.join(", ") : "none";
}

async function publish(params) {
  const url = publisher + "/?" + new URLSearchParams(params);
  try {
    const res = await fetch(url);
    $("answer").textContent = "Publisher: " + res.status + " " + (await res.text()).trim();
  } catch (error) {
    $("answer").textContent = "Publisher unreachable at " + publisher + ": " + error.message;
  }
}

$("broadcast").addEventListener("click", () => publish({ content: $("content").value }));
$("direct").addEventListener("click", () => {
  const { workerId, connectionId } = client.address;
  publish({ to_worker_id: workerId, to_connection_id: connectionId, content: $("content").value });
});
$("subscribe").addEventListener("click", () => {
  const channel = $("channel").value;
  try {
    const sub = client.subscribe(channel);
    sub.on("state", listChannels);
    sub.ready().then(() => { $("answer").textContent = "Subscribed to " + channel; }, () => {});
  } catch (error) {
    $("answer").textContent = error.message;
  }
  listChannels();
});
$("unsubscribe").addEventListener("click", () => {
  const sub = client.subscription($("channel").value);
  if (sub) sub.unsubscribe();
  else $("answer").textContent = "Not subscribed to " + $("channel").value;
  listChannels();
});
$("publish-channel").addEventListener("click", () => publish({ channel: $("channel").value, content: $("content").value }));
// A presence channel's members may ask who is in it (the pusher's --presence-channels).
$("presence").addEventListener("click", async () => {
  const channel = $("channel").value;
  const sub = client.subscription(channel);
  if (!sub) return void ($("answer").textContent = "Subscribe to " + channel + " first");
  try {
    const { num_clients, num_users, users } = await sub.presence();
    $("answer").textContent = channel + ": connections " + num_clients + ", users " + num_users +
      (users.length ? " (" + users.join(", ") + ")" : "");
  } catch (error) {
    $("answer").textContent = "Presence of " + channel + ": " + error.message;
  }
});

client.connect();
</script>
</body>
</html>
`;
}
