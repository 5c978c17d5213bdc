// ecg-monitor live view: one Server-Sent Events connection that reconnects by itself and de-duplicates
// alarms by (id, status) (alert ids are deterministic; Kafka delivery is at-least-once, and every
// reconnection starts with a snapshot that repeats what the page may already have).
"use strict";
const Live = (() => {
  function connect(url, onEvent, onState) {
    let es = null, delay = 1000, timer = null;
    const open = () => {
      timer = null;
      es = new EventSource(url, { withCredentials: true });
      es.onopen = () => { delay = 1000; onState("live"); };
      es.onmessage = (m) => {
        let ev;
        try { ev = JSON.parse(m.data); } catch (e) { return; }  // a malformed event: skipped
        try { onEvent(ev); } catch (e) { console.error(e); }
      };
      es.onerror = () => {
        onState("reconnecting");
        if (es.readyState === EventSource.CLOSED) {  // refused (401/429) or server gone: retry with back-off
          es.close();
          if (!timer) timer = setTimeout(open, delay);
          delay = Math.min(delay * 2, 15000);
        }
      };
    };
    open();
    return { close: () => { if (es) es.close(); if (timer) clearTimeout(timer); } };
  }

  // (id, status) pairs seen: true the first time.
  function dedup() {
    const seen = new Set();
    return (a) => { const k = a.id + "|" + a.status; if (seen.has(k)) return false; seen.add(k); if (seen.size > 100000) seen.clear(); return true; };
  }

  const SEV_RANK = { critical: 4, warning: 3, advisory: 2, info: 1 };
  const fmtTime = (ts) => (ts ? new Date(ts * 1000).toISOString().slice(11, 19) + "Z" : "?");
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  return { connect, dedup, SEV_RANK, fmtTime, esc };
})();
