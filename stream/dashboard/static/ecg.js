// ecg-monitor: ECG paper drawing on canvas (plain JS, no library).
// Standard paper: 25 mm/s, 10 mm/mV; 1 mm small squares, 5 mm large squares. One CSS millimetre is
// 96/25.4 px (the CSS reference pixel): on a screen of another density the scale is what the browser makes
// of "1 mm" -- the calibration pulse (1 mV x 0.2 s = 10 mm x 5 mm) drawn at the start of each strip shows it.
"use strict";
const ECG = (() => {
  const PX_PER_MM = 96 / 25.4;
  const MM_PER_S = 25;
  const MM_PER_MV = 10;
  const COLOURS = {
    gridMinor: "#f6d3d3", gridMajor: "#e59a9a", paper: "#fffafa", trace: "#000",
    recon: "#d62728", rebuilt: "#7b3fa0", beat: { N: "#333", S: "#1f5fbf", V: "#c00000", F: "#d97a00", Q: "#777", "?": "#999" },
  };

  // A canvas sized in CSS px, drawn at the device's pixel ratio.
  function setup(canvas, cssW, cssH) {
    const dpr = window.devicePixelRatio || 1;
    canvas.style.width = cssW + "px"; canvas.style.height = cssH + "px";
    canvas.width = Math.round(cssW * dpr); canvas.height = Math.round(cssH * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return ctx;
  }

  // ECG grid over the rectangle (x, y, w, h) in CSS px.
  function grid(ctx, x, y, w, h) {
    ctx.save();
    ctx.fillStyle = COLOURS.paper; ctx.fillRect(x, y, w, h);
    const mm = PX_PER_MM;
    for (const [step, colour, width] of [[1, COLOURS.gridMinor, 0.5], [5, COLOURS.gridMajor, 0.9]]) {
      ctx.beginPath(); ctx.strokeStyle = colour; ctx.lineWidth = width;
      for (let i = 0; i * step * mm <= w + 0.01; i++) { const px = Math.round(x + i * step * mm) + 0.5; ctx.moveTo(px, y); ctx.lineTo(px, y + h); }
      for (let i = 0; i * step * mm <= h + 0.01; i++) { const py = Math.round(y + i * step * mm) + 0.5; ctx.moveTo(x, py); ctx.lineTo(x + w, py); }
      ctx.stroke();
    }
    ctx.restore();
  }

  // Calibration pulse (1 mV, 0.2 s) with its baseline at yBase, starting at x; returns its width (px).
  function calibration(ctx, x, yBase) {
    const mm = PX_PER_MM, w = 5 * mm, h = MM_PER_MV * mm;
    ctx.save(); ctx.strokeStyle = COLOURS.trace; ctx.lineWidth = 1.4; ctx.beginPath();
    ctx.moveTo(x, yBase); ctx.lineTo(x + 1.5 * mm, yBase); ctx.lineTo(x + 1.5 * mm, yBase - h);
    ctx.lineTo(x + 1.5 * mm + w, yBase - h); ctx.lineTo(x + 1.5 * mm + w, yBase); ctx.lineTo(x + 3 * mm + w, yBase);
    ctx.stroke(); ctx.restore();
    return 3 * mm + w;
  }

  // Draw samples (mV; null/NaN = missing: a gap) at fs Hz from time t0 (s) onto the strip whose time
  // tStart (s) is at x0 and baseline (0 mV) at yBase; clip to [x0, x0 + w] and, with style.clip = [yTop, h],
  // to that row (a complex taller than its row is cut at the row's edge, never drawn over the next lead).
  // style: {colour, width, dash, clip}.
  function trace(ctx, samples, fs, t0, tStart, x0, yBase, w, style = {}) {
    const mm = PX_PER_MM, pxs = MM_PER_S * mm, pmv = MM_PER_MV * mm;
    ctx.save();
    const [cy, ch] = style.clip || [yBase - 200, 400];
    ctx.beginPath(); ctx.rect(x0, cy, w, ch); ctx.clip();
    ctx.strokeStyle = style.colour || COLOURS.trace; ctx.lineWidth = style.width || 1.1;
    if (style.dash) ctx.setLineDash(style.dash);
    ctx.beginPath();
    let pen = false;
    const i0 = Math.max(0, Math.floor((tStart - t0) * fs) - 1);
    const i1 = Math.min(samples.length, Math.ceil((tStart + w / pxs - t0) * fs) + 1);
    for (let i = i0; i < i1; i++) {
      const v = samples[i];
      if (v === null || v === undefined || Number.isNaN(v)) { pen = false; continue; }
      const px = x0 + (t0 + i / fs - tStart) * pxs, py = yBase - v * pmv;
      if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
      pen = true;
    }
    ctx.stroke(); ctx.restore();
  }

  // A hatched band marking [ta, tb) s as not ECG (dropout / rebuilt), labelled.
  function band(ctx, ta, tb, tStart, x0, yTop, w, h, label) {
    const pxs = MM_PER_S * PX_PER_MM;
    const a = Math.max(x0, x0 + (ta - tStart) * pxs), b = Math.min(x0 + w, x0 + (tb - tStart) * pxs);
    if (b <= a) return;
    ctx.save();
    ctx.fillStyle = "rgba(123,63,160,0.10)"; ctx.fillRect(a, yTop, b - a, h);
    ctx.strokeStyle = "rgba(123,63,160,0.35)"; ctx.lineWidth = 1; ctx.beginPath();
    for (let x = a - h; x < b; x += 8) { ctx.moveTo(Math.max(a, x), yTop + h - Math.max(0, a - x)); ctx.lineTo(Math.min(b, x + h), yTop + Math.max(0, x + h - b)); }
    ctx.stroke();
    if (label && b - a > 40) { ctx.fillStyle = COLOURS.rebuilt; ctx.font = "bold 11px system-ui, sans-serif"; ctx.fillText(label, a + 3, yTop + 12); }
    ctx.restore();
  }

  function heat(v, rgb) {  // v in [0, 1] -> white .. rgb
    const t = Math.max(0, Math.min(1, v));
    const c = rgb.map((x) => Math.round(255 - t * (255 - x)));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  return { PX_PER_MM, MM_PER_S, MM_PER_MV, COLOURS, setup, grid, calibration, trace, band, heat };
})();
