// The operator console of the live page: polls GET /api/console (bearer
// publish_token) once a second, derives rates and latency quantiles from
// successive snapshots, and draws them on canvases (no chart library). The
// publish token stays in this module's memory: never stored, never shown.

const POINTS = 120; // two minutes at one snapshot a second

/**
 * quantile estimates the q-quantile of the observations that fell between
 * two snapshots of a Prometheus histogram, the way histogram_quantile does
 * (linear within a bucket). NaN when there was none.
 */
export function quantile(q, bounds, prev, cur) {
  const n = bounds.length;
  const count = (h, i) => (h && h.counts && h.counts[i] !== undefined ? h.counts[i] : 0);
  const total = cur.count - (prev ? prev.count : 0);
  if (!(total > 0) || n === 0) return NaN;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < n; i++) {
    const c = count(cur, i) - count(prev, i);
    if (c >= rank) {
      const inBucket = c - below;
      return lower + (bounds[i] - lower) * (inBucket > 0 ? (rank - below) / inBucket : 1);
    }
    lower = bounds[i];
    below = c;
  }
  return bounds[n - 1]; // beyond the last bound: at least that
}

export function formatSeconds(s) {
  if (!Number.isFinite(s)) return "–";
  if (s === 0) return "0";
  if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
  if (s < 0.01) return (s * 1000).toFixed(2) + " ms";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  return s.toFixed(2) + " s";
}

function formatRate(r) {
  if (!Number.isFinite(r)) return "–";
  return r >= 100 ? r.toFixed(0) : r.toFixed(1);
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/** drawChart draws series [{name, color, values}] on canvas. */
export function drawChart(canvas, series, format) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const right = 8;
  const top = 18;
  const bottom = 16;
  let max = 0;
  for (const s of series) for (const v of s.values) if (Number.isFinite(v) && v > max) max = v;
  max = niceMax(max);
  g.font = "11px system-ui, sans-serif";
  // The y axis is as wide as its widest label.
  let left = 0;
  for (let i = 0; i <= 2; i++) left = Math.max(left, g.measureText(format((max * i) / 2)).width);
  left = Math.ceil(left) + 12;
  g.textBaseline = "middle";
  g.strokeStyle = "#e5e7eb";
  g.fillStyle = "#6b7280";
  g.lineWidth = 1;
  for (let i = 0; i <= 2; i++) {
    const y = top + ((h - top - bottom) * i) / 2;
    g.beginPath();
    g.moveTo(left, Math.round(y) + 0.5);
    g.lineTo(w - right, Math.round(y) + 0.5);
    g.stroke();
    g.textAlign = "right";
    g.fillText(format((max * (2 - i)) / 2), left - 6, y);
  }
  g.textAlign = "left";
  g.fillText("−2 min", left, h - bottom / 2);
  g.textAlign = "right";
  g.fillText("now", w - right, h - bottom / 2);
  const xOf = (i) => left + ((w - left - right) * i) / (POINTS - 1);
  const yOf = (v) => top + (h - top - bottom) * (1 - v / max);
  let lx = left;
  for (const s of series) {
    const off = POINTS - s.values.length;
    g.strokeStyle = s.color;
    g.lineWidth = 1.8;
    g.beginPath();
    let pen = false;
    s.values.forEach((v, i) => {
      if (!Number.isFinite(v)) {
        pen = false;
        return;
      }
      const x = xOf(off + i);
      const y = yOf(v);
      if (pen) g.lineTo(x, y);
      else g.moveTo(x, y);
      pen = true;
    });
    g.stroke();
    g.fillStyle = s.color;
    g.fillRect(lx, 5, 10, 3);
    g.fillStyle = "#374151";
    g.textAlign = "left";
    g.textBaseline = "middle";
    const last = s.values.length ? s.values[s.values.length - 1] : NaN;
    const label = s.name + " " + format(last);
    g.fillText(label, lx + 14, 7);
    lx += 24 + g.measureText(label).width;
  }
}

/**
 * startConsole polls the console data with token and updates the page
 * through the elements in els; it returns a function that stops it.
 * onRefused(text) is told when the server refuses (401, 403, 404) or
 * cannot be reached.
 */
