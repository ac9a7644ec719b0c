// The publisher's dashboard page (publisher/dashboard.ts): served as /dashboard/app.js, no build step, no
// library. Reads one sample a second from /dashboard/events, draws the cards, the workers table and the
// charts (plain canvas), and sends the actions to /dashboard/api/<method> with the session's CSRF token.

/** The most history the page keeps and the charts show, in milliseconds. */
const HISTORY_MS = 5 * 60 * 1000;

/** How much history the charts show now, in milliseconds: 1 or 5 minutes. */
let windowMs = HISTORY_MS;

const csrf = document.querySelector('meta[name="csrf-token"]')?.getAttribute("content") ?? undefined;
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** Samples, oldest first, as the server sent them. */
let samples = [];

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

/** A rate for a card: integers from 100 up, one decimal below. */
function rate(value) {
  if (value === null || value === undefined) return "–";
  return value >= 100 ? integer.format(value) : decimal.format(value);
}

function setCard(id, shown, raw, sub, tone) {
  const value = $(id);
  value.textContent = shown;
  value.dataset.value = raw === null || raw === undefined ? "" : String(raw);
  value.className = `value${tone ? ` ${tone}` : ""}`;
  if (sub !== undefined) $(`${id}-sub`).textContent = sub;
}

function render(sample) {
  const { info, totals, rates } = sample;
  setCard(
    "hub",
    sample.hub ? "up" : "down",
    sample.hub ? 1 : 0,
    `${totals.hubReconnects} reconnects`,
    sample.hub ? "ok" : "bad",
  );
  if (info) {
    const partial = info.partial ? ` · ${info.workers_answered}/${info.workers_expected} answered` : "";
    setCard(
      "workers",
      integer.format(info.workers.length),
      info.workers.length,
      `answering${partial}`,
      info.partial ? "warn" : "",
    );
    setCard("connections", integer.format(info.connections), info.connections, "open WebSockets");
    setCard("users", integer.format(info.users), info.users, "summed over workers");
    setCard("channels", integer.format(info.channels), info.channels, "summed over workers");
  } else {
    for (const id of ["workers", "connections", "users", "channels"]) setCard(id, "?", null, "info failed", "bad");
  }
  setCard("publishes", rate(rates.publishes), totals.publishes, `${integer.format(totals.publishes)} total`);
  const cluster = sample.cluster;
  setCard(
    "deliveries",
    rate(rates.socketDeliveries),
    cluster?.deliveries,
    cluster ? `${integer.format(cluster.deliveries)} to sockets` : "workers send no counters",
  );
  const latency = rates.publishMs === null ? "–" : `${decimal.format(rates.publishMs)} ms`;
  setCard("latency", latency, rates.publishMs, "mean, last second");
  setCard(
    "slow",
    cluster ? integer.format(cluster.slowCloses) : "–",
    cluster?.slowCloses,
    rates.slowCloses ? `${rate(rates.slowCloses)} / s now` : "3008 closes, live workers",
    rates.slowCloses ? "warn" : "",
  );
  setCard(
    "errors",
    rate(rates.errors),
    totals.errors,
    `${integer.format(totals.errors)} 5xx · ${integer.format(totals.rejected)} 4xx in all`,
    rates.errors ? "bad" : "",
  );
  renderWorkers(info, sample.infoError);
  $("updated").textContent = `updated ${new Date(sample.t).toLocaleTimeString()}`;
  document.body.dataset.t = String(sample.t);
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderWorkers(info, error) {
  const body = /** @type {HTMLTableElement} */ ($("workers-table")).tBodies[0];
  const rows = [];
  if (!info) {
    const tr = document.createElement("tr");
    tr.append(cell(`info failed: ${error ?? "no answer"}`, "muted"));
    tr.firstElementChild.setAttribute("colspan", "4");
    rows.push(tr);
  } else if (info.workers.length === 0) {
    const tr = document.createElement("tr");
    tr.append(cell("no pusher worker answered", "muted"));
    tr.firstElementChild.setAttribute("colspan", "4");
    rows.push(tr);
  } else {
    for (const worker of info.workers) {
      const tr = document.createElement("tr");
      tr.dataset.worker = worker.worker_id;
      tr.append(
        cell(worker.worker_id, "id"),
        cell(integer.format(worker.connections), "num"),
        cell(integer.format(worker.users), "num"),
        cell(integer.format(worker.channels), "num"),
      );
      rows.push(tr);
    }
  }
  body.replaceChildren(...rows);
  $("info-note").textContent = info
    ? "Users and channels are summed over workers: one on two workers counts twice."
    : "";
}

// Charts: plain canvas, redrawn at each sample and on resize.

const CHARTS = [
  { id: "publishes", series: [(s) => s.rates.publishes], colors: ["--series-1"], unit: "/s" },
  { id: "deliveries", series: [(s) => s.rates.socketDeliveries], colors: ["--series-1"], unit: "/s" },
  { id: "connections", series: [(s) => s.info?.connections ?? null], colors: ["--series-1"], unit: "" },
  {
    id: "errors",
    series: [(s) => s.rates.errors, (s) => s.rates.rejected, (s) => s.rates.slowCloses],
    colors: ["--series-bad", "--series-2", "--series-3"],
    unit: "/s",
  },
];

function color(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** A round upper bound for the y axis: 1, 2 or 5 times a power of ten. */
function niceMax(value) {
  if (value <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function drawChart(chart) {
  const canvas = /** @type {HTMLCanvasElement} */ ($(`chart-${chart.id}`));
  const ratio = globalThis.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (width === 0 || height === 0) return;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const end = samples.length ? samples[samples.length - 1].t : Date.now();
  const start = end - windowMs;
  const shown = samples.filter((s) => s.t >= start);
  let max = 0;
  for (const s of shown) for (const read of chart.series) max = Math.max(max, read(s) ?? 0);
  const top = niceMax(max);

  const font = "11px system-ui, sans-serif";
  ctx.font = font;
  const labelWidth = Math.max(...[0, 0.5, 1].map((f) => ctx.measureText(decimal.format(top * f)).width)) + 8;
  const left = Math.ceil(labelWidth);
  const bottom = height - 18;
  const plotWidth = width - left - 4;
  const x = (t) => left + ((t - start) / windowMs) * plotWidth;
  const y = (v) => 6 + (1 - v / top) * (bottom - 6);

  // Grid and axis labels.
  ctx.strokeStyle = color("--grid");
  ctx.fillStyle = color("--muted");
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const f of [0, 0.5, 1]) {
    const gy = Math.round(y(top * f)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, gy);
    ctx.lineTo(width - 4, gy);
    ctx.stroke();
    ctx.fillText(decimal.format(top * f), left - 6, gy);
  }
  ctx.textBaseline = "alphabetic";
  // Five steps back from now: minutes over a 5-minute window, seconds over a 1-minute one.
  const step = windowMs / 5;
  for (let i = 5; i >= 0; i--) {
    const ago = i * step;
    const label = i === 0 ? "now" : windowMs > 60_000 ? `-${ago / 60_000}m` : `-${ago / 1000}s`;
    ctx.textAlign = i === 5 ? "left" : i === 0 ? "right" : "center";
    ctx.fillText(label, i === 5 ? left : i === 0 ? width - 4 : x(end - ago), height - 4);
  }

  // One line per series; a null (a gap in the samples) breaks it.
  // One line per series, the first drawn last (on top); a null or a gap in the samples breaks it. A single
  // series gets a faint area under its line.
  for (let i = chart.series.length - 1; i >= 0; i--) {
    const read = chart.series[i];
    const segments = [];
    let segment = [];
    let previous = null;
    for (const s of shown) {
      const value = read(s);
      const gap = previous !== null && s.t - previous > 3000;
      if ((value === null || value === undefined || gap) && segment.length) {
        segments.push(segment);
        segment = [];
      }
      if (value !== null && value !== undefined) segment.push([x(s.t), y(value)]);
      previous = s.t;
    }
    if (segment.length) segments.push(segment);
    const stroke = color(chart.colors[i]);
    for (const points of segments) {
      ctx.beginPath();
      points.forEach(([px, py], j) => j === 0 ? ctx.moveTo(px, py) : ctx.lineTo(px, py));
      ctx.strokeStyle = stroke;
      ctx.lineWidth = 1.5;
      ctx.lineJoin = "round";
      ctx.stroke();
      if (chart.series.length === 1 && points.length > 1) {
        ctx.lineTo(points[points.length - 1][0], bottom);
        ctx.lineTo(points[0][0], bottom);
        ctx.closePath();
        ctx.globalAlpha = 0.1;
        ctx.fillStyle = stroke;
        ctx.fill();
        ctx.globalAlpha = 1;
      }
    }
  }

  const last = shown[shown.length - 1];
  const now = last ? chart.series.map((read) => read(last)) : [];
  $(`chart-${chart.id}-now`).textContent = now.length ? now.map((v) => `${rate(v)}${chart.unit}`).join(" · ") : "";
}

function drawCharts() {
  for (const chart of CHARTS) drawChart(chart);
}

for (const button of document.querySelectorAll("[data-window]")) {
  button.addEventListener("click", () => {
    windowMs = Number(button.getAttribute("data-window")) * 1000;
    for (const other of document.querySelectorAll("[data-window]")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
    $("window-label").textContent = windowMs > 60_000 ? "5 minutes" : "minute";
    drawCharts();
  });
}

let resizing = 0;
globalThis.addEventListener("resize", () => {
  cancelAnimationFrame(resizing);
  resizing = requestAnimationFrame(drawCharts);
});

// The stream.

function setStream(text, tone) {
  const pill = $("stream");
  pill.textContent = text;
  pill.className = `pill${tone ? ` ${tone}` : ""}`;
}

function keep(sample) {
  samples.push(sample);
  const oldest = sample.t - HISTORY_MS - 5000;
  while (samples.length && samples[0].t < oldest) samples.shift();
}

const events = new EventSource("/dashboard/events");
/**
 * The pill says "reconnecting" only when the stream stays down: the server
 * ends each stream after a minute, and the next one opens within seconds.
 * When every place is taken the server says `full` and the browser asks
 * again after its `retry`; the pill says so until a sample comes.
 */
let reconnecting;
let waiting = false;
events.addEventListener("open", () => clearTimeout(reconnecting));
events.addEventListener("full", () => {
  waiting = true;
  setStream("waiting for a place", "bad");
});
events.addEventListener("history", (event) => {
  waiting = false;
  samples = [];
  for (const sample of JSON.parse(event.data)) keep(sample);
  if (samples.length) render(samples[samples.length - 1]);
  drawCharts();
  setStream("live", "ok");
});
events.addEventListener("snapshot", (event) => {
  waiting = false;
  const sample = JSON.parse(event.data);
  keep(sample);
  render(sample);
  drawCharts();
  setStream("live", "ok");
});
events.addEventListener("error", () => {
  // CLOSED: the server refused the stream (the session ended); otherwise the browser retries by itself.
  clearTimeout(reconnecting);
  if (events.readyState === EventSource.CLOSED) setStream("stopped: reload the page", "bad");
  else if (!waiting) reconnecting = setTimeout(() => setStream("reconnecting", "bad"), 5000);
});

// Actions, through the server API.

async function call(method, params, button) {
  const status = $("reply-status");
  const out = $("reply");
  button.disabled = true;
  status.textContent = `${method}…`;
  status.className = "pill";
  try {
    const headers = { "content-type": "application/json" };
    if (csrf !== undefined) headers["x-csrf-token"] = csrf;
    const response = await fetch(`/dashboard/api/${method}`, {
      method: "POST",
      headers,
      body: JSON.stringify(params),
      credentials: "same-origin",
    });
    const text = await response.text();
    let shown = text;
    try {
      shown = JSON.stringify(JSON.parse(text), null, 2);
    } catch { /* not JSON: shown as it came */ }
    status.textContent = `${method}: ${response.status}`;
    status.className = `pill ${response.ok ? "ok" : "bad"}`;
    out.textContent = shown;
    if (response.status === 401) setStream("logged out: reload the page", "bad");
  } catch (error) {
    status.textContent = `${method}: failed`;
    status.className = "pill bad";
    out.textContent = String(error);
  } finally {
    button.disabled = false;
  }
}

function showTargetFields() {
  const target = /** @type {HTMLSelectElement} */ ($("publish-target")).value;
  for (const field of document.querySelectorAll("#publish-form .field")) {
    /** @type {HTMLElement} */ (field).hidden = field.getAttribute("data-for") !== target;
  }
}
$("publish-target").addEventListener("change", showTargetFields);
showTargetFields();

function value(id) {
  return /** @type {HTMLInputElement} */ ($(id)).value.trim();
}

$("publish-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const raw = /** @type {HTMLTextAreaElement} */ ($("publish-data")).value;
  const out = $("reply");
  let data = raw;
  if (/** @type {HTMLInputElement} */ ($("publish-json")).checked) {
    try {
      data = JSON.parse(raw);
    } catch (error) {
      $("reply-status").textContent = "publish: not sent";
      $("reply-status").className = "pill bad";
      out.textContent = `Data is not JSON: ${error.message}`;
      return;
    }
  }
  const params = { data };
  const target = /** @type {HTMLSelectElement} */ ($("publish-target")).value;
  if (target === "channel") params.channel = value("publish-channel");
  if (target === "user") params.user = value("publish-user");
  if (target === "connection") {
    params.worker_id = value("publish-worker");
    params.connection_id = Number(value("publish-connection"));
  }
  call("publish", params, $("publish-send"));
});

$("presence-form").addEventListener("submit", (event) => {
  event.preventDefault();
  call("presence", { channel: value("presence-channel") }, $("presence-send"));
});

$("disconnect-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const params = { user: value("disconnect-user") };
  const reason = value("disconnect-reason");
  if (reason) params.reason = reason;
  call("disconnect", params, $("disconnect-send"));
});
