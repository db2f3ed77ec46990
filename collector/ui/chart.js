// Small SVG charts for the Tapline UI: a time series against a band, and a scatter of
// scores over time. Both draw axes with units and are built with DOM calls only (no
// HTML strings), so no data can inject markup.
"use strict";

const TaplineChart = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 860, H = 280, M = { top: 16, right: 16, bottom: 44, left: 60 };

  function el(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Round tick steps: 1, 2, 5 × 10^n.
  function niceStep(range, target) {
    const raw = range / Math.max(1, target);
    const p = Math.pow(10, Math.floor(Math.log10(raw || 1)));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  const pad = (n) => String(n).padStart(2, "0");
  function timeLabel(us, withDate) {
    const d = new Date(us / 1000);
    const hm = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
    return withDate ? `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${hm}` : hm;
  }

  // Time ticks at round hours (or minutes), labelled HH:MM with the date at midnight
  // and on the first tick.
  function timeTicks(from, to) {
    const span = to - from;
    const H_US = 3600e6, M_US = 60e6;
    const steps = [M_US, 5 * M_US, 10 * M_US, 15 * M_US, 30 * M_US, H_US, 2 * H_US, 3 * H_US,
      6 * H_US, 12 * H_US, 24 * H_US, 48 * H_US];
    const step = steps.find((s) => span / s <= 8) || 96 * H_US;
    const ticks = [];
    for (let t = Math.ceil(from / step) * step; t <= to; t += step) ticks.push(t);
    return ticks;
  }

  function frame(svg, x0, x1, yMax, yUnit, xTitle) {
    const iw = W - M.left - M.right, ih = H - M.top - M.bottom;
    const sx = (t) => M.left + ((t - x0) / Math.max(1, x1 - x0)) * iw;
    const sy = (v) => M.top + ih - (v / yMax) * ih;
    const g = el("g", { class: "axes" });
    const ys = niceStep(yMax, 5);
    for (let v = 0; v <= yMax + 1e-9; v += ys) {
      g.append(el("line", { x1: M.left, x2: M.left + iw, y1: sy(v), y2: sy(v), class: "grid" }));
      g.append(el("text", { x: M.left - 6, y: sy(v) + 4, "text-anchor": "end", class: "tick" },
        Number.isInteger(ys) ? String(v) : v.toFixed(2)));
    }
    let first = true;
    for (const t of timeTicks(x0, x1)) {
      const d = new Date(t / 1000);
      const withDate = first || (d.getUTCHours() === 0 && d.getUTCMinutes() === 0);
      first = false;
      g.append(el("line", { x1: sx(t), x2: sx(t), y1: M.top + ih, y2: M.top + ih + 5, class: "axis" }));
      g.append(el("text", { x: sx(t), y: M.top + ih + 18, "text-anchor": "middle", class: "tick" },
        timeLabel(t, withDate)));
    }
    g.append(el("line", { x1: M.left, x2: M.left + iw, y1: M.top + ih, y2: M.top + ih, class: "axis" }));
    g.append(el("line", { x1: M.left, x2: M.left, y1: M.top, y2: M.top + ih, class: "axis" }));
    g.append(el("text", { x: 14, y: M.top + ih / 2, transform: `rotate(-90 14 ${M.top + ih / 2})`,
      "text-anchor": "middle", class: "unit" }, yUnit));
    g.append(el("text", { x: M.left + iw / 2, y: H - 6, "text-anchor": "middle", class: "unit" }, xTitle));
    svg.append(g);
    return { sx, sy, iw, ih };
  }

  function svgRoot(label) {
    return el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart" });
  }

  function legend(items) {
    const ul = document.createElement("ul");
    ul.className = "legend";
    for (const [cls, text] of items) {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = `swatch ${cls}`;
      li.append(sw, document.createTextNode(text));
      ul.append(li);
    }
    return ul;
  }

  // data: {points: [{t_us, count, low?, high?, mean?}], step_s}; mark: {from_us, to_us}.
  function band(container, data, mark) {
    const pts = data.points || [];
    const stepUs = data.step_s * 1e6;
    const unit = data.step_s >= 3600 ? "requests per hour" : "requests per minute";
    const svg = svgRoot(`Actor activity, ${unit}, against its baseline band`);
    svg.dataset.points = String(pts.length);
    svg.dataset.nonzero = String(pts.filter((p) => p.count > 0).length);
    if (!pts.length) {
      container.replaceChildren(svg);
      return svg;
    }
    const x0 = pts[0].t_us, x1 = pts[pts.length - 1].t_us + stepUs;
    let yMax = 1;
    for (const p of pts) yMax = Math.max(yMax, p.count, p.high || 0);
    yMax = Math.ceil(yMax / niceStep(yMax, 5)) * niceStep(yMax, 5);
    const { sx, sy, ih } = frame(svg, x0, x1, yMax, unit, "time (UTC)");
    const mid = (p) => p.t_us + stepUs / 2;
    if (mark) {
      const a = Math.max(x0, mark.from_us), b = Math.min(x1, Math.max(mark.to_us, mark.from_us + stepUs));
      if (b > a) svg.append(el("rect", { x: sx(a), y: M.top, width: Math.max(2, sx(b) - sx(a)), height: ih, class: "alert-window" }));
    }
    const banded = pts.filter((p) => p.high !== undefined);
    if (banded.length) {
      const upper = banded.map((p) => `${sx(mid(p)).toFixed(1)},${sy(p.high).toFixed(1)}`);
      const lower = banded.slice().reverse().map((p) => `${sx(mid(p)).toFixed(1)},${sy(p.low).toFixed(1)}`);
      svg.append(el("polygon", { points: upper.concat(lower).join(" "), class: "band" }));
      svg.append(el("polyline", { points: banded.map((p) => `${sx(mid(p)).toFixed(1)},${sy(p.mean).toFixed(1)}`).join(" "), class: "mean" }));
    }
    svg.append(el("polyline", { points: pts.map((p) => `${sx(mid(p)).toFixed(1)},${sy(p.count).toFixed(1)}`).join(" "), class: "series" }));
    const dots = el("g", { class: "dots" });
    for (const p of pts) {
      const out = p.high !== undefined && p.count > p.high;
      const c = el("circle", { cx: sx(mid(p)), cy: sy(p.count), r: out ? 3.5 : 2.2, class: out ? "point above" : "point" });
      c.append(el("title", {}, `${timeLabel(p.t_us, true)} UTC: ${p.count} requests` +
        (p.high !== undefined ? ` (expected ${p.mean}, band ${p.low}–${p.high})` : "")));
      dots.append(c);
    }
    svg.append(dots);
    const box = document.createElement("figure");
    box.className = "chart-box";
    const cap = document.createElement("figcaption");
    cap.textContent = data.baseline_days
      ? `Band: ${data.baseline} (${data.baseline_days} days of history).`
      : "No history before this window: no band.";
    box.append(svg, legend([["s-series", unit], ["s-band", "baseline band (mean ± 2σ)"], ["s-mean", "expected"], ["s-alert", "alert window"]]), cap);
    container.replaceChildren(box);
    return svg;
  }

  // points: [{ts_us, score, severity}]; thresholds: [[score, label]].
  // domain: [from_us, to_us] the x axis covers at least (the actor's life).
  function scatter(container, points, thresholds, domain) {
    const svg = svgRoot("Risk score of the actor's alerts over time");
    svg.dataset.points = String(points.length);
    if (!points.length) {
      container.replaceChildren(svg);
      return svg;
    }
    let x0 = Math.min(...points.map((p) => p.ts_us)), x1 = Math.max(...points.map((p) => p.ts_us));
    if (domain) { x0 = Math.min(x0, domain[0]); x1 = Math.max(x1, domain[1]); }
    if (x1 - x0 < 3600e6) { x0 -= 1800e6; x1 += 1800e6; }
    const padX = (x1 - x0) * 0.03;
    x0 -= padX; x1 += padX;
    const yMax = Math.max(1.2, ...points.map((p) => p.score)) * 1.05;
    const { sx, sy } = frame(svg, x0, x1, yMax, "alert score", "time (UTC)");
    for (const [v, label] of thresholds) {
      svg.append(el("line", { x1: M.left, x2: W - M.right, y1: sy(v), y2: sy(v), class: "threshold" }));
      svg.append(el("text", { x: W - M.right - 4, y: sy(v) - 3, "text-anchor": "end", class: "tick" }, label));
    }
    const sorted = points.slice().sort((a, b) => a.ts_us - b.ts_us);
    svg.append(el("polyline", { points: sorted.map((p) => `${sx(p.ts_us).toFixed(1)},${sy(p.score).toFixed(1)}`).join(" "), class: "series faint" }));
    for (const p of sorted) {
      const c = el("circle", { cx: sx(p.ts_us), cy: sy(p.score), r: 4, class: `point sev-${p.severity}` });
      c.append(el("title", {}, `${timeLabel(p.ts_us, true)} UTC: ${p.type} ${p.severity}, score ${p.score.toFixed(2)}`));
      svg.append(c);
    }
    container.replaceChildren(svg);
    return svg;
  }

  return { band, scatter, timeLabel };
})();
