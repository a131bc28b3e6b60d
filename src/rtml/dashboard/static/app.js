// rtml dashboard: long-polls api/snapshot and redraws what changed. No framework; every piece
// of data reaches the page through textContent (never innerHTML), so names and logs stay text.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  since: -1,            // event cursor: the server answers as soon as events past it arrive
  data: null,           // last snapshot
  recvAt: 0,            // Date.now() when it arrived (for the moving timeline)
  shown: {},            // panel id -> JSON of what it shows (skip identical redraws)
  log: null,            // selected log {node_id, pid}
  logTouched: false,    // the user picked one: do not follow the newest any more
  polls: 0,
};
// Time from a task's end to this page first showing it (seconds), for tasks that finished
// while the page was open. Read by the end-to-end test; shown in the header.
window.rtmlSeen = new Map();
window.rtmlLatency = [];

// ------------------------------------------------------------------------------ helpers
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style") Object.assign(el.style, v);  // CSSOM: allowed by the CSP
    else el.setAttribute(k, v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  n = Number(n);
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + u[i];
}
function fmtDur(s) {
  if (s === null || s === undefined) return "";
  if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms";
  if (s < 120) return s.toFixed(2) + " s";
  return (s / 60).toFixed(1) + " min";
}
function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
function fmtNum(v) {
  if (v === null || v === undefined) return "";
  return Number.isInteger(v) ? String(v) : Number(v).toFixed(2).replace(/\.?0+$/, "");
}
const short = (id, n = 10) => (id ? String(id).slice(-n) : "");
const isBytes = (name) => /memory|bytes/i.test(name);
function hue(name) {
  let x = 2166136261;
  for (let i = 0; i < name.length; i++) { x ^= name.charCodeAt(i); x = Math.imul(x, 16777619); }
  return (x >>> 0) % 360;
}
const colorOf = (func) => `hsl(${hue(func || "?")} 62% 52%)`;
function table(el, cols, rows, empty) {
  const head = h("tr", null, cols.map((c) => h("th", { class: c.num ? "num" : null, text: c.label })));
  const body = rows.map((r) => h("tr", r.__attrs || null, cols.map((c) => {
    const v = c.get(r);
    const cell = h("td", { class: [c.num ? "num" : "", c.mono ? "mono" : "", c.cls ? c.cls(r) : ""].join(" ").trim() || null,
      title: c.title ? c.title(r) : (typeof v === "string" && v.length > 30 ? v : null) });
    if (v instanceof Node) cell.append(v); else cell.textContent = v === null || v === undefined ? "" : String(v);
    return cell;
  })));
  el.replaceChildren(h("thead", null, head), h("tbody", null, body));
  if (!rows.length) el.append(h("tbody", null, h("tr", null, h("td", { class: "empty", colspan: cols.length, text: empty || "none" }))));
}
// Redraw a panel only if its data changed (keeps scroll position and text selection).
function panel(id, data, draw) {
  const key = JSON.stringify(data);
  if (state.shown[id] === key) return;
  state.shown[id] = key;
  draw(data);
}

// ------------------------------------------------------------------------------ panels
function drawNodes(nodes) {
  $("nodes-count").textContent = `${nodes.filter((n) => n.alive).length} alive of ${nodes.length}`;
  $("nodes").replaceChildren(...nodes.map((n) => h("div", { class: "node" + (n.alive ? "" : " dead"), "data-node-id": n.node_id },
    h("div", { class: "title" }, h("b", { text: short(n.node_id, 12), title: n.node_id }),
      n.is_head ? h("span", { class: "badge", text: "head" }) : null,
      n.alive ? null : h("span", { class: "badge bad", text: "dead" }),
      h("span", { class: "meta", text: n.address || "" })),
    h("div", { class: "meta", text: `${n.workers} workers · ${n.running} running · ${n.queued} queued` }),
    n.death_cause ? h("div", { class: "meta s-DEAD", text: n.death_cause }) : null,
    n.resources.map((r) => {
      const frac = r.total > 0 ? Math.min(1, r.used / r.total) : 0;
      const val = isBytes(r.name) ? `${fmtBytes(r.used)} / ${fmtBytes(r.total)}` : `${fmtNum(r.used)} / ${fmtNum(r.total)}`;
      return h("div", { class: "bar" }, h("span", { text: r.name === "object_store_memory" ? "object store" : r.name.replace(/_/g, " "), title: r.name }),
        h("div", { class: "track" }, h("div", { class: "fill" + (frac > 0.9 ? " hot" : ""), style: { width: `${(frac * 100).toFixed(1)}%` } })),
        h("span", { class: "val", text: val }));
    }))));
  if (!nodes.length) $("nodes").replaceChildren(h("div", { class: "empty", text: "no nodes" }));
}

