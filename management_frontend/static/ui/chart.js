// A small SVG line chart: time on x, one or more series on y, gaps where a value is null.
// No library: a few dozen lines of SVG are enough for the dashboard's sparklines.

import { el, fmt } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 320;
const H = 120;
const PAD = { left: 34, right: 6, top: 8, bottom: 16 };
export const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(max) {
  if (!(max > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= max) return step * power;
  return 10 * power;
}

// chart({title, t: [unix s], series: [{name, values}], unit, max}) -> <div class="chart">
export function chart({ title, t, series, unit = "", max = null, id = null }) {
  const times = t || [];
  const values = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const top = max !== null ? max : niceMax(values.length ? Math.max(...values) : 0);
  const t0 = times.length ? times[0] : 0;
  const t1 = times.length > 1 ? times[times.length - 1] : t0 + 1;
  const x = (ti) => PAD.left + ((ti - t0) / (t1 - t0 || 1)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);

  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": title,
    "data-points": values.length,
  });
  root.append(
    svg("line", { class: "axis", x1: PAD.left, y1: y(0), x2: W - PAD.right, y2: y(0) }),
    svg("line", { class: "axis", x1: PAD.left, y1: y(top), x2: W - PAD.right, y2: y(top) }),
    svg("text", { class: "label", x: PAD.left - 4, y: y(top) + 3, "text-anchor": "end" }, fmt(top, 2)),
    svg("text", { class: "label", x: PAD.left - 4, y: y(0) + 3, "text-anchor": "end" }, "0"),
  );
  if (times.length > 1) {
    const span = Math.round((t1 - t0) / 60);
    root.append(
      svg("text", { class: "label", x: PAD.left, y: H - 3 }, span >= 1 ? `-${span} min` : `-${Math.round(t1 - t0)} s`),
      svg("text", { class: "label", x: W - PAD.right, y: H - 3, "text-anchor": "end" }, "now"),
    );
  }
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    let run = [];
    const flush = () => {
      if (run.length === 1) {
        const [px, py] = run[0];
        root.append(svg("circle", { cx: px, cy: py, r: 1.8, fill: color }));
      } else if (run.length > 1) {
        const points = run.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(" ");
        root.append(svg("polyline", { class: "line", points, stroke: color }));
      }
      run = [];
    };
    s.values.forEach((v, k) => {
      if (v === null || v === undefined || k >= times.length) flush();
      else run.push([x(times[k]), y(Math.min(v, top))]);
    });
    flush();
  });

  const legend = el("div", { class: "legend" });
  series.forEach((s, i) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = s.color || COLORS[i % COLORS.length];
    const last = [...s.values].reverse().find((v) => v !== null && v !== undefined);
    legend.append(el("span", {}, swatch, `${s.name} ${fmt(last ?? null, 2, unit)}`));
  });
  const box = el("div", { class: "chart", "data-chart": id || title }, el("div", { class: "title", text: title }));
  box.append(root, legend);
  return box;
}
