/**
 * The demo page a pusher serves on `GET /`: it connects back over WebSocket,
 * shows the greeting and every message, and calls the publisher's broadcast
 * and targeted URLs for this connection.
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
<p id="answer"></p>
<div id="log" aria-live="polite"></div>
<script type="module">
// A module script keeps its names out of the global scope, so the original's
// console snippet (ws = new WebSocket(...)) still works on this page.
const publisher = ${publisher} ?? location.protocol + "//" + location.hostname + ":4237";
const $ = (id) => document.getElementById(id);
let address = null;

function show(text) {
  const line = document.createElement("div");
  line.textContent = text;
  $("log").append(line);
}

const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/");
ws.onopen = () => { $("status").textContent = "connected"; };
ws.onclose = (e) => { $("status").textContent = "closed (" + e.code + (e.reason ? " " + e.reason : "") + ")"; };
ws.onmessage = (e) => {
  const greeting = /^workerID:(\\S+) connectionID:(\\S+) connected/.exec(e.data);
  if (greeting && !address) {
    address = { worker: greeting[1], connection: greeting[2] };
    $("address").textContent = "to_worker_id=" + address.worker + "&to_connection_id=" + address.connection;
    $("direct").disabled = false;
  }
  show(e.data);
};

async function publish(params) {
  const url = publisher + "/?" + new URLSearchParams(params);
  try {
    const res = await fetch(url);
    $("answer").textContent = "Publisher: " + res.status + " " + (await res.text()).trim();
  } catch (error) {
    $("answer").textContent = "Publisher unreachable at " + publisher + ": " + error.message;
  }
}

$("broadcast").onclick = () => publish({ content: $("content").value });
$("direct").onclick = () => publish({
  to_worker_id: address.worker, to_connection_id: address.connection, content: $("content").value,
});
</script>
</body>
</html>
`;
}
