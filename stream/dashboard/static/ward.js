// ecg-monitor ward view: a tile per active stream (heart rate, scrolling first lead, alarm state by
// severity, signal quality, last alarm), sorted by severity; stale streams grey out by themselves.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const tiles = new Map();  // stream id -> {d (tile data), el, wave: [{t0, fs, x}], arrival, lastTs}
  const firstTime = Live.dedup();
  const WAVE_S = 5, DELAY_S = 1.2, W = 236, H = 56, PX_PER_MV = 18, LOG_MAX = 200;
  let staleS = 10, clockOffset = 0, order = "";
  window.__alarmSeen = {};   // "id|status" -> Date.now() when the page had drawn it (benchmarks, tests)
  window.__ward = { events: 0, snapshots: 0, opens: 0 };

  const serverNow = () => Date.now() / 1000 + clockOffset;

  function el(sid) {
    let t = tiles.get(sid);
    if (t) return t;
    const div = document.createElement("div");
    div.className = "tile"; div.dataset.stream = sid;
    div.innerHTML = `<div class="top"><span class="sid"><a></a></span><span class="hr">--<small> bpm</small></span></div>
      <canvas></canvas><div class="alarm none">no alarm</div><div class="sq"></div><div class="last"></div>`;
    const a = div.querySelector(".sid a");
    a.textContent = sid; a.href = "/patient/" + encodeURIComponent(sid);
    const cv = div.querySelector("canvas");
    const ctx = cv.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    cv.style.width = W + "px"; cv.style.height = H + "px"; cv.width = W * dpr; cv.height = H * dpr;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    t = { d: null, el: div, ctx, wave: [], arrival: 0, lastTs: null };
    tiles.set(sid, t);
    $("tiles").appendChild(div);
    return t;
  }

  function addWave(t, chunks) {
    for (const c of chunks || []) {
      t.wave.push(c);
      const end = c.t0 + c.x.length / c.fs;
      if (t.lastTs === null || end > t.lastTs) { t.lastTs = end; t.arrival = performance.now(); }
    }
    if (t.lastTs !== null) t.el.dataset.lastTs = t.lastTs;  // stream time of the newest sample (tests)
    while (t.wave.length && t.wave[0].t0 < t.lastTs - WAVE_S - DELAY_S - 2) t.wave.shift();
  }

  function update(d) {
    const t = el(d.stream_id);
    t.d = d;
    const e = t.el;
    e.querySelector(".hr").firstChild.nodeValue = d.hr_bpm ? Math.round(d.hr_bpm) : "--";
    e.querySelector(".hr").dataset.hr = d.hr_bpm ?? "";
    const al = e.querySelector(".alarm");
    if (d.active.length) {
      const a = d.active[0];
      const acked = d.acknowledged.includes(a.id);
      al.className = "alarm sev-" + a.severity;
      al.textContent = `${a.severity.toUpperCase()} ${a.kind.replace(/_/g, " ")}` + (d.active.length > 1 ? ` +${d.active.length - 1}` : "") + (acked ? " (ack)" : "");
      al.dataset.kind = a.kind; al.dataset.severity = a.severity; al.dataset.kinds = d.active.map((x) => x.kind).join(",");
    } else {
      al.className = "alarm none"; al.textContent = "no alarm"; al.dataset.kind = ""; al.dataset.severity = ""; al.dataset.kinds = "";
    }
    const sq = e.querySelector(".sq");
    sq.textContent = d.signal === "ok" ? "signal ok" : "signal: " + d.signal;
    sq.className = "sq" + (d.signal === "ok" ? "" : " bad");
    const last = d.last_alarm;
    e.querySelector(".last").textContent = last ? `last: ${last.kind.replace(/_/g, " ")} ${last.status} ${Live.fmtTime(last.start_ts)}` : "";
    e.className = `tile rank-${d.rank}` + (d.stale ? " stale" : "");
  }

  function sortTiles() {
    const now = serverNow();
    const list = [...tiles.values()].filter((t) => t.d);
    for (const t of list) {
      const stale = now - t.d.last_seen > staleS;
      if (stale !== t.el.classList.contains("stale")) t.el.classList.toggle("stale", stale);
      t.stale = stale;
    }
    list.sort((a, b) => (a.stale - b.stale) || (b.d.rank - a.d.rank) || ((a.d.signal === "ok") - (b.d.signal === "ok")) || (a.d.stream_id < b.d.stream_id ? -1 : 1));
    const key = list.map((t) => t.d.stream_id).join("\n");
    if (key !== order) { order = key; const box = $("tiles"); for (const t of list) box.appendChild(t.el); }
    $("counts").textContent = `${list.length} streams · ${list.filter((t) => t.d.active.length).length} in alarm · ${list.filter((t) => t.stale).length} silent`;
  }

  function seen(a) {  // the alarm is on screen once this frame is painted
    const k = a.id + "|" + a.status;
    if (window.__alarmSeen[k]) return;
    requestAnimationFrame(() => { window.__alarmSeen[k] = Date.now(); });
  }

  function logAlarm(a) {  // one row per (id, status), newest first (callers pass first-time alarms only)
    const box = $("alarm-log"), li = document.createElement("li");
    li.dataset.id = a.id; li.dataset.status = a.status; li.dataset.ts = a.at_ts || a.start_ts || 0;
    li.className = a.status;
    li.innerHTML = `<span class="sev sev-${Live.esc(a.severity)}">${Live.esc(a.severity)}</span>${Live.fmtTime(a.status === "resolved" ? a.end_ts || a.at_ts : a.start_ts)} ` +
      `<a href="/patient/${encodeURIComponent(a.stream_id)}">${Live.esc(a.stream_id)}</a> ${Live.esc(a.kind.replace(/_/g, " "))} ${Live.esc(a.status)}`;
    const ts = Number(li.dataset.ts);
    let before = box.firstChild;  // keep newest first when a snapshot brings older alarms late
    while (before && Number(before.dataset.ts) > ts) before = before.nextSibling;
    box.insertBefore(li, before);
    while (box.children.length > LOG_MAX) box.lastChild.remove();
  }

  function draw() {
    const now = performance.now();
    try { drawTiles(now); } finally { const ms = performance.now() - now; window.__ward.drawMs = window.__ward.drawMs ? 0.9 * window.__ward.drawMs + 0.1 * ms : ms; }
  }

  function drawTiles(now) {
    for (const t of tiles.values()) {
      if (!t.d || t.lastTs === null) continue;
      const ctx = t.ctx;
      ctx.clearRect(0, 0, W, H);
      ctx.strokeStyle = "#eee"; ctx.beginPath(); ctx.moveTo(0, H / 2 + 0.5); ctx.lineTo(W, H / 2 + 0.5); ctx.stroke();
      const head = Math.min(t.lastTs, t.lastTs - DELAY_S + (now - t.arrival) / 1000);
      const tStart = head - WAVE_S, pxs = W / WAVE_S;
      ctx.strokeStyle = t.stale ? "#888" : "#0a7d26"; ctx.lineWidth = 1.2; ctx.beginPath();
      for (const c of t.wave) {
        let pen = false;
        for (let i = 0; i < c.x.length; i++) {
          const ts = c.t0 + i / c.fs;
          if (ts < tStart || ts > head) { pen = false; continue; }
          const v = c.x[i];
          if (v === null) { pen = false; continue; }
          const x = (ts - tStart) * pxs, y = H / 2 - Math.max(-1.5, Math.min(1.5, v)) * PX_PER_MV;
          if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
          pen = true;
        }
      }
      ctx.stroke();
    }
  }

  function onEvent(ev) {
    window.__ward.events++;
    if (ev.type === "snapshot") {
      window.__ward.snapshots++;
      clockOffset = ev.now - Date.now() / 1000;
      const keep = new Set(ev.tiles.map((d) => d.stream_id));
      for (const [sid, t] of tiles) if (!keep.has(sid)) { t.el.remove(); tiles.delete(sid); }
      for (const d of ev.tiles) { const t = el(d.stream_id); t.wave = []; t.lastTs = null; addWave(t, d.wave); update(d); }
      for (const a of ev.alarms) if (firstTime(a)) { seen(a); logAlarm(a); }
      order = ""; sortTiles();
    } else if (ev.type === "tiles") {
      clockOffset = ev.now - Date.now() / 1000;
      for (const d of ev.tiles) { const t = el(d.stream_id); addWave(t, d.wave); update(d); }
      sortTiles();
    } else if (ev.type === "alert") {
      if (!firstTime(ev.alert)) return;
      update(ev.tile);
      sortTiles();
      seen(ev.alert);
      logAlarm(ev.alert);
    } else if (ev.type === "action") {
      const t = tiles.get(ev.stream_id);
      if (t && t.d && !t.d.acknowledged.includes(ev.alert_id)) { t.d.acknowledged.push(ev.alert_id); update(t.d); }
    }
  }

  fetch("/api/live/status").then((r) => r.json()).then((s) => { staleS = s.stale_s; $("stale-s").textContent = s.stale_s; }).catch(() => {});
  Live.connect("/api/live/events?view=ward", onEvent, (state) => { const c = $("conn"); c.textContent = state; c.className = state; if (state === "live") window.__ward.opens++; });
  setInterval(draw, 125);      // 8 waveform updates per second
  setInterval(sortTiles, 1000);  // streams going silent grey out by themselves
})();
