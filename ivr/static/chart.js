// A grouped bar chart in plain SVG (no library, nothing fetched): one group per interval, one
// bar per series. Every bar carries data-series, data-start and data-value, and a <title>.
"use strict";
const barChart = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const WIDTH = 960, HEIGHT = 260;
  const PAD = { left: 44, right: 12, top: 14, bottom: 34 };

  function node(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // A round step for the y axis: about four lines up to max.
  function step(max) {
    const raw = Math.max(1, max) / 4;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const mult = [1, 2, 5, 10].find((m) => m * power >= raw);
    return Math.max(1, mult * power);
  }

  function clock(epoch) {
    const d = new Date(epoch * 1000);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }

  // series: [{name, label, className, values}], starts: interval starts (epoch seconds).
  function draw(svg, starts, series) {
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    svg.setAttribute("role", "img");
    const max = Math.max(1, ...series.flatMap((s) => s.values));
    const unit = step(max);
    const top = Math.ceil(max / unit) * unit;
    const plotW = WIDTH - PAD.left - PAD.right, plotH = HEIGHT - PAD.top - PAD.bottom;
    const y = (v) => PAD.top + plotH - (v / top) * plotH;
    for (let v = 0; v <= top; v += unit) {
      svg.append(node("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
      svg.append(node("text", { x: PAD.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, String(v)));
    }
    const group = plotW / Math.max(1, starts.length);
    const bar = Math.max(1, (group * 0.8) / series.length);
    const labelEvery = Math.ceil(starts.length / 12);
    starts.forEach((start, i) => {
      const x0 = PAD.left + i * group + group * 0.1;
      series.forEach((s, j) => {
        const value = s.values[i];
        const rect = node("rect", {
          x: x0 + j * bar, y: y(value), width: Math.max(0.5, bar - 1), height: y(0) - y(value),
          class: "bar " + s.className, "data-series": s.name, "data-start": start, "data-value": value,
        });
        rect.append(node("title", {}, `${clock(start)} ${s.label}: ${value}`));
        svg.append(rect);
      });
      if (i % labelEvery === 0) {
        svg.append(node("text", { x: x0 + (group * 0.8) / 2, y: HEIGHT - PAD.bottom + 16, class: "axis", "text-anchor": "middle" }, clock(start)));
      }
    });
    svg.append(node("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(0), y2: y(0), class: "baseline" }));
  }

  return { draw };
})();
