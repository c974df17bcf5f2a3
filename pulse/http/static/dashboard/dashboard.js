// Pulse dashboard: live snapshots over Server-Sent Events, drawn as inline SVG. No dependency.
// The key lives in sessionStorage and travels only as an Authorization header (never in a URL),
// which is why the stream is read with fetch: EventSource cannot send a header.
"use strict";

const KEY_NAME = "pulse.dashboard.key";
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#3b5bdb", "#2b8a3e", "#e8590c", "#9c36b5", "#0c8599", "#c92a2a", "#5c940d"];
const PRIORITIES = ["critical", "high", "normal", "low", "bulk"];
const MIN_SPAN_S = 120;
const SHADES = { p50: "#74c0fc", p90: "#4263eb", p99: "#364fc7" };
const state = { key: null, abort: null, last: null, deadLetters: null, scopes: [] };

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function age(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${Math.round(ms / 60000)} min`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

function seconds(s) {
  return age(s === null || s === undefined ? s : s * 1000);
}

function clock(iso) {
  return new Date(iso).toLocaleTimeString([], { hour12: false });
}

function number(n) {
  return (n || 0).toLocaleString("en");
}

// --- the key ------------------------------------------------------------------------------

function showLogin(message) {
  $("#board").hidden = true;
  $("#forget").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#who").textContent = "";
  setConnection("not connected", "off");
}

function start(key) {
  state.key = key;
  $("#login").hidden = true;
  $("#board").hidden = false;
  $("#forget").hidden = false;
  connect();
}

function forget(message) {
  sessionStorage.removeItem(KEY_NAME);
  state.key = null;
  if (state.abort) state.abort.abort();
  showLogin(message);
}

function authorized(init) {
  const headers = Object.assign({}, (init && init.headers) || {}, {
    Authorization: `Bearer ${state.key}`,
  });
  return Object.assign({}, init || {}, { headers, cache: "no-store" });
}

async function problemText(response) {
  try {
    const body = await response.json();
    return body.detail || body.title || response.statusText;
  } catch (error) {
    return response.statusText;
  }
}

// --- the stream ---------------------------------------------------------------------------

function setConnection(text, kind) {
  const pill = $("#connection");
  pill.textContent = text;
  pill.className = `pill ${kind}`;
}

async function connect() {
  while (state.key) {
    const controller = new AbortController();
    state.abort = controller;
    try {
      const response = await fetch("/api/dashboard/events", authorized({
        headers: { Accept: "text/event-stream" }, signal: controller.signal,
      }));
      if (response.status === 401 || response.status === 403) {
        forget(await problemText(response));
        return;
      }
      if (!response.ok) throw new Error(await problemText(response));
      setConnection("live", "live");
      await readEvents(response.body);
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    setConnection("reconnecting…", "bad");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      dispatch(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
  }
}

function dispatch(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (event === "snapshot" && data.length) render(JSON.parse(data.join("\n")));
  if (event === "unavailable") setConnection("backend unreachable", "bad");
}

// --- rendering ----------------------------------------------------------------------------

function render(snapshot) {
  state.last = snapshot;
  setConnection("live", "live");
  const viewer = snapshot.viewer;
  state.scopes = viewer.scopes;
  document.body.classList.toggle("not-admin", !viewer.scopes.includes("admin"));
  $("#who").textContent = `${viewer.operator ? "operator · " : ""}key scopes: ${viewer.scopes.join(", ")}`;
  renderStats(snapshot);
  renderThroughput(snapshot);
  renderLatency(snapshot.latency);
  renderQueue(snapshot.queue);
  renderTaskQueue(snapshot.task_queue || []);
  renderWorkers(snapshot.workers);
  renderBreakers(snapshot.breakers);
  renderFailures(snapshot.failures);
  if (state.deadLetters !== snapshot.dead_letters) {
    state.deadLetters = snapshot.dead_letters;
    loadDeadLetters();
  }
}

function renderStats(snapshot) {
  const counts = Object.assign({}, snapshot.statuses);
  counts.accepted = Object.values(snapshot.statuses).reduce((a, b) => a + b, 0);
  counts.dead_letters = snapshot.dead_letters;
  for (const card of document.querySelectorAll(".stat")) {
    card.querySelector(".value").textContent = number(counts[card.dataset.stat]);
  }
}

function channelColors(channels) {
  const colors = {};
  channels.forEach((channel, i) => { colors[channel] = PALETTE[i % PALETTE.length]; });
  return colors;
}

function renderThroughput(snapshot) {
  const svg = $("#throughput");
  const width = 640, height = 220, left = 40, right = 12, top = 12, bottom = 26;
  const now = Date.parse(snapshot.at) / 1000;
  const bucket = snapshot.bucket_s;
  // Zoom to the data: from its first point (at least two minutes back) up to now.
  const earliest = Math.min(now - MIN_SPAN_S, ...snapshot.throughput.map((p) => p.at));
  const first = Math.floor(Math.max(now - snapshot.window_s, earliest) / bucket) * bucket;
  const slots = Math.floor((now - first) / bucket) + 1;
  const series = {};
  const accepted = new Array(slots).fill(0);
  for (const point of snapshot.throughput) {
    const slot = Math.round((point.at - first) / bucket);
    if (slot < 0 || slot >= slots) continue;
    if (point.kind === "accepted") accepted[slot] += point.count;
    if (point.kind !== "delivered") continue;
    if (!series[point.channel]) series[point.channel] = new Array(slots).fill(0);
    series[point.channel][slot] += point.count;
  }
  const channels = Object.keys(series).sort();
  const colors = channelColors(channels);
  const peak = Math.max(1, ...accepted, ...channels.flatMap((c) => series[c]));
  const x = (i) => left + (i / Math.max(1, slots - 1)) * (width - left - right);
  const y = (v) => top + (1 - v / peak) * (height - top - bottom);
  const parts = axes(peak, y, width, left, right);
  for (const fraction of [1, 0.5, 0]) {
    const i = Math.round((slots - 1) * (1 - fraction));
    const text = fraction ? `−${age(fraction * (slots - 1) * bucket * 1000)}` : "now";
    parts.push(el("svg:text", { x: x(i), y: height - 8, "text-anchor": "middle" }, text));
  }
  const line = (values) => values.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join("");
  parts.push(el("svg:path", { class: "accepted", d: line(accepted), "data-series": "accepted" }));
  for (const channel of channels) {
    parts.push(el("svg:path", {
      class: "series", d: line(series[channel]), stroke: colors[channel], "data-channel": channel,
    }));
  }
  if (!channels.length) parts.push(noData(width, height));
  svg.replaceChildren(...parts);
  const legend = channels.map((c) => el("span", { class: "key", style: null }, c));
  legend.forEach((node, i) => node.style.setProperty("--swatch", colors[channels[i]]));
  legend.push(el("span", { class: "key" }, "accepted (all channels, dashed)"));
  $("#throughput-legend").replaceChildren(...legend);
}

function axes(peak, y, width, left, right) {
  const parts = [];
  for (const fraction of [0, 0.5, 1]) {
    const value = peak * fraction;
    parts.push(el("svg:line", { class: "grid-line", x1: left, x2: width - right, y1: y(value), y2: y(value) }));
    parts.push(el("svg:text", { x: left - 6, y: y(value) + 4, "text-anchor": "end" },
      Number.isInteger(value) ? value : value.toFixed(1)));
  }
  return parts;
}

function noData(width, height) {
  return el("svg:text", { class: "nodata", x: width / 2, y: height / 2, "text-anchor": "middle" },
    "no data in the last 10 minutes");
}

function renderLatency(latency) {
  const svg = $("#latency");
  const width = 640, height = 220, left = 90, right = 70, top = 10;
  if (!latency.length) {
    svg.replaceChildren(noData(width, height));
    return;
  }
  const peak = Math.max(1, ...latency.map((l) => l.p99_ms));
  const rowHeight = Math.min(60, (height - top) / latency.length);
  const bar = (rowHeight - 12) / 3;
  const parts = [];
  latency.forEach((row, i) => {
    const y0 = top + i * rowHeight;
    parts.push(el("svg:text", { x: left - 10, y: y0 + rowHeight / 2, "text-anchor": "end" },
      `${row.channel} (${number(row.count)})`));
    ["p50", "p90", "p99"].forEach((p, j) => {
      const value = row[`${p}_ms`];
      const w = Math.max(2, (value / peak) * (width - left - right));
      parts.push(el("svg:rect", {
        x: left, y: y0 + j * bar + 2, width: w, height: bar - 2, rx: 2,
        fill: SHADES[p], "data-channel": row.channel, "data-percentile": p,
      }));
      parts.push(el("svg:text", { x: left + w + 6, y: y0 + j * bar + bar - 2 }, `${p} ${age(value)}`));
    });
  });
  svg.replaceChildren(...parts);
}

function renderQueue(queue) {
  const svg = $("#depth");
  const width = 640, height = 130, left = 70, right = 60;
  const peak = Math.max(1, ...queue.map((q) => q.depth));
  const rowHeight = (height - 10) / queue.length;
  const parts = [];
  queue.forEach((q, i) => {
    const y0 = 5 + i * rowHeight;
    const w = (q.depth / peak) * (width - left - right);
    parts.push(el("svg:text", { x: left - 8, y: y0 + rowHeight / 2 + 4, "text-anchor": "end" },
      `${q.priority} ${PRIORITIES[q.priority] || ""}`));
    parts.push(el("svg:rect", { x: left, y: y0 + 3, width: Math.max(1, w), height: rowHeight - 6, rx: 3,
      fill: q.depth ? "#4263eb" : "#dee2e6", "data-priority": q.priority }));
    parts.push(el("svg:text", { x: left + Math.max(1, w) + 6, y: y0 + rowHeight / 2 + 4 }, number(q.depth)));
  });
  svg.replaceChildren(...parts);
  fill($("#queue tbody"), queue.map((q) => el("tr", { "data-priority": q.priority },
    el("td", {}, `${q.priority} ${PRIORITIES[q.priority] || ""}`), el("td", {}, number(q.depth)),
    el("td", {}, number(q.lag)), el("td", {}, number(q.pending)),
    el("td", {}, number(q.retry_waiting)), el("td", {}, seconds(q.oldest_age_s)),
    el("td", {}, seconds(q.oldest_pending_age_s)))));
}

// The user tasks' streams: the same columns, in their own table.
function renderTaskQueue(queue) {
  fill($("#task-queue tbody"), queue.map((q) => el("tr", { "data-priority": q.priority },
    el("td", {}, `${q.priority} ${PRIORITIES[q.priority] || ""}`), el("td", {}, number(q.depth)),
    el("td", {}, number(q.lag)), el("td", {}, number(q.pending)),
    el("td", {}, number(q.retry_waiting)), el("td", {}, seconds(q.oldest_age_s)),
    el("td", {}, seconds(q.oldest_pending_age_s)))));
}

// Workers as their heartbeats describe them; host and pid come to operators only.
function renderWorkers(workers) {
  fill($("#workers tbody"), workers.map((w) => {
    const doing = Object.entries(w.delivering).map(([c, n]) => `${n} ${c}`).join(", ");
    const where = w.host ? el("div", { class: "where" }, `${w.host} · pid ${w.pid}`) : null;
    const settling = w.settling ? ` (${number(w.settling)} settling)` : "";
    return el("tr", { "data-worker": w.name },
      el("td", { class: "mono" }, el("span", { class: w.live ? "dot" : "dot gone" }), w.name, where),
      el("td", { class: "channels" }, w.channels.join(", ")),
      el("td", {}, clock(w.started_at)),
      el("td", {}, `${age(w.heartbeat_ms)} ago`),
      el("td", {}, `${number(w.in_flight)}${settling}`),
      el("td", {}, doing || (w.in_flight ? "delivering" : w.live ? "idle" : "gone")));
  }));
  $("#workers-empty").hidden = workers.length > 0;
}

function renderBreakers(breakers) {
  $("#breakers").replaceChildren(...breakers.map((b) => el("div", { class: "breaker", "data-provider": b.provider },
    el("span", { class: "name" }, b.provider),
    el("span", { class: `badge ${b.state}` }, b.state),
    el("div", { class: "detail" },
      `${number(b.calls)} calls, ${number(b.failures)} failed` + (b.streak ? `, ${b.streak} in a row` : "")),
    b.last_error ? el("div", { class: "detail" }, b.last_error) : null)));
}

function renderFailures(failures) {
  fill($("#failures tbody"), failures.map((f) => el("tr", { "data-id": f.id },
    el("td", {}, clock(f.at)), el("td", {}, f.channel), el("td", { class: "mono" }, f.recipient),
    el("td", {}, el("span", { class: `badge ${f.status}` }, f.status)), el("td", {}, f.attempts),
    el("td", { class: "error-text" }, f.error || ""))));
  $("#failures-empty").hidden = failures.length > 0;
}

// --- dead letters: the existing API, filtered; replay with an admin key ---------------------

function deadLetterFilter() {
  const filter = {};
  const channel = $("#dl-channel").value.trim();
  const errorClass = $("#dl-error-class").value.trim();
  if (channel) filter.channel = channel;
  if (errorClass) filter.error_class = errorClass;
  return filter;
}

async function loadDeadLetters() {
  if (!state.key || !state.scopes.includes("read")) return;
  const query = new URLSearchParams(Object.assign({ limit: "100" }, deadLetterFilter()));
  const response = await fetch(`/api/dead-letters?${query}`, authorized());
  if (!response.ok) {
    $("#dl-status").textContent = await problemText(response);
    return;
  }
  const body = await response.json();
  fill($("#dead-letters tbody"), body.items.map((d) => el("tr", { "data-id": d.id },
    el("td", {}, d.id), el("td", {}, clock(d.dead_at)), el("td", {}, d.channel || "–"),
    el("td", { class: "mono" }, d.error_class || "–"), el("td", { class: "error-text" }, d.reason),
    el("td", { class: "admin-only" }, replayButton(d.id)))));
  $("#dl-empty").hidden = body.items.length > 0;
}

function replayButton(id) {
  const button = el("button", { type: "button", class: "small", "data-replay": id }, "Replay");
  button.addEventListener("click", () => replay(`/api/dead-letters/${id}/replay`, null, button));
  return button;
}

async function replay(url, filter, button) {
  button.disabled = true;
  const init = { method: "POST" };
  if (filter) {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(Object.assign({ limit: 1000 }, filter));
  }
  const response = await fetch(url, authorized(init));
  const body = await response.json().catch(() => ({}));
  $("#dl-status").textContent = response.ok
    ? `${body.replayed} replayed`
    : body.detail || response.statusText;
  button.disabled = false;
  await loadDeadLetters();
}

function wire() {
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("#key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_NAME, key);
    $("#key").value = "";
    start(key);
  });
  $("#forget").addEventListener("click", () => forget(""));
  $("#dl-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    loadDeadLetters();
  });
  $("#dl-replay").addEventListener("click", (event) => {
    replay("/api/dead-letters/replay", deadLetterFilter(), event.currentTarget);
  });
  const key = sessionStorage.getItem(KEY_NAME);
  if (key) start(key);
  else showLogin("");
}

wire();
