// Charts drawn as SVG by hand: a time axis of fixed buckets, bars or lines.
// Presentation goes through classes and SVG attributes only (the page's
// Content-Security-Policy forbids inline styles).

const NS = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten.
export function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function timeLabel(ms, spanMs) {
  const d = new Date(ms);
  if (spanMs > 2 * 86400000) {
    return d.toLocaleDateString(undefined, { weekday: "short", day: "numeric" });
  }
  return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

/// A chart of `series` over buckets starting at `xs` (ms).
/// series: [{ name, values: [number|null], kind: "bar"|"line", cls }]
/// format: how the y axis and the tooltips write a value (with its unit).
export function chart({ title, xs, bucketMs, series, format, width = 600, height = 170 }) {
  const pad = { l: 56, r: 8, t: 8, b: 22 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const all = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const max = niceMax(Math.max(0, ...all));
  const n = xs.length;
  const step = w / Math.max(n, 1);
  const y = (v) => pad.t + h - (v / max) * h;
  const x = (i) => pad.l + i * step;

  const svg = el("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    "aria-label": `${title}: ${series.map((s) => s.name).join(", ")} over time, up to ${format(max)}`,
    width,
    height,
  });
  svg.appendChild(el("title", {}, title));
  // Grid and y axis labels.
  for (const f of [0, 0.5, 1]) {
    const gy = y(max * f);
    svg.appendChild(el("line", { x1: pad.l, x2: width - pad.r, y1: gy, y2: gy, class: "gridline" }));
    svg.appendChild(el("text", { x: pad.l - 6, y: gy + 4, class: "axis", "text-anchor": "end" }, format(max * f)));
  }
  // Time labels: first, middle, last bucket.
  const span = n * bucketMs;
  for (const i of [0, Math.floor(n / 2), n - 1]) {
    if (i < 0 || i >= n) continue;
    const anchor = i === 0 ? "start" : i === n - 1 ? "end" : "middle";
    svg.appendChild(
      el("text", { x: x(i) + (i === n - 1 ? step : 0), y: height - 6, class: "axis", "text-anchor": anchor }, timeLabel(xs[i], span)),
    );
  }
  const bars = series.filter((s) => s.kind === "bar");
  bars.forEach((s, k) => {
    const g = el("g", { class: `bars ${s.cls}` });
    const bw = Math.max(1, step / bars.length - 1);
    s.values.forEach((v, i) => {
      if (!v) return;
      const r = el("rect", { x: x(i) + k * (bw + 0.5), y: y(v), width: bw, height: Math.max(0.5, pad.t + h - y(v)) });
      r.appendChild(el("title", {}, `${timeLabel(xs[i], span)} ${s.name}: ${format(v)}`));
      g.appendChild(r);
    });
    svg.appendChild(g);
  });
  for (const s of series.filter((s) => s.kind === "line")) {
    let d = "";
    let pen = false;
    const g = el("g", { class: `line ${s.cls}` });
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) {
        pen = false;
        return;
      }
      const px = x(i) + step / 2;
      d += `${pen ? "L" : "M"}${px.toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
      const dot = el("circle", { cx: px.toFixed(1), cy: y(v).toFixed(1), r: 2 });
      dot.appendChild(el("title", {}, `${timeLabel(xs[i], span)} ${s.name}: ${format(v)}`));
      g.appendChild(dot);
    });
    g.insertBefore(el("path", { d }), g.firstChild);
    svg.appendChild(g);
  }
  return svg;
}

/// A legend naming each series with its swatch.
export function legend(series) {
  const ul = document.createElement("ul");
  ul.className = "legend";
  for (const s of series) {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = `swatch ${s.cls}`;
    sw.setAttribute("aria-hidden", "true");
    li.append(sw, s.name);
    ul.appendChild(li);
  }
  return ul;
}
