// ecg-monitor patient view: live multi-lead ECG on standard paper with beat classes and dropouts, model
// scores against thresholds, the latest 12-lead attention, the alarm history with its evidence, and
// acknowledge / silence actions.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const sid = decodeURIComponent(location.pathname.split("/").pop());
  const firstTime = Live.dedup();
  // Row height per lead at the standard 10 mm/mV: MIT-BIH MLII QRS complexes reach 2-3 mV (20-30 mm), so
  // 1-3 lead streams get 40 mm rows (baseline 24 mm from the top: 2.4 mV up, 1.6 mV down) and 12-lead ones
  // 30 mm; each lead is clipped to its own row so a taller complex never runs into the next lead.
  const SPAN_S = 10, DELAY_S = 1.0, LEFT_MM = 14, BASE_AT = 0.6;
  const rowMm = (n) => (n <= 3 ? 40 : 30);
  let ROW_MM = rowMm(1);
  const mm = ECG.PX_PER_MM;
  const st = { leads: [], frames: [], beats: [], classes: new Map(), dropouts: [], scores: {}, attention: null,
    alarms: new Map(), actions: new Map(), lastTs: null, arrival: 0, tile: null };
  window.__patient = { frames: 0, snapshots: 0 };
  $("sid").textContent = sid;
  document.title = "ecg-monitor · " + sid;
  $("user").value = localStorage.getItem("ecg-user") || "";
  $("user").addEventListener("change", () => localStorage.setItem("ecg-user", $("user").value.trim()));

  const W = Math.round((LEFT_MM + SPAN_S * ECG.MM_PER_S) * mm);
  let ctx = null, rows = 0;
  function layout() {
    const n = Math.max(1, st.leads.length);
    if (n === rows && ctx) return;
    rows = n; ROW_MM = rowMm(n);
    ctx = ECG.setup($("ecg"), W, Math.round(n * ROW_MM * mm));
    window.__patient.rowMm = ROW_MM; window.__patient.rows = n;
    ECG.grid(ctx, 0, 0, W, n * ROW_MM * mm);  // never a blank (resized) canvas until the next draw
  }

  function addFrame(f) {
    if (f.leads.join() !== st.leads.join()) { st.leads = f.leads; st.frames = []; layout(); }
    st.frames.push(f);
    const end = f.t0 + f.x[0].length / f.fs;
    if (st.lastTs === null || end > st.lastTs) { st.lastTs = end; st.arrival = performance.now(); }
    while (st.frames.length && st.frames[0].t0 < st.lastTs - SPAN_S - 4) st.frames.shift();
    window.__patient.frames++;
  }

  function drawEcg() {
    layout();
    const H = rows * ROW_MM * mm, x0 = LEFT_MM * mm, w = SPAN_S * ECG.MM_PER_S * mm;
    ECG.grid(ctx, 0, 0, W, H);
    if (st.lastTs === null) { ctx.fillStyle = "#555"; ctx.font = "14px system-ui"; ctx.fillText("waiting for telemetry…", x0 + 10, 30); return; }
    const head = Math.min(st.lastTs, st.lastTs - DELAY_S + (performance.now() - st.arrival) / 1000);
    const tStart = head - SPAN_S;
    st.leads.forEach((lead, j) => {
      const yTop = j * ROW_MM * mm, rowH = ROW_MM * mm, yBase = yTop + rowH * BASE_AT, clip = [yTop, rowH];
      ECG.calibration(ctx, 2, yBase);
      ctx.fillStyle = "#000"; ctx.font = "bold 12px system-ui"; ctx.fillText(lead, 4, yTop + 14);
      const drops = st.dropouts.filter((d) => d.lead === lead || d.lead === "*");
      for (const d of drops) ECG.band(ctx, d.start_ts, d.end_ts, tStart, x0, yTop + 2, w, ROW_MM * mm - 4, `${d.kind.replace(/_/g, " ")} · rebuilt for scoring`);
      for (const f of st.frames) {
        const i = f.leads.indexOf(lead);
        if (i < 0) continue;
        ECG.trace(ctx, f.x[i], f.fs, f.t0, tStart, x0, yBase, w, { clip });
        for (const d of drops) {  // the unusable stretch: drawn dashed and purple, over the black
          const a = Math.max(0, Math.floor((d.start_ts - f.t0) * f.fs)), b = Math.min(f.x[i].length, Math.ceil((d.end_ts - f.t0) * f.fs));
          if (b > a) ECG.trace(ctx, f.x[i].slice(a, b), f.fs, f.t0 + a / f.fs, tStart, x0, yBase, w, { colour: ECG.COLOURS.rebuilt, width: 2, dash: [4, 3], clip });
        }
      }
    });
    // beat marks with their classes, over the first lead
    const pxs = ECG.MM_PER_S * mm;
    ctx.font = "bold 11px system-ui";
    for (const b of st.beats) {
      if (b.t < tStart || b.t > head) continue;
      const c = st.classes.get(b.t.toFixed(3));
      const label = c ? c.label : "▾";
      const x = x0 + (b.t - tStart) * pxs;
      ctx.fillStyle = ECG.COLOURS.beat[c ? c.label : "?"];
      ctx.fillText(label, x - 3, 11);
      ctx.fillRect(x - 0.5, 13, 1, 4);
    }
    // time ticks every second
    ctx.fillStyle = "#555"; ctx.font = "10px system-ui";
    for (let s = Math.ceil(tStart); s <= head; s++) ctx.fillText(Live.fmtTime(s).slice(0, 8), x0 + (s - tStart) * pxs + 2, H - 3);
  }

  let sctx = null;
  function drawScores() {
    const models = Object.keys(st.scores).sort();
    const rowH = 70, SW = W, H = Math.max(1, models.length) * rowH;
    if (!sctx || $("scores").height !== Math.round(H * (window.devicePixelRatio || 1))) sctx = ECG.setup($("scores"), SW, H);
    sctx.clearRect(0, 0, SW, H);
    if (!models.length) { sctx.fillStyle = "#555"; sctx.fillText("no scores yet", 10, 20); return; }
    const tEnd = st.lastTs || Date.now() / 1000, tBeg = tEnd - 300, x0 = 110, w = SW - x0 - 10;
    models.forEach((m, j) => {
      const pts = st.scores[m].filter((p) => p.t >= tBeg && p.score !== null);
      const th = pts.length ? pts[pts.length - 1].threshold : null;
      const y0 = j * rowH;
      let hi = Math.max(th || 0, ...pts.map((p) => p.score)) * 1.15 || 1;
      sctx.fillStyle = "#000"; sctx.font = "bold 12px system-ui"; sctx.fillText(m, 4, y0 + 16);
      sctx.font = "11px system-ui"; sctx.fillStyle = "#555";
      if (th !== null) sctx.fillText(`threshold ${th.toPrecision(3)}`, 4, y0 + 30);
      const last = pts[pts.length - 1];
      if (last) { sctx.fillStyle = last.anomalous ? "#c00000" : "#1a6b1a"; sctx.fillText(`latest ${last.score.toPrecision(3)}${last.anomalous ? " ANOMALOUS" : ""}`, 4, y0 + 44); }
      sctx.strokeStyle = "#ddd"; sctx.strokeRect(x0, y0 + 4, w, rowH - 10);
      const X = (t) => x0 + ((t - tBeg) / 300) * w, Y = (v) => y0 + rowH - 6 - (Math.min(v, hi) / hi) * (rowH - 12);
      if (th !== null) { sctx.setLineDash([5, 4]); sctx.strokeStyle = "#c00000"; sctx.beginPath(); sctx.moveTo(x0, Y(th)); sctx.lineTo(x0 + w, Y(th)); sctx.stroke(); sctx.setLineDash([]); }
      sctx.strokeStyle = "#1f5fbf"; sctx.beginPath();
      pts.forEach((p, i) => (i ? sctx.lineTo(X(p.t), Y(p.score)) : sctx.moveTo(X(p.t), Y(p.score))));
      sctx.stroke();
      for (const p of pts) {
        sctx.fillStyle = p.anomalous ? "#c00000" : "#1f5fbf";
        sctx.beginPath(); sctx.arc(X(p.t), Y(p.score), 2.2, 0, 7);
        if (p.recovered_by) { sctx.strokeStyle = ECG.COLOURS.rebuilt; sctx.stroke(); } else sctx.fill();
      }
    });
  }

  function drawAttention() {
    const a = st.attention;
    const box = $("attention");
    if (!a) return;
    const leads = Object.keys(a.lead_attention), vals = leads.map((l) => a.lead_attention[l]);
    const lo = Math.min(...vals), span = Math.max(Math.max(...vals) - lo, 1e-9);
    box.innerHTML = "";
    for (const l of leads) {
      const c = document.createElement("div");
      c.className = "att-cell"; c.dataset.lead = l;
      c.style.background = ECG.heat(0.15 + 0.85 * (a.lead_attention[l] - lo) / span, [31, 119, 180]);
      c.textContent = `${l}\n${a.lead_attention[l].toFixed(3)}`;
      box.appendChild(c);
    }
    $("attention-note").textContent = `(${a.model}, window from ${Live.fmtTime(a.t)}: share of attention per lead; uniform = 0.083)`;
  }

  function renderAlarms() {
    const body = $("alarms").querySelector("tbody");
    const list = [...st.alarms.values()].sort((a, b) => (b.at_ts || b.start_ts) - (a.at_ts || a.start_ts));
    body.innerHTML = "";
    for (const a of list) {
      const tr = document.createElement("tr");
      tr.dataset.id = a.id;
      const act = st.actions.get(a.id);
      const actText = act ? `${act.action === "silence" ? "silenced" : "acknowledged"} by ${Live.esc(act.user)} at ${Live.fmtTime(act.at_ts)}` : "";
      tr.innerHTML = `<td>${Live.fmtTime(a.start_ts)}${a.end_ts ? "–" + Live.fmtTime(a.end_ts) : ""}</td>
        <td><span class="sev-${Live.esc(a.severity)}" style="padding:1px 4px">${Live.esc(a.severity)}</span> ${Live.esc(a.kind.replace(/_/g, " "))}</td>
        <td>${a.resolved ? "resolved" : "raised"}</td><td class="ev">${Live.esc(JSON.stringify(a.evidence))}</td>
        <td class="act">${actText}</td>`;
      if (!a.resolved && !act) {
        for (const [label, action] of [["Acknowledge", "acknowledge"], ["Silence 2 min", "silence"]]) {
          const b = document.createElement("button");
          b.textContent = label; b.className = action;
          b.onclick = () => act_(a, action);
          tr.querySelector(".act").appendChild(b);
        }
      }
      body.appendChild(tr);
    }
  }

  async function act_(a, action) {
    const user = $("user").value.trim();
    if (!user) { $("user").focus(); $("user").placeholder = "enter your name first"; return; }
    localStorage.setItem("ecg-user", user);
    const r = await fetch(`/api/live/alarms/${encodeURIComponent(a.id)}/actions`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ action, user, silence_s: action === "silence" ? 120 : null }),
    });
    if (!r.ok) { const e = await r.json().catch(() => ({})); alert("not recorded: " + (e.error || r.status)); }
  }

  function addAlarm(a) {
    const prev = st.alarms.get(a.id);
    const merged = { ...(prev || {}), ...a, resolved: a.status === "resolved" || (prev && prev.resolved) };
    st.alarms.set(a.id, merged);
  }

  function summary(tile) {
    if (!tile) return;
    st.tile = tile;
    $("record").textContent = tile.record || "?";
    $("hr").textContent = tile.hr_bpm ? Math.round(tile.hr_bpm) : "--";
    const s = $("alarm-state");
    if (tile.active.length) { const a = tile.active[0]; s.className = "sev-" + a.severity; s.textContent = `${a.severity.toUpperCase()} ${a.kind.replace(/_/g, " ")}`; }
    else { s.className = ""; s.textContent = "no alarm"; }
    $("signal").textContent = tile.signal;
  }

  function onEvent(ev) {
    if (ev.type === "snapshot") {
      window.__patient.snapshots++;
      if (!ev.known) { $("record").textContent = "(no data yet for this stream)"; return; }
      st.frames = []; st.lastTs = null; st.leads = ev.leads; layout();
      for (const f of ev.frames) addFrame(f);
      st.beats = ev.beats; st.classes = new Map(ev.classes.map((c) => [c.t.toFixed(3), c]));
      st.dropouts = ev.dropouts; st.scores = ev.scores; st.attention = ev.attention;
      for (const a of ev.alarms) { firstTime(a); addAlarm(a); }
      st.actions = new Map(ev.actions.map((x) => [x.alert_id, x]));
      summary(ev.tile); renderAlarms(); drawAttention(); drawScores();
    } else if (ev.type === "frame") {
      addFrame(ev);
    } else if (ev.type === "beats") {
      st.beats.push(...ev.beats); if (st.beats.length > 200) st.beats.splice(0, st.beats.length - 200);
      for (const c of ev.classes) st.classes.set(c.t.toFixed(3), c);
      if (st.classes.size > 400) st.classes = new Map([...st.classes].slice(-200));
      if (st.tile) { st.tile.hr_bpm = ev.hr_bpm; summary(st.tile); }
    } else if (ev.type === "scores") {
      for (const s of ev.scores) { (st.scores[s.model] = st.scores[s.model] || []).push(s); if (st.scores[s.model].length > 400) st.scores[s.model].shift(); }
      if (ev.attention) { st.attention = ev.attention; drawAttention(); }
      drawScores();
    } else if (ev.type === "dropout") {
      st.dropouts.push(ev); if (st.dropouts.length > 100) st.dropouts.shift();
    } else if (ev.type === "alert") {
      if (!firstTime(ev.alert)) return;
      addAlarm(ev.alert); summary(ev.tile); renderAlarms();
    } else if (ev.type === "action") {
      st.actions.set(ev.alert_id, ev); renderAlarms();
    }
  }

  layout();
  Live.connect("/api/live/events?view=patient&stream=" + encodeURIComponent(sid), onEvent, (s) => { const c = $("conn"); c.textContent = s; c.className = s; });
  setInterval(drawEcg, 100);  // 10 redraws per second
  setInterval(() => { if (st.tile) $("freshness").textContent = st.lastTs ? `latest sample ${Live.fmtTime(st.lastTs)}` : ""; }, 1000);
})();