const STATE_ORDER = ["RUNNING", "PENDING", "FINISHED", "FAILED", "CANCELLED"];
function drawTasks(t) {
  const pills = STATE_ORDER.map((s) => h("span", { class: "pill s-" + s, "data-state": s }, s.toLowerCase() + " ", h("b", { text: t.by_state[s] || 0 })));
  pills.push(h("span", { class: "pill", "data-state": "RETRIED" }, "retries ", h("b", { text: t.retries })));
  $("tasks-by-state").replaceChildren(...pills);
  table($("tasks-by-func"), [
    { label: "function", get: (r) => r.func, mono: true },
    { label: "finished", get: (r) => r.finished, num: true },
    { label: "failed", get: (r) => r.failed, num: true, cls: (r) => (r.failed ? "s-FAILED" : "") },
    { label: "running", get: (r) => r.running, num: true },
    { label: "pending", get: (r) => r.pending, num: true },
    { label: "mean", get: (r) => fmtDur(r.mean_s), num: true },
    { label: "max", get: (r) => fmtDur(r.max_s), num: true },
  ], t.by_func, "no tasks yet");
}
function drawRecent(rows) {
  $("recent-count").textContent = rows.length ? `last ${rows.length}` : "";
  table($("recent-tasks"), [
    { label: "ended", get: (r) => fmtTime(r.end || r.time) },
    { label: "function", get: (r) => r.func, mono: true },
    { label: "state", get: (r) => r.state, cls: (r) => "s-" + r.state },
    { label: "duration", get: (r) => (r.start && r.end ? fmtDur(r.end - r.start) : ""), num: true },
    { label: "worker", get: (r) => r.worker_pid, num: true },
    { label: "task", get: (r) => short(r.task_id), mono: true, title: (r) => r.task_id },
  ], rows.map((r) => ({ ...r, __attrs: { "data-task-id": r.task_id } })), "no finished tasks yet");
}
function drawLive(rows) {
  $("live-count").textContent = rows.length ? String(rows.length) : "";
  table($("live-tasks"), [
    { label: "function", get: (r) => r.func, mono: true },
    { label: "state", get: (r) => r.state, cls: (r) => "s-" + r.state },
    { label: "worker", get: (r) => r.worker_pid, num: true },
    { label: "waiting", get: (r) => (r.submitted ? fmtDur(Math.max(0, serverNow() - r.submitted)) : ""), num: true },
    { label: "attempt", get: (r) => r.attempt, num: true },
    { label: "task", get: (r) => short(r.task_id), mono: true, title: (r) => r.task_id },
  ], rows, "nothing running");
}
function drawActors(a) {
  $("actors-count").textContent = Object.entries(a.by_state).map(([k, v]) => `${v} ${k.toLowerCase()}`).join(" · ");
  table($("actors"), [
    { label: "class", get: (r) => r.class_name, mono: true },
    { label: "name", get: (r) => (r.name ? (r.namespace ? `${r.namespace}/${r.name}` : r.name) : "") },
    { label: "state", get: (r) => r.state, cls: (r) => "s-" + r.state, title: (r) => r.death_cause || r.state },
    { label: "pid", get: (r) => r.pid, num: true },
    { label: "restarts", get: (r) => r.num_restarts, num: true },
    { label: "actor", get: (r) => short(r.actor_id), mono: true, title: (r) => r.actor_id },
  ], a.rows, "no actors");
}
function drawObjects(o) {
  $("objects-count").textContent = `${o.count} objects`;
  const s = o.store;
  const frac = s.capacity > 0 ? Math.min(1, s.used / s.capacity) : 0;
  $("store").replaceChildren(
    h("div", { class: "bar" }, h("span", { text: "shared memory" }),
      h("div", { class: "track" }, h("div", { class: "fill" + (frac > 0.9 ? " hot" : ""), style: { width: `${(frac * 100).toFixed(2)}%` } })),
      h("span", { class: "val", text: `${fmtBytes(s.used)} / ${fmtBytes(s.capacity)}` })),
    h("div", { class: "pills" }, Object.entries(o.by_where).map(([w, v]) =>
      h("span", { class: "pill s-" + w }, `${w.toLowerCase().replace("_", " ")} `, h("b", { text: v.count }), ` · ${fmtBytes(v.bytes)}`))));
  table($("objects"), [
    { label: "object", get: (r) => short(r.object_id, 14), mono: true, title: (r) => r.object_id },
    { label: "size", get: (r) => fmtBytes(r.size), num: true },
    { label: "where", get: (r) => r.where, cls: (r) => "s-" + r.where },
    { label: "refs", get: (r) => r.ref_count, num: true },
    { label: "made by", get: (r) => r.func || (r.task_id ? short(r.task_id) : "put"), mono: true },
    { label: "held by", get: (r) => (r.holders || []).join(", ") },
  ], o.top, "no objects");
}
function drawFailures(rows) {
  $("failures-count").textContent = rows.length ? `last ${rows.length}` : "";
  if (!rows.length) { $("failures").replaceChildren(h("div", { class: "empty", text: "no failed tasks" })); return; }
  $("failures").replaceChildren(...rows.map((f) => h("div", { class: "failure", "data-task-id": f.task_id },
    h("div", { class: "head" }, h("b", { class: "mono", text: f.func }), h("span", { class: "err", text: f.error }),
      h("span", { class: "meta", text: `task ${short(f.task_id)} · attempt ${f.attempt} · pid ${f.worker_pid ?? "?"} · node ${short(f.node_id, 8)} · ${fmtTime(f.end || f.time)}` }),
      f.parent ? h("span", { class: "meta", text: `submitted by ${f.parent_func || "task"} ${short(f.parent)}` }) : null),
    f.traceback ? h("pre", { class: "traceback", text: f.traceback }) : null)));
}
function drawWorkers(rows) {
  $("workers-count").textContent = String(rows.length);
  table($("workers"), [
    { label: "pid", get: (r) => r.pid },
    { label: "state", get: (r) => r.state },
    { label: "actor", get: (r) => short(r.actor_id), mono: true },
    { label: "tasks", get: (r) => (r.tasks || []).length, num: true },
    { label: "blocked", get: (r) => (r.blocked ? "yes" : "") },
    { label: "node", get: (r) => short(r.node_id, 12), mono: true },
  ], rows, "no workers");
}
function drawLogList(logs) {
  const sel = state.log;
  $("logs-list").replaceChildren(...logs.map((l) => h("li", {
    class: sel && sel.pid === l.pid && sel.node_id === l.node_id ? "sel" : null, "data-pid": l.pid,
    title: l.path, onclick: () => { state.logTouched = true; selectLog(l); },
  }, `${l.kind} pid ${l.pid}`, h("span", { class: "meta", text: ` · ${fmtBytes(l.size)}` }))));
  if (!logs.length) $("logs-list").replaceChildren(h("li", { class: "empty", text: "no logs yet" }));
}
function selectLog(l) {
  state.log = { node_id: l.node_id, pid: l.pid };
  delete state.shown.logs;
  if (state.data) panel("logs", state.data.logs, drawLogList);
  fetchLog(true);
}
async function fetchLog(force) {
  const sel = state.log;
  if (!sel) return;
  if (!force && sel.fetched && Date.now() - sel.fetched < 1000) return;  // a log: once a second
  sel.fetched = Date.now();
  try {
    const r = await fetch(`api/logs/${encodeURIComponent(sel.node_id)}/${sel.pid}?tail=500`, { cache: "no-store" });
    const d = await r.json();
    if (state.log !== sel) return;
    const view = $("log-view");
    const atEnd = view.scrollTop + view.clientHeight >= view.scrollHeight - 4;
    $("log-title").textContent = `worker pid ${sel.pid} on node ${short(sel.node_id, 12)}` + (r.ok ? "" : " — " + d.error);
    if (view.textContent !== (d.text || "")) {
      view.textContent = d.text || "";
      if (atEnd) view.scrollTop = view.scrollHeight;
    }
  } catch (e) { /* shown by the status */ }
}

