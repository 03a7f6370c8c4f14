// Small line charts drawn as SVG: one or two series over the same time steps.
"use strict";

const EmberCharts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 300;
  const H = 80;
  const PAD = 4;

  function el(name, attrs) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    return node;
  }

  function points(values, max) {
    const step = values.length > 1 ? (W - 2 * PAD) / (values.length - 1) : 0;
    return values.map((v, i) => [PAD + i * step, H - PAD - (v / max) * (H - 2 * PAD)]);
  }

  function format(value, unit) {
    if (unit === "ms") return value >= 1000 ? (value / 1000).toFixed(2) + " s" : value.toFixed(value < 10 ? 1 : 0) + " ms";
    return (value >= 100 ? value.toFixed(0) : value.toFixed(value >= 10 ? 1 : 2)) + (unit ? " " + unit : "");
  }

  // series: [{label, values, cls}]; the first series is filled below its line.
  // `since` labels the left end of the time axis ("10 min ago").
  function line(title, series, unit, since) {
    const figure = document.createElement("figure");
    figure.className = "chart";
    const max = Math.max(1e-9, ...series.flatMap((s) => s.values)) * 1.15;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
    svg.appendChild(el("line", { x1: 0, x2: W, y1: H - PAD, y2: H - PAD, class: "axis" }));
    series.forEach((s, index) => {
      const pts = points(s.values, max);
      const path = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
      if (index === 0 && pts.length) {
        const area = `${PAD},${H - PAD} ${path} ${pts[pts.length - 1][0].toFixed(1)},${H - PAD}`;
        svg.appendChild(el("polygon", { points: area, class: "area " + s.cls }));
      }
      svg.appendChild(el("polyline", { points: path, class: "line " + s.cls }));
    });
    const caption = document.createElement("figcaption");
    const name = document.createElement("span");
    name.className = "chart-title";
    name.textContent = title;
    caption.appendChild(name);
    for (const s of series) {
      const last = s.values.length ? s.values[s.values.length - 1] : 0;
      const item = document.createElement("span");
      item.className = "key " + s.cls;
      item.textContent = `${s.label} ${format(last, unit)}`;
      caption.appendChild(item);
    }
    const peak = document.createElement("span");
    peak.className = "peak";
    peak.textContent = "max " + format(max / 1.15, unit);
    caption.appendChild(peak);
    const axis = document.createElement("div");
    axis.className = "time-axis";
    const start = document.createElement("span");
    start.textContent = since || "";
    const end = document.createElement("span");
    end.textContent = "now";
    axis.append(start, end);
    figure.append(caption, svg, axis);
    return figure;
  }

  return { line, format };
})();
