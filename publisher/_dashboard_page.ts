/**
 * The dashboard's two HTML pages: the login form, and the dashboard itself,
 * whose numbers and charts `dashboard/app.js` fills in. No inline script or
 * style: the Content-Security-Policy allows only the publisher's own files.
 *
 * @module
 */

/** Escapes text for HTML element content and double-quoted attributes. */
function escape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");
}

function head(title: string, extra = ""): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
${extra}<title>${escape(title)}</title>
<link rel="icon" href="/dashboard/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/dashboard/app.css">
</head>
`;
}

/** The login form; `error` says why the last attempt failed. */
export function loginPage(error?: string): string {
  const message = error === undefined ? "" : `<p class="error" role="alert" id="login-error">${escape(error)}</p>\n`;
  return `${head("Log in · Push dashboard")}<body class="login">
<main class="login-box">
<h1>Push dashboard</h1>
<p class="muted">This publisher has an API key. Enter it to open the dashboard; it is checked once and not kept in your browser.</p>
${message}<form method="post" action="/dashboard/login">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form>
</main>
</body>
</html>
`;
}

/** What the dashboard page needs to know of its session. */
export interface PageSession {
  /** The session's CSRF token; undefined when the publisher has no key (no session, no logout). */
  csrf?: string;
}

const CARDS: readonly [id: string, label: string][] = [
  ["hub", "Hub"],
  ["workers", "Pusher workers"],
  ["connections", "Connections"],
  ["users", "Users"],
  ["channels", "Channels"],
  ["publishes", "Publishes / s"],
  ["deliveries", "Deliveries / s"],
  ["latency", "Publish latency"],
  ["slow", "Slow-consumer closes"],
  ["errors", "Errors / s"],
];

/** Each chart: its id, title, and the legend of its series (none for one series). */
const CHARTS: readonly [id: string, label: string, legend: readonly string[]][] = [
  ["publishes", "Publishes / s", []],
  ["deliveries", "Deliveries to sockets / s", []],
  ["connections", "Connections", []],
  ["errors", "Problems / s", ["5xx", "4xx", "slow closes"]],
];

/** The dashboard. */
export function dashboardPage(session: PageSession): string {
  const csrf = session.csrf === undefined ? "" : `<meta name="csrf-token" content="${escape(session.csrf)}">\n`;
  const logout = session.csrf === undefined ? "" : `<form method="post" action="/dashboard/logout" class="logout">
<input type="hidden" name="csrf" value="${escape(session.csrf)}">
<button type="submit" class="quiet">Log out</button>
</form>`;
  const cards = CARDS.map(([id, label]) =>
    `<div class="card" id="card-${id}"><div class="label">${label}</div>` +
    `<div class="value" id="${id}" data-value="">–</div><div class="sub" id="${id}-sub">&nbsp;</div></div>`
  ).join("\n");
  const charts = CHARTS.map(([id, label, legend]) => {
    const keys = legend.map((name, i) => `<span class="key key-${i + 1}">${name}</span>`).join("");
    return `<figure class="chart"><figcaption><span>${label}</span><span class="now" id="chart-${id}-now"></span>` +
      `</figcaption>${keys ? `<div class="legend">${keys}</div>` : ""}` +
      `<canvas id="chart-${id}" height="160"></canvas></figure>`;
  }).join("\n");
  return `${head("Push dashboard", csrf)}<body>
<header class="bar">
<h1>Push dashboard</h1>
<span id="stream" class="pill">connecting</span>
<span id="updated" class="muted"></span>
${logout}
</header>
<main>
<section class="cards" aria-label="The cluster at a glance">
${cards}
</section>
<section aria-labelledby="charts-title">
<div class="charts-head">
<h2 id="charts-title">Last <span id="window-label">5 minutes</span></h2>
<div class="toggle" role="group" aria-label="Time window">
<button type="button" id="window-60" data-window="60" aria-pressed="false">1 min</button>
<button type="button" id="window-300" data-window="300" aria-pressed="true">5 min</button>
</div>
</div>
<div class="charts">
${charts}
</div>
</section>
<section class="panel" aria-labelledby="workers-title">
<h2 id="workers-title">Pusher workers</h2>
<div class="table-wrap">
<table id="workers-table">
<thead><tr><th>Worker id</th><th class="num">Connections</th><th class="num">Users</th><th class="num">Channels</th></tr></thead>
<tbody><tr><td colspan="4" class="muted">waiting for the first answer</td></tr></tbody>
</table>
</div>
<p class="muted small" id="info-note"></p>
</section>
<section class="panel" aria-labelledby="actions-title">
<h2 id="actions-title">Actions</h2>
<div class="actions">
<form id="publish-form" class="action">
<h3>Publish</h3>
<label for="publish-target">To</label>
<select id="publish-target" name="target">
<option value="everyone">everyone</option>
<option value="channel">a channel</option>
<option value="user">a user</option>
<option value="connection">a connection</option>
</select>
<div class="field" data-for="channel"><label for="publish-channel">Channel</label><input id="publish-channel" name="channel" autocomplete="off"></div>
<div class="field" data-for="user"><label for="publish-user">User</label><input id="publish-user" name="user" autocomplete="off"></div>
<div class="field" data-for="connection"><label for="publish-worker">Worker id</label><input id="publish-worker" name="worker_id" autocomplete="off" spellcheck="false">
<label for="publish-connection">Connection id</label><input id="publish-connection" name="connection_id" inputmode="numeric" autocomplete="off"></div>
<label for="publish-data">Data</label>
<textarea id="publish-data" name="data" rows="3" spellcheck="false">hello</textarea>
<label class="check"><input type="checkbox" id="publish-json" name="json"> send as JSON</label>
<button type="submit" id="publish-send">Publish</button>
</form>
<form id="presence-form" class="action">
<h3>Presence</h3>
<label for="presence-channel">Channel</label>
<input id="presence-channel" name="channel" required autocomplete="off">
<button type="submit" id="presence-send">Ask</button>
</form>
<form id="disconnect-form" class="action">
<h3>Disconnect a user</h3>
<label for="disconnect-user">User</label>
<input id="disconnect-user" name="user" required autocomplete="off">
<label for="disconnect-reason">Reason</label>
<input id="disconnect-reason" name="reason" autocomplete="off" placeholder="disconnected by the server">
<button type="submit" id="disconnect-send" class="danger">Disconnect</button>
</form>
</div>
<div class="reply" aria-live="polite">
<div class="reply-head"><h3>Reply</h3><span id="reply-status" class="pill">none yet</span></div>
<pre id="reply"></pre>
</div>
</section>
</main>
<script type="module" src="/dashboard/app.js"></script>
</body>
</html>
`;
}