export function startConsole(token, els, onStatus) {
  let stopped = false;
  let prev = null;
  let timer = null;
  const hist = { conns: [], subs: [], in: [], out: [], p50: [], p99: [], slow: [], lag: [] };
  const push = (k, v) => {
    hist[k].push(v);
    if (hist[k].length > POINTS) hist[k].shift();
  };
  const state = { snapshots: 0, last: null, rates: null };
  window.airlayConsole = state; // for a look from the browser's devtools

  const tick = async () => {
    if (stopped) return;
    let snap;
    try {
      const r = await fetch("/api/console", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) {
        const why =
          r.status === 401
            ? "The server refuses the publish token"
            : r.status === 403
              ? "The server refuses this page's origin"
              : r.status === 404
                ? "The console is off on this server"
                : "The server answered " + r.status;
        onStatus(`${why}: ${body.detail || body.message || r.statusText} (HTTP ${r.status}).`, true, r.status);
        if (r.status === 401 || r.status === 403 || r.status === 404) return; // polling again would not help
        schedule();
        return;
      }
      snap = body;
    } catch (err) {
      onStatus(`The server cannot be reached (${err.message || err}); trying again.`, true, 0);
      schedule();
      return;
    }
    state.snapshots++;
    onStatus(`Live: ${location.host}, airlay ${snap.version}, up ${uptime(snap.time_ms - snap.started_ms)}.`, false, 200);
    render(snap);
    schedule();
  };
  const schedule = () => {
    if (!stopped) timer = setTimeout(tick, 1000);
  };

  const render = (s) => {
    const dt = prev ? (s.time_ms - prev.time_ms) / 1000 : 0;
    const rate = (k) => (prev && dt > 0 ? Math.max(0, s[k] - prev[k]) / dt : NaN);
    const rIn = rate("events_in_total");
    const rOut = rate("events_out_total");
    const rSlow = rate("slow_consumer_closes_total");
    const lat = s.delivery_latency_seconds;
    const p50 = prev ? quantile(0.5, lat.bounds, prev.delivery_latency_seconds, lat) : NaN;
    const p99 = prev ? quantile(0.99, lat.bounds, prev.delivery_latency_seconds, lat) : NaN;
    let lag = NaN;
    if (s.mongodb && prev && prev.mongodb) lag = quantile(0.99, s.mongodb.lag_seconds.bounds, prev.mongodb.lag_seconds, s.mongodb.lag_seconds);
    state.last = s;
    state.rates = { in: rIn, out: rOut, slow: rSlow, p50, p99, lag };

    els.connections.textContent = `${s.connections}`;
    els.connections.title = `of max_connections ${s.max_connections}; ${s.connections_opened_total} opened since start`;
    els.subscriptions.textContent = `${s.subscriptions}`;
    els.in.textContent = formatRate(rIn);
    els.inTotal.textContent = `${s.events_in_total} in all`;
    els.out.textContent = formatRate(rOut);
    els.outTotal.textContent = `${s.events_out_total} in all`;
    els.latency.textContent = `${formatSeconds(p50)} / ${formatSeconds(p99)}`;
    els.slow.textContent = `${s.slow_consumer_closes_total}`;
    els.slow.className = "v" + (rSlow > 0 ? " bad" : "");
    if (!s.mongodb) {
      els.stream.textContent = "no MongoDB";
      els.stream.className = "v";
      els.lag.textContent = "events only from POST /api/events";
    } else {
      els.stream.textContent = s.mongodb.stream_up ? "up" : "DOWN";
      els.stream.className = "v " + (s.mongodb.stream_up ? "good" : "bad");
      els.lag.textContent = `lag p99 ${formatSeconds(lag)}, ${s.mongodb.stream_resumes_total} resumes, ${s.mongodb.history_lost_total} history lost`;
      els.lag.title = "";
      if (Array.isArray(s.instances)) {
        // The live instances sharing the database, as of the latest heartbeat.
        const list = s.instances.map((i) => `${i.name}${i.self ? " (this one)" : ""}: ${i.connections} connections, ${i.subscriptions} subscriptions`);
        els.lag.textContent += `; ${s.instances.length} live instance${s.instances.length === 1 ? "" : "s"}`;
        els.lag.title = list.join("\n");
      }
    }

    push("conns", s.connections);
    push("subs", s.subscriptions);
    push("in", rIn);
    push("out", rOut);
    push("p50", p50);
    push("p99", p99);
    push("slow", rSlow);
    push("lag", lag);
    const n = (v) => (Number.isFinite(v) ? (v >= 100 ? v.toFixed(0) : +v.toFixed(1) + "") : "–");
    drawChart(els.chartConns, [
      { name: "connections", color: "#2563eb", values: hist.conns },
      { name: "subscriptions", color: "#9333ea", values: hist.subs },
    ], n);
    drawChart(els.chartEvents, [
      { name: "in", color: "#0891b2", values: hist.in },
      { name: "out", color: "#ea580c", values: hist.out },
    ], n);
    drawChart(els.chartLatency, [
      { name: "p50", color: "#16a34a", values: hist.p50 },
      { name: "p99", color: "#dc2626", values: hist.p99 },
    ], formatSeconds);
    drawChart(els.chartSlow, [{ name: "closes/s", color: "#b91c1c", values: hist.slow }], n);
    drawChart(els.chartLag, [{ name: s.mongodb ? "lag p99" : "no MongoDB", color: "#7c3aed", values: hist.lag }], formatSeconds);
    prev = s;
  };

  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function uptime(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 120) return s + " s";
  if (s < 7200) return Math.floor(s / 60) + " min";
  return Math.floor(s / 3600) + " h";
}