// ---------------------------------------------------------------------------- timeline
const ROW_H = 18, AXIS_H = 18, LABEL_W = 150;
function serverNow() {
  return state.data ? state.data.now + (Date.now() - state.recvAt) / 1000 : Date.now() / 1000;
}
function drawTimeline() {
  const d = state.data;
  if (!d) return;
  const tl = d.timeline, canvas = $("timeline");
  const win = Number($("window").value);
  const now = serverNow(), t0 = now - win;
  const rows = tl.rows, index = new Map(rows.map((r, i) => [`${r.node_id}|${r.worker_pid}`, i]));
  const cssW = canvas.clientWidth || 800, cssH = Math.max(1, rows.length) * ROW_H + AXIS_H + 4;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
    canvas.width = Math.round(cssW * dpr); canvas.height = Math.round(cssH * dpr);
    canvas.style.height = cssH + "px";
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, cssW, cssH);
  const plotW = cssW - LABEL_W - 4, x = (t) => LABEL_W + ((t - t0) / win) * plotW;
  g.font = "11px system-ui, sans-serif";
  g.textBaseline = "middle";
  rows.forEach((r, i) => {
    const y = AXIS_H + i * ROW_H;
    if (i % 2 === 0) { g.fillStyle = "#f7f8fa"; g.fillRect(LABEL_W, y, plotW, ROW_H); }
    g.fillStyle = "#4b5563";
    g.fillText(`pid ${r.worker_pid}` + (r.actor ? ` · ${r.actor}` : "") + (d.nodes.length > 1 ? ` · ${short(r.node_id, 6)}` : ""), 4, y + ROW_H / 2, LABEL_W - 8);
  });
  // time axis: a tick every "nice" interval
  const step = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300].find((s) => win / s <= 8) || 600;
  g.fillStyle = "#6b7280"; g.strokeStyle = "#e5e7eb";
  for (let t = Math.ceil(t0 / step) * step; t <= now; t += step) {
    const px = x(t);
    g.beginPath(); g.moveTo(px, AXIS_H - 4); g.lineTo(px, cssH); g.stroke();
    g.fillText(`-${(now - t).toFixed(step < 1 ? 1 : 0)}s`, px + 2, AXIS_H / 2);
  }
  const hits = [];
  const draw = (s, running) => {
    const i = index.get(`${s.node_id}|${s.worker_pid}`);
    if (i === undefined) return;
    const a = Math.max(x(s.start), LABEL_W), b = Math.min(x(running ? now : s.end), LABEL_W + plotW);
    if (b < LABEL_W) return;
    const y = AXIS_H + i * ROW_H + 2, w = Math.max(1.5, b - a - (b - a > 4 ? 1 : 0));  // a gap between back-to-back tasks
    g.globalAlpha = running ? 0.45 : 1;
    g.fillStyle = s.state === "FAILED" ? "#c62828" : colorOf(s.func);
    g.fillRect(a, y, w, ROW_H - 4);
    g.globalAlpha = 1;
    if (running) { g.strokeStyle = colorOf(s.func); g.strokeRect(a + 0.5, y + 0.5, w - 1, ROW_H - 5); }
    if (w > 40) { g.fillStyle = "#fff"; g.fillText(s.func, a + 3, y + (ROW_H - 4) / 2, w - 6); }
    hits.push({ a, b: a + w, y, s, running });
  };
  for (const s of tl.slices) draw(s, false);
  for (const s of tl.running) draw(s, true);
  canvas._hits = hits;
  const funcs = [...new Set(tl.slices.map((s) => s.func).concat(tl.running.map((s) => s.func)))].sort().slice(0, 30);
  const key = funcs.join("\u0000");
  if ($("legend")._key !== key) {
    $("legend")._key = key;
    $("legend").replaceChildren(...funcs.map((f) => h("span", { class: "mono" }, h("i", { style: { background: colorOf(f) } }), f)));
  }
}
function onTimelineHover(ev) {
  const canvas = $("timeline"), tip = $("tip");
  const rect = canvas.getBoundingClientRect(), px = ev.clientX - rect.left, py = ev.clientY - rect.top;
  const hit = (canvas._hits || []).find((k) => px >= k.a && px <= k.b && py >= k.y && py <= k.y + ROW_H - 4);
  if (!hit) { tip.hidden = true; return; }
  const s = hit.s;
  tip.textContent = `${s.func}  ${hit.running ? "running" : s.state.toLowerCase()}\n` +
    (hit.running ? `for ≥ ${fmtDur(serverNow() - s.start)}` : `${fmtDur(s.end - s.start)}, ended ${fmtTime(s.end)}`) +
    `\ntask ${s.task_id} · pid ${s.worker_pid}`;
  tip.hidden = false;
  tip.style.left = Math.min(px + 12, rect.width - 260) + "px";
  tip.style.top = py + 12 + "px";
}

