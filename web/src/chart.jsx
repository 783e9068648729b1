// A time or step series, drawn with uPlot. The plot is made once and then given new data, so a
// refresh never flickers; it follows its box's width and the page's colours (light or dark).
import uPlot from "uplot";
import { useEffect, useRef } from "preact/hooks";

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// xs: numbers (unix seconds when `time`); series: [{label, values, unit}].
export function Chart({ title, xs, series, time = true, height = 180 }) {
  const box = useRef(null);
  const plot = useRef(null);
  const shape = series.map((s) => s.label).join("\u0000") + (time ? "t" : "n");

  useEffect(() => {
    const axis = { stroke: css("--muted"), grid: { stroke: css("--grid") }, ticks: { stroke: css("--grid") } };
    const colours = [css("--accent"), css("--accent-2"), css("--accent-3")];
    const opts = {
      width: box.current.clientWidth || 400,
      height,
      scales: { x: { time } },
      axes: [axis, { ...axis, size: 60 }],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      series: [
        { label: time ? "time" : "step" },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: colours[i % colours.length],
          width: 1.5,
          points: { show: false },
          value: (u, v) => (v == null ? "–" : (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3)) + (s.unit || "")),
        })),
      ],
    };
    plot.current = new uPlot(opts, [xs, ...series.map((s) => s.values)], box.current);
    const resize = new ResizeObserver(() => {
      if (plot.current && box.current) plot.current.setSize({ width: box.current.clientWidth, height });
    });
    resize.observe(box.current);
    return () => {
      resize.disconnect();
      plot.current.destroy();
      plot.current = null;
    };
  }, [shape, height]);

  useEffect(() => {
    if (plot.current) plot.current.setData([xs, ...series.map((s) => s.values)]);
  }, [xs, series]);

  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <div ref={box} role="img" aria-label={title} />
      {xs.length === 0 && <p class="muted overlay">no data yet</p>}
    </figure>
  );
}