// ------------------------------------------------------------------------- poll + draw
function noteSeen(d, initial) {
  const seen = window.rtmlSeen, nowS = Date.now() / 1000;
  const note = (t) => {
    if (!t.task_id || !t.end || seen.has(t.task_id)) return;
    const rec = { seen: nowS, end: t.end, func: t.func, latency: nowS - t.end, initial };
    seen.set(t.task_id, rec);
    if (!initial) { window.rtmlLatency.push(rec.latency); if (window.rtmlLatency.length > 500) window.rtmlLatency.shift(); }
  };
  d.tasks.recent.forEach(note);
  d.timeline.slices.forEach(note);
  d.failures.forEach(note);
  while (seen.size > 20000) seen.delete(seen.keys().next().value);
  const lat = window.rtmlLatency;
  if (lat.length) {
    const sorted = [...lat].sort((a, b) => a - b), med = sorted[Math.floor(sorted.length / 2)];
    $("latency").textContent = `tasks show ${fmtDur(Math.max(0, med))} after finishing (median of ${lat.length})`;
  }
}
// Panels that libraries registered (rtml.stream, rtml.serve...): one table each.
function drawExtra(panels) {
  const box = $("extra-panels");
  box.replaceChildren(...panels.map((p) => {
    const cols = [...new Set(p.rows.flatMap((r) => Object.keys(r)))].map((k) => ({
      label: k.replace(/_/g, " "), get: (r) => (typeof r[k] === "number" ? fmtNum(r[k]) : r[k]),
      num: p.rows.some((r) => typeof r[k] === "number"),
    }));
    const tbl = h("table", { id: `extra-${p.name}` });
    table(tbl, cols, p.rows, p.error || "none yet");
    return h("section", { class: "panel wide", id: `panel-${p.name}` },
      h("h2", null, p.title, " ", h("small", { text: `${p.rows.length}` })),
      h("div", { class: "scroll short" }, tbl));
  }));
}
function render(d, initial) {
  const t = d.tasks, ev = d.events;
  $("summary").textContent = `${d.nodes.length} node${d.nodes.length === 1 ? "" : "s"} · ` +
    `${t.by_state.RUNNING || 0} running · ${t.by_state.FINISHED || 0} finished · ${t.by_state.FAILED || 0} failed · ` +
    `${ev.read} events` + (ev.dropped ? ` (${ev.dropped} dropped by the log's capacity)` : "");
  const errs = Object.entries(d.errors || {});
  $("banner").hidden = !errs.length;
  $("banner").textContent = errs.map(([k, v]) => `${k}: ${v}`).join(" · ");
  panel("nodes", d.nodes, drawNodes);
  panel("tasks", { by_state: t.by_state, by_func: t.by_func, retries: t.retries }, drawTasks);
  panel("recent", t.recent, drawRecent);
  panel("live", t.live, drawLive);
  panel("actors", d.actors, drawActors);
  panel("objects", d.objects, drawObjects);
  panel("failures", d.failures, drawFailures);
  panel("workers", d.workers, drawWorkers);
  panel("extra", d.panels || [], drawExtra);
  if (!state.logTouched && d.logs.length && (!state.log || state.log.pid !== d.logs[0].pid)) {
    state.log = { node_id: d.logs[0].node_id, pid: d.logs[0].pid };  // follow the newest
    delete state.shown.logs;
  }
  panel("logs", d.logs, drawLogList);
  fetchLog();
  drawTimeline();
  noteSeen(d, initial);
}
function setStatus(cls, text) {
  const el = $("status");
  el.className = "status " + cls;
  el.textContent = text;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function poll() {
  for (;;) {
    const started = Date.now();
    try {
      const win = $("window").value;
      const r = await fetch(`api/snapshot?since=${state.since}&wait=${state.since < 0 ? 0 : 1}&window=${win}`, { cache: "no-store" });
      if (r.status === 401 || r.status === 403) {
        setStatus("down", "not authorized");
        $("banner").hidden = false;
        $("banner").textContent = (await r.text()).trim();
        await sleep(3000);
        continue;
      }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const d = await r.json();
      const initial = state.polls === 0;
      state.polls++;
      state.data = d; state.recvAt = Date.now(); state.since = d.events.next_seq;
      render(d, initial);
      setStatus("live", "live");
    } catch (e) {
      setStatus("down", "disconnected");
      await sleep(1000);
    }
    const spent = Date.now() - started;
    if (spent < 250) await sleep(250 - spent);  // at most four redraws a second
  }
}

$("window").addEventListener("change", () => { state.since = -1; state.polls = 0; });
$("timeline").addEventListener("mousemove", onTimelineHover);
$("timeline").addEventListener("mouseleave", () => { $("tip").hidden = true; });
window.addEventListener("resize", drawTimeline);
setInterval(drawTimeline, 200);
poll();
